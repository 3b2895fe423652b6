//! Webhook sender settings, read from the `[webhook]` table of the
//! simulator TOML, from `PUT /_sim/webhook` as JSON, or set in process with
//! `SimHandle::set_webhook`. Durations are humantime strings such as `20ms`
//! or `10m`.
//!
//! ```toml
//! [webhook]
//! url = "http://127.0.0.1:8080/webhook"
//! app_secret = "s3cret"        # optional; defaults to the top-level app_secret
//! drop_share = 0.01
//! duplicate_share = 0.02
//! delay_share = 0.05
//! delay = "2s"
//! reorder_window = "500ms"
//! batch_max = 10
//! retry_for = "1m"
//! ```

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Default time that leads may wait for others to share a POST.
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(20);
/// Default time a POST may take before it counts as failed.
///
/// NOTE: Meta does not publish its webhook timeout; 20 s is an estimate.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Default wait before the first retry of a failed POST.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default cap of the wait between two retries.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// Default time a failed POST keeps being retried. Meta retries for up to
/// 36 hours; the simulator gives up sooner so that runs end.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(10 * 60);

/// Settings of the signed `leadgen` webhooks sent for leads created at run
/// time.
///
/// Drops, duplicates and delays are drawn per notification from the
/// simulator seed and the lead's creation order, so one seed and one
/// sequence of lead creations give the same choices.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver URL, `http` or `https`; required.
    pub url: String,
    /// Key of the `X-Hub-Signature-256` HMAC. `None` uses the simulator's
    /// `app_secret`, and one of the two must be set.
    pub app_secret: Option<String>,
    /// Share of notifications, from 0 to 1, that are never sent.
    pub drop_share: f64,
    /// Share of the notifications that are not dropped that are sent twice,
    /// in separate POSTs.
    pub duplicate_share: f64,
    /// Share of the notifications that are not dropped that wait `delay`
    /// before they are sent.
    pub delay_share: f64,
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// POSTs that become ready within this window are sent in a shuffled
    /// order; zero sends them in order.
    #[serde(with = "humantime_serde")]
    pub reorder_window: Duration,
    /// Maximum `leadgen` changes per POST; 1 sends each lead alone.
    pub batch_max: usize,
    /// Time that the first change of a POST waits for more changes when
    /// `batch_max` is above 1.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Time a POST may take before it counts as a failed attempt.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Wait before the first retry; each later wait doubles, up to
    /// `retry_max`, and is then jittered.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Time from the first attempt of a POST after which it is abandoned
    /// instead of retried.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            app_secret: None,
            drop_share: 0.0,
            duplicate_share: 0.0,
            delay_share: 0.0,
            delay: Duration::ZERO,
            reorder_window: Duration::ZERO,
            batch_max: 1,
            batch_linger: DEFAULT_BATCH_LINGER,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            retry_for: DEFAULT_RETRY_FOR,
        }
    }
}

/// Prints every field but the app secret.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field(
                "app_secret",
                &self.app_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("drop_share", &self.drop_share)
            .field("duplicate_share", &self.duplicate_share)
            .field("delay_share", &self.delay_share)
            .field("delay", &self.delay)
            .field("reorder_window", &self.reorder_window)
            .field("batch_max", &self.batch_max)
            .field("batch_linger", &self.batch_linger)
            .field("request_timeout", &self.request_timeout)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("retry_for", &self.retry_for)
            .finish()
    }
}

