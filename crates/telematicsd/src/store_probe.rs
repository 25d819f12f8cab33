//! Start-up probe of the store file in a child process: owns keeping a database-engine crash on
//! a damaged file a `store.corrupted` error when the shipped binary aborts on panic.
//!
//! redb 4.6 still reaches internal assertions on some damaged files (upstream cberner/redb#1303,
//! #1333). The shipped profile is `panic = "abort"` (the unwind tables cost ~0.9 MB on aarch64,
//! BENCHMARKS.md), so [`telematics_store::Store::open`]'s `catch_unwind` cannot contain such a
//! panic in the daemon itself. Before `telematicsd run` opens the store, [`probe`] runs the same
//! binary (`/proc/self/exe`) with the hidden subcommand [`SUBCOMMAND`]: the child opens the store
//! once and exits. A child that ends on a signal (the abort of a redb panic) or reports the file
//! as corrupted makes the daemon fail with `store.corrupted`, as before; any other result lets
//! the in-process open run and report for itself (already open, permissions).
//!
//! The child's panic hook aborts silently whatever the profile ([`child_main`]), so the test
//! builds (`panic = "unwind"`) go through the same path as the shipped binary.

use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use telematics_store::{Store, StoreError};

use crate::DaemonError;

/// The hidden subcommand of `telematicsd` that runs the child side of the probe.
pub const SUBCOMMAND: &str = "__probe-store";

/// Child exit code: the store opened (or was created) and closed again.
const EXIT_OPENED: u8 = 0;
/// Child exit code: the store reported the file as corrupted (detail on stdout).
const EXIT_CORRUPTED: u8 = 3;
/// Child exit code: another store error; the in-process open reports it.
const EXIT_OTHER: u8 = 4;

/// The child side: opens the store at `path` and exits with what it found. A panic aborts
/// (no message, no unwinding), in every build profile.
pub fn child_main(path: &Path) -> ExitCode {
    std::panic::set_hook(Box::new(|_| std::process::abort()));
    match Store::open(path) {
        Ok(_) => ExitCode::from(EXIT_OPENED),
        Err(StoreError::Corrupted { detail, .. }) => {
            println!("{detail}");
            ExitCode::from(EXIT_CORRUPTED)
        }
        Err(_) => ExitCode::from(EXIT_OTHER),
    }
}

/// Probes the store at `path` in a child process of this binary. A missing or empty file is a
/// new store (nothing to crash on) and is not probed. Fails with `store.corrupted` when the
/// child crashes or reports the file as corrupted, and with `io` when the child cannot be run
/// (fail closed).
pub fn probe(path: &Path) -> Result<(), DaemonError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(()),
    }
    let out = Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .arg(path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()?;
    classify(path, out.status, &out.stdout)
}

/// What the child's exit means for the daemon (pure; [`probe`] minus the process).
pub fn classify(path: &Path, status: ExitStatus, stdout: &[u8]) -> Result<(), DaemonError> {
    use std::os::unix::process::ExitStatusExt;
    let corrupted = |detail: String| {
        Err(DaemonError::Store(StoreError::Corrupted {
            path: path.display().to_string(),
            detail,
        }))
    };
    if let Some(signal) = status.signal() {
        return corrupted(format!(
            "database engine crashed on the file (signal {signal}, start-up probe)"
        ));
    }
    match status.code() {
        Some(c) if c == i32::from(EXIT_CORRUPTED) => {
            corrupted(String::from_utf8_lossy(stdout).trim_end().to_string())
        }
        // Opened, or another store error that the in-process open reports with its own code.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status_of(script: &str) -> ExitStatus {
        Command::new("sh").args(["-c", script]).status().unwrap()
    }

    #[test]
    fn a_crashed_child_is_a_corrupted_store() {
        let p = Path::new("/var/lib/telematicsd/outbox.redb");
        let e = classify(p, status_of("kill -ABRT $$"), b"").unwrap_err();
        assert_eq!(e.code(), "store.corrupted");
        assert!(e.to_string().contains("signal 6"), "{e}");
        assert!(e.to_string().contains("outbox.redb"), "{e}");
        let e = classify(p, status_of("exit 3"), b"invalid header\n").unwrap_err();
        assert_eq!(e.code(), "store.corrupted");
        assert!(e.to_string().ends_with("invalid header"), "{e}");
        classify(p, status_of("exit 0"), b"").unwrap();
        // Already open, permissions: the in-process open reports them with their own codes.
        classify(p, status_of("exit 4"), b"").unwrap();
    }
}
