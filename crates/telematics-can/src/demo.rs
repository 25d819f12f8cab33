//! The "telematicsd demo car": embedded DBC + VSS mapping, a car-state model that encodes the
//! body controller / powertrain status frames, body-command frames for actuation, and the
//! drive/park scenarios used to generate the candump logs in `data/`.

use crate::candump::format_line;
use crate::dbc::{Dbc, EncodeValue, RawValue};
use crate::error::CanError;
use crate::frame::CanFrame;

/// The demo car DBC text.
pub const DEMO_DBC: &str = include_str!("../data/demo_car.dbc");
/// The demo car VSS mapping (TOML).
pub const DEMO_VSS_TOML: &str = include_str!("../data/demo_car_vss.toml");
/// The demo car's vehicle profile (TOML; `telematics-profile`).
pub const DEMO_PROFILE_TOML: &str = include_str!("../data/demo_car_profile.toml");
/// The demo car's profile with AUTOSAR SecOC on unlock in place of its XOR checksum and alive
/// counter (`secoc = { data_id = 0x0200 }`, SecOC profile 1 defaults: the trailer takes the
/// frame's last 4 bytes). A variant for development and tests of SecOC; the shipped profile is
/// [`DEMO_PROFILE_TOML`].
pub fn demo_profile_with_secoc_unlock() -> String {
    DEMO_PROFILE_TOML.replacen(
        "signals = { LockRequest = \"UNLOCK\" }\ncounter = \"CommandCounter\"\nprotection = { scheme = \"xor\", checksum_byte = 7 }",
        "signals = { LockRequest = \"UNLOCK\" }\nsecoc = { data_id = 0x0200 }",
        1,
    )
}

/// Name of the body-command message sent by the telematics unit.
pub const BODY_COMMAND: &str = "TCU_BodyCommand";
/// Name of the body controller's command acknowledgement.
pub const COMMAND_ACK: &str = "BCM_CommandAck";

/// Lock state of one door (the DBC value table labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// `UNLOCKED`
    Unlocked,
    /// `LOCKED`
    Locked,
}

impl LockState {
    fn label(self) -> &'static str {
        match self {
            LockState::Unlocked => "UNLOCKED",
            LockState::Locked => "LOCKED",
        }
    }
}

/// Gear selector (labels `P`, `R`, `N`, `D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gear {
    /// Park.
    P,
    /// Reverse.
    R,
    /// Neutral.
    N,
    /// Drive.
    D,
}

impl Gear {
    fn label(self) -> &'static str {
        match self {
            Gear::P => "P",
            Gear::R => "R",
            Gear::N => "N",
            Gear::D => "D",
        }
    }
}

/// Ignition / low-voltage system state (labels `OFF`, `ACC`, `ON`, `START`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignition {
    /// Off.
    Off,
    /// Accessory.
    Acc,
    /// On.
    On,
    /// Cranking.
    Start,
}

impl Ignition {
    fn label(self) -> &'static str {
        match self {
            Ignition::Off => "OFF",
            Ignition::Acc => "ACC",
            Ignition::On => "ON",
            Ignition::Start => "START",
        }
    }
}

/// Physical state of the demo car; [`CarState::status_frames`] encodes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CarState {
    /// Door open flags FL, FR, RL, RR.
    pub doors_open: [bool; 4],
    /// Door locks FL, FR, RL, RR.
    pub locks: [LockState; 4],
    /// Hood open.
    pub hood_open: bool,
    /// Trunk open.
    pub trunk_open: bool,
    /// Key fob in cabin.
    pub key_in_cabin: bool,
    /// Speed km/h.
    pub speed_kmh: f64,
    /// Engine speed rpm.
    pub rpm: f64,
    /// Gear.
    pub gear: Gear,
    /// Engine running.
    pub engine_running: bool,
    /// Ignition.
    pub ignition: Ignition,
    /// Coolant temperature (degC, may be negative).
    pub coolant_c: i64,
    /// Longitudinal acceleration m/s2 (signed).
    pub accel: f64,
    /// Fuel level percent.
    pub fuel_pct: f64,
    /// Odometer km.
    pub odometer_km: f64,
    /// 12 V battery voltage.
    pub battery_v: f64,
    /// Tire pressures FL, FR, RL, RR in kPa.
    pub tire_kpa: [f64; 4],
    /// Service due flag.
    pub service_due: bool,
    /// Distance to service km (negative = overdue).
    pub distance_to_service_km: f64,
    /// Latitude deg.
    pub lat: f64,
    /// Longitude deg.
    pub lon: f64,
}

