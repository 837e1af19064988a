//! Reading a config file: top-level option keys, django-logpipe aliases,
//! `[kafka.global|consumer|producer]` property tables and `[[consumer]]`
//! blocks, every key checked against the options that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::ConfigError;
use super::aliases;

/// Where a setting came from, for `config check` and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A top-level key of the file.
    File,
    /// A django-logpipe setting name.
    Alias(&'static str),
    /// A key of the named `[[consumer]]` block.
    Consumer(String),
}

/// One option's value(s) from the file, keyed by its long flag name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub values: Vec<String>,
    pub origin: Origin,
}

/// Raw librdkafka properties (django-kafka's GLOBAL/CONSUMER/PRODUCER_CONFIG).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaTables {
    pub global: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
}

/// Where a named consumer reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Kafka,
    Kinesis,
}

/// A `[[consumer]]` block: its name, its source and the options it sets
/// for its own run (its topics or streams, handlers folder, ignored types,
/// and any other `run` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerBlock {
    pub name: String,
    pub source: Source,
    pub settings: BTreeMap<String, Setting>,
}

/// A parsed config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub settings: BTreeMap<String, Setting>,
    pub kafka: KafkaTables,
    pub consumers: Vec<ConsumerBlock>,
}

/// The option names the file may use: the long flags of every command,
/// and those of `run` (for consumer blocks).
pub struct KnownKeys {
    pub all: BTreeSet<String>,
    pub run: BTreeSet<String>,
    /// Options that take a list (repeatable flags).
    pub lists: BTreeSet<String>,
}

/// Keys of a consumer block that are not option names, with the option
/// they set.
const CONSUMER_KEYS: &[(&str, &str)] = &[
    ("topics", "topic"),
    ("streams", "stream"),
    ("ignore-types", "ignore-type"),
];

impl ConfigFile {
    pub fn load(path: &Path, known: &KnownKeys) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, known)
    }

    pub fn parse(path: &Path, text: &str, known: &KnownKeys) -> Result<Self, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut reader = Reader {
            path,
            known,
            file: ConfigFile {
                path: path.to_path_buf(),
                settings: BTreeMap::new(),
                kafka: KafkaTables::default(),
                consumers: Vec::new(),
            },
        };
        for (key, value) in &table {
            reader.top_level(key, value)?;
        }
        reader.check_consumers()?;
        Ok(reader.file)
    }

    /// The consumer block called `name`.
    pub fn consumer(&self, name: &str) -> Option<&ConsumerBlock> {
        self.consumers.iter().find(|c| c.name == name)
    }
}

struct Reader<'a> {
    path: &'a Path,
    known: &'a KnownKeys,
    file: ConfigFile,
}

