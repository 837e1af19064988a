//! The last sequence number written per (stream, partition key), for
//! `PutRecord`'s `SequenceNumberForOrdering` (logpipe's
//! `KINESIS_SEQ_NUM_CACHE_SIZE`): a bounded least-recently-used map per
//! stream. A key that was evicted is written without it, as its first
//! record was.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct SequenceCache {
    capacity: usize,
    streams: HashMap<String, StreamCache>,
}

#[derive(Debug, Default)]
struct StreamCache {
    /// key -> (sequence number, last use).
    entries: HashMap<String, (String, u64)>,
    /// last use -> key: the oldest is evicted first.
    by_use: BTreeMap<u64, String>,
    clock: u64,
}

impl SequenceCache {
    /// Keep at most `capacity` keys per stream (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        SequenceCache {
            capacity,
            streams: HashMap::new(),
        }
    }

    pub fn get(&mut self, stream: &str, key: &str) -> Option<String> {
        let cache = self.streams.get_mut(stream)?;
        let (sequence, used) = cache.entries.get_mut(key)?;
        cache.clock += 1;
        cache.by_use.remove(used);
        *used = cache.clock;
        cache.by_use.insert(cache.clock, key.to_owned());
        Some(sequence.clone())
    }

    pub fn put(&mut self, stream: &str, key: &str, sequence: String) {
        if self.capacity == 0 {
            return;
        }
        let cache = self.streams.entry(stream.to_owned()).or_default();
        cache.clock += 1;
        let now = cache.clock;
        if let Some((_, used)) = cache.entries.insert(key.to_owned(), (sequence, now)) {
            cache.by_use.remove(&used);
        }
        cache.by_use.insert(now, key.to_owned());
        while cache.entries.len() > self.capacity {
            let Some((_, oldest)) = cache.by_use.pop_first() else {
                break;
            };
            cache.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_key_per_stream() {
        let mut cache = SequenceCache::new(2);
        cache.put("s", "a", "1".into());
        cache.put("s", "b", "2".into());
        cache.put("t", "a", "9".into());
        assert_eq!(cache.get("s", "a").as_deref(), Some("1")); // a is now newer than b
        cache.put("s", "c", "3".into());
        assert_eq!(cache.get("s", "b"), None);
        assert_eq!(cache.get("s", "a").as_deref(), Some("1"));
        assert_eq!(cache.get("s", "c").as_deref(), Some("3"));
        assert_eq!(cache.get("t", "a").as_deref(), Some("9"));
        cache.put("s", "a", "4".into());
        assert_eq!(cache.get("s", "a").as_deref(), Some("4"));
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let mut cache = SequenceCache::new(0);
        cache.put("s", "a", "1".into());
        assert_eq!(cache.get("s", "a"), None);
    }
}
