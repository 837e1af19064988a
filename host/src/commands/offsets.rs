//! `logpipe-host offsets list|set|reset|export|import`: the stored
//! positions, for operators.
//!
//! Reading (`list`, `export`) opens the file read-only and never needs the
//! host's lock. Writing (`set`, `reset`, `import`) takes the host's lock
//! ([`HostLock`]) for the moment of the write, so no host starts meanwhile,
//! and refuses while a host runs unless `--force`: a running host keeps its
//! positions in memory and would overwrite the change at its next commit.

mod group;
mod list;
mod reset;

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub use list::list;
pub use reset::reset;

use crate::cli::{
    OffsetStoreKind, OffsetsExportArgs, OffsetsImportArgs, OffsetsKinesisArgs, OffsetsSetArgs,
    OffsetsWriteArgs,
};
use crate::kinesis::{KinesisClient, KinesisSettings};
use crate::offsets::admin::{
    self, ExportFile, KinesisRow, Snapshot, check_sequence_number, describe_start,
};
use crate::offsets::{HostLock, KafkaOffset, OffsetError, OffsetStore, ShardStart};

pub fn set(args: OffsetsSetArgs) -> anyhow::Result<ExitCode> {
    if args.store.offset_store == OffsetStoreKind::Kafka {
        let (Some(topic), Some(partition), Some(next_offset)) =
            (&args.topic, args.partition, args.offset)
        else {
            anyhow::bail!(
                "--offset-store kafka sets Kafka offsets: give --topic, --partition and --offset"
            );
        };
        let target = KafkaOffset {
            topic: topic.clone(),
            partition,
            next_offset,
        };
        return group::write(
            &args.kafka.settings(),
            &args.store.group_id,
            &[target],
            false,
            args.write.force,
        );
    }
    let path = &args.write.offsets.path;
    let (kafka, kinesis) = match (&args.topic, &args.stream) {
        (Some(topic), None) => {
            let (Some(partition), Some(next_offset)) = (args.partition, args.offset) else {
                anyhow::bail!("--topic needs --partition and --offset");
            };
            let row = KafkaOffset {
                topic: topic.clone(),
                partition,
                next_offset,
            };
            (vec![row], Vec::new())
        }
        (None, Some(stream)) => {
            let (Some(shard), Some(sequence)) = (&args.shard, &args.sequence_number) else {
                anyhow::bail!("--stream needs --shard and --sequence-number");
            };
            check_sequence_number(sequence).map_err(anyhow::Error::msg)?;
            let region = resolve_region(&args.kinesis, &stored(path)?, stream)?;
            let row = KinesisRow {
                region,
                stream: stream.clone(),
                shard: shard.clone(),
                start: ShardStart::After(sequence.clone()),
            };
            (Vec::new(), vec![row])
        }
        _ => anyhow::bail!("give either --topic or --stream"),
    };
    write(&args.write, &kafka, &kinesis, false)?;
    Ok(ExitCode::SUCCESS)
}