impl Reader<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn top_level(&mut self, key: &str, value: &Value) -> Result<(), ConfigError> {
        match key {
            "kafka" => self.kafka_tables(value),
            "consumer" => self.consumer_blocks(value),
            "LOGPIPE" => {
                // django-logpipe's `LOGPIPE = {...}` dict, as a table.
                let table = value.as_table().ok_or_else(|| {
                    self.invalid(key, "expected a table of django-logpipe settings")
                })?;
                for (name, value) in table {
                    self.alias(&format!("LOGPIPE.{name}"), name, value)?;
                }
                Ok(())
            }
            _ if aliases::is_alias_name(key) => self.alias(key, key, value),
            _ => {
                let option = normalize(key);
                if !self.known.all.contains(&option) {
                    return Err(self.unknown(key, &self.known.all));
                }
                let values = self.values(key, &option, value)?;
                self.set(key, option, values, Origin::File)
            }
        }
    }

    fn values(&self, key: &str, option: &str, value: &Value) -> Result<Vec<String>, ConfigError> {
        let values = option_values(value).map_err(|m| self.invalid(key, m))?;
        if values.len() != 1 && !self.known.lists.contains(option) {
            return Err(self.invalid(key, "takes one value, not a list"));
        }
        Ok(values)
    }

    fn unknown(&self, key: &str, valid: &BTreeSet<String>) -> ConfigError {
        let mut candidates: Vec<&str> = valid.iter().map(String::as_str).collect();
        candidates.extend(aliases::NAMES);
        candidates.extend(["kafka", "consumer"]);
        ConfigError::UnknownKey {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            closest: closest(key, &candidates),
        }
    }

    fn set(
        &mut self,
        key: &str,
        option: String,
        values: Vec<String>,
        origin: Origin,
    ) -> Result<(), ConfigError> {
        if let Some(earlier) = self.file.settings.get(&option) {
            return Err(self.invalid(
                key,
                format!(
                    "`{option}` is already set{}",
                    match &earlier.origin {
                        Origin::Alias(name) => format!(" by `{name}`"),
                        _ => String::new(),
                    }
                ),
            ));
        }
        self.file
            .settings
            .insert(option, Setting { values, origin });
        Ok(())
    }

    fn alias(&mut self, key: &str, name: &str, value: &Value) -> Result<(), ConfigError> {
        let translated = aliases::translate(name, value).map_err(|m| self.invalid(key, m))?;
        let Some(alias) = aliases::NAMES.iter().find(|n| **n == name).copied() else {
            return Err(self.unknown(key, &self.known.all));
        };
        for (option, values) in translated.options {
            self.set(key, option.to_owned(), values, Origin::Alias(alias))?;
        }
        self.file.kafka.consumer.extend(translated.consumer);
        self.file.kafka.producer.extend(translated.producer);
        Ok(())
    }

    fn kafka_tables(&mut self, value: &Value) -> Result<(), ConfigError> {
        let tables = value.as_table().ok_or_else(|| {
            self.invalid(
                "kafka",
                "expected the tables [kafka.global], [kafka.consumer], [kafka.producer]",
            )
        })?;
        for (name, table) in tables {
            let key = format!("kafka.{name}");
            let properties = properties(table).map_err(|m| self.invalid(&key, m))?;
            match name.as_str() {
                "global" => self.file.kafka.global.extend(properties),
                "consumer" => self.file.kafka.consumer.extend(properties),
                "producer" => self.file.kafka.producer.extend(properties),
                _ => {
                    return Err(ConfigError::UnknownKey {
                        path: self.path.to_path_buf(),
                        key,
                        closest: closest(
                            name,
                            &["kafka.global", "kafka.consumer", "kafka.producer"],
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn consumer_blocks(&mut self, value: &Value) -> Result<(), ConfigError> {
        let blocks = value
            .as_array()
            .ok_or_else(|| self.invalid("consumer", "expected [[consumer]] blocks"))?;
        for (index, block) in blocks.iter().enumerate() {
            let table = block
                .as_table()
                .ok_or_else(|| self.invalid("consumer", "expected [[consumer]] blocks"))?;
            let block = self.consumer_block(index, table)?;
            self.file.consumers.push(block);
        }
        Ok(())
    }

    fn consumer_block(&self, index: usize, table: &Table) -> Result<ConsumerBlock, ConfigError> {
        let at = format!("consumer[{index}]");
        let name = match table.get("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            _ => return Err(self.invalid(&at, "every [[consumer]] needs a `name`")),
        };
        let at = format!("consumer.{name}");
        let mut settings = BTreeMap::new();
        let mut source = None;
        for (key, value) in table {
            let here = format!("{at}.{key}");
            if key == "name" {
                continue;
            }
            if key == "source" {
                source = Some(match value.as_str() {
                    Some("kafka") => Source::Kafka,
                    Some("kinesis") => Source::Kinesis,
                    _ => return Err(self.invalid(&here, "expected \"kafka\" or \"kinesis\"")),
                });
                continue;
            }
            let normalized = normalize(key);
            let option = CONSUMER_KEYS
                .iter()
                .find(|(block_key, _)| *block_key == normalized)
                .map(|(_, option)| (*option).to_owned())
                .unwrap_or(normalized);
            if !self.known.run.contains(&option) {
                let mut valid = self.known.run.clone();
                valid.extend(CONSUMER_KEYS.iter().map(|(k, _)| (*k).to_owned()));
                valid.extend(["name".to_owned(), "source".to_owned()]);
                return Err(ConfigError::UnknownKey {
                    path: self.path.to_path_buf(),
                    key: here,
                    closest: closest(key, &valid.iter().map(String::as_str).collect::<Vec<_>>()),
                });
            }
            let values = self.values(&here, &option, value)?;
            let setting = Setting {
                values,
                origin: Origin::Consumer(name.clone()),
            };
            if settings.insert(option.clone(), setting).is_some() {
                return Err(self.invalid(&here, format!("`{option}` is set twice")));
            }
        }
        let has = |option: &str| {
            settings
                .get(option)
                .is_some_and(|s: &Setting| !s.values.is_empty())
        };
        let source = match (source, has("topic"), has("stream")) {
            (_, true, true) => {
                return Err(self.invalid(
                    &at,
                    "give `topics` (Kafka) or `streams` (Kinesis), not both",
                ));
            }
            (Some(Source::Kinesis), true, _) => {
                return Err(self.invalid(&at, "source \"kinesis\" reads `streams`, not `topics`"));
            }
            (Some(Source::Kafka), _, true) => {
                return Err(self.invalid(&at, "source \"kafka\" reads `topics`, not `streams`"));
            }
            (_, false, false) => {
                return Err(self.invalid(
                    &at,
                    "a consumer needs `topics` (Kafka) or `streams` (Kinesis)",
                ));
            }
            (_, true, false) => Source::Kafka,
            (_, false, true) => Source::Kinesis,
        };
        Ok(ConsumerBlock {
            name,
            source,
            settings,
        })
    }

    fn check_consumers(&self) -> Result<(), ConfigError> {
        if !self.file.consumers.is_empty() {
            for option in ["topic", "stream"] {
                if self.file.settings.contains_key(option) {
                    return Err(self.invalid(
                        option,
                        "with [[consumer]] blocks, each block names its own topics or streams",
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        for consumer in &self.file.consumers {
            if !names.insert(&consumer.name) {
                return Err(self.invalid(
                    &format!("consumer.{}", consumer.name),
                    "two [[consumer]] blocks have this name",
                ));
            }
        }
        Ok(())
    }
}

/// Config keys are option names; `bootstrap_servers` and
/// `bootstrap-servers` are the same key.
pub fn normalize(key: &str) -> String {
    key.trim().replace('_', "-")
}

/// An option's value(s) as the strings its flag would be given.
fn option_values(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Datetime(d) => Ok(d.to_string()),
        Value::Array(_) => Err("expected a value, found a nested array".into()),
        Value::Table(_) => Err("expected a value, found a table".into()),
    }
}

/// A `[kafka.*]` table: librdkafka property names to values.
fn properties(value: &Value) -> Result<Vec<(String, String)>, String> {
    let table = value
        .as_table()
        .ok_or("expected a table of librdkafka properties (\"security.protocol\" = \"ssl\")")?;
    table
        .iter()
        .map(|(key, value)| {
            scalar(value)
                .map(|v| (key.clone(), v))
                .map_err(|m| format!("{key}: {m}"))
        })
        .collect()
}

/// The valid key closest to `key`, if any is close enough to be a typo.
pub fn closest(key: &str, candidates: &[&str]) -> Option<String> {
    let wanted = normalize(key).to_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&wanted, &c.to_lowercase()), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}
