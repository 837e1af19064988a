//! The Kafka consume loop: manually assigned partitions, offsets in SQLite.
//!
//! Offset rule: a partition's offset advances in the store only past records
//! that were handled or skipped, and only after every record their handlers
//! produced has been acknowledged by the broker. A failed record (retry,
//! trap) stops its partition right before it; the rest keep flowing.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::config::KafkaSettings;
use super::metadata::{self, TopicError};
use super::producer::{DeliveryError, KafkaSink};
use crate::dispatch::{Counts, Dispatcher, Record, Verdict};
use crate::offsets::{OffsetError, OffsetStore};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often, once a partition has stopped, the others are checked for
/// having caught up with their high watermark.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How to consume.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub topics: Vec<String>,
    pub group_id: String,
    /// Stop after this long without a new record (logpipe's
    /// `consumer_timeout_ms`).
    pub idle_timeout: Option<Duration>,
    /// Commit at least this often while records flow...
    pub commit_interval: Duration,
    /// ...and after at most this many records.
    pub commit_max_records: usize,
    /// How long to wait for produced records to be acknowledged at a commit.
    pub delivery_timeout: Duration,
}

/// Why consuming ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// No record for `idle_timeout`.
    Idle,
    /// SIGINT/SIGTERM.
    Shutdown,
    /// A record failed; these partitions stopped before it, and every other
    /// partition was consumed to its end.
    Failed { stopped: Vec<(String, i32)> },
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
}

/// Progress of one assigned partition.
struct PartitionState {
    topic: usize,
    partition: i32,
    /// Next offset to read according to the store.
    committed: Option<i64>,
    /// Next offset to read once the records handled so far are committed.
    staged: Option<i64>,
    /// The `staged` value last handed to a delivery batch.
    sealed: Option<i64>,
    /// Next offset to read (past handled and skipped records).
    position: Option<i64>,
    stopped: bool,
}

struct Consumption<'a> {
    options: &'a ConsumeOptions,
    bootstrap: &'a str,
    consumer: BaseConsumer,
    dispatcher: &'a mut Dispatcher,
    sink: &'a KafkaSink,
    store: &'a mut OffsetStore,
    partitions: Vec<PartitionState>,
    index: HashMap<(usize, i32), usize>,
    since_commit: usize,
    last_commit: Instant,
    /// Staged offsets waiting for their delivery batch to be acknowledged,
    /// oldest first: (batch, [(partition slot, next offset)]).
    awaiting: VecDeque<(u64, Vec<(usize, i64)>)>,
    first_record: Option<Instant>,
    last_settled: Option<Instant>,
}

/// Consume `options.topics` until idle, shut down, or a failed record.
pub fn consume(
    settings: &KafkaSettings,
    options: &ConsumeOptions,
    dispatcher: &mut Dispatcher,
    sink: &KafkaSink,
    store: &mut OffsetStore,
    shutdown: &AtomicBool,
) -> Result<ConsumeSummary, ConsumeError> {
    let consumer: BaseConsumer = settings.consumer_config(&options.group_id).create()?;
    let mut run = Consumption {
        options,
        bootstrap: &settings.bootstrap_servers,
        consumer,
        dispatcher,
        sink,
        store,
        partitions: Vec::new(),
        index: HashMap::new(),
        since_commit: 0,
        last_commit: Instant::now(),
        awaiting: VecDeque::new(),
        first_record: None,
        last_settled: None,
    };
    run.assign()?;
    // On an error nothing more is committed: after a failed delivery the
    // staged offsets cover records whose output may be lost, and replaying
    // them is the at-least-once answer.
    let mut reason = run.poll_until_stopped(shutdown)?;
    run.sink.confirm(options.delivery_timeout)?;
    run.checkpoint()?;
    // Stopping for another reason does not make a failed record go away.
    if run.partitions.iter().any(|p| p.stopped) {
        reason = run.failed();
    }
    let busy = match (run.first_record, run.last_settled) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    };
    Ok(ConsumeSummary {
        counts: run.dispatcher.counts(),
        reason,
        busy,
    })
}

