//! Sealed security state end to end (docs/protocol.md, "Sealed security state"): the daemon
//! binary with its sealing key as a systemd credential outside the state directory, or with
//! its identity and sealing keys in a SoftHSM2 token. A copy of the state directory of a
//! paired daemon holds neither a device secret nor the code verifier; a state that does not
//! open refuses to start; a clear state is sealed at the first start with a key.

use std::path::{Path, PathBuf};

use telematics_it::{CODE, Device, Options, VIN, World};
use telematics_keystore::{
    KeyStore, KeysConfig, Sealer, SecretSource, is_sealed, write_new_seal_key,
};
use telematics_security::{Action, SecurityState};
use telematics_telemetry::ResultState;
use telematics_testkit::P256PublicKey;
use telematics_testkit::softhsm::SoftHsm;

use crate::DAEMON;

/// Systemd credential name of the sealing key, and its label in [`TOKEN`].
pub(crate) const SEAL_CRED: &str = "telematicsd-seal";
/// Label of the SoftHSM2 token of the token tests.
pub(crate) const TOKEN: &str = "telematicsd";
/// Label of the identity key in [`TOKEN`].
pub(crate) const IDENTITY: &str = "telematicsd-identity";

/// The `[keys]` section of a daemon with both keys in `hsm`'s token, PIN from `pin_file`.
pub(crate) fn token_keys_toml(hsm: &SoftHsm, pin_file: &Path) -> String {
    format!(
        "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = {:?}\ntoken_label = \"{TOKEN}\"\n\
         pin = {{ file = {:?} }}\nkey_label = \"{IDENTITY}\"\nseal_key_label = \"{SEAL_CRED}\"\n",
        hsm.module(),
        pin_file
    )
}

/// Copies the state directory of `w` (a dump of the flash) and returns the copy,
/// all its bytes and its security state record, which must be sealed.
fn dump_state(w: &World) -> (tempfile::TempDir, Vec<u8>, Vec<u8>) {
    let copy = copy_dir(&state_dir(w));
    let dump = all_bytes(copy.path());
    let sealed = stored_record(copy.path());
    assert!(is_sealed(&sealed), "the security state record is sealed");
    (copy, dump, sealed)
}

/// Every file under `dir`, byte for byte, into a fresh directory (a dump of the flash).
pub(crate) fn copy_dir(dir: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let mut stack = vec![(dir.to_path_buf(), out.path().to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), target));
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    out
}

pub(crate) fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(p).unwrap());
            }
        }
    }
    out
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn cbor(v: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// A secret value in each form it could take in the store: raw bytes, and as the clear
/// state's CBOR encodes it.
fn forms(label: &str, v: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{label} (raw)"), v.to_vec()),
        (format!("{label} (CBOR of the clear state)"), cbor(v)),
    ]
}

fn device_needles(devices: &[&Device]) -> Vec<(String, Vec<u8>)> {
    devices
        .iter()
        .flat_map(|d| {
            let mut f = forms(&format!("secret of {}", d.cred.name), &d.cred.secret);
            f.push((
                format!("credential text of {}", d.cred.name),
                d.cred.to_text().into_bytes(),
            ));
            f
        })
        .collect()
}

pub(crate) fn state_dir(w: &World) -> PathBuf {
    w.dir.path().join("state")
}

/// The stored security state record of the store in `dir`.
fn stored_record(dir: &Path) -> Vec<u8> {
    let store = telematics_store::Store::open(dir.join("outbox.redb")).unwrap();
    store
        .get(telematicsd::security::STATE_KEY)
        .unwrap()
        .expect("a security state record")
}

fn key_file_sealer(key: &Path) -> Sealer {
    let cfg = KeysConfig {
        seal_key: Some(SecretSource::File(key.to_path_buf())),
        ..KeysConfig::default()
    };
    KeyStore::open(&cfg, Path::new("/unused"))
        .unwrap()
        .sealer()
        .unwrap()
        .unwrap()
}

async fn executes(w: &World, dev: &mut Device) {
    let id = w.send(dev, Action::Unlock, CODE).await;
    let rs = w.terminal(id, 15).await;
    assert_eq!(
        rs.last().map(|r| r.state),
        Some(ResultState::Executed),
        "{rs:?}"
    );
}

