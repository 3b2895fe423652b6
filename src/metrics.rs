//! Prometheus metrics of one connector instance.
//!
//! Labels are bounded: form and Page ids come from the configuration or
//! from discovery, outcomes and reasons are fixed words, and no label ever
//! carries a lead id or a secret.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceForm {
    pub source: String,
    pub form_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointOutcome {
    pub endpoint: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PageLabel {
    pub page_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PageState {
    pub page_id: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormLabel {
    pub form_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KafkaClient {
    pub client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

/// Every metric the connector exports.
pub struct Metrics {
    registry: Registry,
    pub leads_produced: Family<SourceForm, Counter>,
    pub webhook_requests: Family<Outcome, Counter>,
    pub notifications_accepted: Counter,
    pub graph_calls: Family<EndpointOutcome, Counter>,
    pub rate_budget_usage: Family<PageLabel, Gauge<f64, AtomicU64>>,
    pub page_token_state: Family<PageState, Gauge>,
    pub token_expires_in: Family<PageLabel, Gauge>,
    pub watermark_lag: Family<FormLabel, Gauge>,
    pub lead_latency: Histogram,
    pub dead_letters: Family<Reason, Counter>,
    pub missed_by_webhook: Family<FormLabel, Counter>,
    pub duplicates_skipped: Family<SourceForm, Counter>,
    pub below_floor_skipped: Family<SourceForm, Counter>,
    pub notifications_kept_pending: Family<PageLabel, Counter>,
    pub kafka_produce_errors: Counter,
    pub transactions: Family<Outcome, Counter>,
    pub kafka_client_restarts: Family<KafkaClient, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("leadgen");
        let metrics = Self {
            leads_produced: Family::default(),
            webhook_requests: Family::default(),
            notifications_accepted: Counter::default(),
            graph_calls: Family::default(),
            rate_budget_usage: Family::default(),
            page_token_state: Family::default(),
            token_expires_in: Family::default(),
            watermark_lag: Family::default(),
            // Seconds from lead creation to produce: 50 ms to about 14 h.
            lead_latency: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                14_400.0, 50_000.0,
            ]),
            dead_letters: Family::default(),
            missed_by_webhook: Family::default(),
            duplicates_skipped: Family::default(),
            below_floor_skipped: Family::default(),
            notifications_kept_pending: Family::default(),
            kafka_produce_errors: Counter::default(),
            transactions: Family::default(),
            kafka_client_restarts: Family::default(),
            registry: Registry::default(),
        };

        registry.register(
            "leads_produced",
            "Lead records committed to the leads topic",
            metrics.leads_produced.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook HTTP requests by outcome",
            metrics.webhook_requests.clone(),
        );
        registry.register(
            "notifications_accepted",
            "Leadgen notifications made durable in the notifications topic",
            metrics.notifications_accepted.clone(),
        );
        registry.register(
            "graph_calls",
            "Graph API calls by endpoint and outcome",
            metrics.graph_calls.clone(),
        );
        registry.register(
            "rate_budget_usage_percent",
            "Latest usage Meta reported for a Page, in percent",
            metrics.rate_budget_usage.clone(),
        );
        registry.register(
            "page_token_state",
            "1 for the current token state of each Page",
            metrics.page_token_state.clone(),
        );
        registry.register(
            "page_token_expires_in_seconds",
            "Time until a Page token expires, from debug_token; -1 for a token that never expires",
            metrics.token_expires_in.clone(),
        );
        registry.register(
            "watermark_lag_seconds",
            "Wall-clock time minus a form's watermark",
            metrics.watermark_lag.clone(),
        );
        registry.register(
            "lead_latency_seconds",
            "Time from lead creation to its record being committed",
            metrics.lead_latency.clone(),
        );
        registry.register(
            "dead_letters",
            "Records written to the dead-letter topic, by reason",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "missed_by_webhook",
            "Leads first written by the backfill although webhooks are enabled",
            metrics.missed_by_webhook.clone(),
        );
        registry.register(
            "duplicates_skipped",
            "Leads skipped because they were already written",
            metrics.duplicates_skipped.clone(),
        );
        registry.register(
            "below_floor_skipped",
            "Webhook leads skipped because their created_time is older than the form's deduplication floor; also counted in duplicates_skipped",
            metrics.below_floor_skipped.clone(),
        );
        registry.register(
            "notifications_kept_pending",
            "Webhook leads kept as pending because their Page's token was not working",
            metrics.notifications_kept_pending.clone(),
        );
        registry.register(
            "kafka_produce_errors",
            "Failed Kafka writes (transactions or notifications)",
            metrics.kafka_produce_errors.clone(),
        );
        registry.register(
            "transactions",
            "Kafka transactions by outcome",
            metrics.transactions.clone(),
        );
        registry.register(
            "kafka_client_restarts",
            "Kafka clients replaced after a fatal error, or for the transactional producer after a failed abort, by client (notification_consumer, transactional_producer)",
            metrics.kafka_client_restarts.clone(),
        );

        Self {
            registry,
            ..metrics
        }
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub fn webhook(&self, outcome: &str) {
        self.webhook_requests
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn graph_call(&self, endpoint: &str, outcome: &str) {
        self.graph_calls
            .get_or_create(&EndpointOutcome {
                endpoint: endpoint.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Exports the restart counter of a Kafka client at 0 until its first
    /// restart.
    pub fn add_kafka_client(&self, client: &str) {
        let _counter = self.kafka_client_restarts.get_or_create(&KafkaClient {
            client: client.to_owned(),
        });
    }

    pub fn kafka_client_restart(&self, client: &str) {
        self.kafka_client_restarts
            .get_or_create(&KafkaClient {
                client: client.to_owned(),
            })
            .inc();
    }

    pub fn set_page_state(&self, page_id: &str, state: &str) {
        for known in ["healthy", "token_invalid", "permission_missing"] {
            let value = i64::from(known == state);
            self.page_token_state
                .get_or_create(&PageState {
                    page_id: page_id.to_owned(),
                    state: known.to_owned(),
                })
                .set(value);
        }
    }

    /// Shared handle for tasks.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_counters_with_prefix() {
        let metrics = Metrics::new();
        metrics.webhook("rejected_signature");

        let text = metrics.render();

        assert!(
            text.contains("leadgen_webhook_requests_total{outcome=\"rejected_signature\"} 1"),
            "{text}"
        );
    }
}
