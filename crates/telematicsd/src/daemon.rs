//! The daemon run loop: admin socket, signals, sd-notify, watchdog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AccessPolicy, AdminHandler, Request, Response};
use crate::config::Config;
use crate::error::DaemonError;

/// External events fed into the main loop (from signals or tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonEvent {
    /// SIGHUP: reload certificates.
    ReloadCertificates,
}

/// A configured daemon instance.
pub struct Daemon {
    config: Config,
    handler: Arc<dyn AdminHandler>,
    policy: AccessPolicy,
    shutdown: CancellationToken,
    /// Send `true` to sd-notify (only when running under systemd).
    notify: bool,
}

impl Daemon {
    /// Creates a daemon. `handler` answers admin requests; the admin group
    /// is resolved from the system group database (fail closed).
    pub fn new(config: Config, handler: Arc<dyn AdminHandler>) -> Result<Self, DaemonError> {
        let policy = AccessPolicy::from_group_name(&config.admin.group)?;
        Ok(Self::with_policy(config, handler, policy))
    }

    /// Creates a daemon with an explicit admin access policy (tests).
    pub fn with_policy(
        config: Config,
        handler: Arc<dyn AdminHandler>,
        policy: AccessPolicy,
    ) -> Self {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        Self {
            config,
            handler,
            policy,
            shutdown: CancellationToken::new(),
            notify,
        }
    }

    /// The token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    fn sd(&self, states: &[sd_notify::NotifyState<'_>]) {
        if self.notify
            && let Err(e) = sd_notify::notify(states)
        {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    /// Runs until the shutdown token is cancelled. `events` carries
    /// SIGHUP-style events. Sends `READY=1` once the admin socket is up,
    /// `WATCHDOG=1` from the healthy main loop and `STOPPING=1` on shutdown.
    pub async fn run(self, mut events: mpsc::Receiver<DaemonEvent>) -> Result<(), DaemonError> {
        let gid = self.policy.gid;
        let listener = admin::bind(&self.config.admin.socket, gid)?;
        let admin_task = tokio::spawn(admin::serve(
            listener,
            Arc::new(self.policy.clone()),
            self.handler.clone(),
            self.shutdown.clone(),
        ));
        tracing::info!(socket = %self.config.admin.socket.display(), vin = %self.config.vehicle.vin, "telematicsd started");
        self.sd(&[sd_notify::NotifyState::Ready]);

        // Ping at half the watchdog interval; default tick otherwise.
        let wd = if self.notify {
            sd_notify::watchdog_enabled()
        } else {
            None
        };
        let mut tick = tokio::time::interval(wd.map_or(Duration::from_secs(5), |d| d / 2));
        let mut last_loop = Instant::now();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(DaemonEvent::ReloadCertificates) => {
                        tracing::info!("SIGHUP: certificate reload requested");
                        self.sd(&[sd_notify::NotifyState::Reloading]);
                        // Hook: telematics-link reload once wired.
                        self.sd(&[sd_notify::NotifyState::Ready]);
                    }
                    None => {}
                },
                _ = tick.tick() => {
                    let healthy = !admin_task.is_finished();
                    if healthy && wd.is_some() {
                        self.sd(&[sd_notify::NotifyState::Watchdog]);
                    } else if !healthy {
                        tracing::error!("admin task ended; withholding watchdog ping");
                    }
                    last_loop = Instant::now();
                }
            }
        }
        tracing::info!(
            since_last_tick_ms = last_loop.elapsed().as_millis() as u64,
            "shutting down"
        );
        self.sd(&[sd_notify::NotifyState::Stopping]);
        let _ = admin_task.await;
        let _ = std::fs::remove_file(&self.config.admin.socket);
        Ok(())
    }
}

/// Admin handler used until telematics-security is wired: answers
/// `Status` and refuses every security operation (fail closed).
pub struct StatusOnlyHandler {
    vin: String,
    started: Instant,
}

impl StatusOnlyHandler {
    /// Creates the handler.
    pub fn new(vin: &str) -> Self {
        Self {
            vin: vin.to_string(),
            started: Instant::now(),
        }
    }
}

impl AdminHandler for StatusOnlyHandler {
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => Response::Status {
                version: env!("CARGO_PKG_VERSION").into(),
                vin: self.vin.clone(),
                uptime_s: self.started.elapsed().as_secs(),
                components: vec![("security".into(), "not wired".into())],
            },
            _ => Response::error("admin.unavailable", "security store not available"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn daemon_runs_serves_admin_and_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg =
            Config::from_toml_with_env("[vehicle]\nvin = \"1M8GDM9AXKP042788\"\n", Vec::new())
                .expect("cfg");
        cfg.admin.socket = dir.path().join("run/admin.sock");
        let gid = nix::unistd::getgid().as_raw();
        let d = Daemon::with_policy(
            cfg.clone(),
            Arc::new(StatusOnlyHandler::new(&cfg.vehicle.vin)),
            AccessPolicy {
                gid: Some(gid),
                members: vec![],
            },
        );
        let token = d.shutdown_token();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(d.run(rx));
        let mut resp = None;
        for _ in 0..100 {
            if let Ok(r) = admin::call(&cfg.admin.socket, &Request::Status).await {
                resp = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match resp {
            Some(Response::Status { vin, .. }) => assert_eq!(vin, "1M8GDM9AXKP042788"),
            other => panic!("unexpected {other:?}"),
        }
        let r = admin::call(&cfg.admin.socket, &Request::Lockout)
            .await
            .expect("call");
        assert!(matches!(r, Response::Error { ref code, .. } if code == "admin.unavailable"));
        tx.send(DaemonEvent::ReloadCertificates)
            .await
            .expect("send");
        token.cancel();
        task.await.expect("join").expect("clean stop");
        assert!(!cfg.admin.socket.exists(), "socket removed on shutdown");
    }
}
