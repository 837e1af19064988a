//! Replacing components while the host runs: under load, with bad files,
//! with removals and with manifest changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use logpipe_tests::*;
use serde_json::{Value, json};

const SETTLE_MS: &str = "50";

fn swaps_wanted() -> usize {
    std::env::var("LOGPIPE_SWAP_TEST_SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// 50k+ records flow while v1 and v2 of the swap guest take turns; every
/// record is handled exactly once, by exactly one version, in order.
#[test]
fn swapping_under_load_handles_every_record_exactly_once_in_order() {
    const MIN_RECORDS: u64 = 50_000;
    let broker = Broker::start();
    let topic = unique("swap-in");
    broker.create_topic(&topic, 2);
    broker.create_topic("swap-out", 2);
    let v1 = std::fs::read(component("swap-v1")).unwrap();
    let v2 = std::fs::read(component("swap-v2")).unwrap();
    let handlers = tempfile::tempdir().unwrap();
    deploy(handlers.path(), "swap.wasm", &v1);

    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(&broker, handlers.path(), &topic, &offsets);
    command.args([
        "--consumer-timeout-ms",
        "5000",
        "--handlers-settle-ms",
        SETTLE_MS,
    ]);
    let host = Running::start(command);
    host.wait_for("handlers ready", 1, Duration::from_secs(60));

    // Feed at least 50k records, spread over several seconds and for as
    // long as the swaps go on, so every swap lands mid-stream.
    let swapping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeding = swapping.clone();
    let bootstrap = broker.bootstrap.clone();
    let feeder_topic = topic.clone();
    let feeder = std::thread::spawn(move || {
        let mut batch = 0;
        while batch < MIN_RECORDS / 1000 || feeding.load(std::sync::atomic::Ordering::SeqCst) {
            let records: Vec<Raw> = (batch * 1000..(batch + 1) * 1000)
                .map(|n| Raw::value(envelope("swap", 1, &json!({ "n": n }))).on((n % 2) as i32))
                .collect();
            produce_to(&bootstrap, &feeder_topic, &records);
            std::thread::sleep(Duration::from_millis(60));
            batch += 1;
        }
        batch * 1000
    });

    let swaps = swaps_wanted();
    for k in 0..swaps {
        let next = if k % 2 == 0 { &v2 } else { &v1 };
        deploy(handlers.path(), "swap.wasm", next);
        host.wait_for("swapped in handler", k + 1, Duration::from_secs(30));
        // Spread the swaps over the feeding window.
        std::thread::sleep(Duration::from_millis(150));
    }
    swapping.store(false, std::sync::atomic::Ordering::SeqCst);
    let records = feeder.join().expect("feeder");
    let finished = host.wait(Duration::from_secs(300));
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), records);

    let mut seen = BTreeSet::new();
    let mut last_offset: BTreeMap<String, i64> = BTreeMap::new();
    let mut markers: BTreeMap<String, u64> = BTreeMap::new();
    for record in broker.read_all("swap-out") {
        let text = record.value_text();
        let env: Value = serde_json::from_str(text.strip_prefix("json:").expect("json")).unwrap();
        let message = &env["message"];
        let partition = message["partition"].as_str().unwrap().to_owned();
        let offset: i64 = message["offset"].as_str().unwrap().parse().unwrap();
        assert!(
            seen.insert((partition.clone(), offset)),
            "handled twice: {partition}/{offset}"
        );
        let last = last_offset.entry(partition.clone()).or_insert(-1);
        assert!(
            offset > *last,
            "out of order in partition {partition}: {offset} after {last}"
        );
        *last = offset;
        *markers
            .entry(message["marker"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len() as u64, records, "every record handled once");
    assert!(
        markers.get("v1").copied().unwrap_or(0) > 0 && markers.get("v2").copied().unwrap_or(0) > 0,
        "{markers:?}"
    );

    let mut pauses: Vec<u64> = finished
        .stderr
        .lines()
        .filter(|l| l.contains("swapped in handler"))
        .filter_map(|l| {
            l.split("pause_us=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(pauses.len(), swaps);
    pauses.sort_unstable();
    let pick = |q: f64| pauses[((pauses.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "hot swap: {swaps} swaps under load, pause p50={}us p99={}us max={}us; outputs by version {markers:?}",
        pick(0.5),
        pick(0.99),
        pauses[pauses.len() - 1]
    );
}

/// Bad files never replace or disturb the running handler; removing a file
/// unregisters its (type, version).
#[test]
fn bad_components_are_rejected_and_the_running_handler_stays() {
    let broker = Broker::start();
    let topic = unique("echo-in");
    broker.create_topic(&topic, 1);
    broker.create_topic("echo-out", 1);
    let handlers = handlers_folder(&[("echo", "echo")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(&broker, handlers.path(), &topic, &offsets);
    command.args(["--handlers-settle-ms", SETTLE_MS]);
    let host = Running::start(command);
    host.wait_for("handlers ready", 1, Duration::from_secs(60));

    let echo = std::fs::read(component("echo")).unwrap();
    let mut random = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..4096 {
        state ^= state << 7;
        state ^= state >> 9;
        random.push(state as u8);
    }
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.wasm",
            echo[..echo.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
        ("random.wasm", random, "not a valid WebAssembly component"),
        (
            "core.wasm",
            std::fs::read(component("core-module")).unwrap(),
            "not a valid WebAssembly component",
        ),
        (
            "other-world.wasm",
            std::fs::read(component("not-a-handler")).unwrap(),
            "is not a logpipe handler",
        ),
        (
            "echo-clash.wasm",
            echo.clone(),
            "both handle type \"echo\" version 1",
        ),
    ];
    let mut sent = 0;
    for (name, bytes, reason) in &bad {
        deploy(handlers.path(), name, bytes);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !host
            .log()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains(name) && l.contains(reason))
        {
            assert!(
                Instant::now() < deadline,
                "{name} not rejected with {reason:?}:\n{}",
                host.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The running echo still handles records.
        sent += 1;
        broker.produce(
            &topic,
            &[Raw::value(envelope("echo", 1, &json!({ "after": name })))],
        );
        wait_for_records(&broker, "echo-out", sent);
        std::fs::remove_file(handlers.path().join(name)).unwrap();
    }

    // Removing echo.wasm unregisters "echo" v1.
    std::fs::remove_file(handlers.path().join("echo.wasm")).unwrap();
    host.wait_for("removed handler", 1, Duration::from_secs(30));
    broker.produce(
        &topic,
        &[Raw::value(envelope(
            "echo",
            1,
            &json!({ "after": "removal" }),
        ))],
    );
    host.wait_for(
        "no handler for message type \"echo\"",
        1,
        Duration::from_secs(30),
    );

    host.terminate();
    let finished = host.wait(Duration::from_secs(60));
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), sent as u64);
    assert_eq!(finished.count("unknown_type"), 1);
}

/// A manifest change hot-reloads its component with the new grants.
#[test]
fn a_manifest_change_takes_effect_without_a_restart() {
    let broker = Broker::start();
    let topic = unique("chaos-in");
    broker.create_topic(&topic, 1);
    broker.create_topic("allowed-out", 1);
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(&broker, handlers.path(), &topic, &offsets);
    command.args(["--handlers-settle-ms", SETTLE_MS]);
    let host = Running::start(command);
    host.wait_for("handlers ready", 1, Duration::from_secs(60));

    let produce = || {
        Raw::value(envelope(
            "chaos",
            1,
            &json!({"action": "produce-to", "topic": "allowed-out"}),
        ))
    };
    broker.produce(&topic, &[produce()]);
    wait_for_records(&broker, "allowed-out", 1);

    deploy(
        handlers.path(),
        "chaos.toml",
        b"[produce]\ntopics = [\"elsewhere\"]\n",
    );
    host.wait_for("swapped in handler", 1, Duration::from_secs(30));
    broker.produce(&topic, &[produce()]);
    host.wait_for(
        "not allowed by this handler's manifest",
        1,
        Duration::from_secs(30),
    );

    // An invalid manifest is rejected like a bad component.
    deploy(handlers.path(), "chaos.toml", b"[produce]\ntopicz = []\n");
    host.wait_for("unknown field `topicz`", 1, Duration::from_secs(30));

    host.terminate();
    let finished = host.wait(Duration::from_secs(60));
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 1);
    assert_eq!(finished.count("rejected"), 1);
    assert_eq!(broker.read_all("allowed-out").len(), 1);
}

fn wait_for_records(broker: &Broker, topic: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.read_all(topic).len() < n {
        assert!(
            Instant::now() < deadline,
            "{topic} never reached {n} records"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
