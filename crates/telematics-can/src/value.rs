//! Typed VSS signal values.

use serde::{Deserialize, Serialize};

/// A VSS signal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SignalValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
    /// String (e.g. an enum label such as `"ON"`).
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
    /// Numeric value as f64 (`Int` or `Float`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SignalValue::Int(i) => Some(*i as f64),
            SignalValue::Float(f) => Some(*f),
            _ => None,
        }
    }
    /// String value, if this is `Text`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SignalValue::Text(s) => Some(s),
            _ => None,
        }
    }
}
