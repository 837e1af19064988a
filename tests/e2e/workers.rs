//! The worker pool (`--workers`): records of different partitions are
//! handled in parallel, each worker with its own handler instances, and the
//! records of one partition stay in order, also around a blocking retry.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use logpipe_tests::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(180);

fn chaos(body: Value) -> Vec<u8> {
    envelope("chaos", 1, &body)
}

fn run(broker: &Broker, topic: &str, offsets: &Path, extra: &[&str]) -> Finished {
    let handlers = handlers_folder(&[("chaos", "chaos")]);
    let mut command = run_command(broker, handlers.path(), topic, offsets);
    command.args(["--consumer-timeout-ms", "3000"]).args(extra);
    finish(command, None, LIMIT)
}

/// The stamps in `topic` (one partition, so in the order produced): the
/// source offsets per source partition.
fn stamps(broker: &Broker, topic: &str) -> BTreeMap<i64, Vec<i64>> {
    let mut by_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for record in broker.read_all(topic) {
        let text = record.value_text();
        let body = text.strip_prefix("json:").unwrap_or(&text);
        let envelope: Value = serde_json::from_str(body).expect("stamp envelope");
        let message = &envelope["message"];
        let partition = message["partition"].as_i64().expect("partition");
        let offset = message["offset"].as_i64().expect("offset");
        by_partition.entry(partition).or_default().push(offset);
    }
    by_partition
}

/// Every partition's offsets 0..per_partition, each once, in order.
fn assert_in_order(stamps: &BTreeMap<i64, Vec<i64>>, partitions: i64, per_partition: i64) {
    assert_eq!(stamps.len() as i64, partitions, "{stamps:?}");
    let expected: Vec<i64> = (0..per_partition).collect();
    for (partition, offsets) in stamps {
        assert_eq!(
            offsets, &expected,
            "partition {partition}: handled out of order, twice or not at all"
        );
    }
}

#[test]
fn parallel_workers_keep_the_order_of_each_partition() {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: i64 = 500;
    for mode in ["outbox", "direct"] {
        let broker = Broker::start();
        let topic = unique("ordered");
        let out = unique("stamps");
        broker.create_topic(&topic, PARTITIONS);
        broker.create_topic(&out, 1);
        let mut records = Vec::new();
        for n in 0..PER_PARTITION {
            for partition in 0..PARTITIONS {
                // One record of partition 2 fails twice first: a blocking
                // retry holds that partition while the others go on.
                let body = if partition == 2 && n == 100 {
                    json!({"action": "stamp", "topic": out, "id": "p2", "fails": 2})
                } else {
                    json!({"action": "stamp", "topic": out})
                };
                records.push(Raw::keyed(&format!("k{partition}-{n}"), chaos(body)).on(partition));
            }
        }
        broker.produce(&topic, &records);
        let work = tempfile::tempdir().unwrap();
        let offsets = work.path().join("offsets.sqlite3");
        let finished = run(
            &broker,
            &topic,
            &offsets,
            &[
                "--workers",
                "3",
                "--produce-mode",
                mode,
                "--max-retries",
                "3",
                "--retry-delay",
                "0.2",
            ],
        );
        finished.assert_code(0);
        assert!(
            finished
                .stderr
                .contains("handling partitions in parallel workers=3"),
            "{}",
            finished.stderr
        );
        let total = PER_PARTITION * i64::from(PARTITIONS);
        assert_eq!(finished.count("handled"), total as u64, "{mode}");
        assert_eq!(finished.count("retried"), 2, "{mode}");
        assert_in_order(&stamps(&broker, &out), i64::from(PARTITIONS), PER_PARTITION);
        let stored = stored_offsets(&offsets);
        for partition in 0..PARTITIONS {
            assert_eq!(
                stored.get(&(topic.clone(), partition)),
                Some(&PER_PARTITION),
                "{mode}: {stored:?}"
            );
        }
    }
}

/// The chaos guest's `count` action rejects with the number of calls its
/// instance has served: one instance per worker, fed by its partitions.
#[test]
fn each_worker_has_its_own_handler_instances() {
    let broker = Broker::start();
    let topic = unique("instances");
    broker.create_topic(&topic, 2);
    let count = || chaos(json!({"action": "count"}));
    let mut records = Vec::new();
    for _ in 0..3 {
        records.push(Raw::value(count()).on(0));
        records.push(Raw::value(count()).on(1));
    }
    broker.produce(&topic, &records);
    let counts = |finished: &Finished| {
        let mut seen: Vec<u32> = finished
            .stderr
            .lines()
            .filter_map(|line| line.split("count ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        seen.sort_unstable();
        seen
    };
    let work = tempfile::tempdir().unwrap();
    let two = run(
        &broker,
        &topic,
        &work.path().join("two.sqlite3"),
        &["--workers", "2"],
    );
    two.assert_code(0);
    assert_eq!(two.count("rejected"), 6);
    assert_eq!(counts(&two), [1, 1, 2, 2, 3, 3], "{}", two.stderr);
    let one = run(
        &broker,
        &topic,
        &work.path().join("one.sqlite3"),
        &["--workers", "1"],
    );
    one.assert_code(0);
    assert_eq!(counts(&one), [1, 2, 3, 4, 5, 6], "{}", one.stderr);
    assert!(!one.stderr.contains("in parallel"), "{}", one.stderr);
}
