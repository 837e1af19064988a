//! `offsets list|set|reset --offset-store kafka`: a consumer group's
//! committed offsets in Kafka, read and written through the group API
//! (OffsetFetch, OffsetCommit) the way `kafka-consumer-groups.sh` does.
//!
//! The broker decides whether a commit from outside the group is taken: a
//! group with active members normally refuses it, so stop the group's hosts
//! first. There is no `--force` here.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::KafkaSettings;
use crate::offsets::KafkaOffset;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A client that speaks for `group` without joining it.
fn client(settings: &KafkaSettings, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = settings.consumer_config(group);
    config.set("enable.auto.commit", "false");
    config
        .create()
        .context("cannot create a Kafka client for the group")
}

/// The group's committed next offsets of `partitions` (None: nothing
/// committed).
fn committed(
    consumer: &BaseConsumer,
    partitions: &[(String, i32)],
) -> anyhow::Result<Vec<Option<i64>>> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    let found = consumer
        .committed_offsets(list, TIMEOUT)
        .context("cannot read the group's committed offsets")?;
    // Copied out before the list is dropped (rdkafka hangs on a drop of
    // the consumer while such a list lives).
    let offsets = partitions
        .iter()
        .map(|(topic, partition)| {
            match found.find_partition(topic, *partition).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => Some(n),
                _ => None,
            }
        })
        .collect();
    drop(found);
    Ok(offsets)
}

/// Every partition of every topic (but internal ones) with an offset
/// committed by `group`, with its watermarks and lag.
pub fn list(settings: &KafkaSettings, group: &str, json: bool) -> anyhow::Result<ExitCode> {
    let consumer = client(settings, group)?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .with_context(|| format!("cannot list topics on {}", settings.bootstrap_servers))?;
    let mut partitions = Vec::new();
    for topic in metadata.topics() {
        if topic.name().starts_with("__") {
            continue;
        }
        for partition in topic.partitions() {
            partitions.push((topic.name().to_owned(), partition.id()));
        }
    }
    partitions.sort();
    let offsets = committed(&consumer, &partitions)?;
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "GROUP {group}\nTOPIC\tPARTITION\tNEXT_OFFSET\tLOW\tHIGH\tLAG"
        )?;
    }
    for ((topic, partition), next) in partitions.iter().zip(offsets) {
        let Some(next) = next else { continue };
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, TIMEOUT)
            .with_context(|| format!("cannot read the watermarks of {topic}[{partition}]"))?;
        let lag = (high - next).max(0);
        if json {
            let line = serde_json::json!({
                "group": group, "topic": topic, "partition": partition,
                "next_offset": next, "low": low, "high": high, "lag": lag,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{topic}\t{partition}\t{next}\t{low}\t{high}\t{lag}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuse to write while `group` has running members (they would
/// overwrite the change at their next commit), unless `force`. A broker
/// that cannot say (tansu 0.6 drops DescribeGroups) needs `force` too.
fn check_no_members(consumer: &BaseConsumer, group: &str, force: bool) -> anyhow::Result<()> {
    let refusal = match consumer.fetch_group_list(Some(group), TIMEOUT) {
        Ok(list) => {
            let members: Vec<String> = list
                .groups()
                .iter()
                .filter(|g| g.name() == group)
                .flat_map(|g| g.members())
                .map(|m| format!("{} on {}", m.client_id(), m.client_host()))
                .collect();
            if members.is_empty() {
                return Ok(());
            }
            format!(
                "group {group} has running members ({}): stop its hosts first (they would \
                 overwrite the offsets at their next commit)",
                members.join(", ")
            )
        }
        Err(error) => format!(
            "cannot tell whether group {group} has running members (the broker did not describe \
             it: {error}); stop its hosts"
        ),
    };
    if force {
        tracing::warn!("{refusal}; writing anyway (--force)");
        Ok(())
    } else {
        anyhow::bail!("{refusal}, or pass --force")
    }
}

/// Commit `targets` for `group`, printing each change.
pub fn write(
    settings: &KafkaSettings,
    group: &str,
    targets: &[KafkaOffset],
    dry_run: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let consumer = client(settings, group)?;
    if !dry_run {
        check_no_members(&consumer, group, force)?;
    }
    let partitions: Vec<(String, i32)> = targets
        .iter()
        .map(|t| (t.topic.clone(), t.partition))
        .collect();
    let old = committed(&consumer, &partitions)?;
    let verb = if dry_run { "would set " } else { "" };
    for (target, old) in targets.iter().zip(old) {
        let old = old.map_or_else(
            || "nothing committed".to_owned(),
            |n| format!("next offset {n}"),
        );
        println!(
            "{verb}group {group} topic {} partition {}: {old} -> next offset {}",
            target.topic, target.partition, target.next_offset
        );
    }
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let mut list = TopicPartitionList::new();
    for target in targets {
        list.add_partition_offset(
            &target.topic,
            target.partition,
            Offset::Offset(target.next_offset),
        )?;
    }
    consumer.commit(&list, CommitMode::Sync).with_context(|| {
        format!(
            "group {group} did not take the offsets; a group with running members refuses \
             commits from outside: stop its hosts first"
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
