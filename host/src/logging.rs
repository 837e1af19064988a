//! Log output: human-readable text (ANSI colours on a terminal) or one JSON
//! object per line (`--log-format json`), always on stderr.
//!
//! JSON lines are flat: the event's fields sit beside `timestamp`, `level`,
//! `message` and `target`, so `jq .topic` works. Record-level lines carry
//! `topic`, `partition`, `offset` (Kinesis: `stream`, `shard`,
//! `sequence_number`), `key`, `type`, `version` and `handler` when known.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, fields flattened.
    Json,
}

/// Install the global subscriber. The live progress line is allowed only
/// for text logs on a terminal.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("ignoring invalid --log filter {filter:?}: {e}");
        EnvFilter::new("info")
    });
    let terminal = std::io::stderr().is_terminal();
    match format {
        LogFormat::Text => {
            if terminal {
                progress::allow();
            }
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(progress::LogWriter)
                .with_ansi(terminal)
                .init();
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}
