//! The SecOC key of the vehicle's authenticated actuation frames (`[can] secoc_key`): loaded
//! when the vehicle profile puts `secoc` on an action, refused unless only the daemon can read
//! it. The frames themselves are authenticated in the core (`VehicleCore::actuate`) with the
//! freshness value committed before the frame leaves (docs/vehicle-profile.md, SecOC).

use std::sync::Arc;

use telematics_can::protection::SecOcKey;
use telematics_profile::VehicleProfile;

use crate::config::Config;
use crate::error::DaemonError;

/// The actions of `profile` whose frames carry SecOC (`actions.<name>.secoc`).
pub fn secured_actions(profile: &VehicleProfile) -> Vec<&'static str> {
    profile
        .actions
        .iter()
        .filter(|a| a.frame.secoc.is_some())
        .map(|a| a.actuate.name())
        .collect()
}

/// The key for `profile`'s SecOC frames: `None` when no action has `secoc`; an error naming
/// `can.secoc_key` when one has and the key is not configured, not readable, readable by
/// group or others (a file), or not 16 bytes (raw, or 32 hex digits). Never logs the key.
pub fn load_key(
    cfg: &Config,
    profile: &VehicleProfile,
) -> Result<Option<Arc<SecOcKey>>, DaemonError> {
    let secured = secured_actions(profile);
    if secured.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| DaemonError::Can(format!("can.secoc_key: {why}"));
    let Some(source) = &cfg.can.secoc_key else {
        return Err(bad(format!(
            "required: the vehicle profile authenticates {} with SecOC",
            secured.join(", ")
        )));
    };
    let path = source.path().map_err(|e| bad(e.to_string()))?;
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(&path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "{} has mode {mode:o}: only the daemon may read it (0600 or 0400)",
                source.describe()
            )));
        }
    }
    let bytes = zeroize::Zeroizing::new(source.read("SecOC key").map_err(|e| bad(e.to_string()))?);
    let key = SecOcKey::from_file_bytes(&bytes).map_err(|_| {
        bad(format!(
            "{}: a SecOC key is 16 bytes (raw) or 32 hex digits",
            source.describe()
        ))
    })?;
    Ok(Some(Arc::new(key)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_parse_raw_or_hex_and_nothing_else() {
        let ok = |b: &[u8]| SecOcKey::from_file_bytes(b).is_ok();
        assert!(ok(&[7u8; 16]));
        assert!(ok(b"000102030405060708090a0b0c0d0e0f\n"));
        assert!(!ok(&[7u8; 15]));
        assert!(!ok(b"000102030405060708090a0b0c0d0e"));
        assert!(!ok(b"not a key at all, not hex either"));
        // The hex form is the raw key: the same MAC.
        let raw = SecOcKey::from_file_bytes(&[0x2b; 16]).unwrap();
        let hex = SecOcKey::from_file_bytes("2b".repeat(16).as_bytes()).unwrap();
        assert_eq!(raw.cmac(&[b"x"]), hex.cmac(&[b"x"]));
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secoc.key");
        std::fs::write(&f, [1u8; 16]).unwrap();
        let mut cfg = Config::default();
        cfg.can.secoc_key = Some(telematics_keystore::SecretSource::File(f.clone()));
        let check = |cfg: &Config| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
            let ok = check_mode(cfg);
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            (ok, check_mode(cfg))
        };
        let (ok, readable) = check(&cfg);
        assert!(ok.is_ok(), "{ok:?}");
        let e = readable.unwrap_err().to_string();
        assert!(e.contains("can.secoc_key") && e.contains("mode 644"), "{e}");
        assert!(!e.contains("0101"), "never the key: {e}");
    }

    /// `load_key` for a profile with one SecOC action (the demo car's unlock, secured).
    fn check_mode(cfg: &Config) -> Result<Option<Arc<SecOcKey>>, DaemonError> {
        let (model, _) = crate::vehicle::VehicleModel::from_text(
            telematics_can::demo::DEMO_DBC,
            telematics_can::demo::DEMO_VSS_TOML,
            &telematics_can::demo::demo_profile_with_secoc_unlock(),
            false,
            2_000,
        )
        .expect("secured profile");
        load_key(cfg, model.profile())
    }

    #[test]
    fn no_secoc_action_needs_no_key_and_a_missing_key_names_the_actions() {
        let cfg = Config::default();
        let (plain, _) = crate::vehicle::VehicleModel::from_text(
            telematics_can::demo::DEMO_DBC,
            telematics_can::demo::DEMO_VSS_TOML,
            telematics_can::demo::DEMO_PROFILE_TOML,
            false,
            2_000,
        )
        .unwrap();
        assert!(load_key(&cfg, plain.profile()).unwrap().is_none());
        assert_ne!(
            telematics_can::demo::demo_profile_with_secoc_unlock(),
            telematics_can::demo::DEMO_PROFILE_TOML
        );
        let e = check_mode(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("can.secoc_key: required") && e.contains("unlock"),
            "{e}"
        );
    }
}
