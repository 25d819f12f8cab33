//! Frame protection schemes, sans-IO: what a body controller checks before it acts on a frame.
//!
//! [`Protection`] is one scheme per message, read from the vehicle profile (TOML, tagged by
//! `scheme`): none, the XOR checksum byte of the demo car, a CRC-8 SAE J1850 byte, or AUTOSAR
//! E2E profile 1, 2 or 5 (AUTOSAR_PRS_E2EProtocol). [`Protection::protect`] completes a frame
//! the DBC encoder built (E2E: writes the counter and the CRC; XOR/CRC-8: the checksum byte),
//! [`Protection::check`] verifies a received one and returns the E2E counter it read.
//! [`SecOc`] adds AUTOSAR SecOC authentication (truncated AES-128-CMAC and freshness value
//! appended to the payload) on top of any of them.
//!
//! Every function is total: a frame of the wrong length, offsets outside the frame or a bad
//! configuration are a typed [`CanError`], never a panic. Load-time checks use
//! [`Protection::validate`] with the DBC message's length, so a profile that cannot work is
//! refused when the profile is read, naming the key.
//!
//! Offsets follow the AUTOSAR convention: E2E offsets and lengths are in **bits**, counted from
//! bit 0 = least significant bit of byte 0 (an offset of 8 is the low nibble of byte 1, 12 its
//! high nibble); XOR and CRC-8 name a **byte**.
//!
//! ```
//! use telematics_can::protection::Protection;
//! let p: Protection = toml::from_str(
//!     "scheme = \"e2e_p1\"\ndata_id = 0x123\ndata_id_mode = \"both\"",
//! ).unwrap();
//! p.validate(8).unwrap();
//! let mut frame = [0u8; 8];
//! p.protect(&mut frame, 0).unwrap();
//! assert_eq!(frame[0], 0xCC); // AUTOSAR E2E profile 1 example, counter 0
//! assert_eq!(p.check(&frame).unwrap().counter, Some(0));
//! ```

mod checksum;
pub mod crc;
mod e2e;
mod freshness;
mod secoc;

use std::fmt;

use serde::Deserialize;

use crate::error::CanError;
use e2e::Layout as _;

pub use checksum::{Crc8J1850, XorChecksum};
pub use e2e::{DataIdMode, E2eP1, E2eP2, E2eP5};
pub use freshness::FreshnessCounter;
pub use secoc::{SecOc, SecOcKey, Verified};

/// The name of a protection scheme (in errors and logs); the TOML `scheme` tag of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// No protection.
    None,
    /// XOR checksum byte.
    Xor,
    /// CRC-8 SAE J1850 byte.
    Crc8J1850,
    /// AUTOSAR E2E profile 1.
    E2eP1,
    /// AUTOSAR E2E profile 2.
    E2eP2,
    /// AUTOSAR E2E profile 5.
    E2eP5,
    /// AUTOSAR SecOC (CMAC authentication).
    SecOc,
}

impl Scheme {
    /// The scheme's stable name (its TOML tag; `secoc` for SecOC).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::None => "none",
            Scheme::Xor => "xor",
            Scheme::Crc8J1850 => "crc8_j1850",
            Scheme::E2eP1 => "e2e_p1",
            Scheme::E2eP2 => "e2e_p2",
            Scheme::E2eP5 => "e2e_p5",
            Scheme::SecOc => "secoc",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The protection of one message's frames, as the vehicle profile names it:
/// a TOML table tagged by `scheme`, e.g. `{ scheme = "xor", checksum_byte = 7 }` or
/// `{ scheme = "e2e_p5", data_id = 0x1234 }`. Unknown keys are refused.
///
/// For `none`, `xor` and `crc8_j1850` the alive counter (if the message has one) is an ordinary
/// DBC signal that the caller encodes before [`protect`](Protection::protect); the `counter`
/// argument is then ignored. The E2E profiles own their counter: `protect` writes it where the
/// profile puts it, [`check`](Protection::check) returns it, and
/// [`counter_modulus`](Protection::counter_modulus) tells the caller how it wraps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "Tagged")]
pub enum Protection {
    /// No protection: `protect` leaves the frame as it is, `check` accepts any frame.
    #[default]
    None,
    /// One byte holding the XOR of every other byte of the frame (the demo car's
    /// `CommandChecksum`: `checksum_byte = 7` in an 8-byte frame).
    Xor(XorChecksum),
    /// One byte holding the CRC-8 SAE J1850 of every other byte of the frame, in order.
    Crc8J1850(Crc8J1850),
    /// AUTOSAR E2E profile 1: CRC-8 0x1D over the data id and the data, 4-bit counter 0..=14.
    E2eP1(E2eP1),
    /// AUTOSAR E2E profile 2: CRC-8 0x2F over the data and one data id per counter value,
    /// 4-bit counter 0..=15.
    E2eP2(E2eP2),
    /// AUTOSAR E2E profile 5: CRC-16 CCITT-FALSE over the data and the 16-bit data id, 8-bit
    /// counter.
    E2eP5(E2eP5),
}

/// The TOML form of [`Protection`]: serde ignores `deny_unknown_fields` on the unit variant of
/// an internally tagged enum, so `none` is an empty table that refuses keys here.
#[derive(Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
enum Tagged {
    None(NoKeys),
    Xor(XorChecksum),
    Crc8J1850(Crc8J1850),
    #[serde(alias = "e2e_p01")]
    E2eP1(E2eP1),
    #[serde(alias = "e2e_p02")]
    E2eP2(E2eP2),
    #[serde(alias = "e2e_p05")]
    E2eP5(E2eP5),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

impl From<Tagged> for Protection {
    fn from(t: Tagged) -> Self {
        match t {
            Tagged::None(NoKeys {}) => Protection::None,
            Tagged::Xor(p) => Protection::Xor(p),
            Tagged::Crc8J1850(p) => Protection::Crc8J1850(p),
            Tagged::E2eP1(p) => Protection::E2eP1(p),
            Tagged::E2eP2(p) => Protection::E2eP2(p),
            Tagged::E2eP5(p) => Protection::E2eP5(p),
        }
    }
}

/// What [`Protection::check`] read from a frame it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The E2E counter of the frame; `None` for schemes without a counter of their own (the
    /// alive counter is then a DBC signal).
    pub counter: Option<u8>,
}

impl Protection {
    /// The scheme's name.
    pub fn scheme(&self) -> Scheme {
        match self {
            Protection::None => Scheme::None,
            Protection::Xor(_) => Scheme::Xor,
            Protection::Crc8J1850(_) => Scheme::Crc8J1850,
            Protection::E2eP1(_) => Scheme::E2eP1,
            Protection::E2eP2(_) => Scheme::E2eP2,
            Protection::E2eP5(_) => Scheme::E2eP5,
        }
    }

