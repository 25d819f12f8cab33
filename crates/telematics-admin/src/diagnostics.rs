//! Troubleshooting (`telematicsctl doctor`): the facts the daemon exposes through the admin
//! request `diagnostics` ([`Facts`]) and the pure evaluation of those facts into one line per
//! check ([`evaluate`]), each `ok` / `warn` / `fail` with what to do. The checks map to the
//! questions owners bring to customer service (code not accepted, lockout, no data, app not
//! connecting, no notifications, security features disabled); see docs/admin.md.
//!
//! Pure: the daemon gathers the facts (`telematicsd::diagnostics`), [`evaluate`] decides, the
//! CLI prints. Here, in the protocol crate, so telematicsctl evaluates without linking the
//! daemon.

use serde::{Deserialize, Serialize};
use telematics_link::{ConnectErrorClass, LinkDiagnostics, LinkState, Validity};

/// Earliest plausible wall-clock time (2025-01-01T00:00:00Z): a clock before it was never set.
pub const MIN_PLAUSIBLE_UNIX: u64 = 1_735_689_600;
/// A certificate with fewer days left than this is a warning.
pub const CERT_WARN_DAYS: u64 = 30;
/// Outbox messages older than this (s) while queued are a warning (data not reaching the back
/// end).
pub const OUTBOX_AGE_WARN_S: u64 = 300;
/// A lockout threshold above this lets a guesser try that many codes per wait: warned as
/// "lockout effectively disabled".
pub const LOCKOUT_THRESHOLD_WARN: u32 = 10;

/// Everything `doctor` needs, gathered by the daemon at `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// The daemon's wall clock (Unix s) when the facts were gathered.
    pub now: u64,
    /// `Some(true)` synchronised, `Some(false)` a time service runs but is not synchronised,
    /// `None` unknown (no systemd-timesyncd).
    pub clock_synchronized: Option<bool>,
    /// Pairing and lockout.
    pub security: SecurityFacts,
    /// The MQTT link.
    pub link: LinkFacts,
    /// The vehicle's client certificate: validity, or why it could not be read.
    pub certificate: Result<Validity, String>,
    /// The outbox.
    pub outbox: OutboxFacts,
    /// Per CAN bus.
    pub buses: Vec<BusFacts>,
    /// Security-relevant settings.
    pub config: ConfigFacts,
}

/// Pairing, lockout and recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityFacts {
    /// A security code is set.
    pub paired: bool,
    /// Consecutive wrong codes.
    pub failures: u32,
    /// End of the current wait (Unix s), if one is in force.
    pub locked_until: Option<u64>,
    /// Locked until recovery (hard limit reached).
    pub hard_locked: bool,
    /// A recovery is armed until this time (Unix s): the new code must be set in the car.
    pub recovery_confirm_by: Option<u64>,
}

/// The link's state in one word (the detail is in [`LinkFacts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStateKind {
    /// Connected and subscribed to commands.
    Connected,
    /// Connected, commands subscription refused.
    SubscribeRefused,
    /// Connecting.
    Connecting,
    /// Disconnected, waiting to retry.
    Disconnected,
    /// Stopped.
    Stopped,
}

/// The MQTT link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkFacts {
    /// Broker `host:port`.
    pub broker: String,
    /// State now.
    pub state: LinkStateKind,
    /// Next attempt in (ms), when waiting.
    pub retry_in_ms: Option<u64>,
    /// Last success and last error.
    pub diagnostics: LinkDiagnostics,
}

impl LinkFacts {
    /// From the link's state and diagnostics.
    pub fn new(broker: String, state: &LinkState, diagnostics: LinkDiagnostics) -> Self {
        let ms = |d: &std::time::Duration| Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (state, retry_in_ms) = match state {
            LinkState::Connected => (LinkStateKind::Connected, None),
            LinkState::SubscribeRefused { retry_in, .. } => {
                (LinkStateKind::SubscribeRefused, ms(retry_in))
            }
            LinkState::Connecting { .. } => (LinkStateKind::Connecting, None),
            LinkState::Disconnected { retry_in, .. } => (LinkStateKind::Disconnected, ms(retry_in)),
            LinkState::Stopped => (LinkStateKind::Stopped, None),
        };
        LinkFacts {
            broker,
            state,
            retry_in_ms,
            diagnostics,
        }
    }
}

