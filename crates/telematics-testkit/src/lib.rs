//! Reusable test support for telematicsd: a throw-away PKI generated with rcgen at test time and
//! a launcher for a real `mosquitto` broker configured like production (mutual TLS,
//! `require_certificate`, `use_identity_as_username`, a `pattern` ACL on `vehicles/%u/...`).
//!
//! ```no_run
//! use telematics_testkit::{Mosquitto, TestPki};
//! let pki = TestPki::generate()?;
//! let vehicle = pki.client("VIN0001")?;         // CN = client id = MQTT username
//! let backend = pki.client("backend")?;          // may read/write every vehicles/# topic
//! let mut broker = Mosquitto::start(&pki, &["backend"])?;
//! // connect to 127.0.0.1:broker.port() with server name "localhost", CA = pki.ca_cert()
//! broker.stop();      // outage
//! broker.restart()?;  // same port, persistent sessions kept (persistence in a temp dir)
//! # Ok::<(), telematics_testkit::TestkitError>(())
//! ```
//!
//! Subscription refusals: mosquitto's `acl_file` never refuses a SUBSCRIBE (it filters on
//! delivery, the SUBACK grants the QoS), so vehicles named in [`BrokerOptions::subscribe_acl`]
//! get their rights from mosquitto's dynamic-security plugin instead, whose ACLs are checked at
//! SUBSCRIBE time; [`Mosquitto::deny_commands_subscription`] / [`Mosquitto::allow_commands_subscription`]
//! change them on the running broker (through `mosquitto_ctrl`, as an operator would).
//!
//! Privileges: when the tests run as root, mosquitto drops to the `mosquitto` user. We keep that
//! production behaviour (rather than `user root`) so that the tests also prove the broker works
//! with its real privilege drop; therefore every generated file is world-readable (0644) inside
//! a 0755 temp directory and the persistence directory is 0777. These are test keys only.
#![deny(missing_docs)]

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Path of the mosquitto binary (Debian package).
pub const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
/// Path of `mosquitto_ctrl` (Debian package `mosquitto`), used to change dynamic-security ACLs.
pub const MOSQUITTO_CTRL_BIN: &str = "/usr/bin/mosquitto_ctrl";
/// Client id / certificate CN of the dynamic-security administrator the launcher creates.
pub const DYNSEC_ADMIN: &str = "testkit-dynsec-admin";

pub mod softhsm;

/// Broker limits the launcher configures, as docs/topics.md asks of a deployment.
pub mod limits {
    /// `max_packet_size`: the broker refuses (disconnects) any larger packet, so it never
    /// delivers more than this to a vehicle. Below the link's default `max_incoming_packet`
    /// (1 MiB + 4 KiB).
    pub const MAX_PACKET_SIZE: usize = 1024 * 1024;
    /// `max_inflight_messages`: unacknowledged QoS 1 messages the broker sends a client. With
    /// the link's manual acks this bounds what a vehicle holds before handing over.
    pub const MAX_INFLIGHT_MESSAGES: usize = 20;
    /// `max_queued_messages`: messages queued per client beyond the inflight window (offline
    /// persistent session or a slow consumer). Large enough that a burst of forged or replayed
    /// messages (the acceptance tests send 2 000 at once) never pushes a real command out of the
    /// vehicle's queue: mosquitto drops QoS 1 messages beyond it silently.
    pub const MAX_QUEUED_MESSAGES: usize = 10_000;
    /// `max_queued_bytes`: byte bound of that queue.
    pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
}

