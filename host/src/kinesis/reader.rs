//! One task per shard: `GetShardIterator` once, then `GetRecords` pages into
//! a small bounded channel, so shards are fetched concurrently while each
//! shard's records stay in order and a slow consumer holds the fetching
//! back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use tokio::sync::mpsc;

use super::client::{self, Backoff, KinesisClient, Trouble};

/// Pages fetched ahead per shard.
pub const PAGES_AHEAD: usize = 2;

/// Where a shard is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Right after this sequence number (the last handled record).
    After(String),
    /// The oldest record kept.
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// The first record that arrived at or after this time (ms since the
    /// epoch): an operator's `offsets reset --to <time>|latest`.
    AtTimestamp(i64),
}

/// One record as fetched.
#[derive(Debug, Clone)]
pub struct ShardRecord {
    pub sequence: String,
    pub key: String,
    pub data: Vec<u8>,
    /// `ApproximateArrivalTimestamp`, in ms since the epoch.
    pub arrival_ms: Option<i64>,
}

/// What a reader sends.
#[derive(Debug)]
pub enum Fetched {
    /// One `GetRecords` answer (possibly empty).
    Page {
        records: Vec<ShardRecord>,
        millis_behind: Option<i64>,
    },
    /// The shard is closed (split or merged) and every record was sent.
    Closed,
    /// The shard cannot be read (deleted stream, no permission, ...).
    Failed(String),
}

/// Consecutive failed reads after which a shard counts as unreachable for
/// `/health`: a throttled call now and then is normal for Kinesis; this many
/// in a row (over a second or more of backing off) is not.
pub const UNREACHABLE_AFTER: u32 = 5;

/// How a shard's reads are going, shared by its reader task and the
/// consume loop.
#[derive(Debug, Default)]
pub struct FetchHealth {
    failures: AtomicU32,
    last_error: Mutex<String>,
}

impl FetchHealth {
    fn failed(&self, message: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            message.clone_into(&mut last);
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Consecutive failures and the last error, if reads are failing
    /// persistently.
    pub fn unreachable(&self) -> Option<(u32, String)> {
        let failures = self.failures.load(Ordering::Relaxed);
        if failures < UNREACHABLE_AFTER {
            return None;
        }
        let last = self
            .last_error
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        Some((failures, last))
    }
}

/// What a reader needs.
#[derive(Clone)]
pub struct ReadOptions {
    pub kinesis: KinesisClient,
    /// Records per `GetRecords` call (1..=10000).
    pub fetch_limit: i32,
    /// Wait after an empty page: Kinesis serves 5 `GetRecords` per second
    /// per shard, shared by every consumer of the stream.
    pub poll_interval: Duration,
}

/// Read `shard` of `stream` from `start` until it is closed or `pages` is
/// dropped. Throttling and transient errors are retried for ever; an
/// expired iterator is renewed after the last record sent.
pub async fn read_shard(
    options: ReadOptions,
    stream: String,
    shard: String,
    start: StartAt,
    pages: mpsc::Sender<Fetched>,
    health: std::sync::Arc<FetchHealth>,
) {
    let mut last_sent: Option<String> = match &start {
        StartAt::After(sequence) => Some(sequence.clone()),
        _ => None,
    };
    let mut iterator: Option<String> = None;
    let mut backoff = Backoff::default();
    loop {
        let current = match iterator.take() {
            Some(current) => current,
            None => {
                let from = match &last_sent {
                    Some(sequence) => StartAt::After(sequence.clone()),
                    None => start.clone(),
                };
                match shard_iterator(&options.kinesis, &stream, &shard, &from).await {
                    Ok(Some(fresh)) => fresh,
                    Ok(None) => {
                        let _ = pages.send(Fetched::Closed).await;
                        return;
                    }
                    Err(IteratorError::Retry(message)) => {
                        health.failed(&message);
                        wait(&mut backoff, &stream, &shard, &message).await;
                        continue;
                    }
                    Err(IteratorError::Fatal(message)) => {
                        let _ = pages.send(Fetched::Failed(message)).await;
                        return;
                    }
                }
            }
        };
        let result = options
            .kinesis
            .client
            .get_records()
            .shard_iterator(&current)
            .limit(options.fetch_limit)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                match client::classify(&error) {
                    Trouble::Throttled | Trouble::Transient => {
                        iterator = Some(current);
                        let message = client::describe(&error);
                        health.failed(&message);
                        wait(&mut backoff, &stream, &shard, &message).await;
                    }
                    // Renewed from the last record sent, above.
                    Trouble::ExpiredIterator => {
                        tracing::info!(
                            stream,
                            shard,
                            after = last_sent.as_deref().unwrap_or("(start)"),
                            "shard iterator expired; getting a new one"
                        );
                    }
                    Trouble::NotFound | Trouble::Fatal => {
                        let message = client::describe(&error);
                        let _ = pages.send(Fetched::Failed(message)).await;
                        return;
                    }
                }
                continue;
            }
        };
        backoff.reset();
        health.succeeded();
        let records: Vec<ShardRecord> = output
            .records()
            .iter()
            .map(|record| ShardRecord {
                sequence: record.sequence_number().to_owned(),
                key: record.partition_key().unwrap_or_default().to_owned(),
                data: record.data().as_ref().to_vec(),
                arrival_ms: record
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok()),
            })
            .collect();
        let empty = records.is_empty();
        if let Some(last) = records.last() {
            last_sent = Some(last.sequence.clone());
        }
        let page = Fetched::Page {
            records,
            millis_behind: output.millis_behind_latest(),
        };
        if pages.send(page).await.is_err() {
            return;
        }
        match output.next_shard_iterator() {
            None => {
                let _ = pages.send(Fetched::Closed).await;
                return;
            }
            Some(next) => iterator = Some(next.to_owned()),
        }
        if empty {
            tokio::time::sleep(options.poll_interval).await;
        }
    }
}

enum IteratorError {
    Retry(String),
    Fatal(String),
}

/// A fresh iterator, or `None` when the shard is closed and has nothing
/// after `from`.
async fn shard_iterator(
    kinesis: &KinesisClient,
    stream: &str,
    shard: &str,
    from: &StartAt,
) -> Result<Option<String>, IteratorError> {
    let request = kinesis
        .client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let request = match from {
        StartAt::After(sequence) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(sequence),
        StartAt::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        StartAt::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
        StartAt::AtTimestamp(ms) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(*ms)),
    };
    match request.send().await {
        Ok(output) => Ok(output.shard_iterator().map(str::to_owned)),
        Err(error) => match client::classify(&error) {
            Trouble::Throttled | Trouble::Transient => {
                Err(IteratorError::Retry(client::describe(&error)))
            }
            _ => Err(IteratorError::Fatal(format!(
                "cannot read shard {shard} of stream {stream:?}: {}",
                client::describe(&error)
            ))),
        },
    }
}

async fn wait(backoff: &mut Backoff, stream: &str, shard: &str, message: &str) {
    let delay = backoff.next_delay();
    // Said once, then every tenth time while it lasts.
    if backoff.failures() % 10 == 1 {
        tracing::warn!(
            stream,
            shard,
            retries = backoff.failures(),
            "Kinesis GetRecords: {message}; retrying in {delay:?}"
        );
    }
    tokio::time::sleep(delay).await;
}
