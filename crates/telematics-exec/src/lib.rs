//! Sans-IO command execution: preconditions, actuation state machine, run timer, idempotency and
//! result lifecycle.
//!
//! The daemon feeds events ([`Executor::submit`], [`Executor::on_vehicle_update`],
//! [`Executor::handle_timeout`]) and drains [`Executor::poll_output`]; it arms one timer at
//! [`Executor::next_timeout`]. No I/O, no clock: every call takes `now` in unix milliseconds.
//! Policy: one command actuates at a time; a second one while busy is rejected `busy`.

mod confirm;
mod error;
pub mod paths;
mod precondition;
mod state;

pub use confirm::{Confirm, Confirmation, DEFAULT_CONFIRMATIONS};
pub use error::ExecError;
pub use precondition::{Check, RULES, Reject, check};
pub use state::{SignalKind, VehicleSignal, VehicleState};

use std::collections::{HashMap, VecDeque};
use telematics_security::{Action, CommandId, VerifiedCommand};
/// The result record and its lifecycle state: one type across the workspace, defined next to
/// its published encoding (see ARCHITECTURE.md, decisions).
pub use telematics_telemetry::{CommandResult, ResultState};

/// Executor configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecConfig {
    /// Speed (km/h) at or below which the vehicle counts as stationary.
    pub stationary_max_kmh: f64,
    /// Lock refuses `door_open` when a door is open.
    pub lock_requires_doors_closed: bool,
    /// Time (ms) to wait for the confirming bus state after actuation.
    pub confirm_timeout_ms: u64,
    /// Maximum remote-start run time (s); a command's `max_run_secs` is capped by it.
    pub max_run_secs: u32,
    /// How many recent command ids are remembered for idempotency.
    pub idempotency_capacity: usize,
    /// The precondition table, `(action, check)` in order (the vehicle profile's; default
    /// [`RULES`]).
    pub rules: Vec<(Actuate, Check)>,
    /// What confirms each action the vehicle supports, with its timeout (the vehicle
    /// profile's; default [`DEFAULT_CONFIRMATIONS`]). An action without one is refused
    /// `not_supported`.
    pub confirmations: Vec<Confirmation>,
    /// The VSS paths each signal is read from (named in `stale_state` details); a kind not
    /// listed names [`SignalKind::vss_paths`].
    pub signal_paths: Vec<(SignalKind, Vec<String>)>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            stationary_max_kmh: 0.5,
            lock_requires_doors_closed: true,
            confirm_timeout_ms: 10_000,
            max_run_secs: 900,
            idempotency_capacity: 1024,
            rules: RULES.to_vec(),
            confirmations: DEFAULT_CONFIRMATIONS.to_vec(),
            signal_paths: Vec::new(),
        }
    }
}

impl ExecConfig {
    /// Validate the configuration.
    pub fn validate(&self) -> Result<(), ExecError> {
        if self.confirm_timeout_ms == 0 {
            return Err(ExecError::InvalidConfig("confirm_timeout_ms must be > 0"));
        }
        if self.max_run_secs == 0 {
            return Err(ExecError::InvalidConfig("max_run_secs must be > 0"));
        }
        if self.idempotency_capacity == 0 {
            return Err(ExecError::InvalidConfig("idempotency_capacity must be > 0"));
        }
        if !self.stationary_max_kmh.is_finite() || self.stationary_max_kmh < 0.0 {
            return Err(ExecError::InvalidConfig(
                "stationary_max_kmh must be finite and >= 0",
            ));
        }
        for c in &self.confirmations {
            c.validate()?;
        }
        Ok(())
    }

    /// The `stale_state` detail for `kind`: its VSS paths, comma-separated.
    pub fn stale_detail(&self, kind: SignalKind) -> String {
        match self.signal_paths.iter().find(|(k, _)| *k == kind) {
            Some((_, p)) => p.join(","),
            None => kind.vss_detail(),
        }
    }

    fn confirmation(&self, a: Actuate) -> Option<&Confirmation> {
        self.confirmations.iter().find(|c| c.actuate == a)
    }
}

