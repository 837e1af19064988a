//! django-logpipe's setting names, so that a migrating team can copy its
//! `LOGPIPE = {...}` dict into the config file. Each is translated into
//! logpipe-host options or librdkafka properties; a setting with no
//! equivalent is refused with the reason, never silently dropped.

use toml::Value;

/// The django-logpipe settings logpipe-host understands.
pub const NAMES: &[&str] = &[
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_CONSUMER_KWARGS",
    "KAFKA_SEND_TIMEOUT",
    "KAFKA_MAX_SEND_RETRIES",
    "MIN_MESSAGE_LAG_MS",
    "DEFAULT_FORMAT",
    "PRODUCER_ID",
    "KINESIS_REGION",
    "KINESIS_FETCH_LIMIT",
    "KINESIS_SEQ_NUM_CACHE_SIZE",
    "KINESIS_SHARD_ITERATOR_TYPE",
];

/// django-logpipe settings that name Python classes: refused with why.
const WITHOUT_EQUIVALENT: &[(&str, &str)] = &[
    (
        "OFFSET_BACKEND",
        "offsets live in the SQLite file given by `offsets`",
    ),
    (
        "CONSUMER_BACKEND",
        "the source follows from `topic` (Kafka) or `stream` (Kinesis)",
    ),
    (
        "PRODUCER_BACKEND",
        "handlers produce to the source's own system",
    ),
];

/// What one django-logpipe setting becomes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translation {
    /// logpipe-host options (long flag name, values).
    pub options: Vec<(&'static str, Vec<String>)>,
    /// librdkafka properties of the consumer.
    pub consumer: Vec<(String, String)>,
    /// librdkafka properties of the producer.
    pub producer: Vec<(String, String)>,
}

/// Whether `key` is handled here (an alias, or a setting refused with a
/// reason) rather than as an option name.
pub fn is_alias_name(key: &str) -> bool {
    NAMES.contains(&key) || WITHOUT_EQUIVALENT.iter().any(|(name, _)| *name == key)
}

pub fn translate(name: &str, value: &Value) -> Result<Translation, String> {
    if let Some((_, why)) = WITHOUT_EQUIVALENT.iter().find(|(n, _)| *n == name) {
        return Err(format!("django-logpipe's {name} has no equivalent: {why}"));
    }
    let option = |option: &'static str, value: String| Translation {
        options: vec![(option, vec![value])],
        ..Translation::default()
    };
    Ok(match name {
        "KAFKA_BOOTSTRAP_SERVERS" => option("bootstrap-servers", servers(value)?),
        "KAFKA_CONSUMER_KWARGS" => consumer_kwargs(value)?,
        // logpipe waits this many seconds for each send; librdkafka's
        // equivalent bound is the delivery timeout.
        "KAFKA_SEND_TIMEOUT" => Translation {
            producer: vec![("message.timeout.ms".into(), seconds_to_ms(value)?)],
            ..Translation::default()
        },
        "KAFKA_MAX_SEND_RETRIES" => Translation {
            producer: vec![("message.send.max.retries".into(), send_retries(value)?)],
            ..Translation::default()
        },
        "MIN_MESSAGE_LAG_MS" => option("min-message-lag-ms", integer(value)?),
        "DEFAULT_FORMAT" => option("format", format(value)?),
        "PRODUCER_ID" => option("producer-id", text(value)?),
        "KINESIS_REGION" => option("kinesis-region", text(value)?),
        "KINESIS_FETCH_LIMIT" => option("kinesis-fetch-limit", integer(value)?),
        "KINESIS_SEQ_NUM_CACHE_SIZE" => option("kinesis-seq-num-cache-size", integer(value)?),
        "KINESIS_SHARD_ITERATOR_TYPE" => option("kinesis-iterator", iterator_type(value)?),
        _ => return Err(format!("{name} is not a django-logpipe setting")),
    })
}

