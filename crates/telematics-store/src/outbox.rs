//! The bounded, prioritised, crash-safe outbox.

use std::sync::Arc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use crate::error::tx;
use crate::{Result, StoreError, set_immediate};

/// seq -> encoded message.
const MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("outbox.messages");
/// (rank, seq) -> (): drop order index (lowest rank, oldest first).
const BY_RANK: TableDefinition<'_, (u8, u64), ()> = TableDefinition::new("outbox.by_rank");
/// Bookkeeping counters.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("outbox.meta");

const META_NEXT_SEQ: &str = "next_seq";
const META_BYTES: &str = "bytes";
const RECORD_VERSION: u8 = 1;
const HEADER_LEN: usize = 8;

pub(crate) fn create_tables(w: &WriteTransaction) -> std::result::Result<(), redb::TableError> {
    w.open_table(MESSAGES)?;
    w.open_table(BY_RANK)?;
    w.open_table(META)?;
    Ok(())
}

/// Priority of an outbox message. When the outbox is full, lower priorities are dropped first.
/// `Alert` and `Result` share the highest rank: they are dropped last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Periodic / on-change telemetry: dropped first.
    Telemetry,
    /// Status messages.
    Status,
    /// Alerts (low fuel, tyre pressure, lockout, ...): dropped last.
    Alert,
    /// Command results: dropped last.
    Result,
}

impl Priority {
    /// All priorities, in the order of [`DropCounts`] fields.
    pub const ALL: [Priority; 4] = [
        Priority::Telemetry,
        Priority::Status,
        Priority::Alert,
        Priority::Result,
    ];

    /// Drop rank: a lower rank is dropped first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Telemetry => 0,
            Priority::Status => 1,
            Priority::Alert | Priority::Result => 2,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Priority::Telemetry => 0,
            Priority::Status => 1,
            Priority::Alert => 2,
            Priority::Result => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Priority> {
        Priority::ALL.get(usize::from(b)).copied()
    }

    fn meta_key(self) -> &'static str {
        match self {
            Priority::Telemetry => "drops.telemetry",
            Priority::Status => "drops.status",
            Priority::Alert => "drops.alert",
            Priority::Result => "drops.result",
        }
    }
}

/// MQTT quality of service of an outbox message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// QoS 0: removed from the outbox as soon as it is written to the socket.
    AtMostOnce,
    /// QoS 1: removed only after the broker's PUBACK.
    AtLeastOnce,
}

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// MQTT topic (e.g. `vehicles/{vin}/telemetry`).
    pub topic: String,
    /// Payload (CBOR).
    pub payload: Vec<u8>,
    /// Quality of service.
    pub qos: Qos,
    /// MQTT retain flag.
    pub retain: bool,
    /// Drop priority.
    pub priority: Priority,
}

impl OutboxMessage {
    /// Convenience constructor for a QoS 1, non-retained message.
    pub fn new(topic: impl Into<String>, payload: Vec<u8>, priority: Priority) -> Self {
        OutboxMessage {
            topic: topic.into(),
            payload,
            qos: Qos::AtLeastOnce,
            retain: false,
            priority,
        }
    }

    /// Bytes this message counts against [`OutboxConfig::max_bytes`] (topic + payload).
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.topic.len() + self.payload.len());
        out.push(RECORD_VERSION);
        out.push(self.priority.to_byte());
        out.push(match self.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        });
        out.push(u8::from(self.retain));
        // Topics longer than u32::MAX cannot exist (MQTT limits them to 65535 bytes).
        let tlen = u32::try_from(self.topic.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&tlen.to_le_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn decode(seq: u64, b: &[u8]) -> Result<OutboxMessage> {
        let bad = |detail| StoreError::BadRecord { seq, detail };
        let header = b.get(..HEADER_LEN).ok_or(bad("truncated header"))?;
        let [version, prio, qos, retain, l0, l1, l2, l3] = header else {
            return Err(bad("truncated header"));
        };
        if *version != RECORD_VERSION {
            return Err(bad("unknown record version"));
        }
        let priority = Priority::from_byte(*prio).ok_or(bad("unknown priority"))?;
        let qos = match qos {
            0 => Qos::AtMostOnce,
            1 => Qos::AtLeastOnce,
            _ => return Err(bad("unknown qos")),
        };
        let retain = match retain {
            0 => false,
            1 => true,
            _ => return Err(bad("bad retain flag")),
        };
        let tlen = usize::try_from(u32::from_le_bytes([*l0, *l1, *l2, *l3]))
            .map_err(|_| bad("topic length"))?;
        let rest = b.get(HEADER_LEN..).ok_or(bad("truncated"))?;
        if rest.len() < tlen {
            return Err(bad("truncated topic"));
        }
        let (topic, payload) = rest.split_at(tlen);
        let topic = std::str::from_utf8(topic)
            .map_err(|_| bad("topic is not UTF-8"))?
            .to_string();
        Ok(OutboxMessage {
            topic,
            payload: payload.to_vec(),
            qos,
            retain,
            priority,
        })
    }
}

