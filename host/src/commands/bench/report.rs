//! The bench's output: machine, set-up, a Markdown table, and the targets.

use std::time::Duration;

use super::load::{Loaded, RECORD_BYTES};
use super::overhead::{COMMIT_EVERY, Overhead, ROUNDS};
use crate::cli::BenchArgs;

/// Targets of the benchmark (issue 7).
const TARGET_RATIO: f64 = 0.8;
const TARGET_OVERHEAD_NS: f64 = 1000.0;
const TARGET_RSS_KIB: u64 = 100 * 1024;

/// One measured scenario on the broker.
pub struct Row {
    pub scenario: String,
    pub records: u64,
    /// First record to last: the rate's denominator.
    pub busy: Duration,
    /// Start to last record (for `run`: process start to exit, minus the
    /// idle wait).
    pub wall: Option<Duration>,
    pub peak_rss_kib: Option<u64>,
    /// Whose RSS it is.
    pub rss_note: &'static str,
}

impl Row {
    fn rate(&self) -> f64 {
        rate(self.records, self.busy)
    }
}

fn rate(records: u64, time: Duration) -> f64 {
    let seconds = time.as_secs_f64();
    if seconds > 0.0 {
        records as f64 / seconds
    } else {
        0.0
    }
}

pub struct Report {
    pub records: u64,
    pub partitions: i32,
    /// `--workers` of the runs (`None`: their default, one per core).
    pub workers: Option<u16>,
    pub broker: String,
    pub load: Option<Loaded>,
    pub rows: Vec<Row>,
    /// Records the echo guest's output topic gained in scenario c.
    pub echo_out: Option<u64>,
    pub overhead: Option<Overhead>,
}

impl Report {
    pub fn new(args: &BenchArgs) -> Self {
        Report {
            records: args.records,
            partitions: args.partitions,
            workers: args.workers,
            broker: "none".into(),
            load: None,
            rows: Vec::new(),
            echo_out: None,
            overhead: None,
        }
    }