/// Errors of the test kit, each with a stable [`TestkitError::code`].
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// A file or directory operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// mosquitto is not installed.
    #[error("{MOSQUITTO_BIN} not found: install it with `apt-get install -y mosquitto`")]
    MosquittoMissing,
    /// `mosquitto_ctrl` failed or reported an error.
    #[error("mosquitto_ctrl {args}: {detail}")]
    Control {
        /// The dynsec command.
        args: String,
        /// Its output or the spawn error.
        detail: String,
    },
    /// The dynamic-security plugin is not installed.
    #[error("mosquitto_dynamic_security.so not found (Debian package mosquitto)")]
    DynsecMissing,
    /// mosquitto did not accept connections in time (its log is included).
    #[error("mosquitto did not start listening on port {port}: {log}")]
    MosquittoStart {
        /// The port it was given.
        port: u16,
        /// The broker's log output.
        log: String,
    },
}

impl TestkitError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TestkitError::Cert(_) => "testkit.cert",
            TestkitError::Io { .. } => "testkit.io",
            TestkitError::MosquittoMissing => "testkit.mosquitto_missing",
            TestkitError::MosquittoStart { .. } => "testkit.mosquitto_start",
            TestkitError::Control { .. } => "testkit.control",
            TestkitError::DynsecMissing => "testkit.dynsec_missing",
        }
    }
}

fn io<P: AsRef<Path>>(p: P) -> impl FnOnce(std::io::Error) -> TestkitError {
    let path = p.as_ref().display().to_string();
    move |source| TestkitError::Io { path, source }
}

fn write_file(path: &Path, contents: &str) -> Result<(), TestkitError> {
    fs::write(path, contents).map_err(io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(io(path))
}

/// A certificate and its private key written as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain (leaf only; the CA is in [`TestPki::ca_cert`]).
    pub cert: PathBuf,
    /// PEM PKCS#8 private key.
    pub key: PathBuf,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Ca {
    fn generate(dir: &Path, name: &str) -> Result<Ca, TestkitError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let cert_path = dir.join(format!("{name}.crt"));
        write_file(&cert_path, &cert.pem())?;
        let key_path = dir.join(format!("{name}.key"));
        write_file(&key_path, &key.serialize_pem())?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_path,
            key_path,
        })
    }

    fn leaf_params(
        cn: &str,
        sans: Vec<String>,
        server: bool,
    ) -> Result<CertificateParams, TestkitError> {
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        Ok(params)
    }

    fn issue(
        &self,
        dir: &Path,
        file_stem: &str,
        cn: &str,
        sans: Vec<String>,
        server: bool,
        valid_days: Option<i64>,
    ) -> Result<CertFiles, TestkitError> {
        let mut params = Self::leaf_params(cn, sans, server)?;
        Self::set_validity(&mut params, valid_days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: dir.join(format!("{file_stem}.crt")),
            key: dir.join(format!("{file_stem}.key")),
        };
        write_file(&files.cert, &cert.pem())?;
        write_file(&files.key, &key.serialize_pem())?;
        Ok(files)
    }

    /// Valid from a day ago for `valid_days` from now (`None`: the default validity).
    fn set_validity(params: &mut CertificateParams, valid_days: Option<i64>) {
        if let Some(days) = valid_days {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(days);
        }
    }

    /// A client certificate for a key held elsewhere (a PKCS#11 token): only its public key.
    fn issue_for(
        &self,
        dir: &Path,
        file_stem: &str,
        cn: &str,
        public_key: &impl rcgen::PublicKeyData,
        valid_days: Option<i64>,
    ) -> Result<PathBuf, TestkitError> {
        let mut params = Self::leaf_params(cn, vec![], false)?;
        Self::set_validity(&mut params, valid_days);
        let cert = params.signed_by(public_key, &self.issuer)?;
        let path = dir.join(format!("{file_stem}.crt"));
        write_file(&path, &cert.pem())?;
        Ok(path)
    }
}

/// An EC P-256 public key from its SubjectPublicKeyInfo DER (`pkcs11-tool --read-object
/// --type pubkey`), for [`TestPki::client_for_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P256PublicKey {
    point: Vec<u8>,
}

