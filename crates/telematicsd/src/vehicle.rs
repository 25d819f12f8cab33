//! The vehicle model of the daemon: DBC + VSS mapping + vehicle profile + signal store, and the
//! two views the rest of the daemon needs from it — the executor's signals (read through the
//! profile's `[signals]` bindings) and telemetry values.
//!
//! Pure code (no I/O, `now` passed in); the runtime feeds it frames.

use telematics_can::dbc::DecodeOutcome;
use telematics_can::{
    BoundMapping, CanFrame, Change, Dbc, SignalValue, Timestamp, VehicleState, VssMapping, demo,
};
use telematics_exec::{SignalKind, VehicleSignal};
use telematics_profile::VehicleProfile;

use crate::config::{CanSourceKind, Config};
use crate::error::DaemonError;

/// VSS paths the executor's signals are derived from (shared with the executor, which names
/// them in `stale_state` details).
pub use telematics_exec::paths;

/// DBC, mapping, profile and the decoded signal store.
#[derive(Debug)]
pub struct VehicleModel {
    dbc: Dbc,
    mapping: BoundMapping,
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
        let dbc = Dbc::parse(dbc_text).map_err(|e| DaemonError::Can(format!("can.dbc: {e}")))?;
        let mapping = if json {
            VssMapping::from_kuksa_json(mapping_text, default_max_age_ms)
        } else {
            VssMapping::from_toml(mapping_text)
        }
        .map_err(|e| DaemonError::Can(format!("can.mapping: {e}")))?;
        let (bound, unbound) = mapping.bind_lenient(&dbc);
        // What the DBC loader tolerated (ids refused as written, long-name conflicts, value
        // tables for missing signals), then the mapping entries that did not bind.
        let warnings = dbc
            .warnings()
            .iter()
            .map(|w| format!("can.dbc: {w}"))
            .chain(unbound.into_iter().map(|w| format!("can.mapping: {w}")))
            .collect();
        let paths: Vec<&str> = bound.entries().iter().map(|e| e.path.as_str()).collect();
        let profile = VehicleProfile::parse(profile_text, &dbc, &paths)
            .map_err(|e| DaemonError::Can(format!("can.profile: {e}")))?;
        let state = VehicleState::from_mapping(&bound);
        let model = VehicleModel {
            dbc,
            mapping: bound,
            profile,
            state,
            frames: 0,
            unknown: 0,
            errors: 0,
        };
        Ok((model, warnings))
    }

    /// The demo vehicle (built-in DBC and mapping) used by `can.source = "sim"`.
    pub fn demo() -> Result<Self, DaemonError> {
        Self::from_text(
            demo::DEMO_DBC,
            demo::DEMO_VSS_TOML,
            demo::DEMO_PROFILE_TOML,
            false,
            2_000,
        )
        .map(|(m, _)| m)
    }

    /// Loads the files named by `[can]` (or the demo model for `sim`).
    pub fn load(cfg: &Config) -> Result<(Self, Vec<String>), DaemonError> {
        if cfg.can.source == CanSourceKind::Sim {
            return Self::demo().map(|m| (m, Vec::new()));
        }
        let read = |key: &str, p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map_err(|e| DaemonError::Can(format!("{key}: cannot read {}: {e}", p.display())))
        };
        let dbc = read("can.dbc", &cfg.can.dbc)?;
        let mapping = read("can.mapping", &cfg.can.mapping)?;
        let profile = read("can.profile", &cfg.can.profile)?;
        let json = cfg
            .can
            .mapping
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Self::from_text(&dbc, &mapping, &profile, json, cfg.can.max_age_ms)
    }

    /// The DBC (for encoding actuation frames).
    pub fn dbc(&self) -> &Dbc {
        &self.dbc
    }

    /// The vehicle profile (actuation frames, acknowledgement, rules).
    pub fn profile(&self) -> &VehicleProfile {
        &self.profile
    }

    /// Frames seen, frames with an id the DBC does not know, frames that failed to decode.
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.frames, self.unknown, self.errors)
    }

    /// Decodes one frame and applies it; returns the reported changes.
    pub fn on_frame(&mut self, frame: &CanFrame, now_ms: u64) -> Vec<Change> {
        self.frames += 1;
        match self.dbc.decode_frame(frame) {
            Ok(DecodeOutcome::Decoded(d)) => self.state.apply(&self.mapping, &d, Timestamp(now_ms)),
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
        self.mapping.entries().len()
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
    use telematics_can::demo::{CarState, Gear};

    fn feed(m: &mut VehicleModel, car: &CarState, now: u64) {
        let frames = car
            .status_frames(&m.dbc, 1, true)
            .expect("encode status frames");
        for f in &frames {
            m.on_frame(f, now);
        }
        // TPMS is multiplexed: send the other wheels too.
        for c in 2..5u8 {
            for f in car.status_frames(&m.dbc, c, false).expect("encode") {
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
