//! `--config logpipe.toml`: every command-line option as a config key, the
//! settings names of django-logpipe as aliases, raw librdkafka property
//! tables, and named `[[consumer]]` blocks.
//!
//! Precedence is CLI > `LOGPIPE_*` environment > file > built-in defaults.
//! The file does not get its own parser per option: its values become clap
//! defaults ([`layering`]), so clap's own precedence (command line, then
//! env, then default) gives exactly that order, and each value is checked by
//! the same parser as its flag.
//!
//! - [`file`]: reading the TOML into settings, consumer blocks and tables;
//! - [`aliases`]: django-logpipe's names (`KAFKA_BOOTSTRAP_SERVERS`...);
//! - [`layering`]: applying settings to the clap command and parsing;
//! - [`report`]: the effective settings that `config check` prints.

pub mod aliases;
pub mod file;
pub mod layering;
pub mod report;

pub use file::{ConfigFile, ConsumerBlock, KafkaTables, Origin, Setting};
pub use layering::{CommandLineError, ConfigContext, ParsedCli, parse_command_line, run_args};

use std::path::PathBuf;

/// Why a config file cannot be used. Every message names the file and,
/// where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {}: unknown key `{key}`{}", path.display(), suggestion(.closest))]
    UnknownKey {
        path: PathBuf,
        key: String,
        closest: Option<String>,
    },
    #[error("config file {}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

fn suggestion(closest: &Option<String>) -> String {
    match closest {
        Some(key) => format!(" (did you mean `{key}`?)"),
        None => String::new(),
    }
}