impl WebhookConfig {
    /// Returns settings that send to `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every field and returns the config with `app_secret` set,
    /// taken from `default_secret` when the config has none.
    pub(crate) fn resolve(&self, default_secret: Option<&str>) -> anyhow::Result<Self> {
        if self.url.is_empty() {
            bail!("webhook url is missing: set it to the receiver's http or https URL");
        }
        let url = url::Url::parse(&self.url)
            .with_context(|| format!("webhook url {:?} is not a valid URL", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!(
                "webhook url {:?} must use http or https, not {}",
                self.url,
                url.scheme()
            );
        }
        for (name, share) in [
            ("drop_share", self.drop_share),
            ("duplicate_share", self.duplicate_share),
            ("delay_share", self.delay_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                bail!("webhook {name} must be a number from 0 to 1, got {share}");
            }
        }
        if self.batch_max == 0 {
            bail!("webhook batch_max must be at least 1");
        }
        for (name, duration) in [
            ("request_timeout", self.request_timeout),
            ("retry_initial", self.retry_initial),
        ] {
            if duration.is_zero() {
                bail!("webhook {name} must be longer than zero");
            }
        }
        if self.retry_max < self.retry_initial {
            bail!(
                "webhook retry_max ({}) must not be shorter than retry_initial ({})",
                humantime::format_duration(self.retry_max),
                humantime::format_duration(self.retry_initial)
            );
        }

        let secret = self
            .app_secret
            .as_deref()
            .or(default_secret)
            .filter(|secret| !secret.is_empty());
        let Some(secret) = secret else {
            bail!(
                "webhooks need an app secret to sign X-Hub-Signature-256: \
                 set webhook app_secret or the simulator app_secret"
            );
        };
        Ok(Self {
            app_secret: Some(secret.to_owned()),
            ..self.clone()
        })
    }

    /// Returns the config with the app secret removed, for display.
    pub fn without_secret(&self) -> Self {
        Self {
            app_secret: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> WebhookConfig {
        WebhookConfig::new("http://127.0.0.1:9/hook")
    }

    #[test]
    fn resolve_takes_default_secret() {
        let resolved = valid().resolve(Some("top")).expect("valid config");
        assert_eq!(resolved.app_secret.as_deref(), Some("top"));

        let own = WebhookConfig {
            app_secret: Some("own".into()),
            ..valid()
        };
        let resolved = own.resolve(Some("top")).expect("valid config");
        assert_eq!(resolved.app_secret.as_deref(), Some("own"));
    }

    #[test]
    fn resolve_requires_secret() {
        let error = valid().resolve(None).expect_err("no secret");
        assert!(error.to_string().contains("app secret"), "{error}");
        let empty = WebhookConfig {
            app_secret: Some(String::new()),
            ..valid()
        };
        assert!(empty.resolve(None).is_err());
    }

    #[test]
    fn resolve_rejects_invalid_fields() {
        let cases = [
            WebhookConfig::new(""),
            WebhookConfig::new("ftp://127.0.0.1/hook"),
            WebhookConfig {
                drop_share: 1.5,
                ..valid()
            },
            WebhookConfig {
                duplicate_share: f64::NAN,
                ..valid()
            },
            WebhookConfig {
                delay_share: -0.1,
                ..valid()
            },
            WebhookConfig {
                batch_max: 0,
                ..valid()
            },
            WebhookConfig {
                request_timeout: Duration::ZERO,
                ..valid()
            },
            WebhookConfig {
                retry_max: Duration::from_millis(10),
                retry_initial: Duration::from_millis(20),
                ..valid()
            },
        ];
        for config in cases {
            assert!(config.resolve(Some("s")).is_err(), "{config:?}");
        }
    }

    #[test]
    fn debug_hides_secret() {
        let config = WebhookConfig {
            app_secret: Some("top-secret-value".into()),
            ..valid()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("top-secret-value"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn json_uses_humantime_durations() {
        let config: WebhookConfig = serde_json::from_str(
            r#"{"url":"http://127.0.0.1:9/hook","delay":"2s","retry_for":"1m","batch_max":5}"#,
        )
        .expect("valid JSON");
        assert_eq!(config.delay, Duration::from_secs(2));
        assert_eq!(config.retry_for, Duration::from_secs(60));
        assert_eq!(config.batch_max, 5);
        assert_eq!(config.batch_linger, DEFAULT_BATCH_LINGER);

        let text = serde_json::to_string(&config).expect("config serializes");
        let parsed: WebhookConfig = serde_json::from_str(&text).expect("reparses");
        assert_eq!(parsed, config);
    }
}
