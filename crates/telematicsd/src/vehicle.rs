//! The vehicle model of the daemon: per bus a DBC + VSS mapping, the vehicle profile, one
//! signal store for all buses, and the views the rest of the daemon needs from it — the
//! executor's signals (read through the profile's `[signals]` bindings), telemetry values and
//! the stale list. The store's staleness rule is the only one (see `telematics_can::state`):
//! every view here reads it.
//!
//! Pure code (no I/O, `now` passed in); the runtime feeds it frames tagged with their
//! [`BusId`], each frame's timestamp already on the core's clock.

use telematics_can::dbc::DecodeOutcome;
use telematics_can::{
    BoundMapping, CanFrame, Change, Dbc, SignalValue, Timestamp, VehicleState, VssMapping,
};
use telematics_exec::{SignalKind, VehicleSignal};
use telematics_profile::VehicleProfile;

use crate::config::{BusSpec, CanSourceKind, Config, DEFAULT_BUS};
use crate::error::DaemonError;

/// Index of a bus in the configuration order ([`crate::config::CanConfig::buses`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BusId(pub usize);

/// One bus of the vehicle: its name, DBC and mapping bound to that DBC.
#[derive(Debug)]
struct Bus {
    name: String,
    dbc: Dbc,
    mapping: BoundMapping,
}

/// VSS paths the executor's signals are derived from (shared with the executor, which names
/// them in `stale_state` details).
pub use telematics_exec::paths;

/// The buses (DBC and mapping each), the vehicle profile and the decoded signal store they
/// all feed.
#[derive(Debug)]
pub struct VehicleModel {
    buses: Vec<Bus>,
    profile: VehicleProfile,
    state: VehicleState,
    frames: u64,
    unknown: u64,
    errors: u64,
}

impl VehicleModel {
    /// Builds the model from DBC, mapping and profile text. The mapping is TOML (project
    /// format) or Kuksa VSS JSON (`json == true`). The DBC loader's warnings and the mapping
    /// entries whose DBC signal does not exist are returned as warnings (the rest still works);
    /// a profile that does not fit the DBC and mapping is an error naming its key
    /// (`can.profile: actions.unlock.message: ...`).
    pub fn from_text(
        dbc_text: &str,
        mapping_text: &str,
        profile_text: &str,
        json: bool,
        default_max_age_ms: u64,
    ) -> Result<(Self, Vec<String>), DaemonError> {
        let (bus, warnings) = Self::bus_from_text(
            "can",
            DEFAULT_BUS,
            dbc_text,
            mapping_text,
            json,
            default_max_age_ms,
        )?;
        let paths: Vec<&str> = bus
            .mapping
            .entries()
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        let profile = VehicleProfile::parse(profile_text, &bus.dbc, &paths)
            .map_err(|e| DaemonError::Can(format!("can.profile: {e}")))?;
        Ok((Self::from_buses(vec![bus], profile), warnings))
    }

    /// One bus from its DBC and mapping text; errors and warnings name `key` (`can`,
    /// `can.bus[1]`).
    fn bus_from_text(
        key: &str,
        name: &str,
        dbc_text: &str,
        mapping_text: &str,
        json: bool,
        default_max_age_ms: u64,
    ) -> Result<(Bus, Vec<String>), DaemonError> {
        let dbc = Dbc::parse(dbc_text).map_err(|e| DaemonError::Can(format!("{key}.dbc: {e}")))?;
        let mapping = if json {
            VssMapping::from_kuksa_json(mapping_text, default_max_age_ms)
        } else {
            VssMapping::from_toml(mapping_text)
        }
        .map_err(|e| DaemonError::Can(format!("{key}.mapping: {e}")))?;
        let (bound, unbound) = mapping.bind_lenient(&dbc);
        // What the DBC loader tolerated (ids refused as written, long-name conflicts, value
        // tables for missing signals), then the mapping entries that did not bind.
        let warnings = dbc
            .warnings()
            .iter()
            .map(|w| format!("{key}.dbc: {w}"))
            .chain(unbound.into_iter().map(|w| format!("{key}.mapping: {w}")))
            .collect();
        let bus = Bus {
            name: name.to_string(),
            dbc,
            mapping: bound,
        };
        Ok((bus, warnings))
    }

