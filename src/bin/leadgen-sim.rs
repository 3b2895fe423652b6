//! `leadgen-sim`: runs the Graph API simulator as a standalone server for
//! demos, manual tests and benchmarks, until Ctrl-C or SIGTERM.
//!
//! The world comes from `--config FILE` (TOML), `--demo`, or the generated
//! flags (`--pages`, `--forms-per-page`, `--leads-per-form`). Flags such as
//! `--seed`, `--rate` or `--daily-budget` override any of the three.
//!
//! `--webhook-url` sends a signed `leadgen` webhook for each lead created at
//! run time. The other `--webhook-*` flags override single fields of the
//! config file's `[webhook]` table or of the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use clap::Parser;
use leadgen_connector::sim::{self, SimConfig, WebhookConfig, GENERATED_TOKEN_PREFIX};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "leadgen-sim",
    version,
    about = "Simulates Meta's Graph API for Lead Ads: Pages, lead forms and leads"
)]
struct Cli {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,

    /// TOML file with the simulator configuration (the fields of SimConfig).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["demo", "pages", "forms_per_page", "leads_per_form", "token_prefix"])]
    config: Option<PathBuf>,

    /// Use the demo world: 2 Pages, 3 forms, 390 leads.
    #[arg(long, conflicts_with_all = ["pages", "forms_per_page", "leads_per_form"])]
    demo: bool,

    /// Seed for generated data [default: 1, or 42 with --demo].
    #[arg(long)]
    seed: Option<u64>,

    /// Number of generated Pages.
    #[arg(long, default_value_t = 1)]
    pages: usize,

    /// Number of generated forms per Page.
    #[arg(long, default_value_t = 2)]
    forms_per_page: usize,

    /// Number of initial leads per generated form.
    #[arg(long, default_value_t = 100)]
    leads_per_form: usize,

    /// Days before start-up that the initial leads are spread over [default: 30].
    #[arg(long, value_name = "DAYS")]
    history_days: Option<u32>,

    /// Leads created per second at run time, across all forms; 0 is off.
    #[arg(long, value_name = "LEADS_PER_SECOND")]
    rate: Option<f64>,

    /// App secret; when set, every call must carry a matching appsecret_proof.
    #[arg(long, env = "LEADGEN_SIM_APP_SECRET", hide_env_values = true)]
    app_secret: Option<String>,

    /// Calls each Page may make per budget window before code 80005 [default: unlimited].
    #[arg(long, value_name = "CALLS")]
    daily_budget: Option<u64>,

    /// Length of the rolling budget window, such as 24h or 30s [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    budget_window: Option<Duration>,

    /// Prefix of generated access tokens; the token is the prefix followed by
    /// the Page id [default: EAASIM].
    #[arg(long)]
    token_prefix: Option<String>,

    /// Log each Page's access token at start-up.
    #[arg(long)]
    print_tokens: bool,

    #[command(flatten)]
    webhook: WebhookArgs,
}

/// Flags of the webhook sender; each overrides one field of `[webhook]`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Webhooks")]
struct WebhookArgs {
    /// URL that receives a signed leadgen webhook for each lead created at run time.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,

    /// Key of X-Hub-Signature-256 [default: the --app-secret value].
    #[arg(long, env = "LEADGEN_SIM_WEBHOOK_APP_SECRET", hide_env_values = true)]
    webhook_app_secret: Option<String>,

    /// Share of notifications, from 0 to 1, that are never sent [default: 0].
    #[arg(long, value_name = "SHARE")]
    webhook_drop: Option<f64>,

    /// Share of notifications, from 0 to 1, that are sent twice [default: 0].
    #[arg(long, value_name = "SHARE")]
    webhook_duplicate: Option<f64>,

    /// Share of notifications, from 0 to 1, that wait --webhook-delay first [default: 0].
    #[arg(long, value_name = "SHARE")]
    webhook_delay_share: Option<f64>,

    /// Wait of delayed notifications, such as 2s [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    webhook_delay: Option<Duration>,

    /// POSTs ready within this window are sent in a shuffled order, such as 500ms [default: 0s, off].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    webhook_reorder_window: Option<Duration>,

    /// Maximum leadgen changes per POST [default: 1].
    #[arg(long, value_name = "CHANGES")]
    webhook_batch_max: Option<usize>,

