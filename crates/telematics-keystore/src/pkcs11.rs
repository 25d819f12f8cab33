//! PKCS#11 backend (cryptoki): the identity key is a non-extractable EC P-256 key pair in the
//! token (CKA_SENSITIVE, not CKA_EXTRACTABLE) that signs digests (CKM_ECDSA); the sealing key
//! is a non-extractable AES-256 key used inside the token (CKM_AES_GCM).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rustls::sign::SigningKey;

use crate::IdentitySlot;
use crate::config::Pkcs11Config;
use crate::error::{KeyError, Result};
use crate::sign::{DigestSigner, TokenSigningKey, p256_spki};

/// DER of the prime256v1 OID (CKA_EC_PARAMS).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn ck(op: &'static str) -> impl Fn(CkError) -> KeyError {
    move |e| KeyError::Pkcs11 {
        op,
        detail: e.to_string(),
    }
}

/// One initialised context per module per process: C_Initialize twice fails, and C_Finalize
/// of one copy would end the sessions of the others.
fn context(module: &PathBuf) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let err = |detail: String| KeyError::Module {
        path: module.display().to_string(),
        detail,
    };
    let ctx = Pkcs11::new(module).map_err(|e| err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(err(e.to_string())),
    }
    map.insert(module.clone(), ctx.clone());
    Ok(ctx)
}

