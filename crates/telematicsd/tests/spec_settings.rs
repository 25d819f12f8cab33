//! One source of truth for the security settings: the "Vehicle settings" table of
//! docs/protocol.md §5 is parsed, and every default and range in it is compared with the
//! daemon's `[security]` defaults, its configuration check (each bound accepted, one past it
//! refused with the key named) and the protocol crate's `Config::default()`.
#![allow(clippy::unwrap_used)]

use telematicsd::Config;

const VIN: &str = "1M8GDM9AXKP042788";

struct Row {
    key: String,
    default: u64,
    lo: Bound,
    hi: Option<Bound>,
}

#[derive(Debug)]
enum Bound {
    Lit(u64),
    Key(String, u64),
}

fn bound(s: &str) -> Bound {
    let s = s.trim();
    match s.parse() {
        Ok(n) => Bound::Lit(n),
        Err(_) => match s.split_once('+') {
            Some((k, n)) => Bound::Key(k.trim().to_owned(), n.trim().parse().unwrap()),
            None => Bound::Key(s.to_owned(), 0),
        },
    }
}

fn spec_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let md = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let start = md
        .find("### Vehicle settings (defaults and ranges)")
        .expect("docs/protocol.md has the vehicle settings table");
    let mut rows = Vec::new();
    for line in md[start..].lines().skip(1) {
        if line.starts_with("###") {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`security.") {
            continue;
        }
        let range = cells[3].trim_matches('`');
        let (lo, hi) = match range.split_once("..=") {
            Some((lo, hi)) => (bound(lo), Some(bound(hi))),
            None => (bound(range.strip_suffix("..").expect("LO..")), None),
        };
        rows.push(Row {
            key: cells[1].trim_matches('`').to_owned(),
            default: cells[2]
                .parse()
                .unwrap_or_else(|_| panic!("default of {}", cells[1])),
            lo,
            hi,
        });
    }
    rows
}

fn default_value(key: &str) -> u64 {
    let v = toml::Value::try_from(Config::default()).unwrap();
    let (section, k) = key.split_once('.').unwrap();
    v[section][k]
        .as_integer()
        .unwrap_or_else(|| panic!("{key} is not an integer setting of the daemon"))
        .try_into()
        .unwrap()
}

fn resolve(b: &Bound) -> u64 {
    match b {
        Bound::Lit(n) => *n,
        Bound::Key(k, n) => default_value(k) + n,
    }
}

/// Validates the default configuration with `key = value`; `Err` is the configuration
/// check's message about `key` itself (a bound a row states is that key's own; a constraint
/// between two keys is stated, and checked, in the row of the dependent key).
fn with(key: &str, value: u64) -> Result<(), String> {
    let (section, k) = key.split_once('.').unwrap();
    let text = format!("[vehicle]\nvin = \"{VIN}\"\n[{section}]\n{k} = {value}\n");
    match Config::from_toml_with_env(&text, Vec::new()) {
        Ok(_) => Ok(()),
        Err(telematicsd::DaemonError::ConfigInvalid(errs)) => {
            match errs.into_iter().find(|e| e.starts_with(&format!("{key}:"))) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        Err(e) => panic!("{key} = {value}: {e}"),
    }
}

#[test]
fn spec_settings_table_matches_the_daemon() {
    let rows = spec_rows();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    for want in [
        "security.pbkdf2_iterations",
        "security.min_pbkdf2_iterations",
        "security.max_ttl_s",
        "security.clock_skew_s",
        "security.lockout_threshold",
        "security.lockout_hard_limit",
        "security.lockout_base_s",
        "security.reset_confirm_window_s",
    ] {
        assert!(keys.contains(&want), "{want} missing from the spec table");
    }
    for r in &rows {
        assert_eq!(default_value(&r.key), r.default, "default of {}", r.key);
        let lo = resolve(&r.lo);
        assert!(
            with(&r.key, lo).is_ok(),
            "{} = {lo} (lower bound) refused",
            r.key
        );
        if lo > 0 {
            let e = with(&r.key, lo - 1).expect_err(&format!("{} = {} accepted", r.key, lo - 1));
            assert!(e.contains(&r.key), "{e}");
        }
        match &r.hi {
            Some(hi) => {
                let hi = resolve(hi);
                assert!(
                    with(&r.key, hi).is_ok(),
                    "{} = {hi} (upper bound) refused",
                    r.key
                );
                let e =
                    with(&r.key, hi + 1).expect_err(&format!("{} = {} accepted", r.key, hi + 1));
                assert!(e.contains(&r.key), "{e}");
            }
            None => {
                // No upper bound: a large value is accepted.
                let big = lo
                    .max(r.default)
                    .saturating_mul(10)
                    .min(u64::from(u32::MAX));
                assert!(with(&r.key, big).is_ok(), "{} = {big} refused", r.key);
            }
        }
    }
}

/// The protocol crate's own defaults are the spec's too, and the daemon hands its settings to
/// the verifier unchanged (a 299 s TTL and a 600 000 minimum, as the spec says).
#[test]
fn protocol_defaults_equal_the_daemon_defaults() {
    let daemon = telematicsd::security::protocol_config(&Config::default());
    let proto = telematics_security::Config::default();
    assert_eq!(daemon, proto);
    for r in spec_rows() {
        let got = match r.key.as_str() {
            "security.pbkdf2_iterations" => u64::from(proto.pbkdf2_iterations),
            "security.min_pbkdf2_iterations" => u64::from(proto.min_pbkdf2_iterations),
            "security.max_ttl_s" => proto.max_ttl_secs,
            "security.clock_skew_s" => proto.clock_skew_secs,
            "security.lockout_threshold" => u64::from(proto.lockout_threshold),
            "security.lockout_hard_limit" => u64::from(proto.hard_limit),
            "security.lockout_base_s" => proto.base_wait_secs,
            "security.reset_confirm_window_s" => proto.reset_confirm_window_secs,
            other => panic!("no protocol field for {other}"),
        };
        assert_eq!(got, r.default, "protocol default of {}", r.key);
    }
    // A 299 s validity window is inside the default maximum; 301 s is not.
    assert!(proto.max_ttl_secs >= 299 && proto.max_ttl_secs < 301);
    // The spec's production minimum is enforced by default: 100 000 iterations is refused
    // unless the minimum is lowered explicitly.
    let e = with("security.pbkdf2_iterations", 100_000).unwrap_err();
    assert!(e.contains("security.pbkdf2_iterations"), "{e}");
    let text = format!(
        "[vehicle]\nvin = \"{VIN}\"\n[security]\npbkdf2_iterations = 100000\nmin_pbkdf2_iterations = 100000\n"
    );
    let c = Config::from_toml_with_env(&text, Vec::new()).unwrap();
    let p = telematicsd::security::protocol_config(&c);
    assert_eq!(
        (p.pbkdf2_iterations, p.min_pbkdf2_iterations),
        (100_000, 100_000)
    );
    assert!(p.validate().is_ok());
}

/// The embedded default mapping name and the shipped example agree: same format (TOML, chosen
/// by the extension), the example configuration names the shipped mapping, and that mapping
/// parses as TOML.
#[test]
fn default_mapping_name_matches_the_shipped_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let example = std::path::Path::new(root).join("crates/telematics-can/data/demo_car_vss.toml");
    let default = Config::default().can.mapping;
    assert_eq!(
        default.extension(),
        example.extension(),
        "default {} vs shipped {}",
        default.display(),
        example.display()
    );
    let text = std::fs::read_to_string(format!("{root}/systemd/telematicsd.toml")).unwrap();
    let cfg = Config::from_toml_with_env(&text, Vec::new()).unwrap();
    assert_eq!(cfg.can.mapping.file_name(), example.file_name());
    telematics_can::VssMapping::from_toml(&std::fs::read_to_string(&example).unwrap())
        .expect("the shipped mapping is TOML");
}

