//! The sender's SecOC freshness counter: a monotonic value that never repeats under one key.
//!
//! Pure: the caller persists [`FreshnessCounter::last_used`] (durably, before the frame that
//! carries the value leaves) and resumes from it after a restart with
//! [`FreshnessCounter::resume`].

use crate::error::CanError;

/// A freshness value counter of `bits` width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessCounter {
    last_used: Option<u64>,
    max: u64,
    bits: u8,
}

impl FreshnessCounter {
    /// A counter of `bits` width (1..=64) that continues after `last_used` (`None`: a new key,
    /// the first value is 0).
    pub fn resume(bits: u8, last_used: Option<u64>) -> Result<Self, CanError> {
        let max = match bits {
            1..=63 => (1u64 << bits) - 1,
            64 => u64::MAX,
            _ => return Err(CanError::FreshnessExhausted { bits }),
        };
        if last_used.is_some_and(|v| v > max) {
            return Err(CanError::FreshnessExhausted { bits });
        }
        Ok(FreshnessCounter {
            last_used,
            max,
            bits,
        })
    }

    /// The value [`take`](FreshnessCounter::take) returns next, without using it: persist it
    /// first, then take it.
    pub fn peek(&self) -> Result<u64, CanError> {
        match self.last_used {
            None => Ok(0),
            Some(v) if v < self.max => Ok(v + 1),
            Some(_) => Err(CanError::FreshnessExhausted { bits: self.bits }),
        }
    }

    /// Use the next value; fails once the width is exhausted (the key must change).
    pub fn take(&mut self) -> Result<u64, CanError> {
        let v = self.peek()?;
        self.last_used = Some(v);
        Ok(v)
    }

    /// The last value used, `None` before the first.
    pub fn last_used(&self) -> Option<u64> {
        self.last_used
    }
}
