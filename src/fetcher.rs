//! The webhook path after the receiver: consumes notifications, reads the
//! leads they name in multi-object reads, and writes them exactly once.
//!
//! A batch of notifications is handled in one Kafka transaction that holds
//! the lead records, the offset of every form they touch, and the consumed
//! notification offsets. After a crash the uncommitted notifications are
//! consumed again and the forms' deduplication memory drops the leads that
//! were already written, so a `read_committed` consumer sees each lead once.
//!
//! Lead ids are read 50 at a time with `GET /?ids=...`. Notifications for a
//! Page whose token is not working are kept in the form's offset as pending
//! and read once the Page is healthy again.
//!
//! A consumer with a fatal Kafka error, such as `FencedInstanceId`, consumes
//! nothing more. The fetcher then drops the batch in progress and creates a
//! new consumer, which reads that batch again from the offsets committed
//! with the last transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::forms::{FormHandle, Forms};
use crate::graph::{ErrorClass, GraphError, PageAuth, MAX_IDS_PER_CALL};
use crate::kafka::{Batch, ConsumerPosition, DeadLetter, KafkaSetup, Sink, SinkError};
use crate::lead::{normalise_usual, Lead, LeadContext, LeadSource};
use crate::metrics::{Metrics, PageLabel, SourceForm};
use crate::notification_consumer::{self, fatal_error, ConsumerHealth, NotificationConsumer};
use crate::offsets::{FormOffset, OffsetRecord, Seen};
use crate::reader::{LeadReader, Mapped};
use crate::webhook::Notification;

/// Maximum pause between two attempts at a failing batch, and between two
/// new consumers after fatal errors.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Pause before creating a new consumer after a fatal error. It doubles with
/// each fatal error up to `MAX_RETRY_DELAY`.
const INITIAL_RESTART_DELAY: Duration = Duration::from_secs(1);

/// A consumer that ran this long before its fatal error resets the pause to
/// `INITIAL_RESTART_DELAY`.
const RESTART_DELAY_RESET: Duration = Duration::from_secs(300);

/// Time allowed for closing a consumer that failed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Value of the `client` label of the consumer's restarts.
const CONSUMER_CLIENT: &str = "notification_consumer";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("Graph API: {0}")]
    Graph(#[from] GraphError),
    #[error("Kafka: {0}")]
    Sink(#[from] SinkError),
}

/// Settings of the fetcher.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub batch_size: usize,
    pub linger: Duration,
}

/// Consumes the notifications topic.
pub struct Fetcher {
    setup: KafkaSetup,
    consumer: NotificationConsumer,
    health: Arc<ConsumerHealth>,
    reader: LeadReader,
    sink: Arc<Sink>,
    forms: Arc<Forms>,
    settings: FetchSettings,
    pending_pages: PendingPages,
}

/// Pages whose webhook leads are kept as pending. A Page is logged when it
/// enters the set and when it leaves it, not at every batch.
#[derive(Debug, Default)]
struct PendingPages(std::sync::Mutex<BTreeSet<String>>);

impl PendingPages {
    /// Counts the leads of `parked_page_ids` (one Page id per lead) and logs
    /// each Page that starts or stops keeping leads as pending.
    fn record(
        &self,
        metrics: &Metrics,
        parked_page_ids: &[String],
        is_healthy: impl Fn(&str) -> bool,
    ) {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for page_id in parked_page_ids {
            *counts.entry(page_id.as_str()).or_default() += 1;
        }

        let mut pages = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (page_id, leads) in &counts {
            metrics
                .notifications_kept_pending
                .get_or_create(&PageLabel {
                    page_id: (*page_id).to_owned(),
                })
                .inc_by(*leads);
            if pages.insert((*page_id).to_owned()) {
                tracing::warn!(
                    page_id,
                    leads,
                    "notifications kept as pending until their Page has a working token; later ones are counted in leadgen_notifications_kept_pending_total and not logged until the Page recovers"
                );
            }
        }
        pages.retain(|page_id| {
            if counts.contains_key(page_id.as_str()) || !is_healthy(page_id) {
                return true;
            }
            tracing::info!(
                page_id = page_id.as_str(),
                "Page has a working token again; reading its pending notifications"
            );
            false
        });
    }
}

