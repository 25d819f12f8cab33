//! Daemon configuration: one TOML file, every key overridable from the
//! environment, validated with messages that name the bad key.
//!
//! # Environment mapping
//!
//! `TELEMATICSD_<SECTION>__<KEY>` sets `<section>.<key>` (names are
//! lower-cased), e.g. `TELEMATICSD_MQTT__HOST=broker` or
//! `TELEMATICSD_MQTT__PORT=8883`. The value is parsed as a TOML value
//! (`8883`, `true`, `["a","b"]`); if that fails it is taken as a string.
//! Environment values override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// Default configuration file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/telematicsd/telematicsd.toml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "TELEMATICSD_";

/// The complete daemon configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[vehicle]`
    pub vehicle: VehicleConfig,
    /// `[can]`
    pub can: CanConfig,
    /// `[mqtt]`
    pub mqtt: MqttConfig,
    /// `[outbox]`
    pub outbox: OutboxConfig,
    /// `[security]`
    pub security: SecurityConfig,
    /// `[commands]`
    pub commands: CommandsConfig,
    /// `[telemetry]`
    pub telemetry: TelemetryConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[state]`
    pub state: StateConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[keys]`: where the identity key and the state's sealing key live (telematics-keystore).
    pub keys: telematics_keystore::KeysConfig,
}

/// `[vehicle]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VehicleConfig {
    /// Vehicle identification number (17 characters, no I/O/Q). Required.
    pub vin: String,
    /// Verify the North-American check digit (position 9).
    pub verify_check_digit: bool,
}

/// Kind of CAN source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CanSourceKind {
    /// Linux SocketCAN interface.
    #[default]
    Socketcan,
    /// Replay of a candump log file.
    Replay,
    /// In-process simulated vehicle: the demo body controller on an in-process bus (demo DBC,
    /// mapping and profile built in; `dbc`/`mapping`/`profile` are ignored).
    Sim,
    /// Virtual CAN bus over TCP (`telematicsctl sim --listen`): `interface` is `host:port`.
    Tcp,
}

/// `[can]` section: either one bus given by the flat keys (`source`, `interface`,
/// `replay_file`, `dbc`, `mapping`; the bus is named [`DEFAULT_BUS`]) or several
/// `[[can.bus]]` entries (then the flat bus keys must be left unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanConfig {
    /// Source kind.
    pub source: CanSourceKind,
    /// SocketCAN interface name (for `socketcan`), or `host:port` of the virtual bus (for `tcp`).
    pub interface: String,
    /// candump log to replay (for `replay`).
    pub replay_file: Option<PathBuf>,
    /// DBC file.
    pub dbc: PathBuf,
    /// CAN → VSS mapping file: KUKSA-style JSON when the name ends in `.json`, otherwise the
    /// TOML format of the shipped example `demo_car_vss.toml`.
    pub mapping: PathBuf,
    /// Vehicle profile (TOML, docs/vehicle-profile.md): actuation frames, acknowledgement,
    /// confirmations and preconditions.
    pub profile: PathBuf,
    /// Maximum age (ms) of a signal whose mapping entry sets none and whose message has no
    /// `GenMsgCycleTime` in the DBC (the default of KUKSA JSON mappings; a TOML mapping's own
    /// `default_max_age_ms` takes its place).
    pub max_age_ms: u64,
    /// The AES-128 key of the actions the profile authenticates with SecOC (16 raw bytes or
    /// 32 hex digits; a file only the daemon can read, or a systemd credential). Required
    /// exactly when an action has `secoc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secoc_key: Option<telematics_keystore::SecretSource>,
    /// `[[can.bus]]`: several buses, each with its own source, DBC and mapping. Signals from
    /// every bus feed one vehicle state.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bus: Vec<BusConfig>,
}

/// The name of the bus given by the flat `[can]` keys (the body bus, where actuation goes).
pub const DEFAULT_BUS: &str = "body";

/// One `[[can.bus]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Bus name (unique; actuation names the bus it goes to).
    pub name: String,
    /// Source kind: `socketcan`, `replay` or `tcp`.
    pub source: CanSourceKind,
    /// SocketCAN interface (`socketcan`) or `host:port` of the virtual bus (`tcp`).
    #[serde(default)]
    pub interface: String,
    /// candump log (`replay`).
    #[serde(default)]
    pub replay_file: Option<PathBuf>,
    /// This bus's DBC file.
    pub dbc: PathBuf,
    /// This bus's CAN → VSS mapping file (as [`CanConfig::mapping`]).
    pub mapping: PathBuf,
}

/// A bus as the daemon uses it, with the configuration key its errors name (`can` for the
/// flat form, `can.bus[1]` for the second `[[can.bus]]` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct BusSpec {
    /// Key prefix for messages (`can`, `can.bus[0]`, ...).
    pub key: String,
    /// The bus.
    pub bus: BusConfig,
}

impl CanConfig {
    /// The configured buses, in order: the `[[can.bus]]` entries, or the one bus of the flat
    /// keys named [`DEFAULT_BUS`]. The first bus is the one actuation goes to unless an action
    /// names another.
    pub fn buses(&self) -> Vec<BusSpec> {
        if self.bus.is_empty() {
            return vec![BusSpec {
                key: "can".into(),
                bus: BusConfig {
                    name: DEFAULT_BUS.into(),
                    source: self.source,
                    interface: self.interface.clone(),
                    replay_file: self.replay_file.clone(),
                    dbc: self.dbc.clone(),
                    mapping: self.mapping.clone(),
                },
            }];
        }
        self.bus
            .iter()
            .enumerate()
            .map(|(i, b)| BusSpec {
                key: format!("can.bus[{i}]"),
                bus: b.clone(),
            })
            .collect()
    }

