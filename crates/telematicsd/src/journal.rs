//! The durable form of the core's decisions: command journal entries (`cmd/<id>`), the
//! remote-start run timer (`exec/run_timer`) and the last SecOC freshness value per message
//! (`secoc/freshness/<message>`) in the store's key/value area, and the translation of a core
//! [`Commit`] into one store [`Batch`] (journal + outbox + run timer + freshness in one
//! transaction).
//!
//! An entry is the serde form of the one result record ([`CommandResult`], see its docs) plus
//! the legacy `published` flag. Journals written before results were committed together with
//! their entry carry that flag; an entry with `published = false` (a crash between the two old
//! writes) is restored as [`Restored::unpublished`] and re-published once. New entries are
//! written with `published = true` and the same keys as before (`state`, `reason`, `detail`,
//! `at`; the added `command_id` is ignored by an older daemon), so it reads them as it always
//! did. The id in the key is authoritative (entries older than the stored id lack it).

use serde::{Deserialize, Serialize};
use telematics_security::CommandId;
use telematics_store::{Batch, Store};
use telematics_telemetry::CommandResult;

use crate::core::{Commit, Restored, RunTimerChange};
use crate::error::DaemonError;

/// KV prefix of the command journal.
pub const JOURNAL_PREFIX: &str = "cmd/";
/// KV key of the active remote-start run timer.
pub const RUN_TIMER_KEY: &str = "exec/run_timer";
/// Prefix of the last SecOC freshness value used per DBC message (`secoc/freshness/<message>`,
/// 8 bytes big-endian).
pub const SECOC_FRESHNESS_PREFIX: &str = "secoc/freshness/";

/// A journal entry: the result record and the legacy `published` flag.
#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    result: CommandResult,
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

fn cbor<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, DaemonError> {
    let mut buf = Vec::new();
    ciborium::into_writer(v, &mut buf).map_err(|e| DaemonError::Journal(format!("{what}: {e}")))?;
    Ok(buf)
}

