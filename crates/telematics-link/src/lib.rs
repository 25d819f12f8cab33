//! mTLS MQTT session to the back end (rumqttc + rustls/ring), status/last will, reconnect, outbox drain.
//!
//! The link is a thin I/O shell: one tokio task owns a rumqttc event loop, drains the durable
//! [`telematics_store::Outbox`] in sequence order and removes a message only when the broker's
//! PUBACK for it arrives (rumqttc packet id -> outbox sequence). On any disconnect the unacked
//! messages simply stay in the outbox and are re-sent on the next connection (QoS 1,
//! at-least-once). Every connection attempt builds a fresh rumqttc client from the current TLS
//! configuration, so [`LinkHandle::reload_tls`] takes effect on the next (re)connection.
//!
//! Incoming commands: every publish on `vehicles/{vin}/commands` (and on
//! `vehicles/{vin}/session/request`, `vehicles/{vin}/devices/request` and
//! `vehicles/{vin}/devices/revoke`, subscribed in the same SUBSCRIBE) up to
//! [`LinkConfig::max_incoming_packet`] is accepted, kept in a local queue and handed over to the
//! daemon's channel without ever blocking the event loop (keep-alives and PUBACKs go on while
//! the consumer is slow); each is PUBACKed only after its hand-over, so a message is neither lost
//! nor redelivered once handed over. The queue is bounded by the broker's inflight window for
//! this client (manual acks: the broker sends at most `max_inflight_messages` unacknowledged
//! QoS 1 messages), see docs/topics.md.
//!
//! The commands subscription is checked: a SUBACK that refuses it is logged
//! (`link.subscribe_refused`), shown as [`LinkState::SubscribeRefused`], published as the
//! retained status `commands_refused`, and retried with [`Backoff`] while connected.
//!
//! Topics and the status payload are documented in `docs/topics.md`.
#![deny(missing_docs)]

mod backoff;
mod certinfo;
pub mod diag;
mod error;
mod status;
mod tls;

pub use backoff::Backoff;
pub use certinfo::{
    CertFacts, Validity, certificate_facts, certificate_facts_of_file, certificate_validity,
};
pub use diag::{ConnectErrorClass, LastError, LinkDiagnostics};
pub use error::LinkError;
pub use status::{Presence, Status};
pub use tls::{ChainRefusal, TlsFiles, client_config, client_config_with_key, verify_client_chain};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use rustls::ClientConfig;
use telematics_store::{EnqueueOutcome, Outbox, OutboxMessage, Qos};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

/// Topic names for a vehicle (see docs/topics.md).
pub mod topics {
    /// `vehicles/{vin}/telemetry` (vehicle -> back end, QoS 1).
    pub fn telemetry(vin: &str) -> String {
        format!("vehicles/{vin}/telemetry")
    }
    /// `vehicles/{vin}/alerts` (vehicle -> back end, QoS 1).
    pub fn alerts(vin: &str) -> String {
        format!("vehicles/{vin}/alerts")
    }
    /// `vehicles/{vin}/results` (vehicle -> back end, QoS 1).
    pub fn results(vin: &str) -> String {
        format!("vehicles/{vin}/results")
    }
    /// `vehicles/{vin}/status` (vehicle -> back end, QoS 1, retained, last will).
    pub fn status(vin: &str) -> String {
        format!("vehicles/{vin}/status")
    }
    /// `vehicles/{vin}/commands` (back end -> vehicle, QoS 1).
    pub fn commands(vin: &str) -> String {
        format!("vehicles/{vin}/commands")
    }
    /// `vehicles/{vin}/session` (vehicle -> back end, QoS 1): authenticated session info.
    pub fn session(vin: &str) -> String {
        format!("vehicles/{vin}/session")
    }
    /// `vehicles/{vin}/session/request` (back end -> vehicle, QoS 1): session-info requests.
    pub fn session_request(vin: &str) -> String {
        format!("vehicles/{vin}/session/request")
    }
    /// `vehicles/{vin}/devices` (vehicle -> back end, QoS 1, retained): the paired-device list.
    pub fn devices(vin: &str) -> String {
        format!("vehicles/{vin}/devices")
    }
    /// `vehicles/{vin}/devices/request` (back end -> vehicle, QoS 1): publish the list now.
    pub fn devices_request(vin: &str) -> String {
        format!("vehicles/{vin}/devices/request")
    }
    /// `vehicles/{vin}/devices/revoke` (back end -> vehicle, QoS 1): signed device revocations.
    pub fn devices_revoke(vin: &str) -> String {
        format!("vehicles/{vin}/devices/revoke")
    }
    /// `vehicles/{vin}/devices/revocations` (vehicle -> back end, QoS 1): revocation outcomes.
    pub fn devices_revocations(vin: &str) -> String {
        format!("vehicles/{vin}/devices/revocations")
    }
    /// `vehicles/{vin}/identity/csr` (vehicle -> back end, QoS 1, retained): the PEM
    /// certificate signing request of a renewal in progress.
    pub fn identity_csr(vin: &str) -> String {
        format!("vehicles/{vin}/identity/csr")
    }
    /// `vehicles/{vin}/identity/certificate` (back end -> vehicle, QoS 1): the PEM certificate
    /// (chain) signed for that CSR.
    pub fn identity_certificate(vin: &str) -> String {
        format!("vehicles/{vin}/identity/certificate")
    }
    /// `vehicles/{vin}/identity/outcome` (vehicle -> back end, QoS 1): renewed, or refused with
    /// a stable code.
    pub fn identity_outcome(vin: &str) -> String {
        format!("vehicles/{vin}/identity/outcome")
    }
}

