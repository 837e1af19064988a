//! Command-line interface. Every flag can also be set from the environment
//! as `LOGPIPE_<FLAG>` (for example `LOGPIPE_BOOTSTRAP_SERVERS`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use std::sync::Arc;

use crate::component::ProduceSettings;
use crate::config::KafkaTables;
use crate::envelope::Format;
use crate::kafka::KafkaSettings;
use crate::kafka::config::parse_property;
use crate::logging::LogFormat;
use crate::policy::{Action, ErrorClass, Policies, RetryPolicy, Seconds};

#[derive(Debug, Parser)]
#[command(
    name = "logpipe-host",
    version,
    about = "Run logpipe message handlers as sandboxed WebAssembly components over Kafka or Kinesis",
    after_help = "Examples:
  # try it: an embedded Kafka-protocol cluster, the example handlers, two topics
  logpipe-host dev --handlers target/handlers --topic people --topic echo

  # consume from a broker; offsets go to ./logpipe-offsets.sqlite3
  logpipe-host run --handlers ./handlers --topic people --bootstrap-servers 127.0.0.1:9092

  # the same handlers over a Kinesis stream (AWS credentials and region from the usual chain)
  logpipe-host run --handlers ./handlers --stream people

  # send a message, rendered exactly as django-logpipe renders it
  logpipe-host produce --topic people --type person --version 1 \\
      '{\"uuid\":\"5b0b3f4e-2a47-4b6e-9d6e-6d3c1a9f2b11\",\"first_name\":\"Joe\",\"last_name\":\"Schmoe\"}'"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `logpipe_host=debug,guest=trace`.
    #[arg(long, global = true, env = "LOGPIPE_LOG", default_value = "info")]
    pub log: String,

    /// TOML config file: every option as a key (`bootstrap-servers = "..."`), django-logpipe's setting names, [kafka.*] property tables, [[consumer]] blocks. Command line and LOGPIPE_* win over it.
    #[arg(long, global = true, env = "LOGPIPE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr: `text` (colours on a terminal) or `json` (one object per line).
    #[arg(long, global = true, env = "LOGPIPE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume Kafka topics (--topic) or Kinesis streams (--stream) and hand each record to the handler of its (type, version).
    #[command(
        after_help = "Exit status: 0 when stopped by --consumer-timeout-ms or a signal, \
3 when a record failed (handler asked to retry or trapped) and its partition (or shard) was \
stopped after the others were drained, 1 on any other error.

Examples:
  logpipe-host run --handlers ./handlers --topic people --topic orders \\
      --bootstrap-servers 127.0.0.1:9092 --offsets /var/lib/logpipe/offsets.sqlite3
  AWS_REGION=eu-west-1 logpipe-host run --handlers ./handlers --stream people \\
      --kinesis-iterator LATEST"
    )]
    Run(RunArgs),
    /// Produce logpipe envelopes: one BODY_JSON argument, or one JSON body per stdin line.
    #[command(after_help = "Examples:
  logpipe-host produce --topic people --type person --version 1 --key-field uuid '{\"uuid\":\"...\"}'
  cat people.jsonl | logpipe-host produce --topic people --type person --version 1 --key-field uuid")]
    Produce(ProduceArgs),
    /// Start an embedded Kafka-protocol cluster on 127.0.0.1 and run the handlers against it.
    #[command(
        after_help = "The cluster is librdkafka's in-process mock cluster: records live in \
memory and vanish on exit. Produce into it from another terminal with
  logpipe-host produce --bootstrap-servers <printed address> --topic people --type person --version 1 '{...}'"
    )]
    Dev(DevArgs),
    /// Inspect a handlers folder.
    #[command(subcommand)]
    Handlers(HandlersCommand),
    /// Read the handlers' key-value store (in the offsets database).
    #[command(subcommand)]
    Store(StoreCommand),
    /// List, set, reset, export and import stored positions (Kafka offsets, Kinesis shard positions).
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// Check a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure throughput and host overhead on a local broker and print a table (a benchmark, not a test).
    #[command(after_help = "Scenarios, on the same pre-loaded records:
  a  a raw rdkafka consumer that only counts records (the physical limit)
  b  `logpipe-host run` with the no-op guest
  c  `logpipe-host run` with the echo guest (one produce per record)
  d  in process, no broker: host work per record beside the guest call itself

Without --bootstrap-servers a tansu broker is started on a free 127.0.0.1 port
(scripts/setup --broker installs it). Build with --release, or the figures mean
nothing: cargo build --release -p logpipe-host && scripts/build-guests &&
target/release/logpipe-host bench")]
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate --config and print the settings `run` would use, with where each comes from (secrets masked).
    #[command(after_help = "Exit status: 0 when the config is valid, 1 otherwise.

