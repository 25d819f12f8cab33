//! DBC loading into a validated, fast signal table, plus frame decode/encode.
//!
//! # How message ids are read
//!
//! The id of a `BO_` line is read **as written** (can-dbc's own truncation is undone before it
//! builds its AST, see `ids`), by this rule:
//!
//! | written value                          | read as                                   |
//! |----------------------------------------|-------------------------------------------|
//! | `0..=0x7FF`                            | standard (11-bit) id                      |
//! | `0x800..=0x1FFF_FFFF` (no bit 31)      | extended (29-bit) id, as opendbc and most tools do |
//! | bit 31 set, rest `<= 0x1FFF_FFFF`      | extended id (the Vector convention)       |
//! | anything else                          | not a CAN id: the message is dropped      |
//!
//! A dropped message is listed in [`Dbc::warnings`] as
//! [`LoadWarningKind::MessageIdOutOfRange`], except Vector's `VECTOR__INDEPENDENT_SIG_MSG`
//! placeholder (`0xC0000000`), which holds signals that are on no bus and is dropped silently.
//! A message is never assigned to an id other than the one written, so two messages only
//! collide ([`LoadWarningKind::DuplicateMessageId`]) when their written ids read the same.
//!
//! # Names
//!
//! `SystemMessageLongSymbol` / `SystemSignalLongSymbol` attributes (written by tools that cap
//! `BO_` / `SG_` names at 32 characters) replace the short names: [`MessageDef::name`],
//! [`SignalDef::name`] and every lookup by name use the long name.
//!
//! # Raw values
//!
//! Raw values are exact for every width up to 64 bits ([`RawValue`], [`EncodeValue::Raw`]);
//! only the physical value (`raw * factor + offset`) is an `f64`.

mod ids;

use std::collections::{HashMap, HashSet};
use std::fmt;

use can_dbc::{
    AttributeValue, ByteOrder as DbcByteOrder, MessageId, MultiplexIndicator,
    SignalExtendedValueType,
};

use crate::error::CanError;
use crate::frame::{CanFrame, CanId};

/// Largest payload (CAN FD) in bytes.
pub const MAX_PAYLOAD: usize = 64;

/// Bit layout of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Intel: `start_bit` is the least significant bit.
    LittleEndian,
    /// Motorola: `start_bit` is the most significant bit in DBC "sawtooth" numbering.
    BigEndian,
}

/// How the raw bits are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Unsigned integer.
    Unsigned,
    /// Two's complement signed integer.
    Signed,
    /// IEEE 754 single precision (`SIG_VALTYPE_ 1`, 32 bits).
    Float32,
    /// IEEE 754 double precision (`SIG_VALTYPE_ 2`, 64 bits).
    Float64,
}

/// The raw (unscaled) value of a decoded signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue {
    /// Unsigned integer raw value.
    Unsigned(u64),
    /// Signed integer raw value (sign-extended).
    Signed(i64),
    /// IEEE float raw value.
    Float(f64),
}

impl fmt::Display for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Unsigned(u) => write!(f, "{u}"),
            RawValue::Signed(i) => write!(f, "{i}"),
            RawValue::Float(x) => write!(f, "{x}"),
        }
    }
}

impl RawValue {
    /// The exact unsigned integer, if this is a non-negative integer (`None` for floats).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            RawValue::Unsigned(u) => Some(u),
            RawValue::Signed(i) => u64::try_from(i).ok(),
            RawValue::Float(_) => None,
        }
    }
    /// The raw value as an integer key for value tables (`None` for floats and for unsigned
    /// values above `i64::MAX`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            RawValue::Unsigned(u) => i64::try_from(u).ok(),
            RawValue::Signed(i) => Some(i),
            RawValue::Float(_) => None,
        }
    }
    /// The raw value as f64 (rounded above 2^53; use the variant for the exact value).
    pub fn as_f64(&self) -> f64 {
        match *self {
            RawValue::Unsigned(u) => u as f64,
            RawValue::Signed(i) => i as f64,
            RawValue::Float(f) => f,
        }
    }
}

/// Condition under which a multiplexed signal is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxCondition {
    /// Index (in [`MessageDef::signals`]) of the multiplexer switch signal.
    pub switch: usize,
    /// Inclusive ranges of switch raw values for which the signal is present.
    pub ranges: Vec<(u64, u64)>,
}

impl MuxCondition {
    fn matches(&self, v: u64) -> bool {
        self.ranges.iter().any(|&(lo, hi)| v >= lo && v <= hi)
    }
}

/// One validated signal definition.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalDef {
    /// Signal name.
    pub name: String,
    /// Start bit as written in the DBC.
    pub start_bit: u16,
    /// Length in bits (1..=64).
    pub size: u16,
    /// Byte order.
    pub byte_order: ByteOrder,
    /// Raw interpretation.
    pub kind: ValueKind,
    /// Scale factor.
    pub factor: f64,
    /// Offset.
    pub offset: f64,
    /// Unit string.
    pub unit: String,
    /// True when this signal is a multiplexer switch (`M` or `mNM`).
    pub is_multiplexer: bool,
    /// Present only when the multiplexer condition holds.
    pub mux: Option<MuxCondition>,
    /// Value table (raw value -> label), sorted by raw value.
    pub values: Vec<(i64, String)>,
    /// Raw bits of the `GenSigStartValue` attribute (used for unset signals when encoding).
    pub start_bits: Option<u64>,
    // Precomputed: first byte and number of bytes spanned, and right shift.
    first_byte: usize,
    span: usize,
    shift: u32,
}

impl SignalDef {
    /// Label for a raw integer value, if the value table names it.
    pub fn label(&self, raw: i64) -> Option<&str> {
        self.values
            .binary_search_by_key(&raw, |(k, _)| *k)
            .ok()
            .and_then(|i| self.values.get(i))
            .map(|(_, s)| s.as_str())
    }

    /// Raw value for a label, if the value table defines it.
    pub fn raw_for_label(&self, label: &str) -> Option<i64> {
        self.values
            .iter()
            .find(|(_, l)| l == label)
            .map(|(k, _)| *k)
    }

    /// Number of bytes a frame needs for this signal to be readable.
    pub fn end_byte(&self) -> usize {
        self.first_byte + self.span
    }

    fn mask(&self) -> u128 {
        (1u128 << self.size) - 1
    }

    /// Extract the raw bits (right-aligned); `data` must cover `end_byte()`.
    fn extract_bits(&self, data: &[u8]) -> Option<u64> {
        let bytes = data.get(self.first_byte..self.first_byte + self.span)?;
        let mut acc: u128 = 0;
        match self.byte_order {
            ByteOrder::LittleEndian => {
                for (i, b) in bytes.iter().enumerate() {
                    acc |= u128::from(*b) << (8 * i);
                }
            }
            ByteOrder::BigEndian => {
                for b in bytes {
                    acc = (acc << 8) | u128::from(*b);
                }
            }
        }
        Some(((acc >> self.shift) & self.mask()) as u64)
    }

