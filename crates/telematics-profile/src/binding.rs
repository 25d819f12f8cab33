//! `[signals]`: how each of the executor's vehicle signals is read from VSS paths, so a car
//! whose mapping names other paths or encodes a value differently expresses the same rules.

use telematics_exec::{SignalKind, VehicleSignal};
use telematics_telemetry::SignalValue;

/// A value a VSS signal is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    /// A boolean (an integer signal compares 0/1).
    Bool(bool),
    /// A number.
    Number(f64),
    /// A text.
    Text(String),
}

impl Expected {
    fn matches(&self, v: &SignalValue) -> Option<bool> {
        Some(match (self, v) {
            (Expected::Bool(b), SignalValue::Bool(x)) => b == x,
            (Expected::Bool(b), SignalValue::Int(i)) => *b == (*i != 0),
            (Expected::Number(n), v) => (v.as_f64()? - n).abs() < 1e-9,
            (Expected::Text(t), SignalValue::Text(x)) => t == x,
            _ => return None,
        })
    }
}

/// The test a binding applies to its paths' values.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    /// The value itself (a number: speed in km/h).
    Number,
    /// `true` when every path's value equals this.
    Equals(Expected),
    /// `true` when a path's value is above this.
    Above(f64),
}

/// One executor signal bound to VSS paths.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The executor's signal.
    pub kind: SignalKind,
    /// The VSS paths it is read from (every one must be fresh).
    pub paths: Vec<String>,
    /// How their values become the signal.
    pub test: Test,
}

impl Binding {
    /// The signal from the current values (`value(path)` gives a fresh value or `None`);
    /// `None` when a path is missing or stale, or a value has the wrong type.
    pub fn eval<'a>(
        &self,
        value: impl Fn(&str) -> Option<&'a SignalValue>,
    ) -> Option<VehicleSignal> {
        let values: Vec<&SignalValue> =
            self.paths.iter().map(|p| value(p)).collect::<Option<_>>()?;
        match &self.test {
            Test::Number => {
                let v = values.first()?.as_f64()?;
                (self.kind == SignalKind::Speed).then_some(VehicleSignal::SpeedKmh(v))
            }
            Test::Equals(e) => {
                let all = values
                    .iter()
                    .map(|v| e.matches(v))
                    .collect::<Option<Vec<bool>>>()?
                    .into_iter()
                    .all(|b| b);
                VehicleSignal::boolean(self.kind, all)
            }
            Test::Above(x) => {
                let any = values
                    .iter()
                    .map(|v| v.as_f64().map(|f| f > *x))
                    .collect::<Option<Vec<bool>>>()?
                    .into_iter()
                    .any(|b| b);
                VehicleSignal::boolean(self.kind, any)
            }
        }
    }
}
