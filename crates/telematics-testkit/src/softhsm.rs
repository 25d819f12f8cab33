//! A SoftHSM2 installation in a temporary directory (Debian package `softhsm2`): its own
//! softhsm2.conf and token directory, tokens initialised with softhsm2-util, keys provisioned
//! with pkcs11-tool (package `opensc`) as docs/deploy.md shows. SoftHSM2 reads `SOFTHSM2_CONF`
//! from the environment of the process that loads it: [`SoftHsm::conf`] is what to set.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The user PIN of every token made here.
pub const PIN: &str = "246813";
/// The security officer PIN.
pub const SO_PIN: &str = "13579";

/// A temporary SoftHSM2 token directory with initialised tokens.
#[derive(Debug)]
pub struct SoftHsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    module: PathBuf,
}

impl SoftHsm {
    /// Writes the configuration and initialises one token per label (user PIN [`PIN`]).
    /// Panics when SoftHSM2 is not installed (scripts/install-test-deps.sh installs it).
    pub fn new(tokens: &[&str]) -> SoftHsm {
        let dir = tempfile::Builder::new()
            .prefix("softhsm-")
            .tempdir()
            .expect("tempdir");
        let tokendir = dir.path().join("tokens");
        std::fs::create_dir(&tokendir).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokendir.display()
            ),
        )
        .expect("softhsm2.conf");
        let module = [
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("SoftHSM2 not installed (apt-get install softhsm2; scripts/install-test-deps.sh)");
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).expect("pin file");
        let hsm = SoftHsm { dir, conf, module };
        for label in tokens {
            hsm.run(
                "softhsm2-util",
                &[
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--so-pin",
                    SO_PIN,
                    "--pin",
                    PIN,
                ],
            );
        }
        hsm
    }

    /// The temporary directory (token files, PIN file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The softhsm2.conf to put in `SOFTHSM2_CONF`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The PKCS#11 module.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// A file holding [`PIN`] and a newline.
    pub fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    fn run(&self, prog: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new(prog)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e} (scripts/install-test-deps.sh)"));
        assert!(out.status.success(), "{prog} {args:?}: {out:?}");
        out.stdout
    }

    /// Runs pkcs11-tool on token `token`, logged in with [`PIN`].
    pub fn pkcs11_tool(&self, token: &str, args: &[&str]) -> Vec<u8> {
        let module = self.module.display().to_string();
        let mut all = vec!["--module", module.as_str(), "--token-label", token];
        all.extend_from_slice(&["--login", "--pin", PIN]);
        all.extend_from_slice(args);
        self.run("pkcs11-tool", &all)
    }

    /// Provisions `token` as docs/deploy.md does: a sensitive, non-extractable EC P-256 key pair
    /// labelled `key_label` and an AES-256 key labelled `seal_label`.
    pub fn provision(&self, token: &str, key_label: &str, seal_label: &str) {
        self.pkcs11_tool(
            token,
            &[
                "--keypairgen",
                "--key-type",
                "EC:prime256v1",
                "--label",
                key_label,
                "--id",
                "01",
                "--usage-sign",
                "--sensitive",
            ],
        );
        self.pkcs11_tool(
            token,
            &[
                "--keygen",
                "--key-type",
                "AES:32",
                "--label",
                seal_label,
                "--id",
                "02",
                "--sensitive",
            ],
        );
    }

    /// SubjectPublicKeyInfo DER of the public key `label` in `token`.
    pub fn public_key_spki(&self, token: &str, label: &str) -> Vec<u8> {
        let out = self.dir.path().join(format!("{label}.pub.der"));
        let o = out.display().to_string();
        self.pkcs11_tool(
            token,
            &[
                "--read-object",
                "--type",
                "pubkey",
                "--label",
                label,
                "-o",
                &o,
            ],
        );
        std::fs::read(out).expect("public key file")
    }
}
