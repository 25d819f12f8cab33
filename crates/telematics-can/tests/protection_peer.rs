//! The frame protection schemes against independent implementations, in the same run:
//! autosar-e2e (E2E profiles 1, 2, 5), crccheck (CRC-8 SAE J1850, CRC-8/AUTOSAR, CRC-16
//! CCITT-FALSE) and cryptography (AES-CMAC, the SecOC MAC), driven by tests/peer/
//! protection_peer.py. Both directions: the peer protects the same raw frame and must produce
//! the bytes Rust produced, and must accept Rust's frame; on a corrupted copy both must agree.
//!
//! Setup: `python3 -m pip install "autosar-e2e>=1.0" crccheck cryptography` (scripts/
//! install-test-deps.sh); the test installs them once when the import fails.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use telematics_can::protection::{
    DataIdMode, E2eP1, E2eP2, E2eP5, Protection, SecOc, SecOcKey, crc,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/protection_peer.py");
const MODULES: &str = "import e2e, crccheck, cryptography";

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", MODULES])
        .status()
        .is_ok_and(|s| s.success())
}

fn peer(cases: &[Value]) -> Vec<Value> {
    if !python_ready() {
        let _ = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "autosar-e2e>=1.0",
                "crccheck",
                "cryptography",
            ])
            .status();
    }
    assert!(
        python_ready(),
        "the peer test needs python3 with autosar-e2e, crccheck and cryptography: \
         `python3 -m pip install autosar-e2e crccheck cryptography`"
    );
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let input = serde_json::to_vec(cases).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "protection_peer.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), cases.len());
    results
}

/// splitmix64: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One E2E case: Rust protects `raw`, the peer protects `raw` with the counter preset at
/// `counter_byte`/nibble by `preset`, and both check a corrupted copy.
struct E2eCase {
    protection: Protection,
    rust: Vec<u8>,
    mutated: Vec<u8>,
    peer: Value,
}

fn e2e_case(
    rng: &mut Rng,
    protection: Protection,
    len: usize,
    preset: impl Fn(&mut [u8], u8),
    mut peer: Value,
) -> E2eCase {
    let m = protection.counter_modulus().unwrap();
    let counter = (rng.next() % u64::from(m)) as u8;
    let raw = rng.bytes(len);
    let mut rust = raw.clone();
    protection.protect(&mut rust, counter).unwrap();
    let mut peer_raw = raw;
    preset(&mut peer_raw, counter);
    let mut mutated = rust.clone();
    let at = rng.below(len);
    mutated[at] ^= (rng.next() as u8).max(1);
    peer["raw"] = json!(hex(&peer_raw));
    peer["rust"] = json!(hex(&rust));
    peer["mutated"] = json!(hex(&mutated));
    E2eCase {
        protection,
        rust,
        mutated,
        peer,
    }
}

fn low_nibble(d: &mut [u8], at: usize, v: u8) {
    d[at] = (d[at] & 0xF0) | v;
}

