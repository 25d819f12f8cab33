//! Small strict CBOR helpers: integer-keyed maps, canonical (re-encodes to the same bytes).

use ciborium::Value;

/// Encode a value (writing to a `Vec` cannot fail for values built by this crate).
pub(crate) fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if ciborium::ser::into_writer(v, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decode exactly one CBOR item that must re-encode to the identical bytes (minimal lengths,
/// definite lengths, no trailing data).
pub(crate) fn decode_canonical(bytes: &[u8]) -> Result<Value, ()> {
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