    /// Complete `data` (a frame the DBC encoder built) in place: the checksum, or the E2E
    /// counter and CRC. `counter` is the E2E counter to send, `0..counter_modulus()`; it is
    /// ignored by `none`, `xor` and `crc8_j1850`. Fails (leaving `data` unchanged) when the frame
    /// does not fit the configuration or the counter is out of range.
    pub fn protect(&self, data: &mut [u8], counter: u8) -> Result<(), CanError> {
        match self {
            Protection::None => Ok(()),
            Protection::Xor(p) => p.shape().protect(data),
            Protection::Crc8J1850(p) => p.shape().protect(data),
            Protection::E2eP1(p) => p.protect(data, counter),
            Protection::E2eP2(p) => p.protect(data, counter),
            Protection::E2eP5(p) => p.protect(data, counter),
        }
    }

    /// Verify a received frame; returns the E2E counter it carries. Counter *sequence*
    /// supervision (repetition, lost frames) is the caller's: it sees every counter.
    pub fn check(&self, data: &[u8]) -> Result<Checked, CanError> {
        match self {
            Protection::None => Ok(Checked { counter: None }),
            Protection::Xor(p) => p.shape().check(data),
            Protection::Crc8J1850(p) => p.shape().check(data),
            Protection::E2eP1(p) => p.check(data),
            Protection::E2eP2(p) => p.check(data),
            Protection::E2eP5(p) => p.check(data),
        }
    }

    /// How the scheme's own counter wraps: 15 for profile 1 (0..=14), 16 for profile 2, 256 for
    /// profile 5; `None` when the scheme has no counter of its own. (A `u16`: profile 5's 256
    /// does not fit a `u8`.)
    pub fn counter_modulus(&self) -> Option<u16> {
        match self {
            Protection::None | Protection::Xor(_) | Protection::Crc8J1850(_) => None,
            Protection::E2eP1(_) => Some(e2e::P1_COUNTER_MODULUS),
            Protection::E2eP2(_) => Some(e2e::P2_COUNTER_MODULUS),
            Protection::E2eP5(_) => Some(256),
        }
    }

    /// The counter that follows `counter` under this scheme (wrapping at
    /// [`counter_modulus`](Protection::counter_modulus)); `0` for schemes without a counter.
    pub fn next_counter(&self, counter: u8) -> u8 {
        match self.counter_modulus() {
            Some(m) => ((u16::from(counter) + 1) % m) as u8,
            None => 0,
        }
    }

    /// Check at load time that the configuration works on frames of `frame_len` bytes (the DBC
    /// message's length): offsets inside the frame, no overlapping fields, lengths and values the
    /// scheme allows. The error names the offending key.
    pub fn validate(&self, frame_len: usize) -> Result<(), CanError> {
        match self {
            Protection::None => Ok(()),
            Protection::Xor(p) => p.shape().validate(frame_len),
            Protection::Crc8J1850(p) => p.shape().validate(frame_len),
            Protection::E2eP1(p) => p.validate(frame_len),
            Protection::E2eP2(p) => p.validate(frame_len),
            Protection::E2eP5(p) => p.validate(frame_len),
        }
    }
}

/// A [`CanError::ProtectionConfig`] for `scheme`.
fn config_error(scheme: Scheme, reason: String) -> CanError {
    CanError::ProtectionConfig { scheme, reason }
}

/// `Ok` when `got >= need`, else a [`CanError::ProtectionLength`].
fn need_len(scheme: Scheme, got: usize, need: usize) -> Result<(), CanError> {
    if got < need {
        return Err(CanError::ProtectionLength { scheme, got, need });
    }
    Ok(())
}
