//! A broker outage: while Kafka is stopped, webhooks get 503 and never 200;
//! once it is back, every lead flows with no loss and no duplicate.
//!
//! This test stops and starts the broker of the local stack with
//! `scripts/stack kafka-stop` and `kafka-start`, so it lives alone in its
//! own test binary: cargo runs test binaries one after another.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::{
    assert_unique_keys, one_form_world, post_webhook, read_leads, stack, start_connector,
    start_sim, webhook_body, Options, PageSpec, Reader, Topics,
};
use leadgen_connector::sim::WebhookConfig;

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAASIM-outage";

fn page() -> PageSpec<'static> {
    PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }
}

fn stack_command(action: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stack");
    let status = Command::new(script)
        .arg(action)
        .status()
        .expect("scripts/stack runs");
    assert!(status.success(), "scripts/stack {action} failed");
}

/// Starts the broker again even when an assertion fails mid-test.
struct RestartBroker;

impl Drop for RestartBroker {
    fn drop(&mut self) {
        stack_command("kafka-start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_503_while_broker_is_down_and_nothing_is_lost() {
    let stack = stack();
    let sim = start_sim(one_form_world(21, &page(), "Outage", 50)).await;
    let topics = Topics::new("outage");
    let options = Options {
        graph: format!("app_secret = \"{}\"", common::APP_SECRET),
        backfill: "interval = \"2s\"".to_owned(),
        webhook_verify_token: Some("verify".to_owned()),
        webhook: "durable_timeout = \"2s\"".to_owned(),
        ..Options::default()
    };
    let running = start_connector(&stack, &sim.base_url(), &topics, page(), &options).await;
    let webhook = running.webhook_url.clone().unwrap();
    let reader = Reader::new(&stack, &topics.leads);
    assert_eq!(
        reader
            .read(50, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .len(),
        50
    );

    stack_command("kafka-stop");
    let restart = RestartBroker;
    let mut created: HashSet<String> = HashSet::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let ids = sim.add_leads(FORM, 4);
        statuses.push(post_webhook(&webhook, &webhook_body(PAGE, FORM, &ids)).await);
        created.extend(ids);
    }
    // The simulator's own sender retries, as Meta does, until the broker is back.
    let mut sender = WebhookConfig::new(webhook.clone());
    sender.app_secret = Some(common::APP_SECRET.to_owned());
    sender.retry_initial = Duration::from_millis(500);
    sender.retry_max = Duration::from_secs(2);
    sender.retry_for = Duration::from_secs(300);
    sim.set_webhook(Some(sender)).unwrap();
    created.extend(sim.add_leads(FORM, 30));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failed_during_outage = sim.webhook_stats().failed.values().sum::<u64>();
    drop(restart);

    let records = read_leads(
        &stack,
        &reader,
        created.len(),
        Duration::from_secs(180),
        Duration::from_secs(8),
    )
    .await;
    running.stop().await;

    assert!(
        statuses.iter().all(|status| *status == 503),
        "webhooks during the outage got {statuses:?}, never 200"
    );
    assert!(
        failed_during_outage > 0,
        "the simulator saw failed deliveries while the broker was down"
    );
    assert_eq!(
        assert_unique_keys(&records),
        created,
        "every lead of the outage arrives once"
    );
}
