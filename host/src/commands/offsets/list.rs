//! `offsets list`: every stored position as a table or JSON lines; with
//! `--bootstrap-servers`, each partition's watermarks and lag too.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{OffsetStoreKind, OffsetsListArgs};
use crate::kafka::KafkaSettings;
use crate::kafka::positions::{OffsetLookup, Watermarks};
use crate::offsets::KafkaOffset;
use crate::offsets::admin::{self, KinesisEntry, describe_start};

pub fn list(args: OffsetsListArgs) -> anyhow::Result<ExitCode> {
    if args.store.offset_store == OffsetStoreKind::Kafka {
        let settings = KafkaSettings {
            bootstrap_servers: args
                .bootstrap_servers
                .clone()
                .unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            properties: args.properties.clone(),
            ..KafkaSettings::default()
        };
        return super::group::list(&settings, &args.store.group_id, args.json);
    }
    let snapshot = admin::read_snapshot(&args.offsets.path)?;
    let marks = match &args.bootstrap_servers {
        Some(bootstrap) => {
            let settings = KafkaSettings {
                bootstrap_servers: bootstrap.clone(),
                properties: args.properties.clone(),
                ..KafkaSettings::default()
            };
            Some(watermarks(&settings, &snapshot.kafka)?)
        }
        None => None,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        for (i, row) in snapshot.kafka.iter().enumerate() {
            let mark = marks.as_ref().and_then(|m| m[i]);
            writeln!(out, "{}", kafka_json(row, mark))?;
        }
        for row in &snapshot.kinesis {
            let entry = serde_json::to_string(&KinesisEntry::from_row(row))
                .context("cannot render a Kinesis row")?;
            writeln!(out, "{entry}")?;
        }
    } else {
        let mut kafka = vec![
            vec!["TOPIC", "PARTITION", "NEXT_OFFSET"]
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ];
        if marks.is_some() {
            kafka[0].extend(["LOW", "HIGH", "LAG"].map(str::to_owned));
        }
        for (i, row) in snapshot.kafka.iter().enumerate() {
            let mut line = vec![
                row.topic.clone(),
                row.partition.to_string(),
                row.next_offset.to_string(),
            ];
            if let Some(marks) = &marks {
                line.extend(match marks[i] {
                    Some(m) => [m.low, m.high, m.high - row.next_offset].map(|n| n.to_string()),
                    None => ["?", "?", "?"].map(str::to_owned),
                });
            }
            kafka.push(line);
        }
        let mut kinesis = vec![
            ["REGION", "STREAM", "SHARD", "POSITION"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for row in &snapshot.kinesis {
            kinesis.push(vec![
                row.region.clone(),
                row.stream.clone(),
                row.shard.clone(),
                describe_start(&row.start),
            ]);
        }
        let mut tables = Vec::new();
        if kafka.len() > 1 {
            tables.push(kafka);
        }
        if kinesis.len() > 1 {
            tables.push(kinesis);
        }
        if tables.is_empty() {
            eprintln!("no stored positions in {}", args.offsets.path.display());
        }
        for (i, table) in tables.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            write_table(&mut out, table)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Each row's watermarks, `None` where the broker could not say (a topic
/// deleted since, say): the rest of the listing is still worth having.
fn watermarks(
    settings: &KafkaSettings,
    rows: &[KafkaOffset],
) -> anyhow::Result<Vec<Option<Watermarks>>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let lookup = OffsetLookup::connect(settings)?;
    Ok(rows
        .iter()
        .map(|row| {
            let marks = lookup
                .watermarks(&row.topic, row.partition)
                .inspect_err(|error| tracing::warn!("{error}"))
                .ok()?;
            warn_if_out_of_range(row, marks);
            Some(marks)
        })
        .collect())
}

/// A stored offset outside the partition's records makes the host start
/// that partition from its earliest record (auto.offset.reset=earliest).
fn warn_if_out_of_range(row: &KafkaOffset, marks: Watermarks) {
    if row.next_offset > marks.high || row.next_offset < marks.low {
        tracing::warn!(
            topic = row.topic,
            partition = row.partition,
            "next offset {} is outside the partition's offsets {}..{}: the host would start \
             it from the earliest record",
            row.next_offset,
            marks.low,
            marks.high
        );
    }
}

fn kafka_json(row: &KafkaOffset, marks: Option<Watermarks>) -> serde_json::Value {
    let mut value = serde_json::json!({
        "topic": row.topic,
        "partition": row.partition,
        "next_offset": row.next_offset,
    });
    if let (Some(m), Some(object)) = (marks, value.as_object_mut()) {
        object.insert("low".into(), m.low.into());
        object.insert("high".into(), m.high.into());
        object.insert("lag".into(), (m.high - row.next_offset).into());
    }
    value
}

/// Columns padded to their widest cell, two spaces apart.
fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count()) + 2;
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}
