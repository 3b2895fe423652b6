//! The webhook receiver: Meta's subscription handshake and signed
//! `leadgen` change notifications.
//!
//! A POST is answered 200 only once every `leadgen` change in it is durable
//! in the notifications topic (`acks=all`). When Kafka does not confirm
//! within `durable_timeout` the answer is 503 and Meta delivers again, so a
//! notification is never acknowledged and lost. A bad or missing signature
//! gets 401, a malformed body 400, an oversized one 413 and a body not
//! received within `body_read_timeout` 408, and none of them writes
//! anything. The signature is checked over the body bytes
//! exactly as received.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, Mac};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::kafka::{KafkaSetup, SinkError};
use crate::lead::{is_graph_id, parse_created_time};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::telemetry::LogLimiter;

/// Minimum time between two log lines about bodies not received within
/// `webhook.body_read_timeout`. The `read_timeout` outcome of
/// `leadgen_webhook_requests` counts each.
const READ_TIMEOUT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Minimum time between two log lines about rejected signatures. The
/// `rejected_signature` outcome of `leadgen_webhook_requests` counts each.
const REJECTED_SIGNATURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One `leadgen` change, as stored in the notifications topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub leadgen_id: String,
    pub page_id: String,
    pub form_id: String,
    #[serde(default)]
    pub ad_id: Option<String>,
    #[serde(default)]
    pub adgroup_id: Option<String>,
    /// Lead creation time from the webhook, Unix seconds, when valid.
    #[serde(default)]
    pub created_time: Option<i64>,
    /// When the receiver accepted the notification, Unix milliseconds.
    pub received_at_ms: i64,
}

/// A change that cannot become a [`Notification`], kept for the dead-letter
/// topic with the reason.
#[derive(Debug, Clone)]
pub struct InvalidChange {
    pub change: Value,
    pub detail: String,
}

