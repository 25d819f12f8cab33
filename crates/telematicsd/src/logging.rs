//! Logging setup: owns the choice of the log sink and its format.
//!
//! Three sinks, chosen once at start-up by [`choose_sink`]:
//!
//! - [`Sink::Journal`]: started by systemd with stderr connected to the journal. systemd sets
//!   `JOURNAL_STREAM=<device>:<inode>` of that stream (systemd.exec(5)); the variable is
//!   inherited by children whose stderr was redirected, so it counts only when the device and
//!   inode match stderr's. Events are then sent to journald over its native protocol
//!   (`tracing-journald`): `PRIORITY` per level ([`PRIORITIES`]: error 3, warn 4, info 6,
//!   debug 7, trace 7), `MESSAGE`, and every tracing field as a journal field named
//!   `F_<FIELD>` ([`FIELD_PREFIX`]; `code` → `F_CODE`). The prefix keeps a field such as
//!   `priority` from overriding journald's own `PRIORITY`. So `journalctl -u telematicsd -p
//!   warning` and `journalctl F_CODE=store.write_failed` work. If the journal socket cannot
//!   be opened, the plain sink without timestamps is used (the stream adds its own).
//! - [`Sink::Plain`]: stderr is a file, a pipe or a foreign journal stream: plain text with
//!   timestamps and no ANSI colour codes.
//! - [`Sink::Terminal`]: stderr is a terminal: the coloured human format.
//!
//! The filter ([`parse_filter`]) is `RUST_LOG`'s target/level subset, matched by
//! tracing-subscriber's `Targets`: no span or field directives, so the daemon links no regex
//! engine (`EnvFilter` pulled in regex-automata and regex-syntax; BENCHMARKS.md, binary sizes).
//!
//! A fatal start-up error is reported by [`report_fatal`]: as an error event (priority 3 and
//! `F_CODE`) on the journal sink, as the stable `telematicsd: error[<code>]: ...` line on
//! stderr otherwise.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Prefix of user-defined tracing fields in the journal (`code` → `F_CODE`).
pub const FIELD_PREFIX: &str = "F";

/// The `SYSLOG_IDENTIFIER` of the daemon's journal entries (`journalctl -t telematicsd`).
pub const SYSLOG_IDENTIFIER: &str = "telematicsd";

/// Level → journal priority: error 3 (err), warn 4 (warning), info 6 (info), debug 7, trace 7
/// (debug). tracing-journald's default maps info to 5 (notice) and debug to 6, which would put
/// every routine info line into `journalctl -p notice`.
pub const PRIORITIES: PriorityMappings = PriorityMappings {
    error: Priority::Error,
    warn: Priority::Warning,
    info: Priority::Informational,
    debug: Priority::Debug,
    trace: Priority::Debug,
};

/// Where log events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// journald's native protocol (stderr is the journal stream systemd set up).
    Journal,
    /// Plain text on stderr, no colour (file, pipe, journal socket unavailable).
    Plain,
    /// Coloured text on stderr (a terminal).
    Terminal,
}

static ACTIVE: OnceLock<Sink> = OnceLock::new();

/// True when `journal_stream` (the value of `JOURNAL_STREAM`, `<device>:<inode>` in decimal)
/// names the file `fd` refers to, as systemd.exec(5) asks services to check.
pub fn journal_stream_matches(journal_stream: &OsStr, fd: BorrowedFd<'_>) -> bool {
    let Some((dev, ino)) = journal_stream
        .to_str()
        .and_then(|s| s.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
    else {
        return false;
    };
    let Ok(owned) = fd.try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(owned).metadata() {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        Err(_) => false,
    }
}

/// The sink for a process whose stderr is `stderr` and whose `JOURNAL_STREAM` is
/// `journal_stream`.
pub fn choose_sink(journal_stream: Option<&OsStr>, stderr: BorrowedFd<'_>) -> Sink {
    if journal_stream.is_some_and(|v| journal_stream_matches(v, stderr)) {
        Sink::Journal
    } else if stderr.is_terminal() {
        Sink::Terminal
    } else {
        Sink::Plain
    }
}

/// True when stderr is the journal stream systemd set up for this process.
pub fn under_journald() -> bool {
    choose_sink(
        std::env::var_os("JOURNAL_STREAM").as_deref(),
        std::io::stderr().as_fd(),
    ) == Sink::Journal
}

/// The journald layer with the project's priorities, field prefix and `identifier` as
/// `SYSLOG_IDENTIFIER`. Fails when journald's socket (`/run/systemd/journal/socket`) cannot
/// be reached.
pub fn journal_layer(identifier: &str) -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::layer()?
        .with_field_prefix(Some(FIELD_PREFIX.to_string()))
        .with_syslog_identifier(identifier.to_string())
        .with_priority_mappings(PRIORITIES))
}

/// Parses a log filter: comma-separated directives `level`, `target` or `target=level`
/// (`info,telematics_link=debug`; a target matches itself and the modules below it, the most
/// specific directive wins, levels are `off`, `error`, `warn`, `info`, `debug`, `trace`).
/// Empty directives are skipped; span and field directives (`target[span{field}]=level`) of
/// `RUST_LOG` are refused: the daemon's filter has no regex engine.
pub fn parse_filter(filter: &str) -> Result<Targets, String> {
    let mut directives = Vec::new();
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if d.contains(['[', ']', '{', '}']) {
            return Err(format!(
                "span and field filters are not supported: {d:?} (use target=level)"
            ));
        }
        directives.push(d);
    }
    if directives.is_empty() {
        // `Targets` would read "" as the empty target at every level: all of it.
        return Ok(Targets::new());
    }
    directives
        .join(",")
        .parse::<Targets>()
        .map_err(|e| e.to_string())
}