/// Default of [`LinkConfig::max_incoming_packet`]: 1 MiB + 4 KiB (a broker limited to 1 MiB
/// packets, with room to spare).
pub const DEFAULT_MAX_INCOMING_PACKET: usize = 1024 * 1024 + 4 * 1024;
/// Smallest accepted [`LinkConfig::max_incoming_packet`]: the protocol's 65 536-byte command cap
/// plus room for the MQTT headers and topic, so that every protocol-valid command is accepted.
pub const MIN_MAX_INCOMING_PACKET: usize = 65_536 + 1024;
/// Largest accepted [`LinkConfig::max_incoming_packet`]: MQTT's maximum remaining length.
pub const MAX_MAX_INCOMING_PACKET: usize = 268_435_455;

/// Configuration of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Vehicle identification number: used in every topic.
    pub vin: String,
    /// MQTT client id (VIN-based; must equal the certificate CN for the broker ACL).
    pub client_id: String,
    /// Broker host name: also the TLS server name that the certificate must match.
    pub host: String,
    /// Broker TLS port.
    pub port: u16,
    /// Client certificate, key and pinned CA.
    pub tls: TlsFiles,
    /// Signing key of the client certificate held by the key store (a PKCS#11 token); `None`:
    /// the PEM file `tls.key`.
    pub client_key: Option<Arc<dyn rustls::sign::SigningKey>>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Ceiling of the first reconnect delay (doubles on each failed attempt; the delay is drawn
    /// uniformly below the ceiling, see [`Backoff`]).
    pub backoff_min: Duration,
    /// Upper bound of the reconnect delay.
    pub backoff_max: Duration,
    /// A connection must stay up this long before its loss restarts the backoff at the first
    /// attempt (see [`Backoff::failures_after`]).
    pub stable_after: Duration,
    /// Largest MQTT packet (remaining length, bytes) accepted from the broker. The broker must
    /// be configured never to deliver more (docs/topics.md): a larger packet cannot be read, so
    /// it can be neither handed over nor acknowledged.
    pub max_incoming_packet: usize,
    /// Maximum QoS 1 messages in flight (sent, not yet acknowledged).
    pub inflight_window: usize,
    /// Agent version for the status message.
    pub agent_version: String,
    /// Configuration version for the status message.
    pub config_version: String,
    /// Git commit of the build, for the status message.
    pub build: String,
    /// Hash of the DBC in force, for the status message.
    pub dbc_hash: String,
    /// Hash of the VSS mapping in force, for the status message.
    pub mapping_hash: String,
    /// Hash of the vehicle profile in force, for the status message.
    pub profile_hash: String,
    /// Capacity of the incoming-command channel.
    pub incoming_capacity: usize,
}

impl LinkConfig {
    /// A configuration with defaults: client id = VIN, keep-alive 30 s, backoff ceiling 1 s ..
    /// 60 s reset after 60 s up, max incoming packet 1 MiB + 4 KiB, window 32, incoming channel
    /// 16, versions `"0"`, build `"unknown"`, no DBC / mapping / profile hashes.
    pub fn new(vin: impl Into<String>, host: impl Into<String>, port: u16, tls: TlsFiles) -> Self {
        let vin = vin.into();
        LinkConfig {
            client_id: vin.clone(),
            vin,
            host: host.into(),
            port,
            tls,
            client_key: None,
            keep_alive: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            max_incoming_packet: DEFAULT_MAX_INCOMING_PACKET,
            inflight_window: 32,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            config_version: "0".to_string(),
            build: "unknown".to_string(),
            dbc_hash: String::new(),
            mapping_hash: String::new(),
            profile_hash: String::new(),
            incoming_capacity: 16,
        }
    }

    /// The status message for `state`, now, for a connection with the certificate of
    /// `identity`.
    fn status(&self, state: Presence, identity: &TlsFiles) -> Status {
        let cert = certificate_facts_of_file(&identity.cert_chain).ok();
        Status {
            state,
            agent_version: self.agent_version.clone(),
            config_version: self.config_version.clone(),
            at: status::unix_now_ms(),
            build: self.build.clone(),
            dbc_hash: self.dbc_hash.clone(),
            mapping_hash: self.mapping_hash.clone(),
            profile_hash: self.profile_hash.clone(),
            cert_serial: cert.as_ref().map(|c| c.serial.clone()).unwrap_or_default(),
            cert_not_after: cert.map_or(0, |c| c.validity.not_after.saturating_mul(1000)),
        }
    }

