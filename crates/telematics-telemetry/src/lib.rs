//! Sans-IO telemetry: CBOR payloads, periodic and on-change publishing schedule, alert rules
//! with hysteresis, the paired-device list and revocation outcomes. No I/O and no clock: `now` is unix milliseconds passed in by the shell.

mod alert;
mod devices;
mod error;
mod identity;
mod payload;
mod schedule;

pub use alert::{AlertEngine, ThresholdRule};
pub use devices::{DeviceEntry, DeviceList, DeviceStatus, RevocationOutcome};
pub use error::TelemetryError;
pub use identity::RenewalOutcome;
pub use payload::{
    Alert, AlertState, CommandResult, ResultState, SignalValue, Telemetry, TelemetryKind,
};
pub use schedule::{OnChange, Schedule, ScheduleConfig};

#[cfg(test)]
mod tests;