    fn from_buses(buses: Vec<Bus>, profile: VehicleProfile) -> Self {
        let mut state = VehicleState::new(telematics_can::vss::DEFAULT_MAX_AGE_MS);
        for b in &buses {
            for e in b.mapping.entries() {
                state.configure(
                    &e.path,
                    e.max_age_ms
                        .unwrap_or(telematics_can::vss::DEFAULT_MAX_AGE_MS),
                    e.deadband,
                );
            }
        }
        VehicleModel {
            buses,
            profile,
            state,
            frames: 0,
            unknown: 0,
            errors: 0,
        }
    }

    /// The demo vehicle (built-in DBC and mapping) used by `can.source = "sim"` (feature
    /// `sim`).
    #[cfg(feature = "sim")]
    pub fn demo() -> Result<Self, DaemonError> {
        Self::from_text(
            telematics_can::demo::DEMO_DBC,
            telematics_can::demo::DEMO_VSS_TOML,
            telematics_can::demo::DEMO_PROFILE_TOML,
            false,
            2_000,
        )
        .map(|(m, _)| m)
    }

    /// Loads the files of every bus of `[can]` (or the demo model for `sim`).
    pub fn load(cfg: &Config) -> Result<(Self, Vec<String>), DaemonError> {
        if cfg.can.source == CanSourceKind::Sim && cfg.can.bus.is_empty() {
            #[cfg(feature = "sim")]
            return Self::demo().map(|m| (m, Vec::new()));
            #[cfg(not(feature = "sim"))]
            return Err(DaemonError::ConfigInvalid(vec![
                "can.source: \"sim\" is not in this build (feature `sim`)".into(),
            ]));
        }
        let mut buses = Vec::new();
        let mut warnings = Vec::new();
        for BusSpec { key, bus } in cfg.can.buses() {
            let read = |what: &str, p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| {
                    DaemonError::Can(format!("{key}.{what}: cannot read {}: {e}", p.display()))
                })
            };
            let dbc = read("dbc", &bus.dbc)?;
            let mapping = read("mapping", &bus.mapping)?;
            let json = bus
                .mapping
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            let (b, w) =
                Self::bus_from_text(&key, &bus.name, &dbc, &mapping, json, cfg.can.max_age_ms)?;
            buses.push(b);
            warnings.extend(w);
        }
        let text = std::fs::read_to_string(&cfg.can.profile).map_err(|e| {
            DaemonError::Can(format!(
                "can.profile: cannot read {}: {e}",
                cfg.can.profile.display()
            ))
        })?;
        let profile = {
            let paths: Vec<&str> = buses
                .iter()
                .flat_map(|b| b.mapping.entries().iter().map(|e| e.path.as_str()))
                .collect();
            let dbcs: Vec<(&str, &Dbc)> = buses.iter().map(|b| (b.name.as_str(), &b.dbc)).collect();
            VehicleProfile::parse_on_buses(&text, &dbcs, &paths)
                .map_err(|e| DaemonError::Can(format!("can.profile: {e}")))?
        };
        Ok((Self::from_buses(buses, profile), warnings))
    }

    /// The first bus's DBC (the body bus: actuation frames are encoded with it).
    pub fn dbc(&self) -> &Dbc {
        // `from_buses` always gets at least one bus (the config yields one or more).
        &self.buses[0].dbc
    }

    /// The DBC of the bus named `name`.
    pub fn bus_dbc(&self, name: &str) -> Option<&Dbc> {
        self.buses.iter().find(|b| b.name == name).map(|b| &b.dbc)
    }

    /// The DBC frames of the profile's bus `name` are encoded / decoded with: that bus's, or
    /// the first bus's for a profile built on one bus ([`VehicleModel::from_text`] takes every
    /// bus name the profile gives as its one bus).
    pub fn dbc_for(&self, name: &str) -> &Dbc {
        self.bus_dbc(name).unwrap_or_else(|| self.dbc())
    }

    /// Whether a frame heard on `bus` can be on the profile's bus `name` (always, on a model
    /// of one bus).
    pub fn is_bus(&self, bus: BusId, name: &str) -> bool {
        self.buses.len() <= 1 || self.buses.get(bus.0).is_some_and(|b| b.name == name)
    }

    /// The bus names, in configuration order ([`BusId`] is the index).
    pub fn bus_names(&self) -> Vec<String> {
        self.buses.iter().map(|b| b.name.clone()).collect()
    }

    /// The ids the vehicle reads on bus `bus`: every message its mapping reads (sorted). The
    /// SocketCAN kernel filter of the bus is set to exactly these, so other traffic never
    /// reaches the daemon; messages actuation listens to (acknowledgements) belong here too.
    pub fn receive_ids(&self, bus: BusId) -> Vec<telematics_can::CanId> {
        self.buses
            .get(bus.0)
            .map(|b| {
                let mut ids: Vec<_> = b
                    .dbc
                    .messages()
                    .iter()
                    .map(|m| m.id)
                    .filter(|id| b.mapping.is_mapped(*id))
                    .collect();
                // The acknowledgement of actuation, on the bus the profile hears it on.
                if let Some(ack) = self
                    .profile
                    .ack
                    .as_ref()
                    .filter(|a| self.buses.len() <= 1 || a.bus == b.name)
                    && let Some(m) = b.dbc.message_by_name(&ack.spec.message)
                    && !ids.contains(&m.id)
                {
                    ids.push(m.id);
                }
                ids.sort();
                ids
            })
            .unwrap_or_default()
    }

    /// The vehicle profile (actuation frames, acknowledgement, rules).
    pub fn profile(&self) -> &VehicleProfile {
        &self.profile
    }

    /// Frames seen, frames with an id the DBC does not know, frames that failed to decode.
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.frames, self.unknown, self.errors)
    }

    /// Decodes one frame of the first bus and applies it; returns the reported changes.
    pub fn on_frame(&mut self, frame: &CanFrame, now_ms: u64) -> Vec<Change> {
        self.on_bus_frame(BusId(0), frame, now_ms)
    }

    /// Decodes one frame received on `bus` and applies it at its own timestamp (`now_ms` for
    /// a frame without one; a timestamp in the future counts as `now_ms`); returns the
    /// reported changes.
    pub fn on_bus_frame(&mut self, bus: BusId, frame: &CanFrame, now_ms: u64) -> Vec<Change> {
        self.frames += 1;
        let Some(b) = self.buses.get(bus.0) else {
            self.unknown += 1;
            return Vec::new();
        };
        let at = frame
            .timestamp_us
            .map_or(now_ms, |us| (us / 1000).min(now_ms));
        match b.dbc.decode_frame(frame) {
            Ok(DecodeOutcome::Decoded(d)) => self.state.apply(&b.mapping, &d, Timestamp(at)),
            Ok(_) => {
                self.unknown += 1;
                Vec::new()
            }
            Err(_) => {
                self.errors += 1;
                Vec::new()
            }
        }
    }

    fn fresh(&self, path: &str, now_ms: u64) -> Option<&SignalValue> {
        self.state.get_fresh(path, Timestamp(now_ms))
    }

    /// The executor's signals that are currently fresh, read through the profile's
    /// bindings. A signal whose source is missing or stale is left out, so the executor's own
    /// copy ages and preconditions refuse `stale_state`.
    pub fn exec_signals(&self, now_ms: u64) -> Vec<VehicleSignal> {
        self.profile
            .signals
            .iter()
            .filter_map(|b| b.eval(|p| self.fresh(p, now_ms)))
            .collect()
    }

    /// The signals a command needs before the start-up hold ends: every bound one but the
    /// optional brake pedal.
    pub fn required_signals(&self) -> usize {
        self.profile
            .signals
            .iter()
            .filter(|b| b.kind != SignalKind::BrakePressed)
            .count()
    }

    /// Number of mapped signals (VSS paths of the mapping); those missing from
    /// [`VehicleModel::fresh_values`] are stale or never heard.
    pub fn mapped_signals(&self) -> usize {
        self.buses.iter().map(|b| b.mapping.entries().len()).sum()
    }

    /// The paths heard but older than their maximum age at `now` (telemetry's `stale` list).
    pub fn stale_paths(&self, now_ms: u64) -> Vec<String> {
        self.state
            .snapshot(Timestamp(now_ms))
            .into_iter()
            .filter(|e| e.is_stale)
            .map(|e| e.path)
            .collect()
    }

    /// Every fresh value as telemetry (refreshes the schedule's view of unchanged signals).
    pub fn fresh_values(&self, now_ms: u64) -> Vec<(String, SignalValue)> {
        self.state
            .snapshot(Timestamp(now_ms))
            .into_iter()
            .filter(|e| !e.is_stale)
            .map(|e| (e.path, e.value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telematics_can::demo::{self, CarState, Gear};

    fn feed(m: &mut VehicleModel, car: &CarState, now: u64) {
        let frames = car
            .status_frames(m.dbc(), 1, true)
            .expect("encode status frames");
        for f in &frames {
            m.on_frame(f, now);
        }
        // TPMS is multiplexed: send the other wheels too.
        for c in 2..5u8 {
            for f in car.status_frames(m.dbc(), c, false).expect("encode") {
                m.on_frame(&f, now);
            }
        }
    }

    #[test]
    fn demo_frames_yield_every_exec_signal() {
        let mut m = VehicleModel::demo().expect("demo model");
        let car = CarState::default();
        feed(&mut m, &car, 1_000);
        let s = m.exec_signals(1_000);
        for expected in [
            VehicleSignal::SpeedKmh(0.0),
            VehicleSignal::InPark(true),
            VehicleSignal::DoorsClosed(true),
            VehicleSignal::DoorsLocked(true),
            VehicleSignal::HoodClosed(true),
            VehicleSignal::KeyInCabin(false),
            VehicleSignal::EngineRunning(false),
        ] {
            assert!(s.contains(&expected), "{expected:?} missing from {s:?}");
        }
        assert!(!m.fresh_values(1_000).is_empty());
        let (frames, unknown, errors) = m.counters();
        assert!(frames > 0);
        assert_eq!((unknown, errors), (0, 0));
    }

    /// The paths the executor names in `stale_state` are the ones the model reads, and the demo
    /// car provides each of them (the brake pedal is optional and not mapped there).
    #[test]
    fn exec_paths_are_the_paths_the_model_reads() {
        let mut m = VehicleModel::demo().expect("demo model");
        feed(&mut m, &CarState::default(), 1_000);
        let provided: Vec<String> = m.fresh_values(1_000).into_iter().map(|(p, _)| p).collect();
        for kind in telematics_exec::SignalKind::ALL {
            for path in kind.vss_paths() {
                if *path == paths::BRAKE_PEDAL {
                    continue;
                }
                assert!(provided.iter().any(|p| p == path), "{kind:?}: {path}");
            }
        }
        assert!(!provided.iter().any(|p| p == paths::BRAKE_PEDAL));
    }

    #[test]
    fn door_open_gear_and_staleness() {
        let mut m = VehicleModel::demo().expect("demo model");
        let car = CarState {
            doors_open: [false, false, true, false],
            gear: Gear::D,
            hood_open: true,
            key_in_cabin: true,
            ..CarState::default()
        };
        feed(&mut m, &car, 10_000);
        let s = m.exec_signals(10_000);
        assert!(s.contains(&VehicleSignal::DoorsClosed(false)));
        assert!(s.contains(&VehicleSignal::InPark(false)));
        assert!(s.contains(&VehicleSignal::HoodClosed(false)));
        assert!(s.contains(&VehicleSignal::KeyInCabin(true)));
        // Nothing received for a minute: every signal is stale and left out.
        assert!(m.exec_signals(70_000).is_empty());
        assert!(m.fresh_values(70_000).is_empty());
    }

    /// Two buses, each with its own DBC and mapping, feed one state; a frame is decoded with
    /// its own bus's DBC (the same id means another message on the other bus), and each bus's
    /// receive ids are the messages its mapping reads.
    #[test]
    fn two_buses_feed_one_state() {
        const CHASSIS_DBC: &str = "VERSION \"\"\nNS_ :\nBS_:\nBU_: ABS\n\
            BO_ 256 ABS_Wheel: 8 ABS\n SG_ WheelSpeed : 0|16@1+ (0.1,0) [0|6553] \"km/h\" ABS\n\
            BO_ 300 ABS_Unmapped: 8 ABS\n SG_ Junk : 0|8@1+ (1,0) [0|255] \"\" ABS\n";
        const CHASSIS_VSS: &str = "[[signal]]\npath = \"Vehicle.Chassis.Axle.Row1.Wheel.Left.Speed\"\n\
            signal = \"WheelSpeed\"\nmax_age_ms = 300\n";
        let (body, _) = VehicleModel::bus_from_text(
            "can.bus[0]",
            "body",
            demo::DEMO_DBC,
            demo::DEMO_VSS_TOML,
            false,
            2_000,
        )
        .expect("body");
        let (chassis, _) = VehicleModel::bus_from_text(
            "can.bus[1]",
            "chassis",
            CHASSIS_DBC,
            CHASSIS_VSS,
            false,
            2_000,
        )
        .expect("chassis");
        let paths: Vec<&str> = body
            .mapping
            .entries()
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        let profile = VehicleProfile::parse_on_buses(
            demo::DEMO_PROFILE_TOML,
            &[("body", &body.dbc), ("chassis", &chassis.dbc)],
            &paths,
        )
        .expect("profile");
        let mut m = VehicleModel::from_buses(vec![body, chassis], profile);
        assert_eq!(m.bus_names(), ["body", "chassis"]);
        assert!(m.bus_dbc("chassis").is_some());
        // Id 0x100 on the chassis bus is ABS_Wheel (on the body bus it is BCM_DoorStatus).
        let wheel = m
            .bus_dbc("chassis")
            .and_then(|d| {
                d.encode(
                    "ABS_Wheel",
                    &[("WheelSpeed", telematics_can::EncodeValue::Physical(12.5))],
                )
                .ok()
            })
            .expect("encode");
        let changes = m.on_bus_frame(BusId(1), &wheel, 1_000);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].path,
            "Vehicle.Chassis.Axle.Row1.Wheel.Left.Speed"
        );
        feed(&mut m, &CarState::default(), 1_000);
        let fresh: Vec<String> = m.fresh_values(1_200).into_iter().map(|(p, _)| p).collect();
        assert!(
            fresh
                .iter()
                .any(|p| p == "Vehicle.Chassis.Axle.Row1.Wheel.Left.Speed")
        );
        assert!(fresh.iter().any(|p| p == paths::SPEED));
        // The wheel speed's own max age (300 ms) passed; the body's signals are still fresh.
        assert_eq!(
            m.stale_paths(1_400),
            ["Vehicle.Chassis.Axle.Row1.Wheel.Left.Speed"]
        );
        assert!(!m.exec_signals(1_400).is_empty());
        // Receive ids: the chassis mapping reads 0x100 only (0x12C is not mapped).
        assert_eq!(
            m.receive_ids(BusId(1)),
            [telematics_can::CanId::standard(0x100)]
        );
        let body_ids = m.receive_ids(BusId(0));
        assert!(
            body_ids.contains(&telematics_can::CanId::standard(0x101)),
            "{body_ids:?}"
        );
        assert!(
            !body_ids.contains(&telematics_can::CanId::standard(0x200)),
            "the command is sent, not read"
        );
        assert!(m.receive_ids(BusId(7)).is_empty());
        let body_signals = VehicleModel::demo().expect("demo").mapped_signals();
        assert_eq!(m.mapped_signals(), body_signals + 1);
    }

    /// A frame's signals are as old as the frame's own timestamp, not its arrival.
    #[test]
    fn signals_age_from_the_frame_timestamp() {
        let mut m = VehicleModel::demo().expect("demo model");
        let car = CarState::default();
        let stamp = |mut f: CanFrame, ms: u64| {
            f.timestamp_us = Some(ms * 1000);
            f
        };
        for f in car.status_frames(m.dbc(), 1, true).expect("frames") {
            // Received at 10 s, stamped 1.2 s earlier: past the speed's 500 ms and the doors'
            // 1000 ms.
            m.on_frame(&stamp(f, 8_800), 10_000);
        }
        assert!(m.exec_signals(10_000).is_empty());
        assert!(m.stale_paths(10_000).iter().any(|p| p == paths::SPEED));
        for f in car.status_frames(m.dbc(), 1, true).expect("frames") {
            // Stamped in the future (skew): taken as received now.
            m.on_frame(&stamp(f, 99_000), 10_000);
        }
        assert!(!m.exec_signals(10_000).is_empty());
        assert!(
            m.exec_signals(10_501)
                .iter()
                .all(|s| !matches!(s, VehicleSignal::SpeedKmh(_)))
        );
    }

    /// Loading every bus of a `[[can.bus]]` configuration: a bad file names its bus's key.
    #[test]
    fn load_names_the_bus_key_of_a_bad_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let (bd, bm) = (
            write("b.dbc", demo::DEMO_DBC),
            write("b.toml", demo::DEMO_VSS_TOML),
        );
        let (cd, cm) = (write("c.dbc", "not a dbc"), write("c.toml", ""));
        let profile = write("p.toml", demo::DEMO_PROFILE_TOML);
        let text = format!(
            "[vehicle]\nvin = \"1M8GDM9AXKP042788\"\n\
             [can]\nprofile = {profile:?}\n\
             [[can.bus]]\nname = \"body\"\nsource = \"tcp\"\ninterface = \"127.0.0.1:1\"\n\
             dbc = {bd:?}\nmapping = {bm:?}\n\
             [[can.bus]]\nname = \"chassis\"\nsource = \"tcp\"\ninterface = \"127.0.0.1:2\"\n\
             dbc = {cd:?}\nmapping = {cm:?}\n"
        );
        let cfg = Config::from_toml_with_env(&text, Vec::new()).expect("config");
        let e = VehicleModel::load(&cfg)
            .expect_err("bad chassis DBC")
            .to_string();
        assert!(e.contains("can.bus[1].dbc: "), "{e}");
        std::fs::write(&cd, demo::DEMO_DBC).expect("write");
        std::fs::write(&cm, "[[signal]]\npath = 1").expect("write");
        let e = VehicleModel::load(&cfg)
            .expect_err("bad chassis mapping")
            .to_string();
        assert!(e.contains("can.bus[1].mapping: "), "{e}");
        std::fs::write(&cm, demo::DEMO_VSS_TOML).expect("write");
        let (m, _) = VehicleModel::load(&cfg).expect("both buses");
        assert_eq!(m.bus_names(), ["body", "chassis"]);
        // The profile's actions are checked against the DBC of the bus they name.
        std::fs::write(
            &profile,
            demo::DEMO_PROFILE_TOML.replacen(
                "[actions.lock]\nbus = \"body\"",
                "[actions.lock]\nbus = \"powertrain\"",
                1,
            ),
        )
        .expect("write");
        let e = VehicleModel::load(&cfg)
            .expect_err("no such bus")
            .to_string();
        assert!(
            e.contains("can.profile: actions.lock.bus: no bus \"powertrain\""),
            "{e}"
        );
    }

    #[test]
    fn garbage_frames_are_counted_not_fatal() {
        let mut m = VehicleModel::demo().expect("demo model");
        let f = CanFrame::new(telematics_can::CanId::standard(0x7FF), &[1, 2, 3]);
        assert!(m.on_frame(&f, 1).is_empty());
        assert_eq!(m.counters().1, 1);
    }

    #[test]
    fn dbc_load_warnings_reach_the_daemon() {
        // The demo DBC plus a message whose id is no CAN id (refused as written, warned).
        let dbc = format!(
            "{}\nBO_ 1073741824 NotAnId: 8 Vector__XXX\n SG_ Junk : 0|8@1+ (1,0) [0|255] \"\" Vector__XXX\n",
            demo::DEMO_DBC
        );
        let (_, warnings) = VehicleModel::from_text(
            &dbc,
            demo::DEMO_VSS_TOML,
            demo::DEMO_PROFILE_TOML,
            false,
            1000,
        )
        .expect("model");
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("can.dbc: NotAnId") && w.contains("message_id_out_of_range")),
            "{warnings:?}"
        );
    }

    #[test]
    fn mapping_errors_name_the_key() {
        let e = VehicleModel::from_text("not a dbc", "", "", false, 1000).expect_err("bad dbc");
        assert!(e.to_string().contains("can.dbc"), "{e}");
        let e = VehicleModel::from_text(demo::DEMO_DBC, "[[signal]]\npath=1", "", false, 1000)
            .expect_err("bad mapping");
        assert!(e.to_string().contains("can.mapping"), "{e}");
        let e = VehicleModel::from_text(
            demo::DEMO_DBC,
            demo::DEMO_VSS_TOML,
            &demo::DEMO_PROFILE_TOML.replace("\"TCU_BodyCommand\"", "\"X\""),
            false,
            1000,
        )
        .expect_err("bad profile");
        assert!(
            e.to_string()
                .contains("can.profile: actions.engine_start.message: no message \"X\" in the DBC"),
            "{e}"
        );
    }
}