impl Default for CarState {
    fn default() -> Self {
        CarState {
            doors_open: [false; 4],
            locks: [LockState::Locked; 4],
            hood_open: false,
            trunk_open: false,
            key_in_cabin: false,
            speed_kmh: 0.0,
            rpm: 0.0,
            gear: Gear::P,
            engine_running: false,
            ignition: Ignition::Off,
            coolant_c: 15,
            accel: 0.0,
            fuel_pct: 62.0,
            odometer_km: 12_345.6,
            battery_v: 12.6,
            tire_kpa: [240.0, 241.5, 234.0, 235.5],
            service_due: false,
            distance_to_service_km: 1500.0,
            lat: 48.137_154,
            lon: 11.576_124,
        }
    }
}

const WHEELS: [&str; 4] = ["FL", "FR", "RL", "RR"];

impl CarState {
    /// Encode the periodic status frames. `counter` feeds the rolling status counter and selects
    /// which TPMS wheel (multiplexer) is sent; `slow` adds the 1 Hz frames (service, position, BMS).
    pub fn status_frames(
        &self,
        dbc: &Dbc,
        counter: u8,
        slow: bool,
    ) -> Result<Vec<CanFrame>, CanError> {
        let b = |v: bool| EncodeValue::Raw(RawValue::Unsigned(u64::from(v)));
        let door_names = ["DoorFL_Open", "DoorFR_Open", "DoorRL_Open", "DoorRR_Open"];
        let lock_names = ["DoorFL_Lock", "DoorFR_Lock", "DoorRL_Lock", "DoorRR_Lock"];
        let mut door: Vec<(&str, EncodeValue<'_>)> = Vec::new();
        for (i, n) in door_names.iter().enumerate() {
            door.push((n, b(self.doors_open.get(i).copied().unwrap_or(false))));
        }
        for (i, n) in lock_names.iter().enumerate() {
            door.push((
                n,
                EncodeValue::Label(
                    self.locks
                        .get(i)
                        .copied()
                        .unwrap_or(LockState::Locked)
                        .label(),
                ),
            ));
        }
        door.push(("Hood_Open", b(self.hood_open)));
        door.push(("Trunk_Open", b(self.trunk_open)));
        door.push((
            "KeyInCabin",
            EncodeValue::Label(if self.key_in_cabin {
                "KEY_PRESENT"
            } else {
                "NO_KEY"
            }),
        ));
        door.push((
            "BCM_StatusCounter",
            EncodeValue::Raw(RawValue::Unsigned(u64::from(counter & 0xF))),
        ));
        let mut out = vec![dbc.encode("BCM_DoorStatus", &door)?];
        out.push(dbc.encode(
            "PT_Status",
            &[
                ("VehicleSpeed", EncodeValue::Physical(self.speed_kmh)),
                ("EngineRPM", EncodeValue::Physical(self.rpm)),
                ("GearPosition", EncodeValue::Label(self.gear.label())),
                (
                    "EngineRunning",
                    EncodeValue::Label(if self.engine_running {
                        "RUNNING"
                    } else {
                        "OFF"
                    }),
                ),
                ("IgnitionState", EncodeValue::Label(self.ignition.label())),
                (
                    "CoolantTemp",
                    EncodeValue::Raw(RawValue::Signed(self.coolant_c)),
                ),
                ("LongAccel", EncodeValue::Physical(self.accel)),
            ],
        )?);
        out.push(dbc.encode(
            "PT_Fuel",
            &[
                ("FuelLevel", EncodeValue::Physical(self.fuel_pct)),
                ("Odometer", EncodeValue::Physical(self.odometer_km)),
                ("BatteryVoltage", EncodeValue::Physical(self.battery_v)),
            ],
        )?);
        let w = usize::from(counter % 4);
        let name = format!("TirePressure_{}", WHEELS.get(w).copied().unwrap_or("FL"));
        let mut tpms = vec![(
            name.as_str(),
            EncodeValue::Physical(self.tire_kpa.get(w).copied().unwrap_or(0.0)),
        )];
        if w == 0 {
            tpms.push((
                "TireTemp",
                EncodeValue::Raw(RawValue::Signed(self.coolant_c.min(40))),
            ));
        }
        out.push(dbc.encode("TPMS_Status", &tpms)?);
        if slow {
            out.push(dbc.encode(
                "IC_ServiceStatus",
                &[
                    ("ServiceDue", b(self.service_due)),
                    (
                        "DistanceToService",
                        EncodeValue::Physical(self.distance_to_service_km),
                    ),
                ],
            )?);
            out.push(dbc.encode(
                "NAV_Position",
                &[
                    ("Latitude", EncodeValue::Physical(self.lat)),
                    ("Longitude", EncodeValue::Physical(self.lon)),
                ],
            )?);
        }
        Ok(out)
    }
}

/// A body command the telematics unit sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCommand {
    /// Lock all doors.
    Lock,
    /// Unlock all doors.
    Unlock,
    /// Start the engine.
    EngineStart,
    /// Stop the engine.
    EngineStop,
    /// Flash the lights `n` times.
    FlashLights(u8),
    /// Sound the horn.
    Horn,
}

