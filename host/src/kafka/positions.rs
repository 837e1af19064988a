//! Partition positions from the broker, for `offsets list` and `offsets
//! reset`: watermarks (ListOffsets earliest/latest) and the first offset at
//! or after a time (ListOffsets with a timestamp).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaSettings;
use super::metadata::{self, TopicError};

/// How long one broker request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cannot create a Kafka client for {bootstrap}: {source}")]
    Client {
        bootstrap: String,
        source: Box<KafkaError>,
    },
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("topic {topic:?} has no partition {partition} (it has {partitions:?})")]
    NoPartition {
        topic: String,
        partition: i32,
        partitions: Vec<i32>,
    },
    #[error("cannot list offsets of {topic:?} partition {partition} from {bootstrap}: {source}")]
    ListOffsets {
        topic: String,
        partition: i32,
        bootstrap: String,
        source: Box<KafkaError>,
    },
}

/// A partition's oldest kept offset and the offset the next record gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub low: i64,
    pub high: i64,
}

/// A client that only asks the broker about offsets: it joins no group and
/// commits nothing.
pub struct OffsetLookup {
    consumer: BaseConsumer,
    bootstrap: String,
}

impl OffsetLookup {
    pub fn connect(settings: &KafkaSettings) -> Result<Self, LookupError> {
        let consumer = settings
            .consumer_config("logpipe-host-offsets-admin")
            .create()
            .map_err(|source| LookupError::Client {
                bootstrap: settings.bootstrap_servers.clone(),
                source: Box::new(source),
            })?;
        Ok(OffsetLookup {
            consumer,
            bootstrap: settings.bootstrap_servers.clone(),
        })
    }

    /// The partition ids of `topic`, sorted.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, LookupError> {
        Ok(metadata::partitions(
            self.consumer.client(),
            topic,
            &self.bootstrap,
            TIMEOUT,
        )?)
    }

    /// `partition` if `topic` has it, else an error listing those it has.
    pub fn check_partition(&self, topic: &str, partition: i32) -> Result<(), LookupError> {
        let partitions = self.partitions(topic)?;
        if partitions.contains(&partition) {
            return Ok(());
        }
        Err(LookupError::NoPartition {
            topic: topic.to_owned(),
            partition,
            partitions,
        })
    }

    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<Watermarks, LookupError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|source| self.list_error(topic, partition, source))?;
        Ok(Watermarks { low, high })
    }

    /// The offset of the first record of `partition` whose timestamp is at
    /// or after `ms`; `None` when there is none.
    ///
    /// Kafka answers "end" when no record is that recent; tansu 0.6 answers
    /// offset 0 instead, which would rewind the partition. So the record
    /// found is read back, and if it is older than `ms` the answer is taken
    /// for "none".
    pub fn offset_at(
        &self,
        topic: &str,
        partition: i32,
        ms: i64,
    ) -> Result<Option<i64>, LookupError> {
        let Some(offset) = self.broker_offset_at(topic, partition, ms)? else {
            return Ok(None);
        };
        match self.record_time(topic, partition, offset)? {
            Some(time) if time < ms => {
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    "the broker answered offset {offset} for time {ms}, but that record is                      older ({time}): taking it that no record is that recent"
                );
                Ok(None)
            }
            _ => Ok(Some(offset)),
        }
    }

    /// The timestamp of the record at `offset`, `None` if there is none
    /// there (or it has no timestamp).
    fn record_time(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<i64>, LookupError> {
        let Watermarks { low, high } = self.watermarks(topic, partition)?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .and_then(|()| self.consumer.assign(&assignment))
            .map_err(|source| self.list_error(topic, partition, source))?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut found = None;
        while std::time::Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) if message.offset() >= offset => {
                    found = message.timestamp().to_millis();
                    break;
                }
                Some(Err(source)) => {
                    return Err(self.list_error(topic, partition, source));
                }
                _ => {}
            }
        }
        self.consumer
            .unassign()
            .map_err(|source| self.list_error(topic, partition, source))?;
        Ok(found)
    }

    /// The broker's ListOffsets answer for time `ms`.
    fn broker_offset_at(
        &self,
        topic: &str,
        partition: i32,
        ms: i64,
    ) -> Result<Option<i64>, LookupError> {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(topic, partition, Offset::Offset(ms))
            .map_err(|source| self.list_error(topic, partition, source))?;
        let answer = self
            .consumer
            .offsets_for_times(query, TIMEOUT)
            .map_err(|source| self.list_error(topic, partition, source))?;
        let found = answer
            .find_partition(topic, partition)
            .map(|element| (element.offset(), element.error()));
        match found {
            Some((Offset::Offset(offset), Ok(()))) => Ok(Some(offset)),
            Some((_, Err(source))) => Err(self.list_error(topic, partition, source)),
            _ => Ok(None),
        }
    }

    fn list_error(&self, topic: &str, partition: i32, source: KafkaError) -> LookupError {
        LookupError::ListOffsets {
            topic: topic.to_owned(),
            partition,
            bootstrap: self.bootstrap.clone(),
            source: Box::new(source),
        }
    }
}
