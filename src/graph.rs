//! Graph API client: lead reads, error classification, retries and the
//! per-Page rate budget.
//!
//! Every failure is classified by its Graph error code, never by HTTP status
//! alone, and only transient and rate-limit failures are retried, a bounded
//! number of times with capped, jittered backoff. Calls for a Page slow down
//! as Meta's usage headers approach 100 %, before Meta starts refusing them.
//! Access tokens travel only as query parameters of requests to the
//! configured base URL; they never appear in an error or a log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::Sha256;
use url::Url;

use crate::config::GraphConfig;
use crate::lead::LEAD_FIELDS;
use crate::metrics::{Metrics, PageLabel};
use crate::secret::Secret;
use crate::telemetry::error_chain;

/// Most ids Meta accepts in one `?ids=` read.
pub const MAX_IDS_PER_CALL: usize = 50;

/// Usage percentage above which calls for a Page are spaced out.
const THROTTLE_FROM_PERCENT: f64 = 75.0;

/// Usage percentage from which every call for a Page waits `max_backoff`.
const FULL_PAUSE_FROM_PERCENT: f64 = 90.0;

/// Failure class, decided by Graph error code, that sets how a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying after a backoff: server trouble, timeouts, code 1 or 2.
    Transient,
    /// A rate limit was hit; retry after the time Meta asks for.
    RateLimited,
    /// The Page's access token is expired or invalid (102, 190).
    Token,
    /// The token lacks a permission (10, 200-299).
    Permission,
    /// The object does not exist or is not visible to this token (100/33).
    NotFound,
    /// The request itself is wrong; retrying cannot help.
    Invalid,
}

/// The `error` object of a Graph API error response.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default)]
    pub error_type: String,
    pub code: i64,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub is_transient: Option<bool>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("Graph API error code {code}{subcode}: {message} (type `{kind}`, HTTP {status}, fbtrace_id `{trace}`)",
        code = .error.code,
        subcode = .error.error_subcode.map(|subcode| format!(", subcode {subcode}")).unwrap_or_default(),
        message = .error.message,
        kind = .error.error_type,
        trace = .error.fbtrace_id.as_deref().unwrap_or("none"))]
    Api {
        status: u16,
        error: ApiError,
        /// Minutes until Meta lets calls through again, from the usage headers.
        regain_after: Option<Duration>,
    },
    #[error("Graph API answered HTTP {status} without a Graph error body")]
    Status { status: u16 },
    #[error("Graph API request failed: {0}")]
    Transport(String),
    #[error("Graph API response is not the expected JSON: {0}")]
    Decode(String),
    #[error("Graph API paging returned cursor `{0}` twice; stopping this read")]
    RepeatedCursor(String),
}

impl GraphError {
    pub fn class(&self) -> ErrorClass {
        match self {
            GraphError::Api { status, error, .. } => classify(*status, error),
            GraphError::Status { status } if *status >= 500 || *status == 429 => {
                ErrorClass::Transient
            }
            GraphError::Status { .. } => ErrorClass::Invalid,
            GraphError::Transport(_) => ErrorClass::Transient,
            GraphError::Decode(_) => ErrorClass::Transient,
            GraphError::RepeatedCursor(_) => ErrorClass::Invalid,
        }
    }

    /// Whether the server failed (HTTP 5xx), as opposed to refusing the call.
    pub fn is_server_failure(&self) -> bool {
        match self {
            GraphError::Api { status, .. } | GraphError::Status { status } => *status >= 500,
            _ => false,
        }
    }

    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            GraphError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    fn regain_after(&self) -> Option<Duration> {
        match self {
            GraphError::Api { regain_after, .. } => *regain_after,
            _ => None,
        }
    }
}

