//! Observability against a real broker: `/metrics` scraped over HTTP while
//! the host runs, `/health` turning 503 when the broker dies, JSON logs
//! carrying each record's position, and the Kinesis side's metrics.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use logpipe_tests::kinesis::{KinesisServer, run_stream_command};
use logpipe_tests::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

/// Every sample of a scrape, keyed by `name{labels}` as written.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value of {l}")),
            };
            (series.to_owned(), value)
        })
        .collect()
}

/// A sample's value; 0 when the series is absent (not yet created).
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// Scrape until `ready` holds (bounded), and return that scrape.
fn scrape_until(
    addr: &str,
    what: &str,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(stream) = TcpStream::connect(addr) {
            drop(stream);
            let samples = scrape(addr);
            if ready(&samples) {
                return samples;
            }
            assert!(
                Instant::now() < deadline,
                "waited {LIMIT:?} for {what}; last scrape:\n{samples:#?}"
            );
        }
        assert!(Instant::now() < deadline, "metrics endpoint never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll `/health` until it answers 200 `ok` (bounded).
fn wait_healthy(addr: &str, host: &Running) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let answer = TcpStream::connect(addr)
            .ok()
            .map(|_| http_get(addr, "/health"));
        if let Some((200, body)) = &answer {
            assert_eq!(body, "ok\n");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never ready; last answer {answer:?}; log:\n{}",
            host.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll `/health` until it answers 503 (within 30 s); returns the body.
fn wait_unhealthy(addr: &str, host: &Running) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(addr, "/health");
        if status == 503 {
            return body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "still healthy 30 s after the server died; log:\n{}",
            host.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn chaos(action: &str) -> Vec<u8> {
    envelope("chaos", 1, &json!({ "action": action }))
}

/// One run over echo and chaos records with every outcome: exact counters
/// by handler and class, produce count, latency histogram counts, lag
/// reaching 0, instance restarts and limit hits; then a hot swap and a
/// removal; the log is JSON throughout.
#[test]
fn metrics_count_every_outcome_by_handler_and_class_while_running() {
    let broker = Broker::start();
    let topic = unique("obs");
    broker.create_topic(&topic, 1);
    broker.create_topic("echo-out", 1);
    let records = vec![
        Raw::keyed("e1", envelope("echo", 1, &json!({"n": 1}))),
        Raw::keyed("e2", envelope("echo", 1, &json!({"n": 2}))),
        Raw::keyed("e3", envelope("echo", 1, &json!({"n": 3}))),
        Raw::keyed("c-ok-1", chaos("ok")),
        Raw::keyed("k-reject", chaos("reject")),
        Raw::keyed("c-retry", chaos("retry")),
        Raw::keyed("c-panic", chaos("panic")),
        Raw::keyed("c-ok-2", chaos("ok")),
        Raw::keyed("c-loop", chaos("loop")),
        Raw::keyed("c-ok-3", chaos("ok")),
        Raw::keyed("c-alloc", chaos("alloc")),
        Raw::keyed("c-ok-4", chaos("ok")),
        Raw::keyed("k-unknown", envelope("nobody", 1, &json!({}))),
        Raw::keyed("k-invalid", br#"json:{"version":1,"message":{}}"#.to_vec()),
    ];
    broker.produce(&topic, &records);

    let handlers = handlers_folder(&[("echo", "echo"), ("chaos", "chaos")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = run_command(&broker, handlers.path(), &topic, &offsets);
    command.args([
        "--metrics-addr",
        &addr,
        "--log-format",
        "json",
        "--on-failure",
        "skip",
        "--handler-timeout-ms",
        "300",
        "--handler-memory-mib",
        "16",
        "--handlers-settle-ms",
        "50",
    ]);
    let host = Running::start(command);

    let t = format!("topic=\"{topic}\"");
    let samples = scrape_until(&addr, "every record settled and lag 0", |s| {
        value(
            s,
            r#"logpipe_records_failed_total{handler="",class="invalid-message"}"#,
        ) == 1.0
            && value(
                s,
                &format!("logpipe_consumer_lag_records{{{t},partition=\"0\"}}"),
            ) == 0.0
            && s.contains_key(&format!(
                "logpipe_consumer_lag_records{{{t},partition=\"0\"}}"
            ))
    });
    let expect = |series: &str, wanted: f64| {
        assert_eq!(value(&samples, series), wanted, "{series}\n{samples:#?}");
    };
    expect(&format!("logpipe_records_consumed_total{{{t}}}"), 14.0);
    expect(r#"logpipe_records_handled_total{handler="echo"}"#, 3.0);
    expect(r#"logpipe_records_handled_total{handler="chaos"}"#, 4.0);
    for (class, count) in [
        ("reject", 1.0),
        ("retry", 1.0),
        ("trap", 1.0),
        ("deadline", 1.0),
        ("memory", 1.0),
        ("produce", 0.0),
        ("store", 0.0),
    ] {
        expect(
            &format!(r#"logpipe_records_failed_total{{handler="chaos",class="{class}"}}"#),
            count,
        );
        expect(
            &format!(r#"logpipe_records_failed_total{{handler="echo",class="{class}"}}"#),
            0.0,
        );
    }
    expect(
        r#"logpipe_records_failed_total{handler="",class="unknown-type"}"#,
        1.0,
    );
    expect(
        r#"logpipe_records_failed_total{handler="",class="invalid-message"}"#,
        1.0,
    );
    expect(r#"logpipe_produced_records_total{handler="echo"}"#, 3.0);
    expect(r#"logpipe_produce_errors_total{handler="echo"}"#, 0.0);
    expect(
        r#"logpipe_handler_duration_seconds_count{handler="echo"}"#,
        3.0,
    );
    expect(
        r#"logpipe_handler_duration_seconds_count{handler="chaos"}"#,
        9.0,
    );
    expect(
        r#"logpipe_handler_duration_seconds_bucket{handler="chaos",le="+Inf"}"#,
        9.0,
    );
    // panic, loop and alloc each leave the next record a fresh instance.
    expect(r#"logpipe_instance_restarts_total{handler="chaos"}"#, 3.0);
    expect(r#"logpipe_instance_restarts_total{handler="echo"}"#, 0.0);
    expect(
        r#"logpipe_limit_hits_total{handler="chaos",kind="deadline"}"#,
        1.0,
    );
    expect(
        r#"logpipe_limit_hits_total{handler="chaos",kind="memory"}"#,
        1.0,
    );
    expect(
        r#"logpipe_limit_hits_total{handler="chaos",kind="produce_calls"}"#,
        0.0,
    );
    assert!(value(&samples, "logpipe_commits_total") >= 1.0);
    expect("logpipe_commits_failed_total", 0.0);
    assert!(value(&samples, "logpipe_last_commit_timestamp_seconds") > 1.6e9);

    // Hot swap: a new component is loaded, then removed.
    let swap = std::fs::read(component("swap-v1")).unwrap();
    deploy(handlers.path(), "swap.wasm", &swap);
    scrape_until(&addr, "the swap to be counted", |s| {
        value(
            s,
            r#"logpipe_handler_swaps_total{handler="swap",action="load"}"#,
        ) == 1.0
    });
    std::fs::remove_file(handlers.path().join("swap.wasm")).unwrap();
    let samples = scrape_until(&addr, "the removal to be counted", |s| {
        value(
            s,
            r#"logpipe_handler_swaps_total{handler="swap",action="unload"}"#,
        ) == 1.0
    });
    assert_eq!(
        value(
            &samples,
            r#"logpipe_handler_swaps_total{handler="swap",action="load"}"#
        ),
        1.0
    );

    wait_healthy(&addr, &host);
    assert_eq!(http_get(&addr, "/nope").0, 404);

    host.terminate();
    let finished = host.wait(LIMIT);
    finished.assert_code(0);
    assert_eq!(finished.count("handled"), 7);

    // Every stderr line is one JSON object; record-level lines carry the
    // record's position, key, type, version and handler.
    let lines: Vec<Value> = finished
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let reject = lines
        .iter()
        .find(|l| l["key"] == "k-reject")
        .unwrap_or_else(|| panic!("no line for k-reject:\n{}", finished.stderr));
    assert_eq!(reject["level"], "WARN");
    assert_eq!(reject["topic"], topic.as_str());
    assert_eq!(reject["partition"], "0");
    assert_eq!(reject["offset"], "4");
    assert_eq!(reject["type"], "chaos");
    assert_eq!(reject["version"], 1);
    assert_eq!(reject["handler"], "chaos");
    assert_eq!(reject["class"], "reject");
    assert!(
        reject["message"]
            .as_str()
            .is_some_and(|m| m.contains("asked to reject")),
        "{reject}"
    );
    let deadline = lines
        .iter()
        .find(|l| l["key"] == "c-loop")
        .expect("a line for the deadline");
    assert_eq!(
        (&deadline["class"], &deadline["offset"]),
        (&json!("deadline"), &json!("8"))
    );
    let unknown = lines
        .iter()
        .find(|l| l["key"] == "k-unknown")
        .expect("a line for the unknown type");
    assert_eq!(
        (&unknown["type"], &unknown["class"]),
        (&json!("nobody"), &json!("unknown-type"))
    );
}

/// `/health` is 200 while consuming normally and 503, naming the broker,
/// once the broker is gone.
#[test]
fn health_turns_503_when_the_broker_is_stopped() {
    let mut broker = Broker::start();
    let topic = unique("health");
    broker.create_topic(&topic, 2);
    broker.create_topic("echo-out", 1);
    broker.produce(
        &topic,
        &[Raw::keyed("a", envelope("echo", 1, &json!({"n": 1})))],
    );
    let handlers = handlers_folder(&[("echo", "echo")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = run_command(&broker, handlers.path(), &topic, &offsets);
    command.args(["--metrics-addr", &addr, "--shutdown-timeout-ms", "1000"]);
    let host = Running::start(command);

    wait_healthy(&addr, &host);
    let samples = scrape(&addr);
    assert_eq!(value(&samples, "logpipe_ready"), 1.0);

    broker.kill();
    let body = wait_unhealthy(&addr, &host);
    assert!(
        body.lines()
            .any(|l| l.starts_with("kafka: broker unreachable")),
        "{body}"
    );
    assert_eq!(value(&scrape(&addr), "logpipe_ready"), 0.0);
}

/// A taken --metrics-addr stops the start with a message naming the flag.
#[test]
fn a_taken_metrics_address_is_a_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let handlers = handlers_folder(&[("echo", "echo")]);
    let work = tempfile::tempdir().unwrap();
    let mut command = host();
    command
        .arg("run")
        .arg("--handlers")
        .arg(handlers.path())
        .args(["--topic", "t", "--bootstrap-servers", "127.0.0.1:9"])
        .arg("--offsets")
        .arg(work.path().join("offsets.sqlite3"))
        .args(["--metrics-addr", &addr]);
    let run = finish(command, None, LIMIT);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("cannot listen on {addr} (--metrics-addr)")),
        "{}",
        run.stderr
    );
}

/// Kinesis: handled counts per handler, records consumed per stream, and
/// every shard's MillisBehindLatest, reaching 0 once caught up; `/health`
/// turns 503 when the Kinesis server is gone.
#[test]
fn kinesis_runs_expose_handled_counts_and_shard_lag() {
    let server = KinesisServer::kinesalite();
    let input = unique("obs-in");
    server.create_stream(&input, 2);
    server.create_stream("echo-out", 1);
    let records: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            let key = format!("k{i}");
            let body = json!({"key": key, "n": i});
            (key, envelope("echo", 1, &body))
        })
        .collect();
    server.put(&input, &records);
    let handlers = handlers_folder(&[("echo", "echo")]);
    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = run_stream_command(&server, handlers.path(), &input, &offsets);
    command.args(["--metrics-addr", &addr]);
    let host = Running::start(command);

    let shards = server.shards(&input);
    assert_eq!(shards.len(), 2);
    let behind = |shard: &str| {
        format!("logpipe_kinesis_millis_behind_latest{{stream=\"{input}\",shard=\"{shard}\"}}")
    };
    let samples = scrape_until(&addr, "20 records handled and every shard caught up", |s| {
        value(s, r#"logpipe_records_handled_total{handler="echo"}"#) == 20.0
            && shards
                .iter()
                .all(|shard| s.get(&behind(shard)) == Some(&0.0))
    });
    assert_eq!(
        value(
            &samples,
            &format!("logpipe_records_consumed_total{{stream=\"{input}\"}}")
        ),
        20.0
    );
    assert_eq!(
        value(
            &samples,
            r#"logpipe_produced_records_total{handler="echo"}"#
        ),
        20.0
    );
    // Ready once the first checkpoint after the shards were listed is done.
    wait_healthy(&addr, &host);

    // Kinesis gone: reads keep failing, and /health says so.
    drop(server);
    let body = wait_unhealthy(&addr, &host);
    // Reads failing is reported while the loop runs; on a loaded machine
    // the loop can end on the lost server first, and then says it stopped.
    assert!(
        body.lines()
            .any(|l| l.starts_with("kinesis: Kinesis unreachable: shard")
                || l.starts_with("kinesis: consumer stopped")),
        "{body}"
    );
    drop(host);
}