/// The outbox (messages waiting for the broker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxFacts {
    /// Messages queued.
    pub queued: u64,
    /// Bytes queued.
    pub bytes: u64,
    /// Capacity (messages).
    pub max_messages: u64,
    /// Capacity (bytes).
    pub max_bytes: u64,
    /// Messages dropped since the outbox was created (full while offline).
    pub dropped: u64,
    /// Failed writes (disk full, I/O) since the start.
    pub write_failures: u64,
    /// Age (s) of the oldest queued message, at least (bounded by the daemon's uptime).
    pub oldest_age_s: Option<u64>,
}

/// One CAN bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusFacts {
    /// Interface (or `sim`, a replay file, a TCP address).
    pub name: String,
    /// Frames per second over the last seconds (`None`: not measured yet).
    pub frames_per_s: Option<f64>,
    /// Frames received since the start.
    pub frames: u64,
    /// Signals of the mapping.
    pub signals: u64,
    /// Of those, fresh now.
    pub fresh: u64,
    /// Staleness limit (ms).
    pub max_age_ms: u64,
}

/// Security-relevant settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFacts {
    /// PBKDF2 iterations for a new code.
    pub pbkdf2_iterations: u32,
    /// Fewest accepted.
    pub min_pbkdf2_iterations: u32,
    /// Wrong codes before a wait.
    pub lockout_threshold: u32,
    /// Wrong codes before the lock until recovery.
    pub lockout_hard_limit: u32,
    /// Whether the security state is sealed at rest (`[keys]`: a token or a sealing key file);
    /// absent from an older daemon, which stored it in clear.
    #[serde(default)]
    pub state_sealed: bool,
}

/// The result of one check; ordered, so the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Works, but something needs attention.
    Warn,
    /// A symptom the owner notices.
    Fail,
}

impl Level {
    /// `ok` / `warn` / `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One line of `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Check name: `pairing`, `lockout`, `recovery`, `link`, `clock`, `certificate`, `outbox`,
    /// `can:<bus>`, `config`.
    pub check: String,
    /// Result.
    pub level: Level,
    /// What was found.
    pub summary: String,
    /// What to do (absent when nothing is to be done).
    pub action: Option<String>,
}

fn line(check: &str, level: Level, summary: String, action: Option<&str>) -> Check {
    Check {
        check: check.to_string(),
        level,
        summary,
        action: action.map(str::to_string),
    }
}

/// The worst level of `checks` (`Ok` for none).
pub fn worst(checks: &[Check]) -> Level {
    checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok)
}

/// A duration in words: `45 s`, `12 min`, `3 h`, `5 d`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// `ago` phrase of a past time relative to `now`.
fn ago(at: u64, now: u64) -> String {
    match now.checked_sub(at) {
        Some(d) => format!("{} ago", human_duration(d)),
        None => format!("in {}", human_duration(at - now)),
    }
}

/// Evaluates every check on `facts` at `now` (Unix s, normally `facts.now`). Pure.
pub fn evaluate(facts: &Facts, now: u64) -> Vec<Check> {
    let mut out = vec![
        pairing(&facts.security),
        lockout(&facts.security, &facts.config, now),
        recovery(&facts.security, now),
        link(&facts.link, now),
        clock(facts, now),
        certificate(&facts.certificate, now),
        outbox(&facts.outbox),
    ];
    out.extend(facts.buses.iter().map(bus));
    out.push(config(&facts.config));
    out
}

fn pairing(s: &SecurityFacts) -> Check {
    if s.paired {
        line("pairing", Level::Ok, "security code set".into(), None)
    } else {
        line(
            "pairing",
            Level::Warn,
            "not paired: no security code is set, every remote command is refused".into(),
            Some("pair a device in the car: telematicsctl pair --name <device>"),
        )
    }
}