/// Classifies a Graph error by code and subcode; HTTP status only decides
/// for codes Meta does not document.
pub fn classify(status: u16, error: &ApiError) -> ErrorClass {
    match error.code {
        4 | 17 | 32 | 613 | 80_000..=80_014 => ErrorClass::RateLimited,
        1 | 2 | 341 | 368 => ErrorClass::Transient,
        102 | 190 => ErrorClass::Token,
        10 | 200..=299 => ErrorClass::Permission,
        100 if error.error_subcode == Some(33) => ErrorClass::NotFound,
        _ if error.is_transient == Some(true) => ErrorClass::Transient,
        _ if status >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Invalid,
    }
}

/// One page of a bulk read. Each lead stays JSON text until the caller
/// maps it, so the usual lead shape is read once, straight into a lead.
#[derive(Debug)]
pub struct LeadsPage {
    pub leads: Vec<Box<RawValue>>,
    /// Cursor of the next page; `None` when Meta sent no `paging.next`.
    pub next_cursor: Option<String>,
}

/// One page of a Graph API list response, decoded as JSON values.
#[derive(Debug)]
struct ListPage {
    items: Vec<Value>,
    next_cursor: Option<String>,
}

/// A `filtering` condition on `time_created`, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFilter {
    GreaterThanOrEqual(i64),
    GreaterThan(i64),
    LessThan(i64),
}

impl TimeFilter {
    fn to_json(self) -> Value {
        let (operator, value) = match self {
            TimeFilter::GreaterThanOrEqual(value) => ("GREATER_THAN_OR_EQUAL", value),
            TimeFilter::GreaterThan(value) => ("GREATER_THAN", value),
            TimeFilter::LessThan(value) => ("LESS_THAN", value),
        };
        serde_json::json!({"field": "time_created", "operator": operator, "value": value})
    }
}

/// Renders the `filtering` parameter: a JSON list with integer Unix seconds.
pub fn filtering_param(filters: &[TimeFilter]) -> String {
    Value::Array(filters.iter().map(|filter| filter.to_json()).collect()).to_string()
}

/// What `debug_token` tells about a token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    #[serde(default)]
    pub is_valid: bool,
    /// Unix seconds; 0 for a token that never expires.
    #[serde(default)]
    pub expires_at: i64,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
struct DebugTokenBody {
    data: TokenInfo,
}

/// A lead form listed on a Page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FormInfo {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// Credentials for the calls made on behalf of one Page.
#[derive(Debug, Clone)]
pub struct PageAuth {
    pub page_id: String,
    pub access_token: Secret,
}

/// Latest usage Meta reported for one Page.
#[derive(Debug, Clone, Copy)]
struct PageUsage {
    /// Highest of the call count, CPU time and total time percentages.
    percent: f64,
    /// No call before this instant, when Meta asked for a pause.
    blocked_until: Option<Instant>,
}

/// Graph API client shared by every task.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    app_secret: Option<Secret>,
    page_size: u32,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    usage: Arc<Mutex<HashMap<String, PageUsage>>>,
    metrics: Option<Arc<Metrics>>,
}