Example:
  logpipe-host config check --config logpipe.toml")]
    Check(ConfigCheckArgs),
    /// List every config key: the option it sets, its environment variable and the commands that take it.
    Keys,
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// Check only this [[consumer]] block.
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Print the value of one key (as text when it is UTF-8, else base64); exit 1 if missing.
    #[command(after_help = "Example:
  logpipe-host store get --offsets ./logpipe-offsets.sqlite3 --handler person-store person/5b0b3f4e")]
    Get(StoreGetArgs),
    /// Print keys and values in key order, one JSON object per line.
    #[command(after_help = "Example:
  logpipe-host store scan --handler person-store --prefix person/ --limit 10")]
    Scan(StoreScanArgs),
    /// Print a namespace's every key and value, one JSON object per line (for backups).
    Export(StoreArgs),
}

/// Which store to read.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The handler's namespace: its component name (file name without .wasm), or its manifest's store.namespace.
    #[arg(long, value_name = "NAME")]
    pub handler: String,

    #[command(flatten)]
    pub offsets: OffsetsFile,
}

/// The SQLite file of `run` and `store`.
#[derive(Debug, Args)]
pub struct OffsetsFile {
    /// SQLite file holding the offsets, the handlers' store and the outbox (`run` creates it if missing).
    #[arg(
        long = "offsets",
        env = "LOGPIPE_OFFSETS",
        default_value = "./logpipe-offsets.sqlite3",
        value_name = "PATH"
    )]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct StoreGetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    pub key: String,
}

#[derive(Debug, Args)]
pub struct StoreScanArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Only keys after this one (exclusive): the last key of the previous page.
    #[arg(long, value_name = "KEY")]
    pub after: Option<String>,
    /// Print at most this many pairs.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
}

/// Where consumed offsets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OffsetStoreKind {
    /// The SQLite file of --offsets, with the handlers' store and the
    /// outbox, committed in one transaction; one host per file.
    Sqlite,
    /// Kafka's consumer group offsets: several hosts share the partitions.
    Kafka,
}

impl ConsumeArgs {
    /// `--produce-mode`, or its default: the outbox needs offsets in the
    /// same SQLite transaction as its rows, so a group defaults to direct.
    pub fn produce_mode(&self) -> Result<ProduceMode, String> {
        match (self.produce_mode, self.offset_store) {
            (Some(ProduceMode::Outbox), OffsetStoreKind::Kafka) => Err(
                "--produce-mode outbox needs --offset-store sqlite: outbox rows are committed in \
                 the same SQLite transaction as the offsets; use --produce-mode direct"
                    .into(),
            ),
            (Some(mode), _) => Ok(mode),
            (None, OffsetStoreKind::Sqlite) => Ok(ProduceMode::Outbox),
            (None, OffsetStoreKind::Kafka) => Ok(ProduceMode::Direct),
        }
    }

    /// `--workers`, or one per core.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// Where records handlers produce go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProduceMode {
    /// Stored in the outbox table in the transaction that commits the
    /// triggering record's offset, published after it with a
    /// `LOGPIPE_MESSAGE_ID` header: a crash never publishes a record whose
    /// trigger is handled again.
    Outbox,
    /// Sent at once; the offset commits after the broker acknowledges
    /// (at-least-once: a crash can publish a record again).
    Direct,
}

#[derive(Debug, Subcommand)]
pub enum HandlersCommand {
    /// Load every component of --handlers and show its file, (type, version), hash and status.
    #[command(
        after_help = "Exit status: 0 when every component would load, 1 otherwise.

Example:
  logpipe-host handlers list --handlers ./handlers"
    )]
    List(HandlerArgs),
}

/// Where the handlers are and how they run.
#[derive(Debug, Args)]
pub struct HandlerArgs {
    /// Folder with the handler components (*.wasm), loaded at start.
    #[arg(long, env = "LOGPIPE_HANDLERS", value_name = "DIR")]
    pub handlers: PathBuf,

    /// Wall-clock limit of one handler call; a record exceeding it fails.
    #[arg(
        long,
        env = "LOGPIPE_HANDLER_TIMEOUT_MS",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub handler_timeout_ms: u64,

