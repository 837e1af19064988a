//! The envelope producer: queues rendered envelopes and tells the consumer
//! which of them the broker has acknowledged.
//!
//! Records are counted in numbered batches. The consumer seals a batch when
//! it stages offsets, keeps consuming, and stores those offsets once every
//! record produced in that batch and all earlier ones is acknowledged. No
//! flush stalls the pipeline; a broker round trip only delays the commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::config::KafkaSettings;
use super::metadata::{self, TopicError};
use crate::component::{MessageSink, Produced};
use crate::metrics::Metrics;

/// How long a negative "topic exists" answer is trusted before asking the
/// broker again (topics may be created while we run).
const MISSING_TOPIC_RECHECK: Duration = Duration::from_secs(5);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Records in flight per batch, and failed deliveries. librdkafka reports
/// deliveries on its own thread.
#[derive(Default)]
pub struct DeliveryTracker {
    ledger: Mutex<Ledger>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Where failed deliveries are counted, once a run sets it.
    metrics: OnceLock<Arc<Metrics>>,
}

#[derive(Default)]
struct Ledger {
    /// The batch new records are counted in.
    open: u64,
    /// Unacknowledged records per batch; batches at zero are removed.
    in_flight: BTreeMap<u64, u64>,
}

impl DeliveryTracker {
    fn sent(&self) -> u64 {
        let mut ledger = self.lock();
        let batch = ledger.open;
        *ledger.in_flight.entry(batch).or_default() += 1;
        batch
    }

    fn settled(&self, batch: u64) {
        let mut ledger = self.lock();
        if let Some(count) = ledger.in_flight.get_mut(&batch) {
            *count -= 1;
            if *count == 0 {
                ledger.in_flight.remove(&batch);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger holds plain counters: a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        if let Err((error, message)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            if let Some(metrics) = self.metrics.get() {
                metrics.delivery_errors.inc();
            }
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| format!("to topic {:?}: {error}", message.topic()));
            }
        }
        self.settled(batch as u64);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{count} produced record(s) were not delivered (first: {first})")]
    Failed { count: u64, first: String },
    #[error("produced records were not acknowledged within {0:?}: {1}")]
    Timeout(Duration, KafkaError),
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
}

/// A Kafka producer for envelopes; also the guests' [`MessageSink`].
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryTracker>,
    bootstrap: String,
    /// Topics known to exist, or known missing as of an instant.
    topics: Mutex<HashMap<String, Option<Instant>>>,
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> Result<Self, DeliveryError> {
        let producer = settings
            .producer_config()
            .create_with_context(DeliveryTracker::default())
            .map_err(DeliveryError::Create)?;
        Ok(KafkaSink {
            producer,
            bootstrap: settings.bootstrap_servers.clone(),
            topics: Mutex::new(HashMap::new()),
        })
    }

    /// Count failed deliveries in `metrics` from now on.
    pub fn count_failures_in(&self, metrics: Arc<Metrics>) {
        let _ = self.producer.context().metrics.set(metrics);
    }

    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, TopicError> {
        metadata::partitions(
            self.producer.client(),
            topic,
            &self.bootstrap,
            METADATA_TIMEOUT,
        )
    }

    /// Fail fast on a missing topic: librdkafka would hold the record for
    /// `message.timeout.ms` and then fail the whole batch.
    pub fn check_topic(&self, topic: &str) -> Result<(), TopicError> {
        let cached = self.topics.lock().ok().and_then(|t| t.get(topic).copied());
        match cached {
            Some(None) => return Ok(()),
            Some(Some(seen)) if seen.elapsed() < MISSING_TOPIC_RECHECK => {
                return Err(TopicError::Missing(topic.to_owned()));
            }
            _ => {}
        }
        let found = metadata::partitions(
            self.producer.client(),
            topic,
            &self.bootstrap,
            METADATA_TIMEOUT,
        );
        let entry = match &found {
            Ok(_) => None,
            Err(TopicError::Missing(_)) => Some(Instant::now()),
            Err(_) => return found.map(|_| ()),
        };
        if let Ok(mut topics) = self.topics.lock() {
            topics.insert(topic.to_owned(), entry);
        }
        found.map(|_| ())
    }

    /// Queue one record, waiting while librdkafka's queue is full.
    pub fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        self.enqueue_with_headers(topic, key, payload, None)
    }

    /// Queue one record with headers (retry and dead-letter copies).
    pub fn enqueue_with_headers(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        let tracker = self.producer.context();
        let batch = tracker.sent();
        let mut record = BaseRecord::with_opaque_to(topic, batch as usize).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    tracker.settled(batch);
                    return Err(error);
                }
            }
        }
    }

    /// Close the open batch: records queued from now on count in the next
    /// one. Returns the closed batch's number.
    pub fn seal(&self) -> u64 {
        let mut ledger = self.producer.context().lock();
        ledger.open += 1;
        ledger.open - 1
    }

    /// Whether every record of `batch` (sealed) has been acknowledged.
    /// Fails if any delivery failed.
    pub fn is_acknowledged(&self, batch: u64) -> Result<bool, DeliveryError> {
        self.check_failures()?;
        let ledger = self.producer.context().lock();
        Ok(batch < ledger.open && !ledger.in_flight.contains_key(&batch))
    }

    /// Wait until every queued record is acknowledged, and fail if any
    /// could not be delivered.
    pub fn confirm(&self, timeout: Duration) -> Result<(), DeliveryError> {
        self.producer
            .flush(timeout)
            .map_err(|e| DeliveryError::Timeout(timeout, e))?;
        self.check_failures()
    }

    fn check_failures(&self) -> Result<(), DeliveryError> {
        let tracker = self.producer.context();
        let failed = tracker.failed.load(Ordering::SeqCst);
        if failed > 0 {
            let first = tracker
                .first_error
                .lock()
                .ok()
                .and_then(|first| first.clone())
                .unwrap_or_default();
            return Err(DeliveryError::Failed {
                count: failed,
                first,
            });
        }
        Ok(())
    }
}

/// Direct mode: a produced record goes straight to the broker, as it always
/// did: without the outbox's id header, which costs brokers that store
/// headers row by row (tansu) more than half their throughput.
impl MessageSink for KafkaSink {
    fn send(&self, record: Produced<'_>) -> Result<(), String> {
        let topic = record.topic;
        self.check_topic(topic).map_err(|e| e.to_string())?;
        self.enqueue(topic, record.key.map(str::as_bytes), &record.payload)
            .map_err(|e| format!("cannot queue record for topic {topic:?}: {e}"))
    }
}
