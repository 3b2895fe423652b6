//! `leadgen-connector validate`: checks the configuration, Kafka, the
//! topics, the schema registry and every Page's token, in that order, and
//! prints one line per check. Exits non-zero when any check failed.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::cli::registry::{check_lead_schema, lead_subject, Compatibility};
use crate::cli::ConfigArg;
use crate::config::{Config, PageConfig};
use crate::graph::{ErrorClass, GraphClient, GraphError, PageAuth};
use crate::kafka::KafkaSetup;

/// Time allowed for the Kafka metadata request and the topic config read.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest Graph API request of a check. A shorter configured timeout applies.
const GRAPH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Counts and prints check results.
#[derive(Debug, Default)]
struct Report {
    checks: usize,
    failed: usize,
}

impl Report {
    fn ok(&mut self, check: &str, note: Option<String>) {
        self.checks += 1;
        match note {
            Some(note) => println!("{check}: ok ({note})"),
            None => println!("{check}: ok"),
        }
    }

    fn failed(&mut self, check: &str, message: &str) {
        self.checks += 1;
        self.failed += 1;
        // Some parser errors span lines, so they are joined to keep one check
        // on one line.
        let message: Vec<&str> = message
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        println!("{check}: FAILED: {}", message.join(" "));
    }

    fn skipped(&mut self, check: &str, reason: &str) {
        println!("{check}: SKIPPED: {reason}");
    }

    fn finish(self) -> anyhow::Result<()> {
        if self.failed > 0 {
            anyhow::bail!(
                "{} of {} checks failed; fix them and run `leadgen-connector validate` again",
                self.failed,
                self.checks
            );
        }
        println!("all {} checks passed", self.checks);
        Ok(())
    }
}

/// Runs every check.
pub async fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    let check = format!("config `{}`", args.config.config.display());
    let config = match args.config.load() {
        Ok(config) => {
            report.ok(&check, None);
            config
        }
        Err(error) => {
            report.failed(
                &check,
                &format!(
                    "{}; fix the key named here and run validate again",
                    format!("{error:#}").trim_end()
                ),
            );
            return report.finish();
        }
    };

    let setup = KafkaSetup::new(config.kafka.clone());
    let topics = check_kafka(&setup, &mut report).await;
    match topics {
        Some(topics) => check_topics(&setup, &topics, &mut report).await,
        None => report.skipped("topics", "Kafka is not reachable"),
    }
    check_registry(&config, &mut report).await;
    check_pages(&config, &mut report).await;
    report.finish()
}

/// Sends a metadata request and returns the names of the existing topics.
async fn check_kafka(setup: &KafkaSetup, report: &mut Report) -> Option<Vec<String>> {
    let bootstrap = setup.config().bootstrap_servers.clone();
    let check = format!("Kafka at `{bootstrap}`");
    let client = setup.base_config();
    let result = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client.create()?;
        let metadata = consumer.fetch_metadata(None, KAFKA_TIMEOUT)?;
        Ok::<_, rdkafka::error::KafkaError>(
            metadata
                .topics()
                .iter()
                .filter(|topic| topic.error().is_none())
                .map(|topic| topic.name().to_owned())
                .collect::<Vec<_>>(),
        )
    })
    .await
    .expect("the metadata request does not panic");

    match result {
        Ok(topics) => {
            report.ok(&check, None);
            Some(topics)
        }
        Err(error) => {
            report.failed(
                &check,
                &format!(
                    "metadata request to kafka.bootstrap_servers `{bootstrap}` failed within {} s: {error}; check kafka.bootstrap_servers, kafka.properties and that the broker is running",
                    KAFKA_TIMEOUT.as_secs()
                ),
            );
            None
        }
    }
}

async fn check_topics(setup: &KafkaSetup, existing: &[String], report: &mut Report) {
    let kafka = setup.config();
    for (key, topic) in [
        ("kafka.leads_topic", &kafka.leads_topic),
        ("kafka.offsets_topic", &kafka.offsets_topic),
        ("kafka.dead_letter_topic", &kafka.dead_letter_topic),
        ("kafka.notifications_topic", &kafka.notifications_topic),
    ] {
        let check = format!("topic `{topic}` ({key})");
        let exists = existing.iter().any(|name| name == topic);
        if !exists {
            if kafka.create_topics {
                report.ok(
                    &check,
                    Some("missing; created at start-up because kafka.create_topics = true".into()),
                );
            } else {
                report.failed(
                    &check,
                    &format!("topic `{topic}` does not exist and kafka.create_topics = false; create it or set kafka.create_topics = true"),
                );
            }
            continue;
        }
        if topic != &kafka.offsets_topic {
            report.ok(&check, None);
            continue;
        }
        match cleanup_policy(setup, topic).await {
            Ok(policy) if policy == "compact" => {
                report.ok(&check, Some("cleanup.policy=compact".into()))
            }
            Ok(policy) => report.failed(
                &check,
                &format!("the offsets topic `{topic}` has cleanup.policy=`{policy}`, so stored offsets can be deleted; set cleanup.policy=compact on it (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact)"),
            ),
            Err(error) => report.failed(
                &check,
                &format!("cannot read the config of topic `{topic}`: {error}; check that the client may describe topic configs"),
            ),
        }
    }
}

