//! mTLS MQTT session to the back end (rumqttc + rustls/ring), status/last will, reconnect, outbox drain.
//!
//! The link is a thin I/O shell: one tokio task owns a rumqttc event loop, drains the durable
//! [`telematics_store::Outbox`] in sequence order and removes a message only when the broker's
//! PUBACK for it arrives (rumqttc packet id -> outbox sequence). On any disconnect the unacked
//! messages simply stay in the outbox and are re-sent on the next connection (QoS 1,
//! at-least-once). Every connection attempt builds a fresh rumqttc client from the current TLS
//! configuration, so [`LinkHandle::reload_tls`] takes effect on the next (re)connection.
//!
//! Topics and the status payload are documented in `docs/topics.md`.
#![deny(missing_docs)]

mod error;
mod status;
mod tls;

pub use error::LinkError;
pub use status::{Presence, Status};
pub use tls::{TlsFiles, client_config};

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
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
}

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
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// First reconnect delay (doubles on each failed attempt).
    pub backoff_min: Duration,
    /// Upper bound of the reconnect delay.
    pub backoff_max: Duration,
    /// Maximum QoS 1 messages in flight (sent, not yet acknowledged).
    pub inflight_window: usize,
    /// Agent version for the status message.
    pub agent_version: String,
    /// Configuration version for the status message.
    pub config_version: String,
    /// Capacity of the incoming-command channel.
    pub incoming_capacity: usize,
}

