//! The daemon: opens state (fail closed), serves the admin socket, runs the vehicle runtime,
//! handles SIGHUP (TLS reload), sd-notify READY/STATUS/WATCHDOG/STOPPING and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::Mutex;

use telematics_keystore::{Backend, IdentitySlot, KeyStore, Sealer, SigningKey};
use telematics_link::{LinkHandle, LinkState};
use telematics_store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AccessPolicy, AdminHandler};
use crate::config::{BusConfig, CanSourceKind, Config};
use crate::core::{CoreParts, Restored};
use crate::diagnostics::{self, Samples};
use crate::error::DaemonError;
use crate::runtime::{CanConnector, CanPorts, Clock, DiscardSink, Health, NamedConnector, Runtime};
use crate::security::SecurityService;
use crate::vehicle::{BusId, VehicleModel};

/// External events fed into the main loop (from signals or tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonEvent {
    /// SIGHUP: reload certificates.
    ReloadCertificates,
}

/// A configured daemon instance: store, security state and CAN connector are opened by
/// [`Daemon::open`], so every fail-closed check happens before anything is started.
pub struct Daemon {
    config: Config,
    policy: AccessPolicy,
    shutdown: CancellationToken,
    /// Send to sd-notify (only when running under systemd).
    notify: bool,
    store: Store,
    security: Arc<SecurityService>,
    /// The key store of `[keys]` (identity key, sealing key).
    keys: Arc<KeyStore>,
    /// The sealer of the security state, opened once (it also seals renewed file keys).
    sealer: Option<Arc<Sealer>>,
    connectors: Vec<NamedConnector>,
    health: Option<Arc<Health>>,
    clock: Clock,
    /// The core's parts, built (and failed closed) in [`Daemon::open`]; taken by `run`.
    parts: Option<CoreParts>,
    restored: Restored,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("vin", &self.config.vehicle.vin)
            .finish_non_exhaustive()
    }
}

/// One line for a link state (admin status component and sd-notify `STATUS=`).
fn link_state_text(st: &LinkState) -> String {
    match st {
        LinkState::Connected => "connected".to_string(),
        LinkState::SubscribeRefused { attempt, retry_in } => format!(
            "connected, commands subscription refused by the broker (link.subscribe_refused, attempt {attempt}); no command can arrive; retry in {} ms",
            retry_in.as_millis()
        ),
        LinkState::Connecting { attempt } => format!("connecting (attempt {attempt})"),
        LinkState::Disconnected { error, retry_in } => {
            format!(
                "disconnected: {error}; retry in {} ms",
                retry_in.as_millis()
            )
        }
        LinkState::Stopped => "stopped".to_string(),
    }
}

/// The admin handler: security operations plus a status that shows the daemon's health.
struct DaemonAdmin {
    security: Arc<SecurityService>,
    health: Arc<Health>,
    link: tokio::sync::watch::Receiver<LinkState>,
    link_handle: LinkHandle,
    store: Store,
    config: Config,
    versions: crate::config::Versions,
    samples: Arc<Mutex<Samples>>,
    identity: Arc<crate::identity::driver::IdentityStatus>,
}

