//! End-to-end webhook tests: a simulator on 127.0.0.1 sends to a small axum
//! receiver on 127.0.0.1 in place of the connector.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::secret::Secret;
use crate::sim::{start, SimConfig, SimHandle, WebhookConfig};

const SECRET: &str = "webhook-test-secret";
const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const OTHER_PAGE: &str = "100000000000002";
const OTHER_PAGE_FORM: &str = "200000002000001";
/// Maximum wait for the sender to finish in a test.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Responses of the test receiver.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    /// Count of requests, from the first, that get `fail_status`.
    fail_first: usize,
    fail_status: u16,
    /// Count of requests, from the first, whose response waits `slow_for`.
    slow_first: usize,
    slow_for: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            fail_first: 0,
            fail_status: 503,
            slow_first: 0,
            slow_for: Duration::ZERO,
        }
    }
}

/// One request the receiver answered.
#[derive(Debug, Clone)]
struct Received {
    content_type: Option<String>,
    signature: Option<String>,
    body: Bytes,
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// Returns every change `value` in the body.
    fn values(&self) -> Vec<Value> {
        let body = self.json();
        let mut values = Vec::new();
        for entry in body["entry"].as_array().expect("entry is a list") {
            for change in entry["changes"].as_array().expect("changes is a list") {
                values.push(change["value"].clone());
            }
        }
        values
    }

    fn lead_ids(&self) -> Vec<String> {
        self.values()
            .iter()
            .map(|value| {
                value["leadgen_id"]
                    .as_str()
                    .expect("leadgen_id is a string")
                    .to_owned()
            })
            .collect()
    }
}

struct ReceiverState {
    behaviour: Behaviour,
    seen: AtomicUsize,
    requests: Mutex<Vec<Received>>,
}

struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Self {
        let state = Arc::new(ReceiverState {
            behaviour,
            seen: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/webhook", post(receive))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().expect("receiver has an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/webhook"),
            state,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("receiver lock").clone()
    }

    /// Returns the lead ids of the requests answered 200, in arrival order.
    fn delivered_ids(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|request| request.status == 200)
            .flat_map(Received::lead_ids)
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let index = state.seen.fetch_add(1, Ordering::SeqCst);
    let behaviour = state.behaviour;
    if index < behaviour.slow_first {
        tokio::time::sleep(behaviour.slow_for).await;
    }
    let status = if index < behaviour.fail_first {
        behaviour.fail_status
    } else {
        200
    };
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().expect("header is text").to_owned())
    };
    state
        .requests
        .lock()
        .expect("receiver lock")
        .push(Received {
            content_type: header("content-type"),
            signature: header("x-hub-signature-256"),
            body,
            status,
        });
    StatusCode::from_u16(status).expect("valid status")
}

/// Webhook settings with short retries, for tests.
fn fast_config(url: &str) -> WebhookConfig {
    WebhookConfig {
        app_secret: Some(SECRET.into()),
        request_timeout: Duration::from_secs(2),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        retry_for: Duration::from_secs(10),
        ..WebhookConfig::new(url)
    }
}

