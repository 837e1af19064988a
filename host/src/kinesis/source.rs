//! The Kinesis consume loop: every shard of every stream, read by its own
//! task, handed to the handlers one page per shard in turn, positions in
//! SQLite. With `--workers` above one, each round serves the shards' pages
//! in parallel: every shard belongs to one worker, whose dispatcher (with
//! its own handler instances) handles its records in order; the loop
//! commits between rounds, when no worker is busy.
//!
//! Offset rule: a shard's stored position is its last handled (or skipped,
//! or dead-lettered) record, stored in the same transaction as the store
//! writes and outbox rows of the records before it; reading resumes right
//! after it. A shard born of a split or merge is read only once its
//! parents have been read to their end.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::mpsc::{self, error::TryRecvError};

use super::client::KinesisClient;
use super::reader::{self, FetchHealth, Fetched, ReadOptions, ShardRecord, StartAt};
use super::shards::{self, Lineage, ListError};
use super::sink::{KinesisSink, OutRecord, WriteError};
use crate::dispatch::{Counts, Dispatcher, Record, Source, Verdict, lag_wait};
use crate::kafka::consumer::StopReason;
use crate::kafka::topics::TopicNames;
use crate::metrics::health::{CHECK_ASSIGNED, CHECK_COMMIT, HealthComponent};
use crate::metrics::registry::{Counter, Gauge};
use crate::offsets::{Commit, OffsetError, OffsetStore, OutboxRow, ShardPosition, ShardStart};
use crate::state::StateStore;

/// How long to sleep when no shard has anything to hand out.
const IDLE_NAP: Duration = Duration::from_millis(2);
/// How often `/health` learns how the shards' reads are going.
const OBSERVE_INTERVAL: Duration = Duration::from_secs(1);
/// Health check of this consumer beyond `assigned` and `commit` (see
/// [`crate::metrics::health`]).
const CHECK_READS: &str = "reads";

/// How to consume streams.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// This consumer's component of `/health`.
    pub health_component: String,
    pub streams: Vec<String>,
    /// Where shards with no stored position start.
    pub initial: StartAt,
    pub fetch_limit: i32,
    pub poll_interval: Duration,
    /// Names of dead-letter streams (`{group}.{stream}.{suffix}`).
    pub names: TopicNames,
    pub idle_timeout: Option<Duration>,
    pub commit_interval: Duration,
    pub commit_max_records: usize,
    /// Hand a record to a handler only once it is this old.
    pub min_lag: Duration,
    /// Threads serving shards in parallel (1: the loop's own).
    pub workers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    List(#[from] ListError),
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("shard {shard} of Kinesis stream {stream:?}: {message}")]
    Shard {
        stream: String,
        shard: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub counts: Counts,
    pub reason: StopReason,
    pub busy: Duration,
}

/// One shard being read.
struct Shard {
    stream: usize,
    id: String,
    pages: mpsc::Receiver<Fetched>,
    /// Fetched, not yet handed out.
    buffer: VecDeque<ShardRecord>,
    /// Last handled record, stored or not.
    handled: Option<String>,
    /// Whether `handled` changed since the last checkpoint.
    dirty: bool,
    flow: Flow,
    /// The reader sent its last page.
    closed: bool,
    /// The last page was empty and the shard is at its tip.
    caught_up: bool,
    /// `MillisBehindLatest` of the last page.
    behind: Arc<Gauge>,
    fetch: Arc<FetchHealth>,
    /// Which worker serves it (shards take turns over the workers).
    worker: usize,
}

enum Flow {
    Running,
    /// The first buffered record is not handed out before this instant
    /// (a blocking retry, or a record younger than the minimum lag).
    Waiting {
        until: Instant,
        retries: u32,
    },
    /// A record failed for good; the shard stops before it.
    Stopped,
}

