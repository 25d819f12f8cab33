//! The durable form of the core's decisions: command journal entries (`cmd/<id>`) and the
//! remote-start run timer (`exec/run_timer`) in the store's key/value area, and the
//! translation of a core [`Commit`] into one store [`Batch`] (journal + outbox + run timer in
//! one transaction).
//!
//! Journals written before results were committed together with their entry carry a
//! `published` flag; an entry with `published = false` (a crash between the two old writes)
//! is restored as [`Restored::unpublished`] and re-published once. New entries are written
//! with `published = true`, so an older daemon reads them as it always did.

use serde::{Deserialize, Serialize};
use telematics_exec::{CommandState, ResultRecord, reason_code_from_str};
use telematics_security::CommandId;
use telematics_store::{Batch, Store};

use crate::core::{Commit, Restored, RunTimerChange};
use crate::error::DaemonError;

/// KV prefix of the command journal.
pub const JOURNAL_PREFIX: &str = "cmd/";
/// KV key of the active remote-start run timer.
pub const RUN_TIMER_KEY: &str = "exec/run_timer";

#[derive(Serialize, Deserialize)]
struct JournalRec {
    state: String,
    reason: Option<String>,
    detail: Option<String>,
    at: u64,
    /// Legacy (see the module docs); records older than the flag count as published.
    #[serde(default = "published_default")]
    published: bool,
}

fn published_default() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct RunTimerRec {
    id: [u8; 16],
    deadline_ms: u64,
}

fn key(id: CommandId) -> String {
    format!("{JOURNAL_PREFIX}{}", hex::encode(id.0))
}

/// The state journaled under its stable name ([`CommandState::as_str`], the one mapping).
fn state_from(s: &str) -> Option<CommandState> {
    [
        CommandState::Accepted,
        CommandState::Executed,
        CommandState::Failed,
        CommandState::Rejected,
    ]
    .into_iter()
    .find(|c| c.as_str() == s)
}

fn cbor<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, DaemonError> {
    let mut buf = Vec::new();
    ciborium::into_writer(v, &mut buf).map_err(|e| DaemonError::Journal(format!("{what}: {e}")))?;
    Ok(buf)
}

fn encode_entry(rec: &ResultRecord) -> Result<Vec<u8>, DaemonError> {
    cbor(
        "journal entry",
        &JournalRec {
            state: rec.state.as_str().to_string(),
            reason: rec.reason_code.map(str::to_string),
            detail: rec.detail.clone(),
            at: rec.at,
            published: true,
        },
    )
}

/// The store transaction of one core commit.
pub fn batch(commit: &Commit) -> Result<Batch, DaemonError> {
    let mut b = Batch {
        outbox: commit.outbox.clone(),
        ..Batch::default()
    };
    for rec in &commit.journal {
        b.puts.push((key(rec.command_id), encode_entry(rec)?));
    }
    b.deletes.extend(commit.forget.iter().map(|id| key(*id)));
    match commit.run_timer {
        Some(RunTimerChange::Set(id, deadline_ms)) => b.puts.push((
            RUN_TIMER_KEY.to_string(),
            cbor(
                "run timer",
                &RunTimerRec {
                    id: id.0,
                    deadline_ms,
                },
            )?,
        )),
        Some(RunTimerChange::Clear) => b.deletes.push(RUN_TIMER_KEY.to_string()),
        None => {}
    }
    Ok(b)
}