/// Two Pages with two forms each and no initial leads, sending webhooks
/// with `webhook`.
async fn start_sim(seed: u64, webhook: WebhookConfig) -> SimHandle {
    let config = SimConfig {
        webhook: Some(webhook),
        ..SimConfig::generated(seed, 2, 2, 0)
    };
    start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

async fn wait_idle(sim: &SimHandle) {
    tokio::time::timeout(IDLE_TIMEOUT, sim.webhook_idle())
        .await
        .expect("webhook sender becomes idle");
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn signature_verifies_over_raw_body() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let sim = start_sim(7, fast_config(&receiver.url)).await;
    let ids = sim.add_leads(FORM, 3);
    wait_idle(&sim).await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        let signature = request.signature.as_deref().expect("signature header");
        assert_eq!(signature, format!("sha256={}", hmac_hex(&request.body)));
        assert!(crate::webhook::signature_is_valid(
            &Secret::new(SECRET),
            &request.body,
            Some(signature)
        ));
        assert!(!crate::webhook::signature_is_valid(
            &Secret::new("other-secret"),
            &request.body,
            Some(signature)
        ));

        let body = request.json();
        assert_eq!(body["object"], "page");
        assert_eq!(body["entry"][0]["id"], PAGE);
        assert!(body["entry"][0]["time"].is_i64());
        assert_eq!(body["entry"][0]["changes"][0]["field"], "leadgen");

        let parsed = crate::webhook::parse_body(&request.body, 0).expect("connector parses body");
        assert_eq!(parsed.notifications.len(), 1);
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        assert_eq!(parsed.notifications[0].page_id, PAGE);
        assert_eq!(parsed.notifications[0].form_id, FORM);
    }

    let mut received = receiver.delivered_ids();
    received.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn values_match_stored_leads() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let sim = start_sim(7, fast_config(&receiver.url)).await;
    sim.add_leads(FORM, 100);
    wait_idle(&sim).await;

    let leads: HashMap<String, Value> = sim
        .leads(FORM)
        .into_iter()
        .map(|lead| (lead["id"].as_str().expect("id").to_owned(), lead))
        .collect();
    let values: Vec<Value> = receiver
        .requests()
        .iter()
        .flat_map(Received::values)
        .collect();
    assert_eq!(values.len(), 100);

    let mut organic = 0;
    for value in &values {
        let id = value["leadgen_id"]
            .as_str()
            .expect("leadgen_id is a string");
        let lead = &leads[id];
        assert_eq!(value["page_id"], PAGE);
        assert_eq!(value["form_id"], FORM);
        assert!(value["created_time"].is_i64(), "{value}");
        match lead.get("ad_id") {
            Some(ad_id) => {
                assert_eq!(&value["ad_id"], ad_id, "{value}");
                assert_eq!(&value["adgroup_id"], ad_id, "{value}");
            }
            None => {
                organic += 1;
                assert!(value.get("ad_id").is_none(), "organic lead: {value}");
                assert!(value.get("adgroup_id").is_none(), "organic lead: {value}");
            }
        }
    }
    assert!(organic > 0, "no organic lead among 100");
    assert!(organic < 100, "no paid lead among 100");
}

#[tokio::test]
async fn raw_lead_sends_notification() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let sim = start_sim(7, fast_config(&receiver.url)).await;
    let before = chrono::Utc::now().timestamp();
    let id = sim.insert_lead(
        OTHER_PAGE_FORM,
        json!({"id": "9100000000000000001", "form_id": "elsewhere", "created_time": "not a time"}),
    );
    let paid = sim.insert_lead(
        FORM,
        json!({"created_time": "2024-05-01T12:00:00+0000", "ad_id": 6_000_000_001_u64}),
    );
    wait_idle(&sim).await;

    let values: Vec<Value> = receiver
        .requests()
        .iter()
        .flat_map(Received::values)
        .collect();
    let value = values
        .iter()
        .find(|value| value["leadgen_id"] == id.as_str())
        .expect("raw lead announced");
    assert_eq!(value["page_id"], OTHER_PAGE);
    assert_eq!(value["form_id"], OTHER_PAGE_FORM);
    assert!(value["created_time"].as_i64().expect("seconds") >= before);
    assert!(value.get("ad_id").is_none());

    let value = values
        .iter()
        .find(|value| value["leadgen_id"] == paid.as_str())
        .expect("raw lead announced");
    assert_eq!(value["created_time"], 1_714_564_800);
    assert_eq!(value["ad_id"], "6000000001");
    assert_eq!(value["adgroup_id"], "6000000001");
}

#[tokio::test]
async fn initial_leads_send_nothing() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let config = SimConfig {
        webhook: Some(fast_config(&receiver.url)),
        ..SimConfig::generated(7, 1, 2, 50)
    };
    let sim = start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_idle(&sim).await;
    assert!(receiver.requests().is_empty());
    assert_eq!(sim.webhook_stats().notifications, 0);

    sim.add_leads(FORM, 1);
    wait_idle(&sim).await;
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(sim.webhook_stats().notifications, 1);
}

