//! Operator commands of the `leadgen-connector` binary: `validate`,
//! `offsets show` and `offsets reset`, `backfill`, `schema` and `replay`.
//!
//! Commands that write to Kafka use the transactional id
//! `<kafka.transactional_id>-cli`, so they never fence the producer of a
//! running connector, and two such commands fence each other. They read the
//! stored offsets once at start. A connector that runs at the same time
//! keeps its own copy of every offset and overwrites their offset records,
//! so stop it first.

pub mod backfill;
pub mod offsets;
pub mod registry;
pub mod replay;
pub mod schema;
pub mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::avro::LeadEncoder;
use crate::config::{Config, StartTime};
use crate::forms::Pages;
use crate::graph::GraphClient;
use crate::kafka::{KafkaSetup, Sink};
use crate::metrics::Metrics;
use crate::offsets::{load_offsets, DedupLimits, FormOffset};
use crate::reader::LeadReader;

/// Appended to `kafka.transactional_id` for the producer of these commands.
pub const TRANSACTIONAL_ID_SUFFIX: &str = "-cli";

/// Time allowed for reading the offsets topic.
const OFFSETS_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for listing a consumer group's members.
const GROUP_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Delay before the first re-read of a lead that came back incomplete.
const REREAD_DELAY: Duration = Duration::from_millis(500);

/// The `--config` option every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Path of the connector configuration.
    #[arg(long, short, default_value = "connector.toml")]
    pub config: PathBuf,
}

impl ConfigArg {
    /// Reads and validates the configuration file.
    pub fn load(&self) -> anyhow::Result<Config> {
        load_config(&self.config)
    }
}

/// Reads a config file, naming it in the error.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("invalid configuration in `{}`", path.display()))
}

/// Parses a command-line time: Unix seconds or RFC 3339.
pub fn parse_time(text: &str) -> Result<i64, String> {
    StartTime::parse(text).map(|time| time.0)
}

/// Renders Unix seconds as RFC 3339 in UTC.
pub fn format_time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{seconds} (out of range)"))
}

/// Kafka settings of the commands that write, with their own
/// transactional id.
pub fn writer_setup(config: &Config) -> KafkaSetup {
    let mut kafka = config.kafka.clone();
    kafka.transactional_id = format!("{}{TRANSACTIONAL_ID_SUFFIX}", kafka.transactional_id);
    KafkaSetup::new(kafka)
}

/// Reads the latest stored offset of every form.
pub async fn stored_offsets(setup: &KafkaSetup) -> anyhow::Result<HashMap<String, FormOffset>> {
    let topic = setup.config().offsets_topic.clone();
    let loader = setup.clone();
    let loaded = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || load_offsets(&loader, &topic, OFFSETS_LOAD_TIMEOUT))
            .await
            .expect("offset loading does not panic")
    };
    loaded.with_context(|| {
        format!(
            "cannot read offsets topic `{topic}` (kafka.offsets_topic) from Kafka at `{}`; check kafka.bootstrap_servers and that the broker is running",
            setup.config().bootstrap_servers
        )
    })
}

/// Creates missing topics when `kafka.create_topics` is set, registers the
/// lead schema and starts the transactional producer.
pub async fn connect_sink(config: &Config, setup: &KafkaSetup) -> anyhow::Result<Arc<Sink>> {
    if config.kafka.create_topics {
        setup.create_topics().await.with_context(|| {
            format!(
                "cannot create topics on Kafka at `{}`; check kafka.bootstrap_servers and that the broker is running",
                config.kafka.bootstrap_servers
            )
        })?;
    }
    let encoder = LeadEncoder::register(&config.schema_registry, &config.kafka.leads_topic)
        .await
        .with_context(|| {
            format!(
                "cannot register the lead schema at `{}`; check schema_registry.url and that the registry is running",
                config.schema_registry.display_url()
            )
        })?;
    let sink = Sink::connect(setup.clone(), encoder, Metrics::shared())
        .await
        .with_context(|| {
            format!(
                "cannot start a transactional producer on Kafka at `{}`; check kafka.bootstrap_servers and that the broker is running",
                setup.config().bootstrap_servers
            )
        })?;
    Ok(sink)
}

