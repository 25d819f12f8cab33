//! The vehicle runtime: the I/O shell around [`VehicleCore`].
//!
//! ```text
//!  CAN source ─▶ can_reader ──frames──▶ ┌──────────────────┐ ──Commit──▶ committer ─▶ store
//!  (one per bus; bounded, drops counted) │ shell loop:      │ ◀─outcome──  (one redb txn each,
//!  MQTT ─▶ verifier (blocking pool) ──▶ │  VehicleCore     │               own thread)
//!         PBKDF2, security state        │  (sans-IO)       │ ──SendFrame─▶ actuator ─▶ CAN sink
//!                                       └──────────────────┘ ──Audit────▶ auditor (blocking)
//! ```
//!
//! Buses: one reader task per configured bus; frames reach the core tagged with their
//! [`BusId`], and each actuation frame goes to the sink of the bus it names ([`BusSinks`]).
//! Frame times: the shell moves each frame's own timestamp onto the core's clock
//! ([`Clock::frame_time_us`]) before the core sees it.
//!
//! The shell loop only feeds the core (frames, verification outcomes, commit outcomes, the
//! lock-free lockout snapshot, timers) and hands its effects to the carrier tasks over
//! unbounded channels: nothing on it blocks, waits on the security mutex or fsyncs.
//!
//! Time: the core runs on a monotonic clock anchored to the wall clock at start ([`Clock`]);
//! the security layer compares with the sender's wall clock (seconds).

mod actuator;
mod auditor;
mod can_reader;
mod clock;
mod committer;
mod health;
mod verifier;

pub use actuator::{Actuation, BusSinks};
pub use can_reader::{
    BusFrame, BusReader, CanConnector, CanPorts, DiscardSink, FRAME_QUEUE, READ_BATCH, SinkSlot,
};
pub use clock::Clock;
pub use committer::commit;
pub use health::Health;
pub use verifier::{REFUSAL_FLUSH_MS, SecurityOutput, VERIFY_BATCH};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use telematics_canio::CanSink;
use telematics_link::{Incoming, LinkConfig, LinkHandle, LinkState, TlsFiles};
use telematics_store::Store;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Versions};
use crate::core::{CoreParts, Effect, Restored, SecurityEvent, VehicleCore};
use crate::error::DaemonError;
use crate::identity::driver::{self, IdentityStatus};
use crate::identity::expiry::Policy;
use crate::identity::keys::{KeyBackend, StoreKeys};
use crate::identity::store::IdentityStore;
use crate::security::{SecurityService, Verification, unix_now_s};
use crate::vehicle::BusId;

/// A bus's name and the connector that opens it, in configuration order.
pub type NamedConnector = (String, CanConnector);

/// Most frames fed to the core in one call (a burst is coalesced, bounded).
pub const FRAME_BURST: usize = 256;

