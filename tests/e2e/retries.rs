//! Retry and dead-letter policies: blocking and non-blocking retries, giving
//! up to a dead-letter topic, per-class actions, manifest overrides, and a
//! clean SIGTERM while a record waits for its retry.

use std::path::Path;
use std::time::{Duration, Instant};

use logpipe_tests::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);
const GROUP: &str = "logpipe-host";

fn chaos(body: Value) -> Vec<u8> {
    envelope("chaos", 1, &body)
}

/// Run until idle for 4 s: long enough for retry copies to come back
/// through their topics on a busy machine.
fn run(broker: &Broker, handlers: &Path, topic: &str, offsets: &Path, extra: &[&str]) -> Finished {
    let mut command = run_command(broker, handlers, topic, offsets);
    command.args(["--consumer-timeout-ms", "4000"]).args(extra);
    finish(command, None, LIMIT)
}

#[test]
fn blocking_retries_hold_only_their_partition_until_the_record_succeeds() {
    let broker = Broker::start();
    let topic = unique("blocking");
    broker.create_topic(&topic, 2);
    let flaky = json!({"action": "flaky", "fails": 2, "id": "a"});
    broker.produce(
        &topic,
        &[
            Raw::keyed("a", chaos(flaky)).on(0),
            Raw::value(chaos(json!({"action": "ok"}))).on(0),
            Raw::value(chaos(json!({"action": "ok"}))).on(1),
            Raw::value(chaos(json!({"action": "ok"}))).on(1),
        ],
    );
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let started = Instant::now();
    let finished = run(
        &broker,
        handlers.path(),
        &topic,
        &offsets,
        &[
            "--max-retries",
            "3",
            "--retry-delay",
            "0.3",
            "--retry-backoff",
        ],
    );
    finished.assert_code(0);
    // Delays 0.3 s then 0.6 s (backoff) before the third call succeeds.
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(finished.count("handled"), 4);
    assert_eq!(finished.count("retried"), 2);
    assert_eq!(finished.count("failed"), 0);
    let log = &finished.stderr;
    assert!(
        log.contains("retry 1 in 300ms (blocking)") && log.contains("retry 2 in 600ms (blocking)"),
        "{log}"
    );
    assert!(log.contains("flaky a: succeeded on call 3"), "{log}");
    let stored = stored_offsets(&offsets);
    assert_eq!(stored.get(&(topic.clone(), 0)), Some(&2), "{stored:?}");
    assert_eq!(stored.get(&(topic.clone(), 1)), Some(&2), "{stored:?}");
}

#[test]
fn exhausted_retries_go_to_the_dead_letter_topic_with_headers() {
    let broker = Broker::start();
    let topic = unique("exhausted");
    broker.create_topic(&topic, 1);
    let failing = chaos(json!({"action": "retry"}));
    broker.produce(
        &topic,
        &[
            Raw::value(chaos(json!({"action": "ok"}))),
            Raw::keyed("k-fail", failing.clone()),
            Raw::value(chaos(json!({"action": "ok"}))),
        ],
    );
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let finished = run(
        &broker,
        handlers.path(),
        &topic,
        &offsets,
        &[
            "--max-retries",
            "2",
            "--retry-delay",
            "0.1",
            "--on-failure",
            "dlt",
        ],
    );
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 2);
    assert_eq!(finished.count("retried"), 2);
    assert_eq!(finished.count("failed"), 1);
    assert_eq!(finished.count("dead_lettered"), 1);
    assert_eq!(stored_offsets(&offsets).get(&(topic.clone(), 0)), Some(&3));

    let dlt = broker.read_all(&format!("{GROUP}.{topic}.dlt"));
    assert_eq!(dlt.len(), 1, "one dead letter");
    let letter = &dlt[0];
    assert_eq!(letter.value, failing, "value copied unchanged");
    assert_eq!(
        letter.key_text().as_deref(),
        Some("k-fail"),
        "key copied unchanged"
    );
    assert_eq!(letter.header("LOGPIPE_ORIGINAL_TOPIC"), Some(topic.clone()));
    assert_eq!(
        letter.header("LOGPIPE_ORIGINAL_PARTITION").as_deref(),
        Some("0")
    );
    assert_eq!(
        letter.header("LOGPIPE_ORIGINAL_OFFSET").as_deref(),
        Some("1")
    );
    assert_eq!(
        letter.header("LOGPIPE_ERROR_CLASS").as_deref(),
        Some("retry")
    );
    assert_eq!(letter.header("LOGPIPE_RETRIES").as_deref(), Some("2"));
    let message = letter.header("DEAD_LETTER_MESSAGE").unwrap_or_default();
    assert!(message.contains("asked to retry"), "{message}");
    assert!(letter.header("DEAD_LETTER_DETAIL").is_some());
}

