//! CBOR payloads (see `docs/payloads.cddl`). Maps with text keys; encoded via
//! [`ciborium::Value`] so the wire shape is exactly the CDDL one.

use crate::TelemetryError;
use ciborium::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A VSS signal value, keyed by VSS path: the one value type of the workspace (decoded CAN
/// values and the vehicle state in `telematics-can` re-export it).
#[derive(Clone, Debug, PartialEq)]
pub enum SignalValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
    /// Text.
    Text(String),
}

impl SignalValue {
    /// Boolean value, if this is a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            SignalValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Numeric view (bools as 0/1, text `None`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SignalValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            SignalValue::Int(i) => Some(*i as f64),
            SignalValue::Float(f) => Some(*f),
            SignalValue::Text(_) => None,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            SignalValue::Bool(b) => Value::Bool(*b),
            SignalValue::Int(i) => Value::Integer((*i).into()),
            SignalValue::Float(f) => Value::Float(*f),
            SignalValue::Text(t) => Value::Text(t.clone()),
        }
    }

    fn from_value(v: &Value, field: &'static str) -> Result<Self, TelemetryError> {
        Ok(match v {
            Value::Bool(b) => SignalValue::Bool(*b),
            Value::Integer(i) => {
                SignalValue::Int(i64::try_from(*i).map_err(|_| TelemetryError::Schema {
                    field,
                    why: "integer out of i64 range",
                })?)
            }
            Value::Float(f) => SignalValue::Float(*f),
            Value::Text(t) => SignalValue::Text(t.clone()),
            _ => {
                return Err(TelemetryError::Schema {
                    field,
                    why: "expected bool, int, float or text",
                });
            }
        })
    }
}

/// Telemetry kind: full snapshot or on-change delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelemetryKind {
    /// Periodic snapshot of every known signal.
    Snapshot,
    /// On-change delta with only the changed signals.
    Delta,
}

/// Telemetry message (`vehicles/{vin}/telemetry`).
#[derive(Clone, Debug, PartialEq)]
pub struct Telemetry {
    /// Snapshot or delta.
    pub kind: TelemetryKind,
    /// Vehicle identification number.
    pub vin: String,
    /// Monotonic sequence number per daemon run.
    pub seq: u64,
    /// Unix milliseconds.
    pub at: u64,
    /// Signal values by VSS path.
    pub signals: BTreeMap<String, SignalValue>,
    /// VSS paths whose last value is older than the configured max age.
    pub stale: Vec<String>,
}

/// Alert transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Condition started.
    Raised,
    /// Condition ended.
    Cleared,
}

/// Alert message (`vehicles/{vin}/alerts`).
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Vehicle identification number.
    pub vin: String,
    /// Unix milliseconds.
    pub at: u64,
    /// Alert kind code, e.g. `low_fuel`, `low_tire_pressure`, `service_due`, `security_lockout`.
    pub kind: String,
    /// VSS path the alert is about, if any (e.g. which tire).
    pub signal: Option<String>,
    /// Raised or cleared.
    pub state: AlertState,
    /// Value that triggered the transition.
    pub value: Option<SignalValue>,
    /// Threshold crossed.
    pub threshold: Option<f64>,
    /// Security events: how many (consecutive wrong codes; refusals aggregated in a window).
    pub count: Option<u64>,
    /// Security events: the device concerned, its key id in hex (never a secret).
    pub device: Option<String>,
    /// Security events: until when (Unix ms) the condition holds (end of a lockout wait,
    /// recovery confirmation deadline).
    pub until: Option<u64>,
}

/// Command result state: the one lifecycle type of a command (executor, daemon core, journal,
/// `telematicsctl`). Its serde form is the stable name (`accepted|executed|failed|rejected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultState {
    /// Accepted, actuating.
    Accepted,
    /// Confirmed.
    Executed,
    /// Failed (timeout, interrupted).
    Failed,
    /// Refused with a reason code.
    Rejected,
}

/// A command's result: the one record of the workspace for it. The executor emits it, the
/// daemon core journals and publishes it, `telematicsctl` and the tests decode it.
///
/// Two encodings of the same record:
/// - the published payload (`vehicles/{vin}/results`): [`CommandResult::encode`] /
///   [`CommandResult::decode`], exactly `command-result` of `docs/payloads.cddl`;
/// - the serde form, the daemon's journal entry: the same field names, except `reason` for the
///   reason code (the key journals have always used, so journals stay readable both ways);
///   `command_id` may be absent (entries written before it was stored: the journal key has it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// 16-byte command id (CBOR bstr).
    #[serde(default, with = "id_bytes")]
    pub command_id: [u8; 16],
    /// Lifecycle state.
    pub state: ResultState,
    /// Stable reason code (`reason-code` of the CDDL), for failed and rejected.
    #[serde(rename = "reason", default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Human-readable detail (e.g. the VSS path of a stale signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Time of the transition, unix milliseconds.
    pub at: u64,
    /// For `locked_out` (and a `wrong_code` that started a wait): seconds until a code check
    /// is allowed again. Absent otherwise, and for a lock until recovery (`detail` is then
    /// `until_recovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// The command id's serde form: a CBOR byte string, as on the wire.
