//! Several hosts sharing a topic through a Kafka consumer group
//! (`--offset-store kafka`): the broker assigns partitions, offsets are
//! committed in Kafka, and a host that dies hands its partitions to the
//! others without losing a record.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use logpipe_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

fn echo_records(from: u64, to: u64) -> Vec<Raw> {
    (from..to)
        .map(|n| {
            Raw::keyed(
                &format!("k{n}"),
                format!(r#"json:{{"type":"echo","version":1,"message":{{"n":{n}}}}}"#),
            )
        })
        .collect()
}

fn member(bootstrap: &str, topic: &str, group: &str, offsets: &Path) -> Running {
    let mut command = host();
    command
        .arg("run")
        .arg("--handlers")
        .arg(example_handlers())
        .args(["--topic", topic, "--bootstrap-servers", bootstrap])
        .arg("--offsets")
        .arg(offsets)
        .args([
            "--offset-store",
            "kafka",
            "--group-id",
            group,
            // A dead member's partitions move after this long.
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=1000",
        ]);
    Running::start(command)
}

/// The distinct `n` of every echo output so far, read from the beginning
/// of every partition of `echo-out` up to its high watermark.
fn echoed(bootstrap: &str) -> BTreeSet<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "echo-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    let mut remaining = 0;
    for partition in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks("echo-out", partition, Duration::from_secs(20))
            .expect("watermarks");
        remaining += high;
        list.add_partition_offset("echo-out", partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while remaining > 0 && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        remaining -= 1;
        let n = message
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|v| v.strip_prefix("json:"))
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .and_then(|e| e["message"]["n"].as_u64());
        seen.extend(n);
    }
    seen
}

fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {what}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The group's committed offset of each partition, read from Kafka.
fn committed(bootstrap: &str, topic: &str, group: &str) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(topic, partition);
    }
    let found = consumer
        .committed_offsets(list, Duration::from_secs(20))
        .expect("committed offsets");
    // Copied out before the consumer is dropped (an rdkafka 0.39 quirk).
    let offsets = (0..PARTITIONS)
        .map(
            |p| match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => Some(n),
                _ => None,
            },
        )
        .collect();
    drop(found);
    offsets
}

fn high_watermarks(bootstrap: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(20))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// How the first member goes away mid-way.
enum Departure {
    /// SIGTERM: it commits and leaves the group.
    Stopped,
    /// SIGKILL: no commit; the group notices after the session timeout.
    Killed,
}

/// 20,000 records on 4 partitions, two members; the first leaves after
/// both hold partitions and 2,000 records are echoed, then 10,000 more
/// records arrive. Every record is handled (at least once) and every
/// partition's offset is committed to its end in Kafka.
fn share_then_lose_a_member(bootstrap: &str, topic: &str, departure: Departure) {
    let group = unique("group");
    produce_to(bootstrap, topic, &echo_records(0, 10_000));
    let work = tempfile::tempdir().unwrap();
    let first = member(bootstrap, topic, &group, &work.path().join("a.sqlite3"));
    let second = member(bootstrap, topic, &group, &work.path().join("b.sqlite3"));
    let logs = || {
        format!(
            "first:\n{}\nsecond:\n{}",
            first.log().join("\n"),
            second.log().join("\n")
        )
    };
    let holds_partitions = |host: &Running| {
        host.log()
            .iter()
            .any(|l| l.contains("partitions assigned") && l.contains(topic))
    };
    wait_until(
        Duration::from_secs(120),
        "both members to hold partitions and 2,000 records to be echoed",
        || {
            holds_partitions(&first)
                && holds_partitions(&second)
                && echoed(bootstrap).len() >= 2_000
        },
        logs,
    );
    match departure {
        Departure::Stopped => {
            first.terminate();
            let done = first.wait(Duration::from_secs(60));
            done.assert_code(0);
        }
        Departure::Killed => {
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &first.pid().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
            drop(first);
        }
    }
    produce_to(bootstrap, topic, &echo_records(10_000, 20_000));
    wait_until(
        Duration::from_secs(180),
        "all 20,000 records to be echoed",
        || echoed(bootstrap).len() == 20_000,
        || second.log().join("\n"),
    );
    // The survivor holds all four partitions now.
    assert!(
        second
            .log()
            .iter()
            .any(|l| l.contains("partitions assigned")
                && (0..PARTITIONS).all(|p| l.contains(&format!("{topic:?}, {p})")))),
        "{}",
        second.log().join("\n")
    );
    second.terminate();
    let done = second.wait(Duration::from_secs(60));
    done.assert_code(0);
    let seen = echoed(bootstrap);
    assert_eq!(seen.len(), 20_000);
    assert_eq!(seen.iter().next_back(), Some(&19_999));
    let highs = high_watermarks(bootstrap, topic);
    assert_eq!(highs.iter().sum::<i64>(), 20_000);
    assert_eq!(
        committed(bootstrap, topic, &group),
        highs.into_iter().map(Some).collect::<Vec<_>>()
    );
}

