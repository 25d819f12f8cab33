//! Session info: an authenticated reply (tagged COSE_Mac0, HMAC 256/256 under a key derived
//! from the device secret) that lets a client resynchronise its counter and clock and learn
//! the lockout state.

use ciborium::Value;
use coset::{TaggedCborSerializable, iana};
use ring::hmac;

use crate::cbor::{self, IntMap};
use crate::envelope::{INFO_SESSION, derive_key};
use crate::error::{Error, Fault};
use crate::state::{RetryAfter, SecurityState};

/// Lockout state as reported to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockoutReport {
    /// Code checks allowed.
    None,
    /// Wait this many seconds.
    Backoff {
        /// Seconds until the next code check is allowed.
        retry_after: u64,
    },
    /// Locked until recovery.
    UntilRecovery,
}

/// Contents of a session-info reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// VIN.
    pub vin: String,
    /// Last counter accepted from this device; the next command must use a larger one.
    pub last_counter: u64,
    /// Vehicle clock, Unix seconds.
    pub clock: u64,
    /// Consecutive wrong codes.
    pub consecutive_failures: u32,
    /// Lockout state.
    pub lockout: LockoutReport,
    /// Recovery epoch.
    pub epoch: u32,
    /// Client challenge echoed back (freshness), up to 32 bytes.
    pub echo: Vec<u8>,
}

/// Largest session request accepted (a key id and a 32-byte challenge need about 50 bytes).
pub const MAX_REQUEST_SIZE: usize = 128;

/// Longest client challenge echoed in a session-info reply, bytes.
pub const MAX_CHALLENGE_LEN: usize = 32;

/// A client's request for session info (docs/protocol.md §8), received unauthenticated on
/// `vehicles/{VIN}/session/request`: deterministic CBOR `{1: kid, 2: challenge}`. It reveals
/// nothing to its sender: the reply is MACed under the named device's session key, so only
/// the holder of that credential can read it with confidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    /// Key id of the credential whose session info is asked for.
    pub key_id: Vec<u8>,
    /// Freshness challenge, echoed in the reply (at most [`MAX_CHALLENGE_LEN`] bytes).
    pub challenge: Vec<u8>,
}

impl SessionRequest {
    /// The request's wire form.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(&cbor::int_map(vec![
            (1, Value::Bytes(self.key_id.clone())),
            (2, Value::Bytes(self.challenge.clone())),
        ]))
    }

    /// Parses a request: `too_large` above [`MAX_REQUEST_SIZE`], `decode` for anything that is
    /// not exactly the documented map (deterministic encoding, both keys, nothing else).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Fault> {
        if bytes.len() > MAX_REQUEST_SIZE {
            return Err(Fault::TooLarge);
        }
        let m = IntMap::parse(bytes).map_err(|()| Fault::Decode)?;
        m.only(&[1, 2]).map_err(|()| Fault::Decode)?;
        let key_id = m.bytes(1).ok_or(Fault::Decode)?;
        let challenge = m.bytes(2).ok_or(Fault::Decode)?;
        if key_id.is_empty() || key_id.len() > 64 || challenge.len() > MAX_CHALLENGE_LEN {
            return Err(Fault::Decode);
        }
        Ok(SessionRequest {
            key_id: key_id.to_vec(),
            challenge: challenge.to_vec(),
        })
    }
}

/// External AAD of a session-info reply: UTF-8 `vehicles/{VIN}/session`.
pub fn session_aad(vin: &str) -> Vec<u8> {
    format!("vehicles/{vin}/session").into_bytes()
}

impl SessionInfo {
    fn to_cbor(&self) -> Vec<u8> {
        let (state, retry) = match self.lockout {
            LockoutReport::None => ("none", None),
            LockoutReport::Backoff { retry_after } => ("backoff", Some(retry_after)),
            LockoutReport::UntilRecovery => ("until_recovery", None),
        };
        let mut m = vec![
            (1, Value::Text(self.vin.clone())),
            (2, Value::Integer(self.last_counter.into())),
            (3, Value::Integer(self.clock.into())),
            (4, Value::Integer(self.consecutive_failures.into())),
            (5, Value::Text(state.into())),
        ];
        if let Some(r) = retry {
            m.push((6, Value::Integer(r.into())));
        }
        m.push((7, Value::Integer(self.epoch.into())));
        m.push((8, Value::Bytes(self.echo.clone())));
        cbor::to_vec(&cbor::int_map(m))
    }