    /// The reconnect / resubscribe policy of this configuration.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            min: self.backoff_min,
            max: self.backoff_max,
            stable_after: self.stable_after,
        }
    }

    fn validate(&self) -> Result<(), LinkError> {
        let topic_safe =
            |s: &str| !s.is_empty() && !s.contains(['/', '+', '#', '\0']) && s.len() <= 64;
        if !topic_safe(&self.vin) {
            return Err(LinkError::Config(format!(
                "vin {:?} must be 1..64 characters without / + # or NUL",
                self.vin
            )));
        }
        if self.client_id.is_empty() || self.client_id.len() > 128 {
            return Err(LinkError::Config("client_id must be 1..128 bytes".into()));
        }
        if self.host.is_empty() {
            return Err(LinkError::Config("host is empty".into()));
        }
        if self.inflight_window == 0 || self.inflight_window > 1000 {
            return Err(LinkError::Config("inflight_window must be 1..1000".into()));
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return Err(LinkError::Config(
                "backoff_min must be > 0 and <= backoff_max".into(),
            ));
        }
        if !(MIN_MAX_INCOMING_PACKET..=MAX_MAX_INCOMING_PACKET).contains(&self.max_incoming_packet)
        {
            return Err(LinkError::Config(format!(
                "max_incoming_packet must be {MIN_MAX_INCOMING_PACKET}..={MAX_MAX_INCOMING_PACKET} bytes, got {}",
                self.max_incoming_packet
            )));
        }
        if self.stable_after.is_zero() {
            return Err(LinkError::Config("stable_after must be > 0".into()));
        }
        if self.incoming_capacity == 0 {
            return Err(LinkError::Config("incoming_capacity must be >= 1".into()));
        }
        Ok(())
    }
}

/// Connection state, observable through [`LinkHandle::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// A connection attempt is in progress (`attempt` counts failures since the last success).
    Connecting {
        /// Attempt number, starting at 1.
        attempt: u32,
    },
    /// Connected; the broker accepted the session and granted the commands subscription.
    Connected,
    /// Connected (outgoing messages flow) but the broker refused the `vehicles/{vin}/commands`
    /// subscription, so no command reaches the vehicle (`link.subscribe_refused`). The link
    /// retries the subscription after `retry_in` and goes to [`LinkState::Connected`] once the
    /// broker grants it.
    SubscribeRefused {
        /// Refused SUBSCRIBEs in a row on this connection, starting at 1.
        attempt: u32,
        /// Backoff delay before the next SUBSCRIBE.
        retry_in: Duration,
    },
    /// The last attempt or connection failed; the next attempt starts after `retry_in`.
    Disconnected {
        /// Why (rumqttc / TLS error text).
        error: String,
        /// Backoff delay before the next attempt.
        retry_in: Duration,
    },
    /// The link task ended (after [`LinkHandle::shutdown`]).
    Stopped,
}

/// A message received on `vehicles/{vin}/commands`, `vehicles/{vin}/session/request`,
/// `vehicles/{vin}/devices/request` or `vehicles/{vin}/devices/revoke`, handed to the daemon as
/// raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The topic it arrived on.
    pub topic: String,
    /// The raw payload (a COSE command envelope; not interpreted here).
    pub payload: Vec<u8>,
}

/// Counters of a link since [`Link::start`], see [`LinkHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections the broker accepted (CONNACKs).
    pub connects: u64,
    /// Commands-subscription refusals (failure return codes in a SUBACK).
    pub subscribe_refusals: u64,
    /// Publishes received on the commands topic (redeliveries included).
    pub commands_received: u64,
    /// Commands handed over to the incoming channel (each is PUBACKed after this).
    pub commands_handed_over: u64,
    /// Most commands ever held received-but-not-handed-over at once (normally bounded by the
    /// broker's inflight window for this client).
    pub pending_high_water: u64,
    /// Most payload bytes ever held received-but-not-handed-over at once (at most
    /// [`PENDING_BYTES_CAP`] plus what one read of the socket brings).
    pub pending_bytes_high_water: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    subscribe_refusals: AtomicU64,
    commands_received: AtomicU64,
    commands_handed_over: AtomicU64,
    pending_high_water: AtomicU64,
    pending_bytes_high_water: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    counters: Counters,
    /// Unix seconds of the last CONNACK or PUBACK (0 = never).
    last_connected_at: AtomicU64,
    last_error: Mutex<Option<LastError>>,
    outbox: Outbox,
    wake: Notify,
    tls: Mutex<Arc<ClientConfig>>,
    tls_files: Mutex<TlsFiles>,
    client_key: Mutex<Option<Arc<dyn rustls::sign::SigningKey>>>,
    /// Ends the current connection cleanly so that the next one uses a new identity.
    reconnect: Notify,
    state: watch::Sender<LinkState>,
    shutdown: watch::Sender<Option<Duration>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    fn identity(&self) -> TlsFiles {
        self.tls_files
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Sets the link state. `send_replace`, not `send`: `send` drops the value while no
    /// receiver exists, and the daemon subscribes only after [`Link::start`] returned; a
    /// SUBACK from a local broker can come first, and the state stayed `Connecting`.
    fn set_state(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    fn mark_connected(&self) {
        self.last_connected_at
            .store(status::unix_now_s(), Ordering::Relaxed);
    }

    fn record_error(&self, class: ConnectErrorClass, detail: &str) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(LastError {
                class,
                at: status::unix_now_s(),
                detail: detail.to_string(),
            });
        }
    }
}

/// Handle to a running link (cheap to clone).
#[derive(Clone)]
pub struct LinkHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

/// Entry point of the link.
#[derive(Debug)]
pub struct Link;