fn encode_entry(rec: &CommandResult) -> Result<Vec<u8>, DaemonError> {
    cbor(
        "journal entry",
        &Entry {
            result: rec.clone(),
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
        b.puts
            .push((key(CommandId(rec.command_id)), encode_entry(rec)?));
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
    for (message, fv) in &commit.secoc_freshness {
        b.puts.push((
            format!("{SECOC_FRESHNESS_PREFIX}{message}"),
            fv.to_be_bytes().to_vec(),
        ));
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
            .zip(ciborium::from_reader::<Entry, _>(bytes.as_slice()).ok());
        let Some((id, Entry { result, published })) = parsed else {
            tracing::warn!(key = k, "unreadable journal entry skipped");
            continue;
        };
        entries.push((
            CommandResult {
                command_id: id,
                ..result
            },
            published,
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
    // Fail closed: a freshness value that cannot be read could be reused.
    let mut secoc_freshness = Vec::new();
    for k in store.keys_with_prefix(SECOC_FRESHNESS_PREFIX)? {
        let value = store
            .get(&k)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| {
                DaemonError::Journal(format!("{k}: unreadable SecOC freshness value"))
            })?;
        secoc_freshness.push((
            k[SECOC_FRESHNESS_PREFIX.len()..].to_string(),
            u64::from_be_bytes(value),
        ));
    }
    Ok(Restored {
        journal: entries.into_iter().map(|(r, _)| r).collect(),
        unpublished,
        run_timer,
        secoc_freshness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CommitId;
    use ciborium::Value;
    use telematics_telemetry::ResultState;

    fn rec(i: u8, state: ResultState) -> CommandResult {
        CommandResult {
            command_id: [i; 16],
            state,
            reason_code: Some("door_open".into()),
            detail: Some("x".into()),
            at: 1_000 + u64::from(i),
            retry_after_s: None,
        }
    }

    #[test]
    fn a_commit_round_trips_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb")).expect("store");
        let commit = Commit {
            id: CommitId(1),
            journal: vec![rec(2, ResultState::Rejected), rec(1, ResultState::Accepted)],
            forget: vec![],
            outbox: vec![],
            run_timer: Some(RunTimerChange::Set(CommandId([1; 16]), 9_000)),
            secoc_freshness: vec![("TCU_BodyCommand".into(), 41)],
        };
        store
            .commit(&batch(&commit).expect("batch"))
            .expect("commit");
        let r = load(&store).expect("load");
        assert_eq!(
            r.journal,
            vec![rec(1, ResultState::Accepted), rec(2, ResultState::Rejected)]
        );
        assert!(r.unpublished.is_empty());
        assert_eq!(r.run_timer, Some((CommandId([1; 16]), 9_000)));
        assert_eq!(r.secoc_freshness, vec![("TCU_BodyCommand".into(), 41)]);
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
        assert_eq!(r.journal, vec![rec(2, ResultState::Rejected)]);
        assert_eq!(r.run_timer, None);
        assert_eq!(
            r.secoc_freshness,
            vec![("TCU_BodyCommand".into(), 41)],
            "kept by later commits"
        );
        // A damaged value fails closed: it could otherwise be reused.
        store
            .commit(&Batch {
                puts: vec![(
                    format!("{SECOC_FRESHNESS_PREFIX}TCU_BodyCommand"),
                    vec![1, 2],
                )],
                ..Batch::default()
            })
            .expect("commit");
        assert_eq!(
            load(&store).expect_err("damaged").code(),
            "journal.encoding"
        );
    }

    /// An entry exactly as the previous format wrote it (a serde struct `state`, `reason`,
    /// `detail`, `at`, `published`: a definite map, nulls for absent values, no id).
    fn legacy_entry(state: &str, reason: Option<&str>, at: u64, published: bool) -> Vec<u8> {
        let t = |s: &str| Value::Text(s.into());
        let v = Value::Map(vec![
            (t("state"), t(state)),
            (t("reason"), reason.map_or(Value::Null, t)),
            (t("detail"), Value::Null),
            (t("at"), Value::Integer(at.into())),
            (t("published"), Value::Bool(published)),
        ]);
        cbor("legacy", &v).expect("enc")
    }

    #[test]
    fn legacy_unpublished_entries_are_restored_for_re_publishing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb")).expect("store");
        for (i, state, reason, published) in [
            (1, "executed", None, true),
            (2, "rejected", Some("door_open"), false),
            (3, "accepted", None, false),
        ] {
            let old = legacy_entry(state, reason, 1_000 + u64::from(i), published);
            store.put(&key(CommandId([i; 16])), &old).expect("put");
        }
        let r = load(&store).expect("load");
        assert_eq!(r.journal.len(), 3);
        assert_eq!(
            r.unpublished,
            vec![CommandResult {
                command_id: [2; 16],
                state: ResultState::Rejected,
                reason_code: Some("door_open".into()),
                detail: None,
                at: 1_002,
                retry_after_s: None,
            }],
            "the old entry loads whole, its id from the key"
        );
        assert_eq!(r.journal[2].state, ResultState::Accepted);
    }

    /// New entries keep the old keys, so a daemon of the previous format still reads them.
    #[test]
    fn new_entries_keep_the_previous_keys() {
        let bytes = encode_entry(&rec(4, ResultState::Failed)).expect("enc");
        let v: Value = ciborium::from_reader(bytes.as_slice()).expect("cbor");
        let Value::Map(m) = v else {
            panic!("an entry is a map")
        };
        let keys: Vec<&str> = m.iter().filter_map(|(k, _)| k.as_text()).collect();
        for k in ["state", "reason", "detail", "at", "published"] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        assert!(m.contains(&(Value::Text("published".into()), Value::Bool(true))));
        assert!(m.contains(&(Value::Text("state".into()), Value::Text("failed".into()))));
    }
}