    /// Memory limit of one handler instance.
    #[arg(
        long,
        env = "LOGPIPE_HANDLER_MEMORY_MIB",
        default_value_t = 64,
        value_name = "MIB"
    )]
    pub handler_memory_mib: usize,

    /// Where compiled components are cached [default: $XDG_CACHE_HOME/logpipe-host or ~/.cache/logpipe-host].
    #[arg(long, env = "LOGPIPE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// `produce` calls one handler call may make; more fails the record.
    #[arg(
        long,
        env = "LOGPIPE_HANDLER_MAX_PRODUCE_CALLS",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub handler_max_produce_calls: u32,

    /// Envelope bytes one handler call may produce; more fails the record.
    #[arg(long, env = "LOGPIPE_HANDLER_MAX_PRODUCE_BYTES", default_value_t = 16 << 20, value_name = "BYTES")]
    pub handler_max_produce_bytes: usize,

    /// Do not watch --handlers for new, changed or removed components.
    #[arg(long, env = "LOGPIPE_NO_WATCH")]
    pub no_watch: bool,

    /// How long a component file must stay unchanged before it is (re)loaded.
    #[arg(
        long,
        env = "LOGPIPE_HANDLERS_SETTLE_MS",
        default_value_t = 300,
        value_name = "MS"
    )]
    pub handlers_settle_ms: u64,

    /// Use wasmtime's pooling allocator (fast fresh instances; reserves address space up front).
    #[arg(long, env = "LOGPIPE_POOLING")]
    pub pooling: bool,

    /// Compile components at every start instead of caching them.
    #[arg(long, env = "LOGPIPE_NO_CACHE")]
    pub no_cache: bool,

    /// Message types to skip without calling a handler (repeatable).
    #[arg(
        long = "ignore-type",
        env = "LOGPIPE_IGNORE_TYPE",
        value_delimiter = ',',
        value_name = "TYPE"
    )]
    pub ignore_types: Vec<String>,

    #[command(flatten)]
    pub envelope: EnvelopeArgs,

    #[command(flatten)]
    pub failures: FailureArgs,
}

/// What happens to records that are not handled (django-kafka's retry
/// settings, plus logpipe's dispatch classes). Manifests may override the
/// retry policy and `on_reject` per handler.
#[derive(Debug, Args)]
pub struct FailureArgs {
    /// Retries of a failed record after the first attempt; -1 retries for ever (blocking only).
    #[arg(
        long,
        env = "LOGPIPE_MAX_RETRIES",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub max_retries: i64,

    /// Seconds before the first retry.
    #[arg(
        long,
        env = "LOGPIPE_RETRY_DELAY",
        default_value = "1",
        value_name = "SECONDS"
    )]
    pub retry_delay: Seconds,

    /// Double the delay for every further retry (delay·2^(n-1)).
    #[arg(long, env = "LOGPIPE_RETRY_BACKOFF")]
    pub retry_backoff: bool,

    /// Error classes that are retried [default: retry,trap,deadline,memory,produce,store].
    #[arg(
        long,
        env = "LOGPIPE_RETRY_INCLUDE",
        value_enum,
        value_delimiter = ',',
        value_name = "CLASS"
    )]
    pub retry_include: Option<Vec<ErrorClass>>,

    /// Error classes that are never retried.
    #[arg(
        long,
        env = "LOGPIPE_RETRY_EXCLUDE",
        value_enum,
        value_delimiter = ',',
        value_name = "CLASS"
    )]
    pub retry_exclude: Vec<ErrorClass>,

    /// Retry through retry topics ({group}.{topic}.retry.{n}) instead of holding the partition.
    #[arg(long, env = "LOGPIPE_RETRY_NON_BLOCKING")]
    pub retry_non_blocking: bool,

    /// When a failed record is not (or no longer) retried.
    #[arg(long, env = "LOGPIPE_ON_FAILURE", value_enum, default_value_t = Action::Stop)]
    pub on_failure: Action,

    /// Records that are not valid envelopes.
    #[arg(long, env = "LOGPIPE_ON_INVALID", value_enum, default_value_t = Action::Skip)]
    pub on_invalid: Action,

    /// Records of a type no handler declared.
    #[arg(long, env = "LOGPIPE_ON_UNKNOWN_TYPE", value_enum, default_value_t = Action::Skip)]
    pub on_unknown_type: Action,

    /// Records of a known type in a version no handler declared.
    #[arg(long, env = "LOGPIPE_ON_UNKNOWN_VERSION", value_enum, default_value_t = Action::Skip)]
    pub on_unknown_version: Action,

    /// Records a handler rejected.
    #[arg(long, env = "LOGPIPE_ON_REJECT", value_enum, default_value_t = Action::Skip)]
    pub on_reject: Action,
}

