//! `logpipe-host offsets`: list, set, reset, export and import against a
//! real broker (tansu) and a real Kinesis-API server (kinesalite), and
//! `run` resuming where an operator put the positions.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logpipe_tests::kinesis::{KinesisServer, host_for, run_stream_command};
use logpipe_tests::{
    Broker, Finished, Raw, Running, envelope, example_handlers, finish, host, run_command,
    stored_offsets, unique,
};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(180);

/// Echo envelopes whose bodies say where they were put: `{"p":..,"i":..}`.
fn echo_batch(partition: i32, first: usize, count: usize) -> Vec<Raw> {
    (first..first + count)
        .map(|i| Raw::value(envelope("echo", 1, &json!({"p": partition, "i": i}))).on(partition))
        .collect()
}

/// The bodies the echo handler wrote, in output order.
fn echoed(broker: &Broker) -> Vec<Value> {
    broker
        .read_all("echo-out")
        .iter()
        .map(|record| message(&record.value_text()))
        .collect()
}

fn message(text: &str) -> Value {
    let envelope: Value = serde_json::from_str(text.strip_prefix("json:").expect("json: prefix"))
        .expect("output envelope");
    envelope["message"].clone()
}

/// `logpipe-host offsets <args> --offsets <offsets>`.
fn offsets_command(mut command: Command, offsets: &Path, args: &[&str]) -> Command {
    command
        .arg("offsets")
        .args(args)
        .arg("--offsets")
        .arg(offsets);
    command
}

fn admin(offsets: &Path, args: &[&str]) -> Finished {
    finish(offsets_command(host(), offsets, args), None, LIMIT)
}