/// Reads the journal (oldest first) and the run timer. Unreadable entries are skipped with a
/// warning (a damaged entry must not keep the car from starting; its id is then unknown).
pub fn load(store: &Store) -> Result<Restored, DaemonError> {
    let mut entries = Vec::new();
    for k in store.keys_with_prefix(JOURNAL_PREFIX)? {
        let Some(bytes) = store.get(&k)? else {
            continue;
        };
        let parsed = hex::decode(&k[JOURNAL_PREFIX.len()..])
            .ok()
            .and_then(|id| <[u8; 16]>::try_from(id.as_slice()).ok())
            .zip(ciborium::from_reader::<JournalRec, _>(bytes.as_slice()).ok());
        let Some((id, rec)) = parsed else {
            tracing::warn!(key = k, "unreadable journal entry skipped");
            continue;
        };
        let Some(state) = state_from(&rec.state) else {
            tracing::warn!(
                key = k,
                state = rec.state,
                "journal entry with an unknown state skipped"
            );
            continue;
        };
        entries.push((
            ResultRecord {
                command_id: CommandId(id),
                state,
                reason_code: rec.reason.as_deref().and_then(reason_code_from_str),
                detail: rec.detail,
                at: rec.at,
            },
            rec.published,
        ));
    }
    entries.sort_by_key(|(r, _)| r.at);
    let unpublished = entries
        .iter()
        .filter(|(r, published)| r.state.is_terminal() && !published)
        .map(|(r, _)| r.clone())
        .collect();
    let run_timer = match store.get(RUN_TIMER_KEY)? {
        Some(b) => match ciborium::from_reader::<RunTimerRec, _>(b.as_slice()) {
            Ok(rt) => Some((CommandId(rt.id), rt.deadline_ms)),
            Err(e) => {
                // Fail safe rather than closed: without it a remote start would run on; the
                // executor stops an engine it finds running without a timer at the next start.
                tracing::error!(code = "journal.encoding", error = %e, "run timer unreadable");
                None
            }
        },
        None => None,
    };
    Ok(Restored {
        journal: entries.into_iter().map(|(r, _)| r).collect(),
        unpublished,
        run_timer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CommitId;

    fn rec(i: u8, state: CommandState) -> ResultRecord {
        ResultRecord {
            command_id: CommandId([i; 16]),
            state,
            reason_code: Some("door_open"),
            detail: Some("x".into()),
            at: 1_000 + u64::from(i),
        }
    }

    #[test]
    fn a_commit_round_trips_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb")).expect("store");
        let commit = Commit {
            id: CommitId(1),
            journal: vec![
                rec(2, CommandState::Rejected),
                rec(1, CommandState::Accepted),
            ],
            forget: vec![],
            outbox: vec![],
            run_timer: Some(RunTimerChange::Set(CommandId([1; 16]), 9_000)),
        };
        store
            .commit(&batch(&commit).expect("batch"))
            .expect("commit");
        let r = load(&store).expect("load");
        assert_eq!(
            r.journal,
            vec![
                rec(1, CommandState::Accepted),
                rec(2, CommandState::Rejected)
            ]
        );
        assert!(r.unpublished.is_empty());
        assert_eq!(r.run_timer, Some((CommandId([1; 16]), 9_000)));
        let forget = Commit {
            id: CommitId(2),
            forget: vec![CommandId([1; 16])],
            run_timer: Some(RunTimerChange::Clear),
            ..Commit::default()
        };
        store
            .commit(&batch(&forget).expect("batch"))
            .expect("commit");
        let r = load(&store).expect("load");
        assert_eq!(r.journal, vec![rec(2, CommandState::Rejected)]);
        assert_eq!(r.run_timer, None);
    }

    #[test]
    fn legacy_unpublished_entries_are_restored_for_re_publishing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb")).expect("store");
        for (i, state, published) in [
            (1, "executed", true),
            (2, "executed", false),
            (3, "accepted", false),
        ] {
            let old = JournalRec {
                state: state.into(),
                reason: None,
                detail: None,
                at: 1_000 + u64::from(i),
                published,
            };
            store
                .put(&key(CommandId([i; 16])), &cbor("t", &old).expect("enc"))
                .expect("put");
        }
        let r = load(&store).expect("load");
        assert_eq!(r.journal.len(), 3);
        assert_eq!(r.unpublished.len(), 1);
        assert_eq!(r.unpublished[0].command_id, CommandId([2; 16]));
    }
}
