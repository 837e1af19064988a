//! Writing to Kinesis streams: handler output, the outbox relay, dead-letter
//! copies and the `produce` command.
//!
//! Order rule: records of one (stream, partition key) are never in flight
//! together. A single record goes out with `PutRecord`, carrying the key's
//! last sequence number as `SequenceNumberForOrdering`; a batch goes out
//! with `PutRecords` holding at most one record per key, so a record that
//! fails and is retried can never be overtaken by a later one of its key.
//! Throttling and transient errors are retried for ever: nothing is
//! dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use tokio::runtime::Handle;

use super::client::{self, Backoff, KinesisClient, Trouble};
use super::seq_cache::SequenceCache;
use crate::component::{MessageSink, Produced};

/// Kinesis allows partition keys of 1 to 256 Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// `PutRecords` takes at most 500 records and 5 MiB (data plus keys).
const MAX_BATCH_RECORDS: usize = 500;
const MAX_BATCH_BYTES: usize = 5 << 20;
/// How long a "stream does not exist" answer is trusted.
const MISSING_STREAM_RECHECK: Duration = Duration::from_secs(5);
/// Failures are logged once per this many retries of one call.
const LOG_EVERY_RETRIES: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("Kinesis stream {0:?} does not exist")]
    MissingStream(String),
    #[error("partition key of {0} characters: Kinesis allows 1 to {MAX_PARTITION_KEY_CHARS}")]
    KeyTooLong(usize),
    #[error("cannot write to Kinesis stream {stream:?}: {message}")]
    Failed { stream: String, message: String },
    #[error(
        "Kinesis did not answer about stream {stream:?} within {waited:?} (check \
         --kinesis-endpoint, the region and the network)"
    )]
    Unreachable { stream: String, waited: Duration },
    #[error("Kinesis stream {stream:?} did not become ACTIVE within {waited:?}")]
    NotActive { stream: String, waited: Duration },
}

/// One record to write.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub stream: String,
    /// `None` (or empty): a random partition key (see [`partition_key`]).
    pub key: Option<String>,
    pub data: Vec<u8>,
}

/// Kinesis needs a partition key; Kafka does not. A record without a key,
/// or with an empty one, gets a random key: such records spread over the
/// shards, with no order between them, as Kafka spreads null-key records.
pub fn partition_key(key: Option<&str>) -> Result<String, WriteError> {
    match key {
        None | Some("") => Ok(client::random_partition_key()),
        Some(key) => {
            let chars = key.chars().count();
            if chars > MAX_PARTITION_KEY_CHARS {
                return Err(WriteError::KeyTooLong(chars));
            }
            Ok(key.to_owned())
        }
    }
}

pub struct KinesisSink {
    kinesis: KinesisClient,
    runtime: Handle,
    sequences: Mutex<SequenceCache>,
    /// Streams known to exist, or known missing as of an instant.
    streams: Mutex<HashMap<String, Option<Instant>>>,
}

