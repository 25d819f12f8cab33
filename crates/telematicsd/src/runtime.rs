//! The vehicle runtime: the I/O shell around the sans-IO cores.
//!
//! ```text
//!  CAN source ──frames──▶ ┌──────────────────────────────┐ ──SendFrames──▶ CAN sink
//!  (reader task,          │ Core (one task, owns state):  │
//!   bounded, drops        │  VehicleModel → Executor      │ ──results/telemetry/alerts──▶
//!   counted)              │              → Schedule       │     outbox (redb) ──▶ Link ──▶ MQTT
//!  MQTT commands ─▶ verify│              → AlertEngine    │
//!  (SecurityService,      └──────────────────────────────┘ ──journal──▶ store KV
//!   spawn_blocking, FIFO)
//! ```
//!
//! Time: the executor, telemetry and CAN state run on a monotonic clock anchored to the wall
//! clock at start ([`Clock`]), so a wall-clock jump neither fires nor stretches run timers and
//! confirmation timeouts; the security layer compares with the sender's wall clock (seconds).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use telematics_can::CanFrame;
use telematics_can::demo::{BodyCommand, encode_body_command};
use telematics_canio::{CanIoError, CanSink, CanSource};
use telematics_exec::{
    Actuate, CommandState, ExecConfig, Executor, Output, ResultRecord, reason_code_from_str,
};
use telematics_link::{Incoming, LinkConfig, LinkHandle, LinkState, TlsFiles, topics};
use telematics_security::{CommandId, Fault};
use telematics_store::{OutboxMessage, Priority, Store};
use telematics_telemetry::{
    AlertEngine, CommandResult, OnChange, ResultState, Schedule, ScheduleConfig, ThresholdRule,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::DaemonError;
use crate::failpoint::{self, Crash};
use crate::security::{Refusal, SecurityService, Verification, unix_now_s};
use crate::vehicle::VehicleModel;

/// KV prefix of the command journal.
pub const JOURNAL_PREFIX: &str = "cmd/";
/// KV key of the active remote-start run timer.
pub const RUN_TIMER_KEY: &str = "exec/run_timer";
/// Journal entries kept (the executor's idempotency window).
pub const JOURNAL_CAPACITY: usize = 1024;
/// Capacity of the frame channel between the CAN reader and the core; beyond it frames are
/// dropped and counted (bounded memory under a bus flood).
pub const FRAME_QUEUE: usize = 4096;
/// How often fresh vehicle signals are re-fed to the executor (keeps them from ageing while
/// the bus is alive).
pub const FEED_PERIOD_MS: u64 = 100;

/// After start-up, verified commands wait up to this long for a complete vehicle state before
/// the preconditions are checked (a command queued at the broker arrives with the CONNACK,
/// often before the first status frames).
pub const WARMUP_MS: u64 = 3_000;

/// A refused command id is answered (its result published or re-published) at most once per
/// this window; further copies (replays, QoS 1 redeliveries) are only counted in the
/// aggregated audit. Longer than the largest TTL + skew a command can have, after which a
/// copy is refused `expired` anyway.
pub const ANSWER_WINDOW_MS: u64 = 600_000;
/// Command ids remembered for [`ANSWER_WINDOW_MS`] (oldest forgotten first).
pub const ANSWER_CAPACITY: usize = 1024;
/// Most received messages verified in one blocking call (amortises the hand-off to the
/// blocking pool under a flood of cheap refusals).
pub const VERIFY_BATCH: usize = 64;
/// How often the verification worker closes the aggregated-refusal audit window.
pub const REFUSAL_FLUSH_MS: u64 = 1_000;

/// What the verification worker hands the core.
#[derive(Debug)]
pub enum SecurityOutput {
    /// The outcome of one command received on `vehicles/{vin}/commands`.
    Command(Verification),
    /// A session info answering a request on `vehicles/{vin}/session/request`, to publish on
    /// `vehicles/{vin}/session`.
    SessionInfo(Vec<u8>),
}

/// Command ids whose refusal has been answered recently (see [`ANSWER_WINDOW_MS`]): a
/// captured command replayed thousands of times produces one result, not thousands.
#[derive(Debug)]
pub struct Answered {
    window_ms: u64,
    capacity: usize,
    at: HashMap<CommandId, u64>,
    order: VecDeque<(CommandId, u64)>,
}

impl Answered {
    /// Remembers up to `capacity` ids for `window_ms`.
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        Answered {
            window_ms,
            capacity,
            at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// `true` (and remembers `id` at `now`) when `id` was not answered within the window.
    pub fn first(&mut self, id: CommandId, now: u64) -> bool {
        if let Some(&t) = self.at.get(&id)
            && now < t.saturating_add(self.window_ms)
        {
            return false;
        }
        self.at.insert(id, now);
        self.order.push_back((id, now));
        while self.order.len() > self.capacity {
            if let Some((old, t)) = self.order.pop_front()
                && self.at.get(&old) == Some(&t)
            {
                self.at.remove(&old);
            }
        }
        true
    }
}

/// Monotonic milliseconds anchored to the Unix wall clock at creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall0_ms: u64,
    mono0: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// Anchors now.
    pub fn new() -> Self {
        let wall0_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall0_ms,
            mono0: Instant::now(),
        }
    }
    /// Unix-ms-like monotonic time.
    pub fn now_ms(&self) -> u64 {
        self.wall0_ms + self.mono0.elapsed().as_millis() as u64
    }
    /// The [`Instant`] at which `now_ms()` will equal `at_ms`.
    pub fn instant_at(&self, at_ms: u64) -> Instant {
        self.mono0 + Duration::from_millis(at_ms.saturating_sub(self.wall0_ms))
    }
}

