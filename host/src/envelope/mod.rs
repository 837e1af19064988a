//! The logpipe wire envelope: `<format>:<body>`, byte-compatible with
//! django-logpipe 1.6.
//!
//! A record value is split on its first `:` into a format code and a body.
//! `json` and `msgpack` bodies are decoded; everything else (including
//! `pickle`, which a sandboxing host must never unpickle) is an unknown
//! format. The body must be a map with `type`, `version` and `message`, and
//! may carry `producer`.

mod fields;
mod msgpack;
mod render;

pub use render::{RenderError, render};

use std::fmt;

use fields::Fields;
use serde_json::value::RawValue;

/// A body format logpipe knows how to parse and render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Msgpack,
}

impl Format {
    /// The code written before the `:` on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The envelope's `version` as it was on the wire.
///
/// Dispatch is by exact match (logpipe looks the version up in a dict), so a
/// version that is not an unsigned integer, such as `"1"` or `1.5`, is kept as
/// its JSON text: it can never match a handler but can still be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Number(u32),
    Other(String),
}

impl Version {
    pub fn as_number(&self) -> Option<u32> {
        match self {
            Version::Number(n) => Some(*n),
            Version::Other(_) => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Number(n) => write!(f, "{n}"),
            Version::Other(text) => f.write_str(text),
        }
    }
}

/// A decoded envelope, ready for dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub format: Format,
    pub message_type: String,
    pub version: Version,
    pub producer: Option<String>,
    /// The `message` as JSON text (msgpack bodies are converted).
    pub body: String,
}

/// Why a record value is not a usable envelope. The two classes match the
/// errors django-logpipe raises, so operators see the same vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// logpipe's `UnknownFormatError`.
    #[error("unknown format: {0}")]
    UnknownFormat(UnknownFormat),
    /// logpipe's `InvalidMessageError`.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
}

impl DecodeError {
    /// The error class, as named in the shared test vectors and the logs.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::UnknownFormat(_) => "unknown-format",
            DecodeError::InvalidMessage(_) => "invalid-message",
        }
    }
}

/// The reasons for an unknown format, kept apart because each gets its own
/// explanation in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownFormat {
    Empty,
    NoDelimiter,
    /// Pickle can execute arbitrary code when loaded; it is refused outright.
    Pickle,
    Code(String),
}

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownFormat::Empty => f.write_str("empty record value"),
            UnknownFormat::NoDelimiter => f.write_str("no `<format>:` prefix"),
            UnknownFormat::Pickle => f.write_str(
                "\"pickle\" is never parsed: unpickling untrusted bytes can run arbitrary code",
            ),
            UnknownFormat::Code(code) => write!(f, "no parser for format {code:?}"),
        }
    }
}

/// How much of an unknown format code is echoed back in errors.
const MAX_CODE_IN_ERROR: usize = 32;

/// Decode one record value. Never panics, whatever the bytes.
pub fn decode(value: &[u8]) -> Result<Envelope, DecodeError> {
    if value.is_empty() {
        return Err(DecodeError::UnknownFormat(UnknownFormat::Empty));
    }
    let Some(colon) = value.iter().position(|&b| b == b':') else {
        return Err(DecodeError::UnknownFormat(UnknownFormat::NoDelimiter));
    };
    let (code, body) = (&value[..colon], &value[colon + 1..]);
    match code {
        b"json" => decode_json(body),
        b"msgpack" => decode_msgpack(body),
        b"pickle" => Err(DecodeError::UnknownFormat(UnknownFormat::Pickle)),
        other => {
            let shown = &other[..other.len().min(MAX_CODE_IN_ERROR)];
            Err(DecodeError::UnknownFormat(UnknownFormat::Code(
                String::from_utf8_lossy(shown).into_owned(),
            )))
        }
    }
}

fn decode_json(body: &[u8]) -> Result<Envelope, DecodeError> {
    let fields: Fields<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| DecodeError::InvalidMessage(format!("bad JSON body: {e}")))?;
    fields.into_envelope(Format::Json, |raw| Ok(raw.get().to_owned()))
}

fn decode_msgpack(body: &[u8]) -> Result<Envelope, DecodeError> {
    let fields: Fields<serde_json::Value> = rmp_serde::from_slice(body)
        .map_err(|e| DecodeError::InvalidMessage(format!("bad msgpack body: {e}")))?;
    fields.into_envelope(Format::Msgpack, |value| {
        serde_json::to_string(&value).map_err(|e| {
            DecodeError::InvalidMessage(format!("msgpack message has no JSON form: {e}"))
        })
    })
}

#[cfg(test)]
mod tests;
