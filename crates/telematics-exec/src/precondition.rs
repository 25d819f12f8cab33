//! Precondition rules as a readable table: (action, check). Every refusal has a stable code.

use crate::state::{SignalKind, VehicleSignal, VehicleState};
use crate::{Actuate, ExecConfig};

/// One precondition check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Speed ≤ configured stationary threshold.
    Stationary,
    /// Gear in park.
    InPark,
    /// All doors closed.
    DoorsClosed,
    /// Hood closed.
    HoodClosed,
    /// No key in cabin.
    NoKeyInCabin,
    /// Engine not running.
    EngineOff,
    /// Engine running.
    EngineOn,
}

/// The demo car's rule table (the default of [`ExecConfig::rules`]; a vehicle profile brings
/// its own). Lock's `DoorsClosed` rule applies only when
/// [`ExecConfig::lock_requires_doors_closed`] is set.
pub const RULES: &[(Actuate, Check)] = &[
    (Actuate::Unlock, Check::Stationary),
    (Actuate::EngineStart, Check::Stationary),
    (Actuate::EngineStart, Check::InPark),
    (Actuate::EngineStart, Check::DoorsClosed),
    (Actuate::EngineStart, Check::HoodClosed),
    (Actuate::EngineStart, Check::NoKeyInCabin),
    (Actuate::EngineStart, Check::EngineOff),
    (Actuate::Lock, Check::DoorsClosed),
    (Actuate::EngineStop, Check::EngineOn),
];

/// Why a command was rejected. [`Reject::code`] is the stable reason code published in results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Vehicle moving.
    NotStationary,
    /// Gear not in park.
    NotInPark,
    /// A door is open.
    DoorOpen,
    /// Hood open.
    HoodOpen,
    /// A key is in the cabin.
    KeyInCabin,
    /// Engine already running.
    EngineRunning,
    /// Engine not running (engine stop).
    EngineNotRunning,
    /// The named signal is missing or older than the configured max age.
    StaleState(SignalKind),
    /// Another command is actuating.
    Busy,
    /// The vehicle profile defines no actuation for this action (no frame, no confirmation).
    NotSupported,
    /// The action is not a vehicle actuation (`revoke_device`, carried out by the daemon's
    /// security service); it never reaches the executor in the daemon.
    NotActuation,
}

impl Reject {
    /// Stable machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::NotStationary => "not_stationary",
            Reject::NotInPark => "not_in_park",
            Reject::DoorOpen => "door_open",
            Reject::HoodOpen => "hood_open",
            Reject::KeyInCabin => "key_in_cabin",
            Reject::EngineRunning => "engine_running",
            Reject::EngineNotRunning => "engine_not_running",
            Reject::StaleState(_) => "stale_state",
            Reject::Busy => "busy",
            Reject::NotSupported => "not_supported",
            Reject::NotActuation => "not_actuation",
        }
    }

    /// Human-readable detail (names the signal for stale state).
    pub fn detail(&self) -> Option<String> {
        match self {
            Reject::StaleState(k) => Some(k.vss_detail()),
            _ => None,
        }
    }
}

impl Check {
    /// Every check, in a fixed order.
    pub const ALL: [Check; 7] = [
        Check::Stationary,
        Check::InPark,
        Check::DoorsClosed,
        Check::HoodClosed,
        Check::NoKeyInCabin,
        Check::EngineOff,
        Check::EngineOn,
    ];

    /// The name a vehicle profile uses for this check (`no_key_in_cabin`).
    pub fn name(self) -> &'static str {
        match self {
            Check::Stationary => "stationary",
            Check::InPark => "in_park",
            Check::DoorsClosed => "doors_closed",
            Check::HoodClosed => "hood_closed",
            Check::NoKeyInCabin => "no_key_in_cabin",
            Check::EngineOff => "engine_off",
            Check::EngineOn => "engine_on",
        }
    }

    /// The check named `name` ([`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The signal this check reads.
    pub fn signal(self) -> SignalKind {
        match self {
            Check::Stationary => SignalKind::Speed,
            Check::InPark => SignalKind::InPark,
            Check::DoorsClosed => SignalKind::DoorsClosed,
            Check::HoodClosed => SignalKind::HoodClosed,
            Check::NoKeyInCabin => SignalKind::KeyInCabin,
            Check::EngineOff | Check::EngineOn => SignalKind::EngineRunning,
        }
    }

    /// Evaluate against the state; stale or missing state fails closed.
    pub fn eval(self, state: &VehicleState, cfg: &ExecConfig) -> Result<(), Reject> {
        let kind = self.signal();
        let sig = state.fresh(kind).ok_or(Reject::StaleState(kind))?;
        let ok = match (self, sig) {
            // NaN compares false: fail closed.
            (Check::Stationary, VehicleSignal::SpeedKmh(v)) => v.abs() <= cfg.stationary_max_kmh,
            (Check::InPark, VehicleSignal::InPark(b)) => b,
            (Check::DoorsClosed, VehicleSignal::DoorsClosed(b)) => b,
            (Check::HoodClosed, VehicleSignal::HoodClosed(b)) => b,
            (Check::NoKeyInCabin, VehicleSignal::KeyInCabin(b)) => !b,
            (Check::EngineOff, VehicleSignal::EngineRunning(b)) => !b,
            (Check::EngineOn, VehicleSignal::EngineRunning(b)) => b,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(match self {
                Check::Stationary => Reject::NotStationary,
                Check::InPark => Reject::NotInPark,
                Check::DoorsClosed => Reject::DoorOpen,
                Check::HoodClosed => Reject::HoodOpen,
                Check::NoKeyInCabin => Reject::KeyInCabin,
                Check::EngineOff => Reject::EngineRunning,
                Check::EngineOn => Reject::EngineNotRunning,
            })
        }
    }
}

/// Check every rule of `cfg.rules` for `kind` in table order; the first failing rule is the
/// reason.
pub fn check(kind: Actuate, state: &VehicleState, cfg: &ExecConfig) -> Result<(), Reject> {
    for (k, c) in &cfg.rules {
        if *k != kind {
            continue;
        }
        if kind == Actuate::Lock && *c == Check::DoorsClosed && !cfg.lock_requires_doors_closed {
            continue;
        }
        c.eval(state, cfg)?;
    }
    Ok(())
}
