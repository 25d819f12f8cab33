//! The telematicsd admin protocol: request/response types, framing and the client.
//!
//! Frame = 4-byte big-endian payload length (1..=[`MAX_FRAME`]) followed by
//! one CBOR-encoded [`Request`] (client → daemon) or [`Response`]
//! (daemon → client). One request, one response, in order; the connection
//! may carry several. See `docs/admin.md`. The server (peer credentials, socket, dispatch) is
//! `telematicsd::admin`; telematicsctl, the benchmarks and the tests need only this crate.

pub mod diagnostics;

use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Errors of the admin protocol. Every variant has a stable machine-readable
/// [`code`](AdminError::code).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An admin-protocol frame was malformed.
    #[error("admin frame error: {0}")]
    Frame(String),
    /// An I/O error on the socket.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl AdminError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Frame(_) => "admin.frame",
            AdminError::Io(_) => "io",
        }
    }
}

/// Unix time in seconds: the clock of the protocol's times (`confirm_by`, `locked_until`,
/// `paired_at`, audit `at`) and of the security layer.
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Maximum frame payload size in bytes.
pub const MAX_FRAME: usize = 64 * 1024;

/// A secret string (security code); `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Admin requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Daemon status.
    Status,
    /// Pair a device in the car: sets (first pairing) or checks the security
    /// code, and creates a device credential.
    Pair {
        /// Human name of the device.
        device_name: String,
        /// The security code (new code on first pairing).
        code: Secret,
    },
    /// List paired devices.
    ListDevices,
    /// Revoke a device.
    RevokeDevice {
        /// Device id as listed.
        device_id: String,
    },
    /// Recovery step 1: verify a back-end-signed reset authorization (CBOR byte string) and
    /// arm the reset for the confirmation window.
    ArmRecovery {
        /// The back-end-signed reset authorization (tagged COSE_Sign1 bytes).
        #[serde(with = "cbor_bytes")]
        authorization: Vec<u8>,
    },
    /// Recovery step 2, in the car: set the new security code while a reset is armed.
    ConfirmRecovery {
        /// The new security code.
        new_code: Secret,
    },
    /// Current lockout state.
    Lockout,
    /// Recent audit events.
    Audit {
        /// At most this many events, newest last.
        limit: u32,
    },
    /// Troubleshooting facts for `telematicsctl doctor` (see [`diagnostics`]).
    Diagnostics,
}

/// A paired device as listed by the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id.
    pub device_id: String,
    /// Human name.
    pub name: String,
    /// Pairing time (unix seconds).
    pub paired_at: u64,
    /// Revoked?
    pub revoked: bool,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: u64,
    /// Event kind, e.g. `command.accepted`.
    pub kind: String,
    /// Free text detail (never contains secrets).
    pub detail: String,
}

/// Admin responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Daemon status.
    Status {
        /// Crate version.
        version: String,
        /// VIN.
        vin: String,
        /// Seconds since start.
        uptime_s: u64,
        /// Component name → state text.
        components: Vec<(String, String)>,
    },
    /// A new device credential (opaque text; CBOR/base64 defined by
    /// telematics-security).
    Paired {
        /// Device id.
        device_id: String,
        /// Credential to hand to the device; shown once.
        credential: String,
    },
    /// Device list.
    Devices {
        /// The devices.
        devices: Vec<DeviceInfo>,
    },
    /// Lockout state.
    Lockout {
        /// Consecutive failures.
        failures: u32,
        /// Locked until (unix seconds), if locked.
        locked_until: Option<u64>,
    },
    /// Audit events.
    Audit {
        /// The events.
        events: Vec<AuditEvent>,
    },
    /// A reset authorization was verified and armed.
    RecoveryArmed {
        /// Confirm the new code in the car until this time (unix seconds).
        confirm_by: u64,
    },
    /// Troubleshooting facts (see [`diagnostics::Facts`]).
    Diagnostics(Box<diagnostics::Facts>),
    /// Success without data.
    Done,
    /// Failure with a stable code.
    Error {
        /// Machine-readable code.
        code: String,
        /// Human message.
        message: String,
        /// For `security.locked_out` (and a `security.wrong_code` that started a wait):
        /// seconds until a code check is allowed again; `u64::MAX` = until recovery. Absent
        /// otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_s: Option<u64>,
    },
}

impl Response {
    /// Convenience constructor for [`Response::Error`] (no retry-after).
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Response::Error {
            code: code.into(),
            message: message.into(),
            retry_after_s: None,
        }
    }
}

impl Response {
    /// An error response with a lockout's retry-after in seconds (`u64::MAX` = until
    /// recovery); see [`Response::Error`].
    pub fn refused(code: &str, message: impl Into<String>, retry_after_s: Option<u64>) -> Self {
        Response::Error {
            code: code.into(),
            message: message.into(),
            retry_after_s,
        }
    }
}

