//! Sans-IO CAN signal pipeline: DBC loading, frame decode/encode, VSS mapping, candump parsing,
//! vehicle state store.
//!
//! No I/O, threads or clocks: time is passed in ([`state::Timestamp`]), frames are passed in and
//! results are returned. See the crate README for the design decisions.
//!
//! DBC message ids are read as written: `0..=0x7FF` is a standard id, `0x800..=0x1FFFFFFF`
//! (with or without bit 31, as opendbc and Vector write them) an extended id, anything else
//! no CAN id (the message is dropped with a [`LoadWarning`]); see [`dbc`] for the full rule.
//! Raw signal values are exact at every width up to 64 bits ([`RawValue`]).

pub mod actuation;
pub mod candump;
pub mod dbc;
pub mod demo;
pub mod error;
pub mod expr;
pub mod frame;
pub mod protection;
pub mod sim;
pub mod state;
pub mod vss;
pub mod vss_encode;

pub use candump::{CandumpReader, GarbageLine, LogFrame, format_line, parse_line};
pub use dbc::{
    ByteOrder, Dbc, DecodeOutcome, DecodeStats, DecodedMessage, DecodedSignal, EncodeValue,
    LoadWarning, LoadWarningKind, MessageDef, MuxCondition, RawValue, SignalDef, ValueKind,
};
pub use error::{CanError, CandumpError};
pub use frame::{CanFrame, CanId};
pub use protection::{Checked, Protection};
pub use state::{Change, Reading, SnapshotEntry, Timestamp, VehicleState};
/// A VSS signal value: the one type for decoded values, vehicle state and telemetry payloads,
/// defined by `telematics-telemetry` (which has no CAN dependencies, so telematicsctl decodes
/// payloads without linking the DBC parser).
pub use telematics_telemetry::SignalValue;
pub use vss::{BoundMapping, MapKey, Transform, VssEntry, VssMapping, VssType, VssUpdate};