    pub fn add(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn print(&self) {
        self.print_setup();
        println!();
        println!("| scenario | records | seconds | records/s | vs (a) | wall s | peak RSS |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let raw = self.rows.iter().find(|r| r.scenario.starts_with("(a)"));
        for row in &self.rows {
            let ratio = match raw {
                Some(raw) if raw.rate() > 0.0 => format!("{:.2}", row.rate() / raw.rate()),
                _ => "-".into(),
            };
            println!(
                "| {} | {} | {:.3} | {:.0} | {ratio} | {} | {} |",
                row.scenario,
                row.records,
                row.busy.as_secs_f64(),
                row.rate(),
                row.wall
                    .map(|w| format!("{:.3}", w.as_secs_f64()))
                    .unwrap_or_else(|| "-".into()),
                rss_cell(row.peak_rss_kib, row.rss_note),
            );
        }
        if let Some(overhead) = &self.overhead {
            print_overhead_rows(overhead);
        }
        println!();
        if let Some(out) = self.echo_out {
            println!("(c) output: {out} records in echo-out");
        }
        self.print_targets(raw);
    }

    fn print_setup(&self) {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "?".into());
        println!("# logpipe-host bench");
        println!();
        println!("- machine: {cores} cores, {}", cpu_model());
        if cfg!(debug_assertions) {
            println!(
                "- build: DEBUG (no optimizations): these figures are NOT meaningful; \
                 use cargo build --release -p logpipe-host"
            );
        } else {
            println!("- build: release");
        }
        println!(
            "- records: {} logpipe JSON envelopes of {RECORD_BYTES} B, \"echo\" v1, over {} partitions",
            self.records, self.partitions
        );
        println!("- broker: {}", self.broker);
        match self.workers {
            Some(n) => println!("- runs (b, c): --workers {n}"),
            None => println!("- runs (b, c): --workers default ({cores}, one per core)"),
        }
        if let Some(load) = self.load {
            println!(
                "- pre-load: {} records in {:.3} s ({:.0} records/s)",
                load.records,
                load.elapsed.as_secs_f64(),
                rate(load.records, load.elapsed)
            );
        }
        println!(
            "- seconds and records/s: first record to last (`run`'s busy_s); wall s: from \
             start (for `run`: process start, handler loading included) to the last record"
        );
    }

    fn print_targets(&self, raw: Option<&Row>) {
        println!("targets:");
        let rate_of = |prefix: &str| {
            self.rows
                .iter()
                .find(|r| r.scenario.starts_with(prefix))
                .map(Row::rate)
        };
        if let Some(raw) = raw.map(Row::rate).filter(|r| *r > 0.0) {
            if let Some(b) = rate_of("(b)") {
                let ratio = b / raw;
                println!(
                    "- b/a = {ratio:.2} (target >= {TARGET_RATIO}): {}",
                    verdict(ratio >= TARGET_RATIO)
                );
            }
            if let Some(c) = rate_of("(c)") {
                println!("- c/a = {:.2} (no target)", c / raw);
            }
        }
        if let Some(overhead) = &self.overhead {
            let extra = overhead.extra_ns();
            println!(
                "- host overhead beyond the guest call = {extra:.0} ns/record (target <= \
                 {TARGET_OVERHEAD_NS:.0} ns): {}; with the amortized SQLite commits {:.0} ns",
                verdict(extra <= TARGET_OVERHEAD_NS),
                extra + overhead.commit_ns()
            );
        }
        let children: Vec<u64> = self
            .rows
            .iter()
            .filter(|r| r.rss_note == "child")
            .filter_map(|r| r.peak_rss_kib)
            .collect();
        if let Some(&peak) = children.iter().max() {
            println!(
                "- peak RSS of `run` = {} (target <= 100 MiB): {}",
                mib(peak),
                verdict(peak <= TARGET_RSS_KIB)
            );
        }
    }
}

fn print_overhead_rows(overhead: &Overhead) {
    let n = overhead.records;
    let rows = [
        (
            "(d) in process: host path (decode + route + noop call + offset staging)",
            &overhead.host_path,
        ),
        ("(d) in process: noop guest call alone", &overhead.call_only),
        (
            "(d) in process: envelope decode alone",
            &overhead.decode_only,
        ),
    ];
    for (label, samples) in rows {
        let best = samples.best();
        println!(
            "| {label} | {n} | {:.3} | {:.0} | - | - | {} |",
            samples.total.as_secs_f64(),
            if best > 0.0 { 1e9 / best } else { 0.0 },
            rss_cell(overhead.peak_rss_kib, "bench process"),
        );
    }
    println!();
    println!(
        "(d) ns per record, best (median) of {ROUNDS} rounds of {} records; records/s above \
         are the best round's, seconds all rounds':",
        n / ROUNDS
    );
    println!(
        "    host path {:.0} ({:.0}), guest call alone {:.0} ({:.0}), envelope decode {:.0} ({:.0})",
        overhead.host_path.best(),
        overhead.host_path.median(),
        overhead.call_only.best(),
        overhead.call_only.median(),
        overhead.decode_only.best(),
        overhead.decode_only.median(),
    );
    println!(
        "    host overhead beyond the call {:.0} ns; besides, SQLite commits {:.0} ns \
         ({} commits of {:.2} ms, one per {COMMIT_EVERY} records)",
        overhead.extra_ns(),
        overhead.commit_ns(),
        overhead.commits,
        if overhead.commits > 0 {
            overhead.commit_time.as_secs_f64() * 1e3 / overhead.commits as f64
        } else {
            0.0
        }
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn rss_cell(kib: Option<u64>, whose: &str) -> String {
    match kib {
        Some(kib) => format!("{} ({whose})", mib(kib)),
        None => "-".into(),
    }
}

/// The first `model name` of /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Reset this process's peak RSS (VmHWM) to its current RSS, so that a
/// later [`peak_rss_kib`] covers only what ran in between. Linux only;
/// false when it could not be reset.
pub fn reset_peak_rss() -> bool {
    // "5" resets the peak resident set size (proc(5), /proc/pid/clear_refs).
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak RSS (VmHWM), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    super::child::status_kib(&status, "VmHWM:")
}
