//! What the Kafka consumer learns about its brokers and partitions from
//! librdkafka's statistics (`statistics.interval.ms`): whether any broker
//! connection is up, and each partition's watermarks, for the lag metric and
//! `/health` without extra requests to the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

use super::group::{self, GroupHooks};
use rdkafka::error::KafkaError;
use serde::Deserialize;

/// How often librdkafka emits statistics for us, in milliseconds.
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// The consumer's context: keeps the latest statistics, and in a consumer
/// group hands rebalances to the group hooks.
#[derive(Default)]
pub struct ObservedContext {
    latest: Mutex<Option<Observed>>,
    group: Option<Arc<GroupHooks>>,
}

/// One statistics report, reduced to what we use.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub at: Option<Instant>,
    /// Brokers with an established connection.
    pub brokers_up: usize,
    /// Known brokers (bootstrap entries included).
    pub brokers: usize,
    /// (topic, partition) → (low, high) watermark.
    pub watermarks: HashMap<(String, i32), (i64, i64)>,
}

/// The parts of librdkafka's statistics JSON we read; everything else is
/// ignored, and missing fields default, so a librdkafka or broker that
/// reports less still parses.
#[derive(Deserialize)]
struct RawStatistics {
    #[serde(default)]
    brokers: HashMap<String, RawBroker>,
    #[serde(default)]
    topics: HashMap<String, RawTopic>,
}

#[derive(Deserialize)]
struct RawBroker {
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
struct RawTopic {
    #[serde(default)]
    partitions: HashMap<String, RawPartition>,
}

#[derive(Deserialize)]
struct RawPartition {
    #[serde(default = "unknown")]
    partition: i32,
    #[serde(default = "unknown_offset")]
    lo_offset: i64,
    #[serde(default = "unknown_offset")]
    hi_offset: i64,
}

fn unknown() -> i32 {
    -1
}

fn unknown_offset() -> i64 {
    -1
}

impl ObservedContext {
    /// The context of a group member (`--offset-store kafka`).
    pub fn in_group(hooks: Arc<GroupHooks>) -> Self {
        ObservedContext {
            latest: Mutex::new(None),
            group: Some(hooks),
        }
    }

    /// The latest report, if one arrived.
    pub fn latest(&self) -> Option<Observed> {
        self.latest.lock().ok().and_then(|latest| latest.clone())
    }
}

/// Reduce a statistics report.
pub fn parse(json: &[u8]) -> Result<Observed, serde_json::Error> {
    let raw: RawStatistics = serde_json::from_slice(json)?;
    let mut watermarks = HashMap::new();
    for (topic, stats) in raw.topics {
        for partition in stats.partitions.values() {
            // -1 is librdkafka's "unassigned" pseudo-partition; -1 offsets
            // are not yet known.
            if partition.partition >= 0 && partition.hi_offset >= 0 {
                watermarks.insert(
                    (topic.clone(), partition.partition),
                    (partition.lo_offset.max(0), partition.hi_offset),
                );
            }
        }
    }
    Ok(Observed {
        at: Some(Instant::now()),
        brokers_up: raw.brokers.values().filter(|b| b.state == "UP").count(),
        brokers: raw.brokers.len(),
        watermarks,
    })
}

impl ClientContext for ObservedContext {
    fn stats_raw(&self, statistics: &[u8]) {
        match parse(statistics) {
            Ok(observed) => {
                if let Ok(mut latest) = self.latest.lock() {
                    *latest = Some(observed);
                }
            }
            Err(e) => tracing::debug!("unreadable librdkafka statistics: {e}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for ObservedContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Some(hooks) = &self.group {
            group::pre_rebalance(hooks, consumer, rebalance);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Some(hooks) = &self.group {
            group::post_rebalance(hooks, rebalance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_reduce_to_brokers_up_and_watermarks() {
        let json = br#"{
            "name": "rdkafka#consumer-1", "ts": 1,
            "brokers": {
                "127.0.0.1:9092/bootstrap": {"name": "x", "nodeid": -1, "state": "INIT"},
                "127.0.0.1:9092/1": {"name": "y", "nodeid": 1, "state": "UP"}
            },
            "topics": {
                "in": {"topic": "in", "partitions": {
                    "0": {"partition": 0, "lo_offset": 0, "hi_offset": 12},
                    "1": {"partition": 1, "lo_offset": -1, "hi_offset": 3},
                    "-1": {"partition": -1, "lo_offset": -1, "hi_offset": -1}
                }}
            }
        }"#;
        let observed = parse(json).unwrap();
        assert_eq!((observed.brokers_up, observed.brokers), (1, 2));
        assert_eq!(observed.watermarks.len(), 2);
        assert_eq!(observed.watermarks[&("in".to_owned(), 0)], (0, 12));
        assert_eq!(observed.watermarks[&("in".to_owned(), 1)], (0, 3));
    }
}
