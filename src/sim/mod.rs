//! Simulator of the parts of Meta's Graph API that the connector calls:
//! Pages, lead forms and leads, with Meta's paging, filtering, field
//! selection, errors, usage headers and call budget, plus fault injection.
//!
//! [`start`] serves the Graph API and the `/_sim/` admin endpoints on one
//! port and returns a [`SimHandle`] to change the simulated world in
//! process. Graph API paths take an optional version prefix (`/v25.0/...`):
//!
//! - `GET /{page-id}/leadgen_forms`, `GET /{form-id}/leads`
//!   (`fields`, `limit`, `after`, `before`, `filtering`),
//! - `GET /{lead-id}`, `GET /{form-id}`, `GET /{page-id}`, `GET /me`,
//! - `GET /?ids=A,B` (at most 50 ids).
//!
//! With a [`WebhookConfig`], every lead created at run time (by
//! [`SimHandle::add_leads`], [`SimHandle::insert_lead`], the admin endpoints
//! or the lead rate) is also announced to a receiver URL by a signed
//! `leadgen` webhook, as Meta does. Leads of the initial history are not.
//!
//! Module map: `config` (settings), `data` (seeded lead contents), `store`
//! (objects), `query` and `paging` (parameters and cursors), `graph`
//! (response bodies), `server` (access checks and headers), `budget`,
//! `faults`, `stats`, `admin` (the `/_sim/` endpoints), `live` (lead rate),
//! `webhook` (the webhook sender). New leads all pass through one function
//! in `store`, which leaves a webhook notification for each.

mod admin;
mod budget;
mod config;
mod data;
mod error;
mod faults;
mod graph;
mod live;
mod paging;
mod query;
mod server;
mod shared;
mod stats;
mod store;
mod webhook;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;

pub use config::{
    SimConfig, SimForm, SimPage, DEFAULT_BUDGET_WINDOW, DEFAULT_HISTORY_DAYS,
    GENERATED_FORM_ID_BASE, GENERATED_PAGE_ID_BASE, GENERATED_TOKEN_PREFIX,
};
pub use data::FIRST_LEAD_ID;
pub use faults::{EndpointKind, Fault, FaultAction};
pub use server::appsecret_proof;
pub use stats::{CallCounts, SimStats};
pub use store::TokenState;
pub use webhook::{
    WebhookConfig, WebhookStats, DEFAULT_BATCH_LINGER, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_FOR,
    DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
};

use shared::Shared;

/// Starts the simulator on `addr` (use port 0 for a free port) and returns
/// once it accepts connections.
///
/// The server, the lead-rate task and the webhook sender run on the current
/// Tokio runtime until [`SimHandle::shutdown`] or until the runtime stops.
pub async fn start(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
    config.validate()?;
    let store = store::Store::new(&config, Utc::now())?;
    let (webhooks, webhook_queue) = webhook::Webhooks::new(
        config.webhook.as_ref(),
        config.app_secret.clone(),
        config.seed,
    )?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind the simulator to {addr}"))?;
    let local_addr = listener
        .local_addr()
        .context("failed to read the simulator's bound address")?;

    let shared = Arc::new(Shared::new(&config, store, webhooks, local_addr));
    let app = server::router(Arc::clone(&shared));

    let server_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut shutdown = server_shared.shutdown.subscribe();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // An error means the sender is gone, which also means stop.
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, addr = %local_addr, "simulator server failed");
        }
        tracing::info!(addr = %local_addr, "simulator stopped");
        server_shared.stopped.send_replace(true);
    });
    tokio::spawn(live::run_lead_rate(Arc::clone(&shared)));
    let webhook_shutdown = shared.shutdown.subscribe();
    tokio::spawn(async move {
        if let Err(error) = webhook::run_dispatcher(webhook_queue, webhook_shutdown).await {
            tracing::error!(error = %format!("{error:#}"), "webhook sender failed to start");
        }
    });

    tracing::info!(addr = %local_addr, pages = config.pages.len(), "simulator listening");
    Ok(SimHandle { shared })
}