impl KinesisSink {
    pub fn new(kinesis: KinesisClient, runtime: Handle, sequence_cache_size: usize) -> Self {
        KinesisSink {
            kinesis,
            runtime,
            sequences: Mutex::new(SequenceCache::new(sequence_cache_size)),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Fail fast on a missing stream (cached: a missing stream is asked
    /// about again after 5 s, an existing one never).
    pub fn check_stream(&self, stream: &str) -> Result<(), WriteError> {
        let cached = self
            .streams
            .lock()
            .ok()
            .and_then(|s| s.get(stream).copied());
        match cached {
            Some(None) => return Ok(()),
            Some(Some(seen)) if seen.elapsed() < MISSING_STREAM_RECHECK => {
                return Err(WriteError::MissingStream(stream.to_owned()));
            }
            _ => {}
        }
        let found = self.runtime.block_on(self.stream_status(stream));
        let entry = match &found {
            Ok(_) => None,
            Err(WriteError::MissingStream(_)) => Some(Instant::now()),
            Err(_) => return found.map(drop),
        };
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(stream.to_owned(), entry);
        }
        found.map(drop)
    }

    /// [`Self::check_stream`] at start-up: a stream that cannot be reached
    /// within `limit` (wrong endpoint, network down) is an error rather
    /// than an endless retry.
    pub fn check_stream_at_start(&self, stream: &str, limit: Duration) -> Result<(), WriteError> {
        let status = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, self.stream_status(stream)).await });
        match status {
            Ok(found) => found.map(drop),
            Err(_) => Err(WriteError::Unreachable {
                stream: stream.to_owned(),
                waited: limit,
            }),
        }
    }

    async fn stream_status(&self, stream: &str) -> Result<StreamStatus, WriteError> {
        let mut backoff = Backoff::default();
        loop {
            let result = self
                .kinesis
                .client
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await;
            match result {
                Ok(output) => {
                    return Ok(output
                        .stream_description_summary()
                        .map(|s| s.stream_status().clone())
                        .unwrap_or(StreamStatus::Active));
                }
                Err(error) => match client::classify(&error) {
                    Trouble::NotFound => return Err(WriteError::MissingStream(stream.to_owned())),
                    Trouble::Throttled | Trouble::Transient => {
                        retry_wait(&mut backoff, stream, &client::describe(&error)).await;
                    }
                    Trouble::ExpiredIterator | Trouble::Fatal => {
                        return Err(WriteError::Failed {
                            stream: stream.to_owned(),
                            message: client::describe(&error),
                        });
                    }
                },
            }
        }
    }

    /// Create `stream` with `shards` shards unless it exists, and wait until
    /// it is ACTIVE.
    pub fn ensure_stream(&self, stream: &str, shards: i32) -> Result<(), WriteError> {
        self.runtime.block_on(async {
            if let Err(WriteError::MissingStream(_)) = self.stream_status(stream).await {
                tracing::info!(stream, shards, "creating Kinesis stream");
                let created = self
                    .kinesis
                    .client
                    .create_stream()
                    .stream_name(stream)
                    .shard_count(shards)
                    .send()
                    .await;
                if let Err(error) = created
                    && error.code() != Some("ResourceInUseException")
                {
                    return Err(WriteError::Failed {
                        stream: stream.to_owned(),
                        message: client::describe(&error),
                    });
                }
            }
            let limit = Duration::from_secs(60);
            let started = Instant::now();
            while self.stream_status(stream).await? != StreamStatus::Active {
                if started.elapsed() > limit {
                    return Err(WriteError::NotActive {
                        stream: stream.to_owned(),
                        waited: limit,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })?;
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(stream.to_owned(), None);
        }
        Ok(())
    }

    /// Write one record with `PutRecord`, in order after the last one of its
    /// key; returns its sequence number. Blocks until written.
    pub fn put_one(&self, record: &OutRecord) -> Result<String, WriteError> {
        let key = partition_key(record.key.as_deref())?;
        let keyed = matches!(record.key.as_deref(), Some(k) if !k.is_empty());
        let after = if keyed {
            self.lock_sequences().get(&record.stream, &key)
        } else {
            None
        };
        let sequence =
            self.runtime
                .block_on(self.put_record(&record.stream, &key, &record.data, after))?;
        if keyed {
            self.lock_sequences()
                .put(&record.stream, &key, sequence.clone());
        }
        Ok(sequence)
    }

    fn lock_sequences(&self) -> std::sync::MutexGuard<'_, SequenceCache> {
        // A cache of hints: a poisoned one is still usable.
        self.sequences
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn put_record(
        &self,
        stream: &str,
        key: &str,
        data: &[u8],
        after: Option<String>,
    ) -> Result<String, WriteError> {
        let mut backoff = Backoff::default();
        loop {
            let result = self
                .kinesis
                .client
                .put_record()
                .stream_name(stream)
                .partition_key(key)
                .data(Blob::new(data))
                .set_sequence_number_for_ordering(after.clone())
                .send()
                .await;
            match result {
                Ok(output) => return Ok(output.sequence_number().to_owned()),
                Err(error) => match client::classify(&error) {
                    Trouble::Throttled | Trouble::Transient => {
                        retry_wait(&mut backoff, stream, &client::describe(&error)).await;
                    }
                    Trouble::NotFound => return Err(WriteError::MissingStream(stream.to_owned())),
                    Trouble::ExpiredIterator | Trouble::Fatal => {
                        return Err(WriteError::Failed {
                            stream: stream.to_owned(),
                            message: client::describe(&error),
                        });
                    }
                },
            }
        }
    }

    /// Write `records` with `PutRecords`, keeping their order per (stream,
    /// key) and retrying what fails until everything is written. Blocks.
    pub fn put_ordered(&self, records: Vec<OutRecord>) -> Result<(), WriteError> {
        let mut by_stream: Vec<(String, VecDeque<Entry>)> = Vec::new();
        for record in records {
            let key = partition_key(record.key.as_deref())?;
            let entry = Entry {
                key,
                data: record.data,
            };
            match by_stream.iter_mut().find(|(s, _)| *s == record.stream) {
                Some((_, queue)) => queue.push_back(entry),
                None => by_stream.push((record.stream, VecDeque::from([entry]))),
            }
        }
        self.runtime.block_on(async {
            for (stream, queue) in by_stream {
                self.put_stream(&stream, queue).await?;
            }
            Ok(())
        })
    }

    async fn put_stream(
        &self,
        stream: &str,
        mut pending: VecDeque<Entry>,
    ) -> Result<(), WriteError> {
        let mut backoff = Backoff::default();
        let mut retried_partially = 0;
        while !pending.is_empty() {
            let (batch, rest) = take_batch(pending);
            pending = rest;
            let entries: Vec<PutRecordsRequestEntry> = batch
                .iter()
                .map(|entry| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&entry.key)
                        .data(Blob::new(entry.data.clone()))
                        .build()
                })
                .collect::<Result<_, _>>()
                .map_err(|e| WriteError::Failed {
                    stream: stream.to_owned(),
                    message: e.to_string(),
                })?;
            let result = self
                .kinesis
                .client
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await;
            let output = match result {
                Ok(output) => output,
                Err(error) => match client::classify(&error) {
                    Trouble::Throttled | Trouble::Transient => {
                        retry_wait(&mut backoff, stream, &client::describe(&error)).await;
                        pending = requeue(batch, pending);
                        continue;
                    }
                    Trouble::NotFound => return Err(WriteError::MissingStream(stream.to_owned())),
                    Trouble::ExpiredIterator | Trouble::Fatal => {
                        return Err(WriteError::Failed {
                            stream: stream.to_owned(),
                            message: client::describe(&error),
                        });
                    }
                },
            };
            let batch_len = batch.len();
            let mut failed = Vec::new();
            let mut first_error = None;
            for (entry, result) in batch.into_iter().zip(output.records()) {
                if let Some(code) = result.error_code() {
                    first_error.get_or_insert_with(|| {
                        format!("{code}: {}", result.error_message().unwrap_or_default())
                    });
                    failed.push(entry);
                }
            }
            if failed.is_empty() {
                backoff.reset();
                continue;
            }
            let message = format!(
                "{} of {batch_len} records were refused (first: {})",
                failed.len(),
                first_error.unwrap_or_default()
            );
            if failed.len() < batch_len {
                // Partial failures are the stream's limits at work: retry
                // the rest soon, without the growing wait of a refusal.
                retried_partially += failed.len();
                backoff.reset();
                tracing::debug!(stream, "Kinesis PutRecords: {message}; retrying them");
                tokio::time::sleep(backoff.next_delay()).await;
            } else {
                retry_wait(&mut backoff, stream, &message).await;
            }
            pending = requeue(failed, pending);
        }
        if retried_partially > 0 {
            tracing::info!(
                stream,
                records = retried_partially,
                "Kinesis PutRecords: records refused by the stream's limits were written on retry"
            );
        }
        Ok(())
    }
}

