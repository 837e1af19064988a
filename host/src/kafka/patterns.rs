//! Topic patterns (`--topic 'content.*'`), as kafkaesk subscribes: Python
//! `fnmatch` syntax, matched against the broker's topic list at start and
//! again every `--pattern-refresh-ms`, so topics created later are picked up.

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::error::KafkaError;

use super::topics::TopicNames;

/// Whether a `--topic` value is a pattern rather than a topic name (`*`,
/// `?` and `[` never occur in Kafka topic names).
pub fn is_pattern(topic: &str) -> bool {
    topic.contains(['*', '?', '['])
}

/// Python's `fnmatch.fnmatchcase`: `*` any run of characters (dots
/// included), `?` one character, `[seq]` / `[!seq]` one character in / not
/// in the set (with `a-z` ranges). An unclosed `[` matches itself.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches_from(&pattern, &name)
}

fn matches_from(pattern: &[char], name: &[char]) -> bool {
    let Some((&first, rest)) = pattern.split_first() else {
        return name.is_empty();
    };
    match first {
        // Try every split; topic names are short.
        '*' => (0..=name.len()).any(|skip| matches_from(rest, &name[skip..])),
        '?' => !name.is_empty() && matches_from(rest, &name[1..]),
        '[' => match class(rest) {
            Some((set, after)) => name
                .split_first()
                .is_some_and(|(c, name_rest)| set.contains(*c) && matches_from(after, name_rest)),
            None => name.first() == Some(&'[') && matches_from(rest, &name[1..]),
        },
        literal => name.first() == Some(&literal) && matches_from(rest, &name[1..]),
    }
}

/// A `[...]` set (what follows the `[`), and the pattern after its `]`.
struct CharClass {
    negated: bool,
    items: Vec<(char, char)>,
}

impl CharClass {
    fn contains(&self, c: char) -> bool {
        self.items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != self.negated
    }
}

fn class(pattern: &[char]) -> Option<(CharClass, &[char])> {
    let (negated, mut i) = match pattern.first() {
        Some('!') => (true, 1),
        _ => (false, 0),
    };
    let mut items = Vec::new();
    // As in Python, a `]` right after `[` or `[!` is a member.
    let start = i;
    while i < pattern.len() {
        let c = pattern[i];
        if c == ']' && i > start {
            return Some((CharClass { negated, items }, &pattern[i + 1..]));
        }
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|c| *c != ']') {
            items.push((c, pattern[i + 2]));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
    None
}

/// The broker's topics that `patterns` select, sorted: never internal
/// topics (`__consumer_offsets`...) unless the pattern itself starts with
/// `__`, and never this group's own retry and dead-letter topics, which
/// `*` would otherwise feed back into the consumer.
pub fn matching_topics<C: ClientContext>(
    client: &Client<C>,
    patterns: &[String],
    names: &TopicNames,
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let metadata = client.fetch_metadata(None, timeout)?;
    let mut found: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_owned())
        .filter(|name| selected(patterns, names, name))
        .collect();
    found.sort();
    Ok(found)
}

fn selected(patterns: &[String], names: &TopicNames, topic: &str) -> bool {
    if names.is_failure_topic(topic) {
        return false;
    }
    patterns
        .iter()
        .any(|p| fnmatch(p, topic) && (!topic.starts_with("__") || p.starts_with("__")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_like_python() {
        assert!(fnmatch("content.*", "content.articles"));
        assert!(fnmatch("content.*", "content.a.b"));
        assert!(!fnmatch("content.*", "contents"));
        assert!(fnmatch("*", ""));
        assert!(fnmatch("a?c", "abc"));
        assert!(!fnmatch("a?c", "ac"));
        assert!(fnmatch("log-[0-9]", "log-7"));
        assert!(!fnmatch("log-[!0-9]", "log-7"));
        assert!(fnmatch("log-[!0-9]", "log-x"));
        assert!(fnmatch("[]]x", "]x"));
        assert!(fnmatch("a[b", "a[b"));
        assert!(!fnmatch("Content.*", "content.x"));
    }

    #[test]
    fn patterns_skip_failure_and_internal_topics() {
        let names = TopicNames {
            group: "g".into(),
            retry_suffix: "retry".into(),
            dlt_suffix: "dlt".into(),
        };
        let all = vec!["*".to_owned()];
        assert!(selected(&all, &names, "people"));
        assert!(!selected(&all, &names, "g.people.retry.1"));
        assert!(!selected(&all, &names, "g.people.dlt"));
        assert!(!selected(&all, &names, "__consumer_offsets"));
        assert!(selected(&["__*".to_owned()], &names, "__consumer_offsets"));
        assert!(!is_pattern("people"));
        assert!(is_pattern("content.*"));
    }
}
