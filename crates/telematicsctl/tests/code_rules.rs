//! The real `telematicsctl` binary refuses a security code that breaks a code rule before it
//! touches the network or the counter, and its message names the rule: the same text
//! (`telematics_security::Error::WeakCode` Display) the daemon's admin socket gives.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use telematics_security::{CodeRule, Error, ExportedCredential, KeyId};

fn run_lock(cred: &std::path::Path, code: &str) -> (i32, String) {
    let dir = cred.parent().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_telematicsctl"))
        .args(["lock", "-c", cred.to_str().unwrap(), "--code-stdin"])
        // Nothing is listening there and the TLS files do not exist: a refused code must be
        // reported before any of them is used.
        .env("TELEMATICSCTL_HOST", "127.0.0.1")
        .env("TELEMATICSCTL_PORT", "1")
        .env("TELEMATICSCTL_CA", dir.join("no-ca.pem"))
        .env("TELEMATICSCTL_CERT", dir.join("no-cert.pem"))
        .env("TELEMATICSCTL_KEY", dir.join("no-key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{code}\n").as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn each_code_rule_is_named_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("phone.cred");
    let c = ExportedCredential {
        vin: "WBA3A5C51CF256985".into(),
        key_id: KeyId(vec![1; 8]),
        secret: [2; 32],
        name: "phone".into(),
    };
    std::fs::write(&cred, c.to_text()).unwrap();
    let mut seen = Vec::new();
    for (code, rule) in [
        ("123", CodeRule::Length),
        ("123456789", CodeRule::Length),
        ("12a4", CodeRule::DigitsOnly),
        ("1111", CodeRule::NotAllSame),
        ("1234", CodeRule::NotAscending),
        ("98765", CodeRule::NotDescending),
    ] {
        // The library check the CLI runs.
        let e = telematicsctl::remote::check_code(code).unwrap_err();
        assert_eq!(e.code(), "weak_code", "{code}");
        assert_eq!(e.to_string(), Error::WeakCode(rule).to_string(), "{code}");
        // And the binary.
        let (status, stderr) = run_lock(&cred, code);
        assert_eq!(status, 1, "{code}: {stderr}");
        assert!(
            stderr.contains(rule.message()),
            "{code}: expected {:?} in {stderr:?}",
            rule.message()
        );
        assert!(
            !stderr.contains(code) || code.len() < 4,
            "code echoed: {stderr}"
        );
        seen.push(rule);
    }
    seen.dedup();
    assert_eq!(seen, CodeRule::ALL.to_vec(), "every rule covered");
    assert_eq!(
        Error::WeakCode(CodeRule::NotAllSame).to_string(),
        "the security code must not be all the same digit"
    );
    // No counter was reserved for a refused code.
    assert!(!telematicsctl::counter::counter_path(&cred).exists());
}
