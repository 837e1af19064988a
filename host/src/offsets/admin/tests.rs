use super::*;
use crate::offsets::{Commit, ShardPosition};

#[test]
fn reset_keywords_parse_in_either_vocabulary() {
    for text in [
        "earliest",
        "EARLIEST",
        "trim-horizon",
        "TRIM_HORIZON",
        "trim_horizon",
    ] {
        assert_eq!(text.parse::<ResetTo>(), Ok(ResetTo::Earliest), "{text}");
    }
    for text in ["latest", "LATEST", " latest "] {
        assert_eq!(text.parse::<ResetTo>(), Ok(ResetTo::Latest), "{text}");
    }
}

#[test]
fn reset_times_parse_as_epoch_millis_or_rfc3339_with_offsets() {
    assert_eq!(
        "1764000000000".parse::<ResetTo>(),
        Ok(ResetTo::Time(1_764_000_000_000))
    );
    // 2025-11-24T16:00:00Z, written three ways.
    let utc = "2025-11-24T16:00:00Z".parse::<ResetTo>();
    assert_eq!(utc, Ok(ResetTo::Time(1_764_000_000_000)));
    assert_eq!("2025-11-24T17:00:00+01:00".parse::<ResetTo>(), utc);
    assert_eq!(
        "2025-11-24T16:00:00.250Z".parse::<ResetTo>(),
        Ok(ResetTo::Time(1_764_000_000_250))
    );
}

#[test]
fn reset_targets_that_are_likely_mistakes_are_refused() {
    let seconds = "1764000000".parse::<ResetTo>().unwrap_err();
    assert!(seconds.contains("seconds"), "{seconds}");
    for text in [
        "",
        "yesterday",
        "2025-11-24",
        "2025-11-24 16:00:00Z",
        "-5",
        "99999999999999999999",
    ] {
        assert!(text.parse::<ResetTo>().is_err(), "{text:?} accepted");
    }
}

#[test]
fn times_format_as_rfc3339() {
    assert_eq!(format_millis(1_764_000_000_000), "2025-11-24T16:00:00Z");
    assert_eq!(
        describe_start(&ShardStart::AtTimestamp(1_764_000_000_000)),
        "AT_TIMESTAMP 2025-11-24T16:00:00Z"
    );
}

fn sample() -> Snapshot {
    Snapshot {
        kafka: vec![
            KafkaOffset {
                topic: "people".into(),
                partition: 0,
                next_offset: 100,
            },
            KafkaOffset {
                topic: "people".into(),
                partition: 1,
                next_offset: 0,
            },
        ],
        kinesis: vec![
            row(
                "s",
                "shardId-000000000000",
                ShardStart::After("4959033827149025660855969253836157109592157598913658889".into()),
            ),
            row("s", "shardId-000000000001", ShardStart::TrimHorizon),
            row(
                "s",
                "shardId-000000000002",
                ShardStart::AtTimestamp(1_764_000_000_000),
            ),
        ],
    }
}

fn row(stream: &str, shard: &str, start: ShardStart) -> KinesisRow {
    KinesisRow {
        region: "us-east-1".into(),
        stream: stream.into(),
        shard: shard.into(),
        start,
    }
}

#[test]
fn an_export_imports_back_to_the_same_rows() {
    let text = serde_json::to_string_pretty(&ExportFile::new(&sample())).unwrap();
    assert!(
        text.contains(r#""format": "logpipe-host-offsets""#),
        "{text}"
    );
    assert_eq!(parse_import(&text).unwrap(), sample());
}

fn import_error(text: &str) -> String {
    parse_import(text).expect_err("refused").to_string()
}

#[test]
fn an_import_of_another_format_or_version_is_refused() {
    assert!(import_error("[]").contains("\"format\""));
    assert!(import_error(r#"{"format":"other","version":1}"#).contains("\"other\""));
    let version = import_error(r#"{"format":"logpipe-host-offsets","version":2}"#);
    assert!(version.contains("unsupported version 2"), "{version}");
    assert!(import_error("{").contains("not JSON"));
}

#[test]
fn an_import_error_names_the_bad_entry() {
    let negative = import_error(
        r#"{"format":"logpipe-host-offsets","version":1,"kafka":[
            {"topic":"a","partition":0,"next_offset":5},
            {"topic":"a","partition":1,"next_offset":-1}]}"#,
    );
    assert!(
        negative.starts_with("kafka[1] (topic \"a\" partition 1)") && negative.contains("-1"),
        "{negative}"
    );
    let typo = import_error(
        r#"{"format":"logpipe-host-offsets","version":1,"kafka":[{"topic":"a","partition":0,"offset":5}]}"#,
    );
    assert!(
        typo.starts_with("kafka[0]") && typo.contains("offset"),
        "{typo}"
    );
    let both = import_error(
        r#"{"format":"logpipe-host-offsets","version":1,"kinesis":[
            {"region":"r","stream":"s","shard":"x","sequence_number":"1","start":"TRIM_HORIZON"}]}"#,
    );
    assert!(
        both.starts_with("kinesis[0] (stream \"s\" shard x)"),
        "{both}"
    );
    let not_decimal = import_error(
        r#"{"format":"logpipe-host-offsets","version":1,"kinesis":[
            {"region":"r","stream":"s","shard":"x","sequence_number":"12ab"}]}"#,
    );
    assert!(not_decimal.contains("12ab"), "{not_decimal}");
    let no_time = import_error(
        r#"{"format":"logpipe-host-offsets","version":1,"kinesis":[
            {"region":"r","stream":"s","shard":"x","start":"AT_TIMESTAMP"}]}"#,
    );
    assert!(no_time.contains("timestamp_ms"), "{no_time}");
}