#[test]
fn non_blocking_retries_go_through_retry_topics_then_to_the_dead_letter_topic() {
    let broker = Broker::start();
    let topic = unique("nonblocking");
    broker.create_topic(&topic, 2);
    let flaky = chaos(json!({"action": "flaky", "fails": 2, "id": "b"}));
    let failing = chaos(json!({"action": "retry"}));
    broker.produce(
        &topic,
        &[
            Raw::keyed("b", flaky.clone()).on(0),
            Raw::value(chaos(json!({"action": "ok"}))).on(0),
            Raw::keyed("c", failing.clone()).on(1),
            Raw::value(chaos(json!({"action": "ok"}))).on(1),
        ],
    );
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let finished = run(
        &broker,
        handlers.path(),
        &topic,
        &offsets,
        &[
            "--max-retries",
            "2",
            "--retry-delay",
            "0.3",
            "--retry-non-blocking",
            "--on-failure",
            "dlt",
        ],
    );
    finished.assert_code(0);
    assert_eq!(
        finished.count("handled"),
        3,
        "{}\n{}",
        finished.stdout,
        finished.stderr
    );
    assert_eq!(finished.count("retried"), 4);
    assert_eq!(finished.count("dead_lettered"), 1);
    let log = &finished.stderr;
    assert!(
        log.contains("retry 1 in 300ms (through a retry topic)"),
        "{log}"
    );
    assert!(log.contains("flaky b: succeeded on call 3"), "{log}");

    // The originals moved on at once; the copies carry the retry headers.
    let stored = stored_offsets(&offsets);
    assert_eq!(stored.get(&(topic.clone(), 0)), Some(&2), "{stored:?}");
    assert_eq!(stored.get(&(topic.clone(), 1)), Some(&2), "{stored:?}");
    let first = broker.read_all(&format!("{GROUP}.{topic}.retry.1"));
    let second = broker.read_all(&format!("{GROUP}.{topic}.retry.2"));
    assert_eq!(
        (first.len(), second.len()),
        (2, 2),
        "both records retried twice"
    );
    for copy in first.iter().chain(&second) {
        assert!(
            copy.value == flaky || copy.value == failing,
            "value copied unchanged"
        );
        let due: f64 = copy.header("RETRY_TIMESTAMP").unwrap().parse().unwrap();
        assert!(due > 1.7e9, "due time in epoch seconds: {due}");
        assert!(copy.header("RETRY_MESSAGE").unwrap().contains("retry"));
        assert_eq!(copy.header("LOGPIPE_ORIGINAL_TOPIC"), Some(topic.clone()));
    }
    let retry_offsets: i64 = stored
        .iter()
        .filter(|((t, _), _)| t.contains(".retry."))
        .map(|(_, o)| o)
        .sum();
    assert_eq!(
        retry_offsets, 4,
        "retry copies are committed too: {stored:?}"
    );

    let dlt = broker.read_all(&format!("{GROUP}.{topic}.dlt"));
    assert_eq!(dlt.len(), 1);
    assert_eq!(dlt[0].value, failing);
    assert_eq!(dlt[0].key_text().as_deref(), Some("c"));
    assert_eq!(
        dlt[0].header("LOGPIPE_ORIGINAL_PARTITION").as_deref(),
        Some("1")
    );
    assert_eq!(
        dlt[0].header("LOGPIPE_ORIGINAL_OFFSET").as_deref(),
        Some("0")
    );
    assert_eq!(dlt[0].header("LOGPIPE_RETRIES").as_deref(), Some("2"));
}