impl DaemonAdmin {
    /// The facts for `doctor` (admin request `diagnostics`).
    fn diagnostics(&self) -> diagnostics::Facts {
        let now = crate::security::unix_now_s();
        let h = &self.health;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        // The security lock can be held through a PBKDF2 run: taken before, and never together
        // with, the samples lock the once-a-second sampler task needs.
        let security = self.security.diagnostics(now);
        let outbox = self.store.outbox();
        let stats = outbox.stats().ok();
        let oldest = outbox.peek(1).ok().and_then(|m| m.first().map(|m| m.seq));
        let (frames_per_s, oldest_age_s) = {
            let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            (
                samples.frames.per_second(),
                oldest.and_then(|seq| samples.outbox.age_of(seq, now)),
            )
        };
        let cfg = &self.config;
        let limits = outbox.config();
        diagnostics::Facts {
            now,
            clock_synchronized: diagnostics::clock_synchronized(),
            security,
            link: diagnostics::LinkFacts::new(
                format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
                &self.link.borrow(),
                self.link_handle.diagnostics(),
            ),
            // The certificate in force: after an in-band renewal, the renewed one.
            certificate: telematics_link::certificate_validity(
                &self.link_handle.identity().cert_chain,
            )
            .map_err(|e| e.to_string()),
            outbox: diagnostics::OutboxFacts {
                queued: stats.as_ref().map_or(0, |s| s.len),
                bytes: stats.as_ref().map_or(0, |s| s.bytes),
                max_messages: limits.max_messages,
                max_bytes: limits.max_bytes,
                dropped: stats.as_ref().map_or(0, |s| s.drops.total()),
                write_failures: n(&h.enqueue_failures) + n(&h.store_failures),
                oldest_age_s,
            },
            buses: vec![diagnostics::BusFacts {
                name: bus_name(cfg),
                frames_per_s,
                frames: n(&h.frames),
                signals: n(&h.signals_mapped),
                fresh: n(&h.signals_fresh),
                max_age_ms: cfg.can.max_age_ms,
            }],
            config: diagnostics::config_facts(cfg),
        }
    }
}

/// The name of the configured buses in `doctor` (interface, replay file or `sim` of each,
/// comma-separated).
fn bus_name(cfg: &Config) -> String {
    let one = |b: &BusConfig| match b.source {
        CanSourceKind::Socketcan | CanSourceKind::Tcp => b.interface.clone(),
        CanSourceKind::Replay => b
            .replay_file
            .as_ref()
            .map_or_else(|| "replay".into(), |p| p.display().to_string()),
        CanSourceKind::Sim => "sim".into(),
    };
    let names: Vec<String> = cfg.can.buses().iter().map(|s| one(&s.bus)).collect();
    names.join(",")
}

/// Samples the frame counter and the outbox's next sequence once a second for `doctor`.
async fn sample_for_diagnostics(
    samples: Arc<Mutex<Samples>>,
    health: Arc<Health>,
    store: Store,
    clock: crate::runtime::Clock,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let next_seq = store.outbox().stats().map(|s| s.next_seq).ok();
        let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
        s.frames
            .sample(health.frames.load(Ordering::Relaxed), clock.now_ms());
        if let Some(seq) = next_seq {
            s.outbox.sample(seq, crate::security::unix_now_s());
        }
    }
}

impl AdminHandler for DaemonAdmin {
    fn handle(&self, req: admin::Request) -> admin::Response {
        if req == admin::Request::Diagnostics {
            return admin::Response::Diagnostics(Box::new(self.diagnostics()));
        }
        let resp = self.security.handle(req);
        let admin::Response::Status {
            version,
            vin,
            uptime_s,
            mut components,
        } = resp
        else {
            return resp;
        };
        let h = &self.health;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mqtt = link_state_text(&self.link.borrow());
        components.push(("mqtt".into(), mqtt));
        components.push(("certificate".into(), self.identity.text()));
        components.push((
            "can".into(),
            format!(
                "connects={} frames={} dropped={}",
                n(&h.can_connects),
                n(&h.frames),
                n(&h.frames_dropped)
            ),
        ));
        // Frames that reached the daemon per bus (after the kernel filter).
        for (name, frames) in &h.bus_frames {
            components.push((format!("can.{name}"), format!("frames={}", n(frames))));
        }
        components.push((
            "commands".into(),
            format!(
                "verified={} refused={}",
                n(&h.commands_verified),
                n(&h.commands_refused)
            ),
        ));
        let outbox = match self.store.outbox().stats() {
            Ok(st) => format!(
                "queued={} bytes={} dropped={} enqueued={} write_failures={}",
                st.len,
                st.bytes,
                st.drops.total(),
                n(&h.enqueued),
                n(&h.enqueue_failures)
            ),
            Err(e) => format!("error: {e}"),
        };
        components.push(("outbox".into(), outbox));
        let v = &self.versions;
        components.push((
            "versions".into(),
            format!(
                "build={} config={} dbc={} mapping={} profile={}",
                v.build, v.config, v.dbc, v.mapping, v.profile
            ),
        ));
        admin::Response::Status {
            version,
            vin,
            uptime_s,
            components,
        }
    }
}