    fn validate_buses(&self, errs: &mut Vec<String>) {
        if !self.bus.is_empty() {
            let d = CanConfig::default();
            for (key, set) in [
                ("source", self.source != d.source),
                ("interface", self.interface != d.interface),
                ("replay_file", self.replay_file != d.replay_file),
                ("dbc", self.dbc != d.dbc),
                ("mapping", self.mapping != d.mapping),
            ] {
                if set {
                    errs.push(format!(
                        "can.{key}: set it per bus in [[can.bus]] (the flat form is one bus named \"{DEFAULT_BUS}\")"
                    ));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for spec in self.buses() {
            let (k, b) = (&spec.key, &spec.bus);
            if b.source == CanSourceKind::Sim && !cfg!(feature = "sim") {
                errs.push(format!(
                    "{k}.source: \"sim\" (the simulated demo car) is not in this build: the \
                     shipped daemon has no simulator; use socketcan, replay or tcp (or build \
                     with the `sim` feature for development)"
                ));
            }
            if !self.bus.is_empty() {
                let valid = !b.name.is_empty()
                    && b.name.len() <= 32
                    && b.name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
                if !valid {
                    errs.push(format!(
                        "{k}.name: 1..=32 characters of [A-Za-z0-9_-], got {:?}",
                        b.name
                    ));
                } else if !names.insert(b.name.clone()) {
                    errs.push(format!("{k}.name: {:?} is used by another bus", b.name));
                }
                if b.source == CanSourceKind::Sim {
                    errs.push(format!(
                        "{k}.source: \"sim\" is the built-in demo car, only as the single [can] bus"
                    ));
                }
            }
            match b.source {
                CanSourceKind::Socketcan => {
                    let n = b.interface.len();
                    if n == 0 || n > 15 {
                        errs.push(format!(
                            "{k}.interface: must be 1..=15 characters, got {n} ({:?})",
                            b.interface
                        ));
                    }
                }
                CanSourceKind::Tcp if b.interface.parse::<std::net::SocketAddr>().is_err() => {
                    errs.push(format!(
                        "{k}.interface: must be host:port (e.g. 127.0.0.1:29536) when {k}.source = \"tcp\", got {:?}",
                        b.interface
                    ));
                }
                CanSourceKind::Replay if b.replay_file.is_none() => {
                    errs.push(format!(
                        "{k}.replay_file: required when {k}.source = \"replay\""
                    ));
                }
                _ => {}
            }
        }
    }
}

impl Default for CanConfig {
    fn default() -> Self {
        Self {
            source: CanSourceKind::Socketcan,
            interface: "can0".into(),
            replay_file: None,
            dbc: "/etc/telematicsd/vehicle.dbc".into(),
            mapping: "/etc/telematicsd/vss-mapping.toml".into(),
            profile: "/etc/telematicsd/vehicle-profile.toml".into(),
            max_age_ms: 2_000,
            secoc_key: None,
            bus: Vec::new(),
        }
    }
}

/// `[mqtt]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id; empty means "the VIN".
    pub client_id: String,
    /// Keep-alive interval in seconds.
    pub keepalive_s: u64,
    /// CA certificate (PEM) for the broker.
    pub ca: PathBuf,
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Client private key (PEM).
    pub key: PathBuf,
    /// Largest MQTT packet accepted from the broker, bytes (the broker's `max_packet_size`
    /// must not exceed it, docs/topics.md).
    pub max_incoming_packet: usize,
    /// Ceiling of the first reconnect delay, ms (full jitter, doubling per failure).
    pub reconnect_min_ms: u64,
    /// Upper bound of the reconnect delay, s.
    pub reconnect_max_s: u64,
    /// A connection must stay up this long (s) before its loss restarts the backoff.
    pub reconnect_stable_s: u64,
    /// In-band renewal of the client certificate starts when it has this many days left or
    /// fewer (0 = never renew in band). See ARCHITECTURE.md "Certificate lifecycle".
    pub cert_renew_before_days: u64,
    /// A `certificate_expiring` alert is raised (at start and daily) when the certificate has
    /// this many days left or fewer, i.e. when renewal has not succeeded in time.
    pub cert_warn_days: u64,
    /// While a renewal waits for the back end's certificate, its CSR is published again after
    /// this many seconds.
    pub renewal_retry_s: u64,
    /// Directory of the renewed identities (generations of key + certificate and the commit
    /// record); relative paths are under `[state] directory`. Until a renewal commits, the
    /// identity is `cert` / `key` above.
    pub identity_dir: PathBuf,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 8883,
            client_id: String::new(),
            keepalive_s: 30,
            max_incoming_packet: telematics_link::DEFAULT_MAX_INCOMING_PACKET,
            reconnect_min_ms: 1000,
            reconnect_max_s: 60,
            reconnect_stable_s: 60,
            cert_renew_before_days: 30,
            cert_warn_days: 14,
            renewal_retry_s: 3600,
            identity_dir: "identity".into(),
            ca: "/etc/telematicsd/ca.pem".into(),
            cert: "/etc/telematicsd/client.pem".into(),
            key: "/etc/telematicsd/client.key".into(),
        }
    }
}

