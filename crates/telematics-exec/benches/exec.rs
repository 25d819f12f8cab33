//! Executor event throughput: a state update and a timer check per iteration.
#![allow(missing_docs)]
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use telematics_exec::{ExecConfig, Executor, VehicleSignal};

fn bench(c: &mut Criterion) {
    let mut e = Executor::new(ExecConfig::default()).expect("valid");
    let mut now = 0u64;
    c.bench_function("vehicle_update_and_timeout", |b| {
        b.iter(|| {
            now += 10;
            e.on_vehicle_update(black_box(VehicleSignal::SpeedKmh((now % 50) as f64)), now);
            e.handle_timeout(now);
            while e.poll_output().is_some() {}
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
