//! Owner / back-end / dealer tool for telematicsd, as a library so that end-to-end tests can
//! run the CLI ([`main_entry`]) and call the remote-command functions in-process.
//!
//! - [`ca`]: the back end's CA for in-band certificate renewal (`ca sign-csr`, `ca respond`);
//! - [`cli`]: clap types and [`main_entry`] (exit codes in `--help`);
//! - [`remote`]: authenticated remote commands over mTLS MQTT ([`remote::send_command`]);
//! - [`watch`]: decoded telemetry / alerts / results / status;
//! - [`devices`]: the paired-device list and device revocation (`--remote`: over MQTT);
//! - [`doctor`]: troubleshooting checks of the local daemon;
//! - [`output`]: output conventions (human times, `--json`, errors on stderr);
//! - [`keys`]: back-end Ed25519 keys, reset authorizations and their `TMRA1:` text form;
//! - [`counter`]: the crash-safe per-credential command counter;
//! - [`mqtt`]: the shared broker connection options;
//! - `sim` (feature `sim`): the body-controller simulator;
//! - `demo` (feature `demo`): the whole system on one machine.
//! - `ca` (feature `ca`, also in `demo`): the back end's vehicle-certificate CA (rcgen).
//!
//! Release builds have no feature: the shipped tool carries no simulator, no test PKI, no CA
//! signer and no in-process daemon.
//!
//! Security codes are never accepted as command-line arguments.

#[cfg(feature = "ca")]
pub mod ca;
pub mod cli;
pub mod counter;
#[cfg(feature = "demo")]
pub mod demo;
pub mod devices;
pub mod doctor;
mod error;
pub mod keys;
pub mod mqtt;
pub mod output;
pub mod remote;
#[cfg(feature = "sim")]
pub mod sim;
pub mod watch;

pub use cli::main_entry;
pub use error::CtlError;
pub use keys::{reset_auth_from_text, reset_auth_to_text};
pub use mqtt::MqttConn;
pub use remote::{CommandOutcome, CommandSpec, send_command};
