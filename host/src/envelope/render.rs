//! Rendering envelopes exactly as django-logpipe 1.6 does.
//!
//! JSON: `json.dumps(data, separators=(",", ":"), ensure_ascii=False)`, i.e.
//! compact, UTF-8 unescaped, keys in the order type, version, message,
//! producer. Msgpack: `msgpack.packb(data, use_bin_type=True)` with the same
//! key order. `producer` is present only when a producer id is configured.

use std::io::Write;

use serde_json::Value;

use super::{Format, msgpack};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("message body is not valid JSON: {0}")]
    BodyNotJson(#[source] serde_json::Error),
    #[error("could not encode the envelope: {0}")]
    Encode(#[source] std::io::Error),
}

/// Render one envelope. `body_json` is the message as JSON text in any
/// layout; it is re-rendered compactly.
pub fn render(
    format: Format,
    message_type: &str,
    version: u32,
    body_json: &str,
    producer: Option<&str>,
) -> Result<Vec<u8>, RenderError> {
    let body: Value = serde_json::from_str(body_json).map_err(RenderError::BodyNotJson)?;
    let mut out = Vec::with_capacity(body_json.len() + message_type.len() + 64);
    match format {
        Format::Json => render_json(&mut out, message_type, version, &body, producer),
        Format::Msgpack => render_msgpack(&mut out, message_type, version, &body, producer),
    }
    .map_err(RenderError::Encode)?;
    Ok(out)
}

fn render_json(
    out: &mut Vec<u8>,
    message_type: &str,
    version: u32,
    body: &Value,
    producer: Option<&str>,
) -> std::io::Result<()> {
    out.extend_from_slice(b"json:{\"type\":");
    serde_json::to_writer(&mut *out, message_type)?;
    write!(out, ",\"version\":{version},\"message\":")?;
    serde_json::to_writer(&mut *out, body)?;
    if let Some(producer) = producer {
        out.extend_from_slice(b",\"producer\":");
        serde_json::to_writer(&mut *out, producer)?;
    }
    out.push(b'}');
    Ok(())
}

fn render_msgpack(
    out: &mut Vec<u8>,
    message_type: &str,
    version: u32,
    body: &Value,
    producer: Option<&str>,
) -> std::io::Result<()> {
    out.extend_from_slice(b"msgpack:");
    let entries = if producer.is_some() { 4 } else { 3 };
    msgpack::write_map_len(out, entries)?;
    msgpack::write_str(out, "type")?;
    msgpack::write_str(out, message_type)?;
    msgpack::write_str(out, "version")?;
    msgpack::write_uint(out, u64::from(version))?;
    msgpack::write_str(out, "message")?;
    msgpack::write_value(out, body)?;
    if let Some(producer) = producer {
        msgpack::write_str(out, "producer")?;
        msgpack::write_str(out, producer)?;
    }
    Ok(())
}
