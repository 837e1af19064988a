//! librdkafka client configuration shared by consumers and producers.

use rdkafka::ClientConfig;

/// How much librdkafka prefetches per consumer. Its default (64 MiB) took a
/// run with the two example guests past 100 MB resident; 4 MiB kept it at
/// 53-59 MiB in `logpipe-host bench` (200k records), at no throughput cost
/// that stood out of the noise. `-X queued.max.messages.kbytes=...` wins.
const PREFETCH_KBYTES: &str = "4096";

/// Connection settings: bootstrap servers plus raw librdkafka properties
/// (`-X key=value` and the config file's tables), which win over our
/// defaults.
#[derive(Debug, Clone, Default)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// For every client; applied last, so `-X` wins.
    pub properties: Vec<(String, String)>,
    /// For the consumer only (`[kafka.consumer]`).
    pub consumer_properties: Vec<(String, String)>,
    /// For producers only (`[kafka.producer]`).
    pub producer_properties: Vec<(String, String)>,
}

/// Parse one `-X key=value` argument.
pub fn parse_property(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "expected a librdkafka property as key=value, got {arg:?}"
        )),
    }
}

impl KafkaSettings {
    fn base(&self, defaults: &[(&str, &str)], own: &[(String, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in own.iter().chain(&self.properties) {
            config.set(key, value);
        }
        config
    }

    /// What every consumer of ours needs: offsets are committed by the
    /// host (to SQLite, or to the group once handled), never by librdkafka.
    fn consumer_defaults(group_id: &str) -> Vec<(&str, &str)> {
        vec![
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            // For lag and broker health (see `kafka::observe`).
            (
                "statistics.interval.ms",
                super::observe::STATISTICS_INTERVAL_MS,
            ),
            ("queued.max.messages.kbytes", PREFETCH_KBYTES),
        ]
    }

    /// A consumer with manually assigned partitions: offsets live in our
    /// own store, so librdkafka must neither commit nor store them.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        self.base(
            &Self::consumer_defaults(group_id),
            &self.consumer_properties,
        )
    }

    /// A member of consumer group `group_id` (`--offset-store kafka`): the
    /// broker assigns partitions; offsets are committed explicitly, only
    /// once handled (see `kafka::group`). A member that stops answering
    /// loses its partitions after `session.timeout.ms`.
    pub fn group_consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut defaults = Self::consumer_defaults(group_id);
        defaults.extend([
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "3000"),
        ]);
        self.base(&defaults, &self.consumer_properties)
    }

    /// An admin client, for creating retry and dead-letter topics.
    pub fn admin_config(&self) -> ClientConfig {
        self.base(&[], &[])
    }

    /// The envelope producer. Idempotence keeps librdkafka's internal
    /// retries from duplicating or reordering records.
    pub fn producer_config(&self) -> ClientConfig {
        self.base(
            &[("enable.idempotence", "true"), ("linger.ms", "5")],
            &self.producer_properties,
        )
    }
}
