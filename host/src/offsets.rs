//! The offset store: a SQLite file recording, per topic partition, the next
//! offset to read (django-logpipe's `KafkaOffset` stores offset + 1 too).
//!
//! The same file holds the handlers' key-value store (`handler_state`) and
//! the produce outbox (`outbox`): a checkpoint stores offsets, store writes
//! and produced records in one transaction, the way django-logpipe saved a
//! serializer's rows and the offset in one `transaction.atomic()`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::state::{Effects, OutboxRecord};

pub mod admin;

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("cannot open offset store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("offset store {}: {source}", path.display())]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "offset store {} is in use by another logpipe-host ({holder}); a store belongs to one \
         host: give each host its own --offsets file, and to share partitions among hosts use \
         a consumer group (--offset-store kafka --group-id ID)",
        path.display()
    )]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock offset store {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A host's exclusive claim on an offsets file, held until it is dropped or
/// the process ends (even by `kill -9`: the kernel drops the lock). Two
/// hosts on one file would each handle every record.
pub struct HostLock {
    _file: File,
}

impl HostLock {
    /// Claim `db` through `db` + `.lock`, which records the holder's pid.
    pub fn acquire(db: &Path) -> Result<Self, OffsetError> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let error = |source| OffsetError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(error)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(error)?;
                file.rewind().map_err(error)?;
                write!(file, "pid {}", std::process::id()).map_err(error)?;
                Ok(HostLock { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                if holder.trim().is_empty() {
                    holder = "pid unknown".into();
                }
                Err(OffsetError::InUse {
                    path: db.to_path_buf(),
                    holder: holder.trim().to_owned(),
                })
            }
            Err(TryLockError::Error(source)) => Err(error(source)),
        }
    }
}

/// One partition's progress: the next offset to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

pub struct OffsetStore {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS kafka_offsets (
    "topic"     TEXT    NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    UNIQUE ("topic", "partition")
);
CREATE TABLE IF NOT EXISTS kinesis_offsets (
    "region"          TEXT NOT NULL,
    "stream"          TEXT NOT NULL,
    "shard"           TEXT NOT NULL,
    "sequence_number" TEXT NOT NULL,
    UNIQUE ("region", "stream", "shard")
);
CREATE TABLE IF NOT EXISTS handler_state (
    "namespace" TEXT NOT NULL,
    "key"       TEXT NOT NULL,
    "value"     BLOB NOT NULL,
    PRIMARY KEY ("namespace", "key")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    "id"        INTEGER PRIMARY KEY AUTOINCREMENT,
    "topic"     TEXT NOT NULL,
    "key"       TEXT,
    "payload"   BLOB NOT NULL,
    "record_id" TEXT NOT NULL
);
"#;

/// What one checkpoint stores, atomically.
#[derive(Debug, Default)]
pub struct Commit {
    /// (topic, partition, next offset).
    pub offsets: Vec<(String, i32, i64)>,
    /// Kinesis shards: the last handled sequence number of each.
    pub shards: Vec<ShardPosition>,
    pub effects: Effects,
    /// Outbox rows up to this id were published and acknowledged: delete
    /// them.
    pub sent_through: Option<i64>,
}

/// Columns added after the first release: `ALTER TABLE ... ADD COLUMN` when
/// an older file lacks them (files written before still open).
///
/// `kinesis_offsets.start_at` is NULL for a shard whose position is its
/// last handled record (`sequence_number`); an operator's `offsets reset`
/// stores a start marker instead: `TRIM_HORIZON`, or `AT_TIMESTAMP` with
/// `start_timestamp_ms`. Such a row's `sequence_number` is empty, so an
/// older binary fails loudly on it (an invalid AFTER_SEQUENCE_NUMBER)
/// rather than silently starting elsewhere. The host's first commit on the
/// shard replaces the marker with a sequence number.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("kinesis_offsets", "start_at", "TEXT"),
    ("kinesis_offsets", "start_timestamp_ms", "INTEGER"),
];

