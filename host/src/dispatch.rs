//! What happens to one record: decode, route, handle, and the verdict on
//! its offset. The rules mirror django-logpipe, except that a bad record
//! never crashes the consumer, and each class has a configurable action
//! (see [`crate::policy`]):
//!
//! | class           | log     | default action                           |
//! |-----------------|---------|------------------------------------------|
//! | handled         | DEBUG   | commit                                   |
//! | invalid         | ERROR   | skip (`--on-invalid`)                    |
//! | ignored type    | DEBUG   | skip                                     |
//! | unknown type    | ERROR   | skip (`--on-unknown-type`)               |
//! | unknown version | ERROR   | skip (`--on-unknown-version`)            |
//! | rejected        | WARNING | skip (`--on-reject`, manifest)           |
//! | failed          | ERROR   | retry policy, then stop (`--on-failure`) |
//!
//! "failed" is a `retry` answer or a trap (panic, deadline, memory limit,
//! produce limit).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, SystemTime};

use crate::component::bindings::{Envelope as WitEnvelope, Origin};
use crate::component::watcher::{Change, FolderWatcher};
use crate::component::{HandleOutcome, Registry, Route};
use tracing::Level;

use crate::envelope::{self, Envelope};
use crate::metrics::Metrics;
use crate::policy::{Action, ErrorClass, Policies, RetryPolicy};
use crate::state::StateStore;

/// One record as handed to dispatch. Partition and offset are text so the
/// same type serves Kafka (numbers) and Kinesis (shard ids, sequence
/// numbers). For a record read back from a retry topic, the position is the
/// one it was first consumed at: that is what handlers and logs see.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub source: Source,
    pub topic: &'a str,
    pub partition: &'a str,
    pub offset: &'a str,
    pub key: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
    pub value: &'a [u8],
    /// Which retry this attempt is: 0 for the first attempt, n for retry n.
    pub retries: u32,
}

/// Which kind of source a record comes from, for the names of its position
/// in log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Kafka,
    Kinesis,
}

/// logpipe's `MIN_MESSAGE_LAG_MS`: how long until a record written at
/// `timestamp_ms` is `min_lag` old, if it is not yet. Records without a
/// timestamp are never held.
pub fn lag_wait(min_lag: Duration, timestamp_ms: Option<i64>) -> Option<Duration> {
    if min_lag.is_zero() {
        return None;
    }
    let written = SystemTime::UNIX_EPOCH + Duration::from_millis(timestamp_ms?.max(0) as u64);
    let age = SystemTime::now()
        .duration_since(written)
        .unwrap_or_default();
    (age < min_lag).then(|| min_lag - age)
}

/// Why a record was not handled, for logs and dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `invalid-message`, `unknown-format`, `unknown-type`,
    /// `unknown-version`, or an [`ErrorClass`] name.
    pub class: &'static str,
    pub summary: String,
    pub detail: String,
}

/// The verdict on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done with it (handled or skipped): its offset may be committed.
    Commit,
    /// Copy it to the dead-letter topic, then commit.
    DeadLetter(Failure),
    /// Do not commit it; stop reading its partition.
    Stop(Failure),
    /// Try again: retry number `retry` (1 for the first) after `delay`,
    /// holding the partition (`blocking`) or through a retry topic.
    Retry {
        failure: Failure,
        retry: u32,
        delay: Duration,
        blocking: bool,
    },
}

/// Counts printed at exit. Every record ends in exactly one of handled,
/// rejected, invalid, ignored, unknown_type, unknown_version or failed;
/// retried and dead_lettered count events on the way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub handled: u64,
    pub rejected: u64,
    pub invalid: u64,
    pub ignored: u64,
    pub unknown_type: u64,
    pub unknown_version: u64,
    /// Failed for good: not retried, or retries exhausted.
    pub failed: u64,
    /// Retry attempts scheduled.
    pub retried: u64,
    /// Records copied to a dead-letter topic.
    pub dead_lettered: u64,
}

impl Counts {
    /// Add another worker's counts.
    pub fn add(&mut self, other: &Counts) {
        self.handled += other.handled;
        self.rejected += other.rejected;
        self.invalid += other.invalid;
        self.ignored += other.ignored;
        self.unknown_type += other.unknown_type;
        self.unknown_version += other.unknown_version;
        self.failed += other.failed;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
    }

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
            "records={} handled={} rejected={} invalid={} ignored={} unknown_type={} \
             unknown_version={} failed={} retried={} dead_lettered={}",
            self.total(),
            self.handled,
            self.rejected,
            self.invalid,
            self.ignored,
            self.unknown_type,
            self.unknown_version,
            self.failed,
            self.retried,
            self.dead_lettered
        )
    }
}