/// `[outbox]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Outbox database file; relative paths are under `[state] directory`.
    pub path: PathBuf,
    /// Maximum number of queued messages.
    pub max_messages: u64,
    /// Maximum total queued bytes.
    pub max_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            path: "outbox.redb".into(),
            max_messages: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[security]` section. Defaults and accepted ranges are those of docs/protocol.md §5
/// ("Vehicle settings"), which `tests/spec_settings.rs` reads and compares with this code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// PBKDF2-HMAC-SHA256 iterations for the security code.
    pub pbkdf2_iterations: u32,
    /// Fewest PBKDF2 iterations accepted (for `pbkdf2_iterations` and for a stored
    /// verifier). Production keeps the default; only tests and benchmarks lower it.
    pub min_pbkdf2_iterations: u32,
    /// Failed attempts before a lockout starts.
    pub lockout_threshold: u32,
    /// First lockout duration (s); doubles per further failure.
    pub lockout_base_s: u64,
    /// Consecutive wrong codes after which remote commands stay locked until recovery.
    pub lockout_hard_limit: u32,
    /// How long an armed recovery waits for the in-car confirmation (s).
    pub reset_confirm_window_s: u64,
    /// Maximum command time-to-live (s).
    pub max_ttl_s: u64,
    /// Tolerated clock skew (s).
    pub clock_skew_s: u64,
    /// Back-end public key (reset authorizations).
    pub backend_public_key: PathBuf,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            pbkdf2_iterations: telematics_security::state::DEFAULT_PBKDF2_ITERATIONS,
            min_pbkdf2_iterations: telematics_security::state::MIN_PBKDF2_ITERATIONS,
            lockout_threshold: 3,
            lockout_base_s: 30,
            lockout_hard_limit: 10,
            reset_confirm_window_s: 900,
            max_ttl_s: 300,
            clock_skew_s: 60,
            backend_public_key: "/etc/telematicsd/backend.pub".into(),
        }
    }
}

/// `[commands]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Vehicle speed above which lock/unlock/start are refused (km/h).
    pub speed_threshold_kmh: f64,
    /// Time to wait for the body controller's confirmation (ms).
    pub confirm_timeout_ms: u64,
    /// Maximum remote engine run time (s).
    pub max_engine_run_s: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            speed_threshold_kmh: 3.0,
            confirm_timeout_ms: 3_000,
            max_engine_run_s: 600,
        }
    }
}

/// `[telemetry]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Periodic snapshot interval (s).
    pub period_s: u64,
    /// VSS paths published immediately on change.
    pub on_change: Vec<String>,
    /// Low battery alert threshold (V).
    pub low_battery_v: f64,
    /// Low fuel alert threshold (%).
    pub low_fuel_pct: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            period_s: 60,
            on_change: vec![
                "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked".into(),
                "Vehicle.Powertrain.CombustionEngine.IsRunning".into(),
            ],
            low_battery_v: 11.8,
            low_fuel_pct: 10.0,
        }
    }
}

/// `[admin]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Group allowed to use the socket (besides root); empty = root only.
    pub group: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: "/run/telematicsd/admin.sock".into(),
            group: "telematics".into(),
        }
    }
}

/// `[state]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// State directory (systemd `StateDirectory=`).
    pub directory: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            directory: "/var/lib/telematicsd".into(),
        }
    }
}

/// `[log]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log filter, `RUST_LOG`'s target/level directives, e.g. `info,telematics_link=debug`
    /// (no span or field filters; [`crate::logging::parse_filter`]).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
        }
    }
}

/// What the retained status and the admin status say about the software and configuration in
/// force (see docs/topics.md): short SHA-256 hashes, so two vehicles with the same values run
/// the same configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// Git commit of the build (`unknown` outside a git checkout).
    pub build: String,
    /// Hash of the effective configuration (file + environment overrides, as parsed).
    pub config: String,
    /// Hash of the DBC file's contents (`unreadable` if it cannot be read).
    pub dbc: String,
    /// Hash of the VSS mapping file's contents (`unreadable` if it cannot be read).
    pub mapping: String,
    /// Hash of the vehicle profile file's contents (`unreadable` if it cannot be read).
    pub profile: String,
}

/// The first 16 hex digits of the SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    hex::encode(&d.as_ref()[..8])
}

/// The content hashes of the simulated car's built-in DBC, mapping and profile.
#[cfg(feature = "sim")]
fn demo_hashes() -> (String, String, String) {
    (
        content_hash(telematics_can::demo::DEMO_DBC.as_bytes()),
        content_hash(telematics_can::demo::DEMO_VSS_TOML.as_bytes()),
        content_hash(telematics_can::demo::DEMO_PROFILE_TOML.as_bytes()),
    )
}

/// Without `sim` the configuration refuses the simulated car (never reached).
#[cfg(not(feature = "sim"))]
fn demo_hashes() -> (String, String, String) {
    ("none".into(), "none".into(), "none".into())
}

/// The build's git commit (from build.rs).
pub const BUILD_GIT_HASH: &str = env!("TMD_BUILD_GIT_HASH");

impl Config {
    /// The [`Versions`] of this configuration (reads the DBC, mapping and profile files; the
    /// simulated car's are the built-in demo texts).
    pub fn versions(&self) -> Versions {
        let file = |p: &std::path::Path| {
            std::fs::read(p).map_or_else(|_| "unreadable".to_string(), |b| content_hash(&b))
        };
        let sim = self.can.source == CanSourceKind::Sim && self.can.bus.is_empty();
        let (dbc, mapping, profile) = if sim && cfg!(feature = "sim") {
            demo_hashes()
        } else {
            // One bus: its files' hashes (as before buses); several: the hash of their hashes.
            let buses = self.can.buses();
            let each = |f: fn(&BusConfig) -> &Path| -> String {
                let hashes: Vec<String> = buses.iter().map(|s| file(f(&s.bus))).collect();
                match hashes.as_slice() {
                    [one] => one.clone(),
                    many => content_hash(many.join(",").as_bytes()),
                }
            };
            (
                each(|b| &b.dbc),
                each(|b| &b.mapping),
                file(&self.can.profile),
            )
        };
        // The effective configuration, canonically: the parsed struct serialised again.
        let config =
            toml::to_string(self).map_or_else(|_| "unknown".into(), |t| content_hash(t.as_bytes()));
        Versions {
            build: BUILD_GIT_HASH.to_string(),
            config,
            dbc,
            mapping,
            profile,
        }
    }