/// `offsets list --json` (plus `extra`), one value per line.
fn listed(offsets: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["list", "--json"];
    args.extend(extra);
    let run = admin(offsets, &args);
    run.assert_code(0);
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Run the echo handler on `topic` until idle.
fn run_echo(broker: &Broker, topic: &str, offsets: &Path) -> Finished {
    let mut command = run_command(broker, &example_handlers(), topic, offsets);
    command.args(["--consumer-timeout-ms", "2000"]);
    let run = finish(command, None, LIMIT);
    run.assert_code(0);
    run
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .expect("clock")
}

#[test]
fn set_moves_one_partition_back_and_run_resumes_there() {
    let broker = Broker::start();
    let topic = unique("offs-set");
    broker.create_topic(&topic, 2);
    broker.create_topic("echo-out", 1);
    let mut records = echo_batch(0, 0, 100);
    records.extend(echo_batch(1, 0, 100));
    broker.produce(&topic, &records);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");

    let first = run_echo(&broker, &topic, &offsets);
    assert_eq!(first.count("handled"), 200);
    let rows = listed(&offsets, &["--bootstrap-servers", &broker.bootstrap]);
    assert_eq!(
        rows,
        [
            json!({"topic": topic, "partition": 0, "next_offset": 100, "low": 0, "high": 100, "lag": 0}),
            json!({"topic": topic, "partition": 1, "next_offset": 100, "low": 0, "high": 100, "lag": 0}),
        ]
    );
    let table = admin(&offsets, &["list"]);
    table.assert_code(0);
    assert!(
        table.stdout.starts_with("TOPIC")
            && table.stdout.contains(&format!("{topic}  1          100")),
        "{}",
        table.stdout
    );

    let set = admin(
        &offsets,
        &[
            "set",
            "--topic",
            &topic,
            "--partition",
            "1",
            "--offset",
            "40",
        ],
    );
    set.assert_code(0);
    assert_eq!(
        set.stdout.trim(),
        format!("topic {topic} partition 1: next offset 100 -> next offset 40")
    );
    let rows = listed(&offsets, &["--bootstrap-servers", &broker.bootstrap]);
    assert_eq!(rows[1]["lag"], 60, "{rows:?}");
    assert_eq!(
        rows[0]["next_offset"], 100,
        "the other partition is untouched"
    );

    let second = run_echo(&broker, &topic, &offsets);
    assert_eq!(second.count("handled"), 60, "{}", second.stderr);
    let out = echoed(&broker);
    assert_eq!(out.len(), 260);
    let again: Vec<Value> = (40..100).map(|i| json!({"p": 1, "i": i})).collect();
    assert_eq!(
        out[200..],
        again[..],
        "exactly partition 1 from offset 40, in order"
    );
    assert_eq!(
        stored_offsets(&offsets).get(&(topic.clone(), 1)),
        Some(&100)
    );
}

#[test]
fn reset_to_earliest_latest_and_a_time() {
    let broker = Broker::start();
    let topic = unique("offs-reset");
    broker.create_topic(&topic, 1);
    broker.create_topic("echo-out", 1);
    broker.produce(&topic, &echo_batch(0, 0, 10));
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    assert_eq!(run_echo(&broker, &topic, &offsets).count("handled"), 10);

    let reset = |to: &str| {
        let run = admin(
            &offsets,
            &[
                "reset",
                "--topic",
                &topic,
                "--to",
                to,
                "--bootstrap-servers",
                &broker.bootstrap,
            ],
        );
        run.assert_code(0);
        run.stdout
    };
    assert_eq!(
        reset("earliest").trim(),
        format!("topic {topic} partition 0: next offset 10 -> next offset 0")
    );
    assert_eq!(run_echo(&broker, &topic, &offsets).count("handled"), 10);

    // A dry run changes nothing.
    let dry = admin(
        &offsets,
        &[
            "reset",
            "--topic",
            &topic,
            "--to",
            "earliest",
            "--dry-run",
            "--bootstrap-servers",
            &broker.bootstrap,
        ],
    );
    dry.assert_code(0);
    assert!(dry.stdout.contains("would set"), "{}", dry.stdout);
    assert_eq!(stored_offsets(&offsets).get(&(topic.clone(), 0)), Some(&10));

    broker.produce(&topic, &echo_batch(0, 10, 5));
    assert!(reset("latest").contains("next offset 10 -> next offset 15"));
    assert_eq!(run_echo(&broker, &topic, &offsets).count("handled"), 0);

    // Records carry their produce time; a time between two batches
    // starts at the second. The pauses only keep the batches' times apart.
    std::thread::sleep(Duration::from_millis(1500));
    let between = now_ms();
    std::thread::sleep(Duration::from_millis(1500));
    broker.produce(&topic, &echo_batch(0, 15, 7));
    let rfc3339 = logpipe_host::offsets::admin::format_millis(between);
    let unchanged = reset(&rfc3339);
    assert!(
        unchanged.contains("next offset 15 (unchanged)"),
        "the time is after everything handled so far: {unchanged}"
    );
    assert!(reset("earliest").contains("-> next offset 0"));
    assert!(
        reset(&between.to_string()).contains("next offset 0 -> next offset 15"),
        "epoch milliseconds: the second batch starts at offset 15"
    );
    // No record that recent: past the last one (tansu answers offset 0
    // there; the host reads that record back and sees it is older).
    let later = (now_ms() + 1000).to_string();
    assert!(
        reset(&later).contains("next offset 15 -> next offset 22"),
        "a time after the last record"
    );
    assert!(reset(&between.to_string()).contains("next offset 22 -> next offset 15"));
    let last = run_echo(&broker, &topic, &offsets);
    assert_eq!(last.count("handled"), 7, "{}", last.stderr);
    let out = echoed(&broker);
    let second_batch: Vec<Value> = (15..22).map(|i| json!({"p": 0, "i": i})).collect();
    assert_eq!(out[out.len() - 7..], second_batch[..]);
    assert_eq!(out.len(), 10 + 10 + 7);
}

#[test]
fn a_running_host_holds_the_store_until_forced() {
    let broker = Broker::start();
    let topic = unique("offs-lock");
    broker.create_topic(&topic, 1);
    broker.create_topic("echo-out", 1);
    broker.produce(&topic, &echo_batch(0, 0, 5));
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let running = Running::start(run_command(&broker, &example_handlers(), &topic, &offsets));
    // Handled and committed: the host is idle from here on.
    let deadline = std::time::Instant::now() + LIMIT;
    while stored_offsets(&offsets).get(&(topic.clone(), 0)) != Some(&5) {
        assert!(std::time::Instant::now() < deadline, "{:?}", running.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let refused = admin(
        &offsets,
        &[
            "set",
            "--topic",
            &topic,
            "--partition",
            "0",
            "--offset",
            "2",
        ],
    );
    refused.assert_code(1);
    assert!(
        refused.stderr.contains(&format!("pid {}", running.pid()))
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    // Export reads without the lock; importing it back is a write.
    let backup = work.path().join("backup.json");
    admin(&offsets, &["export", "--output", backup.to_str().unwrap()]).assert_code(0);
    let import = admin(&offsets, &["import", backup.to_str().unwrap()]);
    import.assert_code(1);
    assert!(import.stderr.contains("--force"), "{}", import.stderr);
    let reset = admin(
        &offsets,
        &[
            "reset",
            "--topic",
            &topic,
            "--to",
            "earliest",
            "--bootstrap-servers",
            &broker.bootstrap,
        ],
    );
    reset.assert_code(1);
    assert!(
        reset.stderr.contains(&format!("pid {}", running.pid())),
        "{}",
        reset.stderr
    );
    assert_eq!(stored_offsets(&offsets).get(&(topic.clone(), 0)), Some(&5));
    // Listing needs no lock.
    assert_eq!(listed(&offsets, &[])[0]["next_offset"], 5);

    let forced = admin(
        &offsets,
        &[
            "set",
            "--topic",
            &topic,
            "--partition",
            "0",
            "--offset",
            "2",
            "--force",
        ],
    );
    forced.assert_code(0);
    assert!(forced.stderr.contains("warning"), "{}", forced.stderr);
    assert!(forced.stdout.contains("next offset 5 -> next offset 2"));
    assert_eq!(listed(&offsets, &[])[0]["next_offset"], 2);
    running.terminate();
    running.wait(LIMIT).assert_code(0);
    // The host made no progress after the forced write: it stays, and the
    // next start reads it.
    assert_eq!(run_echo(&broker, &topic, &offsets).count("handled"), 3);
}

/// Rows of every kind, written through the commands alone.
fn fill(offsets: &Path) {
    for args in [
        &["set", "--topic", "a", "--partition", "0", "--offset", "12"][..],
        &["set", "--topic", "a", "--partition", "1", "--offset", "0"],
        &["set", "--topic", "b", "--partition", "3", "--offset", "7"],
        &[
            "set",
            "--stream",
            "s",
            "--shard",
            "shardId-000000000000",
            "--sequence-number",
            "49590338271490256608559692538361571095921575989136588898",
            "--kinesis-region",
            "eu-west-1",
        ],
        &[
            "reset",
            "--stream",
            "s",
            "--shard",
            "shardId-000000000001",
            "--to",
            "trim-horizon",
            "--kinesis-region",
            "eu-west-1",
        ],
        &[
            "reset",
            "--stream",
            "s",
            "--shard",
            "shardId-000000000002",
            "--to",
            "2026-01-02T03:04:05.678Z",
            "--kinesis-region",
            "eu-west-1",
        ],
    ] {
        admin(offsets, args).assert_code(0);
    }
}

fn export(offsets: &Path) -> String {
    let run = admin(offsets, &["export"]);
    run.assert_code(0);
    run.stdout
}

#[test]
fn export_then_import_round_trips_and_a_bad_file_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source.sqlite3");
    fill(&source);
    let exported = export(&source);
    let file: Value = serde_json::from_str(&exported).expect("JSON export");
    assert_eq!(file["format"], "logpipe-host-offsets");
    assert_eq!(file["version"], 1);
    assert_eq!(file["kafka"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        file["kinesis"],
        json!([
            {"region": "eu-west-1", "stream": "s", "shard": "shardId-000000000000",
             "sequence_number": "49590338271490256608559692538361571095921575989136588898"},
            {"region": "eu-west-1", "stream": "s", "shard": "shardId-000000000001",
             "start": "TRIM_HORIZON"},
            {"region": "eu-west-1", "stream": "s", "shard": "shardId-000000000002",
             "start": "AT_TIMESTAMP", "timestamp_ms": 1_767_323_045_678i64},
        ])
    );
    let backup = work.path().join("backup.json");
    let run = admin(&source, &["export", "--output", backup.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), exported);

    // Into a file with a row of its own, which --replace removes.
    let restored = work.path().join("restored.sqlite3");
    admin(
        &restored,
        &[
            "set",
            "--topic",
            "stale",
            "--partition",
            "0",
            "--offset",
            "1",
        ],
    )
    .assert_code(0);
    let import = admin(
        &restored,
        &["import", backup.to_str().unwrap(), "--replace"],
    );
    import.assert_code(0);
    assert!(
        import
            .stdout
            .contains("topic stale partition 0: next offset 1 -> (removed)")
            && import
                .stdout
                .contains("imported 3 Kafka and 3 Kinesis positions"),
        "{}",
        import.stdout
    );
    assert_eq!(export(&restored), exported);

    // One bad entry: nothing of the file is written, and the error says which.
    let mut bad = file.clone();
    bad["kafka"][0]["next_offset"] = json!(99);
    bad["kafka"][2]["next_offset"] = json!(-4);
    let bad_path = work.path().join("bad.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let refused = admin(&restored, &["import", bad_path.to_str().unwrap()]);
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("kafka[2] (topic \"b\" partition 3)")
            && refused.stderr.contains("nothing written"),
        "{}",
        refused.stderr
    );
    let mut twice = file.clone();
    twice["kinesis"][2]["shard"] = json!("shardId-000000000000");
    std::fs::write(&bad_path, twice.to_string()).unwrap();
    let refused = admin(&restored, &["import", bad_path.to_str().unwrap()]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("kinesis[2] repeats kinesis[0]"),
        "{}",
        refused.stderr
    );
    assert_eq!(export(&restored), exported, "nothing written");

    // From stdin, upserting over what is there.
    let mut newer = file.clone();
    newer["kafka"] = json!([{"topic": "a", "partition": 0, "next_offset": 20}]);
    newer["kinesis"] = json!([]);
    let command = offsets_command(host(), &restored, &["import", "-"]);
    let run = finish(command, Some(newer.to_string().as_bytes()), LIMIT);
    run.assert_code(0);
    assert_eq!(
        run.stdout.lines().next(),
        Some("topic a partition 0: next offset 12 -> next offset 20")
    );
    let rows = listed(&restored, &[]);
    assert_eq!(rows.len(), 6, "the other rows stay: {rows:?}");
}

/// A one-shard input stream of echo records and the echo-out stream.
fn kinesis_echo(server: &KinesisServer, count: usize) -> String {
    let input = unique("offs-in");
    server.create_stream(&input, 1);
    server.create_stream("echo-out", 1);
    server.put(&input, &echo_stream_records(0, count));
    input
}

fn echo_stream_records(first: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (first..first + count)
        .map(|i| ("k".to_owned(), envelope("echo", 1, &json!({"i": i}))))
        .collect()
}

fn run_stream(server: &KinesisServer, input: &str, offsets: &Path) -> Finished {
    let mut command = run_stream_command(server, &example_handlers(), input, offsets);
    command.args(["--consumer-timeout-ms", "2000"]);
    let run = finish(command, None, LIMIT);
    run.assert_code(0);
    run
}

/// `offsets` of a Kinesis test: the server's endpoint and region.
fn stream_admin(server: &KinesisServer, offsets: &Path, args: &[&str]) -> Finished {
    let run = finish(
        offsets_command(host_for(server), offsets, args),
        None,
        LIMIT,
    );
    run.assert_code(0);
    run
}

fn stream_echoed(server: &KinesisServer) -> Vec<Value> {
    server
        .read_all("echo-out")
        .iter()
        .map(|record| message(&record.text()))
        .collect()
}

#[test]
fn kinesis_set_and_resets_move_where_the_next_run_starts() {
    let server = KinesisServer::kinesalite();
    let input = kinesis_echo(&server, 20);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    assert_eq!(run_stream(&server, &input, &offsets).count("handled"), 20);
    let records = server.read_all(&input);
    let shard = records[0].shard.clone();
    let listing = listed(&offsets, &[]);
    assert_eq!(
        listing,
        [
            json!({"region": "us-east-1", "stream": input, "shard": shard,
                "sequence_number": records[19].sequence})
        ]
    );

    // The last handled record is the 10th: the run resumes at the 11th.
    // The region comes from the stream's stored rows.
    let set = stream_admin(
        &server,
        &offsets,
        &[
            "set",
            "--stream",
            &input,
            "--shard",
            &shard,
            "--sequence-number",
            &records[9].sequence,
        ],
    );
    assert!(
        set.stdout.contains(&format!(
            "region us-east-1 stream {input} shard {shard}: after {} -> after {}",
            records[19].sequence, records[9].sequence
        )),
        "{}",
        set.stdout
    );
    let resumed = run_stream(&server, &input, &offsets);
    assert_eq!(resumed.count("handled"), 10, "{}", resumed.stderr);
    let out = stream_echoed(&server);
    let expected: Vec<Value> = (10..20).map(|i| json!({"i": i})).collect();
    assert_eq!(out[20..], expected[..]);

    // Every shard (listed through the endpoint) to the oldest record.
    let reset = stream_admin(
        &server,
        &offsets,
        &["reset", "--stream", &input, "--to", "trim-horizon"],
    );
    assert!(reset.stdout.contains("-> TRIM_HORIZON"), "{}", reset.stdout);
    assert_eq!(listed(&offsets, &[])[0]["start"], "TRIM_HORIZON");
    assert_eq!(run_stream(&server, &input, &offsets).count("handled"), 20);
    assert_eq!(
        listed(&offsets, &[])[0]["sequence_number"],
        json!(records[19].sequence),
        "the run's commit replaced the marker"
    );

    let reset = stream_admin(
        &server,
        &offsets,
        &["reset", "--stream", &input, "--to", "latest"],
    );
    assert!(
        reset.stdout.contains("-> AT_TIMESTAMP "),
        "{}",
        reset.stdout
    );
    assert_eq!(run_stream(&server, &input, &offsets).count("handled"), 0);
    // Records written after the reset are read.
    server.put(&input, &echo_stream_records(20, 5));
    let after = run_stream(&server, &input, &offsets);
    assert_eq!(after.count("handled"), 5, "{}", after.stderr);
    let out = stream_echoed(&server);
    let expected: Vec<Value> = (20..25).map(|i| json!({"i": i})).collect();
    assert_eq!(out[out.len() - 5..], expected[..]);
    assert_eq!(out.len(), 20 + 10 + 20 + 5);
}