#[tokio::test]
async fn batch_max_groups_changes() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let config = WebhookConfig {
        batch_max: 5,
        batch_linger: Duration::from_millis(300),
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(7, config).await;

    let first = sim.add_leads(FORM, 3);
    let second = sim.add_leads(OTHER_PAGE_FORM, 2);
    wait_idle(&sim).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "5 leads within the linger share a POST");
    let body = requests[0].json();
    let entries = body["entry"].as_array().expect("entry list");
    assert_eq!(entries.len(), 2, "one entry per Page: {body}");
    assert_eq!(entries[0]["id"], PAGE);
    assert_eq!(entries[0]["changes"].as_array().expect("changes").len(), 3);
    assert_eq!(entries[1]["id"], OTHER_PAGE);
    assert_eq!(entries[1]["changes"].as_array().expect("changes").len(), 2);
    let ids: Vec<String> = first.into_iter().chain(second).collect();
    assert_eq!(requests[0].lead_ids(), ids);

    sim.add_leads(FORM, 12);
    wait_idle(&sim).await;
    let mut sizes: Vec<usize> = receiver.requests()[1..]
        .iter()
        .map(|request| request.lead_ids().len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 5, 5]);

    let stats = sim.webhook_stats();
    assert_eq!(stats.delivered, 4);
    assert_eq!(stats.changes_delivered, 17);
    assert_eq!(stats.notifications, 17);
}