/// Everything the shell needs, built before the loop starts.
pub struct Runtime {
    cfg: Config,
    store: Store,
    security: Arc<SecurityService>,
    link: LinkHandle,
    incoming: mpsc::Receiver<Incoming>,
    /// Security events reported by the security service, for the core.
    events: mpsc::UnboundedReceiver<SecurityEvent>,
    connectors: Vec<NamedConnector>,
    clock: Clock,
    health: Arc<Health>,
    core: VehicleCore,
    versions: Versions,
    identity: crate::identity::driver::Identity,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// Builds the MQTT link configuration from `[mqtt]`.
pub fn link_config(cfg: &Config, versions: &Versions) -> LinkConfig {
    let mut lc = LinkConfig::new(
        cfg.vehicle.vin.clone(),
        cfg.mqtt.host.clone(),
        cfg.mqtt.port,
        TlsFiles {
            cert_chain: cfg.mqtt.cert.clone(),
            key: cfg.mqtt.key.clone(),
            ca: cfg.mqtt.ca.clone(),
        },
    );
    lc.client_id = cfg.client_id().to_string();
    lc.keep_alive = Duration::from_secs(cfg.mqtt.keepalive_s);
    lc.max_incoming_packet = cfg.mqtt.max_incoming_packet;
    lc.backoff_min = Duration::from_millis(cfg.mqtt.reconnect_min_ms);
    lc.backoff_max = Duration::from_secs(cfg.mqtt.reconnect_max_s);
    lc.stable_after = Duration::from_secs(cfg.mqtt.reconnect_stable_s);
    (lc.config_version, lc.build) = (versions.config.clone(), versions.build.clone());
    (lc.dbc_hash, lc.mapping_hash, lc.profile_hash) = (
        versions.dbc.clone(),
        versions.mapping.clone(),
        versions.profile.clone(),
    );
    lc
}

/// The senders the shell hands effects to.
struct Carriers {
    commits: mpsc::UnboundedSender<crate::core::Commit>,
    frames: mpsc::UnboundedSender<actuator::Actuation>,
    audits: mpsc::UnboundedSender<(String, String)>,
}

impl Carriers {
    /// Hands every effect the core has ready to its carrier; `Err` once the core failed closed.
    fn carry(&self, core: &mut VehicleCore) -> Result<(), DaemonError> {
        let gone = |what: &str| DaemonError::Task(format!("{what} task stopped"));
        while let Some(effect) = core.poll_effect() {
            match effect {
                Effect::Commit(c) => self.commits.send(c).map_err(|_| gone("store"))?,
                Effect::SendFrame {
                    id,
                    bus,
                    frame,
                    actuate,
                    counter,
                    count,
                    interval_ms,
                } => self
                    .frames
                    .send(actuator::Actuation {
                        id,
                        bus,
                        frame,
                        actuate,
                        counter,
                        count,
                        interval_ms,
                    })
                    .map_err(|_| gone("actuator"))?,
                Effect::Audit { kind, detail } => {
                    self.audits
                        .send((kind, detail))
                        .map_err(|_| gone("audit"))?;
                }
                Effect::FailClosed(why) => return Err(why.error()),
            }
        }
        Ok(())
    }
}

impl Runtime {
    /// Starts the MQTT link (TLS files are loaded now: missing or invalid ones refuse to start;
    /// with a token, `key_store`'s current identity key signs the handshake instead of a key
    /// file; the identity in force is the last committed renewal, else `mqtt.cert` / `key`)
    /// and builds the core from its parts and the restored state. `sealer` (the security
    /// state's, with the files backend) seals renewed identity keys. `connectors` opens each
    /// bus (configuration order, at least one). Must run inside a tokio runtime.
    #[allow(clippy::too_many_arguments)] // the parts Daemon::open built and failed closed on
    pub fn start(
        cfg: Config,
        store: Store,
        security: Arc<SecurityService>,
        key_store: Arc<telematics_keystore::KeyStore>,
        sealer: Option<Arc<telematics_keystore::Sealer>>,
        connectors: Vec<NamedConnector>,
        clock: Clock,
        parts: CoreParts,
        restored: Restored,
    ) -> Result<Self, DaemonError> {
        if connectors.is_empty() {
            return Err(DaemonError::Can("no CAN bus configured".into()));
        }
        // Alive from the start: the watchdog must not see a stale beat before the core runs.
        let names: Vec<String> = connectors.iter().map(|(n, _)| n.clone()).collect();
        let health = Arc::new(Health::with_buses(&names));
        let now = clock.now_ms();
        health.heartbeat_ms.store(now, Ordering::Relaxed);
        // Read once (it hashes the DBC and mapping files): the retained status and the admin
        // status report the same values.
        let versions = cfg.versions();
        // The identity in force: the last committed renewal, else the configured files.
        let mut lc = link_config(&cfg, &versions);
        let identity_store = IdentityStore::new(cfg.identity_dir(), lc.tls.clone());
        // Files backend with a sealing key: renewed identity keys are sealed under it (the
        // token keeps its keys itself).
        let keys: Arc<dyn KeyBackend> = Arc::new(StoreKeys::new(key_store, sealer));
        let committed = driver::committed_identity(&identity_store, keys.as_ref())?;
        if committed.generation > 0 {
            tracing::info!(generation = committed.generation, cert = %committed.files.cert_chain.display(), "using the renewed identity");
        }
        lc.tls = committed.files;
        lc.client_key = committed.key;
        let (link, incoming) = telematics_link::Link::start(lc.clone(), store.outbox())
            .map_err(|e| DaemonError::Link(e.to_string()))?;
        let identity = driver::Identity {
            vin: cfg.vehicle.vin.clone(),
            link: link.clone(),
            link_config: lc,
            store: identity_store,
            keys,
            policy: Policy {
                renew_before_days: cfg.mqtt.cert_renew_before_days,
                warn_days: cfg.mqtt.cert_warn_days,
            },
            retry_ms: cfg.mqtt.renewal_retry_s.saturating_mul(1000),
            status: Arc::new(IdentityStatus::default()),
        };
        security.attach_link(link.clone());
        let (events_tx, events) = mpsc::unbounded_channel();
        security.attach_events(events_tx);
        tracing::info!(entries = restored.journal.len(), "command journal restored");
        let core = VehicleCore::new(parts, restored, now);
        Ok(Runtime {
            cfg,
            store,
            security,
            link,
            incoming,
            events,
            connectors,
            clock,
            health,
            core,
            versions,
            identity,
        })
    }

