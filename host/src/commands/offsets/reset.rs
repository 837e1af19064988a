//! `offsets reset`: where `--to` puts each partition or shard. Kafka
//! targets are looked up on the broker and stored as plain offsets (what
//! `kafka-consumer-groups.sh --reset-offsets` does). Kinesis has no offsets
//! to look up, so a shard gets a start marker the host's next start turns
//! into a shard iterator: TRIM_HORIZON, or AT_TIMESTAMP.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::{changes, kinesis_runtime, resolve_region, stored, write};
use crate::cli::{OffsetStoreKind, OffsetsResetArgs};
use crate::kafka::positions::OffsetLookup;
use crate::kinesis::{KinesisClient, KinesisSettings, shards};
use crate::offsets::admin::{KinesisRow, ResetTo, Snapshot};
use crate::offsets::{KafkaOffset, ShardStart};

/// How long listing a stream's shards may take (an unreachable endpoint
/// is otherwise retried for ever).
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn reset(args: OffsetsResetArgs) -> anyhow::Result<ExitCode> {
    if args.store.offset_store == OffsetStoreKind::Kafka {
        let Some(topic) = &args.topic else {
            anyhow::bail!("--offset-store kafka resets Kafka offsets: give --topic");
        };
        let targets = kafka_targets(&args, topic)?;
        return super::group::write(
            &args.kafka.settings(),
            &args.store.group_id,
            &targets,
            args.dry_run,
            args.write.force,
        );
    }
    let path = &args.write.offsets.path;
    let old = stored(path)?;
    let (kafka, kinesis) = match (&args.topic, &args.stream) {
        (Some(topic), None) => (kafka_targets(&args, topic)?, Vec::new()),
        (None, Some(stream)) => (Vec::new(), kinesis_targets(&args, &old, stream)?),
        _ => anyhow::bail!("give either --topic or --stream"),
    };
    if args.dry_run {
        for change in changes(&old, &kafka, &kinesis, false) {
            println!("would set {change}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    write(&args.write, &kafka, &kinesis, false)?;
    Ok(ExitCode::SUCCESS)
}

/// The next offset of each partition of `topic` (or of --partition).
fn kafka_targets(args: &OffsetsResetArgs, topic: &str) -> anyhow::Result<Vec<KafkaOffset>> {
    let settings = args.kafka.settings();
    let lookup = OffsetLookup::connect(&settings)?;
    let partitions = match args.partition {
        Some(partition) => {
            lookup.check_partition(topic, partition)?;
            vec![partition]
        }
        None => lookup.partitions(topic)?,
    };
    let mut targets = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let marks = lookup.watermarks(topic, partition)?;
        let next_offset = match args.to {
            ResetTo::Earliest => marks.low,
            ResetTo::Latest => marks.high,
            // No record at or after the time: past the last one, as Kafka's
            // own reset does.
            ResetTo::Time(ms) => lookup
                .offset_at(topic, partition, ms)?
                .unwrap_or(marks.high),
        };
        targets.push(KafkaOffset {
            topic: topic.to_owned(),
            partition,
            next_offset,
        });
    }
    Ok(targets)
}

/// The start marker of each shard of `stream` (or of --shard).
fn kinesis_targets(
    args: &OffsetsResetArgs,
    old: &Snapshot,
    stream: &str,
) -> anyhow::Result<Vec<KinesisRow>> {
    let start = shard_start(args.to, now_ms()?)?;
    let region = resolve_region(&args.kinesis, old, stream)?;
    let shard_ids = match &args.shard {
        Some(shard) => vec![shard.clone()],
        None => list_shards(&args.kinesis.kinesis_endpoint, &region, stream)?,
    };
    Ok(shard_ids
        .into_iter()
        .map(|shard| KinesisRow {
            region: region.clone(),
            stream: stream.to_owned(),
            shard,
            start: start.clone(),
        })
        .collect())
}

/// The marker of a Kinesis reset made at `now_ms`. `latest` is
/// AT_TIMESTAMP of the reset, not LATEST at the next start: records written
/// between the reset and the start are handled, as after a Kafka reset to
/// the high watermark. Kinesis refuses AT_TIMESTAMP in the future.
fn shard_start(to: ResetTo, now_ms: i64) -> anyhow::Result<ShardStart> {
    Ok(match to {
        ResetTo::Earliest => ShardStart::TrimHorizon,
        ResetTo::Latest => ShardStart::AtTimestamp(now_ms),
        ResetTo::Time(ms) if ms > now_ms => anyhow::bail!(
            "--to {} is in the future: Kinesis starts AT_TIMESTAMP only from a past time \
             (use --to latest to skip everything written so far)",
            crate::offsets::admin::format_millis(ms)
        ),
        ResetTo::Time(ms) => ShardStart::AtTimestamp(ms),
    })
}

fn now_ms() -> anyhow::Result<i64> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    i64::try_from(since.as_millis()).context("the system clock is out of range")
}

/// Every shard of `stream`, open or closed.
fn list_shards(
    endpoint: &Option<String>,
    region: &str,
    stream: &str,
) -> anyhow::Result<Vec<String>> {
    let settings = KinesisSettings {
        region: Some(region.to_owned()),
        endpoint: endpoint.clone(),
    };
    let runtime = kinesis_runtime()?;
    let listing = runtime.block_on(async {
        let kinesis = KinesisClient::connect(&settings).await?;
        let listing = tokio::time::timeout(LIST_TIMEOUT, shards::list(&kinesis, stream))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "Kinesis did not list the shards of stream {stream:?} within {LIST_TIMEOUT:?}"
                )
            })??;
        anyhow::Ok(listing)
    })?;
    Ok(listing.into_iter().map(|shard| shard.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_markers_of_each_target() {
        let now = 1_764_000_000_000;
        assert_eq!(
            shard_start(ResetTo::Earliest, now).unwrap(),
            ShardStart::TrimHorizon
        );
        assert_eq!(
            shard_start(ResetTo::Latest, now).unwrap(),
            ShardStart::AtTimestamp(now)
        );
        assert_eq!(
            shard_start(ResetTo::Time(now - 5), now).unwrap(),
            ShardStart::AtTimestamp(now - 5)
        );
        let future = shard_start(ResetTo::Time(now + 60_000), now).unwrap_err();
        assert!(future.to_string().contains("in the future"), "{future}");
    }
}
