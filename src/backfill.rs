//! The backfill path: periodic bulk reads of every owned form.
//!
//! A read starts `overlap` before the form's watermark and walks forward in
//! time windows of `window` length, oldest first, following the paging
//! cursors of each window to its end. The leads of consecutive pages are
//! written in one Kafka transaction together with the form's offset, at most
//! [`MAX_BATCH_LEADS`] per transaction, and written after the page that
//! makes them older than [`MAX_BATCH_AGE`]. The watermark moves
//! only when a whole window has been read, to the newest `created_time`
//! among the leads handled in it. A failed read leaves the watermark where
//! it was, so the next read covers the same leads again and the form's
//! deduplication memory keeps them from being written twice.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::BackfillConfig;
use crate::forms::FormHandle;
use crate::graph::{GraphError, PageAuth, TimeFilter};
use crate::kafka::{Batch, DeadLetter, Sink, SinkError};
use crate::lead::{normalise_usual, parse_created_time, Lead, LeadContext, LeadSource};
use crate::metrics::FormLabel;
use crate::offsets::OffsetRecord;
use crate::reader::LeadReader;

/// Smallest page size the read shrinks to after server failures.
const MIN_PAGE_SIZE: u32 = 10;

/// Leads (and dead letters) of one window collected before they are written
/// in one transaction. A transaction (a Kafka round of AddPartitionsToTxn
/// and EndTxn, and the form's offset record) was measured at about as much
/// CPU as 75 leads, so writing several pages at once makes the backfill
/// cheaper per lead (BENCHMARKS.md).
pub const MAX_BATCH_LEADS: usize = 1000;

/// Age after which collected leads are written without waiting for more
/// pages, for windows whose pages come slowly (a Page near its rate
/// limit). It is checked after each page.
pub const MAX_BATCH_AGE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("Graph API: {0}")]
    Graph(#[from] GraphError),
    #[error("Kafka: {0}")]
    Sink(#[from] SinkError),
    #[error("calls for Page `{page_id}` are stopped: {health}")]
    PageStopped {
        page_id: String,
        health: &'static str,
    },
    #[error("one window took {0} pages, the backfill.max_pages_per_window cap; stopping this read (raise the cap or shorten backfill.window)")]
    TooManyPages(usize),
    #[error("shutting down")]
    Cancelled,
}

/// Counts of one read of a form.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadSummary {
    pub pages: usize,
    pub leads_seen: usize,
    pub leads_written: usize,
    pub dead_letters: usize,
}

/// Called with the running totals after each page of a read.
pub type Progress<'a> = &'a (dyn Fn(&ReadSummary) + Send + Sync);

/// One time window of one form's bulk read.
struct Window<'a> {
    form: &'a FormHandle,
    auth: &'a PageAuth,
    filters: &'a [TimeFilter],
    /// Start of the window, Unix seconds.
    start: i64,
}

/// Runs bulk reads for forms.
#[derive(Clone)]
pub struct Backfill {
    pub reader: LeadReader,
    pub sink: Arc<Sink>,
    pub settings: BackfillConfig,
    /// Whether webhooks are expected to bring leads first.
    pub webhooks_enabled: bool,
}

impl Backfill {
    /// Reads every lead of a form from its watermark (less the overlap) up to
    /// now, writing what is new.
    pub async fn read_form(
        &self,
        form: &FormHandle,
        cancel: &CancellationToken,
    ) -> Result<ReadSummary, BackfillError> {
        let auth =
            self.reader
                .pages
                .auth(&form.page_id)
                .map_err(|health| BackfillError::PageStopped {
                    page_id: form.page_id.clone(),
                    health: health.as_str(),
                })?;
        let watermark = form.state.lock().await.watermark();
        let overlap = self.settings.overlap.as_secs() as i64;
        let window = self.settings.window.as_secs() as i64;
        let now = chrono::Utc::now().timestamp();

        let mut window_start = if watermark > 0 {
            (watermark - overlap).max(0)
        } else {
            self.settings.start.0
        };
        let mut summary = ReadSummary::default();
        loop {
            let window_end = window_start.saturating_add(window);
            let open_ended = window_end > now;
            let mut filters = vec![TimeFilter::GreaterThanOrEqual(window_start)];
            if !open_ended {
                filters.push(TimeFilter::LessThan(window_end));
            }

            let target = Window {
                form,
                auth: &auth,
                filters: &filters,
                start: window_start,
            };
            let newest = self.read_window(target, cancel, &mut summary, None).await?;
            self.complete_window(form, newest).await?;

            if open_ended {
                return Ok(summary);
            }
            window_start = window_end;
        }
    }

