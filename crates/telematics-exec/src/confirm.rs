//! What confirms an actuation: a vehicle signal reaching a value, the body controller's
//! acknowledgement, or the frame being written to the bus; per action, with its timeout.

use crate::state::{SignalKind, VehicleSignal};
use crate::{Actuate, ExecError};

/// What ends an actuated command `executed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// A report of `kind` with value `equals` received after the actuation.
    Signal {
        /// The (boolean) signal.
        kind: SignalKind,
        /// The value that confirms.
        equals: bool,
    },
    /// The body controller's acknowledgement `ok` (no bus state shows the action).
    Ack,
    /// The frame written to the bus (a vehicle that neither shows nor acknowledges it).
    Sent,
}

impl Confirm {
    /// `true` when `signal` confirms.
    pub fn confirmed_by(&self, signal: &VehicleSignal) -> bool {
        match self {
            Confirm::Signal { kind, equals } => {
                signal.kind() == *kind && signal.as_bool() == Some(*equals)
            }
            Confirm::Ack | Confirm::Sent => false,
        }
    }
}

/// One action's confirmation and timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirmation {
    /// The action.
    pub actuate: Actuate,
    /// What confirms it.
    pub confirm: Confirm,
    /// Its own timeout (ms); `None` = [`ExecConfig::confirm_timeout_ms`](crate::ExecConfig).
    pub timeout_ms: Option<u64>,
}

impl Confirmation {
    /// A confirmation on a signal that is no boolean (speed) or a zero timeout is invalid.
    pub fn validate(&self) -> Result<(), ExecError> {
        if let Confirm::Signal {
            kind: SignalKind::Speed,
            ..
        } = self.confirm
        {
            return Err(ExecError::InvalidConfig(
                "a confirmation signal must be boolean (not speed)",
            ));
        }
        if self.timeout_ms == Some(0) {
            return Err(ExecError::InvalidConfig(
                "a confirmation timeout must be > 0",
            ));
        }
        Ok(())
    }
}

const fn signal(actuate: Actuate, kind: SignalKind, equals: bool) -> Confirmation {
    Confirmation {
        actuate,
        confirm: Confirm::Signal { kind, equals },
        timeout_ms: None,
    }
}

/// The demo car's confirmations (the default of [`ExecConfig::confirmations`](crate::ExecConfig)):
/// lock state and engine state on the bus, the acknowledgement for lights and horn.
pub const DEFAULT_CONFIRMATIONS: &[Confirmation] = &[
    signal(Actuate::Lock, SignalKind::DoorsLocked, true),
    signal(Actuate::Unlock, SignalKind::DoorsLocked, false),
    signal(Actuate::EngineStart, SignalKind::EngineRunning, true),
    signal(Actuate::EngineStop, SignalKind::EngineRunning, false),
    Confirmation {
        actuate: Actuate::FlashLights,
        confirm: Confirm::Ack,
        timeout_ms: None,
    },
    Confirmation {
        actuate: Actuate::Horn,
        confirm: Confirm::Ack,
        timeout_ms: None,
    },
];
