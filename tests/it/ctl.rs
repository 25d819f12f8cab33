//! `telematicsctl` output conventions against the real daemon: `--json` documents on stdout
//! that parse, errors (with the numeric `retry_after_s`) as JSON on stderr, human-readable times
//! by default, and the credential of `pair --out` only in the file.

use std::io::Write;
use std::process::{Command, Stdio};

use telematics_it::{CODE, Options, World};

use crate::DAEMON;

const CTL: &str = env!("CARGO_BIN_EXE_it-telematicsctl");

/// Runs telematicsctl with `args` and `stdin`: (exit code, stdout, stderr).
async fn ctl(w: &World, args: &[&str], stdin: &str) -> (i32, String, String) {
    let socket = w.admin_socket.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(CTL)
            .arg("--socket")
            .arg(&socket)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn telematicsctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).expect("utf8"),
            String::from_utf8(out.stderr).expect("utf8"),
        )
    })
    .await
    .expect("join")
}

fn parse(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not one JSON document ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_errors_on_stderr_and_secrets_only_where_asked_for() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    let cred = w.dir.path().join("phone.cred");
    let cred_s = cred.display().to_string();
    // pair --out: the credential goes to the file only.
    let (code, out, err) = ctl(
        &w,
        &[
            "--json",
            "pair",
            "--name",
            "phone",
            "--code-stdin",
            "--out",
            &cred_s,
        ],
        &format!("{CODE}\n"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v = parse(&out);
    assert_eq!(v["result"], "paired");
    assert_eq!(v["written_to"], cred_s.as_str());
    let credential = std::fs::read_to_string(&cred).unwrap();
    assert!(credential.starts_with("TMDC1:"));
    assert!(
        !out.contains("TMDC1:") && !err.contains("TMDC1:"),
        "{out}{err}"
    );
    let (_, human, _) = ctl(
        &w,
        &[
            "pair",
            "--name",
            "tablet",
            "--code-stdin",
            "--out",
            &format!("{cred_s}.2"),
        ],
        &format!("{CODE}\n"),
    )
    .await;
    assert!(
        human.starts_with("Paired device ") && !human.contains("TMDC1:"),
        "{human}"
    );

    // Every admin command gives one JSON document.
    for args in [
        &["--json", "status"][..],
        &["--json", "lockout"],
        &["--json", "devices"],
        &["--json", "audit", "--limit", "5"],
    ] {
        let (code, out, err) = ctl(&w, args, "").await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(parse(&out)["result"].is_string(), "{args:?}: {out}");
    }
    // The retained status names the configuration, build, DBC and mapping in force.
    let status = w
        .inbox
        .lock()
        .unwrap()
        .status
        .last()
        .cloned()
        .expect("status");
    let st = telematics_link::Status::from_cbor(&status).expect("status decodes");
    assert_eq!(st.config_version.len(), 16, "{st:?}");
    assert_ne!(st.config_version, "0");
    assert!(
        !st.build.is_empty()
            && st.dbc_hash.len() == 16
            && st.mapping_hash.len() == 16
            && st.profile_hash.len() == 16,
        "{st:?}"
    );
    let (_, out, _) = ctl(&w, &["status"], "").await;
    assert!(
        out.contains(&format!(
            "versions: build={} config={}",
            st.build, st.config_version
        )),
        "{out}"
    );
    let (_, out, _) = ctl(&w, &["--json", "devices"], "").await;
    assert_eq!(parse(&out)["devices"].as_array().map(Vec::len), Some(2));

    // Wrong codes: the error goes to stderr, with the wait as a number.
    let mut last = (0, String::new(), String::new());
    for _ in 0..3 {
        last = ctl(
            &w,
            &["--json", "pair", "--name", "valet", "--code-stdin"],
            "9137\n",
        )
        .await;
    }
    let (code, out, err) = last;
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    let e = parse(&err);
    assert_eq!(e["error"]["code"], "security.wrong_code");
    assert_eq!(e["error"]["retry_after_s"], 30);
    // Human-readable: RFC 3339 and a relative time, no raw Unix seconds.
    let (_, out, _) = ctl(&w, &["lockout"], "").await;
    assert!(
        out.starts_with("LOCKED until 20") && out.contains("T") && out.contains("(in "),
        "{out}"
    );
    let (_, out, _) = ctl(&w, &["audit", "--limit", "1"], "").await;
    assert!(out.starts_with("20") && out.contains("Z "), "{out}");
    let (code, out, err) = ctl(&w, &["pair", "--name", "x", "--code-stdin"], "1111\n").await;
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("security.locked_out") && err.contains("(retry in "),
        "{err}"
    );
}
