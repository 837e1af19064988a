//! Names of the retry and dead-letter topics (django-kafka's scheme), and
//! creating the ones that are missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::config::KafkaSettings;
use super::metadata::{self, TopicError};

/// `{group}.{topic}.{retry}.{n}` and `{group}.{topic}.{dlt}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    pub group: String,
    pub retry_suffix: String,
    pub dlt_suffix: String,
}

impl TopicNames {
    /// The topic of retry number `retry` (1 for the first) of `topic`.
    pub fn retry(&self, topic: &str, retry: u32) -> String {
        format!("{}.{topic}.{}.{retry}", self.group, self.retry_suffix)
    }

    /// The dead-letter topic of `topic`.
    pub fn dead_letter(&self, topic: &str) -> String {
        format!("{}.{topic}.{}", self.group, self.dlt_suffix)
    }

    /// Whether `topic` is named like one of this group's retry or
    /// dead-letter topics.
    pub fn is_failure_topic(&self, topic: &str) -> bool {
        let Some(rest) = topic.strip_prefix(&format!("{}.", self.group)) else {
            return false;
        };
        if rest.ends_with(&format!(".{}", self.dlt_suffix)) {
            return true;
        }
        match rest.rsplit_once('.') {
            Some((head, n)) => {
                !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && head.ends_with(&format!(".{}", self.retry_suffix))
            }
            None => false,
        }
    }
}

/// Retry and dead-letter topics that `topics` (name, partitions) need:
/// `retry_topics` retry topics each, and a dead-letter topic each when
/// `dead_letter`. They get the partition count of their topic.
pub fn failure_topics(
    names: &TopicNames,
    topics: &[(String, i32)],
    retry_topics: u32,
    dead_letter: bool,
) -> Vec<(String, i32)> {
    let mut needed = Vec::new();
    for (topic, partitions) in topics {
        for retry in 1..=retry_topics {
            needed.push((names.retry(topic, retry), *partitions));
        }
        if dead_letter {
            needed.push((names.dead_letter(topic), *partitions));
        }
    }
    needed
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("cannot create topic {topic:?}: {reason}; create it yourself or fix the broker's ACLs")]
    Create { topic: String, reason: String },
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Make sure every `(name, partitions)` topic exists, creating the missing
/// ones. Existing topics are left as they are.
pub fn ensure(settings: &KafkaSettings, topics: &[(String, i32)]) -> Result<(), CreateError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        settings
            .admin_config()
            .create()
            .map_err(|e| CreateError::Create {
                topic: topics[0].0.clone(),
                reason: e.to_string(),
            })?;
    let mut missing = Vec::new();
    for (name, partitions) in topics {
        match metadata::partitions(admin.inner(), name, &settings.bootstrap_servers, TIMEOUT) {
            Ok(_) => {}
            Err(TopicError::Missing(_)) => missing.push(NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(-1),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CreateError::Create {
            topic: missing[0].name.to_owned(),
            reason: e.to_string(),
        })?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = runtime
        .block_on(admin.create_topics(missing.iter(), &options))
        .map_err(|e| CreateError::Create {
            topic: missing[0].name.to_owned(),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(CreateError::Create {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
