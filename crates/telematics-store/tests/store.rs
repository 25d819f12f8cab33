//! Integration tests of the store: restart, drop policy (examples + proptest model), corruption.
#![allow(clippy::unwrap_used, missing_docs)] // test code: a failed unwrap is a failed test

use proptest::prelude::*;
use telematics_store::{Batch, OutboxConfig, OutboxMessage, Priority, Qos, Store, StoreError};

fn msg(p: Priority, payload: &[u8]) -> OutboxMessage {
    OutboxMessage::new("t", payload.to_vec(), p)
}

fn small(max_messages: u64) -> OutboxConfig {
    OutboxConfig {
        max_messages,
        max_bytes: 1 << 30,
    }
}

#[test]
fn kv_put_get_delete_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("db")).unwrap();
    assert_eq!(s.get("a").unwrap(), None);
    s.put("journal/2", b"x").unwrap();
    s.put("journal/1", b"y").unwrap();
    s.put("pairing", b"z").unwrap();
    s.put("pairing", b"zz").unwrap();
    assert_eq!(s.get("pairing").unwrap().as_deref(), Some(&b"zz"[..]));
    assert_eq!(
        s.keys_with_prefix("journal/").unwrap(),
        vec!["journal/1".to_string(), "journal/2".to_string()]
    );
    assert!(s.delete("journal/1").unwrap());
    assert!(!s.delete("journal/1").unwrap());
    assert_eq!(s.get("journal/1").unwrap(), None);
    assert_eq!(s.put("", b"").unwrap_err().code(), "store.bad_key");
    assert_eq!(s.get(&"k".repeat(300)).unwrap_err().code(), "store.bad_key");
}

#[test]
fn commit_writes_kv_and_outbox_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path).unwrap();
        s.put("timer", b"old").unwrap();
        let batch = Batch {
            puts: vec![("cmd/1".into(), b"executed".to_vec())],
            deletes: vec!["timer".into()],
            outbox: vec![msg(Priority::Result, b"r1"), msg(Priority::Result, b"r2")],
        };
        let out = s.commit(&batch).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.seq.is_some()));
        // A bad key refuses the whole batch before anything is written.
        let bad = Batch {
            puts: vec![
                ("cmd/2".into(), b"x".to_vec()),
                (String::new(), b"y".to_vec()),
            ],
            deletes: vec![],
            outbox: vec![msg(Priority::Result, b"r3")],
        };
        assert_eq!(s.commit(&bad).unwrap_err().code(), "store.bad_key");
        assert!(Batch::default().is_empty());
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.get("cmd/1").unwrap().as_deref(), Some(&b"executed"[..]));
    assert_eq!(s.get("cmd/2").unwrap(), None);
    assert_eq!(s.get("timer").unwrap(), None);
    let queued: Vec<_> = s
        .outbox()
        .peek(10)
        .unwrap()
        .into_iter()
        .map(|m| m.message.payload)
        .collect();
    assert_eq!(queued, vec![b"r1".to_vec(), b"r2".to_vec()]);
}

#[test]
fn restart_keeps_kv_outbox_sequence_and_drop_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open_with(&path, small(2)).unwrap();
        s.put("counter", &42u64.to_le_bytes()).unwrap();
        let o = s.outbox();
        let a = o
            .enqueue(&msg(Priority::Telemetry, b"1"))
            .unwrap()
            .seq
            .unwrap();
        let b = o.enqueue(&msg(Priority::Alert, b"2")).unwrap().seq.unwrap();
        let c = o.enqueue(&msg(Priority::Result, b"3")).unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(c.seq, Some(3));
        assert_eq!(c.evicted, vec![(1, Priority::Telemetry)]);
        // Dropped without graceful anything: the handle just goes away.
    }
    let s = Store::open_with(&path, small(2)).unwrap();
    assert_eq!(
        s.get("counter").unwrap(),
        Some(42u64.to_le_bytes().to_vec())
    );
    let o = s.outbox();
    let stats = o.stats().unwrap();
    assert_eq!(stats.len, 2);
    assert_eq!(stats.next_seq, 4);
    assert_eq!(stats.drops.telemetry, 1);
    assert_eq!(stats.bytes, 4);
    let seqs: Vec<u64> = o.peek(10).unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    assert!(o.ack(2).unwrap());
    assert!(!o.ack(2).unwrap());
    let d = o.enqueue(&msg(Priority::Telemetry, b"4")).unwrap();
    assert_eq!(d.seq, Some(4), "sequence resumes after restart");
    assert_eq!(o.peek_after(3, 10).unwrap()[0].seq, 4);
}

