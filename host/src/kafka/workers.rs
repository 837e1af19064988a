//! Who settles the records: the consume loop itself (`--workers 1`), or a
//! pool of worker threads, each with its own instance of every handler.
//!
//! Order rule: every record of a partition goes to the same worker, which
//! settles them one at a time in the order it got them, and the loop
//! applies each worker's outcomes in the order they come back. When a
//! record holds or stops its partition, the worker drops that partition's
//! later records it was already given, unhandled, until the loop hands it
//! the partition again under a new generation (after seeking back, so they
//! are read again).
//!
//! A handled record's store writes and outbox records wait in its worker's
//! pending layer until the loop stages its offset (see
//! [`crate::state::StateStore::defer_record`]), so checkpoints never wait
//! for the workers.

use std::borrow::BorrowMut;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use super::group::GroupHooks;
use super::producer::KafkaSink;
use super::record::{OwnedRecord, View};
use super::settle::{ReadFrom, Settler, Step, log_stop};
use super::topics::TopicNames;
use crate::component::watcher::Change;
use crate::dispatch::{Counts, Dispatcher};

/// Records given to the pool and not yet settled, per worker, before the
/// loop stops taking new ones. Enough to keep a worker busy through a
/// poll; small enough to bound what a stop waits for and what memory holds.
const WINDOW_PER_WORKER: usize = 256;

/// One record for a worker.
pub struct Task {
    pub slot: usize,
    /// The partition's generation when the record was read (see the module
    /// comment).
    pub generation: u64,
    pub from: ReadFrom,
    pub record: OwnedRecord,
}

/// What became of a record.
pub struct Outcome {
    pub slot: usize,
    pub offset: i64,
    /// `None`: dropped unhandled, as an earlier record of its partition
    /// held or stopped it.
    pub step: Option<Step>,
    /// The record, when it is held (with its retry count updated).
    pub held: Option<OwnedRecord>,
    /// The worker thread whose deferred effects are this record's (see
    /// [`crate::state::StateStore::defer_record`]); the loop absorbs them
    /// as it applies the outcome.
    pub effects_of: Option<ThreadId>,
}

enum Job {
    Settle(Task),
    /// A hot swap, applied between two records.
    Swap(Change),
}

/// What every worker needs besides its handlers.
#[derive(Clone)]
pub struct SettleContext {
    pub sink: Arc<KafkaSink>,
    pub names: TopicNames,
    pub retry_topics: u32,
    pub group: Option<Arc<GroupHooks>>,
}

impl SettleContext {
    fn settler<D: BorrowMut<Dispatcher>>(self, dispatcher: D) -> Settler<D> {
        Settler::new(
            dispatcher,
            self.sink,
            self.names,
            self.retry_topics,
            self.group,
        )
    }
}

pub enum Executor<'a> {
    /// Settle each record at once, on the loop's thread.
    Inline(Settler<&'a mut Dispatcher>),
    Pool(Pool<'a>),
}

pub struct Pool<'a> {
    /// Watches the handlers folder and logs swaps; handles no records.
    master: &'a mut Dispatcher,
    jobs: Vec<Sender<Job>>,
    outcomes: Receiver<Outcome>,
    threads: Vec<JoinHandle<Counts>>,
    /// Tasks sent whose outcome has not been received.
    outstanding: usize,
    /// Tasks sent and not yet settled by their worker (the rebalance hook
    /// waits for zero).
    in_flight: Arc<AtomicUsize>,
    window: usize,
}

