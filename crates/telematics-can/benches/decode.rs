//! Decode throughput: the demo candump log with the demo DBC, and every Tesla Model 3 message.
//! Run: `cargo bench -p telematics-can --bench decode`.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use telematics_can::{
    CanFrame, CandumpReader, Dbc, DecodeOutcome, Timestamp, VehicleState, VssMapping, demo,
};

fn demo_frames() -> (Dbc, Vec<CanFrame>, String) {
    let dbc = Dbc::parse(demo::DEMO_DBC).expect("demo dbc");
    let log = demo::drive_log(&dbc).expect("log");
    let frames = CandumpReader::from_text(&log).map(|f| f.frame).collect();
    (dbc, frames, log)
}

fn bench(c: &mut Criterion) {
    let (dbc, frames, log) = demo_frames();
    let mut g = c.benchmark_group("demo_log");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for f in &frames {
                if let Ok(DecodeOutcome::Decoded(d)) = dbc.decode_frame(black_box(f)) {
                    n += d.signals.len();
                }
            }
            n
        })
    });
    let mapping = VssMapping::from_toml(demo::DEMO_VSS_TOML)
        .expect("map")
        .bind(&dbc)
        .expect("bind");
    g.bench_function("decode_map_state", |b| {
        b.iter(|| {
            let mut state = VehicleState::from_mapping(&mapping);
            let mut changes = 0usize;
            for (i, f) in frames.iter().enumerate() {
                if let Ok(DecodeOutcome::Decoded(d)) = dbc.decode_frame(f) {
                    changes += state.apply(&mapping, &d, Timestamp(i as u64)).len();
                }
            }
            changes
        })
    });
    g.bench_function("candump_parse", |b| {
        b.iter(|| CandumpReader::from_text(black_box(&log)).count())
    });
    g.finish();

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/external/tesla_model3.dbc");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("external fixture {} missing: {e}", path.display()));
    let tesla = Dbc::parse(&text).expect("tesla");
    // One frame per Tesla message, deterministic pseudo-random payload of the declared size.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let tesla_frames: Vec<CanFrame> = tesla
        .messages()
        .iter()
        .map(|m| {
            let data: Vec<u8> = (0..m.size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            CanFrame::new(m.id, &data)
        })
        .collect();
    let mut g = c.benchmark_group("tesla_model3");
    g.throughput(Throughput::Elements(tesla_frames.len() as u64));
    g.bench_function("decode_all_messages", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for f in &tesla_frames {
                if let Ok(DecodeOutcome::Decoded(d)) = tesla.decode_frame(black_box(f)) {
                    n += d.signals.len();
                }
            }
            n
        })
    });
    g.bench_function("load_dbc", |b| {
        b.iter(|| Dbc::parse(black_box(&text)).map(|d| d.messages().len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