    fn insert_bits(&self, data: &mut [u8], bits: u64) -> Option<()> {
        let bytes = data.get_mut(self.first_byte..self.first_byte + self.span)?;
        let mask = self.mask() << self.shift;
        let val = (u128::from(bits) << self.shift) & mask;
        let n = bytes.len();
        for (i, b) in bytes.iter_mut().enumerate() {
            let sh = match self.byte_order {
                ByteOrder::LittleEndian => 8 * i,
                ByteOrder::BigEndian => 8 * (n - 1 - i),
            };
            let m = ((mask >> sh) & 0xff) as u8;
            let v = ((val >> sh) & 0xff) as u8;
            *b = (*b & !m) | v;
        }
        Some(())
    }

    /// Decode the raw value from the payload.
    pub fn decode_raw(&self, data: &[u8]) -> Option<RawValue> {
        let bits = self.extract_bits(data)?;
        Some(match self.kind {
            ValueKind::Unsigned => RawValue::Unsigned(bits),
            ValueKind::Signed => {
                let sh = 64 - u32::from(self.size);
                RawValue::Signed(((bits << sh) as i64) >> sh)
            }
            ValueKind::Float32 => RawValue::Float(f64::from(f32::from_bits(bits as u32))),
            ValueKind::Float64 => RawValue::Float(f64::from_bits(bits)),
        })
    }

    /// Physical value of a raw value: `raw * factor + offset`.
    pub fn physical(&self, raw: RawValue) -> f64 {
        if self.factor == 1.0 && self.offset == 0.0 {
            return raw.as_f64(); // exact (keeps -0.0 and full float precision)
        }
        raw.as_f64() * self.factor + self.offset
    }

    /// Convert a physical value to the raw bit pattern (rounded to the nearest step).
    ///
    /// The physical value is an `f64`, so above 2^53 not every integer can be given; use
    /// [`EncodeValue::Raw`] for exact 64-bit values.
    pub fn physical_to_bits(&self, phys: f64) -> Result<u64, CanError> {
        let oor = || CanError::ValueOutOfRange {
            signal: self.name.clone(),
            value: phys.to_string(),
        };
        if !phys.is_finite() || self.factor == 0.0 || !self.factor.is_finite() {
            return Err(oor());
        }
        let raw = (phys - self.offset) / self.factor;
        match self.kind {
            ValueKind::Float32 => Ok(u64::from((raw as f32).to_bits())),
            ValueKind::Float64 => Ok(raw.to_bits()),
            ValueKind::Unsigned | ValueKind::Signed => {
                self.raw_int_to_bits(raw.round()).ok_or_else(oor)
            }
        }
    }

    /// Bits for an integer raw value given as f64 (already rounded); `None` if out of range.
    /// The bounds are powers of two (exact in f64) and exclusive above, so a value that would
    /// saturate the integer conversion (e.g. 2^64 for a 64-bit signal) is refused.
    fn raw_int_to_bits(&self, raw: f64) -> Option<u64> {
        let size = i32::from(self.size);
        match self.kind {
            ValueKind::Unsigned => {
                (raw >= 0.0 && raw < 2f64.powi(size)).then(|| raw as u64 & self.bit_mask())
            }
            ValueKind::Signed => {
                let half = 2f64.powi(size - 1);
                (raw >= -half && raw < half).then(|| (raw as i64) as u64 & self.bit_mask())
            }
            ValueKind::Float32 | ValueKind::Float64 => None,
        }
    }

    /// The signal's mask as u64 (all ones for 64 bits).
    fn bit_mask(&self) -> u64 {
        self.mask() as u64
    }

    /// Bits for an exact raw value; `None` if it does not fit the signal.
    ///
    /// Integer signals take [`RawValue::Unsigned`] or [`RawValue::Signed`] by numeric value
    /// (a signed 8-bit signal takes `Unsigned(127)` and `Signed(-128)`, not `Unsigned(255)`);
    /// float signals take [`RawValue::Float`].
    pub fn raw_to_bits(&self, raw: RawValue) -> Option<u64> {
        let size = u32::from(self.size);
        let fits_unsigned = |v: u64| (size >= 64 || v >> size == 0).then_some(v);
        let fits_signed = |i: i64| {
            let ok = size >= 64 || {
                let half = 1i64 << (size - 1);
                i >= -half && i < half
            };
            ok.then_some(i as u64 & self.bit_mask())
        };
        match (self.kind, raw) {
            (ValueKind::Unsigned, RawValue::Unsigned(v)) => fits_unsigned(v),
            (ValueKind::Unsigned, RawValue::Signed(i)) => {
                u64::try_from(i).ok().and_then(fits_unsigned)
            }
            (ValueKind::Signed, RawValue::Signed(i)) => fits_signed(i),
            (ValueKind::Signed, RawValue::Unsigned(v)) => {
                i64::try_from(v).ok().and_then(fits_signed)
            }
            (ValueKind::Float32, RawValue::Float(f)) => Some(u64::from((f as f32).to_bits())),
            (ValueKind::Float64, RawValue::Float(f)) => Some(f.to_bits()),
            (ValueKind::Unsigned | ValueKind::Signed, RawValue::Float(_))
            | (
                ValueKind::Float32 | ValueKind::Float64,
                RawValue::Unsigned(_) | RawValue::Signed(_),
            ) => None,
        }
    }
}

/// One validated message definition.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageDef {
    /// CAN id.
    pub id: CanId,
    /// Message name.
    pub name: String,
    /// Declared payload length in bytes (0..=64).
    pub size: usize,
    /// Signals in DBC order (signals that failed validation are absent).
    pub signals: Vec<SignalDef>,
    /// Bytes a frame must carry for every signal to be readable.
    pub min_len: usize,
    /// Payload with every non-multiplexed signal at its `GenSigStartValue` (zeros elsewhere).
    pub default_data: Vec<u8>,
    /// Transmission period from the `GenMsgCycleTime` attribute (`BA_ "GenMsgCycleTime" BO_`,
    /// else its `BA_DEF_DEF_` default), ms; `None` when absent, zero, negative or not a
    /// number (an event-driven message). The default maximum age of the message's signals is
    /// derived from it (see [`crate::vss`]).
    pub cycle_time_ms: Option<u64>,
    by_name: HashMap<String, usize>,
}

impl MessageDef {
    /// Index of a signal by name.
    pub fn signal_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Signal by name.
    pub fn signal(&self, name: &str) -> Option<&SignalDef> {
        self.signal_index(name).and_then(|i| self.signals.get(i))
    }

