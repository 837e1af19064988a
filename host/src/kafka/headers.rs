//! Headers of records moved to retry and dead-letter topics, and the id
//! header of records handlers produce.
//!
//! django-kafka's names (`RETRY_MESSAGE`, `RETRY_TIMESTAMP`,
//! `DEAD_LETTER_MESSAGE`, `DEAD_LETTER_DETAIL`) so existing tooling reads
//! them, plus the original position and error class.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::dispatch::Failure;

pub const RETRY_MESSAGE: &str = "RETRY_MESSAGE";
/// When the retry is due, in seconds since the Unix epoch.
pub const RETRY_TIMESTAMP: &str = "RETRY_TIMESTAMP";
pub const DEAD_LETTER_MESSAGE: &str = "DEAD_LETTER_MESSAGE";
pub const DEAD_LETTER_DETAIL: &str = "DEAD_LETTER_DETAIL";
pub const ORIGINAL_TOPIC: &str = "LOGPIPE_ORIGINAL_TOPIC";
pub const ORIGINAL_PARTITION: &str = "LOGPIPE_ORIGINAL_PARTITION";
pub const ORIGINAL_OFFSET: &str = "LOGPIPE_ORIGINAL_OFFSET";
pub const ERROR_CLASS: &str = "LOGPIPE_ERROR_CLASS";
/// Retries made before this record was written.
pub const RETRIES: &str = "LOGPIPE_RETRIES";
/// On records handlers produce: `{source}/{partition}/{offset}/{n}`, the
/// same each time the triggering record is handled, for de-duplication.
pub const MESSAGE_ID: &str = "LOGPIPE_MESSAGE_ID";

/// Headers of a record a handler produced.
pub fn produced(id: &str) -> OwnedHeaders {
    with(OwnedHeaders::new(), MESSAGE_ID, id)
}

/// Where a record was first consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

fn with(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value.as_bytes()),
    })
}

fn position(original: &OriginalPosition, failure: &Failure, retries: u32) -> OwnedHeaders {
    let headers = with(OwnedHeaders::new(), ORIGINAL_TOPIC, &original.topic);
    let headers = with(headers, ORIGINAL_PARTITION, &original.partition.to_string());
    let headers = with(headers, ORIGINAL_OFFSET, &original.offset.to_string());
    let headers = with(headers, ERROR_CLASS, failure.class);
    with(headers, RETRIES, &retries.to_string())
}

/// Headers of a record written to retry topic `retries` (1 for the first).
pub fn retry(
    original: &OriginalPosition,
    failure: &Failure,
    retries: u32,
    due: SystemTime,
) -> OwnedHeaders {
    let due = due
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let headers = with(OwnedHeaders::new(), RETRY_MESSAGE, &failure.summary);
    let headers = with(headers, RETRY_TIMESTAMP, &format!("{due:.3}"));
    let mut merged = headers;
    for header in position(original, failure, retries).iter() {
        merged = merged.insert(header);
    }
    merged
}

/// Headers of a record written to its dead-letter topic.
pub fn dead_letter(original: &OriginalPosition, failure: &Failure, retries: u32) -> OwnedHeaders {
    let headers = with(OwnedHeaders::new(), DEAD_LETTER_MESSAGE, &failure.summary);
    let headers = with(headers, DEAD_LETTER_DETAIL, &failure.detail);
    let mut merged = headers;
    for header in position(original, failure, retries).iter() {
        merged = merged.insert(header);
    }
    merged
}

/// What a record read from a retry topic says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryInfo {
    pub original: Option<OriginalPosition>,
    pub due: Option<SystemTime>,
}

fn text<'a, H: Headers>(headers: &'a H, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|h| h.key == key)
        .filter_map(|h| h.value)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .last()
}

/// Read the retry headers; missing or unreadable ones are `None` and the
/// caller falls back (retry now, at the retry topic's own position).
pub fn read_retry<H: Headers>(headers: Option<&H>) -> RetryInfo {
    let Some(headers) = headers else {
        return RetryInfo {
            original: None,
            due: None,
        };
    };
    let original = (|| {
        Some(OriginalPosition {
            topic: text(headers, ORIGINAL_TOPIC)?.to_owned(),
            partition: text(headers, ORIGINAL_PARTITION)?.parse().ok()?,
            offset: text(headers, ORIGINAL_OFFSET)?.parse().ok()?,
        })
    })();
    let due = text(headers, RETRY_TIMESTAMP)
        .and_then(|t| t.parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .map(|since_epoch| UNIX_EPOCH + since_epoch);
    RetryInfo { original, due }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_headers_read_back() {
        let original = OriginalPosition {
            topic: "people".into(),
            partition: 3,
            offset: 42,
        };
        let failure = Failure {
            class: "retry",
            summary: "db down".into(),
            detail: "db down\nmore".into(),
        };
        let due = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let headers = retry(&original, &failure, 2, due);
        let info = read_retry(Some(&headers));
        assert_eq!(info.original, Some(original.clone()));
        assert_eq!(info.due, Some(due));
        assert_eq!(text(&headers, RETRY_MESSAGE), Some("db down"));
        let dlt = dead_letter(&original, &failure, 2);
        assert_eq!(text(&dlt, DEAD_LETTER_DETAIL), Some("db down\nmore"));
        assert_eq!(text(&dlt, ERROR_CLASS), Some("retry"));
        assert_eq!(text(&dlt, RETRIES), Some("2"));
        assert_eq!(read_retry::<OwnedHeaders>(None).due, None);
    }
}
