//! A simulated body controller (BCM): executes the body commands of its [`SimProfile`] (the
//! vehicle profile's frames and acknowledgement, so it plays the vehicle the daemon drives),
//! acknowledges them and transmits the periodic status frames of its [`CarState`]. It can be
//! told to refuse a command with a code ([`BodyController::refuse`]).
//!
//! Which vehicle: [`BodyController::demo`] encodes the demo car's status frames in code
//! ([`CarState::status_frames`]); [`BodyController::for_vehicle`] plays any vehicle from its
//! files: per bus a DBC and a VSS mapping ([`SimBus`]), the status frames encoded from the car
//! state at VSS level (speed, doors, locks, engine, gear) through each bus's mapping run
//! backwards ([`crate::vss_encode`]). [`BodyController::bus_of`] names the bus a frame it sends
//! belongs on (the ack on the profile's ack bus, status frames on the bus whose mapping reads
//! them).
//!
//! Sans-IO: frames and the current time (`now_ms`, any monotonic millisecond origin) are passed
//! in, frames to transmit are returned. The I/O loop lives in `telematics-canio`
//! (`telematics_canio::sim::run_body_controller`).
//!
//! Behaviour (the demo DBC defines no more than this):
//! - A frame is a command only if it matches one of the profile's frames, protection included
//!   ([`FrameSpec::matches`]); anything else on a command message's id is counted in
//!   [`BodyController::invalid_commands`] and otherwise ignored, other ids are ignored.
//! - The ack echoes the command's alive counter; it refuses engine start outside park, with
//!   the engine already running or with the hood open, with the profile's code for that
//!   reason, and any command told to [`refuse`](BodyController::refuse).
//! - Repeated command counters are **not** rejected: the DBC only calls the counter "rolling"
//!   and defines no freshness rule, so a repeated counter is executed like any other command.
//! - The command response (ack plus one set of fast status frames with the new state) is sent
//!   immediately, so a receiver sees the confirmation within one round trip.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::actuation::{AckSpec, FrameSpec};
use crate::dbc::Dbc;
use crate::demo::{BodyCommand, CarState, DEMO_DBC, Gear, Ignition, LockState};
use crate::error::CanError;
use crate::frame::{CanFrame, CanId};
use crate::protection::SecOcKey;
use crate::vss::{BoundMapping, VssEntry, VssType};
use crate::{SignalValue, vss_encode};

/// Default period of the fast status frames (10 Hz).
pub const DEFAULT_PERIOD_MS: u64 = 100;
/// Period of the slow status frames (service, position).
pub const SLOW_PERIOD_MS: u64 = 1_000;
/// Engine speed right after a remote start.
pub const IDLE_RPM: f64 = 750.0;
/// Events kept for [`BodyController::take_events`]; older ones are discarded.
pub const MAX_EVENTS: usize = 1_024;

/// The vehicle the simulator plays: each action's frame (by the profile's action name,
/// `lock`) and the acknowledgement. Built from a vehicle profile (`telematics-profile`
/// `VehicleProfile::sim_profile`); [`SimProfile::demo`] is the demo car's.
#[derive(Debug, Clone, PartialEq)]
pub struct SimProfile {
    /// Action name → its frame.
    pub commands: Vec<(String, FrameSpec)>,
    /// The acknowledgement.
    pub ack: AckSpec,
    /// The bus the acknowledgement is sent on.
    pub ack_bus: String,
}

/// One bus of a vehicle played from its files ([`BodyController::for_vehicle`]).
#[derive(Debug, Clone)]
pub struct SimBus {
    /// Bus name (as in the profile and the daemon's `[[can.bus]]`).
    pub name: String,
    /// The bus's DBC.
    pub dbc: Dbc,
    /// The bus's VSS mapping: the status frames sent on this bus are the messages it reads.
    pub mapping: BoundMapping,
}

/// Why the body controller refused a command (sent with its profile's refusal code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Engine start requested outside park.
    NotInPark,
    /// Engine start requested while the engine runs.
    EngineRunning,
    /// Engine start requested with the hood open.
    HoodOpen,
    /// Told to refuse ([`BodyController::refuse`]) with this raw code.
    Told(i64),
}

impl Refusal {
    /// Stable machine-readable code (the result reason of the demo profile).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotInPark => "not_in_park",
            Refusal::EngineRunning => "engine_running",
            Refusal::HoodOpen => "hood_open",
            Refusal::Told(_) => "told",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Told(c) => write!(f, "told to refuse, code {c}"),
            r => f.write_str(r.code()),
        }
    }
}

/// What happened to a received command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Executed now (acknowledged `OK`).
    Executed,
    /// Acknowledged `OK`; the state changes at `due_ms` (see `actuation_delay_ms`).
    Scheduled {
        /// When the actuation happens.
        due_ms: u64,
    },
    /// Refused (acknowledged `REJECTED`).
    Refused(Refusal),
    /// Received but ignored (`ignore_commands`): no ack, no actuation.
    Ignored,
}

/// Something the body controller did, for logs and the `telematicsctl sim` console.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    /// A valid command frame was received.
    Command {
        /// The command.
        command: BodyCommand,
        /// Its rolling counter.
        counter: u8,
        /// What was done with it.
        outcome: Outcome,
    },
    /// A scheduled (delayed) actuation became due.
    Actuated {
        /// The command.
        command: BodyCommand,
        /// Its rolling counter.
        counter: u8,
        /// `None` if executed, else why it was refused at execution time (state changed
        /// during the delay).
        refused: Option<Refusal>,
    },
    /// A frame on a command id that is not a valid command (bad checksum, unknown request).
    InvalidCommand,
    /// A frame could not be encoded from the current car state (e.g. a value set through
    /// [`BodyController::car_mut`] outside its DBC range); nothing was sent for it.
    EncodeError(String),
}

