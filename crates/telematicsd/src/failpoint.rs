//! Crash points for fault-injection tests (`kill -9 at every step of a command`).
//!
//! With the cargo feature `failpoints`, [`hit`] aborts the process (no unwinding, no destructors:
//! the same as SIGKILL for durable state) when the environment variable
//! `TELEMATICSD_FAILPOINT` names the point. Without the feature it compiles to nothing; release
//! builds of the shipped binary (`cargo build --release -p telematicsd`) never enable it.
//!
//! Points, in the order a command passes them:
//! `verify.after_begin_persist` (failure pre-counted and counter consumed, code not checked),
//! `verify.after_finish_persist` (verified, not yet handed to the executor),
//! `exec.after_journal_accepted` (journaled `accepted`, actuation not sent),
//! `exec.after_actuation_sent` (frame on the bus, confirmation not seen),
//! `exec.after_journal_terminal` (terminal result journaled, not yet in the outbox).

/// The environment variable naming the failpoint to abort at (ignored by the config loader's
/// `TELEMATICSD_<SECTION>__<KEY>` overrides).
pub const ENV_VAR: &str = "TELEMATICSD_FAILPOINT";

/// Every failpoint name.
pub const POINTS: &[&str] = &[
    "verify.after_begin_persist",
    "verify.after_finish_persist",
    "exec.after_journal_accepted",
    "exec.after_actuation_sent",
    "exec.after_journal_terminal",
];

/// Aborts the process if the `failpoints` feature is on and `TELEMATICSD_FAILPOINT == name`.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var(ENV_VAR).is_ok_and(|v| v == name) {
        eprintln!("telematicsd: failpoint {name} hit; aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
