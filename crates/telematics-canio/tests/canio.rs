//! Replay -> decode -> VSS mapping -> state store, real-time pacing, and the in-process bus.

use telematics_can::demo::{self, BodyCommand};
use telematics_can::{
    CanFrame, CanId, Dbc, DecodeOutcome, DecodeStats, SignalValue, Timestamp, VehicleState,
    VssMapping,
};
use telematics_canio::{CanBus, CanSink, CanSource, ReplayMode, ReplaySource};

fn demo_log(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../telematics-can/data")
        .join(name)
}

#[tokio::test]
async fn replay_drive_log_through_pipeline() {
    let dbc = Dbc::parse(demo::DEMO_DBC).expect("dbc");
    let mapping = VssMapping::from_toml(demo::DEMO_VSS_TOML)
        .expect("toml")
        .bind(&dbc)
        .expect("bind");
    // Inject garbage lines into the real log: they must be skipped and counted, not fatal.
    let mut text =
        std::fs::read_to_string(demo_log("demo_drive.log")).expect("demo_drive.log present");
    text.insert_str(0, "this is not candump\n");
    text.push_str("(17000000xx.0) can0 100#00\n(1700000020.0) can0 100#0\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("drive.log");
    std::fs::write(&path, &text).expect("write");

    let mut src: Box<dyn CanSource> = Box::new(
        ReplaySource::open(&path, ReplayMode::AsFastAsPossible)
            .await
            .expect("open"),
    );
    let mut state = VehicleState::from_mapping(&mapping);
    let mut stats = DecodeStats::default();
    let mut first_ts = None;
    let mut now = Timestamp(0);
    while let Some(frame) = src.recv().await.expect("recv") {
        let ts = frame.timestamp_us.expect("log timestamp");
        let t0 = *first_ts.get_or_insert(ts);
        now = Timestamp((ts - t0) / 1000);
        let r = dbc.decode_frame(&frame);
        stats.record(&r);
        if let Ok(DecodeOutcome::Decoded(d)) = r {
            state.apply(&mapping, &d, now);
        }
    }
    assert_eq!(stats.unknown_id, 20);
    assert_eq!(stats.decoded, 841);
    let get = |p: &str| {
        state
            .get(p, now)
            .unwrap_or_else(|| panic!("{p}"))
            .value
            .clone()
    };
    assert_eq!(get("Vehicle.Speed"), SignalValue::Float(50.0));
    assert_eq!(
        get("Vehicle.Powertrain.Transmission.SelectedGear"),
        SignalValue::Int(127)
    );
    assert_eq!(
        get("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"),
        SignalValue::Bool(true)
    );
    assert_eq!(
        get("Vehicle.LowVoltageSystemState"),
        SignalValue::Text("ON".into())
    );

    let mut again = ReplaySource::from_text(text, ReplayMode::AsFastAsPossible).expect("replay");
    let mut n = 0;
    while again.next_frame().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 861);
    assert_eq!(again.garbage_count(), 3);
    let lines: Vec<usize> = again.garbage().iter().map(|g| g.line).collect();
    assert_eq!(lines, vec![1, 863, 864]);
}

#[tokio::test(start_paused = true)]
async fn realtime_replay_honours_gaps_and_speed() {
    let log = "(1700000000.000000) can0 100#00\n(1700000001.000000) can0 101#01\n(1700000003.000000) can0 102#02\n";
    let start = tokio::time::Instant::now();
    let mut src =
        ReplaySource::from_text(log, ReplayMode::RealTime { speed: 2.0 }).expect("replay");
    let mut at = Vec::new();
    while let Some(f) = src.next_frame().await {
        at.push((f.id, start.elapsed().as_millis()));
    }
    assert_eq!(at, vec![(0x100, 0), (0x101, 500), (0x102, 1500)]);
    assert!(ReplaySource::from_text("", ReplayMode::RealTime { speed: 0.0 }).is_err());
    assert!(ReplaySource::from_text("", ReplayMode::RealTime { speed: f64::NAN }).is_err());
}

#[tokio::test]
async fn replay_filters_interface() {
    let log = "(1.0) can0 100#00\n(1.1) can1 101#01\n(1.2) can0 102#02\n";
    let mut src = ReplaySource::from_text(log, ReplayMode::AsFastAsPossible)
        .expect("r")
        .with_iface("can1");
    assert_eq!(src.next_frame().await.map(|f| f.id), Some(0x101));
    assert_eq!(src.next_frame().await, None);
}

