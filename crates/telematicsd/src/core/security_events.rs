//! Security events for the owner (docs/payloads.cddl `alert-kind`, `security_*`): the event
//! type the security service reports once a decision is durable, its alert form, and the
//! sans-IO per-minute aggregation of refusals anyone can provoke (unknown key, revoked key,
//! AEAD failure).
//!
//! Aggregation ([`ForgedRefusals`]): per kind, the first refusal opens a window of
//! [`EVENT_WINDOW_MS`] and is reported at once (`count` 1); every later one in that window is
//! only counted, and the window's end reports them as one event with their `count`. A flood
//! of any size therefore yields at most two events per kind and window, and the counts sum
//! to the number of refusals. Memory is one slot per kind (three), whatever arrives.

use telematics_security::Fault;
use telematics_telemetry::Alert;

use crate::security::Refusal;

/// Aggregation window of the forgeable refusals (ms).
pub const EVENT_WINDOW_MS: u64 = 60_000;

/// Alert kind: a device was paired (`device`).
pub const KIND_DEVICE_PAIRED: &str = "security_device_paired";
/// Alert kind: a device was revoked (`device`, and `value` = the same hex, as before).
pub const KIND_DEVICE_REVOKED: &str = "security_device_revoked";
/// Alert kind: a wrong security code (`count` = consecutive failures; `device` for a
/// remote command, absent for an in-car pairing).
pub const KIND_WRONG_CODE: &str = "security_wrong_code";
/// Alert kind: recovery armed by a back-end authorization (`until` = confirmation deadline).
pub const KIND_RECOVERY_ARMED: &str = "security_recovery_armed";
/// Alert kind: recovery confirmed in the car (new code, lockout cleared, devices voided).
pub const KIND_RECOVERY_CONFIRMED: &str = "security_recovery_confirmed";

/// A security event the security service reports after the decision that caused it is
/// persisted. Carries no secret (no code, no key bytes): device key ids only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityEvent {
    /// A device was paired in the car.
    DevicePaired {
        /// Its key id.
        device: Vec<u8>,
    },
    /// A device was revoked (in the car, by the back end or by another device).
    DeviceRevoked {
        /// Its key id.
        device: Vec<u8>,
    },
    /// A code check failed.
    WrongCode {
        /// Consecutive failures now recorded (the lockout counter).
        failures: u32,
        /// The key id of the remote command's device; `None` for an in-car pairing.
        device: Option<Vec<u8>>,
    },
    /// Recovery armed; it can be confirmed in the car until `confirm_by_s` (Unix s).
    RecoveryArmed {
        /// End of the confirmation window (Unix s).
        confirm_by_s: u64,
    },
    /// Recovery confirmed in the car.
    RecoveryConfirmed,
}

impl SecurityEvent {
    /// The alert published for this event on `vehicles/{vin}/alerts` at `now` (Unix ms).
    pub fn alert(&self, vin: &str, now: u64) -> Alert {
        match self {
            SecurityEvent::DevicePaired { device } => {
                let mut a = Alert::event(vin, KIND_DEVICE_PAIRED, now);
                a.device = Some(hex::encode(device));
                a
            }
            SecurityEvent::DeviceRevoked { device } => {
                let mut a = Alert::event(vin, KIND_DEVICE_REVOKED, now);
                // `value` kept for the consumers of the first version of this alert.
                a.value = Some(telematics_telemetry::SignalValue::Text(hex::encode(device)));
                a.device = Some(hex::encode(device));
                a
            }
            SecurityEvent::WrongCode { failures, device } => {
                let mut a = Alert::event(vin, KIND_WRONG_CODE, now);
                a.count = Some(u64::from(*failures));
                a.device = device.as_deref().map(hex::encode);
                a
            }
            SecurityEvent::RecoveryArmed { confirm_by_s } => {
                let mut a = Alert::event(vin, KIND_RECOVERY_ARMED, now);
                a.until = Some(confirm_by_s.saturating_mul(1000));
                a
            }
            SecurityEvent::RecoveryConfirmed => Alert::event(vin, KIND_RECOVERY_CONFIRMED, now),
        }
    }
}

/// The lockout as the security layer last persisted it (its lock-free snapshot at `now`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lockout {
    /// Code checks allowed.
    #[default]
    None,
    /// A back-off wait until this Unix second.
    Until(u64),
    /// The hard lock: until a recovery is confirmed in the car.
    UntilRecovery,
}

impl Lockout {
    /// `true` while code checks are blocked.
    pub fn is_locked(self) -> bool {
        self != Lockout::None
    }

    /// The `until` of the `security_lockout` alert raised for it: the end of the wait (Unix
    /// ms); `None` for the hard lock (until recovery) and when not locked.
    pub fn until_ms(self) -> Option<u64> {
        match self {
            Lockout::Until(s) => Some(s.saturating_mul(1000)),
            Lockout::None | Lockout::UntilRecovery => None,
        }
    }
}

/// A refusal that costs nothing to provoke, reported in aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forged {
    /// A command under a key id the car never paired.
    UnknownKey,
    /// A command under a revoked key id.
    RevokedKey,
    /// A command whose AEAD did not open (wrong key, tampered bytes).
    Aead,
}

impl Forged {
    const ALL: [Forged; 3] = [Forged::UnknownKey, Forged::RevokedKey, Forged::Aead];

