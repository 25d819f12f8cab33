//! Property tests: decode(encode(x)) == x within one scaling step for every signal kind, and
//! no panics on arbitrary frames, candump lines or DBC text.

use std::sync::OnceLock;

use proptest::prelude::*;
use telematics_can::{
    CanId, CandumpReader, Dbc, DecodeOutcome, EncodeValue, RawValue, demo, parse_line,
};

#[derive(Debug, Clone)]
struct Layout {
    motorola: bool,
    signed: bool,
    len: u32,
    start: u32,
    size: u32,
}

/// A signal layout that fits a message of `size` bytes, leaving byte 0 free when `skip_byte0`.
fn layout(
    len_range: std::ops::RangeInclusive<u32>,
    skip_byte0: bool,
) -> impl Strategy<Value = Layout> {
    (
        any::<bool>(),
        any::<bool>(),
        len_range,
        prop_oneof![Just(8u32), Just(64u32)],
    )
        .prop_flat_map(move |(motorola, signed, len, size)| {
            let lo = if skip_byte0 { 8 } else { 0 };
            let total = size * 8;
            (lo..=(total - len)).prop_map(move |p| {
                // p = linear position of the LSB (Intel) or of the MSB in MSB-first numbering (Motorola)
                let start = if motorola {
                    (p / 8) * 8 + (7 - p % 8)
                } else {
                    p
                };
                Layout {
                    motorola,
                    signed,
                    len,
                    start,
                    size,
                }
            })
        })
}

fn sig_line(name: &str, mux: &str, l: &Layout, factor: f64, offset: f64) -> String {
    format!(
        " SG_ {name} {mux}: {}|{}@{}{} ({factor},{offset}) [0|0] \"\" X\n",
        l.start,
        l.len,
        if l.motorola { 0 } else { 1 },
        if l.signed { '-' } else { '+' }
    )
}

fn dbc_with(l: &Layout, factor: f64, offset: f64, extra: &str, mux: Option<u32>) -> Dbc {
    let mut text = format!("VERSION \"\"\n\nBU_: X\n\nBO_ 291 M: {} X\n", l.size);
    if mux.is_some() {
        text.push_str(" SG_ Sw M : 0|4@1+ (1,0) [0|15] \"\" X\n");
    }
    let m = mux.map(|v| format!("m{v} ")).unwrap_or_default();
    text.push_str(&sig_line("S", &m, l, factor, offset));
    text.push('\n');
    text.push_str(extra);
    Dbc::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn roundtrip<'a>(dbc: &'a Dbc, v: EncodeValue<'_>) -> (Vec<u8>, telematics_can::DecodedSignal<'a>) {
    let m = dbc.message_by_name("M").expect("M");
    let data = m.encode(&[("S", v)]).expect("encode");
    assert_eq!(data.len(), m.size);
    let DecodeOutcome::Decoded(d) = dbc.decode(CanId::standard(291), &data).expect("decode") else {
        panic!("unknown")
    };
    let s = d
        .signals
        .into_iter()
        .find(|s| s.def.name == "S")
        .expect("signal present");
    (data, s)
}

/// u64 values with the edges (0, 1, 2^53 +- 1, 2^63 +- 1, u64::MAX) weighted in.
fn wide_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        1 => prop::sample::select(vec![
            0u64,
            1,
            (1 << 53) - 1,
            1 << 53,
            (1 << 53) + 1,
            (1 << 63) - 1,
            1 << 63,
            (1 << 63) + 1,
            u64::MAX - 1,
            u64::MAX,
        ]),
    ]
}

/// Frame bit positions of a signal, LSB first, by the DBC definition (not the crate's layout
/// math): Intel counts up from the start bit; Motorola starts at the MSB and walks the
/// "sawtooth" (bit 0 of a byte continues at bit 7 of the next byte).
fn oracle_positions(l: &Layout) -> Vec<u32> {
    let mut msb_first = Vec::with_capacity(l.len as usize);
    if l.motorola {
        let mut b = l.start;
        for _ in 0..l.len {
            msb_first.push(b);
            b = if b.is_multiple_of(8) { b + 15 } else { b - 1 };
        }
        msb_first.reverse();
        msb_first
    } else {
        (l.start..l.start + l.len).collect()
    }
}