mod id_bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(id)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        struct Id;
        impl Visitor<'_> for Id {
            type Value = [u8; 16];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 16-byte string")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; 16], E> {
                <[u8; 16]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(Id)
    }
}

pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
pub(crate) fn uint(v: u64) -> Value {
    Value::Integer(v.into())
}

pub(crate) fn to_bytes(v: &Value) -> Result<Vec<u8>, TelemetryError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).map_err(|e| TelemetryError::Encode(e.to_string()))?;
    Ok(out)
}

pub(crate) struct Fields(pub(crate) Vec<(Value, Value)>);

impl Fields {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, TelemetryError> {
        let v: Value =
            ciborium::de::from_reader(bytes).map_err(|e| TelemetryError::Decode(e.to_string()))?;
        match v {
            Value::Map(m) => Ok(Fields(m)),
            _ => Err(TelemetryError::Schema {
                field: "$",
                why: "expected a map",
            }),
        }
    }
    pub(crate) fn opt(&self, key: &'static str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
            .map(|(_, v)| v)
    }
    pub(crate) fn get(&self, key: &'static str) -> Result<&Value, TelemetryError> {
        self.opt(key).ok_or(TelemetryError::Schema {
            field: key,
            why: "missing",
        })
    }
    pub(crate) fn text(&self, key: &'static str) -> Result<String, TelemetryError> {
        match self.get(key)? {
            Value::Text(t) => Ok(t.clone()),
            _ => Err(TelemetryError::Schema {
                field: key,
                why: "expected text",
            }),
        }
    }
    pub(crate) fn opt_text(&self, key: &'static str) -> Result<Option<String>, TelemetryError> {
        match self.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.text(key).map(Some),
        }
    }
    pub(crate) fn opt_uint(&self, key: &'static str) -> Result<Option<u64>, TelemetryError> {
        match self.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.uint(key).map(Some),
        }
    }
    pub(crate) fn uint(&self, key: &'static str) -> Result<u64, TelemetryError> {
        match self.get(key)? {
            Value::Integer(i) => u64::try_from(*i).map_err(|_| TelemetryError::Schema {
                field: key,
                why: "expected unsigned integer",
            }),
            _ => Err(TelemetryError::Schema {
                field: key,
                why: "expected unsigned integer",
            }),
        }
    }
}

pub(crate) fn bad(field: &'static str, why: &'static str) -> TelemetryError {
    TelemetryError::Schema { field, why }
}

impl Telemetry {
    /// Encode to CBOR.
    pub fn encode(&self) -> Result<Vec<u8>, TelemetryError> {
        let kind = match self.kind {
            TelemetryKind::Snapshot => "snapshot",
            TelemetryKind::Delta => "delta",
        };
        let signals = self
            .signals
            .iter()
            .map(|(k, v)| (text(k), v.to_value()))
            .collect();
        let stale = self.stale.iter().map(|s| text(s)).collect();
        to_bytes(&Value::Map(vec![
            (text("kind"), text(kind)),
            (text("vin"), text(&self.vin)),
            (text("seq"), uint(self.seq)),
            (text("at"), uint(self.at)),
            (text("signals"), Value::Map(signals)),
            (text("stale"), Value::Array(stale)),
        ]))
    }

    /// Decode from CBOR; bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, TelemetryError> {
        let f = Fields::parse(bytes)?;
        let kind = match f.text("kind")?.as_str() {
            "snapshot" => TelemetryKind::Snapshot,
            "delta" => TelemetryKind::Delta,
            _ => return Err(bad("kind", "expected snapshot or delta")),
        };
        let mut signals = BTreeMap::new();
        match f.get("signals")? {
            Value::Map(m) => {
                for (k, v) in m {
                    let Value::Text(k) = k else {
                        return Err(bad("signals", "keys must be text"));
                    };
                    signals.insert(k.clone(), SignalValue::from_value(v, "signals")?);
                }
            }
            _ => return Err(bad("signals", "expected a map")),
        }
        let stale = match f.get("stale")? {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::Text(t) => Ok(t.clone()),
                    _ => Err(bad("stale", "expected text")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(bad("stale", "expected an array")),
        };
        Ok(Telemetry {
            kind,
            vin: f.text("vin")?,
            seq: f.uint("seq")?,
            at: f.uint("at")?,
            signals,
            stale,
        })
    }
}

