//! Records whose handler fails (retry, panic, endless loop, unbounded
//! allocation) stop their own partition before the record; the other
//! partitions are drained; the host survives and exits 3.

use std::time::{Duration, Instant};

use logpipe_tests::*;
use serde_json::json;

fn chaos(action: &str) -> Vec<u8> {
    envelope("chaos", 1, &json!({ "action": action }))
}

#[test]
fn a_failed_record_stops_its_partition_and_the_rest_drain() {
    let broker = Broker::start();
    let topic = unique("chaos");
    broker.create_topic(&topic, 5);
    let mut records = Vec::new();
    for (partition, failing) in [(0, "retry"), (1, "loop"), (2, "alloc"), (3, "panic")] {
        for action in ["ok", failing, "ok"] {
            records.push(Raw::value(chaos(action)).on(partition));
        }
    }
    for _ in 0..5 {
        records.push(Raw::value(chaos("ok")).on(4));
    }
    broker.produce(&topic, &records);

    let handlers = handlers_folder(&[("chaos", "chaos")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let chaos_run = || {
        let mut command = run_command(&broker, handlers.path(), &topic, &offsets);
        command.args(["--handler-timeout-ms", "300", "--handler-memory-mib", "32"]);
        command
    };
    let started = Instant::now();
    // No consumer timeout: the host must stop on its own once the healthy
    // partition is drained.
    let run = finish(chaos_run(), None, Duration::from_secs(120));
    run.assert_code(3);
    assert!(started.elapsed() < Duration::from_secs(60));

    assert_eq!(run.count("failed"), 4);
    assert_eq!(run.count("handled"), 4 + 5);
    let log = &run.stderr;
    assert!(log.contains("asked to retry"), "{log}");
    assert!(
        log.contains("deadline exceeded: the call ran longer than 300 ms"),
        "{log}"
    );
    assert!(log.contains("memory limit exceeded"), "{log}");
    assert!(log.contains("unreachable"), "panic traps: {log}");
    assert!(
        log.contains("(guest stderr: ") && log.contains("asked to panic"),
        "panic message kept: {log}"
    );

    let stored = stored_offsets(&offsets);
    for partition in 0..4 {
        assert_eq!(
            stored.get(&(topic.clone(), partition)),
            Some(&1),
            "partition {partition} stops before its failed record: {stored:?}"
        );
    }
    assert_eq!(stored.get(&(topic.clone(), 4)), Some(&5), "{stored:?}");

    // The next start retries exactly the failed records.
    let rerun = finish(chaos_run(), None, Duration::from_secs(120));
    rerun.assert_code(3);
    assert_eq!(rerun.count("failed"), 4);
    assert_eq!(rerun.count("handled"), 0);
}

/// A trapped instance is replaced by a fresh one: the same handler keeps
/// serving records after a deadline, a memory-limit hit and a panic.
#[test]
fn a_fresh_instance_replaces_a_trapped_one() {
    use logpipe_host::component::{GuestLimits, HandleOutcome};
    use logpipe_tests::in_process::{Loaded, guest_envelope};

    let limits = GuestLimits {
        call_timeout: Duration::from_millis(200),
        max_memory_bytes: 32 << 20,
        ..GuestLimits::default()
    };
    let mut loaded = Loaded::new("chaos", None, limits, false);
    let handler = loaded.handler("chaos", 1);
    let call = |action: &str| guest_envelope("chaos", &json!({ "action": action }));
    for failing in ["loop", "alloc", "panic"] {
        let outcome = handler.handle(&call(failing));
        assert!(
            matches!(outcome, HandleOutcome::Trapped { .. }),
            "{failing}: {outcome:?}"
        );
        assert_eq!(
            handler.handle(&call("ok")),
            HandleOutcome::Handled,
            "after {failing}"
        );
    }
    assert_eq!(
        handler.handle(&call("reject")),
        HandleOutcome::Rejected("asked to reject".into())
    );
    // A produce the host refuses is an error the guest sees, not a trap.
    match handler.handle(&call("produce-bad-json")) {
        HandleOutcome::Rejected(reason) => assert!(
            reason.starts_with("produce failed: message body is not valid JSON"),
            "{reason}"
        ),
        other => panic!("produce-bad-json: {other:?}"),
    }
}
