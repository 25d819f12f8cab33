//! AUTOSAR E2E profiles 1, 2 and 5 (AUTOSAR_PRS_E2EProtocol): the configuration of each, the
//! bit-offset helpers they share, and the profiles themselves in `p01`, `p02`, `p05`.
//!
//! Only the per-frame part of the E2E library is here (protect / check of one frame, the
//! `E2E_PxxProtect` / `E2E_PxxCheck` CRC and field layout); the counter supervision state
//! machine (lost or repeated frames) belongs to the receiver, which gets the counter from
//! [`Checked`](super::Checked).

mod p01;
mod p02;
mod p05;

use super::{Checked, Scheme, config_error, need_len};
use crate::error::CanError;

pub use p01::{DataIdMode, E2eP1};
pub use p02::E2eP2;
pub use p05::E2eP5;

/// The layout rules of profiles 1 and 2, checked at load ([`validate`](Layout::validate)) and
/// on every frame ([`frame_layout`](Layout::frame_layout)).
pub(super) trait Layout {
    /// The profile.
    const SCHEME: Scheme;

    /// Bytes a frame needs at least.
    fn min_len(&self) -> usize;

    /// The protected length of a frame of `frame_len` bytes, after checking every rule.
    fn layout(&self, frame_len: usize) -> Result<usize, CanError>;

    /// [`layout`](Layout::layout) at run time: a short frame is a length error.
    fn frame_layout(&self, data_len: usize) -> Result<usize, CanError> {
        need_len(Self::SCHEME, data_len, self.min_len())?;
        self.layout(data_len)
    }

    /// [`layout`](Layout::layout) at load time: the configuration works on `frame_len` bytes.
    fn validate(&self, frame_len: usize) -> Result<(), CanError> {
        self.layout(frame_len).map(|_| ())
    }
}

/// Profile 1's counter runs 0..=14 (15 is never sent).
pub(super) const P1_COUNTER_MODULUS: u16 = 15;
/// Profile 2's counter runs 0..=15.
pub(super) const P2_COUNTER_MODULUS: u16 = 16;

/// The nibble at bit `offset` (a multiple of 4; low nibble when `offset % 8 == 0`).
fn nibble(data: &[u8], offset: u16) -> u8 {
    let b = data.get(usize::from(offset / 8)).copied().unwrap_or(0);
    if offset.is_multiple_of(8) {
        b & 0x0F
    } else {
        b >> 4
    }
}

/// Write the nibble `v` (low 4 bits) at bit `offset`.
fn set_nibble(data: &mut [u8], offset: u16, v: u8) {
    if let Some(b) = data.get_mut(usize::from(offset / 8)) {
        *b = if offset.is_multiple_of(8) {
            (*b & 0xF0) | (v & 0x0F)
        } else {
            (*b & 0x0F) | (v << 4)
        };
    }
}

/// The frame's verdict: its `counter` when the CRC it carries matched, else a checksum error.
fn accept(scheme: Scheme, crc_matches: bool, counter: u8) -> Result<Checked, CanError> {
    if !crc_matches {
        return Err(CanError::ChecksumMismatch { scheme });
    }
    Ok(Checked {
        counter: Some(counter),
    })
}

/// `Ok` when `counter < modulus`, else a [`CanError::CounterInvalid`].
fn counter_in_range(scheme: Scheme, counter: u8, modulus: u16) -> Result<(), CanError> {
    if u16::from(counter) >= modulus {
        return Err(CanError::CounterInvalid {
            scheme,
            counter: u64::from(counter),
        });
    }
    Ok(())
}

/// Write the 4-bit `counter` at bit `offset` when it is below `modulus`.
fn write_counter(
    scheme: Scheme,
    data: &mut [u8],
    offset: u16,
    counter: u8,
    modulus: u16,
) -> Result<(), CanError> {
    counter_in_range(scheme, counter, modulus)?;
    set_nibble(data, offset, counter);
    Ok(())
}

/// The protected length in bytes: `data_length` (bits) when configured, else the frame's.
/// Checks the spec's rules on `data_length` (a multiple of 8, `min..=max` bytes, inside the
/// frame).
fn protected_len(
    scheme: Scheme,
    data_length: Option<u16>,
    frame_len: usize,
    min: usize,
    max: usize,
) -> Result<usize, CanError> {
    let len = match data_length {
        Some(bits) if !bits.is_multiple_of(8) => {
            return Err(config_error(
                scheme,
                format!("data_length {bits} is not a multiple of 8 bits"),
            ));
        }
        Some(bits) if usize::from(bits / 8) > frame_len => {
            return Err(config_error(
                scheme,
                format!("data_length {bits} exceeds the {frame_len}-byte frame"),
            ));
        }
        Some(bits) => usize::from(bits / 8),
        None => frame_len,
    };
    if !(min..=max).contains(&len) {
        return Err(config_error(
            scheme,
            format!(
                "the protected data is {len} bytes; {scheme} protects {min} to {max} bytes (set data_length)"
            ),
        ));
    }
    Ok(len)
}

/// Check that bit `offset` of a field `bits` wide is aligned to `align` bits and lies inside
/// `len` bytes.
fn field_inside(
    scheme: Scheme,
    key: &str,
    offset: u16,
    bits: usize,
    align: u16,
    len: usize,
) -> Result<(), CanError> {
    if !offset.is_multiple_of(align) {
        return Err(config_error(
            scheme,
            format!("{key} {offset} is not a multiple of {align} bits"),
        ));
    }
    if usize::from(offset) + bits > len * 8 {
        return Err(config_error(
            scheme,
            format!("{key} {offset} is outside the {len} protected bytes"),
        ));
    }
    Ok(())
}