/// Routes records to handlers, applies the policies, keeps the counts.
pub struct Dispatcher {
    registry: Registry,
    ignored_types: HashSet<String>,
    policies: Policies,
    counts: Counts,
    hot_swap: Option<HotSwap>,
    /// Where a handled record's effects are kept, and a failed one's dropped.
    state: Arc<StateStore>,
    metrics: Arc<Metrics>,
    /// The envelope handed to guests, kept from one record to the next to
    /// reuse its buffers (see [`fill_call`]).
    call: WitEnvelope,
    /// A pool worker's: a handled record's effects wait for the loop to
    /// stage its offset (see [`StateStore::defer_record`]).
    defer_effects: bool,
    /// The last record handled had its effects deferred.
    deferred: bool,
}

/// Changes prepared by the folder watcher, applied between records.
struct HotSwap {
    changes: Receiver<Change>,
    _watcher: FolderWatcher,
}

/// A record-level log line: the record's position under its source's names
/// (`topic`, `partition`, `offset` for Kafka; `stream`, `shard`,
/// `sequence_number` for Kinesis) and its `key`, then the given fields and
/// message. Explicit fields rather than a span per record: a span costs on
/// every record, these only when a line is written (tracing evaluates field
/// values only for enabled events, so the key is not even decoded
/// otherwise).
macro_rules! record_event {
    ($level:expr, $record:expr; $($rest:tt)+) => {
        match $record.source {
            Source::Kafka => tracing::event!(
                $level,
                topic = $record.topic,
                partition = $record.partition,
                offset = $record.offset,
                key = $record.key.map(String::from_utf8_lossy).as_deref(),
                $($rest)+
            ),
            Source::Kinesis => tracing::event!(
                $level,
                stream = $record.topic,
                shard = $record.partition,
                sequence_number = $record.offset,
                key = $record.key.map(String::from_utf8_lossy).as_deref(),
                $($rest)+
            ),
        }
    };
}

/// What a class counter and an action make of a skipped-or-worse record.
fn act(action: Action, failure: Failure) -> Verdict {
    match action {
        Action::Skip => Verdict::Commit,
        Action::Dlt => Verdict::DeadLetter(failure),
        Action::Stop => Verdict::Stop(failure),
    }
}

fn action_words(action: Action) -> &'static str {
    match action {
        Action::Skip => "skipping record",
        Action::Dlt => "dead-lettering record",
        Action::Stop => "stopping this partition before the record",
    }
}

