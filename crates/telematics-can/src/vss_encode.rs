//! VSS values back to frames: the inverse of a [`BoundMapping`], for a simulator that plays a
//! vehicle from its files (DBC and mapping) instead of code written for one car.
//!
//! A value is encoded through its entry's transform run backwards: no transform sends the value
//! as the physical value (a bool as 0/1, a text as a value-table label); a table sends the
//! first `from` whose `to` equals the value (`true` → `LOCKED` when `LOCKED` and
//! `SUPERLOCKED` both read as `true`); a `math` transform is not inverted (the signal keeps its
//! default bits). Signals of a message that no entry binds keep the DBC's default bits.

use std::collections::BTreeMap;

use crate::SignalValue;
use crate::dbc::{Dbc, EncodeValue, RawValue};
use crate::error::CanError;
use crate::frame::{CanFrame, CanId};
use crate::vss::{BoundMapping, MapKey, Transform, VssEntry};

/// How `value` is written into `entry`'s DBC signal, `None` if the transform has no inverse
/// for it (a table without that value, a `math` transform).
pub fn encode_value<'a>(entry: &'a VssEntry, value: &'a SignalValue) -> Option<EncodeValue<'a>> {
    match &entry.transform {
        Transform::None => Some(match value {
            SignalValue::Bool(b) => EncodeValue::Physical(if *b { 1.0 } else { 0.0 }),
            #[allow(clippy::cast_precision_loss)] // a signal value, at most 64 bits wide
            SignalValue::Int(i) => EncodeValue::Physical(*i as f64),
            SignalValue::Float(f) => EncodeValue::Physical(*f),
            SignalValue::Text(t) => EncodeValue::Label(t),
        }),
        Transform::Mapping(table) => {
            table
                .iter()
                .find(|(_, to)| same(to, value))
                .map(|(from, _)| match from {
                    MapKey::Label(l) => EncodeValue::Label(l),
                    MapKey::Raw(r) => match u64::try_from(*r) {
                        Ok(u) => EncodeValue::Raw(RawValue::Unsigned(u)),
                        Err(_) => EncodeValue::Raw(RawValue::Signed(*r)),
                    },
                })
        }
        Transform::Math(_) => None,
    }
}

fn same(a: &SignalValue, b: &SignalValue) -> bool {
    match (a, b) {
        #[allow(clippy::cast_precision_loss, clippy::float_cmp)] // table values are exact
        (SignalValue::Int(i), SignalValue::Float(f))
        | (SignalValue::Float(f), SignalValue::Int(i)) => *i as f64 == *f,
        _ => a == b,
    }
}

/// The frames of every message `mapping` reads (in id order, except the ids in `skip` and
/// messages for which `value` has nothing), each signal set from `value` (the VSS value of its
/// entry; `None` keeps the default bits).
pub fn encode_mapped(
    dbc: &Dbc,
    mapping: &BoundMapping,
    value: &dyn Fn(&VssEntry) -> Option<SignalValue>,
    skip: &[CanId],
) -> Result<Vec<CanFrame>, CanError> {
    let mut by_id: BTreeMap<CanId, Vec<(&VssEntry, SignalValue)>> = BTreeMap::new();
    for (id, entry) in mapping.bindings() {
        if skip.contains(&id) {
            continue;
        }
        let slot = by_id.entry(id).or_default();
        // A signal bound by several entries is written from the first.
        if slot.iter().any(|(e, _)| e.signal == entry.signal) {
            continue;
        }
        if let Some(v) = value(entry) {
            slot.push((entry, v));
        }
    }
    let mut out = Vec::with_capacity(by_id.len());
    for (id, values) in &by_id {
        let message = dbc
            .message_by_id(*id)
            .ok_or_else(|| CanError::UnknownMessage(format!("{id:?}")))?;
        let list: Vec<(&str, EncodeValue<'_>)> = values
            .iter()
            .filter_map(|(e, v)| Some((e.signal.as_str(), encode_value(e, v)?)))
            .collect();
        // A message with nothing to say (no value for any of its signals) is not sent.
        if list.is_empty() {
            continue;
        }
        out.push(dbc.encode(&message.name, &list)?);
    }
    Ok(out)
}
