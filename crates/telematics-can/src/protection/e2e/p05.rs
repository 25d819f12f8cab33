//! AUTOSAR E2E profile 5 (PRS_E2EProtocol, "E2E Profile 5").
//!
//! Layout: a 3-byte header at bit `offset` (default 0): the CRC-16 little-endian (low byte
//! first), then the 8-bit counter. The CRC is CRC-16 CCITT-FALSE (`Crc_CalculateCRC16`: init
//! 0xFFFF, no final XOR) over the protected data without the two CRC bytes (the counter
//! included), then the data id's low byte and high byte.
//!
//! Length (spec): the protected data is exactly `data_length` bits, 3..=4096 bytes; when
//! `data_length` is set, a frame of any other length is refused (`E2E_E_INPUTERR_WRONG` in the
//! library), when unset the frame's own length is protected. Every single-bit error is
//! detected (CRC-16 CCITT, any length up to 4096 bytes).

use serde::Deserialize;

use super::super::crc::CRC16_CCITT_FALSE;
use super::super::{Checked, Scheme, config_error};
use super::{accept, field_inside, protected_len};
use crate::error::CanError;

const SCHEME: Scheme = Scheme::E2eP5;
/// Header: CRC (2 bytes) + counter (1 byte).
const HEADER: usize = 3;

/// AUTOSAR E2E profile 5 configuration (`E2E_P05ConfigType`; offset and length in bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2eP5 {
    /// The data id (`DataID`).
    pub data_id: u16,
    /// Bit offset of the header (`Offset`, multiple of 8; default 0).
    #[serde(default)]
    pub offset: u16,
    /// Length of the protected data in bits (`DataLength`); default: the frame's length.
    #[serde(default)]
    pub data_length: Option<u16>,
}

impl E2eP5 {
    /// A profile 5 configuration with the header at offset 0, protecting the whole frame.
    pub fn new(data_id: u16) -> Self {
        E2eP5 {
            data_id,
            offset: 0,
            data_length: None,
        }
    }

    /// The protected length of a frame of `frame_len` bytes after checking every rule; the
    /// frame must be exactly `data_length` when it is set.
    fn layout(&self, frame_len: usize) -> Result<usize, CanError> {
        if let Some(bits) = self.data_length {
            let need = usize::from(bits.div_ceil(8));
            if need != frame_len {
                return Err(CanError::ProtectionLength {
                    scheme: SCHEME,
                    got: frame_len,
                    need,
                });
            }
        } else if frame_len < usize::from(self.offset / 8) + HEADER {
            return Err(CanError::ProtectionLength {
                scheme: SCHEME,
                got: frame_len,
                need: usize::from(self.offset / 8) + HEADER,
            });
        }
        let len = protected_len(SCHEME, self.data_length, frame_len, HEADER, 4096)?;
        field_inside(SCHEME, "offset", self.offset, HEADER * 8, 8, len)?;
        Ok(len)
    }

    pub(in crate::protection) fn validate(&self, frame_len: usize) -> Result<(), CanError> {
        match self.layout(frame_len) {
            Err(CanError::ProtectionLength { got, need, .. }) => Err(config_error(
                SCHEME,
                format!(
                    "the {got}-byte frame does not fit the profile ({need} bytes needed: offset + 3-byte header, or data_length)"
                ),
            )),
            r => r.map(|_| ()),
        }
    }

    fn crc(&self, data: &[u8]) -> u16 {
        let o = usize::from(self.offset / 8);
        let reg = CRC16_CCITT_FALSE.update(CRC16_CCITT_FALSE.init(), data.get(..o).unwrap_or(&[]));
        let reg = CRC16_CCITT_FALSE.update(reg, data.get(o + 2..).unwrap_or(&[]));
        CRC16_CCITT_FALSE.update(reg, &self.data_id.to_le_bytes())
    }

    pub(in crate::protection) fn protect(
        &self,
        data: &mut [u8],
        counter: u8,
    ) -> Result<(), CanError> {
        let len = self.layout(data.len())?;
        let o = usize::from(self.offset / 8);
        let Some(header) = data.get_mut(o..o + HEADER) else {
            return Err(CanError::ProtectionLength {
                scheme: SCHEME,
                got: len,
                need: o + HEADER,
            });
        };
        header[2] = counter;
        let crc = self.crc(data.get(..len).unwrap_or(&[]));
        if let Some(h) = data.get_mut(o..o + 2) {
            h.copy_from_slice(&crc.to_le_bytes());
        }
        Ok(())
    }

    pub(in crate::protection) fn check(&self, data: &[u8]) -> Result<Checked, CanError> {
        let len = self.layout(data.len())?;
        let o = usize::from(self.offset / 8);
        let Some(&[lo, hi, counter]) = data.get(o..o + HEADER) else {
            return Err(CanError::ProtectionLength {
                scheme: SCHEME,
                got: len,
                need: o + HEADER,
            });
        };
        let computed = self.crc(data.get(..len).unwrap_or(&[]));
        accept(SCHEME, u16::from_le_bytes([lo, hi]) == computed, counter)
    }
}