fn oracle_read(data: &[u8], l: &Layout) -> u64 {
    oracle_positions(l)
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, p)| {
            acc | (u64::from((data[(p / 8) as usize] >> (p % 8)) & 1) << i)
        })
}

fn oracle_write(data: &mut [u8], l: &Layout, bits: u64) {
    for (i, p) in oracle_positions(l).iter().enumerate() {
        let byte = &mut data[(p / 8) as usize];
        if (bits >> i) & 1 == 1 {
            *byte |= 1 << (p % 8);
        } else {
            *byte &= !(1 << (p % 8));
        }
    }
}

/// The smallest raw value above the signal's range (`None` for unsigned 64-bit).
fn one_above(l: &Layout) -> Option<RawValue> {
    match (l.signed, l.len) {
        (true, 64) => Some(RawValue::Unsigned(1 << 63)),
        (true, n) => Some(RawValue::Signed(1 << (n - 1))),
        (false, 64) => None,
        (false, n) => Some(RawValue::Unsigned(1 << n)),
    }
}

/// Every width 1..=64 (not only what the proptest draws), both byte orders, signed and
/// unsigned, aligned and unaligned: the edge raw values round-trip exactly, in the bits the
/// oracle expects.
#[test]
fn every_width_edges_exact() {
    for len in 1..=64u32 {
        for motorola in [false, true] {
            for signed in [false, true] {
                for p in [0u32, 3] {
                    let size = 64u32;
                    if p + len > size * 8 {
                        continue;
                    }
                    let start = if motorola {
                        (p / 8) * 8 + (7 - p % 8)
                    } else {
                        p
                    };
                    let l = Layout {
                        motorola,
                        signed,
                        len,
                        start,
                        size,
                    };
                    let dbc = dbc_with(&l, 1.0, 0.0, "", None);
                    let mask = if len == 64 {
                        u64::MAX
                    } else {
                        (1u64 << len) - 1
                    };
                    for seed in [
                        0u64,
                        1,
                        1 << 53,
                        (1 << 53) + 1,
                        1 << 63,
                        u64::MAX - 1,
                        u64::MAX,
                    ] {
                        let bits = seed & mask;
                        let raw = if signed {
                            let sh = 64 - len;
                            RawValue::Signed(((bits << sh) as i64) >> sh)
                        } else {
                            RawValue::Unsigned(bits)
                        };
                        let (data, s) = roundtrip(&dbc, EncodeValue::Raw(raw));
                        assert_eq!(s.raw, raw, "{l:?}");
                        assert_eq!(oracle_read(&data, &l), bits, "{l:?}");
                    }
                    if let Some(over) = one_above(&l) {
                        let m = dbc.message_by_name("M").expect("M");
                        assert!(m.encode(&[("S", EncodeValue::Raw(over))]).is_err(), "{l:?}");
                    }
                }
            }
        }
    }
}

fn factor() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(0.5),
        Just(0.1),
        Just(0.01),
        Just(0.25),
        Just(2.0),
        Just(-0.05),
        Just(0.00544368)
    ]
}