fn lockout(s: &SecurityFacts, c: &ConfigFacts, now: u64) -> Check {
    if s.hard_locked {
        return line(
            "lockout",
            Level::Fail,
            format!(
                "locked until recovery after {} wrong codes in a row: every code check is refused",
                s.failures
            ),
            Some(
                "recovery: the back end signs a reset authorization (telematicsctl reset-auth), \
                 then in the car telematicsctl confirm-recovery <authorization>",
            ),
        );
    }
    if let Some(until) = s.locked_until.filter(|t| *t > now) {
        return line(
            "lockout",
            Level::Fail,
            format!(
                "locked out after {} wrong codes: retry after {} ({until})",
                s.failures,
                human_duration(until - now)
            ),
            Some("wait, then enter the right code; another wrong code doubles the wait"),
        );
    }
    if s.failures > 0 {
        let left = c.lockout_hard_limit.saturating_sub(s.failures);
        return line(
            "lockout",
            Level::Warn,
            format!(
                "{} wrong code(s) in a row; {left} more lock remote commands until recovery",
                s.failures
            ),
            Some("make sure the owner uses the right code (a right code resets the count)"),
        );
    }
    line("lockout", Level::Ok, "no wrong codes".into(), None)
}

fn recovery(s: &SecurityFacts, now: u64) -> Check {
    match s.recovery_confirm_by.filter(|t| *t >= now) {
        Some(by) => line(
            "recovery",
            Level::Warn,
            format!(
                "a recovery is armed: set the new code in the car within {}",
                human_duration(by - now)
            ),
            Some("in the car: telematicsctl confirm-recovery"),
        ),
        None => line("recovery", Level::Ok, "no recovery pending".into(), None),
    }
}

/// What to do about a connection error class.
fn link_action(class: ConnectErrorClass) -> &'static str {
    use ConnectErrorClass as C;
    match class {
        C::UnknownCa => {
            "the broker's certificate is not signed by mqtt.ca: install the right CA file (docs/deploy.md)"
        }
        C::CertExpired => {
            "the broker's certificate has expired, or the vehicle clock is ahead: check the clock, then renew the broker certificate"
        }
        C::CertNotYetValid => {
            "the broker's certificate is not valid yet, or the vehicle clock is behind: set the clock (NTP)"
        }
        C::CertInvalid => {
            "the broker's certificate does not match mqtt.host or is malformed: check mqtt.host and the broker certificate"
        }
        C::ClientCertRejected => {
            "the broker refused the vehicle certificate: issue a certificate from the broker's CA, CN = the VIN (docs/deploy.md)"
        }
        C::Tls => "TLS handshake failed: the broker must offer TLS 1.2 or 1.3 on mqtt.port",
        C::BrokerRefused => {
            "the broker refused the MQTT session: check the broker's ACL / client id (= the VIN)"
        }
        C::SubscribeRefused => {
            "the broker refuses vehicles/<vin>/commands: fix the broker ACL (docs/topics.md)"
        }
        C::Dns => "mqtt.host does not resolve: check mqtt.host and the network's DNS",
        C::Unreachable => {
            "nothing answers on mqtt.host:mqtt.port: is the broker up, the port right, the network reachable?"
        }
        C::Timeout => "the broker does not answer in time: check the network coverage and firewall",
        C::Network => {
            "the connection broke: check the network coverage; the link retries by itself"
        }
        C::Internal => {
            "an internal error of the daemon: see the journal (journalctl -u telematicsd)"
        }
    }
}

fn link(l: &LinkFacts, now: u64) -> Check {
    let last_ok = match l.diagnostics.last_connected_at {
        Some(t) => format!("last worked {}", ago(t, now)),
        None => "never connected since the start".to_string(),
    };
    let err = l.diagnostics.last_error.as_ref();
    match l.state {
        LinkStateKind::Connected => line(
            "link",
            Level::Ok,
            format!("connected to {}", l.broker),
            None,
        ),
        LinkStateKind::SubscribeRefused => line(
            "link",
            Level::Fail,
            format!(
                "connected to {} but the commands subscription is refused (subscribe_refused): no command reaches the vehicle",
                l.broker
            ),
            Some(link_action(ConnectErrorClass::SubscribeRefused)),
        ),
        LinkStateKind::Stopped => line(
            "link",
            Level::Fail,
            "the link is stopped".into(),
            Some("restart the daemon: systemctl restart telematicsd"),
        ),
        LinkStateKind::Connecting | LinkStateKind::Disconnected => match err {
            Some(e) => line(
                "link",
                Level::Fail,
                format!(
                    "not connected to {}: {} ({}, {}); {last_ok}",
                    l.broker,
                    e.class.as_str(),
                    e.detail,
                    ago(e.at, now)
                ),
                Some(link_action(e.class)),
            ),
            None => line(
                "link",
                Level::Warn,
                format!("connecting to {}; {last_ok}", l.broker),
                Some("wait a few seconds and run doctor again"),
            ),
        },
    }
}

