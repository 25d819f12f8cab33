//! Durability before effect: a durable write that fails at a commit point of a command (the
//! security state between the verification phases, the `accepted` journal entry before
//! actuation) stops the command there. No frame reaches the body controller, the daemon exits
//! with `store.write_failed` for the service manager to restart it, and after the restart the
//! command is not executed either. Writes are failed with the `failpoints` feature
//! (`TELEMATICSD_FAIL_WRITE`), the same way a full disk fails them.

use std::time::Duration;

use telematics_it::{CODE, Options, World};
use telematics_security::Action;
use telematicsd::failpoint::{WRITE_ENV_VAR, Write};

use super::DAEMON;

async fn failed_write_stops_the_command(write: Write) {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    let mut phone = w.pair("phone", CODE).await;
    assert_eq!(w.stop_daemon().await, Some(0));
    w.start_daemon_with(|c| {
        c.env(WRITE_ENV_VAR, write.name());
    })
    .await;
    let on_bus = w.car.lock().await.commands_received();
    w.send(&mut phone, Action::Unlock, CODE).await;
    let st = w
        .wait_daemon_exit(20)
        .await
        .unwrap_or_else(|| panic!("{write:?}: daemon did not stop; log:\n{}", w.log()));
    let log = w.log();
    assert_eq!(st.code(), Some(1), "{write:?}: exit 1; log:\n{log}");
    assert!(
        log.contains("error[store.write_failed]"),
        "{write:?}: stable code; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{write:?}: no panic");
    assert!(!log.contains("actuation sent"), "{write:?}: log:\n{log}");
    assert_eq!(
        w.car.lock().await.commands_received(),
        on_bus,
        "{write:?}: nothing reached the car"
    );
    // Restarted without the fault: the command is not executed after the fact.
    w.start_daemon().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.car.lock().await.commands_received(),
        on_bus,
        "{write:?}: not executed after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_security_state_write_sends_no_frame_and_stops_the_daemon() {
    failed_write_stops_the_command(Write::SecurityState).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_accepted_journal_write_sends_no_frame_and_stops_the_daemon() {
    failed_write_stops_the_command(Write::Journal).await;
}