/// Queued for `PutRecords`.
#[derive(Debug)]
struct Entry {
    key: String,
    data: Vec<u8>,
}

/// The next batch: the first pending record of each key, in queue order,
/// within the request limits; the rest stays queued in order.
fn take_batch(pending: VecDeque<Entry>) -> (Vec<Entry>, VecDeque<Entry>) {
    let mut batch = Vec::new();
    let mut rest = VecDeque::new();
    let mut keys: HashSet<String> = HashSet::new();
    let mut bytes = 0;
    for entry in pending {
        let size = entry.key.len() + entry.data.len();
        let fits = batch.len() < MAX_BATCH_RECORDS
            && (batch.is_empty() || bytes + size <= MAX_BATCH_BYTES);
        if fits && !keys.contains(&entry.key) {
            bytes += size;
            keys.insert(entry.key.clone());
            batch.push(entry);
        } else {
            // Once a key is held back, its later records are too.
            keys.insert(entry.key.clone());
            rest.push_back(entry);
        }
    }
    (batch, rest)
}

/// Put failed records back in front of the queue: each is older than
/// anything queued for its key.
fn requeue(failed: Vec<Entry>, pending: VecDeque<Entry>) -> VecDeque<Entry> {
    let mut queue: VecDeque<Entry> = failed.into();
    queue.extend(pending);
    queue
}

