//! `logpipe-host dev`: an embedded Kafka-protocol cluster on loopback and the
//! handlers running against it. The quickest way to see handlers work; not
//! for production (records live in memory only).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use rdkafka::mocking::MockCluster;

use super::run::consume_with_handlers;
use crate::cli::DevArgs;
use crate::kafka::KafkaSettings;

pub fn dev(args: DevArgs, shutdown: &AtomicBool) -> anyhow::Result<ExitCode> {
    if args.consume.topics.is_empty() {
        anyhow::bail!("give at least one --topic to create and consume");
    }
    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka cluster")?;
    let bootstrap = cluster.bootstrap_servers();
    let topics = args.consume.topics.iter().chain(&args.create_topics);
    for topic in topics {
        cluster
            .create_topic(topic, args.partitions.max(1), 1)
            .with_context(|| format!("cannot create topic {topic:?}"))?;
    }
    if let Some(path) = &args.bootstrap_file {
        std::fs::write(path, format!("{bootstrap}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let temp_dir;
    let offsets = match &args.offsets {
        Some(path) => path.clone(),
        None => {
            temp_dir = tempfile::tempdir().context("cannot create a temporary folder")?;
            temp_dir.path().join("offsets.sqlite3")
        }
    };
    println!("embedded Kafka cluster listening on {bootstrap}");
    println!(
        "feed it from another terminal:\n  logpipe-host produce --bootstrap-servers {bootstrap} \
         --topic {} --type TYPE --version 1 '{{...}}'",
        args.consume
            .topics
            .first()
            .map(String::as_str)
            .unwrap_or("TOPIC")
    );
    let settings = KafkaSettings {
        bootstrap_servers: bootstrap,
        ..KafkaSettings::default()
    };
    // The mock cluster has no CreateTopics API: create through the mock.
    let create = |needed: &[(String, i32)]| {
        for (topic, partitions) in needed {
            cluster
                .create_topic(topic, *partitions, 1)
                .with_context(|| format!("cannot create topic {topic:?}"))?;
        }
        Ok(())
    };
    let code = consume_with_handlers(
        &args.handler,
        &args.consume,
        &args.metrics,
        &settings,
        &offsets,
        shutdown,
        &create,
    );
    drop(cluster);
    code
}
