//! Interop with an independent COSE implementation: Python pycose + cbor2 + cryptography
//! (tests/interop/interop.py). Python builds commands the Rust verifier must accept, Rust builds
//! commands Python must decrypt, the Ed25519 reset authorization is checked both ways, and
//! Python verifies the session-info MAC.
//!
//! Setup: the test runs `python3 -m pip install --quiet pycose cbor2` when the import fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Once;

use common::*;
use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use telematics_security::client::{self, CommandRequest, build_command};
use telematics_security::{
    Action, CommandId, Config, SecurityState, arm_reset, build_session_info,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/interop.py");

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import pycose, cbor2, cryptography"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn ensure_python() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !python_ready() {
            let _ = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "pycose", "cbor2"])
                .status();
        }
        assert!(
            python_ready(),
            "interop test needs python3 with pycose and cbor2: run `python3 -m pip install pycose cbor2`"
        );
    });
}

fn py(mode: &str, req: &Value) -> Value {
    ensure_python();
    let mut child = Command::new("python3")
        .args([SCRIPT, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "interop.py {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn random<const N: usize>(s: &Setup) -> [u8; N] {
    let mut b = [0u8; N];
    s.rng.fill(&mut b).unwrap();
    b
}

#[test]
fn python_builds_rust_verifies() {
    let mut s = setup();
    for (counter, action, max_run, code, expect) in [
        (1u64, "unlock", None, CODE, "ok"),
        (2, "engine_start", Some(900u32), CODE, "ok"),
        (3, "lock", None, "9713", "wrong_code"),
        (3, "lock", None, CODE, "replay"),
    ] {
        let cid: [u8; 16] = random(&s);
        let iv: [u8; 12] = random(&s);
        let r = py(
            "build_command",
            &json!({
                "vin": VIN, "key_id": hex::encode(&s.cred.key_id.0),
                "secret": hex::encode(s.cred.secret), "iv": hex::encode(iv),
                "command_id": hex::encode(cid), "action": action, "max_run_secs": max_run,
                "counter": counter, "issued_at": NOW, "expires_at": NOW + 120, "code": code,
            }),
        );
        let bytes = hex::decode(r["envelope"].as_str().unwrap()).unwrap();
        if expect != "ok" {
            assert_eq!(s.run(&bytes, NOW), expect);
            continue;
        }
        let p = s.verifier.begin(&mut s.state, &bytes, NOW).unwrap();
        let v = p.finish(&mut s.state, NOW).result.unwrap();
        assert_eq!(v.command_id(), CommandId(cid));
        assert_eq!(v.counter(), counter);
        let want = match action {
            "unlock" => Action::Unlock,
            _ => Action::EngineStart {
                max_run_secs: max_run,
            },
        };
        assert_eq!(v.action(), &want);
    }
}

#[test]
fn rust_builds_python_decrypts() {
    let s = setup();
    let cid: [u8; 16] = random(&s);
    let req = CommandRequest {
        command_id: CommandId(cid),
        action: Action::EngineStart {
            max_run_secs: Some(300),
        },
        counter: 77,
        issued_at: NOW,
        expires_at: NOW + 90,
        code: CODE.into(),
    };
    let env = build_command(&s.cred, &req, &s.rng).unwrap();
    let out = py(
        "open_command",
        &json!({
            "vin": VIN, "key_id": hex::encode(&s.cred.key_id.0),
            "secret": hex::encode(s.cred.secret), "envelope": hex::encode(&env),
        }),
    );
    assert_eq!(
        out,
        json!({
            "vin": VIN, "command_id": hex::encode(cid), "action": "engine_start",
            "max_run_secs": 300, "counter": 77, "issued_at": NOW, "expires_at": NOW + 90,
            "code": CODE,
        })
    );
}

#[test]
fn reset_authorization_both_ways() {
    let s = setup();
    let seed: [u8; 32] = random(&s);
    let kp = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let pk = kp.public_key().as_ref().to_vec();
    let cfg = Config::default();
    // Python signs, Rust verifies.
    let nonce: [u8; 16] = random(&s);
    let r = py(
        "sign_reset",
        &json!({"vin": VIN, "seed": hex::encode(seed), "nonce": hex::encode(nonce),
                "issued_at": NOW, "expires_at": NOW + 600}),
    );
    let sign1 = hex::decode(r["sign1"].as_str().unwrap()).unwrap();
    let mut state = SecurityState::default();
    let auth = arm_reset(&mut state, &cfg, VIN, &pk, &sign1, NOW + 1).unwrap();
    assert_eq!(auth.nonce, nonce);
    assert!(state.pending_reset.is_some());
    // Rust signs, Python verifies.
    let signed = client::sign_reset(&kp, VIN, NOW, NOW + 300, &s.rng).unwrap();
    let out = py(
        "verify_reset",
        &json!({"vin": VIN, "public_key": hex::encode(&pk), "sign1": hex::encode(&signed)}),
    );
    assert_eq!(out["issued_at"], json!(NOW));
    assert_eq!(out["expires_at"], json!(NOW + 300));
    assert_eq!(out["nonce"].as_str().unwrap().len(), 32);
}

#[test]
fn device_revocation_both_ways() {
    let mut s = setup();
    let seed: [u8; 32] = random(&s);
    let kp = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let pk = kp.public_key().as_ref().to_vec();
    let cfg = Config::default();
    let kid = s.cred.key_id.0.clone();
    // Python signs, Rust verifies and revokes.
    let nonce: [u8; 16] = random(&s);
    let r = py(
        "sign_revocation",
        &json!({"vin": VIN, "seed": hex::encode(seed), "nonce": hex::encode(nonce),
                "issued_at": NOW, "expires_at": NOW + 600, "key_id": hex::encode(&kid)}),
    );
    let sign1 = hex::decode(r["sign1"].as_str().unwrap()).unwrap();
    // Byte for byte what this crate signs (deterministic CBOR, deterministic Ed25519).
    let same = telematics_security::DeviceRevocation {
        vin: VIN.into(),
        key_id: kid.clone(),
        nonce: nonce.to_vec(),
        issued_at: NOW,
        expires_at: NOW + 600,
    };
    assert_eq!(same.sign(&kp).unwrap(), sign1);
    let rev = telematics_security::apply_revocation(&mut s.state, &cfg, VIN, &pk, &sign1, NOW + 1)
        .unwrap();
    assert_eq!(
        (rev.nonce.as_slice(), rev.key_id.as_slice()),
        (&nonce[..], &kid[..])
    );
    assert!(!s.state.credential(&kid).unwrap().is_active());
    // Replayed: refused.
    let replay =
        telematics_security::apply_revocation(&mut s.state, &cfg, VIN, &pk, &sign1, NOW + 2);
    assert_eq!(replay.unwrap_err().fault.code(), "nonce_reused");
    // Rust signs, Python verifies.
    let signed = client::sign_revocation(&kp, VIN, &kid, NOW, NOW + 300, &s.rng).unwrap();
    let out = py(
        "verify_revocation",
        &json!({"vin": VIN, "public_key": hex::encode(&pk), "sign1": hex::encode(&signed)}),
    );
    assert_eq!(out["key_id"], json!(hex::encode(&kid)));
    assert_eq!(out["expires_at"], json!(NOW + 300));
}

#[test]
fn session_info_python_verifies() {
    let mut s = setup();
    assert_eq!(s.run(&s.cmd(5, CODE), NOW), "ok");
    for c in 6..9 {
        assert_eq!(s.run(&s.cmd(c, "0000"), NOW), "wrong_code");
    }
    let r = build_session_info(&s.state, VIN, &s.cred.key_id.0, b"nonce", NOW + 7).unwrap();
    let out = py(
        "parse_session",
        &json!({"vin": VIN, "key_id": hex::encode(&s.cred.key_id.0),
                "secret": hex::encode(s.cred.secret), "session_info": hex::encode(&r)}),
    );
    assert_eq!(
        out,
        json!({"vin": VIN, "last_counter": 8, "clock": NOW + 7, "failures": 3,
               "lockout": "backoff", "retry_after": 23, "epoch": 0,
               "echo": hex::encode(b"nonce")})
    );
}

/// The `reject-*` vectors of docs/protocol.md §13, as (name, fields).
fn spec_reject_vectors() -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let md = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut cur: Option<(String, std::collections::BTreeMap<String, String>)> = None;
    for line in md.lines() {
        if let Some(name) = line.strip_prefix("```vector ") {
            cur = Some((name.trim().to_owned(), Default::default()));
        } else if line.starts_with("```") {
            out.extend(cur.take());
        } else if let (Some((_, v)), Some((k, val))) = (cur.as_mut(), line.split_once(':')) {
            v.insert(k.trim().to_owned(), val.trim().to_owned());
        }
    }
    out.into_iter()
        .filter(|(n, _)| n.starts_with("reject-"))
        .collect()
}

/// Non-deterministic encodings built by an independent CBOR/COSE stack (cbor2 + cryptography,
/// hand-assembled heads) are authentic yet refused, each with the fault docs/protocol.md gives;
/// the same builder without a defect is accepted (so the refusals are the defects'); and it
/// reproduces every negative vector of the spec byte for byte.
#[test]
fn python_non_deterministic_encodings_are_refused() {
    let mut s = setup();
    let variants = py("variants", &json!({}));
    let variants = variants["variants"].as_object().unwrap().clone();
    assert!(variants.len() >= 13, "{variants:?}");
    let mut counter = 1u64;
    let build = |s: &Setup, variant: &str, counter: u64| {
        let cid: [u8; 16] = random(s);
        let iv: [u8; 12] = random(s);
        let r = py(
            "build_variant",
            &json!({
                "variant": variant, "vin": VIN, "key_id": hex::encode(&s.cred.key_id.0),
                "secret": hex::encode(s.cred.secret), "iv": hex::encode(iv),
                "command_id": hex::encode(cid), "action": "engine_start", "max_run_secs": 600,
                "counter": counter, "issued_at": NOW, "expires_at": NOW + 120, "code": CODE,
            }),
        );
        hex::decode(r["envelope"].as_str().unwrap()).unwrap()
    };
    for (variant, fault) in &variants {
        if variant == "none" {
            continue;
        }
        let bytes = build(&s, variant, counter);
        assert_eq!(s.run(&bytes, NOW), fault.as_str().unwrap(), "{variant}");
        // Nothing consumed: the same counter is still fresh for a well-encoded command.
        assert_eq!(
            s.state.credentials[0].last_counter,
            counter - 1,
            "{variant}"
        );
        let ok = build(&s, "none", counter);
        assert_eq!(s.run(&ok, NOW), "ok", "{variant}: control");
        counter += 1;
    }
    // The spec's negative vectors, rebuilt by Python from the command-1 fields.
    let rejects = spec_reject_vectors();
    assert!(rejects.len() >= 12);
    for (name, v) in rejects {
        assert!(variants.contains_key(&v["variant"]), "{name}");
        let r = py(
            "build_variant",
            &json!({
                "variant": v["variant"], "vin": "WBA3A5C51CF256985", "key_id": "a1a2a3a4a5a6a7a8",
                "secret": "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
                "iv": "000102030405060708090a0b", "command_id": "00112233445566778899aabbccddeeff",
                "action": "unlock", "max_run_secs": null, "counter": 1,
                "issued_at": 1_800_000_000u64, "expires_at": 1_800_000_120u64, "code": "2580",
            }),
        );
        assert_eq!(r["envelope"].as_str().unwrap(), v["envelope"], "{name}");
        assert_eq!(r["fault"].as_str().unwrap(), v["fault"], "{name}");
    }
}
