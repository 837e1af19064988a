//! The Kinesis source and sink against a real Kinesis-API server on
//! 127.0.0.1 (kinesalite; see scripts/kinesis/NOTES.md for why not moto).
//! The handlers are the example guests, unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use logpipe_tests::kinesis::{KinesisServer, StreamRecord, host_for, run_stream_command};
use logpipe_tests::{
    Broker, Raw, Running, envelope, example_handlers, finish, person, run_command, unique,
};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(180);

/// `count` echo envelopes spread over `keys` keys; each body carries its
/// key and its number within the key.
fn echo_records(count: usize, keys: usize, first: usize) -> Vec<(String, Vec<u8>)> {
    (first..first + count)
        .map(|i| {
            let key = format!("k{}", i % keys);
            let n = i / keys;
            let body = json!({"key": key, "n": n});
            (key, envelope("echo", 1, &body))
        })
        .collect()
}

/// Per key, the `n` of each echo output in stream order (the keys of an
/// output stream's records each live on one shard).
fn numbers_by_key(records: &[StreamRecord]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in records {
        let text = record.text();
        let envelope: serde_json::Value =
            serde_json::from_str(text.strip_prefix("json:").expect("json: prefix"))
                .expect("output envelope");
        let message = &envelope["message"];
        assert_eq!(
            message["key"].as_str(),
            Some(record.key.as_str()),
            "output keyed like its input"
        );
        by_key
            .entry(record.key.clone())
            .or_default()
            .push(message["n"].as_u64().expect("n"));
    }
    by_key
}

/// Every key's numbers are exactly 0..per_key, in order: nothing lost,
/// nothing twice, nothing reordered.
fn assert_complete_and_ordered(records: &[StreamRecord], keys: usize, per_key: u64) {
    let by_key = numbers_by_key(records);
    assert_eq!(by_key.len(), keys, "keys in the output");
    for (key, numbers) in by_key {
        let expected: Vec<u64> = (0..per_key).collect();
        assert_eq!(numbers, expected, "outputs of key {key}");
    }
}

/// An input stream loaded with echo envelopes, the `echo-out` stream the
/// echo guest writes to, and a fresh offsets file.
struct EchoStreams {
    server: KinesisServer,
    input: String,
    offsets: PathBuf,
    _dir: tempfile::TempDir,
}

impl EchoStreams {
    fn new(
        server: KinesisServer,
        shards: i32,
        output_shards: i32,
        records: Vec<(String, Vec<u8>)>,
    ) -> Self {
        let input = unique("in");
        server.create_stream(&input, shards);
        server.create_stream("echo-out", output_shards);
        server.put(&input, &records);
        let dir = tempfile::tempdir().unwrap();
        EchoStreams {
            offsets: dir.path().join("offsets.sqlite3"),
            server,
            input,
            _dir: dir,
        }
    }
}