impl Alert {
    /// A one-shot event of `kind` (state `raised`, no signal, value or threshold), e.g. a
    /// security event for the owner; the caller fills `count`, `device`, `until`.
    pub fn event(vin: &str, kind: &str, at: u64) -> Self {
        Alert {
            vin: vin.to_owned(),
            at,
            kind: kind.to_owned(),
            signal: None,
            state: AlertState::Raised,
            value: None,
            threshold: None,
            count: None,
            device: None,
            until: None,
        }
    }

    /// Encode to CBOR.
    pub fn encode(&self) -> Result<Vec<u8>, TelemetryError> {
        let state = match self.state {
            AlertState::Raised => "raised",
            AlertState::Cleared => "cleared",
        };
        let mut m = vec![
            (text("vin"), text(&self.vin)),
            (text("at"), uint(self.at)),
            (text("kind"), text(&self.kind)),
            (text("state"), text(state)),
        ];
        if let Some(s) = &self.signal {
            m.push((text("signal"), text(s)));
        }
        if let Some(v) = &self.value {
            m.push((text("value"), v.to_value()));
        }
        if let Some(t) = self.threshold {
            m.push((text("threshold"), Value::Float(t)));
        }
        if let Some(n) = self.count {
            m.push((text("count"), uint(n)));
        }
        if let Some(d) = &self.device {
            m.push((text("device"), text(d)));
        }
        if let Some(u) = self.until {
            m.push((text("until"), uint(u)));
        }
        to_bytes(&Value::Map(m))
    }

    /// Decode from CBOR.
    pub fn decode(bytes: &[u8]) -> Result<Self, TelemetryError> {
        let f = Fields::parse(bytes)?;
        let state = match f.text("state")?.as_str() {
            "raised" => AlertState::Raised,
            "cleared" => AlertState::Cleared,
            _ => return Err(bad("state", "expected raised or cleared")),
        };
        let value = match f.opt("value") {
            None | Some(Value::Null) => None,
            Some(v) => Some(SignalValue::from_value(v, "value")?),
        };
        let threshold = match f.opt("threshold") {
            None | Some(Value::Null) => None,
            Some(Value::Float(x)) => Some(*x),
            Some(Value::Integer(i)) => Some(i128::from(*i) as f64),
            Some(_) => return Err(bad("threshold", "expected a number")),
        };
        Ok(Alert {
            vin: f.text("vin")?,
            at: f.uint("at")?,
            kind: f.text("kind")?,
            signal: f.opt_text("signal")?,
            state,
            value,
            threshold,
            count: f.opt_uint("count")?,
            device: f.opt_text("device")?,
            until: f.opt_uint("until")?,
        })
    }
}

impl ResultState {
    /// Terminal states end a command's lifecycle (all but `accepted`).
    pub fn is_terminal(self) -> bool {
        !matches!(self, ResultState::Accepted)
    }

    /// Stable name (`accepted|executed|failed|rejected`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResultState::Accepted => "accepted",
            ResultState::Executed => "executed",
            ResultState::Failed => "failed",
            ResultState::Rejected => "rejected",
        }
    }
}

impl CommandResult {
    /// Encode to CBOR.
    pub fn encode(&self) -> Result<Vec<u8>, TelemetryError> {
        let mut m = vec![
            (text("command_id"), Value::Bytes(self.command_id.to_vec())),
            (text("state"), text(self.state.as_str())),
        ];
        if let Some(r) = &self.reason_code {
            m.push((text("reason_code"), text(r)));
        }
        if let Some(d) = &self.detail {
            m.push((text("detail"), text(d)));
        }
        m.push((text("at"), uint(self.at)));
        if let Some(r) = self.retry_after_s {
            m.push((text("retry_after_s"), uint(r)));
        }
        to_bytes(&Value::Map(m))
    }

    /// Decode from CBOR.
    pub fn decode(bytes: &[u8]) -> Result<Self, TelemetryError> {
        let f = Fields::parse(bytes)?;
        let command_id = match f.get("command_id")? {
            Value::Bytes(b) => <[u8; 16]>::try_from(b.as_slice())
                .map_err(|_| bad("command_id", "expected 16 bytes"))?,
            _ => return Err(bad("command_id", "expected a byte string")),
        };
        let state = match f.text("state")?.as_str() {
            "accepted" => ResultState::Accepted,
            "executed" => ResultState::Executed,
            "failed" => ResultState::Failed,
            "rejected" => ResultState::Rejected,
            _ => return Err(bad("state", "unknown result state")),
        };
        Ok(CommandResult {
            command_id,
            state,
            reason_code: f.opt_text("reason_code")?,
            detail: f.opt_text("detail")?,
            at: f.uint("at")?,
            retry_after_s: match f.opt("retry_after_s") {
                None | Some(Value::Null) => None,
                Some(_) => Some(f.uint("retry_after_s")?),
            },
        })
    }
}