    /// Whether a signal is present given the payload (multiplexer conditions), depth-limited.
    fn is_active(&self, idx: usize, data: &[u8], depth: usize) -> bool {
        let Some(sig) = self.signals.get(idx) else {
            return false;
        };
        match &sig.mux {
            None => true,
            Some(cond) => {
                if depth > self.signals.len() {
                    return false;
                }
                let Some(sw) = self.signals.get(cond.switch) else {
                    return false;
                };
                match sw.extract_bits(data) {
                    Some(v) => cond.matches(v) && self.is_active(cond.switch, data, depth + 1),
                    None => false,
                }
            }
        }
    }

    /// Decode a payload into this message's signal values.
    pub fn decode<'a>(&'a self, data: &[u8]) -> Result<DecodedMessage<'a>, CanError> {
        if data.len() < self.min_len {
            return Err(CanError::ShortFrame {
                id: self.id.id,
                got: data.len(),
                need: self.min_len,
            });
        }
        let mut signals = Vec::with_capacity(self.signals.len());
        for (i, sig) in self.signals.iter().enumerate() {
            if sig.mux.is_some() && !self.is_active(i, data, 0) {
                continue;
            }
            let Some(raw) = sig.decode_raw(data) else {
                continue;
            };
            let label = raw.as_i64().and_then(|r| sig.label(r));
            signals.push(DecodedSignal {
                index: i,
                def: sig,
                raw,
                physical: sig.physical(raw),
                label,
            });
        }
        Ok(DecodedMessage {
            message: self,
            signals,
        })
    }

    /// Encode values into a fresh payload of `size` bytes; unset signals keep their
    /// `GenSigStartValue` (see [`MessageDef::default_data`]), other bits are zero.
    pub fn encode(&self, values: &[(&str, EncodeValue<'_>)]) -> Result<Vec<u8>, CanError> {
        let mut data = self.default_data.clone();
        self.encode_into(&mut data, values)?;
        Ok(data)
    }

    /// Encode values on top of `base` (signals not named keep their bits from `base`).
    /// A multiplexed signal whose switch is not given sets the switch to its (single) value.
    pub fn encode_into(
        &self,
        base: &mut [u8],
        values: &[(&str, EncodeValue<'_>)],
    ) -> Result<(), CanError> {
        if base.len() < self.min_len {
            return Err(CanError::ShortFrame {
                id: self.id.id,
                got: base.len(),
                need: self.min_len,
            });
        }
        let mut explicit: Vec<usize> = Vec::with_capacity(values.len());
        let mut bits_list: Vec<(usize, u64)> = Vec::with_capacity(values.len());
        for (name, v) in values {
            let idx = self
                .signal_index(name)
                .ok_or_else(|| CanError::UnknownSignal(format!("{}.{}", self.name, name)))?;
            let sig = self
                .signals
                .get(idx)
                .ok_or_else(|| CanError::UnknownSignal((*name).to_string()))?;
            let bits = match v {
                EncodeValue::Physical(p) => sig.physical_to_bits(*p)?,
                EncodeValue::Raw(r) => {
                    sig.raw_to_bits(*r)
                        .ok_or_else(|| CanError::ValueOutOfRange {
                            signal: sig.name.clone(),
                            value: r.to_string(),
                        })?
                }
                EncodeValue::Label(l) => {
                    let r = sig.raw_for_label(l).ok_or_else(|| CanError::UnknownLabel {
                        signal: sig.name.clone(),
                        label: (*l).to_string(),
                    })?;
                    sig.raw_to_bits(RawValue::Signed(r)).ok_or_else(|| {
                        CanError::ValueOutOfRange {
                            signal: sig.name.clone(),
                            value: r.to_string(),
                        }
                    })?
                }
            };
            explicit.push(idx);
            bits_list.push((idx, bits));
        }
        // Write switches first so mux conditions can be checked.
        bits_list.sort_by_key(|(i, _)| self.signals.get(*i).is_some_and(|s| !s.is_multiplexer));
        for &(idx, bits) in &bits_list {
            let Some(sig) = self.signals.get(idx) else {
                continue;
            };
            if let Some(cond) = &sig.mux {
                let sw = self
                    .signals
                    .get(cond.switch)
                    .ok_or_else(|| CanError::MuxConflict(sig.name.clone()))?;
                if explicit.contains(&cond.switch) {
                    let cur = sw.extract_bits(base).unwrap_or(0);
                    if !cond.matches(cur) {
                        return Err(CanError::MuxConflict(format!(
                            "{} needs {} in {:?}, got {}",
                            sig.name, sw.name, cond.ranges, cur
                        )));
                    }
                } else {
                    match cond.ranges.as_slice() {
                        [(lo, hi)] if lo == hi => {
                            sw.insert_bits(base, *lo);
                        }
                        _ => {
                            return Err(CanError::MuxConflict(format!(
                                "{} needs {} set explicitly",
                                sig.name, sw.name
                            )));
                        }
                    }
                }
            }
            sig.insert_bits(base, bits);
        }
        Ok(())
    }
}

/// A value to encode into a signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EncodeValue<'a> {
    /// Physical value (scaled back with factor/offset, rounded to the nearest step).
    Physical(f64),
    /// Exact raw value (no scaling): integers of every width up to 64 bits, signed or
    /// unsigned, or the float of an IEEE float signal. See [`SignalDef::raw_to_bits`].
    Raw(RawValue),
    /// Value-table label.
    Label(&'a str),
}

/// One decoded signal.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSignal<'a> {
    /// Index of the signal in [`MessageDef::signals`].
    pub index: usize,
    /// Definition of the signal.
    pub def: &'a SignalDef,
    /// Raw value.
    pub raw: RawValue,
    /// Physical value (`raw * factor + offset`).
    pub physical: f64,
    /// Value-table label when the table names the raw value.
    pub label: Option<&'a str>,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage<'a> {
    /// Message definition.
    pub message: &'a MessageDef,
    /// Signals present in this frame (inactive multiplexed signals are omitted).
    pub signals: Vec<DecodedSignal<'a>>,
}

impl<'a> DecodedMessage<'a> {
    /// Decoded signal by name.
    pub fn get(&self, name: &str) -> Option<&DecodedSignal<'a>> {
        self.signals.iter().find(|s| s.def.name == name)
    }
}

/// Result of decoding a frame against the whole DBC.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeOutcome<'a> {
    /// The frame matched a message.
    Decoded(DecodedMessage<'a>),
    /// No message has this id (a counted drop, not an error).
    UnknownId,
    /// A remote (RTR) frame: carries no signal data (a counted drop).
    Remote,
}

/// Counters for a stream of decodes (kept by the caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames decoded.
    pub decoded: u64,
    /// Frames with an id not in the DBC.
    pub unknown_id: u64,
    /// Frames rejected as too short.
    pub short_frame: u64,
    /// Remote frames ignored.
    pub remote: u64,
}

impl DecodeStats {
    /// Account for one decode result.
    pub fn record(&mut self, r: &Result<DecodeOutcome<'_>, CanError>) {
        match r {
            Ok(DecodeOutcome::Decoded(_)) => self.decoded += 1,
            Ok(DecodeOutcome::UnknownId) => self.unknown_id += 1,
            Ok(DecodeOutcome::Remote) => self.remote += 1,
            Err(_) => self.short_frame += 1,
        }
    }
}

/// What was tolerated while loading a DBC (the item named by the [`LoadWarning`] was skipped,
/// unless the variant says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadWarningKind {
    /// A signal does not fit its message's declared length.
    SignalOutOfFrame,
    /// `SIG_VALTYPE_` float signal whose size is not 32 / 64 bits.
    FloatSizeMismatch,
    /// A second signal with the same name in one message.
    DuplicateSignal,
    /// A factor or offset that is not finite.
    NonFiniteScaling,
    /// A multiplexed signal whose switch cannot be resolved.
    UnresolvedMultiplexer,
    /// A `GenSigStartValue` that does not fit the signal (the signal is kept, without it).
    BadStartValue,
    /// A second message whose written id reads as the same CAN id (the first one wins).
    DuplicateMessageId,
    /// A second message with the same name (both are kept; the name finds the later one).
    DuplicateMessageName,
    /// A message longer than 64 bytes.
    MessageTooLong,
    /// A message id that is no 11-bit or 29-bit CAN id (see the module doc for the rule).
    MessageIdOutOfRange,
    /// A `VAL_` table for a signal that no `BO_` / `SG_` declares (the table is ignored).
    ValueTableUnknownSignal,
    /// A long name (`System*LongSymbol`) that is already taken in its scope (the short name is
    /// kept).
    LongNameConflict,
}