/// Reason the consume loop returned.
enum Stop {
    Shutdown,
    /// The consumer has this fatal error and must be replaced.
    Fatal(String),
}

/// A lead to read: its id, where it belongs, and its webhook time.
#[derive(Debug, Clone)]
struct Wanted {
    lead_id: String,
    form_id: String,
    page_id: String,
    created_secs: Option<i64>,
}

impl Fetcher {
    pub fn new(
        setup: &KafkaSetup,
        reader: LeadReader,
        sink: Arc<Sink>,
        forms: Arc<Forms>,
        settings: FetchSettings,
    ) -> Result<Self, SinkError> {
        let health = Arc::new(ConsumerHealth::default());
        let consumer = notification_consumer::create(setup, health.clone())?;
        reader.metrics.add_kafka_client(CONSUMER_CLIENT);
        Ok(Self {
            setup: setup.clone(),
            consumer,
            health,
            reader,
            sink,
            forms,
            settings,
            pending_pages: PendingPages::default(),
        })
    }

    /// State of the notification consumer, for `/ready`.
    pub fn health(&self) -> Arc<ConsumerHealth> {
        self.health.clone()
    }

    /// Runs until `shutdown`; a batch in progress is finished first. A
    /// consumer with a fatal error is replaced after a pause.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut restart_delay = INITIAL_RESTART_DELAY;
        let mut consumer_started = Instant::now();
        loop {
            let error = match self.consume(&shutdown).await {
                Stop::Shutdown => return,
                Stop::Fatal(error) => error,
            };
            if consumer_started.elapsed() >= RESTART_DELAY_RESET {
                restart_delay = INITIAL_RESTART_DELAY;
            }
            self.health.set_recovering(error.clone());
            let config = self.setup.config();
            tracing::error!(
                group = %config.consumer_group,
                group_instance_id = %config.transactional_id,
                topic = %config.notifications_topic,
                error = %error,
                retry_in_ms = restart_delay.as_millis() as u64,
                "notification consumer failed with a fatal Kafka error and consumes nothing more; creating a new consumer that resumes from the committed offsets"
            );

            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(restart_delay) => {}
                }
                restart_delay = (restart_delay * 2).min(MAX_RETRY_DELAY);
                match self.replace_consumer().await {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::error!(error = %error, retry_in_ms = restart_delay.as_millis() as u64, "cannot create a new notification consumer; retrying");
                    }
                }
            }
            consumer_started = Instant::now();
        }
    }

    /// Consumes and writes batches until `shutdown` or a fatal consumer
    /// error. A failing batch is retried with growing pauses.
    async fn consume(&self, shutdown: &CancellationToken) -> Stop {
        loop {
            if let Some(error) = fatal_error(&self.consumer) {
                return Stop::Fatal(error);
            }
            let messages = tokio::select! {
                _ = shutdown.cancelled() => return Stop::Shutdown,
                messages = self.next_batch() => messages,
            };
            let messages = match messages {
                Ok(messages) => messages,
                Err(error) => return Stop::Fatal(error),
            };

            let mut delay = Duration::from_millis(500);
            loop {
                match self.handle(&messages).await {
                    Ok(()) => break,
                    Err(error) => {
                        // The batch is dropped with its consumer, because the
                        // broker rejects the offsets of a fenced member. The
                        // new consumer reads these notifications again.
                        if let Some(fatal) = fatal_error(&self.consumer) {
                            tracing::warn!(notifications = messages.len(), error = %error, "notification batch failed and its consumer has a fatal error; dropping the batch");
                            return Stop::Fatal(fatal);
                        }
                        tracing::error!(notifications = messages.len(), error = %error, retry_in_ms = delay.as_millis() as u64, "notification batch failed; retrying it");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Stop::Shutdown,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }

    /// Creates a new consumer in place of the failed one and closes the
    /// failed one.
    async fn replace_consumer(&mut self) -> Result<(), SinkError> {
        let consumer = notification_consumer::create(&self.setup, self.health.clone())?;
        let failed = std::mem::replace(&mut self.consumer, consumer);
        self.reader.metrics.kafka_client_restart(CONSUMER_CLIENT);
        tracing::info!(
            "created a new notification consumer; it resumes from the committed offsets"
        );

        // librdkafka sends no LeaveGroup when a static member closes
        // (KIP-345), so closing the failed consumer after its replacement
        // subscribed does not disturb the new member. Closing blocks.
        let closing = tokio::task::spawn_blocking(move || drop(failed));
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            tracing::warn!(
                timeout_secs = CLOSE_TIMEOUT.as_secs(),
                "the failed notification consumer did not close in time; it closes in the background"
            );
        }
        Ok(())
    }

    /// Waits up to a second for a first notification, then gathers more for
    /// up to `linger`. An empty batch still lets pending work run. Returns
    /// the consumer's fatal error instead when it has one, and drops the
    /// notifications gathered so far, because they cannot be committed.
    async fn next_batch(&self) -> Result<Vec<OwnedMessage>, String> {
        let mut messages = Vec::new();
        match tokio::time::timeout(Duration::from_secs(1), self.consumer.recv()).await {
            Ok(Ok(message)) => messages.push(message.detach()),
            Ok(Err(error)) => {
                self.check_consumer_error(error)?;
                return Ok(messages);
            }
            Err(_) => return Ok(messages),
        }

        let deadline = tokio::time::Instant::now() + self.settings.linger;
        while messages.len() < self.settings.batch_size {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => messages.push(message.detach()),
                Ok(Err(error)) => {
                    self.check_consumer_error(error)?;
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(messages)
    }

    /// Logs a consumer error that the consumer recovers from, or returns
    /// the fatal error when the consumer cannot consume any more.
    fn check_consumer_error(&self, error: KafkaError) -> Result<(), String> {
        if let Some(fatal) = fatal_error(&self.consumer) {
            return Err(fatal);
        }
        if let KafkaError::MessageConsumptionFatal(_) = error {
            return Err(error.to_string());
        }
        tracing::warn!(error = %error, "notification consumer error");
        Ok(())
    }

    /// Reads and writes the leads of one batch, plus any pending leads of
    /// Pages that are healthy again, in one transaction.
    async fn handle(&self, messages: &[OwnedMessage]) -> Result<(), FetchError> {
        let mut dead_letters = Vec::new();
        let mut wanted = Vec::new();
        for message in messages {
            match parse_notification(message) {
                Ok(notification) => wanted.push(Wanted {
                    lead_id: notification.leadgen_id,
                    form_id: notification.form_id,
                    page_id: notification.page_id,
                    created_secs: notification.created_time,
                }),
                Err(letter) => dead_letters.push(*letter),
            }
        }
        wanted.retain(|item| {
            let owned = self.forms.contains(&item.form_id);
            if !owned {
                tracing::debug!(form_id = %item.form_id, page_id = %item.page_id, "notification for a form this instance does not read");
            }
            owned
        });
        wanted.extend(self.pending_of_healthy_pages().await);
        let wanted = self.drop_known(wanted).await;

        // Read what can be read; park what belongs to stopped Pages.
        let mut parked: Vec<Wanted> = Vec::new();
        let mut mapped: Vec<(Wanted, Mapped)> = Vec::new();
        let mut by_page: BTreeMap<String, Vec<Wanted>> = BTreeMap::new();
        for item in wanted {
            by_page.entry(item.page_id.clone()).or_default().push(item);
        }
        for (page_id, items) in by_page {
            let auth = match self.reader.pages.auth(&page_id) {
                Ok(auth) => auth,
                Err(_) => {
                    parked.extend(items);
                    continue;
                }
            };
            match self.read_page_leads(&auth, &items).await {
                Ok(results) => mapped.extend(results),
                Err(error)
                    if matches!(error.class(), ErrorClass::Token | ErrorClass::Permission) =>
                {
                    parked.extend(items);
                }
                Err(error) => return Err(error.into()),
            }
        }

        let parked_page_ids: Vec<String> = parked.iter().map(|item| item.page_id.clone()).collect();
        self.commit(messages, mapped, parked, dead_letters).await?;
        self.pending_pages
            .record(&self.reader.metrics, &parked_page_ids, |page_id| {
                self.reader.pages.auth(page_id).is_ok()
            });
        Ok(())
    }

    /// Pending leads of forms whose Page has a working token again.
    async fn pending_of_healthy_pages(&self) -> Vec<Wanted> {
        let mut wanted = Vec::new();
        for form in self.forms.all() {
            if self.reader.pages.auth(&form.page_id).is_err() {
                continue;
            }
            let state = form.state.lock().await;
            wanted.extend(
                state
                    .offset()
                    .pending
                    .iter()
                    .map(|(lead_id, created)| Wanted {
                        lead_id: lead_id.clone(),
                        form_id: form.form_id.clone(),
                        page_id: form.page_id.clone(),
                        created_secs: Some(*created).filter(|created| *created > 0),
                    }),
            );
        }
        wanted
    }

    /// Drops leads already written and repeated ids, before any Graph call.
    async fn drop_known(&self, wanted: Vec<Wanted>) -> Vec<Wanted> {
        let mut seen = BTreeSet::new();
        let mut fresh = Vec::with_capacity(wanted.len());
        for item in wanted {
            if !seen.insert(item.lead_id.clone()) {
                continue;
            }
            let Some(form) = self.forms.get(&item.form_id) else {
                continue;
            };
            let (seen, floor) = {
                let state = form.state.lock().await;
                (
                    state.seen(&item.lead_id, item.created_secs),
                    state.offset().floor,
                )
            };
            if seen == Seen::New {
                fresh.push(item);
            } else {
                let created = item.created_secs.unwrap_or_default();
                record_skip(
                    &self.reader.metrics,
                    seen,
                    &item.form_id,
                    &item.lead_id,
                    created,
                    floor,
                );
            }
        }
        fresh
    }

    /// Reads the leads of one Page, 50 ids per call. A call that fails for
    /// one bad id falls back to reading its ids one by one.
    async fn read_page_leads(
        &self,
        auth: &PageAuth,
        items: &[Wanted],
    ) -> Result<Vec<(Wanted, Mapped)>, GraphError> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_IDS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|item| item.lead_id.clone()).collect();
            let objects = match self.reader.graph.leads_by_ids(auth, &ids).await {
                Ok(objects) => Some(objects),
                Err(error)
                    if matches!(error.class(), ErrorClass::NotFound | ErrorClass::Invalid) =>
                {
                    tracing::warn!(page_id = %auth.page_id, ids = ids.len(), error = %error, "multi-object read failed; reading the leads one by one");
                    None
                }
                Err(error) => return Err(self.reader.report(&auth.page_id, error)),
            };

            for item in chunk {
                let context = LeadContext {
                    form_id: &item.form_id,
                    page_id: &item.page_id,
                    source: LeadSource::Webhook,
                };
                let object = objects
                    .as_ref()
                    .and_then(|objects| objects.get(&item.lead_id));
                // A usual lead is read straight from its text; any other
                // object goes through `map_lead`, which re-reads incomplete
                // leads and dead-letters the rest.
                let result = match object {
                    Some(raw) => match normalise_usual(raw.get(), context) {
                        Some(lead) => Ok(lead),
                        None => {
                            let object: serde_json::Value = serde_json::from_str(raw.get())
                                .map_err(|error| {
                                    GraphError::Decode(format!("lead object: {error}"))
                                })?;
                            self.reader.map_lead(auth, &object, context).await?
                        }
                    },
                    None => self.reader.read_lead(auth, &item.lead_id, context).await?,
                };
                results.push((item.clone(), result));
            }
        }
        Ok(results)
    }

    /// Writes one transaction: leads, dead letters, form offsets (with
    /// pending changes) and the consumed notification offsets.
    async fn commit(
        &self,
        messages: &[OwnedMessage],
        mapped: Vec<(Wanted, Mapped)>,
        parked: Vec<Wanted>,
        mut dead_letters: Vec<DeadLetter>,
    ) -> Result<(), FetchError> {
        // Lock every touched form, in form id order, until the commit ends.
        let mut form_ids: BTreeSet<String> = mapped
            .iter()
            .map(|(item, _)| item.form_id.clone())
            .collect();
        form_ids.extend(parked.iter().map(|item| item.form_id.clone()));
        let handles: Vec<Arc<FormHandle>> = form_ids
            .iter()
            .filter_map(|form_id| self.forms.get(form_id))
            .collect();
        let mut states = Vec::with_capacity(handles.len());
        for handle in &handles {
            states.push(handle.state.lock().await);
        }
        let index: HashMap<&str, usize> = handles
            .iter()
            .enumerate()
            .map(|(position, handle)| (handle.form_id.as_str(), position))
            .collect();

        let mut leads: Vec<Lead> = Vec::new();
        let mut handled: Vec<Vec<(String, i64)>> = vec![Vec::new(); handles.len()];
        let mut resolved: Vec<Vec<String>> = vec![Vec::new(); handles.len()];
        for (item, result) in mapped {
            let position = index[item.form_id.as_str()];
            resolved[position].push(item.lead_id.clone());
            match result {
                Ok(lead) => {
                    let created = lead.created_time_secs();
                    let seen = states[position].seen(&lead.lead_id, Some(created));
                    if seen != Seen::New {
                        let floor = states[position].offset().floor;
                        record_skip(
                            &self.reader.metrics,
                            seen,
                            &item.form_id,
                            &lead.lead_id,
                            created,
                            floor,
                        );
                        continue;
                    }
                    handled[position].push((lead.lead_id.clone(), created));
                    leads.push(lead);
                }
                Err(letter) => {
                    if states[position].offset().recent.contains_key(&letter.key) {
                        continue;
                    }
                    let created = item
                        .created_secs
                        .unwrap_or_else(|| states[position].watermark());
                    handled[position].push((letter.key.clone(), created));
                    dead_letters.push(letter);
                }
            }
        }

        let mut offsets: Vec<FormOffset> = Vec::new();
        for (position, state) in states.iter().enumerate() {
            let (mut offset, _) = state.next_offset(&handled[position], None);
            for lead_id in &resolved[position] {
                offset.pending.remove(lead_id);
            }
            for item in parked
                .iter()
                .filter(|item| item.form_id == handles[position].form_id)
            {
                offset
                    .pending
                    .insert(item.lead_id.clone(), item.created_secs.unwrap_or(0));
            }
            if &offset != state.offset() {
                offsets.push(offset);
            }
        }
        let consumer = self.consumer_position(messages)?;
        if leads.is_empty() && dead_letters.is_empty() && offsets.is_empty() && consumer.is_none() {
            return Ok(());
        }
        let lead_count = leads.len();
        self.sink
            .commit(Batch {
                leads,
                dead_letters,
                offsets: offsets.iter().map(OffsetRecord::of).collect(),
                consumer,
            })
            .await?;

        for offset in offsets {
            let position = index[offset.form_id.as_str()];
            states[position].apply(offset);
        }
        if lead_count > 0 || !messages.is_empty() {
            tracing::debug!(
                notifications = messages.len(),
                leads = lead_count,
                "wrote webhook batch"
            );
        }
        Ok(())
    }

    /// Next offsets to consume for every partition in the batch, with the
    /// group metadata that fences stale instances. The metadata is that of
    /// the consumer that delivered the batch, because a batch never outlives
    /// its consumer.
    fn consumer_position(
        &self,
        messages: &[OwnedMessage],
    ) -> Result<Option<ConsumerPosition>, SinkError> {
        if messages.is_empty() {
            return Ok(None);
        }
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in messages {
            let entry = next
                .entry((message.topic().to_owned(), message.partition()))
                .or_insert(0);
            *entry = (*entry).max(message.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        }
        let group = self.consumer.group_metadata().ok_or_else(|| {
            SinkError::Transaction("the notification consumer has no group metadata".to_owned())
        })?;
        Ok(Some(ConsumerPosition { offsets, group }))
    }
}

/// Counts a webhook lead skipped as already written. A lead older than the
/// floor is also logged, because its id is no longer remembered and the
/// skip may drop a lead that never reached the leads topic.
fn record_skip(
    metrics: &Metrics,
    seen: Seen,
    form_id: &str,
    lead_id: &str,
    created_secs: i64,
    floor: i64,
) {
    let labels = SourceForm {
        source: LeadSource::Webhook.as_str().to_owned(),
        form_id: form_id.to_owned(),
    };
    match seen {
        Seen::New => return,
        Seen::Recent => {}
        Seen::BelowFloor => {
            metrics.below_floor_skipped.get_or_create(&labels).inc();
            tracing::warn!(
                form_id,
                lead_id,
                created_time = created_secs,
                floor,
                "skipped a webhook lead older than its form's deduplication floor, so it counts as already written; if it never reached the leads topic, raise backfill.dedup_retention or backfill.max_recent_ids"
            );
        }
    }
    metrics.duplicates_skipped.get_or_create(&labels).inc();
}

/// Reads a notification record; one that cannot be read is a dead letter.
fn parse_notification(message: &OwnedMessage) -> Result<Notification, Box<DeadLetter>> {
    let payload = message.payload().unwrap_or_default();
    serde_json::from_slice(payload).map_err(|error| {
        let form_id = message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default();
        Box::new(DeadLetter {
            key: form_id.clone(),
            payload: payload.to_vec(),
            reason: "invalid_notification".to_owned(),
            detail: format!(
                "notification record at offset {} is not valid: {error}",
                message.offset()
            ),
            graph_error: None,
            form_id,
            page_id: String::new(),
            source: LeadSource::Webhook,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::capture_logs;

    fn labels(form_id: &str) -> SourceForm {
        SourceForm {
            source: LeadSource::Webhook.as_str().to_owned(),
            form_id: form_id.to_owned(),
        }
    }

    /// Returns the below-floor and duplicate skip counts of one form.
    fn skip_counts(metrics: &Metrics, form_id: &str) -> (u64, u64) {
        let labels = labels(form_id);
        (
            metrics.below_floor_skipped.get_or_create(&labels).get(),
            metrics.duplicates_skipped.get_or_create(&labels).get(),
        )
    }

    #[test]
    fn below_floor_skip_is_logged_and_counted() {
        let metrics = Metrics::new();
        let (_guard, logs) = capture_logs();

        record_skip(&metrics, Seen::BelowFloor, "200", "9001", 899, 900);

        let text = logs.text();
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("deduplication floor"), "{text}");
        assert!(text.contains("form_id=\"200\""), "{text}");
        assert!(text.contains("lead_id=\"9001\""), "{text}");
        assert!(text.contains("floor=900"), "{text}");
        let (below_floor, duplicates) = skip_counts(&metrics, "200");
        assert_eq!(below_floor, 1);
        assert_eq!(duplicates, 1);
    }

    #[test]
    fn pending_page_is_logged_per_state_change() {
        let metrics = Metrics::new();
        let pending = PendingPages::default();
        let parked = vec!["100".to_owned(), "100".to_owned()];
        let (_guard, logs) = capture_logs();

        for _ in 0..3 {
            pending.record(&metrics, &parked, |_| false);
        }
        pending.record(&metrics, &[], |_| false);
        let while_down = logs.text();
        pending.record(&metrics, &[], |_| true);
        pending.record(&metrics, &[], |_| true);
        pending.record(&metrics, &parked, |_| false);

        let text = logs.text();
        assert_eq!(
            while_down.matches("kept as pending").count(),
            1,
            "{while_down}"
        );
        assert_eq!(text.matches("working token again").count(), 1, "{text}");
        assert_eq!(text.matches("kept as pending").count(), 2, "{text}");
        let label = PageLabel {
            page_id: "100".to_owned(),
        };
        assert_eq!(
            metrics
                .notifications_kept_pending
                .get_or_create(&label)
                .get(),
            8
        );
    }

    #[test]
    fn recent_skip_is_counted_quietly() {
        let metrics = Metrics::new();
        let (_guard, logs) = capture_logs();

        record_skip(&metrics, Seen::Recent, "200", "9001", 1000, 900);
        record_skip(&metrics, Seen::New, "200", "9002", 1000, 900);

        assert_eq!(logs.text(), "");
        let (below_floor, duplicates) = skip_counts(&metrics, "200");
        assert_eq!(below_floor, 0);
        assert_eq!(duplicates, 1);
    }
}
