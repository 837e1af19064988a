//! Scenario (d): the host's own work per record, in process and without a
//! broker, beside the guest call itself.
//!
//! The host path runs what the Kafka consume loop does for each record
//! between `poll` returning a message and the next `poll`: look up the
//! partition, copy the original position, format the position texts,
//! dispatch (decode, route, call the guest, keep its effects), stage the
//! next offset, and commit to SQLite every `--commit-max-records` (5000, the
//! default) records. `kafka::consumer` keeps those steps private to its
//! loop, so they are repeated here step for step (receive, settle, stage,
//! checkpoint); keep the two in step. The guest call alone is the same
//! no-op component called through `Handler::handle` with a ready envelope.
//! The difference is what the host adds per record.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{load, report};
use crate::component::bindings::{Envelope as WitEnvelope, Origin};
use crate::component::cache::ComponentCache;
use crate::component::host_api::HostServices;
use crate::component::manifest::HandlerDefaults;
use crate::component::{
    HandleOutcome, MessageSink, ProduceSettings, Produced, Registry, Route, Runtime, RuntimeOptions,
};
use crate::dispatch::{Dispatcher, Record, Verdict, lag_wait};
use crate::envelope::{self, Format};
use crate::kafka::headers::OriginalPosition;
use crate::offsets::{Commit, OffsetStore};
use crate::state::StateStore;

/// Partitions the records are spread over, as in the broker scenarios.
const PARTITIONS: usize = 4;
/// `run`'s default `--commit-max-records`.
pub const COMMIT_EVERY: u64 = 5000;
/// Distinct record values cycled through (keeps memory flat for any N).
const RING: u64 = 1024;
const TOPIC: &str = "logpipe-bench";

/// Rounds of each measurement, alternating, so that a burst of load from
/// elsewhere on the machine spoils a round rather than the result.
pub const ROUNDS: u64 = 5;

/// Nanoseconds per record of each round.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub per_round: Vec<f64>,
    /// Every round together.
    pub total: Duration,
}

impl Samples {
    fn add(&mut self, time: Duration, records: u64) {
        self.total += time;
        self.per_round
            .push(time.as_secs_f64() * 1e9 / records.max(1) as f64);
    }

    /// The least disturbed round.
    pub fn best(&self) -> f64 {
        self.per_round.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn median(&self) -> f64 {
        let mut sorted = self.per_round.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
    }
}

/// Costs per record.
#[derive(Debug, Clone)]
pub struct Overhead {
    pub records: u64,
    /// The whole host path with the guest call, without the SQLite commits.
    pub host_path: Samples,
    /// The no-op guest call alone (`Handler::handle`).
    pub call_only: Samples,
    /// `envelope::decode` alone (part of the host path).
    pub decode_only: Samples,
    /// SQLite commits within the host path, in total.
    pub commits: u64,
    pub commit_time: Duration,
    pub peak_rss_kib: Option<u64>,
}

impl Overhead {
    /// Host work beyond the guest call, best round against best round.
    pub fn extra_ns(&self) -> f64 {
        self.host_path.best() - self.call_only.best()
    }

