//! The crate's single error type.

use thiserror::Error;

use crate::protection::Scheme;

/// Every error produced by `telematics-can`. Each variant has a stable machine-readable
/// [`code`](CanError::code).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CanError {
    /// The DBC text could not be parsed; `line`/`column` locate the problem when known.
    #[error("DBC parse error at line {line}, column {column}: {message}")]
    DbcParse {
        /// 1-based line (0 when the parser gave no position).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// Parser message.
        message: String,
    },
    /// The DBC parsed but is semantically invalid (e.g. a multiplexer cycle).
    #[error("invalid DBC: {0}")]
    DbcInvalid(String),
    /// The frame is shorter than the message definition requires.
    #[error("short frame for id {id:#x}: {got} bytes, message needs {need}")]
    ShortFrame {
        /// CAN id of the frame.
        id: u32,
        /// Bytes received.
        got: usize,
        /// Bytes the message needs.
        need: usize,
    },
    /// No message with this id / name exists in the DBC.
    #[error("unknown message {0}")]
    UnknownMessage(String),
    /// No signal with this name exists in the message / DBC.
    #[error("unknown signal {0}")]
    UnknownSignal(String),
    /// A value to encode does not fit the signal's raw range (or is not finite).
    #[error("value out of range for signal {signal}: {value}")]
    ValueOutOfRange {
        /// Signal name.
        signal: String,
        /// Offending value (rendered).
        value: String,
    },
    /// A value-table label to encode is not defined for the signal.
    #[error("unknown label {label:?} for signal {signal}")]
    UnknownLabel {
        /// Signal name.
        signal: String,
        /// Label given.
        label: String,
    },
    /// Encoding a multiplexed signal conflicts with the multiplexer value.
    #[error("multiplexer conflict: {0}")]
    MuxConflict(String),
    /// The VSS mapping configuration is invalid; the message names the bad entry.
    #[error("invalid VSS mapping: {0}")]
    Mapping(String),
    /// A transform math expression is invalid.
    #[error("invalid transform expression {expr:?}: {reason}")]
    Expression {
        /// The expression text.
        expr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A candump log line could not be parsed.
    #[error("candump: {0}")]
    Candump(#[from] CandumpError),
    /// A frame protection configuration cannot work on this frame (offset outside the frame,
    /// overlapping fields, a value the scheme does not allow); `reason` names the key.
    #[error("{scheme} protection: {reason}")]
    ProtectionConfig {
        /// The scheme.
        scheme: Scheme,
        /// What is wrong, naming the configuration key.
        reason: String,
    },
    /// A frame's length does not fit its protection scheme.
    #[error("{scheme} protection: frame of {got} bytes, the scheme needs {need}")]
    ProtectionLength {
        /// The scheme.
        scheme: Scheme,
        /// Bytes given.
        got: usize,
        /// Bytes the scheme needs.
        need: usize,
    },
    /// The frame's checksum / CRC does not match its content.
    #[error("{scheme} protection: checksum mismatch")]
    ChecksumMismatch {
        /// The scheme.
        scheme: Scheme,
    },
    /// An alive counter outside the scheme's range (given to protect, or read from a frame:
    /// E2E profile 1 never sends 15).
    #[error("{scheme} protection: counter {counter} is outside the scheme's range")]
    CounterInvalid {
        /// The scheme.
        scheme: Scheme,
        /// The counter value.
        counter: u64,
    },
    /// The explicit data id nibble of an E2E profile 1 frame (nibble mode) is not the
    /// configured one.
    #[error("{scheme} protection: data id mismatch")]
    DataIdMismatch {
        /// The scheme.
        scheme: Scheme,
    },
    /// The SecOC MAC of a secured frame is wrong (wrong key, data id, payload or freshness).
    #[error("SecOC: authenticator mismatch")]
    MacMismatch,
    /// The SecOC freshness value of a secured frame is not newer than the last accepted one.
    #[error("SecOC: freshness {got} is not newer than the last accepted {last}")]
    FreshnessReplay {
        /// Last accepted freshness value.
        last: u64,
        /// Freshness value of the frame.
        got: u64,
    },
    /// The SecOC freshness value does not fit its configured width: the counter is used up
    /// (a key change is due), or a value given is too large.
    #[error("SecOC: freshness value exhausted ({bits}-bit counter)")]
    FreshnessExhausted {
        /// Configured width of the freshness value.
        bits: u8,
    },
    /// A SecOC key is not 16 bytes (AES-128).
    #[error("SecOC: key must be 16 bytes, got {0}")]
    SecOcKeyLength(usize),
}

impl CanError {
    /// Stable machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CanError::DbcParse { .. } => "dbc_parse",
            CanError::DbcInvalid(_) => "dbc_invalid",
            CanError::ShortFrame { .. } => "short_frame",
            CanError::UnknownMessage(_) => "unknown_message",
            CanError::UnknownSignal(_) => "unknown_signal",
            CanError::ValueOutOfRange { .. } => "value_out_of_range",
            CanError::UnknownLabel { .. } => "unknown_label",
            CanError::MuxConflict(_) => "mux_conflict",
            CanError::Mapping(_) => "mapping_invalid",
            CanError::Expression { .. } => "expression_invalid",
            CanError::Candump(e) => e.code(),
            CanError::ProtectionConfig { .. } => "protection_config",
            CanError::ProtectionLength { .. } => "protection_length",
            CanError::ChecksumMismatch { .. } => "protection_checksum",
            CanError::CounterInvalid { .. } => "protection_counter",
            CanError::DataIdMismatch { .. } => "protection_data_id",
            CanError::MacMismatch => "secoc_mac",
            CanError::FreshnessReplay { .. } => "secoc_replay",
            CanError::FreshnessExhausted { .. } => "secoc_freshness_exhausted",
            CanError::SecOcKeyLength(_) => "secoc_key_length",
        }
    }
}

/// Why a candump log line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CandumpError {
    /// Empty or whitespace-only line.
    #[error("empty line")]
    Empty,
    /// Missing or malformed `(seconds.micros)` timestamp.
    #[error("bad timestamp")]
    BadTimestamp,
    /// Missing interface name or frame field.
    #[error("missing field")]
    MissingField,
    /// CAN id is not hex or too large.
    #[error("bad CAN id")]
    BadId,
    /// Payload is not an even number of hex digits or too long.
    #[error("bad payload")]
    BadData,
    /// Malformed remote frame (`R`) or CAN FD flags.
    #[error("bad frame flags")]
    BadFlags,
}

impl CandumpError {
    /// Stable machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CandumpError::Empty => "candump_empty",
            CandumpError::BadTimestamp => "candump_bad_timestamp",
            CandumpError::MissingField => "candump_missing_field",
            CandumpError::BadId => "candump_bad_id",
            CandumpError::BadData => "candump_bad_data",
            CandumpError::BadFlags => "candump_bad_flags",
        }
    }
}