/// Reads a topic's `cleanup.policy`.
async fn cleanup_policy(setup: &KafkaSetup, topic: &str) -> Result<String, String> {
    let admin: AdminClient<DefaultClientContext> = setup
        .base_config()
        .create()
        .map_err(|error| error.to_string())?;
    let options = AdminOptions::new().request_timeout(Some(KAFKA_TIMEOUT));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(|error| error.to_string())?;
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| "the broker returned no config".to_owned())?
        .map_err(|code| code.to_string())?;
    Ok(resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
        .unwrap_or_else(|| "delete".to_owned()))
}

async fn check_registry(config: &Config, report: &mut Report) {
    let subject = lead_subject(&config.kafka.leads_topic);
    let check = format!(
        "schema registry at `{}`, subject `{subject}`",
        config.schema_registry.display_url()
    );
    match check_lead_schema(&config.schema_registry, &subject).await {
        Ok(Compatibility::Compatible) => report.ok(
            &check,
            Some("the lead schema is compatible with the latest version".into()),
        ),
        Ok(Compatibility::NotRegistered) => report.ok(
            &check,
            Some("no version registered yet; the connector registers one at start-up".into()),
        ),
        Ok(Compatibility::Incompatible(messages)) => report.failed(
            &check,
            &format!(
                "schemas/lead.avsc is not compatible with the latest version of subject `{subject}`{}; register a compatible version, change the subject's compatibility level, or use a new kafka.leads_topic",
                explain(&messages)
            ),
        ),
        Err(message) => report.failed(&check, &message),
    }
}

/// Formats the registry's explanation of an incompatibility as a clause.
pub(crate) fn explain(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(" ({})", messages.join("; "))
    }
}

async fn check_pages(config: &Config, report: &mut Report) {
    let mut graph_config = config.graph.clone();
    graph_config.max_attempts = 1;
    graph_config.request_timeout = graph_config.request_timeout.min(GRAPH_TIMEOUT);
    let graph = match GraphClient::new(&graph_config) {
        Ok(graph) => graph,
        Err(error) => {
            report.failed(
                "Graph API client",
                &format!("{error}; check graph.base_url and graph.version"),
            );
            return;
        }
    };

    for (index, page) in config.pages.iter().enumerate() {
        let auth = PageAuth {
            page_id: page.id.clone(),
            access_token: page.access_token.clone(),
        };
        let token_check = format!("Page `{}` access token", page.id);
        let permission_check = format!("Page `{}` leads permission", page.id);
        let token_key = format!("pages[{index}].access_token");

        match graph.page(&auth).await {
            Ok(body) => {
                let name = body.get("name").and_then(|name| name.as_str());
                report.ok(&token_check, name.map(|name| format!("Page name `{name}`")));
            }
            Err(error) => {
                report.failed(
                    &token_check,
                    &graph_failure(config, page, &token_key, &error, None),
                );
                report.skipped(&permission_check, "the token check failed");
                continue;
            }
        }

        let form_id = match page.forms.first() {
            Some(form_id) => form_id.clone(),
            None => match graph.leadgen_forms(&auth).await {
                Ok(forms) => match forms.into_iter().next() {
                    Some(form) => form.id,
                    None => {
                        report.ok(
                            &permission_check,
                            Some("the Page lists no lead forms to read".into()),
                        );
                        continue;
                    }
                },
                Err(error) => {
                    report.failed(
                        &permission_check,
                        &graph_failure(config, page, &token_key, &error, None),
                    );
                    continue;
                }
            },
        };
        match graph.form_leads(&auth, &form_id, &[], None, 1).await {
            Ok(_) => report.ok(&permission_check, Some(format!("read form `{form_id}`"))),
            Err(error) => report.failed(
                &permission_check,
                &graph_failure(config, page, &token_key, &error, Some(&form_id)),
            ),
        }
    }
}

/// Says what a failed Graph API call of a check means and what to do. The
/// message names the Page and the config key, never the token.
fn graph_failure(
    config: &Config,
    page: &PageConfig,
    token_key: &str,
    error: &GraphError,
    form_id: Option<&str>,
) -> String {
    let page_id = &page.id;
    let target = match form_id {
        Some(form_id) => format!("reading one lead of form `{form_id}`"),
        None => "reading the Page".to_owned(),
    };
    match error.class() {
        ErrorClass::Token => format!(
            "the Graph API rejected the access token of Page `{page_id}` ({token_key}) when {target}: {error}; generate a new Page access token and set it in {token_key}"
        ),
        ErrorClass::Permission => format!(
            "the access token of Page `{page_id}` ({token_key}) lacks the leads permission: {target} failed with {error}; grant the app the leads_retrieval permission on this Page and set a new Page access token in {token_key}"
        ),
        ErrorClass::NotFound => match form_id {
            Some(form_id) => format!(
                "form `{form_id}` of Page `{page_id}` does not exist or is not visible with the Page's token: {error}; check the form id in the Page's forms list"
            ),
            None => format!(
                "Page `{page_id}` does not exist or is not visible with its token: {error}; check the Page id and that {token_key} is a token of this Page"
            ),
        },
        ErrorClass::Transient | ErrorClass::RateLimited | ErrorClass::Invalid => format!(
            "{target} for Page `{page_id}` through the Graph API at graph.base_url `{}` failed: {error}; check graph.base_url and graph.version, then run validate again",
            config.graph.base_url
        ),
    }
}