fn clock(f: &Facts, now: u64) -> Check {
    if now < MIN_PLAUSIBLE_UNIX {
        return line(
            "clock",
            Level::Fail,
            format!("the clock is not set (Unix time {now})"),
            Some(
                "set the clock (NTP: timedatectl set-ntp true); certificates and commands need it",
            ),
        );
    }
    if let Ok(v) = &f.certificate {
        if now < v.not_before {
            return line(
                "clock",
                Level::Fail,
                format!(
                    "the clock is {} before the certificate's validity",
                    human_duration(v.not_before - now)
                ),
                Some("the vehicle clock is behind: set it (NTP)"),
            );
        }
        if now > v.not_after.saturating_add(86_400) {
            return line(
                "clock",
                Level::Warn,
                format!(
                    "the clock is {} after the certificate's end: either the clock is ahead or the certificate expired",
                    human_duration(now - v.not_after)
                ),
                Some("check the time (timedatectl) before renewing the certificate"),
            );
        }
    }
    match f.clock_synchronized {
        Some(false) => line(
            "clock",
            Level::Warn,
            "the clock is not synchronised (NTP)".into(),
            Some("check the time service: timedatectl timesync-status"),
        ),
        Some(true) => line("clock", Level::Ok, "synchronised".into(), None),
        None => line(
            "clock",
            Level::Ok,
            "plausible (synchronisation unknown)".into(),
            None,
        ),
    }
}

fn certificate(c: &Result<Validity, String>, now: u64) -> Check {
    let v = match c {
        Ok(v) => v,
        Err(e) => {
            return line(
                "certificate",
                Level::Fail,
                format!("cannot read the vehicle certificate: {e}"),
                Some("install the certificate named by mqtt.cert (docs/deploy.md)"),
            );
        }
    };
    if now < v.not_before {
        return line(
            "certificate",
            Level::Fail,
            format!(
                "not valid yet (valid from {}, in {})",
                v.not_before,
                human_duration(v.not_before - now)
            ),
            Some("check the vehicle clock; if it is right, the certificate was issued wrongly"),
        );
    }
    if now >= v.not_after {
        return line(
            "certificate",
            Level::Fail,
            format!("expired {} ago", human_duration(now - v.not_after)),
            Some(
                "renew the vehicle certificate (docs/deploy.md), then systemctl reload telematicsd",
            ),
        );
    }
    let days = (v.not_after - now) / 86_400;
    if days < CERT_WARN_DAYS {
        line(
            "certificate",
            Level::Warn,
            format!("expires in {days} days"),
            Some("renew the vehicle certificate soon (docs/deploy.md)"),
        )
    } else {
        line(
            "certificate",
            Level::Ok,
            format!("valid for {days} more days"),
            None,
        )
    }
}

fn outbox(o: &OutboxFacts) -> Check {
    if o.write_failures > 0 {
        return line(
            "outbox",
            Level::Fail,
            format!(
                "{} write failures: the state directory is full or failing",
                o.write_failures
            ),
            Some("free space on the state directory's file system; see the journal"),
        );
    }
    let age = o.oldest_age_s.unwrap_or(0);
    let full = o.queued.saturating_mul(10) >= o.max_messages.saturating_mul(9)
        || o.bytes.saturating_mul(10) >= o.max_bytes.saturating_mul(9);
    let summary = format!(
        "{} queued ({} bytes), oldest {}, {} dropped",
        o.queued,
        o.bytes,
        o.oldest_age_s
            .map_or_else(|| "-".to_string(), human_duration),
        o.dropped
    );
    if o.queued > 0 && (age >= OUTBOX_AGE_WARN_S || full) {
        return line(
            "outbox",
            Level::Warn,
            format!("backlog: {summary}: data does not reach the back end"),
            Some("the link must connect to drain it (see the link line)"),
        );
    }
    if o.dropped > 0 {
        return line(
            "outbox",
            Level::Warn,
            format!("{summary}: messages were lost while the outbox was full"),
            Some("long offline periods lose telemetry first; raise outbox.max_messages if needed"),
        );
    }
    line("outbox", Level::Ok, summary, None)
}

