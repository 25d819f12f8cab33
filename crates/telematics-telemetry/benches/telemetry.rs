//! Payload encode/decode and schedule throughput.
#![allow(missing_docs)]
use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use telematics_telemetry::{
    OnChange, Schedule, ScheduleConfig, SignalValue, Telemetry, TelemetryKind,
};

fn snapshot() -> Telemetry {
    let mut signals = BTreeMap::new();
    for i in 0..50 {
        signals.insert(
            format!("Vehicle.Signal{i}"),
            SignalValue::Float(f64::from(i) * 1.5),
        );
    }
    Telemetry {
        kind: TelemetryKind::Snapshot,
        vin: "WVWZZZ1JZXW000001".into(),
        seq: 1,
        at: 1_700_000_000_000,
        signals,
        stale: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let t = snapshot();
    let bytes = t.encode().expect("encode");
    c.bench_function("snapshot50_encode", |b| b.iter(|| black_box(&t).encode()));
    c.bench_function("snapshot50_decode", |b| {
        b.iter(|| Telemetry::decode(black_box(&bytes)))
    });
    let cfg = ScheduleConfig {
        vin: "V".into(),
        periodic_ms: 60_000,
        on_change: vec![OnChange {
            path: "Vehicle.Speed".into(),
            deadband: 1.0,
            min_interval_ms: 500,
        }],
    };
    let mut s = Schedule::new(cfg, 0).expect("valid");
    let mut now = 0u64;
    let upd = vec![("Vehicle.Speed".to_string(), SignalValue::Float(0.0))];
    c.bench_function("schedule_on_update", |b| {
        b.iter(|| {
            now += 10;
            let mut u = upd.clone();
            if let Some(x) = u.first_mut() {
                x.1 = SignalValue::Float((now % 1000) as f64);
            }
            s.on_update(black_box(&u), now)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
