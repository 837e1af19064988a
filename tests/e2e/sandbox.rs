//! Hostile guests against the sandbox: every escape attempt is denied or
//! stopped with a reason naming the limit, and the next record is handled.
//! Handlers are called in-process here for precise outcomes; the broker
//! tests show the same through the binary.

use std::time::Duration;

use logpipe_host::component::{GuestLimits, HandleOutcome};
use logpipe_host::policy::ErrorClass;
use logpipe_tests::in_process::{Loaded, guest_envelope};
use logpipe_tests::*;
use serde_json::{Value, json};

fn limits() -> GuestLimits {
    GuestLimits {
        call_timeout: Duration::from_millis(200),
        max_memory_bytes: 32 << 20,
        ..GuestLimits::default()
    }
}

const MANIFEST: &str = r#"
[produce]
topics = ["allowed-out", "chaos-out"]
max_calls = 50
max_bytes = 4096

[env]
REGION = "eu-west-1"
"#;

fn expect_trap(outcome: HandleOutcome, expected: ErrorClass, needle: &str, what: &str) {
    match outcome {
        HandleOutcome::Trapped { class, reason } => {
            assert!(reason.contains(needle), "{what}: {reason}");
            assert_eq!(class, expected, "{what}: {reason}");
        }
        other => panic!("{what}: expected a trap naming {needle:?}, got {other:?}"),
    }
}

fn expect_reject(outcome: HandleOutcome, needle: &str, what: &str) {
    match outcome {
        HandleOutcome::Rejected(reason) => assert!(reason.contains(needle), "{what}: {reason}"),
        other => panic!("{what}: expected a reject containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn hostile_guests_are_stopped_with_a_named_reason_and_the_next_record_is_handled() {
    let mut loaded = Loaded::new("chaos", Some(MANIFEST), limits(), false);
    let handler = loaded.handler("chaos", 1);
    let call = |body: Value| guest_envelope("chaos", &body);
    let traps = [
        (
            json!({"action": "loop"}),
            ErrorClass::Deadline,
            "deadline exceeded: the call ran longer than 200 ms",
        ),
        (
            json!({"action": "alloc"}),
            ErrorClass::Memory,
            "memory limit exceeded",
        ),
        (
            json!({"action": "recurse"}),
            ErrorClass::Trap,
            "call stack exhausted",
        ),
        (
            json!({"action": "panic"}),
            ErrorClass::Trap,
            "asked to panic",
        ),
        (
            json!({"action": "produce-flood"}),
            ErrorClass::Produce,
            "produce limit exceeded: more than 50 produce calls",
        ),
        (
            json!({"action": "produce-to", "topic": "allowed-out", "pad": "x".repeat(5000)}),
            ErrorClass::Produce,
            "produce limit exceeded: more than 4096 bytes",
        ),
    ];
    for (body, class, reason) in traps {
        let what = body["action"].to_string();
        expect_trap(handler.handle(&call(body)), class, reason, &what);
        assert_eq!(
            handler.handle(&call(json!({"action": "ok"}))),
            HandleOutcome::Handled,
            "after {what}"
        );
    }
    let denials = [
        (
            json!({"action": "produce-to", "topic": "forbidden"}),
            "not allowed by this handler's manifest",
        ),
        (json!({"action": "open-file"}), "denied: "),
        (
            json!({"action": "connect", "addr": "127.0.0.1:9"}),
            "denied: ",
        ),
        (
            json!({"action": "read-env", "name": "HOME"}),
            "denied: env HOME not set",
        ),
        (
            json!({"action": "read-env", "name": "REGION"}),
            "env REGION=eu-west-1",
        ),
    ];
    for (body, reason) in denials {
        let what = body["action"].to_string();
        expect_reject(handler.handle(&call(body)), reason, &what);
        assert_eq!(
            handler.handle(&call(json!({"action": "ok"}))),
            HandleOutcome::Handled,
            "after {what}"
        );
    }
    assert_eq!(
        handler.handle(&call(
            json!({"action": "produce-to", "topic": "allowed-out"})
        )),
        HandleOutcome::Handled
    );
    assert_eq!(
        handler.handle(&call(json!({"action": "print"}))),
        HandleOutcome::Handled
    );
    let sent = loaded.sink.sent.lock().unwrap();
    let topics: Vec<&str> = sent.iter().map(|(t, _, _)| t.as_str()).collect();
    assert!(
        topics
            .iter()
            .all(|t| *t == "allowed-out" || *t == "chaos-out"),
        "nothing reached a forbidden topic: {topics:?}"
    );
}

#[test]
fn without_a_manifest_the_environment_is_empty() {
    let mut loaded = Loaded::new("chaos", None, limits(), false);
    let handler = loaded.handler("chaos", 1);
    expect_reject(
        handler.handle(&guest_envelope("chaos", &json!({"action": "read-env"}))),
        "denied: environment is empty",
        "read-env",
    );
}

#[test]
fn per_record_isolation_gives_every_record_a_fresh_instance() {
    let count = |manifest: Option<&str>, pooling: bool| -> Vec<String> {
        let mut loaded = Loaded::new("chaos", manifest, limits(), pooling);
        let handler = loaded.handler("chaos", 1);
        (0..3)
            .map(
                |_| match handler.handle(&guest_envelope("chaos", &json!({"action": "count"}))) {
                    HandleOutcome::Rejected(reason) => reason,
                    other => panic!("count: {other:?}"),
                },
            )
            .collect()
    };
    assert_eq!(count(None, false), ["count 1", "count 2", "count 3"]);
    let per_record = Some("isolation = \"per-record\"\n");
    assert_eq!(count(per_record, false), ["count 1", "count 1", "count 1"]);
    assert_eq!(
        count(per_record, true),
        ["count 1", "count 1", "count 1"],
        "with pooling"
    );
}

/// Through the binary: hostile records on their own partitions fail only
/// their partition, denied ones are skipped, and the host keeps going.
#[test]
fn the_host_survives_hostile_records() {
    let broker = Broker::start();
    let topic = unique("hostile");
    broker.create_topic(&topic, 4);
    broker.create_topic("allowed-out", 1);
    broker.create_topic("chaos-out", 1);
    let chaos = |body: Value| envelope("chaos", 1, &body);
    let mut records = vec![
        Raw::value(chaos(json!({"action": "recurse"}))).on(0),
        Raw::value(chaos(json!({"action": "produce-flood"}))).on(1),
    ];
    for body in [
        json!({"action": "open-file"}),
        json!({"action": "connect"}),
        json!({"action": "read-env", "name": "HOME"}),
        json!({"action": "produce-to", "topic": "forbidden"}),
        json!({"action": "produce-to", "topic": "allowed-out"}),
        json!({"action": "ok"}),
    ] {
        records.push(Raw::value(chaos(body)).on(2));
    }
    broker.produce(&topic, &records);
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    std::fs::write(handlers.path().join("chaos.toml"), MANIFEST).unwrap();
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let run = finish(
        run_command(&broker, handlers.path(), &topic, &offsets),
        None,
        Duration::from_secs(120),
    );
    run.assert_code(3);
    assert_eq!(run.count("failed"), 2);
    assert_eq!(run.count("rejected"), 4);
    assert_eq!(run.count("handled"), 2);
    assert!(
        run.stderr.contains("call stack exhausted"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("produce limit exceeded"),
        "{}",
        run.stderr
    );
    assert_eq!(broker.read_all("allowed-out").len(), 1);
    let stored = stored_offsets(&offsets);
    assert_eq!(stored.get(&(topic.clone(), 2)), Some(&6), "{stored:?}");
}