impl Link {
    /// Validates the configuration, loads the TLS files (refusing to start with an error naming
    /// the file when one is missing or invalid) and spawns the link task on the current tokio
    /// runtime. Returns the handle and the receiver of incoming commands.
    pub fn start(
        config: LinkConfig,
        outbox: Outbox,
    ) -> Result<(LinkHandle, mpsc::Receiver<Incoming>), LinkError> {
        config.validate()?;
        let tls = client_config_with_key(&config.tls, config.client_key.as_ref())?;
        let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_capacity);
        // Every state change uses `send_replace`: `send` does not store the value while no
        // receiver exists, and the daemon subscribes only after the link task started (a fast
        // first connection was left showing `Connecting`).
        let (state, _) = watch::channel(LinkState::Connecting { attempt: 1 });
        let (shutdown, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            last_connected_at: AtomicU64::new(0),
            last_error: Mutex::new(None),
            outbox,
            wake: Notify::new(),
            tls: Mutex::new(tls),
            tls_files: Mutex::new(config.tls.clone()),
            client_key: Mutex::new(config.client_key.clone()),
            reconnect: Notify::new(),
            state,
            shutdown,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(config, shared.clone(), incoming_tx));
        if let Ok(mut t) = shared.task.lock() {
            *t = Some(task);
        }
        Ok((LinkHandle { shared }, incoming_rx))
    }
}

