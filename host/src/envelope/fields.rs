//! The top-level envelope map, read field by field.
//!
//! serde's derived `Deserialize` also accepts a sequence for a struct, which
//! would let `["person", 1, {}]` pass as an envelope; logpipe requires a map,
//! so this visitor only implements `visit_map`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::{DecodeError, Envelope, Format, Version};

/// The envelope's fields; `M` is how the format keeps the `message`.
pub(super) struct Fields<M> {
    message_type: Option<Value>,
    version: Option<Value>,
    message: Option<M>,
    producer: Option<Value>,
}

impl<M> Fields<M> {
    /// Check the required keys (logpipe's "missing a top-level key" errors)
    /// and turn the message into JSON text with `message_to_json`.
    pub(super) fn into_envelope(
        self,
        format: Format,
        message_to_json: impl FnOnce(M) -> Result<String, DecodeError>,
    ) -> Result<Envelope, DecodeError> {
        let missing =
            |key: &str| DecodeError::InvalidMessage(format!("missing top-level {key:?} key"));
        let message_type = match self.message_type.ok_or_else(|| missing("type"))? {
            Value::String(name) => name,
            other => {
                return Err(DecodeError::InvalidMessage(format!(
                    "top-level \"type\" must be a string, got {other}"
                )));
            }
        };
        let version = version_of(self.version.ok_or_else(|| missing("version"))?);
        let message = self.message.ok_or_else(|| missing("message"))?;
        let producer = match self.producer {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id),
            Some(other) => Some(other.to_string()),
        };
        Ok(Envelope {
            format,
            message_type,
            version,
            producer,
            body: message_to_json(message)?,
        })
    }
}

fn version_of(value: Value) -> Version {
    // Only an integer literal matches: `1.0` and `"1"` are other versions.
    match value.as_u64() {
        Some(n) => match u32::try_from(n) {
            Ok(n) => Version::Number(n),
            Err(_) => Version::Other(n.to_string()),
        },
        None => Version::Other(value.to_string()),
    }
}

impl<'de, M: Deserialize<'de>> Deserialize<'de> for Fields<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor(PhantomData))
    }
}

struct FieldsVisitor<M>(PhantomData<M>);

impl<'de, M: Deserialize<'de>> Visitor<'de> for FieldsVisitor<M> {
    type Value = Fields<M>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map with \"type\", \"version\" and \"message\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields {
            message_type: None,
            version: None,
            message: None,
            producer: None,
        };
        // A repeated key keeps its last value, as Python's json and msgpack do.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => fields.message_type = Some(map.next_value()?),
                Key::Version => fields.version = Some(map.next_value()?),
                Key::Message => fields.message = Some(map.next_value()?),
                Key::Producer => fields.producer = Some(map.next_value()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

enum Key {
    Type,
    Version,
    Message,
    Producer,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "type" => Key::Type,
            "version" => Key::Version,
            "message" => Key::Message,
            "producer" => Key::Producer,
            _ => Key::Other,
        })
    }

    // Msgpack maps may have non-string keys; like logpipe, ignore them.
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Key, E> {
        Ok(Key::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Key, E> {
        Ok(Key::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Key, E> {
        Ok(Key::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Key, E> {
        Ok(Key::Other)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Key, E> {
        Ok(Key::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        Ok(Key::Other)
    }
}