/// A message in the outbox with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Monotonically increasing sequence assigned at enqueue (never reused, survives restarts).
    pub seq: u64,
    /// The message.
    pub message: OutboxMessage,
}

/// Capacity limits of the outbox. A message is accepted only if, after dropping, both limits hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Maximum number of stored messages (>= 1).
    pub max_messages: u64,
    /// Maximum total of topic + payload bytes (>= 1).
    pub max_bytes: u64,
}

impl Default for OutboxConfig {
    /// 10 000 messages, 16 MiB.
    fn default() -> Self {
        OutboxConfig {
            max_messages: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

impl OutboxConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_messages == 0 {
            return Err(StoreError::Config("max_messages must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(StoreError::Config("max_bytes must be at least 1"));
        }
        Ok(())
    }
}

/// Number of messages dropped (because the outbox was full) per priority, since the database
/// was created. Persistent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Dropped telemetry messages.
    pub telemetry: u64,
    /// Dropped status messages.
    pub status: u64,
    /// Dropped alerts.
    pub alert: u64,
    /// Dropped command results.
    pub result: u64,
}

impl DropCounts {
    /// Count for one priority.
    pub fn get(&self, p: Priority) -> u64 {
        match p {
            Priority::Telemetry => self.telemetry,
            Priority::Status => self.status,
            Priority::Alert => self.alert,
            Priority::Result => self.result,
        }
    }

    /// Sum over all priorities.
    pub fn total(&self) -> u64 {
        self.telemetry + self.status + self.alert + self.result
    }
}

/// Snapshot of the outbox bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Messages stored.
    pub len: u64,
    /// Topic + payload bytes stored.
    pub bytes: u64,
    /// Sequence the next enqueued message gets.
    pub next_seq: u64,
    /// Drops per priority.
    pub drops: DropCounts,
}

/// What [`Outbox::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueOutcome {
    /// Sequence of the stored message, or `None` when the incoming message itself was dropped
    /// (outbox full of higher-priority messages, or message larger than `max_bytes`).
    pub seq: Option<u64>,
    /// Stored messages evicted to make room: `(seq, priority)`, in eviction order.
    pub evicted: Vec<(u64, Priority)>,
}

/// Handle to the outbox (cheap to clone, shares the [`crate::Store`]'s database).
#[derive(Clone)]
pub struct Outbox {
    db: Arc<Database>,
    config: OutboxConfig,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn meta_get(t: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    Ok(t.get(key).map_err(tx)?.map(|v| v.value()).unwrap_or(0))
}

impl Outbox {
    pub(crate) fn new(db: Arc<Database>, config: OutboxConfig) -> Self {
        Outbox { db, config }
    }

    /// The capacity limits in force.
    pub fn config(&self) -> OutboxConfig {
        self.config
    }

    /// Appends `msg` durably, evicting lower-priority/older messages if the outbox is full.
    ///
    /// Policy: victims are chosen lowest rank first, oldest first within a rank, and only among
    /// messages whose rank is <= the incoming message's rank; if that is not enough to make room
    /// (or the message alone exceeds `max_bytes`), the incoming message is dropped instead and
    /// nothing is evicted. Every drop is counted in [`OutboxStats::drops`].
    pub fn enqueue(&self, msg: &OutboxMessage) -> Result<EnqueueOutcome> {
        let mut w = self.db.begin_write().map_err(tx)?;
        set_immediate(&mut w)?;
        let outcome = self.enqueue_in(&w, msg)?;
        w.commit().map_err(tx)?;
        Ok(outcome)
    }

