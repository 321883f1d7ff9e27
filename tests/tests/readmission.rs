//! A reconnect is judged as a new login from its address would be, except
//! for the authentication itself (issue 13, hole 6): the configuration as
//! Match resolves it there, AuthenticationMethods against the methods the
//! user logged in with, and the account's validity now (PAM account
//! management with the new PAM_RHOST, or the shadow entry without PAM).
//!
//! - `reconnect_needs_the_new_addresses_authentication_methods`: a key-only
//!   login from 198.18.1.2 roams to 198.18.2.2, where AuthenticationMethods
//!   asks for a key and a password: the reconnect is refused and logged.
//! - `reconnect_of_an_expired_account_is_refused` (UsePAM yes): the account
//!   expires (`chage -E 0`) while the session runs; after a cut its
//!   reconnect is refused by pam_acct_mgmt.
//! - `reconnect_of_a_locked_account_is_refused` (UsePAM no): the password is
//!   locked (`usermod -L`); after a cut the reconnect is refused.
//! - `reconnect_into_a_forced_command_is_refused`,
//!   `reconnect_into_a_chroot_is_refused`: a shell session roams to
//!   198.18.2.2, where Match sets ForceCommand internal-sftp (or
//!   ChrootDirectory): a login from there would get only that, so the
//!   reconnect is refused and logged.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Waits for resshd to refuse the lab user's reconnect for `why`; asserts
/// it did not resume.
fn refused_for(lab: &Lab, why: &str) -> String {
    let user = lab.user().name.clone();
    let log = lab.wait_log(
        &format!("the reconnect to be refused ({why})"),
        Duration::from_secs(30),
        |l| {
            l.contains(&format!("Reconnect of user {user} "))
                && l.contains("refused")
                && l.contains(why)
        },
    );
    assert!(!log.contains("Reconnected: user"), "{log}");
    log.lines()
        .find(|l| l.contains("refused") && l.contains(why))
        .unwrap()
        .to_string()
}

fn counter_session(lab: &Lab) -> Client {
    let stop = lab.user().home.join("stop-counter");
    let c = Client::spawn(&mut lab.ressh(&["server", &counter_cmd(&stop, 1_000_000)]));
    c.wait_lines(20, T);
    c
}

fn as_root(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reconnect_needs_the_new_addresses_authentication_methods() {
    let lab = Lab::new(
        "authm",
        "UsePAM yes\nPasswordAuthentication yes\nDetachTimeout 30\n\
         Match Address 198.18.2.0/24\nAuthenticationMethods publickey,password\n",
    );
    let _client = counter_session(&lab);
    lab.net.roam();
    let line = refused_for(&lab, "AuthenticationMethods");
    assert!(line.contains("from 198.18.2.2 port "), "{line}");
    report(
        "readmission",
        &format!("one factor, roamed to a two-factor network: {line}"),
    );
}

#[test]
fn reconnect_of_an_expired_account_is_refused() {
    let lab = Lab::new("acct", "UsePAM yes\nDetachTimeout 30\n");
    let _client = counter_session(&lab);
    as_root("chage", &["-E", "0", &lab.user().name]);
    assert!(lab.net.try_kill_tcp(22) > 0, "no connection cut");
    let line = refused_for(&lab, "PAM account management");
    report(
        "readmission",
        &format!("account expired while attached: {line}"),
    );
}

#[test]
fn reconnect_of_a_locked_account_is_refused() {
    let lab = Lab::new("lock", "UsePAM no\nDetachTimeout 30\n");
    let _client = counter_session(&lab);
    as_root("usermod", &["-L", &lab.user().name]);
    assert!(lab.net.try_kill_tcp(22) > 0, "no connection cut");
    let line = refused_for(&lab, "locked");
    report(
        "readmission",
        &format!("password locked while attached: {line}"),
    );
}

/// A shell session started where no Match confines it roams to a network
/// whose Match block jails (`settings`): a login from there would get only
/// that, so the reconnect is refused rather than resuming the shell.
fn roamed_into_confinement(tag: &str, settings: &str, why: &str) {
    let lab = Lab::new(
        tag,
        &format!("DetachTimeout 30\nMatch Address 198.18.2.0/24\n{settings}"),
    );
    let _client = counter_session(&lab);
    lab.net.roam();
    let line = refused_for(&lab, why);
    report(
        "readmission",
        &format!("a shell roamed to where {settings:?} applies: {line}"),
    );
}

#[test]
fn reconnect_into_a_forced_command_is_refused() {
    roamed_into_confinement("rforce", "ForceCommand internal-sftp\n", "ForceCommand");
}

#[test]
fn reconnect_into_a_chroot_is_refused() {
    roamed_into_confinement("rjail", "ChrootDirectory /usr\n", "ChrootDirectory");
}