/// A list of `host:port` (as logpipe takes it) or one comma-separated string.
fn servers(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "expected \"host:port\" strings".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|list| list.join(",")),
        _ => Err("expected a list of \"host:port\"".into()),
    }
}

fn text(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "expected a string".into())
}

fn integer(value: &Value) -> Result<String, String> {
    value
        .as_integer()
        .map(|n| n.to_string())
        .ok_or_else(|| "expected an integer".into())
}

/// logpipe's default of 0 retries cannot be kept: the producer is
/// idempotent (no duplicates, order kept per partition), which librdkafka
/// only allows with retries.
fn send_retries(value: &Value) -> Result<String, String> {
    match value.as_integer() {
        Some(n) if n >= 1 => Ok(n.to_string()),
        Some(_) => Err("logpipe-host's producer is idempotent (no duplicates, order kept),                         which needs at least 1 retry: remove the setting or set it to 1 or more"
            .into()),
        None => Err("expected an integer".into()),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| "expected true or false".into())
}

fn seconds_to_ms(value: &Value) -> Result<String, String> {
    let seconds = match value {
        Value::Integer(n) => *n as f64,
        Value::Float(f) => *f,
        _ => return Err("expected seconds".into()),
    };
    if seconds.is_nan() || seconds <= 0.0 {
        return Err("expected a positive number of seconds".into());
    }
    Ok(format!("{}", (seconds * 1000.0).round() as u64))
}

fn format(value: &Value) -> Result<String, String> {
    match value.as_str() {
        Some("json") => Ok("json".into()),
        Some("msgpack") => Ok("msgpack".into()),
        _ => Err("expected \"json\" or \"msgpack\"".into()),
    }
}

fn iterator_type(value: &Value) -> Result<String, String> {
    match value.as_str() {
        Some("TRIM_HORIZON") => Ok("TRIM_HORIZON".into()),
        Some("LATEST") => Ok("LATEST".into()),
        Some(other) => Err(format!(
            "{other} is not supported where no position is stored: expected \"TRIM_HORIZON\" or \
             \"LATEST\" (set a position with `logpipe-host offsets set`)"
        )),
        None => Err("expected \"TRIM_HORIZON\" or \"LATEST\"".into()),
    }
}