/// The example configuration names the shipped vehicle profile, and the shipped DBC, mapping
/// and profile load together (what `check-config` checks on an installed system).
#[test]
fn the_shipped_profile_is_named_by_the_example_and_validates() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let data = std::path::Path::new(root).join("crates/telematics-can/data");
    let text = std::fs::read_to_string(format!("{root}/systemd/telematicsd.toml")).unwrap();
    let mut cfg = Config::from_toml_with_env(&text, Vec::new()).unwrap();
    assert_eq!(
        cfg.can.profile.file_name().and_then(|n| n.to_str()),
        Some("demo_car_profile.toml")
    );
    for p in [&mut cfg.can.dbc, &mut cfg.can.mapping, &mut cfg.can.profile] {
        *p = data.join(p.file_name().unwrap());
    }
    let (model, _) = telematicsd::vehicle::VehicleModel::load(&cfg).expect("shipped files load");
    assert_eq!(model.profile().actions.len(), 6);
}

/// `telematicsd check-config` loads DBC, mapping and profile: a profile that does not fit the
/// DBC fails (exit 2) naming the profile key; the shipped files pass.
#[test]
fn check_config_validates_the_profile_naming_the_key() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let data = std::path::Path::new(root).join("crates/telematics-can/data");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["ca.pem", "cert.pem", "key.pem", "backend.pub"] {
        std::fs::write(d.join(f), b"x").unwrap();
    }
    let profile = std::fs::read_to_string(data.join("demo_car_profile.toml")).unwrap();
    let bad = profile.replacen(
        "[actions.unlock]\nbus = \"body\"\nmessage = \"TCU_BodyCommand\"",
        "[actions.unlock]\nbus = \"body\"\nmessage = \"X\"",
        1,
    );
    assert_ne!(bad, profile);
    let run = |profile_text: &str| {
        std::fs::write(d.join("profile.toml"), profile_text).unwrap();
        let config = format!(
            "[vehicle]\nvin = \"1M8GDM9AXKP042788\"\n[can]\ndbc = {:?}\nmapping = {:?}\n\
             profile = {:?}\n[mqtt]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
             [security]\nbackend_public_key = {:?}\n[state]\ndirectory = {:?}\n",
            data.join("demo_car.dbc"),
            data.join("demo_car_vss.toml"),
            d.join("profile.toml"),
            d.join("ca.pem"),
            d.join("cert.pem"),
            d.join("key.pem"),
            d.join("backend.pub"),
            d,
        );
        std::fs::write(d.join("telematicsd.toml"), config).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_telematicsd"))
            .arg("--config")
            .arg(d.join("telematicsd.toml"))
            .arg("check-config")
            .output()
            .unwrap()
    };
    let out = run(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("can.profile: actions.unlock.message: no message \"X\" in the DBC"),
        "{err}"
    );
    let out = run(&profile);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