impl LoadWarningKind {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            LoadWarningKind::SignalOutOfFrame => "signal_out_of_frame",
            LoadWarningKind::FloatSizeMismatch => "float_size_mismatch",
            LoadWarningKind::DuplicateSignal => "duplicate_signal",
            LoadWarningKind::NonFiniteScaling => "non_finite_scaling",
            LoadWarningKind::UnresolvedMultiplexer => "unresolved_multiplexer",
            LoadWarningKind::BadStartValue => "bad_start_value",
            LoadWarningKind::DuplicateMessageId => "duplicate_message_id",
            LoadWarningKind::DuplicateMessageName => "duplicate_message_name",
            LoadWarningKind::MessageTooLong => "message_too_long",
            LoadWarningKind::MessageIdOutOfRange => "message_id_out_of_range",
            LoadWarningKind::ValueTableUnknownSignal => "value_table_unknown_signal",
            LoadWarningKind::LongNameConflict => "long_name_conflict",
        }
    }
}

/// A problem found while loading a DBC that was tolerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    /// Message name as written in `BO_` (for a `VAL_` naming an undeclared message: its id as
    /// written).
    pub message: String,
    /// Signal name as written in `SG_` (empty for message-level warnings).
    pub signal: String,
    /// What was tolerated.
    pub kind: LoadWarningKind,
}

impl LoadWarning {
    /// Stable machine-readable code of the problem.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.signal.is_empty() {
            write!(f, "{}: {}", self.message, self.code())
        } else {
            write!(f, "{}.{}: {}", self.message, self.signal, self.code())
        }
    }
}

/// A validated DBC database with fast id lookup.
#[derive(Debug, Clone)]
pub struct Dbc {
    messages: Vec<MessageDef>,
    std_index: Vec<u32>,
    ext_index: HashMap<u32, u32>,
    by_name: HashMap<String, usize>,
    signal_owner: HashMap<String, Vec<(usize, usize)>>,
    warnings: Vec<LoadWarning>,
}

const NO_MSG: u32 = u32::MAX;

/// Name of Vector's placeholder message (id `0xC0000000`) for signals that are on no bus.
const INDEPENDENT_SIG_MSG: &str = "VECTOR__INDEPENDENT_SIG_MSG";
/// Attribute holding the full name of a message whose `BO_` name was cut to 32 characters.
const MESSAGE_LONG_SYMBOL: &str = "SystemMessageLongSymbol";
/// Attribute holding the full name of a signal whose `SG_` name was cut to 32 characters.
const SIGNAL_LONG_SYMBOL: &str = "SystemSignalLongSymbol";
/// Attribute holding a message's transmission period in ms (Vector's convention).
const CYCLE_TIME: &str = "GenMsgCycleTime";

/// A positive whole number of milliseconds from an attribute value.
fn cycle_ms(v: &AttributeValue) -> Option<u64> {
    match v {
        AttributeValue::Uint(u) if *u > 0 => Some(*u),
        AttributeValue::Int(i) if *i > 0 => u64::try_from(*i).ok(),
        AttributeValue::Double(d) if d.is_finite() && *d >= 1.0 && *d < 1.0e12 => Some(*d as u64),
        _ => None,
    }
}

