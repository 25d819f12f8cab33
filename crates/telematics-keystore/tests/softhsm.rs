//! The key store against a REAL SoftHSM2 token (Debian package `softhsm2`), set up here in a
//! temporary directory (own softhsm2.conf and token directory, tokens initialised with
//! softhsm2-util), and a REAL mosquitto with mTLS (telematics-testkit).
#![allow(clippy::unwrap_used, missing_docs)]
// One `std::env::set_var` (SOFTHSM2_CONF), before the first PKCS#11 call: SoftHSM2 reads its
// configuration only from the environment.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use telematics_keystore::{
    Backend, IdentitySlot, KeyError, KeyStore, KeysConfig, Pkcs11Config, SealKind, SecretSource,
    write_new_seal_key,
};
use telematics_link::{Link, LinkConfig, LinkState, TlsFiles, client_config_with_key};
use telematics_store::Store;
use telematics_testkit::{Mosquitto, P256PublicKey, TestPki};

use telematics_testkit::softhsm::{PIN, SoftHsm};

/// One token per test (SoftHSM2 reads its token directory at C_Initialize, once per process).
const TOKENS: [&str; 5] = ["mtls", "export", "seal", "fail", "rotate"];

fn hsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let hsm = SoftHsm::new(&TOKENS);
        // SAFETY: set once, inside the OnceLock, before any PKCS#11 call of this process.
        unsafe { std::env::set_var("SOFTHSM2_CONF", hsm.conf()) };
        hsm
    })
}

fn token_cfg(token: &str) -> KeysConfig {
    let h = hsm();
    KeysConfig {
        backend: Backend::Pkcs11,
        seal_key: None,
        pkcs11: Pkcs11Config {
            module: h.module().to_path_buf(),
            token_label: token.into(),
            pin: Some(SecretSource::File(h.pin_file())),
            key_label: "identity".into(),
            seal_key_label: "seal".into(),
        },
        migrate_clear_state: false,
    }
}

fn open(token: &str) -> KeyStore {
    KeyStore::open(&token_cfg(token), Path::new("/nonexistent/unused.key")).unwrap()
}

/// The test's own logged-in session on `token`, outside the key store: what any other code
/// in the process could do with the PIN.
fn raw_session(token: &str) -> Session {
    let ctx = Pkcs11::new(hsm().module()).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN.to_string()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

fn find(s: &Session, class: ObjectClass, label: &str) -> ObjectHandle {
    s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .unwrap()
    .into_iter()
    .next()
    .unwrap_or_else(|| panic!("{label} not in the token"))
}

const VIN: &str = "WBA00000000000013";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_to_mosquitto_with_the_identity_key_in_the_token() {
    let ks = open("mtls");
    assert!(matches!(
        ks.tls_signing_key(IdentitySlot::Current),
        Err(KeyError::NotFound(_))
    ));
    ks.generate_identity(IdentitySlot::Current).unwrap();
    let id = ks.identity(IdentitySlot::Current).unwrap();
    let pki = TestPki::generate().unwrap();
    // The certificate is issued for the token's public key; the test never sees the private key.
    let public = P256PublicKey::from_spki(id.spki().as_ref()).unwrap();
    let cert = pki.client_for_key(VIN, &public).unwrap();
    let broker = Mosquitto::start(&pki, &[]).unwrap();
    let files = TlsFiles {
        cert_chain: cert,
        key: PathBuf::from("/nonexistent/no-key-file.pem"),
        ca: pki.ca_cert().to_path_buf(),
    };
    let mut lc = LinkConfig::new(VIN, "localhost", broker.port(), files.clone());
    lc.backoff_min = Duration::from_millis(100);
    lc.backoff_max = Duration::from_millis(500);
    lc.client_key = Some(ks.tls_signing_key(IdentitySlot::Current).unwrap());
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path().join("state.redb")).unwrap();
    let (link, _incoming) = Link::start(lc, store.outbox()).unwrap();
    let mut state = link.state();
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, LinkState::Connected)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(
        connected,
        "no mTLS session with the token key: {:?}\n{}",
        *state.borrow(),
        broker.log()
    );
    link.shutdown(Duration::from_millis(200)).await;

    // A certificate for another key is refused before any connection, naming the file.
    let other = pki.client(VIN).unwrap();
    let mismatch = TlsFiles {
        cert_chain: other.cert.clone(),
        ..files
    };
    let key = ks.tls_signing_key(IdentitySlot::Current).unwrap();
    let err = client_config_with_key(&mismatch, Some(&key)).unwrap_err();
    assert!(
        err.to_string().contains("not issued for the key store"),
        "{err}"
    );
}

