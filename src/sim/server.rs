//! HTTP server: the Graph API handler and the response headers Meta sends
//! with every call.
//!
//! A Graph API call goes through these steps in order:
//! 1. An injected fault that matches the call may replace the response at
//!    once (error and 5xx faults), delay it, or damage the leads in it.
//! 2. The access token must be present (104) and belong to a Page (190).
//! 3. With an app secret configured, `appsecret_proof` must be present and
//!    match (100).
//! 4. The token must not be expired (190/463) or, for lead and form reads,
//!    lack permission (200).
//! 5. The Page must be within its call budget (80005). Only calls that
//!    reach this step and pass it count against the budget.
//! 6. The response body is built from the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::admin;
use super::budget::{Admission, Usage};
use super::error::{GraphError, TYPE_OAUTH};
use super::faults::{EndpointKind, FaultAction};
use super::graph::{classify, execute, GraphRequest};
use super::shared::{lock, Shared};
use super::store::TokenState;

/// Version reported in `facebook-api-version` when the path has none.
pub(crate) const DEFAULT_API_VERSION: &str = "v25.0";

const HTML_ERROR_PAGE: &str =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><title>Error</title></head>\
<body><h1>Sorry, something went wrong.</h1><p>We're working on it and we'll get it fixed as soon \
as we can.</p></body></html>\n";

/// Builds the router: admin endpoints under `/_sim/`, everything else is
/// the Graph API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest("/_sim", admin::router())
        .route("/{version}/debug_token", axum::routing::get(debug_token))
        .fallback(graph_call)
        .with_state(shared)
}

#[derive(serde::Deserialize)]
struct DebugTokenQuery {
    input_token: Option<String>,
    access_token: Option<String>,
}

/// `GET /debug_token?input_token=T&access_token=APP_ID|APP_SECRET`: reports
/// a Page token's validity, expiry and scopes. The caller must present an
/// app access token, `<app id>|<app secret>`, with the simulator's secret.
async fn debug_token(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<DebugTokenQuery>,
) -> Response {
    let app_token_ok = match (&shared.app_secret, query.access_token.as_deref()) {
        (Some(secret), Some(token)) => token
            .split_once('|')
            .is_some_and(|(_, given)| given == secret),
        _ => false,
    };
    if !app_token_ok {
        let error = GraphError::invalid_token();
        return json_response(400, &error.to_body(&shared.next_trace_id()));
    }
    let store = lock(&shared.store);
    let page = query
        .input_token
        .as_deref()
        .and_then(|token| store.page_by_token(token));
    let data = match page {
        Some(page) => serde_json::json!({
            "app_id": "1000000000000001",
            "type": "PAGE",
            "application": "leadgen-sim",
            "profile_id": page.id,
            "is_valid": page.token_state == TokenState::Valid,
            "expires_at": page.token_expires_at.map_or(0, |time| time.timestamp()),
            "data_access_expires_at": 0,
            "scopes": ["leads_retrieval", "pages_show_list", "pages_read_engagement", "pages_manage_ads", "pages_manage_metadata"],
        }),
        None => serde_json::json!({
            "is_valid": false,
            "error": {"code": 190, "message": "Invalid OAuth access token."},
        }),
    };
    json_response(200, &serde_json::json!({ "data": data }))
}

/// Computes `appsecret_proof`: the lowercase hex HMAC-SHA256 of the access
/// token keyed with the app secret.
pub fn appsecret_proof(app_secret: &str, access_token: &str) -> String {
    hex::encode(proof_mac(app_secret, access_token).finalize().into_bytes())
}

fn proof_mac(app_secret: &str, access_token: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(access_token.as_bytes());
    mac
}

/// Checks a proof in constant time.
///
/// NOTE: uppercase hex is accepted too; whether Meta accepts it is not
/// confirmed.
fn proof_matches(app_secret: &str, access_token: &str, proof: &str) -> bool {
    let Ok(bytes) = hex::decode(proof) else {
        return false;
    };
    proof_mac(app_secret, access_token)
        .verify_slice(&bytes)
        .is_ok()
}

enum Outcome {
    Json(Value),
    Error(GraphError),
    Html(u16),
}

