//! The echo guest: the reference behaviour other-language guests copy.
//! Bodies arrive unchanged, keys are preserved, msgpack input reaches the
//! guest as JSON.

use std::time::Duration;

use logpipe_tests::*;

#[test]
fn echo_preserves_bodies_and_keys() {
    let broker = Broker::start();
    let topic = unique("echo");
    broker.create_topic(&topic, 1);
    broker.create_topic("echo-out", 1);
    let bodies = [
        r#"{"text":"Zürich — Straße 東京 🚀"}"#,
        r#"{"id":9007199254740993,"big":123456789012345678901234567890,"f":47.3769}"#,
        r#"{"nested":{"a":[1,{"b":null}],"t":true}}"#,
        r#"{}"#,
    ];
    let mut records: Vec<Raw> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let value = format!(r#"json:{{"type":"echo","version":1,"message":{body}}}"#);
            if i % 2 == 0 {
                Raw::keyed(&format!("key-{i}"), value)
            } else {
                Raw::value(value)
            }
        })
        .collect();
    let msgpack = logpipe_host::envelope::render(
        logpipe_host::envelope::Format::Msgpack,
        "echo",
        1,
        r#"{"from":"msgpack","n":-42}"#,
        Some("py"),
    )
    .unwrap();
    records.push(Raw::keyed("mp", msgpack));
    broker.produce(&topic, &records);

    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(&broker, &example_handlers(), &topic, &offsets);
    command.args([
        "--producer-id",
        "echo-host",
        "--consumer-timeout-ms",
        "2000",
    ]);
    let run = finish(command, None, Duration::from_secs(120));
    run.assert_code(0);
    assert_eq!(run.count("handled"), 5);

    let out: Vec<(Option<String>, String)> = broker
        .read_all("echo-out")
        .iter()
        .map(|r| (r.key_text(), r.value_text()))
        .collect();
    let mut expected: Vec<(Option<String>, String)> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            (
                (i % 2 == 0).then(|| format!("key-{i}")),
                format!(
                    r#"json:{{"type":"echo","version":1,"message":{body},"producer":"echo-host"}}"#
                ),
            )
        })
        .collect();
    expected.push((
        Some("mp".into()),
        r#"json:{"type":"echo","version":1,"message":{"from":"msgpack","n":-42},"producer":"echo-host"}"#.into(),
    ));
    assert_eq!(out, expected);
}

#[test]
fn records_wait_for_the_minimum_lag() {
    let broker = Broker::start();
    let topic = unique("lag");
    broker.create_topic(&topic, 2);
    broker.create_topic("echo-out", 1);
    let records: Vec<Raw> = (0..10)
        .map(|i| {
            Raw::keyed(
                &format!("k{i}"),
                envelope("echo", 1, &serde_json::json!({"n": i})),
            )
        })
        .collect();
    broker.produce(&topic, &records);
    let produced_at = std::time::Instant::now();
    let work = tempfile::tempdir().unwrap();
    let mut command = run_command(
        &broker,
        &example_handlers(),
        &topic,
        &work.path().join("offsets.sqlite3"),
    );
    command.args([
        "--consumer-timeout-ms",
        "1000",
        "--min-message-lag-ms",
        "2500",
        "--produce-mode",
        "direct",
    ]);
    let running = Running::start(command);
    // Nothing may come out before the records are 2.5 s old.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        produced_at.elapsed() < Duration::from_millis(2400),
        "the machine is too slow for this check"
    );
    assert!(broker.read_all("echo-out").is_empty(), "handled too early");
    let finished = running.wait(Duration::from_secs(60));
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 10);
    assert_eq!(broker.read_all("echo-out").len(), 10);
}
