//! Consumer groups (`--offset-store kafka`): the broker assigns partitions
//! to the hosts of a group and keeps their offsets.
//!
//! Offset rule (at least once): a partition's offset is committed to Kafka
//! only once every record before it was handled and everything those
//! handlers produced was acknowledged. Before a partition is given away in
//! a rebalance, the producer is flushed and the offsets of every handled
//! record of it are committed, so the next owner starts right after them;
//! records handled after the last commit are handled again only when a host
//! dies without that chance (a crash, `kill -9`).

use std::collections::HashMap;
use std::sync::Mutex;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};

/// A change of this host's share of the group, for the consume loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Waits for the records given to workers to be handled and for every
/// produced record to be acknowledged; false when one was not (its trigger
/// must then not be committed).
pub type Flush = Box<dyn Fn() -> bool + Send + Sync>;

/// What the consume loop and librdkafka's rebalance callback share.
pub struct GroupHooks {
    /// Next offset after the last handled record, per partition, not yet
    /// committed to Kafka.
    handled: Mutex<HashMap<(String, i32), i64>>,
    events: Mutex<Vec<Membership>>,
    flush: Flush,
}

impl GroupHooks {
    pub fn new(flush: Flush) -> Self {
        GroupHooks {
            handled: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            flush,
        }
    }

    /// A record of `topic[partition]` was handled; `next` follows it.
    pub fn handled(&self, topic: &str, partition: i32, next: i64) {
        if let Ok(mut handled) = self.handled.lock() {
            handled.insert((topic.to_owned(), partition), next);
        }
    }

    /// Offsets committed by the loop: forget what they cover.
    pub fn committed(&self, offsets: &[(String, i32, i64)]) {
        if let Ok(mut handled) = self.handled.lock() {
            for (topic, partition, next) in offsets {
                let key = (topic.clone(), *partition);
                if handled.get(&key).is_some_and(|h| h <= next) {
                    handled.remove(&key);
                }
            }
        }
    }

    /// Whether `topic[partition]` was revoked by a rebalance whose event the
    /// loop has not taken yet (it can no longer be paused, resumed or
    /// sought).
    pub fn revoking(&self, topic: &str, partition: i32) -> bool {
        self.events.lock().is_ok_and(|events| {
            events.iter().any(|event| match event {
                Membership::Revoked(list) => {
                    list.iter().any(|(t, p)| t == topic && *p == partition)
                }
                Membership::Assigned(_) => false,
            })
        })
    }

    /// Assignment changes since the last call, oldest first.
    pub fn take_events(&self) -> Vec<Membership> {
        self.events
            .lock()
            .map(|mut events| std::mem::take(&mut *events))
            .unwrap_or_default()
    }

    fn push(&self, event: Membership) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    /// Called by librdkafka inside `poll`, before `revoked` is given away.
    /// The loop is between two records; workers may still be handling some
    /// (the flush waits for them).
    pub fn before_revoke<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) {
        let partitions = pairs(revoked);
        // First let the workers finish what they were given and the broker
        // acknowledge its output: only then is `handled` complete.
        let flushed = (self.flush)();
        let mut commit = TopicPartitionList::new();
        if let Ok(mut handled) = self.handled.lock() {
            for key in &partitions {
                if let Some(next) = handled.remove(key) {
                    let _ = commit.add_partition_offset(&key.0, key.1, Offset::Offset(next));
                }
            }
        }
        if commit.count() > 0 {
            if flushed {
                match consumer.commit(&commit, CommitMode::Sync) {
                    Ok(()) => tracing::info!(
                        partitions = commit.count(),
                        "committed handled records before giving partitions away"
                    ),
                    Err(e) => tracing::warn!(
                        "cannot commit before giving partitions away ({e}): their next owner \
                         handles the records since the last commit again"
                    ),
                }
            } else {
                tracing::warn!(
                    "produced records not acknowledged before a rebalance: not committing; the \
                     next owner handles those records again"
                );
            }
        }
        tracing::info!(partitions = ?partitions, "partitions revoked");
        self.push(Membership::Revoked(partitions));
    }

    pub fn after_assign(&self, assigned: &TopicPartitionList) {
        let partitions = pairs(assigned);
        tracing::info!(partitions = ?partitions, "partitions assigned");
        self.push(Membership::Assigned(partitions));
    }

    pub fn rebalance_error(&self, error: &dyn std::fmt::Display) {
        tracing::warn!("consumer group rebalance failed: {error}");
    }
}

fn pairs(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// Dispatch librdkafka's rebalance callbacks to the hooks.
pub fn pre_rebalance<C: ConsumerContext>(
    hooks: &GroupHooks,
    consumer: &BaseConsumer<C>,
    rebalance: &Rebalance<'_>,
) {
    match rebalance {
        Rebalance::Revoke(list) => hooks.before_revoke(consumer, list),
        Rebalance::Assign(_) => {}
        Rebalance::Error(e) => hooks.rebalance_error(e),
    }
}

pub fn post_rebalance(hooks: &GroupHooks, rebalance: &Rebalance<'_>) {
    if let Rebalance::Assign(list) = rebalance {
        hooks.after_assign(list);
    }
}

/// fnmatch patterns as the librdkafka subscription regex (`^` marks a
/// pattern for librdkafka).
pub fn subscription_regex(pattern: &str) -> String {
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            '[' => {
                let mut class = String::new();
                let mut closed = false;
                if chars.peek() == Some(&'!') {
                    chars.next();
                    class.push('^');
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                    class.push_str("\\]");
                }
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    if c == '\\' || c == '[' {
                        class.push('\\');
                    }
                    class.push(c);
                }
                if closed {
                    regex.push('[');
                    regex.push_str(&class);
                    regex.push(']');
                } else {
                    regex.push_str("\\[");
                    regex.push_str(&class.replace("\\]", "]"));
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => regex.push(c),
            c => {
                regex.push('\\');
                regex.push(c);
            }
        }
    }
    regex.push('$');
    regex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_patterns_become_anchored_regexes() {
        assert_eq!(subscription_regex("content.*"), "^content\\..*$");
        assert_eq!(subscription_regex("log-[0-9]?"), "^log-[0-9].$");
        assert_eq!(subscription_regex("a[!x]"), "^a[^x]$");
    }

    #[test]
    fn commits_forget_what_they_cover() {
        let hooks = GroupHooks::new(Box::new(|| true));
        hooks.handled("t", 0, 10);
        hooks.handled("t", 1, 5);
        hooks.committed(&[("t".into(), 0, 10), ("t".into(), 1, 3)]);
        let handled = hooks.handled.lock().unwrap();
        assert_eq!(handled.get(&("t".to_owned(), 0)), None);
        assert_eq!(handled.get(&("t".to_owned(), 1)), Some(&5));
    }
}
