//! `leadgen-connector validate` against the simulator, the real broker and
//! registry, and closed local ports for the services that are down.

mod cli_support;
mod common;

use std::net::SocketAddr;

use cli_support::{closed_port, config_text, run_cli, write_config, CliOutput};
use common::{stack, PageSpec, Stack, Topics};
use leadgen_connector::sim::{self, SimConfig, SimForm, SimHandle, SimPage, TokenState};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

const PAGE: &str = "100000000000001";
const FORM: &str = "200000001000001";
const TOKEN: &str = "EAASIM-validate-token";

async fn simulator() -> SimHandle {
    let config = SimConfig {
        seed: 5,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms: vec![SimForm {
                id: FORM.to_owned(),
                name: "Validate".to_owned(),
                initial_leads: 3,
            }],
        }],
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

fn good_config(stack: &Stack, sim: &SimHandle, token: &str) -> String {
    config_text(
        stack,
        &sim.base_url(),
        &Topics::new("validate"),
        &[PageSpec {
            id: PAGE,
            token,
            forms: &[FORM],
        }],
        false,
    )
}

async fn validate(text: &str) -> CliOutput {
    let path = write_config(text);
    run_cli(&["validate", "--config", path.to_str().unwrap()]).await
}

fn assert_no_token(output: &CliOutput, token: &str) {
    assert!(
        !output.all().contains(token),
        "the output shows the access token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_passes_on_good_config() {
    let stack = stack();
    let sim = simulator().await;

    let output = validate(&good_config(&stack, &sim, TOKEN)).await;

    assert_eq!(output.code, Some(0));
    assert!(!output.stdout.contains("FAILED"));
    assert!(output.line("config `").ends_with(": ok"));
    assert!(output.line("Kafka at `").ends_with(": ok"));
    assert_eq!(
        output
            .stdout
            .lines()
            .filter(|line| line.starts_with("topic `") && line.contains(": ok"))
            .count(),
        4,
        "one line per topic"
    );
    assert!(output.line("schema registry at `").contains(": ok"));
    assert!(output
        .line(&format!("Page `{PAGE}` access token"))
        .contains(": ok"));
    assert!(output
        .line(&format!("Page `{PAGE}` leads permission"))
        .contains(": ok"));
    assert!(output.stdout.contains("all 9 checks passed"));
    assert_no_token(&output, TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_unreachable_kafka() {
    let stack = stack();
    let sim = simulator().await;
    let address = format!("127.0.0.1:{}", closed_port());
    let text = good_config(&stack, &sim, TOKEN).replace(&stack.bootstrap, &address);

    let output = validate(&text).await;

    assert_eq!(output.code, Some(1));
    let line = output.line("Kafka at `");
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("kafka.bootstrap_servers"), "{line}");
    assert!(line.contains(&address), "{line}");
    assert!(output.line("topics").contains("SKIPPED"));
    assert!(output
        .line(&format!("Page `{PAGE}` access token"))
        .contains(": ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_unreachable_registry() {
    let stack = stack();
    let sim = simulator().await;
    let url = format!("http://127.0.0.1:{}/apis/ccompat/v7", closed_port());
    let text = good_config(&stack, &sim, TOKEN).replace(&stack.registry_url, &url);

    let output = validate(&text).await;

    assert_eq!(output.code, Some(1));
    let line = output.line("schema registry at `");
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("schema_registry.url"), "{line}");
    assert!(line.contains(&url), "{line}");
    assert!(output.line("Kafka at `").ends_with(": ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_hides_registry_url_password() {
    let stack = stack();
    let sim = simulator().await;
    let password = "registry-pass-distinctive-5e1";
    let url = format!(
        "http://user:{password}@127.0.0.1:{}/apis/ccompat/v7",
        closed_port()
    );
    let text = good_config(&stack, &sim, TOKEN).replace(&stack.registry_url, &url);

    let output = validate(&text).await;

    assert_eq!(output.code, Some(1));
    assert!(
        !output.all().contains(password),
        "the output shows the password"
    );
    let line = output.line("schema registry at `");
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("user:[redacted]@127.0.0.1"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_registry_root_url() {
    let stack = stack();
    let sim = simulator().await;
    let registry = url::Url::parse(&stack.registry_url).expect("the registry URL is valid");
    let root = registry.origin().ascii_serialization();
    assert_ne!(root, stack.registry_url, "the test registry URL has a path");
    let text = good_config(&stack, &sim, TOKEN).replace(&stack.registry_url, &root);

    let output = validate(&text).await;

    assert_eq!(output.code, Some(1));
    let line = output.line("schema registry at `");
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("404"), "{line}");
    assert!(line.contains("/apis/ccompat/v7"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_expired_token() {
    let stack = stack();
    let sim = simulator().await;
    sim.set_token_state(PAGE, TokenState::Expired);

    let output = validate(&good_config(&stack, &sim, TOKEN)).await;

    assert_eq!(output.code, Some(1));
    let line = output.line(&format!("Page `{PAGE}` access token"));
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("rejected the access token"), "{line}");
    assert!(line.contains("pages[0].access_token"), "{line}");
    assert!(line.contains("190"), "{line}");
    assert!(output
        .line(&format!("Page `{PAGE}` leads permission"))
        .contains("SKIPPED"));
    assert_no_token(&output, TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_wrong_token() {
    let stack = stack();
    let sim = simulator().await;
    let wrong = "EAASIM-not-a-token-of-any-page";

    let output = validate(&good_config(&stack, &sim, wrong)).await;

    assert_eq!(output.code, Some(1));
    let line = output.line(&format!("Page `{PAGE}` access token"));
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("rejected the access token"), "{line}");
    assert_no_token(&output, wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_revoked_permission() {
    let stack = stack();
    let sim = simulator().await;
    sim.set_token_state(PAGE, TokenState::PermissionRevoked);

    let output = validate(&good_config(&stack, &sim, TOKEN)).await;

    assert_eq!(output.code, Some(1));
    assert!(output
        .line(&format!("Page `{PAGE}` access token"))
        .contains(": ok"));
    let line = output.line(&format!("Page `{PAGE}` leads permission"));
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("lacks the leads permission"), "{line}");
    assert!(line.contains(FORM), "{line}");
    assert!(!line.contains("rejected the access token"), "{line}");
    assert_no_token(&output, TOKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_unknown_key() {
    let stack = stack();
    let sim = simulator().await;
    let text =
        good_config(&stack, &sim, TOKEN).replace("[kafka]\n", "[kafka]\nlinger_time = \"5s\"\n");

    let output = validate(&text).await;

    assert_eq!(output.code, Some(1));
    let line = output.line("config `");
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("kafka"), "{line}");
    assert!(line.contains("linger_time"), "{line}");
    assert!(line.contains("unknown field"), "{line}");
    assert!(
        !output.stdout.contains("Kafka at"),
        "no check runs without a config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_fails_on_missing_and_uncompacted_topics() {
    let stack = stack();
    let sim = simulator().await;
    let topics = Topics::new("validate-topics");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[
                NewTopic::new(&topics.offsets, 1, TopicReplication::Fixed(1))
                    .set("cleanup.policy", "delete"),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let text = config_text(
        &stack,
        &sim.base_url(),
        &topics,
        &[PageSpec {
            id: PAGE,
            token: TOKEN,
            forms: &[FORM],
        }],
        false,
    )
    .replace("partitions = 3", "partitions = 3\ncreate_topics = false");

    let output = validate(&text).await;

    assert_eq!(output.code, Some(1));
    let leads = output.line(&format!("topic `{}`", topics.leads));
    assert!(leads.contains("FAILED"), "{leads}");
    assert!(leads.contains("kafka.create_topics = false"), "{leads}");
    let offsets = output.line(&format!("topic `{}`", topics.offsets));
    assert!(offsets.contains("FAILED"), "{offsets}");
    assert!(offsets.contains("cleanup.policy=`delete`"), "{offsets}");
}
