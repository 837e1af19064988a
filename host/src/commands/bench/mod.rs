//! `logpipe-host bench`: how close the host gets to what the broker can
//! deliver, and what the host itself costs per record.
//!
//! One run, one broker, one pre-loaded topic:
//! (a) a raw rdkafka consumer that only counts records (the physical limit),
//! (b) `logpipe-host run` with the no-op guest, (c) the same with the echo
//! guest (one produce per record), each as a child process of this binary,
//! and (d) in process, without a broker, the host's per-record work beside
//! the guest call itself. Prints a Markdown table.

mod broker;
mod child;
mod load;
mod overhead;
mod raw;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::cli::{BenchArgs, BenchScenario};
use crate::kafka::KafkaSettings;
use crate::kafka::topics;

use broker::Tansu;
use report::{Report, Row};

/// The topic the echo guest produces to (hard-coded in guests/echo).
const ECHO_OUT: &str = "echo-out";
/// How long a `run` child waits without a record before it exits. tansu
/// can take over a second to answer the first fetch of a topic holding a
/// million records; a shorter wait would end the run before it started.
const RUN_IDLE: Duration = Duration::from_millis(5000);

pub fn bench(args: BenchArgs, shutdown: &AtomicBool) -> anyhow::Result<ExitCode> {
    let wants = |s| args.scenarios.contains(&s);
    let needs_broker =
        wants(BenchScenario::A) || wants(BenchScenario::B) || wants(BenchScenario::C);
    let exe = std::env::current_exe().context("cannot find this binary (for the run children)")?;
    let work = tempfile::tempdir().context("cannot create a temporary folder")?;
    let noop_dir = noop_folder(&args, &exe, work.path())?;
    let echo_dir = match wants(BenchScenario::C) {
        true => Some(echo_folder(&args, &exe)?),
        false => None,
    };
    let mut report = Report::new(&args);
    // Kept until the end of the run: dropping it stops the broker.
    let mut _tansu = None;
    if needs_broker {
        let bootstrap = match &args.bootstrap_servers {
            Some(bootstrap) => {
                report.broker = format!("given: {bootstrap}");
                bootstrap.clone()
            }
            None => {
                let tansu = Tansu::start(work.path())?;
                report.broker = format!("tansu started by the bench on {}", tansu.bootstrap);
                let bootstrap = tansu.bootstrap.clone();
                _tansu = Some(tansu);
                bootstrap
            }
        };
        let settings = KafkaSettings {
            bootstrap_servers: bootstrap,
            properties: args.properties.clone(),
            ..KafkaSettings::default()
        };
        let topic = bench_topic();
        topics::ensure(
            &settings,
            &[
                (topic.clone(), args.partitions),
                (ECHO_OUT.to_owned(), args.partitions),
            ],
        )
        .context("cannot create the bench topics")?;
        let loaded = load::preload(&settings, &topic, args.records, args.partitions, shutdown)?;
        report.load = Some(loaded);
        let on_broker = OnBroker {
            settings: &settings,
            topic: &topic,
            exe: &exe,
            work: work.path(),
            records: args.records,
            shutdown,
        };
        if wants(BenchScenario::A) {
            report.add(raw_row(&on_broker)?);
        }
        if wants(BenchScenario::B) {
            let run = child::RunSpec::new(
                "noop",
                &noop_dir,
                crate::cli::ProduceMode::Outbox,
                args.workers,
            );
            report.add(run_row(&on_broker, &run, "(b) run, noop guest")?);
        }
        if let Some(echo_dir) = &echo_dir {
            let before = load::topic_total(&settings, ECHO_OUT)?;
            let run = child::RunSpec::new("echo", echo_dir, args.echo_produce_mode, args.workers);
            let label = format!(
                "(c) run, echo guest (produce per record, {})",
                mode_name(args.echo_produce_mode)
            );
            report.add(run_row(&on_broker, &run, &label)?);
            let after = load::topic_total(&settings, ECHO_OUT)?;
            report.echo_out = Some(after.saturating_sub(before));
        }
    }
    if wants(BenchScenario::D) {
        let measured = overhead::measure(&noop_dir, args.records, shutdown)?;
        report.overhead = Some(measured);
    }
    report.print();
    Ok(ExitCode::SUCCESS)
}

