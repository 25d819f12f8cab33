//! Command-line entry of the daemon (`run`, `check-config`, the hidden store probe).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::{Daemon, DaemonEvent};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "telematicsd", version, about = "In-vehicle telematics daemon")]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon (default).
    Run,
    /// Validate the configuration and print the effective config.
    CheckConfig {
        /// Skip the existence check of certificate/key/DBC/state files and the key store check
        /// (PKCS#11 token, PIN, identity and sealing keys).
        #[arg(long)]
        no_files: bool,
    },
    /// Child side of the start-up store probe (`store_probe`; not for people).
    #[command(name = crate::store_probe::SUBCOMMAND, hide = true)]
    ProbeStore {
        /// The store file.
        path: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Config, crate::DaemonError> {
    Config::load(
        path,
        path != std::path::Path::new(DEFAULT_CONFIG_PATH),
        std::env::vars(),
    )
}

/// The clap definition of the command line (man page and shell completion generator).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses the command line and runs; the binary's `main`.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::ProbeStore { path } => crate::store_probe::child_main(&path),
        Cmd::CheckConfig { no_files } => {
            let res = load(&cli.config).and_then(|c| {
                if !no_files {
                    c.check_files()?;
                    // Module, token, PIN, identity and sealing keys: as `run` opens them.
                    crate::daemon::open_keys(&c)?;
                    // Every bus's DBC and mapping parse and fit the vehicle profile (errors
                    // name the key: `can.bus[1].dbc: ...`, `can.profile: actions.unlock...`);
                    // what the loader tolerated is a warning.
                    let (model, warnings) = crate::vehicle::VehicleModel::load(&c)?;
                    // The SecOC key, when the profile authenticates an action.
                    crate::secoc::load_key(&c, model.profile())?;
                    for w in warnings {
                        eprintln!("warning: {w}");
                    }
                }
                Ok(c)
            });
            match res {
                Ok(c) => {
                    use std::io::Write;
                    // Ignore a closed pipe (`| head`) instead of panicking.
                    let _ = writeln!(std::io::stdout().lock(), "OK\n{}", c.to_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Run => match run(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // Stable code first: systemd's journal and scripts can match on it. On the
                // journal sink this is an error event (priority 3, F_CODE).
                crate::logging::report_fatal(e.code(), &e);
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: &std::path::Path) -> Result<(), crate::DaemonError> {
    let cfg = load(path)?;
    crate::logging::init(&cfg.log.filter);
    cfg.check_files()?;
    // A redb panic on a damaged file would abort the shipped binary (`panic = "abort"`): open
    // the store once in a child process first (store_probe).
    crate::store_probe::probe(&cfg.outbox_path())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Test builds unwind: the store contains a panic and reports `store.corrupted`, but the
        // default hook would still print a panic message first. Silence it while opening
        // (nothing else runs yet), so stderr carries only our error.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = Daemon::open(cfg);
        std::panic::set_hook(hook);
        let daemon = opened?;
        let token = daemon.shutdown_token();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(signals(token, tx));
        daemon.run(rx).await
    })
}

async fn signals(
    token: tokio_util::sync::CancellationToken,
    tx: tokio::sync::mpsc::Sender<DaemonEvent>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        token.cancel();
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); token.cancel(); return; }
            _ = int.recv() => { tracing::info!("SIGINT"); token.cancel(); return; }
            _ = hup.recv() => { let _ = tx.send(DaemonEvent::ReloadCertificates).await; }
        }
    }
}
