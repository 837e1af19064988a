//! Applying a config file to the command line: file values become clap
//! defaults, so clap's own precedence (command line, then `LOGPIPE_*`
//! environment, then default) is CLI > env > file > built-in default, and
//! each value goes through its flag's own parser.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::file::{ConfigFile, ConsumerBlock, KnownKeys, Setting};
use super::{ConfigError, Origin};
use crate::cli::{Cli, Command as Subcommand, OffsetsCommand, RunArgs};

/// Flags that are not config keys: the file itself, and the flags that
/// name what one invocation acts on (`offsets set --partition 3 --force`,
/// `store get --handler`, `produce --type`): a value in a file shared by
/// every invocation would silently aim them all at one target.
const NOT_KEYS: &[&str] = &[
    "config",
    "consumer",
    "help",
    "version",
    "after",
    "limit",
    "prefix",
    "json",
    "dry-run",
    "force",
    "offset",
    "partition",
    "sequence-number",
    "shard",
    "to",
    "output",
    "replace",
    "handler",
    "key",
    "key-field",
    "type",
];

/// Keys that say what to consume. Other commands have flags of the same
/// name that say what to act on (`produce --topic`, `offsets set --topic`),
/// where a value from the file would silently pick a target: the file
/// sets them for the consuming commands only.
const CONSUME_TARGETS: &[&str] = &["topic", "stream"];
const CONSUMING_COMMANDS: &[&str] = &["run", "dev"];

/// The parsed command line, with the config file it was layered on.
pub struct ParsedCli {
    pub cli: Cli,
    pub context: ConfigContext,
}

/// What commands need besides their arguments: the config file, and the
/// raw arguments to parse again per `[[consumer]]`.
pub struct ConfigContext {
    pub config: Option<Arc<ConfigFile>>,
    pub argv: Vec<OsString>,
}

/// Why the command line could not be parsed: clap's own error (printed by
/// clap, with help and version handling), or the config file's.
#[derive(Debug, thiserror::Error)]
pub enum CommandLineError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub fn parse_command_line(argv: Vec<OsString>) -> Result<ParsedCli, CommandLineError> {
    let config = match config_path(&argv) {
        Some(path) => Some(Arc::new(ConfigFile::load(&path, &known_keys())?)),
        None => None,
    };
    // With [[consumer]] blocks, `run` options such as `handlers` come from
    // the blocks: layer the first one so the command line parses; `run`
    // parses again for each block it starts.
    let first_block = config.as_deref().and_then(|c| c.consumers.first());
    let cli = parse_with(&argv, config.as_deref(), first_block)?;
    Ok(ParsedCli {
        cli,
        context: ConfigContext { config, argv },
    })
}

/// The `run` options `argv` gives (a `run` command line) with `config`,
/// and one `[[consumer]]` block over the file's top level, under the
/// environment and the command line.
pub fn run_args(
    argv: &[OsString],
    config: Option<&ConfigFile>,
    block: Option<&ConsumerBlock>,
) -> Result<RunArgs, CommandLineError> {
    let cli = parse_with(argv, config, block)?;
    match cli.command {
        Subcommand::Run(args) => Ok(args),
        _ => Err(clap::Error::raw(
            ErrorKind::InvalidSubcommand,
            "expected a `run` command line",
        )
        .into()),
    }
}

/// The command with the file's (and a consumer block's) values as defaults.
pub fn layered_command(config: Option<&ConfigFile>, block: Option<&ConsumerBlock>) -> Command {
    let mut command = Cli::command();
    if let Some(config) = config {
        command = with_defaults(command, &config.settings, true);
    }
    if let Some(block) = block {
        command = with_defaults(command, &block.settings, true);
    }
    command
}

/// clap's matches for `argv` over the layered command; a bad value from
/// the file is reported as the file's.
pub fn matches_with(
    argv: &[OsString],
    config: Option<&ConfigFile>,
    block: Option<&ConsumerBlock>,
) -> Result<ArgMatches, CommandLineError> {
    layered_command(config, block)
        .try_get_matches_from(argv)
        .map_err(|e| blame_file(e, argv, config, block))
}

fn parse_with(
    argv: &[OsString],
    config: Option<&ConfigFile>,
    block: Option<&ConsumerBlock>,
) -> Result<Cli, CommandLineError> {
    let matches = matches_with(argv, config, block)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Some(config) = config {
        attach_kafka_tables(&mut cli, config);
    }
    Ok(cli)
}

/// The `[kafka.*]` tables go with the Kafka arguments of the command.
fn attach_kafka_tables(cli: &mut Cli, config: &ConfigFile) {
    match &mut cli.command {
        Subcommand::Run(args) => args.kafka.file_properties = config.kafka.clone(),
        Subcommand::Produce(args) => args.kafka.file_properties = config.kafka.clone(),
        Subcommand::Offsets(OffsetsCommand::Reset(args)) => {
            args.kafka.file_properties = config.kafka.clone()
        }
        Subcommand::Offsets(OffsetsCommand::Set(args)) => {
            args.kafka.file_properties = config.kafka.clone()
        }
        _ => {}
    }
}

