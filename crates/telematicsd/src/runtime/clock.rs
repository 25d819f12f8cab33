//! The daemon's monotonic clock: milliseconds anchored to the Unix wall clock at start, so a
//! wall-clock step neither fires nor stretches run timers and confirmation timeouts.

use std::time::{Duration, Instant};

/// Monotonic milliseconds anchored to the Unix wall clock at creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall0_ms: u64,
    mono0: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// Anchors now.
    pub fn new() -> Self {
        let wall0_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall0_ms,
            mono0: Instant::now(),
        }
    }
    /// Unix-ms-like monotonic time.
    pub fn now_ms(&self) -> u64 {
        self.wall0_ms + self.mono0.elapsed().as_millis() as u64
    }
    /// The [`Instant`] at which `now_ms()` will equal `at_ms`.
    pub fn instant_at(&self, at_ms: u64) -> Instant {
        self.mono0 + Duration::from_millis(at_ms.saturating_sub(self.wall0_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_anchored() {
        let c = Clock::new();
        let a = c.now_ms();
        let b = c.now_ms();
        assert!(b >= a);
        assert!(a > 1_600_000_000_000);
        let i = c.instant_at(a + 1_000);
        assert!(i > Instant::now());
    }
}
