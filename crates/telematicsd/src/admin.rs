//! Admin interface: a Unix socket speaking length-prefixed CBOR.
//!
//! Frame = 4-byte big-endian payload length (1..=[`MAX_FRAME`]) followed by
//! one CBOR-encoded [`Request`] (client → daemon) or [`Response`]
//! (daemon → client). One request, one response, in order; the connection
//! may carry several. See `docs/admin.md`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::error::DaemonError;

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
    /// Troubleshooting facts for `telematicsctl doctor` (see [`crate::diagnostics`]).
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
    /// Troubleshooting facts (see [`crate::diagnostics::Facts`]).
    Diagnostics(Box<crate::diagnostics::Facts>),
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

/// Handles authorized admin requests. Implemented by the daemon on top of
/// telematics-security / telematics-store.
pub trait AdminHandler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, req: Request) -> Response;
}

/// Encodes a value as one frame (length prefix + CBOR).
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, DaemonError> {
    let mut payload = Vec::new();
    ciborium::into_writer(value, &mut payload).map_err(|e| DaemonError::Frame(e.to_string()))?;
    if payload.len() > MAX_FRAME {
        return Err(DaemonError::Frame(format!(
            "payload {} > {MAX_FRAME} bytes",
            payload.len()
        )));
    }
    let len = u32::try_from(payload.len()).map_err(|e| DaemonError::Frame(e.to_string()))?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a CBOR payload (without the length prefix).
pub fn decode_payload<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, DaemonError> {
    ciborium::from_reader(payload).map_err(|e| DaemonError::Frame(format!("bad CBOR: {e}")))
}

/// Decodes a request payload strictly as docs/admin.md specifies: exactly one CBOR item, a
/// map (serde would also take an array whose first element is the `op`), no trailing bytes.
pub fn decode_request(payload: &[u8]) -> Result<Request, DaemonError> {
    let mut rest = payload;
    let value: ciborium::Value = ciborium::from_reader(&mut rest)
        .map_err(|e| DaemonError::Frame(format!("bad CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(DaemonError::Frame(format!(
            "{} bytes after the request",
            rest.len()
        )));
    }
    if !value.is_map() {
        return Err(DaemonError::Frame("a request is a CBOR map".into()));
    }
    value
        .deserialized()
        .map_err(|e| DaemonError::Frame(format!("bad request: {e}")))
}

/// Reads one frame's payload. `Ok(None)` on a clean EOF before a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, DaemonError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_FRAME {
        return Err(DaemonError::Frame(format!(
            "frame length {n} not in 1..={MAX_FRAME}"
        )));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| DaemonError::Frame(format!("truncated frame: {e}")))?;
    Ok(Some(buf))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), DaemonError> {
    let bytes = encode_frame(value)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Who may use the admin socket: root, or a peer whose primary group is
/// `gid`, or whose user name is a member of that group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Allowed group id (None = root only).
    pub gid: Option<u32>,
    /// Supplementary members of the group (user names).
    pub members: Vec<String>,
}

impl AccessPolicy {
    /// Resolves a group name via the system group database; empty name =
    /// root only. Unknown group is an error (fail closed).
    pub fn from_group_name(name: &str) -> Result<Self, DaemonError> {
        if name.is_empty() {
            return Ok(Self::default());
        }
        let g = nix::unistd::Group::from_name(name)
            .map_err(|e| DaemonError::Io(std::io::Error::other(format!("group {name}: {e}"))))?
            .ok_or_else(|| {
                DaemonError::Io(std::io::Error::other(format!(
                    "admin.group: group {name:?} does not exist"
                )))
            })?;
        Ok(Self {
            gid: Some(g.gid.as_raw()),
            members: g.mem,
        })
    }

    /// Decides on a peer's credentials. `user_name` resolves the uid for
    /// supplementary membership.
    pub fn authorize(
        &self,
        uid: u32,
        gid: u32,
        user_name: impl FnOnce(u32) -> Option<String>,
    ) -> Result<(), DaemonError> {
        if uid == 0 {
            return Ok(());
        }
        if let Some(allowed) = self.gid {
            if gid == allowed {
                return Ok(());
            }
            if let Some(name) = user_name(uid)
                && self.members.contains(&name)
            {
                return Ok(());
            }
        }
        Err(DaemonError::Unauthorized { uid, gid })
    }
}

fn user_name_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Binds the admin socket at `path` (replacing a stale one), mode 0660,
/// group `gid` when given.
pub fn bind(path: &std::path::Path, gid: Option<u32>) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let listener = UnixListener::bind(path)?;
    if let Some(g) = gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(g))).map_err(|e| {
            DaemonError::Io(std::io::Error::other(format!("chown admin socket: {e}")))
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves admin connections until `shutdown` is cancelled.
pub async fn serve(
    listener: UnixListener,
    policy: Arc<AccessPolicy>,
    handler: Arc<dyn AdminHandler>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let policy = policy.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                r = handle_connection(stream, &policy, handler) => {
                    if let Err(e) = r {
                        tracing::warn!(code = e.code(), error = %e, "admin connection closed");
                    }
                }
            }
        });
    }
}