#[test]
fn message_fields_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("db")).unwrap();
    let m = OutboxMessage {
        topic: "vehicles/WBA1/status".into(),
        payload: vec![0xa1, 0x00, 0xff],
        qos: Qos::AtMostOnce,
        retain: true,
        priority: Priority::Status,
    };
    s.outbox().enqueue(&m).unwrap();
    assert_eq!(s.outbox().peek(1).unwrap()[0].message, m);
}

#[test]
fn incoming_lower_than_everything_is_the_one_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path().join("db"), small(2)).unwrap();
    let o = s.outbox();
    o.enqueue(&msg(Priority::Alert, b"a")).unwrap();
    o.enqueue(&msg(Priority::Result, b"r")).unwrap();
    let out = o.enqueue(&msg(Priority::Telemetry, b"t")).unwrap();
    assert_eq!(out.seq, None);
    assert!(out.evicted.is_empty());
    // Equal rank: the oldest stored one goes.
    let out = o.enqueue(&msg(Priority::Alert, b"a2")).unwrap();
    assert_eq!(out.evicted, vec![(1, Priority::Alert)]);
    let st = o.stats().unwrap();
    assert_eq!(st.drops.telemetry, 1);
    assert_eq!(st.drops.alert, 1);
    assert_eq!(st.len, 2);
}

#[test]
fn byte_limit_evicts_several_or_rejects_oversized() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_messages: 100,
        max_bytes: 10,
    };
    let s = Store::open_with(dir.path().join("db"), cfg).unwrap();
    let o = s.outbox();
    // each is 1 (topic) + 2 = 3 bytes
    for _ in 0..3 {
        o.enqueue(&msg(Priority::Telemetry, b"xx")).unwrap();
    }
    let out = o.enqueue(&msg(Priority::Alert, b"yyyyyy")).unwrap(); // 7 bytes
    assert_eq!(out.seq, Some(4));
    assert_eq!(out.evicted.len(), 2);
    assert!(o.stats().unwrap().bytes <= 10);
    let big = o.enqueue(&msg(Priority::Result, &[0; 10])).unwrap();
    assert_eq!(big.seq, None);
    assert_eq!(o.stats().unwrap().drops.result, 1);
}

#[test]
fn zero_capacity_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open_with(dir.path().join("db"), small(0)).unwrap_err();
    assert_eq!(e.code(), "store.bad_config");
}

fn expect_corrupted(r: Result<Store, StoreError>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.code(), "store.corrupted", "{what}: {e}"),
        Ok(_) => panic!("{what}: a damaged database must not open"),
    }
}

/// The bytes of a closed store file with key/value records and 300 outbox messages (many
/// pages; written in several transactions, as a daemon leaves it). Built once per test binary.
fn populated_file() -> &'static [u8] {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = Store::open(&path).unwrap();
            s.put("security/state", &[7u8; 600]).unwrap();
            for chunk in 0..10u32 {
                let batch: Vec<OutboxMessage> = (chunk * 30..chunk * 30 + 30)
                    .map(|i| msg(Priority::Telemetry, &i.to_le_bytes().repeat(30)))
                    .collect();
                s.outbox().enqueue_batch(&batch).unwrap();
            }
            s.outbox().ack(1).unwrap();
        }
        std::fs::read(&path).unwrap()
    })
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

// No catch_unwind anywhere (the store has none either): a redb panic fails these tests, and in
// the release profile (`panic = "abort"`) would abort the daemon.