/// Handle to a running simulator; clones share it.
///
/// Methods that take a Page or form id panic when the id is unknown, since
/// that is a mistake in the calling test. The admin endpoints return 404
/// instead.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Returns `http://IP:PORT`, without a trailing slash or version.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.local_addr)
    }

    /// Creates `n` generated leads in a form, created now, and returns their
    /// ids in creation order. Leads added in the same second share their
    /// `created_time`.
    ///
    /// # Panics
    /// If the form does not exist.
    pub fn add_leads(&self, form_id: &str, n: usize) -> Vec<String> {
        self.shared
            .add_leads(form_id, n)
            .unwrap_or_else(|error| panic!("add_leads failed: {error}"))
    }

    /// Stores arbitrary lead JSON in a form, for edge cases, and returns its
    /// id. A lead without an `id` gets one. A missing or unparseable
    /// `created_time` is kept as is in the JSON, and the lead sorts and
    /// filters as if created now.
    ///
    /// While a webhook is configured the lead is announced like a generated
    /// one. The notification has the form and Page the lead is stored in,
    /// the time it sorts by, and the JSON's `ad_id` if it has one.
    ///
    /// # Panics
    /// If the form does not exist, `lead` is not an object, or its id is in
    /// use.
    pub fn insert_lead(&self, form_id: &str, lead: serde_json::Value) -> String {
        self.shared
            .insert_lead(form_id, lead)
            .unwrap_or_else(|error| panic!("insert_lead failed: {error}"))
    }

    /// Returns the full Graph JSON of every lead of a form, newest first.
    ///
    /// # Panics
    /// If the form does not exist.
    pub fn leads(&self, form_id: &str) -> Vec<serde_json::Value> {
        self.shared
            .leads(form_id)
            .unwrap_or_else(|error| panic!("leads failed: {error}"))
    }

    /// Returns the lead ids of a form, newest first.
    ///
    /// # Panics
    /// If the form does not exist.
    pub fn lead_ids(&self, form_id: &str) -> Vec<String> {
        self.shared
            .lead_ids(form_id)
            .unwrap_or_else(|error| panic!("lead_ids failed: {error}"))
    }

    /// Adds a form to a Page, with `form.initial_leads` leads spread over the
    /// configured history.
    ///
    /// # Panics
    /// If the Page does not exist or the form id is in use.
    pub fn add_form(&self, page_id: &str, form: SimForm) {
        self.shared
            .add_form(page_id, &form)
            .unwrap_or_else(|error| panic!("add_form failed: {error}"));
    }

    /// Deletes a lead, after which reads of it fail with code 100/33.
    /// Returns whether the lead existed.
    pub fn delete_lead(&self, lead_id: &str) -> bool {
        self.shared.delete_lead(lead_id)
    }

    /// # Panics
    /// If the Page does not exist.
    pub fn set_token_state(&self, page_id: &str, state: TokenState) {
        self.shared
            .set_token_state(page_id, state)
            .unwrap_or_else(|error| panic!("set_token_state failed: {error}"));
    }

    /// Sets when a Page's token will expire, as `GET /debug_token` reports
    /// it; `None` means never.
    ///
    /// # Panics
    /// If the Page does not exist.
    pub fn set_token_expiry(
        &self,
        page_id: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        self.shared
            .set_token_expiry(page_id, expires_at)
            .unwrap_or_else(|error| panic!("set_token_expiry failed: {error}"));
    }

    /// Replaces a Page's token. The old token then fails with code 190 and
    /// the new one starts out valid.
    ///
    /// # Panics
    /// If the Page does not exist or another Page uses the token.
    pub fn set_access_token(&self, page_id: &str, token: &str) {
        self.shared
            .set_access_token(page_id, token)
            .unwrap_or_else(|error| panic!("set_access_token failed: {error}"));
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.inject(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Changes the calls each Page may make per budget window; `None` is
    /// unlimited. Calls already counted stay in the window.
    pub fn set_daily_budget(&self, budget: Option<u64>) {
        self.shared.set_daily_budget(budget);
    }

    /// Forgets the calls counted against every Page's budget.
    pub fn reset_budget(&self) {
        self.shared.reset_budget();
    }

    /// Changes the rate of leads created across all forms; 0 stops it.
    ///
    /// # Panics
    /// If `leads_per_second` is negative or not finite.
    pub fn set_leads_per_second(&self, leads_per_second: f64) {
        assert!(
            leads_per_second.is_finite() && leads_per_second >= 0.0,
            "leads_per_second must be a finite number >= 0, got {leads_per_second}"
        );
        self.shared.set_leads_per_second(leads_per_second);
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Resets the call counters and the webhook counters. The webhook gauges
    /// `pending` and `in_flight` keep their values.
    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// Replaces the webhook settings. A config without `app_secret` uses
    /// [`SimConfig::app_secret`]. POSTs already queued or being retried
    /// switch to the new settings at their next attempt. `None` turns
    /// webhooks off and discards every notification not yet delivered.
    ///
    /// # Errors
    /// If the config is invalid or no app secret is available; the previous
    /// settings then stay in force.
    pub fn set_webhook(&self, config: Option<WebhookConfig>) -> anyhow::Result<()> {
        self.shared.set_webhook(config)
    }

    /// Returns the webhook settings without the app secret.
    pub fn webhook_config(&self) -> Option<WebhookConfig> {
        self.shared.webhook_config()
    }

    pub fn webhook_stats(&self) -> WebhookStats {
        self.shared.webhook_stats()
    }

    /// Returns a future that resolves once no webhook notification is
    /// pending: each was delivered, dropped on purpose, abandoned or
    /// discarded. It resolves at once when nothing was ever sent. Wrap it
    /// in a timeout, because a receiver that keeps failing delays it for
    /// up to `retry_for`.
    pub fn webhook_idle(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.webhooks.idle()
    }

    /// Stops accepting connections and stops the lead-rate task and the
    /// webhook sender, which discards what it has not delivered. Returns at
    /// once; await [`SimHandle::stopped`] to wait for the server to finish.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Waits until the server has stopped after [`SimHandle::shutdown`].
    pub async fn stopped(&self) {
        let mut stopped = self.shared.stopped.subscribe();
        // An error means the server task is gone, so it has stopped too.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}
