//! Scenario (a): a raw rdkafka consume loop that only counts records, with
//! the host's own consumer settings: what librdkafka and the broker can
//! deliver to one thread here, the ceiling for `run`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::report;
use crate::kafka::KafkaSettings;
use crate::kafka::metadata;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// The same poll timeout as the host's consume loop.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// A broker that sends nothing for this long will not send the rest.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Measured {
    pub records: u64,
    /// First record received to the last one: like `run`'s `busy_s`.
    pub busy: Duration,
    /// Assignment to the last record.
    pub wall: Duration,
    pub peak_rss_kib: Option<u64>,
}

/// Read every partition of `topic` from the beginning until `expected`
/// records arrived.
pub fn consume(
    settings: &KafkaSettings,
    topic: &str,
    expected: u64,
    shutdown: &AtomicBool,
) -> anyhow::Result<Measured> {
    let consumer: BaseConsumer = settings
        .consumer_config("logpipe-bench-raw")
        .create()
        .context("cannot create the raw consumer")?;
    let bootstrap = &settings.bootstrap_servers;
    let mut assignment = TopicPartitionList::new();
    for partition in metadata::partitions(consumer.client(), topic, bootstrap, METADATA_TIMEOUT)? {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    // Peak RSS of this process from here on (the pre-load's is forgotten).
    let rss_reset = report::reset_peak_rss();
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let mut count = 0u64;
    let mut first = None;
    let mut last = started;
    while count < expected {
        if shutdown.load(Ordering::Relaxed) {
            bail!("interrupted at record {count} of {expected}");
        }
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(_message)) => {
                count += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Some(Err(error)) => tracing::warn!("raw consumer: {error}"),
            None if last.elapsed() > STALL_TIMEOUT => {
                bail!("raw consumer: no record for {STALL_TIMEOUT:?} after {count} of {expected}")
            }
            None => {}
        }
    }
    Ok(Measured {
        records: count,
        busy: first.map(|f| last.duration_since(f)).unwrap_or_default(),
        wall: last.duration_since(started),
        peak_rss_kib: rss_reset.then(report::peak_rss_kib).flatten(),
    })
}