    /// The SQLite commits' share, per record, over all rounds.
    pub fn commit_ns(&self) -> f64 {
        self.commit_time.as_secs_f64() * 1e9 / self.records.max(1) as f64
    }
}

/// The no-op guest produces nothing; a sink is needed all the same.
struct Discard;

impl MessageSink for Discard {
    fn send(&self, _: Produced<'_>) -> Result<(), String> {
        Ok(())
    }
}

pub fn measure(noop_dir: &Path, records: u64, shutdown: &AtomicBool) -> anyhow::Result<Overhead> {
    tracing::info!("(d) host overhead in process");
    let work = tempfile::tempdir().context("cannot create a temporary folder")?;
    let db = work.path().join("offsets.sqlite3");
    let mut store = OffsetStore::open(&db)?;
    let state = Arc::new(StateStore::open(&db)?);
    let runtime = runtime(state.clone())?;
    let registry = Registry::load(runtime.clone(), noop_dir)
        .with_context(|| format!("cannot load {}", noop_dir.display()))?;
    let policies = runtime.defaults.policies.clone();
    let mut dispatcher = Dispatcher::new(registry, Vec::new(), policies);
    let mut alone = Registry::load(runtime, noop_dir)?;
    let values: Vec<Vec<u8>> = (0..RING).map(load::envelope).collect();
    let keys: Vec<String> = (0..RING).map(load::key).collect();
    let rss_reset = report::reset_peak_rss();

    let warm = (records / 10).clamp(1, 20_000);
    let _ = host_path(
        &mut dispatcher,
        &mut store,
        &state,
        &values,
        &keys,
        warm,
        shutdown,
    )?;
    let mut measured = Overhead {
        records,
        host_path: Samples::default(),
        call_only: Samples::default(),
        decode_only: Samples::default(),
        commits: 0,
        commit_time: Duration::ZERO,
        peak_rss_kib: None,
    };
    let mut left = records;
    for round in 0..ROUNDS {
        let n = left / (ROUNDS - round);
        left -= n;
        let (time, commits, commit_time) = host_path(
            &mut dispatcher,
            &mut store,
            &state,
            &values,
            &keys,
            n,
            shutdown,
        )?;
        // Commits are fsync-bound and reported on their own.
        measured.host_path.add(time.saturating_sub(commit_time), n);
        measured.commits += commits;
        measured.commit_time += commit_time;
        let warm_call = if round == 0 { warm } else { 0 };
        measured
            .call_only
            .add(call_alone(&mut alone, &values[0], n, warm_call)?, n);
        measured.decode_only.add(decode_alone(&values, n), n);
    }
    let counts = dispatcher.counts();
    if counts.handled != warm + records {
        bail!(
            "(d): the no-op guest handled {} of {} records",
            counts.handled,
            warm + records
        );
    }
    measured.peak_rss_kib = rss_reset.then(report::peak_rss_kib).flatten();
    Ok(measured)
}

/// The engine as `run` builds it with default flags, without a watcher.
fn runtime(state: Arc<StateStore>) -> anyhow::Result<Arc<Runtime>> {
    let options = RuntimeOptions {
        defaults: HandlerDefaults::default(),
        cache: ComponentCache::new(ComponentCache::default_dir()),
        pooling: false,
    };
    let services = HostServices {
        sink: Arc::new(Discard),
        produce: ProduceSettings {
            format: Format::Json,
            producer_id: None,
        },
        state,
        // Recorded as in `run`: its cost is part of the host path.
        metrics: Arc::new(crate::metrics::Metrics::default()),
    };
    Runtime::new(options, services)
        .map_err(anyhow::Error::from)
        .context("cannot create the WebAssembly engine")
}

/// Per-partition progress, as the consume loop keeps it.
#[derive(Clone, Copy, Default)]
struct Staged {
    staged: Option<i64>,
    sealed: Option<i64>,
}

/// `records` records through the consume loop's per-record steps. Returns
/// the total time, and the number and time of the SQLite commits in it.
fn host_path(
    dispatcher: &mut Dispatcher,
    store: &mut OffsetStore,
    state: &StateStore,
    values: &[Vec<u8>],
    keys: &[String],
    records: u64,
    shutdown: &AtomicBool,
) -> anyhow::Result<(Duration, u64, Duration)> {
    let topic_name = TOPIC.to_owned();
    let topic_index: HashMap<String, usize> = HashMap::from([(topic_name.clone(), 0)]);
    let index: HashMap<(usize, i32), usize> = (0..PARTITIONS).map(|p| ((0, p as i32), p)).collect();
    let mut partitions = [Staged::default(); PARTITIONS];
    let (mut partition_text, mut offset_text) = (String::new(), String::new());
    let (mut since_commit, mut batch, mut commits) = (0u64, 0u64, 0u64);
    let mut commit_time = Duration::ZERO;
    let timestamp_ms = Some(1_700_000_000_000);
    let started = Instant::now();
    for seq in 0..records {
        if seq % 65_536 == 0 && shutdown.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let ring = (seq % RING) as usize;
        let partition = (seq % PARTITIONS as u64) as i32;
        let offset = (seq / PARTITIONS as u64) as i64;
        // receive(): find the partition, copy the original position.
        let Some(&topic) = topic_index.get(black_box(TOPIC)) else {
            bail!("topic index");
        };
        let Some(&slot) = index.get(&(topic, partition)) else {
            bail!("partition index");
        };
        let original = OriginalPosition {
            topic: black_box(TOPIC).to_owned(),
            partition,
            offset,
        };
        if lag_wait(Duration::ZERO, timestamp_ms).is_some() {
            bail!("no record is held without --min-message-lag-ms");
        }
        // settle(): the position texts, then dispatch.
        partition_text.clear();
        offset_text.clear();
        let _ = write!(partition_text, "{}", original.partition);
        let _ = write!(offset_text, "{}", original.offset);
        let record = Record {
            source: crate::dispatch::Source::Kafka,
            topic: &original.topic,
            partition: &partition_text,
            offset: &offset_text,
            key: Some(keys[ring].as_bytes()),
            timestamp_ms,
            value: &values[ring],
            retries: 0,
        };
        if dispatcher.dispatch(&record) != Verdict::Commit {
            bail!("(d): record {seq} was not handled");
        }
        // stage(), and receive()'s `last_settled`.
        partitions[slot].staged = Some(offset + 1);
        since_commit += 1;
        black_box(Instant::now());
        if since_commit >= COMMIT_EVERY {
            let commit_started = Instant::now();
            checkpoint(store, state, &topic_name, &mut partitions, batch)?;
            commit_time += commit_started.elapsed();
            batch += 1;
            commits += 1;
            since_commit = 0;
        }
    }
    Ok((started.elapsed(), commits, commit_time))
}

/// checkpoint() with nothing produced: every batch is acknowledged at once,
/// so the staged offsets go straight into one transaction.
fn checkpoint(
    store: &mut OffsetStore,
    state: &StateStore,
    topic: &str,
    partitions: &mut [Staged],
    batch: u64,
) -> anyhow::Result<()> {
    let mut offsets = Vec::new();
    for (partition, progress) in partitions.iter_mut().enumerate() {
        if let Some(next) = progress.staged
            && progress.staged > progress.sealed
        {
            progress.sealed = Some(next);
            offsets.push((topic.to_owned(), partition as i32, next));
        }
    }
    state.seal(batch);
    let effects = state.take_through(batch);
    store.commit(Commit {
        offsets,
        effects,
        ..Commit::default()
    })?;
    Ok(())
}

/// `rounds` calls of the no-op guest with a ready envelope.
fn call_alone(
    registry: &mut Registry,
    value: &[u8],
    rounds: u64,
    warm: u64,
) -> anyhow::Result<Duration> {
    let decoded = envelope::decode(value)?;
    let call = WitEnvelope {
        message_type: decoded.message_type,
        version: 1,
        producer: decoded.producer,
        key: Some(load::key(0)),
        body: decoded.body,
        origin: Origin {
            source: TOPIC.to_owned(),
            partition: "0".to_owned(),
            offset: "0".to_owned(),
            timestamp_ms: Some(1_700_000_000_000),
        },
    };
    let Route::Handler(handler) = registry.route("echo", Some(1)) else {
        bail!("the no-op folder has no handler for \"echo\" v1");
    };
    for _ in 0..warm {
        black_box(handler.handle(&call));
    }
    let started = Instant::now();
    for _ in 0..rounds {
        if handler.handle(black_box(&call)) != HandleOutcome::Handled {
            bail!("the no-op guest did not handle a record");
        }
    }
    Ok(started.elapsed())
}

/// `rounds` decodes of the bench's envelopes.
fn decode_alone(values: &[Vec<u8>], rounds: u64) -> Duration {
    let started = Instant::now();
    for seq in 0..rounds {
        let value = &values[(seq % RING) as usize];
        let _ = black_box(envelope::decode(black_box(value)));
    }
    started.elapsed()
}
