//! telematicsd: the in-vehicle telematics daemon (library part, so tests
//! can run the daemon in-process).
//!
//! - [`config`]: TOML + environment configuration with validation.
//! - [`admin`]: admin Unix socket (length-prefixed CBOR, SO_PEERCRED auth).
//! - [`daemon`]: the run loop (shutdown, SIGHUP reload hook, sd-notify).
//! - [`logging`]: journald-friendly tracing setup.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod error;
pub mod logging;

pub use config::Config;
pub use daemon::{Daemon, DaemonEvent};
pub use error::DaemonError;
