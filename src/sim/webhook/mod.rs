//! Signed `leadgen` webhooks for leads created at run time, sent the way
//! Meta sends them: a JSON POST with `X-Hub-Signature-256`, retried with
//! backoff after a non-2xx response, a connection error or a timeout, at
//! least once and in no guaranteed order.
//!
//! The store assigns each lead created at run time a sequence number and
//! leaves a [`Notification`] for it. `Shared` takes those after releasing
//! the store lock and hands them to [`Webhooks::notify`], which passes them
//! through a bounded queue to the dispatcher task (`dispatch`). The
//! dispatcher drops, duplicates and delays notifications as configured,
//! groups them into POSTs and starts a delivery task per POST (`delivery`),
//! which retries it until it succeeds or `retry_for` runs out.

mod config;
mod delivery;
mod dispatch;
mod payload;
mod stats;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

pub use config::{
    WebhookConfig, DEFAULT_BATCH_LINGER, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_FOR,
    DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
};
pub(crate) use dispatch::run_dispatcher;
pub(crate) use payload::LeadgenChange;
pub use stats::WebhookStats;

/// Store calls, each carrying the notifications of its new leads, that may
/// wait for the dispatcher task. The dispatcher only moves them into its own
/// buffers, so the queue fills only when that task cannot keep up.
const QUEUE_CAPACITY: usize = 1024;

/// Mixed into the simulator seed so that webhook draws do not repeat the
/// draws of the lead data.
const FATE_SALT: u64 = 0x5745_4248_4f4f_4b31;

/// A lead created at run time, with its creation order.
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    /// Counts leads created at run time from 0, in creation order.
    pub sequence: u64,
    pub change: LeadgenChange,
}

/// Choices made for one notification, drawn from the seed and its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fate {
    dropped: bool,
    duplicated: bool,
    delayed: bool,
}

impl Fate {
    /// Draws the fate of notification `sequence`. Three numbers are always
    /// drawn, so each choice depends only on the seed, the sequence and its
    /// own share. Dropped notifications are never duplicated or delayed.
    fn draw(seed: u64, sequence: u64, config: &WebhookConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(mix(seed ^ FATE_SALT, sequence));
        let drop_draw: f64 = rng.gen();
        let duplicate_draw: f64 = rng.gen();
        let delay_draw: f64 = rng.gen();
        let dropped = drop_draw < config.drop_share;
        Self {
            dropped,
            duplicated: !dropped && duplicate_draw < config.duplicate_share,
            delayed: !dropped && delay_draw < config.delay_share,
        }
    }
}

