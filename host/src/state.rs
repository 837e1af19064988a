//! The handlers' key-value store, and the effects of records whose offsets
//! are not stored yet.
//!
//! A record's effects (store writes and, in outbox mode, the records it
//! produced) are staged in layers until the transaction that stores its
//! offset also stores them:
//!
//! 1. the record being handled, one per thread (workers handle records of
//!    different partitions at once): discarded if it is not handled, so a
//!    failed record leaves nothing behind (a savepoint per record);
//! 2. records a pool worker handled whose offsets the consume loop has not
//!    staged yet ("pending", per worker thread, oldest first): the loop
//!    moves each to the open layer as it stages the record's offset, so a
//!    checkpoint never stores effects without their offset or the reverse;
//! 3. records settled since the last checkpoint ("open");
//! 4. sealed checkpoints waiting for the broker to acknowledge what they
//!    produced directly (dead-letter and retry copies, direct-mode output);
//! 5. the writes of the transaction being committed, until it is: workers
//!    go on reading while the loop commits.
//!
//! Reads look through the layers, newest first, then the database, so a
//! handler sees its own writes at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, ThreadId};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// A handler's namespace: its component name, or the one its manifest
/// declares.
pub type Namespace = Arc<str>;

/// A key write: `Some` puts a value, `None` deletes the key.
pub type Write = Option<Vec<u8>>;

/// A record produced in outbox mode, waiting to be stored with its
/// triggering record's offset and then published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// Stable across re-handling: `{source}/{partition}/{offset}/{n}`.
    pub id: String,
}

/// Store writes and outbox records, to be committed together.
#[derive(Debug, Default)]
pub struct Effects {
    pub writes: BTreeMap<(Namespace, String), Write>,
    pub outbox: Vec<OutboxRecord>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.outbox.is_empty()
    }

    /// Add the effects of later records on top of these.
    fn absorb(&mut self, later: Effects) {
        self.writes.extend(later.writes);
        self.outbox.extend(later.outbox);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("handler store {}: {source}", path.display())]
pub struct StateError {
    path: PathBuf,
    source: rusqlite::Error,
}

/// The store every handler instance of one host shares.
pub struct StateStore {
    layers: Mutex<Layers>,
    path: PathBuf,
}

struct Layers {
    /// The record each thread is handling.
    records: HashMap<ThreadId, Effects>,
    /// Handled by a worker thread, waiting for the loop, oldest first.
    pending: HashMap<ThreadId, VecDeque<Effects>>,
    open: Effects,
    /// Sealed effects by the number of their checkpoint, oldest first.
    sealed: VecDeque<(u64, Effects)>,
    /// The writes taken for the transaction being committed: still read
    /// until [`StateStore::committed`].
    committing: Effects,
    /// Reads committed values; `None` for a store without a database.
    reader: Option<Connection>,
}

/// Pages of `scan` are capped at this many pairs.
pub const MAX_SCAN_LIMIT: u32 = 10_000;

