//! The envelope codec against django-logpipe's own output
//! (`../shared/vectors/envelopes.json`) and against arbitrary bytes.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::*;

#[derive(Deserialize)]
struct Vector {
    name: String,
    format: Option<Format>,
    bytes_b64: String,
    #[serde(default)]
    byte_exact: bool,
    expect: Expect,
}

#[derive(Deserialize)]
struct Expect {
    ok: bool,
    #[serde(rename = "type")]
    message_type: Option<String>,
    version: Option<u32>,
    producer: Option<String>,
    message: Option<Value>,
    error: Option<String>,
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "json" => Ok(Format::Json),
            "msgpack" => Ok(Format::Msgpack),
            other => Err(serde::de::Error::custom(format!("format {other}"))),
        }
    }
}

fn vectors() -> Vec<Vector> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/envelopes.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("vectors parse");
    assert!(vectors.len() >= 19, "expected the full vector set");
    vectors
}

fn base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("vector bytes are base64")
}

#[test]
fn decodes_every_vector_as_logpipe_does() {
    for v in vectors() {
        let bytes = base64(&v.bytes_b64);
        let result = decode(&bytes);
        if v.expect.ok {
            let env = result.unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!(Some(env.format), v.format, "{}", v.name);
            assert_eq!(
                Some(env.message_type.as_str()),
                v.expect.message_type.as_deref(),
                "{}",
                v.name
            );
            assert_eq!(env.version.as_number(), v.expect.version, "{}", v.name);
            assert_eq!(env.producer, v.expect.producer, "{}", v.name);
            let body: Value = serde_json::from_str(&env.body).expect("body is JSON");
            assert_eq!(Some(body), v.expect.message, "{}", v.name);
        } else {
            let err = match result {
                Ok(env) => panic!("{}: decoded as {env:?}", v.name),
                Err(err) => err,
            };
            assert_eq!(
                Some(err.class()),
                v.expect.error.as_deref(),
                "{}: {err}",
                v.name
            );
        }
    }
}

#[test]
fn renders_byte_exact_vectors_identically() {
    let mut checked = 0;
    for v in vectors().into_iter().filter(|v| v.byte_exact) {
        let expect = &v.expect;
        let body = serde_json::to_string(expect.message.as_ref().expect("message")).unwrap();
        let rendered = render(
            v.format.expect("format"),
            expect.message_type.as_deref().expect("type"),
            expect.version.expect("version"),
            &body,
            expect.producer.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            String::from_utf8_lossy(&rendered),
            String::from_utf8_lossy(&base64(&v.bytes_b64)),
            "{}",
            v.name
        );
        assert_eq!(rendered, base64(&v.bytes_b64), "{}", v.name);
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} byte-exact vectors");
}

#[test]
fn classifies_edge_cases() {
    let class = |bytes: &[u8]| decode(bytes).map(|_| ()).map_err(|e| e.class());
    assert_eq!(class(b"json:[\"person\",1,{}]"), Err("invalid-message"));
    assert_eq!(
        class(b"json:{\"type\":5,\"version\":1,\"message\":{}}"),
        Err("invalid-message")
    );
    assert_eq!(
        class(b"json:{\"type\":\"a\",\"version\":1,\"message\":{}} x"),
        Err("invalid-message")
    );
    assert_eq!(class(b"pickle:"), Err("unknown-format"));
    assert_eq!(class(b":"), Err("unknown-format"));
    let env = decode(b"json:{\"type\":\"a\",\"version\":\"1\",\"message\":{},\"x\":[1]}").unwrap();
    assert_eq!(env.version, Version::Other("\"1\"".into()));
    let env = decode(b"json:{\"type\":\"a\",\"version\":1.0,\"message\":{}}").unwrap();
    assert_eq!(env.version, Version::Other("1.0".into()));
    let env = decode(b"json:{\"type\":\"a\",\"version\":4294967296,\"message\":null}").unwrap();
    assert_eq!(env.version.as_number(), None);
    assert_eq!(env.body, "null");
}