#[test]
fn two_hosts_share_partitions_and_a_stopped_one_hands_them_over() {
    let broker = Broker::start();
    let topic = unique("grouped");
    broker.create_topic(&topic, PARTITIONS);
    broker.create_topic("echo-out", PARTITIONS);
    share_then_lose_a_member(&broker.bootstrap, &topic, Departure::Stopped);
}

/// tansu 0.6 keeps a killed member in its group (it is still assigned
/// partitions after its session expired), so this runs on librdkafka's own
/// Kafka-protocol mock cluster, on a loopback port, which expires members
/// as Kafka does.
#[test]
fn a_killed_host_loses_nothing() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    let topic = unique("grouped");
    cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    cluster.create_topic("echo-out", PARTITIONS, 1).unwrap();
    share_then_lose_a_member(&bootstrap, &topic, Departure::Killed);
}

#[test]
fn a_group_refuses_the_outbox_and_kinesis() {
    let work = tempfile::tempdir().unwrap();
    let mut command = host();
    command
        .args(["run", "--handlers"])
        .arg(example_handlers())
        .args([
            "--topic",
            "t",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--offset-store",
            "kafka",
            "--produce-mode",
            "outbox",
            "--offsets",
        ])
        .arg(work.path().join("o.sqlite3"));
    let done = finish(command, None, Duration::from_secs(60));
    assert_eq!(done.code(), Some(1));
    assert!(
        done.stderr
            .contains("--produce-mode outbox needs --offset-store sqlite"),
        "{}",
        done.stderr
    );

    // Two hosts on one SQLite file: the second is pointed at groups.
    let offsets = work.path().join("shared.sqlite3");
    let _lock = logpipe_host::offsets::HostLock::acquire(&offsets).unwrap();
    let mut command = host();
    command
        .args(["run", "--handlers"])
        .arg(example_handlers())
        .args([
            "--topic",
            "t",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--offsets",
        ])
        .arg(&offsets);
    let done = finish(command, None, Duration::from_secs(60));
    assert_eq!(done.code(), Some(1));
    assert!(
        done.stderr.contains("--offset-store kafka"),
        "{}",
        done.stderr
    );
}

