//! telematicsd: the in-vehicle telematics daemon (library part, so tests
//! can run the daemon in-process).
//!
//! - [`config`]: TOML + environment configuration with validation.
//! - [`admin`]: admin Unix socket (length-prefixed CBOR, SO_PEERCRED auth).
//! - [`daemon`]: the run loop (shutdown, SIGHUP reload hook, sd-notify).
//! - [`diagnostics`]: `doctor` facts and their pure evaluation into checks.
//! - [`logging`]: journald-friendly tracing setup.
//! - [`security`]: persisted security state, two-phase verification, admin operations, audit.
//! - [`vehicle`]: DBC + VSS model and the executor/telemetry views of it.
//! - [`runtime`]: the I/O shell: CAN reader, command verification worker, core loop, outbox.
//! - [`simbus`]: simulated vehicle buses (in-process demo car, TCP virtual bus).

pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod diagnostics;
pub mod error;
pub mod failpoint;
pub mod logging;
pub mod runtime;
pub mod security;
pub mod simbus;
pub mod vehicle;

pub use config::Config;
pub use daemon::{Daemon, DaemonEvent};
pub use error::DaemonError;
