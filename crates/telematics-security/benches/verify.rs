//! Verification cost: PBKDF2 at 600 000 iterations, the per-command pipeline without PBKDF2
//! (`begin`: decode, key lookup, HKDF, AES-GCM, checks), the full two-phase verify, and the
//! cost of refusing what a flood sends (garbage: `decode`; a forged envelope for a paired key
//! id: `aead`), which must stay in microseconds.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use std::hint::black_box;
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId, Config, SecurityState, Verifier};

const VIN: &str = "WBA3A5C51CF256985";
const NOW: u64 = 1_800_000_000;

/// State with one paired device, 4096 valid commands, and one envelope for that key id sealed
/// with another secret.
fn setup(iterations: u32) -> (SecurityState, Verifier, Vec<Vec<u8>>, Vec<u8>) {
    let rng = SystemRandom::new();
    let cfg = Config {
        pbkdf2_iterations: iterations,
        ..Config::default()
    };
    let mut st = SecurityState::default();
    let proof = st.set_initial_code(&cfg, "2580", &rng, NOW).unwrap();
    let cred = st.add_device(proof, VIN, "bench", &rng, NOW).unwrap();
    let cmds = (1..=4096u64)
        .map(|c| {
            let req = CommandRequest {
                command_id: CommandId([1; 16]),
                action: Action::Unlock,
                counter: c,
                issued_at: NOW,
                expires_at: NOW + 60,
                code: "2580".into(),
            };
            build_command(&cred, &req, &rng).unwrap()
        })
        .collect();
    let mut forged_cred = cred.clone();
    forged_cred.secret = [0x5a; 32];
    let forged = build_command(
        &forged_cred,
        &CommandRequest {
            command_id: CommandId([2; 16]),
            action: Action::Unlock,
            counter: 1,
            issued_at: NOW,
            expires_at: NOW + 60,
            code: "2580".into(),
        },
        &rng,
    )
    .unwrap();
    (st, Verifier::new(cfg, VIN).unwrap(), cmds, forged)
}

fn bench(c: &mut Criterion) {
    let (st, verifier, cmds, forged) = setup(600_000);
    let record = st.pairing.clone().unwrap();
    let mut g = c.benchmark_group("verify");
    g.sample_size(10);
    g.bench_function("pbkdf2_verify_600k", |b| {
        b.iter(|| assert!(record.verify(black_box("2580"))))
    });
    g.bench_function("begin_excluding_pbkdf2", |b| {
        // Fresh state per batch so counters stay valid; `begin` is the full pipeline up to
        // (and including) the persisted failure pre-count, without PBKDF2.
        b.iter_batched_ref(
            || st.clone(),
            |s| {
                for m in &cmds[..64] {
                    let p = verifier.begin(s, black_box(m), NOW).unwrap();
                    // Roll back the pre-counted failure cheaply so lockout never triggers.
                    s.lockout.consecutive_failures = 0;
                    let _ = black_box(p);
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
    g.bench_function("refuse_garbage_decode", |b| {
        let mut s = st.clone();
        b.iter(|| {
            let r = verifier.begin(&mut s, black_box(&garbage), NOW);
            assert!(r.is_err());
        })
    });
    g.bench_function("refuse_forged_aead", |b| {
        let mut s = st.clone();
        b.iter(|| {
            let r = verifier.begin(&mut s, black_box(&forged), NOW);
            assert!(matches!(r, Err(ref e) if e.fault == telematics_security::Fault::Aead));
        })
    });
    g.bench_function("full_verify_including_pbkdf2", |b| {
        let mut s = st.clone();
        let mut i = 0usize;
        b.iter(|| {
            let p = verifier.begin(&mut s, &cmds[i % cmds.len()], NOW).unwrap();
            i += 1;
            black_box(p.finish(&mut s, NOW).result.unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