impl P256PublicKey {
    /// DER prefix of a P-256 SPKI (id-ecPublicKey, prime256v1, 66-byte BIT STRING).
    const SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];

    /// Parses a P-256 SPKI; `None` for any other key.
    pub fn from_spki(der: &[u8]) -> Option<P256PublicKey> {
        let point = der.strip_prefix(&Self::SPKI_PREFIX[..])?;
        (point.len() == 65 && point[0] == 0x04).then(|| P256PublicKey {
            point: point.to_vec(),
        })
    }
}

impl rcgen::PublicKeyData for P256PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// A throw-away PKI in a temp directory: a CA, a server certificate for `localhost` /
/// `127.0.0.1`, client certificates on demand (CN = client id), and a second, unrelated
/// "rogue" CA whose client certificates the broker must refuse.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: Ca,
    rogue: Ca,
    server: CertFiles,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// Generates the CAs and the server certificate (ECDSA P-256 keys).
    pub fn generate() -> Result<TestPki, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("telematics-pki-")
            .tempdir()
            .map_err(io("/tmp"))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(io(dir.path()))?;
        let ca = Ca::generate(dir.path(), "ca")?;
        let rogue = Ca::generate(dir.path(), "rogue-ca")?;
        let server = ca.issue(
            dir.path(),
            "server",
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            true,
            None,
        )?;
        Ok(TestPki {
            dir,
            ca,
            rogue,
            server,
        })
    }

    /// Directory holding all files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PEM file of the trusted CA (the one to pin).
    pub fn ca_cert(&self) -> &Path {
        &self.ca.cert_path
    }

    /// PEM PKCS#8 key of the trusted CA (a back end's signing key: `telematicsctl ca`).
    pub fn ca_key(&self) -> &Path {
        &self.ca.key_path
    }

    /// PEM PKCS#8 key of the rogue CA.
    pub fn rogue_ca_key(&self) -> &Path {
        &self.rogue.key_path
    }

    /// PEM file of the rogue CA (not trusted by the broker).
    pub fn rogue_ca_cert(&self) -> &Path {
        &self.rogue.cert_path
    }

    /// The broker's certificate (SAN `localhost` and `127.0.0.1`).
    pub fn server(&self) -> &CertFiles {
        &self.server
    }

    /// Issues a client certificate from the trusted CA with CN = `client_id` (which mosquitto
    /// uses as the username). Each call creates a new key pair; files are named
    /// `<client_id>[-n].crt/.key` so that rotation tests can issue several.
    pub fn client(&self, client_id: &str) -> Result<CertFiles, TestkitError> {
        let stem = self.unique_stem(client_id);
        self.ca
            .issue(self.dir.path(), &stem, client_id, vec![], false, None)
    }

    /// Like [`TestPki::client`], valid from a day ago for `days` days from now (the default
    /// validity of the others runs until 4096).
    pub fn client_valid_for(&self, client_id: &str, days: i64) -> Result<CertFiles, TestkitError> {
        let stem = self.unique_stem(client_id);
        self.ca
            .issue(self.dir.path(), &stem, client_id, vec![], false, Some(days))
    }

    /// Issues a client certificate from the trusted CA with CN = `client_id` for `public_key`,
    /// whose private key the test does not have (it lives in a PKCS#11 token). Returns the
    /// certificate file.
    pub fn client_for_key(
        &self,
        client_id: &str,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<PathBuf, TestkitError> {
        let stem = self.unique_stem(client_id);
        self.ca
            .issue_for(self.dir.path(), &stem, client_id, public_key, None)
    }

    /// Like [`TestPki::client_for_key`], valid from a day ago for `days` days from now.
    pub fn client_for_key_valid_for(
        &self,
        client_id: &str,
        public_key: &impl rcgen::PublicKeyData,
        days: i64,
    ) -> Result<PathBuf, TestkitError> {
        let stem = self.unique_stem(client_id);
        self.ca
            .issue_for(self.dir.path(), &stem, client_id, public_key, Some(days))
    }

    /// Issues a client certificate with CN = `client_id` from the rogue CA.
    pub fn rogue_client(&self, client_id: &str) -> Result<CertFiles, TestkitError> {
        let stem = self.unique_stem(&format!("rogue-{client_id}"));
        self.rogue
            .issue(self.dir.path(), &stem, client_id, vec![], false, None)
    }

    fn unique_stem(&self, base: &str) -> String {
        let safe: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut n = 0;
        loop {
            let stem = if n == 0 {
                safe.clone()
            } else {
                format!("{safe}-{n}")
            };
            if !self.dir.path().join(format!("{stem}.crt")).exists() {
                return stem;
            }
            n += 1;
        }
    }
}

