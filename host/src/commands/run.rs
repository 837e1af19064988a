//! `logpipe-host run`: consume Kafka topics (here) or Kinesis streams
//! ([`super::run_kinesis`]) and dispatch to handlers.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::EXIT_RECORD_FAILED;
use crate::cli::{ConsumeArgs, HandlerArgs, MetricsArgs, ProduceMode, RunArgs};
use crate::component::cache::ComponentCache;
use crate::component::host_api::HostServices;
use crate::component::manifest::HandlerDefaults;
use crate::component::watcher::{self, WatchOptions};
use crate::component::{GuestLimits, MessageSink, Registry, Runtime, RuntimeOptions};
use crate::dispatch::{Counts, Dispatcher};
use crate::kafka::consumer::{self, ConsumeOptions, StopReason};
use crate::kafka::topics::{self, TopicNames};
use crate::kafka::{KafkaSettings, KafkaSink};
use crate::metrics::{Metrics, http};
use crate::offsets::{HostLock, OffsetStore};
use crate::outbox::OutboxSink;
use crate::progress::Progress;
use crate::state::StateStore;

pub fn run(args: RunArgs, shutdown: &AtomicBool) -> anyhow::Result<ExitCode> {
    match (
        args.consume.topics.is_empty(),
        args.streams.streams.is_empty(),
    ) {
        (true, true) => {
            anyhow::bail!("nothing to consume: give --topic (Kafka) or --stream (Kinesis)")
        }
        (true, false) => return super::run_kinesis::run(args, shutdown),
        _ => {}
    }
    let settings = KafkaSettings {
        bootstrap_servers: args.kafka.bootstrap_servers.clone(),
        properties: args.kafka.properties.clone(),
    };
    let create = |needed: &[(String, i32)]| {
        topics::ensure(&settings, needed).context("cannot set up retry and dead-letter topics")
    };
    consume_with_handlers(
        &args.handler,
        &args.consume,
        &args.metrics,
        &settings,
        &args.offsets.path,
        shutdown,
        &create,
    )
}

/// Creates missing topics: the admin API for a broker, the mock cluster's
/// own call for `dev`.
pub type CreateTopics<'a> = &'a dyn Fn(&[(String, i32)]) -> anyhow::Result<()>;

/// Load the handlers, set up the retry and dead-letter topics their
/// policies need, then consume until stopped. Shared by `run` and `dev`.
pub fn consume_with_handlers(
    handler_args: &HandlerArgs,
    consume_args: &ConsumeArgs,
    metrics_args: &MetricsArgs,
    settings: &KafkaSettings,
    offsets: &Path,
    shutdown: &AtomicBool,
    create_topics: CreateTopics<'_>,
) -> anyhow::Result<ExitCode> {
    let _claim = HostLock::acquire(offsets)?;
    let metrics = start_metrics(metrics_args)?;
    let sink = Arc::new(KafkaSink::new(settings).context("cannot start the producer")?);
    sink.count_failures_in(metrics.clone());
    let mut store = OffsetStore::open(offsets)?;
    let state = Arc::new(StateStore::open(offsets)?);
    let guest_sink: Arc<dyn MessageSink> = match consume_args.produce_mode {
        ProduceMode::Direct => sink.clone(),
        ProduceMode::Outbox => Arc::new(OutboxSink {
            destination: sink.clone(),
            state: state.clone(),
        }),
    };
    let mut dispatcher = load_handlers(handler_args, guest_sink, state, metrics.clone())?;
    let names = TopicNames {
        group: consume_args.group_id.clone(),
        retry_suffix: consume_args.retry_topic_suffix.clone(),
        dlt_suffix: consume_args.dlt_topic_suffix.clone(),
    };
    let (retry_topics, dead_letter) = dispatcher.failure_needs();
    if retry_topics > 0 || dead_letter {
        let mut main = Vec::new();
        for topic in &consume_args.topics {
            let partitions = sink.partitions(topic)?;
            main.push((topic.clone(), i32::try_from(partitions.len()).unwrap_or(1)));
        }
        create_topics(&topics::failure_topics(
            &names,
            &main,
            retry_topics,
            dead_letter,
        ))?;
    }
    let options = ConsumeOptions {
        topics: consume_args.topics.clone(),
        names,
        retry_topics,
        idle_timeout: consume_args.consumer_timeout_ms.map(Duration::from_millis),
        min_lag: Duration::from_millis(consume_args.min_message_lag_ms),
        commit_interval: Duration::from_millis(consume_args.commit_interval_ms),
        commit_max_records: consume_args.commit_max_records.max(1),
        max_uncommitted: consume_args.max_uncommitted_records.max(1),
        shutdown_timeout: Duration::from_millis(consume_args.shutdown_timeout_ms),
    };
    let progress = Progress::for_run(metrics);
    let result = consumer::consume(
        settings,
        &options,
        &mut dispatcher,
        &sink,
        &mut store,
        shutdown,
    );
    drop(progress);
    let counts = dispatcher.counts();
    let busy = result.as_ref().map(|s| s.busy).unwrap_or_default();
    print_summary(counts, busy);
    let summary = result.context("consuming stopped")?;
    Ok(exit_code(summary.reason))
}

