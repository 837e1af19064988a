//! Observability: the metrics every part of the host records into, the
//! health of the consumers, and the HTTP endpoint serving both
//! (`--metrics-addr`).
//!
//! - [`registry`]: counters, gauges, histograms and labelled families.
//! - [`encode`]: the Prometheus text exposition format.
//! - [`health`]: named components reporting ready or not, with reasons.
//! - [`http`]: `GET /metrics` and `GET /health`.
//!
//! One [`Metrics`] lives for the whole process and is shared as an `Arc`.
//! Recording is always on (a few relaxed atomic additions per record); only
//! serving needs the flag.

pub mod encode;
pub mod health;
pub mod http;
pub mod registry;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use health::{Health, HealthComponent};
use registry::{Counter, Family, Gauge, Histogram, LATENCY_BUCKETS};

use crate::policy::ErrorClass;

/// Every error class, in the order of [`HandlerMetrics::failed`].
pub const ERROR_CLASSES: [ErrorClass; 7] = [
    ErrorClass::Retry,
    ErrorClass::Reject,
    ErrorClass::Trap,
    ErrorClass::Deadline,
    ErrorClass::Memory,
    ErrorClass::Produce,
    ErrorClass::Store,
];

fn class_index(class: ErrorClass) -> usize {
    match class {
        ErrorClass::Retry => 0,
        ErrorClass::Reject => 1,
        ErrorClass::Trap => 2,
        ErrorClass::Deadline => 3,
        ErrorClass::Memory => 4,
        ErrorClass::Produce => 5,
        ErrorClass::Store => 6,
    }
}

/// Limits a guest can run into. The host bounds time with epoch deadlines,
/// not fuel, so `deadline` is the time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Deadline,
    Memory,
    Table,
    ProduceCalls,
    ProduceBytes,
    StoreKey,
    StoreValue,
    StoreWrites,
}

impl LimitKind {
    pub const ALL: [LimitKind; 8] = [
        LimitKind::Deadline,
        LimitKind::Memory,
        LimitKind::Table,
        LimitKind::ProduceCalls,
        LimitKind::ProduceBytes,
        LimitKind::StoreKey,
        LimitKind::StoreValue,
        LimitKind::StoreWrites,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Deadline => "deadline",
            LimitKind::Memory => "memory",
            LimitKind::Table => "table",
            LimitKind::ProduceCalls => "produce_calls",
            LimitKind::ProduceBytes => "produce_bytes",
            LimitKind::StoreKey => "store_key",
            LimitKind::StoreValue => "store_value",
            LimitKind::StoreWrites => "store_writes",
        }
    }
}

/// Classes of records that reach no handler, as [`crate::dispatch::Failure`]
/// names them.
pub const UNROUTED_CLASSES: [&str; 4] = [
    "invalid-message",
    "unknown-format",
    "unknown-type",
    "unknown-version",
];

/// What happened in the handlers folder while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapAction {
    /// A new or changed component was swapped in.
    Load,
    /// A component file was removed.
    Unload,
    /// A new or changed component was refused; the running one stays.
    Reject,
}

impl SwapAction {
    pub fn name(self) -> &'static str {
        match self {
            SwapAction::Load => "load",
            SwapAction::Unload => "unload",
            SwapAction::Reject => "reject",
        }
    }
}

/// The metrics of one handler (by component name), shared by every version
/// of it that is swapped in.
#[derive(Debug)]
pub struct HandlerMetrics {
    pub handled: Counter,
    /// Calls that did not succeed, by [`ERROR_CLASSES`] order.
    failed: [Counter; 7],
    pub duration: Histogram,
    /// Records accepted from the handler's `produce` calls.
    pub produced: Counter,
    /// `produce` calls that returned an error to the guest.
    pub produce_errors: Counter,
    /// Fresh instances created because the previous one trapped.
    pub restarts: Counter,
    /// By [`LimitKind::ALL`] order.
    limit_hits: [Counter; 8],
}

impl Default for HandlerMetrics {
    fn default() -> Self {
        HandlerMetrics {
            handled: Counter::default(),
            failed: Default::default(),
            duration: Histogram::new(LATENCY_BUCKETS),
            produced: Counter::default(),
            produce_errors: Counter::default(),
            restarts: Counter::default(),
            limit_hits: Default::default(),
        }
    }
}

impl HandlerMetrics {
    pub fn failed(&self, class: ErrorClass) -> &Counter {
        &self.failed[class_index(class)]
    }

    pub fn limit_hit(&self, kind: LimitKind) -> &Counter {
        &self.limit_hits[kind as usize]
    }
}