#[test]
fn garbage_file_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    expect_corrupted(Store::open(&path), "0x5a x 8192");
    // The file is left untouched for forensics.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn random_bytes_file_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    for (seed, len) in [
        (1u64, 1usize),
        (2, 17),
        (3, 511),
        (4, 512),
        (5, 4096),
        (6, 8192),
        (7, 65_536),
        (8, 1 << 20),
    ] {
        let bytes = noise(seed, len);
        std::fs::write(&path, &bytes).unwrap();
        expect_corrupted(
            Store::open(&path),
            &format!("{len} random bytes (seed {seed})"),
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "file modified");
    }
}

#[test]
fn truncated_file_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let full = populated_file();
    let len = full.len();
    assert!(len > 16 * 1024, "fixture too small: {len}");
    // Inside the header, at and around page boundaries, and throughout the data.
    let mut cuts = vec![1, 9, 64, 100, 511, 512, 513, 1000, 4095, 4096, 4097, 8192];
    cuts.extend([
        len / 8,
        len / 4,
        len / 2,
        3 * len / 4,
        len - 4097,
        len - 4096,
        len - 512,
        len - 1,
    ]);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        std::fs::write(&path, &full[..cut]).unwrap();
        expect_corrupted(Store::open(&path), &format!("cut at {cut} of {len}"));
        assert_eq!(std::fs::read(&path).unwrap().len(), cut, "file modified");
    }
    // An empty file is a brand-new database for redb (the store then creates it); the intact
    // file still opens with its data.
    std::fs::write(&path, full).unwrap();
    let s = Store::open(&path).unwrap();
    assert_eq!(s.outbox().stats().unwrap().len, 299);
    assert_eq!(s.get("security/state").unwrap(), Some(vec![7u8; 600]));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn any_truncation_fails_closed(frac in 1u32..10_000) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let full = populated_file();
        let cut = (full.len() as u64 * u64::from(frac) / 10_000) as usize;
        prop_assume!(cut > 0 && cut < full.len());
        std::fs::write(&path, &full[..cut]).unwrap();
        let r = Store::open(&path);
        prop_assert!(matches!(&r, Err(e) if e.code() == "store.corrupted"), "cut at {}: {:?}", cut, r.err());
    }
}

#[test]
fn open_error_names_the_file() {
    let e = Store::open("/nonexistent-dir/x/db").unwrap_err();
    assert_eq!(e.code(), "store.open_failed");
    assert!(e.to_string().contains("/nonexistent-dir/x/db"));
}

// ---- property test against a simple model -------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Enq(u8, usize),
    AckFirst,
    AckSeq(u64),
}

fn prio(p: u8) -> Priority {
    Priority::ALL[usize::from(p % 4)]
}

/// Naive model: a Vec in sequence order; eviction scans for the minimum (rank, seq).
#[derive(Default)]
struct Model {
    items: Vec<(u64, Priority, u64)>,
    next: u64,
    drops: [u64; 4],
}

