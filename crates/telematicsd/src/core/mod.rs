//! `VehicleCore`: every decision of the command path and the telemetry path, sans-IO.
//!
//! The core owns the vehicle model (DBC + VSS + vehicle profile), the [`Executor`], the
//! telemetry [`Schedule`] and [`AlertEngine`], the start-up hold, the replay answers and the
//! actuation frames' alive counters. Actuation frames are built from the vehicle profile and the
//! body controller's acknowledgements are decoded with it: a refusal ends the command
//! `failed(refused_by_vehicle)` with the body controller's reason, not a timeout.
//! It reads no clock (`now`, monotonic ms of the runtime's clock, is an argument), spawns
//! nothing and holds no store: the runtime feeds inputs (`handle_*`) and carries out the
//! effects it polls ([`VehicleCore::poll_effect`]), waking at [`VehicleCore::next_deadline`].
//! The shape is quinn-proto's `Connection` and the project's own [`Executor`].
//!
//! # Durability before effect
//! A decision's durable part (journal entries, results and telemetry for the outbox, the run
//! timer) is one [`Commit`], written by the runtime in one store transaction. The effects
//! that depend on it (actuation frames, audit records) are held until the runtime reports
//! that commit with [`VehicleCore::handle_commit`]`(id, Ok)`. A failed commit drops every
//! held and queued effect and stops the core: [`Effect::FailClosed`] is the last effect, and
//! the daemon exits with `store.write_failed`. Commits are reported in the order they were
//! polled.
//!
//! # Security events
//! Security events for the owner are alerts committed like any other: those the security
//! service reports once its state is persisted ([`VehicleCore::handle_security_event`]), the
//! lockout from its snapshot, and the refusals anyone can provoke, aggregated per kind and
//! minute here ([`ForgedRefusals`]) so that a flood of forged commands yields a bounded number
//! of alerts.
//!
//! An actuation frame is on the bus only when the runtime says so
//! ([`VehicleCore::handle_frame_sent`]): nothing decided after a frame (a lights command
//! `executed`, a cleared run timer) is polled before that report, and a frame that could not
//! be written fails its command `send_failed`.

mod answered;
mod build;
mod security_events;

pub use answered::{ANSWER_CAPACITY, ANSWER_WINDOW_MS, Answered};
pub use build::{CoreParts, FEED_PERIOD_MS, JOURNAL_CAPACITY, WARMUP_MS};
pub use security_events::{EVENT_WINDOW_MS, Forged, ForgedRefusals, Lockout, SecurityEvent};

use std::collections::{HashMap, VecDeque};

use telematics_can::CanFrame;
use telematics_can::actuation::AckOutcome;
use telematics_exec::{Actuate, ActuationRequest, Executor, Output};
use telematics_link::topics;
use telematics_security::{CommandId, Fault, RetryAfter, VerifiedCommand};
use telematics_store::{OutboxMessage, Priority};
use telematics_telemetry::{AlertEngine, CommandResult, ResultState, Schedule};

use crate::security::{Refusal, Verification};
use crate::vehicle::{BusId, VehicleModel};

/// Identifies an actuation frame in [`VehicleCore::handle_frame_sent`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub u64);

/// Identifies a [`Commit`] in [`VehicleCore::handle_commit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(pub u64);

/// What happens to the persisted remote-start run timer in a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunTimerChange {
    /// Store this timer (EngineStart command, deadline in monotonic ms).
    Set(CommandId, u64),
    /// Remove the stored timer.
    Clear,
}

/// The durable part of one decision, written in one store transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commit {
    /// Its id (report the outcome with [`VehicleCore::handle_commit`]).
    pub id: CommitId,
    /// Command journal entries (latest state of each command).
    pub journal: Vec<CommandResult>,
    /// Journal entries to delete (oldest beyond [`JOURNAL_CAPACITY`]).
    pub forget: Vec<CommandId>,
    /// Outbox messages (results, telemetry, alerts, session info), in order.
    pub outbox: Vec<OutboxMessage>,
    /// Change of the persisted run timer, if any.
    pub run_timer: Option<RunTimerChange>,
    /// SecOC freshness values used by the frame this commit releases, by DBC message: stored
    /// as that message's last used value in the same transaction, so a value never repeats
    /// across restarts (the frame leaves only after the commit).
    pub secoc_freshness: Vec<(String, u64)>,
}

