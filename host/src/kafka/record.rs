//! A consumed record, as the loop and its workers pass it around: borrowed
//! from a fresh message ([`View`]) or copied to outlive the poll that
//! delivered it ([`OwnedRecord`]: held for a retry, or handed to a worker).

use super::headers::OriginalPosition;

/// A copy of a record that outlives the poll that delivered it.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub original: OriginalPosition,
    pub retries: u32,
}

/// A record being settled, borrowed from a fresh message or a copy.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Where it was read (the retry topic's position for a retry copy).
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub timestamp_ms: Option<i64>,
    pub original: &'a OriginalPosition,
    pub retries: u32,
}

impl View<'_> {
    pub fn to_owned(&self) -> OwnedRecord {
        OwnedRecord {
            offset: self.offset,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
            timestamp_ms: self.timestamp_ms,
            original: self.original.clone(),
            retries: self.retries,
        }
    }
}

impl OwnedRecord {
    pub fn view(&self) -> View<'_> {
        View {
            offset: self.offset,
            key: self.key.as_deref(),
            value: &self.value,
            timestamp_ms: self.timestamp_ms,
            original: &self.original,
            retries: self.retries,
        }
    }
}