async fn graph_call(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let origin = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .map_or_else(
            || format!("http://{}", shared.local_addr),
            |host| format!("http://{host}"),
        );
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let request = GraphRequest::parse(
        method.as_str(),
        uri.path(),
        uri.query(),
        authorization,
        origin,
    );

    let (kind, object_ids, token_page, page_count) = {
        let store = lock(&shared.store);
        let (kind, object_ids) = classify(&store, &request);
        let token_page = request
            .token
            .as_deref()
            .and_then(|token| store.page_by_token(token))
            .map(|page| page.id.clone());
        (kind, object_ids, token_page, store.pages().len())
    };

    let id_refs: Vec<&str> = object_ids.iter().map(String::as_str).collect();
    let fault = lock(&shared.faults).take(kind, &id_refs);
    if let Some(action) = &fault {
        tracing::info!(
            kind = kind.as_str(),
            path = uri.path(),
            ?action,
            "fault applied"
        );
    }

    let outcome = match &fault {
        Some(FaultAction::GraphError {
            status,
            code,
            error_subcode,
            error_type,
            message,
            is_transient,
        }) => Outcome::Error(GraphError {
            status: *status,
            message: message.clone(),
            error_type: error_type.clone(),
            code: *code,
            subcode: *error_subcode,
            is_transient: *is_transient,
        }),
        Some(FaultAction::ServerError { status, html: true }) => Outcome::Html(*status),
        Some(FaultAction::ServerError {
            status,
            html: false,
        }) => Outcome::Error(GraphError {
            status: *status,
            is_transient: Some(true),
            ..GraphError::new(
                2,
                TYPE_OAUTH,
                "An unexpected error has occurred. Please retry your request later.",
            )
        }),
        other => {
            if let Some(FaultAction::Delay { millis }) = other {
                tokio::time::sleep(Duration::from_millis(*millis)).await;
            }
            match check_access_and_respond(&shared, &request, kind, token_page.as_deref()) {
                Ok(mut body) => {
                    if let Some(action) = other {
                        damage_leads(action, kind, &mut body);
                    }
                    Outcome::Json(body)
                }
                Err(error) => Outcome::Error(error),
            }
        }
    };

    let now = Instant::now();
    let (page_usage, app_usage) = {
        let mut budget = lock(&shared.budget);
        let page_usage = token_page.as_deref().map(|page| budget.usage(page, now));
        (page_usage, budget.app_usage(page_count, now))
    };

    let error_summary = match &outcome {
        Outcome::Json(_) => None,
        Outcome::Error(error) => Some((Some(error.code), error.status)),
        Outcome::Html(status) => Some((None, *status)),
    };
    lock(&shared.stats).record_call(kind, token_page.as_deref(), error_summary, fault.is_some());

    let trace_id = shared.next_trace_id();
    let (status, code) = error_summary.map_or((200, None), |(code, status)| (status, code));
    tracing::debug!(
        method = %method,
        path = uri.path(),
        kind = kind.as_str(),
        page_id = token_page.as_deref(),
        status,
        code,
        fbtrace_id = %trace_id,
        "graph call"
    );

    let mut response = match outcome {
        Outcome::Json(body) => json_response(200, &body),
        Outcome::Error(error) => {
            let mut response = json_response(error.status, &error.to_body(&trace_id));
            if error.code == 190 || error.code == 104 {
                let challenge = format!(
                    "OAuth \"Facebook Platform\" \"invalid_token\" \"{}\"",
                    error.message.replace('"', "'")
                );
                insert_header(response.headers_mut(), WWW_AUTHENTICATE, &challenge);
            }
            response
        }
        Outcome::Html(status) => {
            let mut response = Response::new(Body::from(HTML_ERROR_PAGE));
            *response.status_mut() = status_code(status);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
    };

    let headers = response.headers_mut();
    insert_header(
        headers,
        HeaderName::from_static("x-app-usage"),
        &Value::Object(usage_json(&app_usage)).to_string(),
    );
    let business_usage = match (&token_page, page_usage) {
        (Some(page_id), Some(usage)) => {
            let mut entry = usage_json(&usage);
            entry.insert("type".into(), json!("lead_generation"));
            entry.insert(
                "estimated_time_to_regain_access".into(),
                json!(usage.estimated_time_to_regain_access),
            );
            json!({ page_id.as_str(): [entry] })
        }
        _ => json!({}),
    };
    insert_header(
        headers,
        HeaderName::from_static("x-business-use-case-usage"),
        &business_usage.to_string(),
    );
    insert_header(
        headers,
        HeaderName::from_static("facebook-api-version"),
        request.version.as_deref().unwrap_or(DEFAULT_API_VERSION),
    );
    insert_header(headers, HeaderName::from_static("x-fb-trace-id"), &trace_id);
    response
}

/// Runs steps 2 to 6 of the module documentation.
fn check_access_and_respond(
    shared: &Shared,
    request: &GraphRequest,
    kind: EndpointKind,
    token_page: Option<&str>,
) -> Result<Value, GraphError> {
    let Some(token) = request.token.as_deref() else {
        return Err(GraphError::missing_token());
    };
    let Some(page_id) = token_page else {
        return Err(GraphError::invalid_token());
    };

    if let Some(secret) = &shared.app_secret {
        match request.param("appsecret_proof") {
            None => return Err(GraphError::missing_appsecret_proof()),
            Some(proof) if !proof_matches(secret, token, proof) => {
                return Err(GraphError::invalid_appsecret_proof())
            }
            Some(_) => {}
        }
    }

    {
        let store = lock(&shared.store);
        let Some(page) = store.page(page_id) else {
            return Err(GraphError::invalid_token());
        };
        match page.token_state {
            TokenState::Valid => {}
            TokenState::Expired => {
                let now = Utc::now();
                return Err(GraphError::expired_token(
                    page.token_expired_at.unwrap_or(now),
                    now,
                ));
            }
            TokenState::PermissionRevoked => {
                let reads_leads = matches!(
                    kind,
                    EndpointKind::FormLeads
                        | EndpointKind::Lead
                        | EndpointKind::Ids
                        | EndpointKind::LeadgenForms
                );
                if reads_leads {
                    return Err(GraphError::permission_revoked());
                }
            }
        }
    }

    if let Admission::Throttled(_) = lock(&shared.budget).admit(page_id, Instant::now()) {
        return Err(GraphError::page_rate_limited());
    }

    let store = lock(&shared.store);
    execute(&store, request, page_id)
}

/// Applies a lead-damaging fault to every lead in a response body.
fn damage_leads(action: &FaultAction, kind: EndpointKind, body: &mut Value) {
    let leads: Vec<&mut Map<String, Value>> = match kind {
        EndpointKind::FormLeads => body
            .get_mut("data")
            .and_then(Value::as_array_mut)
            .map(|data| data.iter_mut().filter_map(Value::as_object_mut).collect())
            .unwrap_or_default(),
        EndpointKind::Lead => body.as_object_mut().into_iter().collect(),
        EndpointKind::Ids => body
            .as_object_mut()
            .map(|objects| {
                objects
                    .values_mut()
                    .filter_map(Value::as_object_mut)
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for lead in leads {
        match action {
            FaultAction::OmitField { field } => {
                lead.remove(field);
            }
            FaultAction::InvalidCreatedTime { value } => {
                if let Some(created_time) = lead.get_mut("created_time") {
                    *created_time = json!(value);
                }
            }
            _ => {}
        }
    }
}

fn usage_json(usage: &Usage) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("call_count".into(), json!(usage.call_count));
    map.insert("total_cputime".into(), json!(usage.total_cputime));
    map.insert("total_time".into(), json!(usage.total_time));
    map
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status_code(status);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

/// Inserts a header, skipping values that are not valid header text. All
/// values set here are ASCII JSON, ids or messages, so none are skipped in
/// practice.
fn insert_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(error) => {
            tracing::warn!(header = %name, %error, "invalid response header value skipped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appsecret_proof_matches_reference_hmac() {
        // HMAC-SHA256 test case 2 of RFC 4231: key "Jefe".
        assert_eq!(
            appsecret_proof("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn proof_check_rejects_wrong_values() {
        let proof = appsecret_proof("secret", "token");
        assert!(proof_matches("secret", "token", &proof));
        assert!(!proof_matches("secret", "other-token", &proof));
        assert!(!proof_matches("other", "token", &proof));
        assert!(!proof_matches("secret", "token", "not hex"));
        assert!(!proof_matches("secret", "token", ""));
    }

    #[test]
    fn damage_applies_to_each_listed_lead() {
        let mut body = json!({"data": [
            {"id": "1", "created_time": "2024-05-01T10:00:00+0000", "field_data": []},
            {"id": "2", "field_data": []},
        ]});
        damage_leads(
            &FaultAction::omit_field("field_data"),
            EndpointKind::FormLeads,
            &mut body,
        );
        assert!(body["data"][0].get("field_data").is_none());
        assert!(body["data"][1].get("field_data").is_none());

        damage_leads(
            &FaultAction::invalid_created_time(),
            EndpointKind::FormLeads,
            &mut body,
        );
        assert_eq!(body["data"][0]["created_time"], "28/02/2015 08:49");
        assert!(body["data"][1].get("created_time").is_none());
    }
}
