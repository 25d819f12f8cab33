//! Checks the test vectors in docs/protocol.md: each ```vector block is parsed out of the
//! markdown, recomputed with this crate and compared byte for byte, then verified.
#![allow(clippy::unwrap_used, deprecated)]

use std::collections::BTreeMap;

use ring::signature::{Ed25519KeyPair, KeyPair};
use ring::test::rand::FixedSliceRandom;
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::envelope::{
    CommandPayload, INFO_COMMAND, INFO_SESSION, command_aad, derive_key,
};
use telematics_security::recovery::{ResetAuthorization, reset_aad};
use telematics_security::revocation::{DeviceRevocation, revoke_aad};
use telematics_security::{
    Action, CommandId, Config, CredentialStatus, DeviceCredential, ExportedCredential, KeyId,
    PairingRecord, SecurityState, Verifier, arm_reset,
};

type Vector = BTreeMap<String, String>;

fn vectors() -> Vec<(String, Vector)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let md = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("docs/protocol.md missing at {path}: {e}"));
    let mut out = Vec::new();
    let mut cur: Option<(String, Vector)> = None;
    for line in md.lines() {
        if let Some(name) = line.strip_prefix("```vector ") {
            cur = Some((name.trim().to_owned(), Vector::new()));
        } else if line.starts_with("```") {
            if let Some(v) = cur.take() {
                out.push(v);
            }
        } else if let (Some((_, v)), Some((k, val))) = (cur.as_mut(), line.split_once(':')) {
            v.insert(k.trim().to_owned(), val.trim().to_owned());
        }
    }
    out
}

fn h(v: &Vector, k: &str) -> Vec<u8> {
    hex::decode(v.get(k).unwrap_or_else(|| panic!("field {k}"))).unwrap()
}
fn n(v: &Vector, k: &str) -> u64 {
    v[k].parse().unwrap()
}

fn action(v: &Vector) -> Action {
    match v["action"].as_str() {
        "lock" => Action::Lock,
        "unlock" => Action::Unlock,
        "engine_start" => Action::EngineStart {
            max_run_secs: v.get("max_run_secs").map(|s| s.parse().unwrap()),
        },
        "engine_stop" => Action::EngineStop,
        "flash_lights" => Action::FlashLights,
        "horn" => Action::Horn,
        other => panic!("action {other}"),
    }
}

fn check_pbkdf2(v: &Vector) -> PairingRecord {
    let salt = h(v, "salt");
    let rec = PairingRecord::new(
        &v["code"],
        n(v, "iterations") as u32,
        &FixedSliceRandom { bytes: &salt },
        0,
    )
    .unwrap();
    assert_eq!(hex::encode(rec.verifier), v["verifier"], "pbkdf2 verifier");
    assert!(rec.verify(&v["code"]));
    rec
}

fn check_command(v: &Vector, record: &PairingRecord) {
    let vin = v["vin"].clone();
    let secret: [u8; 32] = h(v, "device_secret").try_into().unwrap();
    let kid = h(v, "key_id");
    assert_eq!(
        hex::encode(derive_key(&secret, INFO_COMMAND, &vin)),
        v["command_key"]
    );
    assert_eq!(
        hex::encode(derive_key(&secret, INFO_SESSION, &vin)),
        v["session_key"]
    );
    assert_eq!(hex::encode(command_aad(&vin)), v["external_aad"]);
    let req = CommandRequest {
        command_id: CommandId(h(v, "command_id").try_into().unwrap()),
        action: action(v),
        counter: n(v, "counter"),
        issued_at: n(v, "issued_at"),
        expires_at: n(v, "expires_at"),
        code: v["code"].clone(),
    };
    let payload = CommandPayload {
        vin: vin.clone(),
        command_id: req.command_id,
        action: req.action.clone(),
        counter: req.counter,
        issued_at: req.issued_at,
        expires_at: req.expires_at,
        code: req.code.clone(),
    };
    assert_eq!(hex::encode(payload.to_cbor()), v["plaintext"], "plaintext");
    let cred = ExportedCredential {
        vin: vin.clone(),
        key_id: KeyId(kid.clone()),
        secret,
        name: "vector".into(),
    };
    let iv = h(v, "iv");
    let env = build_command(&cred, &req, &FixedSliceRandom { bytes: &iv }).unwrap();
    assert_eq!(hex::encode(&env), v["envelope"], "envelope");
    // And the vehicle accepts it.
    let mut state = SecurityState {
        pairing: Some(record.clone()),
        ..SecurityState::default()
    };
    state.credentials.push(DeviceCredential {
        key_id: KeyId(kid),
        secret,
        name: "vector".into(),
        created_at: 0,
        status: CredentialStatus::Active,
        last_counter: 0,
        last_used_at: None,
    });
    let cfg = Config {
        pbkdf2_iterations: record.iterations,
        min_pbkdf2_iterations: record.iterations,
        ..Config::default()
    };
    let verifier = Verifier::new(cfg, &vin).unwrap();
    let now = req.issued_at + 1;
    let p = verifier.begin(&mut state, &env, now).unwrap();
    let cmd = p.finish(&mut state, now).result.unwrap();
    assert_eq!(cmd.action(), &req.action);
}

