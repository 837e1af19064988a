//! `logpipe-host produce`: send envelopes rendered exactly like
//! django-logpipe's, from one argument or from stdin (one JSON body per line).

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::cli::ProduceArgs;
use crate::component::ProduceSettings;
use crate::envelope;
use crate::kafka::KafkaSink;
use crate::kinesis::sink::{OutRecord, partition_key};
use crate::kinesis::{KinesisClient, KinesisSink};
use crate::progress::{self, Progress};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why one body could not be sent.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("{0}")]
    Render(#[from] envelope::RenderError),
    #[error("key field {0:?} is missing or null")]
    MissingKey(String),
    #[error("key field {0:?} needs the body to be a JSON object")]
    NotAnObject(String),
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let mut writer = Writer::open(&args)?;
    let settings = args.envelope.settings();
    let mut sent = 0u64;
    let mut bad = 0u64;
    let mut progress = None;
    if let Some(body) = &args.body {
        let (key, payload) = render(&args, &settings, body).context("cannot produce BODY_JSON")?;
        writer.write_one(key, payload)?;
        sent += 1;
    } else {
        // Shared with the progress line's thread.
        let (sent_so_far, bad_so_far) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        progress = Progress::for_produce(sent_so_far.clone(), bad_so_far.clone());
        for (index, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("cannot read stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            match render(&args, &settings, &line) {
                Ok((key, payload)) => {
                    writer.write(key, payload)?;
                    sent += 1;
                    sent_so_far.store(sent, Ordering::Relaxed);
                }
                Err(error) => {
                    bad += 1;
                    bad_so_far.store(bad, Ordering::Relaxed);
                    progress::eprint_line(&format!("line {}: {error}; not sent", index + 1));
                }
            }
        }
    }
    writer.finish()?;
    drop(progress);
    eprintln!("produced {sent} record(s) to {}", writer.destination());
    if bad > 0 {
        eprintln!("{bad} line(s) were not sent (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the records go.
enum Writer {
    Kafka {
        sink: KafkaSink,
        topic: String,
    },
    Kinesis {
        sink: KinesisSink,
        stream: String,
        /// Lines waiting for the next `PutRecords` round.
        pending: Vec<OutRecord>,
        /// Kept alive for the sink's calls.
        _runtime: tokio::runtime::Runtime,
    },
}

/// Lines gathered before a Kinesis write: several `PutRecords` calls' worth.
const KINESIS_CHUNK: usize = 5000;

impl Writer {
    fn open(args: &ProduceArgs) -> anyhow::Result<Self> {
        if let Some(stream) = &args.stream {
            // Multi-threaded: the sink blocks on a handle, which cannot
            // drive a current-thread runtime's I/O.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the Kinesis client's runtime")?;
            let kinesis = runtime
                .block_on(KinesisClient::connect(&args.kinesis.settings()))
                .context("cannot set up the Kinesis client")?;
            let sink = KinesisSink::new(
                kinesis,
                runtime.handle().clone(),
                args.kinesis.kinesis_seq_num_cache_size,
            );
            sink.check_stream_at_start(stream, Duration::from_secs(30))?;
            return Ok(Writer::Kinesis {
                sink,
                stream: stream.clone(),
                pending: Vec::new(),
                _runtime: runtime,
            });
        }
        let topic = args
            .topic
            .clone()
            .context("give --topic (Kafka) or --stream (Kinesis)")?;
        let sink = KafkaSink::new(&args.kafka.settings()).context("cannot start the producer")?;
        sink.check_topic(&topic)?;
        Ok(Writer::Kafka { sink, topic })
    }

    /// One record on its own: Kinesis gets a `PutRecord`.
    fn write_one(&mut self, key: Option<String>, payload: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Writer::Kinesis { sink, stream, .. } => {
                let record = OutRecord {
                    stream: stream.clone(),
                    key,
                    data: payload,
                };
                let sequence = sink.put_one(&record)?;
                eprintln!("sequence number {sequence}");
                Ok(())
            }
            Writer::Kafka { .. } => self.write(key, payload),
        }
    }

    /// One record of a bulk load.
    fn write(&mut self, key: Option<String>, payload: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Writer::Kafka { sink, topic } => {
                sink.enqueue(topic, key.as_deref().map(str::as_bytes), &payload)?;
            }
            Writer::Kinesis {
                sink,
                stream,
                pending,
                ..
            } => {
                pending.push(OutRecord {
                    stream: stream.clone(),
                    key,
                    data: payload,
                });
                if pending.len() >= KINESIS_CHUNK {
                    sink.put_ordered(std::mem::take(pending))?;
                }
            }
        }
        Ok(())
    }

    /// Wait until everything is written.
    fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Writer::Kafka { sink, .. } => sink
                .confirm(DELIVERY_TIMEOUT)
                .context("records were not acknowledged"),
            Writer::Kinesis { sink, pending, .. } => {
                sink.put_ordered(std::mem::take(pending))?;
                Ok(())
            }
        }
    }

    fn destination(&self) -> String {
        match self {
            Writer::Kafka { topic, .. } => format!("topic {topic:?}"),
            Writer::Kinesis { stream, .. } => format!("Kinesis stream {stream:?}"),
        }
    }
}

/// A body's record key and rendered envelope.
fn render(
    args: &ProduceArgs,
    settings: &ProduceSettings,
    body: &str,
) -> anyhow::Result<(Option<String>, Vec<u8>)> {
    let key = match &args.key_field {
        Some(field) => Some(key_from_body(body, field)?),
        None => args.key.clone(),
    };
    if args.stream.is_some() {
        // Checked per line, so a bad key is reported like bad JSON rather
        // than failing a whole batch later.
        partition_key(key.as_deref())?;
    }
    let payload = envelope::render(
        settings.format,
        &args.message_type,
        args.version,
        body,
        settings.producer_id.as_deref(),
    )
    .map_err(BodyError::from)?;
    Ok((key, payload))
}

/// logpipe's `KEY_FIELD`: the key is the field's value as text (strings
/// as-is, other values as their JSON text).
fn key_from_body(body: &str, field: &str) -> Result<String, BodyError> {
    let value: Value = serde_json::from_str(body)?;
    let Value::Object(map) = value else {
        return Err(BodyError::NotAnObject(field.to_owned()));
    };
    match map.get(field) {
        None | Some(Value::Null) => Err(BodyError::MissingKey(field.to_owned())),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Ok(other.to_string()),
    }
}