impl StateStore {
    /// A store reading from the offsets database at `path` (whose tables
    /// [`crate::offsets::OffsetStore::open`] creates; open that first).
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let error = |source| StateError {
            path: path.to_path_buf(),
            source,
        };
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(error)?;
        reader.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        Ok(Self::with_reader(Some(reader), path.to_path_buf()))
    }

    /// A store without a database: writes live until they are taken for a
    /// commit and are then gone. For benchmarks and in-process checks.
    pub fn in_memory() -> Self {
        Self::with_reader(None, PathBuf::from(":memory:"))
    }

    fn with_reader(reader: Option<Connection>, path: PathBuf) -> Self {
        StateStore {
            layers: Mutex::new(Layers {
                records: HashMap::new(),
                pending: HashMap::new(),
                open: Effects::default(),
                sealed: VecDeque::new(),
                committing: Effects::default(),
                reader,
            }),
            path,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Layers> {
        // Every update of the layers is a single map operation: a panic
        // elsewhere cannot leave them half-changed.
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, source: rusqlite::Error) -> StateError {
        StateError {
            path: self.path.clone(),
            source,
        }
    }

    /// The current value of `key`: staged writes first, then the database.
    pub fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let layers = self.lock();
        let wanted = (namespace.clone(), key.to_owned());
        if let Some(write) = layers
            .staged(thread::current().id())
            .find_map(|effects| effects.writes.get(&wanted))
        {
            return Ok(write.clone());
        }
        let Some(reader) = &layers.reader else {
            return Ok(None);
        };
        let mut stmt = reader
            .prepare_cached(
                r#"SELECT "value" FROM handler_state WHERE "namespace" = ?1 AND "key" = ?2"#,
            )
            .map_err(|e| self.error(e))?;
        stmt.query_row(params![&**namespace, key], |row| row.get(0))
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Stage a put (`Some`) or delete (`None`) for the record being handled.
    pub fn write(&self, namespace: &Namespace, key: String, value: Write) {
        self.lock()
            .records
            .entry(thread::current().id())
            .or_default()
            .writes
            .insert((namespace.clone(), key), value);
    }

    /// Up to `limit` live pairs of `namespace` whose key starts with
    /// `prefix` and sorts after `after`, in key order.
    pub fn scan(
        &self,
        namespace: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let limit = limit.min(MAX_SCAN_LIMIT) as usize;
        let in_range = |key: &str| key.starts_with(prefix) && after.is_none_or(|a| key > a);
        let layers = self.lock();
        // Staged writes in range, the newest write of each key winning.
        let mut staged: BTreeMap<String, &Write> = BTreeMap::new();
        for effects in layers.staged_oldest_first(thread::current().id()) {
            for ((ns, key), write) in &effects.writes {
                if ns == namespace && in_range(key) {
                    staged.insert(key.clone(), write);
                }
            }
        }
        let mut merged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(reader) = &layers.reader {
            // Staged deletes can hide at most `staged.len()` stored rows.
            let fetch = i64::try_from(limit + staged.len()).unwrap_or(i64::MAX);
            let start = after.filter(|a| *a >= prefix).unwrap_or(prefix);
            let mut stmt = reader
                .prepare_cached(
                    r#"SELECT "key", "value" FROM handler_state
                       WHERE "namespace" = ?1 AND "key" >= ?2 ORDER BY "key" LIMIT ?3"#,
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt
                .query(params![&**namespace, start, fetch + 1])
                .map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let key: String = row.get(0).map_err(|e| self.error(e))?;
                if !key.starts_with(prefix) {
                    break;
                }
                if in_range(&key) {
                    merged.insert(key, row.get(1).map_err(|e| self.error(e))?);
                }
            }
        }
        for (key, write) in staged {
            match write {
                Some(value) => merged.insert(key, value.clone()),
                None => merged.remove(&key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Stage a produced record for the outbox.
    pub fn push_outbox(&self, record: OutboxRecord) {
        self.lock()
            .records
            .entry(thread::current().id())
            .or_default()
            .outbox
            .push(record);
    }

    /// A record is about to be handled: nothing of it is staged yet.
    pub fn begin_record(&self) {
        self.lock().records.remove(&thread::current().id());
    }

    /// The record was handled: its effects go with the next checkpoint.
    pub fn keep_record(&self) {
        let mut layers = self.lock();
        if let Some(record) = layers.records.remove(&thread::current().id())
            && !record.is_empty()
        {
            layers.open.absorb(record);
        }
    }

    /// The record was handled by a pool worker: its effects wait, visible
    /// to reads, until the loop stages its offset ([`StateStore::absorb`]).
    /// Returns false when it has none (nothing for the loop to absorb).
    pub fn defer_record(&self) -> bool {
        let mut layers = self.lock();
        let thread = thread::current().id();
        match layers.records.remove(&thread) {
            Some(record) if !record.is_empty() => {
                layers.pending.entry(thread).or_default().push_back(record);
                true
            }
            _ => false,
        }
    }

    /// The loop staged the offset of the oldest record `worker` deferred:
    /// its effects go with the next checkpoint.
    pub fn absorb(&self, worker: ThreadId) {
        let mut layers = self.lock();
        let Some(record) = layers
            .pending
            .get_mut(&worker)
            .and_then(VecDeque::pop_front)
        else {
            return;
        };
        layers.open.absorb(record);
    }

    /// The record was not handled: forget what it wrote and produced.
    pub fn discard_record(&self) {
        self.lock().records.remove(&thread::current().id());
    }

    /// Seal the open effects as part of checkpoint `batch`. Returns whether
    /// there was anything to seal.
    pub fn seal(&self, batch: u64) -> bool {
        let mut layers = self.lock();
        let open = std::mem::take(&mut layers.open);
        if open.is_empty() {
            return false;
        }
        layers.sealed.push_back((batch, open));
        true
    }

    /// Take the effects of every checkpoint up to `batch`, merged, for the
    /// transaction that stores their offsets. Their writes are still read
    /// until the transaction is committed: call [`StateStore::committed`]
    /// then.
    pub fn take_through(&self, batch: u64) -> Effects {
        let mut layers = self.lock();
        let mut taken = Effects::default();
        while layers.sealed.front().is_some_and(|(b, _)| *b <= batch) {
            if let Some((_, effects)) = layers.sealed.pop_front() {
                taken.absorb(effects);
            }
        }
        layers.committing.writes = taken.writes.clone();
        taken
    }

    /// The transaction of the last [`StateStore::take_through`] is
    /// committed: reads find its writes in the database.
    pub fn committed(&self) {
        self.lock().committing = Effects::default();
    }
}

impl Layers {
    /// Staged effects as `thread` sees them, newest first: its own
    /// pending records before other threads' (which are of other
    /// partitions).
    fn staged(&self, thread: ThreadId) -> impl Iterator<Item = &Effects> {
        let own = self.pending.get(&thread);
        let others = self
            .pending
            .iter()
            .filter(move |(t, _)| **t != thread)
            .flat_map(|(_, queue)| queue.iter().rev());
        self.records
            .get(&thread)
            .into_iter()
            .chain(own.into_iter().flat_map(|queue| queue.iter().rev()))
            .chain(others)
            .chain(std::iter::once(&self.open))
            .chain(self.sealed.iter().rev().map(|(_, e)| e))
            .chain(std::iter::once(&self.committing))
    }

    fn staged_oldest_first(&self, thread: ThreadId) -> impl Iterator<Item = &Effects> {
        let own = self.pending.get(&thread);
        let others = self
            .pending
            .iter()
            .filter(move |(t, _)| **t != thread)
            .flat_map(|(_, queue)| queue.iter());
        std::iter::once(&self.committing)
            .chain(self.sealed.iter().map(|(_, e)| e))
            .chain(std::iter::once(&self.open))
            .chain(others)
            .chain(own.into_iter().flat_map(|queue| queue.iter()))
            .chain(self.records.get(&thread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::{Commit, OffsetStore};

    fn ns(name: &str) -> Namespace {
        name.into()
    }

    fn put(state: &StateStore, namespace: &str, key: &str, value: &str) {
        state.write(&ns(namespace), key.into(), Some(value.as_bytes().to_vec()));
    }

    /// A fresh offsets database and a store reading it (the folder lives as
    /// long as the first element).
    fn database() -> (tempfile::TempDir, OffsetStore, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.sqlite3");
        let offsets = OffsetStore::open(&path).unwrap();
        let state = StateStore::open(&path).unwrap();
        (dir, offsets, state)
    }

    fn keys(pairs: Vec<(String, Vec<u8>)>) -> Vec<String> {
        pairs.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn layers_read_your_writes_and_discard_failed_records() {
        let (_dir, mut offsets, state) = database();
        let a = ns("a");

        state.begin_record();
        put(&state, "a", "k1", "one");
        assert_eq!(state.get(&a, "k1").unwrap(), Some(b"one".to_vec()));
        state.keep_record();

        state.begin_record();
        put(&state, "a", "k1", "failed");
        put(&state, "a", "k2", "failed");
        state.discard_record();
        assert_eq!(state.get(&a, "k1").unwrap(), Some(b"one".to_vec()));
        assert_eq!(state.get(&a, "k2").unwrap(), None);
        assert_eq!(state.get(&ns("b"), "k1").unwrap(), None, "namespaces");

        assert!(state.seal(7));
        let effects = state.take_through(7);
        offsets
            .commit(Commit {
                offsets: vec![("t".into(), 0, 5)],
                effects,
                sent_through: None,
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(state.get(&a, "k1").unwrap(), Some(b"one".to_vec()));

        state.begin_record();
        state.write(&a, "k1".into(), None);
        assert_eq!(
            state.get(&a, "k1").unwrap(),
            None,
            "staged delete hides row"
        );
        state.keep_record();
        assert_eq!(state.get(&a, "k1").unwrap(), None);
    }

    #[test]
    fn deferred_records_are_visible_and_committed_only_once_absorbed() {
        let (_dir, _offsets, state) = database();
        let state = Arc::new(state);
        let a = ns("a");
        let worker = {
            let state = state.clone();
            std::thread::spawn(move || {
                for value in ["one", "two"] {
                    state.begin_record();
                    put(&state, "a", "k", value);
                    assert!(state.defer_record(), "a write to defer");
                }
                assert_eq!(state.get(&ns("a"), "k").unwrap(), Some(b"two".to_vec()));
                state.begin_record();
                assert!(!state.defer_record(), "nothing written, nothing deferred");
                std::thread::current().id()
            })
            .join()
            .unwrap()
        };
        // Other threads read a worker's deferred writes at once...
        assert_eq!(state.get(&a, "k").unwrap(), Some(b"two".to_vec()));
        // ...but a checkpoint takes them only as the loop absorbs them,
        // oldest first.
        assert!(!state.seal(1), "nothing absorbed yet");
        state.absorb(worker);
        assert!(state.seal(2));
        let first = state.take_through(2);
        assert_eq!(
            first.writes.get(&(a.clone(), "k".to_owned())),
            Some(&Some(b"one".to_vec()))
        );
        state.absorb(worker);
        assert!(state.seal(3));
        let second = state.take_through(3);
        assert_eq!(
            second.writes.get(&(a.clone(), "k".to_owned())),
            Some(&Some(b"two".to_vec()))
        );
        state.absorb(worker);
        assert!(!state.seal(4), "nothing left");
    }

    #[test]
    fn scan_merges_staged_writes_over_stored_rows() {
        let (_dir, mut offsets, state) = database();
        let a = ns("a");
        state.begin_record();
        for key in ["p/1", "p/2", "p/3", "q/1"] {
            put(&state, "a", key, key);
        }
        put(&state, "b", "p/9", "other namespace");
        state.keep_record();
        state.seal(1);
        offsets
            .commit(Commit {
                offsets: Vec::new(),
                effects: state.take_through(1),
                sent_through: None,
                ..Commit::default()
            })
            .unwrap();
        state.begin_record();
        state.write(&a, "p/2".into(), None);
        put(&state, "a", "p/25", "new");
        let all = state.scan(&a, "p/", None, 100).unwrap();
        assert_eq!(keys(all), ["p/1", "p/25", "p/3"]);
        let page = state.scan(&a, "p/", Some("p/1"), 2).unwrap();
        assert_eq!(keys(page), ["p/25", "p/3"]);
        let page = state.scan(&a, "p/", None, 1).unwrap();
        assert_eq!(page, vec![("p/1".to_owned(), b"p/1".to_vec())]);
        assert!(state.scan(&a, "z", None, 10).unwrap().is_empty());
    }
}