impl GraphClient {
    pub fn new(config: &GraphConfig) -> Result<Self, GraphError> {
        let base = Url::parse(&format!(
            "{}/{}/",
            config.base_url.trim_end_matches('/'),
            config.version
        ))
        .map_err(|error| GraphError::Transport(format!("invalid Graph API base URL: {error}")))?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!("leadgen-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| transport_error(error, &[]))?;

        Ok(Self {
            http,
            base,
            app_secret: config.app_secret.clone(),
            page_size: config.page_size,
            max_attempts: config.max_attempts,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            usage: Arc::default(),
            metrics: None,
        })
    }

    /// Reads one page of a form's leads, newest first as Meta returns them.
    pub async fn form_leads(
        &self,
        auth: &PageAuth,
        form_id: &str,
        filters: &[TimeFilter],
        after: Option<&str>,
        limit: u32,
    ) -> Result<LeadsPage, GraphError> {
        let mut query = vec![
            ("fields", LEAD_FIELDS.to_owned()),
            ("limit", limit.to_string()),
        ];
        if !filters.is_empty() {
            query.push(("filtering", filtering_param(filters)));
        }
        if let Some(cursor) = after {
            query.push(("after", cursor.to_owned()));
        }

        self.get_with(auth, &format!("{form_id}/leads"), &query, parse_leads_page)
            .await
    }

    /// Reads one lead by id.
    pub async fn lead(&self, auth: &PageAuth, lead_id: &str) -> Result<Value, GraphError> {
        self.get(auth, lead_id, &[("fields", LEAD_FIELDS.to_owned())])
            .await
    }

    /// Reads a Page's `id` and `name`, a call that needs a working token but
    /// no leads permission.
    pub async fn page(&self, auth: &PageAuth) -> Result<Value, GraphError> {
        self.get(auth, &auth.page_id, &[("fields", "id,name".to_owned())])
            .await
    }

    /// Reads up to [`MAX_IDS_PER_CALL`] leads in one call; the answer maps
    /// each id to its lead object, kept as JSON text.
    pub async fn leads_by_ids(
        &self,
        auth: &PageAuth,
        lead_ids: &[String],
    ) -> Result<HashMap<String, Box<RawValue>>, GraphError> {
        assert!(
            lead_ids.len() <= MAX_IDS_PER_CALL,
            "at most {MAX_IDS_PER_CALL} ids per call"
        );
        let query = [
            ("ids", lead_ids.join(",")),
            ("fields", LEAD_FIELDS.to_owned()),
        ];

        self.get_with(auth, "", &query, |body| {
            serde_json::from_slice(body).map_err(|error| {
                GraphError::Decode(format!(
                    "`?ids=` response is not an object of leads: {error}"
                ))
            })
        })
        .await
    }

    /// Checks a Page token with `debug_token`, authenticated by the app
    /// access token.
    pub async fn debug_token(
        &self,
        app_token: &Secret,
        page: &PageAuth,
    ) -> Result<TokenInfo, GraphError> {
        let caller = PageAuth {
            page_id: page.page_id.clone(),
            access_token: app_token.clone(),
        };
        let query = [("input_token", page.access_token.expose().to_owned())];
        let body = self.get(&caller, "debug_token", &query).await?;
        serde_json::from_value::<DebugTokenBody>(body)
            .map(|body| body.data)
            .map_err(|error| GraphError::Decode(format!("debug_token response: {error}")))
    }

    /// Lists the lead forms of a Page, following every page of the response.
    pub async fn leadgen_forms(&self, auth: &PageAuth) -> Result<Vec<FormInfo>, GraphError> {
        let mut forms = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("fields", "id,name,status".to_owned()),
                ("limit", "100".to_owned()),
            ];
            if let Some(cursor) = &after {
                query.push(("after", cursor.clone()));
            }
            let body = self
                .get(auth, &format!("{}/leadgen_forms", auth.page_id), &query)
                .await?;
            let page = parse_list_page(body)?;
            for form in page.items {
                let form: FormInfo = serde_json::from_value(form)
                    .map_err(|error| GraphError::Decode(format!("leadgen_forms entry: {error}")))?;
                forms.push(form);
            }
            match page.next_cursor {
                Some(cursor) if after.as_deref() == Some(cursor.as_str()) => {
                    return Err(GraphError::RepeatedCursor(cursor))
                }
                Some(cursor) => after = Some(cursor),
                None => return Ok(forms),
            }
        }
    }

    /// GET with retries for transient and rate-limit failures; the response
    /// as a JSON value.
    async fn get(
        &self,
        auth: &PageAuth,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, GraphError> {
        self.get_with(auth, path, query, |bytes| {
            serde_json::from_slice(bytes).map_err(|error| GraphError::Decode(error.to_string()))
        })
        .await
    }

    /// GET with retries for transient and rate-limit failures; `decode`
    /// turns a successful response's body into `T`. A body it rejects counts
    /// as a transient failure, like any other decode error.
    async fn get_with<T>(
        &self,
        auth: &PageAuth,
        path: &str,
        query: &[(&str, String)],
        decode: fn(&[u8]) -> Result<T, GraphError>,
    ) -> Result<T, GraphError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_for_budget(&auth.page_id).await;

            let result = self
                .get_once(auth, path, query)
                .await
                .and_then(|bytes| decode(&bytes));
            self.count_call(path, &result);
            let error = match result {
                Ok(body) => return Ok(body),
                Err(error) => error,
            };
            let class = error.class();
            let retryable = matches!(class, ErrorClass::Transient | ErrorClass::RateLimited);
            if !retryable || attempt >= self.max_attempts {
                return Err(error);
            }

            let delay = self.backoff(attempt, error.regain_after());
            tracing::warn!(
                page_id = %auth.page_id,
                path,
                attempt,
                delay_ms = delay.as_millis() as u64,
                class = ?class,
                error = %error,
                "Graph API call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn get_once(
        &self,
        auth: &PageAuth,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<bytes::Bytes, GraphError> {
        let url = self.base.join(path).map_err(|error| {
            GraphError::Transport(format!("invalid Graph API path `{path}`: {error}"))
        })?;
        let proof = self
            .app_secret
            .as_ref()
            .map(|secret| appsecret_proof(secret, &auth.access_token));
        let mut request = self
            .http
            .get(url)
            .query(query)
            .query(&[("access_token", auth.access_token.expose())]);
        if let Some(proof) = &proof {
            request = request.query(&[("appsecret_proof", proof)]);
        }
        let secrets = [Some(auth.access_token.expose()), proof.as_deref()];
        let secrets: Vec<&str> = secrets.into_iter().flatten().collect();

        let response = request
            .send()
            .await
            .map_err(|error| transport_error(error, &secrets))?;
        let status = response.status().as_u16();
        let regain_after = self.record_usage(&auth.page_id, response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|error| transport_error(error, &secrets))?;

        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(GraphError::Api {
                status,
                error: body.error,
                regain_after,
            }),
            Err(_) => Err(GraphError::Status { status }),
        }
    }

    /// Full-jitter exponential backoff, at least as long as Meta asked for.
    fn backoff(&self, attempt: u32, regain_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        let jittered = ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        match regain_after {
            Some(regain) => jittered.max(regain.min(self.max_backoff)),
            None => jittered,
        }
    }

    /// Counts calls in the metrics, when the client has them.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_call<T>(&self, path: &str, result: &Result<T, GraphError>) {
        let Some(metrics) = &self.metrics else { return };
        let endpoint = if path.is_empty() {
            "ids"
        } else if path.ends_with("/leads") {
            "form_leads"
        } else if path.ends_with("/leadgen_forms") {
            "leadgen_forms"
        } else if path == "debug_token" {
            "debug_token"
        } else {
            "lead"
        };
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => match error.class() {
                ErrorClass::Transient => "transient",
                ErrorClass::RateLimited => "rate_limited",
                ErrorClass::Token => "token",
                ErrorClass::Permission => "permission",
                ErrorClass::NotFound => "not_found",
                ErrorClass::Invalid => "invalid",
            },
        };
        metrics.graph_call(endpoint, outcome);
    }

    /// Records usage headers; returns Meta's requested pause, if any.
    fn record_usage(&self, page_id: &str, headers: &HeaderMap) -> Option<Duration> {
        let usage = parse_usage_headers(page_id, headers)?;
        if let Some(metrics) = &self.metrics {
            metrics
                .rate_budget_usage
                .get_or_create(&PageLabel {
                    page_id: page_id.to_owned(),
                })
                .set(usage.percent);
        }
        let regain_after =
            (usage.regain_minutes > 0).then(|| Duration::from_secs(usage.regain_minutes * 60));
        let mut pages = self.usage.lock().expect("usage map lock is never poisoned");
        pages.insert(
            page_id.to_owned(),
            PageUsage {
                percent: usage.percent,
                blocked_until: regain_after.map(|pause| Instant::now() + pause),
            },
        );
        regain_after
    }

    /// Sleeps before a call when the Page's usage is high or Meta asked for
    /// a pause. The delay grows with the square of the usage above
    /// [`THROTTLE_FROM_PERCENT`], reaching `max_backoff` at 100 %.
    async fn wait_for_budget(&self, page_id: &str) {
        let usage = {
            let pages = self.usage.lock().expect("usage map lock is never poisoned");
            pages.get(page_id).copied()
        };
        let Some(usage) = usage else { return };

        if let Some(until) = usage.blocked_until {
            let now = Instant::now();
            if until > now {
                let pause = (until - now).min(self.max_backoff);
                tracing::warn!(
                    page_id,
                    pause_ms = pause.as_millis() as u64,
                    "Meta asked for a pause in calls for this Page"
                );
                tokio::time::sleep(pause).await;
                return;
            }
        }
        if usage.percent > THROTTLE_FROM_PERCENT {
            let share = ((usage.percent - THROTTLE_FROM_PERCENT) / (100.0 - THROTTLE_FROM_PERCENT))
                .min(1.0);
            // Several tasks can read the same usage at once, so from
            // FULL_PAUSE_FROM_PERCENT every call waits the whole max_backoff.
            let factor = if usage.percent >= FULL_PAUSE_FROM_PERCENT {
                1.0
            } else {
                share * share
            };
            let pause = self.max_backoff.mul_f64(factor);
            tracing::debug!(
                page_id,
                usage_percent = usage.percent,
                pause_ms = pause.as_millis() as u64,
                "throttling Graph API calls"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// Configured leads per bulk-read page.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Latest usage percentage reported for a Page, for health and metrics.
    pub fn usage_percent(&self, page_id: &str) -> Option<f64> {
        let pages = self.usage.lock().expect("usage map lock is never poisoned");
        pages.get(page_id).map(|usage| usage.percent)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ApiError,
}

/// Usage read from `X-App-Usage` and `X-Business-Use-Case-Usage`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub percent: f64,
    pub regain_minutes: u64,
}

/// Parses Meta's usage headers. Both carry JSON; the business use case
/// header is keyed by Page id and may list several use cases.
pub fn parse_usage_headers(page_id: &str, headers: &HeaderMap) -> Option<Usage> {
    let mut found = false;
    let mut usage = Usage {
        percent: 0.0,
        regain_minutes: 0,
    };

    let mut absorb = |entry: &Value| {
        found = true;
        for key in ["call_count", "total_cputime", "total_time"] {
            if let Some(percent) = entry.get(key).and_then(Value::as_f64) {
                usage.percent = usage.percent.max(percent);
            }
        }
        if let Some(minutes) = entry
            .get("estimated_time_to_regain_access")
            .and_then(Value::as_u64)
        {
            usage.regain_minutes = usage.regain_minutes.max(minutes);
        }
    };

    if let Some(app) = header_json(headers, "x-app-usage") {
        absorb(&app);
    }
    if let Some(business) = header_json(headers, "x-business-use-case-usage") {
        let entries = business
            .get(page_id)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for entry in &entries {
            absorb(entry);
        }
    }
    found.then_some(usage)
}

fn header_json(headers: &HeaderMap, name: &str) -> Option<Value> {
    let text = headers.get(name)?.to_str().ok()?;
    serde_json::from_str(text).ok()
}

/// `appsecret_proof`: lowercase hex HMAC-SHA256 of the token, keyed with the
/// app secret.
pub fn appsecret_proof(app_secret: &Secret, access_token: &Secret) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(access_token.expose().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Describes a failed request with the causes in its source chain, such as
/// "Connection refused" or "operation timed out". The URL is dropped because
/// its query string contains the access token and `appsecret_proof`. Any of
/// `secrets` that a cause quotes is replaced with `[redacted]`.
fn transport_error(error: reqwest::Error, secrets: &[&str]) -> GraphError {
    let mut text = error_chain(&error.without_url());
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    GraphError::Transport(text)
}

/// Splits a bulk-read answer into its data and the next cursor.
///
/// The cursor comes from `paging.cursors.after` (or, failing that, from the
/// `after` parameter of `paging.next`), and only when `paging.next` is
/// present: Meta leaves `next` out on the last page, and an answer with no
/// `paging` at all is complete.
pub fn parse_leads_page(body: &[u8]) -> Result<LeadsPage, GraphError> {
    #[derive(serde::Deserialize)]
    struct Body {
        data: Vec<Box<RawValue>>,
        #[serde(default)]
        paging: Value,
    }

    match serde_json::from_slice::<Body>(body) {
        Ok(Body { data, paging }) => Ok(LeadsPage {
            leads: data,
            next_cursor: next_cursor(&paging)?,
        }),
        // An unusual body: decoding it as a value names what is wrong.
        Err(raw_error) => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|error| GraphError::Decode(error.to_string()))?;
            parse_list_page(value)?;
            Err(GraphError::Decode(format!(
                "bulk-read response: {raw_error}"
            )))
        }
    }
}

fn parse_list_page(body: Value) -> Result<ListPage, GraphError> {
    let Value::Object(mut map) = body else {
        return Err(GraphError::Decode(
            "bulk-read response is not a JSON object".to_owned(),
        ));
    };
    let items = match map.remove("data") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(GraphError::Decode(format!(
                "`data` is {other}, expected a list"
            )))
        }
        None => {
            return Err(GraphError::Decode(
                "bulk-read response has no `data` list".to_owned(),
            ))
        }
    };
    let paging = map.remove("paging").unwrap_or(Value::Null);
    Ok(ListPage {
        items,
        next_cursor: next_cursor(&paging)?,
    })
}