/// The ACL file the launcher writes (see docs/topics.md): each vehicle (username = certificate
/// CN = VIN) may publish its own telemetry/alerts/results/status/session info, device list,
/// revocation outcomes, renewal CSR and renewal outcomes, and read its own commands, session
/// requests, device-list requests, device revocations and renewed certificates;
/// `backend_users` may read `vehicles/#` and write commands, session requests, device-list
/// requests, device revocations and renewed certificates.
pub fn acl_file(backend_users: &[&str]) -> String {
    let mut acl = String::from(
        "# vehicles: username = certificate CN = VIN\n\
         pattern write vehicles/%u/telemetry\n\
         pattern write vehicles/%u/alerts\n\
         pattern write vehicles/%u/results\n\
         pattern write vehicles/%u/status\n\
         pattern write vehicles/%u/session\n\
         pattern write vehicles/%u/devices\n\
         pattern write vehicles/%u/devices/revocations\n\
         pattern write vehicles/%u/identity/csr\n\
         pattern write vehicles/%u/identity/outcome\n\
         pattern read vehicles/%u/identity/certificate\n\
         pattern read vehicles/%u/commands\n\
         pattern read vehicles/%u/session/request\n\
         pattern read vehicles/%u/devices/request\n\
         pattern read vehicles/%u/devices/revoke\n",
    );
    for u in backend_users {
        acl.push_str(&format!(
            "\nuser {u}\ntopic read vehicles/#\ntopic write vehicles/+/commands\n\
             topic write vehicles/+/session/request\n\
             topic write vehicles/+/devices/request\n\
             topic write vehicles/+/devices/revoke\n\
             topic write vehicles/+/identity/certificate\n"
        ));
    }
    acl
}

/// What to start a broker with (see [`Mosquitto::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Client ids with back-end rights (see [`acl_file`]).
    pub backend_users: Vec<String>,
    /// Vehicles (VINs) whose rights come from the dynamic-security plugin rather than the ACL
    /// file (the same rights), so that their commands subscription can be refused at SUBSCRIBE
    /// time with [`Mosquitto::deny_commands_subscription`].
    pub subscribe_acl: Vec<String>,
}