    /// Like [`Outbox::enqueue`] for several messages in one durable transaction (one fsync).
    pub fn enqueue_batch(&self, msgs: &[OutboxMessage]) -> Result<Vec<EnqueueOutcome>> {
        let mut w = self.db.begin_write().map_err(tx)?;
        set_immediate(&mut w)?;
        let mut out = Vec::with_capacity(msgs.len());
        for m in msgs {
            out.push(self.enqueue_in(&w, m)?);
        }
        w.commit().map_err(tx)?;
        Ok(out)
    }

    pub(crate) fn enqueue_in(
        &self,
        w: &WriteTransaction,
        msg: &OutboxMessage,
    ) -> Result<EnqueueOutcome> {
        let mut messages = w.open_table(MESSAGES).map_err(tx)?;
        let mut by_rank = w.open_table(BY_RANK).map_err(tx)?;
        let mut meta = w.open_table(META).map_err(tx)?;
        let size = msg.size();
        let mut count = messages.len().map_err(tx)?;
        let mut bytes = meta_get(&meta, META_BYTES)?;
        let rank = msg.priority.rank();

        // Plan the evictions first so that nothing is evicted when the incoming message loses.
        let mut victims: Vec<(u8, u64)> = Vec::new();
        let mut fits = size <= self.config.max_bytes;
        if fits {
            let mut c = count;
            let mut b = bytes;
            let mut iter = by_rank.iter().map_err(tx)?;
            while c.saturating_add(1) > self.config.max_messages
                || b.saturating_add(size) > self.config.max_bytes
            {
                let Some(item) = iter.next() else {
                    fits = false;
                    break;
                };
                let (k, _) = item.map_err(tx)?;
                let (vrank, vseq) = k.value();
                if vrank > rank {
                    fits = false;
                    break;
                }
                let vsize = record_size(&messages, vseq)?;
                victims.push((vrank, vseq));
                c = c.saturating_sub(1);
                b = b.saturating_sub(vsize);
            }
        }

        if !fits {
            let key = msg.priority.meta_key();
            let n = meta_get(&meta, key)?;
            meta.insert(key, n.saturating_add(1)).map_err(tx)?;
            return Ok(EnqueueOutcome {
                seq: None,
                evicted: Vec::new(),
            });
        }

        let mut evicted = Vec::with_capacity(victims.len());
        for (vrank, vseq) in victims {
            by_rank.remove((vrank, vseq)).map_err(tx)?;
            let removed = messages.remove(vseq).map_err(tx)?;
            let Some(raw) = removed else {
                return Err(StoreError::BadRecord {
                    seq: vseq,
                    detail: "index entry without message",
                });
            };
            let old = OutboxMessage::decode(vseq, raw.value())?;
            drop(raw);
            bytes = bytes.saturating_sub(old.size());
            count = count.saturating_sub(1);
            let key = old.priority.meta_key();
            let n = meta_get(&meta, key)?;
            meta.insert(key, n.saturating_add(1)).map_err(tx)?;
            evicted.push((vseq, old.priority));
        }

        let seq = meta_get(&meta, META_NEXT_SEQ)?.max(1);
        messages.insert(seq, msg.encode().as_slice()).map_err(tx)?;
        by_rank.insert((rank, seq), ()).map_err(tx)?;
        meta.insert(META_NEXT_SEQ, seq.saturating_add(1))
            .map_err(tx)?;
        meta.insert(META_BYTES, bytes.saturating_add(size))
            .map_err(tx)?;
        let _ = count;
        Ok(EnqueueOutcome {
            seq: Some(seq),
            evicted,
        })
    }

    /// The first `n` messages in sequence order (not removed).
    pub fn peek(&self, n: usize) -> Result<Vec<StoredMessage>> {
        self.peek_after(0, n)
    }