    /// The certificate line of the admin status (generation, serial, days left, renewal).
    pub fn identity_status(&self) -> Arc<IdentityStatus> {
        self.identity.status.clone()
    }

    /// The versions the link announces in the retained status (config, build, DBC, mapping).
    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// Shared health counters.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The clock the core runs on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// A handle to the MQTT link (TLS reload on SIGHUP).
    pub fn link_handle(&self) -> LinkHandle {
        self.link.clone()
    }

    /// The MQTT link state.
    pub fn link_state(&self) -> watch::Receiver<LinkState> {
        self.link.state()
    }

    /// Runs until `shutdown`; then drains the outbox for up to `drain` and stops the link.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> Result<(), DaemonError> {
        let (security, link, health, mut core) = (self.security, self.link, self.health, self.core);
        let (frame_tx, frame_rx) = mpsc::channel::<BusFrame>(FRAME_QUEUE);
        let mut sinks = BusSinks::default();
        let mut readers = Vec::new();
        for (i, (name, connector)) in self.connectors.into_iter().enumerate() {
            let (sink_tx, sink_rx) = watch::channel::<Option<Arc<dyn CanSink>>>(None);
            sinks.insert(&name, sink_rx);
            let accept = core.model().receive_ids(BusId(i)).into_iter().collect();
            readers.push(tokio::spawn(can_reader::can_reader(
                BusReader {
                    bus: BusId(i),
                    name,
                    connector,
                    sink: sink_tx,
                    accept: Some(accept),
                },
                frame_tx.clone(),
                health.clone(),
                shutdown.clone(),
            )));
        }
        drop(frame_tx);
        let (verified_tx, verified_rx) = mpsc::channel::<SecurityOutput>(16);
        let (cert_tx, cert_rx) = mpsc::channel::<Vec<u8>>(4);
        let identity = tokio::spawn(self.identity.run(cert_rx, shutdown.clone()));
        let verifier = tokio::spawn(verifier::verify_worker(
            self.incoming,
            security.clone(),
            verified_tx,
            cert_tx,
            self.cfg.vehicle.vin.clone(),
            shutdown.clone(),
        ));
        let (commit_tx, commit_rx) = mpsc::unbounded_channel();
        let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        let store_thread = committer::spawn(
            self.store,
            link.clone(),
            health.clone(),
            commit_rx,
            outcome_tx,
        )?;
        let (act_tx, act_rx) = mpsc::unbounded_channel();
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let actuator = tokio::spawn(actuator::run(act_rx, sinks, sent_tx));
        let (audit_tx, audit_rx) = mpsc::unbounded_channel();
        let auditor = tokio::spawn(auditor::run(audit_rx, security.clone()));
        let carriers = Carriers {
            commits: commit_tx,
            frames: act_tx,
            audits: audit_tx,
        };
        let shell = Shell {
            security: security.clone(),
            clock: self.clock,
            health,
        };
        let result = shell
            .run(
                &mut core,
                &carriers,
                Inputs {
                    frames: frame_rx,
                    verified: verified_rx,
                    events: self.events,
                    outcomes: outcome_rx,
                    sent: sent_rx,
                },
                shutdown,
            )
            .await;

