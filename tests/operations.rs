//! Running behaviour against the simulator, the broker and the registry:
//! the per-Page rate budget, form discovery, server failures during bulk
//! reads, and metrics checked against what the simulator did.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    assert_unique_keys, config_with, read_leads, stack, Options, PageSpec, Reader, Running, Topics,
};
use leadgen_connector::sim::{
    self, EndpointKind, Fault, FaultAction, SimConfig, SimForm, SimHandle, SimPage, WebhookConfig,
};

const PAGE: &str = "100000000000001";
const TOKEN: &str = "EAASIM-operations";

async fn simulator(forms: &[(&str, usize)], budget: Option<u64>, window: Duration) -> SimHandle {
    let forms = forms
        .iter()
        .map(|(id, leads)| SimForm {
            id: (*id).to_owned(),
            name: format!("Form {id}"),
            initial_leads: *leads,
        })
        .collect();
    let config = SimConfig {
        seed: 17,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms,
        }],
        daily_budget_per_page: budget,
        budget_window: window,
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

/// Value of one Prometheus sample line, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Sum of every sample of a metric family whose labels contain `filter`.
fn sum(text: &str, family: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(family) && line.contains(filter))
        .filter_map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse::<f64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_within_the_page_budget() {
    let stack = stack();
    let forms = [
        ("200000001000001", 400),
        ("200000001000002", 400),
        ("200000001000003", 400),
    ];
    let sim = simulator(&forms, Some(60), Duration::from_secs(20)).await;
    let topics = Topics::new("budget");
    let ids: Vec<&str> = forms.iter().map(|(id, _)| *id).collect();
    let options = Options {
        graph: "page_size = 10\nmax_backoff = \"10s\"".to_owned(),
        backfill: "interval = \"1s\"".to_owned(),
        ..Options::default()
    };
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &[PageSpec {
            id: PAGE,
            token: TOKEN,
            forms: &ids,
        }],
        &options,
    ))
    .await;

    tokio::time::sleep(Duration::from_secs(45)).await;
    let stats = sim.stats();
    let scraped = reqwest::get(format!("{}/metrics", running.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    running.stop().await;

    let calls = stats.page(PAGE).calls;
    let limited = stats.errors_by_code.get(&80005).copied().unwrap_or(0);
    assert!(
        calls > 60,
        "the budget of 60 calls per 20 s binds over 45 s: {calls} calls"
    );
    assert!(
        (limited as f64) < calls as f64 * 0.01,
        "{limited} of {calls} calls hit the rate limit"
    );
    assert!(
        sample(
            &scraped,
            &format!("leadgen_rate_budget_usage_percent{{page_id=\"{PAGE}\"}}")
        ) > 50.0,
        "{scraped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_added_while_running_is_discovered_and_read() {
    let stack = stack();
    let sim = simulator(&[("200000001000001", 20)], None, Duration::from_secs(60)).await;
    let topics = Topics::new("discovery");
    let options = Options {
        backfill: "interval = \"1s\"\ndiscovery_interval = \"1s\"".to_owned(),
        ..Options::default()
    };
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &[PageSpec {
            id: PAGE,
            token: TOKEN,
            forms: &[],
        }],
        &options,
    ))
    .await;
    let reader = Reader::new(&stack, &topics.leads);
    assert_eq!(
        reader
            .read(20, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .len(),
        20
    );

    sim.add_form(
        PAGE,
        SimForm {
            id: "200000001000009".to_owned(),
            name: "Added later".to_owned(),
            initial_leads: 35,
        },
    );
    let added: HashSet<String> = sim.lead_ids("200000001000009").into_iter().collect();
    let records = read_leads(
        &stack,
        &reader,
        35,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    running.stop().await;

    assert_eq!(assert_unique_keys(&records), added);
    assert!(
        records
            .iter()
            .all(|record| record.headers.get("form_id").map(String::as_str)
                == Some("200000001000009"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_failures_shrink_pages_and_the_read_completes() {
    let stack = stack();
    let sim = simulator(&[("200000001000001", 250)], None, Duration::from_secs(60)).await;
    sim.inject(Fault::new(EndpointKind::FormLeads, FaultAction::server_error(500)).times(12));
    let topics = Topics::new("server-failures");
    let options = Options {
        graph: "max_attempts = 3".to_owned(),
        backfill: "interval = \"1h\"".to_owned(),
        ..Options::default()
    };
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &[PageSpec {
            id: PAGE,
            token: TOKEN,
            forms: &["200000001000001"],
        }],
        &options,
    ))
    .await;

    let records = read_leads(
        &stack,
        &Reader::new(&stack, &topics.leads),
        250,
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await;
    running.stop().await;

    assert_eq!(
        assert_unique_keys(&records).len(),
        250,
        "the read completes within one interval despite 12 server failures"
    );
    assert_eq!(sim.stats().errors_by_status.get(&500).copied(), Some(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_the_simulator_did() {
    let stack = stack();
    let form = "200000001000001";
    let sim = simulator(&[(form, 40)], None, Duration::from_secs(60)).await;
    let topics = Topics::new("metrics");
    let options = Options {
        graph: format!("app_secret = \"{}\"", common::APP_SECRET),
        backfill: "interval = \"3s\"".to_owned(),
        webhook_verify_token: Some("verify".to_owned()),
        ..Options::default()
    };
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &[PageSpec {
            id: PAGE,
            token: TOKEN,
            forms: &[form],
        }],
        &options,
    ))
    .await;
    let reader = Reader::new(&stack, &topics.leads);
    assert_eq!(
        reader
            .read(40, Duration::from_secs(60), Duration::ZERO)
            .await
            .len(),
        40
    );
    let mut sender = WebhookConfig::new(running.webhook_url.clone().unwrap());
    sender.app_secret = Some(common::APP_SECRET.to_owned());
    sender.drop_share = 0.3;
    sim.set_webhook(Some(sender)).unwrap();

    sim.add_leads(form, 60);
    let records = read_leads(
        &stack,
        &reader,
        60,
        Duration::from_secs(60),
        Duration::from_secs(4),
    )
    .await;
    sim.webhook_idle().await;
    let webhooks = sim.webhook_stats();
    let graph = sim.stats();
    let scraped = reqwest::get(format!("{}/metrics", running.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    running.stop().await;

    let by_webhook = records
        .iter()
        .filter(|record| record.headers.get("source").map(String::as_str) == Some("WEBHOOK"))
        .count();
    let by_backfill = records.len() - by_webhook + 40;
    assert_eq!(
        sum(
            &scraped,
            "leadgen_leads_produced_total",
            "source=\"WEBHOOK\""
        ),
        by_webhook as f64,
        "{scraped}"
    );
    assert_eq!(
        sum(
            &scraped,
            "leadgen_leads_produced_total",
            "source=\"BACKFILL\""
        ),
        by_backfill as f64
    );
    assert_eq!(
        sample(
            &scraped,
            "leadgen_webhook_requests_total{outcome=\"accepted\"}"
        ),
        webhooks.delivered as f64
    );
    assert_eq!(
        sample(&scraped, "leadgen_notifications_accepted_total"),
        webhooks.changes_delivered as f64
    );
    assert_eq!(
        sum(&scraped, "leadgen_graph_calls_total", ""),
        graph.total.calls as f64,
        "every Graph call is counted once"
    );
    assert_eq!(
        sum(&scraped, "leadgen_missed_by_webhook_total", ""),
        by_backfill as f64
    );
    assert_eq!(sum(&scraped, "leadgen_dead_letters_total", ""), 0.0);
    assert_eq!(
        sample(&scraped, "leadgen_lead_latency_seconds_count"),
        100.0
    );
}
