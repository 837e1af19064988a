//! Kafka: client configuration, topic metadata, the envelope producer and
//! the consumer loop.

pub mod config;
pub mod consumer;
pub mod group;
pub mod headers;
pub mod metadata;
pub mod observe;
pub mod outbox;
pub mod patterns;
pub mod positions;
pub mod producer;
pub mod record;
pub mod settle;
pub mod topics;
pub mod workers;

pub use config::KafkaSettings;
pub use metadata::TopicError;
pub use producer::{DeliveryError, KafkaSink};
