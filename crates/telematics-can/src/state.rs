//! Pure vehicle state store: latest value + timestamp per VSS path, staleness, change detection.
//!
//! Time is passed in as a monotonic [`Timestamp`] in milliseconds; the store never reads a clock.
//! A value is *stale* when `now - last_update > max_age_ms` (strictly greater; `max_age_ms == 0`
//! means never stale). `last_update` is the time of the last frame that carried the signal, even
//! if the value did not change. A path never received has no reading at all.
//!
//! This is the daemon's one staleness rule: the executor's preconditions, telemetry's `stale`
//! list and `doctor`'s fresh count all read it. The time of an update is its frame's own
//! timestamp (kernel receive time on SocketCAN, log time on replay, receive time on the TCP
//! bus), so a frame that waited in a queue is as old as it is; an update older than the
//! one already stored (frames from two buses out of order) is ignored.

use std::collections::HashMap;

use crate::SignalValue;
use crate::dbc::DecodedMessage;
use crate::vss::{BoundMapping, DEFAULT_MAX_AGE_MS};

/// Monotonic time in milliseconds (caller-defined epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds elapsed since `earlier` (0 if `earlier` is in the future).
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct PathConfig {
    max_age_ms: u64,
    deadband: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct Slot {
    value: SignalValue,
    reported: SignalValue,
    updated: Timestamp,
}

/// A value read from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    /// Latest value.
    pub value: &'a SignalValue,
    /// Time of the last update.
    pub updated: Timestamp,
    /// Age in ms at `now`.
    pub age_ms: u64,
    /// Older than the configured max age.
    pub is_stale: bool,
}

/// A reported change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// VSS path.
    pub path: String,
    /// Previously reported value (`None` for the first value).
    pub old: Option<SignalValue>,
    /// New value.
    pub new: SignalValue,
    /// When.
    pub at: Timestamp,
}

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    /// VSS path.
    pub path: String,
    /// Latest value.
    pub value: SignalValue,
    /// Age in ms at snapshot time.
    pub age_ms: u64,
    /// Stale at snapshot time.
    pub is_stale: bool,
}

/// The vehicle state store.
#[derive(Debug, Clone, Default)]
pub struct VehicleState {
    config: HashMap<String, PathConfig>,
    slots: HashMap<String, Slot>,
    default_max_age_ms: u64,
}

impl VehicleState {
    /// Empty store; paths not configured use `default_max_age_ms` and no deadband.
    pub fn new(default_max_age_ms: u64) -> Self {
        VehicleState {
            config: HashMap::new(),
            slots: HashMap::new(),
            default_max_age_ms,
        }
    }

    /// Store configured with each mapping entry's max age and deadband.
    pub fn from_mapping(mapping: &BoundMapping) -> Self {
        let mut s = VehicleState::new(DEFAULT_MAX_AGE_MS);
        for e in mapping.entries() {
            s.configure(
                &e.path,
                e.max_age_ms.unwrap_or(DEFAULT_MAX_AGE_MS),
                e.deadband,
            );
        }
        s
    }

    /// Set max age and float deadband for a path.
    pub fn configure(&mut self, path: &str, max_age_ms: u64, deadband: f64) {
        let deadband = if deadband.is_finite() && deadband > 0.0 {
            deadband
        } else {
            0.0
        };
        self.config.insert(
            path.to_string(),
            PathConfig {
                max_age_ms,
                deadband,
            },
        );
    }

    fn cfg(&self, path: &str) -> PathConfig {
        self.config.get(path).copied().unwrap_or(PathConfig {
            max_age_ms: self.default_max_age_ms,
            deadband: 0.0,
        })
    }

    fn differs(a: &SignalValue, b: &SignalValue, deadband: f64) -> bool {
        match (a, b) {
            (SignalValue::Float(x), SignalValue::Float(y)) => {
                if x.is_nan() || y.is_nan() {
                    x.is_nan() != y.is_nan()
                } else {
                    (x - y).abs() > deadband || (deadband == 0.0 && x != y)
                }
            }
            _ => a != b,
        }
    }

    /// Record one value observed at `now` (its frame's timestamp); returns a change when it
    /// differs from the last *reported* value (beyond the deadband for floats). A value older
    /// than the stored one is ignored.
    pub fn set(&mut self, path: &str, value: SignalValue, now: Timestamp) -> Option<Change> {
        let deadband = self.cfg(path).deadband;
        match self.slots.get_mut(path) {
            Some(slot) if now < slot.updated => None,
            Some(slot) => {
                slot.updated = now;
                let changed = Self::differs(&slot.reported, &value, deadband);
                slot.value = value;
                if changed {
                    let old = std::mem::replace(&mut slot.reported, slot.value.clone());
                    Some(Change {
                        path: path.to_string(),
                        old: Some(old),
                        new: slot.value.clone(),
                        at: now,
                    })
                } else {
                    None
                }
            }
            None => {
                self.slots.insert(
                    path.to_string(),
                    Slot {
                        value: value.clone(),
                        reported: value.clone(),
                        updated: now,
                    },
                );
                Some(Change {
                    path: path.to_string(),
                    old: None,
                    new: value,
                    at: now,
                })
            }
        }
    }