/// Builds a lead reader with the configured Pages and their tokens.
pub fn lead_reader(config: &Config) -> anyhow::Result<LeadReader> {
    let graph = GraphClient::new(&config.graph).context("cannot build the Graph API client")?;
    Ok(LeadReader {
        graph,
        pages: Arc::new(Pages::new(&config.pages)),
        metrics: Metrics::shared(),
        reread_delay: REREAD_DELAY,
    })
}

/// Deduplication limits from `[backfill]`.
pub fn dedup_limits(config: &Config) -> DedupLimits {
    DedupLimits {
        retention: config.backfill.dedup_retention,
        max_ids: config.backfill.max_recent_ids,
    }
}

/// Finds the Page of a form in the configuration, or else in the form's
/// stored offset when that Page is configured.
pub fn page_of_form(
    config: &Config,
    offsets: &HashMap<String, FormOffset>,
    form_id: &str,
) -> anyhow::Result<String> {
    if let Some((_, page_id)) = config
        .configured_forms()
        .into_iter()
        .find(|(form, _)| form == form_id)
    {
        return Ok(page_id);
    }
    match offsets.get(form_id) {
        Some(offset) if config.pages.iter().any(|page| page.id == offset.page_id) => {
            Ok(offset.page_id.clone())
        }
        Some(offset) => anyhow::bail!(
            "form `{form_id}` belongs to Page `{}`, which is not configured; add that Page to [[pages]]",
            offset.page_id
        ),
        None => anyhow::bail!(
            "form `{form_id}` is not listed in any pages[].forms and has no stored offset in `{}`; check the form id",
            config.kafka.offsets_topic
        ),
    }
}

/// Tells the operator that a running connector must be stopped first, and
/// rejects the command when one is seen running, unless `force` is set.
///
/// A connector with `[webhook]` is a member of `kafka.consumer_group` while
/// it runs, so a group with members means one is running. A connector
/// without webhooks joins no group and is not detected.
pub async fn check_no_running_connector(
    config: &Config,
    setup: &KafkaSetup,
    form_id: &str,
    force: bool,
) -> anyhow::Result<()> {
    eprintln!(
        "warning: stop every running connector that reads form `{form_id}` first; a running connector keeps its own copy of the form's offset and overwrites the record this command writes"
    );
    if config.webhook.is_none() || force {
        return Ok(());
    }
    let members = consumer_group_members(setup).await?;
    if members > 0 {
        anyhow::bail!(
            "a connector is running: consumer group `{}` (kafka.consumer_group) has {members} members; stop the connector and run the command again, or pass --force if the running connector does not read form `{form_id}`",
            config.kafka.consumer_group
        );
    }
    Ok(())
}

/// Counts the members of `kafka.consumer_group`.
pub async fn consumer_group_members(setup: &KafkaSetup) -> anyhow::Result<usize> {
    let group = setup.config().consumer_group.clone();
    let client = setup.base_config();
    let members = {
        let group = group.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = client.create()?;
            let list = consumer.fetch_group_list(Some(&group), GROUP_LIST_TIMEOUT)?;
            let members = list
                .groups()
                .iter()
                .filter(|entry| entry.name() == group)
                .map(|entry| entry.members().len())
                .sum::<usize>();
            Ok::<_, rdkafka::error::KafkaError>(members)
        })
        .await
        .expect("the group list request does not panic")
    };
    members.with_context(|| {
        format!(
            "cannot list the members of consumer group `{group}` on Kafka at `{}`; check kafka.bootstrap_servers, or pass --force to skip the check",
            setup.config().bootstrap_servers
        )
    })
}