fn command_name(c: BodyCommand) -> String {
    match c {
        BodyCommand::Lock => "LOCK".into(),
        BodyCommand::Unlock => "UNLOCK".into(),
        BodyCommand::EngineStart => "ENGINE_START".into(),
        BodyCommand::EngineStop => "ENGINE_STOP".into(),
        BodyCommand::FlashLights(n) => format!("FLASH_LIGHTS x{n}"),
        BodyCommand::Horn => "HORN".into(),
    }
}

fn effect(c: BodyCommand) -> &'static str {
    match c {
        BodyCommand::Lock => "doors locked",
        BodyCommand::Unlock => "doors unlocked",
        BodyCommand::EngineStart => "engine running",
        BodyCommand::EngineStop => "engine off",
        BodyCommand::FlashLights(_) => "lights flashed",
        BodyCommand::Horn => "horn sounded",
    }
}

impl fmt::Display for SimEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimEvent::Command {
                command,
                counter,
                outcome,
            } => {
                write!(f, "{} (ctr {counter}) -> ", command_name(*command))?;
                match outcome {
                    Outcome::Executed => f.write_str(effect(*command)),
                    Outcome::Scheduled { due_ms } => {
                        write!(f, "acknowledged, actuating at t={due_ms} ms")
                    }
                    Outcome::Refused(r) => write!(f, "refused ({r})"),
                    Outcome::Ignored => f.write_str("ignored (ignore_commands)"),
                }
            }
            SimEvent::Actuated {
                command,
                counter,
                refused,
            } => match refused {
                None => write!(
                    f,
                    "{} (ctr {counter}) delayed -> {}",
                    command_name(*command),
                    effect(*command)
                ),
                Some(r) => write!(
                    f,
                    "{} (ctr {counter}) delayed -> not actuated ({r})",
                    command_name(*command)
                ),
            },
            SimEvent::InvalidCommand => f.write_str("invalid command frame ignored"),
            SimEvent::EncodeError(e) => write!(f, "cannot encode status: {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    due_ms: u64,
    command: BodyCommand,
    counter: u8,
}

/// A simulated body controller; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct BodyController {
    car: CarState,
    dbc: Dbc,
    /// Empty: the demo car's status frames; else the vehicle's buses (see the module docs).
    buses: Vec<SimBus>,
    profile: SimProfile,
    /// Refuse the next commands of this action (profile name, `engine_start`) with this raw
    /// code (set with [`refuse`](Self::refuse); stays until cleared).
    refusing: Option<(String, i64)>,
    /// Receive and count commands but never acknowledge or actuate them (a receiver waiting
    /// for confirmation times out).
    pub ignore_commands: bool,
    /// Send no periodic status frames (receivers see the state go stale). Command responses
    /// are still sent.
    pub silent: bool,
    /// When non-zero, an accepted command is acknowledged at once but the state changes (and
    /// the status frames showing it are sent) only this many milliseconds later, from
    /// [`tick`](Self::tick).
    pub actuation_delay_ms: u64,
    /// Period of the fast status frames in ms (minimum 1).
    pub period_ms: u64,
    status_counter: u8,
    next_fast_ms: u64,
    next_slow_ms: u64,
    pending: VecDeque<Pending>,
    /// The SecOC key of commands with `secoc` (set with [`set_secoc_key`](Self::set_secoc_key);
    /// without it such a command is invalid).
    secoc_key: Option<SecOcKey>,
    /// Last accepted SecOC freshness value per command message (a receiver keeps it, so a
    /// replayed frame is refused).
    secoc_last: HashMap<String, u64>,
    commands_received: u64,
    invalid_commands: u64,
    events: VecDeque<SimEvent>,
}

impl BodyController {
    /// The demo car (embedded DBC and profile, [`CarState::default`]: parked, locked, engine
    /// off).
    pub fn demo() -> BodyController {
        #[allow(clippy::expect_used)] // the embedded DBC is checked by this module's tests
        let dbc = Dbc::parse(DEMO_DBC).expect("embedded demo DBC is valid");
        BodyController::from_parts(dbc, CarState::default(), SimProfile::demo())
    }

    /// A controller for `car` on a DBC that defines the profile's messages and the status
    /// frames of [`CarState::status_frames`].
    pub fn new(dbc: Dbc, car: CarState, profile: SimProfile) -> Result<BodyController, CanError> {
        for (_, spec) in &profile.commands {
            spec.validate(&dbc)?;
        }
        profile.ack.validate(&dbc)?;
        car.status_frames(&dbc, 0, true)?;
        Ok(BodyController::from_parts(dbc, car, profile))
    }

    /// A controller playing the vehicle of `buses` and `profile` ([`CarState::default`]:
    /// parked, locked, engine off). Every action's message and the ack must be in the DBC of
    /// one of the buses.
    pub fn for_vehicle(
        buses: Vec<SimBus>,
        profile: SimProfile,
    ) -> Result<BodyController, CanError> {
        let first = buses
            .first()
            .map(|b| b.dbc.clone())
            .ok_or_else(|| CanError::UnknownMessage(profile.ack.message.clone()))?;
        let mut c = BodyController::from_parts(first, CarState::default(), profile);
        c.buses = buses;
        for (_, spec) in &c.profile.commands {
            spec.validate(c.dbc_for(&spec.message))?;
        }
        c.profile.ack.validate(c.dbc_for(&c.profile.ack.message))?;
        c.status_frames()?;
        Ok(c)
    }

