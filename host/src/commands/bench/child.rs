//! Scenarios (b) and (c): the real `logpipe-host run`, as a child process
//! of this binary, so its figures (and its peak RSS) are those of a real
//! deployment, start-up included.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::ProduceMode;
use crate::kafka::KafkaSettings;

/// One `run` to measure.
pub struct RunSpec<'a> {
    /// For file names.
    pub name: &'a str,
    pub handlers: &'a Path,
    pub produce_mode: ProduceMode,
    /// `--workers`, when the bench was given one.
    pub workers: Option<u16>,
}

impl<'a> RunSpec<'a> {
    pub fn new(
        name: &'a str,
        handlers: &'a Path,
        produce_mode: ProduceMode,
        workers: Option<u16>,
    ) -> Self {
        RunSpec {
            name,
            handlers,
            produce_mode,
            workers,
        }
    }
}

/// What a finished `run` reported.
#[derive(Debug)]
pub struct RunOutcome {
    pub records: u64,
    pub handled: u64,
    /// The summary's `busy_s`: first record received to last settled.
    pub busy: Duration,
    /// Spawn to exit, the final idle wait included.
    pub wall: Duration,
    /// The child's peak resident set size (sampled VmHWM).
    pub peak_rss_kib: Option<u64>,
    pub summary_line: String,
}

/// A child of this binary with a clean environment: no `LOGPIPE_*` setting
/// (a config file or a topic from the caller's shell) but the cache folder.
fn host_command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("LOGPIPE_") && name != "LOGPIPE_CACHE_DIR" {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null());
    command
}

/// Compile (or find in the cache) every component of `handlers` before
/// anything is timed, and fail early on a bad folder.
pub fn warm_cache(exe: &Path, handlers: &Path) -> anyhow::Result<()> {
    let output = host_command(exe)
        .args(["handlers", "list", "--log", "warn", "--handlers"])
        .arg(handlers)
        .output()
        .context("cannot run `logpipe-host handlers list`")?;
    if !output.status.success() {
        bail!(
            "handlers folder {} is not usable:\n{}{}",
            handlers.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Run `logpipe-host run` over `topic` until it has been idle for `idle`.
pub fn run_host(
    exe: &Path,
    settings: &KafkaSettings,
    topic: &str,
    run: &RunSpec<'_>,
    offsets: &Path,
    idle: Duration,
) -> anyhow::Result<RunOutcome> {
    let log = offsets.with_extension("log");
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mode = match run.produce_mode {
        ProduceMode::Outbox => "outbox",
        ProduceMode::Direct => "direct",
    };
    let mut command = host_command(exe);
    command
        .args(["run", "--log", "warn", "--handlers"])
        .arg(run.handlers)
        .args(["--topic", topic])
        .args(["--bootstrap-servers", &settings.bootstrap_servers])
        .arg("--offsets")
        .arg(offsets)
        .args(["--produce-mode", mode])
        .args(
            run.workers
                .map(|n| ["--workers".to_owned(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .args(
            settings
                .properties
                .iter()
                .flat_map(|(key, value)| ["-X".to_owned(), format!("{key}={value}")]),
        )
        .arg("--consumer-timeout-ms")
        .arg(OsString::from(idle.as_millis().to_string()))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
    let started = Instant::now();
    let mut child = command.spawn().context("cannot start `logpipe-host run`")?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_string(&mut text);
        }
        text
    });
    let finished = wait_sampling_peak(&mut child).context("cannot wait for `logpipe-host run`")?;
    let wall = started.elapsed();
    let stdout = reader.join().unwrap_or_default();
    if !finished.status.success() {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(10).collect();
        bail!(
            "`logpipe-host run` with {} exited with {}:\n{}",
            run.handlers.display(),
            finished.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let summary_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .with_context(|| format!("no summary line in the output of `run`: {stdout:?}"))?
        .to_owned();
    let summary = parse_summary(&summary_line);
    let number = |name: &str| -> anyhow::Result<f64> {
        summary
            .get(name)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in the summary {summary_line:?}"))
    };
    Ok(RunOutcome {
        records: number("records")? as u64,
        handled: number("handled")? as u64,
        busy: Duration::from_secs_f64(number("busy_s")?.max(0.0)),
        wall,
        peak_rss_kib: finished.peak_rss_kib,
        summary_line,
    })
}

/// The `name=value` pairs of a summary line.
fn parse_summary(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

struct Finished {
    status: ExitStatus,
    peak_rss_kib: Option<u64>,
}

/// How often the child's peak RSS is read while it runs.
const RSS_SAMPLE: Duration = Duration::from_millis(50);

/// Wait for `child`, reading its peak RSS (VmHWM, which only grows) until
/// it exits; what it gains in its last moments may be missed. Not wait4's
/// ru_maxrss: that also counts the parent's peak RSS when the child was
/// spawned (the kernel records the old address space's high-water mark at
/// exec), which made a small `run` look as large as the bench process.
fn wait_sampling_peak(child: &mut Child) -> std::io::Result<Finished> {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = None;
    loop {
        // Until it is reaped the pid is the child's: no other process can
        // have taken it.
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .as_deref()
            .and_then(|text| status_kib(text, "VmHWM:"))
        {
            peak = peak.max(Some(kib));
        }
        if let Some(status) = child.try_wait()? {
            return Ok(Finished {
                status,
                peak_rss_kib: peak,
            });
        }
        std::thread::sleep(RSS_SAMPLE);
    }
}

/// A `kB` field of /proc/<pid>/status.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_pairs() {
        let pairs = parse_summary("records=5 handled=4 busy_s=0.250 records_per_s=20");
        assert_eq!(pairs.get("records"), Some(&"5"));
        assert_eq!(pairs.get("busy_s"), Some(&"0.250"));
    }
}
