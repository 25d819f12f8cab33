//! Small strict CBOR helpers: the deterministic-encoding check every received message goes
//! through (RFC 8949 §4.2.1 core deterministic encoding, docs/protocol.md §4), and
//! integer-keyed maps.

use ciborium::Value;

/// Deepest nesting [`check_deterministic`] accepts (this protocol nests at most 4 levels).
const MAX_DEPTH: usize = 16;

/// Check that `bytes` is exactly one CBOR data item in core deterministic encoding
/// (RFC 8949 §4.2.1), as this protocol profiles it (docs/protocol.md §4):
///
/// * every integer, length and tag number in its shortest form; no bignums (tags 2, 3);
/// * definite lengths only (no indefinite-length strings, arrays or maps, no "break");
/// * map keys in strictly ascending bytewise lexicographic order of their encodings, which
///   also rules out duplicate keys;
/// * text strings valid UTF-8;
/// * no floating-point numbers and no simple values other than false/true/null (the protocol
///   defines none, so there is no shortest-float rule to apply);
/// * nothing after the item.
///
/// Never panics; recursion is bounded by [`MAX_DEPTH`].
pub(crate) fn check_deterministic(bytes: &[u8]) -> Result<(), ()> {
    let end = item(bytes, 0, 0)?;
    if end == bytes.len() { Ok(()) } else { Err(()) }
}

/// Whether `bytes` is one data item in the deterministic encoding docs/protocol.md §4 requires
/// of every message, protected header and plaintext (see `check_deterministic`).
pub fn is_deterministic(bytes: &[u8]) -> bool {
    check_deterministic(bytes).is_ok()
}