/// Every reason code the executor can publish: the precondition codes of [`Reject::code`] plus
/// `timeout` (no confirmation on the bus), `interrupted` (daemon restarted mid-command),
/// `refused_by_vehicle` (the body controller refused; `detail` is its reason) and
/// `send_failed` (the frame could not be written to the bus).
pub const REASON_CODES: &[&str] = &[
    "not_stationary",
    "not_in_park",
    "door_open",
    "hood_open",
    "key_in_cabin",
    "engine_running",
    "engine_not_running",
    "stale_state",
    "busy",
    "not_supported",
    "timeout",
    "interrupted",
    "refused_by_vehicle",
    "send_failed",
];

/// Reason code of a command the body controller refused (`detail`: its reason).
pub const REFUSED_BY_VEHICLE: &str = "refused_by_vehicle";
/// Reason code of a command whose frame could not be written to the bus.
pub const SEND_FAILED: &str = "send_failed";

/// Abstract actuation; the daemon encodes it into DBC frames for the body controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actuate {
    /// Lock doors.
    Lock,
    /// Unlock doors.
    Unlock,
    /// Start engine.
    EngineStart,
    /// Stop engine.
    EngineStop,
    /// Flash lights.
    FlashLights,
    /// Horn.
    Horn,
}

impl Actuate {
    /// Every actuation, in a fixed order.
    pub const ALL: [Actuate; 6] = [
        Actuate::Lock,
        Actuate::Unlock,
        Actuate::EngineStart,
        Actuate::EngineStop,
        Actuate::FlashLights,
        Actuate::Horn,
    ];

    /// The name of the action (the command payload's and the vehicle profile's, `engine_start`).
    pub fn name(self) -> &'static str {
        match self {
            Actuate::Lock => "lock",
            Actuate::Unlock => "unlock",
            Actuate::EngineStart => "engine_start",
            Actuate::EngineStop => "engine_stop",
            Actuate::FlashLights => "flash_lights",
            Actuate::Horn => "horn",
        }
    }

    /// The actuation named `name` ([`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Actuate> {
        Actuate::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The actuation a command asks for (parameters such as the run time are read separately);
    /// `None` for an action that is not an actuation (`revoke_device`).
    pub fn of(a: &Action) -> Option<Self> {
        Some(match a {
            Action::Lock => Actuate::Lock,
            Action::Unlock => Actuate::Unlock,
            Action::EngineStart { .. } => Actuate::EngineStart,
            Action::EngineStop => Actuate::EngineStop,
            Action::FlashLights => Actuate::FlashLights,
            Action::Horn => Actuate::Horn,
            Action::RevokeDevice { .. } => return None,
        })
    }
}

/// An actuation to send. `command_id` is `None` for the run timer's automatic stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActuationRequest {
    /// The command that caused it, if any.
    pub command_id: Option<CommandId>,
    /// What to do.
    pub actuate: Actuate,
}

/// Why a remote-start run timer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Timer expired; an automatic EngineStop was sent.
    AutoStop,
    /// A driver took over (key in cabin and brake pressed, out of park or moving).
    DriverTakeover,
    /// An EngineStop command was accepted.
    StopCommand,
    /// The engine reported stopped by itself.
    EngineStopped,
}

/// Outputs drained by the daemon with [`Executor::poll_output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Publish a result.
    Publish(CommandResult),
    /// Send an actuation to the bus.
    SendFrames(ActuationRequest),
    /// Persist the command's latest result (idempotency across restarts, reason code kept).
    JournalCommand(CommandResult),
    /// The remote-start run timer of `command_id` ended.
    RunTimerEnded {
        /// The EngineStart command that started it.
        command_id: CommandId,
        /// Why.
        reason: RunEnd,
    },
}

/// A command request: the executor's internal, testable form of a [`VerifiedCommand`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommandRequest {
    pub(crate) id: CommandId,
    pub(crate) action: Action,
}

#[derive(Debug)]
struct InFlight {
    id: CommandId,
    actuate: Actuate,
    confirm: Confirm,
    deadline: u64,
    run_secs: u32,
    /// Its frame was written to the bus ([`Executor::on_frame_sent`]): only from then on can
    /// a vehicle signal confirm it (the state before the frame says nothing about it).
    sent: bool,
}

