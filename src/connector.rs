//! Start-up and the running connector: topics, schema, stored offsets, the
//! transactional sink, and one backfill loop per owned form.
//!
//! Start-up fails fast, with a message naming what is unreachable, when
//! Kafka or the schema registry cannot be reached or the stored offsets
//! cannot be read. After start-up, failures are retried on the next
//! interval and never stop the process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::avro::LeadEncoder;
use crate::backfill::{Backfill, BackfillError};
use crate::config::Config;
use crate::forms::{FormHandle, Forms, Pages};
use crate::graph::GraphClient;
use crate::kafka::{KafkaSetup, Sink};
use crate::offsets::{load_offsets, DedupLimits, FormOffset, FormState};

/// Time allowed for reading the offsets topic at start-up.
const OFFSETS_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// A started connector.
pub struct Connector {
    config: Config,
    backfill: Backfill,
    forms: Arc<Forms>,
}

impl Connector {
    /// Connects to Kafka and the registry, loads offsets and resolves the
    /// forms to read.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let setup = KafkaSetup::new(config.kafka.clone());
        if config.kafka.create_topics {
            setup.create_topics().await.with_context(|| {
                format!("cannot create topics on Kafka at `{}`; check kafka.bootstrap_servers and that the broker is running", config.kafka.bootstrap_servers)
            })?;
        }

        let encoder = LeadEncoder::register(&config.schema_registry, &config.kafka.leads_topic)
            .await
            .with_context(|| format!("cannot register the lead schema at `{}`; check schema_registry.url and that the registry is running", config.schema_registry.url))?;

        let offsets = {
            let setup = setup.clone();
            let topic = config.kafka.offsets_topic.clone();
            tokio::task::spawn_blocking(move || load_offsets(&setup, &topic, OFFSETS_LOAD_TIMEOUT))
                .await
                .expect("offset loading does not panic")
                .with_context(|| {
                    format!("cannot read offsets topic `{}`", config.kafka.offsets_topic)
                })?
        };
        tracing::info!(forms_with_offsets = offsets.len(), "loaded stored offsets");

        let sink = Sink::connect(setup, encoder)
            .await
            .context("cannot start the Kafka transactional producer")?;
        let graph = GraphClient::new(&config.graph).context("cannot build the Graph API client")?;
        let pages = Arc::new(Pages::new(&config.pages));

        let limits = DedupLimits {
            retention: config.backfill.dedup_retention,
            max_ids: config.backfill.max_recent_ids,
        };
        let forms = Arc::new(Forms::default());
        for (form_id, page_id) in resolve_forms(&config, &graph, &pages).await {
            let offset = offsets
                .get(&form_id)
                .cloned()
                .unwrap_or_else(|| FormOffset::new(&form_id, &page_id));
            forms.insert(FormHandle {
                form_id,
                page_id,
                state: tokio::sync::Mutex::new(FormState::new(offset, limits)),
            });
        }

        let backfill = Backfill {
            graph,
            sink,
            pages,
            settings: config.backfill.clone(),
        };
        Ok(Self {
            config,
            backfill,
            forms,
        })
    }

    pub fn forms(&self) -> &Arc<Forms> {
        &self.forms
    }

    /// Runs until `shutdown` is cancelled; in-flight transactions finish
    /// before it returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let forms = self.forms.all();
        tracing::info!(forms = forms.len(), interval = ?self.config.backfill.interval, "connector running");

        let permits = Arc::new(Semaphore::new(self.config.backfill.concurrency));
        let mut tasks = JoinSet::new();
        for form in forms {
            let backfill = self.backfill.clone();
            let permits = permits.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(backfill_loop(backfill, form, permits, shutdown));
        }
        while let Some(result) = tasks.join_next().await {
            result.context("a backfill task panicked")?;
        }
        tracing::info!("connector stopped");
        Ok(())
    }
}

/// Configured forms, plus every form listed on Pages configured without any.
async fn resolve_forms(
    config: &Config,
    graph: &GraphClient,
    pages: &Pages,
) -> Vec<(String, String)> {
    let mut forms = config.configured_forms();
    for page in config.pages.iter().filter(|page| page.forms.is_empty()) {
        let Ok(auth) = pages.auth(&page.id) else {
            continue;
        };
        match graph.leadgen_forms(&auth).await {
            Ok(listed) => {
                tracing::info!(page_id = %page.id, forms = listed.len(), "discovered lead forms");
                forms.extend(listed.into_iter().map(|form| (form.id, page.id.clone())));
            }
            Err(error) => {
                pages.report(&page.id, &error);
                tracing::error!(page_id = %page.id, error = %error, "cannot list the Page's lead forms");
            }
        }
    }
    forms
}

async fn backfill_loop(
    backfill: Backfill,
    form: Arc<FormHandle>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let interval = backfill.settings.interval;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = permits.acquire() => permit.expect("the semaphore is never closed"),
        };
        let started = std::time::Instant::now();
        match backfill.read_form(&form, &shutdown).await {
            Ok(summary) => tracing::info!(
                form_id = %form.form_id,
                pages = summary.pages,
                leads_seen = summary.leads_seen,
                leads_written = summary.leads_written,
                dead_letters = summary.dead_letters,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "bulk read complete"
            ),
            Err(BackfillError::Cancelled) => return,
            Err(error @ BackfillError::PageStopped { .. }) => {
                tracing::warn!(form_id = %form.form_id, page_id = %form.page_id, error = %error, "bulk read skipped");
            }
            Err(error) => {
                tracing::error!(form_id = %form.form_id, page_id = %form.page_id, error = %error, "bulk read failed; it runs again next interval");
            }
        }
        drop(permit);

        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
