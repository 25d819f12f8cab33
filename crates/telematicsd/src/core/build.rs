//! Building the core's parts from the configuration (`Daemon::open`, before READY: every
//! fallible step fails closed there) and the constants that tune the core.

use telematics_exec::{ExecConfig, Executor};
use telematics_telemetry::{AlertEngine, OnChange, Schedule, ScheduleConfig, ThresholdRule};

use crate::config::Config;
use crate::error::DaemonError;
use crate::vehicle::VehicleModel;

/// Journal entries kept (the executor's idempotency window).
pub const JOURNAL_CAPACITY: usize = 1024;
/// How often the executor's view of the vehicle is refreshed from the signal store (a signal
/// that aged out there leaves the view; preconditions also refresh it before they are checked).
pub const FEED_PERIOD_MS: u64 = 100;
/// After start-up, verified commands wait up to this long for a complete vehicle state before
/// the preconditions are checked (a command queued at the broker arrives with the CONNACK,
/// often before the first status frames).
pub const WARMUP_MS: u64 = 3_000;

/// Everything [`VehicleCore`](super::VehicleCore) is made of, built from the configuration.
#[derive(Debug)]
pub struct CoreParts {
    /// The VIN (topics).
    pub vin: String,
    /// DBC + VSS mapping + signal store.
    pub model: VehicleModel,
    /// The command executor.
    pub exec: Executor,
    /// Telemetry schedule.
    pub schedule: Schedule,
    /// Alert rules.
    pub alerts: AlertEngine,
    /// The start-up hold ([`WARMUP_MS`] in the daemon).
    pub warmup_ms: u64,
    /// The SecOC key of the profile's authenticated actions (`None`: no action has `secoc`).
    pub secoc_key: Option<std::sync::Arc<telematics_can::protection::SecOcKey>>,
}

impl CoreParts {
    /// Loads the vehicle model and builds executor, schedule and alerts for `cfg` at `now`
    /// (monotonic ms). Returns the model's warnings (DBC or mapping entries not used).
    pub fn from_config(cfg: &Config, now: u64) -> Result<(Self, Vec<String>), DaemonError> {
        let (model, warnings) = VehicleModel::load(cfg)?;
        let parts = Self::with_model(cfg, model, now)?;
        Ok((parts, warnings))
    }

    /// Like [`from_config`](Self::from_config) with a given vehicle model.
    pub fn with_model(cfg: &Config, model: VehicleModel, now: u64) -> Result<Self, DaemonError> {
        let exec = Executor::new(exec_config(cfg, &model))
            .map_err(|e| DaemonError::Exec(e.to_string()))?;
        let schedule = Schedule::new(
            ScheduleConfig {
                vin: cfg.vehicle.vin.clone(),
                periodic_ms: cfg.telemetry.period_s * 1000,
                on_change: cfg
                    .telemetry
                    .on_change
                    .iter()
                    .map(|p| OnChange {
                        path: p.clone(),
                        deadband: 0.0,
                        min_interval_ms: 200,
                    })
                    .collect(),
            },
            now,
        )
        .map_err(|e| DaemonError::Telemetry(e.to_string()))?;
        let alerts = AlertEngine::new(&cfg.vehicle.vin, alert_rules(cfg))
            .map_err(|e| DaemonError::Telemetry(e.to_string()))?;
        let secoc_key = crate::secoc::load_key(cfg, model.profile())?;
        Ok(CoreParts {
            vin: cfg.vehicle.vin.clone(),
            model,
            exec,
            schedule,
            alerts,
            warmup_ms: WARMUP_MS,
            secoc_key,
        })
    }
}

fn exec_config(cfg: &Config, model: &VehicleModel) -> ExecConfig {
    let profile = model.profile();
    ExecConfig {
        stationary_max_kmh: cfg.commands.speed_threshold_kmh,
        lock_requires_doors_closed: true,
        confirm_timeout_ms: cfg.commands.confirm_timeout_ms,
        max_run_secs: u32::try_from(cfg.commands.max_engine_run_s).unwrap_or(u32::MAX),
        idempotency_capacity: JOURNAL_CAPACITY,
        // The vehicle's own rules, confirmations and signal paths.
        rules: profile.rules(),
        confirmations: profile.confirmations(),
        signal_paths: profile.signal_paths(),
    }
}

fn alert_rules(cfg: &Config) -> Vec<ThresholdRule> {
    let t = &cfg.telemetry;
    let mut rules = vec![
        ThresholdRule::low_fuel(
            "Vehicle.Powertrain.FuelSystem.RelativeLevel",
            t.low_fuel_pct,
            3.0,
        ),
        ThresholdRule {
            kind: "low_battery".into(),
            path: "Vehicle.LowVoltageBattery.CurrentVoltage".into(),
            raise_below: t.low_battery_v,
            clear_above: t.low_battery_v + 0.4,
            min_hold_ms: 10_000,
        },
        ThresholdRule::service_due("Vehicle.Service.DistanceToService", 0.0, 100.0),
    ];
    for axle in ["Row1", "Row2"] {
        for side in ["Left", "Right"] {
            rules.push(ThresholdRule::low_tire_pressure(
                &format!("Vehicle.Chassis.Axle.{axle}.Wheel.{side}.Tire.Pressure"),
                180.0,
                10.0,
            ));
        }
    }
    rules
}
