//! Reconnect and resubscribe delays: exponential backoff with full jitter and a stable-connection
//! reset rule.
//!
//! Pure: the random draw and how long the last connection stayed up are arguments, so the policy
//! is tested without sleeping or a clock. The link task supplies the draw (process-random) and the
//! measured connection lifetime.

use std::time::Duration;

/// Backoff policy of the link (reconnects, and commands-subscription retries while connected).
///
/// * The ceiling of failure number `n` (1-based) is `min * 2^(n-1)`, capped at `max`.
/// * The delay is drawn uniformly from `[0, ceiling]` ("full jitter"), so a fleet that lost the
///   broker at the same instant does not come back in lock step.
/// * The failure count resets only when a connection stayed up for at least `stable_after`; a
///   connection that drops sooner (e.g. right after CONNACK) counts as one more failure, so a
///   flapping broker or a vehicle the broker keeps throwing out backs off up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay (failure 1).
    pub min: Duration,
    /// Upper bound of every ceiling.
    pub max: Duration,
    /// How long a connection must have stayed up for its loss to count as a fresh start.
    pub stable_after: Duration,
}

impl Backoff {
    /// The ceiling of failure number `failures` (1-based; 0 is treated as 1):
    /// `min * 2^(failures-1)`, capped at `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.min
            .checked_mul(1u32 << exp)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before the next attempt after failure number `failures`, for a random `draw`
    /// uniform over `u32`: `ceiling(failures) * draw / u32::MAX`, i.e. uniform in
    /// `[0, ceiling]` (`draw = 0` gives zero, `draw = u32::MAX` the ceiling).
    pub fn delay(&self, failures: u32, draw: u32) -> Duration {
        let ceiling = self.ceiling(failures).as_nanos();
        let nanos = ceiling * u128::from(draw) / u128::from(u32::MAX);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The failure count after a connection attempt ended. `failures` is the count before it;
    /// `connected_for` is how long the connection was up (`None`: it never reached CONNACK).
    /// A connection that stayed up for `stable_after` or longer resets the count, so its loss is
    /// failure 1; anything shorter adds one.
    pub fn failures_after(&self, failures: u32, connected_for: Option<Duration>) -> u32 {
        match connected_for {
            Some(up) if up >= self.stable_after => 1,
            _ => failures.saturating_add(1),
        }
    }
}

/// A process-random draw for [`Backoff::delay`]: std's randomly keyed SipHash over a fresh
/// `RandomState` (each instance gets new keys) and the current time. Not cryptographic; it only
/// has to differ between vehicles and between attempts.
pub(crate) fn random_draw() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        min: Duration::from_millis(1000),
        max: Duration::from_secs(60),
        stable_after: Duration::from_secs(60),
    };

    #[test]
    fn ceiling_doubles_and_is_capped() {
        assert_eq!(B.ceiling(0), Duration::from_secs(1));
        assert_eq!(B.ceiling(1), Duration::from_secs(1));
        assert_eq!(B.ceiling(2), Duration::from_secs(2));
        assert_eq!(B.ceiling(6), Duration::from_secs(32));
        assert_eq!(B.ceiling(7), Duration::from_secs(60));
        assert_eq!(B.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_bounds() {
        for failures in [1, 2, 5, 7, 40, u32::MAX] {
            let c = B.ceiling(failures);
            // The whole range [0, ceiling] is reachable, nothing outside it.
            assert_eq!(B.delay(failures, 0), Duration::ZERO);
            assert_eq!(B.delay(failures, u32::MAX), c);
            let mid = B.delay(failures, u32::MAX / 2);
            assert!(
                mid <= c / 2 && mid >= c / 2 - Duration::from_micros(1),
                "{mid:?}"
            );
            for draw in [1, 7, 1 << 20, 3_000_000_000, u32::MAX - 1] {
                let d = B.delay(failures, draw);
                assert!(d <= c, "failures {failures} draw {draw}: {d:?} > {c:?}");
            }
            // Monotone in the draw.
            assert!(B.delay(failures, 1000) <= B.delay(failures, 2000));
        }
        // Never above max whatever min and the count are.
        let wide = Backoff {
            min: Duration::from_secs(3000),
            max: Duration::from_secs(3600),
            stable_after: Duration::from_secs(1),
        };
        assert_eq!(wide.delay(u32::MAX, u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn reset_only_after_a_stable_connection() {
        // Never connected: one more failure.
        assert_eq!(B.failures_after(0, None), 1);
        assert_eq!(B.failures_after(3, None), 4);
        // Dropped right after CONNACK (or after 59.999 s): still one more failure, so a
        // connection that keeps dropping backs off to the cap instead of hammering the broker.
        assert_eq!(B.failures_after(3, Some(Duration::ZERO)), 4);
        assert_eq!(B.failures_after(3, Some(Duration::from_millis(59_999))), 4);
        let mut f = 0;
        for _ in 0..10 {
            f = B.failures_after(f, Some(Duration::from_millis(50)));
        }
        assert_eq!(f, 10);
        assert_eq!(B.ceiling(f), B.max);
        // Up for stable_after or longer: the loss is a fresh failure 1.
        assert_eq!(B.failures_after(9, Some(Duration::from_secs(60))), 1);
        assert_eq!(B.failures_after(9, Some(Duration::from_secs(3600))), 1);
        assert_eq!(B.failures_after(u32::MAX, None), u32::MAX);
    }

    #[test]
    fn draws_differ() {
        let draws: std::collections::BTreeSet<u32> = (0..64).map(|_| random_draw()).collect();
        assert!(draws.len() > 60, "{} distinct of 64", draws.len());
    }
}
