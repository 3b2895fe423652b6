//! Graph API error cases against the simulator and the real broker: a lead
//! that does not exist, an expired token, a revoked permission, and the
//! application request limit.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    config_with, fixture, post_webhook, read_leads, stack, webhook_body, Options, PageSpec, Reader,
    Running, Topics,
};
use leadgen_connector::sim::{
    self, EndpointKind, Fault, FaultAction, SimConfig, SimForm, SimHandle, SimPage, TokenState,
};
use serde_json::Value;

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAASIM-errors-token";

async fn simulator(leads: usize) -> SimHandle {
    let config = SimConfig {
        seed: 11,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms: vec![SimForm {
                id: FORM.to_owned(),
                name: "Errors".to_owned(),
                initial_leads: leads,
            }],
        }],
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

fn options(interval: &str) -> Options {
    Options {
        graph: format!("app_secret = \"{}\"\nmax_attempts = 8", common::APP_SECRET),
        backfill: format!("interval = \"{interval}\""),
        webhook_verify_token: Some("verify".to_owned()),
        webhook: String::new(),
        ..Options::default()
    }
}

/// Builds the simulator fault that answers with a case's error body.
fn fault_from_fixture(name: &str) -> FaultAction {
    let body: Value =
        serde_json::from_str(&fixture(&format!("graph/{name}"))).expect("fixture is JSON");
    let error = &body["error"];
    FaultAction::GraphError {
        status: 400,
        code: error["code"].as_i64().expect("code"),
        error_subcode: error["error_subcode"].as_i64(),
        error_type: error["type"].as_str().expect("type").to_owned(),
        message: error["message"].as_str().expect("message").to_owned(),
        is_transient: error["is_transient"].as_bool(),
    }
}

