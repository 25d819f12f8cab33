//! The one-byte checksums over the rest of the frame: XOR (the demo car) and CRC-8 SAE J1850.
//!
//! Both cover every byte of the frame except the checksum byte itself, in frame order, so the
//! checksum byte may sit anywhere. Neither has a counter of its own: the alive counter is a DBC
//! signal, encoded by the caller before `protect` and so covered by the checksum.
//!
//! What they detect: both detect every single-bit error. XOR is a column parity: it misses any
//! even number of flips in the same bit position (two bytes with the same bit flipped), byte
//! swaps and a zeroed frame with a zero checksum. CRC-8 SAE J1850 detects every single-bit and
//! every double-bit error in frames up to 31 bytes (the polynomial is primitive, of order 255).

use serde::Deserialize;

use super::crc::CRC8_SAE_J1850;
use super::{Checked, Scheme, config_error, need_len};
use crate::error::CanError;

/// XOR checksum: the byte at `checksum_byte` is the XOR of every other byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XorChecksum {
    /// Index of the checksum byte in the frame (0-based).
    pub checksum_byte: usize,
}

/// CRC-8 SAE J1850 (polynomial 0x1D, init 0xFF, final XOR 0xFF): the byte at `crc_byte` is the
/// CRC of every other byte, in frame order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crc8J1850 {
    /// Index of the CRC byte in the frame (0-based).
    pub crc_byte: usize,
}

/// The checksum `sum` of the frame without byte `at`: `sum(before, after)`.
fn over_rest(data: &[u8], at: usize, sum: fn(&[u8], &[u8]) -> u8) -> u8 {
    let (before, rest) = data.split_at(at.min(data.len()));
    sum(before, rest.get(1..).unwrap_or(&[]))
}

fn xor(before: &[u8], after: &[u8]) -> u8 {
    before.iter().chain(after).fold(0, |a, b| a ^ b)
}

fn crc8(before: &[u8], after: &[u8]) -> u8 {
    CRC8_SAE_J1850.update(CRC8_SAE_J1850.update(0xFF, before), after) ^ 0xFF
}

/// The shared shape of both schemes: one byte at `at`, computed by `sum` over the rest.
pub(super) struct OneByte {
    scheme: Scheme,
    key: &'static str,
    at: usize,
    sum: fn(&[u8], &[u8]) -> u8,
}

impl OneByte {
    pub(super) fn validate(&self, frame_len: usize) -> Result<(), CanError> {
        if self.at >= frame_len {
            return Err(config_error(
                self.scheme,
                format!(
                    "{} {} is outside the {frame_len}-byte frame",
                    self.key, self.at
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn protect(&self, data: &mut [u8]) -> Result<(), CanError> {
        need_len(self.scheme, data.len(), self.at + 1)?;
        let v = over_rest(data, self.at, self.sum);
        if let Some(b) = data.get_mut(self.at) {
            *b = v;
        }
        Ok(())
    }

    pub(super) fn check(&self, data: &[u8]) -> Result<Checked, CanError> {
        need_len(self.scheme, data.len(), self.at + 1)?;
        if data.get(self.at) != Some(&over_rest(data, self.at, self.sum)) {
            return Err(CanError::ChecksumMismatch {
                scheme: self.scheme,
            });
        }
        Ok(Checked { counter: None })
    }
}

impl XorChecksum {
    pub(super) fn shape(&self) -> OneByte {
        OneByte {
            scheme: Scheme::Xor,
            key: "checksum_byte",
            at: self.checksum_byte,
            sum: xor,
        }
    }
}

impl Crc8J1850 {
    pub(super) fn shape(&self) -> OneByte {
        OneByte {
            scheme: Scheme::Crc8J1850,
            key: "crc_byte",
            at: self.crc_byte,
            sum: crc8,
        }
    }
}
