//! The consumer of the notifications topic and its state, which `/ready`
//! reports.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};

use crate::kafka::{KafkaSetup, SinkError};

/// The notification consumer, with a context that tracks its assignment.
pub type NotificationConsumer = StreamConsumer<NotificationContext>;

/// State of the notification consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerState {
    /// Subscribed and waiting for a partition assignment, at start-up or
    /// during a rebalance.
    Joining,
    /// Has its partition assignment and consumes.
    Consuming,
    /// Failed with a fatal Kafka error, so the fetcher is creating a new
    /// consumer. The state is `Consuming` again once that one has its
    /// assignment.
    Recovering { error: String },
}

impl ConsumerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Consuming => "consuming",
            Self::Recovering { .. } => "recovering",
        }
    }
}

/// Current state of the notification consumer, shared between the fetcher
/// and the operations endpoints.
#[derive(Debug)]
pub struct ConsumerHealth {
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    state: ConsumerState,
    /// Number of the newest consumer. Rebalance events of older consumers,
    /// such as the revocation when a failed consumer closes, are ignored.
    consumer: u64,
}

impl Default for ConsumerHealth {
    fn default() -> Self {
        Self {
            current: Mutex::new(Current {
                state: ConsumerState::Joining,
                consumer: 0,
            }),
        }
    }
}

impl ConsumerHealth {
    pub fn state(&self) -> ConsumerState {
        self.lock().state.clone()
    }

    pub fn set_recovering(&self, error: String) {
        self.lock().state = ConsumerState::Recovering { error };
    }

    /// Returns the number of a new consumer, which from now on is the only
    /// one whose rebalance events change the state.
    fn next_consumer(&self) -> u64 {
        let mut current = self.lock();
        current.consumer += 1;
        current.consumer
    }

    fn set_consuming(&self, consumer: u64) {
        let mut current = self.lock();
        if current.consumer == consumer {
            current.state = ConsumerState::Consuming;
        }
    }

    /// Marks a consumer that lost its partitions as joining. A recovering
    /// consumer stays recovering until it has partitions again.
    fn set_joining(&self, consumer: u64) {
        let mut current = self.lock();
        if current.consumer == consumer && current.state == ConsumerState::Consuming {
            current.state = ConsumerState::Joining;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // Every write replaces whole fields, so a panic elsewhere cannot
        // leave the value half-written.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Consumer context that updates [`ConsumerHealth`] on rebalances.
pub struct NotificationContext {
    health: Arc<ConsumerHealth>,
    consumer: u64,
}

impl ClientContext for NotificationContext {}

impl ConsumerContext for NotificationContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(
                    partitions = partitions.count(),
                    "notification consumer has its partition assignment"
                );
                self.health.set_consuming(self.consumer);
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(
                    partitions = partitions.count(),
                    "notification consumer partitions revoked"
                );
                self.health.set_joining(self.consumer);
            }
            Rebalance::Error(error) => {
                tracing::warn!(error = %error, "notification consumer rebalance failed");
            }
        }
    }
}

/// Creates a consumer of the notifications topic and subscribes it. It
/// starts from the offsets committed with the last Kafka transaction.
pub fn create(
    setup: &KafkaSetup,
    health: Arc<ConsumerHealth>,
) -> Result<NotificationConsumer, SinkError> {
    let config = setup.config();
    let mut client = setup.base_config();
    client
        .set("group.id", &config.consumer_group)
        // Static membership: a restarted instance, for example after a
        // crash, takes its partitions back at once. A dynamic member would
        // wait for the dead member's session to expire (session.timeout.ms,
        // 45 s by default in librdkafka 2.x) before the rebalance ends and webhooks flow again. The cost is
        // that the broker fences this member when another member joins
        // with the same id, which has also happened after a broker outage
        // of about two minutes. That error is fatal, and the fetcher then
        // creates a new consumer.
        .set("group.instance.id", &config.transactional_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let context = NotificationContext {
        consumer: health.next_consumer(),
        health,
    };
    let consumer: NotificationConsumer = client.create_with_context(context)?;
    consumer.subscribe(&[&config.notifications_topic])?;
    Ok(consumer)
}

/// Returns the fatal error of a consumer, if it has one. A consumer with a
/// fatal error consumes nothing more and must be replaced.
pub fn fatal_error(consumer: &NotificationConsumer) -> Option<String> {
    consumer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{reason} ({code:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovering_lasts_until_new_consumer_is_assigned() {
        let health = ConsumerHealth::default();
        let failed = health.next_consumer();
        health.set_consuming(failed);

        health.set_recovering("fenced".to_owned());
        let replacement = health.next_consumer();
        health.set_joining(replacement);
        let recovering = health.state();
        health.set_consuming(replacement);

        assert_eq!(
            recovering,
            ConsumerState::Recovering {
                error: "fenced".to_owned()
            }
        );
        assert_eq!(health.state(), ConsumerState::Consuming);
    }

    #[test]
    fn events_of_replaced_consumer_are_ignored() {
        let health = ConsumerHealth::default();
        let failed = health.next_consumer();
        let replacement = health.next_consumer();
        health.set_consuming(replacement);

        health.set_joining(failed);
        let after_revoke = health.state();
        health.set_recovering("fenced".to_owned());
        health.set_consuming(failed);

        assert_eq!(after_revoke, ConsumerState::Consuming);
        assert_eq!(health.state().as_str(), "recovering");
    }
}
