//! The expiry check (sans-IO): days left of the certificate in force at `now`, whether the
//! renewal window is open and whether the owner must be warned.

use telematics_link::Validity;

const DAY_S: i64 = 86_400;

/// Where a certificate stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `notBefore` is in the future (usually a wrong clock).
    NotYetValid,
    /// Valid.
    Valid,
    /// `notAfter` is past.
    Expired,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Whole days until `notAfter` (rounded down; negative once expired).
    pub days_left: i64,
    /// Validity phase.
    pub phase: Phase,
    /// The in-band renewal should run (days left <= `renew_before_days`, or expired).
    pub renew: bool,
    /// The `certificate_expiring` alert is due (days left <= `warn_days`, or not valid).
    pub warn: bool,
}

/// The thresholds of `[mqtt] cert_renew_before_days` / `cert_warn_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Renewal window, days before `notAfter` (0: never renew in band).
    pub renew_before_days: u64,
    /// Warning window, days before `notAfter`.
    pub warn_days: u64,
}

impl Policy {
    /// Evaluates `v` at `now_s` (Unix seconds).
    pub fn check(&self, v: Validity, now_s: u64) -> Expiry {
        let secs = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        let left_s = secs(v.not_after).saturating_sub(secs(now_s));
        let days_left = left_s.div_euclid(DAY_S);
        let phase = if now_s < v.not_before {
            Phase::NotYetValid
        } else if now_s > v.not_after {
            Phase::Expired
        } else {
            Phase::Valid
        };
        let within = |days: u64| days_left <= secs(days);
        Expiry {
            days_left,
            phase,
            renew: self.renew_before_days > 0
                && (within(self.renew_before_days) || phase == Phase::Expired),
            warn: phase != Phase::Valid || within(self.warn_days),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        renew_before_days: 30,
        warn_days: 14,
    };
    const T0: u64 = 1_800_000_000;

    fn v(days: u64) -> Validity {
        Validity {
            not_before: T0 - 86_400,
            not_after: T0 + days * 86_400,
        }
    }

    #[test]
    fn windows_open_in_order_as_time_passes() {
        let cert = v(365);
        let at = |d: u64| P.check(cert, T0 + d * 86_400);
        let e = at(0);
        assert_eq!(
            (e.days_left, e.phase, e.renew, e.warn),
            (365, Phase::Valid, false, false)
        );
        let e = at(334);
        assert_eq!((e.days_left, e.renew, e.warn), (31, false, false));
        let e = at(335);
        assert_eq!((e.days_left, e.renew, e.warn), (30, true, false));
        let e = at(351);
        assert_eq!((e.days_left, e.renew, e.warn), (14, true, true));
        let e = P.check(cert, T0 + 365 * 86_400 + 1);
        assert_eq!(
            (e.days_left, e.phase, e.renew, e.warn),
            (-1, Phase::Expired, true, true)
        );
    }

    #[test]
    fn a_certificate_from_the_future_warns_and_renewal_can_be_off() {
        let e = P.check(v(10), T0 - 2 * 86_400);
        assert_eq!(e.phase, Phase::NotYetValid);
        assert!(e.warn);
        let off = Policy {
            renew_before_days: 0,
            warn_days: 0,
        };
        let e = off.check(v(0), T0 + 10);
        assert!(!e.renew, "renewal disabled");
        assert!(e.warn, "0 days left still warns");
        assert_eq!(
            off.check(v(u64::MAX / 86_400 / 2), 0).phase,
            Phase::NotYetValid
        );
    }
}
