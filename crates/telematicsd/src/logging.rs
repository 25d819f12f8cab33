//! Logging setup: journald-friendly when started by systemd.

/// True when stderr is connected to the journal (`JOURNAL_STREAM` set).
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Installs the global tracing subscriber with `filter` (`RUST_LOG` syntax;
/// the `RUST_LOG` environment variable wins when set). Under journald:
/// no ANSI colours and no timestamps (the journal adds its own).
pub fn init(filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .unwrap_or_else(|| filter.to_string());
    let env_filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let res = if under_journald() {
        builder
            .with_ansi(false)
            .without_time()
            .with_target(true)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (tests): keep the existing subscriber.
    drop(res);
}