/// `--config PATH` (or `--config=PATH`) anywhere, else `LOGPIPE_CONFIG`.
/// Read before clap parses, since the file supplies clap's defaults.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("LOGPIPE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Every long flag of every command, and those of `run`.
pub fn known_keys() -> KnownKeys {
    let command = Cli::command();
    let mut all = BTreeSet::new();
    collect_longs(&command, &mut all);
    let mut lists = BTreeSet::new();
    collect_lists(&command, &mut lists);
    let mut run = BTreeSet::new();
    for arg in command.get_arguments() {
        // Global flags (--log...) apply to every command.
        if let Some(long) = arg.get_long() {
            run.insert(long.to_owned());
        }
    }
    if let Some(sub) = command.find_subcommand("run") {
        collect_longs(sub, &mut run);
    }
    for key in NOT_KEYS {
        all.remove(*key);
        run.remove(*key);
    }
    KnownKeys { all, run, lists }
}

fn collect_lists(command: &Command, into: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let (Some(long), ArgAction::Append) = (arg.get_long(), arg.get_action()) {
            into.insert(long.to_owned());
        }
    }
    for sub in command.get_subcommands() {
        collect_lists(sub, into);
    }
}

/// One config key, for `config keys`.
pub struct KeyInfo {
    pub key: String,
    pub env: Option<String>,
    pub commands: Vec<String>,
}

/// Every config key with its environment variable and the commands
/// (`run`, `offsets set`...) that take it.
pub fn key_table() -> Vec<KeyInfo> {
    let mut keys: BTreeMap<String, KeyInfo> = BTreeMap::new();
    walk_keys(&Cli::command(), "", &mut keys);
    for key in NOT_KEYS {
        keys.remove(*key);
    }
    keys.into_values().collect()
}

fn walk_keys(command: &Command, path: &str, into: &mut BTreeMap<String, KeyInfo>) {
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let info = into.entry(long.to_owned()).or_insert_with(|| KeyInfo {
            key: long.to_owned(),
            env: None,
            commands: Vec::new(),
        });
        if info.env.is_none() {
            info.env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        }
        let name = if path.is_empty() { "(all)" } else { path };
        let consuming = CONSUMING_COMMANDS.contains(&name);
        if CONSUME_TARGETS.contains(&long) && !consuming {
            continue;
        }
        if !info.commands.iter().any(|c| c == name) {
            info.commands.push(name.to_owned());
        }
    }
    for sub in command.get_subcommands() {
        let sub_path = if path.is_empty() {
            sub.get_name().to_owned()
        } else {
            format!("{path} {}", sub.get_name())
        };
        walk_keys(sub, &sub_path, into);
    }
}

fn collect_longs(command: &Command, into: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            into.insert(long.to_owned());
        }
    }
    for sub in command.get_subcommands() {
        collect_longs(sub, into);
    }
}

fn with_defaults(
    mut command: Command,
    settings: &BTreeMap<String, Setting>,
    consuming: bool,
) -> Command {
    let args: Vec<_> = command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if !consuming && CONSUME_TARGETS.contains(&long) {
                return None;
            }
            let setting = settings.get(long)?;
            let multiple = matches!(arg.get_action(), ArgAction::Append);
            Some((arg.get_id().clone(), setting.values.clone(), multiple))
        })
        .collect();
    for (id, mut values, multiple) in args {
        if !multiple {
            // A single-valued flag takes the last value, as on the command
            // line; file checks reject lists for them up front.
            values = values.split_off(values.len().saturating_sub(1));
        }
        // A value from the file satisfies a required flag.
        command = command.mut_arg(id, |arg| arg.default_values(values).required(false));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let consuming = CONSUMING_COMMANDS.contains(&name.as_str());
        command = command.mut_subcommand(name, |sub| with_defaults(sub, settings, consuming));
    }
    command
}

/// A clap error about a value the file gave is the file's error: say so,
/// with the key, instead of blaming a flag the user never typed.
fn blame_file(
    error: clap::Error,
    argv: &[OsString],
    config: Option<&ConfigFile>,
    block: Option<&ConsumerBlock>,
) -> CommandLineError {
    let Some(config) = config else {
        return error.into();
    };
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return error.into();
    };
    let long = flag
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .to_owned();
    let typed = argv.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
    });
    let setting = block
        .and_then(|b| b.settings.get(&long))
        .or_else(|| config.settings.get(&long));
    match setting {
        Some(setting) if !typed => {
            let key = match &setting.origin {
                Origin::File => long.clone(),
                Origin::Alias(name) => (*name).to_owned(),
                Origin::Consumer(name) => format!("consumer.{name}.{long}"),
            };
            let message = error.render().to_string();
            let message = message
                .trim()
                .trim_start_matches("error: ")
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            ConfigError::Invalid {
                path: config.path.clone(),
                key,
                message,
            }
            .into()
        }
        _ => error.into(),
    }
}

/// The matches of the subcommand that ran, for reports.
pub fn leaf(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => leaf(sub),
        None => matches,
    }
}