    /// Reads the leads of a form created from `since` up to `until`
    /// (exclusive; `None` is now), in windows of `backfill.window`, writing
    /// what the form's offset does not know yet. Unlike
    /// [`Backfill::read_form`] it never moves the watermark: the offset
    /// records the ids written, so later reads of the form skip them.
    pub async fn read_range(
        &self,
        form: &FormHandle,
        since: i64,
        until: Option<i64>,
        cancel: &CancellationToken,
        progress: Progress<'_>,
    ) -> Result<ReadSummary, BackfillError> {
        let auth =
            self.reader
                .pages
                .auth(&form.page_id)
                .map_err(|health| BackfillError::PageStopped {
                    page_id: form.page_id.clone(),
                    health: health.as_str(),
                })?;
        let window = self.settings.window.as_secs() as i64;

        let mut window_start = since;
        let mut summary = ReadSummary::default();
        loop {
            let window_end = window_start.saturating_add(window);
            let last_end = match until {
                Some(until) if window_end >= until => Some(until),
                Some(_) => Some(window_end),
                None if window_end > chrono::Utc::now().timestamp() => None,
                None => Some(window_end),
            };
            let mut filters = vec![TimeFilter::GreaterThanOrEqual(window_start)];
            if let Some(end) = last_end {
                filters.push(TimeFilter::LessThan(end));
            }

            let target = Window {
                form,
                auth: &auth,
                filters: &filters,
                start: window_start,
            };
            self.read_window(target, cancel, &mut summary, Some(progress))
                .await?;

            let done = match (last_end, until) {
                (None, _) => true,
                (Some(end), Some(until)) => end >= until,
                (Some(_), None) => false,
            };
            if done {
                return Ok(summary);
            }
            window_start = window_end;
        }
    }

    /// Reads every page of one window; returns the newest `created_time`
    /// among the leads handled.
    async fn read_window(
        &self,
        window: Window<'_>,
        cancel: &CancellationToken,
        summary: &mut ReadSummary,
        progress: Option<Progress<'_>>,
    ) -> Result<Option<i64>, BackfillError> {
        let Window {
            form,
            auth,
            filters,
            start: window_start,
        } = window;
        let mut after: Option<String> = None;
        let mut seen_cursors = HashSet::new();
        let mut newest: Option<i64> = None;
        let mut pages = 0;
        let mut limit = self.reader.graph.page_size();
        let mut pending = PendingBatch::default();

        loop {
            if cancel.is_cancelled() {
                return Err(BackfillError::Cancelled);
            }
            let page = tokio::select! {
                _ = cancel.cancelled() => return Err(BackfillError::Cancelled),
                page = self.reader.graph.form_leads(auth, &form.form_id, filters, after.as_deref(), limit) => page,
            };
            let page = match page {
                Ok(page) => page,
                // Meta's servers fail on pages that are too heavy to build;
                // smaller pages of the same cursor usually go through.
                Err(error) if error.is_server_failure() && limit > MIN_PAGE_SIZE => {
                    limit = (limit / 2).max(MIN_PAGE_SIZE);
                    tracing::warn!(form_id = %form.form_id, limit, error = %error, "bulk read keeps failing on the server; retrying with smaller pages");
                    continue;
                }
                Err(error) => {
                    // The leads read so far are good; write them before giving up.
                    self.flush(form, &mut pending, window_start, summary, progress)
                        .await?;
                    return Err(self.reader.report(&form.page_id, error).into());
                }
            };
            pages += 1;
            summary.pages += 1;
            summary.leads_seen += page.leads.len();

            let page_newest = self
                .collect_page(form, auth, page.leads, &mut pending)
                .await?;
            newest = newest.max(page_newest);
            let last = page.next_cursor.is_none();
            if last || pending.is_full() {
                self.flush(form, &mut pending, window_start, summary, progress)
                    .await?;
            } else if let Some(progress) = progress {
                progress(summary);
            }

            match page.next_cursor {
                None => return Ok(newest),
                Some(cursor) if !seen_cursors.insert(cursor.clone()) => {
                    self.flush(form, &mut pending, window_start, summary, progress)
                        .await?;
                    return Err(GraphError::RepeatedCursor(cursor).into());
                }
                Some(cursor) => after = Some(cursor),
            }
            if pages >= self.settings.max_pages_per_window {
                self.flush(form, &mut pending, window_start, summary, progress)
                    .await?;
                return Err(BackfillError::TooManyPages(pages));
            }
        }
    }

