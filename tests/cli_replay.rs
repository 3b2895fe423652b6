//! `leadgen-connector replay` against the simulator and the real broker:
//! a lead dead-lettered because Meta returned 100/33 is written once after
//! the fault clears, however often replay runs, and a lead that is still
//! missing is reported and not written.

mod cli_support;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use apache_avro::types::Value as AvroValue;
use cli_support::{config_text, run_cli, write_config};
use common::{
    decode, graph_field_data, post_webhook, read_leads, stack, webhook_body, PageSpec, Reader,
    Running, Topics,
};
use leadgen_connector::config::Config;
use leadgen_connector::sim::{
    self, EndpointKind, Fault, FaultAction, SimConfig, SimForm, SimHandle, SimPage,
};

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAASIM-replay-token";

async fn simulator() -> SimHandle {
    let config = SimConfig {
        seed: 41,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms: vec![SimForm {
                id: FORM.to_owned(),
                name: "Replay".to_owned(),
                initial_leads: 3,
            }],
        }],
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

/// Meta's error for an object that does not exist: code 100, subcode 33.
fn not_found() -> FaultAction {
    FaultAction::GraphError {
        status: 400,
        code: 100,
        error_subcode: Some(33),
        error_type: "GraphMethodException".to_owned(),
        message: "Unsupported get request. Object does not exist, cannot be loaded due to missing permissions, or does not support this operation".to_owned(),
        is_transient: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_writes_recovered_lead_once() {
    let stack = stack();
    let sim = simulator().await;
    let topics = Topics::new("cli-replay");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let text = config_text(&stack, &sim.base_url(), &topics, &pages, true);
    let path = write_config(&text);
    let config_path = path.to_str().unwrap();
    let leads = Reader::new(&stack, &topics.leads);
    let dead_letters = Reader::new(&stack, &topics.dead_letter);

    let running = Running::start(Config::parse(&text, &|_| None).unwrap()).await;
    let initial = leads
        .read(3, Duration::from_secs(60), Duration::from_secs(1))
        .await;
    assert_eq!(initial.len(), 3);
    let recovered = sim.add_leads(FORM, 1).remove(0);
    let missing = sim.add_leads(FORM, 1).remove(0);
    sim.inject(Fault::new(EndpointKind::Lead, not_found()).for_object(&recovered));
    sim.inject(Fault::new(EndpointKind::Ids, not_found()));
    assert!(sim.delete_lead(&missing));
    let body = webhook_body(PAGE, FORM, &[recovered.clone(), missing.clone()]);
    assert_eq!(
        post_webhook(running.webhook_url.as_deref().unwrap(), &body).await,
        200
    );
    let letters = dead_letters
        .read(2, Duration::from_secs(60), Duration::from_secs(1))
        .await;
    running.stop().await;
    assert_eq!(letters.len(), 2, "both leads are dead-lettered");
    assert!(letters
        .iter()
        .all(|letter| letter.headers.get("reason").map(String::as_str) == Some("not_found")));
    sim.clear_faults();

    let first = run_cli(&["replay", "--config", config_path]).await;

    assert_eq!(first.code, Some(1), "a lead still fails");
    assert!(first.stdout.contains("1 leads written"), "{}", first.stdout);
    assert!(first.stdout.contains("1 still failing"), "{}", first.stdout);
    let written_line = first.line(&format!("lead `{recovered}`"));
    assert!(written_line.contains("written to"), "{written_line}");
    let failing_line = first.line(&format!("lead `{missing}`"));
    assert!(
        failing_line.contains("still fails (not_found)"),
        "{failing_line}"
    );
    assert!(first.stderr.contains("1 dead-lettered leads still fail"));
    let replayed = read_leads(
        &stack,
        &leads,
        1,
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].key, recovered);
    assert_eq!(
        replayed[0].headers.get("source").map(String::as_str),
        Some("REPLAY")
    );
    assert!(
        matches!(replayed[0].fields.get("source"), Some(AvroValue::Enum(_, symbol)) if symbol == "REPLAY"),
        "{:?}",
        replayed[0].fields.get("source")
    );
    let lead = sim
        .leads(FORM)
        .into_iter()
        .find(|lead| lead["id"] == recovered.as_str())
        .expect("the recovered lead is in the simulator");
    assert_eq!(replayed[0].field_data(), graph_field_data(&lead));

    let second = run_cli(&["replay", "--config", config_path]).await;

    assert_eq!(second.code, Some(1));
    assert!(
        second.stdout.contains("0 leads written"),
        "{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("1 already replayed earlier"),
        "{}",
        second.stdout
    );
    let again = leads.read(1, Duration::from_secs(3), Duration::ZERO).await;
    assert!(
        again.is_empty(),
        "the second replay writes nothing: {:?}",
        decode(&stack, &again).await
    );
    // Both dead letters were written in one transaction, so each is at
    // offset 0 or 1 of its partition.
    let later = run_cli(&["replay", "--config", config_path, "--since-offset", "2"]).await;
    assert_eq!(
        later.code,
        Some(0),
        "no dead letter is at offset 2 or later"
    );
    assert!(later.stdout.contains("0 still failing"), "{}", later.stdout);

    let markers = dead_letters
        .read(1, Duration::from_secs(5), Duration::from_secs(1))
        .await;
    assert_eq!(markers.len(), 1, "one marker for the replayed lead");
    assert_eq!(markers[0].key.as_deref(), Some(recovered.as_str()));
    assert_eq!(
        markers[0].headers.get("reason").map(String::as_str),
        Some("replayed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_without_topic_reads_nothing() {
    let stack = stack();
    let topics = Topics::new("cli-replay-empty");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let path = write_config(&config_text(
        &stack,
        "http://127.0.0.1:9",
        &topics,
        &pages,
        false,
    ));

    let output = run_cli(&[
        "replay",
        "--config",
        path.to_str().unwrap(),
        "--since-offset",
        "5",
        "--max",
        "10",
    ])
    .await;

    assert_eq!(output.code, Some(0));
    assert!(
        output.stdout.contains("0 records read"),
        "{}",
        output.stdout
    );
}