    /// Time a failed POST keeps being retried before it is abandoned, such as 1m [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    webhook_retry_for: Option<Duration>,
}

impl WebhookArgs {
    /// Applies the flags to the config file's webhook settings, if any.
    fn apply(&self, webhook: Option<WebhookConfig>) -> anyhow::Result<Option<WebhookConfig>> {
        let mut webhook = match (webhook, &self.webhook_url) {
            (Some(mut webhook), Some(url)) => {
                webhook.url = url.clone();
                webhook
            }
            (Some(webhook), None) => webhook,
            (None, Some(url)) => WebhookConfig::new(url.clone()),
            (None, None) => {
                if self.any_field_set() {
                    bail!("--webhook-* flags need --webhook-url or a [webhook] table in --config");
                }
                return Ok(None);
            }
        };
        if let Some(secret) = &self.webhook_app_secret {
            webhook.app_secret = Some(secret.clone());
        }
        if let Some(share) = self.webhook_drop {
            webhook.drop_share = share;
        }
        if let Some(share) = self.webhook_duplicate {
            webhook.duplicate_share = share;
        }
        if let Some(share) = self.webhook_delay_share {
            webhook.delay_share = share;
        }
        if let Some(delay) = self.webhook_delay {
            webhook.delay = delay;
        }
        if let Some(window) = self.webhook_reorder_window {
            webhook.reorder_window = window;
        }
        if let Some(batch_max) = self.webhook_batch_max {
            webhook.batch_max = batch_max;
        }
        if let Some(retry_for) = self.webhook_retry_for {
            webhook.retry_for = retry_for;
        }
        Ok(Some(webhook))
    }

    fn any_field_set(&self) -> bool {
        self.webhook_app_secret.is_some()
            || self.webhook_drop.is_some()
            || self.webhook_duplicate.is_some()
            || self.webhook_delay_share.is_some()
            || self.webhook_delay.is_some()
            || self.webhook_reorder_window.is_some()
            || self.webhook_batch_max.is_some()
            || self.webhook_retry_for.is_some()
    }
}

impl Cli {
    fn simulator_config(&self) -> anyhow::Result<SimConfig> {
        let mut config = if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            SimConfig::from_toml(&text)
                .with_context(|| format!("invalid config {}", path.display()))?
        } else if self.demo {
            SimConfig::demo()
        } else {
            SimConfig::generated(1, self.pages, self.forms_per_page, self.leads_per_form)
        };

        if let Some(prefix) = &self.token_prefix {
            for page in &mut config.pages {
                page.access_token = page
                    .access_token
                    .replacen(GENERATED_TOKEN_PREFIX, prefix, 1);
            }
        }
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(days) = self.history_days {
            config.history_days = days;
        }
        if let Some(rate) = self.rate {
            config.leads_per_second = rate;
        }
        if let Some(secret) = &self.app_secret {
            config.app_secret = Some(secret.clone());
        }
        if let Some(budget) = self.daily_budget {
            config.daily_budget_per_page = Some(budget);
        }
        if let Some(window) = self.budget_window {
            config.budget_window = window;
        }
        config.webhook = self.webhook.apply(config.webhook.take())?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let cli = Cli::parse();
    let config = cli.simulator_config()?;
    let handle = sim::start(config.clone(), cli.listen).await?;

    tracing::info!(
        base_url = %handle.base_url(),
        seed = config.seed,
        app_secret_required = config.app_secret.is_some(),
        daily_budget_per_page = config.daily_budget_per_page,
        budget_window = %humantime::format_duration(config.budget_window),
        leads_per_second = config.leads_per_second,
        webhook_url = config.webhook.as_ref().map(|webhook| webhook.url.as_str()),
        "simulator ready"
    );
    for page in &config.pages {
        let form_ids: Vec<&str> = page.forms.iter().map(|form| form.id.as_str()).collect();
        if cli.print_tokens {
            tracing::info!(page_id = %page.id, ?form_ids, access_token = %page.access_token, "page");
        } else {
            tracing::info!(page_id = %page.id, ?form_ids, "page");
        }
    }

    wait_for_stop_signal().await?;
    tracing::info!("stop signal received, shutting down");
    handle.shutdown();
    handle.stopped().await;
    Ok(())
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("failed to listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("failed to listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("failed to listen for Ctrl-C")?;
    Ok(())
}
