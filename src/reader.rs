//! Reading and mapping single leads, shared by the backfill and webhook
//! paths: bounded re-reads of incomplete leads, bounded retries of leads
//! Meta does not show yet, dead letters for leads that can never be read,
//! and the Page health report when a token stops working.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::forms::{PageHealth, Pages};
use crate::graph::{ErrorClass, GraphClient, GraphError, PageAuth};
use crate::kafka::DeadLetter;
use crate::lead::{normalise, Lead, LeadContext, LeadError};
use crate::metrics::Metrics;

/// Reads of one lead that came back without its fields before the lead is
/// dead-lettered.
const MAX_LEAD_REREADS: u32 = 3;

/// Reads of a lead answered "does not exist" (100/33) before it is
/// dead-lettered. A lead can be invisible for a moment after its webhook.
const MAX_NOT_FOUND_READS: u32 = 3;

/// A mapped lead, or the dead letter of one that can never be mapped.
pub type Mapped = Result<Lead, DeadLetter>;

/// Reads leads for both paths.
#[derive(Clone)]
pub struct LeadReader {
    pub graph: GraphClient,
    pub pages: Arc<Pages>,
    pub metrics: Arc<Metrics>,
    /// Delay before the first re-read; later ones grow linearly.
    pub reread_delay: Duration,
}

impl LeadReader {
    /// Maps one lead object, reading it again when it came back without its
    /// fields. `Err` is a Graph failure that stops the caller's work.
    pub async fn map_lead(
        &self,
        auth: &PageAuth,
        object: &Value,
        context: LeadContext<'_>,
    ) -> Result<Mapped, GraphError> {
        // Only a re-read replaces the object, so the common case never copies it.
        let mut current = Cow::Borrowed(object);
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
            tokio::time::sleep(self.reread_delay * rereads).await;
            match self.graph.lead(auth, &lead_id).await {
                Ok(fresh) => current = Cow::Owned(fresh),
                Err(graph_error) if is_permanent_for_lead(&graph_error) => {
                    return Ok(Err(graph_dead_letter(&current, &graph_error, context)));
                }
                Err(graph_error) => return Err(self.report(context.page_id, graph_error)),
            }
        }
    }

    /// Reads one lead by id and maps it, retrying a few times while Meta
    /// answers that it does not exist.
    pub async fn read_lead(
        &self,
        auth: &PageAuth,
        lead_id: &str,
        context: LeadContext<'_>,
    ) -> Result<Mapped, GraphError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.graph.lead(auth, lead_id).await {
                Ok(object) => return self.map_lead(auth, &object, context).await,
                Err(error)
                    if error.class() == ErrorClass::NotFound && attempt < MAX_NOT_FOUND_READS =>
                {
                    tracing::warn!(lead_id, form_id = context.form_id, attempt, error = %error, "lead not visible yet; reading it again");
                    tokio::time::sleep(self.reread_delay * (1 << attempt)).await;
                }
                Err(error) if is_permanent_for_lead(&error) => {
                    let placeholder = serde_json::json!({ "id": lead_id });
                    return Ok(Err(graph_dead_letter(&placeholder, &error, context)));
                }
                Err(error) => return Err(self.report(context.page_id, error)),
            }
        }
    }

    /// Records a token or permission failure against the Page and logs it
    /// once, when the Page's health changes. Returns the error.
    pub fn report(&self, page_id: &str, error: GraphError) -> GraphError {
        if self.pages.report(page_id, &error) {
            let health = match self.pages.auth(page_id) {
                Err(health) => health.as_str(),
                Ok(_) => PageHealth::Healthy.as_str(),
            };
            self.metrics.set_page_state(page_id, health);
            tracing::error!(
                page_id,
                health,
                error = %error,
                "Graph API rejected the Page's access token; calls for this Page are stopped until a new token is configured"
            );
        }
        error
    }
}

fn is_permanent_for_lead(error: &GraphError) -> bool {
    matches!(error.class(), ErrorClass::NotFound | ErrorClass::Invalid)
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

/// Builds the dead letter of a lead the Graph API refuses to return.
pub fn graph_dead_letter(
    object: &Value,
    error: &GraphError,
    context: LeadContext<'_>,
) -> DeadLetter {
    let mut letter = dead_letter(object, &LeadError::MissingField("field_data"), context);
    letter.reason = match error.class() {
        ErrorClass::NotFound => "not_found",
        _ => "graph_invalid",
    }
    .to_owned();
    letter.detail = error.to_string();
    letter.graph_error = error.api_error().cloned();
    letter
}
