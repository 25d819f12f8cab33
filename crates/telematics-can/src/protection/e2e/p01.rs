//! AUTOSAR E2E profile 1 (PRS_E2EProtocol, "E2E Profile 1"; variants 1A = `both`,
//! 1B = `alt`, 1C = `nibble`).
//!
//! Layout (defaults): CRC in byte 0 (`crc_offset` 0), the 4-bit counter in the low nibble of
//! byte 1 (`counter_offset` 8), and in nibble mode the data id's bits 8..=11 in the high nibble
//! of byte 1 (`data_id_nibble_offset` 12). The CRC is CRC-8 0x1D computed from register 0x00
//! without final XOR (the library's `Crc_CalculateCRC8` chained with start value 0xFF and
//! `E2E_P01Protect`'s final `^ 0xFF`) over the data id bytes of the mode, then every protected
//! byte except the CRC byte. The counter runs 0..=14.
//!
//! Known limit of the `alt` mode (by the spec's design, not of this code): the counter's parity
//! selects which data id byte enters the CRC, so a flip of the counter's lowest bit changes two
//! things at once; for exactly one value of `low byte ^ high byte` per layout, the two changes
//! cancel in the CRC and such a flip passes. `both`, `low` and `nibble` detect every single-bit
//! error.

use serde::Deserialize;

use super::super::crc::CRC8_SAE_J1850;
use super::super::{Checked, Scheme, config_error};
use super::{
    Layout, P1_COUNTER_MODULUS, accept, counter_in_range, field_inside, nibble, protected_len,
    set_nibble, write_counter,
};
use crate::error::CanError;

const SCHEME: Scheme = Scheme::E2eP1;

/// How profile 1 includes the 16-bit data id in the CRC (`E2E_P01DataIDMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataIdMode {
    /// `E2E_P01_DATAID_BOTH`: low byte, then high byte.
    Both,
    /// `E2E_P01_DATAID_ALT`: the low byte for an even counter, the high byte for an odd one.
    Alt,
    /// `E2E_P01_DATAID_LOW`: the low byte only (8-bit data ids).
    Low,
    /// `E2E_P01_DATAID_NIBBLE`: the low byte and a zero byte in the CRC; bits 8..=11 of the data
    /// id sent explicitly at `data_id_nibble_offset` (12-bit data ids).
    Nibble,
}

/// AUTOSAR E2E profile 1 configuration (`E2E_P01ConfigType`; offsets and length in bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2eP1 {
    /// The data id (`DataID`); at most 0x0FFF in nibble mode.
    pub data_id: u16,
    /// How the data id enters the CRC (`DataIDMode`).
    pub data_id_mode: DataIdMode,
    /// Bit offset of the CRC byte (`CRCOffset`, multiple of 8; default 0).
    #[serde(default)]
    pub crc_offset: u16,
    /// Bit offset of the counter nibble (`CounterOffset`, multiple of 4; default 8).
    #[serde(default = "default_counter_offset")]
    pub counter_offset: u16,
    /// Bit offset of the data id nibble in nibble mode (`DataIDNibbleOffset`, multiple of 4;
    /// default 12).
    #[serde(default = "default_nibble_offset")]
    pub data_id_nibble_offset: u16,
    /// Protected length in bits (`DataLength`, multiple of 8, at most 240); default: the whole
    /// frame.
    #[serde(default)]
    pub data_length: Option<u16>,
}

fn default_counter_offset() -> u16 {
    8
}

fn default_nibble_offset() -> u16 {
    12
}

impl E2eP1 {
    /// A profile 1 configuration with the spec's default offsets, protecting the whole frame.
    pub fn new(data_id: u16, data_id_mode: DataIdMode) -> Self {
        E2eP1 {
            data_id,
            data_id_mode,
            crc_offset: 0,
            counter_offset: default_counter_offset(),
            data_id_nibble_offset: default_nibble_offset(),
            data_length: None,
        }
    }

