//! The backfill path: periodic bulk reads of every owned form.
//!
//! A read starts `overlap` before the form's watermark and walks forward in
//! time windows of `window` length, oldest first, following the paging
//! cursors of each window to its end. Each page is written in one Kafka
//! transaction together with the form's offset, and the watermark moves
//! only when a whole window has been read, to the newest `created_time`
//! among the leads handled in it. A failed read leaves the watermark where
//! it was, so the next read covers the same leads again and the form's
//! deduplication memory keeps them from being written twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::BackfillConfig;
use crate::forms::{FormHandle, PageHealth, Pages};
use crate::graph::{ErrorClass, GraphClient, GraphError, PageAuth, TimeFilter};
use crate::kafka::{Batch, DeadLetter, Sink, SinkError};
use crate::lead::{normalise, parse_created_time, Lead, LeadContext, LeadError, LeadSource};

/// Reads of one lead that came back without its fields before the lead is
/// dead-lettered.
const MAX_LEAD_REREADS: u32 = 3;

/// Pages read in one window before the read stops with an error. At 100
/// leads a page this is a million leads in one window.
const MAX_PAGES_PER_WINDOW: usize = 10_000;

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
    #[error("window read more than {MAX_PAGES_PER_WINDOW} pages; stopping this read")]
    TooManyPages,
    #[error("shutting down")]
    Cancelled,
}

/// What one read of a form did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadSummary {
    pub pages: usize,
    pub leads_seen: usize,
    pub leads_written: usize,
    pub dead_letters: usize,
}

/// Runs bulk reads for forms.
#[derive(Clone)]
pub struct Backfill {
    pub graph: GraphClient,
    pub sink: Arc<Sink>,
    pub pages: Arc<Pages>,
    pub settings: BackfillConfig,
}

