//! The profile's TOML form (serde), before it is checked against the DBC and the mapping.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    #[serde(default)]
    pub(crate) signals: BTreeMap<String, RawBinding>,
    pub(crate) ack: Option<RawAck>,
    #[serde(default)]
    pub(crate) actions: BTreeMap<String, RawAction>,
}

/// `signals.<kind>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBinding {
    pub(crate) path: Option<String>,
    pub(crate) all: Option<Vec<String>>,
    pub(crate) equals: Option<toml::Value>,
    pub(crate) above: Option<f64>,
}

/// `ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAck {
    pub(crate) bus: Option<String>,
    pub(crate) message: String,
    pub(crate) counter: Option<String>,
    pub(crate) outcome: String,
    #[serde(default)]
    pub(crate) ok: Vec<i64>,
    pub(crate) reason: Option<String>,
    #[serde(default)]
    pub(crate) refusals: BTreeMap<String, String>,
}

/// `actions.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAction {
    pub(crate) bus: Option<String>,
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) signals: BTreeMap<String, toml::Value>,
    pub(crate) counter: Option<String>,
    pub(crate) protection: Option<telematics_can::Protection>,
    pub(crate) secoc: Option<telematics_can::protection::SecOc>,
    pub(crate) repeat: Option<RawRepeat>,
    #[serde(default)]
    pub(crate) preconditions: Vec<String>,
    pub(crate) confirm: RawConfirm,
    pub(crate) timeout_ms: Option<u64>,
}

/// `actions.<name>.repeat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRepeat {
    pub(crate) count: u32,
    #[serde(default)]
    pub(crate) interval_ms: u64,
}

/// `actions.<name>.confirm`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfirm {
    pub(crate) on: String,
    pub(crate) signal: Option<String>,
    pub(crate) equals: Option<bool>,
}