#[derive(Debug)]
struct RunTimer {
    id: CommandId,
    deadline: u64,
}

/// The sans-IO command executor.
#[derive(Debug)]
pub struct Executor {
    cfg: ExecConfig,
    state: VehicleState,
    in_flight: Option<InFlight>,
    run: Option<RunTimer>,
    recent: HashMap<CommandId, CommandResult>,
    order: VecDeque<CommandId>,
    out: VecDeque<Output>,
}

impl Executor {
    /// Create an executor; fails on invalid configuration.
    pub fn new(cfg: ExecConfig) -> Result<Self, ExecError> {
        cfg.validate()?;
        Ok(Executor {
            cfg,
            state: VehicleState::default(),
            in_flight: None,
            run: None,
            recent: HashMap::new(),
            order: VecDeque::new(),
            out: VecDeque::new(),
        })
    }

    /// The current vehicle view.
    pub fn vehicle_state(&self) -> &VehicleState {
        &self.state
    }

    /// `true` while a command awaits its confirmation.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// `true` while a remote-start run timer is active.
    pub fn run_timer_active(&self) -> bool {
        self.run.is_some()
    }

    /// Submit a verified command (the public entry point; takes it by value).
    pub fn submit(&mut self, cmd: VerifiedCommand, now: u64) {
        let req = CommandRequest {
            id: cmd.command_id(),
            action: cmd.action().clone(),
        };
        self.submit_request(req, now);
    }

    pub(crate) fn submit_request(&mut self, req: CommandRequest, now: u64) {
        if let Some(prior) = self.recent.get(&req.id) {
            // Idempotent: repeat the latest known result, never re-actuate.
            self.out.push_back(Output::Publish(prior.clone()));
            return;
        }
        let actuate = Actuate::of(&req.action);
        let verdict = match actuate.map(|a| (a, self.cfg.confirmation(a).cloned())) {
            None => Err(Reject::NotActuation),
            Some((_, None)) => Err(Reject::NotSupported),
            Some(_) if self.in_flight.is_some() => Err(Reject::Busy),
            Some((a, Some(c))) => check(a, &self.state, &self.cfg).map(|()| (a, c)),
        };
        let (actuate, confirmation) = match verdict {
            Ok(a) => a,
            Err(reject) => {
                let detail = match &reject {
                    Reject::StaleState(k) => Some(self.cfg.stale_detail(*k)),
                    r => r.detail(),
                };
                let rec = CommandResult {
                    command_id: req.id.0,
                    state: ResultState::Rejected,
                    reason_code: Some(reject.code().to_string()),
                    detail,
                    at: now,
                    retry_after_s: None,
                };
                self.record(rec);
                return;
            }
        };
        let run_secs = match &req.action {
            Action::EngineStart { max_run_secs } => max_run_secs
                .unwrap_or(self.cfg.max_run_secs)
                .clamp(1, self.cfg.max_run_secs),
            _ => 0,
        };
        self.record(CommandResult {
            command_id: req.id.0,
            state: ResultState::Accepted,
            reason_code: None,
            detail: None,
            at: now,
            retry_after_s: None,
        });
        if actuate == Actuate::EngineStop
            && let Some(run) = self.run.take()
        {
            self.out.push_back(Output::RunTimerEnded {
                command_id: run.id,
                reason: RunEnd::StopCommand,
            });
        }
        self.out.push_back(Output::SendFrames(ActuationRequest {
            command_id: Some(req.id),
            actuate,
        }));
        self.in_flight = Some(InFlight {
            id: req.id,
            actuate,
            confirm: confirmation.confirm,
            deadline: now.saturating_add(
                confirmation
                    .timeout_ms
                    .unwrap_or(self.cfg.confirm_timeout_ms),
            ),
            run_secs,
            sent: false,
        });
        // Even if the vehicle already shows the target state (lock while locked), confirmation
        // waits for a report received after the actuation.
    }