    /// Loads `path` (if it exists or `required`), applies the environment
    /// overrides from `env`, and validates.
    pub fn load<I>(path: &Path, required: bool, env: I) -> Result<Config, DaemonError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(DaemonError::ConfigRead {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::from_toml_with_env(&text, env)
    }

    /// Parses TOML text, applies environment overrides, validates.
    pub fn from_toml_with_env<I>(text: &str, env: I) -> Result<Config, DaemonError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| DaemonError::ConfigParse(e.to_string()))?;
        apply_env(&mut table, env)?;
        let cfg: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| DaemonError::ConfigParse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Validates every field; the error lists each bad key and why.
    pub fn validate(&self) -> Result<(), DaemonError> {
        let mut errs = Vec::new();
        if let Err(e) = self.keys.validate() {
            errs.push(e.to_string());
        }
        if let Err(why) = validate_vin(&self.vehicle.vin, self.vehicle.verify_check_digit) {
            errs.push(format!("vehicle.vin: {why}"));
        }
        self.can.validate_buses(&mut errs);
        if self.can.max_age_ms == 0 {
            errs.push("can.max_age_ms: must be > 0, got 0".into());
        }
        if self.mqtt.host.trim().is_empty() {
            errs.push("mqtt.host: must not be empty".into());
        }
        if self.mqtt.port == 0 {
            errs.push("mqtt.port: must be 1..=65535, got 0".into());
        }
        if self.mqtt.client_id.len() > 128 {
            errs.push(format!(
                "mqtt.client_id: at most 128 bytes, got {}",
                self.mqtt.client_id.len()
            ));
        }
        if !(5..=3600).contains(&self.mqtt.keepalive_s) {
            errs.push(format!(
                "mqtt.keepalive_s: must be 5..=3600, got {}",
                self.mqtt.keepalive_s
            ));
        }
        let packet =
            telematics_link::MIN_MAX_INCOMING_PACKET..=telematics_link::MAX_MAX_INCOMING_PACKET;
        if !packet.contains(&self.mqtt.max_incoming_packet) {
            errs.push(format!(
                "mqtt.max_incoming_packet: must be {}..={} bytes, got {}",
                packet.start(),
                packet.end(),
                self.mqtt.max_incoming_packet
            ));
        }
        if !(10..=600_000).contains(&self.mqtt.reconnect_min_ms) {
            errs.push(format!(
                "mqtt.reconnect_min_ms: must be 10..=600000, got {}",
                self.mqtt.reconnect_min_ms
            ));
        }
        if !(1..=3600).contains(&self.mqtt.reconnect_max_s)
            || self.mqtt.reconnect_max_s.saturating_mul(1000) < self.mqtt.reconnect_min_ms
        {
            errs.push(format!(
                "mqtt.reconnect_max_s: must be 1..=3600 and >= reconnect_min_ms, got {}",
                self.mqtt.reconnect_max_s
            ));
        }
        if self.mqtt.cert_warn_days > 3650 || self.mqtt.cert_renew_before_days > 3650 {
            errs.push(format!(
                "mqtt.cert_warn_days / mqtt.cert_renew_before_days: must be 0..=3650, got {} / {}",
                self.mqtt.cert_warn_days, self.mqtt.cert_renew_before_days
            ));
        }
        if !(1..=7 * 86_400).contains(&self.mqtt.renewal_retry_s) {
            errs.push(format!(
                "mqtt.renewal_retry_s: must be 1..=604800, got {}",
                self.mqtt.renewal_retry_s
            ));
        }
        if !(1..=86_400).contains(&self.mqtt.reconnect_stable_s) {
            errs.push(format!(
                "mqtt.reconnect_stable_s: must be 1..=86400, got {}",
                self.mqtt.reconnect_stable_s
            ));
        }
        if self.outbox.max_messages == 0 {
            errs.push("outbox.max_messages: must be > 0, got 0".into());
        }
        if self.outbox.max_bytes < 4096 {
            errs.push(format!(
                "outbox.max_bytes: must be >= 4096, got {}",
                self.outbox.max_bytes
            ));
        }
        let s = &self.security;
        if s.min_pbkdf2_iterations < 1000 {
            errs.push(format!(
                "security.min_pbkdf2_iterations: must be >= 1000, got {}",
                s.min_pbkdf2_iterations
            ));
        }
        if s.pbkdf2_iterations < s.min_pbkdf2_iterations {
            errs.push(format!(
                "security.pbkdf2_iterations: must be >= security.min_pbkdf2_iterations ({}), got {}",
                s.min_pbkdf2_iterations, s.pbkdf2_iterations
            ));
        }
        if !(1..=100).contains(&s.lockout_threshold) {
            errs.push(format!(
                "security.lockout_threshold: must be 1..=100, got {}",
                s.lockout_threshold
            ));
        }
        if s.lockout_base_s == 0 {
            errs.push("security.lockout_base_s: must be > 0, got 0".into());
        }
        if s.lockout_hard_limit <= s.lockout_threshold || s.lockout_hard_limit > 1000 {
            errs.push(format!(
                "security.lockout_hard_limit: must be > lockout_threshold ({}) and <= 1000, got {}",
                s.lockout_threshold, s.lockout_hard_limit
            ));
        }
        if !(60..=86_400).contains(&s.reset_confirm_window_s) {
            errs.push(format!(
                "security.reset_confirm_window_s: must be 60..=86400, got {}",
                s.reset_confirm_window_s
            ));
        }
        if !(1..=3600).contains(&s.max_ttl_s) {
            errs.push(format!(
                "security.max_ttl_s: must be 1..=3600, got {}",
                s.max_ttl_s
            ));
        }
        if s.clock_skew_s > 600 {
            errs.push(format!(
                "security.clock_skew_s: must be <= 600, got {}",
                s.clock_skew_s
            ));
        }
        let c = &self.commands;
        if !(c.speed_threshold_kmh.is_finite() && (0.0..=50.0).contains(&c.speed_threshold_kmh)) {
            errs.push(format!(
                "commands.speed_threshold_kmh: must be 0..=50, got {}",
                c.speed_threshold_kmh
            ));
        }
        if !(100..=60_000).contains(&c.confirm_timeout_ms) {
            errs.push(format!(
                "commands.confirm_timeout_ms: must be 100..=60000, got {}",
                c.confirm_timeout_ms
            ));
        }
        if !(1..=3600).contains(&c.max_engine_run_s) {
            errs.push(format!(
                "commands.max_engine_run_s: must be 1..=3600, got {}",
                c.max_engine_run_s
            ));
        }
        let t = &self.telemetry;
        if !(1..=86_400).contains(&t.period_s) {
            errs.push(format!(
                "telemetry.period_s: must be 1..=86400, got {}",
                t.period_s
            ));
        }
        if !(t.low_battery_v.is_finite() && (0.0..=60.0).contains(&t.low_battery_v)) {
            errs.push(format!(
                "telemetry.low_battery_v: must be 0..=60, got {}",
                t.low_battery_v
            ));
        }
        if !(t.low_fuel_pct.is_finite() && (0.0..=100.0).contains(&t.low_fuel_pct)) {
            errs.push(format!(
                "telemetry.low_fuel_pct: must be 0..=100, got {}",
                t.low_fuel_pct
            ));
        }
        for (i, p) in t.on_change.iter().enumerate() {
            if p.is_empty() || !p.starts_with("Vehicle.") {
                errs.push(format!(
                    "telemetry.on_change[{i}]: must be a VSS path starting with \"Vehicle.\", got {p:?}"
                ));
            }
        }
        if !self.admin.socket.is_absolute() {
            errs.push(format!(
                "admin.socket: must be an absolute path, got {:?}",
                self.admin.socket
            ));
        }
        if !self.state.directory.is_absolute() {
            errs.push(format!(
                "state.directory: must be an absolute path, got {:?}",
                self.state.directory
            ));
        }
        if let Err(e) = crate::logging::parse_filter(&self.log.filter) {
            errs.push(format!(
                "log.filter: invalid filter {:?}: {e}",
                self.log.filter
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(DaemonError::ConfigInvalid(errs))
        }
    }

    /// The effective MQTT client id (the VIN when not configured).
    pub fn client_id(&self) -> &str {
        if self.mqtt.client_id.is_empty() {
            &self.vehicle.vin
        } else {
            &self.mqtt.client_id
        }
    }

    /// The identity directory resolved against the state directory.
    pub fn identity_dir(&self) -> PathBuf {
        self.state.directory.join(&self.mqtt.identity_dir)
    }

    /// Outbox path resolved against the state directory.
    pub fn outbox_path(&self) -> PathBuf {
        self.state.directory.join(&self.outbox.path)
    }

    /// Fail-closed startup check: every file the daemon needs must exist.
    /// Lists all missing files at once.
    pub fn check_files(&self) -> Result<(), DaemonError> {
        let mut missing = Vec::new();
        let mut need = |key: &str, p: &Path| {
            if !p.is_file() {
                missing.push(format!(
                    "{key}: {} does not exist or is not a file",
                    p.display()
                ));
            }
        };
        need("mqtt.ca", &self.mqtt.ca);
        // Once a renewal committed, the identity in force is in the identity directory and the
        // configured (factory) files may be gone.
        if !crate::identity::store::has_commit(&self.identity_dir()) {
            need("mqtt.cert", &self.mqtt.cert);
            if self.keys.backend == telematics_keystore::Backend::Files {
                // With pkcs11 the key is in the token: no key file at all.
                need("mqtt.key", &self.mqtt.key);
            }
        }
        if let Some(telematics_keystore::SecretSource::File(p)) = &self.keys.seal_key {
            need("keys.seal_key", p);
        }
        if let Some(telematics_keystore::SecretSource::File(p)) = &self.keys.pkcs11.pin
            && self.keys.backend == telematics_keystore::Backend::Pkcs11
        {
            need("keys.pkcs11.pin", p);
        }
        if let Some(telematics_keystore::SecretSource::File(p)) = &self.can.secoc_key {
            need("can.secoc_key", p);
        }
        need(
            "security.backend_public_key",
            &self.security.backend_public_key,
        );
        for spec in self.can.buses() {
            let (k, b) = (&spec.key, &spec.bus);
            if b.source != CanSourceKind::Sim {
                need(&format!("{k}.dbc"), &b.dbc);
                need(&format!("{k}.mapping"), &b.mapping);
            }
            if let Some(r) = &b.replay_file
                && b.source == CanSourceKind::Replay
            {
                need(&format!("{k}.replay_file"), r);
            }
        }
        // One profile for the vehicle, whatever its buses (the sim car has its own built in).
        if self
            .can
            .buses()
            .iter()
            .any(|s| s.bus.source != CanSourceKind::Sim)
        {
            need("can.profile", &self.can.profile);
        }
        if let Some(telematics_keystore::SecretSource::File(p)) = &self.keys.seal_key {
            // A copy of the state directory must not carry the key that opens it, and the key
            // is the daemon's alone (0600, or 0640 for a group that provisions it).
            if let (Ok(k), Ok(d)) = (p.canonicalize(), self.state.directory.canonicalize())
                && k.starts_with(&d)
            {
                missing.push(format!(
                    "keys.seal_key: {} is inside state.directory (keep the sealing key outside \
                     the state it seals)",
                    p.display()
                ));
            }
            #[cfg(unix)]
            if let Ok(m) = std::fs::metadata(p) {
                use std::os::unix::fs::PermissionsExt;
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o037 != 0 {
                    missing.push(format!(
                        "keys.seal_key: {} has mode {mode:o}: it must not be readable by others \
                         nor writable by its group (0600 or 0640)",
                        p.display()
                    ));
                }
            }
        }
        if !self.state.directory.is_dir() {
            missing.push(format!(
                "state.directory: {} does not exist (pairing state lives there)",
                self.state.directory.display()
            ));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DaemonError::MissingFiles(missing))
        }
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Applies `TELEMATICSD_SECTION__KEY=value` overrides to a parsed table.
fn apply_env<I>(table: &mut toml::Table, env: I) -> Result<(), DaemonError>
where
    I: IntoIterator<Item = (String, String)>,
{
    // BTreeMap: deterministic order.
    let vars: BTreeMap<String, String> = env
        .into_iter()
        // The failpoint switches share the prefix but are not config keys.
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX)
                && k != crate::failpoint::ENV_VAR
                && k != crate::failpoint::WRITE_ENV_VAR
        })
        .collect();
    for (k, v) in vars {
        let rest = &k[ENV_PREFIX.len()..];
        let Some((section, key)) = rest.split_once("__") else {
            return Err(DaemonError::ConfigParse(format!(
                "environment variable {k}: expected {ENV_PREFIX}<SECTION>__<KEY>"
            )));
        };
        if section.is_empty() || key.is_empty() || key.contains("__") {
            return Err(DaemonError::ConfigParse(format!(
                "environment variable {k}: expected {ENV_PREFIX}<SECTION>__<KEY>"
            )));
        }
        let value = parse_env_value(&v);
        let entry = table
            .entry(section.to_ascii_lowercase())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(sec) = entry else {
            return Err(DaemonError::ConfigParse(format!(
                "environment variable {k}: {} is not a section",
                section.to_ascii_lowercase()
            )));
        };
        sec.insert(key.to_ascii_lowercase(), value);
    }
    Ok(())
}

