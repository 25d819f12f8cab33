//! Property tests of the frame protection schemes: a frame built by `protect` passes `check`
//! under every scheme, and every 1-bit change of it fails, with the limits each scheme has by
//! design asserted as exactly what they are:
//! - XOR detects every 1-bit change, and misses two flips of the same bit in two bytes;
//! - E2E profile 1 `alt` and profile 2 tie the data id to the counter, so a counter flip is
//!   missed for one data id difference in 256 (shown by counting, below); every other flip is
//!   detected;
//! - SecOC: a truncated MAC of `mac_bits` lets a change pass with probability 2^-mac_bits, so
//!   the random property runs with 64..=128-bit MACs and the default 24-bit MAC is checked on
//!   fixed frames.
//!
//! And no input panics: arbitrary configurations on arbitrary frames are an `Ok` or a typed
//! error.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use telematics_can::protection::{
    Crc8J1850, DataIdMode, E2eP1, E2eP2, E2eP5, Protection, SecOc, SecOcKey, XorChecksum,
};

fn mode() -> impl Strategy<Value = DataIdMode> {
    prop_oneof![
        Just(DataIdMode::Both),
        Just(DataIdMode::Alt),
        Just(DataIdMode::Low),
        Just(DataIdMode::Nibble),
    ]
}

/// A valid scheme for a frame of the returned length.
fn scheme() -> impl Strategy<Value = (Protection, usize)> {
    let one_byte = (1usize..=64).prop_flat_map(|len| (0..len, Just(len)));
    let p1 = (2usize..=30, any::<u16>(), mode()).prop_flat_map(|(len, id, mode)| {
        let nibbles = (len * 2) as u16;
        (0..len as u16, 0..nibbles, 0..nibbles).prop_map(move |(crc, ctr, nib)| {
            let mut c = E2eP1::new(id, mode);
            if mode == DataIdMode::Nibble {
                c.data_id &= 0x0FFF;
            }
            c.crc_offset = crc * 8;
            c.counter_offset = ctr * 4;
            c.data_id_nibble_offset = nib * 4;
            (Protection::E2eP1(c), len)
        })
    });
    let p2 = (2usize..=64, any::<[u8; 16]>())
        .prop_map(|(len, ids)| (Protection::E2eP2(E2eP2::new(ids)), len));
    let p5 = (3usize..=64, any::<u16>(), any::<bool>()).prop_flat_map(|(len, id, fixed)| {
        (0..=(len - 3) as u16).prop_map(move |o| {
            let c = E2eP5 {
                data_id: id,
                offset: o * 8,
                data_length: fixed.then_some(len as u16 * 8),
            };
            (Protection::E2eP5(c), len)
        })
    });
    prop_oneof![
        one_byte
            .clone()
            .prop_map(|(b, len)| (Protection::Xor(XorChecksum { checksum_byte: b }), len)),
        one_byte.prop_map(|(b, len)| (Protection::Crc8J1850(Crc8J1850 { crc_byte: b }), len)),
        p1,
        p2,
        p5,
    ]
    .prop_filter("the layout is valid", |(p, len)| p.validate(*len).is_ok())
}

