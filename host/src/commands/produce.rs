//! `logpipe-host produce`: send envelopes rendered exactly like
//! django-logpipe's, from one argument or from stdin (one JSON body per line).

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::cli::ProduceArgs;
use crate::component::ProduceSettings;
use crate::envelope;
use crate::kafka::{KafkaSettings, KafkaSink};

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
    let settings = KafkaSettings {
        bootstrap_servers: args.kafka.bootstrap_servers.clone(),
        properties: args.kafka.properties.clone(),
    };
    let sink = KafkaSink::new(&settings).context("cannot start the producer")?;
    sink.check_topic(&args.topic)?;
    let settings = args.envelope.settings();
    let mut sent = 0u64;
    let mut bad = 0u64;
    if let Some(body) = &args.body {
        send(&args, &settings, &sink, body).context("cannot produce BODY_JSON")?;
        sent += 1;
    } else {
        for (index, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("cannot read stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            match send(&args, &settings, &sink, &line) {
                Ok(()) => sent += 1,
                Err(error) => {
                    bad += 1;
                    eprintln!("line {}: {error}; not sent", index + 1);
                }
            }
        }
    }
    sink.confirm(DELIVERY_TIMEOUT)
        .context("records were not acknowledged")?;
    eprintln!("produced {sent} record(s) to topic {:?}", args.topic);
    if bad > 0 {
        eprintln!("{bad} line(s) were not sent (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn send(
    args: &ProduceArgs,
    settings: &ProduceSettings,
    sink: &KafkaSink,
    body: &str,
) -> anyhow::Result<()> {
    let key = match &args.key_field {
        Some(field) => Some(key_from_body(body, field)?),
        None => args.key.clone(),
    };
    let payload = envelope::render(
        settings.format,
        &args.message_type,
        args.version,
        body,
        settings.producer_id.as_deref(),
    )
    .map_err(BodyError::from)?;
    sink.enqueue(&args.topic, key.as_deref().map(str::as_bytes), &payload)?;
    Ok(())
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
