//! The metric primitives: counters, gauges and histograms made of atomics,
//! and families of them keyed by label values.
//!
//! Recording is one or a few relaxed atomic operations. Looking a labelled
//! metric up in its family takes a lock, so callers resolve the metrics they
//! need once (per handler, per partition) and keep the `Arc`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as the bits of an `f64`).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Upper bounds, in seconds, of the handler latency buckets: a handler call
/// costs about a microsecond plus the guest's work, and the default
/// deadline is one second.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A distribution of durations over fixed buckets. Each bucket counts only
/// its own observations; the encoder makes them cumulative.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, plus the overflow bucket (`+Inf`).
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy for encoding: cumulative counts per bound
    /// (the last one is `+Inf`), the sum in seconds, and the count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets' total, not `count`: an observation racing with
            // the snapshot must not make `+Inf` differ from `_count`.
            count: running,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// Label values in the order of the family's label names.
pub type LabelValues = Vec<String>;

/// Metrics of one name, one per combination of label values.
#[derive(Debug)]
pub struct Family<T> {
    pub labels: &'static [&'static str],
    members: Mutex<BTreeMap<LabelValues, Arc<T>>>,
}

impl<T: Default> Family<T> {
    pub fn new(labels: &'static [&'static str]) -> Self {
        Family {
            labels,
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// The metric for these label values, created at zero if new.
    pub fn get(&self, values: &[&str]) -> Arc<T> {
        debug_assert_eq!(values.len(), self.labels.len());
        let key: LabelValues = values.iter().map(|v| (*v).to_owned()).collect();
        self.lock().entry(key).or_default().clone()
    }

    /// Every member, in label order.
    pub fn members(&self) -> Vec<(LabelValues, Arc<T>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<LabelValues, Arc<T>>> {
        // Only maps of plain atomics: a panic elsewhere cannot leave them
        // inconsistent, so a poisoned lock is still usable.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_total() {
        let histogram = Histogram::new(&[0.001, 0.01, 0.1]);
        for ms in [0, 1, 5, 5, 50, 2000] {
            histogram.observe(Duration::from_millis(ms));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative, [2, 4, 5, 6]);
        assert_eq!(snapshot.count, 6);
        assert!((snapshot.sum_seconds - 2.061).abs() < 1e-9);
    }

    #[test]
    fn a_family_hands_out_one_metric_per_label_values() {
        let family: Family<Counter> = Family::new(&["handler"]);
        family.get(&["a"]).inc();
        family.get(&["a"]).inc();
        family.get(&["b"]).add(5);
        let members: Vec<(LabelValues, u64)> = family
            .members()
            .into_iter()
            .map(|(labels, counter)| (labels, counter.get()))
            .collect();
        assert_eq!(
            members,
            [(vec!["a".to_owned()], 2), (vec!["b".to_owned()], 5)]
        );
    }
}