/// `offsets list|set|reset --offset-store kafka` read and move a group's
/// committed offsets; the group's next member starts where they were put.
#[test]
fn offsets_admin_moves_a_groups_committed_offsets() {
    let broker = Broker::start();
    let topic = unique("admin");
    let group = unique("group");
    broker.create_topic(&topic, 2);
    broker.create_topic("echo-out", PARTITIONS);
    let records: Vec<Raw> = (0..100)
        .map(|n| echo_records(n, n + 1).remove(0).on((n % 2) as i32))
        .collect();
    broker.produce(&topic, &records);
    let work = tempfile::tempdir().unwrap();
    let run_member = || {
        let mut command = host();
        command
            .arg("run")
            .arg("--handlers")
            .arg(example_handlers())
            .args(["--topic", &topic, "--bootstrap-servers", &broker.bootstrap])
            .args(["--offset-store", "kafka", "--group-id", &group])
            .args(["--consumer-timeout-ms", "3000", "--offsets"])
            .arg(work.path().join("state.sqlite3"));
        let done = finish(command, None, Duration::from_secs(120));
        done.assert_code(0);
        done.count("handled")
    };
    assert_eq!(run_member(), 100);
    let admin = |args: &[&str]| {
        let mut command = host();
        command
            .arg("offsets")
            .args(args)
            .args(["--offset-store", "kafka", "--group-id", &group])
            .args(["--bootstrap-servers", &broker.bootstrap]);
        let done = finish(command, None, Duration::from_secs(60));
        done.assert_code(0);
        done.stdout
    };
    let listed = admin(&["list"]);
    assert!(
        listed.contains(&format!("{topic}\t0\t50\t0\t50\t0")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{topic}\t1\t50\t0\t50\t0")),
        "{listed}"
    );
    // tansu cannot describe groups: the operator vouches that this one has
    // no running member.
    let set = admin(&[
        "set",
        "--topic",
        &topic,
        "--partition",
        "0",
        "--offset",
        "40",
        "--force",
    ]);
    assert!(
        set.contains("partition 0: next offset 50 -> next offset 40"),
        "{set}"
    );
    let reset = admin(&[
        "reset",
        "--topic",
        &topic,
        "--partition",
        "1",
        "--to",
        "earliest",
        "--force",
    ]);
    assert!(
        reset.contains("partition 1: next offset 50 -> next offset 0"),
        "{reset}"
    );
    // 10 from partition 0, all 50 of partition 1.
    assert_eq!(run_member(), 60);
    assert_eq!(
        committed(&broker.bootstrap, &topic, &group)[..2],
        [Some(50), Some(50)]
    );
}

/// Offsets of a group with a running member are not moved from outside
/// (the member would overwrite them). Without `--force` the host refuses
/// when it cannot see that the group is empty (neither librdkafka's mock
/// cluster nor tansu answer DescribeGroups); with it, a Kafka broker (here
/// librdkafka's mock cluster) still refuses a commit from outside an
/// active group, and the error says so.
#[test]
fn moving_a_running_groups_offsets_is_refused() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("busy");
    let group = unique("group");
    cluster.create_topic(&topic, 2, 1).unwrap();
    cluster.create_topic("echo-out", PARTITIONS, 1).unwrap();
    produce_to(&bootstrap, &topic, &echo_records(0, 10));
    let work = tempfile::tempdir().unwrap();
    let running = member(&bootstrap, &topic, &group, &work.path().join("s.sqlite3"));
    running.wait_for("partitions assigned", 1, Duration::from_secs(60));
    let set = |force: bool| {
        let mut command = host();
        command
            .args([
                "offsets",
                "set",
                "--topic",
                &topic,
                "--partition",
                "0",
                "--offset",
                "1",
            ])
            .args(["--offset-store", "kafka", "--group-id", &group])
            .args(["--bootstrap-servers", &bootstrap]);
        if force {
            command.arg("--force");
        }
        finish(command, None, Duration::from_secs(60))
    };
    let refused = set(false);
    assert_eq!(refused.code(), Some(1), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("cannot tell whether group") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    let forced = set(true);
    assert_eq!(forced.code(), Some(1), "{}", forced.stdout);
    assert!(
        forced.stderr.contains("did not take the offsets")
            && forced.stderr.contains("UnknownMemberId"),
        "{}",
        forced.stderr
    );
}

/// In a group, a pattern is a regex subscription: a topic created later
/// is picked up within --pattern-refresh-ms, as without a group.
#[test]
fn a_group_pattern_picks_up_topics_created_later() {
    let broker = Broker::start();
    let prefix = unique("gp");
    broker.create_topic(&format!("{prefix}.a"), 2);
    broker.create_topic("echo-out", PARTITIONS);
    broker.produce(&format!("{prefix}.a"), &echo_records(0, 50));
    let work = tempfile::tempdir().unwrap();
    let mut command = host();
    command
        .arg("run")
        .arg("--handlers")
        .arg(example_handlers())
        .args([
            "--topic",
            &format!("{prefix}.*"),
            "--bootstrap-servers",
            &broker.bootstrap,
        ])
        .args(["--offset-store", "kafka", "--group-id", &unique("group")])
        .args(["--pattern-refresh-ms", "500", "--offsets"])
        .arg(work.path().join("state.sqlite3"));
    let running = Running::start(command);
    let log = || running.log().join("\n");
    wait_until(
        Duration::from_secs(60),
        "50 echoed",
        || echoed(&broker.bootstrap).len() == 50,
        log,
    );
    broker.create_topic(&format!("{prefix}.b"), 1);
    broker.produce(&format!("{prefix}.b"), &echo_records(50, 60));
    // librdkafka's own default refresh (5 min) would not make this.
    wait_until(
        Duration::from_secs(60),
        "60 echoed",
        || echoed(&broker.bootstrap).len() == 60,
        log,
    );
    running.terminate();
    running.wait(Duration::from_secs(60)).assert_code(0);
}