fn bus(b: &BusFacts) -> Check {
    let name = format!("can:{}", b.name);
    let stale = b.signals.saturating_sub(b.fresh);
    match b.frames_per_s {
        Some(r) if r <= 0.0 => line(
            &name,
            Level::Fail,
            format!(
                "no frames in the last seconds ({} since the start); {stale} of {} signals stale",
                b.frames, b.signals
            ),
            Some(
                "the bus is silent: check the CAN interface (ip -details link show), wiring and ignition",
            ),
        ),
        rate => {
            let rate = rate.map_or_else(|| "measuring".to_string(), |r| format!("{r:.0} frames/s"));
            if stale > 0 {
                line(
                    &name,
                    Level::Warn,
                    format!(
                        "{rate}; {stale} of {} signals stale (older than {} ms)",
                        b.signals, b.max_age_ms
                    ),
                    Some("some ECUs are silent or the DBC/mapping does not match the vehicle"),
                )
            } else {
                line(
                    &name,
                    Level::Ok,
                    format!("{rate}; all {} signals fresh", b.signals),
                    None,
                )
            }
        }
    }
}

fn config(c: &ConfigFacts) -> Check {
    let mut issues = Vec::new();
    let default = telematics_security::state::DEFAULT_PBKDF2_ITERATIONS;
    if c.pbkdf2_iterations < default {
        issues.push(format!(
            "low PBKDF2 cost ({} < {default} iterations)",
            c.pbkdf2_iterations
        ));
    }
    if c.min_pbkdf2_iterations < telematics_security::state::MIN_PBKDF2_ITERATIONS {
        issues.push(format!(
            "min_pbkdf2_iterations lowered to {}",
            c.min_pbkdf2_iterations
        ));
    }
    if c.lockout_threshold > LOCKOUT_THRESHOLD_WARN {
        issues.push(format!(
            "lockout effectively disabled ({} wrong codes before a wait)",
            c.lockout_threshold
        ));
    }
    if !c.state_sealed {
        issues.push(
            "security state stored in clear (no [keys] seal_key, no token: a copy of the state \
             directory reveals the device secrets and the code verifier)"
                .into(),
        );
    }
    if issues.is_empty() {
        line(
            "config",
            Level::Ok,
            "security settings at their defaults or stronger".into(),
            None,
        )
    } else {
        line(
            "config",
            Level::Warn,
            issues.join("; "),
            Some(
                "security features weakened: restore the [security] defaults (docs/protocol.md §5)",
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telematics_link::LastError;

    const NOW: u64 = 1_800_000_000;

    fn healthy() -> Facts {
        Facts {
            now: NOW,
            clock_synchronized: Some(true),
            security: SecurityFacts {
                paired: true,
                failures: 0,
                locked_until: None,
                hard_locked: false,
                recovery_confirm_by: None,
            },
            link: LinkFacts {
                broker: "broker:8883".into(),
                state: LinkStateKind::Connected,
                retry_in_ms: None,
                diagnostics: LinkDiagnostics {
                    last_connected_at: Some(NOW - 5),
                    last_error: None,
                },
            },
            certificate: Ok(Validity {
                not_before: NOW - 86_400,
                not_after: NOW + 365 * 86_400,
            }),
            outbox: OutboxFacts {
                queued: 0,
                bytes: 0,
                max_messages: 100,
                max_bytes: 10_000,
                dropped: 0,
                write_failures: 0,
                oldest_age_s: None,
            },
            buses: vec![BusFacts {
                name: "can0".into(),
                frames_per_s: Some(120.0),
                frames: 5000,
                signals: 10,
                fresh: 10,
                max_age_ms: 2000,
            }],
            config: ConfigFacts {
                pbkdf2_iterations: 600_000,
                min_pbkdf2_iterations: 600_000,
                lockout_threshold: 3,
                lockout_hard_limit: 10,
                state_sealed: true,
            },
        }
    }

    fn check(f: &Facts, name: &str) -> Check {
        evaluate(f, f.now)
            .into_iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("no {name} line"))
    }

    #[test]
    fn a_healthy_vehicle_is_all_ok() {
        let f = healthy();
        let lines = evaluate(&f, NOW);
        assert_eq!(lines.len(), 9, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|c| c.level == Level::Ok && c.action.is_none()),
            "{lines:?}"
        );
        assert_eq!(worst(&lines), Level::Ok);
    }

    #[test]
    fn pairing_missing_warns() {
        let mut f = healthy();
        f.security.paired = false;
        let c = check(&f, "pairing");
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.action
                .as_deref()
                .unwrap_or("")
                .contains("telematicsctl pair")
        );
    }

    #[test]
    fn lockout_wait_wrong_codes_and_hard_lock() {
        let mut f = healthy();
        f.security.failures = 2;
        let c = check(&f, "lockout");
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.summary.contains("2 wrong code(s)") && c.summary.contains("8 more"),
            "{c:?}"
        );
        f.security.failures = 3;
        f.security.locked_until = Some(NOW + 30);
        let c = check(&f, "lockout");
        assert_eq!(c.level, Level::Fail);
        assert!(
            c.summary.contains("retry after 30 s") && c.summary.contains("3 wrong"),
            "{c:?}"
        );
        // A wait that ended is no lockout.
        f.security.locked_until = Some(NOW - 1);
        assert_eq!(check(&f, "lockout").level, Level::Warn);
        f.security.hard_locked = true;
        let c = check(&f, "lockout");
        assert_eq!(c.level, Level::Fail);
        assert!(c.summary.contains("until recovery"), "{c:?}");
        assert!(
            c.action
                .as_deref()
                .unwrap_or("")
                .contains("confirm-recovery")
        );
        assert_eq!(worst(&evaluate(&f, NOW)), Level::Fail);
    }

    #[test]
    fn pending_recovery_warns_until_its_window_ends() {
        let mut f = healthy();
        f.security.recovery_confirm_by = Some(NOW + 600);
        let c = check(&f, "recovery");
        assert_eq!(c.level, Level::Warn);
        assert!(c.summary.contains("10 min"), "{c:?}");
        f.security.recovery_confirm_by = Some(NOW - 1);
        assert_eq!(check(&f, "recovery").level, Level::Ok);
    }

    #[test]
    fn link_states_and_error_classes() {
        let mut f = healthy();
        f.link.state = LinkStateKind::Connecting;
        f.link.diagnostics.last_connected_at = None;
        let c = check(&f, "link");
        assert_eq!(c.level, Level::Warn);
        assert!(c.summary.contains("never connected"), "{c:?}");
        f.link.state = LinkStateKind::Disconnected;
        f.link.diagnostics.last_connected_at = Some(NOW - 3_600);
        for (class, word, hint) in [
            (ConnectErrorClass::UnknownCa, "unknown_ca", "mqtt.ca"),
            (ConnectErrorClass::CertExpired, "cert_expired", "clock"),
            (
                ConnectErrorClass::CertNotYetValid,
                "cert_not_yet_valid",
                "clock",
            ),
            (
                ConnectErrorClass::ClientCertRejected,
                "client_cert_rejected",
                "CN",
            ),
            (ConnectErrorClass::BrokerRefused, "broker_refused", "ACL"),
            (ConnectErrorClass::Dns, "dns", "DNS"),
            (ConnectErrorClass::Unreachable, "unreachable", "broker up"),
            (ConnectErrorClass::Timeout, "timeout", "in time"),
        ] {
            f.link.diagnostics.last_error = Some(LastError {
                class,
                at: NOW - 2,
                detail: "x".into(),
            });
            let c = check(&f, "link");
            assert_eq!(c.level, Level::Fail, "{class:?}");
            assert!(c.summary.contains(word), "{c:?}");
            assert!(c.summary.contains("last worked 60 min ago"), "{c:?}");
            assert!(c.action.as_deref().unwrap_or("").contains(hint), "{c:?}");
        }
        f.link.state = LinkStateKind::SubscribeRefused;
        let c = check(&f, "link");
        assert_eq!(c.level, Level::Fail);
        assert!(c.summary.contains("subscribe_refused"), "{c:?}");
        f.link.state = LinkStateKind::Stopped;
        assert_eq!(check(&f, "link").level, Level::Fail);
        // Connected again: an old error does not matter.
        f.link.state = LinkStateKind::Connected;
        assert_eq!(check(&f, "link").level, Level::Ok);
    }

    #[test]
    fn clock_plausibility() {
        let mut f = healthy();
        f.clock_synchronized = Some(false);
        assert_eq!(check(&f, "clock").level, Level::Warn);
        f.clock_synchronized = None;
        assert_eq!(check(&f, "clock").level, Level::Ok);
        let mut unset = healthy();
        unset.now = 86_400;
        let c = evaluate(&unset, unset.now)
            .into_iter()
            .find(|c| c.check == "clock")
            .unwrap_or_else(|| panic!("clock"));
        assert_eq!(c.level, Level::Fail);
        assert!(c.summary.contains("not set"), "{c:?}");
        f.certificate = Ok(Validity {
            not_before: NOW + 7_200,
            not_after: NOW + 86_400 * 400,
        });
        let c = check(&f, "clock");
        assert_eq!(c.level, Level::Fail);
        assert!(c.summary.contains("before the certificate"), "{c:?}");
        f.certificate = Ok(Validity {
            not_before: NOW - 86_400 * 400,
            not_after: NOW - 86_400 * 3,
        });
        let c = check(&f, "clock");
        assert_eq!(c.level, Level::Warn);
        assert!(c.summary.contains("3 d after"), "{c:?}");
    }

    #[test]
    fn certificate_days_left() {
        let mut f = healthy();
        assert!(check(&f, "certificate").summary.contains("365 more days"));
        f.certificate = Ok(Validity {
            not_before: NOW - 10,
            not_after: NOW + 10 * 86_400 + 5,
        });
        let c = check(&f, "certificate");
        assert_eq!(
            (c.level, c.summary.as_str()),
            (Level::Warn, "expires in 10 days")
        );
        f.certificate = Ok(Validity {
            not_before: NOW - 100,
            not_after: NOW - 90,
        });
        let c = check(&f, "certificate");
        assert_eq!(c.level, Level::Fail);
        assert!(c.summary.contains("expired 90 s ago"), "{c:?}");
        f.certificate = Ok(Validity {
            not_before: NOW + 100,
            not_after: NOW + 900,
        });
        assert_eq!(check(&f, "certificate").level, Level::Fail);
        f.certificate = Err("cannot read x".into());
        assert_eq!(check(&f, "certificate").level, Level::Fail);
    }

    #[test]
    fn outbox_backlog_drops_and_write_failures() {
        let mut f = healthy();
        f.outbox.queued = 40;
        f.outbox.oldest_age_s = Some(60);
        assert_eq!(check(&f, "outbox").level, Level::Ok, "young backlog");
        f.outbox.oldest_age_s = Some(900);
        let c = check(&f, "outbox");
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.summary.contains("backlog: 40 queued") && c.summary.contains("oldest 15 min"),
            "{c:?}"
        );
        f.outbox.oldest_age_s = Some(1);
        f.outbox.queued = 95;
        assert_eq!(check(&f, "outbox").level, Level::Warn, "nearly full");
        f.outbox.queued = 0;
        f.outbox.dropped = 7;
        let c = check(&f, "outbox");
        assert_eq!(c.level, Level::Warn);
        assert!(c.summary.contains("7 dropped"), "{c:?}");
        f.outbox.write_failures = 1;
        assert_eq!(check(&f, "outbox").level, Level::Fail);
    }

    #[test]
    fn silent_bus_and_stale_signals() {
        let mut f = healthy();
        f.buses[0].fresh = 7;
        let c = check(&f, "can:can0");
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.summary.contains("120 frames/s; 3 of 10 signals stale"),
            "{c:?}"
        );
        f.buses[0].frames_per_s = Some(0.0);
        let c = check(&f, "can:can0");
        assert_eq!(c.level, Level::Fail);
        assert!(c.summary.starts_with("no frames"), "{c:?}");
        f.buses[0].frames_per_s = None;
        f.buses[0].fresh = 10;
        assert!(check(&f, "can:can0").summary.contains("measuring"));
    }

    #[test]
    fn weakened_security_settings_warn() {
        let mut f = healthy();
        f.config.pbkdf2_iterations = 100_000;
        f.config.min_pbkdf2_iterations = 100_000;
        f.config.lockout_threshold = 50;
        f.config.state_sealed = false;
        let c = check(&f, "config");
        assert_eq!(c.level, Level::Warn);
        for part in [
            "low PBKDF2 cost (100000 < 600000",
            "min_pbkdf2_iterations lowered",
            "lockout effectively disabled",
            "security state stored in clear",
        ] {
            assert!(c.summary.contains(part), "{part}: {c:?}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5 s");
        assert_eq!(human_duration(600), "10 min");
        assert_eq!(human_duration(10_800), "3 h");
        assert_eq!(human_duration(86_400 * 9), "9 d");
        assert_eq!(ago(NOW - 3, NOW), "3 s ago");
        assert_eq!(ago(NOW + 3, NOW), "in 3 s");
    }
}
