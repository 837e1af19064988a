//! The effective settings of `run`, with where each value came from, as
//! `config check` prints them. Secrets are masked.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use super::file::{ConfigFile, ConsumerBlock, Origin};
use super::layering::{CommandLineError, layered_command, leaf, matches_with};

/// One effective option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub key: String,
    pub value: String,
    pub source: String,
}

/// The options `run` would use (for one consumer block, when given): the
/// file over the defaults, under the `LOGPIPE_*` environment.
pub fn effective_run(
    config: &ConfigFile,
    block: Option<&ConsumerBlock>,
) -> Result<Vec<Line>, CommandLineError> {
    let argv: Vec<OsString> = vec!["logpipe-host".into(), "run".into()];
    let command = layered_command(Some(config), block);
    let matches = matches_with(&argv, Some(config), block)?;
    let run = command
        .find_subcommand("run")
        .ok_or_else(|| clap::Error::raw(clap::error::ErrorKind::InvalidSubcommand, "no run"))?;
    Ok(lines(&command, run, &matches, config, block))
}

fn lines(
    root: &Command,
    run: &Command,
    matches: &ArgMatches,
    config: &ConfigFile,
    block: Option<&ConsumerBlock>,
) -> Vec<Line> {
    let run_matches = leaf(matches);
    let mut out = Vec::new();
    let args = root
        .get_arguments()
        .map(|a| (a, matches))
        .chain(run.get_arguments().map(|a| (a, run_matches)));
    for (arg, matches) in args {
        let Some(long) = arg.get_long() else { continue };
        let id = arg.get_id().as_str();
        let (Some(source), Ok(Some(raw))) = (matches.value_source(id), matches.try_get_raw(id))
        else {
            continue;
        };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let source = match source {
            ValueSource::CommandLine => "command line".to_owned(),
            ValueSource::EnvVariable => format!(
                "env {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            _ => file_origin(long, config, block).unwrap_or_else(|| "default".to_owned()),
        };
        out.push(Line {
            key: long.to_owned(),
            value: render(long, &values),
            source,
        });
    }
    out
}

fn file_origin(long: &str, config: &ConfigFile, block: Option<&ConsumerBlock>) -> Option<String> {
    let setting = block
        .and_then(|b| b.settings.get(long))
        .or_else(|| config.settings.get(long))?;
    Some(match &setting.origin {
        Origin::File => "file".to_owned(),
        Origin::Alias(name) => format!("file ({name})"),
        Origin::Consumer(name) => format!("consumer {name}"),
    })
}

fn render(key: &str, values: &[String]) -> String {
    let quoted: Vec<String> = values
        .iter()
        .map(|v| {
            if is_secret(key) {
                "\"****\"".to_owned()
            } else {
                format!("{v:?}")
            }
        })
        .collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Property and option names whose values must not be printed.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_lowercase();
    [
        "password",
        "secret",
        "token",
        "credentials",
        "ssl.key.pem",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// A librdkafka property for printing.
pub fn property_line(key: &str, value: &str) -> String {
    if is_secret(key) {
        format!("{key:?} = \"****\"")
    } else {
        format!("{key:?} = {value:?}")
    }
}