impl Model {
    fn enqueue(&mut self, cfg: OutboxConfig, p: Priority, size: u64) -> Option<u64> {
        let idx = |p: Priority| Priority::ALL.iter().position(|q| *q == p).unwrap();
        let mut trial = self.items.clone();
        let mut evicted = vec![];
        let ok = loop {
            let bytes: u64 = trial.iter().map(|i| i.2).sum();
            if size > cfg.max_bytes {
                break false;
            }
            if (trial.len() as u64) < cfg.max_messages && bytes + size <= cfg.max_bytes {
                break true;
            }
            let victim = trial
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| (i.1.rank(), i.0))
                .map(|(k, i)| (k, *i));
            match victim {
                Some((k, v)) if v.1.rank() <= p.rank() => {
                    trial.remove(k);
                    evicted.push(v);
                }
                _ => break false,
            }
        };
        if !ok {
            self.drops[idx(p)] += 1;
            return None;
        }
        for v in evicted {
            self.drops[idx(v.1)] += 1;
        }
        self.next += 1;
        trial.push((self.next, p, size));
        self.items = trial;
        Some(self.next)
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0usize..40).prop_map(|(p, n)| Op::Enq(p, n)),
        1 => Just(Op::AckFirst),
        1 => (1u64..60).prop_map(Op::AckSeq),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn drop_policy_matches_model(
        max_messages in 1u64..8,
        max_bytes in 1u64..120,
        ops in proptest::collection::vec(op(), 1..40),
        reopen_at in 0usize..40,
    ) {
        let cfg = OutboxConfig { max_messages, max_bytes };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut store = Store::open_with(&path, cfg).unwrap();
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            if i == reopen_at {
                drop(store);
                store = Store::open_with(&path, cfg).unwrap();
            }
            let o = store.outbox();
            match op {
                Op::Enq(p, n) => {
                    let m = msg(prio(*p), &vec![0u8; *n]);
                    let got = o.enqueue(&m).unwrap().seq;
                    let want = model.enqueue(cfg, m.priority, m.size());
                    prop_assert_eq!(got, want);
                }
                Op::AckFirst => {
                    let first = o.peek(1).unwrap().first().map(|m| m.seq);
                    prop_assert_eq!(first, model.items.first().map(|i| i.0));
                    if let Some(s) = first {
                        prop_assert!(o.ack(s).unwrap());
                        model.items.remove(0);
                    }
                }
                Op::AckSeq(s) => {
                    let present = model.items.iter().position(|i| i.0 == *s);
                    prop_assert_eq!(o.ack(*s).unwrap(), present.is_some());
                    if let Some(k) = present { model.items.remove(k); }
                }
            }
            let st = o.stats().unwrap();
            prop_assert!(st.len <= max_messages);
            prop_assert!(st.bytes <= max_bytes);
            prop_assert_eq!(st.bytes, model.items.iter().map(|i| i.2).sum::<u64>());
            prop_assert_eq!(
                [st.drops.telemetry, st.drops.status, st.drops.alert, st.drops.result],
                model.drops
            );
            let seqs: Vec<u64> = o.peek(100).unwrap().iter().map(|m| m.seq).collect();
            let want: Vec<u64> = model.items.iter().map(|i| i.0).collect();
            prop_assert_eq!(seqs, want);
        }
    }
}

/// A valid redb header followed by a damaged body: redb 4.6 panics inside its b-tree code on
/// such files (upstream redb#1303/#1333); `Store::open` must contain that and fail closed with
/// `store.corrupted`, not crash.
#[test]
fn valid_header_with_damaged_body_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let full = populated_file();
    for seed in 1..=8u64 {
        let mut bytes = full[..512].to_vec();
        bytes.extend(noise(seed, full.len() - 512));
        std::fs::write(&path, &bytes).unwrap();
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = Store::open(&path);
        std::panic::set_hook(quiet);
        expect_corrupted(r, &format!("header + noise (seed {seed})"));
    }
}

#[test]
fn an_alert_survives_any_pressure_of_telemetry_and_status() {
    // Security events go out at `Priority::Alert`, the top rank with results: under a full
    // outbox only messages of a lower rank are evicted for it, and a flood of lower ranks
    // never evicts it (the incoming lower message is the one dropped).
    assert_eq!(Priority::Alert.rank(), Priority::Result.rank());
    assert!(
        Priority::ALL
            .iter()
            .all(|p| p.rank() <= Priority::Alert.rank())
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path().join("db"), small(8)).unwrap();
    let o = s.outbox();
    for _ in 0..7 {
        o.enqueue(&msg(Priority::Telemetry, b"t")).unwrap();
    }
    let alert = o.enqueue(&msg(Priority::Alert, b"security")).unwrap();
    let seq = alert.seq.unwrap();
    for i in 0..2_000u32 {
        let p = if i % 2 == 0 {
            Priority::Telemetry
        } else {
            Priority::Status
        };
        o.enqueue(&msg(p, b"x")).unwrap();
    }
    // Room for one more top-rank message: it evicts a lower one, not the alert.
    let out = o.enqueue(&msg(Priority::Alert, b"security 2")).unwrap();
    assert!(
        out.evicted
            .iter()
            .all(|(_, p)| p.rank() < Priority::Alert.rank())
    );
    let kept: Vec<_> = o.peek(8).unwrap();
    assert!(kept.iter().any(|m| m.seq == seq), "the first alert is kept");
    let st = o.stats().unwrap();
    assert_eq!(st.drops.alert, 0);
    assert!(st.drops.telemetry + st.drops.status >= 2_000);
}
