//! Webhook receiver cases against the real broker and registry: batched
//! notifications, signatures over the raw bytes, the subscription
//! handshake, rejected requests, and repeated deliveries.

mod common;

use std::time::Duration;

use common::{
    config_with, fixture, fixture_graph, read_leads, sign, stack, FixtureGraph, Options, PageSpec,
    Reader, Running, Topics,
};
use serde_json::json;

const PAGE_1: &str = "100000000000001";
const PAGE_2: &str = "100000000000002";
const FORM_1: &str = "200000000000001";
const FORM_2: &str = "200000000000002";
const VERIFY_TOKEN: &str = "expected_token";

fn lead(id: &str, form: &str, second: u32) -> String {
    json!({
        "id": id,
        "created_time": format!("2024-05-01T10:00:{second:02}+0000"),
        "form_id": form,
        "field_data": [{"name": "email", "values": [format!("{id}@example.com")]}]
    })
    .to_string()
}

async fn graph() -> FixtureGraph {
    fixture_graph(
        vec![
            (FORM_1, None, fixture("graph/b3-no-paging.json")),
            (FORM_2, None, fixture("graph/b3-no-paging.json")),
        ],
        vec![
            ("300000000000001", lead("300000000000001", FORM_1, 1)),
            ("300000000000002", lead("300000000000002", FORM_1, 2)),
            ("300000000000003", lead("300000000000003", FORM_2, 3)),
            ("300000000000004", lead("300000000000004", FORM_1, 4)),
            ("900000000000001", fixture("graph/l1-empty-answer.json")),
        ],
    )
    .await
}

fn options() -> Options {
    Options {
        graph: format!("app_secret = \"{}\"", common::APP_SECRET),
        // Backfill runs rarely here, so every lead below comes by webhook.
        backfill: "interval = \"1h\"".to_owned(),
        webhook_verify_token: Some(VERIFY_TOKEN.to_owned()),
        webhook: "max_body_bytes = 4096".to_owned(),
        ..Options::default()
    }
}

async fn start(name: &str) -> (common::Stack, Topics, FixtureGraph, Running) {
    let stack = stack();
    let graph = graph().await;
    let topics = Topics::new(name);
    let pages = [
        PageSpec {
            id: PAGE_1,
            token: "page-one-token",
            forms: &[FORM_1],
        },
        PageSpec {
            id: PAGE_2,
            token: "page-two-token",
            forms: &[FORM_2],
        },
    ];
    let config = config_with(&stack, &graph.url, &topics, &pages, &options());
    let running = Running::start(config).await;
    (stack, topics, graph, running)
}

async fn post(url: &str, body: &[u8], signature: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    request.send().await.expect("webhook request is answered")
}

