//! Fault injection: rules that make matching Graph API calls fail, slow
//! down, or return damaged leads, for a set number of calls or until cleared.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kind of Graph API call, used to count calls and to match faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// `GET /{form-id}/leads`.
    FormLeads,
    /// `GET /{lead-id}`; also any `GET /{id}` whose id is not a Page or form.
    Lead,
    /// `GET /?ids=...`.
    Ids,
    /// `GET /{page-id}/leadgen_forms`.
    LeadgenForms,
    /// `GET /{page-id}`, `GET /{form-id}` and `GET /me`.
    Node,
    /// Unknown paths and methods other than GET.
    Other,
    /// Matches every kind in a [`Fault`]; never the kind of a call.
    Any,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FormLeads => "form_leads",
            Self::Lead => "lead",
            Self::Ids => "ids",
            Self::LeadgenForms => "leadgen_forms",
            Self::Node => "node",
            Self::Other => "other",
            Self::Any => "any",
        }
    }
}

/// A fault rule.
///
/// JSON form, as accepted by `POST /_sim/faults`:
/// `{"endpoint":"form_leads","object_id":"200000001000001","times":2,
///   "action":{"kind":"graph_error","code":2,"message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub endpoint: EndpointKind,
    /// Object the call must name: the form of `form_leads`, the lead of
    /// `lead`, the Page of `leadgen_forms`, any of the ids of `ids`. `None`
    /// matches every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Number of matching calls the fault applies to; `None` applies it to
    /// every matching call until faults are cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    pub action: FaultAction,
}

impl Fault {
    /// Creates a fault for every matching call until cleared.
    pub fn new(endpoint: EndpointKind, action: FaultAction) -> Self {
        Self {
            endpoint,
            object_id: None,
            times: None,
            action,
        }
    }

    /// Limits the fault to the next `times` matching calls.
    pub fn times(mut self, times: u64) -> Self {
        self.times = Some(times);
        self
    }

    /// Limits the fault to calls that name `object_id`.
    pub fn for_object(mut self, object_id: impl Into<String>) -> Self {
        self.object_id = Some(object_id.into());
        self
    }

    fn matches(&self, kind: EndpointKind, object_ids: &[&str]) -> bool {
        let kind_matches = self.endpoint == EndpointKind::Any || self.endpoint == kind;
        let object_matches = match &self.object_id {
            None => true,
            Some(wanted) => object_ids.contains(&wanted.as_str()),
        };
        kind_matches && object_matches
    }
}

/// Change a fault makes to the response of a matching call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// A Graph API error body with the given status and fields.
    GraphError {
        #[serde(default = "default_error_status")]
        status: u16,
        code: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_subcode: Option<i64>,
        #[serde(default = "default_error_type")]
        error_type: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_transient: Option<bool>,
    },
    /// A 5xx response, with a Graph error body (code 2, transient) or, when
    /// `html` is set, an HTML error page as a load balancer would send.
    ServerError {
        #[serde(default = "default_server_status")]
        status: u16,
        #[serde(default)]
        html: bool,
    },
    /// The normal response, sent after `millis` milliseconds.
    Delay { millis: u64 },
    /// The normal response with `field` removed from every lead in it, for
    /// example `field_data` or `created_time`.
    OmitField { field: String },
    /// The normal response with each lead's `created_time` replaced by
    /// `value`, which should not parse as a Graph timestamp. For one bad
    /// lead among good ones in a page, store it with `SimHandle::insert_lead`.
    InvalidCreatedTime {
        #[serde(default = "default_invalid_created_time")]
        value: String,
    },
}

fn default_error_status() -> u16 {
    400
}

fn default_error_type() -> String {
    "OAuthException".to_owned()
}

fn default_server_status() -> u16 {
    500
}

fn default_invalid_created_time() -> String {
    "28/02/2015 08:49".to_owned()
}

impl FaultAction {
    /// Creates an HTTP 400 response with an `OAuthException` Graph error.
    pub fn graph_error(code: i64, message: impl Into<String>) -> Self {
        Self::GraphError {
            status: 400,
            code,
            error_subcode: None,
            error_type: default_error_type(),
            message: message.into(),
            is_transient: None,
        }
    }

    /// Creates Meta's transient error, code 2 "An unexpected error has occurred".
    pub fn transient_error() -> Self {
        Self::GraphError {
            status: 400,
            code: 2,
            error_subcode: None,
            error_type: default_error_type(),
            message: "An unexpected error has occurred. Please retry your request later."
                .to_owned(),
            is_transient: Some(true),
        }
    }

    /// Creates a 5xx response with a Graph error body.
    pub fn server_error(status: u16) -> Self {
        Self::ServerError {
            status,
            html: false,
        }
    }

