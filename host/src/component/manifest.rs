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
//! [store]                         # the key-value store (wit `store`)
//! namespace = "people"            # default: the component's name; handlers
//!                                 # with the same namespace share keys
//! max_key_bytes = 1024
//! max_value_bytes = 1048576
//! max_writes = 1000               # put/delete calls per handle call
//!
//! [env]                           # environment variables the guest sees
//! REGION = "eu-west-1"
//! pass_env = ["TZ"]               # ...and these, copied from the host's environment
//!
//! on_reject = "skip"              # or "dlt", "stop"
//!
//! [retry]                         # overrides the host's retry policy
//! max_retries = 3                 # -1: for ever (blocking only)
//! delay = 0.5                     # seconds before the first retry
//! backoff = true                  # delay·2^(n-1)
//! include = ["retry", "deadline"] # error classes retried
//! exclude = []
//! blocking = true                 # false: retry topics
//! on_failure = "dlt"              # when retries are exhausted: skip, dlt or stop
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::engine::MAX_HANDLER_MEMORY;
use super::limits::GuestLimits;
use crate::policy::{Action, ErrorClass, Policies, RetryPolicy, Seconds};

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
    pub store: StoreGrant,
    #[serde(default)]
    pub env: EnvGrant,
    pub on_reject: Option<Action>,
    #[serde(default)]
    pub retry: RetryOverrides,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    pub max_retries: Option<i64>,
    /// Seconds.
    pub delay: Option<f64>,
    pub backoff: Option<bool>,
    pub include: Option<Vec<ErrorClass>>,
    pub exclude: Option<Vec<ErrorClass>>,
    pub blocking: Option<bool>,
    pub on_failure: Option<Action>,
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
pub struct StoreGrant {
    pub namespace: Option<String>,
    pub max_key_bytes: Option<usize>,
    pub max_value_bytes: Option<usize>,
    pub max_writes: Option<u32>,
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

/// The host's settings for handlers without a manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandlerDefaults {
    pub limits: GuestLimits,
    pub policies: Policies,
}

/// What a handler may do, how far it may go and what happens when it fails,
/// resolved from the host's defaults and its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerConfig {
    pub limits: GuestLimits,
    /// `None`: any topic.
    pub allowed_topics: Option<Arc<HashSet<String>>>,
    pub env: Vec<(String, String)>,
    /// Store namespace; `None`: the handler's own name.
    pub store_namespace: Option<Arc<str>>,
    pub isolation: Isolation,
    pub retry: Arc<RetryPolicy>,
    pub on_reject: Action,
}

impl HandlerConfig {
    pub fn defaults(defaults: &HandlerDefaults) -> Self {
        HandlerConfig {
            limits: defaults.limits,
            allowed_topics: None,
            env: Vec::new(),
            store_namespace: None,
            isolation: Isolation::Instance,
            retry: defaults.policies.retry.clone(),
            on_reject: defaults.policies.on_reject,
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
    defaults: &HandlerDefaults,
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
    let mut limits = defaults.limits;
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
    let store = &manifest.store;
    if let Some(bytes) = store.max_key_bytes {
        limits.max_store_key_bytes = bytes;
    }
    if let Some(bytes) = store.max_value_bytes {
        limits.max_store_value_bytes = bytes;
    }
    if let Some(writes) = store.max_writes {
        limits.max_store_writes = writes;
    }
    if store.namespace.as_deref() == Some("") {
        return Err(invalid("store.namespace must not be empty".into()));
    }
    let mut env: Vec<(String, String)> = manifest.env.vars.into_iter().collect();
    for name in manifest.env.pass_env {
        if let Ok(value) = std::env::var(&name) {
            env.push((name, value));
        }
    }
    let retry = retry_policy(&defaults.policies.retry, &manifest.retry).map_err(invalid)?;
    Ok(HandlerConfig {
        limits,
        allowed_topics: manifest
            .produce
            .topics
            .map(|topics| Arc::new(topics.into_iter().collect())),
        env,
        store_namespace: manifest.store.namespace.map(Arc::from),
        isolation: manifest.isolation,
        retry,
        on_reject: manifest.on_reject.unwrap_or(defaults.policies.on_reject),
    })
}

/// The host's retry policy with a manifest's `[retry]` overrides.
fn retry_policy(
    host: &Arc<RetryPolicy>,
    overrides: &RetryOverrides,
) -> Result<Arc<RetryPolicy>, String> {
    let RetryOverrides {
        max_retries,
        delay,
        backoff,
        include,
        exclude,
        blocking,
        on_failure,
    } = overrides;
    let untouched = max_retries.is_none()
        && delay.is_none()
        && backoff.is_none()
        && include.is_none()
        && exclude.is_none()
        && blocking.is_none()
        && on_failure.is_none();
    if untouched {
        return Ok(host.clone());
    }
    let mut policy = RetryPolicy::clone(host);
    if let Some(n) = max_retries {
        policy.max_retries = *n;
    }
    if let Some(secs) = delay {
        policy.delay = secs.to_string().parse::<Seconds>()?.0;
    }
    if let Some(b) = backoff {
        policy.backoff = *b;
    }
    if let Some(classes) = include {
        policy.include = classes.clone();
    }
    if let Some(classes) = exclude {
        policy.exclude = classes.clone();
    }
    if let Some(b) = blocking {
        policy.blocking = *b;
    }
    if let Some(action) = on_failure {
        policy.on_failure = *action;
    }
    policy.validate().map_err(|e| format!("[retry]: {e}"))?;
    Ok(Arc::new(policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_text(text: &str) -> Result<HandlerConfig, ManifestError> {
        resolve(
            &HandlerDefaults::default(),
            Path::new("h/x.wasm"),
            Some(text),
        )
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
    fn retry_section_overrides_the_host_policy() {
        let config = resolve_text(
            "on_reject = \"dlt\"\n[retry]\nmax_retries = 3\ndelay = 0.25\nblocking = false\non_failure = \"dlt\"\ninclude = [\"retry\", \"reject\"]\n",
        )
        .unwrap();
        assert_eq!(config.on_reject, Action::Dlt);
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.retry.delay, Duration::from_millis(250));
        assert!(!config.retry.blocking);
        assert_eq!(config.retry.on_failure, Action::Dlt);
        assert!(config.retry.covers(ErrorClass::Reject));
        let err = resolve_text("[retry]\nmax_retries = -1\nblocking = false\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("finite max_retries"), "{err}");
        let untouched = resolve_text("isolation = \"instance\"\n").unwrap();
        assert_eq!(*untouched.retry, RetryPolicy::default());
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