fn stored_positions(offsets: &Path) -> BTreeMap<(String, String), String> {
    let conn = rusqlite::Connection::open(offsets).expect("open offsets");
    let mut stmt = conn
        .prepare(
            "SELECT stream, shard, sequence_number FROM kinesis_offsets WHERE region = 'us-east-1'",
        )
        .expect("query");
    stmt.query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn two_shards_5k_records_are_handled_once_in_order_by_two_workers_and_a_restart_resumes() {
    let echo = EchoStreams::new(KinesisServer::kinesalite(), 2, 2, echo_records(5000, 50, 0));
    let (server, input, offsets) = (&echo.server, &echo.input, &echo.offsets);

    // Two workers serve the two shards in parallel; the restart uses one.
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    command.args(["--consumer-timeout-ms", "1500", "--workers", "2"]);
    let first = finish(command, None, LIMIT);
    first.assert_code(0);
    assert!(
        first
            .stderr
            .contains("handling shards in parallel workers=2"),
        "{}",
        first.stderr
    );
    assert_eq!(first.count("handled"), 5000, "{}", first.stderr);
    assert_eq!(first.count("records"), 5000);
    assert_complete_and_ordered(&server.read_all("echo-out"), 50, 100);
    let positions = stored_positions(offsets);
    assert_eq!(positions.len(), 2, "one position per shard: {positions:?}");
    // The stored position is each shard's last record.
    let input_records = server.read_all(input);
    for ((_, shard), sequence) in &positions {
        let last = input_records
            .iter()
            .rfind(|r| &r.shard == shard)
            .expect("records on every shard");
        assert_eq!(&last.sequence, sequence, "{shard}");
    }

    // A restart handles only what came since.
    server.put(input, &echo_records(1000, 50, 5000));
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    command.args(["--consumer-timeout-ms", "1500", "--workers", "1"]);
    let second = finish(command, None, LIMIT);
    second.assert_code(0);
    assert_eq!(second.count("handled"), 1000, "{}", second.stderr);
    assert!(second.stderr.contains("resuming after stored position"));
    assert_complete_and_ordered(&server.read_all("echo-out"), 50, 120);
}

#[test]
fn throttled_reads_and_writes_are_retried_and_no_shard_is_dropped() {
    // Every 3rd GetRecords, PutRecord and PutRecords answers
    // ProvisionedThroughputExceededException.
    let echo = EchoStreams::new(
        KinesisServer::kinesalite_throttling(3),
        2,
        1,
        echo_records(1000, 50, 0),
    );
    let (server, input, offsets) = (&echo.server, &echo.input, &echo.offsets);
    let run = |mode: &str| {
        let mut command = run_stream_command(server, &example_handlers(), input, offsets);
        command.args([
            "--consumer-timeout-ms",
            "2000",
            "--kinesis-fetch-limit",
            "100",
            "--produce-mode",
            mode,
        ]);
        let finished = finish(command, None, LIMIT);
        finished.assert_code(0);
        assert!(
            finished
                .stderr
                .contains("ProvisionedThroughputExceededException"),
            "throttling was injected and logged:\n{}",
            finished.stderr
        );
        finished
    };
    // Outbox mode: PutRecords of committed rows is throttled too.
    let outbox = run("outbox");
    assert_eq!(outbox.count("handled"), 1000, "{}", outbox.stderr);
    assert!(
        outbox
            .stderr
            .contains("records refused by the stream's limits were written on retry"),
        "some records of a PutRecords call failed and were retried:\n{}",
        outbox.stderr
    );
    assert_complete_and_ordered(&server.read_all("echo-out"), 50, 20);
    // Direct mode: each produce is a PutRecord, retried inside the call.
    server.put(input, &echo_records(250, 50, 1000));
    let direct = run("direct");
    assert_eq!(direct.count("handled"), 250, "{}", direct.stderr);
    assert_complete_and_ordered(&server.read_all("echo-out"), 50, 25);
}

#[test]
fn direct_mode_writes_each_record_in_order_per_key() {
    let echo = EchoStreams::new(KinesisServer::kinesalite(), 2, 2, echo_records(600, 6, 0));
    let (server, input, offsets) = (&echo.server, &echo.input, &echo.offsets);
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    command.args(["--consumer-timeout-ms", "1500", "--produce-mode", "direct"]);
    let finished = finish(command, None, LIMIT);
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 600);
    let output = server.read_all("echo-out");
    assert_complete_and_ordered(&output, 6, 100);
    // PutRecord with SequenceNumberForOrdering: within a key, sequence
    // numbers grow in the order the records were produced.
    // (Decimal strings without leading zeros, up to 128 digits: compare
    // by length, then by text.)
    let mut last: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for record in &output {
        let sequence = (record.sequence.len(), record.sequence.as_str());
        if let Some(previous) = last.insert(record.key.as_str(), sequence) {
            assert!(sequence > previous, "key {}", record.key);
        }
    }
}