        if result.is_ok() {
            // The aggregated refusals of open windows are committed before the drain.
            core.handle_shutdown(self.clock.now_ms());
            if let Err(e) = carriers.carry(&mut core) {
                tracing::warn!(error = %e, "final security events not committed");
            }
        }
        for r in readers {
            r.abort();
        }
        verifier.abort();
        identity.abort();
        // Commits already handed over are written before the outbox is drained.
        drop(carriers);
        if tokio::task::spawn_blocking(move || store_thread.join())
            .await
            .is_err()
        {
            tracing::error!(
                code = "runtime.task_failed",
                "store worker did not stop cleanly"
            );
        }
        let _ = actuator.await;
        let _ = auditor.await;
        // The refusals counted in the current window are audited before the daemon stops.
        let _ =
            tokio::task::spawn_blocking(move || security.flush_refusals(unix_now_s(), true)).await;
        if result.is_err() {
            // The store is unusable: nothing to drain.
            link.abort().await;
            return result;
        }
        tracing::info!(drain_ms = drain.as_millis() as u64, "draining outbox");
        link.shutdown(drain).await;
        Ok(())
    }
}

/// The loop feeding the core.
struct Shell {
    security: Arc<SecurityService>,
    clock: Clock,
    health: Arc<Health>,
}

/// What the shell loop receives from the tasks around the core: CAN frames, verification
/// outcomes, security events, commit outcomes, frame-sent reports.
struct Inputs {
    frames: mpsc::Receiver<BusFrame>,
    verified: mpsc::Receiver<SecurityOutput>,
    events: mpsc::UnboundedReceiver<SecurityEvent>,
    outcomes: mpsc::UnboundedReceiver<committer::Outcome>,
    sent: mpsc::UnboundedReceiver<actuator::Sent>,
}

