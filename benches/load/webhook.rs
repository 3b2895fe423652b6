//! Signed webhook POSTs to the connector: an open-loop run at a fixed
//! offered rate, and a burst sent as fast as a bounded number of
//! connections allows.
//!
//! The fixed-rate run schedules request `i` at `start + i / rate` whatever
//! happened to earlier requests, and measures each acknowledgement from
//! that scheduled instant. So time a request waits because the connector
//! (or this process) is slow counts in its latency, and a slow server
//! cannot lower the offered rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::latency::Percentiles;
use crate::process::{CpuUse, Watched};
use crate::records::KeyRecorder;
use crate::simulator::{signed_webhook, SimLead, Simulator};

/// Added to the current Unix milliseconds to make up lead ids that no
/// simulator lead has.
const SYNTHETIC_LEAD_ID_BASE: u64 = 800_000_000_000_000_000;

/// Maximum wait for one webhook response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Webhook URL and signing secret, and the Page and forms the webhooks name.
#[derive(Clone)]
pub struct Target {
    pub http: reqwest::Client,
    pub url: String,
    pub app_secret: String,
    pub page_id: String,
    pub form_ids: Vec<String>,
}

impl Target {
    pub fn new(
        url: String,
        app_secret: String,
        page_id: String,
        form_ids: Vec<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("failed to build the webhook HTTP client")?;
        Ok(Self {
            http,
            url,
            app_secret,
            page_id,
            form_ids,
        })
    }

    async fn post(&self, body: Vec<u8>, signature: String) -> Result<u16, String> {
        self.http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .map(|response| response.status().as_u16())
            .map_err(|error| error.to_string())
    }
}

/// Settings of one fixed-rate run.
#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    /// Offered requests per second.
    pub rate: f64,
    /// Measured part of the run.
    pub duration: Duration,
    /// Part before it whose requests are sent but not counted.
    pub warmup: Duration,
    /// Create each lead in the simulator right before its webhook and
    /// measure end-to-end latency from that creation, instead of creating
    /// all leads before the run.
    pub create_inline: bool,
    /// Name made-up lead ids without creating any lead, and skip the
    /// end-to-end measurement. With a form the connector does not read,
    /// this measures acknowledgements without the lead reads that follow.
    pub synthetic_leads: bool,
    /// Maximum wait after the last request for its lead record.
    pub drain_timeout: Duration,
}

/// Responses of one run by outcome.
#[derive(Debug, Default, Serialize)]
pub struct Outcomes {
    pub sent: usize,
    pub ok: usize,
    /// Non-200 responses by HTTP status.
    pub statuses: BTreeMap<u16, usize>,
    pub transport_errors: usize,
    /// The first transport error, to say what failed.
    pub first_error: Option<String>,
}

impl Outcomes {
    fn record(&mut self, status: &Result<u16, String>) {
        self.sent += 1;
        match status {
            Ok(200) => self.ok += 1,
            Ok(status) => *self.statuses.entry(*status).or_default() += 1,
            Err(error) => {
                self.transport_errors += 1;
                self.first_error.get_or_insert_with(|| error.clone());
            }
        }
    }

    pub fn failures(&self) -> usize {
        self.sent - self.ok
    }
}

/// Result of one fixed-rate run.
#[derive(Debug, Serialize)]
pub struct RateReport {
    pub kind: &'static str,
    pub offered_rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Requests per second actually started in the measured part.
    pub achieved_rate: f64,
    /// Largest delay of this process in starting a request after its
    /// scheduled instant. Large values mean the load generator fell behind.
    pub max_dispatch_lag_ms: f64,
    pub outcomes: Outcomes,
    /// From the scheduled send instant to the response (from the actual
    /// send with `create_inline`).
    pub ack: Percentiles,
    /// Start of the end-to-end latency: `webhook_scheduled` or
    /// `lead_creation`.
    pub e2e_from: &'static str,
    /// To the instant a `read_committed` consumer received the lead record.
    pub e2e: Percentiles,
    /// Acknowledged leads of the measured part whose record did not arrive
    /// within the drain timeout.
    pub e2e_missing: usize,
    /// CPU use of the watched processes while the measured requests were sent.
    pub cpu: BTreeMap<String, CpuUse>,
}

struct Sent {
    lead_id: String,
    scheduled: Instant,
    ack_from: Instant,
    answered: Instant,
    status: Result<u16, String>,
}