impl Commit {
    /// `true` when a journal entry in this commit is `accepted` (a command about to actuate).
    pub fn journals_accepted(&self) -> bool {
        self.journal.iter().any(|r| !r.state.is_terminal())
    }
    /// `true` when a journal entry in this commit is terminal.
    pub fn journals_terminal(&self) -> bool {
        self.journal.iter().any(|r| r.state.is_terminal())
    }
    fn is_empty(&self) -> bool {
        self.journal.is_empty()
            && self.forget.is_empty()
            && self.outbox.is_empty()
            && self.run_timer.is_none()
            && self.secoc_freshness.is_empty()
    }
}

/// Why the core stopped (fail closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailClosed {
    /// A commit failed; the text is the store's error.
    CommitFailed {
        /// The failed commit.
        id: CommitId,
        /// What the store reported.
        error: String,
    },
    /// The security layer could not persist its state during a verification.
    SecurityState,
}

impl FailClosed {
    /// The daemon's exit error (`store.write_failed`).
    pub fn error(&self) -> crate::error::DaemonError {
        crate::error::DaemonError::StoreFailed(match self {
            FailClosed::CommitFailed { error, .. } => format!(
                "a durable write failed ({error}); stopping so the service manager restarts the \
                 daemon on a reopened store"
            ),
            FailClosed::SecurityState => {
                "the security state could not be made durable; stopping (fail closed)".into()
            }
        })
    }
}

/// An effect to carry out, polled with [`VehicleCore::poll_effect`].
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Write this in one durable transaction, then report it with
    /// [`VehicleCore::handle_commit`].
    Commit(Commit),
    /// Send this actuation frame to the CAN bus (its decision is durable), then report it
    /// with [`VehicleCore::handle_frame_sent`].
    SendFrame {
        /// Its id (report the write with [`VehicleCore::handle_frame_sent`]).
        id: FrameId,
        /// The bus it goes to (the vehicle profile's name).
        bus: String,
        /// The encoded frame.
        frame: CanFrame,
        /// What it asks the body controller to do.
        actuate: Actuate,
        /// Its alive counter.
        counter: u8,
        /// Times to send it (at least 1; report after the first write).
        count: u32,
        /// Pause between two sends (ms).
        interval_ms: u64,
    },
    /// Append an audit record (off the core task: it fsyncs).
    Audit {
        /// Record kind (`command.executed`, ...).
        kind: String,
        /// Detail text (no secrets).
        detail: String,
    },
    /// The core stopped; nothing follows. The daemon exits with `store.write_failed`.
    FailClosed(FailClosed),
}

/// What the runtime restores from the store at start-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    /// The command journal, oldest first.
    pub journal: Vec<CommandResult>,
    /// Terminal results an older daemon journaled but never handed to the outbox (journals
    /// written before results were committed with their journal entry).
    pub unpublished: Vec<CommandResult>,
    /// The persisted run timer.
    pub run_timer: Option<(CommandId, u64)>,
    /// The last SecOC freshness value committed per DBC message.
    pub secoc_freshness: Vec<(String, u64)>,
}

/// Effects of the decision being built, split at every actuation: the frame of segment `n`
/// is released after commit `n`, and nothing decided after the frame is durable before it.
#[derive(Default)]
struct Segment {
    commit: Commit,
    after: Vec<Effect>,
}

/// How many mapped signals the vehicle model has, and how many of them were fresh at the last
/// once-a-second refresh (`doctor`'s stale-bus check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalCounts {
    /// Mapped signals (VSS paths).
    pub mapped: usize,
    /// Of those, with a value not older than its maximum age.
    pub fresh: usize,
}