/// Add the [`ADDED_COLUMNS`] an older file lacks.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        if !has_column(conn, table, column)? {
            conn.execute_batch(&format!(
                r#"ALTER TABLE {table} ADD COLUMN "{column}" {kind}"#
            ))?;
        }
    }
    Ok(())
}

/// Whether `table` has `column` (false for a missing table).
pub(crate) fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |row| row.get::<_, String>(1))?;
    for name in names {
        if name? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where a shard starts at the next host start, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardStart {
    /// Right after this sequence number: the last handled record.
    After(String),
    /// At the oldest record kept (an operator's reset).
    TrimHorizon,
    /// At the first record that arrived at or after this time, in ms since
    /// the epoch (an operator's reset).
    AtTimestamp(i64),
}

/// The `start_at` values of [`ShardStart`] markers.
pub(crate) const TRIM_HORIZON: &str = "TRIM_HORIZON";
pub(crate) const AT_TIMESTAMP: &str = "AT_TIMESTAMP";

impl ShardStart {
    /// Decode a row's (sequence_number, start_at, start_timestamp_ms).
    /// An unknown marker (a newer binary's) is an error, not a guess.
    pub(crate) fn from_columns(
        sequence_number: String,
        start_at: Option<String>,
        timestamp_ms: Option<i64>,
    ) -> Result<Self, String> {
        match (start_at.as_deref(), timestamp_ms) {
            (None, _) => Ok(ShardStart::After(sequence_number)),
            (Some(TRIM_HORIZON), _) => Ok(ShardStart::TrimHorizon),
            (Some(AT_TIMESTAMP), Some(ms)) => Ok(ShardStart::AtTimestamp(ms)),
            (Some(other), ms) => Err(format!(
                "unknown shard start marker {other:?} (timestamp {ms:?})"
            )),
        }
    }

    /// The row's (sequence_number, start_at, start_timestamp_ms).
    pub(crate) fn to_columns(&self) -> (&str, Option<&'static str>, Option<i64>) {
        match self {
            ShardStart::After(sequence) => (sequence, None, None),
            ShardStart::TrimHorizon => ("", Some(TRIM_HORIZON), None),
            ShardStart::AtTimestamp(ms) => ("", Some(AT_TIMESTAMP), Some(*ms)),
        }
    }
}

/// A Kinesis shard's progress: the last handled record (logpipe's rule;
/// reading resumes `AFTER_SEQUENCE_NUMBER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPosition {
    pub region: String,
    pub stream: String,
    pub shard: String,
    pub sequence_number: String,
}

/// An outbox row: a produced record stored but not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub record: OutboxRecord,
}

impl OffsetStore {
    /// Open (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, OffsetError> {
        let open_error = |source| OffsetError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        // WAL lets operators read offsets (sqlite3 CLI) while the host writes.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        conn.execute_batch(SCHEMA).map_err(open_error)?;
        migrate(&conn).map_err(open_error)?;
        Ok(OffsetStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn query_error(&self) -> impl Fn(rusqlite::Error) -> OffsetError + '_ {
        |source| OffsetError::Query {
            path: self.path.clone(),
            source,
        }
    }

    /// Stored next offsets of `topic`, by partition.
    pub fn kafka_offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, OffsetError> {
        let mut stmt = self
            .conn
            .prepare_cached(r#"SELECT "partition", "offset" FROM kafka_offsets WHERE "topic" = ?1"#)
            .map_err(self.query_error())?;
        let rows = stmt
            .query_map(params![topic], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(self.query_error())?;
        rows.collect::<Result<_, _>>().map_err(self.query_error())
    }

    /// Stored starts of `stream`'s shards, by shard: the last handled
    /// sequence number, or an operator's reset marker.
    pub fn kinesis_positions(
        &self,
        region: &str,
        stream: &str,
    ) -> Result<HashMap<String, ShardStart>, OffsetError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                r#"SELECT "shard", "sequence_number", "start_at", "start_timestamp_ms"
                   FROM kinesis_offsets WHERE "region" = ?1 AND "stream" = ?2"#,
            )
            .map_err(self.query_error())?;
        let rows = stmt
            .query_map(params![region, stream], |row| {
                let start = ShardStart::from_columns(row.get(1)?, row.get(2)?, row.get(3)?)
                    .map_err(|message| {
                        rusqlite::Error::FromSqlConversionFailure(
                            2,
                            rusqlite::types::Type::Text,
                            message.into(),
                        )
                    })?;
                Ok((row.get(0)?, start))
            })
            .map_err(self.query_error())?;
        rows.collect::<Result<_, _>>().map_err(self.query_error())
    }

