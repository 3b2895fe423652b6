//! Call counters: Graph API calls by endpoint kind and by Page, split into
//! successes and errors, plus errors by Graph code and by HTTP status.
//!
//! Admin calls under `/_sim/` are not counted. The webhook sender's
//! counters are kept by the sender and copied in under `webhooks`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::faults::EndpointKind;
use super::webhook::WebhookStats;

/// Calls of one group, split by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    pub calls: u64,
    pub successes: u64,
    pub errors: u64,
}

impl CallCounts {
    fn record(&mut self, success: bool) {
        self.calls += 1;
        if success {
            self.successes += 1;
        } else {
            self.errors += 1;
        }
    }
}

/// Snapshot of the simulator's counters, as returned by `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub total: CallCounts,
    pub by_endpoint: BTreeMap<EndpointKind, CallCounts>,
    /// Keyed by the Page whose access token the call carried; calls without
    /// a known token are only in `total` and `by_endpoint`.
    pub by_page: BTreeMap<String, CallCounts>,
    /// Graph error codes of error responses, such as 100, 190 or 80005.
    pub errors_by_code: BTreeMap<i64, u64>,
    /// HTTP status of error responses.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Calls changed by an injected fault.
    pub faults_applied: u64,
    /// Leads created after start-up, by library call, admin call or rate.
    pub leads_created: u64,
    /// Webhook sender counters.
    #[serde(default)]
    pub webhooks: WebhookStats,
}

impl SimStats {
    /// Returns the counts of one endpoint kind, zero when it had no calls.
    pub fn endpoint(&self, kind: EndpointKind) -> CallCounts {
        self.by_endpoint.get(&kind).copied().unwrap_or_default()
    }

    /// Returns the counts of one Page, zero when it had no calls.
    pub fn page(&self, page_id: &str) -> CallCounts {
        self.by_page.get(page_id).copied().unwrap_or_default()
    }

    /// Counts one Graph API call. `error` is the Graph code, when the body
    /// had one, and the HTTP status of an error response.
    pub(crate) fn record_call(
        &mut self,
        kind: EndpointKind,
        page_id: Option<&str>,
        error: Option<(Option<i64>, u16)>,
        fault_applied: bool,
    ) {
        let success = error.is_none();
        self.total.record(success);
        self.by_endpoint.entry(kind).or_default().record(success);
        if let Some(page_id) = page_id {
            self.by_page
                .entry(page_id.to_owned())
                .or_default()
                .record(success);
        }
        if let Some((code, status)) = error {
            if let Some(code) = code {
                *self.errors_by_code.entry(code).or_default() += 1;
            }
            *self.errors_by_status.entry(status).or_default() += 1;
        }
        if fault_applied {
            self.faults_applied += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_splits_by_kind_page_and_code() {
        let mut stats = SimStats::default();
        stats.record_call(EndpointKind::FormLeads, Some("p1"), None, false);
        stats.record_call(
            EndpointKind::FormLeads,
            Some("p1"),
            Some((Some(190), 400)),
            false,
        );
        stats.record_call(EndpointKind::Lead, None, Some((None, 503)), true);

        assert_eq!(stats.total.calls, 3);
        assert_eq!(stats.total.errors, 2);
        assert_eq!(
            stats.endpoint(EndpointKind::FormLeads),
            CallCounts {
                calls: 2,
                successes: 1,
                errors: 1
            }
        );
        assert_eq!(stats.page("p1").calls, 2);
        assert_eq!(stats.page("p2").calls, 0);
        assert_eq!(stats.errors_by_code.get(&190), Some(&1));
        assert_eq!(stats.errors_by_status.get(&503), Some(&1));
        assert_eq!(stats.faults_applied, 1);
    }

    #[test]
    fn stats_round_trip_through_json() {
        let mut stats = SimStats::default();
        stats.record_call(EndpointKind::Ids, Some("p1"), Some((Some(100), 400)), false);
        let text = serde_json::to_string(&stats).expect("stats serialize");
        assert!(text.contains(r#""ids":"#), "{text}");
        let parsed: SimStats = serde_json::from_str(&text).expect("stats deserialize");
        assert_eq!(parsed, stats);
    }
}
