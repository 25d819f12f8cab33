//! AUTOSAR SecOC authentication of a frame (AUTOSAR_SWS_SecureOnboardCommunication), with
//! AES-128-CMAC (RFC 4493) as the MAC.
//!
//! Secured frame layout, in frame order:
//!
//! ```text
//! | authentic payload | freshness value, low freshness_tx_bits | MAC, first mac_bits | 0-pad |
//! ```
//!
//! The trailer (truncated freshness value then truncated MAC) is one bit string, most
//! significant bit first, padded with zero bits to a whole byte: `trailer_len()` =
//! ceil((freshness_tx_bits + mac_bits) / 8) bytes. The MAC is AES-128-CMAC over the "data to
//! authenticator" (SWS_SecOC_00031): the 16-bit data id (big-endian) || the payload || the
//! complete freshness value (big-endian, ceil(freshness_bits / 8) bytes), truncated to its first
//! `mac_bits` bits.
//!
//! The receiver rebuilds the complete freshness value from the truncated one and the last value
//! it accepted (the SecOC freshness value manager's rule): the same upper bits when the received
//! low bits are larger than the last ones, else the upper bits + 1; it accepts only a value
//! newer than the last. The sender's counter ([`FreshnessCounter`](super::FreshnessCounter))
//! must never repeat a value under one key, across restarts too: persisting it is the caller's.

use std::fmt;

use aes::Aes128;
use cmac::{Cmac, KeyInit, Mac};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Scheme, config_error};
use crate::error::CanError;

/// A SecOC configuration (the `SecOCRxPduProcessing` / `SecOCTxPduProcessing` values that
/// shape the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecOc {
    /// The 16-bit data id (`SecOCDataId`) authenticated with the payload.
    pub data_id: u16,
    /// Width of the complete freshness value in bits (`SecOCFreshnessValueLength`, 1..=64;
    /// default 64).
    #[serde(default = "default_freshness_bits")]
    pub freshness_bits: u8,
    /// Low bits of the freshness value sent in the frame (`SecOCFreshnessValueTxLength`,
    /// 0..=freshness_bits; default 8).
    #[serde(default = "default_freshness_tx_bits")]
    pub freshness_tx_bits: u8,
    /// Bits of the MAC sent in the frame (`SecOCAuthInfoTxLength`, 8..=128; default 24).
    /// The defaults are SecOC profile 1 ("24Bit-CMAC-8Bit-FV").
    #[serde(default = "default_mac_bits")]
    pub mac_bits: u8,
}

fn default_freshness_bits() -> u8 {
    64
}

fn default_freshness_tx_bits() -> u8 {
    8
}

fn default_mac_bits() -> u8 {
    24
}

/// An AES-128 SecOC key. The key schedule is wiped from memory when the key is dropped; `Debug`
/// never shows the key.
#[derive(Clone)]
pub struct SecOcKey {
    cmac: Cmac<Aes128>,
}

impl SecOcKey {
    /// The key from its 16 bytes (the caller wipes its own copy).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CanError> {
        let cmac = Cmac::<Aes128>::new_from_slice(bytes)
            .map_err(|_| CanError::SecOcKeyLength(bytes.len()))?;
        Ok(SecOcKey { cmac })
    }

    /// The key from the contents of a key file: 16 raw bytes, or 32 hex digits (surrounding
    /// whitespace ignored). Intermediate copies are wiped.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, CanError> {
        if bytes.len() == 16 {
            return SecOcKey::from_bytes(bytes);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| CanError::SecOcKeyLength(bytes.len()))?
            .trim();
        if text.len() != 32 {
            return Err(CanError::SecOcKeyLength(bytes.len()));
        }
        let mut raw = zeroize::Zeroizing::new([0u8; 16]);
        let digit = |c: u8| char::from(c).to_digit(16);
        for (b, pair) in raw.iter_mut().zip(text.as_bytes().chunks(2)) {
            let value = match pair {
                [h, l] => digit(*h).zip(digit(*l)).map(|(h, l)| h * 16 + l),
                _ => None,
            };
            *b = value
                .and_then(|v| u8::try_from(v).ok())
                .ok_or(CanError::SecOcKeyLength(bytes.len()))?;
        }
        SecOcKey::from_bytes(raw.as_ref())
    }

    /// The full 16-byte AES-CMAC of the concatenation of `parts`.
    pub fn cmac(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = self.cmac.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for SecOcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecOcKey(<redacted>)")
    }
}

/// A secured frame [`SecOc::verify`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The authentic payload (the frame without the trailer).
    pub payload: &'a [u8],
    /// The complete freshness value of the frame; the receiver stores it as its last accepted.
    pub freshness: u64,
}

/// Copy `n` bits from `src` (from bit `from`) to `dst` (from bit `to`), bit 0 = most
/// significant bit of byte 0.
fn copy_bits(src: &[u8], from: usize, dst: &mut [u8], to: usize, n: usize) {
    for i in 0..n {
        let (s, d) = (from + i, to + i);
        let bit = src.get(s / 8).map_or(0, |b| (b >> (7 - s % 8)) & 1);
        if let Some(b) = dst.get_mut(d / 8) {
            let m = 0x80 >> (d % 8);
            *b = if bit == 1 { *b | m } else { *b & !m };
        }
    }
}

impl SecOc {
    /// A configuration with the defaults (SecOC profile 1: 8 freshness bits and 24 MAC bits
    /// sent, 64-bit freshness value).
    pub fn new(data_id: u16) -> Self {
        SecOc {
            data_id,
            freshness_bits: default_freshness_bits(),
            freshness_tx_bits: default_freshness_tx_bits(),
            mac_bits: default_mac_bits(),
        }
    }

