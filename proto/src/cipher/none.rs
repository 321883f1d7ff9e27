//! The `none` cipher of the initial key exchange.

use super::{KeyMaterial, OpeningKey, SealingKey};
use crate::error::Result;

pub struct None;

fn material() -> KeyMaterial {
    KeyMaterial {
        cipher: "none".into(),
        mac: String::new(),
        key: Vec::new(),
        iv: Vec::new(),
        mac_key: Vec::new(),
    }
}

impl SealingKey for None {
    fn block_size(&self) -> usize {
        8
    }
    fn length_outside_blocks(&self) -> bool {
        false
    }
    fn tag_len(&self) -> usize {
        0
    }
    fn seal_in_place(&mut self, _seq: u32, _packet: &mut [u8], _tag: &mut [u8]) -> Result<()> {
        Ok(())
    }
    fn export(&self) -> KeyMaterial {
        material()
    }
}

impl OpeningKey for None {
    fn block_size(&self) -> usize {
        8
    }
    fn length_outside_blocks(&self) -> bool {
        false
    }
    fn tag_len(&self) -> usize {
        0
    }
    fn decrypt_length(&self, _seq: u32, first4: [u8; 4]) -> u32 {
        u32::from_be_bytes(first4)
    }
    fn open(&mut self, _seq: u32, _packet: &mut [u8], _tag: &[u8]) -> Result<()> {
        Ok(())
    }
    fn export(&self) -> KeyMaterial {
        material()
    }
}