fn signature_fixture(name: &str) -> String {
    fixture(&format!("cases/{name}")).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_notification_produces_every_lead() {
    let (stack, topics, graph, running) = start("w1").await;
    let url = running.webhook_url.clone().expect("webhooks are on");
    let body = fixture("cases/webhook-batched.json");

    let response = post(
        &url,
        body.as_bytes(),
        Some(&signature_fixture("webhook-batched.sig")),
    )
    .await;

    assert_eq!(response.status(), 200);
    // A 200 means all three notifications are already in Kafka.
    let notifications = Reader::new(&stack, &topics.notifications)
        .read(3, Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert_eq!(
        notifications.len(),
        3,
        "feed change ignored, three leadgen changes kept"
    );
    let records = read_leads(
        &stack,
        &Reader::new(&stack, &topics.leads),
        3,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    running.stop().await;

    let mut keys: Vec<&str> = records.iter().map(|record| record.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec!["300000000000001", "300000000000002", "300000000000003"]
    );
    assert!(records
        .iter()
        .all(|record| record.headers.get("source").map(String::as_str) == Some("WEBHOOK")));
    let form_two = records
        .iter()
        .find(|record| record.key == "300000000000003")
        .unwrap();
    assert_eq!(
        form_two.headers.get("page_id").map(String::as_str),
        Some(PAGE_2)
    );
    let reads: Vec<String> = graph
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|request| request.starts_with("?"))
        .cloned()
        .collect();
    assert_eq!(reads.len(), 2, "one multi-object read per Page: {reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_covers_raw_escaped_bytes() {
    let (stack, topics, _graph, running) = start("w2").await;
    let url = running.webhook_url.clone().expect("webhooks are on");
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cases/webhook-escaped.json"),
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains(r"caf\u00e9 a\/b x\u0040y"),
        "fixture keeps its escapes byte for byte"
    );

    let reserialised = post(
        &url,
        &body,
        Some(&signature_fixture("webhook-escaped.reserialised.sig")),
    )
    .await;
    let accepted = post(&url, &body, Some(&signature_fixture("webhook-escaped.sig"))).await;

    assert_eq!(reserialised.status(), 401);
    assert_eq!(accepted.status(), 200);
    let records = read_leads(
        &stack,
        &Reader::new(&stack, &topics.leads),
        1,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    running.stop().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "300000000000004");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_echoes_challenge_only_for_right_token() {
    let (_stack, _topics, _graph, running) = start("w3").await;
    let url = running.webhook_url.clone().expect("webhooks are on");
    let client = reqwest::Client::new();

    let good = client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    let wrong_token = client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    let wrong_mode = client
        .get(format!(
            "{url}?hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(good.status(), 200);
    assert!(good.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(good.text().await.unwrap(), "1158201444");
    for response in [wrong_token, wrong_mode] {
        assert_eq!(response.status(), 403);
        assert!(!response.text().await.unwrap().contains("1158201444"));
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_write_nothing() {
    let (stack, topics, _graph, running) = start("w4").await;
    let url = running.webhook_url.clone().expect("webhooks are on");
    let body = fixture("cases/webhook-batched.json");
    let zeros = format!("sha256={}", "0".repeat(64));

    let bad_signature = post(&url, body.as_bytes(), Some(&zeros)).await;
    let no_signature = post(&url, body.as_bytes(), None).await;
    let malformed = post(
        &url,
        b"{\"object\":\"page\",",
        Some(&sign(b"{\"object\":\"page\",")),
    )
    .await;
    let oversized_body = vec![b' '; 8192];
    let oversized = post(&url, &oversized_body, Some(&sign(&oversized_body))).await;

    assert_eq!(bad_signature.status(), 401);
    assert_eq!(no_signature.status(), 401);
    assert_eq!(malformed.status(), 400);
    assert_eq!(oversized.status(), 413);
    let written = Reader::new(&stack, &topics.notifications)
        .read(1, Duration::from_secs(5), Duration::ZERO)
        .await;
    assert!(
        written.is_empty(),
        "rejected requests wrote {} notifications",
        written.len()
    );
    let scraped = reqwest::get(format!("{}/metrics", running.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scraped.contains("leadgen_webhook_requests_total{outcome=\"rejected_signature\"} 2"),
        "{scraped}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_deliveries_give_one_record() {
    let (stack, topics, _graph, running) = start("l1").await;
    let url = running.webhook_url.clone().expect("webhooks are on");
    let body = json!({
        "object": "page",
        "entry": [{"id": PAGE_1, "time": 1714557600, "changes": [{"field": "leadgen", "value": {
            "leadgen_id": "900000000000001", "page_id": PAGE_1, "form_id": FORM_1, "created_time": 1714557600
        }}]}]
    })
    .to_string();

    for _ in 0..6 {
        let response = post(&url, body.as_bytes(), Some(&sign(body.as_bytes()))).await;
        assert_eq!(response.status(), 200);
    }
    let records = read_leads(
        &stack,
        &Reader::new(&stack, &topics.leads),
        1,
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .await;
    running.stop().await;

    assert_eq!(
        records.len(),
        1,
        "six deliveries of one notification give one record"
    );
    assert_eq!(records[0].field_data().get("company_name"), Some(&vec![]));
}