/// The sans-IO core of the daemon; see the [module docs](self).
pub struct VehicleCore {
    vin: String,
    model: VehicleModel,
    exec: Executor,
    schedule: Schedule,
    alerts: AlertEngine,
    /// Forgeable refusals counted per kind and window.
    forged: ForgedRefusals,
    answered: Answered,
    /// Alive counter of each actuation message, by DBC message name.
    counters: HashMap<String, u8>,
    /// The SecOC key of the profile's authenticated actions.
    secoc_key: Option<std::sync::Arc<telematics_can::protection::SecOcKey>>,
    /// Last SecOC freshness value used (committed) per DBC message.
    secoc_freshness: HashMap<String, u64>,
    /// The command in flight, its frame and the counter its acknowledgement must echo.
    awaiting_ack: Option<(telematics_security::CommandId, u8, u64)>,
    /// The latest `now` a handler was given (ms): when a decision was taken.
    last_now: u64,
    next_frame: u64,
    /// Frames released, not yet reported written, with their commands.
    frames_out: VecDeque<(FrameId, Option<telematics_security::CommandId>)>,
    /// The command of each frame not yet polled.
    frame_commands: HashMap<FrameId, Option<telematics_security::CommandId>>,
    /// The run timer as last committed.
    durable_run: Option<(CommandId, u64)>,
    /// Journaled command ids, oldest first (pruning without re-reading the store).
    journaled: VecDeque<CommandId>,
    next_feed: u64,
    /// Mapped / fresh signal counts at the last refresh (for `doctor`).
    signals: SignalCounts,
    next_refresh: u64,
    /// Verified commands waiting for the first complete vehicle state after start-up.
    held: Vec<VerifiedCommand>,
    warmup_until: u64,
    lockout: Lockout,
    next_commit: u64,
    building: Segment,
    /// Segments ready but not yet polled.
    sealed: VecDeque<Segment>,
    /// Commits polled, not yet reported, with the effects they release.
    awaiting: VecDeque<(CommitId, Vec<Effect>)>,
    ready: VecDeque<Effect>,
    stopped: bool,
}