pub fn export(args: OffsetsExportArgs) -> anyhow::Result<ExitCode> {
    let snapshot = admin::read_snapshot(&args.offsets.path)?;
    let mut text = serde_json::to_string_pretty(&ExportFile::new(&snapshot))
        .context("cannot render the export")?;
    text.push('\n');
    match &args.output {
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to stdout")?,
        Some(output) => {
            write_file_atomically(output, text.as_bytes())?;
            eprintln!(
                "exported {} Kafka and {} Kinesis positions to {}",
                snapshot.kafka.len(),
                snapshot.kinesis.len(),
                output.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn import(args: OffsetsImportArgs) -> anyhow::Result<ExitCode> {
    let (source, text) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        ("stdin".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        (args.file.display().to_string(), text)
    };
    let file = admin::parse_import(&text)
        .with_context(|| format!("{source} not imported (nothing written)"))?;
    if args.dry_run {
        let old = stored(&args.write.offsets.path)?;
        for change in changes(&old, &file.kafka, &file.kinesis, args.replace) {
            println!("would set {change}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    write(&args.write, &file.kafka, &file.kinesis, args.replace)?;
    println!(
        "imported {} Kafka and {} Kinesis positions from {source}",
        file.kafka.len(),
        file.kinesis.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Claim the file, store the rows in one transaction, print what changed.
fn write(
    args: &OffsetsWriteArgs,
    kafka: &[KafkaOffset],
    kinesis: &[KinesisRow],
    replace: bool,
) -> anyhow::Result<()> {
    let path = &args.offsets.path;
    let _claim = claim(path, args.force)?;
    if !path.exists() {
        eprintln!("creating {}", path.display());
    }
    let mut store = OffsetStore::open(path)?;
    let old = store.snapshot()?;
    store.write_positions(kafka, kinesis, replace)?;
    for change in changes(&old, kafka, kinesis, replace) {
        println!("{change}");
    }
    Ok(())
}

/// Take the host's lock on `path`. A running host's lock refuses the
/// write unless `force`; then the write goes ahead without the lock.
fn claim(path: &Path, force: bool) -> anyhow::Result<Option<HostLock>> {
    match HostLock::acquire(path) {
        Ok(lock) => Ok(Some(lock)),
        Err(OffsetError::InUse { holder, .. }) if force => {
            eprintln!(
                "warning: {} is held by a running logpipe-host ({holder}); writing anyway \
                 (--force). That host does not read the file again until it restarts: it keeps \
                 handling from its own positions and overwrites the rows of every partition or \
                 shard it commits; the other rows written now take effect at its next start.",
                path.display()
            );
            Ok(None)
        }
        Err(OffsetError::InUse { holder, .. }) => anyhow::bail!(
            "{} is held by a running logpipe-host ({holder}): stop that host first (it would \
             overwrite these positions at its next commit), or pass --force to write anyway",
            path.display()
        ),
        Err(error) => Err(error.into()),
    }
}

/// The stored positions, or none when the file does not exist yet.
fn stored(path: &Path) -> anyhow::Result<Snapshot> {
    if !path.exists() {
        return Ok(Snapshot::default());
    }
    Ok(admin::read_snapshot(path)?)
}

/// One position before and after a write.
struct Change {
    what: String,
    old: Option<String>,
    new: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old = self.old.as_deref().unwrap_or("(none)");
        match &self.new {
            Some(new) if self.old.as_ref() == Some(new) => {
                write!(f, "{}: {new} (unchanged)", self.what)
            }
            Some(new) => write!(f, "{}: {old} -> {new}", self.what),
            None => write!(f, "{}: {old} -> (removed)", self.what),
        }
    }
}

/// What writing `kafka` and `kinesis` over `old` changes, in the order
/// given; with `replace`, the rows of `old` not written are removed.
fn changes(
    old: &Snapshot,
    kafka: &[KafkaOffset],
    kinesis: &[KinesisRow],
    replace: bool,
) -> Vec<Change> {
    let kafka_what = |topic: &str, partition| format!("topic {topic} partition {partition}");
    let kinesis_what = |row: &KinesisRow| {
        format!(
            "region {} stream {} shard {}",
            row.region, row.stream, row.shard
        )
    };
    let mut changes: Vec<Change> = kafka
        .iter()
        .map(|row| Change {
            what: kafka_what(&row.topic, row.partition),
            old: old
                .kafka_offset(&row.topic, row.partition)
                .map(|n| format!("next offset {n}")),
            new: Some(format!("next offset {}", row.next_offset)),
        })
        .chain(kinesis.iter().map(|row| {
            Change {
                what: kinesis_what(row),
                old: old
                    .shard_start(&row.region, &row.stream, &row.shard)
                    .map(describe_start),
                new: Some(describe_start(&row.start)),
            }
        }))
        .collect();
    if replace {
        let written = Snapshot {
            kafka: kafka.to_vec(),
            kinesis: kinesis.to_vec(),
        };
        for row in &old.kafka {
            if written.kafka_offset(&row.topic, row.partition).is_none() {
                changes.push(Change {
                    what: kafka_what(&row.topic, row.partition),
                    old: Some(format!("next offset {}", row.next_offset)),
                    new: None,
                });
            }
        }
        for row in &old.kinesis {
            if written
                .shard_start(&row.region, &row.stream, &row.shard)
                .is_none()
            {
                changes.push(Change {
                    what: kinesis_what(row),
                    old: Some(describe_start(&row.start)),
                    new: None,
                });
            }
        }
    }
    changes
}

/// The region of a stream's positions: `--kinesis-region` if given; else
/// the region of the stream's stored rows if they are all in one (they are
/// what the host resolved when it ran, so a set or reset lands on the rows
/// the host reads); else the AWS chain, as `run` resolves it.
fn resolve_region(
    kinesis: &OffsetsKinesisArgs,
    stored: &Snapshot,
    stream: &str,
) -> anyhow::Result<String> {
    if let Some(region) = &kinesis.kinesis_region {
        return Ok(region.clone());
    }
    let regions = stored.regions_of(stream);
    match regions.as_slice() {
        [one] => {
            tracing::info!(stream, region = %one, "region of the stream's stored positions");
            return Ok(one.clone());
        }
        [] => {}
        several => anyhow::bail!(
            "stream {stream:?} has positions in regions {}: pass --kinesis-region",
            several.join(", ")
        ),
    }
    let settings = KinesisSettings {
        region: None,
        endpoint: kinesis.kinesis_endpoint.clone(),
    };
    let client = kinesis_runtime()?
        .block_on(KinesisClient::connect(&settings))
        .context("cannot tell the region of the stream")?;
    Ok(client.region)
}

fn kinesis_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the Kinesis client's runtime")
}

/// Write `bytes` to a temporary file beside `path`, then rename it into
/// place: a reader never sees half a backup.
fn write_file_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
