//! `leadgen-connector backfill` against the simulator and the real broker:
//! a range read writes exactly the leads of the range once, a second run
//! writes nothing, the watermark stays, and the connector later writes
//! only the leads outside the range.

mod cli_support;
mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use cli_support::{config_text, run_cli, write_config};
use common::{assert_unique_keys, read_leads, stack, PageSpec, Reader, Running, Topics};
use leadgen_connector::cli::format_time;
use leadgen_connector::config::Config;
use leadgen_connector::lead::parse_created_time;
use leadgen_connector::sim::{self, SimConfig, SimForm, SimHandle, SimPage};
use serde_json::Value;

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAASIM-cli-backfill-token";
const LEADS: usize = 60;

async fn simulator() -> SimHandle {
    let config = SimConfig {
        seed: 31,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms: vec![SimForm {
                id: FORM.to_owned(),
                name: "Range".to_owned(),
                initial_leads: LEADS,
            }],
        }],
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

async fn stored_offset(config_path: &str) -> Value {
    let output = run_cli(&["offsets", "show", "--json", "--config", config_path]).await;
    assert_eq!(output.code, Some(0));
    let line = output.stdout.lines().next().expect("one offset record");
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_range_writes_leads_once() {
    let stack = stack();
    let sim = simulator().await;
    let topics = Topics::new("cli-backfill");
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &[FORM],
    }];
    let text = config_text(&stack, &sim.base_url(), &topics, &pages, false)
        .replace("window = \"3650d\"", "window = \"2d\"");
    let path = write_config(&text);
    let config_path = path.to_str().unwrap();
    let reader = Reader::new(&stack, &topics.leads);

    let mut times: Vec<(String, i64)> = sim
        .leads(FORM)
        .iter()
        .map(|lead| {
            let created = parse_created_time(&lead["created_time"]).unwrap() / 1000;
            (lead["id"].as_str().unwrap().to_owned(), created)
        })
        .collect();
    times.sort_by_key(|(_, created)| *created);
    let since = times[10].1;
    let until = times[40].1;
    let in_range: HashSet<String> = times
        .iter()
        .filter(|(_, created)| (since..until).contains(created))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(in_range.len() >= 25, "the range holds most of 30 leads");

    let first = run_cli(&[
        "backfill",
        "--config",
        config_path,
        "--form",
        FORM,
        "--since",
        &since.to_string(),
        "--until",
        &format_time(until),
    ])
    .await;
    assert_eq!(first.code, Some(0));
    assert!(
        first
            .stdout
            .contains(&format!("{} written, 0 dead letters", in_range.len())),
        "{}",
        first.stdout
    );
    assert!(first.stderr.contains("stop every running connector"));
    let written = read_leads(
        &stack,
        &reader,
        in_range.len(),
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    let keys = assert_unique_keys(&written);
    assert_eq!(keys, in_range, "exactly the leads of the range");
    assert!(written
        .iter()
        .all(|record| record.headers.get("source").map(String::as_str) == Some("BACKFILL")));

    let offset = stored_offset(config_path).await;
    assert_eq!(offset["watermark"], 0, "the watermark does not move");
    let remembered: HashSet<String> = offset["recent"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(remembered, in_range, "the written ids are remembered");

    let second = run_cli(&[
        "backfill",
        "--config",
        config_path,
        "--form",
        FORM,
        "--since",
        &format_time(since),
        "--until",
        &until.to_string(),
    ])
    .await;
    assert_eq!(second.code, Some(0));
    assert!(
        second.stdout.contains("0 written, 0 dead letters"),
        "{}",
        second.stdout
    );
    assert!(second
        .stdout
        .contains(&format!("{} skipped as already written", in_range.len())));
    let repeated = reader.read(1, Duration::from_secs(3), Duration::ZERO).await;
    assert!(repeated.is_empty(), "the second run writes nothing");

    let running = Running::start(Config::parse(&text, &|_| None).unwrap()).await;
    let rest = read_leads(
        &stack,
        &reader,
        LEADS - in_range.len(),
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    running.stop().await;

    let rest_keys = assert_unique_keys(&rest);
    let all: HashSet<String> = times.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        rest_keys,
        all.difference(&in_range).cloned().collect::<HashSet<_>>(),
        "the connector writes only the leads outside the range"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_rejects_bad_range() {
    let stack = stack();
    let topics = Topics::new("cli-backfill-input");
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

    let reversed = run_cli(&[
        "backfill",
        "--config",
        config_path,
        "--form",
        FORM,
        "--since",
        "1700000000",
        "--until",
        "1600000000",
    ])
    .await;
    let unknown = run_cli(&[
        "backfill",
        "--config",
        config_path,
        "--form",
        "299999",
        "--since",
        "1700000000",
    ])
    .await;

    assert_eq!(reversed.code, Some(1));
    assert!(reversed.stderr.contains("is not after --since"));
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stderr.contains("form `299999`"));
}
