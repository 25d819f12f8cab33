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
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_path,
        })
    }

    fn issue(
        &self,
        dir: &Path,
        file_stem: &str,
        cn: &str,
        sans: Vec<String>,
        server: bool,
    ) -> Result<CertFiles, TestkitError> {
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
            .issue(self.dir.path(), &stem, client_id, vec![], false)
    }

    /// Issues a client certificate with CN = `client_id` from the rogue CA.
    pub fn rogue_client(&self, client_id: &str) -> Result<CertFiles, TestkitError> {
        let stem = self.unique_stem(&format!("rogue-{client_id}"));
        self.rogue
            .issue(self.dir.path(), &stem, client_id, vec![], false)
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
/// CN = VIN) may publish its own telemetry/alerts/results/status/session info and read its own
/// commands and session requests; `backend_users` may read `vehicles/#` and write commands
/// and session requests.
pub fn acl_file(backend_users: &[&str]) -> String {
    let mut acl = String::from(
        "# vehicles: username = certificate CN = VIN\n\
         pattern write vehicles/%u/telemetry\n\
         pattern write vehicles/%u/alerts\n\
         pattern write vehicles/%u/results\n\
         pattern write vehicles/%u/status\n\
         pattern write vehicles/%u/session\n\
         pattern read vehicles/%u/commands\n\
         pattern read vehicles/%u/session/request\n",
    );
    for u in backend_users {
        acl.push_str(&format!(
            "\nuser {u}\ntopic read vehicles/#\ntopic write vehicles/+/commands\n\
             topic write vehicles/+/session/request\n"
        ));
    }
    acl
}

/// A running mosquitto broker with a TLS listener on a free loopback port. Killed on drop.
pub struct Mosquitto {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
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
        write_file(&acl, &acl_file(backend_users))?;
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
        );
        write_file(&conf, &text)?;
        let mut m = Mosquitto {
            port,
            conf,
            log,
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
    fn acl_uses_pattern_rules() {
        let acl = acl_file(&["backend"]);
        assert!(acl.contains("pattern write vehicles/%u/telemetry"));
        assert!(acl.contains("pattern read vehicles/%u/commands"));
        assert!(acl.contains("user backend"));
    }
}
