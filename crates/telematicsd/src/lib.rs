//! telematicsd: the in-vehicle telematics daemon (library part, so tests
//! can run the daemon in-process).
//!
//! - [`config`]: TOML + environment configuration with validation.
//! - [`admin`]: admin Unix socket server (SO_PEERCRED auth); the protocol is `telematics-admin`.
//! - [`daemon`]: the run loop (shutdown, SIGHUP reload hook, sd-notify).
//! - [`diagnostics`]: `doctor` facts and their pure evaluation into checks.
//! - [`logging`]: journald-friendly tracing setup.
//! - [`security`]: persisted security state, two-phase verification, admin operations, audit.
//! - [`vehicle`]: DBC + VSS model and the executor/telemetry views of it.
//! - [`core`]: `VehicleCore`, the sans-IO decisions of the command and telemetry paths.
//! - [`journal`]: the durable form of the core's commits (journal, run timer, one batch).
//! - [`runtime`]: the I/O shell: CAN reader, verification worker, store worker, actuator,
//!   and the loop that feeds the core and carries out its effects.
//! - [`simbus`]: the TCP virtual bus, and (feature `sim`) the in-process simulated demo car.
//! - [`secoc`]: the SecOC key of authenticated actuation frames (`[can] secoc_key`).
//! - [`store_probe`]: the start-up store probe in a child process (redb crash → `store.corrupted`).

pub mod admin;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod diagnostics;
pub mod error;
pub mod failpoint;
pub mod identity;
pub mod journal;
pub mod logging;
pub mod runtime;
pub mod secoc;
pub mod security;
pub mod simbus;
pub mod store_probe;
pub mod vehicle;

pub use config::Config;
pub use daemon::{Daemon, DaemonEvent};
pub use error::DaemonError;