/// Builds the CAN connector of the first bus of `[can]`, receiving every frame (no kernel
/// filter).
pub fn can_connector(cfg: &Config) -> CanConnector {
    match cfg.can.buses().first() {
        Some(spec) => bus_connector(&spec.bus, None),
        None => sim_connector(),
    }
}

/// The in-process simulated demo car (`can.source = "sim"`, feature `sim`).
#[cfg(feature = "sim")]
fn sim_connector() -> CanConnector {
    crate::simbus::in_process_connector()
}

/// Without the `sim` feature the configuration refuses `can.source = "sim"`
/// ([`Config::validate`]); a connector reached anyway fails every connection.
#[cfg(not(feature = "sim"))]
fn sim_connector() -> CanConnector {
    Arc::new(|| {
        Box::pin(async {
            Err(telematics_canio::CanIoError::Io(
                "can.source \"sim\" is not in this build (feature `sim`)".into(),
            ))
        })
    })
}

/// The connector of every bus of `[can]`, named, in configuration order; a SocketCAN bus
/// receives only the ids `model` reads on it ([`VehicleModel::receive_ids`], kernel filter).
pub fn can_connectors(cfg: &Config, model: &VehicleModel) -> Vec<NamedConnector> {
    cfg.can
        .buses()
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let ids = model.receive_ids(BusId(i));
            (spec.bus.name.clone(), bus_connector(&spec.bus, Some(ids)))
        })
        .collect()
}

/// The connector of one bus; `filter` (SocketCAN only): receive just these ids.
pub fn bus_connector(bus: &BusConfig, filter: Option<Vec<telematics_can::CanId>>) -> CanConnector {
    match bus.source {
        CanSourceKind::Socketcan => {
            let iface = bus.interface.clone();
            let filter = Arc::new(filter);
            Arc::new(move || {
                let iface = iface.clone();
                let filter = filter.clone();
                Box::pin(async move {
                    // Two sockets: the receive loop owns one (kernel-filtered to the ids the
                    // vehicle reads), actuation sends on the other (receives nothing).
                    let rx = match filter.as_ref() {
                        Some(ids) => telematics_canio::socket::open_filtered(&iface, ids)?,
                        None => telematics_canio::socket::open(&iface)?,
                    };
                    let tx = telematics_canio::socket::open_send_only(&iface)?;
                    Ok(CanPorts {
                        source: Box::new(rx),
                        sink: Arc::new(tx),
                    })
                })
            })
        }
        CanSourceKind::Replay => {
            let path = bus.replay_file.clone().unwrap_or_default();
            Arc::new(move || {
                let path = path.clone();
                Box::pin(async move {
                    let src = telematics_canio::ReplaySource::open(
                        &path,
                        telematics_canio::ReplayMode::RealTime { speed: 1.0 },
                    )
                    .await?;
                    Ok(CanPorts {
                        source: Box::new(src),
                        sink: Arc::new(DiscardSink::default()),
                    })
                })
            })
        }
        CanSourceKind::Tcp => {
            let addr = bus.interface.clone();
            Arc::new(move || {
                let addr = addr.clone();
                Box::pin(async move { crate::simbus::connect_tcp(&addr).await })
            })
        }
        CanSourceKind::Sim => sim_connector(),
    }
}

/// What the daemon takes from the key store of `[keys]`.
pub struct Keys {
    /// The opened key store.
    pub store: Arc<KeyStore>,
    /// The sealer of the security state (`None`: files backend without `seal_key`).
    pub sealer: Option<Arc<Sealer>>,
    /// The token's identity key for mTLS (`None`: the files backend's `mqtt.key`).
    pub client_key: Option<Arc<dyn SigningKey>>,
}

