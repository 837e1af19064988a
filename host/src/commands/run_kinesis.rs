//! `logpipe-host run --stream`: the same handlers over Kinesis streams.
//! Handlers produce to Kinesis streams (the `produce` topic names a stream).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;

use super::run::{exit_code, load_handlers, print_summary, start_metrics};
use crate::cli::{InitialIterator, OffsetStoreKind, ProduceMode, RunArgs};
use crate::component::MessageSink;
use crate::kafka::topics::TopicNames;
use crate::kinesis::reader::StartAt;
use crate::kinesis::source::{self, StreamOptions};
use crate::kinesis::{KinesisClient, KinesisSink};
use crate::offsets::{HostLock, OffsetStore};
use crate::outbox::OutboxSink;
use crate::progress::Progress;
use crate::state::StateStore;

/// How long start-up waits for Kinesis to answer before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Shards of a dead-letter stream the host creates.
const DEAD_LETTER_SHARDS: i32 = 1;

pub fn run(args: RunArgs, shutdown: &AtomicBool) -> anyhow::Result<ExitCode> {
    let consume = &args.consume;
    let streams = &args.streams;
    let offsets = &args.offsets.path;
    if let Some(pattern) = streams
        .streams
        .iter()
        .find(|s| crate::kafka::patterns::is_pattern(s))
    {
        anyhow::bail!(
            "--stream {pattern:?}: patterns are supported for Kafka topics only; name each stream"
        );
    }
    let _claim = HostLock::acquire(offsets)?;
    let metrics = start_metrics(&args.metrics)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kinesis")
        .enable_all()
        .build()
        .context("cannot start the Kinesis client's runtime")?;
    let kinesis = runtime
        .block_on(KinesisClient::connect(&streams.kinesis.settings()))
        .context("cannot set up the Kinesis client")?;
    let sink = Arc::new(KinesisSink::new(
        kinesis.clone(),
        runtime.handle().clone(),
        streams.kinesis.kinesis_seq_num_cache_size,
    ));
    for stream in &streams.streams {
        sink.check_stream_at_start(stream, START_TIMEOUT)
            .with_context(|| format!("cannot consume Kinesis stream {stream:?}"))?;
    }
    let mut store = OffsetStore::open(offsets)?;
    let state = Arc::new(StateStore::open(offsets)?);
    if consume.offset_store == OffsetStoreKind::Kafka {
        anyhow::bail!(
            "--offset-store kafka is for Kafka topics: Kinesis positions are kept in the \
             --offsets file"
        );
    }
    let produce_mode = consume.produce_mode().map_err(|e| anyhow::anyhow!(e))?;
    let guest_sink: Arc<dyn MessageSink> = match produce_mode {
        ProduceMode::Direct => sink.clone(),
        ProduceMode::Outbox => Arc::new(OutboxSink {
            destination: sink.clone(),
            state: state.clone(),
        }),
    };
    let mut dispatcher = load_handlers(&args.handler, guest_sink, state, metrics.clone())?;
    let names = TopicNames {
        group: consume.group_id.clone(),
        retry_suffix: consume.retry_topic_suffix.clone(),
        dlt_suffix: consume.dlt_topic_suffix.clone(),
    };
    let (retry_topics, dead_letter) = dispatcher.failure_needs();
    if retry_topics > 0 {
        anyhow::bail!(
            "non-blocking retries need retry topics, which only Kafka has: with --stream, \
             retry by holding the shard (drop --retry-non-blocking, and non_blocking from \
             the handlers' manifests)"
        );
    }
    if dead_letter {
        for stream in &streams.streams {
            let name = names.dead_letter(stream);
            sink.ensure_stream(&name, DEAD_LETTER_SHARDS)
                .with_context(|| format!("cannot set up dead-letter stream {name:?}"))?;
        }
    }
    let options = StreamOptions {
        health_component: args.metrics.health_component("kinesis"),
        streams: streams.streams.clone(),
        initial: match streams.kinesis_iterator {
            InitialIterator::TrimHorizon => StartAt::TrimHorizon,
            InitialIterator::Latest => StartAt::Latest,
        },
        fetch_limit: streams.kinesis_fetch_limit,
        poll_interval: Duration::from_millis(streams.kinesis_poll_interval_ms),
        names,
        idle_timeout: consume.consumer_timeout_ms.map(Duration::from_millis),
        commit_interval: Duration::from_millis(consume.commit_interval_ms),
        commit_max_records: consume.commit_max_records.max(1),
        min_lag: Duration::from_millis(consume.min_message_lag_ms),
        workers: consume.worker_count(),
    };
    let progress = Progress::for_run(metrics);
    let result = source::consume(
        &runtime,
        &kinesis,
        &options,
        &mut dispatcher,
        &sink,
        &mut store,
        shutdown,
    );
    drop(progress);
    let busy = result.as_ref().map(|s| s.busy).unwrap_or_default();
    print_summary(dispatcher.counts(), busy);
    let summary = result.context("consuming stopped")?;
    // Readers may be waiting on the network: do not wait for them.
    runtime.shutdown_background();
    Ok(exit_code(summary.reason))
}
