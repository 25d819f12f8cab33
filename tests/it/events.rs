//! Security events for the owner on `vehicles/{vin}/alerts` (issue 13): a pairing, wrong
//! codes with their count, the lockout they start (with the end of its wait), and a flood of forged commands reported in aggregate (the first of the
//! minute at once, the rest at the minute's end: never one alert per forged packet). The
//! daemon binary against mosquitto with mTLS, as in main.rs.

use std::time::Duration;

use telematics_it::{CODE, Device, Options, World};
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId, KeyId};
use telematics_telemetry::Alert;

use super::{DAEMON, now_s};

/// Waits for the first alert of `kind`.
async fn first_alert(w: &World, kind: &str) -> Alert {
    w.wait_for(&format!("a {kind} alert"), 15, |inbox| {
        inbox.alerts.iter().find(|a| a.kind == kind).cloned()
    })
    .await
}

/// Waits for `n` alerts of `kind`; their counts in arrival order.
async fn counts_of(w: &World, kind: &str, n: usize) -> Vec<Option<u64>> {
    w.wait_for(&format!("{n} {kind} alerts"), 15, |inbox| {
        let c: Vec<_> = inbox
            .alerts
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.count)
            .collect();
        (c.len() == n).then_some(c)
    })
    .await
}

fn security_alerts(w: &World, kind: &str) -> Vec<Alert> {
    w.inbox
        .lock()
        .unwrap()
        .alerts
        .iter()
        .filter(|a| a.kind == kind)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_wrong_code_and_a_forged_flood_reach_the_owner_as_security_alerts() {
    let mut w = World::new(Options::default(), DAEMON.as_ref()).await;
    w.start_daemon().await;
    let mut phone = w.pair("phone", CODE).await;
    let device = hex::encode(&phone.cred.key_id.0);
    let paired = first_alert(&w, "security_device_paired").await;
    assert_eq!(
        paired.device.as_deref(),
        Some(device.as_str()),
        "{paired:?}"
    );

    // A wrong code from the phone: the alert names the device and counts the failure.
    w.send(&mut phone, Action::Lock, "9753").await;
    let wrong = first_alert(&w, "security_wrong_code").await;
    assert_eq!(
        (wrong.count, wrong.device.as_deref()),
        (Some(1), Some(device.as_str())),
        "{wrong:?}"
    );
    let bytes = wrong.encode().unwrap();
    assert!(
        !bytes.windows(4).any(|b| b == b"9753") && !bytes.windows(4).any(|b| b == CODE.as_bytes()),
        "no code in an event"
    );

    // Two more start the 30 s wait (threshold 3): counted 2 and 3, then the lockout starts
    // with the end of its wait.
    w.send(&mut phone, Action::Lock, "9753").await;
    w.send(&mut phone, Action::Lock, "9753").await;
    let counts = counts_of(&w, "security_wrong_code", 3).await;
    assert_eq!(counts, vec![Some(1), Some(2), Some(3)]);
    let lockout = first_alert(&w, "security_lockout").await;
    let in_30s = (now_s() + 30) * 1000;
    assert!(
        lockout
            .until
            .is_some_and(|u| u > lockout.at && u <= in_30s + 1000),
        "{lockout:?}"
    );

    // 300 commands under a key id the car never paired: one alert now (count 1), the other
    // 299 wait for the end of the minute.
    let mut forger = Device {
        cred: phone.cred.clone(),
        counter: 0,
    };
    forger.cred.key_id = KeyId(vec![0xEE; 16]);
    for i in 0..300u64 {
        let req = CommandRequest {
            command_id: CommandId([i as u8; 16]),
            action: Action::Unlock,
            counter: i + 1,
            issued_at: now_s(),
            expires_at: now_s() + 60,
            code: CODE.into(),
        };
        let env = build_command(&forger.cred, &req, &ring::rand::SystemRandom::new()).unwrap();
        w.publish_raw(env).await;
    }
    let first = first_alert(&w, "security_unknown_key").await;
    assert_eq!(first.count, Some(1), "{first:?}");
    // Every forged command was verified (the car is still answering) ...
    let id = w.send(&mut phone, Action::Unlock, CODE).await;
    assert!(!w.terminal(id, 30).await.is_empty(), "{}", w.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ... and still only that one alert for the flood.
    assert_eq!(
        security_alerts(&w, "security_unknown_key").len(),
        1,
        "{:?}",
        security_alerts(&w, "security_unknown_key")
    );
    // A clean stop commits what the open window counted: the counts sum to the flood.
    assert_eq!(w.stop_daemon().await, Some(0));
    let counts = counts_of(&w, "security_unknown_key", 2).await;
    assert_eq!(counts, vec![Some(1), Some(299)]);
}