struct Consumption<'a> {
    options: &'a StreamOptions,
    runtime: &'a Runtime,
    read: ReadOptions,
    dispatcher: &'a mut Dispatcher,
    /// The workers' dispatchers, when there are several (see the module
    /// comment); empty for one.
    pool: Vec<Dispatcher>,
    /// Shards started so far, for their turn over the workers.
    started: usize,
    sink: &'a KinesisSink,
    store: &'a mut OffsetStore,
    state: &'a StateStore,
    lineages: Vec<Lineage>,
    shards: Vec<Shard>,
    /// Where the next round of handing out pages starts.
    turn: usize,
    since_commit: usize,
    last_commit: Instant,
    batch: u64,
    first_record: Option<Instant>,
    last_settled: Option<Instant>,
    last_record: Instant,
    /// Records read, per stream (by index in `options.streams`).
    consumed: Vec<Arc<Counter>>,
    health: Arc<HealthComponent>,
    last_observed: Instant,
}

/// Consume `options.streams` until idle, shut down or a failed record.
pub fn consume(
    runtime: &Runtime,
    kinesis: &KinesisClient,
    options: &StreamOptions,
    dispatcher: &mut Dispatcher,
    sink: &KinesisSink,
    store: &mut OffsetStore,
    shutdown: &AtomicBool,
) -> Result<StreamSummary, StreamError> {
    let state = dispatcher.state().clone();
    let metrics = dispatcher.metrics().clone();
    let health = metrics.health.component(&options.health_component);
    health.fail(CHECK_ASSIGNED, "shards not listed yet");
    health.fail(CHECK_COMMIT, "no checkpoint yet");
    let pool: Vec<Dispatcher> = if options.workers > 1 {
        let pool = (0..options.workers).map(|_| dispatcher.fork()).collect();
        // The workers have instances of their own.
        dispatcher.park();
        tracing::info!(workers = options.workers, "handling shards in parallel");
        pool
    } else {
        Vec::new()
    };
    let mut run = Consumption {
        options,
        runtime,
        read: ReadOptions {
            kinesis: kinesis.clone(),
            fetch_limit: options.fetch_limit,
            poll_interval: options.poll_interval,
        },
        dispatcher,
        pool,
        started: 0,
        sink,
        store,
        state: &state,
        lineages: Vec::new(),
        shards: Vec::new(),
        turn: 0,
        since_commit: 0,
        last_commit: Instant::now(),
        batch: 0,
        first_record: None,
        last_settled: None,
        last_record: Instant::now(),
        consumed: options
            .streams
            .iter()
            .map(|stream| metrics.consumed_stream.get(&[stream]))
            .collect(),
        health,
        last_observed: Instant::now(),
    };
    let result = run.start_and_loop(shutdown);
    for worker in std::mem::take(&mut run.pool) {
        run.dispatcher.counts_mut().add(&worker.counts());
    }
    run.health.fail(CHECK_ASSIGNED, "consumer stopped");
    let mut reason = result?;
    if run.shards.iter().any(|s| matches!(s.flow, Flow::Stopped)) {
        reason = run.failed();
    }
    let busy = match (run.first_record, run.last_settled) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    };
    Ok(StreamSummary {
        counts: run.dispatcher.counts(),
        reason,
        busy,
    })
}

