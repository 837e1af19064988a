//! The outbox relay for Kafka: publishes the rows [`crate::outbox`] stored.
//!
//! Publish rule: an outbox row is deleted only once the broker has
//! acknowledged it. A crash between the acknowledgement and the delete
//! publishes the row once more at the next start, with the same
//! `LOGPIPE_MESSAGE_ID` header; nothing else is ever published twice.

use std::collections::VecDeque;

use rdkafka::error::KafkaError;

use super::headers;
use super::producer::{DeliveryError, KafkaSink};
use crate::offsets::OutboxRow;

/// Publishes committed outbox rows and tells which are acknowledged.
#[derive(Default)]
pub struct Relay {
    /// (producer batch, last row id in it, rows in it), oldest first.
    in_flight: VecDeque<(u64, i64, usize)>,
    rows: usize,
    /// Rows up to this id are acknowledged but not yet deleted.
    acknowledged: Option<i64>,
}

impl Relay {
    /// Queue `rows` (in id order) on the producer.
    pub fn publish(&mut self, sink: &KafkaSink, rows: Vec<OutboxRow>) -> Result<(), KafkaError> {
        let Some(last) = rows.last().map(|row| row.id) else {
            return Ok(());
        };
        let count = rows.len();
        for row in rows {
            let record = row.record;
            sink.enqueue_with_headers(
                &record.topic,
                record.key.as_deref().map(str::as_bytes),
                &record.payload,
                Some(headers::produced(&record.id)),
            )?;
        }
        self.in_flight.push_back((sink.seal(), last, count));
        self.rows += count;
        Ok(())
    }

    /// Note what the broker has acknowledged since the last call.
    pub fn poll(&mut self, sink: &KafkaSink) -> Result<(), DeliveryError> {
        while let Some(&(batch, last, count)) = self.in_flight.front() {
            if !sink.is_acknowledged(batch)? {
                break;
            }
            self.in_flight.pop_front();
            self.rows -= count;
            self.acknowledged = Some(last);
        }
        Ok(())
    }

    /// Whether acknowledged rows wait to be deleted.
    pub fn has_acknowledged(&self) -> bool {
        self.acknowledged.is_some()
    }

    /// The id up to which rows are acknowledged and may be deleted; the
    /// caller deletes them.
    pub fn take_acknowledged(&mut self) -> Option<i64> {
        self.acknowledged.take()
    }

    /// Rows published and not yet acknowledged.
    pub fn in_flight_rows(&self) -> usize {
        self.rows
    }
}
