//! `logpipe-host config check`: validate a config file the way `run` would
//! use it, and print the effective settings with their sources.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{ConfigCheckArgs, RunArgs};
use crate::config::report::{self, Line};
use crate::config::{ConfigContext, ConfigFile, ConsumerBlock};

use crate::kafka::KafkaSettings;

pub fn check(args: &ConfigCheckArgs, context: &ConfigContext) -> anyhow::Result<ExitCode> {
    let config = context
        .config
        .as_deref()
        .context("no config file: give --config PATH (or LOGPIPE_CONFIG)")?;
    println!("# {}: valid TOML, every key known", config.path.display());
    let blocks: Vec<&ConsumerBlock> = match &args.consumer {
        Some(name) => vec![config.consumer(name).with_context(|| {
            format!(
                "no [[consumer]] named {name:?} in {}",
                config.path.display()
            )
        })?],
        None => config.consumers.iter().collect(),
    };
    if blocks.is_empty() {
        let lines = report::effective_run(config, None).context("`run` would not start")?;
        print_lines(&lines);
        let run = crate::config::run_args(&run_argv(), Some(config), None)
            .context("`run` would not start")?;
        check_run(&run)?;
    } else {
        let runs = super::run::consumer_runs(&run_argv(), config, &blocks)?;
        for (block, run) in blocks.iter().zip(&runs) {
            println!("\n[[consumer]] # {}", block.name);
            let lines = report::effective_run(config, Some(block))
                .with_context(|| format!("consumer {:?} would not start", block.name))?;
            print_lines(&lines);
            println!(
                "offsets = {:?} # per consumer",
                run.offsets.path.display().to_string()
            );
            check_run(run).with_context(|| format!("consumer {:?}", block.name))?;
        }
    }
    print_kafka_tables(config);
    println!("\n# config OK");
    Ok(ExitCode::SUCCESS)
}

/// `config keys`: every key, from the command definitions themselves, so
/// the list cannot drift from the flags.
pub fn keys() -> anyhow::Result<ExitCode> {
    let mut keys = crate::config::layering::key_table();
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    println!("# option keys (top level, or in a [[consumer]] block for `run` options)");
    for key in &keys {
        println!(
            "{:<28} {:<36} {}",
            key.key,
            key.env.as_deref().unwrap_or("-"),
            key.commands.join(",")
        );
    }
    println!("\n# django-logpipe settings (top level or in [LOGPIPE])");
    for name in crate::config::aliases::NAMES {
        println!("{name}");
    }
    println!("\n# tables");
    println!("[kafka.global]   librdkafka properties for every client");
    println!("[kafka.consumer] librdkafka properties for the consumer");
    println!("[kafka.producer] librdkafka properties for producers");
    println!("[[consumer]]     name, source, topics | streams, ignore-types, and any `run` option");
    Ok(ExitCode::SUCCESS)
}

/// The command line whose settings are checked: `run` with nothing but
/// the file and the environment.
fn run_argv() -> Vec<std::ffi::OsString> {
    vec!["logpipe-host".into(), "run".into()]
}

fn print_lines(lines: &[Line]) {
    let width = lines
        .iter()
        .map(|l| l.key.len() + l.value.len() + 3)
        .max()
        .unwrap_or(0);
    for line in lines {
        let setting = format!("{} = {}", line.key, line.value);
        println!("{setting:width$} # {}", line.source);
    }
}

fn print_kafka_tables(config: &ConfigFile) {
    for (name, table) in [
        ("global", &config.kafka.global),
        ("consumer", &config.kafka.consumer),
        ("producer", &config.kafka.producer),
    ] {
        if table.is_empty() {
            continue;
        }
        println!("\n[kafka.{name}]");
        for (key, value) in table {
            println!("{}", report::property_line(key, value));
        }
    }
}

/// What `run` checks before it connects: the failure policies, and that
/// librdkafka accepts every property (it refuses unknown names and bad
/// values when a client is created, without connecting).
fn check_run(run: &RunArgs) -> anyhow::Result<()> {
    run.handler
        .failures
        .policies()
        .map_err(|e| anyhow::anyhow!("invalid retry settings: {e}"))?;
    if run.consume.topics.is_empty() && run.streams.streams.is_empty() {
        anyhow::bail!("nothing to consume: set `topic` (Kafka) or `stream` (Kinesis)");
    }
    if !run.consume.topics.is_empty() {
        check_kafka_properties(&run.kafka.settings(), &run.consume.group_id)?;
    }
    Ok(())
}

fn check_kafka_properties(settings: &KafkaSettings, group: &str) -> anyhow::Result<()> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;
    settings
        .consumer_config(group)
        .create::<BaseConsumer>()
        .context("librdkafka refuses the consumer properties")?;
    settings
        .producer_config()
        .create::<BaseProducer>()
        .context("librdkafka refuses the producer properties")?;
    Ok(())
}