/// Authenticates one connection by SO_PEERCRED and serves its requests.
pub async fn handle_connection(
    mut stream: UnixStream,
    policy: &AccessPolicy,
    handler: Arc<dyn AdminHandler>,
) -> Result<(), DaemonError> {
    let cred = stream.peer_cred()?;
    if let Err(e) = policy.authorize(cred.uid(), cred.gid(), user_name_of) {
        tracing::warn!(uid = cred.uid(), gid = cred.gid(), "admin peer rejected");
        let _ = write_frame(&mut stream, &Response::error(e.code(), e.to_string())).await;
        return Err(e);
    }
    serve_stream(&mut stream, handler).await
}

/// Serves requests on an already-authorized stream until EOF.
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    handler: Arc<dyn AdminHandler>,
) -> Result<(), DaemonError> {
    loop {
        let payload = match read_frame(stream).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = write_frame(stream, &Response::error(e.code(), e.to_string())).await;
                return Err(e);
            }
        };
        let resp = match decode_request(&payload) {
            Ok(req) => {
                tracing::info!(op = op_name(&req), "admin request");
                // Handlers block (PBKDF2, fsync): keep them off the async workers.
                let h = handler.clone();
                tokio::task::spawn_blocking(move || h.handle(req))
                    .await
                    .unwrap_or_else(|e| Response::error("admin.internal", e.to_string()))
            }
            Err(e) => Response::error(e.code(), e.to_string()),
        };
        write_frame(stream, &resp).await?;
    }
}

fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Status => "status",
        Request::Pair { .. } => "pair",
        Request::ListDevices => "list_devices",
        Request::RevokeDevice { .. } => "revoke_device",
        Request::ArmRecovery { .. } => "arm_recovery",
        Request::ConfirmRecovery { .. } => "confirm_recovery",
        Request::Lockout => "lockout",
        Request::Audit { .. } => "audit",
        Request::Diagnostics => "diagnostics",
    }
}

/// Client side: sends one request and reads the response.
pub async fn call(path: &std::path::Path, req: &Request) -> Result<Response, DaemonError> {
    let mut s = UnixStream::connect(path).await?;
    call_on(&mut s, req).await
}