/// How one kafka-python `KafkaConsumer` argument maps.
enum Kwarg {
    /// A librdkafka property of the consumer, same value.
    Consumer(&'static str),
    /// A librdkafka property for every client: security settings, since
    /// logpipe-host also produces (outbox, retries, dead letters) to the
    /// same cluster.
    Global(&'static str),
    /// A logpipe-host option.
    Option(&'static str),
    /// No equivalent, with the reason.
    Refused(&'static str),
}

const COMMITS: &str = "logpipe-host commits offsets itself, with each record's effects \
                       (see `commit-interval-ms` and `commit-max-records`)";

fn kwarg(name: &str) -> Option<Kwarg> {
    use Kwarg::*;
    Some(match name {
        "bootstrap_servers" => Option("bootstrap-servers"),
        "group_id" => Option("group-id"),
        "consumer_timeout_ms" => Option("consumer-timeout-ms"),
        "client_id" => Consumer("client.id"),
        "fetch_min_bytes" => Consumer("fetch.min.bytes"),
        "fetch_max_wait_ms" => Consumer("fetch.wait.max.ms"),
        "fetch_max_bytes" => Consumer("fetch.max.bytes"),
        "max_partition_fetch_bytes" => Consumer("max.partition.fetch.bytes"),
        "request_timeout_ms" => Consumer("socket.timeout.ms"),
        "retry_backoff_ms" => Consumer("retry.backoff.ms"),
        "reconnect_backoff_ms" => Consumer("reconnect.backoff.ms"),
        "reconnect_backoff_max_ms" => Consumer("reconnect.backoff.max.ms"),
        "auto_offset_reset" => Consumer("auto.offset.reset"),
        "check_crcs" => Consumer("check.crcs"),
        "metadata_max_age_ms" => Consumer("metadata.max.age.ms"),
        "session_timeout_ms" => Consumer("session.timeout.ms"),
        "heartbeat_interval_ms" => Consumer("heartbeat.interval.ms"),
        "max_poll_interval_ms" => Consumer("max.poll.interval.ms"),
        "receive_buffer_bytes" => Consumer("socket.receive.buffer.bytes"),
        "send_buffer_bytes" => Consumer("socket.send.buffer.bytes"),
        "connections_max_idle_ms" => Consumer("connections.max.idle.ms"),
        "isolation_level" => Consumer("isolation.level"),
        "security_protocol" => Global("security.protocol"),
        "ssl_cafile" => Global("ssl.ca.location"),
        "ssl_certfile" => Global("ssl.certificate.location"),
        "ssl_keyfile" => Global("ssl.key.location"),
        "ssl_password" => Global("ssl.key.password"),
        "ssl_crlfile" => Global("ssl.crl.location"),
        "ssl_ciphers" => Global("ssl.cipher.suites"),
        "ssl_check_hostname" => Global("ssl.endpoint.identification.algorithm"),
        "sasl_mechanism" => Global("sasl.mechanism"),
        "sasl_plain_username" => Global("sasl.username"),
        "sasl_plain_password" => Global("sasl.password"),
        "sasl_kerberos_service_name" => Global("sasl.kerberos.service.name"),
        "enable_auto_commit" | "auto_commit_interval_ms" | "default_offset_commit_callback" => {
            Refused(COMMITS)
        }
        "key_deserializer" | "value_deserializer" => {
            Refused("logpipe-host decodes the envelopes itself")
        }
        "max_poll_records" => Refused(
            "librdkafka has no equivalent: records are handed over one at a time as fetched \
             (see `max-uncommitted-records`)",
        ),
        "api_version" | "api_version_auto_timeout_ms" => {
            Refused("librdkafka negotiates the protocol version with the broker")
        }
        "partition_assignment_strategy" => {
            Refused("logpipe-host assigns every partition of its topics itself")
        }
        "ssl_context" | "sasl_oauth_token_provider" | "selector" | "metric_reporters" => {
            Refused("a Python object cannot be given to librdkafka")
        }
        _ => return None,
    })
}

/// `KAFKA_CONSUMER_KWARGS`: kafka-python consumer arguments.
fn consumer_kwargs(value: &Value) -> Result<Translation, String> {
    let table = value
        .as_table()
        .ok_or("expected a table of kafka-python KafkaConsumer arguments")?;
    let mut out = Translation::default();
    for (name, value) in table {
        let context = |m: String| format!("{name}: {m}");
        match kwarg(name) {
            Some(Kwarg::Option(option)) => {
                let value = match option {
                    "bootstrap-servers" => servers(value),
                    "group-id" => text(value),
                    _ => integer(value),
                }
                .map_err(context)?;
                out.options.push((option, vec![value]));
            }
            Some(Kwarg::Consumer(property)) => {
                let value = property_value(name, value).map_err(context)?;
                out.consumer.push((property.to_owned(), value));
            }
            Some(Kwarg::Global(property)) => {
                let value = property_value(name, value).map_err(context)?;
                // Global properties apply to the producer and admin client
                // too; record them on both sides.
                out.consumer.push((property.to_owned(), value.clone()));
                out.producer.push((property.to_owned(), value));
            }
            Some(Kwarg::Refused(why)) => {
                return Err(format!("{name} has no equivalent: {why}"));
            }
            None => {
                return Err(format!(
                    "{name} is not a kafka-python consumer argument logpipe-host maps; give the \
                     librdkafka property in [kafka.consumer] instead"
                ));
            }
        }
    }
    Ok(out)
}

/// A kwarg's value as librdkafka wants it.
fn property_value(name: &str, value: &Value) -> Result<String, String> {
    match name {
        // kafka-python's bool becomes librdkafka's algorithm name.
        "ssl_check_hostname" => Ok(if boolean(value)? { "https" } else { "none" }.into()),
        // kafka-python's "none" (raise) is librdkafka's "error".
        "auto_offset_reset" => match value.as_str() {
            Some("none") => Ok("error".into()),
            Some(s @ ("earliest" | "latest")) => Ok(s.into()),
            _ => Err("expected \"earliest\", \"latest\" or \"none\"".into()),
        },
        "security_protocol" | "sasl_mechanism" => text(value),
        _ => match value {
            Value::String(s) => Ok(s.clone()),
            Value::Integer(n) => Ok(n.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            _ => Err("expected a string, an integer or a boolean".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(toml: &str) -> Value {
        let table: toml::Table = toml::from_str(&format!("v = {toml}")).unwrap();
        table["v"].clone()
    }

    #[test]
    fn bootstrap_servers_list_is_joined() {
        let t = translate("KAFKA_BOOTSTRAP_SERVERS", &value(r#"["a:9092", "b:9092"]"#)).unwrap();
        assert_eq!(
            t.options,
            vec![("bootstrap-servers", vec!["a:9092,b:9092".to_owned()])]
        );
    }

    #[test]
    fn send_timeout_is_the_delivery_timeout() {
        let t = translate("KAFKA_SEND_TIMEOUT", &value("2.5")).unwrap();
        assert_eq!(
            t.producer,
            vec![("message.timeout.ms".to_owned(), "2500".to_owned())]
        );
    }

    #[test]
    fn consumer_kwargs_map_to_properties_and_options() {
        let t = translate(
            "KAFKA_CONSUMER_KWARGS",
            &value(
                r#"{ client_id = "svc", auto_offset_reset = "none", consumer_timeout_ms = 500,
                     security_protocol = "SASL_SSL", ssl_check_hostname = false }"#,
            ),
        )
        .unwrap();
        assert_eq!(
            t.options,
            vec![("consumer-timeout-ms", vec!["500".to_owned()])]
        );
        assert!(t.consumer.contains(&("client.id".into(), "svc".into())));
        assert!(
            t.consumer
                .contains(&("auto.offset.reset".into(), "error".into()))
        );
        assert!(
            t.producer
                .contains(&("security.protocol".into(), "SASL_SSL".into()))
        );
        assert!(t.producer.contains(&(
            "ssl.endpoint.identification.algorithm".into(),
            "none".into()
        )));
    }

    #[test]
    fn kwargs_without_equivalent_are_refused_with_the_reason() {
        let error = translate(
            "KAFKA_CONSUMER_KWARGS",
            &value("{ enable_auto_commit = true }"),
        )
        .unwrap_err();
        assert!(
            error.contains("enable_auto_commit has no equivalent"),
            "{error}"
        );
        assert!(error.contains("commits offsets itself"), "{error}");
        let error = translate("KAFKA_CONSUMER_KWARGS", &value("{ fancy = 1 }")).unwrap_err();
        assert!(error.contains("[kafka.consumer]"), "{error}");
    }

    #[test]
    fn class_settings_are_refused() {
        let error = translate(
            "OFFSET_BACKEND",
            &value(r#""logpipe.backend.kafka.ModelOffsetStore""#),
        )
        .unwrap_err();
        assert!(error.contains("no equivalent"), "{error}");
    }

    #[test]
    fn iterator_types() {
        let t = translate("KINESIS_SHARD_ITERATOR_TYPE", &value(r#""LATEST""#)).unwrap();
        assert_eq!(
            t.options,
            vec![("kinesis-iterator", vec!["LATEST".to_owned()])]
        );
        assert!(translate("KINESIS_SHARD_ITERATOR_TYPE", &value(r#""AT_TIMESTAMP""#)).is_err());
    }
}
