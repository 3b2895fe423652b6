//! The notification consumer fenced by the broker, which fences a static
//! member when another member joins with the same `group.instance.id`. The
//! test joins the connector's group with the connector's id. The connector
//! must report itself not ready, build a new consumer, and write every lead
//! that later webhooks name exactly once.
//!
//! The backfill runs only at start-up here, so leads created after it can
//! arrive only through the webhook path.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

use common::{
    assert_unique_keys, one_form_world, post_webhook, read_leads, stack, start_connector,
    start_sim, webhook_body, Options, PageSpec, Reader, Running, Stack, Topics,
};

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAASIM-fenced";

fn page() -> PageSpec<'static> {
    PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }
}

async fn ready(running: &Running) -> Value {
    reqwest::get(format!("{}/ready", running.admin_url))
        .await
        .expect("/ready answers")
        .json()
        .await
        .expect("/ready returns JSON")
}

/// Polls `/ready` until `condition` is true or `timeout` passes, and returns
/// the first body that matched.
async fn wait_for_ready_body(
    running: &Running,
    timeout: Duration,
    condition: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let body = ready(running).await;
        if condition(&body) {
            return Some(body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Value of the notification consumer's restart counter in `/metrics`, or 0
/// when the line is missing.
async fn consumer_restarts(running: &Running) -> u64 {
    let text = reqwest::get(format!("{}/metrics", running.admin_url))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics returns text");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(
                "leadgen_kafka_client_restarts_total{client=\"notification_consumer\"} ",
            )
        })
        .map(|value| value.trim().parse().expect("counter value is a number"))
        .unwrap_or(0)
}

/// Joins the connector's consumer group with the connector's
/// `group.instance.id`, which makes the broker fence the connector's
/// member, and returns once the group has assigned partitions to it.
async fn join_as_connector(stack: &Stack, topics: &Topics) -> BaseConsumer {
    let stack = stack.clone();
    let topics = topics.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.bootstrap)
            .set("group.id", format!("{}-group", topics.transactional_id))
            .set("group.instance.id", &topics.transactional_id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("fencing consumer is created");
        consumer
            .subscribe(&[&topics.notifications])
            .expect("fencing consumer subscribes");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                eprintln!("fencing consumer: {error}");
            }
            let assigned = consumer
                .assignment()
                .map(|assignment| assignment.count() > 0)
                .unwrap_or(false);
            if assigned {
                return consumer;
            }
            assert!(
                Instant::now() < deadline,
                "fencing consumer got no partitions within 30 s"
            );
        }
    })
    .await
    .expect("fencing consumer task does not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_consumer_recovers_and_writes_once() {
    let stack = stack();
    let sim = start_sim(one_form_world(17, &page(), "Fenced", 0)).await;
    let topics = Topics::new("fenced");
    let options = Options {
        graph: format!("app_secret = \"{}\"", common::APP_SECRET),
        backfill: "interval = \"1h\"".to_owned(),
        webhook_verify_token: Some("verify".to_owned()),
        ..Options::default()
    };
    let running = start_connector(&stack, &sim.base_url(), &topics, page(), &options).await;
    let webhook = running.webhook_url.clone().expect("webhooks are on");
    let reader = Reader::new(&stack, &topics.leads);

    // Leads before the fence, which the start-up bulk read may also write,
    // and a true `/ready` show that the consumer has joined and committed.
    let before: HashSet<String> = sim.add_leads(FORM, 2).into_iter().collect();
    let ids: Vec<String> = before.iter().cloned().collect();
    let before_status = post_webhook(&webhook, &webhook_body(PAGE, FORM, &ids)).await;
    let before_records = read_leads(
        &stack,
        &reader,
        before.len(),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    let consuming_before = wait_for_ready_body(&running, Duration::from_secs(30), |body| {
        body["ready"] == true
    })
    .await;

    let intruder = join_as_connector(&stack, &topics).await;
    let recovering = wait_for_ready_body(&running, Duration::from_secs(30), |body| {
        body["ready"] == false && body["notifications"]["state"] == "recovering"
    })
    .await;
    tokio::task::spawn_blocking(move || drop(intruder))
        .await
        .expect("fencing consumer closes");

    let after: HashSet<String> = sim.add_leads(FORM, 3).into_iter().collect();
    let ids: Vec<String> = after.iter().cloned().collect();
    let after_status = post_webhook(&webhook, &webhook_body(PAGE, FORM, &ids)).await;
    let after_records = read_leads(
        &stack,
        &reader,
        after.len(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .await;
    let ready_again = wait_for_ready_body(&running, Duration::from_secs(30), |body| {
        body["ready"] == true && body["notifications"]["state"] == "consuming"
    })
    .await;
    let restarts = consumer_restarts(&running).await;
    running.stop().await;

    assert_eq!(before_status, 200, "webhook before the fence is accepted");
    assert_eq!(
        assert_unique_keys(&before_records),
        before,
        "leads before the fence arrive once"
    );
    assert!(
        consuming_before.is_some(),
        "/ready is true before the fence"
    );
    assert!(
        recovering.is_some(),
        "/ready reports the notification consumer as recovering after the fence"
    );
    assert_eq!(after_status, 200, "webhook after the fence is accepted");
    let mut all_records = before_records.clone();
    all_records.extend(after_records.iter().cloned());
    assert_unique_keys(&all_records);
    assert_eq!(
        after_records
            .iter()
            .map(|record| record.key.clone())
            .collect::<HashSet<_>>(),
        after,
        "leads named after the fence arrive once"
    );
    assert!(
        after_records
            .iter()
            .all(|record| record.headers.get("source").map(String::as_str) == Some("WEBHOOK")),
        "leads named after the fence come through the webhook path"
    );
    assert!(
        ready_again.is_some(),
        "/ready is true again once the new consumer has its partitions"
    );
    assert!(
        restarts >= 1,
        "the notification consumer restart counter rose, got {restarts}"
    );
}