/// Client side on an existing stream.
pub async fn call_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &Request,
) -> Result<Response, DaemonError> {
    write_frame(s, req).await?;
    let payload = read_frame(s)
        .await?
        .ok_or_else(|| DaemonError::Frame("daemon closed the connection".into()))?;
    decode_payload(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl AdminHandler for Echo {
        fn handle(&self, req: Request) -> Response {
            match req {
                Request::Lockout => Response::Lockout {
                    failures: 2,
                    locked_until: Some(99),
                },
                Request::Pair { device_name, code } => Response::Paired {
                    device_id: device_name,
                    credential: format!("len{}", code.0.len()),
                },
                _ => Response::Done,
            }
        }
    }

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

    #[tokio::test]
    async fn request_response_over_duplex() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { serve_stream(&mut b, Arc::new(Echo)).await });
        let r = call_on(&mut a, &Request::Lockout).await.expect("call");
        assert_eq!(
            r,
            Response::Lockout {
                failures: 2,
                locked_until: Some(99)
            }
        );
        let r = call_on(
            &mut a,
            &Request::Pair {
                device_name: "p".into(),
                code: Secret("1234".into()),
            },
        )
        .await
        .expect("call");
        assert_eq!(
            r,
            Response::Paired {
                device_id: "p".into(),
                credential: "len4".into()
            }
        );
        drop(a);
        server.await.expect("join").expect("clean eof");
    }

    async fn send_raw(bytes: Vec<u8>) -> (Result<(), DaemonError>, Option<Response>) {
        let (mut a, mut b) = tokio::io::duplex(256 * 1024);
        let server = tokio::spawn(async move { serve_stream(&mut b, Arc::new(Echo)).await });
        a.write_all(&bytes).await.expect("write");
        a.shutdown().await.expect("shutdown");
        let resp = match read_frame(&mut a).await {
            Ok(Some(p)) => decode_payload::<Response>(&p).ok(),
            _ => None,
        };
        (server.await.expect("join"), resp)
    }

    #[tokio::test]
    async fn oversized_and_zero_frames_rejected() {
        let (r, resp) = send_raw(((MAX_FRAME + 1) as u32).to_be_bytes().to_vec()).await;
        assert_eq!(r.expect_err("too big").code(), "admin.frame");
        assert!(matches!(resp, Some(Response::Error { ref code, .. }) if code == "admin.frame"));
        let (r, _) = send_raw(vec![0, 0, 0, 0]).await;
        assert_eq!(r.expect_err("zero").code(), "admin.frame");
    }

    #[tokio::test]
    async fn truncated_frame_rejected() {
        let (r, _) = send_raw(vec![0, 0, 0, 10, 1, 2]).await;
        assert_eq!(r.expect_err("truncated").code(), "admin.frame");
    }

    #[tokio::test]
    async fn garbage_cbor_gets_error_response_and_connection_survives() {
        let mut bytes = vec![0, 0, 0, 3, 0xff, 0x00, 0x13];
        bytes.extend(encode_frame(&Request::Status).expect("encode"));
        let (mut a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { serve_stream(&mut b, Arc::new(Echo)).await });
        a.write_all(&bytes).await.expect("write");
        let p = read_frame(&mut a).await.expect("read").expect("frame");
        let r: Response = decode_payload(&p).expect("response");
        assert!(
            matches!(r, Response::Error { ref code, .. } if code == "admin.frame"),
            "{r:?}"
        );
        let p = read_frame(&mut a).await.expect("read").expect("frame");
        assert_eq!(
            decode_payload::<Response>(&p).expect("response"),
            Response::Done
        );
        drop(a);
        server.await.expect("join").expect("eof");
    }

    #[test]
    fn policy_decisions() {
        let root_only = AccessPolicy::default();
        assert!(root_only.authorize(0, 0, |_| None).is_ok());
        let e = root_only
            .authorize(1000, 1000, |_| None)
            .expect_err("not root");
        assert_eq!(e.code(), "admin.unauthorized");
        let p = AccessPolicy {
            gid: Some(500),
            members: vec!["alice".into()],
        };
        assert!(p.authorize(1000, 500, |_| None).is_ok(), "primary group");
        assert!(
            p.authorize(1001, 100, |_| Some("alice".into())).is_ok(),
            "member"
        );
        assert!(p.authorize(1002, 100, |_| Some("mallory".into())).is_err());
        assert!(p.authorize(1002, 100, |_| None).is_err());
    }

    #[test]
    fn unknown_group_fails_closed() {
        let e = AccessPolicy::from_group_name("no-such-group-telematics-xyz").expect_err("unknown");
        assert!(e.to_string().contains("does not exist"));
        assert_eq!(
            AccessPolicy::from_group_name("").expect("root only"),
            AccessPolicy::default()
        );
    }

    #[tokio::test]
    async fn real_socket_peer_cred_rejection_and_acceptance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        let listener = bind(&path, None).expect("bind");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let me_uid = nix::unistd::getuid().as_raw();
        let me_gid = nix::unistd::getgid().as_raw();
        // A policy that excludes us unless we are root.
        let deny = Arc::new(AccessPolicy {
            gid: Some(me_gid.wrapping_add(12345)),
            members: vec![],
        });
        let token = CancellationToken::new();
        let srv = tokio::spawn(serve(listener, deny, Arc::new(Echo), token.clone()));
        let r = call(&path, &Request::Status).await;
        if me_uid == 0 {
            assert_eq!(r.expect("root allowed"), Response::Done);
        } else {
            let resp = r.expect("error response");
            assert!(
                matches!(resp, Response::Error { ref code, .. } if code == "admin.unauthorized")
            );
        }
        token.cancel();
        srv.await.expect("join");

        // Policy allowing our primary group: accepted (covers the non-root path).
        let listener = bind(&path, None).expect("rebind");
        let allow = Arc::new(AccessPolicy {
            gid: Some(me_gid),
            members: vec![],
        });
        let token = CancellationToken::new();
        let srv = tokio::spawn(serve(listener, allow, Arc::new(Echo), token.clone()));
        assert_eq!(
            call(&path, &Request::Status).await.expect("allowed"),
            Response::Done
        );
        token.cancel();
        srv.await.expect("join");
    }

    /// As root, connect from a real unprivileged process (uid/gid 65534 via
    /// `setpriv`) and check SO_PEERCRED rejects it. Skipped (with a message)
    /// when not root or when setpriv/python3 are missing.
    #[tokio::test]
    async fn unprivileged_process_is_rejected() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: needs root to spawn an unprivileged peer");
            return;
        }
        let have = |b: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !have("setpriv") || !std::path::Path::new("/usr/bin/python3").exists() {
            eprintln!("skipped: setpriv or python3 missing");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        let path = dir.path().join("admin.sock");
        let listener = bind(&path, None).expect("bind");
        // World-connectable so only the peer-credential check stands in the way.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let policy = Arc::new(AccessPolicy {
            gid: Some(0),
            members: vec![],
        });
        let token = CancellationToken::new();
        let srv = tokio::spawn(serve(listener, policy, Arc::new(Echo), token.clone()));
        // The daemon answers an unauthorized peer with one error frame and
        // closes; the client only reads.
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\nd=b''\nwhile True:\n  c=s.recv(4096)\n  if not c: break\n  d+=c\nsys.stdout.write(d.hex())\n",
            path.display().to_string()
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                    &script,
                ])
                .output()
        })
        .await
        .expect("join")
        .expect("spawn setpriv");
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hexout = String::from_utf8(out.stdout).expect("utf8");
        let bytes: Vec<u8> = (0..hexout.len() / 2)
            .filter_map(|i| u8::from_str_radix(hexout.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        assert!(bytes.len() > 4, "no response frame");
        let resp: Response = decode_payload(&bytes[4..]).expect("response");
        assert!(
            matches!(resp, Response::Error { ref code, ref message, .. } if code == "admin.unauthorized" && message.contains("uid 65534")),
            "{resp:?}"
        );
        token.cancel();
        srv.await.expect("join");
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