/// Creates 1 000 leads with 10 % dropped and 20 % duplicated and returns the
/// delivered lead ids, sorted, with the stats.
async fn run_shares(seed: u64) -> (Vec<String>, Vec<String>, super::WebhookStats) {
    let receiver = Receiver::start(Behaviour::default()).await;
    let config = WebhookConfig {
        drop_share: 0.1,
        duplicate_share: 0.2,
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(seed, config).await;
    let mut created = Vec::new();
    for _ in 0..10 {
        created.extend(sim.add_leads(FORM, 100));
    }
    wait_idle(&sim).await;
    let mut delivered = receiver.delivered_ids();
    delivered.sort();
    (created, delivered, sim.webhook_stats())
}

#[tokio::test]
async fn drop_and_duplicate_shares_hold() {
    let (created_ordered, delivered, stats) = run_shares(11).await;
    let created = created_ordered.clone();
    assert_eq!(stats.notifications, 1000);
    // Binomial(1000, 0.1) and Binomial(about 900, 0.2): about four
    // standard deviations each way.
    assert!((60..=140).contains(&stats.dropped), "{stats:?}");
    assert!((130..=230).contains(&stats.duplicated), "{stats:?}");
    assert_eq!(
        delivered.len() as u64,
        1000 - stats.dropped + stats.duplicated
    );
    assert_eq!(stats.changes_delivered, delivered.len() as u64);
    assert_eq!(stats.pending, 0);

    let mut copies: BTreeMap<&str, u64> = BTreeMap::new();
    for id in &delivered {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let created: HashSet<&str> = created.iter().map(String::as_str).collect();
    assert!(copies.keys().all(|id| created.contains(id)));
    assert_eq!(created.len() as u64 - copies.len() as u64, stats.dropped);
    let twice = copies.values().filter(|count| **count == 2).count() as u64;
    assert_eq!(twice, stats.duplicated);
    assert!(copies.values().all(|count| *count <= 2));

    // Run-time lead ids start from the clock, so compare the positions of
    // the delivered leads in creation order rather than the ids.
    let positions = |created: &[String], delivered: &[String]| -> Vec<usize> {
        let index: BTreeMap<&str, usize> = created
            .iter()
            .enumerate()
            .map(|(position, id)| (id.as_str(), position))
            .collect();
        let mut positions: Vec<usize> = delivered.iter().map(|id| index[id.as_str()]).collect();
        positions.sort_unstable();
        positions
    };
    let (created_again, again, stats_again) = run_shares(11).await;
    assert_eq!(
        positions(&created_again, &again),
        positions(&created_ordered, &delivered),
        "same seed, same deliveries"
    );
    assert_eq!(stats_again.dropped, stats.dropped);
    assert_eq!(stats_again.duplicated, stats.duplicated);
}

#[tokio::test]
async fn retries_deliver_after_503s() {
    let receiver = Receiver::start(Behaviour {
        fail_first: 4,
        ..Behaviour::default()
    })
    .await;
    let sim = start_sim(7, fast_config(&receiver.url)).await;
    let mut ids = sim.add_leads(FORM, 3);
    wait_idle(&sim).await;

    let mut delivered = receiver.delivered_ids();
    delivered.sort();
    ids.sort();
    assert_eq!(delivered, ids);
    let stats = sim.webhook_stats();
    assert_eq!(stats.failures("503"), 4);
    assert_eq!(stats.posts, 7);
    assert_eq!(stats.retries, 4);
    assert_eq!(stats.delivered, 3);
    assert_eq!(stats.abandoned, 0);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn failing_receiver_is_abandoned() {
    let receiver = Receiver::start(Behaviour {
        fail_first: usize::MAX,
        fail_status: 500,
        ..Behaviour::default()
    })
    .await;
    let config = WebhookConfig {
        retry_for: Duration::from_millis(200),
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(7, config).await;
    sim.add_leads(FORM, 1);
    wait_idle(&sim).await;

    let stats = sim.webhook_stats();
    assert_eq!(stats.abandoned, 1);
    assert_eq!(stats.delivered, 0);
    assert!(stats.failures("500") >= 2, "{stats:?}");
    assert_eq!(stats.failures("500"), stats.posts);
}

#[tokio::test]
async fn refused_connection_counts_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port binds");
    let addr = closed.local_addr().expect("bound address");
    drop(closed);
    let config = WebhookConfig {
        retry_for: Duration::from_millis(100),
        ..fast_config(&format!("http://{addr}/webhook"))
    };
    let sim = start_sim(7, config).await;
    sim.add_leads(FORM, 1);
    wait_idle(&sim).await;

    let stats = sim.webhook_stats();
    assert!(stats.failures("connect") >= 1, "{stats:?}");
    assert_eq!(stats.abandoned, 1);
}

#[tokio::test]
async fn slow_receiver_counts_timeout() {
    let receiver = Receiver::start(Behaviour {
        slow_first: usize::MAX,
        slow_for: Duration::from_secs(2),
        ..Behaviour::default()
    })
    .await;
    let config = WebhookConfig {
        request_timeout: Duration::from_millis(100),
        retry_for: Duration::from_millis(300),
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(7, config).await;
    sim.add_leads(FORM, 1);
    wait_idle(&sim).await;

    let stats = sim.webhook_stats();
    assert!(stats.failures("timeout") >= 1, "{stats:?}");
    assert_eq!(stats.abandoned, 1);
}

#[tokio::test]
async fn slow_request_does_not_stall_others() {
    let receiver = Receiver::start(Behaviour {
        slow_first: 1,
        slow_for: Duration::from_secs(1),
        ..Behaviour::default()
    })
    .await;
    let sim = start_sim(7, fast_config(&receiver.url)).await;
    sim.add_leads(FORM, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    sim.add_leads(FORM, 5);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stats = sim.webhook_stats();
    assert_eq!(stats.delivered, 5, "{stats:?}");
    assert_eq!(stats.in_flight, 1, "{stats:?}");
    wait_idle(&sim).await;
    assert_eq!(sim.webhook_stats().delivered, 6);
}

#[tokio::test]
async fn webhook_idle_waits_for_delays() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let config = WebhookConfig {
        delay_share: 1.0,
        delay: Duration::from_millis(400),
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(7, config).await;
    tokio::time::timeout(Duration::from_millis(100), sim.webhook_idle())
        .await
        .expect("idle at once when nothing was sent");

    sim.add_leads(FORM, 2);
    let early = tokio::time::timeout(Duration::from_millis(100), sim.webhook_idle()).await;
    assert!(early.is_err(), "idle before the delay ended");
    assert!(receiver.requests().is_empty());
    assert_eq!(sim.webhook_stats().pending, 2);

    wait_idle(&sim).await;
    assert_eq!(receiver.requests().len(), 2);
    let stats = sim.webhook_stats();
    assert_eq!(stats.delayed, 2);
    assert_eq!(stats.pending, 0);
}

#[tokio::test]
async fn reorder_window_shuffles_posts() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let config = WebhookConfig {
        reorder_window: Duration::from_millis(200),
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(7, config).await;
    let ids = sim.add_leads(FORM, 20);
    wait_idle(&sim).await;

    let delivered = receiver.delivered_ids();
    assert_ne!(delivered, ids, "20 POSTs arrived in creation order");
    let mut sorted = delivered.clone();
    sorted.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(sorted, expected);
}

#[tokio::test]
async fn turning_off_discards_pending() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let config = WebhookConfig {
        delay_share: 1.0,
        delay: Duration::from_secs(60),
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(7, config).await;
    sim.add_leads(FORM, 3);
    sim.set_webhook(None).expect("None is valid");
    wait_idle(&sim).await;

    let stats = sim.webhook_stats();
    assert_eq!(stats.discarded, 3);
    assert!(sim.webhook_config().is_none());
    sim.add_leads(FORM, 1);
    assert_eq!(sim.webhook_stats().notifications, 3);
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn lead_rate_sends_webhooks() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let sim = start_sim(7, fast_config(&receiver.url)).await;
    sim.set_leads_per_second(50.0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    sim.set_leads_per_second(0.0);
    wait_idle(&sim).await;

    let stats = sim.stats();
    assert!(stats.leads_created > 0);
    assert_eq!(stats.webhooks.notifications, stats.leads_created);
    assert_eq!(stats.webhooks.changes_delivered, stats.leads_created);
    assert_eq!(receiver.delivered_ids().len() as u64, stats.leads_created);
}

#[tokio::test]
async fn admin_endpoints_set_and_show_webhook() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let sim = start(
        SimConfig::generated(7, 1, 1, 0),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client builds");
    let base = sim.base_url();

    let unsigned = http
        .put(format!("{base}/_sim/webhook"))
        .json(&json!({"url": receiver.url}))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(unsigned.status().as_u16(), 400);
    let message: Value = unsigned.json().await.expect("error JSON");
    assert!(
        message["error"]
            .as_str()
            .expect("error text")
            .contains("app secret"),
        "{message}"
    );

    let invalid = http
        .put(format!("{base}/_sim/webhook"))
        .json(&json!({"url": receiver.url, "app_secret": SECRET, "drop_share": 2.0}))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(invalid.status().as_u16(), 400);

    let set = http
        .put(format!("{base}/_sim/webhook"))
        .json(
            &json!({"url": receiver.url, "app_secret": SECRET, "batch_max": 3, "retry_for": "5s"}),
        )
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(set.status().as_u16(), 204);

    let added = http
        .post(format!("{base}/_sim/leads"))
        .json(&json!({"form_id": FORM, "count": 2}))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(added.status().as_u16(), 200);
    wait_idle(&sim).await;
    assert_eq!(receiver.delivered_ids().len(), 2);

    let shown: Value = http
        .get(format!("{base}/_sim/webhook"))
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("webhook JSON");
    assert_eq!(shown["config"]["url"], receiver.url.as_str());
    assert_eq!(shown["config"]["batch_max"], 3);
    assert_eq!(shown["config"]["retry_for"], "5s");
    assert!(shown["config"]["app_secret"].is_null(), "{shown}");
    assert!(!shown.to_string().contains(SECRET), "{shown}");
    assert_eq!(shown["stats"]["notifications"], 2);

    let stats: Value = http
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(stats["webhooks"]["changes_delivered"], 2);

    let off = http
        .put(format!("{base}/_sim/webhook"))
        .json(&Value::Null)
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(off.status().as_u16(), 204);
    let shown: Value = http
        .get(format!("{base}/_sim/webhook"))
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("webhook JSON");
    assert!(shown["config"].is_null(), "{shown}");
}

#[tokio::test]
async fn shutdown_stops_sender() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let config = WebhookConfig {
        delay_share: 1.0,
        delay: Duration::from_secs(60),
        ..fast_config(&receiver.url)
    };
    let sim = start_sim(7, config).await;
    sim.add_leads(FORM, 2);
    sim.shutdown();
    wait_idle(&sim).await;
    assert_eq!(sim.webhook_stats().discarded, 2);
    assert!(receiver.requests().is_empty());
}