impl FailureArgs {
    pub fn policies(&self) -> Result<Policies, String> {
        let mut retry = RetryPolicy {
            max_retries: self.max_retries,
            delay: self.retry_delay.0,
            backoff: self.retry_backoff,
            exclude: self.retry_exclude.clone(),
            blocking: !self.retry_non_blocking,
            on_failure: self.on_failure,
            ..RetryPolicy::default()
        };
        if let Some(include) = &self.retry_include {
            retry.include = include.clone();
        }
        retry.validate()?;
        Ok(Policies {
            retry: Arc::new(retry),
            on_invalid: self.on_invalid,
            on_unknown_type: self.on_unknown_type,
            on_unknown_version: self.on_unknown_version,
            on_reject: self.on_reject,
        })
    }
}

/// How produced envelopes are rendered, for the `produce` command and for
/// what handlers produce.
#[derive(Debug, Args)]
pub struct EnvelopeArgs {
    /// Envelope `producer` (logpipe's PRODUCER_ID); omitted when not set.
    #[arg(long, env = "LOGPIPE_PRODUCER_ID", value_name = "ID")]
    pub producer_id: Option<String>,

    /// Envelope format of produced messages (logpipe's DEFAULT_FORMAT).
    #[arg(long, env = "LOGPIPE_FORMAT", value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

impl EnvelopeArgs {
    pub fn settings(&self) -> ProduceSettings {
        ProduceSettings {
            format: self.format,
            producer_id: self.producer_id.clone(),
        }
    }
}

/// How records are consumed and committed.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Kafka topic to consume (repeatable), or an fnmatch pattern such as 'content.*' (topics created later are picked up); every partition is assigned. `run` takes --topic or --stream.
    #[arg(
        long = "topic",
        env = "LOGPIPE_TOPIC",
        value_delimiter = ',',
        value_name = "TOPIC"
    )]
    pub topics: Vec<String>,

    /// How often --topic patterns are matched again against the broker's topics.
    #[arg(
        long,
        env = "LOGPIPE_PATTERN_REFRESH_MS",
        default_value_t = 5000,
        value_name = "MS"
    )]
    pub pattern_refresh_ms: u64,

    /// Hand a record to its handler only once it is this old (logpipe's MIN_MESSAGE_LAG_MS): Kafka record timestamp, Kinesis arrival time.
    #[arg(
        long,
        env = "LOGPIPE_MIN_MESSAGE_LAG_MS",
        default_value_t = 0,
        value_name = "MS"
    )]
    pub min_message_lag_ms: u64,

    /// Stop (exit 0, after committing) when no record arrived for this long.
    #[arg(long, env = "LOGPIPE_CONSUMER_TIMEOUT_MS", value_name = "MS")]
    pub consumer_timeout_ms: Option<u64>,

    /// Commit handled offsets at least this often.
    #[arg(
        long,
        env = "LOGPIPE_COMMIT_INTERVAL_MS",
        default_value_t = 100,
        value_name = "MS"
    )]
    pub commit_interval_ms: u64,

    /// Commit after at most this many records.
    #[arg(
        long,
        env = "LOGPIPE_COMMIT_MAX_RECORDS",
        default_value_t = 5000,
        value_name = "N"
    )]
    pub commit_max_records: usize,

    /// Pause handling while this many records are handled but not yet committed (bounds re-handling after a crash).
    #[arg(
        long,
        env = "LOGPIPE_MAX_UNCOMMITTED_RECORDS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_uncommitted_records: usize,

    /// Suffix of retry topics: {group}.{topic}.{suffix}.{n}.
    #[arg(
        long,
        env = "LOGPIPE_RETRY_TOPIC_SUFFIX",
        default_value = "retry",
        value_name = "SUFFIX"
    )]
    pub retry_topic_suffix: String,

    /// Suffix of dead-letter topics: {group}.{topic}.{suffix}.
    #[arg(
        long,
        env = "LOGPIPE_DLT_TOPIC_SUFFIX",
        default_value = "dlt",
        value_name = "SUFFIX"
    )]
    pub dlt_topic_suffix: String,

    /// On SIGINT/SIGTERM, how long to wait for produced records before exiting (non-zero if they are not all acknowledged).
    #[arg(
        long,
        env = "LOGPIPE_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 30_000,
        value_name = "MS"
    )]
    pub shutdown_timeout_ms: u64,

    /// Where handler output goes: `outbox` (stored with the offset, then published with a LOGPIPE_MESSAGE_ID header: no duplicates but one per crash) or `direct` (sent at once, at least once) [default: outbox; direct with --offset-store kafka].
    #[arg(long, env = "LOGPIPE_PRODUCE_MODE", value_enum, value_name = "MODE")]
    pub produce_mode: Option<ProduceMode>,

    /// Where offsets are kept: `sqlite` (the --offsets file, one host per file, every partition) or `kafka` (a consumer group: the broker shares the partitions among the hosts of --group-id and keeps their offsets).
    #[arg(
        long,
        env = "LOGPIPE_OFFSET_STORE",
        value_enum,
        default_value_t = OffsetStoreKind::Sqlite,
        value_name = "STORE"
    )]
    pub offset_store: OffsetStoreKind,

    /// Threads handling records of different partitions (Kinesis: shards) in parallel, each with its own instance of every handler; records of one partition stay in order. 1 handles them on the consumer's thread [default: the number of cores].
    #[arg(long, env = "LOGPIPE_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Consumer group id: names retry and dead-letter topics; with --offset-store kafka, the group whose members share the partitions.
    #[arg(
        long,
        env = "LOGPIPE_GROUP_ID",
        default_value = "logpipe-host",
        value_name = "ID"
    )]
    pub group_id: String,
}

