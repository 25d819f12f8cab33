//! Outbox throughput: enqueue (one durable transaction each, and batched) and drain
//! (peek + ack, as the link does). Figures are messages/s via criterion's throughput.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use telematics_store::{OutboxConfig, OutboxMessage, Priority, Store};

const N: u64 = 200;

fn message(i: u64) -> OutboxMessage {
    // ~120 byte CBOR-sized telemetry payload
    let mut payload = vec![0xa5u8; 120];
    payload[..8].copy_from_slice(&i.to_le_bytes());
    OutboxMessage::new(
        "vehicles/WBA00000000000001/telemetry",
        payload,
        Priority::Telemetry,
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("outbox");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = OutboxConfig::default();

    g.bench_function("enqueue_durable_each", |b| {
        b.iter_batched(
            || {
                let p = dir.path().join(format!("e{}", fastid()));
                Store::open_with(p, cfg).expect("open")
            },
            |s| {
                let o = s.outbox();
                for i in 0..N {
                    o.enqueue(&message(i)).expect("enqueue");
                }
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("enqueue_batch_of_200", |b| {
        let msgs: Vec<_> = (0..N).map(message).collect();
        b.iter_batched(
            || Store::open_with(dir.path().join(format!("b{}", fastid())), cfg).expect("open"),
            |s| {
                s.outbox().enqueue_batch(&msgs).expect("enqueue");
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("drain_peek32_ack_many", |b| {
        let msgs: Vec<_> = (0..N).map(message).collect();
        b.iter_batched(
            || {
                let s =
                    Store::open_with(dir.path().join(format!("d{}", fastid())), cfg).expect("open");
                s.outbox().enqueue_batch(&msgs).expect("fill");
                s
            },
            |s| {
                let o = s.outbox();
                loop {
                    let batch = o.peek(32).expect("peek");
                    if batch.is_empty() {
                        break;
                    }
                    let seqs: Vec<u64> = batch.iter().map(|m| m.seq).collect();
                    o.ack_many(&seqs).expect("ack");
                }
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("drain_ack_each", |b| {
        let msgs: Vec<_> = (0..N).map(message).collect();
        b.iter_batched(
            || {
                let s =
                    Store::open_with(dir.path().join(format!("a{}", fastid())), cfg).expect("open");
                s.outbox().enqueue_batch(&msgs).expect("fill");
                s
            },
            |s| {
                let o = s.outbox();
                for m in o.peek(N as usize).expect("peek") {
                    o.ack(m.seq).expect("ack");
                }
            },
            BatchSize::PerIteration,
        )
    });

    // Full outbox: every enqueue evicts the oldest telemetry.
    g.bench_function("enqueue_when_full_evicting", |b| {
        let small = OutboxConfig {
            max_messages: 1000,
            max_bytes: 1 << 30,
        };
        let s = Store::open_with(dir.path().join("full"), small).expect("open");
        let fill: Vec<_> = (0..1000).map(message).collect();
        s.outbox().enqueue_batch(&fill).expect("fill");
        let o = s.outbox();
        let mut i = 0;
        b.iter(|| {
            for _ in 0..N {
                i += 1;
                o.enqueue(&message(i)).expect("enqueue");
            }
        })
    });
    g.finish();
}

fn fastid() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ID: AtomicU64 = AtomicU64::new(0);
    ID.fetch_add(1, Ordering::Relaxed)
}

criterion_group!(benches, bench);
criterion_main!(benches);
