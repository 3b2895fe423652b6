//! Crash safety: the connector binary is killed with SIGKILL at random
//! moments while webhooks and the backfill run, 20 times, and also stopped
//! with SIGTERM under the same load, and restarted each time.
//! Afterwards every lead is in the leads topic exactly once for a
//! `read_committed` consumer.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assert_unique_keys, config_text, free_port, read_leads, stack, Options, PageSpec, Reader,
    Topics,
};
use leadgen_connector::sim::{self, SimConfig, SimForm, SimPage, WebhookConfig};
use rand::Rng;

const PAGE: &str = "100000000000001";
const TOKEN: &str = "EAASIM-kill-test";
const FORMS: [&str; 3] = ["200000001000001", "200000001000002", "200000001000003"];
const KILLS: usize = 20;

fn spawn(config_path: &std::path::Path, log_path: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_leadgen-connector"))
        .args(["run", "--config"])
        .arg(config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("connector binary starts")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    let stack = stack();
    let forms = FORMS
        .iter()
        .map(|id| SimForm {
            id: (*id).to_owned(),
            name: format!("Form {id}"),
            initial_leads: 200,
        })
        .collect();
    let sim = sim::start(
        SimConfig {
            seed: 99,
            pages: vec![SimPage {
                id: PAGE.to_owned(),
                access_token: TOKEN.to_owned(),
                forms,
            }],
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();

    let topics = Topics::new("kill");
    let webhook_listen = format!("127.0.0.1:{}", free_port());
    let options = Options {
        graph: format!("app_secret = \"{}\"", common::APP_SECRET),
        backfill: "interval = \"2s\"".to_owned(),
        webhook_verify_token: Some("verify".to_owned()),
        webhook_listen: Some(webhook_listen.clone()),
        ..Options::default()
    };
    let pages = [PageSpec {
        id: PAGE,
        token: TOKEN,
        forms: &FORMS,
    }];
    let directory = std::env::temp_dir().join(common::unique("kill-test"));
    std::fs::create_dir_all(&directory).unwrap();
    let config_path = directory.join("connector.toml");
    let log_path = directory.join("connector.log");
    std::fs::write(
        &config_path,
        config_text(&stack, &sim.base_url(), &topics, &pages, &options),
    )
    .unwrap();

    let mut webhooks = WebhookConfig::new(format!("http://{webhook_listen}/webhook"));
    webhooks.app_secret = Some(common::APP_SECRET.to_owned());
    webhooks.duplicate_share = 0.2;
    webhooks.retry_initial = Duration::from_millis(200);
    webhooks.retry_max = Duration::from_secs(1);
    webhooks.retry_for = Duration::from_secs(600);
    sim.set_webhook(Some(webhooks)).unwrap();

    // Leads keep arriving for the whole run.
    let created: Arc<Mutex<HashSet<String>>> = Arc::default();
    let creating = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let creator = {
        let sim = sim.clone();
        let created = created.clone();
        let creating = creating.clone();
        tokio::spawn(async move {
            let mut round = 0usize;
            while creating.load(std::sync::atomic::Ordering::SeqCst) {
                let ids = sim.add_leads(FORMS[round % FORMS.len()], 3);
                created.lock().unwrap().extend(ids);
                round += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    for cycle in 0..KILLS + KILLS / 4 {
        let mut child = spawn(&config_path, &log_path);
        let alive_for = Duration::from_millis(rand::thread_rng().gen_range(300..4000));
        tokio::time::sleep(alive_for).await;
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the connector exited by itself ({exited:?}); see {}",
            log_path.display()
        );
        // Every fifth stop is a graceful SIGTERM under the same load.
        if cycle % 5 == 4 {
            signal(&child, "TERM");
            let status = child.wait().unwrap();
            assert!(status.success(), "SIGTERM under load exits 0, not {status}");
        } else {
            signal(&child, "KILL");
            child.wait().unwrap();
        }
    }
    creating.store(false, std::sync::atomic::Ordering::SeqCst);
    creator.await.unwrap();

    let mut last = spawn(&config_path, &log_path);
    let expected = created.lock().unwrap().clone();
    let total = expected.len() + 600;
    let records = read_leads(
        &stack,
        &Reader::new(&stack, &topics.leads),
        total,
        Duration::from_secs(180),
        Duration::from_secs(10),
    )
    .await;
    signal(&last, "TERM");
    let status = last.wait().unwrap();

    let keys = assert_unique_keys(&records);
    for lead in &expected {
        assert!(
            keys.contains(lead),
            "lead {lead} created during the kills is missing"
        );
    }
    assert_eq!(keys.len(), total, "history and new leads, each once");
    assert!(
        status.success(),
        "the last run stops cleanly on SIGTERM: {status}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}
