//! Connector configuration: the `connector.toml` format, `${VAR}` expansion
//! from the environment, and validation at start-up.
//!
//! Every section rejects unknown keys. Every error names the key that is
//! wrong and says what is expected, so a bad file never gets past start-up.
//! Config types hold plain values only; runtime handles live elsewhere.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::secret::{redact_url_password, Secret};

/// Unix seconds above this value are almost certainly milliseconds: 1e11
/// seconds is in the year 5138.
const MAX_PLAUSIBLE_UNIX_SECONDS: i64 = 100_000_000_000;

/// librdkafka properties the connector sets itself; a pass-through value for
/// one of them would break a delivery guarantee.
const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "transactional.id",
    "enable.idempotence",
    "acks",
    "isolation.level",
    "enable.auto.commit",
    "group.id",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file is not valid TOML: {0}")]
    Syntax(String),
    #[error("`{key}`: environment variable `{var}` is not set; export it or remove the reference")]
    MissingVariable { key: String, var: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Describes a TOML syntax error by line and column. The parser's own
/// rendering quotes the offending line, which may hold a token or a
/// password, so only its message is kept.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let place = error
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
            format!("line {line}, column {column}: ")
        });
    ConfigError::Syntax(format!(
        "{}{}",
        place.unwrap_or_default(),
        error.message().trim_end()
    ))
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole `connector.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub graph: GraphConfig,
    /// Pages to read, each with its own access token.
    pub pages: Vec<PageConfig>,
    #[serde(default)]
    pub backfill: BackfillConfig,
    pub kafka: KafkaConfig,
    pub schema_registry: SchemaRegistryConfig,
    /// Webhook receiver; without this section only the backfill runs.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
}

/// Meta webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address the webhook listener binds; put a TLS proxy in front of it.
    #[serde(default = "default_webhook_listen")]
    pub listen: SocketAddr,
    /// URL path Meta calls, as set in the app's webhook subscription.
    #[serde(default = "default_webhook_path")]
    pub path: String,
    /// Token Meta echoes in the subscription handshake.
    pub verify_token: Secret,
    /// Largest accepted request body; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Maximum time to receive a request body; a slower request gets 408.
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Maximum wait for a notification to be durable in Kafka before the
    /// request gets 503 and Meta retries it.
    #[serde(default = "default_durable_timeout", with = "humantime_serde")]
    pub durable_timeout: Duration,
    /// Most notifications handled in one Kafka transaction.
    #[serde(default = "default_fetch_batch")]
    pub fetch_batch: usize,
    /// Maximum wait for more notifications before a batch is handled.
    #[serde(default = "default_fetch_linger", with = "humantime_serde")]
    pub fetch_linger: Duration,
}

/// Operations listener: `/metrics`, `/health` and `/ready`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

/// Graph API client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Scheme, host and port of the Graph API, without the version.
    #[serde(default = "default_graph_base_url")]
    pub base_url: String,
    /// Graph API version path segment, such as `v25.0`.
    #[serde(default = "default_graph_version")]
    pub version: String,
    /// App secret; when set, every call carries `appsecret_proof`.
    #[serde(default)]
    pub app_secret: Option<Secret>,
    /// Timeout of one HTTP request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Leads per page in bulk reads (the Graph API caps it at 100).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Attempts for one call before a transient error is given up on.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; later ones double, with jitter, up to `max_backoff`.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// App access token (`<app id>|<app secret>`) for checking Page tokens
    /// with `debug_token`. Unset: an expired token is noticed only when
    /// Meta rejects a call.
    #[serde(default)]
    pub app_access_token: Option<Secret>,
    /// How often each Page token is checked with `debug_token`.
    #[serde(default = "default_token_check_interval", with = "humantime_serde")]
    pub token_check_interval: Duration,
    /// A Page token that expires sooner than this is reported in the logs.
    #[serde(default = "default_token_expiry_warning", with = "humantime_serde")]
    pub token_expiry_warning: Duration,
}

/// One Facebook Page and the lead forms read from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageConfig {
    /// Page id, as digits.
    pub id: String,
    /// Page access token with the `leads_retrieval` permission.
    pub access_token: Secret,
    /// Lead form ids of this Page. Empty: every form listed by
    /// `/<PAGE_ID>/leadgen_forms` at start-up.
    #[serde(default)]
    pub forms: Vec<String>,
}

/// Bulk-read schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// Time between two bulk reads of the same form.
    #[serde(default = "default_backfill_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How far before a form's watermark each read starts again, to catch
    /// leads that become readable late. Leads seen twice are deduplicated.
    #[serde(default = "default_backfill_overlap", with = "humantime_serde")]
    pub overlap: Duration,
    /// Earliest lead creation time read on a form with no stored offset:
    /// Unix seconds or an RFC 3339 time.
    #[serde(default = "default_backfill_start")]
    pub start: StartTime,
    /// Length of the time window asked for in one bulk read, so that a long
    /// history is loaded oldest window first and checkpointed as it goes.
    #[serde(default = "default_backfill_window", with = "humantime_serde")]
    pub window: Duration,
    /// Forms read at the same time.
    #[serde(default = "default_backfill_concurrency")]
    pub concurrency: usize,
    /// Most pages read in one time window before the read stops with an
    /// error, so a paging loop cannot run forever.
    #[serde(default = "default_max_pages_per_window")]
    pub max_pages_per_window: usize,
    /// How often Pages configured without forms are listed again, so new
    /// forms start being read.
    #[serde(default = "default_discovery_interval", with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// How long lead ids stay in a form's deduplication memory, counted back
    /// from its watermark. It covers Meta's 36-hour webhook retry window.
    #[serde(default = "default_dedup_retention", with = "humantime_serde")]
    pub dedup_retention: Duration,
    /// Most lead ids kept per form for deduplication; past it the oldest
    /// ids are dropped first.
    #[serde(default = "default_max_recent_ids")]
    pub max_recent_ids: usize,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            interval: default_backfill_interval(),
            overlap: default_backfill_overlap(),
            start: default_backfill_start(),
            window: default_backfill_window(),
            concurrency: default_backfill_concurrency(),
            max_pages_per_window: default_max_pages_per_window(),
            discovery_interval: default_discovery_interval(),
            dedup_retention: default_dedup_retention(),
            max_recent_ids: default_max_recent_ids(),
        }
    }
}

/// Kafka cluster, topics and producer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Topic of the lead records.
    #[serde(default = "default_leads_topic")]
    pub leads_topic: String,
    /// Compacted topic of per-form offsets.
    #[serde(default = "default_offsets_topic")]
    pub offsets_topic: String,
    /// Topic of webhook notifications, keyed by form id.
    #[serde(default = "default_notifications_topic")]
    pub notifications_topic: String,
    /// Consumer group of the notifications topic.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// Topic of leads that can never be read or mapped.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Transactional id of the producer; one per running instance.
    #[serde(default = "default_transactional_id")]
    pub transactional_id: String,
    /// Create missing topics at start-up.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics the connector creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics the connector creates; -1 uses the
    /// broker's `default.replication.factor`.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Maximum time one Kafka transaction may stay open.
    #[serde(default = "default_transaction_timeout", with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Extra librdkafka properties (TLS, SASL, tuning), passed through as is.
    #[serde(default)]
    pub properties: KafkaProperties,
}

/// Pass-through librdkafka properties. `Debug` hides the values of
/// properties that can hold credentials, such as `sasl.password`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    /// Returns whether the value of property `key` can hold a credential:
    /// passwords, secrets, private keys, and SASL configs such as
    /// `sasl.jaas.config` and `sasl.oauthbearer.config`.
    pub fn is_sensitive(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        [
            "password",
            "secret",
            "key",
            "sasl.jaas.config",
            "oauthbearer.config",
        ]
        .iter()
        .any(|word| key.contains(word))
    }
}

impl std::ops::Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.0 {
            if Self::is_sensitive(key) {
                map.entry(key, &format_args!("[redacted]"));
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

/// Schema registry with the Confluent REST API.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL of the Confluent-compatible API. It may carry credentials
    /// (`https://user:password@host/...`), so show it with
    /// [`SchemaRegistryConfig::display_url`].
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "default_registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl SchemaRegistryConfig {
    /// Returns `url` with the password of its userinfo replaced, for errors,
    /// logs and command output.
    pub fn display_url(&self) -> Cow<'_, str> {
        redact_url_password(&self.url)
    }
}

