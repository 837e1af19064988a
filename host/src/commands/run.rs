//! `logpipe-host run`: consume Kafka topics (here) or Kinesis streams
//! ([`super::run_kinesis`]) and dispatch to handlers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::EXIT_RECORD_FAILED;
use crate::cli::{ConsumeArgs, HandlerArgs, MetricsArgs, OffsetStoreKind, ProduceMode, RunArgs};
use crate::component::cache::ComponentCache;
use crate::component::host_api::HostServices;
use crate::component::manifest::HandlerDefaults;
use crate::component::watcher::{self, WatchOptions};
use crate::component::{GuestLimits, MessageSink, Registry, Runtime, RuntimeOptions};
use crate::config::{self, ConfigContext, ConfigFile, ConsumerBlock};
use crate::dispatch::{Counts, Dispatcher};
use crate::kafka::consumer::{self, ConsumeOptions, StopReason};
use crate::kafka::patterns;
use crate::kafka::topics::{self, TopicNames};
use crate::kafka::{KafkaSettings, KafkaSink};
use crate::metrics::{Metrics, http};
use crate::offsets::{HostLock, OffsetStore};
use crate::outbox::OutboxSink;
use crate::progress::Progress;
use crate::state::StateStore;

/// `run`: the command line's consumer, or the config file's `[[consumer]]`
/// blocks (all of them concurrently, or the one `--consumer` names).
pub fn run_command(
    args: RunArgs,
    context: &ConfigContext,
    shutdown: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let config = match context.config.as_deref() {
        Some(config) if !config.consumers.is_empty() => config,
        _ => {
            if let Some(name) = &args.consumer {
                anyhow::bail!("--consumer {name:?}: no config file with [[consumer]] blocks");
            }
            return run(args, shutdown);
        }
    };
    let blocks: Vec<&ConsumerBlock> = match &args.consumer {
        Some(name) => vec![config.consumer(name).with_context(|| {
            let names: Vec<&str> = config.consumers.iter().map(|c| c.name.as_str()).collect();
            format!(
                "no [[consumer]] named {name:?} in {} (there are: {})",
                config.path.display(),
                names.join(", ")
            )
        })?],
        None => config.consumers.iter().collect(),
    };
    let mut runs = consumer_runs(&context.argv, config, &blocks)?;
    if runs.len() == 1 {
        let args = runs.remove(0);
        let _span = tracing::info_span!("consumer", name = %blocks[0].name).entered();
        return run(args, shutdown);
    }
    // One /metrics and /health endpoint for the process, shared by every
    // consumer; each reports its own health component.
    let metrics = start_metrics(&runs[0].metrics)?;
    for (block, run) in blocks.iter().zip(runs.iter_mut()) {
        run.metrics.shared = Some(metrics.clone());
        run.metrics.consumer = Some(block.name.clone());
    }
    run_concurrently(
        blocks.iter().map(|b| b.name.clone()).zip(runs),
        &metrics,
        shutdown,
    )
}

