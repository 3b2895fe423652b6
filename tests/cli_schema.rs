//! `leadgen-connector schema` and `schema --check` against the real
//! registry, with subjects registered by the test under unique topic names.

mod cli_support;
mod common;

use cli_support::{config_text, run_cli, write_config};
use common::{stack, PageSpec, Stack, Topics};
use leadgen_connector::avro::LEAD_SCHEMA;

/// A version of the lead record that the shipped schema cannot read: it
/// lacks `lead_id`, which the shipped schema requires without a default.
const INCOMPATIBLE_SCHEMA: &str = r#"{"type":"record","name":"Lead","namespace":"io.leadgen.connector","fields":[{"name":"other","type":"int"}]}"#;

fn config_path(stack: &Stack, topics: &Topics) -> String {
    let text = config_text(
        stack,
        "http://127.0.0.1:9",
        topics,
        &[PageSpec {
            id: "100000000000001",
            token: "EAASIM-schema-token",
            forms: &["200000001000001"],
        }],
        false,
    );
    write_config(&text).to_str().unwrap().to_owned()
}

async fn register(stack: &Stack, subject: &str, schema: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/subjects/{subject}/versions",
            stack.registry_url
        ))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .expect("the registry answers");
    assert!(
        response.status().is_success(),
        "registering under {subject} failed: {}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn schema_prints_lead_schema() {
    let output = run_cli(&["schema"]).await;

    assert_eq!(output.code, Some(0));
    assert_eq!(output.stdout, LEAD_SCHEMA);
}

#[tokio::test]
async fn schema_check_fails_on_incompatible_version() {
    let stack = stack();
    let topics = Topics::new("schema-incompatible");
    let subject = format!("{}-value", topics.leads);
    register(&stack, &subject, INCOMPATIBLE_SCHEMA).await;

    let output = run_cli(&[
        "schema",
        "--check",
        "--config",
        &config_path(&stack, &topics),
    ])
    .await;

    assert_eq!(output.code, Some(1));
    assert!(
        output.stderr.contains("is not compatible"),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains(&subject), "{}", output.stderr);
    assert!(output.stdout.is_empty(), "the schema is not printed");
}

#[tokio::test]
async fn schema_check_passes_on_same_version() {
    let stack = stack();
    let topics = Topics::new("schema-same");
    let subject = format!("{}-value", topics.leads);
    register(&stack, &subject, LEAD_SCHEMA).await;

    let output = run_cli(&[
        "schema",
        "--check",
        "--config",
        &config_path(&stack, &topics),
    ])
    .await;

    assert_eq!(output.code, Some(0));
    assert!(output.stdout.contains("is compatible"), "{}", output.stdout);
    assert!(output.stdout.contains(&subject), "{}", output.stdout);
}

#[tokio::test]
async fn schema_check_passes_on_new_subject() {
    let stack = stack();
    let topics = Topics::new("schema-new");

    let output = run_cli(&[
        "schema",
        "--check",
        "--config",
        &config_path(&stack, &topics),
    ])
    .await;

    assert_eq!(output.code, Some(0), "{}", output.all());
}