/// Broker connection.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "LOGPIPE_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap_servers: String,

    /// Raw librdkafka property for every client, e.g. `-X security.protocol=ssl` (repeatable).
    #[arg(short = 'X', env = "LOGPIPE_KAFKA_PROPERTIES", value_delimiter = ' ', value_parser = parse_property, value_name = "KEY=VALUE")]
    pub properties: Vec<(String, String)>,

    /// The config file's [kafka.global], [kafka.consumer] and [kafka.producer] tables.
    #[arg(skip)]
    pub file_properties: KafkaTables,
}

impl KafkaArgs {
    /// Properties in rising precedence: the file's tables, then `-X`.
    pub fn settings(&self) -> KafkaSettings {
        let mut global = self.file_properties.global.clone();
        global.extend(self.properties.iter().cloned());
        KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.clone(),
            properties: global,
            consumer_properties: self.file_properties.consumer.clone(),
            producer_properties: self.file_properties.producer.clone(),
        }
    }
}

/// Where a shard with no stored position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InitialIterator {
    /// The oldest record the stream keeps.
    TrimHorizon,
    /// Only records written after the start.
    Latest,
}

/// Kinesis connection (the standard AWS region and credential chain).
#[derive(Debug, Args)]
pub struct KinesisArgs {
    /// AWS region of the streams [default: the AWS chain: AWS_REGION, profile...].
    #[arg(long, env = "LOGPIPE_KINESIS_REGION", value_name = "REGION")]
    pub kinesis_region: Option<String>,

    /// Kinesis endpoint, for local servers such as kinesalite (e.g. http://127.0.0.1:4567).
    #[arg(long, env = "LOGPIPE_KINESIS_ENDPOINT", value_name = "URL")]
    pub kinesis_endpoint: Option<String>,

    /// Last sequence numbers kept per stream, for PutRecord's SequenceNumberForOrdering (logpipe's KINESIS_SEQ_NUM_CACHE_SIZE).
    #[arg(
        long,
        env = "LOGPIPE_KINESIS_SEQ_NUM_CACHE_SIZE",
        default_value_t = 1000,
        value_name = "KEYS"
    )]
    pub kinesis_seq_num_cache_size: usize,
}

impl KinesisArgs {
    pub fn settings(&self) -> crate::kinesis::KinesisSettings {
        crate::kinesis::KinesisSettings {
            region: self.kinesis_region.clone(),
            endpoint: self.kinesis_endpoint.clone(),
        }
    }
}

/// What `run --stream` reads.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Kinesis stream to consume (repeatable) instead of Kafka topics; every shard is read.
    #[arg(
        long = "stream",
        env = "LOGPIPE_STREAM",
        value_delimiter = ',',
        conflicts_with = "topics",
        value_name = "STREAM"
    )]
    pub streams: Vec<String>,

    /// Where shards with no stored position start (logpipe's KINESIS_SHARD_ITERATOR_TYPE).
    #[arg(
        long,
        env = "LOGPIPE_KINESIS_ITERATOR",
        value_enum,
        default_value_t = InitialIterator::TrimHorizon,
        value_name = "TYPE"
    )]
    pub kinesis_iterator: InitialIterator,

    /// Records per GetRecords call, 1-10000 (logpipe's KINESIS_FETCH_LIMIT, which defaults to 25).
    #[arg(
        long,
        env = "LOGPIPE_KINESIS_FETCH_LIMIT",
        default_value_t = 1000,
        value_parser = clap::value_parser!(i32).range(1..=10_000),
        value_name = "N"
    )]
    pub kinesis_fetch_limit: i32,

    /// Wait before asking a shard again after an empty page (Kinesis serves 5 reads/s per shard, shared by all consumers).
    #[arg(
        long,
        env = "LOGPIPE_KINESIS_POLL_INTERVAL_MS",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub kinesis_poll_interval_ms: u64,

    #[command(flatten)]
    pub kinesis: KinesisArgs,
}