/// The filter in force: `RUST_LOG` when set, else `filter`; `info` when it does not parse
/// (the configured one was checked by `Config::validate`).
fn active_filter(filter: &str) -> Targets {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .unwrap_or_else(|| filter.to_string());
    parse_filter(&filter).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// Installs the global tracing subscriber with `filter` ([`parse_filter`] syntax; the `RUST_LOG`
/// environment variable wins when set) on the sink [`choose_sink`] picks, and returns the
/// sink in use. A second call keeps the first subscriber and returns its sink.
pub fn init(filter: &str) -> Sink {
    if let Some(sink) = ACTIVE.get() {
        return *sink;
    }
    let chosen = choose_sink(
        std::env::var_os("JOURNAL_STREAM").as_deref(),
        std::io::stderr().as_fd(),
    );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let (sink, res, journal_error) = match chosen {
        Sink::Journal => match journal_layer(SYSLOG_IDENTIFIER) {
            Ok(layer) => {
                let res = tracing_subscriber::registry()
                    .with(active_filter(filter))
                    .with(layer)
                    .try_init();
                (Sink::Journal, res, None)
            }
            // stderr is still the journal stream: plain lines, the journal adds the time.
            Err(e) => {
                let res = tracing_subscriber::registry()
                    .with(active_filter(filter))
                    .with(fmt.with_ansi(false).without_time())
                    .try_init();
                (Sink::Plain, res, Some(e))
            }
        },
        Sink::Plain => {
            let res = tracing_subscriber::registry()
                .with(active_filter(filter))
                .with(fmt.with_ansi(false))
                .try_init();
            (Sink::Plain, res, None)
        }
        Sink::Terminal => {
            let res = tracing_subscriber::registry()
                .with(active_filter(filter))
                .with(fmt.with_ansi(true))
                .try_init();
            (Sink::Terminal, res, None)
        }
    };
    if res.is_err() {
        // Another subscriber is already installed (tests): it stays, and is not the journal.
        return *ACTIVE.get_or_init(|| Sink::Plain);
    }
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "journal socket unavailable; logging plain text to stderr");
    }
    *ACTIVE.get_or_init(|| sink)
}

/// The sink [`init`] installed, if it ran.
pub fn active_sink() -> Option<Sink> {
    ACTIVE.get().copied()
}

/// Reports the error that stops the daemon: an error event with `code` on the journal sink
/// (priority 3, `F_CODE=<code>`), else the stable line `telematicsd: error[<code>]: <error>`
/// on stderr (scripts match on it).
pub fn report_fatal(code: &str, error: &dyn std::fmt::Display) {
    if active_sink() == Some(Sink::Journal) {
        tracing::error!(code, "telematicsd: error[{code}]: {error}");
    } else {
        eprintln!("telematicsd: error[{code}]: {error}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::ffi::OsString;

    fn stream_of(file: &std::fs::File) -> OsString {
        let meta = file.metadata().unwrap();
        OsString::from(format!("{}:{}", meta.dev(), meta.ino()))
    }

    #[test]
    fn filter_is_targets_and_levels() {
        use tracing::Level;
        let f = parse_filter("info,telematics_link=debug").unwrap();
        assert!(f.would_enable("telematicsd::daemon", &Level::INFO));
        assert!(!f.would_enable("telematicsd::daemon", &Level::DEBUG));
        assert!(f.would_enable("telematics_link", &Level::DEBUG));
        assert!(f.would_enable("telematics_link::session", &Level::DEBUG));
        assert!(!f.would_enable("telematics_link", &Level::TRACE));
        // The most specific directive wins, whatever the order.
        let f = parse_filter("telematics_link=off, warn ,").unwrap();
        assert!(!f.would_enable("telematics_link::session", &Level::ERROR));
        assert!(f.would_enable("telematics_store", &Level::WARN));
        assert!(!f.would_enable("telematics_store", &Level::INFO));
        // A bare target: every level of it, nothing else.
        let f = parse_filter("telematics_store").unwrap();
        assert!(f.would_enable("telematics_store", &Level::TRACE));
        assert!(!f.would_enable("telematicsd", &Level::ERROR));
        assert!(
            !parse_filter("")
                .unwrap()
                .would_enable("telematicsd", &Level::ERROR)
        );
        for bad in [
            "info,telematics_link=loud",
            "a=b=c",
            "telematics_link[session]=debug",
            "[{vin}]=trace",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn journal_only_when_device_and_inode_match_stderr() {
        let a = tempfile::tempfile().unwrap();
        let b = tempfile::tempfile().unwrap();
        assert_eq!(choose_sink(Some(&stream_of(&a)), a.as_fd()), Sink::Journal);
        // Inherited from a parent whose stream is another file: not the journal.
        assert_eq!(choose_sink(Some(&stream_of(&b)), a.as_fd()), Sink::Plain);
        assert_eq!(choose_sink(None, a.as_fd()), Sink::Plain);
        for bad in ["", "12", "x:y", "1:2:3", ":5", "-1:4"] {
            assert_eq!(
                choose_sink(Some(OsStr::new(bad)), a.as_fd()),
                Sink::Plain,
                "{bad:?}"
            );
        }
    }
}
