//! The command envelope (tagged COSE_Encrypt0, A256GCM) and its plaintext, key derivation and
//! AAD. See docs/protocol.md for the normative description.

use ciborium::Value;
use coset::{TaggedCborSerializable, iana};
use ring::aead;

use crate::cbor::{self, IntMap};
use crate::error::{Error, Fault};
use crate::{Action, CommandId};

/// Hard upper bound on any envelope this crate decodes, independent of configuration.
pub const ABSOLUTE_MAX_SIZE: usize = 64 * 1024;
/// Private-use COSE header label carrying the target VIN in the protected header.
pub const HEADER_VIN: i64 = -65537;
/// HKDF salt (domain separation for every key this protocol derives).
pub const HKDF_SALT: &[u8] = b"telematicsd/v1 hkdf salt";
/// HKDF info prefix for the command AEAD key.
pub const INFO_COMMAND: &[u8] = b"telematicsd command v1";
/// HKDF info prefix for the session-info MAC key.
pub const INFO_SESSION: &[u8] = b"telematicsd session v1";
/// AES-GCM IV length.
pub const IV_LEN: usize = 12;

struct Len32;
impl ring::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256(ikm = device secret, salt = [`HKDF_SALT`], info = prefix || 0x00 || VIN), 32 B.
pub fn derive_key(secret: &[u8], info_prefix: &[u8], vin: &str) -> [u8; 32] {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, HKDF_SALT);
    let prk = salt.extract(secret);
    let info = [info_prefix, &[0u8], vin.as_bytes()];
    let mut out = [0u8; 32];
    // expand/fill only fail for lengths > 255*32, which 32 is not.
    if let Ok(okm) = prk.expand(&info, Len32) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// External AAD of a command: UTF-8 `vehicles/{VIN}/commands` (the MQTT topic it travels on).
pub fn command_aad(vin: &str) -> Vec<u8> {
    format!("vehicles/{vin}/commands").into_bytes()
}

/// A decoded (not yet authenticated) command envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// COSE `kid` from the protected header.
    pub key_id: Vec<u8>,
    /// Target VIN from the protected header (label -65537).
    pub vin: String,
    /// 12-byte IV from the unprotected header.
    pub iv: [u8; IV_LEN],
    /// Raw protected header bytes (authenticated as part of the AAD).
    pub protected: Vec<u8>,
    /// Ciphertext including the 16-byte GCM tag.
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// Strictly parse a tagged COSE_Encrypt0 command envelope (the fuzz target entry point).
    /// Never panics; refuses anything untagged, with unexpected headers, another algorithm,
    /// or a bad IV length, and anything not in deterministic encoding (RFC 8949 §4.2.1): the
    /// COSE structure and, separately, the contents of the protected-header bstr. The
    /// plaintext is held to the same rule by [`CommandPayload::from_cbor`].
    pub fn decode(bytes: &[u8]) -> Result<Envelope, Fault> {
        if bytes.len() > ABSOLUTE_MAX_SIZE {
            return Err(Fault::TooLarge);
        }
        cbor::check_deterministic(bytes).map_err(|()| Fault::Decode)?;
        let msg = coset::CoseEncrypt0::from_tagged_slice(bytes).map_err(|_| Fault::Decode)?;
        // Canonical: the message must re-encode to exactly the received bytes.
        let reenc = msg.clone().to_tagged_vec().map_err(|_| Fault::Decode)?;
        if reenc != bytes {
            return Err(Fault::Decode);
        }
        let ph = &msg.protected.header;
        if ph.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::A256GCM))
            || !ph.crit.is_empty()
            || ph.content_type.is_some()
            || ph.key_id.is_empty()
            || ph.key_id.len() > 64
            || !ph.iv.is_empty()
            || !ph.partial_iv.is_empty()
            || !ph.counter_signatures.is_empty()
            || ph.rest.len() != 1
        {
            return Err(Fault::Decode);
        }
        let vin = match ph.rest.first() {
            Some((coset::Label::Int(HEADER_VIN), Value::Text(v))) if valid_vin(v) => v.clone(),
            _ => return Err(Fault::Decode),
        };
        let uh = &msg.unprotected;
        if uh.alg.is_some()
            || !uh.crit.is_empty()
            || uh.content_type.is_some()
            || !uh.key_id.is_empty()
            || !uh.partial_iv.is_empty()
            || !uh.counter_signatures.is_empty()
            || !uh.rest.is_empty()
        {
            return Err(Fault::Decode);
        }
        let iv: [u8; IV_LEN] = uh.iv.as_slice().try_into().map_err(|_| Fault::Decode)?;
        let ciphertext = msg.ciphertext.clone().ok_or(Fault::Decode)?;
        if ciphertext.len() < aead::AES_256_GCM.tag_len() {
            return Err(Fault::Decode);
        }
        let protected = msg.protected.original_data.clone().ok_or(Fault::Decode)?;
        // The protected header travels as opaque bytes (coset keeps them as received and
        // re-encodes them verbatim), so its contents need their own deterministic check.
        cbor::check_deterministic(&protected).map_err(|()| Fault::Decode)?;
        Ok(Envelope {
            key_id: ph.key_id.clone(),
            vin,
            iv,
            protected,
            ciphertext,
        })
    }

    /// Open the AEAD with the device secret; returns the plaintext bytes.
    pub fn open(&self, secret: &[u8]) -> Result<Vec<u8>, Fault> {
        let key = derive_key(secret, INFO_COMMAND, &self.vin);
        let enc = enc_structure(&self.protected, &command_aad(&self.vin));
        aead_open(&key, &self.iv, &enc, &self.ciphertext)
    }
}

