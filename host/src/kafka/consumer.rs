//! The Kafka consume loop: every partition assigned (offsets in SQLite), or
//! a consumer group's share of them (offsets in Kafka, see
//! [`super::group`]). Records are settled by the partition's worker (see
//! [`super::workers`]); this loop fetches, applies the outcomes in order,
//! and commits.
//!
//! Offset rule: a partition's offset advances in the store only past records
//! that were handled, skipped, dead-lettered or moved to a retry topic, and
//! only after every record produced directly for them (by handlers in
//! direct mode, or as retry and dead-letter copies) has been acknowledged by
//! the broker. Their store writes and outbox records are stored in the same
//! transaction as the offset.
//!
//! Failures follow the record's [policy](crate::policy): a blocking retry
//! pauses the record's partition and tries again when due while the others
//! keep flowing; a non-blocking retry copies the record to
//! `{group}.{topic}.retry.{n}`, which this same loop consumes, waiting until
//! each copy is due; a record that is given up is dead-lettered, skipped, or
//! stops its partition right before it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::config::KafkaSettings;
use super::group::{self, GroupHooks, Membership};
use super::headers::{self, OriginalPosition};
use super::metadata::{self, TopicError};
use super::observe::ObservedContext;
use super::outbox::Relay;
use super::patterns;
use super::producer::{DeliveryError, KafkaSink};
use super::record::{OwnedRecord, View};
use super::settle::{ReadFrom, Step};
use super::topics::TopicNames;
use super::workers::{self, Executor, Outcome, SettleContext};
use crate::dispatch::{Counts, Dispatcher, lag_wait};
use crate::metrics::Metrics;
use crate::metrics::health::{CHECK_ASSIGNED, CHECK_COMMIT, HealthComponent};
use crate::metrics::registry::{Counter, Gauge};
use crate::offsets::{Commit, OffsetError, OffsetStore};
use crate::state::StateStore;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a poll waits while workers have records: their outcomes are
/// applied between polls.
const BUSY_POLL_TIMEOUT: Duration = Duration::from_millis(1);
/// How often, once a partition has stopped, the others are checked for
/// having caught up with their high watermark.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Repeated consumer errors (a broker that is down) are logged at most this
/// often, with a count of the ones in between.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often lag gauges and broker health are brought up to date (the
/// statistics they come from arrive about this often).
const OBSERVE_INTERVAL: Duration = Duration::from_secs(1);
/// Health check of this consumer beyond `assigned` and `commit` (see
/// [`crate::metrics::health`]).
const CHECK_BROKER: &str = "broker";

/// The consumer this loop drives.
type Kafka = BaseConsumer<ObservedContext>;

/// How to consume.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Topic names, and fnmatch patterns (see [`super::patterns`]).
    pub topics: Vec<String>,
    /// How often patterns are matched again against the broker's topics.
    pub pattern_refresh: Duration,
    /// This consumer's component of `/health`.
    pub health_component: String,
    /// Offsets in Kafka, partitions assigned by the group (see
    /// [`super::group`]), instead of offsets in SQLite and every partition.
    pub group: bool,
    /// Names of retry and dead-letter topics.
    pub names: TopicNames,
    /// Retry topics per topic, for non-blocking retries (0: none).
    pub retry_topics: u32,
    /// Stop after this long without a new record (logpipe's
    /// `consumer_timeout_ms`).
    pub idle_timeout: Option<Duration>,
    /// Hand a record to a handler only once its timestamp is this old
    /// (logpipe's `MIN_MESSAGE_LAG_MS`).
    pub min_lag: Duration,
    /// Commit at least this often while records flow...
    pub commit_interval: Duration,
    /// ...and after at most this many records.
    pub commit_max_records: usize,
    /// Stop handling new records while this many are handled but not yet
    /// stored (waiting for the broker to acknowledge what they produced).
    /// Bounds what a crash can make the next start handle again.
    pub max_uncommitted: usize,
    /// How long to wait for produced records to be acknowledged when
    /// stopping.
    pub shutdown_timeout: Duration,
    /// Threads handling records of different partitions in parallel (1:
    /// the loop's own thread; see [`super::workers`]).
    pub workers: usize,
}

