//! The executor's view of the vehicle: the few signals the preconditions, confirmations and the
//! run timer need, each with the time it was last reported. The daemon adapts its VSS store
//! (e.g. `telematics-can`) into [`VehicleSignal`] updates.

use crate::paths;

/// The vehicle signals the executor uses. [`SignalKind::vss_paths`] names the paths each is
/// derived from in reason details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    /// Vehicle speed.
    Speed,
    /// Gear selector in park.
    InPark,
    /// All doors closed.
    DoorsClosed,
    /// All doors locked.
    DoorsLocked,
    /// Hood closed.
    HoodClosed,
    /// A key is detected inside the cabin.
    KeyInCabin,
    /// Engine running.
    EngineRunning,
    /// Brake pedal pressed.
    BrakePressed,
}

impl SignalKind {
    /// All kinds, in a fixed order.
    pub const ALL: [SignalKind; 8] = [
        SignalKind::Speed,
        SignalKind::InPark,
        SignalKind::DoorsClosed,
        SignalKind::DoorsLocked,
        SignalKind::HoodClosed,
        SignalKind::KeyInCabin,
        SignalKind::EngineRunning,
        SignalKind::BrakePressed,
    ];

    /// The VSS paths the daemon derives this signal from ([`paths`]; one, or each door's),
    /// named in stale-state details.
    pub fn vss_paths(self) -> &'static [&'static str] {
        match self {
            SignalKind::Speed => &[paths::SPEED],
            SignalKind::InPark => &[paths::GEAR],
            SignalKind::DoorsClosed => &paths::DOORS_OPEN,
            SignalKind::DoorsLocked => &paths::DOORS_LOCKED,
            SignalKind::HoodClosed => &[paths::HOOD_OPEN],
            SignalKind::KeyInCabin => &[paths::KEY_PRESENT],
            SignalKind::EngineRunning => &[paths::ENGINE_RUNNING],
            SignalKind::BrakePressed => &[paths::BRAKE_PEDAL],
        }
    }

    /// The name a vehicle profile uses for this signal (`doors_locked`).
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::Speed => "speed",
            SignalKind::InPark => "in_park",
            SignalKind::DoorsClosed => "doors_closed",
            SignalKind::DoorsLocked => "doors_locked",
            SignalKind::HoodClosed => "hood_closed",
            SignalKind::KeyInCabin => "key_in_cabin",
            SignalKind::EngineRunning => "engine_running",
            SignalKind::BrakePressed => "brake_pressed",
        }
    }

    /// The kind named `name` ([`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<SignalKind> {
        SignalKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// [`vss_paths`](Self::vss_paths) as one text, comma-separated: the `detail` of a
    /// `stale_state` refusal (one of these is missing or stale).
    pub fn vss_detail(self) -> String {
        self.vss_paths().join(",")
    }

    fn index(self) -> usize {
        match self {
            SignalKind::Speed => 0,
            SignalKind::InPark => 1,
            SignalKind::DoorsClosed => 2,
            SignalKind::DoorsLocked => 3,
            SignalKind::HoodClosed => 4,
            SignalKind::KeyInCabin => 5,
            SignalKind::EngineRunning => 6,
            SignalKind::BrakePressed => 7,
        }
    }
}

/// One decoded signal update fed by the daemon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VehicleSignal {
    /// Speed in km/h (absolute value is used).
    SpeedKmh(f64),
    /// Gear selector in park.
    InPark(bool),
    /// All doors closed.
    DoorsClosed(bool),
    /// All doors locked.
    DoorsLocked(bool),
    /// Hood closed.
    HoodClosed(bool),
    /// Key detected in cabin.
    KeyInCabin(bool),
    /// Engine running.
    EngineRunning(bool),
    /// Brake pedal pressed.
    BrakePressed(bool),
}

impl VehicleSignal {
    /// The value of a boolean signal (`None` for speed).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            VehicleSignal::SpeedKmh(_) => None,
            VehicleSignal::InPark(b)
            | VehicleSignal::DoorsClosed(b)
            | VehicleSignal::DoorsLocked(b)
            | VehicleSignal::HoodClosed(b)
            | VehicleSignal::KeyInCabin(b)
            | VehicleSignal::EngineRunning(b)
            | VehicleSignal::BrakePressed(b) => Some(b),
        }
    }

    /// A boolean update of `kind` (`None` for speed).
    pub fn boolean(kind: SignalKind, b: bool) -> Option<VehicleSignal> {
        Some(match kind {
            SignalKind::Speed => return None,
            SignalKind::InPark => VehicleSignal::InPark(b),
            SignalKind::DoorsClosed => VehicleSignal::DoorsClosed(b),
            SignalKind::DoorsLocked => VehicleSignal::DoorsLocked(b),
            SignalKind::HoodClosed => VehicleSignal::HoodClosed(b),
            SignalKind::KeyInCabin => VehicleSignal::KeyInCabin(b),
            SignalKind::EngineRunning => VehicleSignal::EngineRunning(b),
            SignalKind::BrakePressed => VehicleSignal::BrakePressed(b),
        })
    }

    /// The kind of this update.
    pub fn kind(&self) -> SignalKind {
        match self {
            VehicleSignal::SpeedKmh(_) => SignalKind::Speed,
            VehicleSignal::InPark(_) => SignalKind::InPark,
            VehicleSignal::DoorsClosed(_) => SignalKind::DoorsClosed,
            VehicleSignal::DoorsLocked(_) => SignalKind::DoorsLocked,
            VehicleSignal::HoodClosed(_) => SignalKind::HoodClosed,
            VehicleSignal::KeyInCabin(_) => SignalKind::KeyInCabin,
            VehicleSignal::EngineRunning(_) => SignalKind::EngineRunning,
            VehicleSignal::BrakePressed(_) => SignalKind::BrakePressed,
        }
    }
}

/// Last known value of each signal and whether the daemon reports it fresh (the daemon's
/// signal store owns the staleness rule; this view only records its verdict).
#[derive(Clone, Debug, Default)]
pub struct VehicleState {
    last: [Option<(VehicleSignal, bool)>; 8],
}

impl VehicleState {
    /// Record a fresh update.
    pub fn update(&mut self, signal: VehicleSignal) {
        if let Some(slot) = self.last.get_mut(signal.kind().index()) {
            *slot = Some((signal, true));
        }
    }

    /// The daemon reports `kind` stale (its last value is kept for [`last`](Self::last)).
    pub fn mark_stale(&mut self, kind: SignalKind) {
        if let Some(Some((_, fresh))) = self.last.get_mut(kind.index()) {
            *fresh = false;
        }
    }

    /// The last value of `kind` if the daemon reports it fresh.
    pub fn fresh(&self, kind: SignalKind) -> Option<VehicleSignal> {
        let (sig, fresh) = (*self.last.get(kind.index())?)?;
        fresh.then_some(sig)
    }

    /// The last value of `kind`, however old.
    pub fn last(&self, kind: SignalKind) -> Option<VehicleSignal> {
        self.last
            .get(kind.index())
            .copied()
            .flatten()
            .map(|(s, _)| s)
    }

    /// Last boolean value of a boolean signal (`None` for speed or unknown).
    pub fn last_bool(&self, kind: SignalKind) -> Option<bool> {
        self.last(kind)?.as_bool()
    }

    /// Last speed in km/h (absolute).
    pub fn last_speed(&self) -> Option<f64> {
        match self.last(SignalKind::Speed)? {
            VehicleSignal::SpeedKmh(v) => Some(v.abs()),
            _ => None,
        }
    }
}