/// Whether `v` is a plausible VIN: 1..=32 ASCII alphanumerics (ISO 3779 VINs are 17).
pub fn valid_vin(v: &str) -> bool {
    !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `Enc_structure = ["Encrypt0", protected, external_aad]` (RFC 9052 §5.3).
fn enc_structure(protected: &[u8], external_aad: &[u8]) -> Vec<u8> {
    cbor::to_vec(&Value::Array(vec![
        Value::Text("Encrypt0".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(external_aad.to_vec()),
    ]))
}

fn aead_open(key: &[u8; 32], iv: &[u8; IV_LEN], aad: &[u8], ct: &[u8]) -> Result<Vec<u8>, Fault> {
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| Fault::Aead)?;
    let key = aead::LessSafeKey::new(unbound);
    let mut buf = ct.to_vec();
    let pt = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(*iv),
            aead::Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| Fault::Aead)?;
    Ok(pt.to_vec())
}

pub(crate) fn aead_seal(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    aad: &[u8],
    pt: &[u8],
) -> Result<Vec<u8>, Error> {
    let unbound =
        aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| Error::Invalid("key"))?;
    let key = aead::LessSafeKey::new(unbound);
    let mut buf = pt.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(*iv),
        aead::Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| Error::Invalid("seal"))?;
    Ok(buf)
}

/// The authenticated plaintext of a command.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandPayload {
    /// Target VIN (must equal the protected-header VIN and the vehicle's VIN).
    pub vin: String,
    /// 128-bit command id.
    pub command_id: CommandId,
    /// Action and parameters.
    pub action: Action,
    /// Per-device counter, strictly increasing.
    pub counter: u64,
    /// Issued-at, Unix seconds.
    pub issued_at: u64,
    /// Expires-at, Unix seconds.
    pub expires_at: u64,
    /// The security code (only ever inside the AEAD).
    pub code: String,
}

impl std::fmt::Debug for CommandPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandPayload")
            .field("vin", &self.vin)
            .field("command_id", &self.command_id)
            .field("action", &self.action)
            .field("counter", &self.counter)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// Wire name of an action.
pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Lock => "lock",
        Action::Unlock => "unlock",
        Action::EngineStart { .. } => "engine_start",
        Action::EngineStop => "engine_stop",
        Action::FlashLights => "flash_lights",
        Action::Horn => "horn",
        Action::RevokeDevice { .. } => "revoke_device",
    }
}