/// Reads an item head at `pos`: (major type, argument, position after the head). Refuses
/// non-shortest arguments and reserved / indefinite additional information.
fn head(b: &[u8], pos: usize) -> Result<(u8, u64, usize), ()> {
    let ib = *b.get(pos).ok_or(())?;
    let major = ib >> 5;
    let ai = ib & 0x1f;
    let arg = |n: usize| -> Result<u64, ()> {
        let s = b.get(pos + 1..pos + 1 + n).ok_or(())?;
        Ok(s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    };
    let (v, len, min) = match ai {
        0..=23 => (u64::from(ai), 0, 0),
        24 => (arg(1)?, 1, 24),
        25 => (arg(2)?, 2, 0x100),
        26 => (arg(4)?, 4, 0x1_0000),
        27 => (arg(8)?, 8, 0x1_0000_0000),
        // 28..=30 reserved; 31 indefinite length / break.
        _ => return Err(()),
    };
    if v < min {
        return Err(());
    }
    Ok((major, v, pos + 1 + len))
}

/// Validates one item starting at `pos`; returns the position after it.
fn item(b: &[u8], pos: usize, depth: usize) -> Result<usize, ()> {
    if depth > MAX_DEPTH {
        return Err(());
    }
    let (major, arg, mut at) = head(b, pos)?;
    // Every contained item takes at least one byte: a count larger than what is left is
    // malformed (and is refused before any work proportional to it).
    let left = (b.len() - at) as u64;
    match major {
        0 | 1 => Ok(at),
        2 | 3 => {
            if arg > left {
                return Err(());
            }
            let end = at + arg as usize;
            if major == 3 && std::str::from_utf8(&b[at..end]).is_err() {
                return Err(());
            }
            Ok(end)
        }
        4 => {
            if arg > left {
                return Err(());
            }
            for _ in 0..arg {
                at = item(b, at, depth + 1)?;
            }
            Ok(at)
        }
        5 => {
            if arg.saturating_mul(2) > left {
                return Err(());
            }
            let mut prev: Option<&[u8]> = None;
            for _ in 0..arg {
                let key_end = item(b, at, depth + 1)?;
                let key = &b[at..key_end];
                if prev.is_some_and(|p| p >= key) {
                    return Err(());
                }
                prev = Some(key);
                at = item(b, key_end, depth + 1)?;
            }
            Ok(at)
        }
        6 => {
            if arg == 2 || arg == 3 {
                // Bignums (tags 2, 3): the protocol defines none, and they are refused like
                // floats. Preferred serialization (RFC 8949 §3.4.3) would also forbid one whose
                // value fits in 64 bits, and decoders differ on the rest (ciborium cannot hold a
                // negative bignum below -2^127): the fuzzer found both.
                return Err(());
            }
            item(b, at, depth + 1)
        }
        // Major 7: only false, true, null (0xf4..=0xf6) in their one-byte form.
        _ => match b[pos] {
            0xf4..=0xf6 => Ok(at),
            _ => Err(()),
        },
    }
}

/// Encode a value (writing to a `Vec` cannot fail for values built by this crate).
pub(crate) fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if ciborium::ser::into_writer(v, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decode exactly one CBOR item in deterministic encoding ([`check_deterministic`]); as a
/// second guard it must also re-encode to the identical bytes.
pub(crate) fn decode_canonical(bytes: &[u8]) -> Result<Value, ()> {
    check_deterministic(bytes)?;
    let v: Value = ciborium::de::from_reader(bytes).map_err(|_| ())?;
    if to_vec(&v) != bytes {
        return Err(());
    }
    Ok(v)
}

/// An integer-keyed CBOR map with unique keys.
pub(crate) struct IntMap(pub(crate) Vec<(i64, Value)>);

impl IntMap {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, ()> {
        Self::from_value(decode_canonical(bytes)?)
    }

    pub(crate) fn from_value(v: Value) -> Result<Self, ()> {
        let Value::Map(entries) = v else {
            return Err(());
        };
        let mut out: Vec<(i64, Value)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Integer(i) = k else {
                return Err(());
            };
            let k = i64::try_from(i).map_err(|_| ())?;
            if out.iter().any(|(e, _)| *e == k) {
                return Err(());
            }
            out.push((k, v));
        }
        Ok(IntMap(out))
    }

    /// Reject keys outside `allowed`.
    pub(crate) fn only(&self, allowed: &[i64]) -> Result<(), ()> {
        if self.0.iter().all(|(k, _)| allowed.contains(k)) {
            Ok(())
        } else {
            Err(())
        }
    }

    pub(crate) fn get(&self, k: i64) -> Option<&Value> {
        self.0.iter().find(|(e, _)| *e == k).map(|(_, v)| v)
    }

    pub(crate) fn text(&self, k: i64) -> Option<&str> {
        match self.get(k) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn bytes(&self, k: i64) -> Option<&[u8]> {
        match self.get(k) {
            Some(Value::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn uint(&self, k: i64) -> Option<u64> {
        match self.get(k) {
            Some(Value::Integer(i)) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

/// Build an integer-keyed map value.
pub(crate) fn int_map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Integer(k.into()), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(hex: &[u8]) -> bool {
        is_deterministic(hex)
    }

    #[test]
    fn bignums_are_refused() {
        // Both found by the deterministic_cbor fuzz target (fuzz/regressions): a 7-byte bignum
        // (a plain integer in deterministic form) and a 16-byte negative bignum below -2^127.
        assert!(!ok(&[0xc2, 0x47, 0x43, 0xcd, 0x4b, 0x4b, 0x47, 0x43, 0xf1]));
        let mut neg = vec![0xc3, 0x50, 0xd0, 0xf5];
        neg.extend([0; 14]);
        assert!(!ok(&neg));
        assert!(!ok(&[0xc2, 0x49, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
        // Other tags stay allowed (the COSE tags 16, 17, 18 wrap every message).
        assert!(ok(&[0xd0, 0x80]));
    }

    #[test]
    fn shortest_forms_and_definite_lengths() {
        // Accepted: the shortest form of each argument size.
        for b in [
            &[0x17][..],
            &[0x18, 0x18],
            &[0x19, 0x01, 0x00],
            &[0x1a, 0x00, 0x01, 0x00, 0x00],
            &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0],
            &[0x37],
            &[0x3a, 0x00, 0x01, 0x00, 0x00], // -65537
            &[0x40],
            &[0x62, b'h', b'i'],
            &[0x82, 0x01, 0x02],
            &[0xa2, 0x01, 0x02, 0x03, 0x04],
            &[0xd0, 0x80],
            &[0xf4],
            &[0xf5],
            &[0xf6],
        ] {
            assert!(ok(b), "{b:02x?}");
        }
        // Refused: non-shortest integers / lengths / tags, indefinite lengths, break.
        for b in [
            &[0x18, 0x17][..],
            &[0x19, 0x00, 0xff],
            &[0x1a, 0x00, 0x00, 0xff, 0xff],
            &[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            &[0x38, 0x07],
            &[0x58, 0x01, 0x00],
            &[0x78, 0x01, b'a'],
            &[0x98, 0x01, 0x01],
            &[0xb8, 0x01, 0x01, 0x02],
            &[0xd8, 0x10, 0x80],
            &[0x5f, 0x41, 0x00, 0xff],
            &[0x7f, 0x61, b'a', 0xff],
            &[0x9f, 0x01, 0xff],
            &[0xbf, 0x01, 0x02, 0xff],
            &[0xff],
            &[0x1c],
        ] {
            assert!(!ok(b), "{b:02x?}");
        }
    }

    #[test]
    fn map_keys_sorted_unique() {
        assert!(ok(&[0xa3, 0x01, 0x00, 0x04, 0x00, 0x3a, 0, 1, 0, 0, 0x00]));
        // 4 before 1, and -65537 (0x3a…) before 4.
        assert!(!ok(&[0xa2, 0x04, 0x00, 0x01, 0x00]));
        assert!(!ok(&[0xa2, 0x3a, 0, 1, 0, 0, 0x00, 0x04, 0x00]));
        // Duplicate key.
        assert!(!ok(&[0xa2, 0x01, 0x00, 0x01, 0x00]));
        // Shorter encodings sort first (bytewise): 0x18 0x18 (24) after 0x17 (23).
        assert!(ok(&[0xa2, 0x17, 0x00, 0x18, 0x18, 0x00]));
        assert!(!ok(&[0xa2, 0x18, 0x18, 0x00, 0x17, 0x00]));
        // Nested maps are checked too.
        assert!(!ok(&[0xa1, 0x01, 0xa2, 0x02, 0x00, 0x01, 0x00]));
    }

    #[test]
    fn malformed_and_out_of_profile() {
        for b in [
            &[][..],
            &[0x01, 0x02],                                           // trailing bytes
            &[0x62, b'a'],                                           // short string
            &[0x62, 0xff, 0xfe],                                     // invalid UTF-8
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // huge count
            &[0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0xf9, 0x3c, 0x00], // floats are not part of this protocol
            &[0xf7],             // undefined
            &[0xf8, 0x20],       // simple(32)
        ] {
            assert!(!ok(b), "{b:02x?}");
        }
        // Deep nesting is refused, never a stack overflow.
        let deep = vec![0x81u8; 10_000];
        assert!(!ok(&deep));
    }

    #[test]
    fn accepted_bytes_re_encode_identically() {
        let samples: [&[u8]; 3] = [
            &[0xa2, 0x01, 0x63, b'a', b'b', b'c', 0x02, 0x82, 0x20, 0x40],
            &[0xd0, 0x83, 0x40, 0xa0, 0x41, 0x00],
            &[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ];
        for b in samples {
            assert!(ok(b));
            let v = decode_canonical(b).expect("decodes");
            assert_eq!(to_vec(&v), b);
        }
    }
}
