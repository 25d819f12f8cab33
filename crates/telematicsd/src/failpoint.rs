//! Fault injection for the fault suite (tests/it): crash points (`kill -9 at every step of a
//! command`) and failing durable writes (`no effect after a failed commit`).
//!
//! With the cargo feature `failpoints`:
//! * [`hit`] aborts the process (no unwinding, no destructors: the same as SIGKILL for durable
//!   state) when the environment variable [`ENV_VAR`] names the [`Crash`] point;
//! * [`write_fails`] returns `true` for the [`Write`] named by [`WRITE_ENV_VAR`], and the caller
//!   treats that write as failed (as a full disk would make it).
//!
//! Without the feature both compile to nothing; release builds of the shipped binary
//! (`cargo build --release -p telematicsd`) never enable it.

/// The environment variable naming the crash point to abort at (ignored by the config loader's
/// `TELEMATICSD_<SECTION>__<KEY>` overrides).
pub const ENV_VAR: &str = "TELEMATICSD_FAILPOINT";
/// The environment variable naming the durable write that fails ([`Write::name`]).
pub const WRITE_ENV_VAR: &str = "TELEMATICSD_FAIL_WRITE";

/// Crash points, in the order a command passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Failure pre-counted and counter consumed, code not checked.
    VerifyAfterBeginPersist,
    /// Verified, not yet handed to the executor.
    VerifyAfterFinishPersist,
    /// Journaled `accepted`, actuation not sent.
    ExecAfterJournalAccepted,
    /// Frame on the bus, confirmation not seen.
    ExecAfterActuationSent,
    /// Terminal result journaled, not yet in the outbox.
    ExecAfterJournalTerminal,
    /// In-car pairing: the wrong-code pre-count is persisted, PBKDF2 not run yet (not a step
    /// of a remote command, so not in [`Crash::ALL`]).
    PairAfterBeginPersist,
    /// Certificate renewal: the new key is on disk, no CSR published yet.
    RenewAfterKeyGenerated,
    /// Certificate renewal: the CSR is in the outbox.
    RenewAfterCsrPublished,
    /// Certificate renewal: the back end's certificate is checked and stored, not proven.
    RenewAfterCertStored,
    /// Certificate renewal: the probe connection succeeded, nothing committed.
    RenewAfterProbe,
    /// Certificate renewal: the commit record is renamed, the link not yet switched.
    RenewAfterCommit,
}

impl Crash {
    /// Every crash point of a remote command, in command order.
    pub const ALL: [Crash; 5] = [
        Crash::VerifyAfterBeginPersist,
        Crash::VerifyAfterFinishPersist,
        Crash::ExecAfterJournalAccepted,
        Crash::ExecAfterActuationSent,
        Crash::ExecAfterJournalTerminal,
    ];

    /// Every crash point of a certificate renewal, in renewal order.
    pub const RENEWAL: [Crash; 5] = [
        Crash::RenewAfterKeyGenerated,
        Crash::RenewAfterCsrPublished,
        Crash::RenewAfterCertStored,
        Crash::RenewAfterProbe,
        Crash::RenewAfterCommit,
    ];

    /// The name given in [`ENV_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            Crash::VerifyAfterBeginPersist => "verify.after_begin_persist",
            Crash::VerifyAfterFinishPersist => "verify.after_finish_persist",
            Crash::ExecAfterJournalAccepted => "exec.after_journal_accepted",
            Crash::ExecAfterActuationSent => "exec.after_actuation_sent",
            Crash::ExecAfterJournalTerminal => "exec.after_journal_terminal",
            Crash::PairAfterBeginPersist => "pair.after_begin_persist",
            Crash::RenewAfterKeyGenerated => "renew.after_key_generated",
            Crash::RenewAfterCsrPublished => "renew.after_csr_published",
            Crash::RenewAfterCertStored => "renew.after_cert_stored",
            Crash::RenewAfterProbe => "renew.after_probe",
            Crash::RenewAfterCommit => "renew.after_commit",
        }
    }
}

/// The crash point names of a remote command (see [`Crash::name`], [`Crash::ALL`]).
pub const POINTS: &[&str] = &[
    "verify.after_begin_persist",
    "verify.after_finish_persist",
    "exec.after_journal_accepted",
    "exec.after_actuation_sent",
    "exec.after_journal_terminal",
];

/// The crash point names of a certificate renewal (see [`Crash::RENEWAL`]).
pub const RENEWAL_POINTS: &[&str] = &[
    "renew.after_key_generated",
    "renew.after_csr_published",
    "renew.after_cert_stored",
    "renew.after_probe",
    "renew.after_commit",
];

/// Durable writes that [`write_fails`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// The persisted security state (both verification phases, admin operations).
    SecurityState,
    /// A command journal entry (`accepted` before actuation, the terminal result).
    Journal,
    /// The remote-start run timer.
    RunTimer,
}

impl Write {
    /// Every injectable write.
    pub const ALL: [Write; 3] = [Write::SecurityState, Write::Journal, Write::RunTimer];

    /// The name given in [`WRITE_ENV_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            Write::SecurityState => "security_state",
            Write::Journal => "journal",
            Write::RunTimer => "run_timer",
        }
    }
}

/// Aborts the process if the `failpoints` feature is on and [`ENV_VAR`] names `point`.
#[inline]
pub fn hit(point: Crash) {
    #[cfg(feature = "failpoints")]
    if std::env::var(ENV_VAR).is_ok_and(|v| v == point.name()) {
        eprintln!("telematicsd: failpoint {} hit; aborting", point.name());
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = point;
}

/// `true` if the `failpoints` feature is on and [`WRITE_ENV_VAR`] names `write`: the caller
/// must fail that write.
#[inline]
pub fn write_fails(write: Write) -> bool {
    #[cfg(feature = "failpoints")]
    if std::env::var(WRITE_ENV_VAR).is_ok_and(|v| v == write.name()) {
        eprintln!(
            "telematicsd: injected failure of the {} write",
            write.name()
        );
        return true;
    }
    let _ = write;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_points_lists_every_crash() {
        let names: Vec<_> = Crash::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, POINTS);
        let renewal: Vec<_> = Crash::RENEWAL.iter().map(|c| c.name()).collect();
        assert_eq!(renewal, RENEWAL_POINTS);
        let writes: std::collections::BTreeSet<_> = Write::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(writes.len(), Write::ALL.len());
    }
}
