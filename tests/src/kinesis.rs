//! A Kinesis-API server for the end-to-end tests, on 127.0.0.1: kinesalite,
//! optionally answering every Nth read or write with a throttling error
//! (`scripts/kinesis/kinesalite.js`; installed by
//! `scripts/kinesis/setup.sh`). A test client on the real AWS SDK creates
//! streams, writes records and reads streams back.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, ShardIteratorType, StreamStatus};
use tokio::runtime::Runtime;

use crate::{host, root};

/// A Kinesis-API server on a free loopback port, killed on drop.
pub struct KinesisServer {
    child: Child,
    /// Closed when the test process ends, however it ends: the server
    /// then exits too (`--exit-with-stdin`).
    _stdin: ChildStdin,
    pub endpoint: String,
    client: Client,
    runtime: Runtime,
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub shard: String,
    pub sequence: String,
    pub key: String,
    pub data: Vec<u8>,
}

impl StreamRecord {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

fn toolchain() -> PathBuf {
    root().join("target/toolchains")
}

impl KinesisServer {
    /// kinesalite, in memory.
    pub fn kinesalite() -> Self {
        Self::kinesalite_with(&[])
    }

    /// kinesalite answering every `every`th GetRecords, PutRecord and
    /// PutRecords call with ProvisionedThroughputExceededException, and
    /// failing every `every * 2 + 1`th record of the PutRecords calls it
    /// takes.
    pub fn kinesalite_throttling(every: u32) -> Self {
        Self::kinesalite_with(&[
            "--throttle-every",
            &every.to_string(),
            "--fail-put-records-every",
            &(every * 2 + 1).to_string(),
        ])
    }

    /// kinesalite answering every `every`th GetRecords call with
    /// ExpiredIteratorException.
    pub fn kinesalite_expiring_iterators(every: u32) -> Self {
        Self::kinesalite_with(&["--expire-iterators-every", &every.to_string()])
    }