#[test]
fn an_import_giving_a_position_twice_names_both_entries() {
    let kafka = import_error(
        r#"{"format":"logpipe-host-offsets","version":1,"kafka":[
            {"topic":"a","partition":0,"next_offset":5},
            {"topic":"b","partition":0,"next_offset":5},
            {"topic":"a","partition":0,"next_offset":7}]}"#,
    );
    assert_eq!(kafka, "kafka[2] repeats kafka[0] (topic \"a\" partition 0)");
    let kinesis = import_error(
        r#"{"format":"logpipe-host-offsets","version":1,"kinesis":[
            {"region":"r","stream":"s","shard":"x","sequence_number":"1"},
            {"region":"r","stream":"s","shard":"x","start":"TRIM_HORIZON"}]}"#,
    );
    assert!(
        kinesis.starts_with("kinesis[1] repeats kinesis[0]"),
        "{kinesis}"
    );
}

#[test]
fn positions_are_written_upserted_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offsets.sqlite3");
    let mut store = OffsetStore::open(&path).unwrap();
    store.commit_offsets([("other", 0, 9)]).unwrap();
    store
        .write_positions(&sample().kafka, &sample().kinesis, false)
        .unwrap();
    let snapshot = read_snapshot(&path).unwrap();
    assert_eq!(snapshot.kafka.len(), 3, "upserted beside the existing row");
    assert_eq!(snapshot.kinesis, sample().kinesis);
    store
        .write_positions(&sample().kafka, &sample().kinesis, true)
        .unwrap();
    assert_eq!(read_snapshot(&path).unwrap(), sample());
    assert_eq!(store.snapshot().unwrap(), sample());
}

#[test]
fn the_hosts_commit_replaces_a_reset_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offsets.sqlite3");
    let mut store = OffsetStore::open(&path).unwrap();
    store
        .write_positions(&[], &[row("s", "x", ShardStart::AtTimestamp(5))], false)
        .unwrap();
    assert_eq!(
        store.kinesis_positions("us-east-1", "s").unwrap()["x"],
        ShardStart::AtTimestamp(5)
    );
    store
        .commit(Commit {
            shards: vec![ShardPosition {
                region: "us-east-1".into(),
                stream: "s".into(),
                shard: "x".into(),
                sequence_number: "42".into(),
            }],
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(
        store.kinesis_positions("us-east-1", "s").unwrap()["x"],
        ShardStart::After("42".into())
    );
}

#[test]
fn a_file_from_before_the_markers_still_opens_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offsets.sqlite3");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            r#"CREATE TABLE kafka_offsets ("topic" TEXT NOT NULL, "partition" INTEGER NOT NULL,
                   "offset" INTEGER NOT NULL, UNIQUE ("topic", "partition"));
               CREATE TABLE kinesis_offsets ("region" TEXT NOT NULL, "stream" TEXT NOT NULL,
                   "shard" TEXT NOT NULL, "sequence_number" TEXT NOT NULL,
                   UNIQUE ("region", "stream", "shard"));
               INSERT INTO kinesis_offsets VALUES ('us-east-1', 's', 'x', '7');"#,
        )
        .unwrap();
    }
    // Read-only first: the file is not changed.
    let old = read_snapshot(&path).unwrap();
    assert_eq!(old.kinesis, [row("s", "x", ShardStart::After("7".into()))]);
    let store = OffsetStore::open(&path).unwrap();
    assert_eq!(
        store.kinesis_positions("us-east-1", "s").unwrap()["x"],
        ShardStart::After("7".into())
    );
    drop(store);
    OffsetStore::open(&path).expect("opens again once migrated");
}

#[test]
fn reading_a_file_that_is_not_a_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let missing = read_snapshot(&dir.path().join("nope.sqlite3")).unwrap_err();
    assert!(
        missing.to_string().starts_with("no offsets file at"),
        "{missing}"
    );
    let other = dir.path().join("other.sqlite3");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = read_snapshot(&other).unwrap_err();
    assert!(err.to_string().contains("has no offsets"), "{err}");
}