/// A non-empty string attribute value.
fn long_symbol(v: &AttributeValue) -> Option<&str> {
    match v {
        AttributeValue::String(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

/// An AST message id as written in the DBC text (for warnings about undeclared messages).
fn written_id(id: MessageId, invalid: &HashMap<u16, String>) -> String {
    match id {
        MessageId::Standard(i) => invalid.get(&i).cloned().unwrap_or_else(|| i.to_string()),
        MessageId::Extended(i) => i.to_string(),
    }
}

fn pest_position(msg: &str) -> (usize, usize) {
    // pest renders " --> line:col"
    if let Some(pos) = msg.find("--> ") {
        let rest = msg.get(pos + 4..).unwrap_or("");
        let tok: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ':')
            .collect();
        let mut it = tok.split(':');
        let l = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let c = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        return (l, c);
    }
    (0, 0)
}

/// Compute (first_byte, span, shift) for a layout; `None` if it does not fit `size_bytes`.
fn layout(
    start: u64,
    len: u64,
    order: ByteOrder,
    size_bytes: usize,
) -> Option<(usize, usize, u32)> {
    let total_bits = (size_bytes as u64) * 8;
    if len == 0 || len > 64 {
        return None;
    }
    match order {
        ByteOrder::LittleEndian => {
            let end = start.checked_add(len)?; // exclusive
            if end > total_bits {
                return None;
            }
            let first = start / 8;
            let last = (end - 1) / 8;
            Some((
                first as usize,
                (last - first + 1) as usize,
                (start % 8) as u32,
            ))
        }
        ByteOrder::BigEndian => {
            if start >= total_bits {
                return None;
            }
            // Linear MSB-first position of the signal's MSB.
            let msb = (start / 8) * 8 + (7 - start % 8);
            let lsb = msb + len - 1;
            if lsb >= total_bits {
                return None;
            }
            let first = msb / 8;
            let last = lsb / 8;
            Some((
                first as usize,
                (last - first + 1) as usize,
                (7 - lsb % 8) as u32,
            ))
        }
    }
}

impl Dbc {
    /// Parse and validate DBC text. Tolerated problems are listed in [`Dbc::warnings`].
    ///
    /// Message ids are read as written (see the [module doc](self) for the standard /
    /// extended rule); long names replace short ones.
    pub fn parse(text: &str) -> Result<Dbc, CanError> {
        let parse_error = |message: String| {
            let (line, column) = pest_position(&message);
            CanError::DbcParse {
                line,
                column,
                message,
            }
        };
        let pre = ids::prescan(text).map_err(|e| match e {
            ids::PrescanError::Syntax(e) => parse_error(e.to_string()),
            ids::PrescanError::TooManyInvalidIds => {
                CanError::DbcInvalid("too many message ids that are no CAN id".into())
            }
        })?;
        let raw =
            can_dbc::Dbc::try_from(pre.text.as_ref()).map_err(|e| parse_error(e.to_string()))?;
        Self::from_ast(&raw, &pre.invalid)
    }

    /// Build from the can-dbc AST of the pre-scanned text; `invalid` names the aliases of ids
    /// that are no CAN id (see `ids`).
    fn from_ast(raw: &can_dbc::Dbc, invalid: &HashMap<u16, String>) -> Result<Dbc, CanError> {
        let mut warnings = Vec::new();
        let mut messages: Vec<MessageDef> = Vec::with_capacity(raw.messages.len());
        let mut std_index = vec![NO_MSG; 2048];
        let mut ext_index = HashMap::new();
        let mut by_name = HashMap::new();
        let mut float_types: HashMap<(MessageId, &str), SignalExtendedValueType> = HashMap::new();
        for e in &raw.signal_extended_value_type_list {
            float_types.insert(
                (e.message_id, e.signal_name.as_str()),
                e.signal_extended_value_type,
            );
        }
        // Every signal as declared (short names), to tell a VAL_ for a missing signal.
        let mut declared: HashMap<MessageId, (&str, HashSet<&str>)> = HashMap::new();
        for m in &raw.messages {
            declared
                .entry(m.id)
                .or_insert_with(|| (m.name.as_str(), HashSet::new()))
                .1
                .extend(m.signals.iter().map(|s| s.name.as_str()));
        }
        let mut val_tables: HashMap<(MessageId, &str), &[can_dbc::ValDescription]> = HashMap::new();
        for vd in &raw.value_descriptions {
            if let can_dbc::ValueDescription::Signal {
                message_id,
                name,
                value_descriptions,
            } = vd
            {
                match declared.get(message_id) {
                    Some((_, sigs)) if sigs.contains(name.as_str()) => {}
                    found => warnings.push(LoadWarning {
                        message: match found {
                            Some((mname, _)) => (*mname).to_string(),
                            None => written_id(*message_id, invalid),
                        },
                        signal: name.clone(),
                        kind: LoadWarningKind::ValueTableUnknownSignal,
                    }),
                }
                val_tables.insert((*message_id, name.as_str()), value_descriptions.as_slice());
            }
        }
        let long_message: HashMap<MessageId, &str> = raw
            .attribute_values_message
            .iter()
            .filter(|a| a.name == MESSAGE_LONG_SYMBOL)
            .filter_map(|a| long_symbol(&a.value).map(|l| (a.message_id, l)))
            .collect();
        let long_signal: HashMap<(MessageId, &str), &str> = raw
            .attribute_values_signal
            .iter()
            .filter(|a| a.name == SIGNAL_LONG_SYMBOL)
            .filter_map(|a| {
                long_symbol(&a.value).map(|l| ((a.message_id, a.signal_name.as_str()), l))
            })
            .collect();
        for m in &raw.messages {
            let warn = |w: &mut Vec<LoadWarning>, s: &str, kind| {
                w.push(LoadWarning {
                    message: m.name.clone(),
                    signal: s.to_string(),
                    kind,
                })
            };
            let id = match m.id {
                MessageId::Standard(i) if i < 0x800 => CanId {
                    id: u32::from(i),
                    extended: false,
                },
                // Vector's placeholder for signals on no bus: not a message.
                MessageId::Standard(_) if m.name == INDEPENDENT_SIG_MSG => continue,
                MessageId::Standard(_) => {
                    warn(&mut warnings, "", LoadWarningKind::MessageIdOutOfRange);
                    continue;
                }
                MessageId::Extended(i) => CanId {
                    id: i & 0x1FFF_FFFF,
                    extended: true,
                },
            };
            let size = match usize::try_from(m.size) {
                Ok(s) if s <= MAX_PAYLOAD => s,
                _ => {
                    warn(&mut warnings, "", LoadWarningKind::MessageTooLong);
                    continue;
                }
            };
            // duplicate id?
            let dup = if id.extended {
                ext_index.contains_key(&id.id)
            } else {
                std_index.get(id.id as usize).is_some_and(|v| *v != NO_MSG)
            };
            if dup {
                warn(&mut warnings, "", LoadWarningKind::DuplicateMessageId);
                continue;
            }
            let mut signals: Vec<SignalDef> = Vec::with_capacity(m.signals.len());
            let mut sig_by_name: HashMap<String, usize> = HashMap::new();
            let mut mux_ind: Vec<MultiplexIndicator> = Vec::new();
            for s in &m.signals {
                let order = match s.byte_order {
                    DbcByteOrder::LittleEndian => ByteOrder::LittleEndian,
                    DbcByteOrder::BigEndian => ByteOrder::BigEndian,
                };
                let kind = match float_types.get(&(m.id, s.name.as_str())) {
                    Some(SignalExtendedValueType::IEEEfloat32Bit) => ValueKind::Float32,
                    Some(SignalExtendedValueType::IEEEdouble64bit) => ValueKind::Float64,
                    _ => match s.value_type {
                        can_dbc::ValueType::Signed => ValueKind::Signed,
                        can_dbc::ValueType::Unsigned => ValueKind::Unsigned,
                    },
                };
                if (kind == ValueKind::Float32 && s.size != 32)
                    || (kind == ValueKind::Float64 && s.size != 64)
                {
                    warn(&mut warnings, &s.name, LoadWarningKind::FloatSizeMismatch);
                    continue;
                }
                let Some((first_byte, span, shift)) = layout(s.start_bit, s.size, order, size)
                else {
                    warn(&mut warnings, &s.name, LoadWarningKind::SignalOutOfFrame);
                    continue;
                };
                if sig_by_name.contains_key(&s.name) {
                    warn(&mut warnings, &s.name, LoadWarningKind::DuplicateSignal);
                    continue;
                }
                if !s.factor.is_finite() || !s.offset.is_finite() {
                    warn(&mut warnings, &s.name, LoadWarningKind::NonFiniteScaling);
                    continue;
                }
                let mut values: Vec<(i64, String)> = val_tables
                    .get(&(m.id, s.name.as_str()))
                    .map(|v| v.iter().map(|d| (d.id, d.description.clone())).collect())
                    .unwrap_or_default();
                values.sort_by_key(|(k, _)| *k);
                values.dedup_by_key(|(k, _)| *k);
                sig_by_name.insert(s.name.clone(), signals.len());
                mux_ind.push(s.multiplexer_indicator);
                signals.push(SignalDef {
                    name: s.name.clone(),
                    start_bit: s.start_bit as u16,
                    size: s.size as u16,
                    byte_order: order,
                    kind,
                    factor: s.factor,
                    offset: s.offset,
                    unit: s.unit.clone(),
                    is_multiplexer: matches!(
                        s.multiplexer_indicator,
                        MultiplexIndicator::Multiplexor
                            | MultiplexIndicator::MultiplexorAndMultiplexedSignal(_)
                    ),
                    mux: None,
                    values,
                    start_bits: None,
                    first_byte,
                    span,
                    shift,
                });
            }
            // Multiplexing: extended (SG_MUL_VAL_) entries win; else the single `M` switch.
            let plain_switch = mux_ind
                .iter()
                .position(|i| *i == MultiplexIndicator::Multiplexor);
            let plain_switch_count = mux_ind
                .iter()
                .filter(|i| **i == MultiplexIndicator::Multiplexor)
                .count();
            let mut drop = vec![false; signals.len()];
            for (i, ind) in mux_ind.iter().enumerate() {
                let (MultiplexIndicator::MultiplexedSignal(v)
                | MultiplexIndicator::MultiplexorAndMultiplexedSignal(v)) = *ind
                else {
                    continue;
                };
                let name = signals.get(i).map(|s| s.name.clone()).unwrap_or_default();
                let ext = raw
                    .extended_multiplex
                    .iter()
                    .find(|e| e.message_id == m.id && e.signal_name == name);
                let cond = match ext {
                    Some(e) => {
                        sig_by_name
                            .get(&e.multiplexor_signal_name)
                            .map(|&sw| MuxCondition {
                                switch: sw,
                                ranges: e
                                    .mappings
                                    .iter()
                                    .map(|mm| (mm.min_value, mm.max_value))
                                    .collect(),
                            })
                    }
                    None if plain_switch_count == 1 => plain_switch.map(|sw| MuxCondition {
                        switch: sw,
                        ranges: vec![(v, v)],
                    }),
                    None => None,
                };
                match cond {
                    Some(c)
                        if c.switch != i
                            && signals.get(c.switch).is_some_and(|s| s.is_multiplexer) =>
                    {
                        if let Some(s) = signals.get_mut(i) {
                            s.mux = Some(c);
                        }
                    }
                    _ => {
                        warn(&mut warnings, &name, LoadWarningKind::UnresolvedMultiplexer);
                        if let Some(d) = drop.get_mut(i) {
                            *d = true;
                        }
                    }
                }
            }
            if drop.iter().any(|d| *d) {
                // Remove unresolved signals and remap switch indices.
                let mut remap = vec![usize::MAX; signals.len()];
                let mut kept = Vec::new();
                for (i, s) in signals.into_iter().enumerate() {
                    if !drop.get(i).copied().unwrap_or(true) {
                        if let Some(r) = remap.get_mut(i) {
                            *r = kept.len();
                        }
                        kept.push(s);
                    }
                }
                let mut final_sigs = Vec::new();
                for mut s in kept {
                    if let Some(c) = s.mux.as_mut() {
                        match remap.get(c.switch) {
                            Some(&n) if n != usize::MAX => c.switch = n,
                            _ => {
                                warnings.push(LoadWarning {
                                    message: m.name.clone(),
                                    signal: s.name.clone(),
                                    kind: LoadWarningKind::UnresolvedMultiplexer,
                                });
                                continue;
                            }
                        }
                    }
                    final_sigs.push(s);
                }
                signals = final_sigs;
                sig_by_name = signals
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.name.clone(), i))
                    .collect();
            }
            // GenSigStartValue (raw value, per the Vector convention) -> default payload.
            let mut default_data = vec![0u8; size];
            for sig in signals.iter_mut() {
                let Some(v) = raw.resolved_signal_attribute(m.id, &sig.name, "GenSigStartValue")
                else {
                    continue;
                };
                let bits = match (v, sig.kind) {
                    (_, ValueKind::Float32 | ValueKind::Float64) => {
                        let f = match v {
                            can_dbc::AttributeValue::Uint(u) => *u as f64,
                            can_dbc::AttributeValue::Int(i) => *i as f64,
                            can_dbc::AttributeValue::Double(d) => *d,
                            can_dbc::AttributeValue::String(_) => f64::NAN,
                        };
                        if !f.is_finite() {
                            None
                        } else if sig.kind == ValueKind::Float32 {
                            Some(u64::from((f as f32).to_bits()))
                        } else {
                            Some(f.to_bits())
                        }
                    }
                    (can_dbc::AttributeValue::Uint(u), _) => {
                        sig.raw_to_bits(RawValue::Unsigned(*u))
                    }
                    (can_dbc::AttributeValue::Int(i), _) => sig.raw_to_bits(RawValue::Signed(*i)),
                    (can_dbc::AttributeValue::Double(d), _)
                        if d.fract() == 0.0 && d.abs() < 9.0e15 =>
                    {
                        sig.raw_to_bits(RawValue::Signed(*d as i64))
                    }
                    _ => None,
                };
                match bits {
                    Some(b) => {
                        sig.start_bits = Some(b);
                        if sig.mux.is_none() {
                            sig.insert_bits(&mut default_data, b);
                        }
                    }
                    None => warnings.push(LoadWarning {
                        message: m.name.clone(),
                        signal: sig.name.clone(),
                        kind: LoadWarningKind::BadStartValue,
                    }),
                }
            }
            // Long names replace the (cut) short ones once everything keyed by short names
            // (value tables, SG_MUL_VAL_, attributes) is resolved.
            let mut taken: HashSet<String> = signals
                .iter()
                .filter(|s| !long_signal.contains_key(&(m.id, s.name.as_str())))
                .map(|s| s.name.clone())
                .collect();
            let mut renamed = false;
            for sig in signals.iter_mut() {
                let Some(long) = long_signal.get(&(m.id, sig.name.as_str())) else {
                    continue;
                };
                if *long != sig.name && taken.insert((*long).to_string()) {
                    sig.name = (*long).to_string();
                    renamed = true;
                } else {
                    if *long != sig.name {
                        warn(&mut warnings, &sig.name, LoadWarningKind::LongNameConflict);
                    }
                    taken.insert(sig.name.clone());
                }
            }
            if renamed {
                sig_by_name = signals
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.name.clone(), i))
                    .collect();
            }
            let name = long_message
                .get(&m.id)
                .map_or_else(|| m.name.clone(), |l| (*l).to_string());
            let min_len = signals.iter().map(SignalDef::end_byte).max().unwrap_or(0);
            let idx = messages.len() as u32;
            if id.extended {
                ext_index.insert(id.id, idx);
            } else if let Some(slot) = std_index.get_mut(id.id as usize) {
                *slot = idx;
            }
            if by_name.insert(name.clone(), idx as usize).is_some() {
                warnings.push(LoadWarning {
                    message: m.name.clone(),
                    signal: String::new(),
                    kind: LoadWarningKind::DuplicateMessageName,
                });
            }
            let cycle_time_ms = raw
                .resolved_message_attribute(m.id, CYCLE_TIME)
                .and_then(cycle_ms);
            messages.push(MessageDef {
                id,
                name,
                size,
                signals,
                min_len,
                default_data,
                cycle_time_ms,
                by_name: sig_by_name,
            });
        }
        let mut signal_owner: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (mi, m) in messages.iter().enumerate() {
            for (si, s) in m.signals.iter().enumerate() {
                signal_owner
                    .entry(s.name.clone())
                    .or_default()
                    .push((mi, si));
            }
        }
        Ok(Dbc {
            messages,
            std_index,
            ext_index,
            by_name,
            signal_owner,
            warnings,
        })
    }

    /// All messages.
    pub fn messages(&self) -> &[MessageDef] {
        &self.messages
    }

    /// Problems tolerated while loading (skipped signals/messages).
    pub fn warnings(&self) -> &[LoadWarning] {
        &self.warnings
    }

    /// Message index for a CAN id.
    pub fn message_index(&self, id: CanId) -> Option<usize> {
        let v = if id.extended {
            self.ext_index.get(&id.id).copied()
        } else {
            self.std_index.get(id.id as usize).copied()
        };
        v.filter(|v| *v != NO_MSG).map(|v| v as usize)
    }

    /// Message by CAN id.
    pub fn message_by_id(&self, id: CanId) -> Option<&MessageDef> {
        self.message_index(id).and_then(|i| self.messages.get(i))
    }

    /// Message by name.
    pub fn message_by_name(&self, name: &str) -> Option<&MessageDef> {
        self.by_name.get(name).and_then(|i| self.messages.get(*i))
    }

    /// All (message index, signal index) pairs carrying a signal with this name.
    pub fn find_signal(&self, name: &str) -> &[(usize, usize)] {
        self.signal_owner
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decode a payload for a CAN id. Unknown id -> `Ok(UnknownId)`; short payload -> `Err(ShortFrame)`.
    pub fn decode(&self, id: CanId, data: &[u8]) -> Result<DecodeOutcome<'_>, CanError> {
        match self.message_by_id(id) {
            None => Ok(DecodeOutcome::UnknownId),
            Some(m) => m.decode(data).map(DecodeOutcome::Decoded),
        }
    }

    /// Decode a frame. Remote frames give [`DecodeOutcome::Remote`].
    pub fn decode_frame(&self, frame: &CanFrame) -> Result<DecodeOutcome<'_>, CanError> {
        if frame.remote {
            return Ok(DecodeOutcome::Remote);
        }
        self.decode(frame.can_id(), &frame.data)
    }

    /// Encode a message by name into a new frame (unset signals are zero bits).
    pub fn encode(
        &self,
        message: &str,
        values: &[(&str, EncodeValue<'_>)],
    ) -> Result<CanFrame, CanError> {
        let m = self
            .message_by_name(message)
            .ok_or_else(|| CanError::UnknownMessage(message.to_string()))?;
        let data = m.encode(values)?;
        Ok(CanFrame {
            id: m.id.id,
            extended: m.id.extended,
            fd: m.size > 8,
            remote: false,
            data,
            timestamp_us: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_intel_and_motorola() {
        // Intel 12 bits at 12: bytes 1..=2, shift 4
        assert_eq!(layout(12, 12, ByteOrder::LittleEndian, 8), Some((1, 2, 4)));
        // Motorola start 7 len 16: bytes 0..=1, shift 0
        assert_eq!(layout(7, 16, ByteOrder::BigEndian, 8), Some((0, 2, 0)));
        // Motorola start 3 len 4: byte 0 low nibble
        assert_eq!(layout(3, 4, ByteOrder::BigEndian, 8), Some((0, 1, 0)));
        assert_eq!(layout(60, 8, ByteOrder::LittleEndian, 8), None);
        assert_eq!(layout(0, 0, ByteOrder::LittleEndian, 8), None);
        assert_eq!(layout(63, 65, ByteOrder::BigEndian, 64), None);
    }

    #[test]
    fn parse_error_has_position() {
        let text =
            "VERSION \"\"\n\nBO_ 100 Foo: 8 X\n SG_ A : 0|8@1+ (1,0) [0|1] \"\" X\nBO_ oops\n";
        let err = Dbc::parse(text).err();
        match err {
            Some(CanError::DbcParse {
                line, ref message, ..
            }) => assert_eq!(line, 5, "{message}"),
            other => panic!("expected parse error, got {other:?}"),
        }
        assert_eq!(Dbc::parse(text).err().map(|e| e.code()), Some("dbc_parse"));
    }

    const HEAD: &str = "VERSION \"\"\n\nBU_: X\n\n";

    #[test]
    fn misfit_signals_are_skipped_with_warnings() {
        let text = format!(
            "{HEAD}BO_ 100 Foo: 2 X\n SG_ Ok : 0|8@1+ (1,0) [0|0] \"\" X\n SG_ TooFar : 12|8@1+ (1,0) [0|0] \"\" X\n \
             SG_ MotoFar : 15|9@0+ (1,0) [0|0] \"\" X\n SG_ Flt : 0|16@1- (1,0) [0|0] \"\" X\n\n\
             BO_ 100 Dup: 8 X\n SG_ A : 0|8@1+ (1,0) [0|0] \"\" X\n\n\
             BO_ 101 Big: 72 X\n SG_ B : 0|8@1+ (1,0) [0|0] \"\" X\n\n\
             SIG_VALTYPE_ 100 Flt : 1;\n"
        );
        let dbc = Dbc::parse(&text).expect("tolerant load");
        let codes: Vec<(&str, &str)> = dbc
            .warnings()
            .iter()
            .map(|w| (w.signal.as_str(), w.code()))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("TooFar", "signal_out_of_frame"),
                ("MotoFar", "signal_out_of_frame"),
                ("Flt", "float_size_mismatch"),
                ("", "duplicate_message_id"),
                ("", "message_too_long"),
            ]
        );
        let m = dbc.message_by_id(CanId::standard(100)).expect("Foo");
        assert_eq!(m.name, "Foo");
        assert_eq!(m.signals.len(), 1);
        assert_eq!(m.min_len, 1);
    }

    #[test]
    fn long_name_already_taken_keeps_the_short_name() {
        let text = format!(
            "{HEAD}BO_ 5 M: 8 X\n SG_ Cut : 0|8@1+ (1,0) [0|0] \"\" X\n SG_ Taken : 8|8@1+ (1,0) [0|0] \"\" X\n\n\
             BA_DEF_ SG_ \"SystemSignalLongSymbol\" STRING ;\n\
             BA_ \"SystemSignalLongSymbol\" SG_ 5 Cut \"Taken\";\n"
        );
        let dbc = Dbc::parse(&text).expect("load");
        let kinds: Vec<(&str, LoadWarningKind)> = dbc
            .warnings()
            .iter()
            .map(|w| (w.signal.as_str(), w.kind))
            .collect();
        assert_eq!(kinds, [("Cut", LoadWarningKind::LongNameConflict)]);
        let m = dbc.message_by_id(CanId::standard(5)).expect("M");
        let names: Vec<&str> = m.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Cut", "Taken"]);
        assert_eq!(m.signal_index("Taken"), Some(1));
    }

    #[test]
    fn ids_beyond_u32_are_dropped_not_a_parse_error() {
        let text = format!(
            "{HEAD}BO_ 99999999999 Huge: 8 X\n SG_ A : 0|8@1+ (1,0) [0|0] \"\" X\n\n\
             BO_ 1 Small: 8 X\n SG_ B : 0|8@1+ (1,0) [0|0] \"\" X\n\n\
             VAL_ 99999999999 A 1 \"ONE\" ;\nVAL_ 77777777777 Z 1 \"ONE\" ;\n"
        );
        let dbc = Dbc::parse(&text).expect("tolerant load");
        let got: Vec<String> = dbc.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "77777777777.Z: value_table_unknown_signal",
                "Huge: message_id_out_of_range"
            ]
        );
        assert_eq!(dbc.messages().len(), 1);
    }

    #[test]
    fn extended_multiplexing_with_ranges() {
        let text = format!(
            "{HEAD}BO_ 2147483905 Ext: 8 X\n SG_ Sw M : 0|8@1+ (1,0) [0|0] \"\" X\n \
             SG_ Sub m1M : 8|4@1+ (1,0) [0|0] \"\" X\n SG_ Leaf m0 : 16|8@1+ (1,0) [0|0] \"\" X\n\n\
             SG_MUL_VAL_ 2147483905 Sub Sw 1-3, 5-5;\nSG_MUL_VAL_ 2147483905 Leaf Sub 2-2;\n"
        );
        let dbc = Dbc::parse(&text).expect("load");
        assert!(dbc.warnings().is_empty(), "{:?}", dbc.warnings());
        let id = CanId::extended(0x101);
        let get = |data: &[u8]| -> Vec<String> {
            match dbc.decode(id, data) {
                Ok(DecodeOutcome::Decoded(d)) => {
                    d.signals.iter().map(|s| s.def.name.clone()).collect()
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(get(&[2, 2, 9, 0, 0, 0, 0, 0]), vec!["Sw", "Sub", "Leaf"]);
        assert_eq!(get(&[5, 1, 9, 0, 0, 0, 0, 0]), vec!["Sw", "Sub"]);
        assert_eq!(
            get(&[4, 2, 9, 0, 0, 0, 0, 0]),
            vec!["Sw"],
            "Leaf needs Sub active"
        );
        // encoding a signal whose switch has a range must name the switch explicitly
        let m = dbc.message_by_id(id).expect("msg");
        assert_eq!(
            m.encode(&[("Sub", EncodeValue::Raw(RawValue::Unsigned(2)))])
                .map_err(|e| e.code()),
            Err("mux_conflict")
        );
        let data = m
            .encode(&[
                ("Sw", EncodeValue::Raw(RawValue::Unsigned(3))),
                ("Sub", EncodeValue::Raw(RawValue::Unsigned(2))),
            ])
            .expect("encode");
        assert_eq!(&data[..2], &[3, 2]);
        assert!(
            m.encode(&[
                ("Sw", EncodeValue::Raw(RawValue::Unsigned(4))),
                ("Sub", EncodeValue::Raw(RawValue::Unsigned(2)))
            ])
            .is_err()
        );
    }

    #[test]
    fn encode_errors_have_codes() {
        let text = format!(
            "{HEAD}BO_ 1 M: 8 X\n SG_ U : 0|4@1+ (1,0) [0|0] \"\" X\n SG_ Z : 8|4@1+ (0,0) [0|0] \"\" X\n\n\
             VAL_ 1 U 1 \"ONE\" ;\n"
        );
        let dbc = Dbc::parse(&text).expect("load");
        let e =
            |v: &[(&str, EncodeValue<'_>)]| dbc.encode("M", v).map(|_| ()).map_err(|e| e.code());
        assert_eq!(
            e(&[("U", EncodeValue::Raw(RawValue::Unsigned(16)))]),
            Err("value_out_of_range")
        );
        assert_eq!(
            e(&[("U", EncodeValue::Physical(-1.0))]),
            Err("value_out_of_range")
        );
        assert_eq!(
            e(&[("U", EncodeValue::Physical(f64::NAN))]),
            Err("value_out_of_range")
        );
        assert_eq!(
            e(&[("Z", EncodeValue::Physical(1.0))]),
            Err("value_out_of_range")
        );
        assert_eq!(e(&[("U", EncodeValue::Label("TWO"))]), Err("unknown_label"));
        assert_eq!(
            e(&[("Nope", EncodeValue::Raw(RawValue::Unsigned(0)))]),
            Err("unknown_signal")
        );
        assert_eq!(
            dbc.encode("Nope", &[]).map(|_| ()).map_err(|e| e.code()),
            Err("unknown_message")
        );
        assert_eq!(e(&[("U", EncodeValue::Label("ONE"))]), Ok(()));
        let m = dbc.message_by_name("M").expect("M");
        let mut base = [0xFFu8; 8];
        m.encode_into(&mut base, &[("U", EncodeValue::Raw(RawValue::Unsigned(0)))])
            .expect("into base");
        assert_eq!(
            base,
            [0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            "other bits keep the base frame"
        );
        let mut short = [0u8; 0];
        assert_eq!(
            m.encode_into(&mut short, &[]).map_err(|e| e.code()),
            Err("short_frame")
        );
    }
}