impl Backfill {
    /// Reads every lead of a form from its watermark (less the overlap) up to
    /// now, writing what is new.
    pub async fn read_form(
        &self,
        form: &FormHandle,
        cancel: &CancellationToken,
    ) -> Result<ReadSummary, BackfillError> {
        let auth = self
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

            let newest = self
                .read_window(form, &auth, &filters, window_start, cancel, &mut summary)
                .await?;
            self.complete_window(form, newest).await?;

            if open_ended {
                return Ok(summary);
            }
            window_start = window_end;
        }
    }

    /// Reads every page of one window; returns the newest `created_time`
    /// among the leads handled.
    async fn read_window(
        &self,
        form: &FormHandle,
        auth: &PageAuth,
        filters: &[TimeFilter],
        window_start: i64,
        cancel: &CancellationToken,
        summary: &mut ReadSummary,
    ) -> Result<Option<i64>, BackfillError> {
        let mut after: Option<String> = None;
        let mut seen_cursors = HashSet::new();
        let mut newest: Option<i64> = None;
        let mut pages = 0;

        loop {
            if cancel.is_cancelled() {
                return Err(BackfillError::Cancelled);
            }
            let page = tokio::select! {
                _ = cancel.cancelled() => return Err(BackfillError::Cancelled),
                page = self.graph.form_leads(auth, &form.form_id, filters, after.as_deref()) => page,
            };
            let page = page.map_err(|error| self.page_error(&form.page_id, error))?;
            pages += 1;
            summary.pages += 1;
            summary.leads_seen += page.leads.len();

            let handled = self
                .handle_page(form, auth, page.leads, window_start)
                .await?;
            summary.leads_written += handled.written;
            summary.dead_letters += handled.dead_letters;
            newest = newest.max(handled.newest);

            match page.next_cursor {
                None => return Ok(newest),
                Some(cursor) if !seen_cursors.insert(cursor.clone()) => {
                    return Err(GraphError::RepeatedCursor(cursor).into());
                }
                Some(cursor) => after = Some(cursor),
            }
            if pages >= MAX_PAGES_PER_WINDOW {
                return Err(BackfillError::TooManyPages);
            }
        }
    }

    fn page_error(&self, page_id: &str, error: GraphError) -> BackfillError {
        if self.pages.report(page_id, &error) {
            let health = match self.pages.auth(page_id) {
                Err(PageHealth::PermissionMissing { .. }) => "permission_missing",
                _ => "token_invalid",
            };
            tracing::error!(
                page_id,
                health,
                error = %error,
                "Graph API rejected the Page's access token; calls for this Page are stopped until a new token is configured"
            );
        }
        BackfillError::Graph(error)
    }

    /// Normalises one page of leads and writes the new ones with the form's
    /// offset in one transaction.
    async fn handle_page(
        &self,
        form: &FormHandle,
        auth: &PageAuth,
        objects: Vec<Value>,
        window_start: i64,
    ) -> Result<PageOutcome, BackfillError> {
        let context = LeadContext {
            form_id: &form.form_id,
            page_id: &form.page_id,
            source: LeadSource::Backfill,
        };
        // Leads already handled (read again in the overlap) are skipped
        // before mapping, so a lead that was dead-lettered is not read again.
        let mut newest: Option<i64> = None;
        let fresh: Vec<Value> = {
            let state = form.state.lock().await;
            objects
                .into_iter()
                .filter(|object| {
                    let created = object
                        .get("created_time")
                        .and_then(|time| parse_created_time(time).ok())
                        .map(|millis| millis.div_euclid(1000));
                    let known = match (object.get("id").and_then(Value::as_str), created) {
                        (Some(lead_id), Some(created)) => state.is_known(lead_id, created),
                        (Some(lead_id), None) => state.offset().recent.contains_key(lead_id),
                        _ => false,
                    };
                    if known {
                        newest = newest.max(created);
                    }
                    !known
                })
                .collect()
        };

        let mut leads = Vec::with_capacity(fresh.len());
        let mut dead_letters = Vec::new();
        for object in fresh {
            match self.map_lead(auth, &object, context).await? {
                Ok(lead) => leads.push(lead),
                Err(letter) => dead_letters.push(letter),
            }
        }

        newest = newest.max(leads.iter().map(|lead| lead.created_time_secs()).max());
        let mut state = form.state.lock().await;

        let mut batch_ids = HashSet::new();
        leads.retain(|lead| {
            !state.is_known(&lead.lead_id, lead.created_time_secs())
                && batch_ids.insert(lead.lead_id.clone())
        });
        // A dead letter without a usable time is remembered at the window
        // start, so the overlap of the next read does not send it again.
        let fallback_time = newest.unwrap_or(window_start).max(state.offset().floor);
        dead_letters.retain(|letter| {
            !state.is_known(&letter.key, fallback_time) && batch_ids.insert(letter.key.clone())
        });
        if leads.is_empty() && dead_letters.is_empty() {
            return Ok(PageOutcome {
                newest,
                ..PageOutcome::default()
            });
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
                offsets: vec![offset.clone()],
                consumer: None,
            })
            .await?;
        state.apply(offset);
        tracing::debug!(form_id = %form.form_id, leads = written.leads, dead_letters = written.dead_letters, "wrote backfill page");

        Ok(PageOutcome {
            newest,
            written: written.leads,
            dead_letters: written.dead_letters,
        })
    }

    /// Maps one lead object, reading it again when it came back without its
    /// fields. `Ok(Err(_))` is a dead letter; `Err(_)` stops the read.
    async fn map_lead(
        &self,
        auth: &PageAuth,
        object: &Value,
        context: LeadContext<'_>,
    ) -> Result<Result<Lead, DeadLetter>, BackfillError> {
        let mut current = object.clone();
        let mut rereads = 0;
        loop {
            let error = match normalise(&current, context) {
                Ok(lead) => return Ok(Ok(lead)),
                Err(error) => error,
            };
            let lead_id = current.get("id").and_then(Value::as_str).map(str::to_owned);
            let Some(lead_id) =
                lead_id.filter(|_| error.is_worth_rereading() && rereads < MAX_LEAD_REREADS)
            else {
                return Ok(Err(dead_letter(&current, &error, context)));
            };

            rereads += 1;
            tracing::warn!(lead_id = %lead_id, form_id = context.form_id, attempt = rereads, error = %error, "lead came back incomplete; reading it again");
            tokio::time::sleep(Duration::from_millis(200 * u64::from(rereads))).await;
            match self.graph.lead(auth, &lead_id).await {
                Ok(fresh) => current = fresh,
                Err(error)
                    if matches!(error.class(), ErrorClass::NotFound | ErrorClass::Invalid) =>
                {
                    let mut letter =
                        dead_letter(&current, &LeadError::MissingField("field_data"), context);
                    letter.reason = match error.class() {
                        ErrorClass::NotFound => "not_found",
                        _ => "graph_invalid",
                    }
                    .to_owned();
                    letter.detail = error.to_string();
                    letter.graph_error = error.api_error().cloned();
                    return Ok(Err(letter));
                }
                Err(error) => return Err(self.page_error(context.page_id, error)),
            }
        }
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
                offsets: vec![offset.clone()],
                ..Batch::default()
            })
            .await?;
        tracing::debug!(form_id = %form.form_id, watermark = offset.watermark, "bulk-read window complete");
        state.apply(offset);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct PageOutcome {
    newest: Option<i64>,
    written: usize,
    dead_letters: usize,
}

/// Builds the dead letter of a lead object that cannot be mapped.
pub fn dead_letter(object: &Value, error: &LeadError, context: LeadContext<'_>) -> DeadLetter {
    let key = object
        .get("id")
        .and_then(|id| {
            id.as_str()
                .map(str::to_owned)
                .or_else(|| id.as_u64().map(|id| id.to_string()))
        })
        .unwrap_or_else(|| context.form_id.to_owned());
    DeadLetter {
        key,
        payload: object.to_string().into_bytes(),
        reason: error.reason().to_owned(),
        detail: error.to_string(),
        graph_error: None,
        form_id: context.form_id.to_owned(),
        page_id: context.page_id.to_owned(),
        source: context.source,
    }
}