/// A connected pair of CAN endpoints.
pub struct CanPorts {
    /// Received frames.
    pub source: Box<dyn CanSource>,
    /// Where actuation frames go.
    pub sink: Arc<dyn CanSink>,
}

/// Opens (or re-opens after an error) the CAN endpoints.
pub type CanConnector =
    Arc<dyn Fn() -> BoxFuture<'static, Result<CanPorts, CanIoError>> + Send + Sync>;

/// A sink that drops frames (candump replay has no body controller); counts them.
#[derive(Debug, Default)]
pub struct DiscardSink {
    /// Frames dropped.
    pub dropped: AtomicU64,
}

impl CanSink for DiscardSink {
    fn send<'a>(&'a self, _frame: &'a CanFrame) -> BoxFuture<'a, Result<(), CanIoError>> {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// Live counters shared with the daemon (status, watchdog, tests).
#[derive(Debug, Default)]
pub struct Health {
    /// Last core loop iteration (monotonic ms of [`Clock`]).
    pub heartbeat_ms: AtomicU64,
    /// Frames received from the bus.
    pub frames: AtomicU64,
    /// Frames dropped because the core fell behind (flood).
    pub frames_dropped: AtomicU64,
    /// CAN (re)connections.
    pub can_connects: AtomicU64,
    /// Commands verified (accepted by the security layer).
    pub commands_verified: AtomicU64,
    /// Commands refused by the security layer.
    pub commands_refused: AtomicU64,
    /// Messages enqueued in the outbox.
    pub enqueued: AtomicU64,
    /// Outbox write failures (disk full, I/O): the message is logged and lost.
    pub enqueue_failures: AtomicU64,
    /// Failed writes of durable state (outbox, journal, run timer, security state). redb
    /// refuses every later transaction after an I/O error until the file is reopened, so the
    /// first one ends the core loop with `store.write_failed` and systemd restarts the daemon
    /// (fail closed: nothing is executed on state that cannot be made durable).
    pub store_failures: AtomicU64,
    /// Mapped signals (VSS paths), set once a second.
    pub signals_mapped: AtomicU64,
    /// Mapped signals with a fresh value (not older than their `max_age_ms`), set once a
    /// second.
    pub signals_fresh: AtomicU64,
}

impl Health {
    fn store_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(code = "store.write_failed", what, error = %error, "durable write failed");
    }
}

#[derive(Serialize, Deserialize)]
struct JournalRec {
    state: String,
    reason: Option<String>,
    detail: Option<String>,
    at: u64,
    /// `false` from journaling a terminal state until its result is in the outbox: a crash in
    /// between must not lose the result (it is re-published at start-up). Records written
    /// before this field existed count as published.
    #[serde(default = "published_default")]
    published: bool,
}

fn published_default() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct RunTimerRec {
    id: [u8; 16],
    deadline_ms: u64,
}

/// The state journaled under its stable name ([`CommandState::as_str`], the one mapping).
fn state_from(s: &str) -> Option<CommandState> {
    [
        CommandState::Accepted,
        CommandState::Executed,
        CommandState::Failed,
        CommandState::Rejected,
    ]
    .into_iter()
    .find(|c| c.as_str() == s)
}

fn result_state(s: CommandState) -> ResultState {
    match s {
        CommandState::Accepted => ResultState::Accepted,
        CommandState::Executed => ResultState::Executed,
        CommandState::Failed => ResultState::Failed,
        CommandState::Rejected => ResultState::Rejected,
    }
}

/// Loads the command journal (idempotency across restarts).
pub fn load_journal(store: &Store) -> Result<Vec<ResultRecord>, DaemonError> {
    Ok(load_journal_with_flags(store)?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// Terminal results journaled but not yet handed to the outbox when the daemon stopped (a crash
/// between the two writes); they are published at start-up.
pub fn unpublished_results(store: &Store) -> Result<Vec<ResultRecord>, DaemonError> {
    Ok(load_journal_with_flags(store)?
        .into_iter()
        .filter(|(r, published)| r.state.is_terminal() && !published)
        .map(|(r, _)| r)
        .collect())
}

fn load_journal_with_flags(store: &Store) -> Result<Vec<(ResultRecord, bool)>, DaemonError> {
    let mut out = Vec::new();
    for key in store.keys_with_prefix(JOURNAL_PREFIX)? {
        let Some(bytes) = store.get(&key)? else {
            continue;
        };
        let parsed = hex::decode(&key[JOURNAL_PREFIX.len()..])
            .ok()
            .and_then(|id| <[u8; 16]>::try_from(id.as_slice()).ok())
            .zip(ciborium::from_reader::<JournalRec, _>(bytes.as_slice()).ok());
        let Some((id, rec)) = parsed else {
            tracing::warn!(key, "unreadable journal entry skipped");
            continue;
        };
        let Some(state) = state_from(&rec.state) else {
            continue;
        };
        out.push((
            ResultRecord {
                command_id: CommandId(id),
                state,
                reason_code: rec.reason.as_deref().and_then(reason_code_from_str),
                detail: rec.detail,
                at: rec.at,
            },
            rec.published,
        ));
    }
    out.sort_by_key(|(r, _)| r.at);
    Ok(out)
}

fn write_journal(store: &Store, rec: &ResultRecord, published: bool) -> Result<(), DaemonError> {
    if failpoint::write_fails(failpoint::Write::Journal) {
        return Err(DaemonError::StoreFailed("injected: command journal".into()));
    }
    let jr = JournalRec {
        state: rec.state.as_str().to_string(),
        reason: rec.reason_code.map(str::to_string),
        detail: rec.detail.clone(),
        at: rec.at,
        published,
    };
    let mut buf = Vec::new();
    ciborium::into_writer(&jr, &mut buf)
        .map_err(|e| DaemonError::StoreFailed(format!("journal encode: {e}")))?;
    store.put(
        &format!("{JOURNAL_PREFIX}{}", hex::encode(rec.command_id.0)),
        &buf,
    )?;
    Ok(())
}

fn prune_journal(store: &Store) -> Result<(), DaemonError> {
    // Runs after every journaled command: count keys first, read and decode the records
    // (to find the oldest) only when there is something to prune.
    if store.keys_with_prefix(JOURNAL_PREFIX)?.len() <= JOURNAL_CAPACITY {
        return Ok(());
    }
    let all = load_journal(store)?;
    if all.len() > JOURNAL_CAPACITY {
        for r in &all[..all.len() - JOURNAL_CAPACITY] {
            store.delete(&format!("{JOURNAL_PREFIX}{}", hex::encode(r.command_id.0)))?;
        }
    }
    Ok(())
}

/// Everything the core needs, built before the loop starts.
pub struct Runtime {
    cfg: Config,
    store: Store,
    security: Arc<SecurityService>,
    link: LinkHandle,
    incoming: mpsc::Receiver<Incoming>,
    connector: CanConnector,
    clock: Clock,
    health: Arc<Health>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// Builds the MQTT link configuration from `[mqtt]`.
pub fn link_config(cfg: &Config) -> LinkConfig {
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
    let v = cfg.versions();
    (lc.config_version, lc.build, lc.dbc_hash, lc.mapping_hash) =
        (v.config, v.build, v.dbc, v.mapping);
    lc
}

fn exec_config(cfg: &Config) -> ExecConfig {
    ExecConfig {
        // Signals are re-fed every FEED_PERIOD_MS while fresh on the bus (their own max age
        // comes from the VSS mapping); a few missed feeds mean the bus went quiet.
        max_state_age_ms: FEED_PERIOD_MS * 5,
        stationary_max_kmh: cfg.commands.speed_threshold_kmh,
        lock_requires_doors_closed: true,
        confirm_timeout_ms: cfg.commands.confirm_timeout_ms,
        max_run_secs: u32::try_from(cfg.commands.max_engine_run_s).unwrap_or(u32::MAX),
        idempotency_capacity: JOURNAL_CAPACITY,
    }
}

fn alert_rules(cfg: &Config) -> Vec<ThresholdRule> {
    let t = &cfg.telemetry;
    let mut rules = vec![
        ThresholdRule::low_fuel(
            "Vehicle.Powertrain.FuelSystem.RelativeLevel",
            t.low_fuel_pct,
            3.0,
        ),
        ThresholdRule {
            kind: "low_battery".into(),
            path: "Vehicle.LowVoltageBattery.CurrentVoltage".into(),
            raise_below: t.low_battery_v,
            clear_above: t.low_battery_v + 0.4,
            min_hold_ms: 10_000,
        },
        ThresholdRule::service_due("Vehicle.Service.DistanceToService", 0.0, 100.0),
    ];
    for axle in ["Row1", "Row2"] {
        for side in ["Left", "Right"] {
            rules.push(ThresholdRule::low_tire_pressure(
                &format!("Vehicle.Chassis.Axle.{axle}.Wheel.{side}.Tire.Pressure"),
                180.0,
                10.0,
            ));
        }
    }
    rules
}

impl Runtime {
    /// Starts the MQTT link (TLS files are loaded now: missing or invalid ones refuse to start)
    /// and prepares the core. Must run inside a tokio runtime.
    pub fn start(
        cfg: Config,
        store: Store,
        security: Arc<SecurityService>,
        connector: CanConnector,
    ) -> Result<Self, DaemonError> {
        let clock = Clock::new();
        // Alive from the start: the watchdog must not see a stale beat before the core runs.
        let health = Arc::new(Health::default());
        health.heartbeat_ms.store(clock.now_ms(), Ordering::Relaxed);
        let (link, incoming) = telematics_link::Link::start(link_config(&cfg), store.outbox())
            .map_err(|e| DaemonError::Link(e.to_string()))?;
        Ok(Runtime {
            cfg,
            store,
            security,
            link,
            incoming,
            connector,
            clock,
            health,
        })
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
        let Runtime {
            cfg,
            store,
            security,
            link,
            incoming,
            connector,
            clock,
            health,
        } = self;
        let (model, warnings) = VehicleModel::load(&cfg)?;
        for w in warnings {
            tracing::warn!(warning = %w, "vehicle model: DBC or mapping entry not used");
        }
        let now = clock.now_ms();
        let mut exec =
            Executor::new(exec_config(&cfg)).map_err(|e| DaemonError::Can(e.to_string()))?;
        let journal = load_journal(&store)?;
        tracing::info!(entries = journal.len(), "command journal restored");
        exec.restore(journal, now);
        let mut last_run = None;
        if let Some(b) = store.get(RUN_TIMER_KEY)?
            && let Ok(rt) = ciborium::from_reader::<RunTimerRec, _>(b.as_slice())
        {
            tracing::warn!(
                deadline_ms = rt.deadline_ms,
                "remote-start run timer restored after restart"
            );
            exec.restore_run_timer(CommandId(rt.id), rt.deadline_ms);
            last_run = Some((CommandId(rt.id), rt.deadline_ms));
        }
        let schedule = Schedule::new(
            ScheduleConfig {
                vin: cfg.vehicle.vin.clone(),
                periodic_ms: cfg.telemetry.period_s * 1000,
                max_age_ms: cfg.can.max_age_ms,
                on_change: cfg
                    .telemetry
                    .on_change
                    .iter()
                    .map(|p| OnChange {
                        path: p.clone(),
                        deadband: 0.0,
                        min_interval_ms: 200,
                    })
                    .collect(),
            },
            now,
        )
        .map_err(|e| DaemonError::Can(format!("telemetry: {e}")))?;
        let alerts = AlertEngine::new(&cfg.vehicle.vin, alert_rules(&cfg))
            .map_err(|e| DaemonError::Can(format!("telemetry: {e}")))?;

        let (frame_tx, frame_rx) = mpsc::channel::<CanFrame>(FRAME_QUEUE);
        let (sink_tx, sink_rx) = watch::channel::<Option<Arc<dyn CanSink>>>(None);
        let reader = tokio::spawn(can_reader(
            connector,
            frame_tx,
            sink_tx,
            health.clone(),
            shutdown.clone(),
        ));
        let (verified_tx, verified_rx) = mpsc::channel::<SecurityOutput>(16);
        let verifier = tokio::spawn(verify_worker(
            incoming,
            security.clone(),
            verified_tx,
            cfg.vehicle.vin.clone(),
            shutdown.clone(),
        ));

        let mut core = Core {
            vin: cfg.vehicle.vin.clone(),
            model,
            exec,
            schedule,
            alerts,
            security: security.clone(),
            store,
            link: link.clone(),
            clock,
            health,
            answered: Answered::new(ANSWER_WINDOW_MS, ANSWER_CAPACITY),
            sink: sink_rx,
            body_counter: 0,
            last_run,
            next_feed: now,
            next_refresh: now,
            held: Vec::new(),
            warmup_until: now + WARMUP_MS,
        };
        // Results of commands interrupted by the restart, and terminal results journaled just
        // before a crash but never handed to the outbox.
        core.drain_exec().await;
        core.publish_unpublished().await;
        let result = core.run(frame_rx, verified_rx, shutdown.clone()).await;

        reader.abort();
        verifier.abort();
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

async fn can_reader(
    connector: CanConnector,
    frames: mpsc::Sender<CanFrame>,
    sink: watch::Sender<Option<Arc<dyn CanSink>>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let ports = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connector() => r,
        };
        let mut ports = match ports {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(code = e.code(), error = %e, retry_ms = backoff.as_millis() as u64, "CAN connect failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        health.can_connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!("CAN connected");
        let _ = sink.send(Some(ports.sink.clone()));
        loop {
            let r = tokio::select! {
                () = shutdown.cancelled() => return,
                r = ports.source.recv() => r,
            };
            match r {
                Ok(Some(f)) => {
                    health.frames.fetch_add(1, Ordering::Relaxed);
                    if frames.try_send(f).is_err() {
                        health.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => {
                    tracing::info!("CAN source ended (replay finished); the bus is now silent");
                    shutdown.cancelled().await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(code = e.code(), error = %e, "CAN receive failed; reconnecting");
                    let _ = sink.send(None);
                    break;
                }
            }
        }
    }
}

/// Verifies received commands and answers session requests on the blocking pool, one message
/// at a time in arrival order (one code check in flight), in batches of up to [`VERIFY_BATCH`]
/// messages per hand-off; closes the aggregated-refusal window every [`REFUSAL_FLUSH_MS`].
async fn verify_worker(
    mut incoming: mpsc::Receiver<Incoming>,
    security: Arc<SecurityService>,
    out: mpsc::Sender<SecurityOutput>,
    vin: String,
    shutdown: CancellationToken,
) {
    let commands = topics::commands(&vin);
    let session_request = topics::session_request(&vin);
    let mut flush = tokio::time::interval(Duration::from_millis(REFUSAL_FLUSH_MS));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            m = incoming.recv() => match m { Some(m) => m, None => return },
            _ = flush.tick() => {
                let sec = security.clone();
                let _ = tokio::task::spawn_blocking(move || sec.flush_refusals(unix_now_s(), false)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < VERIFY_BATCH {
            match incoming.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let sec = security.clone();
        let tx = out.clone();
        let (commands, session_request) = (commands.clone(), session_request.clone());
        let handled = tokio::task::spawn_blocking(move || {
            for msg in batch {
                let output = if msg.topic == commands {
                    SecurityOutput::Command(sec.verify(&msg.payload, unix_now_s()))
                } else if msg.topic == session_request {
                    match sec.session_request(&msg.payload, unix_now_s()) {
                        Some(info) => SecurityOutput::SessionInfo(info),
                        None => continue,
                    }
                } else {
                    tracing::warn!(topic = %msg.topic, "message on an unexpected topic ignored");
                    continue;
                };
                if tx.blocking_send(output).is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        match handled {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::error!(error = %e, "verification task failed"),
        }
    }
}

struct Core {
    vin: String,
    model: VehicleModel,
    exec: Executor,
    schedule: Schedule,
    alerts: AlertEngine,
    security: Arc<SecurityService>,
    store: Store,
    link: LinkHandle,
    clock: Clock,
    health: Arc<Health>,
    /// Command ids whose refusal was answered recently (replay amplification bound).
    answered: Answered,
    sink: watch::Receiver<Option<Arc<dyn CanSink>>>,
    body_counter: u8,
    last_run: Option<(CommandId, u64)>,
    next_feed: u64,
    next_refresh: u64,
    /// Verified commands waiting for the first complete vehicle state after start-up.
    held: Vec<telematics_security::VerifiedCommand>,
    /// End of the start-up window in which commands may be held (monotonic ms).
    warmup_until: u64,
}

impl Core {
    async fn run(
        &mut self,
        mut frames: mpsc::Receiver<CanFrame>,
        mut verified: mpsc::Receiver<SecurityOutput>,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        loop {
            if self.health.store_failures.load(Ordering::Relaxed) > 0 {
                return Err(DaemonError::StoreFailed(
                    "a durable write failed (disk full or I/O error); stopping so the service \
                     manager restarts the daemon on a reopened store"
                        .into(),
                ));
            }
            let now = self.clock.now_ms();
            self.health.heartbeat_ms.store(now, Ordering::Relaxed);
            let mut deadline = self.next_feed.min(self.schedule.next_deadline());
            if let Some(t) = self.exec.next_timeout() {
                deadline = deadline.min(t);
            }
            let sleep = tokio::time::sleep_until(self.clock.instant_at(deadline).into());
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                f = frames.recv() => {
                    let Some(f) = f else { return Ok(()) };
                    self.on_frames(f, &mut frames).await;
                }
                v = verified.recv() => match v {
                    None => return Ok(()),
                    Some(SecurityOutput::Command(v)) => self.on_verification(v).await,
                    Some(SecurityOutput::SessionInfo(info)) => self.publish_session_info(info).await,
                },
                () = sleep => {}
            }
            self.on_tick().await;
        }
    }

    async fn on_frames(&mut self, first: CanFrame, more: &mut mpsc::Receiver<CanFrame>) {
        let now = self.clock.now_ms();
        let mut changes = self.model.on_frame(&first, now);
        // Coalesce a burst (bounded) before feeding the consumers.
        for _ in 0..255 {
            match more.try_recv() {
                Ok(f) => changes.extend(self.model.on_frame(&f, now)),
                Err(_) => break,
            }
        }
        if !changes.is_empty() {
            let updates: Vec<_> = changes
                .iter()
                .map(|c| (c.path.clone(), crate::vehicle::to_payload_value(&c.new)))
                .collect();
            let mut alerts = Vec::new();
            for (p, v) in &updates {
                alerts.extend(self.alerts.on_signal(p, v, now));
            }
            for a in alerts {
                self.publish_alert(&a).await;
            }
            let telemetry = self.schedule.on_update(&updates, now);
            self.publish_telemetry(telemetry).await;
            // State changes can confirm an in-flight command right away.
            self.feed_exec(now);
            self.drain_exec().await;
        }
    }

    fn feed_exec(&mut self, now: u64) {
        for s in self.model.exec_signals(now) {
            self.exec.on_vehicle_update(s, now);
        }
    }

    async fn submit_verified(&mut self, cmd: telematics_security::VerifiedCommand, now: u64) {
        // Feed the freshest state before the preconditions are checked.
        self.feed_exec(now);
        self.exec.submit(cmd, now);
        self.drain_exec().await;
    }

    /// Every precondition signal (brake excepted: optional) has been heard and is fresh.
    fn state_complete(&self, now: u64) -> bool {
        self.model
            .exec_signals(now)
            .iter()
            .filter(|s| !matches!(s, telematics_exec::VehicleSignal::BrakePressed(_)))
            .count()
            >= 7
    }

    async fn on_tick(&mut self) {
        let now = self.clock.now_ms();
        if !self.held.is_empty() && (now >= self.warmup_until || self.state_complete(now)) {
            for cmd in std::mem::take(&mut self.held) {
                self.submit_verified(cmd, now).await;
            }
        }
        if now >= self.next_feed {
            self.feed_exec(now);
            self.next_feed = now + FEED_PERIOD_MS;
        }
        if now >= self.next_refresh {
            // Unchanged but fresh signals keep their telemetry age current; the lockout alert
            // clears when a back-off wait ends.
            let fresh = self.model.fresh_values(now);
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            (self.health.signals_mapped)
                .store(count(self.model.mapped_signals()), Ordering::Relaxed);
            (self.health.signals_fresh).store(count(fresh.len()), Ordering::Relaxed);
            let telemetry = self.schedule.on_update(&fresh, now);
            self.publish_telemetry(telemetry).await;
            self.lockout_alert(now).await;
            self.next_refresh = now + 1_000;
        }
        self.exec.handle_timeout(now);
        let telemetry = self.schedule.poll(now);
        self.publish_telemetry(telemetry).await;
        self.drain_exec().await;
    }

    async fn lockout_alert(&mut self, now: u64) {
        let locked = self.security.locked_out(unix_now_s());
        if let Some(a) = self.alerts.on_lockout(locked, now) {
            self.publish_alert(&a).await;
        }
    }

    async fn publish_telemetry(&self, messages: Vec<telematics_telemetry::Telemetry>) {
        for t in messages {
            match t.encode() {
                Ok(b) => {
                    self.enqueue(topics::telemetry(&self.vin), b, Priority::Telemetry)
                        .await;
                }
                Err(e) => tracing::error!(error = %e, "telemetry encode failed"),
            }
        }
    }

    /// Session info (unsolicited after a refusal, or answering a request).
    async fn publish_session_info(&self, info: Vec<u8>) {
        self.enqueue(topics::session(&self.vin), info, Priority::Result)
            .await;
    }

    async fn publish_alert(&self, a: &telematics_telemetry::Alert) {
        match a.encode() {
            Ok(b) => {
                self.enqueue(topics::alerts(&self.vin), b, Priority::Alert)
                    .await;
            }
            Err(e) => tracing::error!(error = %e, "alert encode failed"),
        }
    }

    async fn on_verification(&mut self, v: Verification) {
        let now = self.clock.now_ms();
        match v {
            Verification::Verified(cmd) => {
                self.health
                    .commands_verified
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    command = %hex::encode(cmd.command_id().0),
                    action = ?cmd.action(),
                    "command verified"
                );
                if now < self.warmup_until && !self.state_complete(now) {
                    // Just started (commands queued by the broker while we were offline arrive
                    // with the CONNACK): wait briefly for the bus instead of refusing
                    // `stale_state` for a state we simply have not heard yet.
                    tracing::info!(
                        command = %hex::encode(cmd.command_id().0),
                        "command held until the vehicle state is known"
                    );
                    self.held.push(cmd);
                    return;
                }
                self.submit_verified(cmd, now).await;
            }
            Verification::Rejected {
                refusal,
                command_id,
                detail,
                session_info,
            } => {
                self.health.commands_refused.fetch_add(1, Ordering::Relaxed);
                let command = command_id.map(|c| hex::encode(c.0));
                if refusal.audited_in_aggregate() {
                    // Forgeable or replayed: counted in the aggregated audit, not one line each.
                    tracing::debug!(reason = refusal.code(), ?command, "command refused");
                } else {
                    tracing::warn!(reason = refusal.code(), ?command, "command refused");
                }
                if refusal == Refusal::StatePersist {
                    self.health
                        .store_failed("security state", &"cannot persist");
                }
                if let Some(info) = session_info {
                    self.publish_session_info(info).await;
                }
                if let Some(id) = command_id {
                    if !self.answered.first(id, now) {
                        tracing::debug!(
                            command = %hex::encode(id.0),
                            "refusal of this command id already answered within the window"
                        );
                        return;
                    }
                    // A re-delivered command (QoS 1 duplicate) is a replay of a known id:
                    // answer with its real result instead of contradicting it.
                    let prior = (refusal == Refusal::Fault(Fault::Replay))
                        .then(|| self.exec.result_of(&id).cloned())
                        .flatten();
                    let rec = prior.unwrap_or(ResultRecord {
                        command_id: id,
                        state: CommandState::Rejected,
                        reason_code: None,
                        detail: detail.clone(),
                        at: now,
                    });
                    let mut res = to_result(&rec);
                    if rec.reason_code.is_none() && rec.state == CommandState::Rejected {
                        res.reason_code = Some(refusal.code().to_string());
                    }
                    self.publish_result(res).await;
                }
            }
        }
        self.lockout_alert(now).await;
    }

    /// Enqueues a result; `true` once it is in the outbox.
    async fn publish_result(&self, res: CommandResult) -> bool {
        match res.encode() {
            Ok(b) => {
                self.enqueue(topics::results(&self.vin), b, Priority::Result)
                    .await
            }
            Err(e) => {
                tracing::error!(error = %e, "result encode failed");
                false
            }
        }
    }

    /// Marks a terminal journal entry as handed to the outbox.
    async fn mark_published(&self, rec: ResultRecord) {
        let r = self.blocking(move |s| write_journal(&s, &rec, true)).await;
        if let Err(e) = r {
            tracing::error!(error = %e, "command journal write failed");
            self.health.store_failed("journal", &e);
        }
    }

    async fn publish_unpublished(&self) {
        let pending = match self.blocking(|s| unpublished_results(&s)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "command journal unreadable");
                return;
            }
        };
        for rec in pending {
            tracing::warn!(
                command = %hex::encode(rec.command_id.0),
                state = rec.state.as_str(),
                "re-publishing a result journaled before a crash"
            );
            if self.publish_result(to_result(&rec)).await {
                self.mark_published(rec).await;
            }
        }
    }

    async fn enqueue(&self, topic: String, payload: Vec<u8>, priority: Priority) -> bool {
        let link = self.link.clone();
        let msg = OutboxMessage::new(topic, payload, priority);
        let r = tokio::task::spawn_blocking(move || link.publish(&msg)).await;
        match r {
            Ok(Ok(_)) => {
                self.health.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(Err(e)) => {
                self.health.enqueue_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, ?priority, "outbox write failed; message lost");
                self.health.store_failed("outbox", &e);
                false
            }
            Err(e) => {
                self.health.enqueue_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "outbox task failed");
                false
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, DaemonError> + Send + 'static,
    ) -> Result<T, DaemonError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| DaemonError::Security(format!("blocking task: {e}")))?
    }

    /// Carries out the executor's outputs in order. Durability before effect: after a failed
    /// durable write nothing further is carried out (in particular no actuation frame after
    /// a failed `accepted` journal entry); the core loop then stops with `store.write_failed`.
    async fn drain_exec(&mut self) {
        let mut journaled = 0usize;
        while let Some(out) = self.exec.poll_output() {
            if self.health.store_failures.load(Ordering::Relaxed) > 0 {
                tracing::error!(
                    code = "store.write_failed",
                    "durable state not written: executor outputs discarded, nothing actuated"
                );
                return;
            }
            match out {
                Output::JournalCommand(rec) => {
                    let terminal = rec.state.is_terminal();
                    let r = self
                        .blocking(move |s| write_journal(&s, &rec, !terminal))
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "command journal write failed");
                        self.health.store_failed("journal", &e);
                        continue;
                    }
                    crate::failpoint::hit(if terminal {
                        Crash::ExecAfterJournalTerminal
                    } else {
                        Crash::ExecAfterJournalAccepted
                    });
                    journaled += 1;
                }
                Output::Publish(rec) => {
                    tracing::info!(
                        command = %hex::encode(rec.command_id.0),
                        state = rec.state.as_str(),
                        reason = rec.reason_code.unwrap_or(""),
                        "command result"
                    );
                    // The audit write fsyncs and waits for the security mutex: not on the core.
                    let sec = self.security.clone();
                    let kind = format!("command.{}", rec.state.as_str());
                    let detail = format!(
                        "command={} {}",
                        hex::encode(rec.command_id.0),
                        rec.reason_code.unwrap_or("")
                    );
                    if let Err(e) =
                        tokio::task::spawn_blocking(move || sec.record(&kind, detail)).await
                    {
                        tracing::error!(error = %e, "audit task failed");
                    }
                    if self.publish_result(to_result(&rec)).await && rec.state.is_terminal() {
                        self.mark_published(rec).await;
                    }
                }
                Output::SendFrames(req) => self.actuate(req.actuate).await,
                Output::RunTimerEnded { command_id, reason } => {
                    tracing::info!(command = %hex::encode(command_id.0), ?reason, "remote-start run ended");
                }
            }
        }
        if self.exec.run_timer() != self.last_run {
            self.persist_run_timer().await;
        }
        if journaled > 0
            && let Err(e) = self.blocking(|s| prune_journal(&s)).await
        {
            tracing::error!(code = e.code(), error = %e, "command journal not pruned");
        }
    }

    async fn persist_run_timer(&mut self) {
        let cur = self.exec.run_timer();
        let r = match cur {
            Some((id, deadline_ms)) => {
                let mut buf = Vec::new();
                let rec = RunTimerRec {
                    id: id.0,
                    deadline_ms,
                };
                if let Err(e) = ciborium::into_writer(&rec, &mut buf) {
                    tracing::error!(error = %e, "run timer not encoded");
                    self.health.store_failed("run timer", &e);
                    return;
                }
                self.blocking(move |s| {
                    if failpoint::write_fails(failpoint::Write::RunTimer) {
                        return Err(DaemonError::StoreFailed("injected: run timer".into()));
                    }
                    Ok(s.put(RUN_TIMER_KEY, &buf)?)
                })
                .await
            }
            None => {
                self.blocking(|s| Ok(s.delete(RUN_TIMER_KEY).map(|_| ())?))
                    .await
            }
        };
        match r {
            Ok(()) => self.last_run = cur,
            Err(e) => {
                tracing::error!(error = %e, "run timer not persisted");
                self.health.store_failed("run timer", &e);
            }
        }
    }

    async fn actuate(&mut self, a: Actuate) {
        let cmd = match a {
            Actuate::Lock => BodyCommand::Lock,
            Actuate::Unlock => BodyCommand::Unlock,
            Actuate::EngineStart => BodyCommand::EngineStart,
            Actuate::EngineStop => BodyCommand::EngineStop,
            Actuate::FlashLights => BodyCommand::FlashLights(3),
            Actuate::Horn => BodyCommand::Horn,
        };
        self.body_counter = self.body_counter.wrapping_add(1) & 0xF;
        let frame = match encode_body_command(self.model.dbc(), cmd, self.body_counter) {
            Ok(f) => f,
            Err(e) => {
                // The vehicle's DBC has no body-command message: the command times out.
                tracing::error!(error = %e, ?cmd, "cannot encode the body command for this DBC");
                return;
            }
        };
        let sink = self.sink.borrow().clone();
        let Some(sink) = sink else {
            tracing::error!(
                ?cmd,
                "CAN not connected; actuation not sent (the command will time out)"
            );
            return;
        };
        match tokio::time::timeout(Duration::from_secs(1), sink.send(&frame)).await {
            Ok(Ok(())) => {
                tracing::info!(?cmd, counter = self.body_counter, "actuation sent");
                crate::failpoint::hit(Crash::ExecAfterActuationSent);
            }
            Ok(Err(e)) => tracing::error!(code = e.code(), error = %e, "actuation send failed"),
            Err(_) => tracing::error!("actuation send timed out"),
        }
    }
}

fn to_result(rec: &ResultRecord) -> CommandResult {
    CommandResult {
        command_id: rec.command_id.0,
        state: result_state(rec.state),
        reason_code: rec.reason_code.map(str::to_string),
        detail: rec.detail.clone(),
        at: rec.at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_keeps_reason_and_prunes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb")).expect("store");
        for i in 0..(JOURNAL_CAPACITY + 10) {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            write_journal(
                &store,
                &ResultRecord {
                    command_id: CommandId(id),
                    state: CommandState::Rejected,
                    reason_code: Some("door_open"),
                    detail: Some("x".into()),
                    at: 1_000 + i as u64,
                },
                true,
            )
            .expect("write");
        }
        prune_journal(&store).expect("prune");
        let all = load_journal(&store).expect("load");
        assert_eq!(all.len(), JOURNAL_CAPACITY);
        assert_eq!(all[0].at, 1_010, "oldest entries pruned first");
        assert!(all.iter().all(|r| r.reason_code == Some("door_open")));
    }

    #[test]
    fn terminal_results_journaled_but_not_published_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb")).expect("store");
        let rec = |i: u8, state| ResultRecord {
            command_id: CommandId([i; 16]),
            state,
            reason_code: None,
            detail: None,
            at: 1_000 + u64::from(i),
        };
        write_journal(&store, &rec(1, CommandState::Executed), true).expect("write");
        write_journal(&store, &rec(2, CommandState::Executed), false).expect("write");
        write_journal(&store, &rec(3, CommandState::Accepted), true).expect("write");
        let pending = unpublished_results(&store).expect("load");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].command_id, CommandId([2; 16]));
        assert_eq!(load_journal(&store).expect("load").len(), 3);
        write_journal(&store, &rec(2, CommandState::Executed), true).expect("write");
        assert!(unpublished_results(&store).expect("load").is_empty());
    }

    #[test]
    fn a_command_id_is_answered_once_per_window_and_memory_is_bounded() {
        let mut a = Answered::new(1_000, 3);
        let id = |i: u8| CommandId([i; 16]);
        assert!(a.first(id(1), 0));
        assert!(!a.first(id(1), 1), "second copy within the window");
        assert!(!a.first(id(1), 999));
        assert!(a.first(id(1), 1_000), "window over: answered again");
        assert!(!a.first(id(1), 1_500));
        for i in 2..=4 {
            assert!(a.first(id(i), 1_600));
        }
        // Capacity 3: id 1 (oldest) was forgotten, so it is answered again.
        assert!(a.at.len() <= 3);
        assert!(a.first(id(1), 1_700));
        assert!(!a.first(id(4), 1_700));
    }

    #[test]
    fn clock_is_monotonic_and_anchored() {
        let c = Clock::new();
        let a = c.now_ms();
        let b = c.now_ms();
        assert!(b >= a);
        assert!(a > 1_600_000_000_000);
        let i = c.instant_at(a + 1_000);
        assert!(i > Instant::now());
    }
}