/// Where the dynamic-security plugin of the installed mosquitto is.
fn dynsec_plugin() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/lib/mosquitto_dynamic_security.so")];
    if let Ok(dir) = fs::read_dir("/usr/lib") {
        for e in dir.flatten() {
            candidates.push(e.path().join("mosquitto_dynamic_security.so"));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn deny_role(vin: &str) -> String {
    format!("deny-commands-{vin}")
}

/// The dynamic-security configuration: the administrator, and for each vehicle a role with the
/// rights [`acl_file`] gives a vehicle (its own telemetry/alerts/results/status, its commands).
fn dynsec_json(vehicles: &[String]) -> String {
    let quote = |s: &str| format!("\"{s}\"");
    let acl = |t: &str, topic: &str, allow: bool, prio: u32| {
        format!(
            "{{\"acltype\":{},\"topic\":{},\"allow\":{allow},\"priority\":{prio}}}",
            quote(t),
            quote(topic)
        )
    };
    let mut clients = vec![format!(
        "{{\"username\":{},\"roles\":[{{\"rolename\":\"dynsec-admin\"}}]}}",
        quote(DYNSEC_ADMIN)
    )];
    let ctl = "$CONTROL/dynamic-security/#";
    let mut roles = vec![format!(
        "{{\"rolename\":\"dynsec-admin\",\"acls\":[{},{},{}]}}",
        acl("publishClientSend", ctl, true, 0),
        acl("publishClientReceive", ctl, true, 0),
        acl("subscribePattern", ctl, true, 0)
    )];
    for vin in vehicles {
        let t = |k: &str| format!("vehicles/{vin}/{k}");
        let mut acls: Vec<String> = ["telemetry", "alerts", "results", "status"]
            .iter()
            .map(|k| acl("publishClientSend", &t(k), true, 0))
            .collect();
        acls.push(acl("subscribeLiteral", &t("commands"), true, 0));
        acls.push(acl("unsubscribeLiteral", &t("commands"), true, 0));
        acls.push(acl("publishClientReceive", &t("commands"), true, 0));
        roles.push(format!(
            "{{\"rolename\":{},\"acls\":[{}]}}",
            quote(&format!("vehicle-{vin}")),
            acls.join(",")
        ));
        roles.push(format!(
            "{{\"rolename\":{},\"acls\":[{}]}}",
            quote(&deny_role(vin)),
            acl("subscribeLiteral", &t("commands"), false, 10)
        ));
        clients.push(format!(
            "{{\"username\":{},\"roles\":[{{\"rolename\":{}}}]}}",
            quote(vin),
            quote(&format!("vehicle-{vin}"))
        ));
    }
    format!(
        "{{\"defaultACLAccess\":{{\"publishClientSend\":false,\"publishClientReceive\":false,\"subscribe\":false,\"unsubscribe\":true}},\n\"clients\":[{}],\n\"groups\":[],\n\"roles\":[{}]}}\n",
        clients.join(",\n"),
        roles.join(",\n")
    )
}

/// A running mosquitto broker with a TLS listener on a free loopback port. Killed on drop.
pub struct Mosquitto {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    ca: PathBuf,
    dynsec_admin: Option<CertFiles>,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

impl std::fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mosquitto")
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

impl Mosquitto {
    /// Writes `mosquitto.conf` + ACL and starts the broker: TLS (1.2 minimum) on
    /// `127.0.0.1:<free port>`, `require_certificate true`, `use_identity_as_username true`,
    /// persistence on. `backend_users` are client ids with back-end rights (see [`acl_file`]).
    pub fn start(pki: &TestPki, backend_users: &[&str]) -> Result<Mosquitto, TestkitError> {
        Self::start_with(
            pki,
            &BrokerOptions {
                backend_users: backend_users.iter().map(|u| u.to_string()).collect(),
                subscribe_acl: Vec::new(),
            },
        )
    }

    /// Like [`Mosquitto::start`], with the dynamic-security plugin for the vehicles in
    /// `opts.subscribe_acl` (their subscriptions can then be refused and allowed again while
    /// the broker runs).
    pub fn start_with(pki: &TestPki, opts: &BrokerOptions) -> Result<Mosquitto, TestkitError> {
        if !Path::new(MOSQUITTO_BIN).exists() {
            return Err(TestkitError::MosquittoMissing);
        }
        let dir = tempfile::Builder::new()
            .prefix("telematics-mosquitto-")
            .tempdir()
            .map_err(io("/tmp"))?;
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(io(d))?;
        let data = d.join("data");
        fs::create_dir(&data).map_err(io(&data))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o777)).map_err(io(&data))?;
        let acl = d.join("acl");
        let backend_users: Vec<&str> = opts.backend_users.iter().map(String::as_str).collect();
        write_file(&acl, &acl_file(&backend_users))?;
        let (dynsec_conf, dynsec_admin) = if opts.subscribe_acl.is_empty() {
            (String::new(), None)
        } else {
            let plugin = dynsec_plugin().ok_or(TestkitError::DynsecMissing)?;
            // In the persistence directory: the plugin saves its state there on every change.
            let json = data.join("dynsec.json");
            write_file(&json, &dynsec_json(&opts.subscribe_acl))?;
            fs::set_permissions(&json, fs::Permissions::from_mode(0o666)).map_err(io(&json))?;
            let admin = pki.client(DYNSEC_ADMIN)?;
            (
                format!(
                    "plugin {}\nplugin_opt_config_file {}\n",
                    plugin.display(),
                    json.display()
                ),
                Some(admin),
            )
        };
        let log = d.join("mosquitto.log");
        let port = free_port()?;
        let conf = d.join("mosquitto.conf");
        let text = format!(
            "per_listener_settings false\n\
             allow_anonymous false\n\
             persistence true\n\
             persistence_location {data}/\n\
             autosave_interval 1\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             set_tcp_nodelay true\n\
             max_packet_size {max_packet}\n\
             max_inflight_messages {inflight}\n\
             max_queued_messages {queued}\n\
             max_queued_bytes {queued_bytes}\n\
             {dynsec_conf}\
             acl_file {acl}\n\
             listener {port} 127.0.0.1\n\
             cafile {ca}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             tls_version tlsv1.2\n",
            data = data.display(),
            acl = acl.display(),
            ca = pki.ca_cert().display(),
            cert = pki.server().cert.display(),
            key = pki.server().key.display(),
            max_packet = limits::MAX_PACKET_SIZE,
            inflight = limits::MAX_INFLIGHT_MESSAGES,
            queued = limits::MAX_QUEUED_MESSAGES,
            queued_bytes = limits::MAX_QUEUED_BYTES,
        );
        write_file(&conf, &text)?;
        let mut m = Mosquitto {
            port,
            conf,
            log,
            ca: pki.ca_cert().to_path_buf(),
            dynsec_admin,
            _dir: dir,
            child: None,
        };
        m.restart()?;
        Ok(m)
    }

    /// The TLS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Whether the broker process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The broker log so far (useful in assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Makes the broker refuse `vin`'s SUBSCRIBE to `vehicles/{vin}/commands` (SUBACK failure
    /// code 0x80) from now on. `vin` must be in [`BrokerOptions::subscribe_acl`]. Existing
    /// subscriptions are not removed; the next SUBSCRIBE is refused.
    pub fn deny_commands_subscription(&self, vin: &str) -> Result<(), TestkitError> {
        self.dynsec(&["addClientRole", vin, &deny_role(vin), "10"])
    }

    /// Undoes [`Mosquitto::deny_commands_subscription`]: the next SUBSCRIBE is granted. Note that
    /// the plugin disconnects a connected client whose roles change (so it re-authenticates).
    pub fn allow_commands_subscription(&self, vin: &str) -> Result<(), TestkitError> {
        self.dynsec(&["removeClientRole", vin, &deny_role(vin)])
    }

    fn dynsec(&self, args: &[&str]) -> Result<(), TestkitError> {
        let joined = args.join(" ");
        let err = |detail: String| TestkitError::Control {
            args: joined.clone(),
            detail,
        };
        let admin = self
            .dynsec_admin
            .as_ref()
            .ok_or_else(|| err("the broker was started without subscribe_acl vehicles".into()))?;
        let out = Command::new(MOSQUITTO_CTRL_BIN)
            .args(["-h", "localhost", "-p", &self.port.to_string()])
            .arg("--cafile")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&admin.cert)
            .arg("--key")
            .arg(&admin.key)
            .arg("dynsec")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(e.to_string()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // mosquitto_ctrl exits 0 even when the plugin answers with an error.
        if !out.status.success() || text.contains("Error") {
            return Err(err(text.trim().to_string()));
        }
        Ok(())
    }

    /// Kills the broker (SIGKILL: an outage, not a graceful shutdown; persistence is saved every
    /// second by `autosave_interval 1`). No-op when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker with SIGTERM so that it writes its persistence file, then waits.
    pub fn stop_graceful(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the broker on the same port with the same configuration and persistence and
    /// waits (up to 10 s) until the port accepts connections.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(&self.log))?;
        let log2 = log.try_clone().map_err(io(&self.log))?;
        let mut child = Command::new(MOSQUITTO_BIN)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io(MOSQUITTO_BIN))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestkitError::MosquittoStart {
                    port: self.port,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A currently free loopback TCP port.
pub fn free_port() -> Result<u16, TestkitError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("127.0.0.1:0"))?;
    let port = l.local_addr().map_err(io("127.0.0.1:0"))?.port();
    Ok(port)
}

/// Appends a line to a file (helper for tests that corrupt or edit files).
pub fn append_line(path: &Path, line: &str) -> Result<(), TestkitError> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(path))?;
    writeln!(f, "{line}").map_err(io(path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn broker_starts_restarts_and_stops() {
        let pki = TestPki::generate().unwrap();
        let c = pki.client("VIN1").unwrap();
        let c2 = pki.client("VIN1").unwrap();
        assert_ne!(c.cert, c2.cert, "rotation gets new files");
        assert!(pki.rogue_client("VIN1").unwrap().key.exists());
        let mut m = Mosquitto::start(&pki, &["backend"]).unwrap();
        assert!(TcpStream::connect(m.addr()).is_ok());
        m.stop();
        assert!(!m.is_running());
        assert!(TcpStream::connect(m.addr()).is_err());
        m.restart().unwrap();
        assert!(TcpStream::connect(m.addr()).is_ok());
        assert!(m.log().contains("mosquitto"), "log: {}", m.log());
    }

    #[test]
    fn broker_limits_are_configured() {
        let pki = TestPki::generate().unwrap();
        let m = Mosquitto::start(&pki, &["backend"]).unwrap();
        let conf = fs::read_to_string(&m.conf).unwrap();
        for line in [
            "max_packet_size 1048576",
            "max_inflight_messages 20",
            "max_queued_messages 10000",
            "max_queued_bytes 67108864",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing:\n{conf}");
        }
        assert!(!conf.contains("plugin"), "no dynsec unless asked for");
        // Without subscribe_acl vehicles there is nothing to change.
        assert_eq!(
            m.deny_commands_subscription("VIN1").unwrap_err().code(),
            "testkit.control"
        );
    }

    #[test]
    fn dynsec_roles_can_be_changed_on_the_running_broker() {
        let pki = TestPki::generate().unwrap();
        let m = Mosquitto::start_with(
            &pki,
            &BrokerOptions {
                backend_users: vec!["backend".into()],
                subscribe_acl: vec!["VIN1".into()],
            },
        )
        .unwrap();
        m.deny_commands_subscription("VIN1").unwrap();
        m.allow_commands_subscription("VIN1").unwrap();
        // The plugin reports errors (here: the role is no longer assigned / unknown client).
        let e = m.deny_commands_subscription("VIN2").unwrap_err();
        assert_eq!(e.code(), "testkit.control");
        assert!(e.to_string().contains("VIN2"), "{e}");
    }

    #[test]
    fn acl_uses_pattern_rules() {
        let acl = acl_file(&["backend"]);
        assert!(acl.contains("pattern write vehicles/%u/telemetry"));
        assert!(acl.contains("pattern read vehicles/%u/commands"));
        assert!(acl.contains("pattern write vehicles/%u/devices\n"));
        assert!(acl.contains("pattern read vehicles/%u/devices/revoke\n"));
        assert!(acl.contains("topic write vehicles/+/devices/revoke\n"));
        assert!(acl.contains("user backend"));
    }
}