    /// The aggregated kind of this refusal, if it is one.
    pub fn of(refusal: Refusal) -> Option<Forged> {
        match refusal {
            Refusal::Fault(Fault::UnknownKey) => Some(Forged::UnknownKey),
            Refusal::Fault(Fault::RevokedKey) => Some(Forged::RevokedKey),
            Refusal::Fault(Fault::Aead) => Some(Forged::Aead),
            _ => None,
        }
    }

    /// Its alert kind.
    pub fn kind(self) -> &'static str {
        match self {
            Forged::UnknownKey => "security_unknown_key",
            Forged::RevokedKey => "security_revoked_key",
            Forged::Aead => "security_aead_failure",
        }
    }

    fn slot(self) -> usize {
        match self {
            Forged::UnknownKey => 0,
            Forged::RevokedKey => 1,
            Forged::Aead => 2,
        }
    }

    /// Its alert reporting `count` refusals at `now` (Unix ms).
    pub fn alert(self, vin: &str, count: u64, now: u64) -> Alert {
        let mut a = Alert::event(vin, self.kind(), now);
        a.count = Some(count);
        a
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    /// When the open window ends (ms); `None`: no window open.
    ends: Option<u64>,
    /// Refusals counted in it after the first (reported at the end).
    pending: u64,
}

/// The per-kind windows of the forgeable refusals; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ForgedRefusals {
    window_ms: u64,
    windows: [Window; 3],
}

impl Default for ForgedRefusals {
    fn default() -> Self {
        Self::new(EVENT_WINDOW_MS)
    }
}

impl ForgedRefusals {
    /// Windows of `window_ms` (>= 1).
    pub fn new(window_ms: u64) -> Self {
        ForgedRefusals {
            window_ms: window_ms.max(1),
            windows: [Window::default(); 3],
        }
    }

    /// One refusal of `kind` at `now`: `Some(1)` when it opens a window (report it now),
    /// `None` when it is counted for the window's end. Closes an ended window first (its
    /// count is returned by the next [`poll`](Self::poll), which the caller runs at
    /// [`next_deadline`](Self::next_deadline)).
    pub fn on_refusal(&mut self, kind: Forged, now: u64) -> Option<u64> {
        let w = &mut self.windows[kind.slot()];
        match w.ends {
            // Counted for the window's end; one that ended but was not polled yet keeps its
            // count pending for `poll`, so nothing is reported out of order.
            Some(_) => {
                w.pending = w.pending.saturating_add(1);
                None
            }
            None => {
                w.ends = Some(now.saturating_add(self.window_ms));
                Some(1)
            }
        }
    }

    /// The windows that ended by `now`: `(kind, count)` of each that counted refusals after
    /// its first; the windows close.
    pub fn poll(&mut self, now: u64) -> Vec<(Forged, u64)> {
        let mut out = Vec::new();
        for kind in Forged::ALL {
            let w = &mut self.windows[kind.slot()];
            if w.ends.is_some_and(|end| now >= end) {
                if w.pending > 0 {
                    out.push((kind, w.pending));
                }
                *w = Window::default();
            }
        }
        out
    }

    /// Every open window closes now (shutdown): `(kind, count)` of each that counted
    /// refusals after its first.
    pub fn flush(&mut self) -> Vec<(Forged, u64)> {
        let mut out = Vec::new();
        for kind in Forged::ALL {
            let w = std::mem::take(&mut self.windows[kind.slot()]);
            if w.pending > 0 {
                out.push((kind, w.pending));
            }
        }
        out
    }

    /// When the next window ends, if one is open.
    pub fn next_deadline(&self) -> Option<u64> {
        self.windows.iter().filter_map(|w| w.ends).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_goes_at_once_the_rest_at_the_window_end_per_kind() {
        let mut f = ForgedRefusals::new(1_000);
        assert_eq!(f.on_refusal(Forged::Aead, 10), Some(1));
        assert_eq!(f.on_refusal(Forged::UnknownKey, 20), Some(1), "own window");
        for t in 11..=15 {
            assert_eq!(f.on_refusal(Forged::Aead, t), None);
        }
        assert_eq!(f.next_deadline(), Some(1_010));
        assert!(f.poll(1_009).is_empty());
        assert_eq!(f.poll(1_010), vec![(Forged::Aead, 5)]);
        // Nothing after its first: the window closes silently.
        assert!(f.poll(1_020).is_empty());
        assert_eq!(f.next_deadline(), None);
        // A refusal arriving after the end but before the poll joins the pending count.
        assert_eq!(f.on_refusal(Forged::Aead, 2_000), Some(1));
        assert_eq!(f.on_refusal(Forged::Aead, 3_500), None);
        assert_eq!(f.poll(3_500), vec![(Forged::Aead, 1)]);
        // Shutdown: what an open window counted goes out before its end.
        assert_eq!(f.on_refusal(Forged::RevokedKey, 4_000), Some(1));
        assert_eq!(f.on_refusal(Forged::RevokedKey, 4_001), None);
        assert_eq!(f.flush(), vec![(Forged::RevokedKey, 1)]);
        assert_eq!(f.next_deadline(), None);
    }

    #[test]
    fn only_the_forgeable_refusals_are_aggregated() {
        assert_eq!(
            Forged::of(Refusal::Fault(Fault::RevokedKey)),
            Some(Forged::RevokedKey)
        );
        assert_eq!(Forged::of(Refusal::Fault(Fault::WrongCode)), None);
        assert_eq!(Forged::of(Refusal::StatePersist), None);
    }
}
