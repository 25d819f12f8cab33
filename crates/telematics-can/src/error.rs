//! The crate's single error type.

use thiserror::Error;

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