impl crate::sim::SimProfile {
    /// The demo car's frames and acknowledgement, as `data/demo_car_profile.toml` describes
    /// them (`telematics-profile` tests that the two agree).
    pub fn demo() -> crate::sim::SimProfile {
        use crate::actuation::{AckSpec, FrameSpec, SignalSetting};
        use crate::protection::{Protection, XorChecksum};
        let frame = |values: &[(&str, SignalSetting)]| FrameSpec {
            message: BODY_COMMAND.into(),
            values: values
                .iter()
                .map(|(s, v)| ((*s).to_string(), v.clone()))
                .collect(),
            counter: Some("CommandCounter".into()),
            // `CommandChecksum`: the XOR of bytes 0..=6 in byte 7.
            protection: Protection::Xor(XorChecksum { checksum_byte: 7 }),
            secoc: None,
        };
        let label = |l: &str| SignalSetting::Label(l.into());
        crate::sim::SimProfile {
            commands: vec![
                (
                    "engine_start".into(),
                    frame(&[("EngineRequest", label("START"))]),
                ),
                (
                    "engine_stop".into(),
                    frame(&[("EngineRequest", label("STOP"))]),
                ),
                (
                    "flash_lights".into(),
                    frame(&[
                        ("FlashCount", SignalSetting::Raw(3)),
                        ("FlashLights", SignalSetting::Raw(1)),
                    ]),
                ),
                ("horn".into(), frame(&[("Horn", SignalSetting::Raw(1))])),
                ("lock".into(), frame(&[("LockRequest", label("LOCK"))])),
                ("unlock".into(), frame(&[("LockRequest", label("UNLOCK"))])),
            ],
            ack: AckSpec {
                message: COMMAND_ACK.into(),
                counter: Some("AckCounter".into()),
                outcome: "AckResult".into(),
                ok: vec![0],
                reason: Some("AckReason".into()),
                refusals: [
                    "not_in_park",
                    "engine_running",
                    "hood_open",
                    "low_battery",
                    "door_open",
                    "key_in_cabin",
                    "anti_theft",
                ]
                .iter()
                .zip(1..)
                .map(|(r, c)| (c, (*r).to_string()))
                .collect(),
            },
            ack_bus: "body".into(),
        }
    }
}

/// XOR of bytes 0..7 (the demo `CommandChecksum`).
pub fn command_checksum(data: &[u8]) -> u8 {
    data.iter().take(7).fold(0, |a, b| a ^ b)
}