impl<'a> Executor<'a> {
    /// `workers` threads (none for 1), each with its own handler
    /// instances, forked from `dispatcher`.
    pub fn start(
        dispatcher: &'a mut Dispatcher,
        workers: usize,
        context: SettleContext,
        in_flight: Arc<AtomicUsize>,
    ) -> std::io::Result<Self> {
        if workers <= 1 {
            return Ok(Executor::Inline(context.settler(dispatcher)));
        }
        let (outcome_sender, outcomes) = mpsc::channel();
        let mut jobs = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let (job_sender, job_receiver) = mpsc::channel();
            let settler = context
                .clone()
                .settler(dispatcher.fork().deferring_effects());
            let (outcome_sender, in_flight) = (outcome_sender.clone(), in_flight.clone());
            let span = tracing::Span::current();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    let _span = span.entered();
                    work(settler, job_receiver, outcome_sender, &in_flight)
                })?;
            jobs.push(job_sender);
            threads.push(thread);
        }
        // The workers have instances of their own; this one's would only
        // take memory.
        dispatcher.park();
        tracing::info!(workers, "handling partitions in parallel");
        Ok(Executor::Pool(Pool {
            master: dispatcher,
            jobs,
            outcomes,
            threads,
            outstanding: 0,
            in_flight,
            window: WINDOW_PER_WORKER * workers,
        }))
    }

    /// The dispatcher the counts add up in (a pool's, once it stopped).
    pub fn dispatcher(&mut self) -> &mut Dispatcher {
        match self {
            Executor::Inline(settler) => settler.dispatcher(),
            Executor::Pool(pool) => pool.master,
        }
    }

    /// Apply handler changes between two records (of each worker).
    pub fn apply_changes(&mut self) {
        match self {
            Executor::Inline(settler) => settler.dispatcher().apply_changes(),
            Executor::Pool(pool) => {
                let jobs = &pool.jobs;
                pool.master.fan_out_changes(|change| {
                    for worker in jobs {
                        let _ = worker.send(Job::Swap(change.fork()));
                    }
                });
            }
        }
    }

    /// How many threads settle records.
    pub fn workers(&self) -> usize {
        match self {
            Executor::Inline(_) => 1,
            Executor::Pool(pool) => pool.jobs.len().max(1),
        }
    }

    /// Settle `view` now and return its outcome, or give it to `worker`
    /// (`None`; see [`Executor::next_outcome`]). A partition's records
    /// must always go to the same worker.
    pub fn submit(
        &mut self,
        worker: usize,
        slot: usize,
        generation: u64,
        from: &ReadFrom,
        view: &View<'_>,
    ) -> Option<Outcome> {
        match self {
            Executor::Inline(settler) => {
                let step = settler.settle(view, from);
                Some(outcome_of(slot, view.offset, step, || view.to_owned()))
            }
            Executor::Pool(pool) => {
                let task = Task {
                    slot,
                    generation,
                    from: from.clone(),
                    record: view.to_owned(),
                };
                pool.send(worker, task);
                None
            }
        }
    }

    /// Whether more records may be given out now.
    pub fn has_room(&self) -> bool {
        match self {
            Executor::Inline(_) => true,
            Executor::Pool(pool) => pool.outstanding < pool.window,
        }
    }

    /// Records given out whose outcome has not been taken.
    pub fn outstanding(&self) -> usize {
        match self {
            Executor::Inline(_) => 0,
            Executor::Pool(pool) => pool.outstanding,
        }
    }

    /// The next outcome of the pool, waiting up to `wait` for one.
    pub fn next_outcome(&mut self, wait: Duration) -> Option<Outcome> {
        let Executor::Pool(pool) = self else {
            return None;
        };
        if pool.outstanding == 0 {
            return None;
        }
        let outcome = if wait.is_zero() {
            pool.outcomes.try_recv().ok()
        } else {
            match pool.outcomes.recv_timeout(wait) {
                Ok(outcome) => Some(outcome),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // Every worker is gone (they only stop with the pool):
                    // nothing more will come back. The records they had
                    // keep their offsets unstaged, so the next start
                    // handles them.
                    tracing::error!(
                        records = pool.outstanding,
                        "the worker threads are gone; their records were not settled"
                    );
                    pool.outstanding = 0;
                    None
                }
            }
        };
        if outcome.is_some() {
            pool.outstanding -= 1;
        }
        outcome
    }

    /// Stop the workers, adding their counts to the dispatcher's.
    pub fn finish(&mut self) {
        if let Executor::Pool(pool) = self {
            pool.stop();
        }
    }
}

impl Pool<'_> {
    fn send(&mut self, worker: usize, task: Task) {
        let worker = worker % self.jobs.len();
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        match self.jobs[worker].send(Job::Settle(task)) {
            Ok(()) => self.outstanding += 1,
            Err(mpsc::SendError(_)) => {
                // Only a worker that panicked outside a record is gone; the
                // record stays unsettled and its offset is never staged.
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                tracing::error!(worker, "worker thread is gone; its records are not handled");
            }
        }
    }

    fn stop(&mut self) {
        self.jobs.clear();
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(counts) => self.master.counts_mut().add(&counts),
                Err(_) => tracing::error!("a worker thread panicked"),
            }
        }
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until the workers settled everything they were given, up to
/// `timeout`; false if they did not.
pub fn wait_settled(in_flight: &AtomicUsize, timeout: Duration) -> bool {
    let started = Instant::now();
    while in_flight.load(Ordering::SeqCst) > 0 {
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A worker: settle tasks in the order they come until the pool stops.
fn work(
    mut settler: Settler<Dispatcher>,
    jobs: Receiver<Job>,
    outcomes: Sender<Outcome>,
    in_flight: &AtomicUsize,
) -> Counts {
    // Partitions held or stopped, by slot: the generation that did it.
    let mut blocked: Vec<Option<u64>> = Vec::new();
    for job in jobs {
        match job {
            Job::Swap(change) => settler.dispatcher().apply_quietly(change),
            Job::Settle(task) => {
                let outcome = settle_task(&mut settler, &mut blocked, task);
                // Sent before counting it settled: once the count is zero,
                // every outcome is waiting for the loop.
                let _ = outcomes.send(outcome);
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    settler.dispatcher().counts()
}

fn settle_task(
    settler: &mut Settler<Dispatcher>,
    blocked: &mut Vec<Option<u64>>,
    task: Task,
) -> Outcome {
    let Task {
        slot,
        generation,
        from,
        record,
    } = task;
    if blocked
        .get(slot)
        .copied()
        .flatten()
        .is_some_and(|g| g >= generation)
    {
        return Outcome {
            slot,
            offset: record.offset,
            step: None,
            held: None,
            effects_of: None,
        };
    }
    let view = record.view();
    let step =
        catch_unwind(AssertUnwindSafe(|| settler.settle(&view, &from))).unwrap_or_else(|_| {
            log_stop(&view, "the worker panicked settling this record");
            Step::Stop
        });
    if step != Step::Done {
        if blocked.len() <= slot {
            blocked.resize(slot + 1, None);
        }
        blocked[slot] = Some(generation);
    }
    let offset = view.offset;
    let mut outcome = outcome_of(slot, offset, step, move || record);
    if settler.dispatcher().take_deferred() {
        outcome.effects_of = Some(std::thread::current().id());
    }
    outcome
}

fn outcome_of(slot: usize, offset: i64, step: Step, copy: impl FnOnce() -> OwnedRecord) -> Outcome {
    let held = match step {
        Step::Hold { retries, .. } => {
            let mut record = copy();
            record.retries = retries;
            Some(record)
        }
        Step::Done | Step::Stop => None,
    };
    Outcome {
        slot,
        offset,
        step: Some(step),
        held,
        effects_of: None,
    }
}
