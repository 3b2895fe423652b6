//! Start-up and the running connector: topics, schema, stored offsets, the
//! transactional sink, the webhook receiver and fetcher, the operations
//! listener, and one backfill loop per owned form.
//!
//! Start-up fails fast, with a message naming what is unreachable, when
//! Kafka or the schema registry cannot be reached, the stored offsets
//! cannot be read, or a listener cannot bind. After start-up, failures are
//! retried and never stop the process. On shutdown the webhook receiver
//! answers 503, and in-flight transactions finish before `run` returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::avro::LeadEncoder;
use crate::backfill::{Backfill, BackfillError};
use crate::config::{Config, PageConfig};
use crate::fetcher::{FetchSettings, Fetcher};
use crate::forms::{FormHandle, Forms, Pages};
use crate::graph::{GraphClient, PageAuth};
use crate::kafka::{KafkaSetup, Sink};
use crate::metrics::{Metrics, PageLabel};
use crate::offsets::{load_offsets, DedupLimits, FormOffset, FormState};
use crate::reader::LeadReader;
use crate::secret::Secret;
use crate::webhook::{self, Receiver};

/// Time allowed for reading the offsets topic at start-up.
const OFFSETS_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Delay before the first re-read of an incomplete or invisible lead.
const REREAD_DELAY: Duration = Duration::from_millis(500);

/// The webhook side of a started connector.
struct WebhookParts {
    listener: TcpListener,
    receiver: Arc<Receiver>,
    fetcher: Fetcher,
    path: String,
    max_body_bytes: usize,
}

/// Applies a reloaded configuration's Page tokens. A Page whose token
/// changed is healthy again: its backfill resumes and its pending webhook
/// notifications are read. Other settings take effect on restart; a
/// warning names the Pages or forms that a reload adds or removes.
#[derive(Clone)]
pub struct Reloader {
    pages: Arc<Pages>,
    metrics: Arc<Metrics>,
    /// Configured form ids of each Page at start-up.
    started: Arc<BTreeMap<String, Vec<String>>>,
}

impl Reloader {
    pub fn apply(&self, config: &Config) {
        for change in changes_needing_restart(&self.started, &config.pages) {
            tracing::warn!(change = %change, "reloaded configuration changes the Pages or forms read; this takes effect only when the connector restarts");
        }
        let before = self.pages.health();
        self.pages.reload(&config.pages);
        for (page_id, health) in self.pages.health() {
            self.metrics.set_page_state(&page_id, health.as_str());
            if before.get(&page_id).is_some_and(|old| *old != health) {
                tracing::info!(page_id = %page_id, health = health.as_str(), "Page token replaced; calls for this Page resume");
            }
        }
        tracing::info!(
            pages = config.pages.len(),
            "configuration reloaded; new Page tokens apply now, other changes on restart"
        );
    }
}

/// Returns the configured form ids of each Page, sorted.
fn configured_forms(pages: &[PageConfig]) -> BTreeMap<String, Vec<String>> {
    pages
        .iter()
        .map(|page| {
            let mut forms = page.forms.clone();
            forms.sort();
            (page.id.clone(), forms)
        })
        .collect()
}

/// Describes each Page or form that `pages` adds or removes against the
/// configuration the connector started with.
fn changes_needing_restart(
    started: &BTreeMap<String, Vec<String>>,
    pages: &[PageConfig],
) -> Vec<String> {
    let reloaded = configured_forms(pages);
    let mut changes = Vec::new();
    for (page_id, forms) in &reloaded {
        match started.get(page_id) {
            None => changes.push(format!("Page `{page_id}` added")),
            Some(before) if before.is_empty() != forms.is_empty() => changes.push(format!(
                "Page `{page_id}` switched between listed forms and form discovery"
            )),
            Some(before) if before != forms => {
                let before: BTreeSet<&String> = before.iter().collect();
                let after: BTreeSet<&String> = forms.iter().collect();
                for form_id in after.difference(&before) {
                    changes.push(format!("form `{form_id}` added to Page `{page_id}`"));
                }
                for form_id in before.difference(&after) {
                    changes.push(format!("form `{form_id}` removed from Page `{page_id}`"));
                }
            }
            Some(_) => {}
        }
    }
    for page_id in started.keys().filter(|id| !reloaded.contains_key(*id)) {
        changes.push(format!("Page `{page_id}` removed"));
    }
    changes
}

/// A started connector.
pub struct Connector {
    config: Config,
    /// Offsets loaded at start-up, for forms discovered later.
    stored_offsets: Arc<HashMap<String, FormOffset>>,
    limits: DedupLimits,
    backfill: Backfill,
    forms: Arc<Forms>,
    metrics: Arc<Metrics>,
    admin_listener: TcpListener,
    admin_state: Arc<AdminState>,
    webhook: Option<WebhookParts>,
}

impl Connector {
    /// Connects to Kafka and the registry, loads offsets, resolves the forms
    /// to read and binds the listeners.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let metrics = Metrics::shared();
        let setup = KafkaSetup::new(config.kafka.clone());
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