/// Observability endpoints of `run` and `dev`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on GET /metrics and readiness on GET /health at this address (off when not set).
    #[arg(long, env = "LOGPIPE_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// The process's metrics when several [[consumer]]s share one endpoint.
    #[arg(skip)]
    pub shared: Option<Arc<crate::metrics::Metrics>>,

    /// The [[consumer]] this run is, naming its /health component.
    #[arg(skip)]
    pub consumer: Option<String>,
}

impl MetricsArgs {
    /// The /health component of this run's `source` (kafka, kinesis): one
    /// per consumer, so that health is the AND of all of them.
    pub fn health_component(&self, source: &str) -> String {
        match &self.consumer {
            Some(name) => format!("{source} consumer {name}"),
            None => source.to_owned(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run only this [[consumer]] of --config (default: all of them, concurrently).
    #[arg(long, env = "LOGPIPE_CONSUMER", value_name = "NAME")]
    pub consumer: Option<String>,
    #[command(flatten)]
    pub handler: HandlerArgs,
    #[command(flatten)]
    pub consume: ConsumeArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub streams: StreamArgs,
    #[command(flatten)]
    pub offsets: OffsetsFile,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub handler: HandlerArgs,
    #[command(flatten)]
    pub consume: ConsumeArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Partitions of each topic created in the embedded cluster.
    #[arg(
        long,
        env = "LOGPIPE_DEV_PARTITIONS",
        default_value_t = 1,
        value_name = "N"
    )]
    pub partitions: i32,

    /// More topics to create without consuming them (e.g. handler outputs such as people-index).
    #[arg(
        long = "create-topic",
        env = "LOGPIPE_DEV_CREATE_TOPIC",
        value_delimiter = ',',
        value_name = "TOPIC"
    )]
    pub create_topics: Vec<String>,

    /// Also write the embedded cluster's bootstrap address to this file (for scripts).
    #[arg(long, env = "LOGPIPE_DEV_BOOTSTRAP_FILE", value_name = "PATH")]
    pub bootstrap_file: Option<PathBuf>,

    /// SQLite offsets file [default: a temporary file removed on exit, since the cluster's records vanish too].
    #[arg(long, env = "LOGPIPE_OFFSETS", value_name = "PATH")]
    pub offsets: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Destination Kafka topic.
    #[arg(
        long,
        env = "LOGPIPE_PRODUCE_TOPIC",
        required_unless_present = "stream",
        value_name = "TOPIC"
    )]
    pub topic: Option<String>,

    /// Destination Kinesis stream, instead of a topic (the key is the partition key; none or empty gets a random one).
    #[arg(
        long,
        env = "LOGPIPE_PRODUCE_STREAM",
        conflicts_with = "topic",
        value_name = "STREAM"
    )]
    pub stream: Option<String>,

    #[command(flatten)]
    pub kinesis: KinesisArgs,

    /// Envelope `type`.
    #[arg(long = "type", env = "LOGPIPE_PRODUCE_TYPE", value_name = "TYPE")]
    pub message_type: String,

    /// Envelope `version`.
    #[arg(long, env = "LOGPIPE_PRODUCE_VERSION", value_name = "N")]
    pub version: u32,

    /// Record key for every record.
    #[arg(
        long,
        env = "LOGPIPE_PRODUCE_KEY",
        conflicts_with = "key_field",
        value_name = "KEY"
    )]
    pub key: Option<String>,

    /// Take each record's key from this top-level field of its body (logpipe's KEY_FIELD).
    #[arg(long, env = "LOGPIPE_PRODUCE_KEY_FIELD", value_name = "FIELD")]
    pub key_field: Option<String>,

    #[command(flatten)]
    pub envelope: EnvelopeArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The message body as JSON; without it, one body per line is read from stdin.
    #[arg(value_name = "BODY_JSON")]
    pub body: Option<String>,
}

/// `logpipe-host offsets ...`: the stored positions, for operators.
#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Print every stored position: Kafka next offsets and Kinesis shard positions (safe while a host runs).
    #[command(after_help = "Examples:
  logpipe-host offsets list --offsets /var/lib/logpipe/offsets.sqlite3
  # with each partition's low/high watermark and lag (high - next offset)
  logpipe-host offsets list --bootstrap-servers 127.0.0.1:9092
  logpipe-host offsets list --json")]
    List(OffsetsListArgs),
    /// Set one partition's next offset, or one shard's last handled sequence number.
    #[command(
        after_help = "Refused while a host holds the offsets file, unless --force.

