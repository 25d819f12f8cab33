//! Frame protection and SecOC on arbitrary configurations and frames: `validate`, `check`,
//! `protect` and `verify` never panic, and a frame `protect` / `authenticate` built always
//! passes `check` / `verify`.
//!
//! Input: a 12-byte header, then the frame.
//! - byte 0: scheme (0 none, 1 XOR, 2 CRC-8, 3 E2E P1, 4 E2E P2, 5 E2E P5, 6 SecOC);
//! - bytes 1..9: four little-endian u16 parameters (byte/bit offsets, data id, widths);
//! - bytes 9..11: data_length in bits (0xFFFF = none); byte 11: counter / SecOC last accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telematics_can::protection::{
    Crc8J1850, DataIdMode, E2eP1, E2eP2, E2eP5, Protection, SecOc, SecOcKey, XorChecksum,
};

fn protection(kind: u8, p: [u16; 4], data_length: Option<u16>) -> Protection {
    let mode = [
        DataIdMode::Both,
        DataIdMode::Alt,
        DataIdMode::Low,
        DataIdMode::Nibble,
    ];
    match kind {
        1 => Protection::Xor(XorChecksum {
            checksum_byte: usize::from(p[0]),
        }),
        2 => Protection::Crc8J1850(Crc8J1850 {
            crc_byte: usize::from(p[0]),
        }),
        3 => Protection::E2eP1(E2eP1 {
            data_id: p[0],
            data_id_mode: mode[usize::from(p[3] % 4)],
            crc_offset: p[1],
            counter_offset: p[2],
            data_id_nibble_offset: p[3] >> 2,
            data_length,
        }),
        4 => {
            let mut list = [0u8; 16];
            for (i, b) in list.iter_mut().enumerate() {
                *b = (p[i / 4] >> (i % 4 * 4)) as u8;
            }
            Protection::E2eP2(E2eP2 {
                data_id_list: list,
                data_length,
            })
        }
        5 => Protection::E2eP5(E2eP5 {
            data_id: p[0],
            offset: p[1],
            data_length,
        }),
        _ => Protection::None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, frame)) = data.split_first_chunk::<12>() else {
        return;
    };
    let p = std::array::from_fn(|i| u16::from_le_bytes([head[1 + 2 * i], head[2 + 2 * i]]));
    let data_length = match u16::from_le_bytes([head[9], head[10]]) {
        0xFFFF => None,
        bits => Some(bits),
    };
    let counter = head[11];
    if head[0] % 7 == 6 {
        let s = SecOc {
            data_id: p[0],
            freshness_bits: p[1] as u8,
            freshness_tx_bits: p[2] as u8,
            mac_bits: p[3] as u8,
        };
        let key = SecOcKey::from_bytes(&[0x5A; 16]).unwrap_or_else(|e| panic!("key: {e}"));
        let last = data_length.map(u64::from);
        let _ = s.verify(&key, frame, last);
        let fv = u64::from(counter);
        if let Ok(secured) = s.authenticate(&key, frame, fv) {
            // The receiver that last accepted fv - 1 (none before 0) rebuilds fv.
            let v = s
                .verify(&key, &secured, fv.checked_sub(1))
                .unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!((v.payload, v.freshness), (frame, fv));
        }
        return;
    }
    let prot = protection(head[0] % 7, p, data_length);
    let _ = prot.validate(frame.len());
    let _ = prot.check(frame);
    let counter = prot
        .counter_modulus()
        .map_or(counter, |m| (u16::from(counter) % m) as u8);
    let mut protected = frame.to_vec();
    if prot.protect(&mut protected, counter).is_ok() {
        let got = prot
            .check(&protected)
            .unwrap_or_else(|e| panic!("{prot:?}: {e}"));
        assert_eq!(got.counter, prot.counter_modulus().map(|_| counter));
    }
});