impl fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.display_url())
            .field("username", &self.username)
            .field("password", &self.password)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Start of the first bulk read of a form, as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartTime(pub i64);

impl<'de> Deserialize<'de> for StartTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(i64),
            Text(String),
        }

        match Raw::deserialize(deserializer)? {
            Raw::Seconds(seconds) => {
                StartTime::from_unix_seconds(seconds).map_err(de::Error::custom)
            }
            Raw::Text(text) => StartTime::parse(&text).map_err(de::Error::custom),
        }
    }
}

impl StartTime {
    pub fn from_unix_seconds(seconds: i64) -> Result<Self, String> {
        if seconds > MAX_PLAUSIBLE_UNIX_SECONDS {
            return Err(format!(
                "{seconds} looks like milliseconds; give Unix seconds (for example {})",
                seconds / 1000
            ));
        }
        if seconds < 0 {
            return Err(format!("{seconds} is before 1970; give Unix seconds"));
        }
        Ok(Self(seconds))
    }

    /// Parses Unix seconds or an RFC 3339 time such as `2024-05-01T00:00:00Z`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(seconds) = text.trim().parse::<i64>() {
            return Self::from_unix_seconds(seconds);
        }
        DateTime::parse_from_rfc3339(text.trim())
            .map(|time| Self(time.with_timezone(&Utc).timestamp()))
            .map_err(|_| format!("`{text}` is neither Unix seconds nor an RFC 3339 time"))
    }
}