    /// The daemon's current view of the vehicle: every signal that is fresh now. A kind absent
    /// from `fresh` is stale or was never heard, and preconditions reading it refuse
    /// `stale_state`. The executor keeps no age rule of its own: freshness is decided once, by
    /// the daemon's signal store (each signal's own maximum age against its frame's timestamp).
    pub fn on_vehicle_state(&mut self, fresh: &[VehicleSignal], now: u64) {
        for kind in SignalKind::ALL {
            if !fresh.iter().any(|s| s.kind() == kind) {
                self.state.mark_stale(kind);
            }
        }
        for s in fresh {
            self.on_vehicle_update(*s, now);
        }
    }

    /// The frame of command `id` was written to the bus (`Ok`) or could not be (`Err`, the
    /// reason as text): a command confirmed by [`Confirm::Sent`] is executed, a failed write
    /// fails the command `send_failed`.
    pub fn on_frame_sent(&mut self, id: CommandId, result: Result<(), String>, now: u64) {
        let Some(f) = self.in_flight.as_mut().filter(|f| f.id == id) else {
            return;
        };
        match result {
            Ok(()) if f.confirm == Confirm::Sent => self.confirmed(now),
            Ok(()) => f.sent = true,
            Err(e) => {
                self.in_flight = None;
                self.finish_with(id, ResultState::Failed, Some(SEND_FAILED), Some(e), now);
            }
        }
    }

    /// The body controller's acknowledgement of the command in flight (the daemon matched it
    /// by its alive counter): `Ok` confirms a [`Confirm::Ack`] action, `Err(reason)` ends the
    /// command `failed(refused_by_vehicle)` with the body controller's reason as `detail`.
    pub fn on_ack(&mut self, result: Result<(), String>, now: u64) {
        let Some(f) = &self.in_flight else {
            return;
        };
        match result {
            Ok(()) if f.confirm == Confirm::Ack => self.confirmed(now),
            Ok(()) => {}
            Err(reason) => {
                let id = f.id;
                self.in_flight = None;
                self.finish_with(
                    id,
                    ResultState::Failed,
                    Some(REFUSED_BY_VEHICLE),
                    Some(reason),
                    now,
                );
            }
        }
    }

