//! Admin interface, server side: the Unix socket (mode, group, SO_PEERCRED policy) and the
//! dispatch of decoded requests to an [`AdminHandler`]. The protocol itself (types, framing,
//! client) is the `telematics-admin` crate, re-exported here for the daemon's own use. See
//! `docs/admin.md`.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

pub use telematics_admin::{
    AdminError, AuditEvent, DeviceInfo, MAX_FRAME, Request, Response, Secret, call, call_on,
    decode_payload, decode_request, encode_frame, read_frame, write_frame,
};

use crate::error::DaemonError;

/// Handles authorized admin requests. Implemented by the daemon on top of
/// telematics-security / telematics-store.
pub trait AdminHandler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, req: Request) -> Response;
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
    /// root only. Unknown group is a configuration error, `config.invalid` (fail closed); a
    /// failed lookup is `io`.
    pub fn from_group_name(name: &str) -> Result<Self, DaemonError> {
        if name.is_empty() {
            return Ok(Self::default());
        }
        let g = nix::unistd::Group::from_name(name)
            .map_err(|e| DaemonError::Io(std::io::Error::other(format!("group {name}: {e}"))))?
            .ok_or_else(|| {
                DaemonError::ConfigInvalid(vec![format!(
                    "admin.group: group {name:?} does not exist"
                )])
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
                return Err(e.into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

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
        assert_eq!(e.code(), "config.invalid");
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
}
