//! Stand-in for `rustls-native-certs` 0.8: the same API, but no system trust store.
//!
//! telematicsd trusts only the CA pinned in its configuration. rumqttc depends on
//! `rustls-native-certs` for `TlsConfiguration::default()`, which the project never calls;
//! this crate keeps the real one (and `openssl-probe`) out of every binary. If anything did call
//! it, it would get an empty root store, so every TLS handshake would fail: fail closed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;

use rustls_pki_types::CertificateDer;

/// The outcome of loading the platform's certificates: always empty here.
#[derive(Debug, Default)]
pub struct CertificateResult {
    /// Certificates that were loaded (none).
    pub certs: Vec<CertificateDer<'static>>,
    /// Errors encountered while loading (none).
    pub errors: Vec<Error>,
}

impl CertificateResult {
    /// The certificates if no error occurred, otherwise panic with `msg`.
    #[track_caller]
    pub fn expect(self, msg: &str) -> Vec<CertificateDer<'static>> {
        match self.errors.is_empty() {
            true => self.certs,
            false => panic!("{msg}: {:?}", self.errors),
        }
    }

    /// The certificates if no error occurred, otherwise panic.
    #[track_caller]
    pub fn unwrap(self) -> Vec<CertificateDer<'static>> {
        self.expect("errors occurred while loading certificates")
    }
}

/// An error loading certificates (never produced by this stand-in).
#[derive(Debug)]
pub struct Error {
    /// What was being done.
    pub context: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.context)
    }
}

impl std::error::Error for Error {}

/// The platform's trusted root certificates: none. telematicsd trusts only its pinned CA.
pub fn load_native_certs() -> CertificateResult {
    CertificateResult::default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_system_roots() {
        let r = super::load_native_certs();
        assert!(r.errors.is_empty());
        assert!(r.expect("stand-in").is_empty());
    }
}