impl Consumption<'_> {
    fn start_and_loop(&mut self, shutdown: &AtomicBool) -> Result<StopReason, StreamError> {
        self.publish_unsent()?;
        for stream in 0..self.options.streams.len() {
            self.lineages.push(Lineage::default());
            self.discover(stream, true)?;
        }
        self.health.ok(CHECK_ASSIGNED);
        let result = self.loop_until_stopped(shutdown);
        // Whatever stopped the loop, what was handled is stored.
        self.checkpoint()?;
        result
    }

    fn region(&self) -> &str {
        &self.read.kinesis.region
    }

    /// Publish outbox rows a previous run stored but did not get written.
    fn publish_unsent(&mut self) -> Result<(), StreamError> {
        let unsent = self.store.unsent_outbox()?;
        if !unsent.is_empty() {
            tracing::info!(
                records = unsent.len(),
                "publishing outbox records left by the previous run"
            );
            self.publish(unsent)?;
        }
        Ok(())
    }

    /// Write committed outbox rows, then forget them.
    fn publish(&mut self, rows: Vec<OutboxRow>) -> Result<(), StreamError> {
        let Some(last) = rows.last().map(|row| row.id) else {
            return Ok(());
        };
        let records = rows
            .into_iter()
            .map(|row| OutRecord {
                stream: row.record.topic,
                key: row.record.key,
                data: row.record.payload,
            })
            .collect();
        self.sink.put_ordered(records)?;
        self.store.mark_sent_through(last)?;
        // Time spent writing (throttled, perhaps) is not idle time.
        self.last_record = Instant::now();
        Ok(())
    }

    /// List `stream`'s shards and start reading those that are ready.
    fn discover(&mut self, stream: usize, first: bool) -> Result<(), StreamError> {
        let name = self.options.streams[stream].clone();
        let listing = self
            .runtime
            .block_on(shards::list(&self.read.kinesis, &name))?;
        let stored = self.store.kinesis_positions(self.region(), &name)?;
        let lineage = &mut self.lineages[stream];
        lineage.update(listing);
        if first && self.options.initial == StartAt::Latest {
            // Starting at the tip: closed shards hold only old records.
            let skipped: Vec<String> = lineage
                .ready()
                .into_iter()
                .filter(|id| !stored.contains_key(id))
                .filter(|id| lineage.get(id).is_some_and(|s| s.closed))
                .collect();
            for id in skipped {
                lineage.finish(&id);
            }
        }
        loop {
            let ready = self.lineages[stream].ready();
            if ready.is_empty() {
                return Ok(());
            }
            for id in ready {
                let start = match stored.get(&id) {
                    Some(ShardStart::After(sequence)) => {
                        tracing::info!(stream = %name, shard = %id, sequence, "resuming after stored position");
                        StartAt::After(sequence.clone())
                    }
                    // An operator's `offsets reset`: nothing handled yet.
                    Some(ShardStart::TrimHorizon) => {
                        tracing::info!(stream = %name, shard = %id, "starting at TRIM_HORIZON (reset marker)");
                        StartAt::TrimHorizon
                    }
                    Some(ShardStart::AtTimestamp(ms)) => {
                        tracing::info!(stream = %name, shard = %id, timestamp_ms = ms, "starting AT_TIMESTAMP (reset marker)");
                        StartAt::AtTimestamp(*ms)
                    }
                    // A shard born while we run holds only new records.
                    None if !first => StartAt::TrimHorizon,
                    None => {
                        tracing::info!(stream = %name, shard = %id, start = ?self.options.initial, "no stored position");
                        self.options.initial.clone()
                    }
                };
                let handled = match stored.get(&id) {
                    Some(ShardStart::After(sequence)) => Some(sequence.clone()),
                    _ => None,
                };
                self.start_shard(stream, &id, start, handled);
            }
        }
    }

    fn start_shard(&mut self, stream: usize, id: &str, start: StartAt, handled: Option<String>) {
        self.lineages[stream].start(id);
        let (sender, pages) = mpsc::channel(reader::PAGES_AHEAD);
        let fetch = Arc::new(FetchHealth::default());
        let name = &self.options.streams[stream];
        let behind = self.dispatcher.metrics().millis_behind.get(&[name, id]);
        self.runtime.spawn(reader::read_shard(
            self.read.clone(),
            name.clone(),
            id.to_owned(),
            start,
            sender,
            fetch.clone(),
        ));
        self.shards.push(Shard {
            stream,
            id: id.to_owned(),
            pages,
            buffer: VecDeque::new(),
            handled,
            dirty: false,
            flow: Flow::Running,
            closed: false,
            caught_up: false,
            behind,
            fetch,
            worker: self.started,
        });
        self.started += 1;
    }

    fn loop_until_stopped(&mut self, shutdown: &AtomicBool) -> Result<StopReason, StreamError> {
        self.last_record = Instant::now();
        loop {
            if shutdown.load(Ordering::SeqCst) {
                tracing::info!("shutdown requested: committing and stopping");
                return Ok(StopReason::Shutdown);
            }
            // Between two records: a hot swap never splits a record.
            if self.pool.is_empty() {
                self.dispatcher.apply_changes();
            } else {
                let pool = &mut self.pool;
                self.dispatcher.fan_out_changes(|change| {
                    for worker in pool.iter_mut() {
                        worker.apply_quietly(change.fork());
                    }
                });
            }
            let settled = self.round()?;
            self.finish_closed()?;
            if self.since_commit >= self.options.commit_max_records
                || self.last_commit.elapsed() >= self.options.commit_interval
            {
                self.checkpoint()?;
            }
            if self.last_observed.elapsed() >= OBSERVE_INTERVAL {
                self.observe();
            }
            if let Some(reason) = self.should_stop() {
                return Ok(reason);
            }
            if settled == 0 {
                std::thread::sleep(IDLE_NAP);
            }
        }
    }

    /// One turn over every shard, starting one further each round: each
    /// hands out at most one page, fetched here first. Returns how many
    /// records were settled.
    fn round(&mut self) -> Result<usize, StreamError> {
        for slot in 0..self.shards.len() {
            if self.shards[slot].buffer.is_empty() {
                self.fill(slot)?;
            }
        }
        let context = ServeContext {
            options: self.options,
            sink: self.sink,
        };
        let served = if self.pool.is_empty() {
            let count = self.shards.len();
            let mut served = Served::default();
            for step in 0..count {
                let slot = (self.turn + step) % count;
                served.add(serve(&mut self.shards[slot], self.dispatcher, &context));
            }
            served
        } else {
            serve_in_parallel(&mut self.shards, &mut self.pool, &context)
        };
        self.turn = self.turn.wrapping_add(1);
        if let Some(first) = served.first {
            self.first_record.get_or_insert(first);
        }
        if let Some(last) = served.last {
            self.last_record = last;
            self.last_settled = Some(last);
        }
        self.since_commit += served.done;
        Ok(served.settled)
    }

    /// Take the next page from the shard's reader; false if none is there.
    fn fill(&mut self, slot: usize) -> Result<bool, StreamError> {
        let shard = &mut self.shards[slot];
        if shard.closed {
            return Ok(false);
        }
        match shard.pages.try_recv() {
            Ok(Fetched::Page {
                records,
                millis_behind,
            }) => {
                shard.caught_up = records.is_empty() && millis_behind.unwrap_or(0) == 0;
                if let Some(behind) = millis_behind {
                    shard.behind.set(behind as f64);
                }
                self.consumed[shard.stream].add(records.len() as u64);
                if !records.is_empty() {
                    self.last_record = Instant::now();
                }
                shard.buffer.extend(records);
                Ok(!shard.buffer.is_empty())
            }
            Ok(Fetched::Closed) | Err(TryRecvError::Disconnected) => {
                shard.closed = true;
                shard.caught_up = true;
                Ok(false)
            }
            Ok(Fetched::Failed(message)) => Err(StreamError::Shard {
                stream: self.options.streams[shard.stream].clone(),
                shard: shard.id.clone(),
                message,
            }),
            Err(TryRecvError::Empty) => Ok(false),
        }
    }

    /// Drop shards that are closed and fully handled, and start their
    /// children.
    fn finish_closed(&mut self) -> Result<(), StreamError> {
        let done: Vec<usize> = (0..self.shards.len())
            .filter(|&i| {
                let s = &self.shards[i];
                s.closed && s.buffer.is_empty() && matches!(s.flow, Flow::Running)
            })
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        // Their last positions must reach the store before they are
        // forgotten.
        self.checkpoint()?;
        let mut streams = Vec::new();
        for &slot in done.iter().rev() {
            let shard = self.shards.remove(slot);
            tracing::info!(
                stream = %self.options.streams[shard.stream],
                shard = %shard.id,
                "shard closed and fully handled"
            );
            self.lineages[shard.stream].finish(&shard.id);
            streams.push(shard.stream);
        }
        streams.sort_unstable();
        streams.dedup();
        for stream in streams {
            self.discover(stream, false)?;
        }
        Ok(())
    }

    fn should_stop(&self) -> Option<StopReason> {
        let stopped = self
            .shards
            .iter()
            .filter(|s| matches!(s.flow, Flow::Stopped))
            .count();
        // A failed record ends the run once every other shard is at its tip.
        if stopped > 0
            && self.shards.iter().all(|s| {
                matches!(s.flow, Flow::Stopped)
                    || (s.caught_up && s.buffer.is_empty() && matches!(s.flow, Flow::Running))
            })
        {
            return Some(self.failed());
        }
        // Records in hand, or held back, are not idleness.
        let waiting = self
            .shards
            .iter()
            .any(|s| matches!(s.flow, Flow::Waiting { .. }) || !s.buffer.is_empty());
        if let Some(idle) = self.options.idle_timeout
            && !waiting
            && self.last_record.elapsed() >= idle
        {
            tracing::info!(
                idle_ms = idle.as_millis() as u64,
                "no new records: stopping"
            );
            return Some(StopReason::Idle);
        }
        None
    }

    fn failed(&self) -> StopReason {
        StopReason::Failed {
            stopped: self
                .shards
                .iter()
                .filter(|s| matches!(s.flow, Flow::Stopped))
                .map(|s| format!("{}/{}", self.options.streams[s.stream], s.id))
                .collect(),
        }
    }

    /// Tell `/health` whether every shard is being read: persistent
    /// GetRecords failures make the consumer not ready until reads succeed.
    fn observe(&mut self) {
        self.last_observed = Instant::now();
        let failing = self.shards.iter().find_map(|shard| {
            let (failures, error) = shard.fetch.unreachable()?;
            Some(format!(
                "Kinesis unreachable: shard {} of stream {:?}: {failures} reads failed in a row \
                 (last: {error})",
                shard.id, self.options.streams[shard.stream]
            ))
        });
        match failing {
            Some(reason) => self.health.fail(CHECK_READS, reason),
            None => self.health.ok(CHECK_READS),
        }
    }

    /// [`Consumption::store_checkpoint`], counted and reported to `/health`.
    fn checkpoint(&mut self) -> Result<(), StreamError> {
        let outcome = self.store_checkpoint();
        self.dispatcher
            .metrics()
            .checkpoint_done(&self.health, &outcome);
        outcome.map(|_| ())
    }

    /// Store, in one transaction, every shard's last handled record and the
    /// store writes and outbox rows of the records handled since the last
    /// checkpoint; then publish those rows.
    /// Returns whether a store transaction was committed.
    fn store_checkpoint(&mut self) -> Result<bool, StreamError> {
        self.since_commit = 0;
        self.last_commit = Instant::now();
        let batch = self.batch;
        self.batch += 1;
        self.state.seal(batch);
        let effects = self.state.take_through(batch);
        let region = self.region().to_owned();
        let mut shards = Vec::new();
        for shard in &mut self.shards {
            if let Some(sequence) = shard.handled.as_ref().filter(|_| shard.dirty) {
                shards.push(ShardPosition {
                    region: region.clone(),
                    stream: self.options.streams[shard.stream].clone(),
                    shard: shard.id.clone(),
                    sequence_number: sequence.clone(),
                });
                shard.dirty = false;
            }
        }
        if shards.is_empty() && effects.is_empty() {
            return Ok(false);
        }
        let rows = self.store.commit(Commit {
            shards,
            effects,
            ..Commit::default()
        })?;
        self.state.committed();
        self.publish(rows)?;
        Ok(true)
    }
}