/// Returns the `after` cursor of the next page, or `None` when
/// `paging.next` is absent.
fn next_cursor(paging: &Value) -> Result<Option<String>, GraphError> {
    let Some(next_url) = paging.get("next").and_then(Value::as_str) else {
        return Ok(None);
    };
    let from_cursors = paging
        .pointer("/cursors/after")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let from_url = || {
        Url::parse(next_url)
            .ok()?
            .query_pairs()
            .find(|(name, _)| name == "after")
            .map(|(_, value)| value.into_owned())
    };
    let cursor = from_cursors.or_else(from_url).ok_or_else(|| {
        GraphError::Decode("`paging.next` is present but no `after` cursor was found".to_owned())
    })?;
    Ok(Some(cursor))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn api_error(code: i64, subcode: Option<i64>) -> ApiError {
        ApiError {
            message: String::new(),
            error_type: "OAuthException".to_owned(),
            code,
            error_subcode: subcode,
            is_transient: None,
            fbtrace_id: None,
        }
    }

    #[tokio::test]
    async fn transport_error_names_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config: GraphConfig = toml::from_str(&format!(
            "base_url = \"http://127.0.0.1:{port}\"\napp_secret = \"app-secret\"\nmax_attempts = 1\n"
        ))
        .unwrap();
        let graph = GraphClient::new(&config).unwrap();
        let token = Secret::new("EAAB-transport-token");
        let proof = appsecret_proof(config.app_secret.as_ref().unwrap(), &token);
        let auth = PageAuth {
            page_id: "100000000000001".to_owned(),
            access_token: token,
        };

        let error = graph
            .page(&auth)
            .await
            .expect_err("nothing listens on the port");

        let GraphError::Transport(message) = &error else {
            panic!("expected a transport error, got {error:?}");
        };
        assert!(message.contains("Connection refused"), "{message}");
        assert!(!message.contains("EAAB-transport-token"), "{message}");
        assert!(!message.contains(&proof), "{message}");
        assert!(!message.contains("access_token"), "{message}");
        assert!(!message.contains(&port.to_string()), "{message}");
    }

    #[test]
    fn codes_map_to_classes() {
        let cases = [
            (4, None, ErrorClass::RateLimited),
            (17, None, ErrorClass::RateLimited),
            (32, None, ErrorClass::RateLimited),
            (613, None, ErrorClass::RateLimited),
            (80_005, None, ErrorClass::RateLimited),
            (1, None, ErrorClass::Transient),
            (2, None, ErrorClass::Transient),
            (341, None, ErrorClass::Transient),
            (368, None, ErrorClass::Transient),
            (190, Some(463), ErrorClass::Token),
            (102, None, ErrorClass::Token),
            (10, None, ErrorClass::Permission),
            (200, None, ErrorClass::Permission),
            (299, None, ErrorClass::Permission),
            (100, Some(33), ErrorClass::NotFound),
            (100, None, ErrorClass::Invalid),
        ];
        for (code, subcode, expected) in cases {
            assert_eq!(
                classify(400, &api_error(code, subcode)),
                expected,
                "code {code}"
            );
        }
    }

    #[test]
    fn status_alone_decides_only_unknown_codes() {
        assert_eq!(classify(500, &api_error(190, None)), ErrorClass::Token);
        assert_eq!(
            classify(500, &api_error(12345, None)),
            ErrorClass::Transient
        );
        assert_eq!(classify(400, &api_error(12345, None)), ErrorClass::Invalid);
    }

    #[test]
    fn filtering_uses_integer_seconds() {
        let param = filtering_param(&[TimeFilter::GreaterThan(1_714_557_600)]);

        assert_eq!(
            param,
            r#"[{"field":"time_created","operator":"GREATER_THAN","value":1714557600}]"#
        );
    }

    #[test]
    fn empty_page_with_next_continues() {
        let body = json!({"data": [], "paging": {"cursors": {"after": "QQ"}, "next": "https://graph.example/v25.0/1/leads?after=QQ"}});

        let page = parse_leads_page(body.to_string().as_bytes()).unwrap();

        assert!(page.leads.is_empty());
        assert_eq!(page.next_cursor.as_deref(), Some("QQ"));
    }

    #[test]
    fn no_paging_ends_read() {
        let page = parse_leads_page(br#"{"data": []}"#).unwrap();

        assert!(page.next_cursor.is_none());
    }

    #[test]
    fn cursor_without_next_ends_read() {
        let body =
            json!({"data": [{"id": "1"}], "paging": {"cursors": {"before": "A", "after": "B"}}});

        let page = parse_leads_page(body.to_string().as_bytes()).unwrap();

        assert!(page.next_cursor.is_none());
    }

    #[test]
    fn next_url_supplies_missing_cursor() {
        let body = json!({"data": [], "paging": {"next": "https://graph.example/v25.0/1/leads?limit=100&after=XYZ"}});

        assert_eq!(
            parse_leads_page(body.to_string().as_bytes())
                .unwrap()
                .next_cursor
                .as_deref(),
            Some("XYZ")
        );
    }

    #[test]
    fn proof_is_hmac_of_token() {
        let proof = appsecret_proof(&Secret::new("test_secret"), &Secret::new("token"));

        assert_eq!(proof.len(), 64);
        assert_eq!(
            proof,
            appsecret_proof(&Secret::new("test_secret"), &Secret::new("token"))
        );
        assert_ne!(
            proof,
            appsecret_proof(&Secret::new("other"), &Secret::new("token"))
        );
    }

    #[test]
    fn usage_headers_take_highest_percentage() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-app-usage",
            HeaderValue::from_static(r#"{"call_count":10,"total_cputime":5,"total_time":7}"#),
        );
        headers.insert(
            "x-business-use-case-usage",
            HeaderValue::from_static(
                r#"{"111":[{"type":"lead_generation","call_count":92,"total_cputime":3,"total_time":4,"estimated_time_to_regain_access":2}]}"#,
            ),
        );

        let usage = parse_usage_headers("111", &headers).unwrap();

        assert_eq!(usage.percent, 92.0);
        assert_eq!(usage.regain_minutes, 2);
        assert_eq!(parse_usage_headers("222", &headers).unwrap().percent, 10.0);
    }

    #[test]
    fn error_display_has_no_token() {
        let error = GraphError::Api {
            status: 400,
            error: api_error(190, Some(463)),
            regain_after: None,
        };

        let text = error.to_string();

        assert!(text.contains("190"), "{text}");
        assert!(text.contains("subcode 463"), "{text}");
    }
}
