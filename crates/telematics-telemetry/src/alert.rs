//! Alert rules with hysteresis and an optional minimum hold time.
//!
//! A threshold rule raises when the value drops **below** `raise_below` and clears only when it
//! rises **above** `clear_above` (> `raise_below`); values inside the band keep the current
//! state, so a signal oscillating in the band never flaps. With `min_hold_ms`, a transition is
//! not allowed until the previous one is at least that old (checked on the next update).
//! The security lockout alert is driven by events from the security layer.

use crate::TelemetryError;
use crate::payload::{Alert, AlertState, SignalValue};

/// A "low value" rule (low fuel, low tire pressure per tire, service due in km/days, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdRule {
    /// Alert kind code (`low_fuel`, `low_tire_pressure`, `service_due`, ...).
    pub kind: String,
    /// VSS path of the watched signal.
    pub path: String,
    /// Raise when value < this.
    pub raise_below: f64,
    /// Clear when value > this.
    pub clear_above: f64,
    /// Minimum time between two transitions of this rule (ms).
    pub min_hold_ms: u64,
}

impl ThresholdRule {
    /// Low fuel in percent with hysteresis `h`.
    pub fn low_fuel(path: &str, below_pct: f64, h: f64) -> Self {
        Self::new("low_fuel", path, below_pct, below_pct + h)
    }
    /// Low tire pressure (kPa) for one tire path.
    pub fn low_tire_pressure(path: &str, below_kpa: f64, h: f64) -> Self {
        Self::new("low_tire_pressure", path, below_kpa, below_kpa + h)
    }
    /// Service due when the remaining distance/time drops below `below`.
    pub fn service_due(path: &str, below: f64, h: f64) -> Self {
        Self::new("service_due", path, below, below + h)
    }
    fn new(kind: &str, path: &str, raise_below: f64, clear_above: f64) -> Self {
        ThresholdRule {
            kind: kind.to_string(),
            path: path.to_string(),
            raise_below,
            clear_above,
            min_hold_ms: 0,
        }
    }
    fn validate(&self) -> Result<(), TelemetryError> {
        if !(self.raise_below.is_finite()
            && self.clear_above.is_finite()
            && self.clear_above > self.raise_below)
        {
            return Err(TelemetryError::InvalidConfig {
                field: format!("alerts.{}.{}", self.kind, self.path),
                why: "thresholds must be finite with clear_above > raise_below",
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct RuleState {
    raised: bool,
    since: Option<u64>,
}

/// Evaluates alert rules; returns alert payloads on transitions only.
#[derive(Debug)]
pub struct AlertEngine {
    vin: String,
    rules: Vec<(ThresholdRule, RuleState)>,
    lockout: bool,
}

impl AlertEngine {
    /// Build an engine; invalid thresholds are refused naming the rule.
    pub fn new(vin: &str, rules: Vec<ThresholdRule>) -> Result<Self, TelemetryError> {
        for r in &rules {
            r.validate()?;
        }
        Ok(AlertEngine {
            vin: vin.to_string(),
            rules: rules
                .into_iter()
                .map(|r| {
                    (
                        r,
                        RuleState {
                            raised: false,
                            since: None,
                        },
                    )
                })
                .collect(),
            lockout: false,
        })
    }

    /// Feed one signal update; returns alerts to publish (raised/cleared transitions).
    pub fn on_signal(&mut self, path: &str, value: &SignalValue, now: u64) -> Vec<Alert> {
        let Some(x) = value.as_f64().filter(|x| !x.is_nan()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (rule, st) in self.rules.iter_mut().filter(|(r, _)| r.path == path) {
            let held = st
                .since
                .is_none_or(|t| now.saturating_sub(t) >= rule.min_hold_ms);
            let (next, threshold) = if !st.raised && x < rule.raise_below {
                (AlertState::Raised, rule.raise_below)
            } else if st.raised && x > rule.clear_above {
                (AlertState::Cleared, rule.clear_above)
            } else {
                continue;
            };
            if !held {
                continue;
            }
            st.raised = next == AlertState::Raised;
            st.since = Some(now);
            out.push(Alert {
                vin: self.vin.clone(),
                at: now,
                kind: rule.kind.clone(),
                signal: Some(rule.path.clone()),
                state: next,
                value: Some(value.clone()),
                threshold: Some(threshold),
                count: None,
                device: None,
                until: None,
            });
        }
        out
    }

    /// Security lockout event from the security layer; returns an alert on change only.
    pub fn on_lockout(&mut self, locked: bool, now: u64) -> Option<Alert> {
        if locked == self.lockout {
            return None;
        }
        self.lockout = locked;
        Some(Alert {
            vin: self.vin.clone(),
            at: now,
            kind: "security_lockout".to_string(),
            signal: None,
            state: if locked {
                AlertState::Raised
            } else {
                AlertState::Cleared
            },
            value: None,
            threshold: None,
            count: None,
            device: None,
            until: None,
        })
    }

    /// Currently raised alerts as `(kind, path)`.
    pub fn active(&self) -> Vec<(String, Option<String>)> {
        let mut v: Vec<_> = self
            .rules
            .iter()
            .filter(|(_, s)| s.raised)
            .map(|(r, _)| (r.kind.clone(), Some(r.path.clone())))
            .collect();
        if self.lockout {
            v.push(("security_lockout".to_string(), None));
        }
        v
    }
}