impl LinkConfig {
    /// A configuration with defaults: client id = VIN, keep-alive 30 s, backoff 0.5 s .. 60 s,
    /// window 32, versions `"0"`.
    pub fn new(vin: impl Into<String>, host: impl Into<String>, port: u16, tls: TlsFiles) -> Self {
        let vin = vin.into();
        LinkConfig {
            client_id: vin.clone(),
            vin,
            host: host.into(),
            port,
            tls,
            keep_alive: Duration::from_secs(30),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            inflight_window: 32,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            config_version: "0".to_string(),
            incoming_capacity: 64,
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
    /// Connected; the broker accepted the session.
    Connected,
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

/// A message received on `vehicles/{vin}/commands`, handed to the daemon as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The topic it arrived on.
    pub topic: String,
    /// The raw payload (a COSE command envelope; not interpreted here).
    pub payload: Vec<u8>,
}

struct Shared {
    outbox: Outbox,
    wake: Notify,
    tls: Mutex<Arc<ClientConfig>>,
    tls_files: TlsFiles,
    state: watch::Sender<LinkState>,
    shutdown: watch::Sender<Option<Duration>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        let tls = client_config(&config.tls)?;
        let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_capacity);
        let (state, _) = watch::channel(LinkState::Connecting { attempt: 1 });
        let (shutdown, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            outbox,
            wake: Notify::new(),
            tls: Mutex::new(tls),
            tls_files: config.tls.clone(),
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

    /// Re-reads the certificate, key and CA files. On success the next (re)connection uses them
    /// (the current connection is kept). On failure the previous configuration stays in force
    /// and the error names the bad file. Call it on SIGHUP.
    pub fn reload_tls(&self) -> Result<(), LinkError> {
        let cfg = client_config(&self.shared.tls_files)?;
        let mut guard = self
            .shared
            .tls
            .lock()
            .map_err(|_| LinkError::TlsConfig("TLS state lock poisoned".into()))?;
        *guard = cfg;
        tracing::info!("TLS credentials reloaded; used from the next connection");
        Ok(())
    }

    /// Graceful shutdown: stops taking new work, drains the outbox for at most `drain_timeout`
    /// while connected, publishes the retained `offline` status, disconnects, and waits for the
    /// task to end. Messages not delivered stay in the outbox for the next start.
    pub async fn shutdown(&self, drain_timeout: Duration) {
        let _ = self.shared.shutdown.send(Some(drain_timeout));
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
        let _ = self.shared.state.send(LinkState::Stopped);
    }
}

fn backoff(config: &LinkConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let base = config
        .backoff_min
        .saturating_mul(1u32 << exp)
        .min(config.backoff_max);
    // Jitter: uniformly in [base/2, base] (std's randomly seeded hasher as entropy source).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let r = h.finish() % 1000;
    let half = base / 2;
    half + (base - half).mul_f64(r as f64 / 1000.0)
}

enum End {
    Shutdown,
    Failed { error: String, was_connected: bool },
}

async fn run(config: LinkConfig, shared: Arc<Shared>, incoming: mpsc::Sender<Incoming>) {
    let mut attempt: u32 = 1;
    let mut shutdown_rx = shared.shutdown.subscribe();
    loop {
        if shutdown_rx.borrow().is_some() {
            break;
        }
        let _ = shared.state.send(LinkState::Connecting { attempt });
        match session(&config, &shared, &incoming, &mut shutdown_rx).await {
            End::Shutdown => break,
            End::Failed {
                error,
                was_connected,
            } => {
                if was_connected {
                    attempt = 1;
                }
                let delay = backoff(&config, attempt);
                tracing::warn!(%error, ?delay, attempt, "MQTT connection lost or refused");
                let _ = shared.state.send(LinkState::Disconnected {
                    error,
                    retry_in: delay,
                });
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown_rx.changed() => break,
                }
            }
        }
    }
    let _ = shared.state.send(LinkState::Stopped);
}

fn mqtt_options(config: &LinkConfig, tls: Arc<ClientConfig>) -> MqttOptions {
    let mut o = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    o.set_keep_alive(config.keep_alive);
    o.set_clean_session(false);
    // Commands are PUBACKed only once handed to the daemon's channel (see `session`).
    o.set_manual_acks(true);
    let window = u16::try_from(config.inflight_window).unwrap_or(1000);
    o.set_inflight(window.saturating_add(8));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let will = Status {
        state: Presence::Offline,
        agent_version: config.agent_version.clone(),
        config_version: config.config_version.clone(),
        at: status::unix_now(),
    };
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
        let status = Status {
            state,
            agent_version: self.config.agent_version.clone(),
            config_version: self.config.config_version.clone(),
            at: status::unix_now(),
        };
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
                was_connected: false,
            };
        }
    };
    let (client, mut eventloop) =
        AsyncClient::new(mqtt_options(config, tls), 4 * config.inflight_window + 16);
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
    let mut connected = false;
    let mut deadline: Option<Instant> = None;
    let fail = |error: String, connected: bool| End::Failed {
        error,
        was_connected: connected,
    };
    loop {
        let stopping = deadline.is_some();
        if stopping && connected && s.drained() {
            return graceful_close(&mut s, &mut eventloop).await;
        }
        let sleep_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = eventloop.poll() => {
                let step = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        tracing::info!(host = %config.host, "MQTT connected");
                        let _ = shared.state.send(LinkState::Connected);
                        s.client
                            .try_subscribe(commands.clone(), QoS::AtLeastOnce)
                            .map_err(|e| e.to_string())
                            .and_then(|_| s.publish_status(Presence::Online))
                            .and_then(|_| s.top_up())
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        // Keep draining during a graceful shutdown too (bounded by the deadline).
                        s.on_puback(ack.pkid).and_then(|_| s.top_up())
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => s.on_outgoing_publish(pkid),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == commands {
                            let msg = Incoming { topic: p.topic.clone(), payload: p.payload.to_vec() };
                            if incoming.send(msg).await.is_ok() {
                                // Acknowledge only after the hand-over: if the daemon is gone the
                                // broker redelivers the command on the next session.
                                s.client.try_ack(&p).map_err(|e| e.to_string())
                            } else {
                                Err("incoming command receiver closed".to_string())
                            }
                        } else {
                            tracing::warn!(topic = %p.topic, "ignoring publish on unexpected topic");
                            s.client.try_ack(&p).map_err(|e| e.to_string())
                        }
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(describe(&e)),
                };
                if let Err(e) = step {
                    return fail(e, connected);
                }
            }
            _ = shared.wake.notified(), if connected && !stopping => {
                if let Err(e) = s.top_up() {
                    return fail(e, connected);
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
                    return fail(e, connected);
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if stopping => {
                tracing::warn!("shutdown drain timed out; undelivered messages stay in the outbox");
                return graceful_close(&mut s, &mut eventloop).await;
            }
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        other => other.to_string(),
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
    fn backoff_is_bounded_and_grows() {
        let c = cfg();
        for attempt in 1..40 {
            let d = backoff(&c, attempt);
            assert!(d <= c.backoff_max, "attempt {attempt}: {d:?}");
            assert!(d >= c.backoff_min / 2);
        }
        assert!(backoff(&c, 30) >= c.backoff_max / 2);
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
    }

    #[test]
    fn status_cbor_roundtrip_and_field_names() {
        let s = Status {
            state: Presence::Online,
            agent_version: "1.2.3".into(),
            config_version: "7".into(),
            at: 1_700_000_000,
        };
        let b = s.to_cbor();
        assert_eq!(Status::from_cbor(&b), Some(s));
        let v: ciborium::Value = ciborium::from_reader(b.as_slice()).unwrap();
        let map = v.as_map().unwrap();
        let keys: Vec<&str> = map.iter().map(|(k, _)| k.as_text().unwrap()).collect();
        assert_eq!(keys, ["state", "agent_version", "config_version", "at"]);
        assert_eq!(map[0].1.as_text(), Some("online"));
        assert_eq!(Status::from_cbor(&[0xff]), None);
    }
}
