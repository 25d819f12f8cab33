//! The daemon's side of `telematicsctl doctor`: gathering and sampling the facts that
//! [`telematics_admin::diagnostics`] (re-exported here) evaluates. [`OutboxAges`] and
//! [`FrameRate`] are fed once a second by the daemon; [`clock_synchronized`] reads
//! systemd-timesyncd's flag.

use std::collections::VecDeque;

pub use telematics_admin::diagnostics::*;

/// The security-relevant settings of the daemon configuration, for the `config` check.
pub fn config_facts(cfg: &crate::Config) -> ConfigFacts {
    let s = &cfg.security;
    ConfigFacts {
        pbkdf2_iterations: s.pbkdf2_iterations,
        min_pbkdf2_iterations: s.min_pbkdf2_iterations,
        lockout_threshold: s.lockout_threshold,
        lockout_hard_limit: s.lockout_hard_limit,
        // The daemon refuses to start when the configured sealing key is missing, so the
        // configuration tells whether the running daemon seals.
        state_sealed: cfg.keys.backend == telematics_keystore::Backend::Pkcs11
            || cfg.keys.seal_key.is_some(),
    }
}
/// Whether the system clock is synchronised, as far as systemd-timesyncd tells
/// (`/run/systemd/timesync/synchronized` exists once it synchronised); `None` without it.
pub fn clock_synchronized() -> Option<bool> {
    let dir = std::path::Path::new("/run/systemd/timesync");
    dir.is_dir().then(|| dir.join("synchronized").exists())
}

/// Lower bounds of the enqueue times of outbox messages, from samples of the outbox's next
/// sequence number: a message with sequence `s` was enqueued before the first sample whose
/// next sequence exceeds `s`. Bounded ([`OutboxAges::CAPACITY`] samples, oldest dropped).
#[derive(Debug, Default)]
pub struct OutboxAges {
    /// `(next_seq, at)` when `next_seq` changed, oldest first.
    samples: VecDeque<(u64, u64)>,
}

impl OutboxAges {
    /// Most samples kept.
    pub const CAPACITY: usize = 4096;

    /// Records the outbox's next sequence at `now` (Unix s).
    pub fn sample(&mut self, next_seq: u64, now: u64) {
        if self.samples.back().is_some_and(|(s, _)| *s == next_seq) {
            return;
        }
        if self.samples.len() == Self::CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back((next_seq, now));
    }

    /// Age at `now` of the message with sequence `seq` (at least), `None` if no sample covers it
    /// yet.
    pub fn age_of(&self, seq: u64, now: u64) -> Option<u64> {
        let (_, at) = self.samples.iter().find(|(next, _)| *next > seq)?;
        Some(now.saturating_sub(*at))
    }
}

/// Frames per second of a bus over the last [`FrameRate::WINDOW_MS`], from samples of its
/// frame counter.
#[derive(Debug, Default)]
pub struct FrameRate {
    /// `(monotonic ms, frames)`, oldest first.
    samples: VecDeque<(u64, u64)>,
}

impl FrameRate {
    /// Samples older than this (relative to the newest) are dropped.
    pub const WINDOW_MS: u64 = 5_000;

    /// Records the frame counter at `now_ms` (monotonic).
    pub fn sample(&mut self, frames: u64, now_ms: u64) {
        self.samples.push_back((now_ms, frames));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > Self::WINDOW_MS)
        {
            self.samples.pop_front();
        }
    }

    /// Frames per second over the window; `None` before two samples 500 ms apart.
    pub fn per_second(&self) -> Option<f64> {
        let (t0, f0) = *self.samples.front()?;
        let (t1, f1) = *self.samples.back()?;
        let dt = t1.saturating_sub(t0);
        (dt >= 500).then(|| f1.saturating_sub(f0) as f64 * 1000.0 / dt as f64)
    }
}

/// What the daemon samples once a second for `doctor`: the bus's frame rate and the outbox's
/// enqueue times.
#[derive(Debug, Default)]
pub struct Samples {
    /// The bus frame rate.
    pub frames: FrameRate,
    /// The outbox enqueue times.
    pub outbox: OutboxAges,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn outbox_age_lower_bounds() {
        let mut a = OutboxAges::default();
        assert_eq!(a.age_of(1, NOW), None);
        a.sample(1, NOW - 100); // started with nothing queued before seq 1
        a.sample(1, NOW - 90);
        a.sample(4, NOW - 50); // seqs 1..=3 enqueued in (NOW-100, NOW-50]
        a.sample(9, NOW - 10);
        assert_eq!(a.age_of(2, NOW), Some(50));
        assert_eq!(a.age_of(5, NOW), Some(10));
        assert_eq!(a.age_of(9, NOW), None, "not sampled yet");
        assert_eq!(a.age_of(0, NOW), Some(100), "before the first sample");
        for i in 0..(OutboxAges::CAPACITY as u64 + 10) {
            a.sample(100 + i, NOW + i);
        }
        assert_eq!(a.samples.len(), OutboxAges::CAPACITY);
    }

    #[test]
    fn frame_rate_over_the_window() {
        let mut r = FrameRate::default();
        assert_eq!(r.per_second(), None);
        r.sample(0, 1_000);
        r.sample(50, 1_200);
        assert_eq!(r.per_second(), None, "too short");
        r.sample(100, 2_000);
        assert_eq!(r.per_second(), Some(100.0));
        for t in 3..=10 {
            r.sample(100, t * 1_000);
        }
        assert_eq!(r.per_second(), Some(0.0), "silent for the whole window");
    }
}
