//! AUTOSAR E2E profile 2 (PRS_E2EProtocol, "E2E Profile 2").
//!
//! Fixed layout: CRC in byte 0, the 4-bit counter (0..=15) in the low nibble of byte 1. The CRC
//! is CRC-8 0x2F (`Crc_CalculateCRC8H2F`: init 0xFF, final XOR 0xFF) over bytes 1.. of the
//! protected data, then the one data id byte `data_id_list[counter]`.
//!
//! Known limit (by the spec's design): a flip in the counter nibble also changes the data id
//! that enters the CRC. For a pair of list entries whose difference equals the CRC difference
//! the flipped counter bit makes (one value in 256 per bit position and layout), such a flip
//! passes. Every flip outside the counter nibble is detected.

use serde::Deserialize;

use super::super::crc::CRC8_H2F;
use super::super::{Checked, Scheme};
use super::{Layout, P2_COUNTER_MODULUS, accept, nibble, protected_len, write_counter};
use crate::error::CanError;

const SCHEME: Scheme = Scheme::E2eP2;
/// Bit offset of the counter nibble (low nibble of byte 1).
const COUNTER_OFFSET: u16 = 8;

/// AUTOSAR E2E profile 2 configuration (`E2E_P02ConfigType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2eP2 {
    /// One data id byte per counter value (`DataIDList`).
    pub data_id_list: [u8; 16],
    /// Protected length in bits (`DataLength`, multiple of 8, 16..=2048); default: the whole
    /// frame.
    #[serde(default)]
    pub data_length: Option<u16>,
}

impl E2eP2 {
    /// A profile 2 configuration protecting the whole frame.
    pub fn new(data_id_list: [u8; 16]) -> Self {
        E2eP2 {
            data_id_list,
            data_length: None,
        }
    }

    fn crc(&self, data: &[u8], len: usize, counter: u8) -> u8 {
        let id = self.data_id_list[usize::from(counter & 0x0F)];
        let reg = CRC8_H2F.update(0xFF, data.get(1..len).unwrap_or(&[]));
        CRC8_H2F.update(reg, &[id]) ^ 0xFF
    }

    pub(in crate::protection) fn protect(
        &self,
        data: &mut [u8],
        counter: u8,
    ) -> Result<(), CanError> {
        let len = self.frame_layout(data.len())?;
        write_counter(SCHEME, data, COUNTER_OFFSET, counter, P2_COUNTER_MODULUS)?;
        let crc = self.crc(data, len, counter);
        if let Some(b) = data.first_mut() {
            *b = crc;
        }
        Ok(())
    }

    pub(in crate::protection) fn check(&self, data: &[u8]) -> Result<Checked, CanError> {
        let len = self.frame_layout(data.len())?;
        let counter = nibble(data, COUNTER_OFFSET);
        accept(
            SCHEME,
            data.first() == Some(&self.crc(data, len, counter)),
            counter,
        )
    }
}

impl Layout for E2eP2 {
    const SCHEME: Scheme = SCHEME;

    fn min_len(&self) -> usize {
        self.data_length
            .map_or(2, |bits| usize::from(bits.div_ceil(8)).max(2))
    }

    fn layout(&self, frame_len: usize) -> Result<usize, CanError> {
        protected_len(SCHEME, self.data_length, frame_len, 2, 256)
    }
}