impl Shell {
    async fn run(
        &self,
        core: &mut VehicleCore,
        carriers: &Carriers,
        inputs: Inputs,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        let Inputs {
            mut frames,
            mut verified,
            mut events,
            mut outcomes,
            mut sent,
        } = inputs;
        let mut burst = Vec::with_capacity(FRAME_BURST);
        loop {
            carriers.carry(core)?;
            let now = self.clock.now_ms();
            self.health.heartbeat_ms.store(now, Ordering::Relaxed);
            let sleep =
                tokio::time::sleep_until(self.clock.instant_at(core.next_deadline()).into());
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                f = frames.recv() => {
                    let Some(f) = f else { return Ok(()) };
                    burst.clear();
                    burst.push(f);
                    while burst.len() < FRAME_BURST {
                        match frames.try_recv() {
                            Ok(f) => burst.push(f),
                            Err(_) => break,
                        }
                    }
                    // Each frame's own timestamp, moved onto the core's clock.
                    let (wall, now) = (Clock::wall_us(), self.clock.now_ms());
                    for (_, f) in &mut burst {
                        if let Some(ts) = f.timestamp_us {
                            f.timestamp_us = Some(Clock::frame_time_us(ts, wall, now));
                        }
                    }
                    core.handle_bus_frames(burst.iter().map(|(b, f)| (*b, f)), now);
                    self.health
                        .frames_processed
                        .fetch_add(burst.len() as u64, Ordering::Relaxed);
                }
                v = verified.recv() => match v {
                    None => return Ok(()),
                    Some(SecurityOutput::Command(v)) => {
                        let counter = match &v {
                            Verification::Verified(_) | Verification::Done => {
                                &self.health.commands_verified
                            }
                            Verification::Rejected { .. } => &self.health.commands_refused,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        let now = self.clock.now_ms();
                        core.handle_lockout(self.security.lockout(unix_now_s()), now);
                        core.handle_verification(v, now);
                    }
                    Some(SecurityOutput::SessionInfo(info)) => core.handle_session_info(info),
                },
                // Disabled once the service is gone (it lives as long as the runtime).
                Some(e) = events.recv() => core.handle_security_event(e, self.clock.now_ms()),
                o = outcomes.recv() => match o {
                    Some((id, r)) => core.handle_commit(id, r),
                    None => return Err(DaemonError::Task("store worker stopped".into())),
                },
                s = sent.recv() => match s {
                    Some((id, r)) => core.handle_frame_sent(id, r, self.clock.now_ms()),
                    None => return Err(DaemonError::Task("actuator stopped".into())),
                },
                () = sleep => {}
            }
            let now = self.clock.now_ms();
            if now >= core.next_deadline() {
                core.handle_lockout(self.security.lockout(unix_now_s()), now);
                core.handle_timeout(now);
                let signals = core.signal_counts();
                let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                (self.health.signals_mapped).store(count(signals.mapped), Ordering::Relaxed);
                (self.health.signals_fresh).store(count(signals.fresh), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{AdminHandler, Request, Response, Secret};
    use crate::vehicle::VehicleModel;
    use telematics_can::demo::CarState;
    use telematics_security::client::{CommandRequest, build_command};
    use telematics_security::{Action, CommandId, ExportedCredential};

    /// A code check in progress holds the security mutex through PBKDF2; the shell loop never
    /// waits for it, so CAN frames keep being decoded meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_are_decoded_while_a_code_check_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pk = dir.path().join("backend.pub");
        std::fs::write(&pk, "00".repeat(32)).expect("pk");
        let toml = format!(
            "[vehicle]\nvin = \"1M8GDM9AXKP042788\"\n[can]\nsource = \"sim\"\n[security]\n\
             pbkdf2_iterations = 600000\nmin_pbkdf2_iterations = 600000\n\
             backend_public_key = {pk:?}\n[state]\ndirectory = {:?}\n",
            dir.path()
        );
        let cfg = Config::from_toml_with_env(&toml, Vec::new()).expect("cfg");
        let store = Store::open(cfg.outbox_path()).expect("store");
        let security =
            Arc::new(SecurityService::open(store.clone(), &cfg, None).expect("security"));
        let Response::Paired { credential, .. } = security.handle(Request::Pair {
            device_name: "phone".into(),
            code: Secret("2468".into()),
        }) else {
            panic!("pairing failed")
        };
        let cred = ExportedCredential::from_text(&credential).expect("credential");
        let now_s = unix_now_s();
        let bytes = build_command(
            &cred,
            &CommandRequest {
                command_id: CommandId([1; 16]),
                action: Action::Unlock,
                counter: 1,
                issued_at: now_s,
                expires_at: now_s + 60,
                code: "2468".into(),
            },
            &ring::rand::SystemRandom::new(),
        )
        .expect("envelope");

        let clock = Clock::new();
        let parts =
            CoreParts::with_model(&cfg, VehicleModel::demo().expect("model"), clock.now_ms())
                .expect("parts");
        let mut core = VehicleCore::new(parts, Restored::default(), clock.now_ms());
        let health = Arc::new(Health::default());
        let (frame_tx, frame_rx) = mpsc::channel(FRAME_QUEUE);
        let (_verified_tx, verified_rx) = mpsc::channel(16);
        let (_events_tx, events_rx) = mpsc::unbounded_channel();
        let (_outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        let (commits, _commit_rx) = mpsc::unbounded_channel();
        let (frames, _act_rx) = mpsc::unbounded_channel();
        let (_sent_tx, sent_rx) = mpsc::unbounded_channel();
        let (audits, _audit_rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let shell = Shell {
            security: security.clone(),
            clock,
            health: health.clone(),
        };
        let stop = shutdown.clone();
        let loop_task = tokio::spawn(async move {
            let carriers = Carriers {
                commits,
                frames,
                audits,
            };
            shell
                .run(
                    &mut core,
                    &carriers,
                    Inputs {
                        frames: frame_rx,
                        verified: verified_rx,
                        events: events_rx,
                        outcomes: outcome_rx,
                        sent: sent_rx,
                    },
                    stop,
                )
                .await
        });

        // Start a code check; it holds the security mutex from before the pre-count is
        // persisted until PBKDF2 ends.
        let before = store.get(crate::security::STATE_KEY).expect("state");
        let sec = security.clone();
        let check = tokio::task::spawn_blocking(move || sec.verify(&bytes, unix_now_s()));
        while store.get(crate::security::STATE_KEY).expect("state") == before {
            tokio::task::yield_now().await;
        }
        // PBKDF2 is running now: feed status frames and see them decoded.
        let status = CarState::default()
            .status_frames(VehicleModel::demo().expect("model").dbc(), 1, true)
            .expect("frames");
        let mut sent = 0u64;
        for _ in 0..20 {
            for f in &status {
                frame_tx.send((BusId(0), f.clone())).await.expect("send");
                sent += 1;
            }
        }
        let t0 = std::time::Instant::now();
        while health.frames_processed.load(Ordering::Relaxed) < sent {
            assert!(t0.elapsed() < Duration::from_secs(5), "frames not decoded");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            !check.is_finished(),
            "the code check is still running: frames were decoded during PBKDF2"
        );
        assert!(matches!(
            check.await.expect("join"),
            Verification::Verified(_)
        ));
        shutdown.cancel();
        loop_task.await.expect("join").expect("clean stop");
    }
}
