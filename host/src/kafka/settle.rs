//! Settling one record: dispatch it, then carry out what the verdict asks
//! beyond its offset (a dead-letter or retry copy). The same code runs on
//! the consume loop's thread (one worker) or on each worker of the pool
//! ([`super::workers`]); the partition bookkeeping stays with the loop.

use std::borrow::BorrowMut;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::group::GroupHooks;
use super::headers;
use super::producer::KafkaSink;
use super::record::View;
use super::topics::TopicNames;
use crate::dispatch::{Dispatcher, Failure, Record, Source, Verdict};

/// What to do with a partition after settling one of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Done with the record: stage the next offset.
    Done,
    /// Keep the record and its partition paused until `due`.
    Hold { due: Instant, retries: u32 },
    /// Pause the partition for good.
    Stop,
}

/// Where a record was read: the topic it came from (a retry topic for a
/// retry copy) and its partition.
#[derive(Debug, Clone)]
pub struct ReadFrom {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// Dispatches records and writes their dead-letter and retry copies.
pub struct Settler<D> {
    dispatcher: D,
    sink: Arc<KafkaSink>,
    names: TopicNames,
    retry_topics: u32,
    /// In a consumer group: told of every handled record, for the commit
    /// before a rebalance.
    group: Option<Arc<GroupHooks>>,
    /// Partition and offset as text, reused from record to record.
    text: (String, String),
}

impl<D: BorrowMut<Dispatcher>> Settler<D> {
    pub fn new(
        dispatcher: D,
        sink: Arc<KafkaSink>,
        names: TopicNames,
        retry_topics: u32,
        group: Option<Arc<GroupHooks>>,
    ) -> Self {
        Settler {
            dispatcher,
            sink,
            names,
            retry_topics,
            group,
            text: (String::new(), String::new()),
        }
    }

    pub fn dispatcher(&mut self) -> &mut Dispatcher {
        self.dispatcher.borrow_mut()
    }

    /// Dispatch one record and carry out the verdict's side effects.
    pub fn settle(&mut self, view: &View<'_>, from: &ReadFrom) -> Step {
        let step = self.settle_record(view);
        if step == Step::Done
            && let Some(group) = &self.group
        {
            group.handled(&from.topic, from.partition, view.offset + 1);
        }
        step
    }

    fn settle_record(&mut self, view: &View<'_>) -> Step {
        let (partition_text, offset_text) = &mut self.text;
        partition_text.clear();
        offset_text.clear();
        let _ = write!(partition_text, "{}", view.original.partition);
        let _ = write!(offset_text, "{}", view.original.offset);
        let record = Record {
            source: Source::Kafka,
            topic: &view.original.topic,
            partition: partition_text,
            offset: offset_text,
            key: view.key,
            timestamp_ms: view.timestamp_ms,
            value: view.value,
            retries: view.retries,
        };
        match self.dispatcher.borrow_mut().dispatch(&record) {
            Verdict::Commit => Step::Done,
            Verdict::Stop(_) => Step::Stop,
            Verdict::DeadLetter(failure) => match self.dead_letter(view, &failure) {
                Ok(()) => Step::Done,
                Err(reason) => {
                    let counts = self.dispatcher.borrow_mut().counts_mut();
                    counts.dead_lettered = counts.dead_lettered.saturating_sub(1);
                    log_stop(view, &reason);
                    Step::Stop
                }
            },
            Verdict::Retry {
                failure,
                retry,
                delay,
                blocking,
            } => {
                if blocking {
                    return Step::Hold {
                        due: Instant::now() + delay,
                        retries: retry,
                    };
                }
                match self.retry_copy(view, &failure, retry, delay) {
                    Ok(()) => Step::Done,
                    Err(reason) => {
                        let counts = self.dispatcher.borrow_mut().counts_mut();
                        counts.retried = counts.retried.saturating_sub(1);
                        counts.failed += 1;
                        log_stop(view, &reason);
                        Step::Stop
                    }
                }
            }
        }
    }

    /// Copy the record, unchanged, to its dead-letter topic.
    fn dead_letter(&self, view: &View<'_>, failure: &Failure) -> Result<(), String> {
        let topic = self.names.dead_letter(&view.original.topic);
        let headers = headers::dead_letter(view.original, failure, view.retries);
        self.sink
            .check_topic(&topic)
            .map_err(|e| format!("cannot dead-letter: {e}"))?;
        self.sink
            .enqueue_with_headers(&topic, view.key, view.value, Some(headers))
            .map_err(|e| format!("cannot dead-letter to {topic:?}: {e}"))
    }

    /// Copy the record to the topic of retry number `retry`.
    fn retry_copy(
        &self,
        view: &View<'_>,
        failure: &Failure,
        retry: u32,
        delay: Duration,
    ) -> Result<(), String> {
        if retry > self.retry_topics {
            return Err(format!(
                "no retry topic for retry {retry}: retry topics were set up at start for {} \
                 retries (restart after raising max_retries)",
                self.retry_topics
            ));
        }
        let topic = self.names.retry(&view.original.topic, retry);
        let due = SystemTime::now() + delay;
        let headers = headers::retry(view.original, failure, retry - 1, due);
        self.sink
            .enqueue_with_headers(&topic, view.key, view.value, Some(headers))
            .map_err(|e| format!("cannot write retry copy to {topic:?}: {e}"))
    }
}

/// A record stops its partition: say which and why.
pub fn log_stop(view: &View<'_>, reason: &str) {
    tracing::error!(
        topic = %view.original.topic,
        partition = view.original.partition,
        offset = view.original.offset,
        key = view.key.map(String::from_utf8_lossy).as_deref(),
        "{reason}; stopping this partition before the record"
    );
}