/// Opens the key store and takes the sealing key and, with a token, the identity key: each
/// missing piece is an error with its `keys.*` code (`run` and `check-config`).
pub fn open_keys(config: &Config) -> Result<Keys, DaemonError> {
    let store = Arc::new(KeyStore::open(&config.keys, &config.mqtt.key)?);
    let sealer = store.sealer()?.map(Arc::new);
    let client_key = match store.backend() {
        Backend::Pkcs11 => Some(store.tls_signing_key(IdentitySlot::Current)?),
        Backend::Files => None,
    };
    Ok(Keys {
        store,
        sealer,
        client_key,
    })
}

impl Daemon {
    /// Opens the store and the security state, restores the command journal, builds the
    /// vehicle model (DBC, mapping), executor, telemetry schedule and alerts, and prepares the
    /// CAN connector: everything that can fail closed fails here, before `READY=1`. The admin
    /// group is resolved from the system group database (fail closed).
    pub fn open(config: Config) -> Result<Self, DaemonError> {
        let policy = AccessPolicy::from_group_name(&config.admin.group)?;
        Self::open_with_policy(config, policy)
    }

    /// [`Daemon::open`] with an explicit admin access policy (tests, demo).
    pub fn open_with_policy(config: Config, policy: AccessPolicy) -> Result<Self, DaemonError> {
        let store = Store::open_with(
            config.outbox_path(),
            telematics_store::OutboxConfig {
                max_messages: config.outbox.max_messages,
                max_bytes: config.outbox.max_bytes,
            },
        )?;
        // The key store before the state: a missing module, token, PIN or key refuses to
        // start with its `keys.*` code, never falling back to files.
        let Keys {
            store: keys,
            sealer,
            // Checked here (fail closed); the runtime takes the key of the identity in force.
            client_key: _,
        } = open_keys(&config)?;
        if sealer.is_none() {
            tracing::warn!(
                "security state stored in clear: no [keys] seal_key (development only; \
                 docs/deploy.md, sealing key)"
            );
        }
        let security = Arc::new(SecurityService::open(
            store.clone(),
            &config,
            sealer.clone(),
        )?);
        let clock = Clock::new();
        let (parts, warnings) = CoreParts::from_config(&config, clock.now_ms())?;
        for w in warnings {
            tracing::warn!(warning = %w, "vehicle model: DBC or mapping entry not used");
        }
        let connectors = can_connectors(&config, &parts.model);
        let restored = crate::journal::load(&store)?;
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        Ok(Self {
            config,
            policy,
            shutdown: CancellationToken::new(),
            notify,
            store,
            security,
            keys,
            sealer,
            connectors,
            health: None,
            clock,
            parts: Some(parts),
            restored,
        })
    }

    /// Replaces the first bus's CAN connector (tests inject an in-process bus).
    pub fn with_connector(mut self, connector: CanConnector) -> Self {
        match self.connectors.first_mut() {
            Some((_, c)) => *c = connector,
            None => self
                .connectors
                .push((crate::config::DEFAULT_BUS.into(), connector)),
        }
        self
    }

    /// The token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The key store (identity keys for certificate renewal).
    pub fn keys(&self) -> Arc<KeyStore> {
        self.keys.clone()
    }

    /// The security service (admin operations in-process).
    pub fn security(&self) -> Arc<SecurityService> {
        self.security.clone()
    }

