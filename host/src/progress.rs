//! The live progress line of `run` and `produce` on a terminal: one line
//! on stderr, redrawn about once a second (`\r` + clear line).
//!
//! Log lines share stderr with it: the log writer clears the progress line
//! before writing an event, and the next tick draws it again below. Both
//! write under one lock, so a log line and the progress line never mix.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

use crate::metrics::Metrics;

const TICK: Duration = Duration::from_secs(1);
/// Carriage return, then ANSI "erase line".
const CLEAR: &[u8] = b"\r\x1b[2K";

/// Whether progress may be drawn at all (text logs on a terminal).
static ALLOWED: AtomicBool = AtomicBool::new(false);
/// Whether a progress line is on screen now; also serialises stderr writes.
static SHOWN: Mutex<bool> = Mutex::new(false);

/// Let [`Progress::start`] draw (set up by [`crate::logging::init`]).
pub fn allow() {
    ALLOWED.store(true, Ordering::SeqCst);
}

fn shown() -> MutexGuard<'static, bool> {
    SHOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Clear the progress line if one is on screen. Callers hold the lock.
fn clear(shown: &mut bool, stderr: &mut impl Write) {
    if std::mem::take(shown) {
        let _ = stderr.write_all(CLEAR);
    }
}

/// The log subscriber's writer: stderr, with the progress line cleared
/// before each event.
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut shown = shown();
        let mut stderr = std::io::stderr().lock();
        clear(&mut shown, &mut stderr);
        stderr.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Write one line to stderr without mixing it with the progress line.
pub fn eprint_line(line: &str) {
    let mut shown = shown();
    let mut stderr = std::io::stderr().lock();
    clear(&mut shown, &mut stderr);
    let _ = writeln!(stderr, "{line}");
}

/// A running progress line; cleared when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Draw `describe(interval)` every second, if allowed; `None` when
    /// stderr is not a terminal or logs are JSON.
    pub fn start(mut describe: impl FnMut(Duration) -> String + Send + 'static) -> Option<Self> {
        if !ALLOWED.load(Ordering::SeqCst) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() < TICK {
                        continue;
                    }
                    let line = describe(last.elapsed());
                    last = Instant::now();
                    let mut shown = shown();
                    let mut stderr = std::io::stderr().lock();
                    let _ = stderr.write_all(CLEAR);
                    let _ = stderr.write_all(line.as_bytes());
                    let _ = stderr.flush();
                    *shown = true;
                }
            })
            .ok()?;
        Some(Progress {
            stop,
            thread: Some(thread),
        })
    }

    /// The progress line of `produce`: records/s, records sent, bad lines.
    pub fn for_produce(sent: Arc<AtomicU64>, bad: Arc<AtomicU64>) -> Option<Self> {
        let mut previous = 0;
        Progress::start(move |interval| {
            let now = sent.load(Ordering::Relaxed);
            let rate = now.saturating_sub(previous) as f64 / interval.as_secs_f64().max(1e-3);
            previous = now;
            format!(
                "{rate:.0} records/s  sent {now}  errors {}",
                bad.load(Ordering::Relaxed)
            )
        })
    }

    /// The progress line of `run`: records/s, handled, errors, lag.
    pub fn for_run(metrics: Arc<Metrics>) -> Option<Self> {
        let mut previous = metrics.totals();
        Progress::start(move |interval| {
            let totals = metrics.totals();
            let settled = |t: &crate::metrics::Totals| t.handled + t.errors;
            let rate = settled(&totals).saturating_sub(settled(&previous)) as f64
                / interval.as_secs_f64().max(1e-3);
            previous = totals;
            let mut line = format!(
                "{rate:.0} records/s  handled {}  errors {}",
                totals.handled, totals.errors
            );
            if let Some(lag) = totals.lag_records {
                line.push_str(&format!("  lag {lag:.0}"));
            }
            if let Some(behind) = totals.behind_ms {
                line.push_str(&format!("  behind {behind:.0} ms"));
            }
            line
        })
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Leave a clean line for what is printed next (the summary).
        let mut shown = shown();
        clear(&mut shown, &mut std::io::stderr().lock());
    }
}