/// Notifications, invalid changes and ignored changes of one webhook body.
#[derive(Debug, Default)]
pub struct Parsed {
    pub notifications: Vec<Notification>,
    pub invalid: Vec<InvalidChange>,
    /// Changes of other fields (such as `feed`), which are ignored.
    pub ignored: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body has no `entry` list")]
    NoEntries,
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` against the raw body.
pub fn signature_is_valid(app_secret: &Secret, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_digest) = header.and_then(|value| value.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Compares two secrets in time independent of where they differ.
fn secrets_match(expected: &Secret, given: &str) -> bool {
    let expected = expected.expose().as_bytes();
    let given = given.as_bytes();
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |acc, (left, right)| acc | (left ^ right))
            == 0
}

/// Extracts every `leadgen` change of every entry.
pub fn parse_body(body: &[u8], received_at_ms: i64) -> Result<Parsed, ParseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| ParseError::NotJson(error.to_string()))?;
    let entries = value
        .get("entry")
        .and_then(Value::as_array)
        .ok_or(ParseError::NoEntries)?;

    let mut parsed = Parsed::default();
    for entry in entries {
        let entry_page = entry.get("id").and_then(id_text);
        let changes = entry
            .get("changes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for change in changes {
            if change.get("field").and_then(Value::as_str) != Some("leadgen") {
                parsed.ignored += 1;
                continue;
            }
            let empty = Value::Null;
            let fields = change.get("value").unwrap_or(&empty);
            match notification(fields, entry_page.as_deref(), received_at_ms) {
                Ok(notification) => parsed.notifications.push(notification),
                Err(detail) => parsed.invalid.push(InvalidChange {
                    change: change.clone(),
                    detail,
                }),
            }
        }
    }
    Ok(parsed)
}

fn notification(
    value: &Value,
    entry_page: Option<&str>,
    received_at_ms: i64,
) -> Result<Notification, String> {
    let required = |name: &str| -> Result<String, String> {
        let text = value
            .get(name)
            .and_then(id_text)
            .ok_or_else(|| format!("`{name}` is missing"))?;
        if is_graph_id(&text) {
            Ok(text)
        } else {
            Err(format!("`{name}` value `{text}` is not a Graph id"))
        }
    };
    let leadgen_id = required("leadgen_id")?;
    let form_id = required("form_id")?;
    let page_id = match required("page_id") {
        Ok(page_id) => page_id,
        Err(error) => entry_page.map(str::to_owned).ok_or(error)?,
    };
    // The lead body's time is authoritative; a bad webhook time is not fatal.
    let created_time = value
        .get("created_time")
        .and_then(|time| parse_created_time(time).ok())
        .map(|millis| millis.div_euclid(1000));

    Ok(Notification {
        leadgen_id,
        page_id,
        form_id,
        ad_id: value.get("ad_id").and_then(id_text),
        adgroup_id: value.get("adgroup_id").and_then(id_text),
        created_time,
        received_at_ms,
    })
}

/// Reads an id sent as a string or as a JSON number.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => number.as_u64().map(|id| id.to_string()),
        _ => None,
    }
}

/// Shared state of the webhook handlers.
pub struct Receiver {
    app_secret: Secret,
    verify_token: Secret,
    producer: FutureProducer,
    topic: String,
    dead_letter_topic: String,
    durable_timeout: Duration,
    metrics: Arc<Metrics>,
    accepting: AtomicBool,
    body_read_timeout: Duration,
    rejected_signature_log: LogLimiter,
    read_timeout_log: LogLimiter,
}

impl Receiver {
    pub fn new(
        config: &WebhookConfig,
        app_secret: Secret,
        setup: &KafkaSetup,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, SinkError> {
        let mut client = setup.base_config();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                config.durable_timeout.as_millis().to_string(),
            );
        let producer: FutureProducer = client.create()?;

        Ok(Arc::new(Self {
            app_secret,
            verify_token: config.verify_token.clone(),
            producer,
            topic: setup.config().notifications_topic.clone(),
            dead_letter_topic: setup.config().dead_letter_topic.clone(),
            durable_timeout: config.durable_timeout,
            metrics,
            accepting: AtomicBool::new(true),
            body_read_timeout: config.body_read_timeout,
            rejected_signature_log: LogLimiter::new(REJECTED_SIGNATURE_LOG_INTERVAL),
            read_timeout_log: LogLimiter::new(READ_TIMEOUT_LOG_INTERVAL),
        }))
    }

    /// Makes every later POST get 503, for a graceful shutdown.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Writes notifications and dead letters and waits until Kafka has them.
    async fn make_durable(&self, parsed: &Parsed) -> Result<(), String> {
        let mut deliveries = Vec::new();
        for notification in &parsed.notifications {
            let payload =
                serde_json::to_vec(notification).expect("a notification always serialises");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "form_id",
                    value: Some(notification.form_id.as_bytes()),
                })
                .insert(Header {
                    key: "page_id",
                    value: Some(notification.page_id.as_bytes()),
                });
            let record = FutureRecord::to(&self.topic)
                .key(notification.form_id.as_bytes())
                .payload(payload.as_slice())
                .headers(headers);
            deliveries.push(
                self.producer
                    .send_result(record)
                    .map_err(|(error, _)| error.to_string())?,
            );
        }
        for invalid in &parsed.invalid {
            let payload = invalid.change.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some("invalid_notification".as_bytes()),
                })
                .insert(Header {
                    key: "detail",
                    value: Some(invalid.detail.as_bytes()),
                })
                .insert(Header {
                    key: "source",
                    value: Some("WEBHOOK".as_bytes()),
                });
            let record = FutureRecord::<[u8], _>::to(&self.dead_letter_topic)
                .payload(payload.as_bytes())
                .headers(headers);
            deliveries.push(
                self.producer
                    .send_result(record)
                    .map_err(|(error, _)| error.to_string())?,
            );
        }

        let all = futures::future::join_all(deliveries);
        let results = tokio::time::timeout(self.durable_timeout, all)
            .await
            .map_err(|_| format!("Kafka did not confirm within {:?}", self.durable_timeout))?;
        for result in results {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(error.to_string()),
                Err(_) => return Err("delivery report was lost".to_owned()),
            }
        }
        Ok(())
    }
}

/// Routes of the webhook listener.
pub fn router(receiver: Arc<Receiver>, path: &str, max_body_bytes: usize) -> Router {
    Router::new()
        .route(path, get(handshake).post(receive))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(receiver)
}

#[derive(Deserialize)]
struct HandshakeQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn handshake(
    State(receiver): State<Arc<Receiver>>,
    query: Result<Query<HandshakeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        receiver.metrics.webhook("handshake_rejected");
        return (StatusCode::FORBIDDEN, "verification failed").into_response();
    };
    let token_ok = query
        .verify_token
        .as_deref()
        .is_some_and(|token| secrets_match(&receiver.verify_token, token));
    match (query.mode.as_deref(), token_ok, query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            receiver.metrics.webhook("handshake_accepted");
            tracing::info!("webhook subscription handshake accepted");
            (StatusCode::OK, [("content-type", "text/plain")], challenge).into_response()
        }
        _ => {
            receiver.metrics.webhook("handshake_rejected");
            tracing::warn!(
                mode = query.mode.as_deref().unwrap_or(""),
                "webhook subscription handshake rejected"
            );
            (StatusCode::FORBIDDEN, "verification failed").into_response()
        }
    }
}

async fn receive(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    let headers: HeaderMap = request.headers().clone();
    // The body is read here, not by an extractor, so the read can time out.
    // Reading it as `Bytes` keeps the limit of `DefaultBodyLimit`.
    let body = tokio::time::timeout(
        receiver.body_read_timeout,
        Bytes::from_request(request, &()),
    )
    .await;
    let body = match body {
        Err(_) => {
            receiver.metrics.webhook("read_timeout");
            if let Some(held_back) = receiver.read_timeout_log.admit() {
                tracing::warn!(
                    timeout_ms = receiver.body_read_timeout.as_millis() as u64,
                    not_logged_since_last = held_back,
                    "webhook rejected with 408: body not received within webhook.body_read_timeout. Such rejections are logged at most once a minute and all are counted in leadgen_webhook_requests_total{{outcome=\"read_timeout\"}}"
                );
            }
            return (StatusCode::REQUEST_TIMEOUT, "body not received in time").into_response();
        }
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            receiver.metrics.webhook("too_large");
            return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
        }
        Ok(Err(rejection)) => {
            receiver.metrics.webhook("malformed");
            return (rejection.status(), "cannot read body").into_response();
        }
    };
    if !receiver.accepting.load(Ordering::SeqCst) {
        receiver.metrics.webhook("shutting_down");
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }

    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|value| value.to_str().ok());
    if !signature_is_valid(&receiver.app_secret, &body, signature) {
        receiver.metrics.webhook("rejected_signature");
        if let Some(held_back) = receiver.rejected_signature_log.admit() {
            tracing::warn!(
                bytes = body.len(),
                signature_present = signature.is_some(),
                not_logged_since_last = held_back,
                "webhook rejected: invalid X-Hub-Signature-256; check graph.app_secret. Rejections are logged at most once a minute and all are counted in leadgen_webhook_requests_total{{outcome=\"rejected_signature\"}}"
            );
        }
        return (StatusCode::UNAUTHORIZED, "invalid signature").into_response();
    }

    let parsed = match parse_body(&body, chrono::Utc::now().timestamp_millis()) {
        Ok(parsed) => parsed,
        Err(error) => {
            receiver.metrics.webhook("malformed");
            tracing::warn!(error = %error, "webhook rejected: malformed body");
            return (StatusCode::BAD_REQUEST, "malformed body").into_response();
        }
    };

    match receiver.make_durable(&parsed).await {
        Ok(()) => {
            receiver.metrics.webhook("accepted");
            receiver
                .metrics
                .notifications_accepted
                .inc_by(parsed.notifications.len() as u64);
            tracing::debug!(
                notifications = parsed.notifications.len(),
                invalid = parsed.invalid.len(),
                ignored = parsed.ignored,
                "webhook accepted"
            );
            (StatusCode::OK, "EVENT_RECEIVED").into_response()
        }
        Err(error) => {
            receiver.metrics.webhook("unavailable");
            receiver.metrics.kafka_produce_errors.inc();
            tracing::error!(error = %error, notifications = parsed.notifications.len(), "webhook not durable; responding 503 so Meta retries");
            (StatusCode::SERVICE_UNAVAILABLE, "not durable, retry").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaConfig;
    use crate::metrics::Outcome;
    use crate::telemetry::capture::capture_logs;

    /// Serves a receiver with the `[webhook]` keys in `config` on a local
    /// port, with Kafka at a closed port, and returns the webhook URL.
    async fn serve_receiver(config: &str) -> (Arc<Receiver>, String) {
        let config: WebhookConfig =
            toml::from_str(&format!("verify_token = \"verify\"\n{config}")).unwrap();
        let kafka: KafkaConfig = toml::from_str("bootstrap_servers = \"127.0.0.1:1\"").unwrap();
        let receiver = Receiver::new(
            &config,
            Secret::new("app-secret"),
            &KafkaSetup::new(kafka),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let app = router(receiver.clone(), "/webhook", config.max_body_bytes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{address}/webhook"))
    }

    /// Sends `request` on a new connection, stops sending without closing
    /// it, and returns the status line of the response.
    async fn send_raw(url: &str, request: &str) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

        let address = url
            .trim_start_matches("http://")
            .trim_end_matches("/webhook");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut status_line = String::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(stream).read_line(&mut status_line),
        )
        .await
        .expect("the receiver responds within 5 s")
        .unwrap();
        status_line
    }

    #[tokio::test]
    async fn slow_body_gets_408() {
        let (receiver, url) = serve_receiver("body_read_timeout = \"200ms\"").await;
        let partial =
            "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"object\"";

        let started = std::time::Instant::now();
        let status_line = send_raw(&url, partial).await;

        assert!(status_line.starts_with("HTTP/1.1 408"), "{status_line}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let timeouts = receiver
            .metrics
            .webhook_requests
            .get_or_create(&Outcome {
                outcome: "read_timeout".to_owned(),
            })
            .get();
        assert_eq!(timeouts, 1);
    }

    #[tokio::test]
    async fn complete_body_is_read_before_timeout() {
        let (_receiver, url) = serve_receiver("body_read_timeout = \"200ms\"").await;
        let body = r#"{"object":"page","entry":[]}"#;
        let request = format!(
            "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nX-Hub-Signature-256: sha256=00\r\n\r\n{body}",
            body.len()
        );

        let status_line = send_raw(&url, &request).await;

        assert!(status_line.starts_with("HTTP/1.1 401"), "{status_line}");
    }

    #[tokio::test]
    async fn oversized_body_still_gets_413() {
        let (_receiver, url) = serve_receiver("max_body_bytes = 1024").await;
        let body = "x".repeat(2048);
        let request = format!(
            "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );

        let status_line = send_raw(&url, &request).await;

        assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    }

    #[tokio::test]
    async fn rejected_signatures_log_once_per_interval() {
        let (_guard, logs) = capture_logs();
        let (receiver, url) = serve_receiver("").await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();

        for _ in 0..3 {
            let response = client
                .post(&url)
                .header("x-hub-signature-256", "sha256=00")
                .body(r#"{"object":"page","entry":[]}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
        }

        let text = logs.text();
        assert_eq!(
            text.matches("invalid X-Hub-Signature-256").count(),
            1,
            "{text}"
        );
        let rejected = receiver
            .metrics
            .webhook_requests
            .get_or_create(&Outcome {
                outcome: "rejected_signature".to_owned(),
            })
            .get();
        assert_eq!(rejected, 3);
    }

    #[test]
    fn signature_checks_raw_bytes() {
        let secret = Secret::new("test_secret");
        let body = br#"{"a":"caf\u00e9"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"test_secret").unwrap();
        mac.update(body);
        let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));

        assert!(signature_is_valid(&secret, body, Some(&header)));
        assert!(!signature_is_valid(
            &secret,
            br#"{"a":"caf\u00e9" }"#,
            Some(&header)
        ));
        assert!(!signature_is_valid(&secret, body, None));
        assert!(!signature_is_valid(&secret, body, Some("sha1=abc")));
        assert!(!signature_is_valid(&secret, body, Some("sha256=zz")));
    }

    #[test]
    fn numeric_ids_become_text() {
        let body = br#"{"object":"page","entry":[{"id":153125381133,"time":1438292065,"changes":[{"field":"leadgen","value":{"leadgen_id":123123123123,"page_id":123123123,"form_id":12312312312,"adgroup_id":12312312312,"ad_id":12312312312,"created_time":1440120384}}]}]}"#;

        let parsed = parse_body(body, 0).unwrap();

        assert_eq!(parsed.notifications[0].leadgen_id, "123123123123");
        assert_eq!(parsed.notifications[0].created_time, Some(1_440_120_384));
    }

    #[test]
    fn change_without_lead_id_is_invalid_not_dropped() {
        let body = br#"{"object":"page","entry":[{"id":"1","changes":[{"field":"leadgen","value":{"form_id":"2"}}]}]}"#;

        let parsed = parse_body(body, 0).unwrap();

        assert!(parsed.notifications.is_empty());
        assert_eq!(parsed.invalid.len(), 1);
    }

    #[test]
    fn body_without_entries_is_malformed() {
        assert_eq!(
            parse_body(br#"{"object":"page"}"#, 0).unwrap_err(),
            ParseError::NoEntries
        );
        assert!(matches!(
            parse_body(b"not json", 0),
            Err(ParseError::NotJson(_))
        ));
    }

    #[test]
    fn secrets_compare_whole_value() {
        let secret = Secret::new("expected_token");

        assert!(secrets_match(&secret, "expected_token"));
        assert!(!secrets_match(&secret, "expected_tokem"));
        assert!(!secrets_match(&secret, "expected"));
    }
}
