//! A SoftHSM2 token in a temporary directory for the daemon process (which gets
//! `SOFTHSM2_CONF` in its environment), provisioned with the commands of docs/deploy.md
//! (softhsm2-util, pkcs11-tool): a non-extractable EC P-256 identity key and an AES-256
//! sealing key.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Label of the token.
pub const TOKEN: &str = "telematicsd";
/// User PIN.
pub const PIN: &str = "246813";

/// The token and its files.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub module: PathBuf,
    pub pin_file: PathBuf,
}

impl SoftHsm {
    /// Initialises a token and provisions the identity and sealing keys.
    pub fn provisioned() -> SoftHsm {
        let dir = tempfile::Builder::new()
            .prefix("softhsm-")
            .tempdir()
            .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let module = [
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("SoftHSM2 not installed (scripts/install-test-deps.sh)");
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        let hsm = SoftHsm {
            dir,
            conf,
            module,
            pin_file,
        };
        hsm.run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--so-pin",
                "13579",
                "--pin",
                PIN,
            ],
        );
        hsm.pkcs11_tool(&[
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "telematicsd-identity",
            "--id",
            "01",
            "--usage-sign",
            "--sensitive",
        ]);
        hsm.pkcs11_tool(&[
            "--login",
            "--pin",
            PIN,
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "telematicsd-seal",
            "--id",
            "02",
            "--sensitive",
        ]);
        hsm
    }

    fn run(&self, prog: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new(prog)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        assert!(out.status.success(), "{prog} {args:?}: {out:?}");
        out.stdout
    }

    /// Runs pkcs11-tool on the token.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Vec<u8> {
        let module = self.module.display().to_string();
        let mut all = vec!["--module", module.as_str(), "--token-label", TOKEN];
        all.extend_from_slice(args);
        self.run("pkcs11-tool", &all)
    }

    /// SubjectPublicKeyInfo DER of the identity key (read from the token).
    pub fn identity_spki(&self) -> Vec<u8> {
        let out = self.dir.path().join("identity.pub.der");
        let o = out.display().to_string();
        self.pkcs11_tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "telematicsd-identity",
            "-o",
            &o,
        ]);
        std::fs::read(out).unwrap()
    }

    /// The `[keys]` section for the daemon, PIN from `pin_file`.
    pub fn keys_toml(&self, pin_file: &Path) -> String {
        format!(
            "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = {:?}\ntoken_label = \"{TOKEN}\"\n\
             pin = {{ file = {:?} }}\nkey_label = \"telematicsd-identity\"\n\
             seal_key_label = \"telematicsd-seal\"\n",
            self.module, pin_file
        )
    }
}