    fn from_parts(dbc: Dbc, car: CarState, profile: SimProfile) -> BodyController {
        BodyController {
            car,
            dbc,
            buses: Vec::new(),
            profile,
            refusing: None,
            ignore_commands: false,
            silent: false,
            actuation_delay_ms: 0,
            period_ms: DEFAULT_PERIOD_MS,
            status_counter: 0,
            next_fast_ms: 0,
            next_slow_ms: 0,
            pending: VecDeque::new(),
            secoc_key: None,
            secoc_last: HashMap::new(),
            commands_received: 0,
            invalid_commands: 0,
            events: VecDeque::new(),
        }
    }

    /// The simulated car.
    pub fn car(&self) -> &CarState {
        &self.car
    }

    /// Mutable access to the car (open a door, change gear, ...); the change is transmitted
    /// with the next periodic status frames.
    pub fn car_mut(&mut self) -> &mut CarState {
        &mut self.car
    }

    /// The DBC frames are encoded with (the first bus's for [`for_vehicle`](Self::for_vehicle)).
    pub fn dbc(&self) -> &Dbc {
        &self.dbc
    }

    /// The DBC that defines `message`: the first bus's that has it, else [`dbc`](Self::dbc).
    fn dbc_for(&self, message: &str) -> &Dbc {
        self.buses
            .iter()
            .map(|b| &b.dbc)
            .find(|d| d.message_by_name(message).is_some())
            .unwrap_or(&self.dbc)
    }

    /// The bus `frame` (one this controller sent) belongs on: the ack's bus for the ack, else
    /// the bus whose mapping reads its id; `None` for the demo car (one bus) or an id no bus
    /// reads.
    pub fn bus_of(&self, frame: &CanFrame) -> Option<&str> {
        if self.buses.is_empty() {
            return None;
        }
        let ack = self
            .dbc_for(&self.profile.ack.message)
            .message_by_name(&self.profile.ack.message)
            .map(|m| m.id);
        if ack == Some(frame.can_id()) {
            return Some(&self.profile.ack_bus);
        }
        self.buses
            .iter()
            .find(|b| b.mapping.is_mapped(frame.can_id()))
            .map(|b| b.name.as_str())
    }

    /// The full set of status frames of the current car state (what the periodic status
    /// sends), e.g. for a test that re-sends them with chosen timestamps.
    pub fn status_frames(&self) -> Result<Vec<CanFrame>, CanError> {
        if self.buses.is_empty() {
            return self.car.status_frames(&self.dbc, self.status_counter, true);
        }
        let skip: Vec<CanId> = self
            .profile
            .commands
            .iter()
            .map(|(_, s)| s.message.as_str())
            .chain(std::iter::once(self.profile.ack.message.as_str()))
            .filter_map(|m| self.dbc_for(m).message_by_name(m).map(|d| d.id))
            .collect();
        let mut out = Vec::new();
        for b in &self.buses {
            out.extend(vss_encode::encode_mapped(
                &b.dbc,
                &b.mapping,
                &|e| vss_value(&self.car, e),
                &skip,
            )?);
        }
        Ok(out)
    }

    /// The AES-128 key that SecOC-protected commands are verified with.
    pub fn set_secoc_key(&mut self, key: SecOcKey) {
        self.secoc_key = Some(key);
    }

    /// The last SecOC freshness value accepted on command message `message`.
    pub fn secoc_freshness(&self, message: &str) -> Option<u64> {
        self.secoc_last.get(message).copied()
    }

    /// Refuse every following command of `action` (the profile's name, `engine_start`) with
    /// raw refusal `code`; `None` stops refusing.
    pub fn refuse(&mut self, refusal: Option<(&str, i64)>) {
        self.refusing = refusal.map(|(a, c)| (a.to_string(), c));
    }

    /// The raw code the profile's acknowledgement uses for result reason `reason`.
    pub fn refusal_code(&self, reason: &str) -> Option<i64> {
        self.profile.ack.code_for(reason)
    }

    /// Valid command frames received so far (including ignored and refused ones).
    pub fn commands_received(&self) -> u64 {
        self.commands_received
    }

    /// Frames on the command id that were not valid commands (bad checksum, short, no request).
    pub fn invalid_commands(&self) -> u64 {
        self.invalid_commands
    }

    /// Delayed actuations not yet executed.
    pub fn pending_actuations(&self) -> usize {
        self.pending.len()
    }

    /// Events since the last call (at most [`MAX_EVENTS`], oldest dropped first).
    pub fn take_events(&mut self) -> Vec<SimEvent> {
        self.events.drain(..).collect()
    }

