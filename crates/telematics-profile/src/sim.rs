//! The simulated body controller for a vehicle given by its files: the profile and, per bus,
//! a DBC and a VSS mapping (the same files the daemon reads). Used by `telematicsctl sim` and
//! the end-to-end tests to play any vehicle, not only the demo car.

use telematics_can::sim::{BodyController, SimBus};
use telematics_can::{Dbc, vss::VssMapping};

use crate::{ProfileError, VehicleProfile};

/// One bus of a simulated vehicle: its name, DBC text and mapping (TOML) text.
#[derive(Debug, Clone, Copy)]
pub struct BusFiles<'a> {
    /// Bus name, as the profile names it (`body`).
    pub name: &'a str,
    /// The bus's DBC.
    pub dbc: &'a str,
    /// The bus's VSS mapping (TOML).
    pub mapping: &'a str,
}

/// A body controller playing the vehicle of `profile` on `buses`. A file that does not parse
/// is an error naming it (`bus.body.dbc: ...`); the profile is checked as the daemon checks it.
pub fn body_controller(
    profile: &str,
    buses: &[BusFiles<'_>],
) -> Result<BodyController, ProfileError> {
    let mut sim_buses = Vec::with_capacity(buses.len());
    for b in buses {
        let key = |k: &str| format!("bus.{}.{k}", b.name);
        let dbc = Dbc::parse(b.dbc).map_err(|e| ProfileError::at(key("dbc"), e.to_string()))?;
        let mapping = VssMapping::from_toml(b.mapping)
            .and_then(|m| m.bind(&dbc))
            .map_err(|e| ProfileError::at(key("mapping"), e.to_string()))?;
        sim_buses.push(SimBus {
            name: b.name.to_string(),
            dbc,
            mapping,
        });
    }
    let named: Vec<(&str, &Dbc)> = sim_buses
        .iter()
        .map(|b| (b.name.as_str(), &b.dbc))
        .collect();
    let paths: Vec<&str> = sim_buses
        .iter()
        .flat_map(|b| b.mapping.entries().iter().map(|e| e.path.as_str()))
        .collect();
    let parsed = VehicleProfile::parse_on_buses(profile, &named, &paths)?;
    let sim = parsed
        .sim_profile()
        .ok_or_else(|| ProfileError::at("ack", "the simulator needs an [ack]"))?;
    BodyController::for_vehicle(sim_buses, sim).map_err(|e| ProfileError::at("bus", e.to_string()))
}