/// A logged-in session on the configured token.
pub(crate) struct Token {
    session: Mutex<Session>,
    cfg: Pkcs11Config,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.cfg.token_label)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the module, finds the token by label, reads the PIN and logs in.
    pub(crate) fn open(cfg: &Pkcs11Config) -> Result<Arc<Token>> {
        let ctx = context(&cfg.module)?;
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(ck("C_GetSlotList"))? {
            let info = ctx.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
            if info.label().trim_end() == cfg.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| KeyError::TokenNotFound(cfg.token_label.clone()))?;
        let src = cfg
            .pin
            .as_ref()
            .ok_or_else(|| KeyError::Config("keys.pkcs11.pin is not set".into()))?;
        let raw = src.read("PIN")?;
        let pin = String::from_utf8(raw)
            .map_err(|_| KeyError::SecretMissing {
                what: "PIN",
                source_desc: src.describe(),
                detail: "not UTF-8".into(),
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string();
        let session = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        match session.login(UserType::User, Some(&AuthPin::from(pin))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                return Err(KeyError::Login {
                    token: cfg.token_label.clone(),
                    detail: e.to_string(),
                });
            }
        }
        Ok(Arc::new(Token {
            session: Mutex::new(session),
            cfg: cfg.clone(),
        }))
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn label(&self, slot: IdentitySlot) -> String {
        match slot {
            IdentitySlot::Current => self.cfg.key_label.clone(),
            IdentitySlot::Next => format!("{}.next", self.cfg.key_label),
        }
    }

    fn find(&self, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>> {
        let found = self
            .session()
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(ck("C_FindObjects"))?;
        Ok(found.into_iter().next())
    }

    /// The identity key of `slot` as a rustls signing key. The current key falls back to
    /// `<label>.old` when a promotion was interrupted between its two relabels.
    pub(crate) fn signing_key(self: &Arc<Self>, slot: IdentitySlot) -> Result<Arc<dyn SigningKey>> {
        let mut label = self.label(slot);
        let mut private = self.find(ObjectClass::PRIVATE_KEY, &label)?;
        if private.is_none() && slot == IdentitySlot::Current {
            label = format!("{}.old", self.cfg.key_label);
            private = self.find(ObjectClass::PRIVATE_KEY, &label)?;
        }
        let private = private.ok_or_else(|| {
            KeyError::NotFound(format!(
                "private key {:?} in token {:?}",
                self.label(slot),
                self.cfg.token_label
            ))
        })?;
        let public = match self.find(ObjectClass::PUBLIC_KEY, &label)? {
            Some(h) => Some(h),
            None => self.find(ObjectClass::PUBLIC_KEY, &self.label(slot))?,
        };
        let public = public.ok_or_else(|| {
            KeyError::NotFound(format!(
                "public key {label:?} in token {:?}",
                self.cfg.token_label
            ))
        })?;
        let attrs = self
            .session()
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(ck("C_GetAttributeValue"))?;
        let point = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| KeyError::UnsupportedKey(format!("{label:?} has no CKA_EC_POINT")))?;
        // CKA_EC_POINT is a DER OCTET STRING around the point (some tokens give it bare).
        let point = match point.as_slice() {
            [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest.to_vec(),
            _ => point,
        };
        Ok(Arc::new(TokenSigningKey {
            signer: Arc::new(TokenEcKey {
                token: self.clone(),
                handle: private,
            }),
            spki: p256_spki(&point)?,
        }))
    }

    fn destroy_label(&self, label: &str) -> Result<()> {
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            while let Some(h) = self.find(class, label)? {
                self.session()
                    .destroy_object(h)
                    .map_err(ck("C_DestroyObject"))?;
            }
        }
        Ok(())
    }

    fn relabel(&self, class: ObjectClass, from: &str, to: &str) -> Result<()> {
        if let Some(h) = self.find(class, from)? {
            self.session()
                .update_attributes(h, &[Attribute::Label(to.as_bytes().to_vec())])
                .map_err(ck("C_SetAttributeValue"))?;
        }
        Ok(())
    }

    /// Generates a new non-extractable P-256 key pair for `slot` (replacing one there).
    pub(crate) fn generate(&self, slot: IdentitySlot) -> Result<()> {
        let label = self.label(slot);
        self.destroy_label(&label)?;
        let l = Attribute::Label(label.as_bytes().to_vec());
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            l.clone(),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            l,
        ];
        self.session()
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(ck("C_GenerateKeyPair"))?;
        Ok(())
    }

    /// Next becomes current: per object class (private, then public key) current -> `.old`
    /// and next -> current, then `.old` destroyed. Resumable: every step leaves a state this
    /// finishes (a class whose `next` object is gone is done; a `current` object while `next`
    /// is still there is the old one), so a crash between any two token calls is completed by
    /// calling it again (the daemon does at start, seeing the `next` public key certified).
    pub(crate) fn promote(&self) -> Result<()> {
        let next = self.label(IdentitySlot::Next);
        let classes = [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY];
        let mut pending = false;
        for class in classes {
            pending |= self.find(class, &next)?.is_some();
        }
        if !pending {
            return Err(KeyError::NotFound(format!("key {next:?} in the token")));
        }
        let cur = self.label(IdentitySlot::Current);
        let old = format!("{cur}.old");
        for class in classes {
            if self.find(class, &next)?.is_none() {
                continue;
            }
            if self.find(class, &cur)?.is_some() {
                while let Some(h) = self.find(class, &old)? {
                    self.session()
                        .destroy_object(h)
                        .map_err(ck("C_DestroyObject"))?;
                }
                self.relabel(class, &cur, &old)?;
            }
            self.relabel(class, &next, &cur)?;
        }
        self.destroy_label(&old)
    }

    pub(crate) fn delete(&self, slot: IdentitySlot) -> Result<()> {
        self.destroy_label(&self.label(slot))
    }

    /// The AES sealing key; `keys.not_found` when it was never provisioned.
    pub(crate) fn aes_key(self: &Arc<Self>) -> Result<Arc<TokenAesKey>> {
        let label = &self.cfg.seal_key_label;
        let handle = self.find(ObjectClass::SECRET_KEY, label)?.ok_or_else(|| {
            KeyError::NotFound(format!(
                "sealing key {label:?} in token {:?} (provision it: docs/deploy.md)",
                self.cfg.token_label
            ))
        })?;
        Ok(Arc::new(TokenAesKey {
            token: self.clone(),
            handle,
        }))
    }

    /// Generates the AES-256 sealing key in the token unless it exists. Returns whether it
    /// generated one.
    pub(crate) fn provision_seal_key(&self) -> Result<bool> {
        let label = &self.cfg.seal_key_label;
        if self.find(ObjectClass::SECRET_KEY, label)?.is_some() {
            return Ok(false);
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.session()
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(ck("C_GenerateKey"))?;
        Ok(true)
    }
}

/// A private EC key in the token.
#[derive(Debug)]
struct TokenEcKey {
    token: Arc<Token>,
    handle: ObjectHandle,
}

impl DigestSigner for TokenEcKey {
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        self.token
            .session()
            .sign(&Mechanism::Ecdsa, self.handle, digest)
            .map_err(ck("C_Sign"))
    }
}

/// The AES-256 sealing key in the token.
#[derive(Debug)]
pub(crate) struct TokenAesKey {
    token: Arc<Token>,
    handle: ObjectHandle,
}

impl TokenAesKey {
    pub(crate) fn encrypt(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(ck("CK_GCM_PARAMS"))?;
        self.token
            .session()
            .encrypt(&Mechanism::AesGcm(params), self.handle, plaintext)
            .map_err(|e| KeyError::Seal(format!("C_Encrypt (CKM_AES_GCM): {e}")))
    }

    pub(crate) fn decrypt(&self, nonce: &[u8; 12], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(ck("CK_GCM_PARAMS"))?;
        self.token
            .session()
            .decrypt(&Mechanism::AesGcm(params), self.handle, sealed)
            .map_err(|e| {
                KeyError::Unseal(format!(
                    "C_Decrypt (CKM_AES_GCM) refused the record (wrong key or tampered): {e}"
                ))
            })
    }
}