Examples:
  # the host reads partition 0 of people from offset 40 on
  logpipe-host offsets set --topic people --partition 0 --offset 40
  # the host resumes the shard after this record
  logpipe-host offsets set --stream people --shard shardId-000000000000 \\
      --sequence-number 49590338271490256608559692538361571095921575989136588898"
    )]
    Set(OffsetsSetArgs),
    /// Move partitions or shards to the earliest record, the latest, or a time (like kafka-consumer-groups --reset-offsets).
    #[command(
        after_help = "WHEN is earliest (alias trim-horizon), latest, epoch milliseconds, or an \
RFC 3339 time (2026-11-24T09:30:00Z, 2026-11-24T10:30:00+01:00). Kafka positions are looked up \
on --bootstrap-servers and stored as offsets. Kinesis positions are stored as start markers \
(TRIM_HORIZON, or AT_TIMESTAMP; latest is AT_TIMESTAMP of the reset's time) that the host's next \
start reads. Refused while a host holds the offsets file, unless --force.

Examples:
  logpipe-host offsets reset --topic people --to earliest --bootstrap-servers 127.0.0.1:9092
  logpipe-host offsets reset --topic people --partition 2 --to 2026-11-24T09:30:00Z --dry-run
  logpipe-host offsets reset --stream people --to trim-horizon
  logpipe-host offsets reset --stream people --shard shardId-000000000001 --to latest"
    )]
    Reset(OffsetsResetArgs),
    /// Write every stored position as JSON (stdout by default), for backups; safe while a host runs.
    #[command(after_help = "Example:
  logpipe-host offsets export --offsets ./logpipe-offsets.sqlite3 --output offsets-backup.json")]
    Export(OffsetsExportArgs),
    /// Read positions from an `offsets export` file (or - for stdin), check all of them, then store them in one transaction.
    #[command(
        after_help = "Nothing is written if any entry is invalid. Rows not in the file stay \
unless --replace. Refused while a host holds the offsets file, unless --force.

Examples:
  logpipe-host offsets import offsets-backup.json --offsets ./restored.sqlite3 --replace
  logpipe-host offsets export --offsets a.sqlite3 | logpipe-host offsets import - --offsets b.sqlite3"
    )]
    Import(OffsetsImportArgs),
}

#[derive(Debug, Args)]
pub struct OffsetsListArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also ask these Kafka bootstrap servers for each partition's watermarks and lag.
    #[arg(long, env = "LOGPIPE_BOOTSTRAP_SERVERS", value_name = "HOST:PORT")]
    pub bootstrap_servers: Option<String>,

    /// Raw librdkafka property, e.g. `-X security.protocol=ssl` (repeatable).
    #[arg(short = 'X', env = "LOGPIPE_KAFKA_PROPERTIES", value_delimiter = ' ', value_parser = parse_property, value_name = "KEY=VALUE")]
    pub properties: Vec<(String, String)>,

    #[command(flatten)]
    pub store: OffsetsGroupArgs,

    #[command(flatten)]
    pub offsets: OffsetsFile,
}

/// The Kinesis connection of `offsets set` and `offsets reset`.
#[derive(Debug, Args)]
pub struct OffsetsKinesisArgs {
    /// AWS region of the stream [default: the region of the stream's stored rows if they have exactly one, else the AWS chain].
    #[arg(long, env = "LOGPIPE_KINESIS_REGION", value_name = "REGION")]
    pub kinesis_region: Option<String>,

    /// Kinesis endpoint, for local servers such as kinesalite (only `reset` without --shard calls Kinesis).
    #[arg(long, env = "LOGPIPE_KINESIS_ENDPOINT", value_name = "URL")]
    pub kinesis_endpoint: Option<String>,
}

/// Which offset store `offsets list|set|reset` act on.
#[derive(Debug, Args)]
pub struct OffsetsGroupArgs {
    /// Which store: `sqlite` (the --offsets file) or `kafka` (the committed offsets of consumer group --group-id, as `run --offset-store kafka` keeps them).
    #[arg(long, env = "LOGPIPE_OFFSET_STORE", value_enum, default_value_t = OffsetStoreKind::Sqlite, value_name = "STORE")]
    pub offset_store: OffsetStoreKind,

    /// The consumer group, with --offset-store kafka.
    #[arg(
        long,
        env = "LOGPIPE_GROUP_ID",
        default_value = "logpipe-host",
        value_name = "ID"
    )]
    pub group_id: String,
}

