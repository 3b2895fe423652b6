//! Body and signature of a `leadgen` webhook POST, in the form Meta sends:
//!
//! ```json
//! {"object":"page","entry":[{"id":"<PAGE_ID>","time":1700000000,"changes":[
//!   {"field":"leadgen","value":{"leadgen_id":"<LEAD_ID>","page_id":"<PAGE_ID>",
//!    "form_id":"<FORM_ID>","adgroup_id":"<AD_ID>","ad_id":"<AD_ID>",
//!    "created_time":1700000000}}]}]}
//! ```
//!
//! Ids are strings and times are Unix seconds. Organic leads have neither
//! `ad_id` nor `adgroup_id`.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The `value` of one `leadgen` change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LeadgenChange {
    pub leadgen_id: String,
    pub page_id: String,
    pub form_id: String,
    /// Meta sends the ad id under both names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adgroup_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ad_id: Option<String>,
    pub created_time: i64,
}

impl LeadgenChange {
    pub fn new(
        leadgen_id: String,
        page_id: String,
        form_id: String,
        ad_id: Option<String>,
        created_time: i64,
    ) -> Self {
        Self {
            leadgen_id,
            page_id,
            form_id,
            adgroup_id: ad_id.clone(),
            ad_id,
            created_time,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    object: &'static str,
    entry: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    time: i64,
    changes: Vec<Change<'a>>,
}

#[derive(Serialize)]
struct Change<'a> {
    field: &'static str,
    value: &'a LeadgenChange,
}

/// Serializes changes into one webhook body with an entry per Page, in the
/// order each Page first appears, stamped with `time` (Unix seconds).
pub(crate) fn body(changes: &[LeadgenChange], time: i64) -> Vec<u8> {
    let mut entries: Vec<Entry<'_>> = Vec::new();
    for change in changes {
        let change_json = Change {
            field: "leadgen",
            value: change,
        };
        match entries.iter_mut().find(|entry| entry.id == change.page_id) {
            Some(entry) => entry.changes.push(change_json),
            None => entries.push(Entry {
                id: &change.page_id,
                time,
                changes: vec![change_json],
            }),
        }
    }
    let body = Body {
        object: "page",
        entry: entries,
    };
    serde_json::to_vec(&body).expect("webhook bodies contain only strings and integers")
}

/// Returns the `X-Hub-Signature-256` value: `sha256=` and the lowercase hex
/// HMAC-SHA256 of the body bytes keyed with the app secret.
pub(crate) fn signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn change(lead: &str, page: &str, ad: Option<&str>) -> LeadgenChange {
        LeadgenChange::new(
            lead.into(),
            page.into(),
            "200".into(),
            ad.map(str::to_owned),
            1_700_000_000,
        )
    }

    #[test]
    fn body_groups_changes_by_page() {
        let changes = [
            change("1", "p1", Some("a1")),
            change("2", "p2", None),
            change("3", "p1", None),
        ];
        let body: Value = serde_json::from_slice(&body(&changes, 1_700_000_005)).expect("JSON");
        assert_eq!(
            body,
            json!({"object": "page", "entry": [
                {"id": "p1", "time": 1_700_000_005, "changes": [
                    {"field": "leadgen", "value": {"leadgen_id": "1", "page_id": "p1",
                        "form_id": "200", "adgroup_id": "a1", "ad_id": "a1",
                        "created_time": 1_700_000_000}},
                    {"field": "leadgen", "value": {"leadgen_id": "3", "page_id": "p1",
                        "form_id": "200", "created_time": 1_700_000_000}},
                ]},
                {"id": "p2", "time": 1_700_000_005, "changes": [
                    {"field": "leadgen", "value": {"leadgen_id": "2", "page_id": "p2",
                        "form_id": "200", "created_time": 1_700_000_000}},
                ]},
            ]})
        );
    }

    #[test]
    fn signature_matches_known_digest() {
        // HMAC-SHA256 test case 2 of RFC 4231.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
