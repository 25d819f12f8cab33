//! Pure publishing schedule: periodic snapshots plus rate-limited on-change deltas.

use crate::TelemetryError;
use crate::payload::{SignalValue, Telemetry, TelemetryKind};
use std::collections::BTreeMap;

/// An on-change signal.
#[derive(Clone, Debug, PartialEq)]
pub struct OnChange {
    /// VSS path.
    pub path: String,
    /// Numeric changes smaller than or equal to this are ignored (0 = any change).
    pub deadband: f64,
    /// Minimum time between two deltas carrying this signal (ms).
    pub min_interval_ms: u64,
}

/// Schedule configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    /// Vehicle identification number.
    pub vin: String,
    /// Snapshot period (ms).
    pub periodic_ms: u64,
    /// On-change signals.
    pub on_change: Vec<OnChange>,
}

impl ScheduleConfig {
    /// Validate, naming the bad key.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if self.periodic_ms == 0 {
            return Err(TelemetryError::InvalidConfig {
                field: "telemetry.periodic_ms".into(),
                why: "must be > 0",
            });
        }
        for oc in &self.on_change {
            if !oc.deadband.is_finite() || oc.deadband < 0.0 {
                return Err(TelemetryError::InvalidConfig {
                    field: format!("telemetry.on_change.{}.deadband", oc.path),
                    why: "must be finite and >= 0",
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct ChangeState {
    sent: Option<(SignalValue, u64)>,
    pending: bool,
}

/// The schedule state machine.
#[derive(Debug)]
pub struct Schedule {
    cfg: ScheduleConfig,
    latest: BTreeMap<String, (SignalValue, u64)>,
    /// Paths the vehicle's signal store reports stale ([`Schedule::set_stale`]).
    stale: Vec<String>,
    changes: BTreeMap<String, ChangeState>,
    next_periodic: u64,
    seq: u64,
}

fn differs(old: &SignalValue, new: &SignalValue, deadband: f64) -> bool {
    match (old.as_f64(), new.as_f64()) {
        (Some(a), Some(b)) if !matches!(new, SignalValue::Bool(_)) => {
            // NaN transitions always count as a change.
            a.is_nan() != b.is_nan() || (a - b).abs() > deadband
        }
        _ => old != new,
    }
}

impl Schedule {
    /// Create a schedule; the first snapshot is due at `now`.
    pub fn new(cfg: ScheduleConfig, now: u64) -> Result<Self, TelemetryError> {
        cfg.validate()?;
        let changes = cfg
            .on_change
            .iter()
            .map(|o| (o.path.clone(), ChangeState::default()))
            .collect();
        Ok(Schedule {
            cfg,
            latest: BTreeMap::new(),
            stale: Vec::new(),
            changes,
            next_periodic: now,
            seq: 0,
        })
    }

    fn rule(&self, path: &str) -> Option<&OnChange> {
        self.cfg.on_change.iter().find(|o| o.path == path)
    }

    /// Record signal updates; returns a delta to publish now, if any on-change signal moved
    /// beyond its deadband and its min interval allows it (otherwise it is sent by `poll`).
    pub fn on_update(&mut self, changes: &[(String, SignalValue)], now: u64) -> Vec<Telemetry> {
        for (path, v) in changes {
            self.latest.insert(path.clone(), (v.clone(), now));
            let Some(rule) = self.rule(path).cloned() else {
                continue;
            };
            if let Some(cs) = self.changes.get_mut(path) {
                cs.pending = match &cs.sent {
                    None => true,
                    Some((old, _)) => differs(old, v, rule.deadband),
                };
            }
        }
        self.due_delta(now).into_iter().collect()
    }

    fn due_delta(&mut self, now: u64) -> Option<Telemetry> {
        let mut signals = BTreeMap::new();
        for oc in &self.cfg.on_change {
            let Some(cs) = self.changes.get_mut(&oc.path) else {
                continue;
            };
            if !cs.pending {
                continue;
            }
            let allowed = cs
                .sent
                .as_ref()
                .is_none_or(|(_, at)| now >= at.saturating_add(oc.min_interval_ms));
            if let (true, Some((v, _))) = (allowed, self.latest.get(&oc.path)) {
                signals.insert(oc.path.clone(), v.clone());
                cs.sent = Some((v.clone(), now));
                cs.pending = false;
            }
        }
        if signals.is_empty() {
            return None;
        }
        Some(self.message(TelemetryKind::Delta, signals, Vec::new(), now))
    }

    fn message(
        &mut self,
        kind: TelemetryKind,
        signals: BTreeMap<String, SignalValue>,
        stale: Vec<String>,
        now: u64,
    ) -> Telemetry {
        self.seq += 1;
        Telemetry {
            kind,
            vin: self.cfg.vin.clone(),
            seq: self.seq,
            at: now,
            signals,
            stale,
        }
    }

    /// Whether [`poll`](Self::poll) at `now` publishes a snapshot (the caller refreshes
    /// [`set_stale`](Self::set_stale) first).
    pub fn snapshot_due(&self, now: u64) -> bool {
        now >= self.next_periodic
    }

    /// The paths that are stale now, as the vehicle's signal store decides them (the one
    /// staleness rule: each signal's maximum age against its frame's timestamp). Listed in the
    /// `stale` field of the next snapshots; the schedule keeps no age rule of its own.
    pub fn set_stale(&mut self, mut stale: Vec<String>) {
        stale.sort();
        stale.dedup();
        self.stale = stale;
    }

    /// Timer tick: periodic snapshot when due, and rate-limited deltas that became allowed.
    pub fn poll(&mut self, now: u64) -> Vec<Telemetry> {
        let mut out: Vec<Telemetry> = self.due_delta(now).into_iter().collect();
        if now >= self.next_periodic {
            let signals = self
                .latest
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            let stale = self.stale.clone();
            out.push(self.message(TelemetryKind::Snapshot, signals, stale, now));
            // Skip missed periods instead of bursting after a long pause.
            let behind = (now - self.next_periodic) / self.cfg.periodic_ms;
            self.next_periodic = self
                .next_periodic
                .saturating_add((behind + 1).saturating_mul(self.cfg.periodic_ms));
        }
        out
    }

    /// When the shell must call [`Schedule::poll`] next.
    pub fn next_deadline(&self) -> u64 {
        let mut d = self.next_periodic;
        for oc in &self.cfg.on_change {
            if let Some(ChangeState {
                pending: true,
                sent: Some((_, at)),
            }) = self.changes.get(&oc.path)
            {
                d = d.min(at.saturating_add(oc.min_interval_ms));
            }
        }
        d
    }
}
