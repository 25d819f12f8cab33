//! Mapping from DBC signals to COVESA VSS paths, from a TOML config or a Kuksa `dbc2vss` JSON file.
//!
//! # Maximum age
//!
//! A signal's maximum age (older is stale) is resolved when the mapping is bound to its DBC,
//! first match wins: the entry's own `max_age_ms`; [`CYCLES_PER_MAX_AGE`] periods of its
//! message's `GenMsgCycleTime` ([`crate::MessageDef::cycle_time_ms`]; the longest when the
//! signal is in several messages); the file's `default_max_age_ms`; [`DEFAULT_MAX_AGE_MS`].
//! A message the DBC declares periodic thus goes stale after three missed frames without any
//! configuration, and a mapping can still widen or narrow a single signal.

use std::collections::HashMap;

use serde::Deserialize;

use crate::SignalValue;
use crate::dbc::{Dbc, DecodedMessage, DecodedSignal, RawValue};
use crate::error::CanError;
use crate::expr::Expr;
use crate::frame::CanId;

/// Output type of a VSS signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VssType {
    /// Boolean (`raw != 0` without a transform).
    Bool,
    /// Integer (physical value rounded; the exact raw value when the signal is unscaled;
    /// no value outside `i64`).
    Int,
    /// Float (physical value).
    Float,
    /// String (value-table label, else the physical value rendered; the exact raw value for
    /// unscaled integer signals).
    Text,
}

impl VssType {
    fn parse(s: &str) -> Option<VssType> {
        Some(match s {
            "bool" | "boolean" => VssType::Bool,
            "int" | "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32"
            | "uint64" => VssType::Int,
            "float" | "double" => VssType::Float,
            "string" | "text" => VssType::Text,
            _ => return None,
        })
    }
}

/// Key of a mapping table entry: a value-table label or a raw integer.
#[derive(Debug, Clone, PartialEq)]
pub enum MapKey {
    /// Value-table label.
    Label(String),
    /// Raw integer value.
    Raw(i64),
}

/// Value transform applied after decoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// No transform: the physical value converted to the output type.
    None,
    /// Table lookup (Kuksa `transform.mapping`): label/raw -> value. Unmapped values are dropped.
    Mapping(Vec<(MapKey, SignalValue)>),
    /// Arithmetic on the physical value (Kuksa `transform.math`), then converted to the output type.
    Math(Expr),
}

/// One mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub struct VssEntry {
    /// VSS path, e.g. `Vehicle.Speed`.
    pub path: String,
    /// DBC signal name.
    pub signal: String,
    /// Optional DBC message name (needed when a signal name is not unique).
    pub message: Option<String>,
    /// Output type.
    pub datatype: VssType,
    /// Maximum age before the value is stale, ms (0 = never stale). `None` in a parsed mapping
    /// when the entry sets none (resolved at binding, see the [module doc](self)); always
    /// `Some` in a [`BoundMapping`].
    pub max_age_ms: Option<u64>,
    /// Float deadband for change detection (0 = any change).
    pub deadband: f64,
    /// Transform.
    pub transform: Transform,
}