    fn sd(&self, states: &[sd_notify::NotifyState<'_>]) {
        if self.notify
            && let Err(e) = sd_notify::notify(states)
        {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    /// Runs until the shutdown token is cancelled. `events` carries SIGHUP-style events.
    /// Sends `READY=1` once the admin socket, the MQTT link task and the CAN reader are up
    /// (not once the broker is reachable: a car in a garage without coverage must still serve
    /// the head unit), `STATUS=` on link changes, `WATCHDOG=1` only while the core loop is
    /// alive, and `STOPPING=1` on shutdown, after which the outbox is drained (bounded).
    pub async fn run(mut self, mut events: mpsc::Receiver<DaemonEvent>) -> Result<(), DaemonError> {
        let parts = self
            .parts
            .take()
            .ok_or_else(|| DaemonError::Task("the daemon runs once".into()))?;
        let runtime = Runtime::start(
            self.config.clone(),
            self.store.clone(),
            self.security.clone(),
            self.keys.clone(),
            self.sealer.clone(),
            self.connectors.clone(),
            self.clock,
            parts,
            std::mem::take(&mut self.restored),
        )?;
        let health = runtime.health();
        let gid = self.policy.gid;
        let listener = admin::bind(&self.config.admin.socket, gid)?;
        let samples = Arc::new(Mutex::new(Samples::default()));
        tokio::spawn(sample_for_diagnostics(
            samples.clone(),
            health.clone(),
            self.store.clone(),
            runtime.clock(),
            self.shutdown.clone(),
        ));
        let handler: Arc<dyn AdminHandler> = Arc::new(DaemonAdmin {
            security: self.security.clone(),
            health: health.clone(),
            link: runtime.link_state(),
            link_handle: runtime.link_handle(),
            store: self.store.clone(),
            config: self.config.clone(),
            versions: runtime.versions().clone(),
            samples,
            identity: runtime.identity_status(),
        });
        let admin_task = tokio::spawn(admin::serve(
            listener,
            Arc::new(self.policy.clone()),
            handler,
            self.shutdown.clone(),
        ));
        self.health = Some(health.clone());
        let clock = runtime.clock();
        let mut link_state = runtime.link_state();
        let link = runtime.link_handle();
        let mut core = tokio::spawn(runtime.run(self.shutdown.clone(), Duration::from_secs(5)));
        tracing::info!(
            socket = %self.config.admin.socket.display(),
            vin = %self.config.vehicle.vin,
            can = ?self.config.can.source,
            broker = %format!("{}:{}", self.config.mqtt.host, self.config.mqtt.port),
            "telematicsd started"
        );
        self.sd(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("started; MQTT connecting"),
        ]);

        // Ping at half the watchdog interval; default tick otherwise.
        let wd = if self.notify {
            sd_notify::watchdog_enabled()
        } else {
            None
        };
        let mut tick = tokio::time::interval(wd.map_or(Duration::from_secs(5), |d| d / 2));
        let mut core_result = None;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                r = &mut core => {
                    core_result = Some(r);
                    break;
                }
                ev = events.recv() => match ev {
                    Some(DaemonEvent::ReloadCertificates) => {
                        tracing::info!("SIGHUP: reloading client certificate, key and CA");
                        self.sd(&[sd_notify::NotifyState::Reloading]);
                        match link.reload_tls() {
                            Ok(()) => tracing::info!("TLS files reloaded; used from the next connection"),
                            Err(e) => tracing::error!(error = %e, "TLS reload failed; previous files stay in force"),
                        }
                        self.sd(&[sd_notify::NotifyState::Ready]);
                    }
                    None => {}
                },
                r = link_state.changed() => {
                    if r.is_ok() {
                        let text = format!("MQTT {}", link_state_text(&link_state.borrow()));
                        tracing::info!(state = %text, "link");
                        self.sd(&[sd_notify::NotifyState::Status(&text)]);
                    }
                }
                _ = tick.tick() => {
                    let beat = health.heartbeat_ms.load(Ordering::Relaxed);
                    let healthy = !admin_task.is_finished()
                        && clock.now_ms().saturating_sub(beat) < 3_000;
                    if healthy && wd.is_some() {
                        self.sd(&[sd_notify::NotifyState::Watchdog]);
                    } else if !healthy {
                        tracing::error!("core loop or admin task stalled; withholding watchdog ping");
                    }
                }
            }
        }
        tracing::info!("shutting down");
        self.sd(&[sd_notify::NotifyState::Stopping]);
        self.shutdown.cancel();
        let res = match core_result {
            Some(r) => r,
            None => core.await,
        };
        let _ = admin_task.await;
        let _ = std::fs::remove_file(&self.config.admin.socket);
        match res {
            Ok(r) => r,
            Err(e) => Err(DaemonError::Task(format!("core task: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{Request, Response, Secret};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn daemon_serves_admin_pairs_and_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = telematics_testkit::TestPki::generate().expect("pki");
        let vin = "1M8GDM9AXKP042788";
        let files = pki.client(vin).expect("client cert");
        let ca = pki.ca_cert().to_path_buf();
        let pk = dir.path().join("backend.pub");
        std::fs::write(&pk, "00".repeat(32)).expect("pk");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let toml = format!(
            "[vehicle]\nvin = \"{vin}\"\n[can]\nsource = \"sim\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1\n\
             ca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n[security]\npbkdf2_iterations = 100000\nmin_pbkdf2_iterations = 100000\n\
             backend_public_key = {pk:?}\n[admin]\nsocket = {sock:?}\n[state]\ndirectory = {state:?}\n",
            cert = files.cert,
            key = files.key,
            sock = dir.path().join("run/admin.sock"),
        );
        let cfg = Config::from_toml_with_env(&toml, Vec::new()).expect("cfg");
        let gid = nix::unistd::getgid().as_raw();
        let d = Daemon::open_with_policy(
            cfg.clone(),
            AccessPolicy {
                gid: Some(gid),
                members: vec![],
            },
        )
        .expect("open");
        let token = d.shutdown_token();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(d.run(rx));
        let mut resp = None;
        for _ in 0..200 {
            if let Ok(r) = admin::call(&cfg.admin.socket, &Request::Status).await {
                resp = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match resp {
            Some(Response::Status {
                vin: v, components, ..
            }) => {
                assert_eq!(v, vin);
                assert!(components.contains(&("security".into(), "not paired".into())));
            }
            other => panic!("unexpected {other:?}"),
        }
        let r = admin::call(
            &cfg.admin.socket,
            &Request::Pair {
                device_name: "phone".into(),
                code: Secret("4711".into()),
            },
        )
        .await
        .expect("pair");
        let Response::Paired { credential, .. } = r else {
            panic!("pair failed: {r:?}")
        };
        assert!(credential.starts_with("TMDC1:"));
        let r = admin::call(&cfg.admin.socket, &Request::Audit { limit: 5 })
            .await
            .expect("audit");
        assert!(
            matches!(r, Response::Audit { ref events } if events.iter().any(|e| e.kind == "pair.first")),
            "{r:?}"
        );
        tx.send(DaemonEvent::ReloadCertificates)
            .await
            .expect("send");
        token.cancel();
        task.await.expect("join").expect("clean stop");
        assert!(!cfg.admin.socket.exists(), "socket removed on shutdown");
    }

    #[test]
    fn corrupted_security_state_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pk = dir.path().join("backend.pub");
        std::fs::write(&pk, "11".repeat(32)).expect("pk");
        let toml = format!(
            "[vehicle]\nvin = \"1M8GDM9AXKP042788\"\n[can]\nsource = \"sim\"\n[security]\n\
             backend_public_key = {pk:?}\n[state]\ndirectory = {:?}\n",
            dir.path()
        );
        let cfg = Config::from_toml_with_env(&toml, Vec::new()).expect("cfg");
        {
            let store = Store::open(cfg.outbox_path()).expect("store");
            store
                .put(crate::security::STATE_KEY, b"\xff\x00garbage")
                .expect("put");
        }
        let policy = AccessPolicy {
            gid: None,
            members: vec![],
        };
        let e = Daemon::open_with_policy(cfg.clone(), policy.clone()).expect_err("must refuse");
        assert_eq!(e.code(), "state.corrupted", "{e}");
        // A missing back-end key refuses too (no recovery without it).
        std::fs::remove_file(&pk).expect("rm");
        let store_path = cfg.outbox_path();
        std::fs::remove_file(store_path).expect("rm store");
        let e = Daemon::open_with_policy(cfg, policy).expect_err("must refuse");
        assert_eq!(e.code(), "security.config", "{e}");
    }
}