    fn event(&mut self, e: SimEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Handle a received frame; returns the frames to transmit in response (possibly none).
    pub fn on_frame(&mut self, frame: &CanFrame, now_ms: u64) -> Vec<CanFrame> {
        let on_command_id = self.profile.commands.iter().any(|(_, spec)| {
            self.dbc_for(&spec.message)
                .message_by_name(&spec.message)
                .is_some_and(|m| m.id == frame.can_id())
        });
        if frame.remote || !on_command_id {
            return Vec::new();
        }
        let Some((name, command, counter)) = self.decode_command(frame) else {
            self.invalid_commands += 1;
            self.event(SimEvent::InvalidCommand);
            return Vec::new();
        };
        self.commands_received += 1;
        if self.ignore_commands {
            self.event(SimEvent::Command {
                command,
                counter,
                outcome: Outcome::Ignored,
            });
            return Vec::new();
        }
        let told = self
            .refusing
            .as_ref()
            .filter(|(a, _)| *a == name)
            .map(|(_, c)| Refusal::Told(*c));
        let refusal = told.or_else(|| self.check(command));
        let outcome = match refusal {
            Some(r) => Outcome::Refused(r),
            None if self.actuation_delay_ms > 0 => {
                let due_ms = now_ms.saturating_add(self.actuation_delay_ms);
                self.pending.push_back(Pending {
                    due_ms,
                    command,
                    counter,
                });
                Outcome::Scheduled { due_ms }
            }
            None => {
                self.apply(command);
                Outcome::Executed
            }
        };
        self.event(SimEvent::Command {
            command,
            counter,
            outcome,
        });
        let mut out = Vec::new();
        match self.ack(counter, refusal) {
            Ok(f) => out.push(f),
            Err(e) => self.event(SimEvent::EncodeError(e.to_string())),
        }
        out.extend(self.status(false));
        out
    }

    /// When [`tick`](Self::tick) next has something to do (fast status frames or a delayed
    /// actuation), in the same time base as `now_ms`.
    pub fn next_tick(&self) -> u64 {
        self.pending
            .iter()
            .map(|p| p.due_ms)
            .fold(self.next_fast_ms, u64::min)
    }

    /// Advance to `now_ms`: execute due delayed actuations (sending the new state at once) and
    /// send the periodic status frames when due (every `period_ms`, plus the slow frames once
    /// per second). Missed periods are skipped, not sent in a burst.
    pub fn tick(&mut self, now_ms: u64) -> Vec<CanFrame> {
        let mut out = Vec::new();
        let mut actuated = false;
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending.get(i).copied() {
                Some(p) if p.due_ms <= now_ms => {
                    self.pending.remove(i);
                    let refused = self.check(p.command);
                    if refused.is_none() {
                        self.apply(p.command);
                        actuated = true;
                    }
                    self.event(SimEvent::Actuated {
                        command: p.command,
                        counter: p.counter,
                        refused,
                    });
                }
                Some(_) => i += 1,
                None => break,
            }
        }
        if actuated {
            out.extend(self.status(false));
        }
        if now_ms >= self.next_fast_ms {
            let period = self.period_ms.max(1);
            let slow = now_ms >= self.next_slow_ms;
            if !self.silent {
                out.extend(self.status(slow));
            }
            self.next_fast_ms = next_after(self.next_fast_ms, period, now_ms);
            if slow {
                self.next_slow_ms = next_after(self.next_slow_ms, SLOW_PERIOD_MS, now_ms);
            }
        }
        out
    }

    fn check(&self, command: BodyCommand) -> Option<Refusal> {
        match command {
            BodyCommand::EngineStart if self.car.gear != Gear::P => Some(Refusal::NotInPark),
            BodyCommand::EngineStart if self.car.engine_running => Some(Refusal::EngineRunning),
            BodyCommand::EngineStart if self.car.hood_open => Some(Refusal::HoodOpen),
            _ => None,
        }
    }

    fn apply(&mut self, command: BodyCommand) {
        let car = &mut self.car;
        match command {
            BodyCommand::Lock => car.locks = [LockState::Locked; 4],
            BodyCommand::Unlock => car.locks = [LockState::Unlocked; 4],
            BodyCommand::EngineStart => {
                car.engine_running = true;
                car.ignition = Ignition::On;
                car.rpm = IDLE_RPM;
            }
            BodyCommand::EngineStop => {
                car.engine_running = false;
                car.ignition = Ignition::Off;
                car.rpm = 0.0;
            }
            BodyCommand::FlashLights(_) | BodyCommand::Horn => {}
        }
    }

    /// The action name, the command and its counter, if `frame` is one of the profile's.
    fn decode_command(&mut self, frame: &CanFrame) -> Option<(String, BodyCommand, u8)> {
        let (name, secoc, message, counter) =
            self.profile.commands.iter().find_map(|(name, spec)| {
                let counter = spec.matches(self.dbc_for(&spec.message), frame)?;
                Some((name.clone(), spec.secoc, spec.message.clone(), counter))
            })?;
        if let Some(sec) = secoc {
            // Authentic, and newer than the last accepted value (a replay is refused).
            let last = self.secoc_last.get(&message).copied();
            let fv = sec
                .verify(self.secoc_key.as_ref()?, &frame.data, last)
                .ok()?
                .freshness;
            self.secoc_last.insert(message, fv);
        }
        let command = match name.as_str() {
            "lock" => BodyCommand::Lock,
            "unlock" => BodyCommand::Unlock,
            "engine_start" => BodyCommand::EngineStart,
            "engine_stop" => BodyCommand::EngineStop,
            "flash_lights" => BodyCommand::FlashLights(self.flash_count(frame)),
            "horn" => BodyCommand::Horn,
            _ => return None,
        };
        Some((name, command, counter.unwrap_or(0)))
    }

    /// The demo car's `FlashCount` (1 on a car without it).
    fn flash_count(&self, frame: &CanFrame) -> u8 {
        self.dbc
            .message_by_id(frame.can_id())
            .and_then(|m| m.decode(&frame.data).ok())
            .and_then(|d| d.get("FlashCount")?.raw.as_i64())
            .and_then(|n| u8::try_from(n).ok())
            .unwrap_or(1)
    }

    fn ack(&self, counter: u8, refusal: Option<Refusal>) -> Result<CanFrame, CanError> {
        let code = match refusal {
            None => None,
            Some(Refusal::Told(c)) => Some(c),
            // A reason the profile has no code for is sent as the first code of its table.
            Some(r) => Some(
                self.profile
                    .ack
                    .code_for(r.code())
                    .or_else(|| self.profile.ack.refusals.first().map(|(c, _)| *c))
                    .unwrap_or(1),
            ),
        };
        self.profile
            .ack
            .encode(self.dbc_for(&self.profile.ack.message), counter, code)
    }

