//! The Kinesis client: AWS's standard region and credential chain, an
//! optional endpoint for local servers, and how each failure is treated.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::Region;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// Where the streams are.
#[derive(Debug, Clone, Default)]
pub struct KinesisSettings {
    /// Region; `None` takes it from the AWS chain (`AWS_REGION`, profile...).
    pub region: Option<String>,
    /// Endpoint of a local server (kinesalite, moto); `None` for AWS.
    pub endpoint: Option<String>,
}

/// A connected client and the region it resolved (part of the offsets key).
#[derive(Clone)]
pub struct KinesisClient {
    pub client: Client,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no AWS region for Kinesis: pass --kinesis-region (LOGPIPE_KINESIS_REGION) or set AWS_REGION"
    )]
    NoRegion,
}

impl KinesisClient {
    /// Resolve region and credentials. The SDK's own retries are off: every
    /// caller retries throttling and transient errors itself, for ever and
    /// with jitter, and needs to see each failure to do so.
    pub async fn connect(settings: &KinesisSettings) -> Result<Self, ConnectError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let config = loader.load().await;
        let region = config
            .region()
            .map(|r| r.as_ref().to_owned())
            .ok_or(ConnectError::NoRegion)?;
        Ok(KinesisClient {
            client: Client::new(&config),
            region,
        })
    }
}

/// How a failed call is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The stream's or account's limits: back off, then try again.
    Throttled,
    /// Network, timeout or server error: back off, then try again.
    Transient,
    /// The shard iterator is older than five minutes: get a new one.
    ExpiredIterator,
    /// The stream or shard does not exist.
    NotFound,
    /// Anything else (bad credentials, invalid argument): retrying will not
    /// help.
    Fatal,
}

/// Sort an SDK failure into a [`Trouble`].
pub fn classify<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Trouble {
    match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Trouble::Transient,
        // The network is worth retrying; missing credentials are not. A
        // server that dies mid-request can surface as an "other" connector
        // error (a connection closed before the answer), not only as I/O.
        SdkError::DispatchFailure(failure) => match failure.as_connector_error() {
            Some(connector)
                if connector.is_io() || connector.is_timeout() || connector.is_other() =>
            {
                Trouble::Transient
            }
            _ => Trouble::Fatal,
        },
        SdkError::ServiceError(service) => match service.err().code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "KMSThrottlingException"
                | "ThrottlingException",
            ) => Trouble::Throttled,
            Some("ExpiredIteratorException") => Trouble::ExpiredIterator,
            Some("ResourceNotFoundException") => Trouble::NotFound,
            Some("InternalFailureException" | "InternalFailure" | "ServiceUnavailable") => {
                Trouble::Transient
            }
            _ if service.raw().status().is_server_error() => Trouble::Transient,
            _ => Trouble::Fatal,
        },
        _ => Trouble::Fatal,
    }
}

/// An SDK failure as one line: the service's error code and message, or
/// the transport failure with its causes.
pub fn describe<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!(
                "{} (HTTP {}): {}",
                err.code().unwrap_or("unknown error"),
                service.raw().status().as_u16(),
                err.message().unwrap_or_default()
            )
        }
        other => {
            // The error and its causes, without their debug dumps.
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(error) = cause {
                text.push_str(": ");
                text.push_str(&error.to_string());
                cause = error.source();
            }
            text
        }
    }
}

/// Exponential back-off with full jitter, capped: 50 ms, 100 ms, ... 5 s.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(50);
    const CAP: Duration = Duration::from_secs(5);

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Self::BASE
            .saturating_mul(1 << self.attempt.min(10))
            .min(Self::CAP);
        self.attempt = self.attempt.saturating_add(1);
        // Full jitter: callers that were throttled together do not come
        // back together.
        ceiling.mul_f64(jitter())
    }

    pub fn failures(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A number in [0.1, 1), different on every call.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    0.1 + 0.9 * (bits % 1_000_000) as f64 / 1_000_000.0
}

/// A random partition key, for records that have none.
pub fn random_partition_key() -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    let high = state.hash_one(std::time::SystemTime::now());
    let low = state.hash_one(std::thread::current().id());
    format!("{high:016x}{low:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        for attempt in 0..20u32 {
            let delay = backoff.next_delay();
            let ceiling = Backoff::BASE
                .saturating_mul(1 << attempt.min(10))
                .min(Backoff::CAP);
            assert!(
                delay <= ceiling && delay >= ceiling.mul_f64(0.1),
                "{delay:?}"
            );
        }
        assert_eq!(backoff.failures(), 20);
        backoff.reset();
        assert!(backoff.next_delay() <= Backoff::BASE);
    }

    #[test]
    fn random_partition_keys_differ() {
        assert_ne!(random_partition_key(), random_partition_key());
        assert_eq!(random_partition_key().len(), 32);
    }
}