fn parse_env_value(v: &str) -> toml::Value {
    let doc = format!("v = {v}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(v.to_string())),
        Err(_) => toml::Value::String(v.to_string()),
    }
}

/// Validates a VIN: 17 characters of `0-9 A-Z` without `I`, `O`, `Q`;
/// optionally the check digit (ISO 3779 / 49 CFR 565) at position 9.
pub fn validate_vin(vin: &str, check_digit: bool) -> Result<(), String> {
    if vin.is_empty() {
        return Err("required (17 characters)".into());
    }
    if vin.chars().count() != 17 {
        return Err(format!(
            "must be 17 characters, got {}",
            vin.chars().count()
        ));
    }
    let mut sum = 0u32;
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    for (i, (c, w)) in vin.chars().zip(WEIGHTS).enumerate() {
        let v = vin_value(c).ok_or_else(|| {
            format!(
                "invalid character {c:?} at position {} (allowed: 0-9, A-Z except I, O, Q)",
                i + 1
            )
        })?;
        sum += v * w;
    }
    if check_digit {
        let expect = match sum % 11 {
            10 => 'X',
            d => char::from_digit(d, 10).unwrap_or('?'),
        };
        let got = vin.chars().nth(8).unwrap_or('?');
        if got != expect {
            return Err(format!(
                "check digit (position 9) must be {expect:?}, got {got:?}"
            ));
        }
    }
    Ok(())
}