        let sink = Sink::connect(setup.clone(), encoder, metrics.clone())
            .await
            .context("cannot start the Kafka transactional producer")?;
        let graph = GraphClient::new(&config.graph)
            .context("cannot build the Graph API client")?
            .with_metrics(metrics.clone());
        let pages = Arc::new(Pages::new(&config.pages));
        for page in &config.pages {
            metrics.set_page_state(&page.id, "healthy");
        }
        let reader = LeadReader {
            graph,
            pages: pages.clone(),
            metrics: metrics.clone(),
            reread_delay: REREAD_DELAY,
        };

        let limits = DedupLimits {
            retention: config.backfill.dedup_retention,
            max_ids: config.backfill.max_recent_ids,
        };
        let forms = Arc::new(Forms::default());
        for (form_id, page_id) in resolve_forms(&config, &reader).await {
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

        let webhook = match &config.webhook {
            None => None,
            Some(webhook_config) => {
                let app_secret = config
                    .graph
                    .app_secret
                    .clone()
                    .expect("config validation requires graph.app_secret with [webhook]");
                let receiver = Receiver::new(webhook_config, app_secret, &setup, metrics.clone())
                    .context("cannot create the notification producer")?;
                let settings = FetchSettings {
                    batch_size: webhook_config.fetch_batch,
                    linger: webhook_config.fetch_linger,
                };
                let fetcher = Fetcher::new(
                    &setup,
                    reader.clone(),
                    sink.clone(),
                    forms.clone(),
                    settings,
                )
                .context("cannot create the notification consumer")?;
                let listener = TcpListener::bind(webhook_config.listen)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot listen on webhook.listen `{}`",
                            webhook_config.listen
                        )
                    })?;
                Some(WebhookParts {
                    listener,
                    receiver,
                    fetcher,
                    path: webhook_config.path.clone(),
                    max_body_bytes: webhook_config.max_body_bytes,
                })
            }
        };

        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on admin.listen `{}`", config.admin.listen))?;
        let admin_state = Arc::new(AdminState {
            metrics: metrics.clone(),
            pages: pages.clone(),
            kafka: setup,
            registry: config.schema_registry.clone(),
            http: reqwest::Client::new(),
            notifications: webhook.as_ref().map(|parts| parts.fetcher.health()),
        });

        let backfill = Backfill {
            reader,
            sink,
            settings: config.backfill.clone(),
            webhooks_enabled: webhook.is_some(),
        };
        Ok(Self {
            config,
            stored_offsets: Arc::new(offsets),
            limits,
            backfill,
            forms,
            metrics,
            admin_listener,
            admin_state,
            webhook,
        })
    }

    /// A handle that applies new Page tokens while the connector runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            pages: self.backfill.reader.pages.clone(),
            metrics: self.metrics.clone(),
            started: Arc::new(configured_forms(&self.config.pages)),
        }
    }

    pub fn forms(&self) -> &Arc<Forms> {
        &self.forms
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Address the webhook listener is bound to, when webhooks are on.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook
            .as_ref()
            .and_then(|parts| parts.listener.local_addr().ok())
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let forms = self.forms.all();
        tracing::info!(
            forms = forms.len(),
            interval = ?self.config.backfill.interval,
            webhook = ?self.webhook_addr(),
            admin = %self.admin_addr(),
            "connector running"
        );

        let tasks = TaskTracker::new();
        let admin_app = admin::router(self.admin_state.clone());
        let admin_shutdown = shutdown.clone();
        let admin_listener = self.admin_listener;
        tasks.spawn(async move {
            let result = axum::serve(admin_listener, admin_app)
                .with_graceful_shutdown(admin_shutdown.cancelled_owned())
                .await;
            if let Err(error) = result {
                tracing::error!(error = %error, "admin listener failed");
            }
        });

        if let Some(parts) = self.webhook {
            let app = webhook::router(parts.receiver.clone(), &parts.path, parts.max_body_bytes);
            let receiver = parts.receiver.clone();
            let webhook_shutdown = shutdown.clone();
            tasks.spawn(async move {
                let stop = async move {
                    webhook_shutdown.cancelled().await;
                    receiver.stop_accepting();
                };
                let result = axum::serve(parts.listener, app)
                    .with_graceful_shutdown(stop)
                    .await;
                if let Err(error) = result {
                    tracing::error!(error = %error, "webhook listener failed");
                }
            });
            tasks.spawn(parts.fetcher.run(shutdown.clone()));
        }

        let permits = Arc::new(Semaphore::new(self.config.backfill.concurrency));
        for form in forms {
            tasks.spawn(backfill_loop(
                self.backfill.clone(),
                form,
                permits.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(app_token) = self.config.graph.app_access_token.clone() {
            let checker = TokenCheck {
                reader: self.backfill.reader.clone(),
                app_token,
                interval: self.config.graph.token_check_interval,
                warning: self.config.graph.token_expiry_warning,
            };
            tasks.spawn(checker.run(shutdown.clone()));
        }
        if self.config.pages.iter().any(|page| page.forms.is_empty()) {
            let discovery = Discovery {
                config: self.config.clone(),
                backfill: self.backfill.clone(),
                forms: self.forms.clone(),
                stored_offsets: self.stored_offsets.clone(),
                limits: self.limits,
                permits,
                tasks: tasks.clone(),
            };
            tasks.spawn(discovery.run(shutdown.clone()));
        }

        tasks.close();
        tasks.wait().await;
        tracing::info!("connector stopped");
        Ok(())
    }
}

/// Configured forms, plus every form listed on Pages configured without any.
async fn resolve_forms(config: &Config, reader: &LeadReader) -> Vec<(String, String)> {
    let mut forms = config.configured_forms();
    forms.extend(discover_forms(config, reader).await);
    forms
}

/// Every form listed on Pages configured without forms.
async fn discover_forms(config: &Config, reader: &LeadReader) -> Vec<(String, String)> {
    let mut forms = Vec::new();
    for page in config.pages.iter().filter(|page| page.forms.is_empty()) {
        let Ok(auth) = reader.pages.auth(&page.id) else {
            continue;
        };
        match reader.graph.leadgen_forms(&auth).await {
            Ok(listed) => {
                tracing::info!(page_id = %page.id, forms = listed.len(), "discovered lead forms");
                forms.extend(listed.into_iter().map(|form| (form.id, page.id.clone())));
            }
            Err(error) => {
                let error = reader.report(&page.id, error);
                tracing::error!(page_id = %page.id, error = %error, "cannot list the Page's lead forms");
            }
        }
    }
    forms
}

/// Checks every Page token with `debug_token` on an interval, so that an
/// expiring token is reported before Meta starts rejecting calls.
struct TokenCheck {
    reader: LeadReader,
    app_token: Secret,
    interval: Duration,
    warning: Duration,
}

impl TokenCheck {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            for auth in self.reader.pages.all_auth() {
                self.check(&auth).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn check(&self, auth: &PageAuth) {
        let info = match self.reader.graph.debug_token(&self.app_token, auth).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(page_id = %auth.page_id, error = %error, "cannot check the Page token with debug_token");
                return;
            }
        };
        let gauge = self
            .reader
            .metrics
            .token_expires_in
            .get_or_create(&PageLabel {
                page_id: auth.page_id.clone(),
            });
        if !info.is_valid {
            tracing::error!(page_id = %auth.page_id, "debug_token reports the Page token as invalid; replace it and send SIGHUP");
        }
        if info.expires_at == 0 {
            gauge.set(-1);
            return;
        }
        let remaining = info.expires_at - chrono::Utc::now().timestamp();
        gauge.set(remaining);
        if remaining < self.warning.as_secs() as i64 {
            tracing::warn!(
                page_id = %auth.page_id,
                expires_in_hours = remaining / 3600,
                "Page access token expires soon; replace it in the config and send SIGHUP"
            );
        }
    }
}

/// Lists forms of Pages configured without forms on an interval and starts
/// reading the new ones.
struct Discovery {
    config: Config,
    backfill: Backfill,
    forms: Arc<Forms>,
    stored_offsets: Arc<HashMap<String, FormOffset>>,
    limits: DedupLimits,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Discovery {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.backfill.discovery_interval) => {}
            }
            for (form_id, page_id) in discover_forms(&self.config, &self.backfill.reader).await {
                if self.forms.contains(&form_id) {
                    continue;
                }
                let offset = self
                    .stored_offsets
                    .get(&form_id)
                    .cloned()
                    .unwrap_or_else(|| FormOffset::new(&form_id, &page_id));
                tracing::info!(form_id = %form_id, page_id = %page_id, "new lead form discovered; reading it");
                let form = self.forms.insert(FormHandle {
                    form_id,
                    page_id,
                    state: tokio::sync::Mutex::new(FormState::new(offset, self.limits)),
                });
                self.tasks.spawn(backfill_loop(
                    self.backfill.clone(),
                    form,
                    self.permits.clone(),
                    shutdown.clone(),
                ));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn page(id: &str, forms: &[&str]) -> PageConfig {
        PageConfig {
            id: id.to_owned(),
            access_token: Secret::new("token"),
            forms: forms.iter().map(|form| (*form).to_owned()).collect(),
        }
    }

    #[test]
    fn reload_with_same_forms_needs_no_restart() {
        let started = configured_forms(&[page("1", &["11", "12"]), page("2", &[])]);

        let changes =
            changes_needing_restart(&started, &[page("2", &[]), page("1", &["12", "11"])]);

        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn reload_names_pages_and_forms_changed() {
        let started =
            configured_forms(&[page("1", &["11", "12"]), page("2", &[]), page("3", &["31"])]);

        let changes = changes_needing_restart(
            &started,
            &[page("1", &["11", "13"]), page("2", &["21"]), page("4", &[])],
        );

        assert_eq!(
            changes,
            [
                "form `13` added to Page `1`",
                "form `12` removed from Page `1`",
                "Page `2` switched between listed forms and form discovery",
                "Page `4` added",
                "Page `3` removed",
            ]
        );
    }
}