fn offset() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-40.0),
        Just(822.0),
        Just(-819.2),
        Just(1000.0)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Integer signals, scaled/offset, Intel/Motorola, signed/unsigned: physical values survive
    /// within half a scaling step.
    #[test]
    fn scaled_integer_roundtrip(l in layout(1..=52, false), f in factor(), o in offset(), frac in 0.0f64..1.0) {
        let dbc = dbc_with(&l, f, o, "", None);
        let (min_raw, max_raw) = if l.signed {
            (-(2f64.powi(l.len as i32 - 1)), 2f64.powi(l.len as i32 - 1) - 1.0)
        } else {
            (0.0, 2f64.powi(l.len as i32) - 1.0)
        };
        // any real raw value within range (not only integers): rounding must stay within one step
        let raw = min_raw + (max_raw - min_raw) * frac;
        let phys = raw * f + o;
        let (_, s) = roundtrip(&dbc, EncodeValue::Physical(phys));
        let tol = f.abs() * 0.5 + 1e-9 * phys.abs().max(1.0);
        prop_assert!((s.physical - phys).abs() <= tol, "phys {} decoded {} tol {}", phys, s.physical, tol);
    }

    /// Exact raw values over every width 1..=64, unsigned and signed, Intel and Motorola, raw
    /// values up to u64::MAX: the encoded bits match an independent bit-by-bit oracle, the
    /// decoded raw value is exactly the encoded one, and no other bit is touched.
    #[test]
    fn raw_integer_roundtrip_full_width(l in layout(1..=64, false), seed in wide_u64()) {
        let dbc = dbc_with(&l, 1.0, 0.0, "", None);
        let bits = if l.len == 64 { seed } else { seed & ((1u64 << l.len) - 1) };
        let raw = if l.signed {
            let sh = 64 - l.len;
            RawValue::Signed(((bits << sh) as i64) >> sh)
        } else {
            RawValue::Unsigned(bits)
        };
        let (data, s) = roundtrip(&dbc, EncodeValue::Raw(raw));
        prop_assert_eq!(s.raw, raw);
        prop_assert_eq!(oracle_read(&data, &l), bits, "bit placement");
        let mut expect = vec![0u8; data.len()];
        oracle_write(&mut expect, &l, bits);
        prop_assert_eq!(&data, &expect);
        // no bits outside the signal are touched
        let m = dbc.message_by_name("M").expect("M");
        let mut cleared = data.clone();
        m.encode_into(&mut cleared, &[("S", EncodeValue::Raw(RawValue::Unsigned(0)))]).expect("clear");
        prop_assert!(cleared.iter().all(|b| *b == 0));
        let mut full = vec![0xFFu8; data.len()];
        m.encode_into(&mut full, &[("S", EncodeValue::Raw(raw))]).expect("over ones");
        let mut ones = vec![0xFFu8; data.len()];
        oracle_write(&mut ones, &l, bits);
        prop_assert_eq!(full, ones);
        // one above the range is refused (unsigned: 2^len; signed: 2^(len-1))
        if let Some(over) = one_above(&l) {
            prop_assert!(m.encode(&[("S", EncodeValue::Raw(over))]).is_err(), "{} accepted", over);
        }
    }

    /// IEEE float32 / float64 signals (SIG_VALTYPE_ 1/2) are bit-exact.
    #[test]
    fn float_roundtrip(motorola in any::<bool>(), double in any::<bool>(), x in any::<f64>().prop_filter("finite", |v| v.is_finite()), pos in 0u32..=32) {
        let len = if double { 64 } else { 32 };
        let size = 64u32;
        let p = pos * 8; // byte aligned or not doesn't matter for the layout math; use byte steps
        let start = if motorola { (p / 8) * 8 + 7 } else { p };
        let l = Layout { motorola, signed: true, len, start, size };
        let extra = format!("SIG_VALTYPE_ 291 S : {};\n", if double { 2 } else { 1 });
        let dbc = dbc_with(&l, 1.0, 0.0, &extra, None);
        let x = if double { x } else { f64::from(x as f32) };
        if !x.is_finite() { return Ok(()); }
        let (_, s) = roundtrip(&dbc, EncodeValue::Physical(x));
        prop_assert_eq!(s.physical.to_bits(), x.to_bits());
    }

    /// Multiplexed signals: the encoder sets the switch, the decoder only reports the signal
    /// when the switch matches.
    #[test]
    fn multiplexed_roundtrip(l in layout(1..=32, true), f in factor(), mux in 0u32..16, raw_frac in 0.0f64..1.0) {
        let dbc = dbc_with(&l, f, 0.0, "", Some(mux));
        let max_raw = if l.signed { 2f64.powi(l.len as i32 - 1) - 1.0 } else { 2f64.powi(l.len as i32) - 1.0 };
        let phys = (max_raw * raw_frac).round() * f;
        let (mut data, s) = roundtrip(&dbc, EncodeValue::Physical(phys));
        prop_assert!((s.physical - phys).abs() <= f.abs() * 0.5 + 1e-9);
        prop_assert_eq!(u32::from(data[0] & 0x0F), mux);
        data[0] = (data[0] & 0xF0) | ((mux as u8 + 1) & 0x0F);
        let DecodeOutcome::Decoded(d) = dbc.decode(CanId::standard(291), &data).expect("decode") else { panic!("unknown") };
        prop_assert!(d.get("S").is_none());
        prop_assert!(d.get("Sw").is_some());
    }
}