#[test]
fn json_round_trips_through_render_and_decode() {
    let body =
        r#"{"n": 123456789012345678901234567890, "s": "a\"b\u0001\n", "f": 1.5e300, "z": -0}"#;
    let wire = render(Format::Json, "t", 7, body, Some("me")).unwrap();
    let env = decode(&wire).unwrap();
    assert_eq!(
        env.body,
        r#"{"n":123456789012345678901234567890,"s":"a\"b\u0001\n","f":1.5e+300,"z":-0}"#
    );
    assert_eq!(env.producer.as_deref(), Some("me"));
    let wire = render(
        Format::Msgpack,
        "t",
        7,
        r#"{"a":[1,-1,-200,70000,1.25,"x",null,true]}"#,
        None,
    )
    .unwrap();
    let env = decode(&wire).unwrap();
    assert_eq!(env.body, r#"{"a":[1,-1,-200,70000,1.25,"x",null,true]}"#);
}

/// A small deterministic generator: mutated vectors and random bytes must
/// decode or fail, never panic.
#[test]
fn never_panics_on_arbitrary_bytes() {
    let seeds: Vec<Vec<u8>> = vectors().iter().map(|v| base64(&v.bytes_b64)).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..60_000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        let edits = 1 + next() % 4;
        for _ in 0..edits {
            let r = next();
            match r % 4 {
                0 if !bytes.is_empty() => {
                    let i = (r >> 8) as usize % bytes.len();
                    bytes[i] = (r >> 32) as u8;
                }
                1 if !bytes.is_empty() => {
                    bytes.truncate((r >> 8) as usize % bytes.len());
                }
                2 => {
                    let i = (r >> 8) as usize % (bytes.len() + 1);
                    bytes.insert(i, (r >> 32) as u8);
                }
                _ => {
                    let prefix: &[u8] = if r & 1 == 0 { b"msgpack:" } else { b"json:" };
                    let noise: Vec<u8> = (0..(r >> 40) % 24).map(|_| next() as u8).collect();
                    bytes = [prefix, &noise].concat();
                }
            }
        }
        let _ = decode(&bytes);
    }
}

mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Number, Value};

    use super::super::*;

    /// JSON values as logpipe messages carry them: every kind, nested.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            (-1e300f64..1e300)
                .prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((".{0,12}", inner), 0..8)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        /// Whatever a handler produces decodes back to the same envelope, in
        /// both formats.
        #[test]
        fn render_then_decode_is_identity(
            message in json_value(),
            message_type in "[a-z][a-z0-9_.-]{0,20}",
            version in any::<u32>(),
            producer in proptest::option::of(".{0,20}"),
            msgpack in any::<bool>(),
        ) {
            let format = if msgpack { Format::Msgpack } else { Format::Json };
            let body = serde_json::to_string(&message).unwrap();
            let wire = render(format, &message_type, version, &body, producer.as_deref()).unwrap();
            let decoded = decode(&wire).unwrap();
            prop_assert_eq!(decoded.format, format);
            prop_assert_eq!(&decoded.message_type, &message_type);
            prop_assert_eq!(decoded.version.as_number(), Some(version));
            prop_assert_eq!(&decoded.producer, &producer);
            let back: Value = serde_json::from_str(&decoded.body).unwrap();
            if msgpack {
                // Msgpack stores floats as float64: compare numerically.
                prop_assert_eq!(normalise(back), normalise(message));
            } else {
                prop_assert_eq!(back, message);
            }
        }

        /// Any bytes: an envelope or a classified error, never a panic.
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), prefix in prop_oneof![Just(&b"json:"[..]), Just(&b"msgpack:"[..]), Just(&b""[..])]) {
            let mut input = prefix.to_vec();
            input.extend_from_slice(&bytes);
            let _ = decode(&input);
        }
    }

    /// Numbers as f64 where they are not integers, so JSON's and msgpack's
    /// float spellings compare equal.
    fn normalise(value: Value) -> Value {
        match value {
            Value::Number(n) if n.as_u64().is_none() && n.as_i64().is_none() => n
                .as_f64()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Value::Array(items) => Value::Array(items.into_iter().map(normalise).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, normalise(v))).collect())
            }
            other => other,
        }
    }
}
