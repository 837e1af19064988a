//! What happens to a record that was not handled: retry policies with
//! django-kafka's knobs, and an action per dispatch class.
//!
//! A policy only decides; the consume loop carries the decision out
//! (holding a record for a blocking retry, producing it to a retry or
//! dead-letter topic, or stopping its partition).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// Why a handler call did not succeed; retry policies include or exclude
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The guest returned `retry`.
    Retry,
    /// The guest returned `reject`.
    Reject,
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The instance hit its memory or table limit.
    Memory,
    /// The call exceeded its produce limits.
    Produce,
    /// The call exceeded its store limits (key or value size, writes), or
    /// the store could not be read.
    Store,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Retry => "retry",
            ErrorClass::Reject => "reject",
            ErrorClass::Trap => "trap",
            ErrorClass::Deadline => "deadline",
            ErrorClass::Memory => "memory",
            ErrorClass::Produce => "produce",
            ErrorClass::Store => "store",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with a record of a class: move past it, dead-letter it, or
/// stop its partition before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Skip,
    Dlt,
    Stop,
}

/// A retry policy (django-kafka's `RetrySettings`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; -1 retries for ever.
    pub max_retries: i64,
    /// Wait before the first retry.
    pub delay: Duration,
    /// Double the wait for every further retry: delay·2^(n-1).
    pub backoff: bool,
    /// Classes that are retried.
    pub include: Vec<ErrorClass>,
    /// Classes that are never retried (wins over `include`).
    pub exclude: Vec<ErrorClass>,
    /// Blocking: hold the record and its partition until it succeeds or
    /// gives up. Non-blocking: move it to a retry topic and go on.
    pub blocking: bool,
    /// When retries are exhausted (or the class is not retried).
    pub on_failure: Action,
}

/// The longest wait between two retries, whatever the backoff says.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 0,
            delay: Duration::from_secs(1),
            backoff: false,
            include: vec![
                ErrorClass::Retry,
                ErrorClass::Trap,
                ErrorClass::Deadline,
                ErrorClass::Memory,
                ErrorClass::Produce,
                ErrorClass::Store,
            ],
            exclude: Vec::new(),
            blocking: true,
            on_failure: Action::Stop,
        }
    }
}

impl RetryPolicy {
    /// Whether failures of `class` are retried at all.
    pub fn covers(&self, class: ErrorClass) -> bool {
        self.include.contains(&class) && !self.exclude.contains(&class)
    }

    /// Whether retry number `retry` (1 for the first) is allowed.
    pub fn allows(&self, retry: u32) -> bool {
        self.max_retries < 0 || i64::from(retry) <= self.max_retries
    }

    /// The wait before retry number `retry` (1 for the first).
    pub fn delay_before(&self, retry: u32) -> Duration {
        if !self.backoff {
            return self.delay.min(MAX_DELAY);
        }
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.delay.saturating_mul(factor).min(MAX_DELAY)
    }

    /// Check what cannot work, with a message for the operator.
    pub fn validate(&self) -> Result<(), String> {
        if !self.blocking && self.max_retries < 0 {
            return Err(
                "non-blocking retries need a finite max_retries: every retry has its own topic"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The host-wide policies; handler manifests may override the retry
/// policy and the reject action.
#[derive(Debug, Clone, PartialEq)]
pub struct Policies {
    pub retry: Arc<RetryPolicy>,
    pub on_invalid: Action,
    pub on_unknown_type: Action,
    pub on_unknown_version: Action,
    pub on_reject: Action,
}

impl Default for Policies {
    /// django-logpipe's behaviour: skip what cannot be handled, stop on a
    /// failure.
    fn default() -> Self {
        Policies {
            retry: Arc::new(RetryPolicy::default()),
            on_invalid: Action::Skip,
            on_unknown_type: Action::Skip,
            on_unknown_version: Action::Skip,
            on_reject: Action::Skip,
        }
    }
}

/// Parse a comma-separated list of error classes (for CLI flags).
pub fn parse_classes(text: &str) -> Result<Vec<ErrorClass>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            <ErrorClass as clap::ValueEnum>::from_str(name, true).map_err(|_| {
                format!(
                    "unknown error class {name:?} (expected retry, reject, trap, deadline, memory, produce)"
                )
            })
        })
        .collect()
}

/// A delay in seconds, as django-kafka configures it ("0.5", "30").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let secs: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("expected seconds, got {text:?}"))?;
        Duration::try_from_secs_f64(secs)
            .map(Seconds)
            .map_err(|_| format!("{text:?} is not a usable delay"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_the_delay_per_retry() {
        let policy = RetryPolicy {
            delay: Duration::from_millis(100),
            backoff: true,
            ..RetryPolicy::default()
        };
        let delays: Vec<u128> = (1..=4)
            .map(|n| policy.delay_before(n).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800]);
        assert_eq!(policy.delay_before(200), MAX_DELAY);
    }

    #[test]
    fn retries_are_counted_and_classes_filtered() {
        let policy = RetryPolicy {
            max_retries: 2,
            exclude: vec![ErrorClass::Deadline],
            ..RetryPolicy::default()
        };
        assert!(policy.allows(1) && policy.allows(2) && !policy.allows(3));
        assert!(policy.covers(ErrorClass::Retry) && !policy.covers(ErrorClass::Deadline));
        assert!(
            !policy.covers(ErrorClass::Reject),
            "reject is not retried unless included"
        );
        let forever = RetryPolicy {
            max_retries: -1,
            ..RetryPolicy::default()
        };
        assert!(forever.allows(u32::MAX));
        let bad = RetryPolicy {
            max_retries: -1,
            blocking: false,
            ..RetryPolicy::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(
            parse_classes("retry, trap").unwrap(),
            [ErrorClass::Retry, ErrorClass::Trap]
        );
        assert!(parse_classes("oops").is_err());
    }
}