    /// The first `n` messages with a sequence strictly greater than `after`, in order.
    /// The drain loop uses it to fetch the messages following those already in flight.
    pub fn peek_after(&self, after: u64, n: usize) -> Result<Vec<StoredMessage>> {
        let r = self.db.begin_read().map_err(tx)?;
        let t = r.open_table(MESSAGES).map_err(tx)?;
        let mut out = Vec::with_capacity(n.min(1024));
        if n == 0 || after == u64::MAX {
            return Ok(out);
        }
        for item in t.range(after.saturating_add(1)..).map_err(tx)? {
            if out.len() >= n {
                break;
            }
            let (k, v) = item.map_err(tx)?;
            let seq = k.value();
            out.push(StoredMessage {
                seq,
                message: OutboxMessage::decode(seq, v.value())?,
            });
        }
        Ok(out)
    }

    /// Removes message `seq` (the broker acknowledged it) durably. Returns whether it was there
    /// (it may have been evicted meanwhile, or acked twice).
    pub fn ack(&self, seq: u64) -> Result<bool> {
        self.ack_many(&[seq]).map(|n| n == 1)
    }

    /// Removes several acknowledged messages in one durable transaction. Returns how many
    /// were present.
    pub fn ack_many(&self, seqs: &[u64]) -> Result<usize> {
        let mut w = self.db.begin_write().map_err(tx)?;
        set_immediate(&mut w)?;
        let mut removed_count = 0;
        {
            let mut messages = w.open_table(MESSAGES).map_err(tx)?;
            let mut by_rank = w.open_table(BY_RANK).map_err(tx)?;
            let mut meta = w.open_table(META).map_err(tx)?;
            let mut bytes = meta_get(&meta, META_BYTES)?;
            for &seq in seqs {
                let removed = messages.remove(seq).map_err(tx)?;
                let Some(raw) = removed else { continue };
                let msg = OutboxMessage::decode(seq, raw.value())?;
                drop(raw);
                by_rank.remove((msg.priority.rank(), seq)).map_err(tx)?;
                bytes = bytes.saturating_sub(msg.size());
                removed_count += 1;
            }
            meta.insert(META_BYTES, bytes).map_err(tx)?;
        }
        w.commit().map_err(tx)?;
        Ok(removed_count)
    }

    /// Number of stored messages.
    pub fn len(&self) -> Result<u64> {
        let r = self.db.begin_read().map_err(tx)?;
        let t = r.open_table(MESSAGES).map_err(tx)?;
        t.len().map_err(tx)
    }

    /// Whether the outbox is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Bookkeeping snapshot (length, bytes, next sequence, drop counts).
    pub fn stats(&self) -> Result<OutboxStats> {
        let r = self.db.begin_read().map_err(tx)?;
        let t = r.open_table(MESSAGES).map_err(tx)?;
        let meta = r.open_table(META).map_err(tx)?;
        let mut drops = DropCounts::default();
        for p in Priority::ALL {
            let n = meta_get(&meta, p.meta_key())?;
            match p {
                Priority::Telemetry => drops.telemetry = n,
                Priority::Status => drops.status = n,
                Priority::Alert => drops.alert = n,
                Priority::Result => drops.result = n,
            }
        }
        Ok(OutboxStats {
            len: t.len().map_err(tx)?,
            bytes: meta_get(&meta, META_BYTES)?,
            next_seq: meta_get(&meta, META_NEXT_SEQ)?.max(1),
            drops,
        })
    }
}

fn record_size(t: &redb::Table<'_, u64, &[u8]>, seq: u64) -> Result<u64> {
    let raw = t.get(seq).map_err(tx)?.ok_or(StoreError::BadRecord {
        seq,
        detail: "index entry without message",
    })?;
    Ok(OutboxMessage::decode(seq, raw.value())?.size())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_rejects_damage() {
        let m = OutboxMessage {
            topic: "vehicles/V1/alerts".into(),
            payload: vec![1, 2, 3],
            qos: Qos::AtMostOnce,
            retain: true,
            priority: Priority::Alert,
        };
        let enc = m.encode();
        assert_eq!(OutboxMessage::decode(7, &enc).ok(), Some(m));
        for cut in 0..HEADER_LEN + 3 {
            let e = OutboxMessage::decode(7, &enc[..cut]);
            assert!(e.is_err(), "cut at {cut} must fail");
        }
        let mut bad = enc.clone();
        bad[1] = 9;
        assert_eq!(
            OutboxMessage::decode(7, &bad).err().map(|e| e.code()),
            Some("store.bad_record")
        );
    }
}