/// An unbound set of mapping entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VssMapping {
    /// Entries in file order.
    pub entries: Vec<VssEntry>,
    /// The file's `default_max_age_ms` (used where neither the entry nor the DBC's
    /// `GenMsgCycleTime` gives a maximum age).
    pub default_max_age_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    default_max_age_ms: Option<u64>,
    #[serde(default)]
    signal: Vec<TomlEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlEntry {
    path: String,
    signal: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    datatype: Option<String>,
    #[serde(default)]
    max_age_ms: Option<u64>,
    #[serde(default)]
    deadband: Option<f64>,
    #[serde(default)]
    transform: Option<TomlTransform>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlTransform {
    #[serde(default)]
    mapping: Option<Vec<TomlMap>>,
    #[serde(default)]
    math: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlMap {
    from: toml::Value,
    to: toml::Value,
}

/// Default max age when neither the entry, the DBC's cycle time nor the file sets one.
pub const DEFAULT_MAX_AGE_MS: u64 = 5_000;
/// A periodic message's signals are stale after this many missed cycles (`GenMsgCycleTime`).
pub const CYCLES_PER_MAX_AGE: u64 = 3;

fn valid_path(p: &str) -> bool {
    p.starts_with("Vehicle.")
        && p.split('.').all(|seg| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

fn toml_to_value(v: &toml::Value) -> Option<SignalValue> {
    Some(match v {
        toml::Value::Boolean(b) => SignalValue::Bool(*b),
        toml::Value::Integer(i) => SignalValue::Int(*i),
        toml::Value::Float(f) => SignalValue::Float(*f),
        toml::Value::String(s) => SignalValue::Text(s.clone()),
        _ => return None,
    })
}

fn json_to_value(v: &serde_json::Value) -> Option<SignalValue> {
    Some(match v {
        serde_json::Value::Bool(b) => SignalValue::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => SignalValue::Int(i),
            None => SignalValue::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => SignalValue::Text(s.clone()),
        _ => return None,
    })
}

impl VssMapping {
    /// Parse the TOML mapping format (see `data/demo_car_vss.toml`). Errors name the bad entry.
    pub fn from_toml(text: &str) -> Result<VssMapping, CanError> {
        let file: TomlFile = toml::from_str(text).map_err(|e| CanError::Mapping(e.to_string()))?;
        let mut entries = Vec::with_capacity(file.signal.len());
        for (i, e) in file.signal.into_iter().enumerate() {
            let ctx =
                |msg: &str| CanError::Mapping(format!("entry #{} ({}): {msg}", i + 1, e.path));
            let datatype = match &e.datatype {
                None => VssType::Float,
                Some(d) => {
                    VssType::parse(d).ok_or_else(|| ctx(&format!("unknown datatype {d:?}")))?
                }
            };
            let transform = match e.transform {
                None => Transform::None,
                Some(TomlTransform {
                    mapping: Some(_),
                    math: Some(_),
                }) => {
                    return Err(ctx("transform has both mapping and math"));
                }
                Some(TomlTransform {
                    mapping: Some(m),
                    math: None,
                }) => {
                    let mut out = Vec::with_capacity(m.len());
                    for item in m {
                        let key = match &item.from {
                            toml::Value::String(s) => MapKey::Label(s.clone()),
                            toml::Value::Integer(i) => MapKey::Raw(*i),
                            _ => {
                                return Err(ctx(
                                    "mapping `from` must be a label string or integer",
                                ));
                            }
                        };
                        let to = toml_to_value(&item.to)
                            .ok_or_else(|| ctx("mapping `to` must be bool/int/float/string"))?;
                        out.push((key, to));
                    }
                    Transform::Mapping(out)
                }
                Some(TomlTransform {
                    mapping: None,
                    math: Some(m),
                }) => Transform::Math(Expr::parse(&m).map_err(|err| ctx(&err.to_string()))?),
                Some(TomlTransform {
                    mapping: None,
                    math: None,
                }) => Transform::None,
            };
            let deadband = e.deadband.unwrap_or(0.0);
            if !deadband.is_finite() || deadband < 0.0 {
                return Err(ctx("deadband must be a finite number >= 0"));
            }
            entries.push(VssEntry {
                path: e.path.clone(),
                signal: e.signal.clone(),
                message: e.message.clone(),
                datatype,
                max_age_ms: e.max_age_ms,
                deadband,
                transform,
            });
        }
        let m = VssMapping {
            entries,
            default_max_age_ms: file.default_max_age_ms,
        };
        m.validate()?;
        Ok(m)
    }

    /// Load the Kuksa CAN provider JSON format (VSS tree with `dbc2vss` leaves). `max_age_ms` is
    /// the file's default maximum age (after the DBC's cycle time; Kuksa's `interval_ms` is a
    /// throttle, not a staleness limit).
    pub fn from_kuksa_json(text: &str, max_age_ms: u64) -> Result<VssMapping, CanError> {
        let root: serde_json::Value =
            serde_json::from_str(text).map_err(|e| CanError::Mapping(format!("JSON: {e}")))?;
        let mut entries = Vec::new();
        let obj = root
            .as_object()
            .ok_or_else(|| CanError::Mapping("JSON root must be an object".into()))?;
        let mut stack: Vec<(String, &serde_json::Value, usize)> =
            obj.iter().map(|(k, v)| (k.clone(), v, 0)).collect();
        while let Some((path, node, depth)) = stack.pop() {
            if depth > 32 {
                return Err(CanError::Mapping(format!("{path}: tree too deep")));
            }
            let Some(n) = node.as_object() else { continue };
            if let Some(d) = n.get("dbc2vss") {
                let ctx = |msg: &str| CanError::Mapping(format!("{path}: {msg}"));
                let signal = d
                    .get("signal")
                    .and_then(|s| s.as_str())
                    .ok_or_else(|| ctx("dbc2vss.signal missing"))?;
                let dt = n
                    .get("datatype")
                    .and_then(|s| s.as_str())
                    .unwrap_or("float");
                let datatype = VssType::parse(dt)
                    .ok_or_else(|| ctx(&format!("unsupported datatype {dt:?}")))?;
                let transform = match d.get("transform") {
                    None => Transform::None,
                    Some(t) => {
                        if let Some(m) = t.get("mapping").and_then(|m| m.as_array()) {
                            let mut out = Vec::with_capacity(m.len());
                            for item in m {
                                let key = match item.get("from") {
                                    Some(serde_json::Value::String(s)) => MapKey::Label(s.clone()),
                                    Some(serde_json::Value::Number(n)) => MapKey::Raw(
                                        n.as_i64()
                                            .ok_or_else(|| ctx("mapping from must be integer"))?,
                                    ),
                                    _ => return Err(ctx("mapping entry without from")),
                                };
                                let to = item
                                    .get("to")
                                    .and_then(json_to_value)
                                    .ok_or_else(|| ctx("mapping entry without to"))?;
                                out.push((key, to));
                            }
                            Transform::Mapping(out)
                        } else if let Some(m) = t.get("math").and_then(|m| m.as_str()) {
                            Transform::Math(Expr::parse(m).map_err(|e| ctx(&e.to_string()))?)
                        } else {
                            return Err(ctx("transform needs mapping or math"));
                        }
                    }
                };
                entries.push(VssEntry {
                    path: path.clone(),
                    signal: signal.to_string(),
                    message: None,
                    datatype,
                    max_age_ms: None,
                    deadband: 0.0,
                    transform,
                });
            }
            if let Some(children) = n.get("children").and_then(|c| c.as_object()) {
                for (k, v) in children {
                    stack.push((format!("{path}.{k}"), v, depth + 1));
                }
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let m = VssMapping {
            entries,
            default_max_age_ms: Some(max_age_ms),
        };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), CanError> {
        let mut seen = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !valid_path(&e.path) {
                return Err(CanError::Mapping(format!(
                    "entry #{} ({}): path must look like Vehicle.A.B",
                    i + 1,
                    e.path
                )));
            }
            if e.signal.is_empty() {
                return Err(CanError::Mapping(format!(
                    "entry #{} ({}): empty signal name",
                    i + 1,
                    e.path
                )));
            }
            if let Some(prev) = seen.insert(e.path.as_str(), i) {
                return Err(CanError::Mapping(format!(
                    "entry #{} ({}): path already mapped by entry #{}",
                    i + 1,
                    e.path,
                    prev + 1
                )));
            }
        }
        Ok(())
    }

    /// Resolve every entry against a DBC. Errors name the entry whose signal is missing or ambiguous.
    pub fn bind(&self, dbc: &Dbc) -> Result<BoundMapping, CanError> {
        let (b, skipped) = self.bind_inner(dbc, true)?;
        debug_assert!(skipped.is_empty());
        Ok(b)
    }

    /// Like [`bind`](Self::bind) but skips entries whose signal is not in the DBC (returned as
    /// messages) and binds ambiguous names to every message carrying them.
    pub fn bind_lenient(&self, dbc: &Dbc) -> (BoundMapping, Vec<String>) {
        match self.bind_inner(dbc, false) {
            Ok(r) => r,
            Err(e) => (BoundMapping::default(), vec![e.to_string()]),
        }
    }

    fn bind_inner(&self, dbc: &Dbc, strict: bool) -> Result<(BoundMapping, Vec<String>), CanError> {
        let mut by_id: HashMap<CanId, Vec<(usize, usize)>> = HashMap::new();
        let mut skipped = Vec::new();
        let mut entries = self.entries.clone();
        for (ei, e) in self.entries.iter().enumerate() {
            let owners: Vec<(usize, usize)> = match &e.message {
                Some(mname) => {
                    let m = dbc.message_by_name(mname);
                    match m.and_then(|m| m.signal_index(&e.signal).map(|si| (m, si))) {
                        Some((m, si)) => dbc
                            .message_index(m.id)
                            .map(|mi| vec![(mi, si)])
                            .unwrap_or_default(),
                        None => Vec::new(),
                    }
                }
                None => dbc.find_signal(&e.signal).to_vec(),
            };
            let problem = if owners.is_empty() {
                Some(format!(
                    "entry #{} ({}): signal {} not found in DBC",
                    ei + 1,
                    e.path,
                    e.signal
                ))
            } else if owners.len() > 1 && strict {
                Some(format!(
                    "entry #{} ({}): signal {} is in several messages; set `message`",
                    ei + 1,
                    e.path,
                    e.signal
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                if strict {
                    return Err(CanError::Mapping(p));
                }
                skipped.push(p);
                continue;
            }
            if let Transform::Mapping(table) = &e.transform {
                // Labels must exist in the value table (strict only).
                for (mi, si) in &owners {
                    let sig = dbc.messages().get(*mi).and_then(|m| m.signals.get(*si));
                    for (k, _) in table {
                        if let (MapKey::Label(l), Some(sig)) = (k, sig)
                            && strict
                            && sig.raw_for_label(l).is_none()
                        {
                            return Err(CanError::Mapping(format!(
                                "entry #{} ({}): label {l:?} not in value table of {}",
                                ei + 1,
                                e.path,
                                e.signal
                            )));
                        }
                    }
                }
            }
            let cycle = owners
                .iter()
                .filter_map(|(mi, _)| dbc.messages().get(*mi)?.cycle_time_ms)
                .max();
            if let Some(entry) = entries.get_mut(ei) {
                entry.max_age_ms = Some(
                    e.max_age_ms
                        .or_else(|| cycle.map(|c| c.saturating_mul(CYCLES_PER_MAX_AGE)))
                        .or(self.default_max_age_ms)
                        .unwrap_or(DEFAULT_MAX_AGE_MS),
                );
            }
            for (mi, si) in owners {
                if let Some(m) = dbc.messages().get(mi) {
                    by_id.entry(m.id).or_default().push((ei, si));
                }
            }
        }
        Ok((BoundMapping { entries, by_id }, skipped))
    }
}

/// A mapping resolved against a DBC: per message id, the entries it feeds.
#[derive(Debug, Clone, Default)]
pub struct BoundMapping {
    entries: Vec<VssEntry>,
    by_id: HashMap<CanId, Vec<(usize, usize)>>,
}

/// One VSS value produced from a decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct VssUpdate<'a> {
    /// The mapping entry (path, max age, deadband).
    pub entry: &'a VssEntry,
    /// The value.
    pub value: SignalValue,
}

/// Convert one decoded signal through an entry's transform and type.
pub fn convert(entry: &VssEntry, sig: &DecodedSignal<'_>) -> Option<SignalValue> {
    let numeric = |x: f64| -> Option<SignalValue> {
        if !x.is_finite() {
            return None;
        }
        Some(match entry.datatype {
            VssType::Bool => SignalValue::Bool(x != 0.0),
            VssType::Int => {
                // Bounds are exact powers of two; a value outside i64 is not invented.
                let r = x.round();
                if !(-(2f64.powi(63))..2f64.powi(63)).contains(&r) {
                    return None;
                }
                SignalValue::Int(r as i64)
            }
            VssType::Float => SignalValue::Float(x),
            VssType::Text => SignalValue::Text(x.to_string()),
        })
    };
    // Unscaled integer signals keep the exact raw value (an f64 physical value is rounded
    // above 2^53: serial numbers, VIN parts, 64-bit counters).
    let identity = sig.def.factor == 1.0 && sig.def.offset == 0.0;
    match &entry.transform {
        Transform::None => match (entry.datatype, sig.label, sig.raw) {
            (VssType::Text, Some(l), _) => Some(SignalValue::Text(l.to_string())),
            (VssType::Int, _, RawValue::Signed(i)) if identity => Some(SignalValue::Int(i)),
            (VssType::Int, _, RawValue::Unsigned(u)) if identity => {
                i64::try_from(u).ok().map(SignalValue::Int)
            }
            (VssType::Text, None, RawValue::Signed(i)) if identity => {
                Some(SignalValue::Text(i.to_string()))
            }
            (VssType::Text, None, RawValue::Unsigned(u)) if identity => {
                Some(SignalValue::Text(u.to_string()))
            }
            _ => numeric(sig.physical),
        },
        Transform::Math(e) => numeric(e.eval(sig.physical)),
        Transform::Mapping(table) => {
            let raw = sig.raw.as_i64();
            table
                .iter()
                .find(|(k, _)| match k {
                    MapKey::Label(l) => sig.label == Some(l.as_str()),
                    MapKey::Raw(r) => raw == Some(*r),
                })
                .map(|(_, v)| v.clone())
        }
    }
}

impl BoundMapping {
    /// All entries.
    pub fn entries(&self) -> &[VssEntry] {
        &self.entries
    }

    /// Every binding: the id of the message an entry reads and the entry (for
    /// [`crate::vss_encode`], which writes the values back).
    pub fn bindings(&self) -> impl Iterator<Item = (CanId, &VssEntry)> + '_ {
        self.by_id.iter().flat_map(move |(id, list)| {
            list.iter()
                .filter_map(move |&(ei, _)| Some((*id, self.entries.get(ei)?)))
        })
    }

    /// Whether any entry reads from this message id.
    pub fn is_mapped(&self, id: CanId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// VSS values carried by a decoded message (inactive multiplexed signals and unmapped
    /// table values produce nothing).
    pub fn map<'a>(&'a self, decoded: &DecodedMessage<'_>) -> Vec<VssUpdate<'a>> {
        let Some(list) = self.by_id.get(&decoded.message.id) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(list.len());
        for &(ei, si) in list {
            let Some(entry) = self.entries.get(ei) else {
                continue;
            };
            let Some(sig) = decoded.signals.iter().find(|s| s.index == si) else {
                continue;
            };
            if let Some(value) = convert(entry, sig) {
                out.push(VssUpdate { entry, value });
            }
        }
        out
    }
}