impl LinkHandle {
    /// Subscribes to connection-state changes.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// Counters since the start (connections, subscription refusals, commands).
    pub fn stats(&self) -> LinkStats {
        let c = &self.shared.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            connects: n(&c.connects),
            subscribe_refusals: n(&c.subscribe_refusals),
            commands_received: n(&c.commands_received),
            commands_handed_over: n(&c.commands_handed_over),
            pending_high_water: n(&c.pending_high_water),
            pending_bytes_high_water: n(&c.pending_bytes_high_water),
        }
    }

    /// Troubleshooting facts: when the link last worked and the class of the last connection
    /// error (see [`diag`]).
    pub fn diagnostics(&self) -> LinkDiagnostics {
        let at = self.shared.last_connected_at.load(Ordering::Relaxed);
        LinkDiagnostics {
            last_connected_at: (at != 0).then_some(at),
            last_error: self.shared.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }

    /// The outbox the link drains.
    pub fn outbox(&self) -> &Outbox {
        &self.shared.outbox
    }

    /// Enqueues `msg` durably in the outbox and wakes the drain. Returns what the outbox did
    /// (sequence, evictions). The message is on disk when this returns `Ok`.
    pub fn publish(&self, msg: &OutboxMessage) -> Result<EnqueueOutcome, LinkError> {
        let out = self.shared.outbox.enqueue(msg)?;
        self.shared.wake.notify_one();
        Ok(out)
    }

    /// Tells the drain loop that messages were added to the outbox by someone else (the
    /// daemon commits results together with its journal in one store transaction).
    pub fn outbox_changed(&self) {
        self.shared.wake.notify_one();
    }

    /// Re-reads the certificate, key and CA files. On success the next (re)connection uses them
    /// (the current connection is kept). On failure the previous configuration stays in force
    /// and the error names the bad file. Call it on SIGHUP.
    pub fn reload_tls(&self) -> Result<(), LinkError> {
        let files = self.identity();
        let key = self.shared.client_key.lock().ok().and_then(|k| k.clone());
        let cfg = client_config_with_key(&files, key.as_ref())?;
        let mut guard = self
            .shared
            .tls
            .lock()
            .map_err(|_| LinkError::TlsConfig("TLS state lock poisoned".into()))?;
        *guard = cfg;
        tracing::info!("TLS credentials reloaded; used from the next connection");
        Ok(())
    }

    /// The certificate, key and CA files in force.
    pub fn identity(&self) -> TlsFiles {
        self.shared.identity()
    }

    /// Switches to the identity `files` (a renewed certificate and its key: the PEM file
    /// `files.key`, or `key` held elsewhere, e.g. a token): loads them (on failure nothing
    /// changes), makes them the identity of every later connection and of
    /// [`LinkHandle::reload_tls`], and ends the current connection with a clean DISCONNECT (no
    /// last will) so that the link reconnects at once with the new certificate. Messages not
    /// yet acknowledged stay in the outbox and are sent on the new connection.
    pub fn switch_identity(
        &self,
        files: TlsFiles,
        key: Option<Arc<dyn rustls::sign::SigningKey>>,
    ) -> Result<(), LinkError> {
        let cfg = client_config_with_key(&files, key.as_ref())?;
        let poisoned = || LinkError::TlsConfig("TLS state lock poisoned".into());
        *self.shared.tls.lock().map_err(|_| poisoned())? = cfg;
        *self.shared.tls_files.lock().map_err(|_| poisoned())? = files;
        *self.shared.client_key.lock().map_err(|_| poisoned())? = key;
        self.shared.reconnect.notify_one();
        tracing::info!("switched to a new client identity; reconnecting");
        Ok(())
    }

    /// Graceful shutdown: stops taking new work, drains the outbox for at most `drain_timeout`
    /// while connected, publishes the retained `offline` status, disconnects, and waits for the
    /// task to end. Messages not delivered stay in the outbox for the next start.
    pub async fn shutdown(&self, drain_timeout: Duration) {
        // `send_replace`: the task may not have subscribed yet (spawned, not run).
        self.shared.shutdown.send_replace(Some(drain_timeout));
        let task = self.shared.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Aborts the link task immediately, without draining or disconnecting (like a crash:
    /// the broker will publish the last will), and waits until the task is gone (so that it
    /// no longer holds the store). Used by tests and on fatal errors.
    pub async fn abort(&self) {
        let task = self.shared.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.shared.set_state(LinkState::Stopped);
    }
}

enum End {
    Shutdown,
    /// Clean disconnect for a new identity: reconnect at once, not a failure.
    Reconnect,
    Failed {
        error: String,
        class: ConnectErrorClass,
        /// How long the connection was up (`None`: no CONNACK).
        connected_for: Option<Duration>,
    },
}

async fn run(config: LinkConfig, shared: Arc<Shared>, incoming: mpsc::Sender<Incoming>) {
    let policy = config.backoff();
    let mut failures: u32 = 0;
    let mut shutdown_rx = shared.shutdown.subscribe();
    loop {
        if shutdown_rx.borrow().is_some() {
            break;
        }
        shared.set_state(LinkState::Connecting {
            attempt: failures.saturating_add(1),
        });
        match session(&config, &shared, &incoming, &mut shutdown_rx).await {
            End::Shutdown => break,
            End::Reconnect => continue,
            End::Failed {
                error,
                mut class,
                connected_for,
            } => {
                // A name that does not resolve surfaces as an untyped io error: ask the
                // resolver again to tell DNS from other network failures.
                if class == ConnectErrorClass::Network
                    && connected_for.is_none()
                    && tokio::net::lookup_host((config.host.as_str(), config.port))
                        .await
                        .is_err()
                {
                    class = ConnectErrorClass::Dns;
                }
                shared.record_error(class, &error);
                failures = policy.failures_after(failures, connected_for);
                let delay = policy.delay(failures, backoff::random_draw());
                tracing::warn!(%error, ?delay, failures, ?connected_for, "MQTT connection lost or refused");
                shared.set_state(LinkState::Disconnected {
                    error,
                    retry_in: delay,
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown_rx.changed() => break,
                }
            }
        }
    }
    shared.set_state(LinkState::Stopped);
}

fn mqtt_options(config: &LinkConfig, tls: Arc<ClientConfig>, identity: &TlsFiles) -> MqttOptions {
    let mut o = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    o.set_keep_alive(config.keep_alive);
    o.set_clean_session(false);
    // Commands are PUBACKed only once handed to the daemon's channel (see `session`).
    o.set_manual_acks(true);
    // Accept every packet the broker may deliver (it is configured not to exceed this, see
    // docs/topics.md); outgoing messages get the same room.
    o.set_max_packet_size(config.max_incoming_packet, config.max_incoming_packet);
    let window = u16::try_from(config.inflight_window).unwrap_or(1000);
    o.set_inflight(window.saturating_add(8));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let will = config.status(Presence::Offline, identity);
    o.set_last_will(LastWill::new(
        topics::status(&config.vin),
        will.to_cbor(),
        QoS::AtLeastOnce,
        true,
    ));
    o
}

struct Session<'a> {
    config: &'a LinkConfig,
    shared: &'a Shared,
    client: AsyncClient,
    /// Sequence (or `None` for the link's own status messages) of every publish handed to
    /// rumqttc, in order; popped on `Outgoing::Publish(pkid)`.
    awaiting_pkid: VecDeque<Option<u64>>,
    /// pkid -> outbox sequence, waiting for PUBACK.
    inflight: HashMap<u16, u64>,
    /// Highest outbox sequence handed to rumqttc in this session.
    sent_upto: u64,
}

impl Session<'_> {
    fn publish_status(&mut self, state: Presence) -> Result<(), String> {
        let status = self.config.status(state, &self.shared.identity());
        self.client
            .try_publish(
                topics::status(&self.config.vin),
                QoS::AtLeastOnce,
                true,
                status.to_cbor(),
            )
            .map_err(|e| e.to_string())?;
        self.awaiting_pkid.push_back(None);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.awaiting_pkid.len() + self.inflight.len()
    }

    fn top_up(&mut self) -> Result<(), String> {
        while self.in_flight() < self.config.inflight_window {
            let room = self.config.inflight_window - self.in_flight();
            let batch = self
                .shared
                .outbox
                .peek_after(self.sent_upto, room)
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                let qos = match m.message.qos {
                    Qos::AtMostOnce => QoS::AtMostOnce,
                    Qos::AtLeastOnce => QoS::AtLeastOnce,
                };
                self.client
                    .try_publish(m.message.topic, qos, m.message.retain, m.message.payload)
                    .map_err(|e| e.to_string())?;
                self.awaiting_pkid.push_back(Some(m.seq));
                self.sent_upto = m.seq;
            }
        }
        Ok(())
    }

    fn on_outgoing_publish(&mut self, pkid: u16) -> Result<(), String> {
        if let Some(Some(seq)) = self.awaiting_pkid.pop_front() {
            if pkid == 0 {
                // QoS 0: written to the socket is all the delivery it gets.
                self.shared.outbox.ack(seq).map_err(|e| e.to_string())?;
            } else {
                self.inflight.insert(pkid, seq);
            }
        }
        Ok(())
    }

    fn on_puback(&mut self, pkid: u16) -> Result<(), String> {
        if let Some(seq) = self.inflight.remove(&pkid) {
            self.shared.outbox.ack(seq).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn drained(&self) -> bool {
        self.in_flight() == 0 && self.shared.outbox.is_empty().unwrap_or(true)
    }
}

/// Hard bound of the bytes of commands received but not yet handed over. Normally the broker's
/// inflight window (`max_inflight_messages`) keeps the queue far below it; should the broker
/// send more while the consumer stalls, the link stops reading from the socket until the
/// consumer caught up (the broker keeps the rest; if the stall outlasts 1.5 keep-alives the
/// broker drops the connection and redelivers every unacknowledged command, so nothing is lost).
pub const PENDING_BYTES_CAP: usize = 8 * 1024 * 1024;

/// Where the commands subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// SUBSCRIBE sent, SUBACK not yet received; `refusals` before it on this connection.
    Pending { refusals: u32 },
    /// Granted.
    Granted,
    /// Refused `refusals` times in a row; the next SUBSCRIBE goes out at `retry_at`.
    Refused { refusals: u32, retry_at: Instant },
}

/// Commands received but not yet handed over (`pending`) or handed over but whose PUBACK could
/// not be queued yet (`unacked`). Both hold only unacknowledged publishes, so together they
/// never exceed the broker's inflight window for this client.
#[derive(Default)]
struct Inbox {
    pending: VecDeque<Publish>,
    /// Payload bytes in `pending`.
    pending_bytes: usize,
    unacked: VecDeque<Publish>,
}

impl Inbox {
    /// Queues PUBACKs of handed-over publishes; stops at the first that does not fit in the
    /// request channel (tried again on the next turn of the loop).
    fn flush_acks(&mut self, client: &AsyncClient) -> Result<(), String> {
        while let Some(p) = self.unacked.front() {
            match client.try_ack(p) {
                Ok(()) => {
                    self.unacked.pop_front();
                }
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::PubAck(_))) => {
                    // Channel full: the event loop drains it on its next poll.
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

async fn session(
    config: &LinkConfig,
    shared: &Shared,
    incoming: &mpsc::Sender<Incoming>,
    shutdown_rx: &mut watch::Receiver<Option<Duration>>,
) -> End {
    let tls = match shared.tls.lock() {
        Ok(t) => t.clone(),
        Err(_) => {
            return End::Failed {
                error: "TLS state lock poisoned".into(),
                class: ConnectErrorClass::Internal,
                connected_for: None,
            };
        }
    };
    let identity = shared.identity();
    let policy = config.backoff();
    // Room for the window's publishes, the acks of a full broker inflight window and control
    // packets; flume allocates on use, so a generous bound costs nothing when idle.
    let (client, mut eventloop) = AsyncClient::new(
        mqtt_options(config, tls, &identity),
        4 * config.inflight_window + 1024,
    );
    // Small MQTT packets (PUBACKs, results) must not wait for Nagle + delayed ACK (~40 ms).
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let mut s = Session {
        config,
        shared,
        client,
        awaiting_pkid: VecDeque::new(),
        inflight: HashMap::new(),
        sent_upto: 0,
    };
    let commands = topics::commands(&config.vin);
    // One SUBSCRIBE for every inbound topic: the SUBACK's first code is the commands
    // subscription (decides the link state), the others the session requests (resync only)
    // and the device-list requests and revocations.
    let secondary = [
        topics::session_request(&config.vin),
        topics::devices_request(&config.vin),
        topics::devices_revoke(&config.vin),
        topics::identity_certificate(&config.vin),
    ];
    let subscribe = |client: &AsyncClient| {
        client.try_subscribe_many(
            std::iter::once(&commands)
                .chain(&secondary)
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)),
        )
    };
    let mut connected_at: Option<Instant> = None;
    let mut sub = Sub::Pending { refusals: 0 };
    let mut inbox = Inbox::default();
    let mut deadline: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(3600);
    loop {
        let connected = connected_at.is_some();
        let connected_for = connected_at.map(|t| t.elapsed());
        let fail = |error: String| End::Failed {
            error,
            class: ConnectErrorClass::Internal,
            connected_for,
        };
        if let Err(e) = inbox.flush_acks(&s.client) {
            return fail(e);
        }
        let stopping = deadline.is_some();
        if stopping && connected && s.drained() {
            return graceful_close(&mut s, &mut eventloop).await;
        }
        let sleep_until = deadline.unwrap_or_else(far);
        let resubscribe_at = match sub {
            Sub::Refused { retry_at, .. } if connected && !stopping => Some(retry_at),
            _ => None,
        };
        let reading = inbox.pending_bytes < PENDING_BYTES_CAP;
        tokio::select! {
            ev = eventloop.poll(), if reading => {
                let step = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected_at = Some(Instant::now());
                        shared.mark_connected();
                        sub = Sub::Pending { refusals: 0 };
                        Counters::bump(&shared.counters.connects);
                        tracing::info!(host = %config.host, "MQTT connected");
                        // `Connected` (and the retained `online`) only once the SUBACK grants
                        // the commands subscription; the outbox drains from now on.
                        subscribe(&s.client)
                            .map_err(|e| e.to_string())
                            .and_then(|_| s.top_up())
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let ok = |i: usize| {
                            matches!(ack.return_codes.get(i), Some(SubscribeReasonCode::Success(_)))
                        };
                        for (i, topic) in secondary.iter().enumerate() {
                            if !ok(i + 1) {
                                let err = LinkError::SubscribeRefused { topic: topic.clone() };
                                tracing::warn!(
                                    code = err.code(),
                                    "{err}: messages on it will not reach the vehicle"
                                );
                            }
                        }
                        on_suback(&mut s, &mut sub, ok(0), &commands, &policy)
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        // Keep draining during a graceful shutdown too (bounded by the deadline).
                        shared.mark_connected();
                        s.on_puback(ack.pkid).and_then(|_| s.top_up())
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => s.on_outgoing_publish(pkid),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == commands || secondary.contains(&p.topic) {
                            // Never wait for the consumer here: queue, hand over in the branch
                            // below, acknowledge after the hand-over.
                            Counters::bump(&shared.counters.commands_received);
                            inbox.pending_bytes += p.payload.len();
                            inbox.pending.push_back(p);
                            let held = u64::try_from(inbox.pending.len()).unwrap_or(u64::MAX);
                            shared.counters.pending_high_water.fetch_max(held, Ordering::Relaxed);
                            let bytes = u64::try_from(inbox.pending_bytes).unwrap_or(u64::MAX);
                            shared.counters.pending_bytes_high_water.fetch_max(bytes, Ordering::Relaxed);
                            Ok(())
                        } else {
                            tracing::warn!(topic = %p.topic, "ignoring publish on unexpected topic");
                            inbox.unacked.push_back(p);
                            Ok(())
                        }
                    }
                    Ok(_) => Ok(()),
                    Err(e) => {
                        return End::Failed {
                            error: describe(&e),
                            class: diag::classify(&e),
                            connected_for,
                        };
                    }
                };
                if let Err(e) = step {
                    return fail(e);
                }
            }
            permit = incoming.reserve(), if !inbox.pending.is_empty() => {
                let Ok(permit) = permit else {
                    return fail("incoming command receiver closed".to_string());
                };
                if let Some(p) = inbox.pending.pop_front() {
                    inbox.pending_bytes = inbox.pending_bytes.saturating_sub(p.payload.len());
                    permit.send(Incoming { topic: p.topic.clone(), payload: p.payload.to_vec() });
                    Counters::bump(&shared.counters.commands_handed_over);
                    // Acknowledge only after the hand-over: if the daemon is gone the broker
                    // redelivers the command on the next session.
                    inbox.unacked.push_back(p);
                }
            }
            _ = tokio::time::sleep_until(resubscribe_at.unwrap_or_else(far)), if resubscribe_at.is_some() => {
                tracing::info!(topic = %commands, "retrying the commands subscription");
                if let Sub::Refused { refusals, .. } = sub {
                    sub = Sub::Pending { refusals };
                }
                if let Err(e) = subscribe(&s.client) {
                    return fail(e.to_string());
                }
            }
            _ = shared.reconnect.notified(), if !stopping => {
                let _ = s.client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                                let _ = s.on_puback(ack.pkid);
                            }
                            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                                let _ = s.on_outgoing_publish(pkid);
                            }
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                return End::Reconnect;
            }
            _ = shared.wake.notified(), if connected && !stopping => {
                if let Err(e) = s.top_up() {
                    return fail(e);
                }
            }
            changed = shutdown_rx.changed(), if !stopping => {
                let timeout = if changed.is_ok() { *shutdown_rx.borrow() } else { Some(Duration::ZERO) };
                let timeout = timeout.unwrap_or(Duration::ZERO);
                if !connected {
                    return End::Shutdown;
                }
                deadline = Some(Instant::now() + timeout);
                if let Err(e) = s.top_up() {
                    return fail(e);
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if stopping => {
                tracing::warn!("shutdown drain timed out; undelivered messages stay in the outbox");
                return graceful_close(&mut s, &mut eventloop).await;
            }
        }
    }
}