/// How `offsets set|reset|import` treat a running host.
#[derive(Debug, Args)]
pub struct OffsetsWriteArgs {
    /// Write even though a host holds the offsets file. That host keeps its own positions: it overwrites the rows of partitions and shards it commits, and reads the file again only when restarted.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub offsets: OffsetsFile,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["topic", "stream"])))]
pub struct OffsetsSetArgs {
    /// Kafka topic (with --partition and --offset).
    #[arg(long, requires_all = ["partition", "offset"], value_name = "TOPIC")]
    pub topic: Option<String>,

    /// Partition of --topic.
    #[arg(long, requires = "topic", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(0..), value_name = "P")]
    pub partition: Option<i32>,

    /// The next offset the host reads from the partition (>= 0).
    #[arg(long, requires = "topic", allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(0..), value_name = "N")]
    pub offset: Option<i64>,

    /// Kinesis stream (with --shard and --sequence-number).
    #[arg(long, conflicts_with = "topic", requires_all = ["shard", "sequence_number"], value_name = "STREAM")]
    pub stream: Option<String>,

    /// Shard id of --stream, e.g. shardId-000000000000.
    #[arg(long, requires = "stream", value_name = "ID")]
    pub shard: Option<String>,

    /// The last handled record of the shard: the host resumes right after it.
    #[arg(long, requires = "stream", value_name = "SEQ")]
    pub sequence_number: Option<String>,

    #[command(flatten)]
    pub kinesis: OffsetsKinesisArgs,

    #[command(flatten)]
    pub store: OffsetsGroupArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub write: OffsetsWriteArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["topic", "stream"])))]
pub struct OffsetsResetArgs {
    /// Kafka topic to reset (every partition, unless --partition).
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,

    /// Only this partition of --topic.
    #[arg(long, requires = "topic", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(0..), value_name = "P")]
    pub partition: Option<i32>,

    /// Kinesis stream to reset (every shard, unless --shard).
    #[arg(long, conflicts_with = "topic", value_name = "STREAM")]
    pub stream: Option<String>,

    /// Only this shard of --stream.
    #[arg(long, requires = "stream", value_name = "ID")]
    pub shard: Option<String>,

    /// earliest (trim-horizon), latest, epoch milliseconds, or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub to: crate::offsets::admin::ResetTo,

    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub store: OffsetsGroupArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub kinesis: OffsetsKinesisArgs,

    #[command(flatten)]
    pub write: OffsetsWriteArgs,
}

#[derive(Debug, Args)]
pub struct OffsetsExportArgs {
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub offsets: OffsetsFile,
}

#[derive(Debug, Args)]
pub struct OffsetsImportArgs {
    /// An `offsets export` file, or - for stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Delete every stored position (Kafka and Kinesis) before storing the file's.
    #[arg(long)]
    pub replace: bool,

    /// Check the file and print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub write: OffsetsWriteArgs,
}

/// `logpipe-host bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Records to pre-load and consume in each scenario (also the in-process rounds).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub records: u64,

    /// Partitions of the pre-loaded topic.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=256), value_name = "N")]
    pub partitions: i32,

    /// `--workers` of the runs in (b) and (c) [default: theirs, one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N")]
    pub workers: Option<u16>,

    /// Use this broker (127.0.0.1 only is sensible) [default: start tansu on a free loopback port].
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap_servers: Option<String>,

    /// Handlers folder of scenario b [default: a folder with the built noop.wasm from target/test-components].
    #[arg(long, value_name = "DIR")]
    pub handlers_noop: Option<PathBuf>,

    /// Handlers folder of scenario c [default: target/handlers: echo and person].
    #[arg(long, value_name = "DIR")]
    pub handlers_echo: Option<PathBuf>,

    /// Where the echo guest's output goes in scenario c (run's --produce-mode).
    #[arg(long, value_enum, default_value_t = ProduceMode::Outbox, value_name = "MODE")]
    pub echo_produce_mode: ProduceMode,

    /// Raw librdkafka property for every client of the bench and its `run` children, e.g. `-X queued.max.messages.kbytes=4096` (repeatable).
    #[arg(short = 'X', value_parser = parse_property, value_name = "KEY=VALUE")]
    pub properties: Vec<(String, String)>,

    /// Run only these scenarios (a,b,c,d); d alone needs no broker.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchScenario::A, BenchScenario::B, BenchScenario::C, BenchScenario::D], value_name = "LIST")]
    pub scenarios: Vec<BenchScenario>,
}

/// One row group of `logpipe-host bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchScenario {
    A,
    B,
    C,
    D,
}
