//! The VSS paths the executor's signals are derived from: the one list the daemon's vehicle
//! model reads and [`SignalKind::vss_paths`](crate::SignalKind::vss_paths) names in
//! `stale_state` details.

/// Vehicle speed, km/h.
pub const SPEED: &str = "Vehicle.Speed";
/// Selected gear (VSS: [`GEAR_PARK`] = park).
pub const GEAR: &str = "Vehicle.Powertrain.Transmission.SelectedGear";
/// VSS encoding of "park" in [`GEAR`].
pub const GEAR_PARK: i64 = 126;
/// Hood open.
pub const HOOD_OPEN: &str = "Vehicle.Body.Hood.IsOpen";
/// Key present in the cabin.
pub const KEY_PRESENT: &str = "Vehicle.Cabin.IsKeyPresent";
/// Engine running.
pub const ENGINE_RUNNING: &str = "Vehicle.Powertrain.CombustionEngine.IsRunning";
/// Brake pedal position, percent (optional: the demo car does not map it).
pub const BRAKE_PEDAL: &str = "Vehicle.Chassis.Brake.PedalPosition";
/// Each door open; all four closed = doors closed.
pub const DOORS_OPEN: [&str; 4] = [
    "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen",
    "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen",
    "Vehicle.Cabin.Door.Row2.DriverSide.IsOpen",
    "Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen",
];
/// Each door locked; all four locked = doors locked.
pub const DOORS_LOCKED: [&str; 4] = [
    "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked",
    "Vehicle.Cabin.Door.Row1.PassengerSide.IsLocked",
    "Vehicle.Cabin.Door.Row2.DriverSide.IsLocked",
    "Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked",
];