#[test]
fn identity_and_sealing_keys_cannot_be_exported() {
    let ks = open("export");
    ks.generate_identity(IdentitySlot::Current).unwrap();
    assert!(ks.provision_seal_key().unwrap());
    let s = raw_session("export");
    let ec = find(&s, ObjectClass::PRIVATE_KEY, "identity");
    let aes = find(&s, ObjectClass::SECRET_KEY, "seal");
    for (what, h) in [("EC private key", ec), ("AES sealing key", aes)] {
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::Value,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                ],
            )
            .unwrap();
        assert!(
            !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
            "{what}: C_GetAttributeValue(CKA_VALUE) returned the key"
        );
        assert!(
            attrs.contains(&Attribute::Sensitive(true)),
            "{what}: {attrs:?}"
        );
        assert!(
            attrs.contains(&Attribute::Extractable(false)),
            "{what}: {attrs:?}"
        );
        assert!(
            attrs.contains(&Attribute::NeverExtractable(true)),
            "{what}: {attrs:?}"
        );
        // Direct read of CKA_VALUE alone: the token answers CKR_ATTRIBUTE_SENSITIVE.
        let direct = s.get_attributes(h, &[AttributeType::Value]).unwrap();
        assert!(direct.is_empty(), "{what}: {direct:?}");
    }
    // Wrapping under a key of the attacker's choosing: refused as unextractable.
    let wrapping = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    for (what, h) in [("EC private key", ec), ("AES sealing key", aes)] {
        let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, h);
        assert!(
            matches!(wrapped, Err(CkError::Pkcs11(RvError::KeyUnextractable, _))),
            "{what}: C_WrapKey gave {wrapped:?}"
        );
    }
    // The key still signs: a signature of the token verifies against its public key.
    let id = ks.identity(IdentitySlot::Current).unwrap();
    let sig = id.sign(b"handshake transcript").unwrap();
    let spki = id.spki();
    let point = &spki.as_ref()[26..];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(b"handshake transcript", &sig)
        .expect("token signature verifies");
}

#[test]
fn state_seals_and_unseals_in_the_token() {
    let ks = open("seal");
    assert!(
        matches!(ks.sealer(), Err(KeyError::NotFound(_))),
        "unprovisioned: fail closed"
    );
    assert!(ks.provision_seal_key().unwrap());
    assert!(
        !ks.provision_seal_key().unwrap(),
        "provisioning twice keeps the key"
    );
    let sealer = ks.sealer().unwrap().unwrap();
    assert_eq!(sealer.kind(), SealKind::Token);
    let secret = b"device secret 0123456789abcdef";
    let sealed = sealer.seal(b"security.state/VIN1", secret).unwrap();
    assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    assert_ne!(
        sealed,
        sealer.seal(b"security.state/VIN1", secret).unwrap(),
        "fresh nonce"
    );
    assert_eq!(
        sealer.unseal(b"security.state/VIN1", &sealed).unwrap(),
        secret
    );
    // Another record identity, a flipped bit: refused.
    assert_eq!(
        sealer
            .unseal(b"security.state/VIN2", &sealed)
            .unwrap_err()
            .code(),
        "keys.unseal_failed"
    );
    let mut tampered = sealed.clone();
    tampered[20] ^= 0x01;
    assert_eq!(
        sealer
            .unseal(b"security.state/VIN1", &tampered)
            .unwrap_err()
            .code(),
        "keys.unseal_failed"
    );
    // The key persists in the token: a new key store (new session) opens the record.
    let again = open("seal").sealer().unwrap().unwrap();
    assert_eq!(
        again.unseal(b"security.state/VIN1", &sealed).unwrap(),
        secret
    );
    // A key-file sealer does not open a token record.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    write_new_seal_key(&key).unwrap();
    let files = files_store(&key);
    let file_sealer = files.sealer().unwrap().unwrap();
    assert_eq!(
        file_sealer
            .unseal(b"security.state/VIN1", &sealed)
            .unwrap_err()
            .code(),
        "keys.unseal_failed"
    );
}

