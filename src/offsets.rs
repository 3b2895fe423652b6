//! Per-form offsets: the watermark and the deduplication memory of each
//! form, stored in a compacted Kafka topic keyed by form id.
//!
//! A form's offset record is written in the same Kafka transaction as the
//! lead records it accounts for, so after any crash the stored offset and
//! the leads a `read_committed` consumer sees agree. Two facts make up the
//! offset:
//!
//! - the **watermark**: the `created_time` (Unix seconds) of the newest lead
//!   produced by a completed bulk-read window. It only ever comes from lead
//!   data, never from the wall clock;
//! - the **recent ids**: every lead id produced with `created_time` at or
//!   after the **floor**, which is `watermark - dedup_retention` unless the
//!   memory overflowed. A lead older than the floor counts as already
//!   produced; a newer one is produced unless its id is in the set.
//!
//! The set holds at most `max_recent_ids` ids. Past that the oldest are
//! dropped and the floor rises to the newest dropped time, so memory stays
//! bounded and the rule above stays true for every id still held.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::kafka::{KafkaSetup, SinkError};

/// Version of the offset record layout, stored in every record.
const OFFSET_RECORD_VERSION: u32 = 1;

/// The stored offset of one form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormOffset {
    pub version: u32,
    pub form_id: String,
    pub page_id: String,
    /// Unix seconds; 0 until a bulk-read window completes.
    pub watermark: i64,
    /// Leads older than this (Unix seconds) count as produced.
    pub floor: i64,
    /// Lead id to its `created_time` in Unix seconds.
    pub recent: BTreeMap<String, i64>,
    /// Leads named by webhooks but not read yet, because their Page's
    /// token was not working: lead id to webhook `created_time` (0 when
    /// unknown).
    #[serde(default)]
    pub pending: BTreeMap<String, i64>,
}

impl FormOffset {
    pub fn new(form_id: &str, page_id: &str) -> Self {
        Self {
            version: OFFSET_RECORD_VERSION,
            form_id: form_id.to_owned(),
            page_id: page_id.to_owned(),
            watermark: 0,
            floor: 0,
            recent: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }
}

/// A form offset serialised for the offsets topic: the form id as key and
/// the JSON record as payload. Callers serialise from a borrowed offset, so
/// a transaction never copies a form's whole deduplication memory.
#[derive(Debug, Clone)]
pub struct OffsetRecord {
    pub key: String,
    pub payload: Vec<u8>,
}

impl OffsetRecord {
    pub fn of(offset: &FormOffset) -> Self {
        Self {
            key: offset.form_id.clone(),
            payload: {
                // About 30 bytes per id; sizing up front saves the copies of a
                // growing buffer, which matter for a form with many ids.
                let ids = offset.recent.len() + offset.pending.len();
                let mut payload = Vec::with_capacity(128 + ids * 32);
                serde_json::to_writer(&mut payload, offset)
                    .expect("an offset record always serialises");
                payload
            },
        }
    }
}

/// Result of checking a lead against a form's deduplication memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not written yet.
    New,
    /// Its id is in the recent ids, so it was written.
    Recent,
    /// Its `created_time` is older than the floor. It counts as written,
    /// although its id is no longer remembered and cannot confirm it.
    BelowFloor,
}

/// Limits of a form's deduplication memory.
#[derive(Debug, Clone, Copy)]
pub struct DedupLimits {
    pub retention: Duration,
    pub max_ids: usize,
}

/// The live offset of one form. Whoever holds it (behind its lock) decides
/// what is new and commits the write, so those two steps are atomic.
#[derive(Debug, Clone)]
pub struct FormState {
    offset: FormOffset,
    limits: DedupLimits,
}

impl FormState {
    pub fn new(offset: FormOffset, limits: DedupLimits) -> Self {
        Self { offset, limits }
    }

    pub fn offset(&self) -> &FormOffset {
        &self.offset
    }

    pub fn form_id(&self) -> &str {
        &self.offset.form_id
    }

    pub fn page_id(&self) -> &str {
        &self.offset.page_id
    }

    pub fn watermark(&self) -> i64 {
        self.offset.watermark
    }

