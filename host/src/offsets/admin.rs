//! Operator access to the offset store (`logpipe-host offsets`): every
//! stored position at once, read-only while a host runs; writes of whole
//! sets of positions in one transaction; the JSON backup format and its
//! validation; the `--to` targets of a reset.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_sdk_kinesis::primitives::{DateTime, DateTimeFormat};
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

use super::{
    AT_TIMESTAMP, KafkaOffset, OffsetError, OffsetStore, ShardStart, TRIM_HORIZON, has_column,
};

/// One Kinesis shard's stored start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRow {
    pub region: String,
    pub stream: String,
    pub shard: String,
    pub start: ShardStart,
}

/// Every stored position, Kafka rows by topic and partition, Kinesis rows
/// by region, stream and shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub kafka: Vec<KafkaOffset>,
    pub kinesis: Vec<KinesisRow>,
}

impl Snapshot {
    /// The stored next offset of one partition.
    pub fn kafka_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.kafka
            .iter()
            .find(|row| row.topic == topic && row.partition == partition)
            .map(|row| row.next_offset)
    }

    /// The stored start of one shard.
    pub fn shard_start(&self, region: &str, stream: &str, shard: &str) -> Option<&ShardStart> {
        self.kinesis
            .iter()
            .find(|row| row.region == region && row.stream == stream && row.shard == shard)
            .map(|row| &row.start)
    }

    /// The regions `stream` has rows in, sorted.
    pub fn regions_of(&self, stream: &str) -> Vec<String> {
        let mut regions: Vec<String> = self
            .kinesis
            .iter()
            .filter(|row| row.stream == stream)
            .map(|row| row.region.clone())
            .collect();
        regions.sort();
        regions.dedup();
        regions
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no offsets file at {}", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read offsets file {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{} has no offsets (table kafka_offsets): is it a logpipe-host offsets file?",
        path.display()
    )]
    NotAStore { path: PathBuf },
}

/// Every stored position of the file at `path`, opened read-only: safe
/// while a host runs (WAL: it sees the last commit), and it never changes
/// the file, not even to add the columns of a newer schema.
pub fn read_snapshot(path: &Path) -> Result<Snapshot, ReadError> {
    let sqlite = |source| ReadError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_file() {
        return Err(ReadError::Missing {
            path: path.to_path_buf(),
        });
    }
    let mut conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite)?;
    // One read transaction: Kafka and Kinesis rows of the same commit.
    let tx = conn.transaction().map_err(sqlite)?;
    if !has_column(&tx, "kafka_offsets", "offset").map_err(sqlite)? {
        return Err(ReadError::NotAStore {
            path: path.to_path_buf(),
        });
    }
    let snapshot = query_snapshot(&tx).map_err(sqlite)?;
    Ok(snapshot)
}

impl OffsetStore {
    /// Every stored position (see [`read_snapshot`] for a read-only look).
    pub fn snapshot(&self) -> Result<Snapshot, OffsetError> {
        query_snapshot(&self.conn).map_err(self.query_error())
    }