#[test]
fn dispatch_classes_follow_their_actions_and_manifests_override_the_host() {
    let broker = Broker::start();
    let topic = unique("classes");
    broker.create_topic(&topic, 2);
    broker.produce(
        &topic,
        &[
            Raw::keyed("bad", b"json:{\"version\":1}".to_vec()).on(0),
            Raw::keyed("unknown", envelope("order", 1, &json!({}))).on(0),
            // The manifest retries once, then dead-letters.
            Raw::keyed("fails", chaos(json!({"action": "retry"}))).on(0),
            Raw::value(chaos(json!({"action": "ok"}))).on(0),
            // The manifest stops on reject.
            Raw::value(chaos(json!({"action": "reject"}))).on(1),
            Raw::value(chaos(json!({"action": "ok"}))).on(1),
        ],
    );
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    std::fs::write(
        handlers.path().join("chaos.toml"),
        "on_reject = \"stop\"\n[retry]\nmax_retries = 1\ndelay = 0.05\non_failure = \"dlt\"\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let finished = run(
        &broker,
        handlers.path(),
        &topic,
        &offsets,
        &["--on-invalid", "dlt", "--on-unknown-type", "dlt"],
    );
    finished.assert_code(3);
    assert_eq!(finished.count("invalid"), 1);
    assert_eq!(finished.count("unknown_type"), 1);
    assert_eq!(finished.count("dead_lettered"), 3);
    assert_eq!(finished.count("retried"), 1);
    assert_eq!(finished.count("handled"), 1);
    let dlt = broker.read_all(&format!("{GROUP}.{topic}.dlt"));
    // Dead letters are keyed like their records, so they spread over the
    // dead-letter topic's partitions: compare them in key order.
    let mut classes: Vec<(Option<String>, Option<String>)> = dlt
        .iter()
        .map(|r| (r.key_text(), r.header("LOGPIPE_ERROR_CLASS")))
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        vec![
            (Some("bad".into()), Some("invalid-message".into())),
            (Some("fails".into()), Some("retry".into())),
            (Some("unknown".into()), Some("unknown-type".into())),
        ]
    );
    let stored = stored_offsets(&offsets);
    assert_eq!(stored.get(&(topic.clone(), 0)), Some(&4), "{stored:?}");
    assert_eq!(
        stored.get(&(topic.clone(), 1)),
        None,
        "stopped before the rejected record: {stored:?}"
    );
}

#[test]
fn sigterm_while_a_retry_waits_exits_cleanly_and_the_record_is_retried_next_time() {
    let broker = Broker::start();
    let topic = unique("sigterm");
    broker.create_topic(&topic, 1);
    broker.produce(
        &topic,
        &[
            Raw::value(chaos(json!({"action": "ok"}))),
            Raw::value(chaos(json!({"action": "flaky", "fails": 1, "id": "z"}))),
        ],
    );
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(&broker, handlers.path(), &topic, &offsets);
    command.args(["--max-retries", "5", "--retry-delay", "60"]);
    let host = Running::start(command);
    host.wait_for("retry 1 in 60s (blocking)", 1, LIMIT);
    let signalled = Instant::now();
    host.terminate();
    let finished = host.wait(LIMIT);
    finished.assert_code(0);
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "bounded shutdown"
    );
    assert_eq!(
        stored_offsets(&offsets).get(&(topic.clone(), 0)),
        Some(&1),
        "the waiting record is not committed"
    );

    // The next start tries the record again (a fresh instance fails it
    // once more, then succeeds on the retry).
    let rerun = run(
        &broker,
        handlers.path(),
        &topic,
        &offsets,
        &["--max-retries", "5", "--retry-delay", "0.1"],
    );
    rerun.assert_code(0);
    assert_eq!(rerun.count("handled"), 1);
    assert_eq!(rerun.count("retried"), 1);
    assert_eq!(stored_offsets(&offsets).get(&(topic.clone(), 0)), Some(&2));
}