    fn from_cbor(b: &[u8]) -> Result<Self, Error> {
        let bad = || Error::Encoding("session info".into());
        let m = IntMap::parse(b).map_err(|_| bad())?;
        m.only(&[1, 2, 3, 4, 5, 6, 7, 8]).map_err(|_| bad())?;
        let lockout = match m.text(5).ok_or_else(bad)? {
            "none" => LockoutReport::None,
            "backoff" => LockoutReport::Backoff {
                retry_after: m.uint(6).ok_or_else(bad)?,
            },
            "until_recovery" => LockoutReport::UntilRecovery,
            _ => return Err(bad()),
        };
        Ok(SessionInfo {
            vin: m.text(1).ok_or_else(bad)?.to_owned(),
            last_counter: m.uint(2).ok_or_else(bad)?,
            clock: m.uint(3).ok_or_else(bad)?,
            consecutive_failures: u32::try_from(m.uint(4).ok_or_else(bad)?).map_err(|_| bad())?,
            lockout,
            epoch: u32::try_from(m.uint(7).ok_or_else(bad)?).map_err(|_| bad())?,
            echo: m.bytes(8).ok_or_else(bad)?.to_vec(),
        })
    }
}

/// Vehicle side: build the authenticated session-info reply for `key_id`. Fails with
/// `unknown_key`/`revoked_key` (no authenticated reply possible/allowed).
pub fn build_session_info(
    state: &SecurityState,
    vin: &str,
    key_id: &[u8],
    echo: &[u8],
    now: u64,
) -> Result<Vec<u8>, Error> {
    let cred = state.credential(key_id).ok_or(Fault::UnknownKey)?;
    if !cred.is_active() {
        return Err(Fault::RevokedKey.into());
    }
    if echo.len() > MAX_CHALLENGE_LEN {
        return Err(Error::Invalid("echo longer than 32 bytes"));
    }
    let lockout = match state.retry_after(now) {
        None => LockoutReport::None,
        Some(RetryAfter::Seconds(s)) => LockoutReport::Backoff { retry_after: s },
        Some(RetryAfter::UntilRecovery) => LockoutReport::UntilRecovery,
    };
    let info = SessionInfo {
        vin: vin.to_owned(),
        last_counter: cred.last_counter,
        clock: now,
        consecutive_failures: state.lockout.consecutive_failures,
        lockout,
        epoch: state.epoch,
        echo: echo.to_vec(),
    };
    let key = hmac::Key::new(
        hmac::HMAC_SHA256,
        &derive_key(&cred.secret, INFO_SESSION, vin),
    );
    let protected = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::HMAC_256_256)
        .key_id(key_id.to_vec())
        .build();
    coset::CoseMac0Builder::new()
        .protected(protected)
        .payload(info.to_cbor())
        .create_tag(&session_aad(vin), |data| {
            hmac::sign(&key, data).as_ref().to_vec()
        })
        .build()
        .to_tagged_vec()
        .map_err(|e| Error::Encoding(e.to_string()))
}

/// Client side: verify and parse a session-info reply with the device secret.
pub fn parse_session_info(
    secret: &[u8],
    key_id: &[u8],
    vin: &str,
    bytes: &[u8],
) -> Result<SessionInfo, Error> {
    if bytes.len() > crate::envelope::ABSOLUTE_MAX_SIZE {
        return Err(Fault::TooLarge.into());
    }
    let mac = coset::CoseMac0::from_tagged_slice(bytes).map_err(|_| Fault::Decode)?;
    let ph = &mac.protected.header;
    if ph.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::HMAC_256_256))
        || ph.key_id != key_id
    {
        return Err(Fault::Decode.into());
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, &derive_key(secret, INFO_SESSION, vin));
    mac.verify_payload_tag(
        &session_aad(vin),
        || Fault::Decode,
        |tag, data| hmac::verify(&key, data, tag).map_err(|_| Fault::Aead),
    )?;
    let payload = mac.payload.as_deref().ok_or(Fault::Decode)?;
    let info = SessionInfo::from_cbor(payload)?;
    if info.vin != vin {
        return Err(Fault::WrongVin.into());
    }
    Ok(info)
}
