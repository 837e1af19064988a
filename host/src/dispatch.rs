//! What happens to one record: decode, route, handle, and the verdict on
//! its offset. The rules mirror django-logpipe, except that a bad record
//! never crashes the consumer.
//!
//! | class           | log     | offset                                   |
//! |-----------------|---------|------------------------------------------|
//! | handled         | DEBUG   | commit                                   |
//! | invalid         | ERROR   | commit (skip)                            |
//! | ignored type    | DEBUG   | commit (skip)                            |
//! | unknown type    | ERROR   | commit (skip)                            |
//! | unknown version | ERROR   | commit (skip)                            |
//! | rejected        | WARNING | commit (skip)                            |
//! | failed          | ERROR   | hold: stop the partition before it       |
//!
//! "failed" is a `retry` answer or a trap (panic, deadline, memory limit).

use std::collections::HashSet;
use std::fmt;
use std::sync::mpsc::Receiver;

use crate::component::bindings::{Envelope as WitEnvelope, Origin};
use crate::component::watcher::{Change, FolderWatcher};
use crate::component::{HandleOutcome, Registry, Route};
use crate::envelope::{self, Envelope};

/// One record as read from a source. Partition and offset are text so the
/// same type serves Kafka (numbers) and Kinesis (shard ids, sequence
/// numbers).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: &'a str,
    pub offset: &'a str,
    pub key: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
    pub value: &'a [u8],
}

/// The verdict on one record's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done with it (handled or skipped): its offset may be committed.
    Commit,
    /// It failed: do not commit it, stop reading its partition.
    Stop,
}

/// Per-class counts, printed at exit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub handled: u64,
    pub rejected: u64,
    pub invalid: u64,
    pub ignored: u64,
    pub unknown_type: u64,
    pub unknown_version: u64,
    pub failed: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.handled
            + self.rejected
            + self.invalid
            + self.ignored
            + self.unknown_type
            + self.unknown_version
            + self.failed
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "records={} handled={} rejected={} invalid={} ignored={} unknown_type={} unknown_version={} failed={}",
            self.total(),
            self.handled,
            self.rejected,
            self.invalid,
            self.ignored,
            self.unknown_type,
            self.unknown_version,
            self.failed
        )
    }
}

/// Routes records to handlers and keeps the counts.
pub struct Dispatcher {
    registry: Registry,
    ignored_types: HashSet<String>,
    counts: Counts,
    hot_swap: Option<HotSwap>,
}

/// Changes prepared by the folder watcher, applied between records.
struct HotSwap {
    changes: Receiver<Change>,
    _watcher: FolderWatcher,
}

/// A record key for log lines: text when it is UTF-8, else lossy.
struct KeyDisplay<'a>(Option<&'a [u8]>);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("-"),
            Some(key) => write!(f, "{:?}", String::from_utf8_lossy(key)),
        }
    }
}

impl Dispatcher {
    pub fn new(registry: Registry, ignored_types: impl IntoIterator<Item = String>) -> Self {
        Dispatcher {
            registry,
            ignored_types: ignored_types.into_iter().collect(),
            counts: Counts::default(),
            hot_swap: None,
        }
    }

    /// Take changes of the handlers folder from `changes` (see
    /// [`Dispatcher::apply_changes`]); `watcher` lives as long as this.
    pub fn with_hot_swap(mut self, watcher: FolderWatcher, changes: Receiver<Change>) -> Self {
        self.hot_swap = Some(HotSwap {
            changes,
            _watcher: watcher,
        });
        self
    }

    /// Apply pending handler changes. Called between two records, so every
    /// record is handled entirely by one version of its handler.
    pub fn apply_changes(&mut self) {
        let Some(hot_swap) = &self.hot_swap else {
            return;
        };
        while let Ok(change) = hot_swap.changes.try_recv() {
            self.registry.apply(change);
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Decide one record's fate, calling its handler if it has one.
    pub fn dispatch(&mut self, record: &Record<'_>) -> Verdict {
        let key = KeyDisplay(record.key);
        let (topic, partition, offset) = (record.topic, record.partition, record.offset);
        let envelope = match envelope::decode(record.value) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.counts.invalid += 1;
                tracing::error!(
                    topic, partition, offset, %key, class = error.class(),
                    "skipping record: {error}"
                );
                return Verdict::Commit;
            }
        };
        let message_type = envelope.message_type.as_str();
        let version = &envelope.version;
        if self.ignored_types.contains(message_type) {
            self.counts.ignored += 1;
            tracing::debug!(topic, partition, offset, %key, message_type, %version, "ignored type");
            return Verdict::Commit;
        }
        let handler = match self.registry.route(message_type, version.as_number()) {
            Route::Handler(handler) => handler,
            Route::UnknownType => {
                self.counts.unknown_type += 1;
                tracing::error!(
                    topic, partition, offset, %key, message_type, %version,
                    "skipping record: no handler for message type {message_type:?}"
                );
                return Verdict::Commit;
            }
            Route::UnknownVersion { known } => {
                self.counts.unknown_version += 1;
                tracing::error!(
                    topic, partition, offset, %key, message_type, %version,
                    "skipping record: no handler for {message_type:?} version {version} \
                     (handled versions: {known:?})"
                );
                return Verdict::Commit;
            }
        };
        let call = guest_envelope(record, envelope, handler.version);
        let name = handler.name.clone();
        let (message_type, version) = (call.message_type.as_str(), call.version);
        let name = &*name;
        match handler.handle(&call) {
            HandleOutcome::Handled => {
                self.counts.handled += 1;
                tracing::debug!(topic, partition, offset, %key, message_type, %version, handler = name, "handled");
                Verdict::Commit
            }
            HandleOutcome::Rejected(reason) => {
                self.counts.rejected += 1;
                tracing::warn!(
                    topic, partition, offset, %key, message_type, %version, handler = name,
                    "handler rejected the record, skipping it: {reason}"
                );
                Verdict::Commit
            }
            HandleOutcome::Retry(reason) => {
                self.counts.failed += 1;
                tracing::error!(
                    topic, partition, offset, %key, message_type, %version, handler = name,
                    "handler asked to retry; stopping this partition before the record: {reason}"
                );
                Verdict::Stop
            }
            HandleOutcome::Trapped(reason) => {
                self.counts.failed += 1;
                tracing::error!(
                    topic, partition, offset, %key, message_type, %version, handler = name,
                    "handler failed; stopping this partition before the record: {reason}"
                );
                Verdict::Stop
            }
        }
    }
}

fn guest_envelope(record: &Record<'_>, envelope: Envelope, version: u32) -> WitEnvelope {
    WitEnvelope {
        message_type: envelope.message_type,
        version,
        producer: envelope.producer,
        key: record
            .key
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        body: envelope.body,
        origin: Origin {
            source: record.topic.to_owned(),
            partition: record.partition.to_owned(),
            offset: record.offset.to_owned(),
            timestamp_ms: record.timestamp_ms,
        },
    }
}
