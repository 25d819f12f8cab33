//! The store worker: carries out the core's commits, one store transaction each, in order, on
//! its own thread (the fsync never runs on the core task), and reports each outcome back.
//! After the first failure it writes nothing more (redb refuses later transactions anyway,
//! and a later decision assumed the earlier one durable).
//!
//! The `failpoints` feature hooks in here: an injected failure of the journal or run-timer
//! write fails the whole commit that contains it, and the crash points after a journaled
//! `accepted` or terminal entry abort right after the commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use telematics_link::LinkHandle;
use telematics_store::Store;
use tokio::sync::mpsc;

use super::Health;
use crate::core::{Commit, CommitId};
use crate::error::DaemonError;
use crate::failpoint::{self, Crash, Write};

/// The outcome of one commit, for `VehicleCore::handle_commit`.
pub type Outcome = (CommitId, Result<(), String>);

/// Writes one commit (journal entries, outbox messages, run timer) in one transaction.
pub fn commit(store: &Store, c: &Commit) -> Result<usize, DaemonError> {
    if !c.journal.is_empty() && failpoint::write_fails(Write::Journal) {
        return Err(DaemonError::StoreFailed("injected: command journal".into()));
    }
    if c.run_timer.is_some() && failpoint::write_fails(Write::RunTimer) {
        return Err(DaemonError::StoreFailed("injected: run timer".into()));
    }
    let batch = crate::journal::batch(c)?;
    let outcomes = store.commit(&batch)?;
    Ok(outcomes.iter().filter(|o| o.seq.is_some()).count())
}

/// Starts the worker thread: commits from `rx`, outcomes to `tx`, the link woken after each
/// commit that added outbox messages. Ends when `rx` closes, after every commit handed over
/// was written (also those still queued when the shell loop stopped).
pub fn spawn(
    store: Store,
    link: LinkHandle,
    health: Arc<Health>,
    mut rx: mpsc::UnboundedReceiver<Commit>,
    tx: mpsc::UnboundedSender<Outcome>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("telematicsd-store".into())
        .spawn(move || {
            let mut failed = false;
            while let Some(c) = rx.blocking_recv() {
                if failed {
                    continue;
                }
                let r = commit(&store, &c);
                match &r {
                    Ok(enqueued) => {
                        if !c.outbox.is_empty() {
                            health
                                .enqueued
                                .fetch_add(*enqueued as u64, Ordering::Relaxed);
                            link.outbox_changed();
                        }
                        if c.journals_accepted() {
                            failpoint::hit(Crash::ExecAfterJournalAccepted);
                        }
                        if c.journals_terminal() {
                            failpoint::hit(Crash::ExecAfterJournalTerminal);
                        }
                    }
                    Err(e) => {
                        failed = true;
                        if !c.outbox.is_empty() {
                            health.enqueue_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                error = %e,
                                messages = c.outbox.len(),
                                "outbox write failed; the decision is not durable"
                            );
                        }
                        health.store_failed("commit", e);
                    }
                }
                // After shutdown nobody listens; the remaining commits are still written.
                let _ = tx.send((c.id, r.map(|_| ()).map_err(|e| e.to_string())));
            }
        })
}