    /// Whether a lead was already produced (or dead-lettered).
    pub fn is_known(&self, lead_id: &str, created_secs: i64) -> bool {
        created_secs < self.offset.floor || self.offset.recent.contains_key(lead_id)
    }

    /// Returns whether a lead was written, and by which rule. Without a
    /// `created_time` only the recent ids decide.
    pub fn seen(&self, lead_id: &str, created_secs: Option<i64>) -> Seen {
        if self.offset.recent.contains_key(lead_id) {
            Seen::Recent
        } else if created_secs.is_some_and(|created| created < self.offset.floor) {
            Seen::BelowFloor
        } else {
            Seen::New
        }
    }

    /// The offset after recording `handled` leads (id, created seconds) and,
    /// when a bulk-read window completed, moving the watermark to
    /// `completed_up_to`. `self` is unchanged until [`FormState::apply`].
    pub fn next_offset(
        &self,
        handled: &[(String, i64)],
        completed_up_to: Option<i64>,
    ) -> (FormOffset, usize) {
        let mut next = self.offset.clone();
        for (lead_id, created_secs) in handled {
            if *created_secs >= next.floor {
                next.recent.insert(lead_id.clone(), *created_secs);
            }
        }
        if let Some(newest) = completed_up_to {
            next.watermark = next.watermark.max(newest);
        }

        let retention_floor = next
            .watermark
            .saturating_sub(self.limits.retention.as_secs() as i64);
        next.floor = next.floor.max(retention_floor);
        let evicted = enforce_limits(&mut next, self.limits.max_ids);
        (next, evicted)
    }

    /// Adopts an offset once its transaction has committed.
    pub fn apply(&mut self, offset: FormOffset) {
        self.offset = offset;
    }
}

/// Drops ids under the floor, then the oldest ids beyond `max_ids`, raising
/// the floor past every dropped time. Returns how many were dropped for
/// lack of room.
fn enforce_limits(offset: &mut FormOffset, max_ids: usize) -> usize {
    let floor = offset.floor;
    offset.recent.retain(|_, created| *created >= floor);
    if offset.recent.len() <= max_ids {
        return 0;
    }

    let mut times: Vec<i64> = offset.recent.values().copied().collect();
    times.sort_unstable();
    let excess = offset.recent.len() - max_ids;
    // Drop whole seconds, so the floor rule stays exact for every id kept.
    let new_floor = times[excess - 1] + 1;
    let before = offset.recent.len();
    offset.recent.retain(|_, created| *created >= new_floor);
    offset.floor = offset.floor.max(new_floor);
    before - offset.recent.len()
}

/// Reads the latest committed offset of every form from the offsets topic.
///
/// Right after topic creation the broker may not lead the new partitions
/// yet; Kafka errors are retried for up to `timeout` before they are
/// returned.
pub fn load_offsets(
    setup: &KafkaSetup,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<String, FormOffset>, SinkError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match load_offsets_once(setup, topic, timeout) {
            Err(SinkError::Kafka(error)) if std::time::Instant::now() < deadline => {
                tracing::warn!(topic, error = %error, "offsets topic not readable yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            result => return result,
        }
    }
}

fn load_offsets_once(
    setup: &KafkaSetup,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<String, FormOffset>, SinkError> {
    let consumer: BaseConsumer = setup.consumer_config("offsets-loader").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|entry| entry.name() == topic)
        .flat_map(|entry| entry.partitions().iter().map(|partition| partition.id()))
        .collect();

    let mut assignment = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            remaining.insert(partition, high);
        }
    }

    let mut offsets = HashMap::new();
    if remaining.is_empty() {
        return Ok(offsets);
    }
    consumer.assign(&assignment)?;

    let deadline = std::time::Instant::now() + timeout.max(Duration::from_secs(30));
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(SinkError::Load(format!(
                "timed out reading offsets topic `{topic}`; partitions still unread: {:?}",
                remaining.keys().collect::<Vec<_>>()
            )));
        }
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            // A partition whose last records are transaction markers never
            // delivers a message at high - 1; its position tells instead.
            drop_finished_partitions(&consumer, topic, &mut remaining)?;
            continue;
        };
        let message = result?;
        let partition = message.partition();
        if let (Some(key), payload) = (message.key(), message.payload()) {
            let form_id = String::from_utf8_lossy(key).into_owned();
            match payload {
                Some(bytes) => {
                    let offset: FormOffset = serde_json::from_slice(bytes).map_err(|error| {
                        SinkError::Load(format!(
                            "offset record of form `{form_id}` in `{topic}` is not valid: {error}"
                        ))
                    })?;
                    offsets.insert(form_id, offset);
                }
                None => {
                    offsets.remove(&form_id);
                }
            }
        }
        if let Some(high) = remaining.get(&partition) {
            if message.offset() + 1 >= *high {
                remaining.remove(&partition);
            }
        }
        drop_finished_partitions(&consumer, topic, &mut remaining)?;
    }
    Ok(offsets)
}

