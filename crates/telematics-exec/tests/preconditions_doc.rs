//! docs/preconditions.md and `RULES` agree: the same (action, check) pairs in the same order,
//! the signal each check reads and the reason code it refuses with, as the executor really
//! evaluates them.
#![allow(clippy::unwrap_used)]

use telematics_exec::{
    Actuate, Check, ExecConfig, RULES, Reject, VehicleSignal, VehicleState, check,
};

/// A signal value that passes (`true`) or fails (`false`) the check.
fn signal(c: Check, pass: bool) -> VehicleSignal {
    match c {
        Check::Stationary => VehicleSignal::SpeedKmh(if pass { 0.0 } else { 30.0 }),
        Check::InPark => VehicleSignal::InPark(pass),
        Check::DoorsClosed => VehicleSignal::DoorsClosed(pass),
        Check::HoodClosed => VehicleSignal::HoodClosed(pass),
        Check::NoKeyInCabin => VehicleSignal::KeyInCabin(!pass),
        Check::EngineOff => VehicleSignal::EngineRunning(!pass),
        Check::EngineOn => VehicleSignal::EngineRunning(pass),
    }
}

struct Row {
    action: Actuate,
    check: Option<Check>,
    /// The paths of the "signal read" cell (backticked, comma-separated).
    signal: Vec<String>,
    reason: String,
}

fn doc_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/preconditions.md");
    let md = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let strip = |s: &str| s.trim().trim_matches('`').to_owned();
    let mut rows = Vec::new();
    for line in md.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        if cells.len() != 5 || !line.starts_with("| `") {
            continue;
        }
        let action_cell = strip(cells[0].trim_start_matches('|'));
        let action = Actuate::from_name(&action_cell)
            .unwrap_or_else(|| panic!("unknown action {action_cell:?} in {path}"));
        let check_cell = strip(cells[1]);
        let check = if check_cell == "(none)" {
            None
        } else {
            Some(
                Check::from_name(&check_cell)
                    .unwrap_or_else(|| panic!("unknown check {check_cell:?} in {path}")),
            )
        };
        rows.push(Row {
            action,
            check,
            signal: cells[3]
                .split(',')
                .map(strip)
                .filter(|s| !s.is_empty())
                .collect(),
            reason: strip(cells[4].trim_end_matches('|')),
        });
    }
    rows
}

#[test]
fn preconditions_md_matches_rules() {
    let rows = doc_rows();
    assert!(
        !rows.is_empty(),
        "no rule rows parsed from docs/preconditions.md"
    );
    // Same pairs, same order per action.
    for a in Actuate::ALL {
        let doc: Vec<Check> = rows
            .iter()
            .filter(|r| r.action == a)
            .filter_map(|r| r.check)
            .collect();
        let code: Vec<Check> = RULES
            .iter()
            .filter(|(k, _)| *k == a)
            .map(|(_, c)| *c)
            .collect();
        assert_eq!(doc, code, "checks of {}", a.name());
        assert!(
            rows.iter().any(|r| r.action == a),
            "{} has no row (write `(none)`)",
            a.name()
        );
    }
    let cfg = ExecConfig::default();
    for r in rows.iter() {
        let Some(c) = r.check else {
            // No precondition: allowed whatever the (even empty) state.
            assert_eq!(check(r.action, &VehicleState::default(), &cfg), Ok(()));
            continue;
        };
        let name = format!("{} / {}", r.action.name(), c.name());
        // The signal read: with no state the check refuses stale_state naming it.
        match c.eval(&VehicleState::default(), &cfg) {
            Err(Reject::StaleState(kind)) => assert_eq!(kind.vss_paths(), r.signal, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        // The reason: every other check of the action passes, this one fails.
        let mut st = VehicleState::default();
        for (k, other) in RULES {
            if *k == r.action {
                st.update(signal(*other, true));
            }
        }
        assert_eq!(check(r.action, &st, &cfg), Ok(()), "{name}: all pass");
        st.update(signal(c, false));
        let got = check(r.action, &st, &cfg).unwrap_err();
        assert_eq!(got.code(), r.reason, "{name}");
    }
    // Lock's door rule is the configurable one the document describes.
    let mut st = VehicleState::default();
    st.update(VehicleSignal::DoorsClosed(false));
    let off = ExecConfig {
        lock_requires_doors_closed: false,
        ..cfg.clone()
    };
    assert_eq!(check(Actuate::Lock, &st, &off), Ok(()));
    assert_eq!(
        check(Actuate::Lock, &st, &cfg).unwrap_err().code(),
        "door_open"
    );
}