    fn status(&mut self, slow: bool) -> Vec<CanFrame> {
        let r = if self.buses.is_empty() {
            self.car.status_frames(&self.dbc, self.status_counter, slow)
        } else {
            self.status_frames()
        };
        self.status_counter = self.status_counter.wrapping_add(1);
        match r {
            Ok(f) => f,
            Err(e) => {
                self.event(SimEvent::EncodeError(e.to_string()));
                Vec::new()
            }
        }
    }
}

/// The value of `entry`'s VSS path in `car`, in the entry's datatype where VSS leaves a choice
/// (the selected gear: an int in VSS, 126 park, 127 drive; a text `PARK`/`DRIVE` in a mapping
/// that says `string`); `None` for a path the simulated car does not have.
fn vss_value(car: &CarState, entry: &VssEntry) -> Option<SignalValue> {
    const DOORS: [&str; 4] = [
        "Row1.DriverSide",
        "Row1.PassengerSide",
        "Row2.DriverSide",
        "Row2.PassengerSide",
    ];
    let path = entry.path.as_str();
    if let Some(door) = path.strip_prefix("Vehicle.Cabin.Door.") {
        let i = DOORS.iter().position(|d| door.starts_with(d))?;
        return match door.rsplit('.').next()? {
            "IsOpen" => car.doors_open.get(i).copied().map(SignalValue::Bool),
            "IsLocked" => car
                .locks
                .get(i)
                .map(|l| SignalValue::Bool(*l == LockState::Locked)),
            _ => None,
        };
    }
    Some(match path {
        "Vehicle.Speed" => SignalValue::Float(car.speed_kmh),
        "Vehicle.Body.Hood.IsOpen" => SignalValue::Bool(car.hood_open),
        "Vehicle.Body.Trunk.Rear.IsOpen" => SignalValue::Bool(car.trunk_open),
        "Vehicle.Cabin.IsKeyPresent" => SignalValue::Bool(car.key_in_cabin),
        "Vehicle.Powertrain.CombustionEngine.IsRunning" => SignalValue::Bool(car.engine_running),
        #[allow(clippy::cast_possible_truncation)] // rpm is a small whole number
        "Vehicle.Powertrain.CombustionEngine.Speed" => SignalValue::Int(car.rpm.round() as i64),
        "Vehicle.Powertrain.CombustionEngine.ECT" => SignalValue::Int(car.coolant_c),
        "Vehicle.Powertrain.Transmission.SelectedGear" => match (entry.datatype, car.gear) {
            (VssType::Text, g) => SignalValue::Text(
                match g {
                    Gear::P => "PARK",
                    Gear::R => "REVERSE",
                    Gear::N => "NEUTRAL",
                    Gear::D => "DRIVE",
                }
                .into(),
            ),
            (_, g) => SignalValue::Int(match g {
                Gear::P => 126,
                Gear::R => -1,
                Gear::N => 0,
                Gear::D => 127,
            }),
        },
        _ => return None,
    })
}

