//! Client of the simulator's `/_sim/` admin endpoints and the signed
//! `leadgen` webhook bodies that name its leads.

use std::time::Duration;

use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

/// Most leads asked for in one `POST /_sim/leads`, to keep bodies small.
const MAX_LEADS_PER_CALL: usize = 5_000;

/// A lead that exists in the simulator.
#[derive(Debug, Clone)]
pub struct SimLead {
    pub lead_id: String,
    pub form_id: String,
    /// Unix seconds, as sent in the webhook.
    pub created_time: i64,
}

/// Talks to one simulator over HTTP.
#[derive(Clone)]
pub struct Simulator {
    http: reqwest::Client,
    base_url: String,
}

#[derive(Deserialize)]
struct CreatedIds {
    ids: Vec<String>,
}

impl Simulator {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .context("failed to build the simulator HTTP client")?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Creates `count` leads in one form and returns them in creation order.
    pub async fn create_leads(&self, form_id: &str, count: usize) -> anyhow::Result<Vec<SimLead>> {
        let mut leads = Vec::with_capacity(count);
        let mut remaining = count;
        while remaining > 0 {
            let chunk = remaining.min(MAX_LEADS_PER_CALL);
            let created_time = chrono::Utc::now().timestamp();
            let response = self
                .http
                .post(format!("{}/_sim/leads", self.base_url))
                .json(&json!({ "form_id": form_id, "count": chunk }))
                .send()
                .await
                .context("POST /_sim/leads failed")?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                bail!("POST /_sim/leads for form {form_id} returned {status}: {body}");
            }
            let created: CreatedIds = response
                .json()
                .await
                .context("invalid /_sim/leads response")?;
            leads.extend(created.ids.into_iter().map(|lead_id| SimLead {
                lead_id,
                form_id: form_id.to_owned(),
                created_time,
            }));
            remaining -= chunk;
        }
        Ok(leads)
    }

    /// Creates `count` leads spread evenly over `form_ids`, interleaved so
    /// that consecutive leads belong to different forms.
    pub async fn create_spread(
        &self,
        form_ids: &[String],
        count: usize,
    ) -> anyhow::Result<Vec<SimLead>> {
        let mut per_form = Vec::with_capacity(form_ids.len());
        for (index, form_id) in form_ids.iter().enumerate() {
            let share = count / form_ids.len() + usize::from(index < count % form_ids.len());
            per_form.push(self.create_leads(form_id, share).await?.into_iter());
        }
        let mut leads = Vec::with_capacity(count);
        while leads.len() < count {
            for form_leads in &mut per_form {
                leads.extend(form_leads.next());
            }
        }
        Ok(leads)
    }

    /// Returns `GET /_sim/stats`: the Graph API call counters.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}/_sim/stats", self.base_url))
            .send()
            .await
            .context("GET /_sim/stats failed")?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET /_sim/stats returned {status}");
        }
        response.json().await.context("invalid /_sim/stats body")
    }
}

/// Builds the body Meta POSTs for one `leadgen` change and its
/// `X-Hub-Signature-256` header value.
pub fn signed_webhook(lead: &SimLead, page_id: &str, app_secret: &str) -> (Vec<u8>, String) {
    let body = json!({
        "object": "page",
        "entry": [{
            "id": page_id,
            "time": chrono::Utc::now().timestamp(),
            "changes": [{
                "field": "leadgen",
                "value": {
                    "leadgen_id": lead.lead_id,
                    "page_id": page_id,
                    "form_id": lead.form_id,
                    "created_time": lead.created_time,
                }
            }]
        }]
    })
    .to_string()
    .into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}