/// Each consumer in its own thread; one that fails does not stop the
/// others. The exit status is the worst of them: an error (1) over a failed
/// record (3) over success.
fn run_concurrently(
    runs: impl Iterator<Item = (String, RunArgs)>,
    metrics: &Metrics,
    shutdown: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let results: Vec<(String, anyhow::Result<ExitCode>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .map(|(name, args)| {
                let thread_name = name.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("consumer-{name}"))
                    .spawn_scoped(scope, move || {
                        let _span = tracing::info_span!("consumer", name = %thread_name).entered();
                        let result = run(args, shutdown);
                        if let Err(error) = &result {
                            // A consumer that stopped on an error keeps
                            // /health at 503 while the others run on.
                            metrics
                                .health
                                .component(&format!("consumer {thread_name}"))
                                .fail("running", format!("{error:#}"));
                        }
                        result
                    });
                (name, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, handle)| {
                let result = match handle {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the consumer thread panicked"))),
                    Err(e) => Err(anyhow::Error::from(e).context("cannot start a thread")),
                };
                (name, result)
            })
            .collect()
    });
    let mut worst = ExitCode::SUCCESS;
    let mut errors = Vec::new();
    for (name, result) in results {
        match result {
            Ok(code) if code == ExitCode::SUCCESS => {}
            Ok(code) => {
                if errors.is_empty() {
                    worst = code;
                }
            }
            Err(error) => {
                tracing::error!(consumer = %name, "{error:#}");
                errors.push(format!("consumer {name:?}: {error:#}"));
            }
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    Ok(worst)
}

/// The `run` options of each block. Each consumer keeps its own offsets
/// file (a store belongs to one consumer: two would share offsets, outbox
/// and handler state): the block's `offsets`, else the top-level file name
/// with the consumer's name before the extension.
pub fn consumer_runs(
    argv: &[OsString],
    config: &ConfigFile,
    blocks: &[&ConsumerBlock],
) -> anyhow::Result<Vec<RunArgs>> {
    for flag in ["--topic", "--stream"] {
        if argv.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        }) {
            anyhow::bail!(
                "{flag} cannot be combined with the [[consumer]] blocks of {}: each block names                  its own; pick one with --consumer NAME",
                config.path.display()
            );
        }
    }
    let mut runs: Vec<RunArgs> = Vec::new();
    for block in blocks {
        let mut args = config::run_args(argv, Some(config), Some(block))
            .with_context(|| format!("consumer {:?}", block.name))?;
        if !block.settings.contains_key("offsets") {
            args.offsets.path = per_consumer(&args.offsets.path, &block.name);
        }
        if let Some(other) = runs
            .iter()
            .position(|r| r.offsets.path == args.offsets.path)
        {
            anyhow::bail!(
                "consumers {:?} and {:?} both use the offsets file {}: give each its own",
                blocks[other].name,
                block.name,
                args.offsets.path.display()
            );
        }
        runs.push(args);
    }
    Ok(runs)
}

/// `dir/logpipe-offsets.sqlite3` → `dir/logpipe-offsets.NAME.sqlite3`.
fn per_consumer(path: &Path, name: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "logpipe-offsets".into());
    let file = match path.extension() {
        Some(ext) => format!("{stem}.{name}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{name}"),
    };
    path.with_file_name(file)
}

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
    let settings = args.kafka.settings();
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
    let produce_mode = consume_args
        .produce_mode()
        .map_err(|e| anyhow::anyhow!(e))?;
    let guest_sink: Arc<dyn MessageSink> = match produce_mode {
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
    // Retry and dead-letter topics of a topic, created before it is read;
    // for named topics now, for pattern matches when they are found.
    let set_up = |mains: &[String]| -> anyhow::Result<()> {
        if retry_topics == 0 && !dead_letter {
            return Ok(());
        }
        let mut main = Vec::new();
        for topic in mains {
            let partitions = sink.partitions(topic)?;
            main.push((topic.clone(), i32::try_from(partitions.len()).unwrap_or(1)));
        }
        create_topics(&topics::failure_topics(
            &names,
            &main,
            retry_topics,
            dead_letter,
        ))
    };
    let named: Vec<String> = consume_args
        .topics
        .iter()
        .filter(|t| !patterns::is_pattern(t))
        .cloned()
        .collect();
    set_up(&named)?;
    let options = ConsumeOptions {
        topics: consume_args.topics.clone(),
        pattern_refresh: Duration::from_millis(consume_args.pattern_refresh_ms.max(100)),
        health_component: metrics_args.health_component("kafka"),
        group: consume_args.offset_store == OffsetStoreKind::Kafka,
        names: names.clone(),
        retry_topics,
        idle_timeout: consume_args.consumer_timeout_ms.map(Duration::from_millis),
        min_lag: Duration::from_millis(consume_args.min_message_lag_ms),
        commit_interval: Duration::from_millis(consume_args.commit_interval_ms),
        commit_max_records: consume_args.commit_max_records.max(1),
        max_uncommitted: consume_args.max_uncommitted_records.max(1),
        shutdown_timeout: Duration::from_millis(consume_args.shutdown_timeout_ms),
        workers: consume_args.worker_count(),
    };
    let progress = Progress::for_run(metrics);
    let result = consumer::consume(
        settings,
        &options,
        &mut dispatcher,
        &sink,
        &mut store,
        shutdown,
        &set_up,
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
    if let Some(shared) = &args.shared {
        return Ok(shared.clone());
    }
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