/// Handles the SUBACK of the commands subscription: state, retained status, log, retry timer.
fn on_suback(
    s: &mut Session<'_>,
    sub: &mut Sub,
    granted: bool,
    commands: &str,
    policy: &Backoff,
) -> Result<(), String> {
    let shared = s.shared;
    let before = match *sub {
        Sub::Pending { refusals } | Sub::Refused { refusals, .. } => refusals,
        Sub::Granted => 0,
    };
    if granted {
        if before > 0 {
            let refusals = before;
            tracing::info!(topic = %commands, refusals, "commands subscription granted after refusals");
        }
        *sub = Sub::Granted;
        shared.set_state(LinkState::Connected);
        return s.publish_status(Presence::Online);
    }
    let first = before == 0;
    let refusals = before.saturating_add(1);
    let retry_in = policy.delay(refusals, backoff::random_draw());
    *sub = Sub::Refused {
        refusals,
        retry_at: Instant::now() + retry_in,
    };
    Counters::bump(&shared.counters.subscribe_refusals);
    let err = LinkError::SubscribeRefused {
        topic: commands.to_string(),
    };
    shared.record_error(ConnectErrorClass::SubscribeRefused, &err.to_string());
    tracing::error!(
        code = err.code(),
        attempt = refusals,
        retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
        "{err}: connected but no command can reach the vehicle; retrying"
    );
    shared.set_state(LinkState::SubscribeRefused {
        attempt: refusals,
        retry_in,
    });
    if first {
        // Tell the back end, retained, that this vehicle does not hear commands.
        s.publish_status(Presence::CommandsRefused)?;
    }
    Ok(())
}

