//! Webhook counters, returned by `SimHandle::webhook_stats`, under the
//! `webhooks` key of `GET /_sim/stats`, and by `GET /_sim/webhook`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Snapshot of the webhook sender's counters and gauges.
///
/// A notification is one `leadgen` change for one lead. A duplicated
/// notification is sent as two copies, and each copy counts in
/// `changes_delivered` and `pending`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookStats {
    /// Notifications created: one per lead created at run time while a
    /// webhook is configured.
    pub notifications: u64,
    /// Notifications never sent because of `drop_share`.
    pub dropped: u64,
    /// Notifications sent twice because of `duplicate_share`.
    pub duplicated: u64,
    /// Notifications held back for `delay` because of `delay_share`.
    pub delayed: u64,
    /// Notifications lost because the queue to the sender task was full.
    pub queue_full: u64,
    /// POST attempts, first attempts and retries.
    pub posts: u64,
    /// POST attempts that were retries.
    pub retries: u64,
    /// POSTs that got a 2xx response.
    pub delivered: u64,
    /// Changes in the POSTs that got a 2xx response.
    pub changes_delivered: u64,
    /// Failed POST attempts keyed by HTTP status (`"503"`), `"connect"`,
    /// `"timeout"`, or `"request"` for any other transport error.
    pub failed: BTreeMap<String, u64>,
    /// POSTs given up because `retry_for` ran out.
    pub abandoned: u64,
    /// Changes thrown away unsent because the webhook was removed or the
    /// simulator stopped.
    pub discarded: u64,
    /// Changes not yet delivered, abandoned, dropped or discarded: queued,
    /// delayed, waiting for a batch or a retry, or being sent.
    pub pending: u64,
    /// POST requests under way.
    pub in_flight: u64,
}

impl WebhookStats {
    /// Returns the failed attempts with this key, such as `"503"` or
    /// `"connect"`, zero when there were none.
    pub fn failures(&self, key: &str) -> u64 {
        self.failed.get(key).copied().unwrap_or_default()
    }

    /// Sets every counter to zero but keeps the gauges `pending` and
    /// `in_flight`, which describe work still under way.
    pub(crate) fn reset_counters(&mut self) {
        *self = Self {
            pending: self.pending,
            in_flight: self.in_flight,
            ..Self::default()
        };
    }
}
