//! Webhooks merged with the backfill, against the simulator's webhook
//! sender, the real broker and the registry: a mixed run where webhooks
//! are dropped, repeated and reordered, and a burst whose lead reads are
//! coalesced.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    assert_unique_keys, config_with, read_leads, stack, Options, PageSpec, Reader, Running, Topics,
};
use leadgen_connector::sim::{
    self, EndpointKind, SimConfig, SimForm, SimHandle, SimPage, WebhookConfig,
};

const PAGE: &str = "100000000000001";
const TOKEN: &str = "EAASIM-exactly-once";
const FORMS: [&str; 4] = [
    "200000001000001",
    "200000001000002",
    "200000001000003",
    "200000001000004",
];

async fn simulator() -> SimHandle {
    let forms = FORMS
        .iter()
        .map(|id| SimForm {
            id: (*id).to_owned(),
            name: format!("Form {id}"),
            initial_leads: 0,
        })
        .collect();
    let config = SimConfig {
        seed: 3,
        app_secret: None,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms,
        }],
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

fn options(interval: &str) -> Options {
    Options {
        graph: format!("app_secret = \"{}\"", common::APP_SECRET),
        backfill: format!("interval = \"{interval}\""),
        webhook_verify_token: Some("verify".to_owned()),
        ..Options::default()
    }
}

fn sender(url: &str) -> WebhookConfig {
    let mut config = WebhookConfig::new(url);
    config.app_secret = Some(common::APP_SECRET.to_owned());
    config.retry_initial = Duration::from_millis(200);
    config.retry_max = Duration::from_secs(2);
    config.retry_for = Duration::from_secs(300);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_run_writes_every_lead_once() {
    let stack = stack();
    let sim = simulator().await;
    let topics = Topics::new("mixed");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &FORMS,
    }];
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &pages,
        &options("5s"),
    ))
    .await;
    let mut webhooks = sender(running.webhook_url.as_deref().unwrap());
    webhooks.drop_share = 0.3;
    webhooks.duplicate_share = 0.2;
    webhooks.delay_share = 0.1;
    webhooks.delay = Duration::from_secs(2);
    webhooks.reorder_window = Duration::from_millis(300);
    webhooks.batch_max = 5;
    sim.set_webhook(Some(webhooks)).unwrap();
    let reader = Reader::new(&stack, &topics.leads);

    // 5 000 leads over about 100 seconds, in bursts across the four forms.
    let mut created = HashSet::new();
    for round in 0..100 {
        for form in FORMS {
            created.extend(sim.add_leads(form, if round % 2 == 0 { 10 } else { 15 }));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let records = read_leads(
        &stack,
        &reader,
        created.len(),
        Duration::from_secs(180),
        Duration::from_secs(8),
    )
    .await;
    let webhook_stats = sim.webhook_stats();
    let scraped = reqwest::get(format!("{}/metrics", running.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    running.stop().await;

    assert_eq!(created.len(), 5000);
    let keys = assert_unique_keys(&records);
    assert_eq!(keys.len(), 5000, "every lead once");
    assert_eq!(keys, created);
    let by_backfill = records
        .iter()
        .filter(|record| record.headers.get("source").map(String::as_str) == Some("BACKFILL"))
        .count();
    assert!(
        webhook_stats.dropped > 1000,
        "about 30 % of webhooks dropped: {webhook_stats:?}"
    );
    assert!(
        webhook_stats.duplicated > 500,
        "about 20 % of webhooks repeated: {webhook_stats:?}"
    );
    assert!(
        by_backfill as u64 >= webhook_stats.dropped,
        "dropped leads arrive by backfill ({by_backfill} of {})",
        webhook_stats.dropped
    );
    assert!(
        scraped.contains("leadgen_duplicates_skipped_total"),
        "repeated webhooks were counted as duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_reads_leads_in_few_calls() {
    let stack = stack();
    let sim = simulator().await;
    let topics = Topics::new("burst");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &FORMS,
    }];
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &pages,
        &options("1h"),
    ))
    .await;
    // Let the first bulk read of every form finish before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.set_webhook(Some(sender(running.webhook_url.as_deref().unwrap())))
        .unwrap();
    let reader = Reader::new(&stack, &topics.leads);
    let before = sim.stats();

    let created: HashSet<String> = sim.add_leads(FORMS[0], 1000).into_iter().collect();
    let records = read_leads(
        &stack,
        &reader,
        1000,
        Duration::from_secs(120),
        Duration::from_secs(2),
    )
    .await;
    let after = sim.stats();
    running.stop().await;

    assert_eq!(assert_unique_keys(&records), created);
    let reads = |stats: &sim::SimStats| {
        stats.endpoint(EndpointKind::Ids).calls
            + stats.endpoint(EndpointKind::Lead).calls
            + stats.endpoint(EndpointKind::FormLeads).calls
    };
    let calls = reads(&after) - reads(&before);
    let per_lead = calls as f64 / 1000.0;
    assert!(
        per_lead <= 0.1,
        "{calls} Graph calls for 1 000 webhooks: {per_lead} per lead"
    );
}
