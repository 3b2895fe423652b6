//! Operations endpoints: `/metrics` (Prometheus text), `/health` (the
//! process is alive) and `/ready` (Kafka and the registry are reachable,
//! every Page's token works and, with webhooks on, the notification consumer
//! consumes, with a JSON body naming what does not).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;

use crate::config::SchemaRegistryConfig;
use crate::forms::{PageHealth, Pages};
use crate::kafka::KafkaSetup;
use crate::metrics::Metrics;
use crate::notification_consumer::{ConsumerHealth, ConsumerState};

/// Time allowed for each readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the operations endpoints look at.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub pages: Arc<Pages>,
    pub kafka: KafkaSetup,
    pub registry: SchemaRegistryConfig,
    pub http: reqwest::Client,
    /// The notification consumer; `None` when webhooks are off.
    pub notifications: Option<Arc<ConsumerHealth>>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    for (page_id, health) in state.pages.health() {
        state.metrics.set_page_state(&page_id, health.as_str());
    }
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    let kafka = probe_kafka(&state.kafka).await;
    let registry = probe_registry(&state.http, &state.registry).await;
    let pages: serde_json::Map<String, serde_json::Value> = state
        .pages
        .health()
        .into_iter()
        .map(|(page_id, health)| {
            let detail = match &health {
                PageHealth::Healthy => json!({"state": "healthy"}),
                PageHealth::TokenInvalid { detail } | PageHealth::PermissionMissing { detail } => {
                    json!({"state": health.as_str(), "detail": detail})
                }
            };
            (page_id, detail)
        })
        .collect();
    let pages_ok = pages.values().all(|page| page["state"] == "healthy");
    let notifications = state.notifications.as_ref().map(|health| health.state());
    let notifications_ok = notifications
        .as_ref()
        .is_none_or(|state| *state == ConsumerState::Consuming);
    let ready = kafka.is_ok() && registry.is_ok() && pages_ok && notifications_ok;

    let mut body = json!({
        "ready": ready,
        "kafka": kafka.err().unwrap_or_else(|| "ok".to_owned()),
        "schema_registry": registry.err().unwrap_or_else(|| "ok".to_owned()),
        "pages": pages,
    });
    if let Some(state) = notifications {
        let detail = match &state {
            ConsumerState::Recovering { error } => {
                json!({"state": state.as_str(), "detail": error})
            }
            ConsumerState::Joining | ConsumerState::Consuming => json!({"state": state.as_str()}),
        };
        body["notifications"] = detail;
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn probe_kafka(setup: &KafkaSetup) -> Result<(), String> {
    let client = setup.base_config();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client.create().map_err(|error| error.to_string())?;
        consumer
            .fetch_metadata(None, PROBE_TIMEOUT)
            .map(|_| ())
            .map_err(|error| format!("Kafka metadata request failed: {error}"))
    })
    .await
    .map_err(|error| error.to_string())?
}

async fn probe_registry(
    http: &reqwest::Client,
    registry: &SchemaRegistryConfig,
) -> Result<(), String> {
    let url = format!("{}/subjects", registry.url.trim_end_matches('/'));
    let mut request = http.get(&url).timeout(PROBE_TIMEOUT);
    if let Some(username) = &registry.username {
        request = request.basic_auth(
            username,
            registry.password.as_ref().map(|password| password.expose()),
        );
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!(
            "schema registry answered HTTP {}",
            response.status()
        )),
        Err(error) => Err(format!(
            "schema registry request failed: {}",
            error.without_url()
        )),
    }
}
