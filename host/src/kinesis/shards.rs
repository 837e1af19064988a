//! Which shards of a stream to read, and when: a shard created by a split
//! or merge is read only after its parents are finished, so the records of
//! one partition key stay in order across resharding.

use std::collections::{BTreeMap, HashSet};

use super::client::{self, Backoff, KinesisClient, Trouble};

/// A shard as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parents: Vec<String>,
    /// Has an ending sequence number: no new records will come.
    pub closed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("Kinesis stream {0:?} does not exist")]
    Missing(String),
    #[error("cannot list the shards of Kinesis stream {stream:?}: {message}")]
    Failed { stream: String, message: String },
}

/// Every shard of `stream` (`ListShards`, all pages), retrying throttling
/// and transient errors.
pub async fn list(kinesis: &KinesisClient, stream: &str) -> Result<Vec<ShardInfo>, ListError> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    let mut backoff = Backoff::default();
    loop {
        // A request takes either the stream name or a page token.
        let request = match &next_token {
            Some(token) => kinesis.client.list_shards().next_token(token),
            None => kinesis.client.list_shards().stream_name(stream),
        };
        match request.send().await {
            Ok(output) => {
                backoff.reset();
                for shard in output.shards() {
                    let mut parents = Vec::new();
                    parents.extend(shard.parent_shard_id().map(str::to_owned));
                    parents.extend(shard.adjacent_parent_shard_id().map(str::to_owned));
                    shards.push(ShardInfo {
                        id: shard.shard_id().to_owned(),
                        parents,
                        closed: shard
                            .sequence_number_range()
                            .and_then(|r| r.ending_sequence_number())
                            .is_some(),
                    });
                }
                match output.next_token() {
                    Some(token) if !output.shards().is_empty() => next_token = Some(token.into()),
                    _ => return Ok(shards),
                }
            }
            Err(error) => match client::classify(&error) {
                Trouble::Throttled | Trouble::Transient => {
                    let delay = backoff.next_delay();
                    tracing::warn!(stream, "ListShards: {}; retrying", client::describe(&error));
                    tokio::time::sleep(delay).await;
                }
                Trouble::NotFound => return Err(ListError::Missing(stream.to_owned())),
                Trouble::ExpiredIterator | Trouble::Fatal => {
                    return Err(ListError::Failed {
                        stream: stream.to_owned(),
                        message: client::describe(&error),
                    });
                }
            },
        }
    }
}

/// The shards of one stream and how far each got.
#[derive(Debug, Default)]
pub struct Lineage {
    shards: BTreeMap<String, ShardInfo>,
    /// Read to their end (or skipped: closed before a LATEST start).
    finished: HashSet<String>,
    /// Handed to a reader.
    started: HashSet<String>,
}

impl Lineage {
    /// Take a fresh listing (shards only grow; expired ones drop out).
    pub fn update(&mut self, listing: Vec<ShardInfo>) {
        self.shards = listing.into_iter().map(|s| (s.id.clone(), s)).collect();
    }

    pub fn get(&self, id: &str) -> Option<&ShardInfo> {
        self.shards.get(id)
    }

    pub fn finish(&mut self, id: &str) {
        self.finished.insert(id.to_owned());
    }

    pub fn start(&mut self, id: &str) {
        self.started.insert(id.to_owned());
    }

    /// Shards to start now, in id order: not started or finished, and every
    /// parent finished or no longer listed (past the retention period).
    pub fn ready(&self) -> Vec<String> {
        self.shards
            .values()
            .filter(|s| !self.started.contains(&s.id) && !self.finished.contains(&s.id))
            .filter(|s| {
                s.parents
                    .iter()
                    .all(|p| self.finished.contains(p) || !self.shards.contains_key(p))
            })
            .map(|s| s.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            closed,
        }
    }

    #[test]
    fn children_wait_for_every_parent() {
        let mut lineage = Lineage::default();
        // 0 split into 2 and 3; 1 and 2 merged into 4.
        lineage.update(vec![
            shard("0", &[], true),
            shard("1", &[], true),
            shard("2", &["0"], true),
            shard("3", &["0"], false),
            shard("4", &["1", "2"], false),
        ]);
        assert_eq!(lineage.ready(), ["0", "1"]);
        lineage.start("0");
        lineage.start("1");
        assert!(lineage.ready().is_empty());
        lineage.finish("0");
        assert_eq!(lineage.ready(), ["2", "3"]);
        lineage.start("2");
        lineage.start("3");
        lineage.finish("2");
        assert!(lineage.ready().is_empty(), "4 still waits for 1");
        lineage.finish("1");
        assert_eq!(lineage.ready(), ["4"]);
    }

    #[test]
    fn a_parent_past_retention_does_not_block_its_children() {
        let mut lineage = Lineage::default();
        lineage.update(vec![shard("5", &["gone"], false)]);
        assert_eq!(lineage.ready(), ["5"]);
    }
}