#[test]
fn a_split_and_a_merge_during_consumption_keep_order_per_key_and_lose_nothing() {
    let echo = EchoStreams::new(KinesisServer::kinesalite(), 1, 1, echo_records(1000, 10, 0));
    let (server, input, offsets) = (&echo.server, &echo.input, &echo.offsets);
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    command.args([
        "--consumer-timeout-ms",
        "3000",
        "--kinesis-fetch-limit",
        "50",
    ]);
    let running = Running::start(command);
    running.wait_for("no stored position", 1, Duration::from_secs(60));
    // Split the shard while the host reads it, then write more: the new
    // records go to the children, which must wait for their parent.
    let parent = server.shards(input).remove(0);
    let (left, right) = server.split_shard(input, &parent);
    server.put(input, &echo_records(1000, 10, 1000));
    // Merge the children back: the grandchild waits for both.
    server.merge_shards(input, &left, &right);
    server.put(input, &echo_records(1000, 10, 2000));
    let finished = running.wait(LIMIT);
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 3000, "{}", finished.stderr);
    assert_eq!(
        finished
            .stderr
            .matches("shard closed and fully handled")
            .count(),
        3,
        "parent and both children finished:\n{}",
        finished.stderr
    );
    assert_eq!(
        server.shards(input).len(),
        4,
        "parent, two children, merged"
    );
    assert_complete_and_ordered(&server.read_all("echo-out"), 10, 300);
}

#[test]
fn the_same_handlers_folder_gives_the_same_output_on_kafka_and_kinesis() {
    let people: Vec<serde_json::Value> = (0..200).map(person).collect();
    let records: Vec<(String, Vec<u8>)> = people
        .iter()
        .map(|p| {
            let key = p["uuid"].as_str().expect("uuid").to_owned();
            (key, envelope("person", 1, p))
        })
        .collect();

    let server = KinesisServer::kinesalite();
    let stream = unique("people");
    server.create_stream(&stream, 2);
    server.create_stream("people-index", 2);
    server.put(&stream, &records);
    let dir = tempfile::tempdir().unwrap();
    let mut command = run_stream_command(
        &server,
        &example_handlers(),
        &stream,
        &dir.path().join("kinesis.sqlite3"),
    );
    command.args(["--consumer-timeout-ms", "1500"]);
    finish(command, None, LIMIT).assert_code(0);
    let from_kinesis: BTreeSet<(String, String)> = server
        .read_all("people-index")
        .iter()
        .map(|r| (r.key.clone(), r.text()))
        .collect();

    let broker = Broker::start();
    let topic = unique("people");
    broker.create_topic(&topic, 2);
    broker.create_topic("people-index", 2);
    let raws: Vec<Raw> = records
        .iter()
        .map(|(key, value)| Raw::keyed(key, value.clone()))
        .collect();
    broker.produce(&topic, &raws);
    let mut command = run_command(
        &broker,
        &example_handlers(),
        &topic,
        &dir.path().join("kafka.sqlite3"),
    );
    command.args(["--consumer-timeout-ms", "3000"]);
    finish(command, None, LIMIT).assert_code(0);
    let from_kafka: BTreeSet<(String, String)> = broker
        .read_all("people-index")
        .iter()
        .map(|r| (r.key_text().unwrap_or_default(), r.value_text()))
        .collect();

    assert_eq!(from_kinesis.len(), 200);
    assert_eq!(from_kinesis, from_kafka);
}