fn files_store(seal_key: &Path) -> KeyStore {
    let cfg = KeysConfig {
        seal_key: Some(SecretSource::File(seal_key.to_path_buf())),
        ..KeysConfig::default()
    };
    KeyStore::open(&cfg, &seal_key.with_file_name("client.key")).unwrap()
}

#[test]
fn state_seals_and_unseals_with_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    write_new_seal_key(&key).unwrap();
    assert_eq!(std::fs::metadata(&key).unwrap().len(), 32);
    assert!(
        write_new_seal_key(&key).is_err(),
        "never replaces a sealing key"
    );
    let sealer = files_store(&key).sealer().unwrap().unwrap();
    assert_eq!(sealer.kind(), SealKind::KeyFile);
    let sealed = sealer.seal(b"rec", b"verifier").unwrap();
    assert_eq!(sealer.unseal(b"rec", &sealed).unwrap(), b"verifier");
    let other_key = dir.path().join("other.key");
    write_new_seal_key(&other_key).unwrap();
    let other = files_store(&other_key).sealer().unwrap().unwrap();
    assert_eq!(
        other.unseal(b"rec", &sealed).unwrap_err().code(),
        "keys.unseal_failed"
    );
    // No key file configured: no sealer (clear state, development); a missing file: refused.
    let plain = KeyStore::open(&KeysConfig::default(), &dir.path().join("c.key")).unwrap();
    assert!(plain.sealer().unwrap().is_none());
    let missing = files_store(&dir.path().join("absent.key"))
        .sealer()
        .unwrap_err();
    assert_eq!(missing.code(), "keys.seal_key_missing");
}

#[test]
fn token_failures_refuse_with_stable_codes() {
    let h = hsm();
    let code = |cfg: KeysConfig| {
        KeyStore::open(&cfg, Path::new("/unused"))
            .map(|_| ())
            .unwrap_err()
            .code()
    };
    let mut cfg = token_cfg("fail");
    cfg.pkcs11.module = h.dir().join("no-such-module.so");
    assert_eq!(code(cfg), "keys.pkcs11_module");
    assert_eq!(code(token_cfg("no-such-token")), "keys.token_not_found");
    let mut cfg = token_cfg("fail");
    cfg.pkcs11.pin = Some(SecretSource::File(h.dir().join("no-pin")));
    assert_eq!(code(cfg), "keys.pin_missing");
    let wrong = h.dir().join("wrong-pin");
    std::fs::write(&wrong, "0000").unwrap();
    let mut cfg = token_cfg("fail");
    cfg.pkcs11.pin = Some(SecretSource::File(wrong));
    assert_eq!(code(cfg), "keys.login");
    let mut cfg = token_cfg("fail");
    cfg.pkcs11.pin = None;
    assert_eq!(code(cfg), "keys.config");
    let ks = open("fail");
    assert_eq!(
        ks.tls_signing_key(IdentitySlot::Current)
            .unwrap_err()
            .code(),
        "keys.not_found"
    );
    assert_eq!(ks.sealer().unwrap_err().code(), "keys.not_found");
}

#[test]
fn a_next_identity_is_generated_and_promoted_in_the_token() {
    let ks = open("rotate");
    let first = ks.generate_identity(IdentitySlot::Current).unwrap();
    let next = ks.generate_identity(IdentitySlot::Next).unwrap();
    assert_ne!(first, next);
    assert_eq!(ks.public_key(IdentitySlot::Current).unwrap(), first);
    ks.promote().unwrap();
    assert_eq!(ks.public_key(IdentitySlot::Current).unwrap(), next);
    assert_eq!(
        ks.public_key(IdentitySlot::Next).unwrap_err().code(),
        "keys.not_found"
    );
    assert_eq!(ks.promote().unwrap_err().code(), "keys.not_found");
}