/// Encode a body command with the rolling `counter` (mod 16) and checksum.
pub fn encode_body_command(dbc: &Dbc, cmd: BodyCommand, counter: u8) -> Result<CanFrame, CanError> {
    let mut v: Vec<(&str, EncodeValue<'_>)> = vec![(
        "CommandCounter",
        EncodeValue::Raw(RawValue::Unsigned(u64::from(counter & 0xF))),
    )];
    match cmd {
        BodyCommand::Lock => v.push(("LockRequest", EncodeValue::Label("LOCK"))),
        BodyCommand::Unlock => v.push(("LockRequest", EncodeValue::Label("UNLOCK"))),
        BodyCommand::EngineStart => v.push(("EngineRequest", EncodeValue::Label("START"))),
        BodyCommand::EngineStop => v.push(("EngineRequest", EncodeValue::Label("STOP"))),
        BodyCommand::FlashLights(n) => {
            v.push(("FlashLights", EncodeValue::Raw(RawValue::Unsigned(1))));
            v.push((
                "FlashCount",
                EncodeValue::Raw(RawValue::Unsigned(u64::from(n.min(15)))),
            ));
        }
        BodyCommand::Horn => v.push(("Horn", EncodeValue::Raw(RawValue::Unsigned(1)))),
    }
    let mut f = dbc.encode(BODY_COMMAND, &v)?;
    let ck = command_checksum(&f.data);
    if let Some(b) = f.data.get_mut(7) {
        *b = ck;
    }
    Ok(f)
}

/// Decode a body command frame back into the command and counter, verifying the checksum.
/// Returns `None` when the frame is not a valid body command.
pub fn decode_body_command(dbc: &Dbc, frame: &CanFrame) -> Option<(BodyCommand, u8)> {
    let m = dbc.message_by_name(BODY_COMMAND)?;
    if frame.can_id() != m.id
        || frame.data.len() < 8
        || frame.data.get(7) != Some(&command_checksum(&frame.data))
    {
        return None;
    }
    let d = m.decode(&frame.data).ok()?;
    let counter = d.get("CommandCounter")?.raw.as_i64()? as u8;
    let lock = d.get("LockRequest")?.label;
    let eng = d.get("EngineRequest")?.label;
    let cmd = match (lock, eng) {
        (Some("LOCK"), _) => BodyCommand::Lock,
        (Some("UNLOCK"), _) => BodyCommand::Unlock,
        (_, Some("START")) => BodyCommand::EngineStart,
        (_, Some("STOP")) => BodyCommand::EngineStop,
        _ if d.get("FlashLights")?.raw.as_i64() == Some(1) => {
            BodyCommand::FlashLights(d.get("FlashCount")?.raw.as_i64()? as u8)
        }
        _ if d.get("Horn")?.raw.as_i64() == Some(1) => BodyCommand::Horn,
        _ => return None,
    };
    Some((cmd, counter))
}

/// Start of the demo logs: 2023-11-14T22:13:20Z.
pub const DEMO_EPOCH_US: u64 = 1_700_000_000_000_000;

/// Car state at `t_ms` into the drive scenario (20 s): unlock + enter, start, drive off to
/// 50 km/h (reached at 15 s, then constant).
pub fn drive_state(t_ms: u64) -> CarState {
    let mut s = CarState::default();
    let t = t_ms as f64 / 1000.0;
    if t >= 1.0 {
        s.locks = [LockState::Unlocked; 4];
        s.key_in_cabin = true;
    }
    s.doors_open[0] = (2.0..3.5).contains(&t);
    if t >= 4.0 {
        s.ignition = Ignition::On;
    }
    if (5.0..5.5).contains(&t) {
        s.ignition = Ignition::Start;
        s.rpm = 200.0;
    }
    if t >= 5.5 {
        s.engine_running = true;
        s.rpm = 800.0;
        s.coolant_c = 15 + ((t - 5.5) * 2.0) as i64;
    }
    if t >= 7.0 {
        s.gear = Gear::D;
        s.locks = [LockState::Locked; 4]; // auto-lock when driving off
    }
    if t >= 8.0 {
        let v = ((t - 8.0) / 7.0 * 50.0).min(50.0);
        s.speed_kmh = v;
        s.accel = if t < 15.0 { 50.0 / 3.6 / 7.0 } else { 0.0 };
        s.rpm = 800.0 + v * 40.0;
        // distance = integral of speed (km)
        let ramp = (t - 8.0).min(7.0);
        let mut km = 50.0 / 7.0 * ramp * ramp / 2.0 / 3600.0;
        if t > 15.0 {
            km += 50.0 * (t - 15.0) / 3600.0;
        }
        s.odometer_km += km;
        s.lat += km / 111.0;
    }
    s.battery_v = if s.engine_running { 14.2 } else { 12.6 };
    s.fuel_pct = 62.0 - if t >= 8.0 { 0.4 } else { 0.0 };
    s
}