fn vin_value(c: char) -> Option<u32> {
    Some(match c {
        '0'..='9' => c as u32 - '0' as u32,
        'A' | 'J' => 1,
        'B' | 'K' | 'S' => 2,
        'C' | 'L' | 'T' => 3,
        'D' | 'M' | 'U' => 4,
        'E' | 'N' | 'V' => 5,
        'F' | 'W' => 6,
        'G' | 'P' | 'X' => 7,
        'H' | 'Y' => 8,
        'R' | 'Z' => 9,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_hash_the_effective_config_and_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dbc = dir.path().join("v.dbc");
        let map = dir.path().join("v.toml");
        let profile = dir.path().join("p.toml");
        std::fs::write(&dbc, "VERSION \"1\"").expect("dbc");
        std::fs::write(&map, "x").expect("mapping");
        std::fs::write(&profile, "[ack]").expect("profile");
        let mut a = Config::default();
        a.can.source = CanSourceKind::Socketcan;
        a.can.dbc = dbc.clone();
        a.can.mapping = map.clone();
        a.can.profile = profile.clone();
        let v = a.versions();
        assert_eq!(v.config.len(), 16);
        assert_eq!(v, a.versions(), "stable");
        assert_eq!(v.dbc, content_hash(b"VERSION \"1\""));
        assert_eq!(v.profile, content_hash(b"[ack]"));
        assert_eq!(v.build, BUILD_GIT_HASH);
        let mut b = a.clone();
        b.security.lockout_threshold += 1;
        assert_ne!(b.versions().config, v.config, "any setting changes it");
        std::fs::write(&dbc, "VERSION \"2\"").expect("dbc");
        let w = a.versions();
        assert_ne!(w.dbc, v.dbc);
        assert_eq!((&w.config, &w.mapping), (&v.config, &v.mapping));
        std::fs::write(&profile, "[ack]\n").expect("profile");
        let x = a.versions();
        assert_ne!(x.profile, w.profile, "a profile edit changes it");
        assert_eq!((x.config, x.dbc, x.mapping), (w.config, w.dbc, w.mapping));
        std::fs::remove_file(&map).expect("rm");
        assert_eq!(a.versions().mapping, "unreadable");
    }

    const VIN: &str = "1M8GDM9AXKP042788"; // valid check digit (X)

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> String {
        format!("[vehicle]\nvin = \"{VIN}\"\n")
    }

    #[test]
    fn flat_can_is_one_bus_named_body() {
        let text = format!(
            "{}[can]\nsource = \"tcp\"\ninterface = \"127.0.0.1:29536\"\ndbc = \"/v.dbc\"\n",
            base()
        );
        let c = Config::from_toml_with_env(&text, env(&[])).expect("valid");
        let buses = c.can.buses();
        assert_eq!(buses.len(), 1);
        assert_eq!(
            (buses[0].key.as_str(), buses[0].bus.name.as_str()),
            ("can", DEFAULT_BUS)
        );
        assert_eq!(buses[0].bus.source, CanSourceKind::Tcp);
        assert_eq!(buses[0].bus.dbc, PathBuf::from("/v.dbc"));
        // The flat form renders without a `bus` key (existing configs round-trip unchanged).
        assert!(!c.to_toml().contains("[[can.bus]]"));
    }

    #[test]
    fn several_buses_and_errors_naming_the_bus_key() {
        let two = format!(
            "{}[can]\nmax_age_ms = 1500\n\
             [[can.bus]]\nname = \"body\"\nsource = \"socketcan\"\ninterface = \"vcan0\"\n\
             dbc = \"/b.dbc\"\nmapping = \"/b.toml\"\n\
             [[can.bus]]\nname = \"chassis\"\nsource = \"replay\"\nreplay_file = \"/c.log\"\n\
             dbc = \"/c.dbc\"\nmapping = \"/c.json\"\n",
            base()
        );
        let c = Config::from_toml_with_env(&two, env(&[])).expect("valid");
        let buses = c.can.buses();
        let names: Vec<_> = buses
            .iter()
            .map(|b| (b.key.as_str(), b.bus.name.as_str()))
            .collect();
        assert_eq!(names, [("can.bus[0]", "body"), ("can.bus[1]", "chassis")]);
        let again = Config::from_toml_with_env(&c.to_toml(), env(&[])).expect("round trip");
        assert_eq!(again, c);

        let bad = format!(
            "{}[can]\ndbc = \"/flat.dbc\"\n\
             [[can.bus]]\nname = \"body\"\nsource = \"socketcan\"\ninterface = \"\"\n\
             dbc = \"/b.dbc\"\nmapping = \"/b.toml\"\n\
             [[can.bus]]\nname = \"body\"\nsource = \"replay\"\n\
             dbc = \"/c.dbc\"\nmapping = \"/c.toml\"\n\
             [[can.bus]]\nname = \"x y\"\nsource = \"sim\"\n\
             dbc = \"/d.dbc\"\nmapping = \"/d.toml\"\n",
            base()
        );
        let e = Config::from_toml_with_env(&bad, env(&[]))
            .expect_err("invalid")
            .to_string();
        for key in [
            "can.dbc: set it per bus",
            "can.bus[0].interface: must be 1..=15",
            "can.bus[1].name: \"body\" is used by another bus",
            "can.bus[1].replay_file: required when can.bus[1].source = \"replay\"",
            "can.bus[2].name: 1..=32 characters",
            "can.bus[2].source: \"sim\"",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
        // A missing key of an entry is a parse error naming the field.
        let e = Config::from_toml_with_env(
            &format!("{}[[can.bus]]\nname = \"body\"\nsource = \"tcp\"\n", base()),
            env(&[]),
        )
        .expect_err("no dbc")
        .to_string();
        assert!(e.contains("dbc"), "{e}");
    }

    #[test]
    fn missing_bus_files_name_the_bus_key() {
        let d = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "{}[[can.bus]]\nname = \"body\"\nsource = \"tcp\"\ninterface = \"127.0.0.1:1\"\n\
             dbc = \"/nonexistent/b.dbc\"\nmapping = \"/nonexistent/b.toml\"\n\
             [[can.bus]]\nname = \"chassis\"\nsource = \"replay\"\nreplay_file = \"/nonexistent/c.log\"\n\
             dbc = \"/nonexistent/c.dbc\"\nmapping = \"/nonexistent/c.toml\"\n\
             [state]\ndirectory = {:?}\n",
            base(),
            d.path()
        );
        let c = Config::from_toml_with_env(&text, env(&[])).expect("valid");
        let e = c.check_files().expect_err("missing").to_string();
        for key in [
            "can.bus[0].dbc:",
            "can.bus[0].mapping:",
            "can.bus[1].dbc:",
            "can.bus[1].replay_file:",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn defaults_with_vin_are_valid() {
        let c = Config::from_toml_with_env(&base(), env(&[])).expect("valid");
        assert_eq!(c.mqtt.port, 8883);
        assert_eq!(c.client_id(), VIN);
        assert_eq!(
            c.outbox_path(),
            PathBuf::from("/var/lib/telematicsd/outbox.redb")
        );
    }

    #[test]
    fn port_zero_names_key() {
        let text = format!("{}[mqtt]\nport = 0\n", base());
        let e = Config::from_toml_with_env(&text, env(&[])).expect_err("invalid");
        assert_eq!(e.code(), "config.invalid");
        assert!(
            e.to_string()
                .contains("mqtt.port: must be 1..=65535, got 0"),
            "{e}"
        );
    }

    #[test]
    fn mqtt_packet_and_reconnect_keys() {
        let c = Config::from_toml_with_env(&base(), env(&[])).expect("valid");
        assert_eq!(c.mqtt.max_incoming_packet, 1024 * 1024 + 4096);
        let lc = crate::runtime::link_config(&c, &c.versions());
        assert_eq!(lc.max_incoming_packet, 1024 * 1024 + 4096);
        assert_eq!(lc.backoff_min, std::time::Duration::from_secs(1));
        assert_eq!(lc.stable_after, std::time::Duration::from_secs(60));
        let text = format!(
            "{}[mqtt]\nmax_incoming_packet = 2000000\nreconnect_min_ms = 250\nreconnect_max_s = 30\nreconnect_stable_s = 10\n",
            base()
        );
        let c = Config::from_toml_with_env(&text, env(&[])).expect("valid");
        let lc = crate::runtime::link_config(&c, &c.versions());
        assert_eq!(lc.max_incoming_packet, 2_000_000);
        assert_eq!(lc.backoff_min, std::time::Duration::from_millis(250));
        assert_eq!(lc.backoff_max, std::time::Duration::from_secs(30));
        assert_eq!(lc.stable_after, std::time::Duration::from_secs(10));
        // Below the protocol's command cap + headers: refused, naming the key.
        let text = format!("{}[mqtt]\nmax_incoming_packet = 10240\n", base());
        let e = Config::from_toml_with_env(&text, env(&[])).expect_err("too small");
        assert!(
            e.to_string()
                .contains("mqtt.max_incoming_packet: must be 66560..="),
            "{e}"
        );
        let text = format!(
            "{}[mqtt]\nreconnect_min_ms = 5000\nreconnect_max_s = 2\n",
            base()
        );
        let e = Config::from_toml_with_env(&text, env(&[])).expect_err("max < min");
        assert!(e.to_string().contains("mqtt.reconnect_max_s"), "{e}");
    }

    #[test]
    fn several_errors_reported_together() {
        let text = "[vehicle]\nvin = \"SHORT\"\n[security]\npbkdf2_iterations = 10\n[telemetry]\nperiod_s = 0\n";
        let Err(DaemonError::ConfigInvalid(errs)) = Config::from_toml_with_env(text, env(&[]))
        else {
            panic!("expected ConfigInvalid");
        };
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("vehicle.vin: must be 17 characters, got 5"));
        assert!(errs[1].starts_with("security.pbkdf2_iterations"));
        assert!(errs[2].starts_with("telemetry.period_s"));
    }

    #[test]
    fn unknown_key_rejected() {
        let text = format!("{}[mqtt]\nhots = \"x\"\n", base());
        let e = Config::from_toml_with_env(&text, env(&[])).expect_err("unknown key");
        assert_eq!(e.code(), "config.parse");
        assert!(e.to_string().contains("hots"), "{e}");
        let e = Config::from_toml_with_env(&format!("{}[mqttt]\n", base()), env(&[]))
            .expect_err("unknown section");
        assert!(e.to_string().contains("mqttt"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let text = format!("{}[mqtt]\nhost = \"file-host\"\nport = 1883\n", base());
        let c = Config::from_toml_with_env(
            &text,
            env(&[
                ("TELEMATICSD_MQTT__HOST", "env-host"),
                ("TELEMATICSD_MQTT__PORT", "8884"),
                ("TELEMATICSD_TELEMETRY__ON_CHANGE", "[\"Vehicle.Speed\"]"),
                ("TELEMATICSD_CAN__SOURCE", "sim"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.mqtt.host, "env-host");
        assert_eq!(c.mqtt.port, 8884);
        assert_eq!(c.telemetry.on_change, vec!["Vehicle.Speed".to_string()]);
        assert_eq!(c.can.source, CanSourceKind::Sim);
    }

    #[test]
    fn env_only_config_and_bad_env() {
        let c = Config::from_toml_with_env("", env(&[("TELEMATICSD_VEHICLE__VIN", VIN)]))
            .expect("vin from env");
        assert_eq!(c.vehicle.vin, VIN);
        let e = Config::from_toml_with_env(&base(), env(&[("TELEMATICSD_MQTT__PORT", "0")]))
            .expect_err("port 0");
        assert!(e.to_string().contains("mqtt.port"));
        let e = Config::from_toml_with_env(&base(), env(&[("TELEMATICSD_MQTTPORT", "1")]))
            .expect_err("no separator");
        assert!(e.to_string().contains("TELEMATICSD_MQTTPORT"));
        let e = Config::from_toml_with_env(&base(), env(&[("TELEMATICSD_MQTT__NOPE", "1")]))
            .expect_err("unknown key via env");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn vin_rules() {
        assert!(validate_vin(VIN, true).is_ok());
        assert!(validate_vin("1M8GDM9A1KP042788", false).is_ok());
        let e = validate_vin("1M8GDM9A1KP042788", true).expect_err("bad check digit");
        assert!(e.contains("'X'"), "{e}");
        let e = validate_vin("1M8GDM9AXKP04278O", false).expect_err("letter O");
        assert!(e.contains("position 17"), "{e}");
        assert!(validate_vin("", false).is_err());
        assert!(validate_vin("ÄM8GDM9AXKP04278", false).is_err());
    }

    #[test]
    fn replay_needs_file_and_files_fail_closed() {
        let text = format!("{}[can]\nsource = \"replay\"\n", base());
        let e = Config::from_toml_with_env(&text, env(&[])).expect_err("replay file");
        assert!(e.to_string().contains("can.replay_file"));

        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut c = Config::from_toml_with_env(&base(), env(&[])).expect("valid");
        c.mqtt.ca = d.join("ca.pem");
        c.mqtt.cert = d.join("cert.pem");
        c.mqtt.key = d.join("key.pem");
        c.security.backend_public_key = d.join("backend.pub");
        c.can.dbc = d.join("v.dbc");
        c.can.mapping = d.join("m.json");
        c.can.profile = d.join("p.toml");
        c.state.directory = d.to_path_buf();
        let Err(DaemonError::MissingFiles(m)) = c.check_files() else {
            panic!("expected missing files");
        };
        assert_eq!(m.len(), 7, "{m:?}");
        assert!(m.iter().any(|f| f.starts_with("can.profile:")), "{m:?}");
        assert!(m[0].starts_with("mqtt.ca:"));
        for f in [
            "ca.pem",
            "cert.pem",
            "key.pem",
            "backend.pub",
            "v.dbc",
            "m.json",
            "p.toml",
        ] {
            std::fs::write(d.join(f), b"x").expect("write");
        }
        c.check_files().expect("all present");

        // The sealing key: outside the state directory, and the daemon's alone.
        use std::os::unix::fs::PermissionsExt;
        let key = d.join("seal.key");
        std::fs::write(&key, [7u8; 32]).expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        c.keys.seal_key = Some(telematics_keystore::SecretSource::File(key.clone()));
        let Err(DaemonError::MissingFiles(m)) = c.check_files() else {
            panic!("expected a refused sealing key");
        };
        assert!(
            m.iter().any(|f| f.contains("inside state.directory")),
            "{m:?}"
        );
        assert!(m.iter().any(|f| f.contains("has mode 644")), "{m:?}");
        let state = d.join("state");
        std::fs::create_dir(&state).expect("mkdir");
        c.state.directory = state;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        c.check_files().expect("a 0600 key outside the state");
    }

    #[test]
    fn effective_config_roundtrips() {
        let c = Config::from_toml_with_env(&base(), env(&[])).expect("valid");
        let again = Config::from_toml_with_env(&c.to_toml(), env(&[])).expect("roundtrip");
        assert_eq!(c, again);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_toml_never_panics(s in ".{0,200}") {
            let _ = Config::from_toml_with_env(&s, Vec::new());
        }
        #[test]
        fn arbitrary_env_never_panics(k in "TELEMATICSD_[A-Z_]{0,12}", v in ".{0,40}") {
            let _ = Config::from_toml_with_env(&base(), vec![(k, v)]);
        }
    }
}