/// Everything the host measures.
#[derive(Debug)]
pub struct Metrics {
    handlers: Mutex<BTreeMap<String, Arc<HandlerMetrics>>>,
    /// Records read, per Kafka topic (retry topics included).
    pub consumed_topic: Family<Counter>,
    /// Records read, per Kinesis stream.
    pub consumed_stream: Family<Counter>,
    /// By [`UNROUTED_CLASSES`] order.
    unrouted: [Counter; 4],
    pub ignored: Counter,
    pub swaps: Family<Counter>,
    /// High watermark minus next offset, per Kafka partition.
    pub lag: Family<Gauge>,
    /// `MillisBehindLatest` of the last `GetRecords`, per Kinesis shard.
    pub millis_behind: Family<Gauge>,
    pub delivery_errors: Counter,
    /// Store transactions committing offsets, effects or outbox changes.
    pub commits: Counter,
    pub commits_failed: Counter,
    /// When the last checkpoint succeeded (Unix seconds).
    pub last_commit: Gauge,
    pub health: Health,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            handlers: Mutex::new(BTreeMap::new()),
            consumed_topic: Family::new(&["topic"]),
            consumed_stream: Family::new(&["stream"]),
            unrouted: Default::default(),
            ignored: Counter::default(),
            swaps: Family::new(&["handler", "action"]),
            lag: Family::new(&["topic", "partition"]),
            millis_behind: Family::new(&["stream", "shard"]),
            delivery_errors: Counter::default(),
            commits: Counter::default(),
            commits_failed: Counter::default(),
            last_commit: Gauge::default(),
            health: Health::default(),
        }
    }
}

/// Sums for the progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub consumed: u64,
    pub handled: u64,
    /// Failed handler calls plus records no handler could take.
    pub errors: u64,
    /// Records behind on Kafka partitions, if any partition reported.
    pub lag_records: Option<f64>,
    /// The most any Kinesis shard is behind, if any shard reported.
    pub behind_ms: Option<f64>,
}

impl Metrics {
    /// The metrics of handler `name`, created on first use.
    pub fn handler(&self, name: &str) -> Arc<HandlerMetrics> {
        let mut handlers = self
            .handlers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        handlers.entry(name.to_owned()).or_default().clone()
    }

    pub fn handlers(&self) -> Vec<(String, Arc<HandlerMetrics>)> {
        let handlers = self
            .handlers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        handlers
            .iter()
            .map(|(name, m)| (name.clone(), m.clone()))
            .collect()
    }

    /// The counter of a record no handler took, by its failure class;
    /// `None` for a class that is not one of [`UNROUTED_CLASSES`].
    pub fn unrouted(&self, class: &str) -> Option<&Counter> {
        let index = UNROUTED_CLASSES.iter().position(|&c| c == class)?;
        Some(&self.unrouted[index])
    }

    pub fn unrouted_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        UNROUTED_CLASSES
            .iter()
            .zip(&self.unrouted)
            .map(|(class, counter)| (*class, counter.get()))
    }

    pub fn swap(&self, handler: &str, action: SwapAction) {
        self.swaps.get(&[handler, action.name()]).inc();
    }

    /// A checkpoint succeeded: the stored offsets are up to date.
    pub fn checkpoint_succeeded(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_commit.set(now);
    }

    /// Count a checkpoint's outcome (`Ok(true)`: a store transaction was
    /// committed) and report it as the `commit` check of `health`.
    pub fn checkpoint_done<E: std::fmt::Display>(
        &self,
        health: &HealthComponent,
        outcome: &Result<bool, E>,
    ) {
        match outcome {
            Ok(committed) => {
                if *committed {
                    self.commits.inc();
                }
                self.checkpoint_succeeded();
                health.ok(health::CHECK_COMMIT);
            }
            Err(error) => {
                self.commits_failed.inc();
                health.fail(health::CHECK_COMMIT, format!("last commit failed: {error}"));
            }
        }
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for (_, handler) in self.handlers() {
            totals.handled += handler.handled.get();
            totals.errors += handler.failed.iter().map(Counter::get).sum::<u64>();
        }
        totals.errors += self.unrouted.iter().map(Counter::get).sum::<u64>();
        totals.consumed = self
            .consumed_topic
            .members()
            .iter()
            .chain(&self.consumed_stream.members())
            .map(|(_, c)| c.get())
            .sum();
        let lag = self.lag.members();
        if !lag.is_empty() {
            totals.lag_records = Some(lag.iter().map(|(_, g)| g.get().max(0.0)).sum());
        }
        let behind = self.millis_behind.members();
        if !behind.is_empty() {
            totals.behind_ms = Some(behind.iter().map(|(_, g)| g.get()).fold(0.0, f64::max));
        }
        totals
    }
}