/// Why consuming ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// No record for `idle_timeout`.
    Idle,
    /// SIGINT/SIGTERM.
    Shutdown,
    /// A record failed; these partitions (`topic[partition]`, or
    /// `stream/shard` for Kinesis) stopped before it, and every other one
    /// was consumed to its end.
    Failed { stopped: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct ConsumeSummary {
    pub counts: Counts,
    pub reason: StopReason,
    /// From the first record received to the last one settled: the time
    /// spent working, without start-up or the final idle wait.
    pub busy: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error("Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("offsets not committed: {0}")]
    Delivery(#[from] DeliveryError),
    #[error("cannot set up topics {topics:?}: {reason}")]
    TopicSetup { topics: Vec<String>, reason: String },
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

/// Sets up what a newly matched topic needs before it is consumed (its
/// retry and dead-letter topics).
pub type TopicSetup<'a> = &'a dyn Fn(&[String]) -> anyhow::Result<()>;

/// What an assigned topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopicKind {
    Main,
    /// Retry topic number `retry` of a main topic.
    Retry {
        retry: u32,
    },
}

struct AssignedTopic {
    name: String,
    /// The name again, shared with workers.
    shared_name: Arc<str>,
    kind: TopicKind,
    consumed: Arc<Counter>,
}

/// Progress of one assigned partition.
struct PartitionState {
    topic: usize,
    partition: i32,
    /// Next offset to read according to the store.
    committed: Option<i64>,
    /// Next offset to read once the records settled so far are committed.
    staged: Option<i64>,
    /// The `staged` value last handed to a delivery batch.
    sealed: Option<i64>,
    /// Next offset expected from the broker; anything below is a duplicate
    /// delivered before a seek.
    position: Option<i64>,
    flow: Flow,
    lag: Arc<Gauge>,
    /// The partition's name, for workers.
    from: ReadFrom,
    /// Raised each time the partition is read again from a held record
    /// (see [`super::workers`]).
    generation: u64,
    /// Records with a worker, outcome not yet applied.
    in_flight: usize,
    /// The worker of this partition's records (and of the retry copies
    /// of them): main partitions take turns over the workers.
    worker: usize,
}

enum Flow {
    Running,
    /// Given to another member of the group: ignored until assigned again.
    Revoked,
    /// Paused with one record waiting (see [`Held`]).
    Held(Box<Held>),
    /// Paused while a worker tries the held record again.
    Retrying,
    /// Paused for good: a record failed and its policy said stop.
    Stopped,
}

/// A record that keeps its partition paused until `due`.
struct Held {
    record: OwnedRecord,
    due: Instant,
}

/// Offsets handed to a delivery batch.
struct Sealed {
    batch: u64,
    offsets: Vec<(usize, i64)>,
    records: usize,
}

/// Logs consumer errors, at most one line per interval while they repeat.
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn report(&mut self, error: &KafkaError) {
        match self.last {
            Some(last) if last.elapsed() < ERROR_LOG_INTERVAL => self.suppressed += 1,
            _ => {
                // librdkafka reports broker trouble here and recovers on
                // its own; nothing is lost by logging and polling again.
                if self.suppressed > 0 {
                    tracing::warn!(
                        repeated = self.suppressed,
                        "Kafka consumer: {error} (still failing; retrying)"
                    );
                } else {
                    tracing::warn!("Kafka consumer: {error} (retrying)");
                }
                self.last = Some(Instant::now());
                self.suppressed = 0;
            }
        }
    }
}

struct Consumption<'a> {
    options: &'a ConsumeOptions,
    /// Set in a consumer group.
    group: Option<Arc<GroupHooks>>,
    /// Offsets ready for Kafka (group mode), committed after the checkpoint.
    to_commit: Vec<(String, i32, i64)>,
    setup: TopicSetup<'a>,
    last_pattern_match: Instant,
    /// Whether any `--topic` is a pattern (checked once: the poll loop
    /// asks on every turn).
    has_patterns: bool,
    bootstrap: &'a str,
    /// Settles records: here, or on worker threads.
    executor: Executor<'a>,
    metrics: Arc<Metrics>,
    sink: &'a KafkaSink,
    store: &'a mut OffsetStore,
    state: &'a StateStore,
    relay: Relay,
    topics: Vec<AssignedTopic>,
    topic_index: HashMap<String, usize>,
    partitions: Vec<PartitionState>,
    index: HashMap<(usize, i32), usize>,
    since_commit: usize,
    last_commit: Instant,
    /// When the store last committed a transaction.
    last_store_commit: Instant,
    /// Staged offsets waiting for their delivery batch to be acknowledged,
    /// oldest first.
    awaiting: VecDeque<Sealed>,
    /// Records settled in `awaiting`.
    awaiting_records: usize,
    first_record: Option<Instant>,
    last_settled: Option<Instant>,
    errors: ErrorLog,
    throttled_since: Option<Instant>,
    health: Arc<HealthComponent>,
    last_observed: Instant,
    /// When a consumer error made the broker check fail.
    broker_error: Option<Instant>,
}

/// Consume `options.topics` (and their retry topics) until idle, shut
/// down, or a failed record.
pub fn consume(
    settings: &KafkaSettings,
    options: &ConsumeOptions,
    dispatcher: &mut Dispatcher,
    sink: &Arc<KafkaSink>,
    store: &mut OffsetStore,
    shutdown: &AtomicBool,
    setup: TopicSetup<'_>,
) -> Result<ConsumeSummary, ConsumeError> {
    // Records with workers: a rebalance waits for them (see `group`).
    let in_flight = Arc::new(AtomicUsize::new(0));
    let group = options.group.then(|| {
        let producer = sink.clone();
        let timeout = options.shutdown_timeout;
        let in_flight = in_flight.clone();
        Arc::new(GroupHooks::new(Box::new(move || {
            workers::wait_settled(&in_flight, timeout) && producer.confirm(timeout).is_ok()
        })))
    });
    let context = match &group {
        Some(hooks) => ObservedContext::in_group(hooks.clone()),
        None => ObservedContext::default(),
    };
    let mut config = if options.group {
        settings.group_consumer_config(&options.names.group)
    } else {
        settings.consumer_config(&options.names.group)
    };
    let has_patterns = options.topics.iter().any(|t| patterns::is_pattern(t));
    if options.group && has_patterns {
        // librdkafka matches a regex subscription against the topics it
        // learns of at each metadata refresh (every 5 min by default): at
        // --pattern-refresh-ms, new topics are picked up as quickly as
        // without a group.
        let refresh = options.pattern_refresh.as_millis().to_string();
        if !settings
            .properties
            .iter()
            .chain(&settings.consumer_properties)
            .any(|(key, _)| key == "topic.metadata.refresh.interval.ms")
        {
            config.set("topic.metadata.refresh.interval.ms", refresh);
        }
    }
    let consumer: Kafka = config.create_with_context(context)?;
    let state = dispatcher.state().clone();
    let metrics = dispatcher.metrics().clone();
    let health = metrics.health.component(&options.health_component);
    health.fail(CHECK_ASSIGNED, "partitions not assigned yet");
    health.fail(CHECK_COMMIT, "no checkpoint yet");
    let context = SettleContext {
        sink: sink.clone(),
        names: options.names.clone(),
        retry_topics: options.retry_topics,
        group: group.clone(),
    };
    let executor = Executor::start(dispatcher, options.workers, context, in_flight)
        .map_err(ConsumeError::Workers)?;
    let mut run = Consumption {
        options,
        group,
        to_commit: Vec::new(),
        setup,
        last_pattern_match: Instant::now(),
        has_patterns,
        bootstrap: &settings.bootstrap_servers,
        executor,
        metrics,
        sink,
        store,
        state: &state,
        relay: Relay::default(),
        topics: Vec::new(),
        topic_index: HashMap::new(),
        partitions: Vec::new(),
        index: HashMap::new(),
        since_commit: 0,
        last_commit: Instant::now(),
        last_store_commit: Instant::now(),
        awaiting: VecDeque::new(),
        awaiting_records: 0,
        first_record: None,
        last_settled: None,
        errors: ErrorLog {
            last: None,
            suppressed: 0,
        },
        throttled_since: None,
        health,
        last_observed: Instant::now(),
        broker_error: None,
    };
    let result = run.consume(&consumer, shutdown);
    run.executor.finish();
    run.health.fail(CHECK_ASSIGNED, "consumer stopped");
    let mut reason = result?;
    // Stopping for another reason does not make a failed record go away.
    if run
        .partitions
        .iter()
        .any(|p| matches!(p.flow, Flow::Stopped))
    {
        reason = run.failed();
    }
    let busy = match (run.first_record, run.last_settled) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    };
    Ok(ConsumeSummary {
        counts: run.executor.dispatcher().counts(),
        reason,
        busy,
    })
}