async fn ready(running: &Running) -> Value {
    reqwest::get(format!("{}/ready", running.admin_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn latest_offset(stack: &common::Stack, topic: &str) -> Value {
    let records = Reader::new(stack, topic)
        .read(usize::MAX, Duration::from_secs(4), Duration::ZERO)
        .await;
    let last = records.last().expect("an offset record exists");
    serde_json::from_slice(last.payload.as_deref().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_lead_is_retried_then_dead_lettered() {
    let stack = stack();
    let sim = simulator(5).await;
    let topics = Topics::new("g1");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &pages,
        &options("1h"),
    ))
    .await;
    let webhook = running.webhook_url.clone().unwrap();
    read_leads(
        &stack,
        &Reader::new(&stack, &topics.leads),
        5,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;

    let lead_id = sim.add_leads(FORM, 1).remove(0);
    sim.inject(
        Fault::new(
            EndpointKind::Lead,
            fault_from_fixture("g1-object-not-found.json"),
        )
        .for_object(&lead_id),
    );
    sim.inject(Fault::new(
        EndpointKind::Ids,
        fault_from_fixture("g1-object-not-found.json"),
    ));
    assert_eq!(
        post_webhook(
            &webhook,
            &webhook_body(PAGE, FORM, std::slice::from_ref(&lead_id))
        )
        .await,
        200
    );

    let letters = Reader::new(&stack, &topics.dead_letter)
        .read(1, Duration::from_secs(60), Duration::from_secs(2))
        .await;
    let lead_calls = sim.stats().endpoint(EndpointKind::Lead).calls;
    let extra = Reader::new(&stack, &topics.leads)
        .read(6, Duration::from_secs(3), Duration::ZERO)
        .await;
    running.stop().await;

    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some(lead_id.as_str()));
    for (header, value) in [
        ("reason", "not_found"),
        ("graph_code", "100"),
        ("graph_subcode", "33"),
        ("form_id", FORM),
        ("page_id", PAGE),
    ] {
        assert_eq!(
            letter.headers.get(header).map(String::as_str),
            Some(value),
            "header {header}"
        );
    }
    assert!(letter
        .headers
        .get("fbtrace_id")
        .is_some_and(|trace| !trace.is_empty()));
    assert!(
        (2..=3).contains(&lead_calls),
        "a few reads, then the dead letter, not {lead_calls}"
    );
    assert_eq!(extra.len(), 5, "the missing lead is not written as a lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_stops_calls_and_new_token_catches_up() {
    let stack = stack();
    let sim = simulator(30).await;
    let topics = Topics::new("g2");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &pages,
        &options("1s"),
    ))
    .await;
    let webhook = running.webhook_url.clone().unwrap();
    let reader = Reader::new(&stack, &topics.leads);
    assert_eq!(
        reader
            .read(30, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .len(),
        30
    );
    let offset_before = latest_offset(&stack, &topics.offsets).await;

    sim.set_token_state(PAGE, TokenState::Expired);
    let created = sim.add_leads(FORM, 20);
    assert_eq!(
        post_webhook(&webhook, &webhook_body(PAGE, FORM, &created)).await,
        200,
        "webhooks are accepted while the token is expired"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;

    let during = reader.read(1, Duration::from_secs(2), Duration::ZERO).await;
    assert!(
        during.is_empty(),
        "nothing is written while the token is expired"
    );
    let calls_before = sim.stats().page(PAGE).calls;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls_after = sim.stats().page(PAGE).calls;
    assert_eq!(calls_after, calls_before, "calls for the Page stop");
    let health = ready(&running).await;
    assert_eq!(health["ready"], false);
    assert_eq!(health["pages"][PAGE]["state"], "token_invalid");
    let offset_during = latest_offset(&stack, &topics.offsets).await;
    assert_eq!(
        offset_during["watermark"], offset_before["watermark"],
        "the form's watermark does not move"
    );
    assert!(
        offset_during["pending"]
            .as_object()
            .is_some_and(|pending| pending.len() == 20),
        "notifications are kept"
    );
    let scraped = reqwest::get(format!("{}/metrics", running.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scraped.contains(&format!(
            "leadgen_page_token_state{{page_id=\"{PAGE}\",state=\"token_invalid\"}} 1"
        )),
        "{scraped}"
    );

    sim.set_access_token(PAGE, "EAASIM-new-token");
    let new_pages = [PageSpec {
        id: PAGE,
        token: "EAASIM-new-token",
        forms: &[FORM],
    }];
    running.reloader.apply(&config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &new_pages,
        &options("1s"),
    ));

    let caught_up = read_leads(
        &stack,
        &reader,
        20,
        Duration::from_secs(60),
        Duration::from_secs(4),
    )
    .await;
    let health = ready(&running).await;
    running.stop().await;

    let keys = common::assert_unique_keys(&caught_up);
    assert_eq!(
        keys,
        created.into_iter().collect::<HashSet<_>>(),
        "every lead of the outage arrives once"
    );
    assert_eq!(health["pages"][PAGE]["state"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_permission_is_reported_as_its_own_state() {
    let stack = stack();
    let sim = simulator(3).await;
    let topics = Topics::new("g3");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    sim.inject(Fault::new(
        EndpointKind::FormLeads,
        fault_from_fixture("g3-permission-revoked.json"),
    ));
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &pages,
        &options("1s"),
    ))
    .await;

    let mut health = Value::Null;
    for _ in 0..50 {
        health = ready(&running).await;
        if health["pages"][PAGE]["state"] != "healthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = sim.stats().endpoint(EndpointKind::FormLeads).calls;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls_later = sim.stats().endpoint(EndpointKind::FormLeads).calls;
    running.stop().await;

    assert_eq!(health["pages"][PAGE]["state"], "permission_missing");
    assert!(health["pages"][PAGE]["detail"]
        .as_str()
        .unwrap()
        .contains("200"));
    assert_eq!(calls, 1, "a permission error is not retried");
    assert_eq!(calls_later, calls, "calls for the Page stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_limit_backs_off_and_retries() {
    let stack = stack();
    let sim = simulator(40).await;
    let topics = Topics::new("g4");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    sim.inject(
        Fault::new(
            EndpointKind::FormLeads,
            fault_from_fixture("g4-application-limit.json"),
        )
        .times(2),
    );
    for code in [17, 32, 613, 80005] {
        sim.inject(
            Fault::new(
                EndpointKind::FormLeads,
                FaultAction::graph_error(code, "rate limited"),
            )
            .times(1),
        );
    }
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &pages,
        &options("1h"),
    ))
    .await;

    let records = read_leads(
        &stack,
        &Reader::new(&stack, &topics.leads),
        40,
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await;
    running.stop().await;

    assert_eq!(records.len(), 40);
    let stats = sim.stats();
    for code in [4, 17, 32, 613, 80005] {
        assert!(
            stats
                .errors_by_code
                .get(&code)
                .is_some_and(|count| *count >= 1),
            "code {code} was answered: {:?}",
            stats.errors_by_code
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_token_is_reported_ahead() {
    let stack = stack();
    let sim = sim::start(
        SimConfig {
            seed: 13,
            app_secret: Some("sim-app-secret".to_owned()),
            pages: vec![SimPage {
                id: PAGE.to_owned(),
                access_token: TOKEN.to_owned(),
                forms: vec![SimForm {
                    id: FORM.to_owned(),
                    name: "Expiry".to_owned(),
                    initial_leads: 1,
                }],
            }],
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    sim.set_token_expiry(PAGE, Some(chrono::Utc::now() + chrono::Duration::days(2)));
    let topics = Topics::new("expiry");
    let options = Options {
        graph: "app_secret = \"sim-app-secret\"\napp_access_token = \"1000000000000001|sim-app-secret\"\ntoken_check_interval = \"1s\"".to_owned(),
        backfill: "interval = \"1h\"".to_owned(),
        ..Options::default()
    };
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let running = Running::start(config_with(
        &stack,
        &sim.base_url(),
        &topics,
        &pages,
        &options,
    ))
    .await;

    let series = format!("leadgen_page_token_expires_in_seconds{{page_id=\"{PAGE}\"}} ");
    let mut seconds = None;
    let mut scraped = String::new();
    for _ in 0..50 {
        scraped = reqwest::get(format!("{}/metrics", running.admin_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seconds = scraped
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse::<i64>().ok());
        if seconds.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;

    let seconds = seconds.unwrap_or_else(|| panic!("the token expiry is exported: {scraped}"));
    assert!(
        (2 * 86_400 - 120..=2 * 86_400).contains(&seconds),
        "expires in two days, not {seconds} s"
    );
}
