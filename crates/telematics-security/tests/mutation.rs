//! Property: no byte-level mutation (bit flip, insert, delete, truncate, and combinations) of a
//! valid command envelope ever verifies.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Replace(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match *m {
        Mutation::Flip(p, b) if n > 0 => bytes[p % n] ^= 1 << b,
        Mutation::Insert(p, b) => bytes.insert(p % (n + 1), b),
        Mutation::Delete(p) if n > 0 => {
            bytes.remove(p % n);
        }
        Mutation::Truncate(p) => bytes.truncate(p % (n + 1)),
        Mutation::Replace(p, b) if n > 0 => bytes[p % n] = b,
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_mutation_verifies(muts in proptest::collection::vec(mutation(), 1..4)) {
        let mut s = setup();
        let original = s.cmd(1, CODE);
        let mut bytes = original.clone();
        for m in &muts {
            apply(&mut bytes, m);
        }
        prop_assume!(bytes != original);
        let outcome = s.run(&bytes, NOW);
        prop_assert_ne!(outcome, "ok");
        // The untouched original still verifies afterwards unless the mutant consumed the
        // counter (only possible for an authentic message, which would be a failure above).
        prop_assert_eq!(s.run(&original, NOW), "ok");
    }
}

#[test]
fn the_original_verifies() {
    let mut s = setup();
    let b = s.cmd(1, CODE);
    assert!(telematics_security::is_deterministic(&b));
    assert_eq!(s.run(&b, NOW), "ok");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Differential check of the deterministic-CBOR rule against ciborium: whatever
    /// `is_deterministic` accepts (mutants of a real envelope and of its plaintext-like maps)
    /// is well-formed CBOR that re-encodes to exactly the same bytes.
    #[test]
    fn accepted_cbor_is_its_own_encoding(muts in proptest::collection::vec(mutation(), 0..4)) {
        let s = setup();
        let mut bytes = s.cmd(1, CODE);
        for m in &muts {
            apply(&mut bytes, m);
        }
        if telematics_security::is_deterministic(&bytes) {
            let v: ciborium::Value = ciborium::de::from_reader(&bytes[..]).unwrap();
            let mut out = Vec::new();
            ciborium::ser::into_writer(&v, &mut out).unwrap();
            prop_assert_eq!(out, bytes);
        }
    }
}