fn default_graph_base_url() -> String {
    "https://graph.facebook.com".to_owned()
}
fn default_graph_version() -> String {
    "v25.0".to_owned()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_page_size() -> u32 {
    100
}
fn default_max_attempts() -> u32 {
    5
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_token_check_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_token_expiry_warning() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_backfill_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_backfill_overlap() -> Duration {
    Duration::from_secs(3600)
}
fn default_backfill_start() -> StartTime {
    // 90 days back: the window in which Meta keeps leads readable.
    StartTime(Utc::now().timestamp() - 90 * 24 * 3600)
}
fn default_backfill_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_backfill_concurrency() -> usize {
    4
}
fn default_max_pages_per_window() -> usize {
    10_000
}
fn default_discovery_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_dedup_retention() -> Duration {
    Duration::from_secs(48 * 3600)
}
fn default_max_recent_ids() -> usize {
    10_000
}
fn default_leads_topic() -> String {
    "leadgen.leads".to_owned()
}
fn default_offsets_topic() -> String {
    "leadgen.offsets".to_owned()
}
fn default_notifications_topic() -> String {
    "leadgen.notifications".to_owned()
}
fn default_consumer_group() -> String {
    "leadgen-connector".to_owned()
}
fn default_webhook_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_webhook_path() -> String {
    "/webhook".to_owned()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_durable_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_fetch_batch() -> usize {
    500
}
fn default_fetch_linger() -> Duration {
    Duration::from_millis(100)
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_dead_letter_topic() -> String {
    "leadgen.dead-letter".to_owned()
}
fn default_transactional_id() -> String {
    "leadgen-connector".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    6
}
fn default_replication_factor() -> i32 {
    -1
}
fn default_transaction_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// Reads, expands and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses config text, resolving `${VAR}` through `lookup`.
    pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|error| syntax_error(text, &error))?;
        expand_variables(&mut value, "", lookup)?;

        let config: Config = serde_path_to_error::deserialize(value).map_err(|error| {
            let key = error.path().to_string();
            invalid(key, error.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        url::Url::parse(&self.graph.base_url)
            .map_err(|error| invalid("graph.base_url", format!("not a URL: {error}")))?;
        if !self.graph.version.starts_with('v') {
            return Err(invalid(
                "graph.version",
                "expected a version such as `v25.0`",
            ));
        }
        if !(1..=100).contains(&self.graph.page_size) {
            return Err(invalid(
                "graph.page_size",
                "expected 1 to 100 leads per page",
            ));
        }
        if self.graph.token_check_interval.is_zero() {
            return Err(invalid(
                "graph.token_check_interval",
                "expected a positive duration such as `1h`",
            ));
        }
        if self.graph.max_attempts == 0 {
            return Err(invalid("graph.max_attempts", "expected at least 1 attempt"));
        }
        if self.pages.is_empty() {
            return Err(invalid("pages", "expected at least one [[pages]] entry"));
        }

        let mut page_ids = HashSet::new();
        let mut form_ids = HashSet::new();
        for (index, page) in self.pages.iter().enumerate() {
            if !is_graph_id(&page.id) {
                return Err(invalid(
                    format!("pages[{index}].id"),
                    "expected a Page id made of digits",
                ));
            }
            if !page_ids.insert(&page.id) {
                return Err(invalid(
                    format!("pages[{index}].id"),
                    format!("Page `{}` is listed twice", page.id),
                ));
            }
            if page.access_token.is_empty() {
                return Err(invalid(
                    format!("pages[{index}].access_token"),
                    "expected a Page access token",
                ));
            }
            for form in &page.forms {
                if !is_graph_id(form) {
                    return Err(invalid(
                        format!("pages[{index}].forms"),
                        format!("`{form}` is not a form id made of digits"),
                    ));
                }
                if !form_ids.insert(form) {
                    return Err(invalid(
                        format!("pages[{index}].forms"),
                        format!("form `{form}` is listed twice"),
                    ));
                }
            }
        }

        if self.backfill.interval.is_zero() {
            return Err(invalid(
                "backfill.interval",
                "expected a positive duration such as `5m`",
            ));
        }
        if self.backfill.window < Duration::from_secs(60) {
            return Err(invalid("backfill.window", "expected at least `1m`"));
        }
        if self.backfill.max_pages_per_window == 0 {
            return Err(invalid(
                "backfill.max_pages_per_window",
                "expected at least 1",
            ));
        }
        if self.backfill.discovery_interval.is_zero() {
            return Err(invalid(
                "backfill.discovery_interval",
                "expected a positive duration such as `10m`",
            ));
        }
        if self.backfill.concurrency == 0 {
            return Err(invalid("backfill.concurrency", "expected at least 1"));
        }
        if self.backfill.overlap > self.backfill.dedup_retention {
            return Err(invalid(
                "backfill.overlap",
                "must not exceed backfill.dedup_retention, or leads read again in the overlap could be written twice",
            ));
        }
        if self.backfill.max_recent_ids == 0 {
            return Err(invalid("backfill.max_recent_ids", "expected at least 1"));
        }

        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid(
                "kafka.bootstrap_servers",
                "expected host:port[,host:port...]",
            ));
        }
        for (key, topic) in [
            ("kafka.leads_topic", &self.kafka.leads_topic),
            ("kafka.offsets_topic", &self.kafka.offsets_topic),
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
            ("kafka.notifications_topic", &self.kafka.notifications_topic),
        ] {
            if !is_topic_name(topic) {
                return Err(invalid(key, format!("`{topic}` is not a valid topic name (letters, digits, `.`, `_`, `-`, at most 249)")));
            }
        }
        if self.kafka.partitions < 1 {
            return Err(invalid("kafka.partitions", "expected at least 1"));
        }
        if self.kafka.replication_factor == 0 || self.kafka.replication_factor < -1 {
            return Err(invalid(
                "kafka.replication_factor",
                "expected -1 (broker default) or at least 1",
            ));
        }
        for key in self.kafka.properties.keys() {
            if RESERVED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "the connector sets this property itself; remove it (use kafka.bootstrap_servers or kafka.transactional_id where they apply)",
                ));
            }
        }

        if let Some(webhook) = &self.webhook {
            if self.graph.app_secret.as_ref().is_none_or(Secret::is_empty) {
                return Err(invalid(
                    "graph.app_secret",
                    "webhooks are configured, so the app secret is needed to verify X-Hub-Signature-256; set it or remove [webhook]",
                ));
            }
            if !webhook.path.starts_with('/') {
                return Err(invalid("webhook.path", "expected a path starting with `/`"));
            }
            if webhook.verify_token.is_empty() {
                return Err(invalid(
                    "webhook.verify_token",
                    "expected the verify token set in the app's webhook subscription",
                ));
            }
            if webhook.max_body_bytes < 1024 {
                return Err(invalid(
                    "webhook.max_body_bytes",
                    "expected at least 1024 bytes",
                ));
            }
            if webhook.body_read_timeout.is_zero() {
                return Err(invalid(
                    "webhook.body_read_timeout",
                    "expected a duration above zero, such as \"10s\"",
                ));
            }
            if webhook.fetch_batch == 0 {
                return Err(invalid("webhook.fetch_batch", "expected at least 1"));
            }
        }

        url::Url::parse(&self.schema_registry.url)
            .map_err(|error| invalid("schema_registry.url", format!("not a URL: {error}")))?;
        if self.schema_registry.password.is_some() && self.schema_registry.username.is_none() {
            return Err(invalid(
                "schema_registry.username",
                "a password is set, so a username is expected too",
            ));
        }
        Ok(())
    }

    /// Every configured form id with its Page id.
    pub fn configured_forms(&self) -> Vec<(String, String)> {
        self.pages
            .iter()
            .flat_map(|page| {
                page.forms
                    .iter()
                    .map(|form| (form.clone(), page.id.clone()))
            })
            .collect()
    }
}

