//! COSE_Sign1 reset authorization verified against a fixed backend key and an empty state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telematics_security::state::{Config, SecurityState};

// Ed25519 public key (arbitrary fixed point; signatures over fuzz input will not verify,
// so this exercises size/decode/signature-check paths).
const BACKEND_PK: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];

fuzz_target!(|data: &[u8]| {
    let mut state = SecurityState::default();
    let cfg = Config::default();
    let _ = telematics_security::arm_reset(
        &mut state,
        &cfg,
        "WDD2030461A000001",
        &BACKEND_PK,
        data,
        1_700_000_000,
    );
});