async fn refuses_to_start(
    w: &mut World,
    code: &str,
    configure: impl FnOnce(&mut std::process::Command),
) {
    let before = w.log().len();
    w.spawn_daemon_with(configure);
    let st = w
        .wait_daemon_exit(20)
        .await
        .expect("the daemon refuses to start");
    assert!(!st.success(), "{st}");
    let log = w.log();
    assert!(
        log[before..].contains(code),
        "no {code} in:\n{}",
        &log[before..]
    );
}

/// `telematicsd check-config` with the token's configuration: (success, stdout + stderr).
fn check_config(w: &World, softhsm_conf: &Path) -> (bool, String) {
    let out = std::process::Command::new(w.daemon_bin())
        .arg("--config")
        .arg(&w.config_path)
        .arg("check-config")
        .env("SOFTHSM2_CONF", softhsm_conf)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_state_directory_of_a_paired_daemon_holds_no_secret_and_no_verifier() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    // The sealing key as a systemd credential ($CREDENTIALS_DIRECTORY), outside the state dir.
    let creds = w.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    write_new_seal_key(&creds.join(SEAL_CRED)).unwrap();
    w.edit_config(|c| format!("{c}[keys]\nseal_key = {{ credential = \"{SEAL_CRED}\" }}\n"));
    let with_creds = |c: &mut std::process::Command| {
        c.env("CREDENTIALS_DIRECTORY", &creds);
    };
    w.start_daemon_with(with_creds).await;
    let mut phone = w.pair("phone", CODE).await;
    let watch = w.pair("watch", CODE).await;
    executes(&w, &mut phone).await;
    w.stop_daemon().await;

    let (_copy, dump, sealed) = dump_state(&w);
    // With the key (which the copy does not have) the record opens and holds both secrets and
    // the verifier: the values searched for are the real ones.
    let clear = key_file_sealer(&creds.join(SEAL_CRED))
        .unseal(&telematicsd::security::state_aad(VIN), &sealed)
        .unwrap();
    let state = SecurityState::from_cbor(&clear).unwrap();
    let verifier = state.pairing.as_ref().expect("paired").verifier;
    for d in [&phone, &watch] {
        assert!(state.credentials.iter().any(|c| c.secret == d.cred.secret));
    }
    let mut needles = device_needles(&[&phone, &watch]);
    needles.extend(forms("code verifier", &verifier));
    // Control: the clear encoding of that state contains every needle in the form searched.
    let clear_form = state.to_cbor().unwrap();
    for (what, n) in &needles {
        if what.ends_with("(CBOR of the clear state)") {
            assert!(
                contains(&clear_form, n),
                "control: {what} not in the clear encoding"
            );
        }
    }
    assert!(
        dump.len() > 4096,
        "the copy holds the store ({} bytes)",
        dump.len()
    );
    for (what, n) in &needles {
        assert!(
            !contains(&dump, n),
            "{what} found in the copy of the state directory"
        );
    }
    let log = w.log();
    for (what, n) in device_needles(&[&phone, &watch]) {
        assert!(!contains(log.as_bytes(), &n), "{what} in the daemon log");
        assert!(
            !log.contains(&hex::encode(&n)),
            "{what} (hex) in the daemon log"
        );
    }

    // The state alone does not start a daemon: no key, or another key, refuses (fail closed).
    refuses_to_start(&mut w, "keys.seal_key_missing", |_| {}).await;
    let other = w.dir.path().join("other-credentials");
    std::fs::create_dir(&other).unwrap();
    write_new_seal_key(&other.join(SEAL_CRED)).unwrap();
    refuses_to_start(&mut w, "keys.unseal_failed", |c| {
        c.env("CREDENTIALS_DIRECTORY", &other);
    })
    .await;
    // With its key it starts on the same state, and the phone still works.
    w.start_daemon_with(with_creds).await;
    executes(&w, &mut phone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_state_is_sealed_at_the_first_start_with_a_sealing_key() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    let mut phone = w.pair("phone", CODE).await;
    w.stop_daemon().await;
    let clear = stored_record(&state_dir(&w));
    assert!(
        !is_sealed(&clear),
        "no sealing key: the clear format of before"
    );
    assert!(
        contains(&clear, &cbor(&phone.cred.secret)),
        "clear record holds the secret"
    );

    let key = w.dir.path().join("seal.key");
    write_new_seal_key(&key).unwrap();
    // Without the one-time migration setting a clear record is refused (it could be planted).
    w.edit_config(|c| format!("{c}[keys]\nseal_key = {{ file = {key:?} }}\n"));
    refuses_to_start(&mut w, "migrate_clear_state", |_| {}).await;
    assert!(w.log().contains("keys.unseal_failed"), "{}", w.log());
    w.edit_config(|c| format!("{c}migrate_clear_state = true\n"));
    w.start_daemon().await;
    assert!(
        w.log().contains("migrated from the clear format"),
        "{}",
        w.log()
    );
    executes(&w, &mut phone).await;
    w.stop_daemon().await;
    let sealed = stored_record(&state_dir(&w));
    assert!(is_sealed(&sealed));
    assert_eq!(sealed[4], 2, "sealed with the key file");
    assert!(!contains(&sealed, &cbor(&phone.cred.secret)));
    // The pages the clear record was on were reused by the later commits (migration, the
    // command's counter): no clear copy is left in the store file here. redb does not promise
    // it in general (docs/deploy.md advises re-pairing after a migration).
    let file = all_bytes(&state_dir(&w));
    assert!(
        !contains(&file, &cbor(&phone.cred.secret)),
        "a clear copy of the secret is left in the migrated store file"
    );
    let state = SecurityState::from_cbor(
        &key_file_sealer(&key)
            .unseal(&telematicsd::security::state_aad(VIN), &sealed)
            .unwrap(),
    )
    .unwrap();
    assert!(
        state
            .credentials
            .iter()
            .any(|c| c.secret == phone.cred.secret)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_signs_mtls_and_seals_its_state_with_keys_in_a_softhsm_token() {
    let hsm = SoftHsm::new(&[TOKEN]);
    hsm.provision(TOKEN, IDENTITY, SEAL_CRED);
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    let public = P256PublicKey::from_spki(&hsm.public_key_spki(TOKEN, IDENTITY))
        .expect("P-256 key in the token");
    let cert = w.pki.client_for_key(VIN, &public).unwrap();
    // The vehicle's PEM key is deleted: only the token can sign the handshake.
    w.edit_config(|c| {
        let mut out = String::new();
        for line in c.lines() {
            if let Some(path) = line.strip_prefix("key = ") {
                std::fs::remove_file(path.trim_matches('"')).unwrap();
                continue;
            }
            if line.starts_with("cert = ") {
                out.push_str(&format!("cert = {cert:?}\n"));
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out + &token_keys_toml(&hsm, &hsm.pin_file())
    });
    let conf = hsm.conf().to_path_buf();
    let (ok, out) = check_config(&w, &conf);
    assert!(ok && out.contains("backend = \"pkcs11\""), "{out}");
    w.start_daemon_with(|c| {
        c.env("SOFTHSM2_CONF", &conf);
    })
    .await;
    let mut phone = w.pair("phone", CODE).await;
    executes(&w, &mut phone).await;
    w.stop_daemon().await;

    let (_copy, dump, sealed) = dump_state(&w);
    assert_eq!(sealed[4], 1, "sealed by the token's AES key");
    for (what, n) in device_needles(&[&phone]) {
        assert!(
            !contains(&dump, &n),
            "{what} found in the copy of the state directory"
        );
    }
    // A wrong PIN refuses to start (no fall-back to files).
    let wrong = hsm.dir().join("wrong-pin");
    std::fs::write(&wrong, "000000\n").unwrap();
    let pin = hsm.pin_file().display().to_string();
    w.edit_config(|c| {
        c.replace(
            &format!("{pin:?}"),
            &format!("{:?}", wrong.display().to_string()),
        )
    });
    let (ok, out) = check_config(&w, &conf);
    assert!(!ok && out.contains("keys.login"), "check-config: {out}");
    refuses_to_start(&mut w, "keys.login", |c| {
        c.env("SOFTHSM2_CONF", &conf);
    })
    .await;
}