#[test]
fn produce_cli_writes_to_a_stream_in_order_and_reports_bad_lines() {
    let server = KinesisServer::kinesalite();
    let stream = unique("in");
    server.create_stream(&stream, 2);
    let mut lines = String::new();
    for i in 0..1200 {
        lines.push_str(&json!({"key": format!("k{}", i % 7), "n": i / 7}).to_string());
        lines.push('\n');
    }
    // Kinesis partition keys are 1-256 characters.
    lines.push_str(&json!({"key": "x".repeat(300), "n": 0}).to_string());
    lines.push('\n');
    let mut command = host_for(&server);
    command.args([
        "produce",
        "--stream",
        &stream,
        "--type",
        "echo",
        "--version",
        "1",
        "--key-field",
        "key",
    ]);
    let finished = finish(command, Some(lines.as_bytes()), LIMIT);
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("line 1201: partition key of 300 characters"),
        "{}",
        finished.stderr
    );
    let written = server.read_all(&stream);
    assert_eq!(written.len(), 1200);
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in &written {
        let body: serde_json::Value =
            serde_json::from_str(record.text().strip_prefix("json:").unwrap()).unwrap();
        by_key
            .entry(record.key.clone())
            .or_default()
            .push(body["message"]["n"].as_u64().unwrap());
    }
    for numbers in by_key.values() {
        assert!(numbers.windows(2).all(|w| w[0] + 1 == w[1]), "{numbers:?}");
    }

    // One record without a key gets a random partition key.
    let mut command = host_for(&server);
    command.args([
        "produce",
        "--stream",
        &stream,
        "--type",
        "echo",
        "--version",
        "1",
        "{}",
    ]);
    let finished = finish(command, None, LIMIT);
    finished.assert_code(0);
    assert!(finished.stderr.contains("sequence number"));
    assert_eq!(server.read_all(&stream).len(), 1201);
}

#[test]
fn records_wait_for_the_minimum_lag() {
    let echo = EchoStreams::new(KinesisServer::kinesalite(), 1, 1, echo_records(20, 2, 0));
    let (server, input, offsets) = (&echo.server, &echo.input, &echo.offsets);
    let put_at = std::time::Instant::now();
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    command.args([
        "--consumer-timeout-ms",
        "500",
        "--min-message-lag-ms",
        "2000",
        "--produce-mode",
        "direct",
    ]);
    let running = Running::start(command);
    // Nothing may come out before the records are 2 s old.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        put_at.elapsed() < Duration::from_millis(1900),
        "the machine is too slow for this check"
    );
    assert!(server.read_all("echo-out").is_empty(), "handled too early");
    let finished = running.wait(LIMIT);
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 20);
    assert_complete_and_ordered(&server.read_all("echo-out"), 2, 10);
}

fn chaos(body: serde_json::Value) -> Vec<u8> {
    envelope("chaos", 1, &body)
}

#[test]
fn failures_hold_dead_letter_or_stop_only_their_own_shard() {
    let server = KinesisServer::kinesalite();
    let input = unique("in");
    server.create_stream(&input, 2);
    let handlers = logpipe_tests::handlers_folder(&[("chaos", "chaos")]);
    let dir = tempfile::tempdir().unwrap();
    let offsets = dir.path().join("offsets.sqlite3");
    let run = |extra: &[&str]| {
        let mut command = run_stream_command(&server, handlers.path(), &input, &offsets);
        command
            .args(["--consumer-timeout-ms", "1500", "--on-reject", "dlt"])
            .args(extra);
        finish(command, None, LIMIT)
    };

    // A flaky record is retried in place; a rejected one goes to the
    // dead-letter stream, which the host creates.
    let mut records = vec![
        (
            "a".to_string(),
            chaos(json!({"action": "flaky", "fails": 2, "id": "a"})),
        ),
        ("r".to_string(), chaos(json!({"action": "reject"}))),
    ];
    records.extend((0..20).map(|i| (format!("k{i}"), chaos(json!({"action": "ok"})))));
    server.put(&input, &records);
    let first = run(&["--max-retries", "3", "--retry-delay", "0.2"]);
    first.assert_code(0);
    assert_eq!(first.count("handled"), 21, "{}", first.stderr);
    assert_eq!(first.count("retried"), 2);
    assert_eq!(first.count("dead_lettered"), 1);
    let dead = server.read_all(&format!("logpipe-host.{input}.dlt"));
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].key.as_str(), dead[0].data.clone()),
        ("r", records[1].1.clone())
    );

    // A record that keeps failing stops its shard before it; the other
    // shard is read to its end.
    let mut more = vec![("z".to_string(), chaos(json!({"action": "retry"})))];
    more.extend((0..20).map(|i| (format!("m{i}"), chaos(json!({"action": "ok"})))));
    server.put(&input, &more);
    let second = run(&["--max-retries", "1", "--retry-delay", "0.1"]);
    second.assert_code(3);
    assert_eq!(second.count("failed"), 1, "{}", second.stderr);
    let all = server.read_all(&input);
    let failing = all
        .iter()
        .find(|r| r.key == "z")
        .expect("the failing record");
    let behind_it = all
        .iter()
        .skip_while(|r| r.sequence != failing.sequence)
        .filter(|r| r.shard == failing.shard)
        .count()
        - 1;
    assert_eq!(second.count("handled") as usize, 20 - behind_it);
    assert!(
        second
            .stderr
            .contains(&format!("stopped {input}/{}", failing.shard)),
        "{}",
        second.stderr
    );
    let stored = stored_positions(&offsets);
    let position = &stored[&(input.clone(), failing.shard.clone())];
    assert_ne!(position, &failing.sequence, "the position stays before it");

    // The next start tries it again.
    let third = run(&["--max-retries", "0"]);
    third.assert_code(3);
    assert_eq!(third.count("failed"), 1);
    assert_eq!(third.count("handled"), 0);
}