/// Runs one fixed-rate run.
pub async fn run_rate(
    target: &Target,
    simulator: &Simulator,
    recorder: &Arc<KeyRecorder>,
    watched: &Watched,
    settings: RateSettings,
) -> anyhow::Result<RateReport> {
    let total =
        (settings.rate * (settings.warmup + settings.duration).as_secs_f64()).ceil() as usize;
    let prepared: Vec<Option<SimLead>> = if settings.create_inline {
        vec![None; total]
    } else if settings.synthetic_leads {
        let first_id = SYNTHETIC_LEAD_ID_BASE + chrono::Utc::now().timestamp_millis() as u64;
        let created_time = chrono::Utc::now().timestamp();
        (0..total)
            .map(|index| {
                Some(SimLead {
                    lead_id: (first_id + index as u64 * 1_000).to_string(),
                    form_id: target.form_ids[index % target.form_ids.len()].clone(),
                    created_time,
                })
            })
            .collect()
    } else {
        eprintln!("leadgen-load: creating {total} leads in the simulator");
        simulator
            .create_spread(&target.form_ids, total)
            .await?
            .into_iter()
            .map(Some)
            .collect()
    };
    recorder.clear_watch();

    eprintln!(
        "leadgen-load: offering {} requests/s for {:?} after {:?} of warm-up",
        settings.rate, settings.duration, settings.warmup
    );
    let start = Instant::now() + Duration::from_millis(100);
    let measured_from = start + settings.warmup;
    let mut tasks = JoinSet::new();
    let mut max_lag = Duration::ZERO;
    let mut cpu_before = None;
    for (index, lead) in prepared.into_iter().enumerate() {
        let scheduled = start + Duration::from_secs_f64(index as f64 / settings.rate);
        if cpu_before.is_none() && scheduled >= measured_from {
            cpu_before = Some(watched.snapshot());
        }
        let now = Instant::now();
        if scheduled > now {
            tokio::time::sleep_until(scheduled.into()).await;
        } else if scheduled >= measured_from {
            max_lag = max_lag.max(now - scheduled);
        }

        let target = target.clone();
        let simulator = simulator.clone();
        let form_id = target.form_ids[index % target.form_ids.len()].clone();
        tasks.spawn(async move {
            let (lead, ack_from) = match lead {
                Some(lead) => (lead, scheduled),
                None => {
                    let mut created = simulator.create_leads(&form_id, 1).await?;
                    let lead = created.pop().context("the simulator created no lead")?;
                    (lead, Instant::now())
                }
            };
            let (body, signature) = signed_webhook(&lead, &target.page_id, &target.app_secret);
            let status = target.post(body, signature).await;
            anyhow::Ok(Sent {
                lead_id: lead.lead_id,
                scheduled,
                ack_from,
                answered: Instant::now(),
                status,
            })
        });
    }
    let dispatch_end = Instant::now();
    let cpu_after = watched.snapshot();
    let cpu = cpu_before
        .map(|before| watched.usage(&before, &cpu_after))
        .unwrap_or_default();

    let mut outcomes = Outcomes::default();
    let mut ack_samples = Vec::new();
    let mut measured: Vec<Sent> = Vec::new();
    let mut acknowledged_total = 0;
    while let Some(joined) = tasks.join_next().await {
        let sent = joined.context("a request task panicked")??;
        if sent.status == Ok(200) {
            acknowledged_total += 1;
            recorder.watch([sent.lead_id.as_str()]);
        }
        if sent.scheduled < measured_from {
            continue;
        }
        outcomes.record(&sent.status);
        if sent.status == Ok(200) {
            ack_samples.push(sent.answered - sent.ack_from);
            measured.push(sent);
        }
    }

    let drain_timeout = if settings.synthetic_leads {
        Duration::ZERO
    } else {
        settings.drain_timeout
    };
    eprintln!("leadgen-load: waiting for {acknowledged_total} lead records");
    recorder
        .wait_until(drain_timeout, |recorder| {
            recorder.watched_seen() >= acknowledged_total
        })
        .await;
    let mut e2e_samples = Vec::with_capacity(measured.len());
    let mut e2e_missing = 0;
    for sent in &measured {
        match recorder.seen_at(&sent.lead_id) {
            Some(seen) => e2e_samples.push(seen.saturating_duration_since(sent.scheduled)),
            None => e2e_missing += 1,
        }
    }

    let measured_span = dispatch_end.saturating_duration_since(measured_from);
    Ok(RateReport {
        kind: "webhook_rate",
        offered_rate: settings.rate,
        duration_s: settings.duration.as_secs_f64(),
        warmup_s: settings.warmup.as_secs_f64(),
        achieved_rate: outcomes.sent as f64 / measured_span.as_secs_f64().max(1e-9),
        max_dispatch_lag_ms: max_lag.as_secs_f64() * 1000.0,
        outcomes,
        ack: Percentiles::of(ack_samples),
        e2e_from: if settings.create_inline {
            "lead_creation"
        } else {
            "webhook_scheduled"
        },
        e2e: Percentiles::of(e2e_samples),
        e2e_missing,
        cpu,
    })
}