/// The topics a run reads: each topic, then its retry topics.
pub fn assigned_topic_names(options: &ConsumeOptions) -> Vec<String> {
    let mut names = Vec::new();
    for topic in &options.topics {
        names.push(topic.clone());
        for retry in 1..=options.retry_topics {
            names.push(options.names.retry(topic, retry));
        }
    }
    names
}

impl Consumption<'_> {
    fn consume(
        &mut self,
        consumer: &Kafka,
        shutdown: &AtomicBool,
    ) -> Result<StopReason, ConsumeError> {
        self.publish_unsent()?;
        if self.group.is_some() {
            self.subscribe(consumer)?;
        } else {
            self.assign(consumer)?;
            self.health.ok(CHECK_ASSIGNED);
        }
        // On an error nothing more is committed: after a failed delivery the
        // staged offsets cover records whose output may be lost, and
        // replaying them is the at-least-once answer.
        let reason = self.poll_until_stopped(consumer, shutdown)?;
        self.drain_workers(consumer)?;
        self.sink.confirm(self.options.shutdown_timeout)?;
        self.checkpoint()?;
        self.commit_to_kafka(consumer, CommitMode::Sync)?;
        self.finish_relay()?;
        Ok(reason)
    }

    /// Publish outbox rows a previous run stored but did not get
    /// acknowledged, before anything new: they come first in every topic.
    fn publish_unsent(&mut self) -> Result<(), ConsumeError> {
        let unsent = self.store.unsent_outbox()?;
        if unsent.is_empty() {
            return Ok(());
        }
        tracing::info!(
            records = unsent.len(),
            "publishing outbox records left by the previous run"
        );
        self.relay.publish(self.sink, unsent)?;
        self.finish_relay()
    }

    /// Wait for every published outbox row and delete them.
    fn finish_relay(&mut self) -> Result<(), ConsumeError> {
        if self.relay.in_flight_rows() == 0 {
            return Ok(());
        }
        self.sink.confirm(self.options.shutdown_timeout)?;
        self.relay.poll(self.sink)?;
        if let Some(id) = self.relay.take_acknowledged() {
            self.store.mark_sent_through(id)?;
        }
        Ok(())
    }

    /// Assign every partition of every topic (named, or matching a pattern)
    /// and retry topic, starting at the stored offset or, when none is
    /// stored, at the beginning.
    fn assign(&mut self, consumer: &Kafka) -> Result<(), ConsumeError> {
        let mut mains: Vec<String> = Vec::new();
        for topic in &self.options.topics {
            if !patterns::is_pattern(topic) && !mains.contains(topic) {
                mains.push(topic.clone());
            }
        }
        if self.has_patterns {
            let matched = patterns::matching_topics(
                consumer.client(),
                &self.options.topics,
                &self.options.names,
                METADATA_TIMEOUT,
            )?;
            let new: Vec<String> = matched.into_iter().filter(|t| !mains.contains(t)).collect();
            tracing::info!(topics = ?new, patterns = ?self.pattern_list(), "topics matching the patterns");
            self.set_up(&new)?;
            mains.extend(new);
        }
        let assignment = self.add_topics(consumer, &mains)?;
        consumer.assign(&assignment)?;
        self.last_pattern_match = Instant::now();
        Ok(())
    }

    /// Join the group (`--offset-store kafka`): subscribe to the topics,
    /// their retry topics and the patterns; the broker assigns partitions
    /// ([`Consumption::follow_membership`]).
    fn subscribe(&mut self, consumer: &Kafka) -> Result<(), ConsumeError> {
        let mut subscription = Vec::new();
        for topic in &self.options.topics {
            if patterns::is_pattern(topic) {
                subscription.push(group::subscription_regex(topic));
                continue;
            }
            self.track_topic(topic, TopicKind::Main);
            subscription.push(topic.clone());
            for retry in 1..=self.options.retry_topics {
                let name = self.options.names.retry(topic, retry);
                self.track_topic(&name, TopicKind::Retry { retry });
                subscription.push(name);
            }
        }
        let names: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        tracing::info!(
            group = %self.options.names.group,
            subscription = ?subscription,
            "joined the consumer group; waiting for partitions"
        );
        Ok(())
    }

    /// The index of `name` in `topics`, tracking it first if new.
    fn track_topic(&mut self, name: &str, kind: TopicKind) -> usize {
        if let Some(&index) = self.topic_index.get(name) {
            return index;
        }
        let consumed = self.metrics.consumed_topic.get(&[name]);
        self.topics.push(AssignedTopic {
            name: name.to_owned(),
            shared_name: name.into(),
            kind,
            consumed,
        });
        self.topic_index
            .insert(name.to_owned(), self.topics.len() - 1);
        self.topics.len() - 1
    }

    /// Apply the group's assignment changes (between two records).
    fn follow_membership(&mut self, consumer: &Kafka) -> Result<(), ConsumeError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        for event in group.take_events() {
            match event {
                Membership::Revoked(list) => {
                    for (topic, partition) in list {
                        self.release_partition(&topic, partition);
                    }
                }
                Membership::Assigned(list) => {
                    for (topic, partition) in list {
                        self.take_partition(consumer, &topic, partition)?;
                    }
                    self.health.ok(CHECK_ASSIGNED);
                }
            }
        }
        Ok(())
    }

    /// Forget a partition given to another member: its held record, its
    /// uncommitted offsets (the rebalance hook committed what was handled).
    fn release_partition(&mut self, topic: &str, partition: i32) {
        let Some(&topic_index) = self.topic_index.get(topic) else {
            return;
        };
        let Some(&slot) = self.index.get(&(topic_index, partition)) else {
            return;
        };
        let state = &mut self.partitions[slot];
        state.flow = Flow::Revoked;
        state.generation += 1;
        state.committed = None;
        state.staged = None;
        state.sealed = None;
        state.position = None;
        for sealed in &mut self.awaiting {
            sealed.offsets.retain(|(s, _)| *s != slot);
        }
        self.to_commit
            .retain(|(t, p, _)| !(t == topic && *p == partition));
    }

    /// Start a partition the group assigned: from its committed offset in
    /// Kafka (librdkafka's fetch start), so nothing is known about it here.
    fn take_partition(
        &mut self,
        consumer: &Kafka,
        topic: &str,
        partition: i32,
    ) -> Result<(), ConsumeError> {
        let topic_index = match self.topic_index.get(topic) {
            Some(&index) => index,
            None => {
                // A topic a pattern matched: its failure topics first.
                self.set_up(&[topic.to_owned()])?;
                self.track_topic(topic, TopicKind::Main)
            }
        };
        match self.index.get(&(topic_index, partition)) {
            Some(&slot) => {
                let state = &mut self.partitions[slot];
                state.flow = Flow::Running;
                state.generation += 1;
                state.committed = None;
                state.staged = None;
                state.sealed = None;
                state.position = None;
            }
            None => {
                let state = self.new_partition(topic_index, partition, None);
                self.index
                    .insert((topic_index, partition), self.partitions.len());
                self.partitions.push(state);
            }
        }
        // A partition paused for a held record when it was revoked must
        // not stay paused now that it is back.
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        consumer.resume(&list)?;
        Ok(())
    }

    /// Group mode: commit the offsets the last checkpoint made ready.
    /// Failures are logged and the offsets tried again with the next
    /// commit; a rebalance commits handled records itself.
    fn commit_to_kafka(&mut self, consumer: &Kafka, mode: CommitMode) -> Result<(), ConsumeError> {
        if self.to_commit.is_empty() {
            return Ok(());
        }
        let mut latest: HashMap<(String, i32), i64> = HashMap::new();
        for (topic, partition, next) in std::mem::take(&mut self.to_commit) {
            let entry = latest.entry((topic, partition)).or_insert(next);
            *entry = (*entry).max(next);
        }
        let mut list = TopicPartitionList::new();
        let mut offsets = Vec::new();
        for ((topic, partition), next) in latest {
            list.add_partition_offset(&topic, partition, Offset::Offset(next))?;
            offsets.push((topic, partition, next));
        }
        match consumer.commit(&list, mode) {
            Ok(()) => {
                if let Some(group) = &self.group {
                    group.committed(&offsets);
                }
            }
            Err(error) => {
                tracing::warn!("cannot commit offsets to Kafka ({error}); trying again");
                self.to_commit = offsets;
            }
        }
        Ok(())
    }

    fn pattern_list(&self) -> Vec<&str> {
        self.options
            .topics
            .iter()
            .filter(|t| patterns::is_pattern(t))
            .map(String::as_str)
            .collect()
    }

    fn set_up(&self, topics: &[String]) -> Result<(), ConsumeError> {
        if topics.is_empty() {
            return Ok(());
        }
        (self.setup)(topics).map_err(|e| ConsumeError::TopicSetup {
            topics: topics.to_vec(),
            reason: format!("{e:#}"),
        })
    }

    /// Every `--pattern-refresh-ms`, consume topics that started matching a
    /// pattern since the last look. A failed look is logged and tried again
    /// later: it must not stop the topics already consumed.
    fn match_new_topics(&mut self, consumer: &Kafka) -> Result<(), ConsumeError> {
        // In a group the broker assigns what the regex subscription
        // matches (see `subscribe`): never assign anything here.
        if self.group.is_some()
            || !self.has_patterns
            || self.last_pattern_match.elapsed() < self.options.pattern_refresh
        {
            return Ok(());
        }
        self.last_pattern_match = Instant::now();
        let matched = match patterns::matching_topics(
            consumer.client(),
            &self.options.topics,
            &self.options.names,
            METADATA_TIMEOUT,
        ) {
            Ok(matched) => matched,
            Err(error) => {
                tracing::warn!(
                    "cannot list topics to match {:?}: {error}",
                    self.pattern_list()
                );
                return Ok(());
            }
        };
        let new: Vec<String> = matched
            .into_iter()
            .filter(|t| !self.topic_index.contains_key(t))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        tracing::info!(topics = ?new, "new topics match the patterns: consuming them");
        self.set_up(&new)?;
        let assignment = self.add_topics(consumer, &new)?;
        consumer.incremental_assign(&assignment)?;
        Ok(())
    }

    /// A partition to track, starting at `committed` (`None`: wherever
    /// librdkafka starts it).
    fn new_partition(
        &self,
        topic_index: usize,
        partition: i32,
        committed: Option<i64>,
    ) -> PartitionState {
        let topic = &self.topics[topic_index];
        let mains = self
            .partitions
            .iter()
            .filter(|p| self.topics[p.topic].kind == TopicKind::Main)
            .count();
        PartitionState {
            topic: topic_index,
            partition,
            committed,
            staged: committed,
            sealed: committed,
            position: committed,
            flow: Flow::Running,
            lag: self.metrics.lag.get(&[&topic.name, &partition.to_string()]),
            from: ReadFrom {
                topic: topic.shared_name.clone(),
                partition,
            },
            generation: 0,
            in_flight: 0,
            worker: mains % self.executor.workers(),
        }
    }

    /// Track `mains` and their retry topics; their partitions, at their
    /// starting offsets, for the consumer's assignment.
    fn add_topics(
        &mut self,
        consumer: &Kafka,
        mains: &[String],
    ) -> Result<TopicPartitionList, ConsumeError> {
        let metrics = self.metrics.clone();
        let first_new = self.topics.len();
        for main in mains {
            self.topics.push(AssignedTopic {
                name: main.clone(),
                shared_name: main.as_str().into(),
                kind: TopicKind::Main,
                consumed: metrics.consumed_topic.get(&[main]),
            });
            for retry in 1..=self.options.retry_topics {
                let name = self.options.names.retry(main, retry);
                self.topics.push(AssignedTopic {
                    consumed: metrics.consumed_topic.get(&[&name]),
                    shared_name: name.as_str().into(),
                    name,
                    kind: TopicKind::Retry { retry },
                });
            }
        }
        let mut assignment = TopicPartitionList::new();
        for topic_index in first_new..self.topics.len() {
            let topic = &self.topics[topic_index];
            let name = topic.name.as_str();
            self.topic_index.insert(name.to_owned(), topic_index);
            let ids =
                metadata::partitions(consumer.client(), name, self.bootstrap, METADATA_TIMEOUT)?;
            let stored = self.store.kafka_offsets(name)?;
            for partition in ids {
                let committed = stored.get(&partition).copied();
                let offset = match committed {
                    Some(next) => {
                        tracing::info!(
                            topic = name,
                            partition,
                            offset = next,
                            "resuming from stored offset"
                        );
                        Offset::Offset(next)
                    }
                    None => {
                        if topic.kind == TopicKind::Main {
                            tracing::info!(
                                topic = name,
                                partition,
                                "no stored offset, starting at the beginning"
                            );
                        }
                        Offset::Beginning
                    }
                };
                assignment.add_partition_offset(name, partition, offset)?;
                let state = self.new_partition(topic_index, partition, committed);
                self.index
                    .insert((topic_index, partition), self.partitions.len());
                self.partitions.push(state);
            }
        }
        Ok(assignment)
    }

    fn poll_until_stopped(
        &mut self,
        consumer: &Kafka,
        shutdown: &AtomicBool,
    ) -> Result<StopReason, ConsumeError> {
        let mut last_record = Instant::now();
        let mut last_drain_check = Instant::now();
        loop {
            if shutdown.load(Ordering::SeqCst) {
                tracing::info!("shutdown requested: committing and stopping");
                return Ok(StopReason::Shutdown);
            }
            // Outcomes first: before a rebalance's revocations are applied,
            // the records the rebalance hook waited for must be staged.
            self.apply_outcomes(consumer, Duration::ZERO)?;
            // Between two records: a hot swap never splits a record.
            self.executor.apply_changes();
            self.follow_membership(consumer)?;
            self.match_new_topics(consumer)?;
            self.release_due(consumer)?;
            if self.throttled()? {
                // Busy waiting for the broker, not idle.
                last_record = Instant::now();
            } else if !self.executor.has_room() {
                // Workers have all they may: wait for one to finish one.
                self.apply_outcomes(consumer, POLL_TIMEOUT)?;
                last_record = Instant::now();
            } else {
                match consumer.poll(self.poll_timeout()) {
                    None => {}
                    Some(Err(error)) => {
                        self.errors.report(&error);
                        self.broker_trouble(&error);
                    }
                    Some(Ok(message)) => {
                        self.broker_fine();
                        last_record = Instant::now();
                        self.first_record.get_or_insert(last_record);
                        self.receive(consumer, &message)?;
                    }
                }
            }
            if self.since_commit >= self.options.commit_max_records
                || self.last_commit.elapsed() >= self.options.commit_interval
            {
                self.checkpoint()?;
                self.commit_to_kafka(consumer, CommitMode::Async)?;
            }
            if self.last_observed.elapsed() >= OBSERVE_INTERVAL {
                self.observe(consumer);
            }
            let stopped = self
                .partitions
                .iter()
                .filter(|p| matches!(p.flow, Flow::Stopped))
                .count();
            let owned = self
                .partitions
                .iter()
                .filter(|p| !matches!(p.flow, Flow::Revoked))
                .count();
            if stopped > 0 {
                if stopped == owned {
                    return Ok(self.failed());
                }
                if last_drain_check.elapsed() >= DRAIN_CHECK_INTERVAL {
                    last_drain_check = Instant::now();
                    if self.others_drained(consumer) {
                        return Ok(self.failed());
                    }
                }
            }
            let holding = self.executor.outstanding() > 0
                || self
                    .partitions
                    .iter()
                    .any(|p| matches!(p.flow, Flow::Held(_) | Flow::Retrying));
            if holding {
                // Idle time counts from when the last held record is let go
                // and the workers are done.
                last_record = Instant::now();
            }
            if let Some(idle) = self.options.idle_timeout
                && !holding
                && last_record.elapsed() >= idle
            {
                tracing::info!(
                    idle_ms = idle.as_millis() as u64,
                    "no new records: stopping"
                );
                return Ok(StopReason::Idle);
            }
        }
    }

    /// Backpressure: while `max_uncommitted` records wait for what they
    /// produced to be acknowledged, take no new ones (a crash can then only
    /// make that many be handled again). Says so, at most every 10 s, when
    /// the wait is long.
    fn throttled(&mut self) -> Result<bool, ConsumeError> {
        // (Group mode: offsets staged here reach Kafka with the loop's next
        // commit; the rebalance hook commits handled records anyway.)
        let max = self.options.max_uncommitted;
        // Outbox rows in flight count too: they bound the relay's memory.
        let waiting = |run: &Self| run.awaiting_records + run.relay.in_flight_rows();
        if self.since_commit + waiting(self) < max {
            self.throttled_since = None;
            return Ok(false);
        }
        self.checkpoint()?;
        if waiting(self) < max {
            self.throttled_since = None;
            return Ok(false);
        }
        let since = *self.throttled_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= ERROR_LOG_INTERVAL
            && self
                .errors
                .last
                .is_none_or(|last| last.elapsed() >= ERROR_LOG_INTERVAL)
        {
            tracing::warn!(
                waiting = waiting(self),
                seconds = since.elapsed().as_secs(),
                "waiting for the broker to acknowledge produced records before taking more"
            );
            self.errors.last = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
        Ok(true)
    }

    /// Poll no longer than until the next held record is due, nor, while
    /// workers have records, than until their outcomes should be applied.
    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        let longest = if self.executor.outstanding() > 0 {
            BUSY_POLL_TIMEOUT
        } else {
            POLL_TIMEOUT
        };
        self.partitions
            .iter()
            .filter_map(|p| match &p.flow {
                Flow::Held(held) => Some(held.due.saturating_duration_since(now)),
                _ => None,
            })
            .fold(longest, Duration::min)
    }

    /// One message from the broker.
    fn receive(
        &mut self,
        consumer: &Kafka,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), ConsumeError> {
        let Some(&topic) = self.topic_index.get(message.topic()) else {
            return Ok(());
        };
        let Some(&slot) = self.index.get(&(topic, message.partition())) else {
            return Ok(());
        };
        let state = &self.partitions[slot];
        let stale = state.position.is_some_and(|next| message.offset() < next);
        if !matches!(state.flow, Flow::Running) || stale {
            // Fetched before a pause or delivered again after a seek.
            return Ok(());
        }
        // Counted once per offset: not the copies dropped just above.
        self.topics[topic].consumed.inc();
        let (original, retries, due) = match self.topics[topic].kind {
            TopicKind::Main => (
                OriginalPosition {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                },
                0,
                None,
            ),
            TopicKind::Retry { retry } => {
                let info = headers::read_retry(message.headers());
                let original = info.original.unwrap_or_else(|| {
                    tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        key = message.key().map(String::from_utf8_lossy).as_deref(),
                        "retry copy without its original position; using its own"
                    );
                    OriginalPosition {
                        topic: message.topic().to_owned(),
                        partition: message.partition(),
                        offset: message.offset(),
                    }
                });
                (original, retry, info.due)
            }
        };
        let view = View {
            offset: message.offset(),
            key: message.key(),
            value: message.payload().unwrap_or_default(),
            timestamp_ms: message.timestamp().to_millis(),
            original: &original,
            retries,
        };
        if let Some(due) = due
            && let Ok(wait) = due.duration_since(SystemTime::now())
        {
            // Not due yet: every later copy in this retry topic is due later
            // still, so hold the partition until then.
            self.hold(consumer, slot, view.to_owned(), Instant::now() + wait)?;
            return Ok(());
        }
        if let Some(wait) = lag_wait(self.options.min_lag, view.timestamp_ms) {
            // Later records of the partition are younger still.
            self.hold(consumer, slot, view.to_owned(), Instant::now() + wait)?;
            return Ok(());
        }
        // A retry copy goes to the worker of its original partition, whose
        // handler instances saw the earlier attempts.
        let worker = match self.topics[topic].kind {
            TopicKind::Main => self.partitions[slot].worker,
            TopicKind::Retry { .. } => self
                .topic_index
                .get(original.topic.as_str())
                .and_then(|t| self.index.get(&(*t, original.partition)))
                .map_or(self.partitions[slot].worker, |s| self.partitions[*s].worker),
        };
        self.submit(consumer, slot, worker, &view)
    }

    /// Hand a record to the executor: settled at once, or by the
    /// partition's worker (its outcome applied later, in order).
    fn submit(
        &mut self,
        consumer: &Kafka,
        slot: usize,
        worker: usize,
        view: &View<'_>,
    ) -> Result<(), ConsumeError> {
        let state = &mut self.partitions[slot];
        state.position = Some(view.offset + 1);
        state.in_flight += 1;
        if let Some(outcome) =
            self.executor
                .submit(worker, slot, state.generation, &state.from, view)
        {
            self.apply_outcome(consumer, outcome)?;
        }
        Ok(())
    }

    /// Apply the workers' outcomes that are ready, waiting up to `wait`
    /// for the first one.
    fn apply_outcomes(&mut self, consumer: &Kafka, wait: Duration) -> Result<(), ConsumeError> {
        let mut wait = wait;
        while let Some(outcome) = self.executor.next_outcome(wait) {
            self.apply_outcome(consumer, outcome)?;
            wait = Duration::ZERO;
        }
        Ok(())
    }

    /// Apply every outstanding outcome: nothing is left with a worker.
    fn drain_workers(&mut self, consumer: &Kafka) -> Result<(), ConsumeError> {
        while self.executor.outstanding() > 0 {
            self.apply_outcomes(consumer, POLL_TIMEOUT)?;
        }
        Ok(())
    }

    /// Settle held records that are due. A record held by the loop (not yet
    /// due, or too young) waits for its partition's earlier records to come
    /// back from its worker, so it cannot overtake one of them.
    fn release_due(&mut self, consumer: &Kafka) -> Result<(), ConsumeError> {
        let now = Instant::now();
        for slot in 0..self.partitions.len() {
            let state = &self.partitions[slot];
            let due = matches!(&state.flow, Flow::Held(h) if h.due <= now);
            if !due || state.in_flight > 0 {
                continue;
            }
            let Flow::Held(held) =
                std::mem::replace(&mut self.partitions[slot].flow, Flow::Retrying)
            else {
                continue;
            };
            // A new generation: the worker may have dropped this
            // partition's records after the held one.
            self.partitions[slot].generation += 1;
            let worker = self.partitions[slot].worker;
            self.submit(consumer, slot, worker, &held.record.view())?;
        }
        Ok(())
    }

    /// Partition bookkeeping after a record was settled.
    fn apply_outcome(&mut self, consumer: &Kafka, outcome: Outcome) -> Result<(), ConsumeError> {
        let Outcome {
            slot,
            offset,
            step,
            held,
            effects_of,
        } = outcome;
        if let Some(worker) = effects_of {
            // Whatever becomes of the partition: the record was handled
            // (a revoked one's offset was committed by the rebalance hook).
            self.state.absorb(worker);
        }
        let state = &mut self.partitions[slot];
        state.in_flight = state.in_flight.saturating_sub(1);
        if matches!(state.flow, Flow::Revoked) {
            // The rebalance hook committed it (workers report handled
            // records to the group themselves); the new owner goes on.
            return Ok(());
        }
        let Some(step) = step else {
            // Dropped behind a held or stopped record; read again later.
            return Ok(());
        };
        let touches_consumer = match step {
            Step::Done => matches!(state.flow, Flow::Retrying),
            Step::Hold { .. } | Step::Stop => true,
        };
        if touches_consumer && self.being_revoked(slot) {
            // Revoked by a rebalance whose event is not applied yet: it can
            // no longer be paused or sought, and the hook committed what
            // was handled. (A plain staged offset is dropped with it.)
            return Ok(());
        }
        self.last_settled = Some(Instant::now());
        match step {
            Step::Done => {
                let next = offset + 1;
                self.stage(slot, next);
                let state = &mut self.partitions[slot];
                if matches!(state.flow, Flow::Retrying) {
                    // The held record is done: read on after it.
                    state.flow = Flow::Running;
                    state.position = Some(next);
                    self.resume(consumer, slot, next)?;
                }
            }
            Step::Hold { due, .. } => {
                if let Some(record) = held {
                    self.hold(consumer, slot, record, due)?;
                }
            }
            Step::Stop => {
                let state = &mut self.partitions[slot];
                state.flow = Flow::Stopped;
                state.position = Some(offset);
                self.pause(consumer, slot)?;
            }
        }
        Ok(())
    }

    /// Whether a rebalance revoked the partition in `slot` and the loop has
    /// not taken that event yet.
    fn being_revoked(&self, slot: usize) -> bool {
        let state = &self.partitions[slot];
        self.group
            .as_ref()
            .is_some_and(|group| group.revoking(&self.topics[state.topic].name, state.partition))
    }

    fn stage(&mut self, slot: usize, next: i64) {
        let state = &mut self.partitions[slot];
        state.staged = Some(next);
        self.since_commit += 1;
    }

    fn hold(
        &mut self,
        consumer: &Kafka,
        slot: usize,
        record: OwnedRecord,
        due: Instant,
    ) -> Result<(), ConsumeError> {
        let state = &mut self.partitions[slot];
        state.position = Some(record.offset);
        state.flow = Flow::Held(Box::new(Held { record, due }));
        self.pause(consumer, slot)
    }

    fn pause(&self, consumer: &Kafka, slot: usize) -> Result<(), ConsumeError> {
        let state = &self.partitions[slot];
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topics[state.topic].name, state.partition);
        consumer.pause(&list)?;
        Ok(())
    }

    /// Resume a paused partition at `next`: what was fetched after the held
    /// record was dropped, so read it again from there.
    fn resume(&self, consumer: &Kafka, slot: usize, next: i64) -> Result<(), ConsumeError> {
        let state = &self.partitions[slot];
        let topic = &self.topics[state.topic].name;
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, state.partition);
        consumer.resume(&list)?;
        consumer.seek(
            topic,
            state.partition,
            Offset::Offset(next),
            METADATA_TIMEOUT,
        )?;
        Ok(())
    }

    fn failed(&self) -> StopReason {
        StopReason::Failed {
            stopped: self
                .partitions
                .iter()
                .filter(|p| matches!(p.flow, Flow::Stopped))
                .map(|p| format!("{}[{}]", self.topics[p.topic].name, p.partition))
                .collect(),
        }
    }

    /// Whether every partition still running has reached its high
    /// watermark (a held record means not yet; a broker error means "ask
    /// again later").
    fn others_drained(&self, consumer: &Kafka) -> bool {
        for state in &self.partitions {
            match state.flow {
                Flow::Stopped | Flow::Revoked => continue,
                Flow::Held(_) | Flow::Retrying => return false,
                Flow::Running => {}
            }
            let topic = &self.topics[state.topic].name;
            match consumer.fetch_watermarks(topic, state.partition, METADATA_TIMEOUT) {
                Ok((low, high)) if state.position.unwrap_or(low) < high => return false,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("watermarks of {topic}[{}]: {e}", state.partition);
                    return false;
                }
            }
        }
        true
    }

    /// [`Consumption::store_checkpoint`], counted and reported to `/health`.
    /// Workers go on meanwhile: the effects of records they handled wait
    /// for their outcomes (see [`StateStore::defer_record`]).
    fn checkpoint(&mut self) -> Result<(), ConsumeError> {
        let outcome = self.store_checkpoint();
        self.metrics.checkpoint_done(&self.health, &outcome);
        outcome.map(|_| ())
    }

    /// Bring the lag gauges up to date from the latest statistics, and
    /// decide whether the broker is reachable: a consumer error marked it
    /// down; statistics taken after that error with a connection up mark it
    /// reachable again, as do records arriving.
    fn observe(&mut self, consumer: &Kafka) {
        self.last_observed = Instant::now();
        let Some(observed) = consumer.context().latest() else {
            return;
        };
        for state in &self.partitions {
            let topic = &self.topics[state.topic].name;
            if let Some(&(low, high)) = observed.watermarks.get(&(topic.clone(), state.partition)) {
                let next = state.position.unwrap_or(low);
                state.lag.set((high - next).max(0) as f64);
            }
        }
        if observed.brokers_up == 0 && observed.brokers > 0 {
            self.health.fail(
                CHECK_BROKER,
                "broker unreachable: no broker connection is up",
            );
            return;
        }
        let after_error = match (&self.broker_error, observed.at) {
            (Some(failed_at), Some(at)) => at > *failed_at,
            _ => true,
        };
        if after_error {
            self.broker_fine();
        }
    }

    /// A consumer error: "all brokers down" means the broker is not
    /// reachable (librdkafka keeps retrying on its own). One connection
    /// failing (an idle connection closed, one broker of several restarting)
    /// is left to the statistics, which count the connections still up.
    fn broker_trouble(&mut self, error: &KafkaError) {
        use rdkafka::error::RDKafkaErrorCode;
        let code = match error {
            KafkaError::MessageConsumption(code) | KafkaError::MessageConsumptionFatal(code) => {
                *code
            }
            _ => return,
        };
        if code == RDKafkaErrorCode::AllBrokersDown {
            self.health
                .fail(CHECK_BROKER, format!("broker unreachable: {error}"));
            self.broker_error = Some(Instant::now());
        }
    }

    fn broker_fine(&mut self) {
        if self.broker_error.take().is_some() || self.health.failing(CHECK_BROKER) {
            self.health.ok(CHECK_BROKER);
        }
    }

    /// Seal the offsets and effects staged since the last checkpoint into a
    /// delivery batch, then store, in one transaction, the offsets and
    /// effects of every batch the broker has fully acknowledged, and
    /// forget outbox rows the broker acknowledged. New outbox rows are
    /// published once that transaction is committed.
    /// Returns whether a store transaction was committed.
    fn store_checkpoint(&mut self) -> Result<bool, ConsumeError> {
        let records = std::mem::take(&mut self.since_commit);
        self.last_commit = Instant::now();
        let mut sealed = Vec::new();
        for (slot, state) in self.partitions.iter_mut().enumerate() {
            if let Some(next) = state.staged
                && state.staged > state.sealed
            {
                state.sealed = Some(next);
                sealed.push((slot, next));
            }
        }
        let batch = self.sink.seal();
        let has_effects = self.state.seal(batch);
        if !sealed.is_empty() || has_effects {
            self.awaiting.push_back(Sealed {
                batch,
                offsets: sealed,
                records,
            });
            self.awaiting_records += records;
        }
        let mut ready: HashMap<usize, i64> = HashMap::new();
        let mut through = None;
        while let Some(front) = self.awaiting.front() {
            if !self.sink.is_acknowledged(front.batch)? {
                break;
            }
            if let Some(sealed) = self.awaiting.pop_front() {
                self.awaiting_records -= sealed.records;
                through = Some(sealed.batch);
                ready.extend(sealed.offsets);
            }
        }
        let effects = through
            .map(|batch| self.state.take_through(batch))
            .unwrap_or_default();
        // Deleting acknowledged outbox rows rides along with the next
        // commit rather than costing a transaction (and an fsync) per
        // acknowledgement; alone, it waits for the commit interval. Rows not
        // yet deleted at a crash are published again (same id).
        self.relay.poll(self.sink)?;
        let delete_alone = self.relay.has_acknowledged()
            && self.last_store_commit.elapsed() >= self.options.commit_interval;
        if ready.is_empty() && effects.is_empty() && !delete_alone {
            return Ok(false);
        }
        let sent_through = self.relay.take_acknowledged();
        self.last_store_commit = Instant::now();
        let topics = &self.topics;
        let partitions = &self.partitions;
        let mut offsets: Vec<(String, i32, i64)> = ready
            .iter()
            // A partition given away since: its new owner has its offset.
            .filter(|(slot, _)| !matches!(partitions[**slot].flow, Flow::Revoked))
            .map(|(&slot, &next)| {
                let p = &partitions[slot];
                (topics[p.topic].name.clone(), p.partition, next)
            })
            .collect();
        if self.group.is_some() {
            // The group keeps the offsets; SQLite keeps the store writes.
            self.to_commit.append(&mut offsets);
        }
        let published = self.store.commit(Commit {
            offsets,
            effects,
            sent_through,
            ..Commit::default()
        })?;
        self.state.committed();
        for (slot, next) in ready {
            self.partitions[slot].committed = Some(next);
        }
        self.relay.publish(self.sink, published)?;
        Ok(true)
    }
}
