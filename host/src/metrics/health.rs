//! Readiness: a registry of named components (one per consumer), each with
//! named checks that are either fine or failing with a reason. The process
//! is ready when every check of every component is fine, so several
//! consumers in one process are ANDed.
//!
//! Checks change at checkpoint and poll frequency, not per record: a mutex
//! is fine here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Checks every consumer reports: its partitions or shards are assigned...
pub const CHECK_ASSIGNED: &str = "assigned";
/// ...and its last checkpoint succeeded (failing until the first one).
pub const CHECK_COMMIT: &str = "commit";

#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<Vec<Arc<HealthComponent>>>,
}

/// One consumer's checks, e.g. `assigned`, `commit`, `broker`.
#[derive(Debug)]
pub struct HealthComponent {
    name: String,
    /// `None`: fine; `Some(reason)`: failing.
    checks: Mutex<BTreeMap<&'static str, Option<String>>>,
}

/// What `/health` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub ready: bool,
    /// `component: reason`, one per failing check.
    pub reasons: Vec<String>,
}

impl Health {
    /// Register a component; it is ready once all its checks are fine.
    pub fn component(&self, name: &str) -> Arc<HealthComponent> {
        let component = Arc::new(HealthComponent {
            name: name.to_owned(),
            checks: Mutex::new(BTreeMap::new()),
        });
        lock(&self.components).push(component.clone());
        component
    }

    pub fn report(&self) -> HealthReport {
        let components = lock(&self.components).clone();
        let mut reasons = Vec::new();
        if components.is_empty() {
            reasons.push("no consumer started yet".to_owned());
        }
        for component in components {
            for reason in lock(&component.checks).values().flatten() {
                reasons.push(format!("{}: {reason}", component.name));
            }
        }
        HealthReport {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}

impl HealthComponent {
    pub fn ok(&self, check: &'static str) {
        lock(&self.checks).insert(check, None);
    }

    pub fn fail(&self, check: &'static str, reason: impl Into<String>) {
        lock(&self.checks).insert(check, Some(reason.into()));
    }

    /// Whether `check` is currently failing.
    pub fn failing(&self, check: &'static str) -> bool {
        matches!(lock(&self.checks).get(check), Some(Some(_)))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps of strings: still consistent after a panic elsewhere.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_of_every_component_is_fine() {
        let health = Health::default();
        assert!(!health.report().ready, "nothing registered is not ready");
        let first = health.component("kafka");
        let second = health.component("kinesis");
        first.fail("assigned", "partitions not assigned yet");
        second.ok("assigned");
        let report = health.report();
        assert!(!report.ready);
        assert_eq!(report.reasons, ["kafka: partitions not assigned yet"]);
        first.ok("assigned");
        assert!(health.report().ready);
        second.fail("broker", "down");
        assert!(second.failing("broker"));
        assert_eq!(health.report().reasons, ["kinesis: down"]);
    }
}