fn tesla() -> Option<&'static Dbc> {
    static T: OnceLock<Option<Dbc>> = OnceLock::new();
    T.get_or_init(|| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/external/tesla_model3.dbc");
        let text = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("external fixture {} missing: {e}", p.display()));
        Some(Dbc::parse(&text).expect("tesla loads"))
    })
    .as_ref()
}

fn demo_dbc() -> &'static Dbc {
    static D: OnceLock<Dbc> = OnceLock::new();
    D.get_or_init(|| Dbc::parse(demo::DEMO_DBC).expect("demo"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_never_panic(id in 0u32..0x800, ext in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..=64)) {
        let cid = if ext { CanId::extended(id | 0x18FF_0000) } else { CanId::standard(id as u16) };
        for dbc in [demo_dbc(), tesla().expect("tesla")] {
            match dbc.decode(cid, &data) {
                Ok(DecodeOutcome::Decoded(d)) => {
                    for s in &d.signals { let _ = s.physical; }
                }
                Ok(DecodeOutcome::UnknownId | DecodeOutcome::Remote) => {}
                Err(e) => prop_assert_eq!(e.code(), "short_frame"),
            }
        }
    }

    #[test]
    fn random_candump_lines_never_panic(line in ".{0,120}") {
        let _ = parse_line(&line);
    }

    #[test]
    fn structured_candump_lines_never_panic(
        ts in "\\(?[0-9]{0,12}\\.?[0-9]{0,8}\\)?",
        iface in "[a-z0-9]{0,6}",
        id in "[0-9A-Fa-fx]{0,9}",
        sep in prop_oneof![Just("#"), Just("##"), Just("#R"), Just("")],
        data in "[0-9A-Fa-f._R]{0,140}",
    ) {
        let line = format!("{ts} {iface} {id}{sep}{data}");
        if let Ok(f) = parse_line(&line) {
            prop_assert!(f.frame.data.len() <= 64);
            prop_assert!(f.frame.fd || f.frame.data.len() <= 8);
        }
        let text = format!("{line}\n{line}\n\u{0}\u{ff}\n");
        let mut r = CandumpReader::from_text(&text);
        let n = r.by_ref().count() as u64;
        prop_assert_eq!(n + r.garbage_count(), 3);
    }

    #[test]
    fn mutated_dbc_never_panics(pos in 0usize..4000, len in 0usize..40, junk in "[ -~\\n]{0,40}") {
        let src = demo::DEMO_DBC;
        let pos = pos.min(src.len());
        let mut end = (pos + len).min(src.len());
        while !src.is_char_boundary(end) { end -= 1; }
        let mut pos = pos;
        while !src.is_char_boundary(pos) { pos -= 1; }
        let text = format!("{}{}{}", &src[..pos], junk, &src[end.max(pos)..]);
        if let Ok(dbc) = Dbc::parse(&text) {
            for m in dbc.messages() { let _ = m.decode(&[0xA5; 64]); }
        }
    }
}