fn drop_finished_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    remaining: &mut HashMap<i32, i64>,
) -> Result<(), SinkError> {
    let positions = consumer.position()?;
    for element in positions.elements_for_topic(topic) {
        if let (Offset::Offset(position), Some(high)) =
            (element.offset(), remaining.get(&element.partition()))
        {
            if position >= *high {
                remaining.remove(&element.partition());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max_ids: usize) -> FormState {
        FormState::new(
            FormOffset::new("200", "100"),
            DedupLimits {
                retention: Duration::from_secs(100),
                max_ids,
            },
        )
    }

    fn handled(ids: &[(&str, i64)]) -> Vec<(String, i64)> {
        ids.iter()
            .map(|(id, time)| (id.to_string(), *time))
            .collect()
    }

    #[test]
    fn seen_tells_recent_from_below_floor() {
        let mut form = state(10);
        let (next, _) = form.next_offset(&handled(&[("1", 1000)]), Some(1000));
        form.apply(next);
        assert_eq!(form.offset().floor, 900);

        assert_eq!(form.seen("1", Some(1000)), Seen::Recent);
        assert_eq!(form.seen("1", None), Seen::Recent);
        assert_eq!(form.seen("2", Some(899)), Seen::BelowFloor);
        assert_eq!(form.seen("2", Some(900)), Seen::New);
        assert_eq!(form.seen("2", None), Seen::New);
    }

    #[test]
    fn handled_ids_become_known() {
        let mut form = state(10);

        let (next, _) = form.next_offset(&handled(&[("1", 1000), ("2", 1000)]), None);
        form.apply(next);

        assert!(form.is_known("1", 1000));
        assert!(!form.is_known("3", 1000));
        assert_eq!(form.watermark(), 0);
    }

    #[test]
    fn completed_window_moves_watermark_and_prunes() {
        let mut form = state(10);
        let (next, _) = form.next_offset(&handled(&[("1", 1000)]), None);
        form.apply(next);

        let (next, _) = form.next_offset(&handled(&[("2", 1200)]), Some(1200));
        form.apply(next);

        assert_eq!(form.watermark(), 1200);
        assert_eq!(form.offset().floor, 1100);
        assert!(!form.offset().recent.contains_key("1"));
        assert!(
            form.is_known("1", 1000),
            "below the floor counts as produced"
        );
        assert!(form.is_known("2", 1200));
    }

    #[test]
    fn watermark_never_moves_back() {
        let mut form = state(10);
        let (next, _) = form.next_offset(&[], Some(5000));
        form.apply(next);

        let (next, _) = form.next_offset(&[], Some(4000));

        assert_eq!(next.watermark, 5000);
    }

    #[test]
    fn overflow_drops_oldest_whole_seconds() {
        let form = state(3);

        let (next, evicted) = form.next_offset(
            &handled(&[("1", 10), ("2", 10), ("3", 11), ("4", 12), ("5", 12)]),
            None,
        );

        assert_eq!(evicted, 2);
        assert_eq!(next.floor, 11);
        assert_eq!(next.recent.len(), 3);
        let form = FormState::new(next, form.limits);
        assert!(form.is_known("1", 10));
        assert!(form.is_known("4", 12));
        assert!(!form.is_known("6", 12));
    }

    #[test]
    fn next_offset_leaves_state_unchanged() {
        let form = state(10);

        let _ = form.next_offset(&handled(&[("1", 1000)]), Some(1000));

        assert!(!form.is_known("1", 1000));
    }
}
