//! ressh-demo (being written).
fn main() {}