#[test]
fn e2e_profiles_agree_with_autosar_e2e() {
    let mut rng = Rng(0x7E1E_3A71C5);
    let mut cases = Vec::new();
    for i in 0..600 {
        let case = match i % 3 {
            0 => {
                let len = 3 + rng.below(28);
                let o = rng.below(len - 1);
                let (mode, name) = [
                    (DataIdMode::Both, "both"),
                    (DataIdMode::Alt, "alt"),
                    (DataIdMode::Low, "low"),
                    (DataIdMode::Nibble, "nibble"),
                ][rng.below(4)];
                let mut id = rng.next() as u16;
                if mode == DataIdMode::Nibble {
                    id &= 0x0FFF;
                }
                let mut p = E2eP1::new(id, mode);
                p.crc_offset = (o * 8) as u16;
                p.counter_offset = p.crc_offset + 8;
                p.data_id_nibble_offset = p.crc_offset + 12;
                e2e_case(
                    &mut rng,
                    Protection::E2eP1(p),
                    len,
                    move |d, c| low_nibble(d, o + 1, c),
                    json!({"kind": "e2e_p1", "mode": name, "data_id": id, "offset": o}),
                )
            }
            1 => {
                let len = 3 + rng.below(62);
                let ids: [u8; 16] = rng.bytes(16).try_into().unwrap();
                e2e_case(
                    &mut rng,
                    Protection::E2eP2(E2eP2::new(ids)),
                    len,
                    |d, c| low_nibble(d, 1, c),
                    json!({"kind": "e2e_p2", "data_id_list": ids}),
                )
            }
            _ => {
                let len = 3 + rng.below(62);
                let o = rng.below(len - 2);
                let id = rng.next() as u16;
                let p = E2eP5 {
                    data_id: id,
                    offset: (o * 8) as u16,
                    data_length: None,
                };
                e2e_case(
                    &mut rng,
                    Protection::E2eP5(p),
                    len,
                    move |d, c| d[o + 2] = c,
                    json!({"kind": "e2e_p5", "data_id": id, "offset": o}),
                )
            }
        };
        cases.push(case);
    }
    let results = peer(&cases.iter().map(|c| c.peer.clone()).collect::<Vec<_>>());
    let mut mutated_refused = 0;
    for (c, r) in cases.iter().zip(&results) {
        assert_eq!(r["protected"], json!(hex(&c.rust)), "{:?}", c.protection);
        assert_eq!(r["check_rust"], json!(true), "{:?}", c.protection);
        let rust_ok = c.protection.check(&c.mutated).is_ok();
        assert_eq!(
            r["check_mutated"],
            json!(rust_ok),
            "{:?} {:02x?}",
            c.protection,
            c.mutated
        );
        mutated_refused += usize::from(!rust_ok);
    }
    // Random corruption is caught by both (an 8-bit CRC misses ~1/256 by chance).
    assert!(
        mutated_refused >= 590,
        "{mutated_refused} of 600 corrupted frames refused"
    );
}

#[test]
fn crcs_agree_with_crccheck() {
    let mut rng = Rng(0xC4C);
    let inputs: Vec<Vec<u8>> = (0..200).map(|i| rng.bytes(i % 70)).collect();
    let cases: Vec<Value> = inputs
        .iter()
        .map(|d| json!({"kind": "crc", "data": hex(d)}))
        .collect();
    for (d, r) in inputs.iter().zip(peer(&cases)) {
        assert_eq!(
            r["crc8_j1850"],
            json!(crc::CRC8_SAE_J1850.checksum(d)),
            "{d:02x?}"
        );
        assert_eq!(
            r["crc8_autosar"],
            json!(crc::CRC8_H2F.checksum(d)),
            "{d:02x?}"
        );
        assert_eq!(
            r["crc16_ccitt_false"],
            json!(crc::CRC16_CCITT_FALSE.checksum(d)),
            "{d:02x?}"
        );
    }
}

/// SecOC's MAC is cryptography's AES-CMAC of data id || payload || freshness, truncated: on a
/// byte-aligned layout (8 freshness bits, 64 MAC bits) the trailer is the freshness value's low
/// byte and the first 8 bytes of the peer's tag.
#[test]
fn secoc_mac_agrees_with_cryptography() {
    let mut rng = Rng(0x5EC0C);
    let mut cases = Vec::new();
    let mut frames = Vec::new();
    for i in 0..100 {
        let key = rng.bytes(16);
        let payload = rng.bytes(i % 40);
        let s = SecOc {
            data_id: rng.next() as u16,
            freshness_bits: 8 * (1 + rng.below(8) as u8),
            freshness_tx_bits: 8,
            mac_bits: 64,
        };
        let fv = rng.next() & s.max_freshness();
        let k = SecOcKey::from_bytes(&key).unwrap();
        let frame = s.authenticate(&k, &payload, fv).unwrap();
        let fv_bytes = fv.to_be_bytes();
        let msg = [
            &s.data_id.to_be_bytes()[..],
            &payload,
            &fv_bytes[8 - usize::from(s.freshness_bits / 8)..],
        ]
        .concat();
        cases.push(json!({"kind": "cmac", "key": hex(&key), "msg": hex(&msg)}));
        frames.push((payload.len(), fv, frame));
    }
    for ((n, fv, frame), r) in frames.iter().zip(peer(&cases)) {
        let tag = r["tag"].as_str().unwrap();
        assert_eq!(frame[*n], *fv as u8);
        assert_eq!(hex(&frame[n + 1..]), tag[..16]);
    }
}
