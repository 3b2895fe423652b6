//! Secrets never leave the process: the connector binary is driven through
//! its error paths with distinctive token, app secret and verify token
//! values, and none of them may appear in its logs, metrics, readiness
//! body or error output.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{stack, Topics};
use leadgen_connector::sim::{
    self, EndpointKind, Fault, FaultAction, SimConfig, SimForm, SimPage, TokenState,
};

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAAB-distinctive-page-token-7f3a9c";
const APP_SECRET: &str = "app-secret-distinctive-b81d2e";
const VERIFY_TOKEN: &str = "verify-token-distinctive-44c1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signed(body: &str, secret: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_metrics_and_errors() {
    let stack = stack();
    let sim = sim::start(
        SimConfig {
            seed: 5,
            app_secret: Some(APP_SECRET.to_owned()),
            pages: vec![SimPage {
                id: PAGE.to_owned(),
                access_token: TOKEN.to_owned(),
                forms: vec![SimForm {
                    id: FORM.to_owned(),
                    name: "Secrets".to_owned(),
                    initial_leads: 20,
                }],
            }],
            ..SimConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let topics = Topics::new("secrets");
    let webhook_port = free_port();
    let admin_port = free_port();
    let directory = std::env::temp_dir().join(common::unique("secrets-config"));
    std::fs::create_dir_all(&directory).unwrap();
    let config_path = directory.join("connector.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[graph]
base_url = "{graph}"
app_secret = "${{TEST_APP_SECRET}}"
initial_backoff = "50ms"
max_backoff = "500ms"
max_attempts = 3
[[pages]]
id = "{PAGE}"
access_token = "${{TEST_PAGE_TOKEN}}"
forms = ["{FORM}"]
[backfill]
interval = "1s"
start = 1000000000
window = "3650d"
[webhook]
listen = "127.0.0.1:{webhook_port}"
verify_token = "${{TEST_VERIFY_TOKEN}}"
[kafka]
bootstrap_servers = "{bootstrap}"
leads_topic = "{leads}"
offsets_topic = "{offsets}"
dead_letter_topic = "{dead}"
notifications_topic = "{notifications}"
transactional_id = "{tx}"
consumer_group = "{tx}-group"
partitions = 1
[schema_registry]
url = "{registry}"
[admin]
listen = "127.0.0.1:{admin_port}"
"#,
            graph = sim.base_url(),
            bootstrap = stack.bootstrap,
            leads = topics.leads,
            offsets = topics.offsets,
            dead = topics.dead_letter,
            notifications = topics.notifications,
            tx = topics.transactional_id,
            registry = stack.registry_url,
        ),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_leadgen-connector"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "debug")
        .env("TEST_APP_SECRET", APP_SECRET)
        .env("TEST_PAGE_TOKEN", TOKEN)
        .env("TEST_VERIFY_TOKEN", VERIFY_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connector binary starts");
    let mut stderr = child.stderr.take().unwrap();
    let collector = std::thread::spawn(move || {
        let mut output = String::new();
        stderr.read_to_string(&mut output).unwrap();
        output
    });

    let client = reqwest::Client::new();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let webhook = format!("http://127.0.0.1:{webhook_port}/webhook");
    let mut started = false;
    for _ in 0..100 {
        if client.get(format!("{admin}/health")).send().await.is_ok() {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started, "connector did not start");

    // Webhook paths: handshake right and wrong, bad signature, unknown lead.
    let mut observed = String::new();
    for token in [VERIFY_TOKEN, "wrong"] {
        let url = format!("{webhook}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=42");
        observed.push_str(&client.get(url).send().await.unwrap().text().await.unwrap());
    }
    let body = common::webhook_body(PAGE, FORM, &["9999999999999999".to_owned()]);
    for signature in [
        format!("sha256={}", "0".repeat(64)),
        signed(&body, APP_SECRET),
    ] {
        let response = client
            .post(&webhook)
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        observed.push_str(&response.text().await.unwrap());
    }

    // Graph paths: server failures, rate limits, then token and permission.
    sim.inject(Fault::new(EndpointKind::FormLeads, FaultAction::server_error(500)).times(4));
    sim.inject(
        Fault::new(
            EndpointKind::FormLeads,
            FaultAction::graph_error(80005, "too many calls"),
        )
        .times(2),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    sim.set_token_state(PAGE, TokenState::Expired);
    tokio::time::sleep(Duration::from_secs(3)).await;
    observed.push_str(
        &client
            .get(format!("{admin}/ready"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    sim.set_token_state(PAGE, TokenState::PermissionRevoked);
    send_signal(child.id(), "HUP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    observed.push_str(
        &client
            .get(format!("{admin}/ready"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    observed.push_str(
        &client
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );

    send_signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let logs = collector.join().unwrap();
    let _ = std::fs::remove_dir_all(&directory);

    assert!(status.success(), "connector exits 0 on SIGTERM: {status}");
    assert!(
        logs.contains("token_invalid") || logs.contains("Session has expired"),
        "the token failure was logged"
    );
    assert!(logs.contains(PAGE), "log lines name the Page");
    let proof = sim::appsecret_proof(APP_SECRET, TOKEN);
    for secret in [TOKEN, APP_SECRET, VERIFY_TOKEN, proof.as_str()] {
        assert!(!logs.contains(secret), "a secret appears in the logs");
        assert!(
            !stdout.contains(secret),
            "a secret appears on standard output"
        );
        assert!(
            !observed.contains(secret),
            "a secret appears in an HTTP answer"
        );
    }
}

/// Sends a signal by name with the `kill` command.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