/// Proves that the broker accepts the identity `files`: a second, clean-session MQTT
/// connection with client id `{client_id}-probe` (so the vehicle's own session is not taken
/// over), waiting up to `timeout` for the CONNACK, then a clean DISCONNECT. Nothing is
/// published or subscribed. `key`: the identity's key when it is not the PEM file `files.key`.
pub async fn probe(
    config: &LinkConfig,
    files: &TlsFiles,
    key: Option<&Arc<dyn rustls::sign::SigningKey>>,
    timeout: Duration,
) -> Result<(), LinkError> {
    let tls = client_config_with_key(files, key)?;
    let mut o = MqttOptions::new(
        format!("{}-probe", config.client_id),
        config.host.clone(),
        config.port,
    );
    o.set_keep_alive(config.keep_alive);
    o.set_clean_session(true);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut eventloop) = AsyncClient::new(o, 8);
    let result = tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(LinkError::ProbeRefused(describe(&e))),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(LinkError::ProbeRefused("no CONNACK in time".into())));
    if result.is_ok() {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    result
}

fn describe(e: &ConnectionError) -> String {
    match diag::refusal_reason(e) {
        Some(reason) => format!("broker refused the connection: {reason}"),
        None => e.to_string(),
    }
}

async fn graceful_close(s: &mut Session<'_>, eventloop: &mut rumqttc::EventLoop) -> End {
    if s.publish_status(Presence::Offline).is_ok() {
        let _ = s.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let _ = s.on_outgoing_publish(pkid);
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let _ = s.on_puback(ack.pkid);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    End::Shutdown
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> LinkConfig {
        LinkConfig::new(
            "VIN1",
            "localhost",
            8883,
            TlsFiles {
                cert_chain: "/nonexistent/c.crt".into(),
                key: "/nonexistent/c.key".into(),
                ca: "/nonexistent/ca.crt".into(),
            },
        )
    }

    #[test]
    fn default_backoff_policy() {
        let b = cfg().backoff();
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(100), Duration::from_secs(60));
        assert_eq!(b.stable_after, Duration::from_secs(60));
    }

    #[test]
    fn config_validation() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.vin = "a/b".into();
        assert_eq!(c.validate().unwrap_err().code(), "link.bad_config");
        let mut c = cfg();
        c.vin = "#".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.inflight_window = 0;
        assert!(c.validate().is_err());
        // Every protocol-valid command (65 536 bytes + headers) must fit.
        let mut c = cfg();
        assert_eq!(c.max_incoming_packet, 1024 * 1024 + 4096);
        c.max_incoming_packet = 65_536;
        let e = c.validate().unwrap_err();
        assert_eq!(e.code(), "link.bad_config");
        assert!(e.to_string().contains("max_incoming_packet"), "{e}");
        c.max_incoming_packet = MIN_MAX_INCOMING_PACKET;
        assert!(c.validate().is_ok());
        c.max_incoming_packet = MAX_MAX_INCOMING_PACKET + 1;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.stable_after = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn status_cbor_roundtrip_and_field_names() {
        let s = Status {
            state: Presence::Online,
            agent_version: "1.2.3".into(),
            config_version: "7".into(),
            at: 1_700_000_000_000,
            build: "abc123".into(),
            dbc_hash: "d1".into(),
            mapping_hash: "m1".into(),
            profile_hash: "p1".into(),
            cert_serial: "0a1b".into(),
            cert_not_after: 1_900_000_000_000,
        };
        let b = s.to_cbor();
        assert_eq!(Status::from_cbor(&b), Some(s.clone()));
        let v: ciborium::Value = ciborium::from_reader(b.as_slice()).unwrap();
        let map = v.as_map().unwrap();
        let keys: Vec<&str> = map.iter().map(|(k, _)| k.as_text().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "state",
                "agent_version",
                "config_version",
                "at",
                "build",
                "dbc_hash",
                "mapping_hash",
                "profile_hash",
                "cert_serial",
                "cert_not_after"
            ]
        );
        // A status from before these fields still decodes.
        let mut old = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(
                map.iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<(ciborium::Value, ciborium::Value)>>(),
            ),
            &mut old,
        )
        .unwrap();
        let decoded = Status::from_cbor(&old).unwrap();
        assert_eq!(
            (decoded.config_version.as_str(), decoded.build.as_str()),
            ("7", "")
        );
        assert_eq!(map[0].1.as_text(), Some("online"));
        assert_eq!(Status::from_cbor(&[0xff]), None);
        let refused = Status {
            state: Presence::CommandsRefused,
            ..s
        };
        let v: ciborium::Value = ciborium::from_reader(refused.to_cbor().as_slice()).unwrap();
        assert_eq!(v.as_map().unwrap()[0].1.as_text(), Some("commands_refused"));
        assert_eq!(Status::from_cbor(&refused.to_cbor()), Some(refused));
    }
}