fn is_graph_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= 32 && value.bytes().all(|byte| byte.is_ascii_digit())
}

fn is_topic_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 249
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Replaces `${VAR}` in every string value with the variable's value, and
/// `${VAR:-default}` with the value or, when unset or empty, the default.
/// `${file:PATH}` becomes the contents of the file at `PATH`, without
/// trailing line breaks. `$${` stays a literal `${`.
fn expand_variables(
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(text) => {
            *text = expand_string(text, key, lookup)?;
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                expand_variables(item, &format!("{key}[{index}]"), lookup)?;
            }
        }
        toml::Value::Table(table) => {
            for (name, item) in table.iter_mut() {
                let child = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                expand_variables(item, &child, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_string(
    text: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        output.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(stripped) = after.strip_prefix("$${") {
            output.push_str("${");
            rest = stripped;
        } else if let Some(stripped) = after.strip_prefix("${") {
            let end = stripped.find('}').ok_or_else(|| {
                invalid(
                    key,
                    "unterminated `${` reference; write `${NAME}`, or `$${` for a literal `${`",
                )
            })?;
            let reference = &stripped[..end];
            if let Some(path) = reference.strip_prefix("file:") {
                output.push_str(&read_secret_file(path, key)?);
                rest = &stripped[end + 1..];
                continue;
            }
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
            if !valid {
                return Err(invalid(
                    key,
                    format!("`${{{reference}}}` is not a valid environment variable reference"),
                ));
            }
            let resolved = lookup(name)
                .filter(|value| default.is_none() || !value.is_empty())
                .or_else(|| default.map(str::to_owned))
                .ok_or_else(|| ConfigError::MissingVariable {
                    key: key.to_owned(),
                    var: name.to_owned(),
                })?;
            output.push_str(&resolved);
            rest = &stripped[end + 1..];
        } else {
            output.push('$');
            rest = &after[1..];
        }
    }
    output.push_str(rest);
    Ok(output)
}

/// Reads a `${file:PATH}` reference. The file is read at every load, so a
/// secret that a secret store rotates in place is picked up by SIGHUP.
fn read_secret_file(path: &str, key: &str) -> Result<String, ConfigError> {
    if path.is_empty() {
        return Err(invalid(
            key,
            "`${file:}` names no file; write `${file:/path/to/secret}`",
        ));
    }
    let contents = std::fs::read_to_string(path).map_err(|error| {
        invalid(
            key,
            format!("cannot read `{path}` for `${{file:{path}}}`: {error}; check the path and its permissions"),
        )
    })?;
    Ok(contents.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [graph]
        base_url = "http://127.0.0.1:8090"

        [[pages]]
        id = "100000000000001"
        access_token = "${PAGE_TOKEN}"
        forms = ["200000000000001"]

        [kafka]
        bootstrap_servers = "127.0.0.1:9092"

        [schema_registry]
        url = "http://127.0.0.1:8081/apis/ccompat/v7"
    "#;

    fn env(name: &str) -> Option<String> {
        match name {
            "PAGE_TOKEN" => Some("token-from-env".to_owned()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &env)
    }

    #[test]
    fn syntax_error_hides_the_line() {
        let text = MINIMAL.replace(
            r#"url = "http://127.0.0.1:8081/apis/ccompat/v7""#,
            r#"url = "http://user:registry-pass-7@127.0.0.1:8081/apis/ccompat/v7"#,
        );

        let error = parse(&text).expect_err("an unterminated string is invalid TOML");

        let message = error.to_string();
        assert!(matches!(error, ConfigError::Syntax(_)), "{message}");
        assert!(!message.contains("registry-pass-7"), "{message}");
        let url_line = text
            .lines()
            .position(|line| line.contains("registry-pass-7"))
            .unwrap()
            + 1;
        assert!(
            message.contains(&format!("line {url_line}, column ")),
            "{message}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).expect("minimal config is valid");

        assert_eq!(config.pages[0].access_token.expose(), "token-from-env");
        assert_eq!(config.graph.version, "v25.0");
        assert_eq!(config.graph.page_size, 100);
        assert_eq!(config.kafka.leads_topic, "leadgen.leads");
        assert_eq!(config.backfill.interval, Duration::from_secs(300));
    }

    #[test]
    fn missing_variable_names_key_and_variable() {
        let text = MINIMAL.replace("${PAGE_TOKEN}", "${NOT_SET_ANYWHERE}");

        let message = parse(&text).unwrap_err().to_string();

        assert!(message.contains("pages[0].access_token"), "{message}");
        assert!(message.contains("NOT_SET_ANYWHERE"), "{message}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let text = MINIMAL.replace("[kafka]", "[kafka]\nbootstrap = \"x\"");

        let message = parse(&text).unwrap_err().to_string();

        assert!(message.contains("bootstrap"), "{message}");
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn start_time_in_milliseconds_is_rejected() {
        let text = format!("{MINIMAL}\n[backfill]\nstart = 1714557600000\n");

        let message = parse(&text).unwrap_err().to_string();

        assert!(message.contains("backfill.start"), "{message}");
        assert!(message.contains("milliseconds"), "{message}");
    }

    #[test]
    fn start_time_accepts_seconds_and_rfc3339() {
        let seconds = parse(&format!("{MINIMAL}\n[backfill]\nstart = 1714557600\n")).unwrap();
        let text = parse(&format!(
            "{MINIMAL}\n[backfill]\nstart = \"2024-05-01T10:00:00Z\"\n"
        ))
        .unwrap();

        assert_eq!(seconds.backfill.start, StartTime(1_714_557_600));
        assert_eq!(text.backfill.start, StartTime(1_714_557_600));
    }

    #[test]
    fn bad_duration_names_key() {
        let text = format!("{MINIMAL}\n[backfill]\ninterval = \"five minutes\"\n");

        let message = parse(&text).unwrap_err().to_string();

        assert!(message.contains("backfill.interval"), "{message}");
    }

    #[test]
    fn reserved_kafka_property_is_rejected() {
        let text = MINIMAL.replace(
            "bootstrap_servers = \"127.0.0.1:9092\"",
            "bootstrap_servers = \"127.0.0.1:9092\"\nproperties = { \"enable.idempotence\" = \"false\" }",
        );

        let message = parse(&text).unwrap_err().to_string();

        assert!(message.contains("enable.idempotence"), "{message}");
    }

    #[test]
    fn duplicate_form_is_rejected() {
        let text = MINIMAL.replace(
            "forms = [\"200000000000001\"]",
            "forms = [\"200000000000001\", \"200000000000001\"]",
        );

        let message = parse(&text).unwrap_err().to_string();

        assert!(message.contains("listed twice"), "{message}");
    }

    #[test]
    fn default_applies_when_variable_is_unset() {
        assert_eq!(
            expand_string("${UNSET_VAR:-fallback}", "key", &env).unwrap(),
            "fallback"
        );
        assert_eq!(
            expand_string("${PAGE_TOKEN:-fallback}", "key", &env).unwrap(),
            "token-from-env"
        );
    }

    #[test]
    fn dollar_escape_keeps_literal() {
        let expanded = expand_string("a$${B}c$d", "key", &env).unwrap();

        assert_eq!(expanded, "a${B}c$d");
    }

    /// Returns a path in the temporary directory unique to this process and
    /// `name`, with no file at it.
    fn temp_path(name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("leadgen-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn file_reference_reads_each_load() {
        let path = temp_path("page-token");
        std::fs::write(&path, "token-one\n").unwrap();
        let text = MINIMAL.replace("${PAGE_TOKEN}", &format!("${{file:{}}}", path.display()));

        let first = parse(&text).expect("the token file exists");
        std::fs::write(&path, "token-two\r\n").unwrap();
        let second = parse(&text).expect("the token file exists");
        std::fs::remove_file(&path).unwrap();

        assert_eq!(first.pages[0].access_token.expose(), "token-one");
        assert_eq!(second.pages[0].access_token.expose(), "token-two");
    }

    #[test]
    fn missing_file_names_key_and_path() {
        let path = temp_path("missing-token");
        let text = MINIMAL.replace("${PAGE_TOKEN}", &format!("${{file:{}}}", path.display()));

        let error = parse(&text).expect_err("the token file does not exist");

        let message = error.to_string();
        assert!(message.contains("pages[0].access_token"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn empty_file_reference_is_rejected() {
        let error = expand_string("${file:}", "key", &env).expect_err("no path");

        assert!(error.to_string().contains("names no file"), "{error}");
    }

    #[test]
    fn escaped_file_reference_stays_literal() {
        let expanded = expand_string("$${file:/etc/hostname}", "key", &env).unwrap();

        assert_eq!(expanded, "${file:/etc/hostname}");
    }

    #[test]
    fn zero_body_read_timeout_is_rejected() {
        let text = format!(
            "{MINIMAL}\n[webhook]\nverify_token = \"verify\"\nbody_read_timeout = \"0s\"\n"
        )
        .replace("[graph]\n", "[graph]\napp_secret = \"secret\"\n");

        let message = parse(&text).unwrap_err().to_string();

        assert!(message.contains("webhook.body_read_timeout"), "{message}");
    }

    #[test]
    fn debug_output_hides_passwords() {
        let text = MINIMAL
            .replace(
                "http://127.0.0.1:8081/apis/ccompat/v7",
                "https://user:registry-pass-1@127.0.0.1:8081/apis/ccompat/v7",
            )
            .replace(
                "bootstrap_servers = \"127.0.0.1:9092\"",
                "bootstrap_servers = \"127.0.0.1:9092\"\nproperties = { \"sasl.password\" = \"kafka-pass-2\", \"ssl.key.password\" = \"key-pass-3\", \"linger.ms\" = \"5\" }",
            );
        let config = parse(&text).unwrap();

        let debug = format!("{config:?}");

        assert!(!debug.contains("registry-pass-1"), "{debug}");
        assert!(!debug.contains("kafka-pass-2"), "{debug}");
        assert!(!debug.contains("key-pass-3"), "{debug}");
        assert!(debug.contains("\"linger.ms\": \"5\""), "{debug}");
        assert_eq!(config.kafka.properties["sasl.password"], "kafka-pass-2");
        assert_eq!(
            config.schema_registry.display_url(),
            "https://user:[redacted]@127.0.0.1:8081/apis/ccompat/v7"
        );
    }

    #[test]
    fn debug_output_hides_token() {
        let config = parse(MINIMAL).unwrap();

        let debug = format!("{config:?}");

        assert!(!debug.contains("token-from-env"));
    }
}