impl Consumption<'_> {
    /// Assign every partition of every topic, starting at the stored offset
    /// or, when none is stored, at the beginning.
    fn assign(&mut self) -> Result<(), ConsumeError> {
        let mut assignment = TopicPartitionList::new();
        for (topic_index, topic) in self.options.topics.iter().enumerate() {
            let ids = metadata::partitions(
                self.consumer.client(),
                topic,
                self.bootstrap,
                METADATA_TIMEOUT,
            )?;
            let stored = self.store.kafka_offsets(topic)?;
            for partition in ids {
                let committed = stored.get(&partition).copied();
                let offset = match committed {
                    Some(next) => {
                        tracing::info!(
                            topic,
                            partition,
                            offset = next,
                            "resuming from stored offset"
                        );
                        Offset::Offset(next)
                    }
                    None => {
                        tracing::info!(
                            topic,
                            partition,
                            "no stored offset, starting at the beginning"
                        );
                        Offset::Beginning
                    }
                };
                assignment.add_partition_offset(topic, partition, offset)?;
                self.index
                    .insert((topic_index, partition), self.partitions.len());
                self.partitions.push(PartitionState {
                    topic: topic_index,
                    partition,
                    committed,
                    staged: committed,
                    sealed: committed,
                    position: committed,
                    stopped: false,
                });
            }
        }
        self.consumer.assign(&assignment)?;
        Ok(())
    }

    fn poll_until_stopped(&mut self, shutdown: &AtomicBool) -> Result<StopReason, ConsumeError> {
        let mut last_record = Instant::now();
        let mut last_drain_check = Instant::now();
        let (mut partition_text, mut offset_text) = (String::new(), String::new());
        loop {
            if shutdown.load(Ordering::SeqCst) {
                tracing::info!("shutdown requested: committing and stopping");
                return Ok(StopReason::Shutdown);
            }
            // Between two records: a hot swap never splits a record.
            self.dispatcher.apply_changes();
            match self.consumer.poll(POLL_TIMEOUT) {
                None => {}
                Some(Err(error)) => {
                    // librdkafka reports broker trouble here and recovers on
                    // its own; nothing is lost by logging and polling again.
                    tracing::warn!("Kafka consumer: {error}");
                }
                Some(Ok(message)) => {
                    last_record = Instant::now();
                    self.first_record.get_or_insert(last_record);
                    let Some(&slot) = self
                        .options
                        .topics
                        .iter()
                        .position(|t| t == message.topic())
                        .and_then(|topic| self.index.get(&(topic, message.partition())))
                    else {
                        continue;
                    };
                    if self.partitions[slot].stopped {
                        // Already fetched before the partition was paused.
                        continue;
                    }
                    partition_text.clear();
                    offset_text.clear();
                    let _ = write!(partition_text, "{}", message.partition());
                    let _ = write!(offset_text, "{}", message.offset());
                    let record = Record {
                        topic: message.topic(),
                        partition: &partition_text,
                        offset: &offset_text,
                        key: message.key(),
                        timestamp_ms: message.timestamp().to_millis(),
                        value: message.payload().unwrap_or_default(),
                    };
                    let verdict = self.dispatcher.dispatch(&record);
                    let next = message.offset() + 1;
                    drop(message);
                    self.settle(slot, verdict, next)?;
                    self.last_settled = Some(Instant::now());
                }
            }
            if self.since_commit >= self.options.commit_max_records
                || self.last_commit.elapsed() >= self.options.commit_interval
            {
                self.checkpoint()?;
            }
            if self.partitions.iter().any(|p| p.stopped) {
                if self.partitions.iter().all(|p| p.stopped) {
                    return Ok(self.failed());
                }
                if last_drain_check.elapsed() >= DRAIN_CHECK_INTERVAL {
                    last_drain_check = Instant::now();
                    if self.others_drained()? {
                        return Ok(self.failed());
                    }
                }
            }
            if let Some(idle) = self.options.idle_timeout
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

    fn settle(&mut self, slot: usize, verdict: Verdict, next: i64) -> Result<(), ConsumeError> {
        let state = &mut self.partitions[slot];
        match verdict {
            Verdict::Commit => {
                state.staged = Some(next);
                state.position = Some(next);
                self.since_commit += 1;
            }
            Verdict::Stop => {
                state.stopped = true;
                let mut paused = TopicPartitionList::new();
                paused.add_partition(&self.options.topics[state.topic], state.partition);
                self.consumer.pause(&paused)?;
            }
        }
        Ok(())
    }

    fn failed(&self) -> StopReason {
        StopReason::Failed {
            stopped: self
                .partitions
                .iter()
                .filter(|p| p.stopped)
                .map(|p| (self.options.topics[p.topic].clone(), p.partition))
                .collect(),
        }
    }

    /// Whether every partition still running has reached its high watermark.
    fn others_drained(&self) -> Result<bool, ConsumeError> {
        for state in self.partitions.iter().filter(|p| !p.stopped) {
            let topic = &self.options.topics[state.topic];
            let (low, high) =
                self.consumer
                    .fetch_watermarks(topic, state.partition, METADATA_TIMEOUT)?;
            if state.position.unwrap_or(low) < high {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Seal the offsets staged since the last checkpoint into a delivery
    /// batch, then store, in one transaction, the offsets of every batch the
    /// broker has fully acknowledged.
    fn checkpoint(&mut self) -> Result<(), ConsumeError> {
        self.since_commit = 0;
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
        if !sealed.is_empty() {
            self.awaiting.push_back((self.sink.seal(), sealed));
        }
        let acknowledged = self.sink.acknowledged_below()?;
        let mut ready: HashMap<usize, i64> = HashMap::new();
        while let Some((batch, _)) = self.awaiting.front()
            && *batch < acknowledged
        {
            if let Some((_, offsets)) = self.awaiting.pop_front() {
                ready.extend(offsets);
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let topics = &self.options.topics;
        let partitions = &self.partitions;
        self.store.commit_kafka(ready.iter().map(|(&slot, &next)| {
            let p = &partitions[slot];
            (topics[p.topic].as_str(), p.partition, next)
        }))?;
        for (slot, next) in ready {
            self.partitions[slot].committed = Some(next);
        }
        Ok(())
    }
}