async fn retry_wait(backoff: &mut Backoff, stream: &str, message: &str) {
    let delay = backoff.next_delay();
    if backoff.failures() % LOG_EVERY_RETRIES == 1 {
        tracing::warn!(
            stream,
            retries = backoff.failures(),
            "Kinesis: {message}; retrying in {delay:?}"
        );
    }
    tokio::time::sleep(delay).await;
}

/// Direct mode: a produced record is written before `produce` returns.
impl MessageSink for KinesisSink {
    fn send(&self, record: Produced<'_>) -> Result<(), String> {
        self.check_stream(record.topic).map_err(|e| e.to_string())?;
        let out = OutRecord {
            stream: record.topic.to_owned(),
            key: record.key.map(str::to_owned),
            data: record.payload,
        };
        self.put_one(&out).map(drop).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, n: u8) -> Entry {
        Entry {
            key: key.into(),
            data: vec![n],
        }
    }

    fn keys(entries: &[Entry]) -> Vec<(String, u8)> {
        entries.iter().map(|e| (e.key.clone(), e.data[0])).collect()
    }

    #[test]
    fn a_batch_holds_one_record_per_key_and_later_ones_wait_their_turn() {
        let queue = VecDeque::from([entry("a", 1), entry("b", 2), entry("a", 3), entry("c", 4)]);
        let (batch, rest) = take_batch(queue);
        assert_eq!(
            keys(&batch),
            [("a".into(), 1), ("b".into(), 2), ("c".into(), 4)]
        );
        let rest: Vec<Entry> = rest.into();
        assert_eq!(keys(&rest), [("a".into(), 3)]);
    }

    #[test]
    fn a_failed_record_goes_back_before_the_later_records_of_its_key() {
        let queue = VecDeque::from([entry("a", 1), entry("a", 2)]);
        let (batch, rest) = take_batch(queue);
        let queue = requeue(batch, rest);
        let (batch, rest) = take_batch(queue);
        assert_eq!(keys(&batch), [("a".into(), 1)]);
        let rest: Vec<Entry> = rest.into();
        assert_eq!(keys(&rest), [("a".into(), 2)]);
    }

    #[test]
    fn batches_respect_the_request_limits() {
        let queue: VecDeque<Entry> = (0..600).map(|n| entry(&n.to_string(), 0)).collect();
        let (batch, rest) = take_batch(queue);
        assert_eq!((batch.len(), rest.len()), (MAX_BATCH_RECORDS, 100));
        let big = |key: &str| Entry {
            key: key.into(),
            data: vec![0; 3 << 20],
        };
        let (batch, rest) = take_batch(VecDeque::from([big("a"), big("b")]));
        assert_eq!((batch.len(), rest.len()), (1, 1));
    }

    #[test]
    fn partition_keys_follow_kinesis_rules() {
        assert_eq!(partition_key(Some("k")).unwrap(), "k");
        assert_eq!(partition_key(None).unwrap().len(), 32);
        assert_eq!(partition_key(Some("")).unwrap().len(), 32);
        assert!(partition_key(Some(&"é".repeat(256))).is_ok());
        assert!(matches!(
            partition_key(Some(&"x".repeat(257))),
            Err(WriteError::KeyTooLong(257))
        ));
    }
}