    /// Check the widths: freshness value 1..=64 bits, the sent part at most that, MAC 8..=128.
    pub fn validate(&self) -> Result<(), CanError> {
        let err = |reason: String| Err(config_error(Scheme::SecOc, reason));
        if !(1..=64).contains(&self.freshness_bits) {
            return err(format!(
                "freshness_bits {} is not 1..=64",
                self.freshness_bits
            ));
        }
        if self.freshness_tx_bits > self.freshness_bits {
            return err(format!(
                "freshness_tx_bits {} exceeds freshness_bits {}",
                self.freshness_tx_bits, self.freshness_bits
            ));
        }
        if !(8..=128).contains(&self.mac_bits) {
            return err(format!("mac_bits {} is not 8..=128", self.mac_bits));
        }
        Ok(())
    }

    /// Check that a secured frame of `frame_len` bytes has room for the trailer and at least
    /// one payload byte.
    pub fn validate_frame(&self, frame_len: usize) -> Result<(), CanError> {
        self.validate()?;
        if frame_len <= self.trailer_len() {
            return Err(config_error(
                Scheme::SecOc,
                format!(
                    "the {frame_len}-byte frame leaves no payload beside the {}-byte trailer (freshness_tx_bits + mac_bits)",
                    self.trailer_len()
                ),
            ));
        }
        Ok(())
    }

    /// Bytes the trailer (truncated freshness value and MAC) takes.
    pub fn trailer_len(&self) -> usize {
        (usize::from(self.freshness_tx_bits) + usize::from(self.mac_bits)).div_ceil(8)
    }

    /// The largest freshness value the configured width holds.
    pub fn max_freshness(&self) -> u64 {
        match self.freshness_bits {
            64.. => u64::MAX,
            b => (1u64 << b) - 1,
        }
    }

    /// The trailer for `payload` at the complete freshness value `fv`.
    fn trailer(&self, key: &SecOcKey, payload: &[u8], fv: u64) -> Vec<u8> {
        let fv_bytes = fv.to_be_bytes();
        let fv_full = &fv_bytes[8 - usize::from(self.freshness_bits).div_ceil(8)..];
        let mac = key.cmac(&[&self.data_id.to_be_bytes(), payload, fv_full]);
        let tx = usize::from(self.freshness_tx_bits);
        let mut out = vec![0u8; self.trailer_len()];
        copy_bits(&fv_bytes, 64 - tx, &mut out, 0, tx);
        copy_bits(&mac, 0, &mut out, tx, usize::from(self.mac_bits));
        out
    }

    /// The secured frame for `payload` at freshness value `freshness`: the payload followed by
    /// the trailer. Fails when the configuration is invalid or `freshness` exceeds its width.
    pub fn authenticate(
        &self,
        key: &SecOcKey,
        payload: &[u8],
        freshness: u64,
    ) -> Result<Vec<u8>, CanError> {
        self.validate()?;
        if freshness > self.max_freshness() {
            return Err(CanError::FreshnessExhausted {
                bits: self.freshness_bits,
            });
        }
        let mut out = payload.to_vec();
        out.extend(self.trailer(key, payload, freshness));
        Ok(out)
    }

    /// The complete freshness value of a frame that carries the low bits `rx`, given the last
    /// accepted value.
    fn rebuild(&self, rx: u64, last: Option<u64>) -> Result<u64, CanError> {
        let tx = u32::from(self.freshness_tx_bits);
        let exhausted = CanError::FreshnessExhausted {
            bits: self.freshness_bits,
        };
        let fv = match last {
            _ if self.freshness_tx_bits == self.freshness_bits => rx,
            None => rx,
            Some(last) => {
                let low_mask = 1u64.checked_shl(tx).map_or(u64::MAX, |v| v - 1);
                let high = last & !low_mask;
                if tx > 0 && rx > last & low_mask {
                    high | rx
                } else {
                    let step = 1u64.checked_shl(tx).ok_or(exhausted.clone())?;
                    high.checked_add(step).ok_or(exhausted.clone())? | rx
                }
            }
        };
        if fv > self.max_freshness() {
            return Err(exhausted);
        }
        Ok(fv)
    }

    /// Verify a secured frame: rebuild its freshness value from the truncated one and
    /// `last_accepted` (the newest value this receiver accepted, `None` before the first), check
    /// that it is newer and that the MAC matches (constant-time compare). On success the caller
    /// stores [`Verified::freshness`] as its new last accepted value.
    ///
    /// With `None` the received low bits are taken as the whole value, so a receiver without
    /// history only accepts a sender whose value still fits `freshness_tx_bits`: a receiver
    /// keeps its last accepted value across restarts as the sender keeps its counter.
    pub fn verify<'a>(
        &self,
        key: &SecOcKey,
        secured: &'a [u8],
        last_accepted: Option<u64>,
    ) -> Result<Verified<'a>, CanError> {
        self.validate()?;
        let tl = self.trailer_len();
        let Some(split) = secured.len().checked_sub(tl) else {
            return Err(CanError::ProtectionLength {
                scheme: Scheme::SecOc,
                got: secured.len(),
                need: tl,
            });
        };
        let (payload, trailer) = secured.split_at(split);
        let tx = usize::from(self.freshness_tx_bits);
        let mut rx = [0u8; 8];
        copy_bits(trailer, 0, &mut rx, 64 - tx, tx);
        let fv = self.rebuild(u64::from_be_bytes(rx), last_accepted)?;
        if let Some(last) = last_accepted
            && fv <= last
        {
            return Err(CanError::FreshnessReplay { last, got: fv });
        }
        let expected = self.trailer(key, payload, fv);
        if !bool::from(expected.as_slice().ct_eq(trailer)) {
            return Err(CanError::MacMismatch);
        }
        Ok(Verified {
            payload,
            freshness: fv,
        })
    }
}