#[test]
fn latest_skips_what_was_written_before_the_first_start() {
    let echo = EchoStreams::new(KinesisServer::kinesalite(), 2, 1, echo_records(10, 2, 0));
    let (server, input, offsets) = (&echo.server, &echo.input, &echo.offsets);
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    command.args([
        "--consumer-timeout-ms",
        "2500",
        "--kinesis-iterator",
        "LATEST",
    ]);
    let running = Running::start(command);
    running.wait_for("no stored position", 2, Duration::from_secs(60));
    // The iterators are taken just after that line.
    std::thread::sleep(Duration::from_millis(1000));
    server.put(input, &echo_records(6, 2, 10));
    let finished = running.wait(LIMIT);
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 6, "{}", finished.stderr);
    let by_key = numbers_by_key(&server.read_all("echo-out"));
    assert_eq!(by_key["k0"], [5, 6, 7]);
    assert_eq!(by_key["k1"], [5, 6, 7]);
}

#[test]
fn expired_iterators_are_renewed_from_the_last_record_fetched() {
    let echo = EchoStreams::new(
        KinesisServer::kinesalite_expiring_iterators(4),
        2,
        1,
        echo_records(2000, 10, 0),
    );
    let (server, input, offsets) = (&echo.server, &echo.input, &echo.offsets);
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    // Small pages: many GetRecords calls, every 4th answered "expired".
    command.args([
        "--consumer-timeout-ms",
        "1500",
        "--kinesis-fetch-limit",
        "50",
    ]);
    let finished = finish(command, None, LIMIT);
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 2000, "{}", finished.stderr);
    assert!(
        finished.stderr.contains("shard iterator expired"),
        "{}",
        finished.stderr
    );
    assert_complete_and_ordered(&server.read_all("echo-out"), 10, 200);
}

#[test]
fn start_up_refusals_name_the_stream_and_the_cause() {
    let server = KinesisServer::kinesalite();
    let input = unique("in");
    server.create_stream(&input, 1);
    let dir = tempfile::tempdir().unwrap();
    let offsets = dir.path().join("offsets.sqlite3");
    let refused = |command: std::process::Command, needle: &str| {
        let finished = finish(command, None, Duration::from_secs(60));
        finished.assert_code(1);
        assert!(
            finished.stderr.contains(needle),
            "{needle}:\n{}",
            finished.stderr
        );
    };

    let missing = run_stream_command(&server, &example_handlers(), "nope", &offsets);
    refused(missing, "Kinesis stream \"nope\" does not exist");

    let mut anonymous = run_stream_command(&server, &example_handlers(), &input, &offsets);
    anonymous
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    refused(anonymous, "no credentials found");

    let mut non_blocking = run_stream_command(&server, &example_handlers(), &input, &offsets);
    non_blocking.args(["--max-retries", "2", "--retry-non-blocking"]);
    refused(
        non_blocking,
        "non-blocking retries need retry topics, which only Kafka has",
    );
}