/// The first `prev + k * period` (k >= 1) strictly after `now`.
fn next_after(prev: u64, period: u64, now: u64) -> u64 {
    let next = prev.saturating_add(period);
    if next > now {
        return next;
    }
    let behind = now - next;
    next.saturating_add((behind / period + 1).saturating_mul(period))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignalValue;
    use crate::dbc::DecodeOutcome;
    use crate::demo::{COMMAND_ACK, DEMO_VSS_TOML, encode_body_command};
    use crate::state::{Timestamp, VehicleState};
    use crate::vss::{BoundMapping, VssMapping};

    const LOCKED_FL: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked";
    const LOCKED_RR: &str = "Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked";
    const RUNNING: &str = "Vehicle.Powertrain.CombustionEngine.IsRunning";
    const RPM: &str = "Vehicle.Powertrain.CombustionEngine.Speed";
    const IGNITION: &str = "Vehicle.LowVoltageSystemState";

    /// Decodes frames through the demo DBC and VSS mapping, like the daemon does.
    struct Receiver {
        mapping: BoundMapping,
        state: VehicleState,
        acks: Vec<(i64, String)>,
    }

    impl Receiver {
        fn new(dbc: &Dbc) -> Receiver {
            let mapping = VssMapping::from_toml(DEMO_VSS_TOML)
                .expect("mapping")
                .bind(dbc)
                .expect("bind");
            let state = VehicleState::from_mapping(&mapping);
            Receiver {
                mapping,
                state,
                acks: Vec::new(),
            }
        }

        fn feed(&mut self, dbc: &Dbc, frames: &[CanFrame], now_ms: u64) {
            for f in frames {
                match dbc.decode_frame(f).expect("decodes") {
                    DecodeOutcome::Decoded(d) if d.message.name == COMMAND_ACK => {
                        let ctr = d.get("AckCounter").and_then(|s| s.raw.as_i64());
                        let res = d.get("AckResult").and_then(|s| s.label);
                        self.acks
                            .push((ctr.expect("counter"), res.expect("result").to_string()));
                    }
                    DecodeOutcome::Decoded(d) => {
                        self.state.apply(&self.mapping, &d, Timestamp(now_ms));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }

        fn get(&self, path: &str, now_ms: u64) -> Option<SignalValue> {
            self.state.get_fresh(path, Timestamp(now_ms)).cloned()
        }

        fn bool(&self, path: &str, now_ms: u64) -> Option<bool> {
            self.get(path, now_ms).and_then(|v| v.as_bool())
        }
    }

    fn send(bcm: &mut BodyController, cmd: BodyCommand, ctr: u8, now: u64) -> Vec<CanFrame> {
        let f = encode_body_command(bcm.dbc(), cmd, ctr).expect("encode");
        bcm.on_frame(&f, now)
    }

    fn setup() -> (BodyController, Receiver) {
        let mut bcm = BodyController::demo();
        let mut rx = Receiver::new(bcm.dbc());
        let frames = bcm.tick(0);
        rx.feed(bcm.dbc(), &frames, 0);
        (bcm, rx)
    }

    #[test]
    fn demo_new_validates_the_dbc() {
        let dbc = Dbc::parse(DEMO_DBC).expect("dbc");
        assert!(BodyController::new(dbc, CarState::default(), SimProfile::demo()).is_ok());
        let mini = Dbc::parse("VERSION \"\"\n\nBS_:\n\nBU_: A\n\nBO_ 1 X: 8 A\n SG_ S : 0|8@1+ (1,0) [0|255] \"\" A\n")
            .expect("mini dbc");
        assert_eq!(
            BodyController::new(mini, CarState::default(), SimProfile::demo()).err(),
            Some(CanError::UnknownMessage(crate::demo::BODY_COMMAND.into()))
        );
    }

    #[test]
    fn lock_and_unlock_change_the_decoded_state_within_one_response() {
        let (mut bcm, mut rx) = setup();
        assert_eq!(rx.bool(LOCKED_FL, 0), Some(true), "default car is locked");
        let out = send(&mut bcm, BodyCommand::Unlock, 3, 10);
        rx.feed(bcm.dbc(), &out, 10);
        assert_eq!(rx.acks, vec![(3, "OK".to_string())]);
        assert_eq!(rx.bool(LOCKED_FL, 10), Some(false));
        assert_eq!(rx.bool(LOCKED_RR, 10), Some(false));
        assert!(bcm.car().locks.iter().all(|l| *l == LockState::Unlocked));

        let out = send(&mut bcm, BodyCommand::Lock, 4, 20);
        rx.feed(bcm.dbc(), &out, 20);
        assert_eq!(rx.acks.last(), Some(&(4, "OK".to_string())));
        assert_eq!(rx.bool(LOCKED_FL, 20), Some(true));
        assert_eq!(rx.bool(LOCKED_RR, 20), Some(true));
        assert_eq!(bcm.commands_received(), 2);
        let ev = bcm.take_events();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].to_string(), "UNLOCK (ctr 3) -> doors unlocked");
        assert_eq!(ev[1].to_string(), "LOCK (ctr 4) -> doors locked");
    }

    #[test]
    fn engine_start_and_stop() {
        let (mut bcm, mut rx) = setup();
        bcm.car_mut().coolant_c = 42;
        let out = send(&mut bcm, BodyCommand::EngineStart, 9, 5);
        rx.feed(bcm.dbc(), &out, 5);
        assert_eq!(rx.acks, vec![(9, "OK".to_string())]);
        assert_eq!(rx.bool(RUNNING, 5), Some(true));
        assert_eq!(rx.get(RPM, 5), Some(SignalValue::Int(750)));
        assert_eq!(rx.get(IGNITION, 5), Some(SignalValue::Text("ON".into())));
        assert_eq!(bcm.car().coolant_c, 42, "coolant untouched");

        // a second start is refused: the engine already runs
        let out = send(&mut bcm, BodyCommand::EngineStart, 10, 6);
        rx.feed(bcm.dbc(), &out, 6);
        assert_eq!(rx.acks.last(), Some(&(10, "REJECTED".to_string())));

        let out = send(&mut bcm, BodyCommand::EngineStop, 11, 7);
        rx.feed(bcm.dbc(), &out, 7);
        assert_eq!(rx.acks.last(), Some(&(11, "OK".to_string())));
        assert_eq!(rx.bool(RUNNING, 7), Some(false));
        assert_eq!(rx.get(RPM, 7), Some(SignalValue::Int(0)));
        assert_eq!(rx.get(IGNITION, 7), Some(SignalValue::Text("OFF".into())));
    }

    #[test]
    fn engine_start_refused_out_of_park_or_with_hood_open() {
        for (setup_car, why) in [
            (
                (|c: &mut CarState| c.gear = Gear::D) as fn(&mut CarState),
                Refusal::NotInPark,
            ),
            (|c: &mut CarState| c.gear = Gear::R, Refusal::NotInPark),
            (|c: &mut CarState| c.hood_open = true, Refusal::HoodOpen),
        ] {
            let (mut bcm, mut rx) = setup();
            setup_car(bcm.car_mut());
            let out = send(&mut bcm, BodyCommand::EngineStart, 1, 50);
            rx.feed(bcm.dbc(), &out, 50);
            assert_eq!(rx.acks, vec![(1, "REJECTED".to_string())], "{why}");
            assert_eq!(rx.bool(RUNNING, 50), Some(false), "{why}");
            assert!(!bcm.car().engine_running);
            assert_eq!(
                bcm.take_events(),
                vec![SimEvent::Command {
                    command: BodyCommand::EngineStart,
                    counter: 1,
                    outcome: Outcome::Refused(why),
                }]
            );
        }
    }

    #[test]
    fn flash_and_horn_are_acknowledged_without_state_change() {
        let (mut bcm, mut rx) = setup();
        let before = bcm.car().clone();
        let out = send(&mut bcm, BodyCommand::FlashLights(3), 2, 1);
        rx.feed(bcm.dbc(), &out, 1);
        let out = send(&mut bcm, BodyCommand::Horn, 3, 2);
        rx.feed(bcm.dbc(), &out, 2);
        assert_eq!(rx.acks, vec![(2, "OK".to_string()), (3, "OK".to_string())]);
        assert_eq!(bcm.car(), &before);
        assert_eq!(
            bcm.take_events()[0].to_string(),
            "FLASH_LIGHTS x3 (ctr 2) -> lights flashed"
        );
    }

    #[test]
    fn repeated_counter_is_executed_again() {
        let (mut bcm, mut rx) = setup();
        let a = send(&mut bcm, BodyCommand::Unlock, 5, 1);
        let b = send(&mut bcm, BodyCommand::Lock, 5, 2);
        rx.feed(bcm.dbc(), &a, 1);
        rx.feed(bcm.dbc(), &b, 2);
        assert_eq!(rx.acks, vec![(5, "OK".into()), (5, "OK".into())]);
        assert_eq!(rx.bool(LOCKED_FL, 2), Some(true));
    }

    #[test]
    fn ignore_commands_counts_but_never_actuates() {
        let (mut bcm, mut rx) = setup();
        bcm.ignore_commands = true;
        let out = send(&mut bcm, BodyCommand::Unlock, 1, 10);
        assert!(out.is_empty());
        assert_eq!(bcm.commands_received(), 1);
        assert!(bcm.car().locks.iter().all(|l| *l == LockState::Locked));
        let out = bcm.tick(100);
        rx.feed(bcm.dbc(), &out, 100);
        assert_eq!(rx.bool(LOCKED_FL, 100), Some(true));
        assert!(rx.acks.is_empty());
        assert_eq!(
            bcm.take_events()[0].to_string(),
            "UNLOCK (ctr 1) -> ignored (ignore_commands)"
        );
    }

    #[test]
    fn periodic_schedule_fast_and_slow() {
        let mut bcm = BodyController::demo();
        assert_eq!(bcm.next_tick(), 0);
        let first = bcm.tick(0);
        assert_eq!(first.len(), 6, "fast (4) + slow (2) frames");
        assert_eq!(bcm.next_tick(), 100);
        assert!(bcm.tick(99).is_empty(), "not due yet");
        let mut counts = Vec::new();
        let mut t = 100;
        while t < 1_000 {
            counts.push(bcm.tick(t).len());
            assert_eq!(bcm.next_tick(), t + 100);
            t += 100;
        }
        assert!(counts.iter().all(|n| *n == 4), "{counts:?}");
        assert_eq!(bcm.tick(1_000).len(), 6, "slow set once per second");
        // a stall skips missed periods instead of bursting
        assert_eq!(bcm.tick(3_550).len(), 6);
        assert_eq!(bcm.next_tick(), 3_600);
        bcm.period_ms = 50;
        assert_eq!(bcm.tick(3_600).len(), 4);
        assert_eq!(bcm.next_tick(), 3_650);
    }

    #[test]
    fn silent_sends_nothing_periodic_and_the_state_goes_stale() {
        let (mut bcm, mut rx) = setup();
        bcm.silent = true;
        for t in (100..=3_000).step_by(100) {
            let out = bcm.tick(t);
            assert!(out.is_empty(), "t={t}");
        }
        // the schedule still advances, nothing accumulates
        assert_eq!(bcm.next_tick(), 3_100);
        assert_eq!(rx.bool(LOCKED_FL, 3_000), None, "stale after max_age");
        bcm.silent = false;
        let out = bcm.tick(3_100);
        rx.feed(bcm.dbc(), &out, 3_100);
        assert_eq!(rx.bool(LOCKED_FL, 3_100), Some(true));
    }

    #[test]
    fn actuation_delay_acks_now_and_changes_state_later() {
        let (mut bcm, mut rx) = setup();
        bcm.actuation_delay_ms = 300;
        let out = send(&mut bcm, BodyCommand::Unlock, 7, 1_000);
        rx.feed(bcm.dbc(), &out, 1_000);
        assert_eq!(rx.acks, vec![(7, "OK".to_string())]);
        assert_eq!(rx.bool(LOCKED_FL, 1_000), Some(true), "not yet");
        assert_eq!(bcm.pending_actuations(), 1);
        assert_eq!(bcm.next_tick(), 100, "periodic frames are overdue first");
        let out = bcm.tick(1_000);
        rx.feed(bcm.dbc(), &out, 1_000);
        assert_eq!(bcm.next_tick(), 1_100);
        let out = bcm.tick(1_200);
        rx.feed(bcm.dbc(), &out, 1_200);
        assert_eq!(rx.bool(LOCKED_FL, 1_200), Some(true), "still not yet");
        assert_eq!(bcm.next_tick(), 1_300);
        let out = bcm.tick(1_300);
        rx.feed(bcm.dbc(), &out, 1_300);
        assert_eq!(rx.bool(LOCKED_FL, 1_300), Some(false));
        assert_eq!(bcm.pending_actuations(), 0);
        let ev = bcm.take_events();
        assert_eq!(
            ev.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "UNLOCK (ctr 7) -> acknowledged, actuating at t=1300 ms",
                "UNLOCK (ctr 7) delayed -> doors unlocked",
            ]
        );
    }

    #[test]
    fn delayed_start_rechecks_preconditions_when_due() {
        let (mut bcm, _rx) = setup();
        bcm.actuation_delay_ms = 200;
        send(&mut bcm, BodyCommand::EngineStart, 2, 0);
        bcm.car_mut().gear = Gear::D;
        let out = bcm.tick(200);
        assert!(!bcm.car().engine_running);
        assert_eq!(out.len(), 4, "periodic frames only");
        assert_eq!(
            bcm.take_events().last(),
            Some(&SimEvent::Actuated {
                command: BodyCommand::EngineStart,
                counter: 2,
                refused: Some(Refusal::NotInPark),
            })
        );
    }

    #[test]
    fn invalid_and_foreign_frames_are_ignored() {
        let (mut bcm, _rx) = setup();
        let mut f = encode_body_command(bcm.dbc(), BodyCommand::Unlock, 1).expect("encode");
        if let Some(b) = f.data.get_mut(7) {
            *b ^= 0xFF;
        }
        assert!(bcm.on_frame(&f, 1).is_empty(), "bad checksum");
        let short = CanFrame::new(crate::frame::CanId::standard(0x200), &[2, 0, 0]);
        assert!(bcm.on_frame(&short, 2).is_empty(), "short frame");
        // valid checksum but no request at all
        let mut none = CanFrame::new(crate::frame::CanId::standard(0x200), &[0; 8]);
        none.data[7] = crate::demo::command_checksum(&none.data);
        assert!(bcm.on_frame(&none, 3).is_empty(), "no request");
        assert_eq!(bcm.invalid_commands(), 3);
        // same payload on another id, an extended id and an RTR frame are not commands
        let good = encode_body_command(bcm.dbc(), BodyCommand::Unlock, 1).expect("encode");
        let mut other = good.clone();
        other.id = 0x201;
        let mut ext = good.clone();
        ext.extended = true;
        let mut rtr = good.clone();
        rtr.remote = true;
        for f in [other, ext, rtr] {
            assert!(bcm.on_frame(&f, 4).is_empty(), "{f:?}");
        }
        assert_eq!(bcm.invalid_commands(), 3);
        assert_eq!(bcm.commands_received(), 0);
        assert!(bcm.car().locks.iter().all(|l| *l == LockState::Locked));
    }

    #[test]
    fn unencodable_state_is_an_event_not_a_panic() {
        let mut bcm = BodyController::demo();
        bcm.car_mut().speed_kmh = 1e12;
        assert!(bcm.tick(0).is_empty());
        assert!(matches!(
            bcm.take_events().as_slice(),
            [SimEvent::EncodeError(_)]
        ));
    }

    #[test]
    fn told_to_refuse_sends_the_code_and_does_not_actuate() {
        let (mut bcm, mut rx) = setup();
        let code = bcm.refusal_code("low_battery").expect("demo code");
        bcm.refuse(Some(("unlock", code)));
        let out = send(&mut bcm, BodyCommand::Unlock, 4, 10);
        rx.feed(bcm.dbc(), &out, 10);
        assert_eq!(rx.acks, vec![(4, "REJECTED".to_string())]);
        assert_eq!(rx.bool(LOCKED_FL, 10), Some(true), "still locked");
        let ack = out
            .iter()
            .find_map(|f| SimProfile::demo().ack.decode(bcm.dbc(), f))
            .expect("ack");
        assert_eq!(
            ack.outcome,
            crate::actuation::AckOutcome::Refused {
                code,
                reason: Some("low_battery".into())
            }
        );
        // Other actions are not refused; clearing stops refusing.
        let out = send(&mut bcm, BodyCommand::Lock, 5, 20);
        rx.feed(bcm.dbc(), &out, 20);
        bcm.refuse(None);
        let out = send(&mut bcm, BodyCommand::Unlock, 6, 30);
        rx.feed(bcm.dbc(), &out, 30);
        assert_eq!(rx.acks[1..], [(5, "OK".to_string()), (6, "OK".to_string())]);
        assert_eq!(rx.bool(LOCKED_FL, 30), Some(false));
    }

    /// The demo car played from its files (DBC + mapping, no hand-written frames) shows the
    /// same VSS values as the hand-written demo frames for every path the simulated car has,
    /// parked and locked or driving with the engine on.
    #[test]
    fn the_demo_car_from_its_files_reads_as_the_hand_written_frames() {
        let dbc = Dbc::parse(DEMO_DBC).expect("dbc");
        let mapping = VssMapping::from_toml(DEMO_VSS_TOML)
            .expect("mapping")
            .bind(&dbc)
            .expect("bind");
        let bus = SimBus {
            name: "body".into(),
            dbc: dbc.clone(),
            mapping: mapping.clone(),
        };
        let mut files = BodyController::for_vehicle(vec![bus], SimProfile::demo()).expect("sim");
        let mut code = BodyController::demo();
        let read = |frames: Vec<CanFrame>| {
            let mut rx = Receiver::new(&dbc);
            rx.feed(&dbc, &frames, 0);
            rx
        };
        for drive in [false, true] {
            for c in [&mut files, &mut code] {
                let car = c.car_mut();
                if drive {
                    car.gear = Gear::D;
                    car.speed_kmh = 42.5;
                    car.engine_running = true;
                    car.rpm = IDLE_RPM;
                    car.locks[1] = LockState::Unlocked;
                    car.doors_open[2] = true;
                    car.key_in_cabin = true;
                }
            }
            let (a, b) = (
                read(files.status_frames().expect("mapped")),
                read(code.status_frames().expect("demo")),
            );
            let mut compared = 0;
            for e in mapping.entries() {
                if vss_value(files.car(), e).is_none() {
                    continue;
                }
                assert_eq!(
                    a.get(&e.path, 0),
                    b.get(&e.path, 0),
                    "{} drive={drive}",
                    e.path
                );
                assert!(a.get(&e.path, 0).is_some(), "{}", e.path);
                compared += 1;
            }
            assert!(compared >= 15, "{compared} paths compared");
            let mapped = files.status_frames().expect("mapped");
            assert_eq!(
                mapped.len(),
                2,
                "door and powertrain status; no value-less frames"
            );
            assert!(mapped.iter().all(|f| files.bus_of(f) == Some("body")));
        }
        assert_eq!(code.bus_of(&code.status_frames().expect("demo")[0]), None);
    }

    #[test]
    fn next_after_skips_missed_periods() {
        assert_eq!(next_after(0, 100, 0), 100);
        assert_eq!(next_after(0, 100, 99), 100);
        assert_eq!(next_after(0, 100, 100), 200);
        assert_eq!(next_after(0, 100, 350), 400);
        assert_eq!(next_after(u64::MAX - 1, 100, u64::MAX), u64::MAX);
    }
}