    /// The CRC of the first `len` bytes of `data` with `counter`.
    fn crc(&self, data: &[u8], len: usize, counter: u8) -> u8 {
        let [lo, hi] = self.data_id.to_le_bytes();
        let id: &[u8] = match self.data_id_mode {
            DataIdMode::Both => &[lo, hi],
            DataIdMode::Alt if counter.is_multiple_of(2) => &[lo],
            DataIdMode::Alt => &[hi],
            DataIdMode::Low => &[lo],
            DataIdMode::Nibble => &[lo, 0],
        };
        let at = usize::from(self.crc_offset / 8);
        let data = data.get(..len).unwrap_or(data);
        let (before, rest) = data.split_at(at.min(data.len()));
        let reg = CRC8_SAE_J1850.update(0x00, id);
        let reg = CRC8_SAE_J1850.update(reg, before);
        CRC8_SAE_J1850.update(reg, rest.get(1..).unwrap_or(&[]))
    }

    pub(in crate::protection) fn protect(
        &self,
        data: &mut [u8],
        counter: u8,
    ) -> Result<(), CanError> {
        let len = self.frame_layout(data.len())?;
        write_counter(
            SCHEME,
            data,
            self.counter_offset,
            counter,
            P1_COUNTER_MODULUS,
        )?;
        if self.data_id_mode == DataIdMode::Nibble {
            set_nibble(data, self.data_id_nibble_offset, (self.data_id >> 8) as u8);
        }
        let crc = self.crc(data, len, counter);
        if let Some(b) = data.get_mut(usize::from(self.crc_offset / 8)) {
            *b = crc;
        }
        Ok(())
    }

    pub(in crate::protection) fn check(&self, data: &[u8]) -> Result<Checked, CanError> {
        let len = self.frame_layout(data.len())?;
        let counter = nibble(data, self.counter_offset);
        counter_in_range(SCHEME, counter, P1_COUNTER_MODULUS)?;
        if self.data_id_mode == DataIdMode::Nibble
            && nibble(data, self.data_id_nibble_offset) != ((self.data_id >> 8) as u8 & 0x0F)
        {
            return Err(CanError::DataIdMismatch { scheme: SCHEME });
        }
        let stored = data.get(usize::from(self.crc_offset / 8));
        accept(
            SCHEME,
            stored == Some(&self.crc(data, len, counter)),
            counter,
        )
    }
}

impl Layout for E2eP1 {
    const SCHEME: Scheme = SCHEME;

    /// Bytes a frame needs at least for this configuration.
    fn min_len(&self) -> usize {
        if let Some(bits) = self.data_length {
            return usize::from(bits.div_ceil(8));
        }
        let mut last = self.crc_offset.max(self.counter_offset);
        if self.data_id_mode == DataIdMode::Nibble {
            last = last.max(self.data_id_nibble_offset);
        }
        usize::from(last / 8) + 1
    }

    /// The protected length of a frame of `frame_len` bytes, after checking every rule.
    fn layout(&self, frame_len: usize) -> Result<usize, CanError> {
        let len = protected_len(SCHEME, self.data_length, frame_len, 2, 30)?;
        field_inside(SCHEME, "crc_offset", self.crc_offset, 8, 8, len)?;
        field_inside(SCHEME, "counter_offset", self.counter_offset, 4, 4, len)?;
        if self.counter_offset / 8 == self.crc_offset / 8 {
            return Err(config_error(
                SCHEME,
                format!(
                    "counter_offset {} lies in the CRC byte (crc_offset {})",
                    self.counter_offset, self.crc_offset
                ),
            ));
        }
        if self.data_id_mode == DataIdMode::Nibble {
            let n = self.data_id_nibble_offset;
            field_inside(SCHEME, "data_id_nibble_offset", n, 4, 4, len)?;
            if n / 8 == self.crc_offset / 8 || n == self.counter_offset {
                return Err(config_error(
                    SCHEME,
                    format!("data_id_nibble_offset {n} overlaps the CRC byte or the counter"),
                ));
            }
            if self.data_id > 0x0FFF {
                return Err(config_error(
                    SCHEME,
                    format!(
                        "data_id {:#x} has more than the 12 bits of nibble mode",
                        self.data_id
                    ),
                ));
            }
        }
        Ok(len)
    }
}