/// Lenient view of a command envelope (any well-formed CBOR, as a non-deterministic decoder
/// would read it): (protected bytes, IV, ciphertext).
fn lenient_envelope(bytes: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use ciborium::Value;
    let v: Value = ciborium::de::from_reader(bytes).expect("well-formed CBOR");
    let Value::Tag(16, inner) = v else {
        panic!("tag 16")
    };
    let Value::Array(a) = *inner else {
        panic!("array")
    };
    let [Value::Bytes(p), Value::Map(u), Value::Bytes(ct)] = &a[..] else {
        panic!("COSE_Encrypt0 shape")
    };
    let iv = u
        .iter()
        .find_map(|(k, v)| match (k, v) {
            (Value::Integer(i), Value::Bytes(b)) if i128::from(*i) == 5 => Some(b.clone()),
            _ => None,
        })
        .expect("IV");
    (p.clone(), iv, ct.clone())
}

/// A negative vector: authentic (the AEAD opens over the bytes as sent, and a lenient decoder
/// reads the base command out of it), yet refused with the stated fault.
fn check_reject(name: &str, v: &Vector, base: &Vector, record: &PairingRecord) {
    use ciborium::Value;
    use ring::aead;
    let env = h(v, "envelope");
    let vin = base["vin"].clone();
    let secret: [u8; 32] = h(base, "device_secret").try_into().unwrap();
    // Authentic: AES-256-GCM over Enc_structure(protected as sent) opens.
    let (protected, iv, ct) = lenient_envelope(&env);
    let mut enc = Vec::new();
    ciborium::ser::into_writer(
        &Value::Array(vec![
            Value::Text("Encrypt0".into()),
            Value::Bytes(protected),
            Value::Bytes(command_aad(&vin)),
        ]),
        &mut enc,
    )
    .unwrap();
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, &derive_key(&secret, INFO_COMMAND, &vin))
            .unwrap(),
    );
    let mut buf = ct;
    let pt = key
        .open_in_place(
            aead::Nonce::try_assume_unique_for_key(&iv).unwrap(),
            aead::Aad::from(&enc),
            &mut buf,
        )
        .unwrap_or_else(|_| panic!("{name}: AEAD must open (the vector is authentic)"))
        .to_vec();
    if let Some(p) = v.get("plaintext") {
        assert_eq!(&hex::encode(&pt), p, "{name}: plaintext");
    }
    // A lenient decoder reads the base command's counter and code out of it.
    let Value::Map(m) = ciborium::de::from_reader::<Value, _>(&pt[..]).unwrap() else {
        panic!("{name}: plaintext map")
    };
    let field = |k: i128| {
        m.iter()
            .find(|(key, _)| matches!(key, Value::Integer(i) if i128::from(*i) == k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        field(5).and_then(|c| c.as_integer()).map(i128::from),
        Some(i128::from(n(base, "counter"))),
        "{name}: counter"
    );
    assert_eq!(
        field(8).and_then(|c| c.as_text().map(str::to_owned)),
        Some(base["code"].clone()),
        "{name}: code"
    );
    // Refused, with the stated fault, before anything is consumed.
    let (mut state, verifier) = vehicle(base, record);
    let before = state.clone();
    let fault = match verifier.begin(&mut state, &env, n(base, "issued_at") + 1) {
        Err(r) => r.fault.code(),
        Ok(_) => panic!("{name}: a non-deterministic envelope was accepted"),
    };
    assert_eq!(fault, v["fault"], "{name}");
    assert_eq!(state, before, "{name}: refused without changing the state");
    // The base message itself verifies on the same vehicle (so the refusal is the defect's).
    let base_env = h(base, "envelope");
    let p = verifier
        .begin(&mut state, &base_env, n(base, "issued_at") + 1)
        .unwrap();
    assert!(
        p.finish(&mut state, n(base, "issued_at") + 1)
            .result
            .is_ok()
    );
}

/// A paired vehicle holding the vector's credential, and its verifier.
fn vehicle(v: &Vector, record: &PairingRecord) -> (SecurityState, Verifier) {
    let secret: [u8; 32] = h(v, "device_secret").try_into().unwrap();
    let mut state = SecurityState {
        pairing: Some(record.clone()),
        ..SecurityState::default()
    };
    state.credentials.push(DeviceCredential {
        key_id: KeyId(h(v, "key_id")),
        secret,
        name: "vector".into(),
        created_at: 0,
        status: CredentialStatus::Active,
        last_counter: 0,
        last_used_at: None,
    });
    let cfg = Config {
        pbkdf2_iterations: record.iterations,
        min_pbkdf2_iterations: record.iterations,
        ..Config::default()
    };
    (state, Verifier::new(cfg, &v["vin"]).unwrap())
}

fn check_reset(v: &Vector) {
    let kp = Ed25519KeyPair::from_seed_unchecked(&h(v, "backend_seed")).unwrap();
    assert_eq!(
        hex::encode(kp.public_key().as_ref()),
        v["backend_public_key"]
    );
    let auth = ResetAuthorization {
        vin: v["vin"].clone(),
        nonce: h(v, "nonce"),
        issued_at: n(v, "issued_at"),
        expires_at: n(v, "expires_at"),
    };
    assert_eq!(hex::encode(reset_aad(&auth.vin)), v["external_aad"]);
    assert_eq!(hex::encode(auth.to_cbor()), v["payload"]);
    let signed = auth.sign(&kp).unwrap();
    assert_eq!(hex::encode(&signed), v["sign1"], "sign1");
    let mut state = SecurityState::default();
    let cfg = Config::default();
    let got = arm_reset(
        &mut state,
        &cfg,
        &auth.vin,
        &h(v, "backend_public_key"),
        &signed,
        auth.issued_at,
    )
    .unwrap();
    assert_eq!(got, auth);
}

fn check_revoke(v: &Vector) {
    let kp = Ed25519KeyPair::from_seed_unchecked(&h(v, "backend_seed")).unwrap();
    assert_eq!(
        hex::encode(kp.public_key().as_ref()),
        v["backend_public_key"]
    );
    let rev = DeviceRevocation {
        vin: v["vin"].clone(),
        key_id: h(v, "key_id"),
        nonce: h(v, "nonce"),
        issued_at: n(v, "issued_at"),
        expires_at: n(v, "expires_at"),
    };
    assert_eq!(hex::encode(revoke_aad(&rev.vin)), v["external_aad"]);
    assert_eq!(hex::encode(rev.to_cbor()), v["payload"]);
    let signed = rev.sign(&kp).unwrap();
    assert_eq!(hex::encode(&signed), v["sign1"], "sign1");
    // The vehicle holding that key id revokes it.
    let mut state = SecurityState::default();
    state.credentials.push(DeviceCredential {
        key_id: KeyId(rev.key_id.clone()),
        secret: [0; 32],
        name: "vector".into(),
        created_at: 0,
        status: CredentialStatus::Active,
        last_counter: 0,
        last_used_at: None,
    });
    let got = telematics_security::apply_revocation(
        &mut state,
        &Config::default(),
        &rev.vin,
        &h(v, "backend_public_key"),
        &signed,
        rev.issued_at,
    )
    .unwrap();
    assert_eq!(got, rev);
    assert!(!state.credentials[0].is_active());
}

#[test]
fn protocol_md_vectors() {
    let vs = vectors();
    let pb = vs
        .iter()
        .find(|(k, _)| k == "pbkdf2")
        .expect("pbkdf2 vector in docs/protocol.md");
    let record = check_pbkdf2(&pb.1);
    let mut commands = 0;
    let mut resets = 0;
    let mut revokes = 0;
    let mut rejects = Vec::new();
    for (name, v) in &vs {
        if name.starts_with("reject-") {
            let base = &vs
                .iter()
                .find(|(k, _)| *k == v["base"])
                .unwrap_or_else(|| panic!("{name}: base vector {}", v["base"]))
                .1;
            check_reject(name, v, base, &record);
            rejects.push(v["variant"].clone());
        } else if name.starts_with("command") {
            check_command(v, &record);
            commands += 1;
        } else if name.starts_with("reset") {
            check_reset(v);
            resets += 1;
        } else if name.starts_with("revoke") {
            check_revoke(v);
            revokes += 1;
        }
    }
    assert!(
        commands >= 2,
        "expected at least two command vectors, found {commands}"
    );
    assert_eq!(resets, 1);
    assert_eq!(revokes, 1);
    // Every layer and rule of docs/protocol.md §4 has a negative vector.
    for want in [
        "protected_nonminimal_int",
        "protected_indefinite_map",
        "protected_key_order",
        "protected_duplicate_key",
        "outer_nonminimal_length",
        "outer_indefinite_array",
        "unprotected_nonminimal_key",
        "plaintext_key_order",
        "plaintext_nonminimal_int",
        "plaintext_indefinite_map",
        "plaintext_indefinite_text",
        "plaintext_duplicate_key",
    ] {
        assert!(
            rejects.iter().any(|r| r == want),
            "no negative vector {want}"
        );
    }
}