/// Combines a seed and a counter into a new seed (SplitMix64 finalizer).
fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed.wrapping_add(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// State that the dispatcher and delivery tasks share with `Webhooks`.
pub(crate) struct WebhookState {
    /// Current settings with the app secret resolved; `None` is off.
    config: watch::Sender<Option<Arc<WebhookConfig>>>,
    stats: watch::Sender<WebhookStats>,
    seed: u64,
}

impl WebhookState {
    fn config(&self) -> Option<Arc<WebhookConfig>> {
        self.config.borrow().clone()
    }

    fn update_stats(&self, change: impl FnOnce(&mut WebhookStats)) {
        self.stats.send_modify(change);
    }

    /// Counts changes that leave `pending` without being delivered.
    fn discard(&self, changes: usize) {
        if changes == 0 {
            return;
        }
        self.update_stats(|stats| {
            stats.discarded += changes as u64;
            stats.pending -= changes as u64;
        });
    }
}

/// The simulator's webhook sender: settings, counters and the queue to the
/// dispatcher task.
pub(crate) struct Webhooks {
    state: Arc<WebhookState>,
    queue: mpsc::Sender<Vec<Notification>>,
    /// The simulator's app secret, used when a config has none.
    default_secret: Option<String>,
}

/// The dispatcher's end of the queue, handed to [`run_dispatcher`].
pub(crate) struct WebhookQueue {
    state: Arc<WebhookState>,
    receiver: mpsc::Receiver<Vec<Notification>>,
}

impl Webhooks {
    /// Builds the sender with `config` (resolved against `default_secret`)
    /// and the queue end for the dispatcher task.
    pub fn new(
        config: Option<&WebhookConfig>,
        default_secret: Option<String>,
        seed: u64,
    ) -> anyhow::Result<(Self, WebhookQueue)> {
        let resolved = config
            .map(|config| config.resolve(default_secret.as_deref()))
            .transpose()?
            .map(Arc::new);
        let state = Arc::new(WebhookState {
            config: watch::Sender::new(resolved),
            stats: watch::Sender::new(WebhookStats::default()),
            seed,
        });
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let queue = WebhookQueue {
            state: Arc::clone(&state),
            receiver,
        };
        let webhooks = Self {
            state,
            queue: sender,
            default_secret,
        };
        Ok((webhooks, queue))
    }

    /// Replaces the settings. Later attempts of POSTs already queued use
    /// the new URL, secret, timeout and retry settings. `None` turns
    /// webhooks off and discards everything not yet delivered.
    pub fn set_config(&self, config: Option<WebhookConfig>) -> anyhow::Result<()> {
        let resolved = config
            .map(|config| config.resolve(self.default_secret.as_deref()))
            .transpose()?;
        match &resolved {
            Some(config) => tracing::info!(
                url = %config.url,
                drop_share = config.drop_share,
                duplicate_share = config.duplicate_share,
                delay_share = config.delay_share,
                batch_max = config.batch_max,
                "webhook configured"
            ),
            None => tracing::info!("webhook turned off"),
        }
        self.state.config.send_replace(resolved.map(Arc::new));
        Ok(())
    }

    /// Returns the settings without the app secret.
    pub fn config(&self) -> Option<WebhookConfig> {
        self.state.config().map(|config| config.without_secret())
    }

    pub fn stats(&self) -> WebhookStats {
        self.state.stats.borrow().clone()
    }

    pub fn reset_stats(&self) {
        self.state.update_stats(WebhookStats::reset_counters);
    }

    /// Returns a future that resolves once no notification is pending.
    pub fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stats = self.state.stats.subscribe();
        async move {
            // An error means the webhook state was dropped with the
            // simulator, so nothing can be pending any more.
            let _ = stats.wait_for(|stats| stats.pending == 0).await;
        }
    }

    /// Queues notifications of new leads for sending. Does nothing while
    /// webhooks are off. It never waits for room in the queue: when the
    /// queue is full the notifications are lost and counted in `queue_full`.
    pub fn notify(&self, notifications: Vec<Notification>) {
        if notifications.is_empty() || self.state.config.borrow().is_none() {
            return;
        }
        let count = notifications.len() as u64;
        self.state.update_stats(|stats| {
            stats.notifications += count;
            stats.pending += count;
        });
        if let Err(error) = self.queue.try_send(notifications) {
            let full = matches!(error, mpsc::error::TrySendError::Full(_));
            self.state.update_stats(|stats| {
                stats.pending -= count;
                if full {
                    stats.queue_full += count;
                } else {
                    stats.discarded += count;
                }
            });
            tracing::warn!(
                notifications = count,
                queue_full = full,
                "webhook notifications lost: the sender task's queue is full or closed"
            );
        }
    }
}

#[cfg(test)]
mod fate_tests {
    use super::*;

    #[test]
    fn fate_depends_on_seed_and_sequence_only() {
        let config = WebhookConfig {
            drop_share: 0.3,
            duplicate_share: 0.3,
            delay_share: 0.3,
            ..WebhookConfig::new("http://127.0.0.1:9/")
        };
        let first: Vec<Fate> = (0..200).map(|n| Fate::draw(5, n, &config)).collect();
        let again: Vec<Fate> = (0..200).map(|n| Fate::draw(5, n, &config)).collect();
        let other_seed: Vec<Fate> = (0..200).map(|n| Fate::draw(6, n, &config)).collect();
        assert_eq!(first, again);
        assert_ne!(first, other_seed);
    }

    #[test]
    fn fate_of_dropped_is_only_dropped() {
        let config = WebhookConfig {
            drop_share: 1.0,
            duplicate_share: 1.0,
            delay_share: 1.0,
            ..WebhookConfig::new("http://127.0.0.1:9/")
        };
        let fate = Fate::draw(1, 1, &config);
        assert_eq!(
            fate,
            Fate {
                dropped: true,
                duplicated: false,
                delayed: false
            }
        );
    }

    #[test]
    fn zero_shares_change_nothing() {
        let config = WebhookConfig::new("http://127.0.0.1:9/");
        for sequence in 0..100 {
            let fate = Fate::draw(3, sequence, &config);
            assert!(!fate.dropped, "sequence {sequence}");
            assert!(!fate.duplicated, "sequence {sequence}");
            assert!(!fate.delayed, "sequence {sequence}");
        }
    }
}
