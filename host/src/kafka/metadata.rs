//! Topic metadata: which partitions a topic has, and whether it exists.

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} does not exist")]
    Missing(String),
    #[error("cannot read metadata of topic {topic:?} from {bootstrap}: {source}")]
    Metadata {
        topic: String,
        bootstrap: String,
        source: Box<KafkaError>,
    },
}

/// The partition ids of `topic`, sorted. A topic the broker does not know
/// is [`TopicError::Missing`]; topics are never auto-created by reading.
pub fn partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    bootstrap: &str,
    timeout: Duration,
) -> Result<Vec<i32>, TopicError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| TopicError::Metadata {
            topic: topic.to_owned(),
            bootstrap: bootstrap.to_owned(),
            source: Box::new(source),
        })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(TopicError::Missing(topic.to_owned()));
    };
    match found.error() {
        None => {}
        Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            return Err(TopicError::Missing(topic.to_owned()));
        }
        Some(code) => {
            return Err(TopicError::Metadata {
                topic: topic.to_owned(),
                bootstrap: bootstrap.to_owned(),
                source: Box::new(KafkaError::MetadataFetch(code.into())),
            });
        }
    }
    let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    if ids.is_empty() {
        return Err(TopicError::Missing(topic.to_owned()));
    }
    ids.sort_unstable();
    Ok(ids)
}
