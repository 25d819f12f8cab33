//! Error type of the store.

/// Every failure of the durable store. Each variant has a stable machine-readable
/// [`StoreError::code`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file exists but is not a valid (or is a damaged) redb database.
    /// The store fails closed: it never silently recreates the file.
    #[error("store file {path} is corrupted or not a telematicsd store: {detail}")]
    Corrupted {
        /// Path of the database file.
        path: String,
        /// What redb reported.
        detail: String,
    },
    /// The database file is already opened by another process or handle.
    #[error("store file {path} is already open by another process")]
    AlreadyOpen {
        /// Path of the database file.
        path: String,
    },
    /// The file could not be opened/created (permissions, missing directory, ...).
    #[error("cannot open store file {path}: {detail}")]
    Open {
        /// Path of the database file.
        path: String,
        /// The underlying error.
        detail: String,
    },
    /// A read or write transaction failed at runtime (I/O error, disk full, ...).
    #[error("store transaction failed: {0}")]
    Transaction(String),
    /// A stored outbox record could not be decoded (damaged record).
    #[error("outbox record {seq} is damaged: {detail}")]
    BadRecord {
        /// Sequence number of the record.
        seq: u64,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The outbox configuration is unusable (zero capacity).
    #[error("invalid outbox configuration: {0}")]
    Config(&'static str),
    /// A key for the key/value area is empty or too long.
    #[error("invalid key: {0}")]
    BadKey(&'static str),
}

impl StoreError {
    /// Stable machine-readable code of the error (for logs, metrics and tests).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Corrupted { .. } => "store.corrupted",
            StoreError::AlreadyOpen { .. } => "store.already_open",
            StoreError::Open { .. } => "store.open_failed",
            StoreError::Transaction(_) => "store.transaction_failed",
            StoreError::BadRecord { .. } => "store.bad_record",
            StoreError::Config(_) => "store.bad_config",
            StoreError::BadKey(_) => "store.bad_key",
        }
    }
}

/// Maps any redb runtime error to [`StoreError::Transaction`].
pub(crate) fn tx<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Transaction(e.to_string())
}
