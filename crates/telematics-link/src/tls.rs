//! mTLS client configuration from PEM files (ring provider, pinned CA, TLS 1.2+); the client
//! key is the PEM file or a signing key held elsewhere (a PKCS#11 token, telematics-keystore).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};

use crate::LinkError;

/// Paths of the client credentials and the pinned CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM client certificate chain (leaf first).
    pub cert_chain: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA certificate(s): the only trust anchors (no system roots).
    pub ca: PathBuf,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|e| LinkError::TlsFileUnreadable {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn invalid(what: &'static str, path: &Path, detail: impl Into<String>) -> LinkError {
    LinkError::TlsFileInvalid {
        what,
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(what, path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// Builds the rustls client configuration: ring provider passed explicitly (never the process
/// default), TLS 1.3 and 1.2 only, the CA from `files.ca` as the only root, the client
/// certificate for mutual TLS. Every failure names the offending file.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, LinkError> {
    client_config_with_key(files, None)
}

/// As [`client_config`], but with `key` (when given) signing the handshake instead of the PEM
/// file `files.key`, which is then not read. The certificate must be for that key: a mismatch
/// is refused here, naming the certificate file.
pub fn client_config_with_key(
    files: &TlsFiles,
    key: Option<&Arc<dyn SigningKey>>,
) -> Result<Arc<ClientConfig>, LinkError> {
    let chain = certs("client certificate", &files.cert_chain)?;
    let mut roots = RootCertStore::empty();
    for ca in certs("CA certificate", &files.ca)? {
        roots
            .add(ca)
            .map_err(|e| invalid("CA certificate", &files.ca, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| LinkError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots);
    if let Some(key) = key {
        let certified = CertifiedKey::new(chain, key.clone());
        certified.keys_match().map_err(|e| {
            invalid(
                "client certificate",
                &files.cert_chain,
                format!("not issued for the key store's identity key: {e}"),
            )
        })?;
        let config = builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        return Ok(Arc::new(config));
    }
    let key_pem = read("client key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid("client key", &files.key, e.to_string()))?;
    let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
        LinkError::TlsConfig(format!(
            "client certificate {} / key {}: {e}",
            files.cert_chain.display(),
            files.key.display()
        ))
    })?;
    Ok(Arc::new(config))
}