/// Result of one burst.
#[derive(Debug, Serialize)]
pub struct BurstReport {
    pub kind: &'static str,
    pub webhooks: usize,
    pub concurrency: usize,
    pub outcomes: Outcomes,
    /// From the first request to the last response.
    pub send_s: f64,
    /// From the first request to the last lead record received.
    pub all_records_s: Option<f64>,
    pub records_missing: usize,
    /// Graph API calls the simulator counted during the burst.
    pub graph_calls: u64,
    pub graph_calls_per_lead: f64,
    /// The same calls by endpoint kind.
    pub graph_calls_by_endpoint: BTreeMap<String, u64>,
    /// CPU use of the watched processes from the first request to the last
    /// lead record.
    pub cpu: BTreeMap<String, CpuUse>,
}

/// Sends `count` webhooks, each for a new lead, with at most `concurrency`
/// requests in flight, and counts the Graph API calls the connector makes
/// to read the leads.
#[allow(clippy::too_many_arguments)]
pub async fn run_burst(
    target: &Target,
    simulator: &Simulator,
    recorder: &Arc<KeyRecorder>,
    watched: &Watched,
    count: usize,
    concurrency: usize,
    drain_timeout: Duration,
    settle: Duration,
) -> anyhow::Result<BurstReport> {
    let leads = simulator.create_spread(&target.form_ids, count).await?;
    recorder.clear_watch();
    let before = simulator.stats().await?;

    let permits = Arc::new(Semaphore::new(concurrency));
    let cpu_before = watched.snapshot();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for lead in &leads {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let target = target.clone();
        let (body, signature) = signed_webhook(lead, &target.page_id, &target.app_secret);
        tasks.spawn(async move {
            let status = target.post(body, signature).await;
            drop(permit);
            status
        });
    }
    let mut outcomes = Outcomes::default();
    while let Some(joined) = tasks.join_next().await {
        outcomes.record(&joined.context("a request task panicked")?);
    }
    let send_s = started.elapsed().as_secs_f64();

    recorder.watch(leads.iter().map(|lead| lead.lead_id.as_str()));
    recorder
        .wait_until(drain_timeout, |recorder| {
            recorder.watched_seen() >= outcomes.ok
        })
        .await;
    let cpu = watched.usage(&cpu_before, &watched.snapshot());
    let mut last_seen: Option<Instant> = None;
    let mut records_missing = 0;
    for lead in &leads {
        match recorder.seen_at(&lead.lead_id) {
            Some(seen) => last_seen = last_seen.max(Some(seen)),
            None => records_missing += 1,
        }
    }
    // Calls that a batch still in progress makes land before the second
    // reading.
    tokio::time::sleep(settle).await;
    let after = simulator.stats().await?;

    let graph_calls = call_count(&after["total"]) - call_count(&before["total"]);
    let mut by_endpoint = BTreeMap::new();
    if let Some(endpoints) = after["by_endpoint"].as_object() {
        for (endpoint, counts) in endpoints {
            let delta = call_count(counts) - call_count(&before["by_endpoint"][endpoint]);
            if delta > 0 {
                by_endpoint.insert(endpoint.clone(), delta);
            }
        }
    }
    Ok(BurstReport {
        kind: "webhook_burst",
        webhooks: count,
        concurrency,
        outcomes,
        send_s,
        all_records_s: last_seen.map(|seen| (seen - started).as_secs_f64()),
        records_missing,
        graph_calls,
        graph_calls_per_lead: graph_calls as f64 / count as f64,
        graph_calls_by_endpoint: by_endpoint,
        cpu,
    })
}

fn call_count(counts: &Value) -> u64 {
    counts["calls"].as_u64().unwrap_or(0)
}
