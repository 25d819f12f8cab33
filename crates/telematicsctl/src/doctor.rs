//! `telematicsctl doctor`: asks the local daemon for its troubleshooting facts (admin request
//! `diagnostics`, works without a network), evaluates them
//! ([`telematics_admin::diagnostics::evaluate`]) and prints one line per check. The exit code is the
//! worst result: [`EXIT_OK`], [`EXIT_WARN`], [`EXIT_FAIL`].

use std::path::Path;

use telematics_admin::diagnostics::{Check, Facts, Level, evaluate, worst};
use telematics_admin::{self as admin, Request, Response};

/// Every check is ok.
pub const EXIT_OK: u8 = 0;
/// The worst check is a warning.
pub const EXIT_WARN: u8 = 6;
/// At least one check fails (or the daemon cannot be asked).
pub const EXIT_FAIL: u8 = 7;

/// The exit code of a worst level.
pub fn exit_code(level: Level) -> u8 {
    match level {
        Level::Ok => EXIT_OK,
        Level::Warn => EXIT_WARN,
        Level::Fail => EXIT_FAIL,
    }
}

/// One output line: `fail  lockout: <what was found> -> <what to do>`.
pub fn format_check(c: &Check) -> String {
    let mut s = format!("{:<4}  {}: {}", c.level.as_str(), c.check, c.summary);
    if let Some(a) = &c.action {
        s.push_str(" -> ");
        s.push_str(a);
    }
    s
}

/// The result of asking the daemon: its facts and their checks, or one failing `daemon` check
/// saying why it could not be asked.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// The worst level.
    pub worst: Level,
    /// One entry per check.
    pub checks: Vec<Check>,
    /// The facts the checks were made on (absent when the daemon could not be asked).
    pub facts: Option<Facts>,
}

/// Asks the daemon at `socket` and evaluates (never fails: an unreachable daemon is a check).
pub async fn report(socket: &Path) -> Report {
    let daemon_fail = |summary: String, action: &str| Check {
        check: "daemon".into(),
        level: Level::Fail,
        summary,
        action: Some(action.into()),
    };
    let (checks, facts) = match admin::call(socket, &Request::Diagnostics).await {
        Ok(Response::Diagnostics(f)) => {
            let mut checks = vec![Check {
                check: "daemon".into(),
                level: Level::Ok,
                summary: format!("answering on {}", socket.display()),
                action: None,
            }];
            checks.extend(evaluate(&f, f.now));
            (checks, Some(*f))
        }
        Ok(Response::Error { code, message, .. }) => (
            vec![daemon_fail(
                format!("the daemon refused the request [{code}]: {message}"),
                "run doctor as root or as a member of the admin group (admin.group)",
            )],
            None,
        ),
        Ok(other) => (
            vec![daemon_fail(
                format!("unexpected answer {other:?}"),
                "telematicsctl and telematicsd versions differ: install matching packages",
            )],
            None,
        ),
        Err(e) => (
            vec![daemon_fail(
                format!("admin socket {} not reachable: {e}", socket.display()),
                "is telematicsd running? systemctl status telematicsd; journalctl -u telematicsd",
            )],
            None,
        ),
    };
    Report {
        worst: worst(&checks),
        checks,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_exit_codes() {
        let c = Check {
            check: "lockout".into(),
            level: Level::Fail,
            summary: "locked out".into(),
            action: Some("wait".into()),
        };
        assert_eq!(format_check(&c), "fail  lockout: locked out -> wait");
        let ok = Check {
            level: Level::Ok,
            action: None,
            ..c
        };
        assert_eq!(format_check(&ok), "ok    lockout: locked out");
        assert_eq!(
            [Level::Ok, Level::Warn, Level::Fail].map(exit_code),
            [0, 6, 7]
        );
    }

    #[tokio::test]
    async fn an_absent_daemon_is_a_failing_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = report(&dir.path().join("nothing.sock")).await;
        assert_eq!(r.worst, Level::Fail);
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.checks[0].check, "daemon");
        assert!(r.checks[0].summary.contains("not reachable"), "{r:?}");
        assert!(r.facts.is_none());
    }
}