#[tokio::test]
async fn bus_nodes_see_each_others_frames_not_their_own() {
    let bus = CanBus::new(16);
    let mut a = bus.node();
    let mut b = bus.node();
    let mut c = bus.node();
    let f = CanFrame::new(CanId::standard(0x321), &[1, 2, 3]);
    a.send(&f).await.expect("send");
    let got_b = b.recv().await.expect("b").expect("frame");
    let got_c = c.recv().await.expect("c").expect("frame");
    assert_eq!(got_b.data, vec![1, 2, 3]);
    assert!(got_b.timestamp_us.is_some(), "bus stamps send time");
    assert_eq!(got_c.id, 0x321);
    assert!(a.try_recv_frame().is_none(), "no echo to the sender");
    // invalid frames are refused
    let bad = CanFrame {
        id: 0x800,
        extended: false,
        fd: false,
        remote: false,
        data: vec![],
        timestamp_us: None,
    };
    assert_eq!(
        a.send(&bad).await.map_err(|e| e.code()),
        Err("can_invalid_frame")
    );
    let long = CanFrame {
        id: 1,
        extended: false,
        fd: false,
        remote: false,
        data: vec![0; 9],
        timestamp_us: None,
    };
    assert!(a.send(&long).await.is_err());
}

#[tokio::test]
async fn bus_flood_is_bounded_and_drops_are_counted() {
    const CAP: usize = 64;
    const N: u64 = 50_000;
    let bus = CanBus::new(CAP);
    let flooder = bus.node().sender();
    let mut slow = bus.node();
    for i in 0..N {
        flooder
            .send_frame(&CanFrame::new(
                CanId::standard((i % 0x7FF) as u16),
                &i.to_le_bytes(),
            ))
            .expect("send");
    }
    let mut received = 0u64;
    let mut last = None;
    while let Some(f) = slow.try_recv_frame() {
        received += 1;
        last = Some(u64::from_le_bytes(
            f.data.as_slice().try_into().expect("8 bytes"),
        ));
    }
    assert!(
        received <= CAP as u64,
        "receiver held at most the capacity: {received}"
    );
    assert_eq!(
        received + slow.dropped(),
        N,
        "every frame is delivered or counted as dropped"
    );
    assert_eq!(last, Some(N - 1), "newest frames survive");
    assert_eq!(
        bus.stats(),
        telematics_canio::BusStats {
            sent: N,
            dropped: slow.dropped()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flood_with_lagging_consumer() {
    let bus = CanBus::new(32);
    let sender = bus.node().sender();
    let mut consumer = bus.node();
    let producer = tokio::spawn(async move {
        for i in 0..20_000u32 {
            sender
                .send_frame(&CanFrame::new(CanId::extended(i), &[0; 8]))
                .expect("send");
            if i % 1000 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(sender);
    });
    let mut got = 0u64;
    let reader = async {
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), consumer.recv_frame())
                .await
                .unwrap_or(Ok(None))
        {
            got += 1;
            tokio::time::sleep(std::time::Duration::from_micros(10)).await;
        }
    };
    reader.await;
    producer.await.expect("producer");
    // drain anything left
    while consumer.try_recv_frame().is_some() {
        got += 1;
    }
    assert_eq!(got + consumer.dropped(), 20_000);
}

#[tokio::test]
async fn actuator_and_simulator_over_the_bus() {
    let dbc = Dbc::parse(demo::DEMO_DBC).expect("dbc");
    let bus = CanBus::new(64);
    let mut tcu = bus.node();
    let mut bcm = bus.node();
    let sink: &dyn CanSink = &tcu;
    sink.send(&demo::encode_body_command(&dbc, BodyCommand::Unlock, 7).expect("encode"))
        .await
        .expect("send");
    // the simulated body controller decodes the command and acknowledges the counter
    let cmd_frame = bcm.recv().await.expect("recv").expect("frame");
    let (cmd, counter) = demo::decode_body_command(&dbc, &cmd_frame).expect("valid command");
    assert_eq!((cmd, counter), (BodyCommand::Unlock, 7));
    let ack = dbc
        .encode(
            demo::COMMAND_ACK,
            &[
                (
                    "AckCounter",
                    telematics_can::EncodeValue::Raw(telematics_can::RawValue::Unsigned(
                        u64::from(counter),
                    )),
                ),
                ("AckResult", telematics_can::EncodeValue::Label("OK")),
            ],
        )
        .expect("ack");
    bcm.send(&ack).await.expect("send ack");
    let got = tcu.recv().await.expect("recv").expect("ack frame");
    let DecodeOutcome::Decoded(d) = dbc.decode_frame(&got).expect("decode") else {
        panic!("unknown id")
    };
    assert_eq!(d.get("AckCounter").and_then(|s| s.raw.as_i64()), Some(7));
    assert_eq!(d.get("AckResult").and_then(|s| s.label), Some("OK"));
}
