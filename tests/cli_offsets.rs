//! `leadgen-connector offsets show` and `offsets reset` against the
//! simulator and the real broker: the stored offset after a connector run,
//! a reset to a chosen time, and the leads written again after it.

mod cli_support;
mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use cli_support::{config_text, run_cli, write_config};
use common::{read_leads, stack, PageSpec, Reader, Running, Topics};
use leadgen_connector::cli::{consumer_group_members, format_time};
use leadgen_connector::config::Config;
use leadgen_connector::kafka::KafkaSetup;
use leadgen_connector::lead::parse_created_time;
use leadgen_connector::sim::{self, SimConfig, SimForm, SimHandle, SimPage};
use serde_json::Value;

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAASIM-offsets-token";
const LEADS: usize = 30;

/// `backfill.overlap` of the test config, in seconds.
const OVERLAP_SECS: i64 = 600;

/// Default `backfill.dedup_retention`, in seconds.
const RETENTION_SECS: i64 = 48 * 3600;

async fn simulator() -> SimHandle {
    let config = SimConfig {
        seed: 23,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms: vec![SimForm {
                id: FORM.to_owned(),
                name: "Offsets".to_owned(),
                initial_leads: LEADS,
            }],
        }],
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

/// Lead ids of the form with their creation time in Unix seconds.
fn lead_times(sim: &SimHandle) -> Vec<(String, i64)> {
    sim.leads(FORM)
        .iter()
        .map(|lead| {
            let created = parse_created_time(&lead["created_time"]).expect("simulator times parse");
            (lead["id"].as_str().unwrap().to_owned(), created / 1000)
        })
        .collect()
}

async fn show_json(config: &str) -> Vec<Value> {
    let output = run_cli(&["offsets", "show", "--json", "--config", config]).await;
    assert_eq!(output.code, Some(0));
    output
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON record"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_show_then_reset_rewrites_leads() {
    let stack = stack();
    let sim = simulator().await;
    let topics = Topics::new("cli-offsets");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let text = config_text(&stack, &sim.base_url(), &topics, &pages, false);
    let path = write_config(&text);
    let config_path = path.to_str().unwrap();
    let reader = Reader::new(&stack, &topics.leads);

    let running = Running::start(Config::parse(&text, &|_| None).unwrap()).await;
    let first = read_leads(
        &stack,
        &reader,
        LEADS,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    running.stop().await;
    assert_eq!(first.len(), LEADS);
    let mut times = lead_times(&sim);
    times.sort_by_key(|(_, created)| *created);
    let newest = times.last().unwrap().1;
    let remembered = times
        .iter()
        .filter(|(_, created)| *created >= newest - RETENTION_SECS)
        .count();

    let table = run_cli(&["offsets", "show", "--config", config_path]).await;
    assert_eq!(table.code, Some(0));
    let columns: Vec<String> = table
        .line(FORM)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(columns[1], PAGE);
    assert_eq!(columns[2], format_time(newest));
    assert_eq!(columns[3], newest.to_string());
    assert_eq!(columns[4], format_time(newest - RETENTION_SECS), "floor");
    assert_eq!(columns[5], remembered.to_string(), "recent id count");
    assert_eq!(columns[6], "0", "pending count");
    let records = show_json(config_path).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["form_id"], FORM);
    assert_eq!(records[0]["watermark"], newest);
    assert_eq!(records[0]["recent"].as_object().unwrap().len(), remembered);

    let reset_to = times[LEADS / 2].1;
    let reset = run_cli(&[
        "offsets",
        "reset",
        "--config",
        config_path,
        "--form",
        FORM,
        "--to",
        &format_time(reset_to),
    ])
    .await;
    assert_eq!(reset.code, Some(0));
    assert!(reset.stderr.contains("stop every running connector"));
    assert!(reset.stderr.contains(&format_time(reset_to - OVERLAP_SECS)));
    assert!(reset
        .stdout
        .contains(&format!("{remembered} remembered lead ids")));
    let records = show_json(config_path).await;
    assert_eq!(records[0]["watermark"], reset_to);
    assert_eq!(records[0]["recent"], serde_json::json!({}));
    assert_eq!(records[0]["pending"], serde_json::json!({}));

    let expected: HashSet<String> = times
        .iter()
        .filter(|(_, created)| *created >= reset_to - OVERLAP_SECS)
        .map(|(id, _)| id.clone())
        .collect();
    let running = Running::start(Config::parse(&text, &|_| None).unwrap()).await;
    let again = read_leads(
        &stack,
        &reader,
        expected.len(),
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    running.stop().await;

    let keys = common::assert_unique_keys(&again);
    assert_eq!(
        keys, expected,
        "exactly the leads from the reset time minus the overlap are written again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_rejects_bad_input() {
    let stack = stack();
    let topics = Topics::new("cli-offsets-input");
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
    let config_path = path.to_str().unwrap();

    let unknown = run_cli(&[
        "offsets",
        "reset",
        "--config",
        config_path,
        "--form",
        "299999",
        "--to",
        "1700000000",
    ])
    .await;
    let future = run_cli(&[
        "offsets",
        "reset",
        "--config",
        config_path,
        "--form",
        FORM,
        "--to",
        "2999-01-01T00:00:00Z",
    ])
    .await;
    let milliseconds = run_cli(&[
        "offsets",
        "reset",
        "--config",
        config_path,
        "--form",
        FORM,
        "--to",
        "1700000000000",
    ])
    .await;

    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("form `299999`"),
        "{}",
        unknown.stderr
    );
    assert_eq!(future.code, Some(1));
    assert!(future.stderr.contains("in the future"), "{}", future.stderr);
    assert_eq!(milliseconds.code, Some(2), "clap rejects the value");
    assert!(
        milliseconds.stderr.contains("milliseconds"),
        "{}",
        milliseconds.stderr
    );
    let records = Reader::new(&stack, &topics.offsets)
        .read(1, Duration::from_secs(3), Duration::ZERO)
        .await;
    assert!(records.is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_rejects_running_connector() {
    let stack = stack();
    let sim = simulator().await;
    let topics = Topics::new("cli-offsets-running");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let text = config_text(&stack, &sim.base_url(), &topics, &pages, true);
    let config = Config::parse(&text, &|_| None).unwrap();
    let path = write_config(&text);
    let config_path = path.to_str().unwrap();
    let setup = KafkaSetup::new(config.kafka.clone());

    let running = Running::start(config).await;
    let mut members = 0;
    for _ in 0..60 {
        members = consumer_group_members(&setup).await.unwrap();
        if members > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reset = |force: bool| {
        let mut args = vec![
            "offsets",
            "reset",
            "--config",
            config_path,
            "--form",
            FORM,
            "--to",
            "1700000000",
        ];
        if force {
            args.push("--force");
        }
        async move { run_cli(&args).await }
    };
    let rejected = reset(false).await;
    let forced = reset(true).await;
    running.stop().await;

    assert_eq!(members, 1, "the connector joins its consumer group");
    assert_eq!(rejected.code, Some(1));
    assert!(
        rejected.stderr.contains("a connector is running"),
        "{}",
        rejected.stderr
    );
    assert!(rejected.stderr.contains("--force"));
    assert_eq!(forced.code, Some(0));
}
