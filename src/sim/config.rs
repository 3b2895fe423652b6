//! Simulator configuration: Pages, their access tokens and lead forms, the
//! seed for generated data, the call budget and the webhook sender.
//!
//! The TOML form read by `leadgen-sim --config` has the same field names:
//!
//! ```toml
//! seed = 7
//! history_days = 30
//! app_secret = "s3cret"          # optional
//! daily_budget_per_page = 4800   # optional; absent is unlimited
//! budget_window = "24h"
//! leads_per_second = 0.5
//!
//! [[pages]]
//! id = "100000000000001"
//! access_token = "EAASIM100000000000001"
//!
//! [[pages.forms]]
//! id = "200000001000001"
//! name = "Test drive booking"
//! initial_leads = 250
//!
//! [webhook]                      # optional; see WebhookConfig for every key
//! url = "http://127.0.0.1:8080/webhook"
//! drop_share = 0.01
//! ```

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::webhook::WebhookConfig;

/// First generated Page id; Page `i` (from 0) gets this plus `i`.
pub const GENERATED_PAGE_ID_BASE: u64 = 100_000_000_000_001;
/// Form `j` of Page `i` (both from 0) gets this plus `i * 1_000_000 + j`.
pub const GENERATED_FORM_ID_BASE: u64 = 200_000_001_000_001;
/// Prefix of generated access tokens: the token is this prefix followed by
/// the Page id.
pub const GENERATED_TOKEN_PREFIX: &str = "EAASIM";

/// Default length of the call budget window.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Default number of days the initial leads are spread over.
pub const DEFAULT_HISTORY_DAYS: u32 = 30;

/// Simulator configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every generated value: lead contents, ids, timestamps' spread.
    pub seed: u64,
    pub pages: Vec<SimPage>,
    /// Days before start-up that the initial leads are spread over.
    pub history_days: u32,
    /// When set, every call must carry `appsecret_proof`, the lowercase hex
    /// HMAC-SHA256 of the access token keyed with this secret.
    pub app_secret: Option<String>,
    /// Calls each Page may make per `budget_window`; `None` is unlimited.
    pub daily_budget_per_page: Option<u64>,
    /// Length of the rolling budget window; 24 h unless a test shortens it.
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
    /// Leads per second created at run time across all forms; 0 is off.
    pub leads_per_second: f64,
    /// Signed `leadgen` webhooks for leads created at run time; `None`
    /// sends none.
    pub webhook: Option<WebhookConfig>,
}

/// A Facebook Page and its Page access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPage {
    pub id: String,
    pub access_token: String,
    #[serde(default)]
    pub forms: Vec<SimForm>,
}

/// A lead form of a Page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimForm {
    pub id: String,
    pub name: String,
    /// Leads that exist when the simulator starts.
    #[serde(default)]
    pub initial_leads: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            pages: Vec::new(),
            history_days: DEFAULT_HISTORY_DAYS,
            app_secret: None,
            daily_budget_per_page: None,
            budget_window: DEFAULT_BUDGET_WINDOW,
            leads_per_second: 0.0,
            webhook: None,
        }
    }
}

impl SimConfig {
    /// Two Pages with three forms and 390 leads, for demos.
    ///
    /// Page ids, form ids and tokens follow the [`SimConfig::generated`]
    /// scheme: Page `100000000000001` has forms `200000001000001` (180
    /// leads) and `200000001000002` (120 leads); Page `100000000000002` has
    /// form `200000002000001` (90 leads).
    pub fn demo() -> Self {
        let page = |index: u64, forms: Vec<SimForm>| {
            let id = generated_page_id(index);
            SimPage {
                access_token: format!("{GENERATED_TOKEN_PREFIX}{id}"),
                id,
                forms,
            }
        };
        let form = |page_index: u64, form_index: u64, name: &str, initial_leads: usize| SimForm {
            id: generated_form_id(page_index, form_index),
            name: name.to_owned(),
            initial_leads,
        };
        Self {
            seed: 42,
            pages: vec![
                page(
                    0,
                    vec![
                        form(0, 0, "Test drive booking", 180),
                        form(0, 1, "Spring webinar sign-up", 120),
                    ],
                ),
                page(1, vec![form(1, 0, "Home valuation request", 90)]),
            ],
            ..Self::default()
        }
    }

    /// Builds `pages` Pages with `forms_per_page` forms of `leads_per_form`
    /// leads each.
    ///
    /// Ids and tokens do not depend on the seed. Page `i` (from 0) has id
    /// [`GENERATED_PAGE_ID_BASE`]` + i` and token [`GENERATED_TOKEN_PREFIX`]
    /// followed by its id. Its form `j` has id [`GENERATED_FORM_ID_BASE`]`
    /// + i * 1_000_000 + j` and name `Form {i+1}.{j+1}`. So the first Page
    /// is `100000000000001` with token `EAASIM100000000000001`, and its
    /// forms are `200000001000001`, `200000001000002`, ...
    pub fn generated(
        seed: u64,
        pages: usize,
        forms_per_page: usize,
        leads_per_form: usize,
    ) -> Self {
        let pages = (0..pages as u64)
            .map(|page_index| {
                let id = generated_page_id(page_index);
                let forms = (0..forms_per_page as u64)
                    .map(|form_index| SimForm {
                        id: generated_form_id(page_index, form_index),
                        name: format!("Form {}.{}", page_index + 1, form_index + 1),
                        initial_leads: leads_per_form,
                    })
                    .collect();
                SimPage {
                    access_token: format!("{GENERATED_TOKEN_PREFIX}{id}"),
                    id,
                    forms,
                }
            })
            .collect();
        Self {
            seed,
            pages,
            ..Self::default()
        }
    }

