//! Error type of the link.

/// Failures of the MQTT link. Each variant has a stable [`LinkError::code`].
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A TLS file (certificate chain, key or CA) is missing or unreadable.
    #[error("cannot read {what} file {path}: {detail}")]
    TlsFileUnreadable {
        /// "client certificate", "client key" or "CA certificate".
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// A TLS file was read but holds no usable PEM object.
    #[error("invalid {what} file {path}: {detail}")]
    TlsFileInvalid {
        /// "client certificate", "client key" or "CA certificate".
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration (e.g. key does not match the certificate).
    #[error("TLS configuration rejected: {0}")]
    TlsConfig(String),
    /// The link configuration is invalid (empty VIN, bad host, ...).
    #[error("invalid link configuration: {0}")]
    Config(String),
    /// The outbox (store) failed.
    #[error("outbox: {0}")]
    Store(#[from] telematics_store::StoreError),
    /// The broker answered the `vehicles/{vin}/commands` SUBSCRIBE with a failure return code
    /// (an ACL or broker policy refuses it): the vehicle is connected but hears no commands.
    /// Not returned by a call: logged with this code and shown as
    /// [`crate::LinkState::SubscribeRefused`] while the link retries.
    #[error("broker refused the subscription to {topic}")]
    SubscribeRefused {
        /// The refused topic filter.
        topic: String,
    },
    /// The probe connection with a new identity failed (refused, TLS error, no CONNACK).
    #[error("probe connection with the new identity failed: {0}")]
    ProbeRefused(String),
    /// The link task is gone (shut down or crashed).
    #[error("the link task has stopped")]
    Stopped,
}

impl LinkError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::TlsFileUnreadable { .. } => "link.tls_file_unreadable",
            LinkError::TlsFileInvalid { .. } => "link.tls_file_invalid",
            LinkError::TlsConfig(_) => "link.tls_config",
            LinkError::Config(_) => "link.bad_config",
            LinkError::Store(_) => "link.store",
            LinkError::SubscribeRefused { .. } => "link.subscribe_refused",
            LinkError::ProbeRefused(_) => "link.probe_refused",
            LinkError::Stopped => "link.stopped",
        }
    }
}
