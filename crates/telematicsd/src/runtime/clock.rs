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
    /// A frame's source timestamp (µs on the Unix wall clock: kernel, log or sender time) moved
    /// onto this clock: `now_ms` minus the frame's age on the wall clock at `wall_us`. A frame
    /// from the future (clock skew) is taken as received now. A wall-clock step after start
    /// thus neither ages nor refreshes signals: only the age of each frame counts.
    pub fn frame_time_us(timestamp_us: u64, wall_us: u64, now_ms: u64) -> u64 {
        let age_us = wall_us.saturating_sub(timestamp_us);
        now_ms.saturating_mul(1000).saturating_sub(age_us)
    }

    /// The wall clock now, µs since the Unix epoch (for [`Clock::frame_time_us`]).
    pub fn wall_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
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

    #[test]
    fn frame_times_keep_their_age_across_clocks() {
        // The core clock reads 5_000 ms while the wall clock is far ahead (stepped): a frame
        // stamped 1.5 s before the wall time is 1.5 s old on the core clock.
        let wall = 1_800_000_000_000_000;
        assert_eq!(
            Clock::frame_time_us(wall - 1_500_000, wall, 5_000),
            3_500_000
        );
        // From the future (skew): received now.
        assert_eq!(Clock::frame_time_us(wall + 9, wall, 5_000), 5_000_000);
        // Older than the clock's epoch: saturates, never wraps.
        assert_eq!(Clock::frame_time_us(0, wall, 5_000), 0);
    }
}