/// What scenarios a-c share.
struct OnBroker<'a> {
    settings: &'a KafkaSettings,
    topic: &'a str,
    exe: &'a Path,
    work: &'a Path,
    records: u64,
    shutdown: &'a AtomicBool,
}

fn raw_row(on: &OnBroker<'_>) -> anyhow::Result<Row> {
    tracing::info!("(a) raw rdkafka consume loop");
    let measured = raw::consume(on.settings, on.topic, on.records, on.shutdown)?;
    Ok(Row {
        scenario: "(a) raw rdkafka consume (count only)".into(),
        records: measured.records,
        busy: measured.busy,
        wall: Some(measured.wall),
        peak_rss_kib: measured.peak_rss_kib,
        rss_note: "bench process",
    })
}

fn run_row(on: &OnBroker<'_>, run: &child::RunSpec<'_>, label: &str) -> anyhow::Result<Row> {
    tracing::info!("{label}");
    child::warm_cache(on.exe, run.handlers)?;
    let offsets = on.work.join(format!("offsets-{}.sqlite3", run.name));
    let outcome = child::run_host(on.exe, on.settings, on.topic, run, &offsets, RUN_IDLE)?;
    if outcome.handled != on.records {
        bail!(
            "{label}: handled {} of {} records (summary: {})",
            outcome.handled,
            on.records,
            outcome.summary_line
        );
    }
    Ok(Row {
        scenario: label.to_owned(),
        records: outcome.records,
        busy: outcome.busy,
        // The idle wait at the end is the run's own choice, not work.
        wall: Some(outcome.wall.saturating_sub(RUN_IDLE)),
        peak_rss_kib: outcome.peak_rss_kib,
        rss_note: "child",
    })
}

fn mode_name(mode: crate::cli::ProduceMode) -> &'static str {
    match mode {
        crate::cli::ProduceMode::Outbox => "outbox",
        crate::cli::ProduceMode::Direct => "direct",
    }
}

/// A topic name no earlier run on the same broker used.
fn bench_topic() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "logpipe-bench-{}-{}-{}",
        std::process::id(),
        now.as_secs(),
        now.subsec_micros()
    )
}

/// `target/` of a binary at `target/<profile>/logpipe-host`.
fn target_dir(exe: &Path) -> Option<&Path> {
    exe.parent()?.parent()
}

/// Scenario b's folder: `--handlers-noop`, else a fresh folder holding only
/// the built noop.wasm (target/test-components holds fixtures that clash).
fn noop_folder(args: &BenchArgs, exe: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.handlers_noop {
        return Ok(dir.clone());
    }
    let built = target_dir(exe)
        .map(|t| t.join("test-components/noop.wasm"))
        .filter(|p| p.is_file())
        .with_context(|| {
            format!(
                "no built noop.wasm beside {} (target/test-components): run scripts/build-guests, \
                 or give --handlers-noop DIR",
                exe.display()
            )
        })?;
    let dir = work.join("handlers-noop");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::copy(&built, dir.join("noop.wasm"))
        .with_context(|| format!("cannot copy {}", built.display()))?;
    Ok(dir)
}

/// Scenario c's folder: `--handlers-echo`, else target/handlers (the echo
/// and person examples, so both Rust examples are loaded).
fn echo_folder(args: &BenchArgs, exe: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.handlers_echo {
        return Ok(dir.clone());
    }
    target_dir(exe)
        .map(|t| t.join("handlers"))
        .filter(|d| d.join("echo.wasm").is_file())
        .with_context(|| {
            format!(
                "no built echo.wasm beside {} (target/handlers): run scripts/build-guests, or \
                 give --handlers-echo DIR",
                exe.display()
            )
        })
}