    /// Store `kafka` and `kinesis` positions (upserting) in one
    /// transaction; with `replace`, every stored position is deleted first.
    /// Store writes and the outbox are left alone.
    pub fn write_positions(
        &mut self,
        kafka: &[KafkaOffset],
        kinesis: &[KinesisRow],
        replace: bool,
    ) -> Result<(), OffsetError> {
        let path = self.path.clone();
        let query_error = |source| OffsetError::Query {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(query_error)?;
        if replace {
            tx.execute_batch("DELETE FROM kafka_offsets; DELETE FROM kinesis_offsets;")
                .map_err(query_error)?;
        }
        {
            let mut upsert = tx
                .prepare(
                    r#"INSERT INTO kafka_offsets ("topic", "partition", "offset") VALUES (?1, ?2, ?3)
                       ON CONFLICT ("topic", "partition") DO UPDATE SET "offset" = excluded."offset""#,
                )
                .map_err(query_error)?;
            for row in kafka {
                upsert
                    .execute(params![row.topic, row.partition, row.next_offset])
                    .map_err(query_error)?;
            }
            let mut upsert_shard = tx
                .prepare(
                    r#"INSERT INTO kinesis_offsets
                           ("region", "stream", "shard", "sequence_number", "start_at", "start_timestamp_ms")
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                       ON CONFLICT ("region", "stream", "shard") DO UPDATE SET
                           "sequence_number" = excluded."sequence_number",
                           "start_at" = excluded."start_at",
                           "start_timestamp_ms" = excluded."start_timestamp_ms""#,
                )
                .map_err(query_error)?;
            for row in kinesis {
                let (sequence, start_at, timestamp_ms) = row.start.to_columns();
                upsert_shard
                    .execute(params![
                        row.region,
                        row.stream,
                        row.shard,
                        sequence,
                        start_at,
                        timestamp_ms
                    ])
                    .map_err(query_error)?;
            }
        }
        tx.commit().map_err(query_error)
    }
}

/// Both tables' rows; a file older than the start markers has none.
fn query_snapshot(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let mut kafka_rows =
        conn.prepare(r#"SELECT "topic", "partition", "offset" FROM kafka_offsets ORDER BY 1, 2"#)?;
    let kafka = kafka_rows
        .query_map([], |row| {
            Ok(KafkaOffset {
                topic: row.get(0)?,
                partition: row.get(1)?,
                next_offset: row.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let markers = if has_column(conn, "kinesis_offsets", "start_at")? {
        r#""start_at", "start_timestamp_ms""#
    } else {
        "NULL, NULL"
    };
    let mut kinesis_rows = conn.prepare(&format!(
        r#"SELECT "region", "stream", "shard", "sequence_number", {markers}
           FROM kinesis_offsets ORDER BY 1, 2, 3"#
    ))?;
    let kinesis = kinesis_rows
        .query_map([], |row| {
            let start = ShardStart::from_columns(row.get(3)?, row.get(4)?, row.get(5)?).map_err(
                |message| {
                    rusqlite::Error::FromSqlConversionFailure(
                        4,
                        rusqlite::types::Type::Text,
                        message.into(),
                    )
                },
            )?;
            Ok(KinesisRow {
                region: row.get(0)?,
                stream: row.get(1)?,
                shard: row.get(2)?,
                start,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Snapshot { kafka, kinesis })
}

/// Where `offsets reset --to` moves positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest record kept: Kafka's low watermark, Kinesis TRIM_HORIZON.
    Earliest,
    /// Past the newest record: Kafka's high watermark; for Kinesis, records
    /// that arrive from the reset on.
    Latest,
    /// The first record at or after this time, in ms since the epoch.
    Time(i64),
}

/// Epoch values below this (1973-03-03 in ms) are taken for seconds, a
/// common slip, and refused rather than read as a date in 1970.
const SMALLEST_EPOCH_MS: i64 = 100_000_000_000;

impl FromStr for ResetTo {
    type Err = String;

    /// `earliest` (alias `trim-horizon`), `latest`, epoch milliseconds, or
    /// an RFC 3339 time such as `2026-11-24T09:30:00Z` or
    /// `2026-11-24T10:30:00+01:00`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "earliest" | "trim-horizon" => return Ok(ResetTo::Earliest),
            "latest" => return Ok(ResetTo::Latest),
            _ => {}
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let ms: i64 = text
                .parse()
                .map_err(|_| format!("{text:?} is too large for epoch milliseconds"))?;
            if ms < SMALLEST_EPOCH_MS {
                return Err(format!(
                    "{text:?} is before 1973 in epoch milliseconds; if it is in seconds, \
                     append 000"
                ));
            }
            return Ok(ResetTo::Time(ms));
        }
        let time = DateTime::from_str(text, DateTimeFormat::DateTimeWithOffset).map_err(|e| {
            format!(
                "expected earliest, trim-horizon, latest, epoch milliseconds or an RFC 3339 \
                 time such as 2026-11-24T09:30:00Z, got {text:?} ({e})"
            )
        })?;
        let ms = time
            .to_millis()
            .map_err(|e| format!("{text:?} is out of range: {e}"))?;
        if ms < 0 {
            return Err(format!("{text:?} is before 1970"));
        }
        Ok(ResetTo::Time(ms))
    }
}

/// `ms` since the epoch as RFC 3339 (UTC), or the number if out of range.
pub fn format_millis(ms: i64) -> String {
    DateTime::from_millis(ms)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// How a shard start reads in messages and tables.
pub fn describe_start(start: &ShardStart) -> String {
    match start {
        ShardStart::After(sequence) => format!("after {sequence}"),
        ShardStart::TrimHorizon => TRIM_HORIZON.to_owned(),
        ShardStart::AtTimestamp(ms) => format!("{AT_TIMESTAMP} {}", format_millis(*ms)),
    }
}

/// `format` of the export file.
pub const EXPORT_FORMAT: &str = "logpipe-host-offsets";
/// `version` of the export file this build writes and reads.
pub const EXPORT_VERSION: u64 = 1;

/// The export file: `offsets export` writes it, `offsets import` reads it.
#[derive(Debug, Clone, Serialize)]
pub struct ExportFile {
    pub format: &'static str,
    pub version: u64,
    pub kafka: Vec<KafkaEntry>,
    pub kinesis: Vec<KinesisEntry>,
}

/// A partition's next offset to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaEntry {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// A shard's stored start: exactly one of `sequence_number` (the last
/// handled record) and `start` (`TRIM_HORIZON`, or `AT_TIMESTAMP` with
/// `timestamp_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisEntry {
    pub region: String,
    pub stream: String,
    pub shard: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
}

impl KinesisEntry {
    pub fn from_row(row: &KinesisRow) -> Self {
        let (sequence_number, start, timestamp_ms) = match &row.start {
            ShardStart::After(sequence) => (Some(sequence.clone()), None, None),
            ShardStart::TrimHorizon => (None, Some(TRIM_HORIZON.to_owned()), None),
            ShardStart::AtTimestamp(ms) => (None, Some(AT_TIMESTAMP.to_owned()), Some(*ms)),
        };
        KinesisEntry {
            region: row.region.clone(),
            stream: row.stream.clone(),
            shard: row.shard.clone(),
            sequence_number,
            start,
            timestamp_ms,
        }
    }
}

impl ExportFile {
    pub fn new(snapshot: &Snapshot) -> Self {
        ExportFile {
            format: EXPORT_FORMAT,
            version: EXPORT_VERSION,
            kafka: snapshot
                .kafka
                .iter()
                .map(|row| KafkaEntry {
                    topic: row.topic.clone(),
                    partition: row.partition,
                    next_offset: row.next_offset,
                })
                .collect(),
            kinesis: snapshot
                .kinesis
                .iter()
                .map(KinesisEntry::from_row)
                .collect(),
        }
    }
}

/// Why an import file is refused; nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    #[error("expected a JSON object with \"format\": \"{EXPORT_FORMAT}\", got {0}")]
    Format(String),
    #[error("unsupported version {0}: this logpipe-host reads version {EXPORT_VERSION}")]
    Version(String),
    #[error("{field}: expected a list of entries")]
    NotAList { field: &'static str },
    #[error("{entry}: {message}")]
    Entry { entry: String, message: String },
    #[error("{entry} repeats {first} ({what})")]
    Duplicate {
        entry: String,
        first: String,
        what: String,
    },
}

/// Parse and check a whole export file before anything is written:
/// the format and version, each entry's fields, no negative offsets or
/// partitions, no empty names, sequence numbers in decimal, markers known,
/// and no position given twice. Errors name the entry (`kafka[3]`).
pub fn parse_import(text: &str) -> Result<Snapshot, ImportError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(ImportError::Json)?;
    let format = value.get("format");
    if format.and_then(|f| f.as_str()) != Some(EXPORT_FORMAT) {
        return Err(ImportError::Format(
            format.map_or_else(|| "no format".to_owned(), |f| f.to_string()),
        ));
    }
    let version = value.get("version");
    if version.and_then(|v| v.as_u64()) != Some(EXPORT_VERSION) {
        return Err(ImportError::Version(
            version.map_or_else(|| "(missing)".to_owned(), |v| v.to_string()),
        ));
    }
    if let Some(object) = value.as_object()
        && let Some(unknown) = object
            .keys()
            .find(|k| !["format", "version", "kafka", "kinesis"].contains(&k.as_str()))
    {
        return Err(ImportError::Entry {
            entry: unknown.clone(),
            message: "unknown field (expected format, version, kafka, kinesis)".into(),
        });
    }
    let kafka = entries::<KafkaEntry>(&value, "kafka")?
        .into_iter()
        .enumerate()
        .map(|(i, entry)| kafka_row(i, entry))
        .collect::<Result<Vec<_>, _>>()?;
    let kinesis = entries::<KinesisEntry>(&value, "kinesis")?
        .into_iter()
        .enumerate()
        .map(|(i, entry)| kinesis_row(i, entry))
        .collect::<Result<Vec<_>, _>>()?;
    no_duplicates(
        "kafka",
        kafka
            .iter()
            .map(|r| (r.topic.clone(), r.partition.to_string(), String::new())),
        |(topic, partition, _)| format!("topic {topic:?} partition {partition}"),
    )?;
    no_duplicates(
        "kinesis",
        kinesis
            .iter()
            .map(|r| (r.region.clone(), r.stream.clone(), r.shard.clone())),
        |(region, stream, shard)| format!("region {region} stream {stream:?} shard {shard}"),
    )?;
    Ok(Snapshot { kafka, kinesis })
}

/// The entries of list `field` (absent: none), each parsed on its own so
/// an error names it.
fn entries<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    field: &'static str,
) -> Result<Vec<T>, ImportError> {
    let Some(list) = value.get(field) else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or(ImportError::NotAList { field })?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            serde_json::from_value(entry.clone()).map_err(|e| ImportError::Entry {
                entry: format!("{field}[{i}]"),
                message: e.to_string(),
            })
        })
        .collect()
}

fn kafka_row(index: usize, entry: KafkaEntry) -> Result<KafkaOffset, ImportError> {
    let bad = |message: String| ImportError::Entry {
        entry: format!(
            "kafka[{index}] (topic {:?} partition {})",
            entry.topic, entry.partition
        ),
        message,
    };
    if entry.topic.is_empty() {
        return Err(bad("empty topic".into()));
    }
    if entry.partition < 0 {
        return Err(bad(format!("partition {} is negative", entry.partition)));
    }
    if entry.next_offset < 0 {
        return Err(bad(format!(
            "next_offset {} is negative",
            entry.next_offset
        )));
    }
    Ok(KafkaOffset {
        topic: entry.topic.clone(),
        partition: entry.partition,
        next_offset: entry.next_offset,
    })
}

fn kinesis_row(index: usize, entry: KinesisEntry) -> Result<KinesisRow, ImportError> {
    let bad = |message: String| ImportError::Entry {
        entry: format!(
            "kinesis[{index}] (stream {:?} shard {})",
            entry.stream, entry.shard
        ),
        message,
    };
    for (name, value) in [
        ("region", &entry.region),
        ("stream", &entry.stream),
        ("shard", &entry.shard),
    ] {
        if value.is_empty() {
            return Err(bad(format!("empty {name}")));
        }
    }
    let start = match (
        &entry.sequence_number,
        entry.start.as_deref(),
        entry.timestamp_ms,
    ) {
        (Some(sequence), None, None) => {
            check_sequence_number(sequence).map_err(bad)?;
            ShardStart::After(sequence.clone())
        }
        (None, Some(TRIM_HORIZON), None) => ShardStart::TrimHorizon,
        (None, Some(AT_TIMESTAMP), Some(ms)) if ms >= 0 => ShardStart::AtTimestamp(ms),
        (None, Some(AT_TIMESTAMP), Some(ms)) => {
            return Err(bad(format!("timestamp_ms {ms} is negative")));
        }
        _ => {
            return Err(bad(format!(
                "expected either sequence_number, or start {TRIM_HORIZON:?}, or start \
                 {AT_TIMESTAMP:?} with timestamp_ms (got sequence_number {:?}, start {:?}, \
                 timestamp_ms {:?})",
                entry.sequence_number, entry.start, entry.timestamp_ms
            )));
        }
    };
    Ok(KinesisRow {
        region: entry.region,
        stream: entry.stream,
        shard: entry.shard,
        start,
    })
}

/// Kinesis sequence numbers are decimal strings (up to 128 digits).
pub fn check_sequence_number(sequence: &str) -> Result<(), String> {
    if sequence.is_empty() || sequence.len() > 128 || !sequence.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "sequence number {sequence:?} is not a Kinesis sequence number (1 to 128 decimal digits)"
        ));
    }
    Ok(())
}

/// Refuse a key given twice, naming both entries.
fn no_duplicates<K: std::hash::Hash + Eq>(
    field: &str,
    keys: impl Iterator<Item = K>,
    describe: impl Fn(&K) -> String,
) -> Result<(), ImportError> {
    let mut seen: HashMap<K, usize> = HashMap::new();
    for (index, key) in keys.enumerate() {
        if let Some(first) = seen.get(&key) {
            return Err(ImportError::Duplicate {
                entry: format!("{field}[{index}]"),
                first: format!("{field}[{first}]"),
                what: describe(&key),
            });
        }
        seen.insert(key, index);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