/// What serving a shard needs besides the shard and a dispatcher.
struct ServeContext<'a> {
    options: &'a StreamOptions,
    sink: &'a KinesisSink,
}

/// What serving shards did.
#[derive(Debug, Default)]
struct Served {
    /// Records settled (handled, skipped, or given a verdict).
    settled: usize,
    /// Records done with, whose position moved.
    done: usize,
    /// When the first and the last of them were settled.
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Served {
    fn add(&mut self, other: Served) {
        self.settled += other.settled;
        self.done += other.done;
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(other.last);
    }
}

/// Serve the shards with records in hand, each on its worker, the workers
/// in parallel (one on this thread). Returns when all are done.
fn serve_in_parallel(
    shards: &mut [Shard],
    pool: &mut [Dispatcher],
    context: &ServeContext<'_>,
) -> Served {
    let workers = pool.len();
    let mut groups: Vec<Vec<&mut Shard>> = (0..workers).map(|_| Vec::new()).collect();
    for shard in shards.iter_mut().filter(|s| !s.buffer.is_empty()) {
        groups[shard.worker % workers].push(shard);
    }
    let mut busy: Vec<(&mut Dispatcher, Vec<&mut Shard>)> = pool
        .iter_mut()
        .zip(groups)
        .filter(|(_, group)| !group.is_empty())
        .collect();
    let serve_group = |dispatcher: &mut Dispatcher, group: Vec<&mut Shard>| {
        let mut served = Served::default();
        for shard in group {
            served.add(serve(shard, dispatcher, context));
        }
        served
    };
    let Some((own_dispatcher, own_group)) = busy.pop() else {
        return Served::default();
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = busy
            .into_iter()
            .map(|(dispatcher, group)| scope.spawn(move || serve_group(dispatcher, group)))
            .collect();
        let mut served = serve_group(own_dispatcher, own_group);
        for other in others {
            match other.join() {
                Ok(part) => served.add(part),
                // A bug, not a guest's failure (traps are outcomes): the
                // shard's state is unknown, so stop as the single thread
                // would have.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        served
    })
}

/// Hand out the shard's buffered records until it is empty or has to wait.
fn serve(shard: &mut Shard, dispatcher: &mut Dispatcher, context: &ServeContext<'_>) -> Served {
    let mut served = Served::default();
    while let Some(record) = shard.buffer.front() {
        let retries = match shard.flow {
            Flow::Stopped => break,
            Flow::Waiting { until, .. } if Instant::now() < until => break,
            Flow::Waiting { retries, .. } => retries,
            Flow::Running => 0,
        };
        if let Some(wait) = lag_wait(context.options.min_lag, record.arrival_ms) {
            let until = Instant::now() + wait;
            shard.flow = Flow::Waiting { until, retries };
            break;
        }
        let Some(record) = shard.buffer.pop_front() else {
            break;
        };
        served.first.get_or_insert_with(Instant::now);
        let step = settle(shard, &record, retries, dispatcher, context);
        served.last = Some(Instant::now());
        served.settled += 1;
        match step {
            Step::Done => {
                shard.flow = Flow::Running;
                shard.handled = Some(record.sequence);
                shard.dirty = true;
                served.done += 1;
            }
            Step::Wait { until, retries } => {
                shard.flow = Flow::Waiting { until, retries };
                shard.buffer.push_front(record);
                break;
            }
            Step::Stop => {
                shard.flow = Flow::Stopped;
                shard.buffer.push_front(record);
                break;
            }
        }
    }
    served
}

/// Dispatch one record and carry out its verdict's side effects.
fn settle(
    shard: &Shard,
    record: &ShardRecord,
    retries: u32,
    dispatcher: &mut Dispatcher,
    context: &ServeContext<'_>,
) -> Step {
    let stream = &context.options.streams[shard.stream];
    let view = Record {
        source: Source::Kinesis,
        topic: stream,
        partition: &shard.id,
        offset: &record.sequence,
        key: Some(record.key.as_bytes()),
        timestamp_ms: record.arrival_ms,
        value: &record.data,
        retries,
    };
    match dispatcher.dispatch(&view) {
        Verdict::Commit => Step::Done,
        Verdict::Stop(_) => Step::Stop,
        Verdict::DeadLetter(_) => {
            let dead_letter = OutRecord {
                stream: context.options.names.dead_letter(stream),
                key: Some(record.key.clone()),
                data: record.data.clone(),
            };
            match context.sink.put_one(&dead_letter) {
                Ok(_) => Step::Done,
                Err(error) => {
                    let counts = dispatcher.counts_mut();
                    counts.dead_lettered = counts.dead_lettered.saturating_sub(1);
                    tracing::error!(
                        stream = %stream,
                        shard = %shard.id,
                        sequence_number = %record.sequence,
                        key = %record.key,
                        "cannot dead-letter: {error}; stopping this shard before the record"
                    );
                    Step::Stop
                }
            }
        }
        // Retry streams do not exist: every retry holds its shard.
        Verdict::Retry { retry, delay, .. } => Step::Wait {
            until: Instant::now() + delay,
            retries: retry,
        },
    }
}

/// What to do with a shard after settling one of its records.
enum Step {
    Done,
    Wait { until: Instant, retries: u32 },
    Stop,
}