impl Dispatcher {
    pub fn new(
        registry: Registry,
        ignored_types: impl IntoIterator<Item = String>,
        policies: Policies,
    ) -> Self {
        let state = registry.runtime().services.state.clone();
        let metrics = registry.runtime().services.metrics.clone();
        Dispatcher {
            state,
            metrics,
            registry,
            ignored_types: ignored_types.into_iter().collect(),
            policies,
            counts: Counts::default(),
            hot_swap: None,
            call: empty_call(),
            defer_effects: false,
            deferred: false,
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

    /// Pending handler changes, for workers' dispatchers: `deliver` hands
    /// each to every worker (a [`Change::fork`] each, applied there with
    /// [`Dispatcher::apply_quietly`] between two of its records); this
    /// dispatcher, which handles no records, applies it for the log.
    pub fn fan_out_changes(&mut self, mut deliver: impl FnMut(&Change)) {
        let Some(hot_swap) = &self.hot_swap else {
            return;
        };
        let changes: Vec<Change> = hot_swap.changes.try_iter().collect();
        for change in changes {
            deliver(&change);
            self.registry.apply(change);
            self.registry.park();
        }
    }

    /// A change the logged registry also gets: applied without a log line.
    pub fn apply_quietly(&mut self, change: Change) {
        self.registry.apply_quietly(change);
    }

    /// A dispatcher for another worker: the same handlers (instances of
    /// its own), ignored types and policies, counts from zero, no watcher
    /// (changes reach workers through [`Dispatcher::fan_out_changes`]).
    pub fn fork(&self) -> Dispatcher {
        Dispatcher {
            registry: self.registry.fork(),
            ignored_types: self.ignored_types.clone(),
            policies: self.policies.clone(),
            counts: Counts::default(),
            hot_swap: None,
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            call: empty_call(),
            defer_effects: false,
            deferred: false,
        }
    }

    /// Defer handled records' effects to the loop (see
    /// [`StateStore::defer_record`]).
    pub fn deferring_effects(mut self) -> Self {
        self.defer_effects = true;
        self
    }

    /// Whether the last dispatch deferred a handled record's effects
    /// (which the loop must then [absorb](StateStore::absorb)); resets.
    pub fn take_deferred(&mut self) -> bool {
        std::mem::take(&mut self.deferred)
    }

    /// Drop the handlers' live instances: workers handle the records.
    pub fn park(&mut self) {
        self.registry.park();
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// For the consume loop, when carrying out a verdict changes it (a
    /// dead-letter topic that cannot be written to stops the partition).
    pub fn counts_mut(&mut self) -> &mut Counts {
        &mut self.counts
    }

    /// The handlers' store, whose staged effects the consume loop commits.
    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// What the current policies need beyond the consumed topics: how many
    /// retry topics per topic (the longest non-blocking policy), and whether
    /// anything may be dead-lettered.
    pub fn failure_needs(&self) -> (u32, bool) {
        let host = &self.policies;
        let handlers = self.registry.handlers();
        let retry_policies = std::iter::once(&host.retry)
            .chain(handlers.map(|h| &h.config.retry))
            .collect::<Vec<_>>();
        let retry_topics = retry_policies
            .iter()
            .filter(|p| !p.blocking)
            .map(|p| u32::try_from(p.max_retries.max(0)).unwrap_or(u32::MAX))
            .max()
            .unwrap_or(0);
        let dead_letter = [
            host.on_invalid,
            host.on_unknown_type,
            host.on_unknown_version,
            host.on_reject,
        ]
        .into_iter()
        .chain(self.registry.handlers().map(|h| h.config.on_reject))
        .chain(retry_policies.iter().map(|p| p.on_failure))
        .any(|action| action == Action::Dlt);
        (retry_topics, dead_letter)
    }

    /// Decide one record's fate, calling its handler if it has one.
    pub fn dispatch(&mut self, record: &Record<'_>) -> Verdict {
        let envelope = match envelope::decode(record.value) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.counts.invalid += 1;
                self.count_unrouted(error.class());
                let action = self.policies.on_invalid;
                record_event!(
                    Level::ERROR, record; class = error.class(),
                    "{}: {error}", action_words(action)
                );
                return self.finish(action, error.class(), error.to_string());
            }
        };
        let message_type = envelope.message_type.as_str();
        let version = &envelope.version;
        if self.ignored_types.contains(message_type) {
            self.counts.ignored += 1;
            self.metrics.ignored.inc();
            record_event!(Level::DEBUG, record; r#type = message_type, version = %version, "ignored type");
            return Verdict::Commit;
        }
        let handler = match self.registry.route(message_type, version.as_number()) {
            Route::Handler(handler) => handler,
            Route::UnknownType => {
                self.counts.unknown_type += 1;
                self.count_unrouted("unknown-type");
                let action = self.policies.on_unknown_type;
                let summary = format!("no handler for message type {message_type:?}");
                record_event!(
                    Level::ERROR, record; r#type = message_type, version = %version,
                    class = "unknown-type", "{}: {summary}", action_words(action)
                );
                return self.finish(action, "unknown-type", summary);
            }
            Route::UnknownVersion { known } => {
                self.counts.unknown_version += 1;
                self.count_unrouted("unknown-version");
                let action = self.policies.on_unknown_version;
                let summary = format!(
                    "no handler for {message_type:?} version {version} (handled versions: {known:?})"
                );
                record_event!(
                    Level::ERROR, record; r#type = message_type, version = %version,
                    class = "unknown-version", "{}: {summary}", action_words(action)
                );
                return self.finish(action, "unknown-version", summary);
            }
        };
        fill_call(&mut self.call, record, envelope, handler.version);
        self.state.begin_record();
        let outcome = handler.handle(&self.call);
        if outcome == HandleOutcome::Handled {
            if self.defer_effects {
                self.deferred = self.state.defer_record();
            } else {
                self.state.keep_record();
            }
            self.counts.handled += 1;
            let (message_type, version) = (self.call.message_type.as_str(), self.call.version);
            record_event!(Level::DEBUG, record; r#type = message_type, version, handler = &*handler.name, "handled");
            return Verdict::Commit;
        }
        // A record that is not handled leaves no writes and, in outbox
        // mode, no output behind; its policy decides what comes next.
        self.state.discard_record();
        // Owned copies, off the hot path: the policy calls below borrow the
        // whole dispatcher.
        let (name, retry_policy, on_reject) = (
            handler.name.clone(),
            handler.config.retry.clone(),
            handler.config.on_reject,
        );
        let message_type = self.call.message_type.clone();
        let (message_type, version, name) = (message_type.as_str(), self.call.version, &*name);
        let (class, reason) = match outcome {
            // Returned above.
            HandleOutcome::Handled => return Verdict::Commit,
            HandleOutcome::Rejected(reason) if !retry_policy.covers(ErrorClass::Reject) => {
                self.counts.rejected += 1;
                record_event!(
                    Level::WARN, record; r#type = message_type, version, handler = name,
                    class = ErrorClass::Reject.name(),
                    "handler rejected the record, {}: {reason}", action_words(on_reject)
                );
                return self.finish(on_reject, ErrorClass::Reject.name(), reason);
            }
            HandleOutcome::Rejected(reason) => (ErrorClass::Reject, reason),
            HandleOutcome::Retry(reason) => (
                ErrorClass::Retry,
                format!("handler asked to retry: {reason}"),
            ),
            HandleOutcome::Trapped { class, reason } => {
                (class, format!("handler failed: {reason}"))
            }
        };
        let verdict = self.on_failure(&retry_policy, record.retries, class, reason.clone());
        let class = class.name();
        match &verdict {
            Verdict::Retry {
                retry,
                delay,
                blocking,
                ..
            } => record_event!(
                Level::WARN, record; r#type = message_type, version, handler = name, class,
                "{reason}; retry {retry} in {delay:?} ({})",
                if *blocking { "blocking" } else { "through a retry topic" }
            ),
            Verdict::Commit => record_event!(
                Level::ERROR, record; r#type = message_type, version, handler = name, class,
                "{reason}; giving up, {}", action_words(Action::Skip)
            ),
            Verdict::DeadLetter(_) => record_event!(
                Level::ERROR, record; r#type = message_type, version, handler = name, class,
                "{reason}; {}", action_words(Action::Dlt)
            ),
            Verdict::Stop(_) => record_event!(
                Level::ERROR, record; r#type = message_type, version, handler = name, class,
                "{reason}; {}", action_words(Action::Stop)
            ),
        }
        verdict
    }

    fn count_unrouted(&self, class: &str) {
        if let Some(counter) = self.metrics.unrouted(class) {
            counter.inc();
        }
    }

    /// A failed call: retry it if the policy says so, else give up with
    /// the policy's action.
    fn on_failure(
        &mut self,
        policy: &RetryPolicy,
        retries: u32,
        class: ErrorClass,
        reason: String,
    ) -> Verdict {
        let next = retries.saturating_add(1);
        let summary = reason.lines().next().unwrap_or_default().to_owned();
        let failure = Failure {
            class: class.name(),
            summary,
            detail: reason,
        };
        if policy.covers(class) && policy.allows(next) {
            self.counts.retried += 1;
            return Verdict::Retry {
                failure,
                retry: next,
                delay: policy.delay_before(next),
                blocking: policy.blocking,
            };
        }
        self.counts.failed += 1;
        let verdict = act(policy.on_failure, failure);
        if matches!(verdict, Verdict::DeadLetter(_)) {
            self.counts.dead_lettered += 1;
        }
        verdict
    }

    /// The verdict of a record skipped for its class (already counted).
    fn finish(&mut self, action: Action, class: &'static str, summary: String) -> Verdict {
        let verdict = act(
            action,
            Failure {
                class,
                detail: summary.clone(),
                summary,
            },
        );
        if matches!(verdict, Verdict::DeadLetter(_)) {
            self.counts.dead_lettered += 1;
        }
        verdict
    }
}

/// Fill the envelope handed to the guest. Type, producer and body are the
/// decoder's own strings, moved in; the key and the position are copied
/// into the buffers of the previous record's envelope, so that a record
/// costs no allocation for them.
fn fill_call(call: &mut WitEnvelope, record: &Record<'_>, envelope: Envelope, version: u32) {
    call.message_type = envelope.message_type;
    call.version = version;
    call.producer = envelope.producer;
    call.body = envelope.body;
    match record.key {
        Some(key) => {
            let text = call.key.get_or_insert_with(String::new);
            text.clear();
            text.push_str(&String::from_utf8_lossy(key));
        }
        None => call.key = None,
    }
    let origin = &mut call.origin;
    for (buffer, text) in [
        (&mut origin.source, record.topic),
        (&mut origin.partition, record.partition),
        (&mut origin.offset, record.offset),
    ] {
        buffer.clear();
        buffer.push_str(text);
    }
    origin.timestamp_ms = record.timestamp_ms;
}

/// An empty envelope, for [`fill_call`] to fill.
fn empty_call() -> WitEnvelope {
    WitEnvelope {
        message_type: String::new(),
        version: 0,
        producer: None,
        key: None,
        body: String::new(),
        origin: Origin {
            source: String::new(),
            partition: String::new(),
            offset: String::new(),
            timestamp_ms: None,
        },
    }
}
