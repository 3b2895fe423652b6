//! Delivery task: sends one POST and retries it with capped exponential
//! backoff and jitter until it gets a 2xx response or `retry_for` runs out.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::CONTENT_TYPE;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::payload::signature;
use super::{mix, WebhookConfig, WebhookState};

/// Mixed into the seed of the retry jitter.
const JITTER_SALT: u64 = 0x4a49_5454_4552_3031;

/// One webhook POST: its body, fixed at its first attempt, and the leads in
/// it.
#[derive(Debug)]
pub(crate) struct Post {
    /// Counts POSTs from 0 in the order their batches closed.
    pub id: u64,
    pub body: Vec<u8>,
    pub leadgen_ids: Vec<String>,
}

/// Client, permits and state shared by the delivery tasks.
#[derive(Clone)]
pub(crate) struct Delivery {
    pub state: Arc<WebhookState>,
    pub client: reqwest::Client,
    /// Limits the POSTs under way at once.
    pub permits: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
}

/// Why one attempt failed: the key in `WebhookStats::failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Status(u16),
    Connect,
    Timeout,
    Request,
}

impl Failure {
    fn key(&self) -> String {
        match self {
            Self::Status(status) => status.to_string(),
            Self::Connect => "connect".into(),
            Self::Timeout => "timeout".into(),
            Self::Request => "request".into(),
        }
    }
}

/// Final outcome of a POST.
enum Ending {
    Delivered,
    Abandoned,
    Discarded,
}

impl Delivery {
    /// Starts a task that delivers `post`.
    pub fn start(&self, post: Post) {
        let delivery = self.clone();
        tokio::spawn(async move { delivery.deliver(post).await });
    }

    async fn deliver(self, post: Post) {
        let changes = post.leadgen_ids.len() as u64;
        let ending = self.attempt_until_done(&post).await;
        self.state.update_stats(|stats| {
            stats.pending -= changes;
            match ending {
                Ending::Delivered => {
                    stats.delivered += 1;
                    stats.changes_delivered += changes;
                }
                Ending::Abandoned => stats.abandoned += 1,
                Ending::Discarded => stats.discarded += changes,
            }
        });
    }

    async fn attempt_until_done(&self, post: &Post) -> Ending {
        let mut shutdown = self.shutdown.clone();
        let first_attempt = Instant::now();
        let mut jitter = StdRng::seed_from_u64(mix(self.state.seed ^ JITTER_SALT, post.id));
        let mut attempt: u32 = 0;
        loop {
            let Some(config) = self.state.config() else {
                return Ending::Discarded;
            };
            attempt += 1;
            let result = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return Ending::Discarded,
                result = self.attempt(post, &config, attempt) => result,
            };
            let failure = match result {
                Ok(()) => {
                    tracing::debug!(
                        post_id = post.id,
                        attempt,
                        changes = post.leadgen_ids.len(),
                        "webhook delivered"
                    );
                    return Ending::Delivered;
                }
                Err(failure) => failure,
            };

            let wait = backoff(&config, attempt, &mut jitter);
            if first_attempt.elapsed() + wait > config.retry_for {
                tracing::warn!(
                    post_id = post.id,
                    attempts = attempt,
                    last_failure = %failure.key(),
                    leadgen_ids = ?post.leadgen_ids,
                    retry_for = %humantime::format_duration(config.retry_for),
                    "webhook abandoned: retry time ran out"
                );
                return Ending::Abandoned;
            }
            tracing::info!(
                post_id = post.id,
                attempt,
                failure = %failure.key(),
                retry_in_ms = wait.as_millis() as u64,
                "webhook attempt failed, retrying"
            );
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return Ending::Discarded,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends the POST once, holding a permit only while it is under way.
    async fn attempt(
        &self,
        post: &Post,
        config: &WebhookConfig,
        attempt: u32,
    ) -> Result<(), Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the webhook semaphore is never closed");
        self.state.update_stats(|stats| {
            stats.posts += 1;
            stats.in_flight += 1;
            if attempt > 1 {
                stats.retries += 1;
            }
        });
        let result = self.send(post, config).await;
        self.state.update_stats(|stats| {
            stats.in_flight -= 1;
            if let Err(failure) = &result {
                *stats.failed.entry(failure.key()).or_default() += 1;
            }
        });
        result
    }

    async fn send(&self, post: &Post, config: &WebhookConfig) -> Result<(), Failure> {
        let secret = config
            .app_secret
            .as_deref()
            .expect("a resolved webhook config has an app secret");
        let response = self
            .client
            .post(&config.url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", signature(secret, &post.body))
            .timeout(config.request_timeout)
            .body(post.body.clone())
            .send()
            .await
            .map_err(|error| classify(&error))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status.as_u16()))
        }
    }
}

fn classify(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else {
        Failure::Request
    }
}

/// Returns the wait after failed attempt `attempt` (from 1): `retry_initial`
/// doubled per earlier attempt, capped at `retry_max`, of which a random
/// part up to one half is taken off.
fn backoff(config: &WebhookConfig, attempt: u32, jitter: &mut StdRng) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let base = config
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(config.retry_max);
    let cut = jitter.gen_range(0.0..=0.5);
    base.mul_f64(1.0 - cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_cap() {
        let config = WebhookConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..WebhookConfig::new("http://127.0.0.1:9/")
        };
        let mut jitter = StdRng::seed_from_u64(1);
        let expected_bases = [100, 200, 400, 800, 1000, 1000];
        for (index, base) in expected_bases.into_iter().enumerate() {
            let wait = backoff(&config, index as u32 + 1, &mut jitter);
            let base = Duration::from_millis(base);
            assert!(wait <= base, "attempt {}: {wait:?} > {base:?}", index + 1);
            assert!(
                wait >= base / 2,
                "attempt {}: {wait:?} < half of {base:?}",
                index + 1
            );
        }
        let late = backoff(&config, 500, &mut jitter);
        assert!(late <= Duration::from_millis(1000));
    }

    #[test]
    fn failure_keys_name_status_or_cause() {
        assert_eq!(Failure::Status(503).key(), "503");
        assert_eq!(Failure::Connect.key(), "connect");
        assert_eq!(Failure::Timeout.key(), "timeout");
        assert_eq!(Failure::Request.key(), "request");
    }
}
