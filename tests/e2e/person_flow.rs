//! The main job: person envelopes through the person handler into
//! `people-index`, with offsets in SQLite surviving restarts and crashes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use logpipe_tests::*;

const LIMIT: Duration = Duration::from_secs(300);

fn produce_people(broker: &Broker, topic: &str, range: std::ops::Range<u64>) {
    let records: Vec<Raw> = range
        .map(|n| {
            let message = person(n);
            let key = message["uuid"].as_str().unwrap_or_default().to_owned();
            Raw::keyed(&key, envelope("person", 1, &message))
        })
        .collect();
    broker.produce(topic, &records);
}

fn run_people(broker: &Broker, topic: &str, offsets: &std::path::Path) -> std::process::Command {
    let mut command = run_command(broker, &example_handlers(), topic, offsets);
    command.args(["--consumer-timeout-ms", "3000"]);
    command
}

fn indexed_uuids(broker: &Broker) -> Vec<String> {
    broker
        .read_all("people-index")
        .iter()
        .map(|r| {
            let text = r.value_text();
            let body = text.strip_prefix("json:").expect("json envelope");
            let value: serde_json::Value = serde_json::from_str(body).expect("envelope JSON");
            assert_eq!(value["type"], "person-indexed", "{text}");
            assert_eq!(value["version"], 1, "{text}");
            let uuid = value["message"]["uuid"].as_str().expect("uuid").to_owned();
            assert_eq!(
                r.key_text().as_deref(),
                Some(uuid.as_str()),
                "key is the uuid"
            );
            uuid
        })
        .collect()
}

fn all_uuids(range: std::ops::Range<u64>) -> BTreeSet<String> {
    range
        .map(|n| person(n)["uuid"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn ten_thousand_people_are_all_handled_and_indexed() {
    let broker = Broker::start();
    let topic = unique("people");
    broker.create_topic(&topic, 4);
    broker.create_topic("people-index", 4);
    produce_people(&broker, &topic, 0..10_000);

    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let run = finish(run_people(&broker, &topic, &offsets), None, LIMIT);
    run.assert_code(0);
    assert_eq!(run.count("handled"), 10_000);
    assert_eq!(run.count("records"), 10_000);

    let indexed = indexed_uuids(&broker);
    assert_eq!(
        indexed.len(),
        10_000,
        "people-index holds one record per person"
    );
    assert_eq!(
        indexed.into_iter().collect::<BTreeSet<_>>(),
        all_uuids(0..10_000)
    );

    let stored = stored_offsets(&offsets);
    let total: i64 = stored
        .iter()
        .filter(|((t, _), _)| *t == topic)
        .map(|(_, o)| o)
        .sum();
    assert_eq!(
        total, 10_000,
        "next offsets stored for every partition: {stored:?}"
    );
}

#[test]
fn a_restart_resumes_from_stored_offsets() {
    let broker = Broker::start();
    let topic = unique("people");
    broker.create_topic(&topic, 2);
    broker.create_topic("people-index", 2);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");

    produce_people(&broker, &topic, 0..3_000);
    let first = finish(run_people(&broker, &topic, &offsets), None, LIMIT);
    first.assert_code(0);
    assert_eq!(first.count("handled"), 3_000);

    produce_people(&broker, &topic, 3_000..5_000);
    let second = finish(run_people(&broker, &topic, &offsets), None, LIMIT);
    second.assert_code(0);
    assert_eq!(
        second.count("handled"),
        2_000,
        "only the new records are handled"
    );
    assert!(
        second.stderr.contains("resuming from stored offset"),
        "{}",
        second.stderr
    );

    let indexed = indexed_uuids(&broker);
    assert_eq!(indexed.len(), 5_000, "no record handled twice");
    assert_eq!(
        indexed.into_iter().collect::<BTreeSet<_>>(),
        all_uuids(0..5_000)
    );
}

#[test]
fn a_killed_host_loses_nothing_on_restart() {
    let broker = Broker::start();
    let topic = unique("people");
    broker.create_topic(&topic, 2);
    broker.create_topic("people-index", 2);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    produce_people(&broker, &topic, 0..20_000);

    // Commit often so a commit is visible long before the end, then kill -9.
    let mut command = run_people(&broker, &topic, &offsets);
    command.args(["--commit-max-records", "200"]);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("spawn");
    let deadline = Instant::now() + LIMIT;
    let committed_at_kill = loop {
        let committed: i64 = stored_offsets(&offsets).values().sum();
        if committed >= 200 {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
            break stored_offsets(&offsets).values().sum::<i64>();
        }
        assert!(Instant::now() < deadline, "no commit seen");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "host exited before any commit was seen"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        committed_at_kill < 20_000,
        "the kill must land mid-stream (committed {committed_at_kill})"
    );

    let rerun = finish(run_people(&broker, &topic, &offsets), None, LIMIT);
    rerun.assert_code(0);
    // At least once: everything after the last commit is handled again.
    assert!(rerun.count("handled") >= 20_000 - committed_at_kill as u64);
    let indexed = indexed_uuids(&broker);
    assert_eq!(
        indexed.into_iter().collect::<BTreeSet<_>>(),
        all_uuids(0..20_000)
    );
    let committed: i64 = stored_offsets(&offsets).values().sum();
    assert_eq!(committed, 20_000);
}
