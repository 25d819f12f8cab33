//! mTLS client configuration from PEM files (ring provider, pinned CA(s), TLS 1.2+); the client
//! key is the PEM file or a signing key held elsewhere (a PKCS#11 token, telematics-keystore).
//! Also the check of a client certificate chain against the same pinned CA(s) (in-band
//! renewal).
//!
//! The CA file may hold several certificates: every one is a trust anchor, so the back end can
//! rotate its CA (old and new pinned side by side, then the old removed).

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
    let roots = pinned_roots(&files.ca)?;
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

/// Every certificate of the PEM file `ca` as a trust anchor.
fn pinned_roots(ca: &Path) -> Result<RootCertStore, LinkError> {
    let mut roots = RootCertStore::empty();
    for cert in certs("CA certificate", ca)? {
        roots
            .add(cert)
            .map_err(|e| invalid("CA certificate", ca, e.to_string()))?;
    }
    Ok(roots)
}

/// Why [`verify_client_chain`] refused a certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainRefusal {
    /// Not PEM certificates, or not a parsable X.509 certificate.
    Malformed(String),
    /// Does not chain to a pinned CA (another CA, bad signature, not a client certificate).
    Untrusted(String),
    /// `notAfter` is in the past.
    Expired,
    /// `notBefore` is in the future.
    NotYetValid,
}

/// Checks the PEM chain `chain_pem` (leaf first) as a TLS client certificate: it must chain to
/// one of the CAs of the PEM file `ca` (webpki, the path the broker takes) and be valid at
/// `now_s` (Unix seconds). The outer error is the CA file's; the inner is the verdict.
pub fn verify_client_chain(
    ca: &Path,
    chain_pem: &[u8],
    now_s: u64,
) -> Result<Result<Vec<CertificateDer<'static>>, ChainRefusal>, LinkError> {
    use rustls::CertificateError as C;
    let roots = Arc::new(pinned_roots(ca)?);
    let chain = match CertificateDer::pem_slice_iter(chain_pem).collect::<Result<Vec<_>, _>>() {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return Ok(Err(ChainRefusal::Malformed("no CERTIFICATE".into()))),
        Err(e) => return Ok(Err(ChainRefusal::Malformed(e.to_string()))),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| LinkError::TlsConfig(e.to_string()))?;
    let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_s));
    let (leaf, intermediates) = chain.split_first().ok_or(LinkError::Stopped)?;
    Ok(
        match verifier.verify_client_cert(leaf, intermediates, now) {
            Ok(_) => Ok(chain.clone()),
            Err(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
                Err(ChainRefusal::Expired)
            }
            Err(rustls::Error::InvalidCertificate(
                C::NotValidYet | C::NotValidYetContext { .. },
            )) => Err(ChainRefusal::NotYetValid),
            Err(rustls::Error::InvalidCertificate(C::BadEncoding)) => {
                Err(ChainRefusal::Malformed("bad encoding".into()))
            }
            Err(e) => Err(ChainRefusal::Untrusted(e.to_string())),
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A CA file with two CAs (the back end rotating its CA): a chain from either is trusted,
    /// one from a third is not.
    #[test]
    fn several_pinned_cas_are_all_trust_anchors() {
        let a = telematics_testkit::TestPki::generate().unwrap();
        let b = telematics_testkit::TestPki::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let both = dir.path().join("cas.pem");
        let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
        std::fs::write(&both, pem(a.ca_cert()) + &pem(b.ca_cert())).unwrap();
        let now = crate::status::unix_now_s();
        for pki in [&a, &b] {
            let c = pki.client("VIN1").unwrap();
            let chain = std::fs::read(&c.cert).unwrap();
            assert!(verify_client_chain(&both, &chain, now).unwrap().is_ok());
            let files = TlsFiles {
                cert_chain: c.cert.clone(),
                key: c.key.clone(),
                ca: both.clone(),
            };
            assert!(client_config(&files).is_ok());
        }
        let rogue = std::fs::read(&a.rogue_client("VIN1").unwrap().cert).unwrap();
        assert!(matches!(
            verify_client_chain(&both, &rogue, now).unwrap(),
            Err(ChainRefusal::Untrusted(_))
        ));
        let c = std::fs::read(&a.client("VIN1").unwrap().cert).unwrap();
        assert_eq!(
            verify_client_chain(&both, &c, 4_200_000_000_000).unwrap(),
            Err(ChainRefusal::Expired)
        );
        assert!(matches!(
            verify_client_chain(&both, b"junk", now).unwrap(),
            Err(ChainRefusal::Malformed(_))
        ));
    }
}