    /// Store a checkpoint in one transaction: offsets, store writes and
    /// outbox records all advance, or none does. Returns the new outbox
    /// rows, in order, for the relay to publish.
    pub fn commit(&mut self, commit: Commit) -> Result<Vec<OutboxRow>, OffsetError> {
        let path = self.path.clone();
        let query_error = |source| OffsetError::Query {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(query_error)?;
        let mut rows = Vec::with_capacity(commit.effects.outbox.len());
        {
            let mut upsert = tx
                .prepare_cached(
                    r#"INSERT INTO kafka_offsets ("topic", "partition", "offset") VALUES (?1, ?2, ?3)
                       ON CONFLICT ("topic", "partition") DO UPDATE SET "offset" = excluded."offset""#,
                )
                .map_err(query_error)?;
            for (topic, partition, next_offset) in &commit.offsets {
                upsert
                    .execute(params![topic, partition, next_offset])
                    .map_err(query_error)?;
            }
            let mut upsert_shard = tx
                .prepare_cached(
                    r#"INSERT INTO kinesis_offsets ("region", "stream", "shard", "sequence_number")
                       VALUES (?1, ?2, ?3, ?4)
                       ON CONFLICT ("region", "stream", "shard")
                       DO UPDATE SET "sequence_number" = excluded."sequence_number",
                           "start_at" = NULL, "start_timestamp_ms" = NULL"#,
                )
                .map_err(query_error)?;
            for p in &commit.shards {
                upsert_shard
                    .execute(params![p.region, p.stream, p.shard, p.sequence_number])
                    .map_err(query_error)?;
            }
            let mut put = tx
                .prepare_cached(
                    r#"INSERT INTO handler_state ("namespace", "key", "value") VALUES (?1, ?2, ?3)
                       ON CONFLICT ("namespace", "key") DO UPDATE SET "value" = excluded."value""#,
                )
                .map_err(query_error)?;
            let mut delete = tx
                .prepare_cached(
                    r#"DELETE FROM handler_state WHERE "namespace" = ?1 AND "key" = ?2"#,
                )
                .map_err(query_error)?;
            for ((namespace, key), write) in &commit.effects.writes {
                match write {
                    Some(value) => put.execute(params![&**namespace, key, value]),
                    None => delete.execute(params![&**namespace, key]),
                }
                .map_err(query_error)?;
            }
            let mut insert = tx
                .prepare_cached(
                    r#"INSERT INTO outbox ("topic", "key", "payload", "record_id") VALUES (?1, ?2, ?3, ?4)"#,
                )
                .map_err(query_error)?;
            for record in commit.effects.outbox {
                insert
                    .execute(params![record.topic, record.key, record.payload, record.id])
                    .map_err(query_error)?;
                rows.push(OutboxRow {
                    id: tx.last_insert_rowid(),
                    record,
                });
            }
            if let Some(id) = commit.sent_through {
                tx.execute(r#"DELETE FROM outbox WHERE "id" <= ?1"#, params![id])
                    .map_err(query_error)?;
            }
        }
        tx.commit().map_err(query_error)?;
        Ok(rows)
    }

    /// Store offsets only.
    pub fn commit_offsets<'a>(
        &mut self,
        offsets: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) -> Result<(), OffsetError> {
        let offsets = offsets
            .into_iter()
            .map(|(topic, partition, next)| (topic.to_owned(), partition, next))
            .collect();
        self.commit(Commit {
            offsets,
            ..Commit::default()
        })
        .map(drop)
    }

    /// Outbox rows not yet published (left by a previous run), oldest first.
    pub fn unsent_outbox(&self) -> Result<Vec<OutboxRow>, OffsetError> {
        let mut stmt = self
            .conn
            .prepare(
                r#"SELECT "id", "topic", "key", "payload", "record_id" FROM outbox ORDER BY "id""#,
            )
            .map_err(self.query_error())?;
        let rows = stmt
            .query_map([], |row| {
                Ok(OutboxRow {
                    id: row.get(0)?,
                    record: OutboxRecord {
                        topic: row.get(1)?,
                        key: row.get(2)?,
                        payload: row.get(3)?,
                        id: row.get(4)?,
                    },
                })
            })
            .map_err(self.query_error())?;
        rows.collect::<Result<_, _>>().map_err(self.query_error())
    }

    /// Delete outbox rows up to `id`: they were published and acknowledged.
    pub fn mark_sent_through(&mut self, id: i64) -> Result<(), OffsetError> {
        self.commit(Commit {
            sent_through: Some(id),
            ..Commit::default()
        })
        .map(drop)
    }

    /// Every stored position, ordered by topic and partition.
    pub fn all_kafka_offsets(&self) -> Result<Vec<KafkaOffset>, OffsetError> {
        let mut stmt = self
            .conn
            .prepare(r#"SELECT "topic", "partition", "offset" FROM kafka_offsets ORDER BY 1, 2"#)
            .map_err(self.query_error())?;
        let rows = stmt
            .query_map([], |row| {
                Ok(KafkaOffset {
                    topic: row.get(0)?,
                    partition: row.get(1)?,
                    next_offset: row.get(2)?,
                })
            })
            .map_err(self.query_error())?;
        rows.collect::<Result<_, _>>().map_err(self.query_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_a_held_store_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.sqlite3");
        let held = HostLock::acquire(&path).unwrap();
        let err = HostLock::acquire(&path).err().expect("refused").to_string();
        assert!(
            err.contains("in use by another logpipe-host")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        HostLock::acquire(&path).expect("free again once dropped");
    }

    #[test]
    fn commits_and_reads_back_next_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.sqlite3");
        let mut store = OffsetStore::open(&path).unwrap();
        store
            .commit_offsets([("a", 0, 10), ("a", 1, 3), ("b", 0, 1)])
            .unwrap();
        store.commit_offsets([("a", 0, 12)]).unwrap();
        drop(store);
        let store = OffsetStore::open(&path).unwrap();
        let a = store.kafka_offsets("a").unwrap();
        assert_eq!(a, HashMap::from([(0, 12), (1, 3)]));
        assert_eq!(store.all_kafka_offsets().unwrap().len(), 3);
    }

    #[test]
    fn commits_and_reads_back_shard_positions_per_region_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.sqlite3");
        let mut store = OffsetStore::open(&path).unwrap();
        let at = |region: &str, stream: &str, shard: &str, seq: &str| ShardPosition {
            region: region.into(),
            stream: stream.into(),
            shard: shard.into(),
            sequence_number: seq.into(),
        };
        // Sequence numbers are decimal strings too long for an integer.
        let long = "49590338271490256608559692538361571095921575989136588898";
        store
            .commit(Commit {
                shards: vec![
                    at("us-east-1", "s", "shardId-000000000000", "1"),
                    at("us-east-1", "s", "shardId-000000000001", long),
                    at("eu-west-1", "s", "shardId-000000000000", "7"),
                ],
                ..Commit::default()
            })
            .unwrap();
        store
            .commit(Commit {
                shards: vec![at("us-east-1", "s", "shardId-000000000000", "2")],
                ..Commit::default()
            })
            .unwrap();
        let positions = store.kinesis_positions("us-east-1", "s").unwrap();
        assert_eq!(
            positions,
            HashMap::from([
                (
                    "shardId-000000000000".to_string(),
                    ShardStart::After("2".into())
                ),
                (
                    "shardId-000000000001".to_string(),
                    ShardStart::After(long.into())
                ),
            ])
        );
        assert_eq!(store.kinesis_positions("eu-west-1", "s").unwrap().len(), 1);
    }
}
