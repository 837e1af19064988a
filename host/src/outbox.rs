//! The transactional outbox: in outbox mode a handler's records are stored
//! with its triggering record's offset and store writes, in one SQLite
//! transaction, and published only after that transaction commits (by
//! [`crate::kafka::outbox::Relay`] for Kafka, by the Kinesis source for
//! streams).

use std::sync::Arc;

use crate::component::{MessageSink, Produced};
use crate::kafka::KafkaSink;
use crate::kinesis::KinesisSink;
use crate::state::{OutboxRecord, StateStore};

/// Where outbox rows will be published: asked at `produce` time whether a
/// topic or stream exists, so the handler learns of a missing one at once.
pub trait Destination: Send + Sync {
    fn check(&self, name: &str) -> Result<(), String>;
}

impl Destination for KafkaSink {
    fn check(&self, topic: &str) -> Result<(), String> {
        self.check_topic(topic).map_err(|e| e.to_string())
    }
}

impl Destination for KinesisSink {
    fn check(&self, stream: &str) -> Result<(), String> {
        self.check_stream(stream).map_err(|e| e.to_string())
    }
}

/// Outbox mode's [`MessageSink`]: checks the destination, then stages the
/// record with the record being handled.
pub struct OutboxSink {
    pub destination: Arc<dyn Destination>,
    pub state: Arc<StateStore>,
}

impl MessageSink for OutboxSink {
    fn send(&self, record: Produced<'_>) -> Result<(), String> {
        self.destination.check(record.topic)?;
        let id = record.id();
        self.state.push_outbox(OutboxRecord {
            topic: record.topic.to_owned(),
            key: record.key.map(str::to_owned),
            payload: record.payload,
            id,
        });
        Ok(())
    }
}
