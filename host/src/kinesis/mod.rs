//! AWS Kinesis: the client, shard discovery, per-shard readers, the consume
//! loop and the writer.
//!
//! - [`client`]: region, credentials, endpoint; how failures are sorted
//!   (throttled, transient, expired iterator, fatal) and the back-off.
//! - [`shards`]: `ListShards` and the parent/child order of resharding.
//! - [`reader`]: one task per shard fetching `GetRecords` pages.
//! - [`source`]: the consume loop and its offset rule.
//! - [`sink`]: `PutRecord` / `PutRecords`, in order per partition key.
//! - [`seq_cache`]: last sequence number per key, for ordering.

pub mod client;
pub mod reader;
pub mod seq_cache;
pub mod shards;
pub mod sink;
pub mod source;

pub use client::{KinesisClient, KinesisSettings};
pub use sink::KinesisSink;
