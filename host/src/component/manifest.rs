//! Per-handler manifests: `NAME.toml` beside `NAME.wasm`, optional, granting
//! capabilities and overriding limits.
//!
//! ```toml
//! isolation = "instance"          # or "per-record": a fresh instance per record
//!
//! [produce]
//! topics = ["people-index"]       # allowed destinations (default: any)
//! max_calls = 100                 # produce calls per handle call
//! max_bytes = 1048576             # produced bytes per handle call
//!
//! [limits]
//! timeout_ms = 500                # per handle call
//! memory_mib = 128                # per instance
//! table_elements = 20000
//!
//! [env]                           # environment variables the guest sees
//! REGION = "eu-west-1"
//! pass_env = ["TZ"]               # ...and these, copied from the host's environment
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::engine::MAX_HANDLER_MEMORY;
use super::limits::GuestLimits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub produce: ProduceGrant,
    #[serde(default)]
    pub limits: LimitOverrides,
    #[serde(default)]
    pub env: EnvGrant,
}

/// How long an instance lives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// One instance serves record after record, replaced after a trap.
    #[default]
    Instance,
    /// A fresh instance for every record: no state survives a record.
    PerRecord,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceGrant {
    pub topics: Option<Vec<String>>,
    pub max_calls: Option<u32>,
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub table_elements: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EnvGrant {
    /// Host variables to copy in, when set.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Fixed variables.
    #[serde(flatten)]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// What a handler may do and how far it may go, resolved from the host's
/// defaults and its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    pub limits: GuestLimits,
    /// `None`: any topic.
    pub allowed_topics: Option<Arc<HashSet<String>>>,
    pub env: Vec<(String, String)>,
    pub isolation: Isolation,
}

impl HandlerConfig {
    pub fn defaults(limits: GuestLimits) -> Self {
        HandlerConfig {
            limits,
            allowed_topics: None,
            env: Vec::new(),
            isolation: Isolation::Instance,
        }
    }
}

/// `dir/NAME.toml` for `dir/NAME.wasm`.
pub fn manifest_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

/// Read the manifest text beside `wasm`, if there is one.
pub fn read(wasm: &Path) -> Result<Option<String>, ManifestError> {
    let path = manifest_path(wasm);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ManifestError::Read { path, source }),
    }
}

/// Resolve a handler's configuration from the defaults and manifest text.
pub fn resolve(
    defaults: GuestLimits,
    wasm: &Path,
    text: Option<&str>,
) -> Result<HandlerConfig, ManifestError> {
    let Some(text) = text else {
        return Ok(HandlerConfig::defaults(defaults));
    };
    let path = manifest_path(wasm);
    let invalid = |reason: String| ManifestError::Invalid {
        path: path.clone(),
        reason,
    };
    let manifest: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut limits = defaults;
    let overrides = &manifest.limits;
    if let Some(ms) = overrides.timeout_ms {
        limits.call_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(mib) = overrides.memory_mib {
        let bytes = mib.saturating_mul(1 << 20);
        if bytes > MAX_HANDLER_MEMORY {
            return Err(invalid(format!(
                "limits.memory_mib = {mib} is above the host's ceiling of {} MiB",
                MAX_HANDLER_MEMORY >> 20
            )));
        }
        limits.max_memory_bytes = bytes;
    }
    if let Some(elements) = overrides.table_elements {
        limits.max_table_elements = elements;
    }
    if let Some(calls) = manifest.produce.max_calls {
        limits.max_produce_calls = calls;
    }
    if let Some(bytes) = manifest.produce.max_bytes {
        limits.max_produce_bytes = bytes;
    }
    let mut env: Vec<(String, String)> = manifest.env.vars.into_iter().collect();
    for name in manifest.env.pass_env {
        if let Ok(value) = std::env::var(&name) {
            env.push((name, value));
        }
    }
    Ok(HandlerConfig {
        limits,
        allowed_topics: manifest
            .produce
            .topics
            .map(|topics| Arc::new(topics.into_iter().collect())),
        env,
        isolation: manifest.isolation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_text(text: &str) -> Result<HandlerConfig, ManifestError> {
        resolve(GuestLimits::default(), Path::new("h/x.wasm"), Some(text))
    }

    #[test]
    fn overrides_limits_and_grants() {
        let config = resolve_text(
            r#"
            isolation = "per-record"
            [produce]
            topics = ["a", "b"]
            max_calls = 3
            [limits]
            timeout_ms = 250
            memory_mib = 128
            [env]
            REGION = "eu"
            pass_env = ["LOGPIPE_MANIFEST_TEST_UNSET"]
            "#,
        )
        .unwrap();
        assert_eq!(config.isolation, Isolation::PerRecord);
        assert_eq!(config.limits.call_timeout, Duration::from_millis(250));
        assert_eq!(config.limits.max_memory_bytes, 128 << 20);
        assert_eq!(config.limits.max_produce_calls, 3);
        assert_eq!(config.env, vec![("REGION".to_owned(), "eu".to_owned())]);
        let topics = config.allowed_topics.unwrap();
        assert!(topics.contains("a") && !topics.contains("c"));
    }

    #[test]
    fn unknown_keys_and_excess_memory_are_errors_naming_the_file() {
        let err = resolve_text("[limits]\ntimeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("h/x.toml") && err.contains("timeout"), "{err}");
        let err = resolve_text("[limits]\nmemory_mib = 4096\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ceiling"), "{err}");
        let err = resolve_text("isolation = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("isolation") || err.contains("sometimes"),
            "{err}"
        );
    }
}