    /// Parses the TOML form described in the module documentation.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).context("invalid simulator configuration TOML")
    }

    /// Checks that ids and tokens are unique and non-empty, that the rate
    /// is a finite non-negative number, and that the webhook settings are
    /// valid and have an app secret.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(webhook) = &self.webhook {
            webhook.resolve(self.app_secret.as_deref())?;
        }
        if !self.leads_per_second.is_finite() || self.leads_per_second < 0.0 {
            bail!(
                "leads_per_second must be a finite number >= 0, got {}",
                self.leads_per_second
            );
        }
        if self.budget_window.is_zero() {
            bail!("budget_window must be longer than zero");
        }

        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        for page in &self.pages {
            if page.id.is_empty() || page.access_token.is_empty() {
                bail!("every Page needs a non-empty id and access_token");
            }
            if !ids.insert(page.id.as_str()) {
                bail!("duplicate object id {} in simulator configuration", page.id);
            }
            if !tokens.insert(page.access_token.as_str()) {
                bail!("Page {} shares its access token with another Page", page.id);
            }
            for form in &page.forms {
                if form.id.is_empty() {
                    bail!("a form of Page {} has an empty id", page.id);
                }
                if !ids.insert(form.id.as_str()) {
                    bail!("duplicate object id {} in simulator configuration", form.id);
                }
            }
        }
        Ok(())
    }
}

fn generated_page_id(page_index: u64) -> String {
    (GENERATED_PAGE_ID_BASE + page_index).to_string()
}

fn generated_form_id(page_index: u64, form_index: u64) -> String {
    (GENERATED_FORM_ID_BASE + page_index * 1_000_000 + form_index).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_follow_documented_scheme() {
        let config = SimConfig::generated(9, 2, 3, 10);
        assert_eq!(config.seed, 9);
        assert_eq!(config.pages.len(), 2);
        assert_eq!(config.pages[0].id, "100000000000001");
        assert_eq!(config.pages[0].access_token, "EAASIM100000000000001");
        assert_eq!(config.pages[1].id, "100000000000002");
        assert_eq!(config.pages[0].forms[0].id, "200000001000001");
        assert_eq!(config.pages[0].forms[2].id, "200000001000003");
        assert_eq!(config.pages[1].forms[0].id, "200000002000001");
        assert_eq!(config.pages[1].forms[0].initial_leads, 10);
        config.validate().expect("generated config is valid");
    }

    #[test]
    fn demo_has_three_forms_and_few_hundred_leads() {
        let config = SimConfig::demo();
        let forms: Vec<&SimForm> = config.pages.iter().flat_map(|p| &p.forms).collect();
        assert_eq!(forms.len(), 3);
        let leads: usize = forms.iter().map(|f| f.initial_leads).sum();
        assert_eq!(leads, 390);
        config.validate().expect("demo config is valid");
    }

    #[test]
    fn toml_round_trips() {
        let text = r#"
            seed = 7
            app_secret = "s3cret"
            daily_budget_per_page = 10
            budget_window = "30s"

            [[pages]]
            id = "1"
            access_token = "tok"

            [[pages.forms]]
            id = "2"
            name = "Form"
            initial_leads = 5
        "#;
        let config = SimConfig::from_toml(text).expect("valid TOML");
        assert_eq!(config.seed, 7);
        assert_eq!(config.history_days, DEFAULT_HISTORY_DAYS);
        assert_eq!(config.budget_window, Duration::from_secs(30));
        assert_eq!(config.daily_budget_per_page, Some(10));
        assert_eq!(config.pages[0].forms[0].initial_leads, 5);

        let written = toml::to_string(&config).expect("config serializes");
        assert_eq!(SimConfig::from_toml(&written).expect("reparses"), config);
    }

    #[test]
    fn toml_reads_webhook_table() {
        let text = r#"
            app_secret = "s3cret"

            [webhook]
            url = "http://127.0.0.1:8080/webhook"
            drop_share = 0.25
            delay = "2s"
            batch_max = 10
        "#;
        let config = SimConfig::from_toml(text).expect("valid TOML");
        let webhook = config.webhook.as_ref().expect("webhook table read");
        assert_eq!(webhook.url, "http://127.0.0.1:8080/webhook");
        assert_eq!(webhook.drop_share, 0.25);
        assert_eq!(webhook.delay, Duration::from_secs(2));
        assert_eq!(webhook.batch_max, 10);
        assert_eq!(webhook.app_secret, None);
        config
            .validate()
            .expect("top-level app_secret signs webhooks");

        let written = toml::to_string(&config).expect("config serializes");
        assert_eq!(SimConfig::from_toml(&written).expect("reparses"), config);
    }

    #[test]
    fn validate_rejects_unsigned_webhook() {
        let config = SimConfig {
            webhook: Some(WebhookConfig::new("http://127.0.0.1:8080/webhook")),
            ..SimConfig::generated(1, 1, 1, 0)
        };
        let error = config.validate().expect_err("no app secret");
        assert!(error.to_string().contains("app secret"), "{error}");
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        assert!(SimConfig::from_toml("sede = 7").is_err());
    }

    #[test]
    fn validate_rejects_duplicates() {
        let mut config = SimConfig::generated(1, 2, 1, 0);
        config.pages[1].access_token = config.pages[0].access_token.clone();
        assert!(config.validate().is_err());

        let mut config = SimConfig::generated(1, 1, 2, 0);
        config.pages[0].forms[1].id = config.pages[0].forms[0].id.clone();
        assert!(config.validate().is_err());

        let mut config = SimConfig::generated(1, 1, 1, 0);
        config.leads_per_second = f64::NAN;
        assert!(config.validate().is_err());
    }
}
