//! Graph API errors: the `{"error":{...}}` body, its HTTP status, and one
//! constructor for each error Meta returns that the simulator reproduces.
//!
//! Messages follow the wording Meta's Graph API returns, as seen in public
//! client bug reports. Where the exact wording is not known, the constructor
//! has a NOTE.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

pub(crate) const TYPE_OAUTH: &str = "OAuthException";
pub(crate) const TYPE_GRAPH_METHOD: &str = "GraphMethodException";

/// A Graph API error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphError {
    pub status: u16,
    pub message: String,
    pub error_type: String,
    pub code: i64,
    pub subcode: Option<i64>,
    pub is_transient: Option<bool>,
}

impl GraphError {
    pub fn new(code: i64, error_type: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            error_type: error_type.to_owned(),
            code,
            subcode: None,
            is_transient: None,
        }
    }

    fn with_subcode(mut self, subcode: i64) -> Self {
        self.subcode = Some(subcode);
        self
    }

    fn transient(mut self) -> Self {
        self.is_transient = Some(true);
        self
    }

    /// Unknown object, or an object the token's Page does not own (100/33).
    pub fn object_not_found(method: &str, id: &str) -> Self {
        Self::new(
            100,
            TYPE_GRAPH_METHOD,
            format!(
                "Unsupported {} request. Object with ID '{id}' does not exist, cannot be loaded \
                 due to missing permissions, or does not support this operation. Please read the \
                 Graph API documentation at https://developers.facebook.com/docs/graph-api",
                method.to_ascii_lowercase()
            ),
        )
        .with_subcode(33)
    }

    pub fn missing_token() -> Self {
        Self::new(
            104,
            TYPE_OAUTH,
            "An access token is required to request this resource.",
        )
    }

    pub fn invalid_token() -> Self {
        Self::new(
            190,
            TYPE_OAUTH,
            "Invalid OAuth access token - Cannot parse access token",
        )
    }

    pub fn expired_token(expired_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        const MESSAGE_TIME: &str = "%A, %d-%b-%y %H:%M:%S UTC";
        Self::new(
            190,
            TYPE_OAUTH,
            format!(
                "Error validating access token: Session has expired on {}. The current time is {}.",
                expired_at.format(MESSAGE_TIME),
                now.format(MESSAGE_TIME)
            ),
        )
        .with_subcode(463)
    }

    /// NOTE: Meta's exact wording for a revoked `leads_retrieval` permission
    /// is not confirmed; the code and type match Meta's permission errors.
    pub fn permission_revoked() -> Self {
        Self::new(
            200,
            TYPE_OAUTH,
            "(#200) Requires leads_retrieval permission to manage the object",
        )
    }

    pub fn missing_appsecret_proof() -> Self {
        Self::new(
            100,
            TYPE_GRAPH_METHOD,
            "API calls from the server require an appsecret_proof argument",
        )
    }

    pub fn invalid_appsecret_proof() -> Self {
        Self::new(
            100,
            TYPE_GRAPH_METHOD,
            "Invalid appsecret_proof provided in the API argument",
        )
    }

    /// Invalid parameter (code 100); `detail` follows the `(#100) ` prefix.
    pub fn invalid_parameter(detail: impl std::fmt::Display) -> Self {
        Self::new(100, TYPE_OAUTH, format!("(#100) {detail}"))
    }

    pub fn nonexisting_field(field: &str, node_type: &str) -> Self {
        Self::invalid_parameter(format!(
            "Tried accessing nonexisting field ({field}) on node type ({node_type})"
        ))
    }

    pub fn aliases_not_found(missing: &[String]) -> Self {
        Self::invalid_parameter(format!(
            "Some of the aliases you requested do not exist: {}",
            missing.join(",")
        ))
    }

    /// NOTE: the wording is an estimate of Meta's message for more than 50 ids.
    pub fn too_many_ids(count: usize, max: usize) -> Self {
        Self::invalid_parameter(format!("Too many IDs. Maximum: {max}. Provided: {count}."))
    }

    pub fn unknown_path(components: &str) -> Self {
        Self::new(
            2500,
            TYPE_OAUTH,
            format!("Unknown path components: {components}"),
        )
    }

    /// Business use case limit for lead retrieval (code 80005).
    pub fn page_rate_limited() -> Self {
        Self::new(
            80005,
            TYPE_OAUTH,
            "There have been too many leadgen api calls to this Page. Wait a bit and try again. \
             For more info, please refer to \
             https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
        )
        .transient()
    }

    /// Builds the JSON body, `{"error":{...}}`.
    pub fn to_body(&self, fbtrace_id: &str) -> Value {
        let mut error = Map::new();
        error.insert("message".into(), json!(self.message));
        error.insert("type".into(), json!(self.error_type));
        error.insert("code".into(), json!(self.code));
        if let Some(subcode) = self.subcode {
            error.insert("error_subcode".into(), json!(subcode));
        }
        if let Some(is_transient) = self.is_transient {
            error.insert("is_transient".into(), json!(is_transient));
        }
        error.insert("fbtrace_id".into(), json!(fbtrace_id));
        json!({ "error": Value::Object(error) })
    }
}

/// Makes 11-character trace ids that look like Meta's `fbtrace_id` and repeat
/// for the same seed and request order.
pub(crate) fn trace_id(seed: u64, sequence: u64) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = splitmix64(seed ^ splitmix64(sequence));
    let mut id = String::with_capacity(11);
    for _ in 0..11 {
        id.push(ALPHABET[(state % 62) as usize] as char);
        state /= 62;
        if state == 0 {
            state = splitmix64(state ^ sequence);
        }
    }
    id
}

fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_omits_unset_optional_fields() {
        let body = GraphError::invalid_token().to_body("Abc");
        assert_eq!(body["error"]["code"], 190);
        assert_eq!(body["error"]["type"], "OAuthException");
        assert_eq!(body["error"]["fbtrace_id"], "Abc");
        assert!(body["error"].get("error_subcode").is_none());
        assert!(body["error"].get("is_transient").is_none());
    }

    #[test]
    fn body_carries_subcode_and_transient_flag() {
        let not_found = GraphError::object_not_found("GET", "42").to_body("x");
        assert_eq!(not_found["error"]["error_subcode"], 33);
        assert!(not_found["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Unsupported get request. Object with ID '42'")));

        let limited = GraphError::page_rate_limited().to_body("x");
        assert_eq!(limited["error"]["code"], 80005);
        assert_eq!(limited["error"]["is_transient"], true);
    }

    #[test]
    fn trace_ids_repeat_per_seed_and_sequence() {
        assert_eq!(trace_id(7, 1), trace_id(7, 1));
        assert_ne!(trace_id(7, 1), trace_id(7, 2));
        assert_ne!(trace_id(7, 1), trace_id(8, 1));
        assert_eq!(trace_id(7, 1).len(), 11);
    }
}
