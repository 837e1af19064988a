//! Nothing is lost when the host is killed (`kill -9`) at random moments or
//! when the broker goes away for 30 s: at least once, with duplicates
//! bounded by the commit batch (direct produce mode; the outbox's crash
//! test is in store.rs).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logpipe_tests::*;

const LIMIT: Duration = Duration::from_secs(300);

fn produce_people(broker: &Broker, topic: &str, count: u64) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(20_000) {
        let records: Vec<Raw> = chunk
            .iter()
            .map(|&n| {
                let message = person(n);
                let key = message["uuid"].as_str().unwrap_or_default().to_owned();
                Raw::keyed(&key, envelope("person", 1, &message))
            })
            .collect();
        broker.produce(topic, &records);
    }
}

/// (total records, distinct uuids) in people-index.
fn indexed(broker: &Broker) -> (usize, BTreeSet<String>) {
    let records = broker.read_all("people-index");
    let uuids = records
        .iter()
        .filter_map(|r| {
            let text = r.value_text();
            let value: serde_json::Value =
                serde_json::from_str(text.strip_prefix("json:")?).ok()?;
            Some(value["message"]["uuid"].as_str()?.to_owned())
        })
        .collect();
    (records.len(), uuids)
}

fn committed(offsets: &std::path::Path) -> i64 {
    stored_offsets(offsets).values().sum()
}

#[test]
fn killing_the_host_at_random_moments_loses_nothing() {
    const RECORDS: u64 = 100_000;
    const KILLS: usize = 10;
    const COMMIT_BATCH: &str = "1000";
    const MAX_UNCOMMITTED: usize = 2000;
    let broker = Broker::start();
    let topic = unique("crash");
    broker.create_topic(&topic, 4);
    broker.create_topic("people-index", 4);
    produce_people(&broker, &topic, RECORDS);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let logs = work.path().to_path_buf();
    let start = |run: usize| {
        let log = std::fs::File::create(logs.join(format!("run-{run}.log"))).expect("log file");
        let mut command = run_command(&broker, &example_handlers(), &topic, &offsets);
        command
            .args([
                "--consumer-timeout-ms",
                "3000",
                "--commit-max-records",
                COMMIT_BATCH,
            ])
            .args(["--max-uncommitted-records", &MAX_UNCOMMITTED.to_string()])
            // The at-least-once path; tests/e2e/store.rs crashes the outbox.
            .args(["--produce-mode", "direct"])
            .stdout(std::process::Stdio::null())
            .stderr(log);
        command.spawn().expect("spawn host")
    };

    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut kills = 0;
    let mut previous = committed(&offsets);
    while kills < KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = start(kills);
        // Wait for progress, then kill at a random moment after it.
        let deadline = Instant::now() + LIMIT;
        while committed(&offsets) == previous && child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(seed % 400));
        let finished_on_its_own = child.try_wait().expect("wait").is_some();
        let _ = child.kill();
        let _ = child.wait();
        let now = committed(&offsets);
        eprintln!(
            "kill {}: committed {previous} -> {now} of {RECORDS}",
            kills + 1
        );
        if finished_on_its_own || now >= RECORDS as i64 {
            let log =
                std::fs::read_to_string(logs.join(format!("run-{kills}.log"))).unwrap_or_default();
            eprintln!("run {kills} ended on its own:\n{log}");
            break;
        }
        previous = now;
        kills += 1;
    }
    assert!(kills >= KILLS, "only {kills} kills landed mid-stream");

    // Finish the stream. A run stops after 3 s without a record, which a
    // loaded machine can hit before the end: start again until done.
    for _ in 0..5 {
        let mut command = run_command(&broker, &example_handlers(), &topic, &offsets);
        command.args([
            "--consumer-timeout-ms",
            "3000",
            "--commit-max-records",
            COMMIT_BATCH,
        ]);
        finish(command, None, LIMIT).assert_code(0);
        if committed(&offsets) == RECORDS as i64 {
            break;
        }
    }
    assert_eq!(committed(&offsets), RECORDS as i64);

    let (total, uuids) = indexed(&broker);
    let expected: BTreeSet<String> = (0..RECORDS)
        .map(|n| person(n)["uuid"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(uuids, expected, "every record handled at least once");
    let duplicates = total - uuids.len();
    eprintln!("crash test: {kills} kills, {duplicates} duplicate outputs of {RECORDS} records");
    // Each kill can repeat at most what was handled but not yet committed,
    // which --max-uncommitted-records bounds.
    assert!(
        duplicates <= kills * (MAX_UNCOMMITTED + 1),
        "{duplicates} duplicates after {kills} kills"
    );
}

#[test]
fn a_broker_outage_of_30_seconds_loses_nothing() {
    const RECORDS: u64 = 20_000;
    let mut broker = Broker::start();
    let topic = unique("outage");
    broker.create_topic(&topic, 2);
    broker.create_topic("people-index", 2);
    produce_people(&broker, &topic, RECORDS);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(&broker, &example_handlers(), &topic, &offsets);
    command.args(["--commit-max-records", "500"]);
    let host = Running::start(command);

    let deadline = Instant::now() + LIMIT;
    while committed(&offsets) < 1000 {
        assert!(Instant::now() < deadline, "no progress before the outage");
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill();
    let at_outage = committed(&offsets);
    eprintln!("broker down at {at_outage} committed");
    std::thread::sleep(Duration::from_secs(30));
    broker.restart();

    while committed(&offsets) < RECORDS as i64 {
        assert!(
            Instant::now() < deadline,
            "stuck at {} after the outage; log:\n{}",
            committed(&offsets),
            host.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    host.terminate();
    let finished = host.wait(LIMIT);
    finished.assert_code(0);
    let (_, uuids) = indexed(&broker);
    assert_eq!(
        uuids.len() as u64,
        RECORDS,
        "every record handled at least once"
    );
}
