//! Admin endpoints under `/_sim/`, which drive the simulator over HTTP the
//! way `SimHandle` does in process. They need no token and are not counted
//! in the stats.
//!
//! | Method and path | Body | Effect |
//! | --- | --- | --- |
//! | `POST /_sim/leads` | `{"form_id","count"}` | add generated leads; returns `{"ids":[..]}` |
//! | `POST /_sim/leads/raw` | `{"form_id","lead":{..}}` | store raw lead JSON; returns `{"id"}` |
//! | `DELETE /_sim/leads/{id}` | | delete a lead |
//! | `GET /_sim/forms/{id}/leads` | | full JSON of all leads, newest first |
//! | `POST /_sim/forms` | `{"page_id","id","name","initial_leads"}` | add a form |
//! | `PUT /_sim/pages/{id}/token` | `{"state":"expired"}` or `{"access_token":".."}` | change the token |
//! | `POST /_sim/faults` | a `Fault` | inject a fault |
//! | `DELETE /_sim/faults` | | clear faults |
//! | `PUT /_sim/budget` | `{"daily_budget_per_page":N or null,"reset":true}` | change the budget or forget counted calls; both keys optional |
//! | `PUT /_sim/rate` | `{"leads_per_second":x}` | change the lead rate |
//! | `GET /_sim/stats` | | call counters, with webhook counters under `webhooks` |
//! | `DELETE /_sim/stats` | | reset call and webhook counters |
//! | `PUT /_sim/webhook` | a `WebhookConfig`, or `null` to turn webhooks off | replace the webhook settings |
//! | `GET /_sim/webhook` | | `{"config": .. or null, "stats": ..}`; the config without `app_secret` |
//!
//! Errors are `{"error":"..."}` with status 404 for unknown ids, 409 for a
//! clashing id or token, and 400 for invalid input.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::SimForm;
use super::faults::Fault;
use super::shared::Shared;
use super::stats::SimStats;
use super::store::{StoreError, TokenState};
use super::webhook::WebhookConfig;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/leads", post(add_leads))
        .route("/leads/raw", post(insert_lead))
        .route("/leads/{id}", delete(delete_lead))
        .route("/forms", post(add_form))
        .route("/forms/{id}/leads", get(form_leads))
        .route("/pages/{id}/token", put(change_token))
        .route("/faults", post(inject_fault).delete(clear_faults))
        .route("/budget", put(change_budget))
        .route("/rate", put(change_rate))
        .route("/stats", get(stats).delete(reset_stats))
        .route("/webhook", get(webhook).put(change_webhook))
}

struct AdminError(StatusCode, String);

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        let status = match error {
            StoreError::UnknownPage(_) | StoreError::UnknownForm(_) => StatusCode::NOT_FOUND,
            StoreError::DuplicateId(_) | StoreError::TokenInUse(_) => StatusCode::CONFLICT,
            StoreError::LeadNotObject(_) => StatusCode::BAD_REQUEST,
        };
        Self(status, error.to_string())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        tracing::warn!(status = self.0.as_u16(), error = %self.1, "admin request failed");
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLeads {
    form_id: String,
    count: usize,
}

async fn add_leads(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<AddLeads>,
) -> Result<Json<Value>, AdminError> {
    let ids = shared.add_leads(&body.form_id, body.count)?;
    Ok(Json(json!({ "ids": ids })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InsertLead {
    form_id: String,
    lead: Value,
}

async fn insert_lead(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<InsertLead>,
) -> Result<Json<Value>, AdminError> {
    let id = shared.insert_lead(&body.form_id, body.lead)?;
    Ok(Json(json!({ "id": id })))
}

async fn delete_lead(
    State(shared): State<Arc<Shared>>,
    Path(lead_id): Path<String>,
) -> Result<StatusCode, AdminError> {
    if shared.delete_lead(&lead_id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("unknown lead id {lead_id}"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddForm {
    page_id: String,
    id: String,
    name: String,
    #[serde(default)]
    initial_leads: usize,
}

async fn add_form(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<AddForm>,
) -> Result<StatusCode, AdminError> {
    let form = SimForm {
        id: body.id,
        name: body.name,
        initial_leads: body.initial_leads,
    };
    shared.add_form(&body.page_id, &form)?;
    Ok(StatusCode::CREATED)
}

async fn form_leads(
    State(shared): State<Arc<Shared>>,
    Path(form_id): Path<String>,
) -> Result<Json<Vec<Value>>, AdminError> {
    Ok(Json(shared.leads(&form_id)?))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TokenChange {
    State { state: TokenState },
    Replace { access_token: String },
}

async fn change_token(
    State(shared): State<Arc<Shared>>,
    Path(page_id): Path<String>,
    Json(change): Json<TokenChange>,
) -> Result<StatusCode, AdminError> {
    match change {
        TokenChange::State { state } => shared.set_token_state(&page_id, state)?,
        TokenChange::Replace { access_token } => {
            if access_token.is_empty() {
                return Err(AdminError(
                    StatusCode::BAD_REQUEST,
                    "access_token must not be empty".into(),
                ));
            }
            shared.set_access_token(&page_id, &access_token)?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn inject_fault(State(shared): State<Arc<Shared>>, Json(fault): Json<Fault>) -> StatusCode {
    shared.inject(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.clear_faults();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetChange {
    /// Absent keeps the budget; `null` makes it unlimited.
    #[serde(default, deserialize_with = "present")]
    daily_budget_per_page: Option<Option<u64>>,
    /// Forgets the calls counted so far.
    #[serde(default)]
    reset: bool,
}

async fn change_budget(
    State(shared): State<Arc<Shared>>,
    Json(change): Json<BudgetChange>,
) -> StatusCode {
    if let Some(budget) = change.daily_budget_per_page {
        shared.set_daily_budget(budget);
    }
    if change.reset {
        shared.reset_budget();
    }
    StatusCode::NO_CONTENT
}

/// Marks a field that is present, even as `null`, as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateChange {
    leads_per_second: f64,
}

async fn change_rate(
    State(shared): State<Arc<Shared>>,
    Json(change): Json<RateChange>,
) -> Result<StatusCode, AdminError> {
    if !change.leads_per_second.is_finite() || change.leads_per_second < 0.0 {
        return Err(AdminError(
            StatusCode::BAD_REQUEST,
            format!(
                "leads_per_second must be a finite number >= 0, got {}",
                change.leads_per_second
            ),
        ));
    }
    shared.set_leads_per_second(change.leads_per_second);
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<SimStats> {
    Json(shared.stats())
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset_stats();
    StatusCode::NO_CONTENT
}

async fn webhook(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "config": shared.webhook_config(),
        "stats": shared.webhook_stats(),
    }))
}

async fn change_webhook(
    State(shared): State<Arc<Shared>>,
    Json(config): Json<Option<WebhookConfig>>,
) -> Result<StatusCode, AdminError> {
    shared
        .set_webhook(config)
        .map_err(|error| AdminError(StatusCode::BAD_REQUEST, format!("{error:#}")))?;
    Ok(StatusCode::NO_CONTENT)
}