    /// Apply the VSS values of a decoded frame.
    pub fn apply(
        &mut self,
        mapping: &BoundMapping,
        decoded: &DecodedMessage<'_>,
        now: Timestamp,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for u in mapping.map(decoded) {
            if let Some(c) = self.set(&u.entry.path, u.value, now) {
                changes.push(c);
            }
        }
        changes
    }

    /// Latest value of a path with its age and staleness at `now`.
    pub fn get(&self, path: &str, now: Timestamp) -> Option<Reading<'_>> {
        let slot = self.slots.get(path)?;
        let age_ms = now.since(slot.updated);
        let max = self.cfg(path).max_age_ms;
        Some(Reading {
            value: &slot.value,
            updated: slot.updated,
            age_ms,
            is_stale: max != 0 && age_ms > max,
        })
    }

    /// Whether `path` is stale at `now`: heard, and older than its maximum age.
    pub fn is_stale(&self, path: &str, now: Timestamp) -> bool {
        self.get(path, now).is_some_and(|r| r.is_stale)
    }

    /// Latest value only if it is fresh.
    pub fn get_fresh(&self, path: &str, now: Timestamp) -> Option<&SignalValue> {
        self.get(path, now).filter(|r| !r.is_stale).map(|r| r.value)
    }

    /// All known values, sorted by path.
    pub fn snapshot(&self, now: Timestamp) -> Vec<SnapshotEntry> {
        let mut v: Vec<SnapshotEntry> = self
            .slots
            .keys()
            .filter_map(|p| {
                self.get(p, now).map(|r| SnapshotEntry {
                    path: p.clone(),
                    value: r.value.clone(),
                    age_ms: r.age_ms,
                    is_stale: r.is_stale,
                })
            })
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Number of paths with a value.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no value was received yet.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_boundary_and_default() {
        let mut s = VehicleState::new(100);
        s.configure("Vehicle.Speed", 1000, 0.5);
        s.set("Vehicle.Speed", SignalValue::Float(10.0), Timestamp(5_000));
        let r = s.get("Vehicle.Speed", Timestamp(6_000)).expect("present");
        assert_eq!(r.age_ms, 1000);
        assert!(!r.is_stale);
        assert!(
            s.get("Vehicle.Speed", Timestamp(6_001))
                .expect("present")
                .is_stale
        );
        assert!(s.get_fresh("Vehicle.Speed", Timestamp(6_001)).is_none());
        s.set("Vehicle.Other", SignalValue::Bool(true), Timestamp(0));
        assert!(
            s.get("Vehicle.Other", Timestamp(101))
                .expect("present")
                .is_stale
        );
        assert!(s.get("Vehicle.Missing", Timestamp(0)).is_none());
        // time going backwards saturates to age 0
        assert_eq!(s.get("Vehicle.Other", Timestamp(0)).expect("p").age_ms, 0);
    }

    #[test]
    fn an_update_older_than_the_stored_one_is_ignored() {
        let mut s = VehicleState::new(1_000);
        s.set("Vehicle.Speed", SignalValue::Float(10.0), Timestamp(5_000));
        // A frame stamped earlier (another bus, delivered late) neither regresses the value
        // nor makes the signal look fresher.
        assert!(
            s.set("Vehicle.Speed", SignalValue::Float(3.0), Timestamp(4_000))
                .is_none()
        );
        let r = s.get("Vehicle.Speed", Timestamp(6_001)).expect("present");
        assert_eq!(
            (r.value, r.updated),
            (&SignalValue::Float(10.0), Timestamp(5_000))
        );
        assert!(r.is_stale);
        assert!(s.is_stale("Vehicle.Speed", Timestamp(6_001)));
        assert!(!s.is_stale("Vehicle.Missing", Timestamp(6_001)));
    }

    #[test]
    fn change_detection_with_deadband() {
        let mut s = VehicleState::new(0);
        s.configure("Vehicle.Speed", 0, 0.5);
        let first = s.set("Vehicle.Speed", SignalValue::Float(10.0), Timestamp(1));
        assert_eq!(first.map(|c| c.old), Some(None));
        assert!(
            s.set("Vehicle.Speed", SignalValue::Float(10.3), Timestamp(2))
                .is_none()
        );
        // creeping values are compared against the last reported value, not the last stored one
        assert!(
            s.set("Vehicle.Speed", SignalValue::Float(10.45), Timestamp(3))
                .is_none()
        );
        let c = s
            .set("Vehicle.Speed", SignalValue::Float(10.6), Timestamp(4))
            .expect("change");
        assert_eq!(c.old, Some(SignalValue::Float(10.0)));
        assert_eq!(
            s.get("Vehicle.Speed", Timestamp(4))
                .map(|r| r.value.clone()),
            Some(SignalValue::Float(10.6))
        );
        assert!(
            s.set("Vehicle.Door", SignalValue::Bool(true), Timestamp(5))
                .is_some()
        );
        assert!(
            s.set("Vehicle.Door", SignalValue::Bool(true), Timestamp(6))
                .is_none()
        );
        assert!(
            s.set("Vehicle.Door", SignalValue::Bool(false), Timestamp(7))
                .is_some()
        );
        // unchanged value still refreshes the timestamp
        assert_eq!(
            s.get("Vehicle.Speed", Timestamp(10)).map(|r| r.updated),
            Some(Timestamp(4))
        );
        let snap = s.snapshot(Timestamp(10));
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].path, "Vehicle.Door");
        assert_eq!(snap[0].age_ms, 3);
    }
}