    /// Maps the leads of one page that the form's offset does not know yet
    /// and adds them to `pending`. Returns the newest `created_time` seen on
    /// the page, known leads included.
    async fn collect_page(
        &self,
        form: &FormHandle,
        auth: &PageAuth,
        objects: Vec<Box<RawValue>>,
        pending: &mut PendingBatch,
    ) -> Result<Option<i64>, BackfillError> {
        let context = LeadContext {
            form_id: &form.form_id,
            page_id: &form.page_id,
            source: LeadSource::Backfill,
        };
        // Usual leads are read straight from their text; any other object
        // is parsed and goes through `map_lead`, which re-reads incomplete
        // leads and dead-letters the rest.
        let candidates: Vec<Candidate> = objects
            .iter()
            .map(|raw| match normalise_usual(raw.get(), context) {
                Some(lead) => Ok(Candidate::Mapped(Box::new(lead))),
                None => serde_json::from_str(raw.get())
                    .map(Candidate::Object)
                    .map_err(|error| GraphError::Decode(format!("lead object: {error}"))),
            })
            .collect::<Result<_, _>>()?;
        drop(objects);

        // Leads already handled (read again in the overlap, or on an earlier
        // page of this batch) are skipped before mapping, so a lead that was
        // dead-lettered is not read again.
        let mut newest: Option<i64> = None;
        let fresh: Vec<Candidate> = {
            let state = form.state.lock().await;
            candidates
                .into_iter()
                .filter(|candidate| {
                    let (lead_id, created) = candidate.identity();
                    let known = match (lead_id, created) {
                        (Some(lead_id), Some(created)) => {
                            state.is_known(lead_id, created) || pending.ids.contains(lead_id)
                        }
                        (Some(lead_id), None) => {
                            state.offset().recent.contains_key(lead_id)
                                || pending.ids.contains(lead_id)
                        }
                        _ => false,
                    };
                    if known {
                        newest = newest.max(created);
                    }
                    !known
                })
                .collect()
        };

        for candidate in fresh {
            let mapped = match candidate {
                Candidate::Mapped(lead) => Ok(*lead),
                Candidate::Object(object) => self
                    .reader
                    .map_lead(auth, &object, context)
                    .await
                    .map_err(BackfillError::Graph)?,
            };
            match mapped {
                Ok(lead) => {
                    let created = lead.created_time_secs();
                    newest = newest.max(Some(created));
                    if pending.ids.insert(lead.lead_id.clone()) {
                        pending.leads.push(lead);
                    }
                }
                Err(letter) => {
                    if pending.ids.insert(letter.key.clone()) {
                        pending.dead_letters.push(letter);
                    }
                }
            }
        }
        pending.newest = pending.newest.max(newest);
        pending.started.get_or_insert_with(std::time::Instant::now);
        Ok(newest)
    }