/// The process's metrics, served on `--metrics-addr` when it is given.
/// Listening starts before anything slow, so a taken address fails at once.
pub fn start_metrics(args: &MetricsArgs) -> anyhow::Result<Arc<Metrics>> {
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = &args.metrics_addr {
        http::serve(addr, metrics.clone())?;
    }
    Ok(metrics)
}

/// The summary goes to stdout, one line, for operators and scripts alike.
pub fn print_summary(counts: Counts, busy: Duration) {
    let busy = busy.as_secs_f64();
    println!(
        "summary: {counts} busy_s={busy:.3} records_per_s={:.0}",
        if busy > 0.0 {
            counts.total() as f64 / busy
        } else {
            0.0
        }
    );
}

pub fn exit_code(reason: StopReason) -> ExitCode {
    match reason {
        StopReason::Idle | StopReason::Shutdown => ExitCode::SUCCESS,
        StopReason::Failed { stopped } => {
            tracing::error!(
                "stopped {} at their first failed record; their positions stay before it, \
                 so the next start retries it",
                stopped.join(", ")
            );
            ExitCode::from(EXIT_RECORD_FAILED)
        }
    }
}

/// Build the Wasm runtime, load every component of `--handlers`, and
/// watch the folder for hot swaps unless `--no-watch`.
pub fn load_handlers(
    args: &HandlerArgs,
    sink: Arc<dyn MessageSink>,
    state: Arc<StateStore>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Dispatcher> {
    let started = Instant::now();
    let runtime = build_runtime(args, sink, state, metrics)?;
    let registry = Registry::load(runtime.clone(), &args.handlers)?;
    tracing::info!(
        handlers = registry.len(),
        elapsed = ?started.elapsed(),
        "handlers ready"
    );
    let served = registry.served();
    let policies = registry.runtime().defaults.policies.clone();
    let dispatcher = Dispatcher::new(registry, args.ignore_types.iter().cloned(), policies);
    if args.no_watch {
        return Ok(dispatcher);
    }
    let options = WatchOptions {
        settle: Duration::from_millis(args.handlers_settle_ms),
        ..WatchOptions::default()
    };
    let (watcher, changes) = watcher::watch(runtime, &args.handlers, served, options)
        .context("cannot watch the handlers folder")?;
    Ok(dispatcher.with_hot_swap(watcher, changes))
}

/// The Wasm engine with the limits and cache of the command line.
pub fn build_runtime(
    args: &HandlerArgs,
    sink: Arc<dyn MessageSink>,
    state: Arc<StateStore>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<Runtime>> {
    let limits = GuestLimits {
        call_timeout: Duration::from_millis(args.handler_timeout_ms.max(1)),
        max_memory_bytes: args.handler_memory_mib.saturating_mul(1 << 20),
        max_produce_calls: args.handler_max_produce_calls,
        max_produce_bytes: args.handler_max_produce_bytes,
        ..GuestLimits::default()
    };
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(ComponentCache::default_dir)
    };
    let policies = args
        .failures
        .policies()
        .map_err(|e| anyhow::anyhow!("invalid retry settings: {e}"))?;
    let options = RuntimeOptions {
        defaults: HandlerDefaults { limits, policies },
        cache: ComponentCache::new(cache_dir),
        pooling: args.pooling,
    };
    let services = HostServices {
        sink,
        produce: args.envelope.settings(),
        state,
        metrics,
    };
    Runtime::new(options, services)
        .map_err(anyhow::Error::from)
        .context("cannot create the WebAssembly engine")
}
