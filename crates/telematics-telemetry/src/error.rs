//! The crate's error type.

/// Errors of the telemetry core. Each variant has a stable machine-readable [`code`](TelemetryError::code).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TelemetryError {
    /// The bytes are not valid CBOR.
    #[error("payload is not valid CBOR: {0}")]
    Decode(String),
    /// Valid CBOR that does not match the payload schema.
    #[error("payload schema violation at `{field}`: {why}")]
    Schema {
        /// Offending field.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// CBOR serialisation failed.
    #[error("payload encoding failed: {0}")]
    Encode(String),
    /// A configuration value is invalid.
    #[error("invalid telemetry configuration `{field}`: {why}")]
    InvalidConfig {
        /// Offending key.
        field: String,
        /// What is wrong.
        why: &'static str,
    },
}

impl TelemetryError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TelemetryError::Decode(_) => "telemetry_decode",
            TelemetryError::Schema { .. } => "telemetry_schema",
            TelemetryError::Encode(_) => "telemetry_encode",
            TelemetryError::InvalidConfig { .. } => "telemetry_invalid_config",
        }
    }
}