    /// Writes the pending leads that are still new with the form's offset in
    /// one transaction, and empties `pending`.
    async fn flush(
        &self,
        form: &FormHandle,
        pending: &mut PendingBatch,
        window_start: i64,
        summary: &mut ReadSummary,
        progress: Option<Progress<'_>>,
    ) -> Result<(), BackfillError> {
        let PendingBatch {
            mut leads,
            mut dead_letters,
            newest,
            ..
        } = std::mem::take(pending);
        if leads.is_empty() && dead_letters.is_empty() {
            if let Some(progress) = progress {
                progress(summary);
            }
            return Ok(());
        }

        let mut state = form.state.lock().await;
        // The webhook path may have written some of them meanwhile.
        leads.retain(|lead| !state.is_known(&lead.lead_id, lead.created_time_secs()));
        // A dead letter without a usable time is remembered at the newest
        // time of the batch (or the window start), so the overlap of the
        // next read does not send it again.
        let fallback_time = newest.unwrap_or(window_start).max(state.offset().floor);
        dead_letters.retain(|letter| !state.is_known(&letter.key, fallback_time));
        if leads.is_empty() && dead_letters.is_empty() {
            return Ok(());
        }

        let mut handled: Vec<(String, i64)> = leads
            .iter()
            .map(|lead| (lead.lead_id.clone(), lead.created_time_secs()))
            .collect();
        handled.extend(
            dead_letters
                .iter()
                .map(|letter| (letter.key.clone(), fallback_time)),
        );
        let (offset, evicted) = state.next_offset(&handled, None);
        if evicted > 0 {
            tracing::warn!(form_id = %form.form_id, evicted, "deduplication memory is full; the oldest lead ids were dropped");
        }

        let written = self
            .sink
            .commit(Batch {
                leads,
                dead_letters,
                offsets: vec![OffsetRecord::of(&offset)],
                consumer: None,
            })
            .await?;
        state.apply(offset);
        drop(state);
        if self.webhooks_enabled && written.leads > 0 {
            self.reader
                .metrics
                .missed_by_webhook
                .get_or_create(&FormLabel {
                    form_id: form.form_id.clone(),
                })
                .inc_by(written.leads as u64);
        }
        tracing::debug!(form_id = %form.form_id, leads = written.leads, dead_letters = written.dead_letters, "wrote backfill leads");

        summary.leads_written += written.leads;
        summary.dead_letters += written.dead_letters;
        if let Some(progress) = progress {
            progress(summary);
        }
        Ok(())
    }

    /// Records a completed window: the watermark moves to the newest lead
    /// handled in it.
    async fn complete_window(
        &self,
        form: &FormHandle,
        newest: Option<i64>,
    ) -> Result<(), BackfillError> {
        let Some(newest) = newest else { return Ok(()) };
        let mut state = form.state.lock().await;
        let (offset, _) = state.next_offset(&[], Some(newest));
        if &offset == state.offset() {
            return Ok(());
        }

        self.sink
            .commit(Batch {
                offsets: vec![OffsetRecord::of(&offset)],
                ..Batch::default()
            })
            .await?;
        tracing::debug!(form_id = %form.form_id, watermark = offset.watermark, "bulk-read window complete");
        let lag = chrono::Utc::now().timestamp() - offset.watermark;
        self.reader
            .metrics
            .watermark_lag
            .get_or_create(&FormLabel {
                form_id: form.form_id.clone(),
            })
            .set(lag);
        state.apply(offset);
        Ok(())
    }
}

/// A lead of a page before the deduplication check.
enum Candidate {
    /// A usual lead, already mapped.
    Mapped(Box<Lead>),
    /// Any other object, for [`LeadReader::map_lead`].
    Object(Value),
}

impl Candidate {
    /// Returns the lead id and `created_time` in Unix seconds, where readable.
    fn identity(&self) -> (Option<&str>, Option<i64>) {
        match self {
            Candidate::Mapped(lead) => (Some(&lead.lead_id), Some(lead.created_time_secs())),
            Candidate::Object(object) => (
                object.get("id").and_then(Value::as_str),
                object
                    .get("created_time")
                    .and_then(|time| parse_created_time(time).ok())
                    .map(|millis| millis.div_euclid(1000)),
            ),
        }
    }
}

/// Leads of one window read but not written yet.
#[derive(Default)]
struct PendingBatch {
    leads: Vec<Lead>,
    dead_letters: Vec<DeadLetter>,
    /// Ids of `leads` and `dead_letters`, so a lead repeated on a later page
    /// of the batch is not mapped or written twice.
    ids: HashSet<String>,
    newest: Option<i64>,
    /// When the first page of the batch was collected.
    started: Option<std::time::Instant>,
}

impl PendingBatch {
    fn is_full(&self) -> bool {
        self.leads.len() + self.dead_letters.len() >= MAX_BATCH_LEADS
            || self
                .started
                .is_some_and(|started| started.elapsed() >= MAX_BATCH_AGE)
    }
}
