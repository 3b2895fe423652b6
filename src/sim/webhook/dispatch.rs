//! Dispatcher task: turns queued notifications into POSTs.
//!
//! Each notification is dropped, duplicated or delayed according to its
//! drawn fate. Ready changes then collect into a batch of up to `batch_max`
//! changes, which is closed when full or `batch_linger` after its first
//! change. With a `reorder_window`, closed batches wait for that window and
//! start in a shuffled order. Every POST gets its own delivery task.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::delivery::{Delivery, Post};
use super::payload::{body, LeadgenChange};
use super::{mix, Fate, Notification, WebhookConfig, WebhookQueue, WebhookState};

/// POSTs that may be under way at once, so that one slow request does not
/// hold back the others.
const MAX_IN_FLIGHT: usize = 16;

/// Mixed into the seed of the reorder shuffle.
const SHUFFLE_SALT: u64 = 0x5348_5546_464c_4531;

/// Runs until the simulator shuts down or the queue closes, then discards
/// whatever has not been sent.
pub(crate) async fn run_dispatcher(
    queue: WebhookQueue,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("facebookexternalua")
        .build()?;
    let seed = queue.state.seed;
    let mut dispatcher = Dispatcher {
        delivery: Delivery {
            state: Arc::clone(&queue.state),
            client,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            shutdown: shutdown.clone(),
        },
        state: queue.state,
        delayed: BTreeMap::new(),
        delayed_order: 0,
        batch: Vec::new(),
        batch_deadline: None,
        reorder: Vec::new(),
        reorder_deadline: None,
        shuffle_rng: StdRng::seed_from_u64(mix(seed ^ SHUFFLE_SALT, 0)),
        next_post_id: 0,
    };
    dispatcher.run(queue.receiver, shutdown).await;
    Ok(())
}

struct Dispatcher {
    state: Arc<WebhookState>,
    delivery: Delivery,
    /// Delayed changes by due time, then arrival order.
    delayed: BTreeMap<(Instant, u64), LeadgenChange>,
    delayed_order: u64,
    batch: Vec<LeadgenChange>,
    batch_deadline: Option<Instant>,
    /// Closed POSTs waiting for the reorder window to end.
    reorder: Vec<Post>,
    reorder_deadline: Option<Instant>,
    shuffle_rng: StdRng,
    next_post_id: u64,
}

impl Dispatcher {
    async fn run(
        &mut self,
        mut queue: tokio::sync::mpsc::Receiver<Vec<Notification>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut config_changes = self.state.config.subscribe();
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                changed = config_changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if config_changes.borrow_and_update().is_none() {
                        self.discard_all();
                    }
                }
                notifications = queue.recv() => match notifications {
                    Some(notifications) => self.accept(notifications),
                    None => break,
                },
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
            self.release_due(Instant::now());
        }
        queue.close();
        while let Ok(notifications) = queue.try_recv() {
            self.state.discard(notifications.len());
        }
        self.discard_all();
        tracing::debug!("webhook dispatcher stopped");
    }

    fn next_deadline(&self) -> Option<Instant> {
        let delayed = self.delayed.keys().next().map(|(due, _)| *due);
        [delayed, self.batch_deadline, self.reorder_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Applies each notification's fate and passes on the changes that are
    /// due now.
    fn accept(&mut self, notifications: Vec<Notification>) {
        let Some(config) = self.state.config() else {
            self.state.discard(notifications.len());
            return;
        };
        let now = Instant::now();
        for notification in notifications {
            let fate = Fate::draw(self.state.seed, notification.sequence, &config);
            self.state.update_stats(|stats| {
                if fate.dropped {
                    stats.dropped += 1;
                    stats.pending -= 1;
                }
                if fate.duplicated {
                    stats.duplicated += 1;
                    stats.pending += 1;
                }
                if fate.delayed {
                    stats.delayed += 1;
                }
            });
            if fate.dropped {
                tracing::debug!(
                    leadgen_id = %notification.change.leadgen_id,
                    "webhook notification dropped on purpose"
                );
                continue;
            }

            let copies = if fate.duplicated { 2 } else { 1 };
            for _ in 0..copies {
                let change = notification.change.clone();
                if fate.delayed {
                    self.delayed
                        .insert((now + config.delay, self.delayed_order), change);
                    self.delayed_order += 1;
                } else {
                    self.add_to_batch(change, &config, now);
                }
            }
        }
    }

    /// Moves due delayed changes into the batch, closes a batch whose
    /// linger ended and starts the POSTs whose reorder window ended.
    fn release_due(&mut self, now: Instant) {
        let Some(config) = self.state.config() else {
            self.discard_all();
            return;
        };
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let change = entry.remove();
            self.add_to_batch(change, &config, now);
        }
        if self.batch_deadline.is_some_and(|deadline| deadline <= now) {
            self.close_batch(&config, now);
        }
        if self
            .reorder_deadline
            .is_some_and(|deadline| deadline <= now)
        {
            self.reorder_deadline = None;
            let mut posts = std::mem::take(&mut self.reorder);
            posts.shuffle(&mut self.shuffle_rng);
            for post in posts {
                self.delivery.start(post);
            }
        }
    }

    /// Adds a change to the open batch. Two copies of one lead never share
    /// a POST, so a duplicate closes the batch first.
    fn add_to_batch(&mut self, change: LeadgenChange, config: &WebhookConfig, now: Instant) {
        let repeated = self
            .batch
            .iter()
            .any(|queued| queued.leadgen_id == change.leadgen_id);
        if repeated {
            self.close_batch(config, now);
        }
        self.batch.push(change);
        if self.batch.len() >= config.batch_max {
            self.close_batch(config, now);
        } else if self.batch.len() == 1 {
            self.batch_deadline = Some(now + config.batch_linger);
        }
    }

    /// Turns the open batch into a POST and starts it. While a reorder
    /// window is set, the POST waits in the reorder buffer instead.
    fn close_batch(&mut self, config: &WebhookConfig, now: Instant) {
        self.batch_deadline = None;
        if self.batch.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.batch);
        let post = Post {
            id: self.next_post_id,
            body: body(&changes, Utc::now().timestamp()),
            leadgen_ids: changes
                .into_iter()
                .map(|change| change.leadgen_id)
                .collect(),
        };
        self.next_post_id += 1;

        if config.reorder_window.is_zero() {
            self.delivery.start(post);
            return;
        }
        if self.reorder.is_empty() {
            self.reorder_deadline = Some(now + config.reorder_window);
        }
        self.reorder.push(post);
    }

    /// Discards every change that has not reached a delivery task.
    fn discard_all(&mut self) {
        let reorder_changes: usize = self.reorder.iter().map(|post| post.leadgen_ids.len()).sum();
        let count = self.delayed.len() + self.batch.len() + reorder_changes;
        self.delayed.clear();
        self.batch.clear();
        self.reorder.clear();
        self.batch_deadline = None;
        self.reorder_deadline = None;
        self.state.discard(count);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
