//! The retained `vehicles/{vin}/status` payload (CBOR), see docs/topics.md.

use serde::{Deserialize, Serialize};

/// Online/offline, and whether the vehicle hears commands (see docs/topics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Birth message, published (retained) once the broker granted the commands subscription:
    /// connected and able to receive commands.
    Online,
    /// Last will (set at CONNECT) and the message published before a graceful disconnect.
    Offline,
    /// Connected (telemetry, alerts and results flow) but the broker refused the
    /// `vehicles/{vin}/commands` subscription: commands sent now are not delivered. The link
    /// retries the subscription and publishes `online` once it is granted.
    CommandsRefused,
}

/// CBOR map `{state, agent_version, config_version, at, build, dbc_hash, mapping_hash,
/// profile_hash, cert_serial, cert_not_after}` (the last six may be absent in messages of
/// older versions: decoded as empty / 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// "online" | "offline" | "commands_refused".
    pub state: Presence,
    /// Agent (daemon) version.
    pub agent_version: String,
    /// Version of the daemon configuration in force: 16 hex digits of the SHA-256 of the
    /// effective configuration.
    pub config_version: String,
    /// Unix time in milliseconds (like every other payload's `at`) when the message was
    /// produced (for the last will: when the connection was opened).
    pub at: u64,
    /// Git commit of the agent's build (`unknown` outside a git checkout).
    #[serde(default)]
    pub build: String,
    /// Hash of the DBC file in force (16 hex digits of its SHA-256).
    #[serde(default)]
    pub dbc_hash: String,
    /// Hash of the VSS mapping file in force (16 hex digits of its SHA-256).
    #[serde(default)]
    pub mapping_hash: String,
    /// Hash of the vehicle profile in force (16 hex digits of its SHA-256): how the car is
    /// actuated and acknowledges, so a back end can tell which actuation data a car runs.
    #[serde(default)]
    pub profile_hash: String,
    /// Serial number (hex) of the client certificate of this connection (empty if unreadable):
    /// after an in-band renewal, the renewed one.
    #[serde(default)]
    pub cert_serial: String,
    /// `notAfter` of that certificate, Unix milliseconds (0 if unreadable).
    #[serde(default)]
    pub cert_not_after: u64,
}

impl Status {
    /// Encodes as CBOR.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Serialising this plain struct into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Decodes from CBOR (`None` if malformed).
    pub fn from_cbor(bytes: &[u8]) -> Option<Status> {
        ciborium::from_reader(bytes).ok()
    }
}

/// Current Unix time in milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Current Unix time in seconds (diagnostics: last error, last success, certificate checks).
pub(crate) fn unix_now_s() -> u64 {
    unix_now_ms() / 1000
}
