//! The offset store: a SQLite file recording, per topic partition, the next
//! offset to read (django-logpipe's `KafkaOffset` stores offset + 1 too).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};

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
"#;

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

    /// Store a batch of positions in one transaction: either all of them
    /// advance or none does.
    pub fn commit_kafka<'a>(
        &mut self,
        offsets: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) -> Result<(), OffsetError> {
        let path = self.path.clone();
        let query_error = |source| OffsetError::Query {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(query_error)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    r#"INSERT INTO kafka_offsets ("topic", "partition", "offset") VALUES (?1, ?2, ?3)
                       ON CONFLICT ("topic", "partition") DO UPDATE SET "offset" = excluded."offset""#,
                )
                .map_err(query_error)?;
            for (topic, partition, next_offset) in offsets {
                upsert
                    .execute(params![topic, partition, next_offset])
                    .map_err(query_error)?;
            }
        }
        tx.commit().map_err(query_error)
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
    fn commits_and_reads_back_next_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.sqlite3");
        let mut store = OffsetStore::open(&path).unwrap();
        store
            .commit_kafka([("a", 0, 10), ("a", 1, 3), ("b", 0, 1)])
            .unwrap();
        store.commit_kafka([("a", 0, 12)]).unwrap();
        drop(store);
        let store = OffsetStore::open(&path).unwrap();
        let a = store.kafka_offsets("a").unwrap();
        assert_eq!(a, HashMap::from([(0, 12), (1, 3)]));
        assert_eq!(store.all_kafka_offsets().unwrap().len(), 3);
    }
}