    fn kinesalite_with(extra: &[&str]) -> Self {
        let script = root().join("scripts/kinesis/kinesalite.js");
        assert!(
            toolchain().join("kinesis/node_modules/kinesalite").is_dir(),
            "kinesalite is not installed: run scripts/kinesis/setup.sh setup"
        );
        let mut child = Command::new("node")
            .arg(&script)
            .args(["--port", "0", "--exit-with-stdin"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kinesalite (node)");
        let stdin = child.stdin.take().expect("kinesalite stdin");
        let stdout = child.stdout.take().expect("kinesalite stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("kinesalite's first line");
        let address = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("kinesalite said {line:?}"))
            .to_owned();
        Self::connected(child, stdin, format!("http://{address}"))
    }

    fn connected(child: Child, stdin: ChildStdin, endpoint: String) -> Self {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        KinesisServer {
            child,
            _stdin: stdin,
            endpoint,
            client: Client::from_conf(config),
            runtime,
        }
    }

    /// Create a stream and wait until it is ACTIVE.
    pub fn create_stream(&self, name: &str, shards: i32) {
        self.runtime.block_on(async {
            self.client
                .create_stream()
                .stream_name(name)
                .shard_count(shards)
                .send()
                .await
                .expect("CreateStream");
        });
        self.wait_active(name);
    }

    pub fn wait_active(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.runtime.block_on(async {
                self.client
                    .describe_stream_summary()
                    .stream_name(name)
                    .send()
                    .await
                    .expect("DescribeStreamSummary")
                    .stream_description_summary()
                    .map(|s| s.stream_status().clone())
            });
            if status == Some(StreamStatus::Active) {
                return;
            }
            assert!(Instant::now() < deadline, "stream {name} not ACTIVE");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Split `shard` at the middle of its hash key range; returns the two
    /// children.
    pub fn split_shard(&self, stream: &str, shard: &str) -> (String, String) {
        let before = self.shards(stream);
        let found = self
            .listing(stream)
            .into_iter()
            .find(|s| s.shard_id() == shard)
            .expect("shard listed");
        let hash_keys = found.hash_key_range().expect("hash key range");
        let range = (
            hash_keys
                .starting_hash_key()
                .parse::<u128>()
                .expect("start"),
            hash_keys.ending_hash_key().parse::<u128>().expect("end"),
        );
        let middle = range.0 + (range.1 - range.0) / 2 + 1;
        self.runtime.block_on(async {
            self.client
                .split_shard()
                .stream_name(stream)
                .shard_to_split(shard)
                .new_starting_hash_key(middle.to_string())
                .send()
                .await
                .expect("SplitShard");
        });
        self.wait_active(stream);
        let children: Vec<String> = self
            .shards(stream)
            .into_iter()
            .filter(|s| !before.contains(s))
            .collect();
        assert_eq!(children.len(), 2, "{children:?}");
        (children[0].clone(), children[1].clone())
    }

    /// Merge two adjacent shards.
    pub fn merge_shards(&self, stream: &str, shard: &str, adjacent: &str) {
        self.runtime.block_on(async {
            self.client
                .merge_shards()
                .stream_name(stream)
                .shard_to_merge(shard)
                .adjacent_shard_to_merge(adjacent)
                .send()
                .await
                .expect("MergeShards");
        });
        self.wait_active(stream);
    }

    /// Write records in order with PutRecords (one record per key per call,
    /// so a retried record never overtakes; failed ones are retried).
    pub fn put(&self, stream: &str, records: &[(String, Vec<u8>)]) {
        let mut pending: Vec<(String, Vec<u8>)> = records.to_vec();
        while !pending.is_empty() {
            let mut batch = Vec::new();
            let mut rest = Vec::new();
            let mut keys = std::collections::HashSet::new();
            for record in pending {
                if batch.len() < 500 && keys.insert(record.0.clone()) {
                    batch.push(record);
                } else {
                    keys.insert(record.0.clone());
                    rest.push(record);
                }
            }
            let entries: Vec<PutRecordsRequestEntry> = batch
                .iter()
                .map(|(key, data)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(data.clone()))
                        .build()
                        .expect("entry")
                })
                .collect();
            let sent = self.runtime.block_on(async {
                self.client
                    .put_records()
                    .stream_name(stream)
                    .set_records(Some(entries))
                    .send()
                    .await
            });
            let output = match sent {
                Ok(output) => output,
                Err(error) => {
                    // Throttled (see kinesalite_throttling): again later.
                    let text = format!("{error:?}");
                    assert!(text.contains("ProvisionedThroughputExceeded"), "{text}");
                    std::thread::sleep(Duration::from_millis(20));
                    batch.extend(rest);
                    pending = batch;
                    continue;
                }
            };
            let mut failed: Vec<(String, Vec<u8>)> = batch
                .into_iter()
                .zip(output.records())
                .filter(|(_, r)| r.error_code().is_some())
                .map(|(record, _)| record)
                .collect();
            failed.extend(rest);
            pending = failed;
        }
    }

    /// Every shard's id, parents first.
    pub fn shards(&self, stream: &str) -> Vec<String> {
        self.listing(stream)
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect()
    }

    fn listing(&self, stream: &str) -> Vec<Shard> {
        self.runtime.block_on(async {
            self.client
                .list_shards()
                .stream_name(stream)
                .send()
                .await
                .expect("ListShards")
                .shards()
                .to_vec()
        })
    }

    /// Every record of every shard, shard by shard, each in order.
    pub fn read_all(&self, stream: &str) -> Vec<StreamRecord> {
        let mut all = Vec::new();
        for shard in self.shards(stream) {
            all.extend(self.read_shard(stream, &shard));
        }
        all
    }

    fn read_shard(&self, stream: &str, shard: &str) -> Vec<StreamRecord> {
        self.runtime.block_on(async {
            let mut records: Vec<StreamRecord> = Vec::new();
            let mut iterator = self.iterator(stream, shard, None).await;
            while let Some(current) = iterator {
                let sent = self
                    .client
                    .get_records()
                    .shard_iterator(current)
                    .limit(10_000)
                    .send()
                    .await;
                let output = match sent {
                    Ok(output) => output,
                    Err(error) => {
                        // Injected faults (kinesalite_expiring_iterators,
                        // kinesalite_throttling): go on after the last record.
                        let text = format!("{error:?}");
                        assert!(
                            text.contains("ExpiredIterator")
                                || text.contains("ProvisionedThroughputExceeded"),
                            "GetRecords: {text}"
                        );
                        let after = records.last().map(|r| r.sequence.clone());
                        iterator = self.iterator(stream, shard, after).await;
                        continue;
                    }
                };
                for record in output.records() {
                    records.push(StreamRecord {
                        shard: shard.to_owned(),
                        sequence: record.sequence_number().to_owned(),
                        key: record.partition_key().unwrap_or_default().to_owned(),
                        data: record.data().as_ref().to_vec(),
                    });
                }
                if output.records().is_empty() && output.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                iterator = output.next_shard_iterator().map(str::to_owned);
            }
            records
        })
    }

    /// An iterator at the start of `shard`, or after `after`.
    async fn iterator(&self, stream: &str, shard: &str, after: Option<String>) -> Option<String> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard);
        let request = match after {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        request
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator()
            .map(str::to_owned)
    }
}

impl Drop for KinesisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A `logpipe-host` command set up for `server`: local credentials, the
/// region, the endpoint, and no instance-metadata lookups (loopback only).
pub fn host_for(server: &KinesisServer) -> Command {
    let mut command = host();
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("LOGPIPE_KINESIS_ENDPOINT", &server.endpoint);
    command
}

/// `logpipe-host run` of `handlers` on `stream`, offsets in `offsets`,
/// polling idle shards every 100 ms.
pub fn run_stream_command(
    server: &KinesisServer,
    handlers: &Path,
    stream: &str,
    offsets: &Path,
) -> Command {
    let mut command = host_for(server);
    command
        .arg("run")
        .arg("--handlers")
        .arg(handlers)
        .args(["--stream", stream, "--kinesis-poll-interval-ms", "100"])
        .arg("--offsets")
        .arg(offsets);
    command
}