impl CommandPayload {
    /// Deterministic CBOR encoding (keys 1..=8 in ascending order; key 4 only when the action
    /// has parameters).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut m = vec![
            (1, Value::Text(self.vin.clone())),
            (2, Value::Bytes(self.command_id.0.to_vec())),
            (3, Value::Text(action_name(&self.action).into())),
        ];
        match &self.action {
            Action::EngineStart {
                max_run_secs: Some(s),
            } => m.push((4, cbor::int_map(vec![(1, Value::Integer((*s).into()))]))),
            Action::RevokeDevice { key_id } => {
                m.push((4, cbor::int_map(vec![(1, Value::Bytes(key_id.0.clone()))])));
            }
            _ => {}
        }
        m.push((5, Value::Integer(self.counter.into())));
        m.push((6, Value::Integer(self.issued_at.into())));
        m.push((7, Value::Integer(self.expires_at.into())));
        m.push((8, Value::Text(self.code.clone())));
        cbor::to_vec(&cbor::int_map(m))
    }

    /// Strict parse: deterministic CBOR (shortest forms, definite lengths, keys in ascending
    /// order, no duplicates), integer keys 1..=8 only, right types. Any violation is
    /// [`Fault::BadPayload`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Fault> {
        let bad = |_| Fault::BadPayload;
        let m = IntMap::parse(bytes).map_err(bad)?;
        m.only(&[1, 2, 3, 4, 5, 6, 7, 8]).map_err(bad)?;
        let command_id: [u8; 16] = m
            .bytes(2)
            .ok_or(Fault::BadPayload)?
            .try_into()
            .map_err(|_| Fault::BadPayload)?;
        let params = match m.get(4) {
            None => None,
            Some(v) => {
                let p = IntMap::from_value(v.clone()).map_err(bad)?;
                p.only(&[1]).map_err(bad)?;
                Some(p)
            }
        };
        let name = m.text(3).ok_or(Fault::BadPayload)?;
        let action = match (name, params) {
            ("lock", None) => Action::Lock,
            ("unlock", None) => Action::Unlock,
            ("engine_stop", None) => Action::EngineStop,
            ("flash_lights", None) => Action::FlashLights,
            ("horn", None) => Action::Horn,
            ("engine_start", None) => Action::EngineStart { max_run_secs: None },
            ("engine_start", Some(p)) => {
                let s = p.uint(1).ok_or(Fault::BadPayload)?;
                Action::EngineStart {
                    max_run_secs: Some(u32::try_from(s).map_err(|_| Fault::BadPayload)?),
                }
            }
            ("revoke_device", Some(p)) => {
                let kid = p.bytes(1).ok_or(Fault::BadPayload)?;
                if !crate::revocation::valid_key_id(kid) {
                    return Err(Fault::BadPayload);
                }
                Action::RevokeDevice {
                    key_id: crate::KeyId(kid.to_vec()),
                }
            }
            _ => return Err(Fault::BadPayload),
        };
        let code = m.text(8).ok_or(Fault::BadPayload)?;
        if code.len() > 16 {
            return Err(Fault::BadPayload);
        }
        Ok(CommandPayload {
            vin: m.text(1).ok_or(Fault::BadPayload)?.to_owned(),
            command_id: CommandId(command_id),
            action,
            counter: m.uint(5).ok_or(Fault::BadPayload)?,
            issued_at: m.uint(6).ok_or(Fault::BadPayload)?,
            expires_at: m.uint(7).ok_or(Fault::BadPayload)?,
            code: code.to_owned(),
        })
    }
}

/// Seal a payload into a tagged COSE_Encrypt0 envelope with the given IV.
pub(crate) fn seal_envelope(
    key_id: &[u8],
    secret: &[u8],
    payload: &CommandPayload,
    iv: [u8; IV_LEN],
) -> Result<Vec<u8>, Error> {
    if !valid_vin(&payload.vin) {
        return Err(Error::Invalid("vin"));
    }
    let key = derive_key(secret, INFO_COMMAND, &payload.vin);
    let protected = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::A256GCM)
        .key_id(key_id.to_vec())
        .value(HEADER_VIN, Value::Text(payload.vin.clone()))
        .build();
    let unprotected = coset::HeaderBuilder::new().iv(iv.to_vec()).build();
    let aad = command_aad(&payload.vin);
    let msg = coset::CoseEncrypt0Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .try_create_ciphertext(&payload.to_cbor(), &aad, |pt, enc| {
            aead_seal(&key, &iv, enc, pt)
        })?
        .build();
    msg.to_tagged_vec()
        .map_err(|e| Error::Encoding(e.to_string()))
}