/// Whether a passing flip of `bit` is one of the scheme's documented limits.
fn documented_counter_limit(p: &Protection, bit: usize) -> bool {
    match p {
        // Only the counter's lowest bit switches the data id byte.
        Protection::E2eP1(c) => {
            let [lo, hi] = c.data_id.to_le_bytes();
            c.data_id_mode == DataIdMode::Alt && bit == usize::from(c.counter_offset) && lo != hi
        }
        // Any counter bit switches the data id list entry.
        Protection::E2eP2(_) => (8..12).contains(&bit),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn protected_frames_pass_and_every_bit_flip_fails(
        (p, len) in scheme(),
        data in proptest::collection::vec(any::<u8>(), 64),
        counter in any::<u8>(),
    ) {
        let counter = p.counter_modulus().map_or(0, |m| (u16::from(counter) % m) as u8);
        let mut frame = data[..len].to_vec();
        p.protect(&mut frame, counter).unwrap();
        let got = p.check(&frame).unwrap();
        prop_assert_eq!(got.counter, p.counter_modulus().map(|_| counter));
        for bit in 0..len * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            if p.check(&bad).is_ok() {
                prop_assert!(
                    documented_counter_limit(&p, bit),
                    "{p:?}: flip of bit {bit} of {frame:02x?} passes"
                );
            }
        }
    }

    #[test]
    fn xor_misses_exactly_paired_flips(
        len in 3usize..=64,
        data in proptest::collection::vec(any::<u8>(), 64),
        pick in any::<(prop::sample::Index, prop::sample::Index, u8)>(),
    ) {
        let p = Protection::Xor(XorChecksum { checksum_byte: len - 1 });
        let mut frame = data[..len].to_vec();
        p.protect(&mut frame, 0).unwrap();
        let (a, b) = (pick.0.index(len - 1), pick.1.index(len - 1));
        prop_assume!(a != b);
        let bit = 1u8 << (pick.2 % 8);
        let mut same_column = frame.clone();
        same_column[a] ^= bit;
        same_column[b] ^= bit;
        prop_assert!(p.check(&same_column).is_ok(), "the documented XOR limit");
        let mut other_column = frame.clone();
        other_column[a] ^= bit;
        other_column[b] ^= bit.rotate_left(1);
        prop_assert!(p.check(&other_column).is_err());
    }

    #[test]
    fn secoc_authenticated_frames_verify_and_every_bit_flip_fails(
        key in any::<[u8; 16]>(),
        data_id in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 1..=56),
        bits in (1u8..=64).prop_flat_map(|fb| (Just(fb), 0..=fb)),
        mac_bits in 64u8..=128,
        fresh in any::<u64>(),
    ) {
        let s = SecOc { data_id, freshness_bits: bits.0, freshness_tx_bits: bits.1, mac_bits };
        let key = SecOcKey::from_bytes(&key).unwrap();
        let fv = fresh & s.max_freshness();
        prop_assume!(fv > 0);
        let frame = s.authenticate(&key, &payload, fv).unwrap();
        prop_assert_eq!(frame.len(), payload.len() + s.trailer_len());
        let last = Some(fv - 1);
        let v = s.verify(&key, &frame, last).unwrap();
        prop_assert_eq!((v.payload, v.freshness), (payload.as_slice(), fv));
        prop_assert!(s.verify(&key, &frame, Some(fv)).is_err(), "replay");
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(s.verify(&key, &bad, last).is_err(), "flip of bit {}", bit);
        }
    }

    #[test]
    fn arbitrary_configurations_and_frames_never_panic(
        kind in 0u8..6,
        a in any::<u16>(), b in any::<u16>(), c in any::<u16>(), d in any::<u16>(),
        len in any::<Option<u16>>(),
        data in proptest::collection::vec(any::<u8>(), 0..80),
        counter in any::<u8>(),
    ) {
        let p = match kind {
            0 => Protection::Xor(XorChecksum { checksum_byte: usize::from(a) }),
            1 => Protection::Crc8J1850(Crc8J1850 { crc_byte: usize::from(a) }),
            2 | 3 => Protection::E2eP1(E2eP1 {
                data_id: a,
                data_id_mode: [DataIdMode::Both, DataIdMode::Alt, DataIdMode::Low, DataIdMode::Nibble][usize::from(d % 4)],
                crc_offset: b,
                counter_offset: c,
                data_id_nibble_offset: d,
                data_length: len,
            }),
            4 => Protection::E2eP2(E2eP2 { data_id_list: [a as u8; 16], data_length: len }),
            _ => Protection::E2eP5(E2eP5 { data_id: a, offset: b, data_length: len }),
        };
        let valid = p.validate(data.len()).is_ok();
        let _ = p.check(&data);
        let mut frame = data.clone();
        if p.protect(&mut frame, counter).is_ok() {
            prop_assert!(valid, "protect accepted what validate refuses");
            prop_assert!(p.check(&frame).is_ok());
        } else {
            prop_assert_eq!(&frame, &data, "a refused protect leaves the frame alone");
        }
        let s = SecOc { data_id: a, freshness_bits: b as u8, freshness_tx_bits: c as u8, mac_bits: d as u8 };
        let key = SecOcKey::from_bytes(&[7; 16]).unwrap();
        let _ = s.verify(&key, &data, len.map(u64::from));
    }
}

/// E2E profile 1 `alt` with the default layout: over all 65 536 data ids, a flip of the
/// counter's lowest bit (counter 0 -> 1) passes for exactly the 256 whose `lo ^ hi` is the one
/// value that cancels in the CRC; in `both` mode no data id lets it pass.
#[test]
fn e2e_p1_alt_counter_flip_limit_is_one_in_256() {
    let count = |mode| {
        (0..=u16::MAX)
            .filter(|&id| {
                let p = Protection::E2eP1(E2eP1::new(id, mode));
                let mut f = [0u8; 8];
                p.protect(&mut f, 0).unwrap();
                f[1] ^= 1;
                p.check(&f).is_ok()
            })
            .count()
    };
    assert_eq!(count(DataIdMode::Alt), 256);
    assert_eq!(count(DataIdMode::Both), 0);
}

/// E2E profile 2: for counter 0 -> 1, exactly one difference `ids[0] ^ ids[1]` of 256 lets the
/// flip pass.
#[test]
fn e2e_p2_counter_flip_limit_is_one_in_256() {
    let passing = (0..=255u8)
        .filter(|&diff| {
            let mut ids = [0x5Au8; 16];
            ids[1] ^= diff;
            let p = Protection::E2eP2(E2eP2::new(ids));
            let mut f = [0u8; 8];
            p.protect(&mut f, 0).unwrap();
            f[1] ^= 1;
            p.check(&f).is_ok()
        })
        .count();
    assert_eq!(passing, 1);
}

/// The default SecOC layout (8 freshness bits, 24 MAC bits) on fixed frames: every 1-bit change
/// fails.
#[test]
fn secoc_default_layout_every_bit_flip_fails() {
    let key = SecOcKey::from_bytes(&[0x2b; 16]).unwrap();
    for (id, payload, fv) in [
        (0x0001u16, &[0u8; 4][..], 1u64),
        (0x0200, &[1, 2, 3, 4], 0x1234),
        (0xFFFF, &[0xFF; 4], 0xFF),
    ] {
        let s = SecOc::new(id);
        let frame = s.authenticate(&key, payload, fv).unwrap();
        assert_eq!(frame.len(), 8);
        assert_eq!(s.verify(&key, &frame, Some(fv - 1)).unwrap().freshness, fv);
        for bit in 0..64 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(s.verify(&key, &bad, Some(fv - 1)).is_err(), "bit {bit}");
        }
    }
}
