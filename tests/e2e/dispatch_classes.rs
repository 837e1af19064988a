//! Every dispatch class of django-logpipe, on one partition: what is
//! counted, what is logged, and that the offset moves past all of them.

use std::time::Duration;

use logpipe_tests::*;
use serde_json::json;

#[test]
fn every_class_is_counted_logged_and_committed() {
    let broker = Broker::start();
    let topic = unique("mixed");
    broker.create_topic(&topic, 1);
    broker.create_topic("people-index", 1);

    let valid = person(1);
    let mut bad_uuid = person(2);
    bad_uuid["uuid"] = json!("not-a-uuid");
    let msgpack_person = logpipe_host::envelope::render(
        logpipe_host::envelope::Format::Msgpack,
        "person",
        1,
        &person(3).to_string(),
        Some("crm"),
    )
    .unwrap();
    let records = vec![
        Raw::keyed("k-valid", envelope("person", 1, &valid)),
        Raw::keyed("k-msgpack", msgpack_person),
        Raw::keyed("k-reject", envelope("person", 1, &bad_uuid)),
        Raw::keyed(
            "k-invalid-missing-type",
            br#"json:{"version":1,"message":{}}"#.to_vec(),
        ),
        Raw::keyed(
            "k-invalid-bad-json",
            br#"json:{"type":"person","version":1,"message":"#.to_vec(),
        ),
        Raw::keyed("k-invalid-pickle", b"pickle:\x80\x04\x95".to_vec()),
        Raw::keyed("k-invalid-no-delimiter", br#"{"type":"person"}"#.to_vec()),
        Raw::value(Vec::new()),
        Raw::keyed("k-ignored", envelope("ping", 1, &json!({}))),
        Raw::keyed("k-unknown-type", envelope("order", 1, &json!({"id": 1}))),
        Raw::keyed("k-unknown-version", envelope("person", 2, &valid)),
        Raw::keyed(
            "k-string-version",
            br#"json:{"type":"person","version":"1","message":{}}"#.to_vec(),
        ),
    ];
    broker.produce(&topic, &records);

    let work = tempfile::tempdir().unwrap();
    let offsets = work.path().join("offsets.sqlite3");
    let mut command = run_command(&broker, &example_handlers(), &topic, &offsets);
    command
        .env("LOGPIPE_LOG", "info,logpipe_host::dispatch=debug")
        .args(["--ignore-type", "ping", "--consumer-timeout-ms", "3000"]);
    let run = finish(command, None, Duration::from_secs(120));
    run.assert_code(0);

    assert_eq!(run.count("records"), 12);
    assert_eq!(run.count("handled"), 2);
    assert_eq!(run.count("rejected"), 1);
    assert_eq!(run.count("invalid"), 5);
    assert_eq!(run.count("ignored"), 1);
    assert_eq!(run.count("unknown_type"), 1);
    assert_eq!(run.count("unknown_version"), 2);
    assert_eq!(run.count("failed"), 0);

    // Each line names the record: topic, partition, offset, key.
    let log = &run.stderr;
    let line_for = |key: &str| {
        log.lines()
            .find(|l| l.contains(&format!("key=\"{key}\"")))
            .unwrap_or_else(|| panic!("no log line for {key}:\n{log}"))
            .to_owned()
    };
    let reject = line_for("k-reject");
    assert!(
        reject.contains("WARN") && reject.contains("not a canonical UUID"),
        "{reject}"
    );
    assert!(
        reject.contains(&format!("topic=\"{topic}\""))
            && reject.contains("partition=\"0\"")
            && reject.contains("offset=\"2\""),
        "{reject}"
    );
    let missing = line_for("k-invalid-missing-type");
    assert!(
        missing.contains("ERROR")
            && missing.contains("invalid-message")
            && missing.contains("\"type\""),
        "{missing}"
    );
    let pickle = line_for("k-invalid-pickle");
    assert!(
        pickle.contains("unknown-format") && pickle.contains("never parsed"),
        "{pickle}"
    );
    assert!(line_for("k-ignored").contains("DEBUG"));
    let unknown = line_for("k-unknown-type");
    assert!(
        unknown.contains("ERROR") && unknown.contains("no handler for message type \"order\""),
        "{unknown}"
    );
    let version = line_for("k-string-version");
    assert!(
        version.contains("ERROR") && version.contains("version \"1\""),
        "{version}"
    );
    assert!(
        log.contains("offset=\"7\"") && log.contains("empty record value"),
        "{log}"
    );

    assert_eq!(
        stored_offsets(&offsets).get(&(topic.clone(), 0)),
        Some(&12),
        "the offset moves past every skipped record"
    );
    let indexed = broker.read_all("people-index");
    assert_eq!(
        indexed.len(),
        2,
        "valid JSON and msgpack people are indexed"
    );
}