/// `Vec<u8>` as a CBOR byte string (major type 2), as docs/admin.md specifies `bytes`. Only a
/// byte string is accepted (serde's default for `Vec<u8>` is an array of integers).
mod cbor_bytes {
    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// Encodes a value as one frame (length prefix + CBOR).
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, AdminError> {
    let mut payload = Vec::new();
    ciborium::into_writer(value, &mut payload).map_err(|e| AdminError::Frame(e.to_string()))?;
    if payload.len() > MAX_FRAME {
        return Err(AdminError::Frame(format!(
            "payload {} > {MAX_FRAME} bytes",
            payload.len()
        )));
    }
    let len = u32::try_from(payload.len()).map_err(|e| AdminError::Frame(e.to_string()))?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a CBOR payload (without the length prefix).
pub fn decode_payload<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, AdminError> {
    ciborium::from_reader(payload).map_err(|e| AdminError::Frame(format!("bad CBOR: {e}")))
}

/// Decodes a request payload strictly as docs/admin.md specifies: exactly one CBOR item, a
/// map (serde would also take an array whose first element is the `op`), no trailing bytes.
pub fn decode_request(payload: &[u8]) -> Result<Request, AdminError> {
    let mut rest = payload;
    let value: ciborium::Value = ciborium::from_reader(&mut rest)
        .map_err(|e| AdminError::Frame(format!("bad CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(AdminError::Frame(format!(
            "{} bytes after the request",
            rest.len()
        )));
    }
    if !value.is_map() {
        return Err(AdminError::Frame("a request is a CBOR map".into()));
    }
    value
        .deserialized()
        .map_err(|e| AdminError::Frame(format!("bad request: {e}")))
}

/// Reads one frame's payload. `Ok(None)` on a clean EOF before a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, AdminError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_FRAME {
        return Err(AdminError::Frame(format!(
            "frame length {n} not in 1..={MAX_FRAME}"
        )));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| AdminError::Frame(format!("truncated frame: {e}")))?;
    Ok(Some(buf))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), AdminError> {
    let bytes = encode_frame(value)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Client side: sends one request and reads the response.
pub async fn call(path: &std::path::Path, req: &Request) -> Result<Response, AdminError> {
    let mut s = UnixStream::connect(path).await?;
    call_on(&mut s, req).await
}

/// Client side on an existing stream.
pub async fn call_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &Request,
) -> Result<Response, AdminError> {
    write_frame(s, req).await?;
    let payload = read_frame(s)
        .await?
        .ok_or_else(|| AdminError::Frame("daemon closed the connection".into()))?;
    decode_payload(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_redacted() {
        let r = Request::Pair {
            device_name: "phone".into(),
            code: Secret("123456".into()),
        };
        let d = format!("{r:?}");
        assert!(!d.contains("123456"), "{d}");
        assert!(d.contains("redacted"));
    }

    #[test]
    fn frame_roundtrip() {
        let req = Request::Audit { limit: 7 };
        let f = encode_frame(&req).expect("encode");
        assert_eq!(
            u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize,
            f.len() - 4
        );
        let back: Request = decode_payload(&f[4..]).expect("decode");
        assert_eq!(back, req);
    }

    #[test]
    fn authorization_is_a_cbor_byte_string() {
        let auth: Vec<u8> = (0u8..=99).collect();
        let f = encode_frame(&Request::ArmRecovery {
            authorization: auth.clone(),
        })
        .expect("encode");
        let v: ciborium::Value = ciborium::from_reader(&f[4..]).expect("cbor");
        let map = v.as_map().expect("map");
        let field = map
            .iter()
            .find(|(k, _)| k.as_text() == Some("authorization"))
            .map(|(_, v)| v.clone());
        assert_eq!(field, Some(ciborium::Value::Bytes(auth.clone())));
        assert_eq!(
            decode_payload::<Request>(&f[4..]).expect("decode"),
            Request::ArmRecovery {
                authorization: auth
            }
        );
        // An array of integers is not `bytes`: refused as a bad frame.
        let array = ciborium::Value::Map(vec![
            (
                ciborium::Value::Text("op".into()),
                ciborium::Value::Text("arm_recovery".into()),
            ),
            (
                ciborium::Value::Text("authorization".into()),
                ciborium::Value::Array(vec![ciborium::Value::Integer(1.into())]),
            ),
        ]);
        let mut payload = Vec::new();
        ciborium::into_writer(&array, &mut payload).expect("encode");
        let e = decode_request(&payload).expect_err("array refused");
        assert_eq!(e.code(), "admin.frame");
        // Only maps, one item, nothing after it.
        let as_array = ciborium::Value::Array(vec![ciborium::Value::Text("status".into())]);
        let mut payload = Vec::new();
        ciborium::into_writer(&as_array, &mut payload).expect("encode");
        assert!(
            decode_payload::<Request>(&payload).is_ok(),
            "serde alone takes it"
        );
        assert_eq!(
            decode_request(&payload).expect_err("array").code(),
            "admin.frame"
        );
        let mut status = encode_frame(&Request::Status).expect("encode")[4..].to_vec();
        assert_eq!(decode_request(&status).expect("status"), Request::Status);
        status.push(0);
        assert_eq!(
            decode_request(&status).expect_err("trailing").code(),
            "admin.frame"
        );
    }

    #[test]
    fn retry_after_only_on_the_wire_when_present() {
        let plain = encode_frame(&Response::error("admin.frame", "x")).expect("encode");
        let v: ciborium::Value = ciborium::from_reader(&plain[4..]).expect("cbor");
        assert_eq!(v.as_map().expect("map").len(), 3, "result, code, message");
        let r = Response::Error {
            code: "security.locked_out".into(),
            message: "m".into(),
            retry_after_s: Some(30),
        };
        let f = encode_frame(&r).expect("encode");
        assert_eq!(decode_payload::<Response>(&f[4..]).expect("decode"), r);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode_payload::<Request>(&bytes);
            let _ = decode_request(&bytes);
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
            rt.block_on(async {
                let mut r = bytes.as_slice();
                let _ = read_frame(&mut r).await;
            });
        }
    }
}