    /// The command in flight is confirmed: executed, and a start arms its run timer.
    fn confirmed(&mut self, now: u64) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        self.finish(f.id, ResultState::Executed, None, now);
        if f.actuate == Actuate::EngineStart {
            self.run = Some(RunTimer {
                id: f.id,
                deadline: now.saturating_add(u64::from(f.run_secs) * 1000),
            });
        }
    }

    /// Feed one decoded, fresh vehicle signal update (it stays fresh until
    /// [`on_vehicle_state`](Self::on_vehicle_state) leaves it out).
    pub fn on_vehicle_update(&mut self, signal: VehicleSignal, now: u64) {
        self.state.update(signal);
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.sent && f.confirm.confirmed_by(&signal))
        {
            self.confirmed(now);
        }
        if let Some(run) = &self.run {
            let id = run.id;
            if self.state.last_bool(SignalKind::EngineRunning) == Some(false) {
                self.run = None;
                self.out.push_back(Output::RunTimerEnded {
                    command_id: id,
                    reason: RunEnd::EngineStopped,
                });
            } else if self.driver_took_over() {
                self.run = None;
                self.out.push_back(Output::RunTimerEnded {
                    command_id: id,
                    reason: RunEnd::DriverTakeover,
                });
            }
        }
    }

    /// Driver takeover: key in cabin AND (brake pressed OR out of park OR speed above the
    /// stationary threshold).
    fn driver_took_over(&self) -> bool {
        let key = self.state.last_bool(SignalKind::KeyInCabin) == Some(true);
        let brake = self.state.last_bool(SignalKind::BrakePressed) == Some(true);
        let out_of_park = self.state.last_bool(SignalKind::InPark) == Some(false);
        let moving = self
            .state
            .last_speed()
            .is_some_and(|v| v > self.cfg.stationary_max_kmh);
        key && (brake || out_of_park || moving)
    }

    /// The next instant (unix ms) at which [`Executor::handle_timeout`] must be called.
    pub fn next_timeout(&self) -> Option<u64> {
        let a = self.in_flight.as_ref().map(|f| f.deadline);
        let b = self.run.as_ref().map(|r| r.deadline);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Process expired timers.
    pub fn handle_timeout(&mut self, now: u64) {
        if let Some(id) = self
            .in_flight
            .as_ref()
            .filter(|f| now >= f.deadline)
            .map(|f| f.id)
        {
            self.in_flight = None;
            self.finish(id, ResultState::Failed, Some("timeout"), now);
        }
        if let Some(id) = self
            .run
            .as_ref()
            .filter(|r| now >= r.deadline)
            .map(|r| r.id)
        {
            self.run = None;
            self.out.push_back(Output::SendFrames(ActuationRequest {
                command_id: None,
                actuate: Actuate::EngineStop,
            }));
            self.out.push_back(Output::RunTimerEnded {
                command_id: id,
                reason: RunEnd::AutoStop,
            });
        }
    }

    /// Next output for the daemon, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Restore journal entries after a restart. Entries in a terminal state are remembered for
    /// idempotency (a repeated command id gets the same result, reason code included); a
    /// command still `Accepted` (in flight when the daemon died) is reported `failed` with
    /// reason `interrupted` and is never re-executed.
    pub fn restore<I>(&mut self, entries: I, now: u64)
    where
        I: IntoIterator<Item = CommandResult>,
    {
        for rec in entries {
            if rec.state.is_terminal() {
                self.remember(rec);
            } else {
                self.finish(
                    CommandId(rec.command_id),
                    ResultState::Failed,
                    Some("interrupted"),
                    now,
                );
            }
        }
    }

    /// The latest result of a remembered command id (idempotency look-up for the daemon, e.g.
    /// when a duplicate delivery of an executed command is refused as a replay).
    pub fn result_of(&self, id: &CommandId) -> Option<&CommandResult> {
        self.recent.get(id)
    }

    /// The active remote-start run timer: the EngineStart command and its deadline (unix ms).
    /// The daemon persists it so a restart cannot leave a remotely started engine running.
    pub fn run_timer(&self) -> Option<(CommandId, u64)> {
        self.run.as_ref().map(|r| (r.id, r.deadline))
    }

    /// The run timer to make durable **before** an actuation is sent: the active run timer,
    /// or, while an EngineStart awaits its confirmation, the latest moment its run could end
    /// (confirmation deadline + run time). Persisting that one before the start frame goes
    /// out means a crash between the frame and the confirmation cannot leave a remotely
    /// started engine running without a timer.
    pub fn durable_run_timer(&self) -> Option<(CommandId, u64)> {
        if let Some(f) = self
            .in_flight
            .as_ref()
            .filter(|f| f.actuate == Actuate::EngineStart)
        {
            return Some((
                f.id,
                f.deadline
                    .saturating_add(u64::from(f.run_secs).saturating_mul(1000)),
            ));
        }
        self.run_timer()
    }

    /// Re-arm a run timer persisted before a restart. If the deadline has already passed the
    /// automatic stop is issued at the next [`Executor::handle_timeout`].
    pub fn restore_run_timer(&mut self, id: CommandId, deadline: u64) {
        if self.run.is_none() {
            self.run = Some(RunTimer { id, deadline });
        }
    }

    fn finish(&mut self, id: CommandId, st: ResultState, reason: Option<&'static str>, now: u64) {
        self.finish_with(id, st, reason, None, now);
    }

    fn finish_with(
        &mut self,
        id: CommandId,
        st: ResultState,
        reason: Option<&'static str>,
        detail: Option<String>,
        now: u64,
    ) {
        self.record(CommandResult {
            command_id: id.0,
            state: st,
            reason_code: reason.map(str::to_string),
            detail,
            at: now,
            retry_after_s: None,
        });
    }

    fn record(&mut self, rec: CommandResult) {
        self.out.push_back(Output::JournalCommand(rec.clone()));
        self.out.push_back(Output::Publish(rec.clone()));
        self.remember(rec);
    }

    fn remember(&mut self, rec: CommandResult) {
        let id = CommandId(rec.command_id);
        if self.recent.insert(id, rec).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.cfg.idempotency_capacity {
            if let Some(old) = self.order.pop_front() {
                // Never forget the command currently in flight.
                if self.in_flight.as_ref().is_some_and(|f| f.id == old) {
                    self.order.push_back(old);
                    break;
                }
                self.recent.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests;