    /// Creates a 5xx response with an HTML body.
    pub fn html_server_error(status: u16) -> Self {
        Self::ServerError { status, html: true }
    }

    pub fn delay(delay: Duration) -> Self {
        Self::Delay {
            millis: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn omit_field(field: impl Into<String>) -> Self {
        Self::OmitField {
            field: field.into(),
        }
    }

    pub fn invalid_created_time() -> Self {
        Self::InvalidCreatedTime {
            value: default_invalid_created_time(),
        }
    }
}

#[derive(Debug)]
struct ActiveFault {
    fault: Fault,
    /// Calls left; `None` is unlimited.
    remaining: Option<u64>,
}

/// Active fault rules, in the order they were injected.
#[derive(Debug, Default)]
pub(crate) struct FaultSet {
    active: Vec<ActiveFault>,
}

impl FaultSet {
    pub fn inject(&mut self, fault: Fault) {
        if fault.times == Some(0) {
            return;
        }
        self.active.push(ActiveFault {
            remaining: fault.times,
            fault,
        });
    }

    pub fn clear(&mut self) {
        self.active.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Returns the action of the first rule matching the call and uses up
    /// one of its calls. At most one rule applies to a call.
    pub fn take(&mut self, kind: EndpointKind, object_ids: &[&str]) -> Option<FaultAction> {
        let position = self
            .active
            .iter()
            .position(|active| active.fault.matches(kind, object_ids))?;
        let active = &mut self.active[position];
        let action = active.fault.action.clone();
        if let Some(remaining) = active.remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                self.active.remove(position);
            }
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_fires_exactly_times() {
        let mut faults = FaultSet::default();
        faults.inject(Fault::new(EndpointKind::FormLeads, FaultAction::transient_error()).times(2));
        assert!(faults.take(EndpointKind::FormLeads, &["f"]).is_some());
        assert!(faults.take(EndpointKind::FormLeads, &["f"]).is_some());
        assert!(faults.take(EndpointKind::FormLeads, &["f"]).is_none());
        assert_eq!(faults.len(), 0);
    }

    #[test]
    fn unlimited_fault_fires_until_cleared() {
        let mut faults = FaultSet::default();
        faults.inject(Fault::new(
            EndpointKind::Any,
            FaultAction::server_error(503),
        ));
        for _ in 0..10 {
            assert!(faults.take(EndpointKind::Lead, &["x"]).is_some());
        }
        faults.clear();
        assert!(faults.take(EndpointKind::Lead, &["x"]).is_none());
    }

    #[test]
    fn fault_matches_kind_and_object() {
        let mut faults = FaultSet::default();
        faults.inject(
            Fault::new(EndpointKind::Lead, FaultAction::transient_error())
                .for_object("42")
                .times(1),
        );
        assert!(faults.take(EndpointKind::FormLeads, &["42"]).is_none());
        assert!(faults.take(EndpointKind::Lead, &["43"]).is_none());
        assert!(faults.take(EndpointKind::Ids, &["42"]).is_none());
        assert!(faults.take(EndpointKind::Lead, &["42"]).is_some());
    }

    #[test]
    fn first_injected_fault_wins() {
        let mut faults = FaultSet::default();
        faults.inject(Fault::new(EndpointKind::Any, FaultAction::server_error(500)).times(1));
        faults.inject(Fault::new(EndpointKind::Any, FaultAction::server_error(503)).times(1));
        assert_eq!(
            faults.take(EndpointKind::Lead, &[]),
            Some(FaultAction::server_error(500))
        );
        assert_eq!(
            faults.take(EndpointKind::Lead, &[]),
            Some(FaultAction::server_error(503))
        );
    }

    #[test]
    fn zero_times_is_ignored() {
        let mut faults = FaultSet::default();
        faults.inject(Fault::new(EndpointKind::Any, FaultAction::transient_error()).times(0));
        assert!(faults.take(EndpointKind::Lead, &[]).is_none());
    }

    #[test]
    fn fault_json_uses_defaults() {
        let fault: Fault = serde_json::from_str(
            r#"{"endpoint":"form_leads","times":3,
                "action":{"kind":"graph_error","code":17,"message":"(#17) User request limit reached"}}"#,
        )
        .expect("valid fault JSON");
        assert_eq!(fault.times, Some(3));
        assert_eq!(
            fault.action,
            FaultAction::GraphError {
                status: 400,
                code: 17,
                error_subcode: None,
                error_type: "OAuthException".to_owned(),
                message: "(#17) User request limit reached".to_owned(),
                is_transient: None,
            }
        );

        let omit: Fault = serde_json::from_str(
            r#"{"endpoint":"any","action":{"kind":"omit_field","field":"field_data"}}"#,
        )
        .expect("valid fault JSON");
        assert_eq!(omit.action, FaultAction::omit_field("field_data"));
    }
}
