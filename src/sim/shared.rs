//! State shared by the HTTP handlers, the lead-rate task and `SimHandle`:
//! the object store, faults, budget and counters, each behind its own mutex,
//! and the webhook sender.
//!
//! No code path holds two of these locks at once, so their order never
//! matters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;

use super::budget::Budget;
use super::config::{SimConfig, SimForm};
use super::error::trace_id;
use super::faults::{Fault, FaultSet};
use super::stats::SimStats;
use super::store::{Store, StoreError, TokenState};
use super::webhook::{Notification, WebhookConfig, WebhookStats, Webhooks};

/// Locks a mutex, recovering the data if a thread panicked while holding
/// it. No critical section here is expected to panic; if one does, the
/// simulator keeps serving what it has rather than failing every later call.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub faults: Mutex<FaultSet>,
    pub budget: Mutex<Budget>,
    pub stats: Mutex<SimStats>,
    pub app_secret: Option<String>,
    pub local_addr: SocketAddr,
    seed: u64,
    trace_sequence: AtomicU64,
    /// Set to true to stop the server and the lead-rate task.
    pub shutdown: watch::Sender<bool>,
    /// Set to true by the server task once it has stopped.
    pub stopped: watch::Sender<bool>,
    /// Leads per second created by the lead-rate task.
    pub rate: watch::Sender<f64>,
    pub webhooks: Webhooks,
}

impl Shared {
    pub fn new(
        config: &SimConfig,
        store: Store,
        webhooks: Webhooks,
        local_addr: SocketAddr,
    ) -> Self {
        Self {
            store: Mutex::new(store),
            faults: Mutex::new(FaultSet::default()),
            budget: Mutex::new(Budget::new(
                config.daily_budget_per_page,
                config.budget_window,
            )),
            stats: Mutex::new(SimStats::default()),
            app_secret: config.app_secret.clone(),
            local_addr,
            seed: config.seed,
            trace_sequence: AtomicU64::new(0),
            shutdown: watch::Sender::new(false),
            stopped: watch::Sender::new(false),
            rate: watch::Sender::new(config.leads_per_second),
            webhooks,
        }
    }

    /// Returns the next `fbtrace_id`; the sequence repeats for a seed.
    pub fn next_trace_id(&self) -> String {
        let sequence = self.trace_sequence.fetch_add(1, Ordering::Relaxed);
        trace_id(self.seed, sequence)
    }

    fn count_created(&self, count: usize) {
        lock(&self.stats).leads_created += count as u64;
    }

    /// Runs a change that may create leads and sends the webhook
    /// notifications of those leads after the store lock is released.
    fn change_store<T>(&self, change: impl FnOnce(&mut Store) -> T) -> T {
        let (result, notifications): (T, Vec<Notification>) = {
            let mut store = lock(&self.store);
            let result = change(&mut store);
            (result, store.take_notifications())
        };
        self.webhooks.notify(notifications);
        result
    }

    pub fn add_leads(&self, form_id: &str, count: usize) -> Result<Vec<String>, StoreError> {
        let ids = self.change_store(|store| store.add_leads(form_id, count, Utc::now()))?;
        self.count_created(ids.len());
        tracing::debug!(form_id, count, "leads added");
        Ok(ids)
    }

    pub fn add_leads_to_random_forms(&self, count: usize) -> usize {
        let created = self.change_store(|store| store.add_leads_to_random_forms(count, Utc::now()));
        self.count_created(created.len());
        created.len()
    }

    pub fn insert_lead(&self, form_id: &str, lead: Value) -> Result<String, StoreError> {
        let id = self.change_store(|store| store.insert_lead(form_id, lead, Utc::now()))?;
        self.count_created(1);
        tracing::debug!(form_id, lead_id = %id, "raw lead inserted");
        Ok(id)
    }

    pub fn add_form(&self, page_id: &str, form: &SimForm) -> Result<(), StoreError> {
        lock(&self.store).add_form(page_id, form, Utc::now())?;
        tracing::info!(page_id, form_id = %form.id, initial_leads = form.initial_leads, "form added");
        Ok(())
    }

    pub fn delete_lead(&self, lead_id: &str) -> bool {
        let deleted = lock(&self.store).delete_lead(lead_id);
        tracing::info!(lead_id, deleted, "lead deletion requested");
        deleted
    }

    pub fn set_token_state(&self, page_id: &str, state: TokenState) -> Result<(), StoreError> {
        lock(&self.store).set_token_state(page_id, state, Utc::now())?;
        tracing::info!(page_id, ?state, "token state changed");
        Ok(())
    }

    pub fn set_token_expiry(
        &self,
        page_id: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        lock(&self.store).set_token_expiry(page_id, expires_at)
    }

    pub fn set_access_token(&self, page_id: &str, token: &str) -> Result<(), StoreError> {
        lock(&self.store).set_access_token(page_id, token)?;
        tracing::info!(page_id, "access token replaced");
        Ok(())
    }

    pub fn inject(&self, fault: Fault) {
        tracing::info!(
            endpoint = fault.endpoint.as_str(),
            object_id = fault.object_id.as_deref(),
            times = fault.times,
            action = ?fault.action,
            "fault injected"
        );
        lock(&self.faults).inject(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
        tracing::info!("faults cleared");
    }

    pub fn set_daily_budget(&self, budget: Option<u64>) {
        lock(&self.budget).set_limit(budget);
        tracing::info!(daily_budget_per_page = budget, "call budget changed");
    }

    pub fn reset_budget(&self) {
        lock(&self.budget).reset();
        tracing::info!("call budget usage reset");
    }

    pub fn set_leads_per_second(&self, rate: f64) {
        self.rate.send_replace(rate);
        tracing::info!(leads_per_second = rate, "lead rate changed");
    }

    pub fn stats(&self) -> SimStats {
        let mut stats = lock(&self.stats).clone();
        stats.webhooks = self.webhooks.stats();
        stats
    }

    pub fn reset_stats(&self) {
        *lock(&self.stats) = SimStats::default();
        self.webhooks.reset_stats();
    }

    pub fn set_webhook(&self, config: Option<WebhookConfig>) -> anyhow::Result<()> {
        self.webhooks.set_config(config)
    }

    pub fn webhook_config(&self) -> Option<WebhookConfig> {
        self.webhooks.config()
    }

    pub fn webhook_stats(&self) -> WebhookStats {
        self.webhooks.stats()
    }

    pub fn leads(&self, form_id: &str) -> Result<Vec<Value>, StoreError> {
        lock(&self.store).leads_json(form_id)
    }

    pub fn lead_ids(&self, form_id: &str) -> Result<Vec<String>, StoreError> {
        lock(&self.store).lead_ids(form_id)
    }
}