impl std::fmt::Debug for VehicleCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VehicleCore")
            .field("vin", &self.vin)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl VehicleCore {
    /// A core from its parts (built in `Daemon::open`) and the restored durable state, at
    /// `now`. Commands in flight at the last stop are reported `failed(interrupted)`, results
    /// an old daemon left unpublished are re-published, in the first commit.
    pub fn new(parts: CoreParts, restored: Restored, now: u64) -> Self {
        let CoreParts {
            vin,
            model,
            mut exec,
            schedule,
            alerts,
            warmup_ms,
            secoc_key,
        } = parts;
        let journaled = restored
            .journal
            .iter()
            .map(|r| CommandId(r.command_id))
            .collect();
        exec.restore(restored.journal, now);
        if let Some((id, deadline)) = restored.run_timer {
            tracing::warn!(deadline_ms = deadline, "remote-start run timer restored");
            exec.restore_run_timer(id, deadline);
        }
        let mut core = VehicleCore {
            vin,
            model,
            exec,
            schedule,
            alerts,
            forged: ForgedRefusals::default(),
            answered: Answered::new(ANSWER_WINDOW_MS, ANSWER_CAPACITY),
            counters: HashMap::new(),
            secoc_key,
            secoc_freshness: restored.secoc_freshness.into_iter().collect(),
            awaiting_ack: None,
            last_now: now,
            next_frame: 1,
            frames_out: VecDeque::new(),
            frame_commands: HashMap::new(),
            durable_run: restored.run_timer,
            journaled,
            next_feed: now,
            next_refresh: now,
            signals: SignalCounts::default(),
            held: Vec::new(),
            warmup_until: now.saturating_add(warmup_ms),
            lockout: Lockout::None,
            next_commit: 1,
            building: Segment::default(),
            sealed: VecDeque::new(),
            awaiting: VecDeque::new(),
            ready: VecDeque::new(),
            stopped: false,
        };
        for rec in restored.unpublished {
            tracing::warn!(
                command = %hex::encode(rec.command_id),
                state = rec.state.as_str(),
                "re-publishing a result journaled before a crash"
            );
            // Re-journaled in the same commit: the entry no longer carries the old flag.
            core.building.commit.journal.push(rec.clone());
            core.encode_result(&rec);
        }
        core.drain_exec();
        core.seal();
        core
    }

    /// The vehicle model (counters, DBC).
    pub fn model(&self) -> &VehicleModel {
        &self.model
    }

    /// The executor (read-only: busy, run timer, remembered results).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// `true` once the core failed closed.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// CAN frames of the first bus received by `now` (a burst is best fed in one call).
    pub fn handle_frames<'a>(&mut self, frames: impl IntoIterator<Item = &'a CanFrame>, now: u64) {
        self.last_now = self.last_now.max(now);
        self.handle_bus_frames(frames.into_iter().map(|f| (BusId(0), f)), now);
    }

    /// CAN frames received by `now`, each with its bus. A frame's signals are as old as its
    /// own timestamp (on the core's clock; `now` for a frame without one).
    pub fn handle_bus_frames<'a>(
        &mut self,
        frames: impl IntoIterator<Item = (BusId, &'a CanFrame)>,
        now: u64,
    ) {
        self.last_now = self.last_now.max(now);
        if self.stopped {
            return;
        }
        let mut changes = Vec::new();
        let mut acked = false;
        for (bus, f) in frames {
            acked |= self.on_ack_frame(bus, f, now);
            changes.extend(self.model.on_bus_frame(bus, f, now));
        }
        if acked {
            self.drain_exec();
        }
        if !changes.is_empty() {
            let updates: Vec<_> = changes
                .iter()
                .map(|c| (c.path.clone(), c.new.clone()))
                .collect();
            let mut alerts = Vec::new();
            for (p, v) in &updates {
                alerts.extend(self.alerts.on_signal(p, v, now));
            }
            for a in alerts {
                self.alert_message(&a);
            }
            let telemetry = self.schedule.on_update(&updates, now);
            self.telemetry_messages(telemetry);
            // State changes can confirm an in-flight command right away.
            self.feed_exec(now);
            self.drain_exec();
        }
        self.seal();
    }

    /// Frame `id` was written to the bus (`Ok`) or not (`Err`: the reason). Reported once per
    /// [`Effect::SendFrame`], in the order they were polled; what was decided after the frame
    /// is polled only after this report.
    pub fn handle_frame_sent(&mut self, id: FrameId, result: Result<(), String>, now: u64) {
        self.last_now = self.last_now.max(now);
        if self.stopped {
            return;
        }
        let Some(pos) = self.frames_out.iter().position(|(f, _)| *f == id) else {
            tracing::warn!(frame = id.0, "report of an unknown actuation frame ignored");
            return;
        };
        let command = self.frames_out.remove(pos).and_then(|(_, c)| c);
        if let Err(e) = &result {
            tracing::error!(frame = id.0, error = %e, "actuation frame not written to the bus");
        }
        if let Some(c) = command {
            if result.is_err() && self.awaiting_ack.is_some_and(|(a, _, _)| a == c) {
                self.awaiting_ack = None;
            }
            self.exec.on_frame_sent(c, result, now);
        }
        self.drain_exec();
        self.seal();
    }

    /// `true` when `frame` is the acknowledgement of the command in flight (fed to the
    /// executor).
    fn on_ack_frame(&mut self, bus: BusId, frame: &CanFrame, now: u64) -> bool {
        let Some((command, counter, decided_at)) = self.awaiting_ack else {
            return false;
        };
        // An acknowledgement heard before the command was decided answers an earlier frame
        // (its own timestamp, on the core's clock; a frame without one is heard now).
        let heard_at = frame.timestamp_us.map_or(now, |us| us / 1000);
        if heard_at < decided_at {
            return false;
        }
        let model = &self.model;
        let Some(ack) = model
            .profile()
            .ack
            .as_ref()
            .filter(|a| model.is_bus(bus, &a.bus))
            .and_then(|a| a.spec.decode(model.dbc_for(&a.bus), frame))
        else {
            return false;
        };
        if ack.counter.is_some_and(|c| c != counter) {
            tracing::debug!(?ack.counter, expected = counter, "acknowledgement of another frame");
            return false;
        }
        self.awaiting_ack = None;
        let result = match ack.outcome {
            AckOutcome::Ok => Ok(()),
            AckOutcome::Refused { code, reason } => {
                let reason = reason.unwrap_or_else(|| format!("code_{code}"));
                tracing::warn!(
                    command = %hex::encode(command.0),
                    code,
                    reason = %reason,
                    "the body controller refused the command"
                );
                Err(reason)
            }
        };
        self.exec.on_ack(result, now);
        true
    }

    /// The lockout as the security layer last persisted it (lock-free snapshot): the
    /// `security_lockout` alert is raised when it starts (with `until`, the end of a wait) and
    /// cleared when it ends.
    pub fn handle_lockout(&mut self, lockout: Lockout, now: u64) {
        self.last_now = self.last_now.max(now);
        if self.stopped {
            return;
        }
        self.lockout = lockout;
        self.lockout_alert(now);
        self.seal();
    }

    fn lockout_alert(&mut self, now: u64) {
        if let Some(mut a) = self.alerts.on_lockout(self.lockout.is_locked(), now) {
            if a.state == telematics_telemetry::AlertState::Raised {
                a.until = self.lockout.until_ms();
            }
            self.alert_message(&a);
        }
    }

    /// A security event the security service reported after persisting the decision that
    /// caused it: its alert goes into the next commit (priority [`Priority::Alert`]).
    pub fn handle_security_event(&mut self, event: SecurityEvent, now: u64) {
        self.last_now = self.last_now.max(now);
        if self.stopped {
            return;
        }
        let alert = event.alert(&self.vin, now);
        self.alert_message(&alert);
        self.seal();
    }

    /// The daemon stops at `now`: the refusals counted in open aggregation windows are
    /// reported now rather than lost with the process (commit them before the outbox drains).
    pub fn handle_shutdown(&mut self, now: u64) {
        self.last_now = self.last_now.max(now);
        if self.stopped {
            return;
        }
        for (kind, count) in self.forged.flush() {
            let alert = kind.alert(&self.vin, count, now);
            self.alert_message(&alert);
        }
        self.seal();
    }

    /// A session info to publish (answering a request on `vehicles/{vin}/session/request`).
    pub fn handle_session_info(&mut self, info: Vec<u8>) {
        if self.stopped {
            return;
        }
        self.session_message(info);
        self.seal();
    }

    /// The verification worker's outcome for one received command.
    pub fn handle_verification(&mut self, v: Verification, now: u64) {
        self.last_now = self.last_now.max(now);
        if self.stopped {
            return;
        }
        match v {
            Verification::Verified(cmd) => {
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
                } else {
                    self.submit(cmd, now);
                }
            }
            Verification::Rejected {
                refusal,
                command_id,
                retry_after,
                session_info,
            } => {
                let command = command_id.map(|c| hex::encode(c.0));
                if refusal.audited_in_aggregate() {
                    tracing::debug!(reason = refusal.code(), ?command, "command refused");
                } else {
                    tracing::warn!(reason = refusal.code(), ?command, "command refused");
                }
                if refusal == Refusal::StatePersist {
                    self.fail_closed(FailClosed::SecurityState);
                    return;
                }
                if let Some(kind) = Forged::of(refusal)
                    && let Some(count) = self.forged.on_refusal(kind, now)
                {
                    let alert = kind.alert(&self.vin, count, now);
                    self.alert_message(&alert);
                }
                if let Some(info) = session_info {
                    self.session_message(info);
                }
                if let Some(id) = command_id {
                    self.answer_refusal(id, refusal, retry_after, now);
                }
            }
            // Carried out by the security service (`revoke_device`): its result is already
            // in the outbox, nothing for the executor.
            Verification::Done => {}
        }
        self.seal();
    }

    /// Timers: the start-up hold, the executor's feed and timeouts, telemetry, the end of an
    /// aggregation window of forged refusals. Call at
    /// [`next_deadline`](Self::next_deadline) (calling it earlier is harmless).
    pub fn handle_timeout(&mut self, now: u64) {
        self.last_now = self.last_now.max(now);
        if self.stopped {
            return;
        }
        if !self.held.is_empty() && (now >= self.warmup_until || self.state_complete(now)) {
            for cmd in std::mem::take(&mut self.held) {
                self.submit(cmd, now);
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
            self.signals = SignalCounts {
                mapped: self.model.mapped_signals(),
                fresh: fresh.len(),
            };
            let telemetry = self.schedule.on_update(&fresh, now);
            self.telemetry_messages(telemetry);
            self.lockout_alert(now);
            self.next_refresh = now + 1_000;
        }
        for (kind, count) in self.forged.poll(now) {
            let alert = kind.alert(&self.vin, count, now);
            self.alert_message(&alert);
        }
        self.exec.handle_timeout(now);
        if self.schedule.snapshot_due(now) {
            self.schedule.set_stale(self.model.stale_paths(now));
        }
        let telemetry = self.schedule.poll(now);
        self.telemetry_messages(telemetry);
        self.drain_exec();
        self.seal();
    }

    /// The outcome of commit `id` (reported in the order the commits were polled).
    pub fn handle_commit(&mut self, id: CommitId, result: Result<(), String>) {
        if self.stopped {
            return;
        }
        let front = self.awaiting.front().map(|(c, _)| *c);
        match result {
            Ok(()) if front == Some(id) => {
                if let Some((_, after)) = self.awaiting.pop_front() {
                    self.ready.extend(after);
                }
            }
            Ok(()) => self.fail_closed(FailClosed::CommitFailed {
                id,
                error: format!("commit reported out of order (expected {front:?})"),
            }),
            Err(error) => {
                tracing::error!(
                    code = "store.write_failed",
                    commit = id.0,
                    error = %error,
                    "durable state not written: the decision stops here, nothing is actuated"
                );
                self.fail_closed(FailClosed::CommitFailed { id, error });
            }
        }
    }

    /// The next effect to carry out, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        if let Some(e) = self.ready.pop_front() {
            if let Effect::SendFrame { id, .. } = &e {
                let command = self.frame_commands.remove(id);
                self.frames_out.push_back((*id, command.flatten()));
            }
            return Some(e);
        }
        if self.stopped || !self.frames_out.is_empty() {
            // Nothing decided after a frame is made durable before the frame is on the bus.
            return None;
        }
        let seg = self.sealed.pop_front()?;
        let id = seg.commit.id;
        if seg.commit.is_empty() {
            // Nothing to make durable: released once the commits before it are.
            match self.awaiting.back_mut() {
                Some((_, after)) => after.extend(seg.after),
                None => self.ready.extend(seg.after),
            }
            return self.poll_effect();
        }
        self.awaiting.push_back((id, seg.after));
        Some(Effect::Commit(seg.commit))
    }

    /// Mapped and fresh signal counts as of the last refresh.
    pub fn signal_counts(&self) -> SignalCounts {
        self.signals
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (monotonic ms).
    pub fn next_deadline(&self) -> u64 {
        let mut d = self
            .next_feed
            .min(self.next_refresh)
            .min(self.schedule.next_deadline());
        if let Some(t) = self.exec.next_timeout() {
            d = d.min(t);
        }
        if let Some(t) = self.forged.next_deadline() {
            d = d.min(t);
        }
        if !self.held.is_empty() {
            d = d.min(self.warmup_until);
        }
        d
    }

    fn fail_closed(&mut self, why: FailClosed) {
        self.stopped = true;
        self.building = Segment::default();
        self.sealed.clear();
        self.awaiting.clear();
        self.ready.clear();
        self.held.clear();
        self.frame_commands.clear();
        self.ready.push_back(Effect::FailClosed(why));
    }

    fn answer_refusal(
        &mut self,
        id: CommandId,
        refusal: Refusal,
        retry_after: Option<RetryAfter>,
        now: u64,
    ) {
        if !self.answered.first(id, now) {
            tracing::debug!(
                command = %hex::encode(id.0),
                "refusal of this command id already answered within the window"
            );
            return;
        }
        // A re-delivered command (QoS 1 duplicate) is a replay of a known id: answer with its
        // real result instead of contradicting it.
        let prior = (refusal == Refusal::Fault(Fault::Replay))
            .then(|| self.exec.result_of(&id).cloned())
            .flatten();
        let mut res = match prior {
            Some(rec) => rec,
            None => CommandResult {
                command_id: id.0,
                state: ResultState::Rejected,
                reason_code: None,
                // A wait in seconds is a number; a lock until recovery says so in `detail`.
                detail: matches!(retry_after, Some(RetryAfter::UntilRecovery))
                    .then(|| "until_recovery".to_string()),
                at: now,
                retry_after_s: match retry_after {
                    Some(RetryAfter::Seconds(s)) => Some(s),
                    _ => None,
                },
            },
        };
        if res.reason_code.is_none() && res.state == ResultState::Rejected {
            res.reason_code = Some(refusal.code().to_string());
        }
        self.encode_result(&res);
    }

    fn feed_exec(&mut self, now: u64) {
        let fresh = self.model.exec_signals(now);
        self.exec.on_vehicle_state(&fresh, now);
    }

    fn submit(&mut self, cmd: VerifiedCommand, now: u64) {
        // Feed the freshest state before the preconditions are checked.
        self.feed_exec(now);
        self.exec.submit(cmd, now);
        self.drain_exec();
    }

    /// Every bound signal (brake excepted: optional) has been heard and is fresh.
    fn state_complete(&self, now: u64) -> bool {
        self.model
            .exec_signals(now)
            .iter()
            .filter(|s| s.kind() != telematics_exec::SignalKind::BrakePressed)
            .count()
            >= self.model.required_signals()
    }

    fn drain_exec(&mut self) {
        while let Some(out) = self.exec.poll_output() {
            match out {
                Output::JournalCommand(rec) => self.journal(rec),
                Output::Publish(rec) => {
                    tracing::info!(
                        command = %hex::encode(rec.command_id),
                        state = rec.state.as_str(),
                        reason = rec.reason_code.as_deref().unwrap_or(""),
                        "command result"
                    );
                    self.building.after.push(Effect::Audit {
                        kind: format!("command.{}", rec.state.as_str()),
                        detail: format!(
                            "command={} {}",
                            hex::encode(rec.command_id),
                            rec.reason_code.as_deref().unwrap_or("")
                        ),
                    });
                    self.encode_result(&rec);
                }
                Output::SendFrames(req) => self.actuate(req),
                Output::RunTimerEnded { command_id, reason } => {
                    tracing::info!(command = %hex::encode(command_id.0), ?reason, "remote-start run ended");
                }
            }
        }
    }

    fn journal(&mut self, rec: CommandResult) {
        let id = CommandId(rec.command_id);
        if !self.journaled.contains(&id) {
            self.journaled.push_back(id);
        }
        while self.journaled.len() > JOURNAL_CAPACITY {
            if let Some(old) = self.journaled.pop_front() {
                self.building.commit.forget.push(old);
            }
        }
        self.building
            .commit
            .journal
            .retain(|r| r.command_id != rec.command_id);
        self.building.commit.journal.push(rec);
    }

    fn actuate(&mut self, req: ActuationRequest) {
        let Some(action) = self.model.profile().action(req.actuate) else {
            // The executor refuses `not_supported` before; only an automatic stop of a car
            // without an engine_stop action gets here.
            tracing::error!(actuate = ?req.actuate, "the vehicle profile has no frame for this action");
            return;
        };
        let (bus, repeat, spec) = (action.bus.clone(), action.repeat, action.frame.clone());
        let dbc = self.model.dbc_for(&bus);
        let modulus = spec.counter_modulus(dbc);
        let counter = self.counters.entry(spec.message.clone()).or_insert(0);
        *counter = u8::try_from((u16::from(*counter) + 1) % modulus).unwrap_or(0);
        let counter = *counter;
        let secured = spec.encode(dbc, counter).and_then(|mut frame| {
            let Some(sec) = &spec.secoc else {
                return Ok((frame, None));
            };
            let key = self.secoc_key.as_deref().ok_or_else(|| {
                telematics_can::CanError::DbcInvalid("no SecOC key (can.secoc_key)".into())
            })?;
            let last = self.secoc_freshness.get(&spec.message).copied();
            let fv =
                telematics_can::protection::FreshnessCounter::resume(sec.freshness_bits, last)?
                    .take()?;
            spec.secure(&mut frame, key, fv)?;
            Ok((frame, Some(fv)))
        });
        match secured {
            Ok((frame, freshness)) => {
                if let Some(fv) = freshness {
                    // Durable with this segment's commit, before the frame is released.
                    self.secoc_freshness.insert(spec.message.clone(), fv);
                    self.building
                        .commit
                        .secoc_freshness
                        .push((spec.message.clone(), fv));
                }
                // The run timer covering a start is durable before the frame goes out. A timer
                // that ended (auto-stop, stop command) is cleared only in a later segment,
                // after the stop frame: a crash in between restores the timer and stops the
                // engine again, never leaves it running with no timer.
                self.seal_run_timer_set();
                let id = FrameId(self.next_frame);
                self.next_frame += 1;
                if let Some(c) = req.command_id {
                    self.awaiting_ack = Some((c, counter, self.last_now));
                }
                self.frame_commands.insert(id, req.command_id);
                self.building.after.push(Effect::SendFrame {
                    id,
                    bus,
                    frame,
                    actuate: req.actuate,
                    counter,
                    count: repeat.count,
                    interval_ms: repeat.interval_ms,
                });
                self.seal_segment();
            }
            Err(e) => {
                // Validated with the profile at start-up: not expected. The command times out.
                tracing::error!(error = %e, actuate = ?req.actuate, "cannot encode the actuation frame");
            }
        }
    }

    /// [`seal_run_timer`](Self::seal_run_timer) for a new or moved timer only (before a
    /// frame); a cleared timer stays durable until the next seal.
    fn seal_run_timer_set(&mut self) {
        if self.exec.durable_run_timer().is_some() {
            self.seal_run_timer();
        }
    }

    fn seal_run_timer(&mut self) {
        let cur = self.exec.durable_run_timer();
        if cur != self.durable_run {
            self.building.commit.run_timer = Some(match cur {
                Some((id, deadline)) => RunTimerChange::Set(id, deadline),
                None => RunTimerChange::Clear,
            });
            self.durable_run = cur;
        }
    }

    /// Ends the current segment (after an actuation, and at the end of every input).
    fn seal_segment(&mut self) {
        let mut seg = std::mem::take(&mut self.building);
        if seg.commit.is_empty() && seg.after.is_empty() {
            return;
        }
        seg.commit.id = CommitId(self.next_commit);
        self.next_commit += 1;
        self.sealed.push_back(seg);
    }

    fn seal(&mut self) {
        if self.stopped {
            return;
        }
        self.seal_run_timer();
        self.seal_segment();
    }

    fn push(&mut self, topic: String, payload: Vec<u8>, priority: Priority) {
        self.building
            .commit
            .outbox
            .push(OutboxMessage::new(topic, payload, priority));
    }

    fn encode_result(&mut self, res: &CommandResult) {
        match res.encode() {
            Ok(b) => self.push(topics::results(&self.vin), b, Priority::Result),
            Err(e) => tracing::error!(error = %e, "result encode failed"),
        }
    }

    fn session_message(&mut self, info: Vec<u8>) {
        self.push(topics::session(&self.vin), info, Priority::Result);
    }

    fn alert_message(&mut self, a: &telematics_telemetry::Alert) {
        match a.encode() {
            Ok(b) => self.push(topics::alerts(&self.vin), b, Priority::Alert),
            Err(e) => tracing::error!(error = %e, "alert encode failed"),
        }
    }

    fn telemetry_messages(&mut self, messages: Vec<telematics_telemetry::Telemetry>) {
        for t in messages {
            match t.encode() {
                Ok(b) => self.push(topics::telemetry(&self.vin), b, Priority::Telemetry),
                Err(e) => tracing::error!(error = %e, "telemetry encode failed"),
            }
        }
    }
}
