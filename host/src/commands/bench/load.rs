//! The bench's records: ~200-byte logpipe JSON envelopes of type "echo" v1,
//! and a fast batching producer that pre-loads them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::kafka::KafkaSettings;
use crate::kafka::metadata;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of every record value, in bytes.
pub const RECORD_BYTES: usize = 200;
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// The value of record `seq`: a django-logpipe JSON envelope padded to
/// [`RECORD_BYTES`].
pub fn envelope(seq: u64) -> Vec<u8> {
    let head = format!(r#"json:{{"type":"echo","version":1,"message":{{"seq":{seq},"text":""#);
    let tail = r#""}}"#;
    let pad = RECORD_BYTES.saturating_sub(head.len() + tail.len());
    let mut value = Vec::with_capacity(RECORD_BYTES);
    value.extend_from_slice(head.as_bytes());
    value.resize(head.len() + pad, b'x');
    value.extend_from_slice(tail.as_bytes());
    value
}

/// The key of record `seq`.
pub fn key(seq: u64) -> String {
    format!("key-{seq}")
}

/// How the pre-load went.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub records: u64,
    pub elapsed: Duration,
}

/// Produce `records` envelopes to `topic`, round-robin over its
/// `partitions`, and wait until the broker acknowledged all of them.
pub fn preload(
    settings: &KafkaSettings,
    topic: &str,
    records: u64,
    partitions: i32,
    shutdown: &AtomicBool,
) -> anyhow::Result<Loaded> {
    tracing::info!(records, topic, "pre-loading");
    let producer: ThreadedProducer<DefaultProducerContext> = settings
        .producer_config()
        // Large batches: the load is not what is measured, only waited for.
        // A queue of at most 64 MiB: memory the bench process keeps once
        // freed would otherwise inflate the peak RSS reported for (a), (d).
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "65536")
        .create()
        .context("cannot create the pre-load producer")?;
    let started = Instant::now();
    for seq in 0..records {
        if shutdown.load(Ordering::Relaxed) {
            bail!("interrupted while pre-loading");
        }
        let value = envelope(seq);
        let key = key(seq);
        let partition = i32::try_from(seq % partitions.max(1) as u64).unwrap_or(0);
        let mut record = BaseRecord::to(topic)
            .payload(&value)
            .key(&key)
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error).context("cannot queue a pre-load record"),
            }
        }
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .context("pre-loaded records were not acknowledged")?;
    let elapsed = started.elapsed();
    // The default producer context drops delivery errors: count what the
    // broker holds instead.
    let stored = topic_total(settings, topic)?;
    if stored != records {
        bail!("pre-load: the broker holds {stored} records in {topic:?}, not {records}");
    }
    tracing::info!(records, ?elapsed, "pre-loaded");
    Ok(Loaded { records, elapsed })
}

/// Records `topic` holds: the sum over its partitions of high minus low
/// watermark.
pub fn topic_total(settings: &KafkaSettings, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = settings
        .consumer_config("logpipe-bench")
        .create()
        .context("cannot create a consumer")?;
    let bootstrap = &settings.bootstrap_servers;
    let mut total = 0u64;
    for partition in metadata::partitions(consumer.client(), topic, bootstrap, METADATA_TIMEOUT)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .with_context(|| format!("watermarks of {topic}[{partition}]"))?;
        total += u64::try_from(high - low).unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_the_advertised_size_and_decode() {
        for seq in [0, 7, 999_999, u64::MAX] {
            let value = envelope(seq);
            assert_eq!(value.len(), RECORD_BYTES, "seq {seq}");
            let decoded = crate::envelope::decode(&value).unwrap();
            assert_eq!(decoded.message_type, "echo");
            assert_eq!(decoded.version.as_number(), Some(1));
        }
    }
}