/// Car state at `t_ms` into the park scenario (10 s): decelerate from 30 km/h to 0 by 3 s,
/// park, engine off, driver leaves with the key, doors locked at 8 s. The rear-left tire is low
/// and the service is overdue.
pub fn park_state(t_ms: u64) -> CarState {
    let mut s = CarState {
        locks: [LockState::Unlocked; 4],
        key_in_cabin: true,
        engine_running: true,
        ignition: Ignition::On,
        gear: Gear::D,
        coolant_c: 88,
        tire_kpa: [240.0, 241.5, 180.0, 235.5],
        service_due: true,
        distance_to_service_km: -120.0,
        odometer_km: 20_000.0,
        fuel_pct: 18.0,
        ..CarState::default()
    };
    let t = t_ms as f64 / 1000.0;
    s.speed_kmh = (30.0 * (1.0 - t / 3.0)).max(0.0);
    s.accel = if t < 3.0 { -30.0 / 3.6 / 3.0 } else { 0.0 };
    s.rpm = 800.0 + s.speed_kmh * 40.0;
    s.battery_v = 14.1;
    if t >= 4.0 {
        s.gear = Gear::P;
    }
    if t >= 5.0 {
        s.engine_running = false;
        s.ignition = Ignition::Off;
        s.rpm = 0.0;
        s.battery_v = 12.4;
    }
    s.doors_open[0] = (6.0..7.0).contains(&t);
    if t >= 7.0 {
        s.key_in_cabin = false;
    }
    if t >= 8.0 {
        s.locks = [LockState::Locked; 4];
    }
    s
}

/// Generate a scenario log: 10 Hz status frames for `duration_ms`, 1 Hz slow frames, one
/// unknown-id frame (0x7DF) each second to exercise counted drops, and one CAN FD BMS frame.
pub fn scenario_log(
    dbc: &Dbc,
    duration_ms: u64,
    state: fn(u64) -> CarState,
) -> Result<String, CanError> {
    let mut out = String::new();
    let mut counter: u8 = 0;
    let bms = dbc.encode(
        "BMS_FdSnapshot",
        &[
            ("CellVoltageMin", EncodeValue::Physical(3.301)),
            ("CellVoltageMax", EncodeValue::Physical(3.342)),
        ],
    )?;
    for t in (0..duration_ms).step_by(100) {
        let st = state(t);
        let slow = t % 1000 == 0;
        for (i, f) in st
            .status_frames(dbc, counter, slow)?
            .into_iter()
            .enumerate()
        {
            // spread frames 1 ms apart within the cycle
            out.push_str(&format_line(
                DEMO_EPOCH_US + t * 1000 + i as u64 * 1000,
                "can0",
                &f,
            ));
            out.push('\n');
        }
        if slow {
            let diag = CanFrame::new(
                crate::frame::CanId::standard(0x7DF),
                &[0x02, 0x01, 0x0C, 0, 0, 0, 0, 0],
            );
            out.push_str(&format_line(
                DEMO_EPOCH_US + t * 1000 + 50_000,
                "can0",
                &diag,
            ));
            out.push('\n');
        }
        if t == 500 {
            out.push_str(&format_line(
                DEMO_EPOCH_US + t * 1000 + 60_000,
                "can0",
                &bms,
            ));
            out.push('\n');
        }
        counter = counter.wrapping_add(1);
    }
    Ok(out)
}

/// The 20 s drive log (`data/demo_drive.log`).
pub fn drive_log(dbc: &Dbc) -> Result<String, CanError> {
    scenario_log(dbc, 20_000, drive_state)
}

/// The 10 s park log (`data/demo_park.log`).
pub fn park_log(dbc: &Dbc) -> Result<String, CanError> {
    scenario_log(dbc, 10_000, park_state)
}
