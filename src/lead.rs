//! The normalised lead: what one Graph API lead object becomes before it is
//! encoded, whichever path brought it.
//!
//! Normalisation never drops an answer and never invents one: every
//! `field_data` entry keeps all its values in order (none, one or several),
//! and a lead that cannot be mapped is returned as a [`LeadError`] that the
//! caller sends to the dead-letter topic.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value};

/// Lead fields asked for in every read. A Graph server that gets no `fields`
/// parameter answers with the id alone, so the connector always sends them.
pub const LEAD_FIELDS: &str = "id,created_time,form_id,ad_id,ad_name,adset_id,adset_name,campaign_id,campaign_name,is_organic,platform,partner_name,field_data,custom_disclaimer_responses";

/// Top-level lead fields that map onto typed schema fields; any other field
/// goes to `extra_fields` as JSON text.
const MAPPED_FIELDS: &[&str] = &[
    "id",
    "created_time",
    "form_id",
    "ad_id",
    "ad_name",
    "adset_id",
    "adset_name",
    "campaign_id",
    "campaign_name",
    "is_organic",
    "platform",
    "partner_name",
    "field_data",
    "custom_disclaimer_responses",
];

/// How a lead reached the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadSource {
    Backfill,
    Webhook,
    Replay,
}

impl LeadSource {
    /// The Avro enum symbol and header value.
    pub fn as_str(self) -> &'static str {
        match self {
            LeadSource::Backfill => "BACKFILL",
            LeadSource::Webhook => "WEBHOOK",
            LeadSource::Replay => "REPLAY",
        }
    }
}

/// One answer to an optional disclaimer checkbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclaimerResponse {
    pub checkbox_key: String,
    pub is_checked: bool,
}

/// A lead ready to be encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub lead_id: String,
    pub form_id: String,
    pub page_id: String,
    /// Milliseconds since the Unix epoch.
    pub created_time_ms: i64,
    pub ad_id: Option<String>,
    pub ad_name: Option<String>,
    pub adset_id: Option<String>,
    pub adset_name: Option<String>,
    pub campaign_id: Option<String>,
    pub campaign_name: Option<String>,
    pub is_organic: Option<bool>,
    pub platform: Option<String>,
    pub partner_name: Option<String>,
    /// Question name to answers, in the order Meta sent the questions.
    pub field_data: Vec<(String, Vec<String>)>,
    pub custom_disclaimer_responses: Vec<DisclaimerResponse>,
    /// Fields Meta returned that the schema has no typed field for, as JSON.
    pub extra_fields: BTreeMap<String, String>,
    pub source: LeadSource,
}

impl Lead {
    /// Creation time in whole Unix seconds, the unit of Graph API filtering.
    pub fn created_time_secs(&self) -> i64 {
        self.created_time_ms.div_euclid(1000)
    }
}

/// Why a lead object cannot become a [`Lead`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadError {
    #[error("lead object is not a JSON object")]
    NotAnObject,
    #[error("lead has no `{0}` field")]
    MissingField(&'static str),
    #[error("lead id `{0}` is not a Graph id made of digits")]
    InvalidId(String),
    #[error("`created_time` value `{0}` is not a time in a known format")]
    InvalidTime(String),
    #[error("lead belongs to form `{actual}`, not to form `{expected}`")]
    WrongForm { expected: String, actual: String },
    #[error("`{field}` has an unexpected shape: {detail}")]
    InvalidShape { field: &'static str, detail: String },
}

impl LeadError {
    /// A short, stable reason for dead-letter headers and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LeadError::NotAnObject => "not_an_object",
            LeadError::MissingField(_) => "missing_field",
            LeadError::InvalidId(_) => "invalid_id",
            LeadError::InvalidTime(_) => "invalid_time",
            LeadError::WrongForm { .. } => "wrong_form",
            LeadError::InvalidShape { .. } => "schema_violation",
        }
    }

    /// Whether reading the lead again may give a different answer. A lead
    /// object without `field_data` is the answer to a read that lost its
    /// `fields` parameter, so it is worth one more read.
    pub fn is_worth_rereading(&self) -> bool {
        matches!(
            self,
            LeadError::MissingField("field_data") | LeadError::MissingField("created_time")
        )
    }
}

/// What the caller knows about a lead besides its JSON.
#[derive(Debug, Clone, Copy)]
pub struct LeadContext<'a> {
    pub form_id: &'a str,
    pub page_id: &'a str,
    pub source: LeadSource,
}

/// Maps one Graph API lead object onto a [`Lead`].
pub fn normalise(object: &Value, context: LeadContext<'_>) -> Result<Lead, LeadError> {
    let map = object.as_object().ok_or(LeadError::NotAnObject)?;

    let lead_id = required_string(map, "id")?;
    if !is_graph_id(&lead_id) {
        return Err(LeadError::InvalidId(lead_id));
    }

    let created = map
        .get("created_time")
        .ok_or(LeadError::MissingField("created_time"))?;
    let created_time_ms = parse_created_time(created)?;

    let form_id = match optional_string(map, "form_id")? {
        Some(form_id) if form_id != context.form_id => {
            return Err(LeadError::WrongForm {
                expected: context.form_id.to_owned(),
                actual: form_id,
            })
        }
        _ => context.form_id.to_owned(),
    };

    let field_data = parse_field_data(
        map.get("field_data")
            .ok_or(LeadError::MissingField("field_data"))?,
    )?;
    let custom_disclaimer_responses = match map.get("custom_disclaimer_responses") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => parse_disclaimers(value)?,
    };

    let extra_fields = map
        .iter()
        .filter(|(name, _)| !MAPPED_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.to_string()))
        .collect();

    Ok(Lead {
        lead_id,
        form_id,
        page_id: context.page_id.to_owned(),
        created_time_ms,
        ad_id: optional_string(map, "ad_id")?,
        ad_name: optional_string(map, "ad_name")?,
        adset_id: optional_string(map, "adset_id")?,
        adset_name: optional_string(map, "adset_name")?,
        campaign_id: optional_string(map, "campaign_id")?,
        campaign_name: optional_string(map, "campaign_name")?,
        is_organic: optional_bool(map, "is_organic")?,
        platform: optional_string(map, "platform")?,
        partner_name: optional_string(map, "partner_name")?,
        field_data,
        custom_disclaimer_responses,
        extra_fields,
        source: context.source,
    })
}

/// Maps a lead object given as JSON text when it has the usual shape:
/// exactly the fields of [`LEAD_FIELDS`] or fewer, text where Meta sends
/// text, and valid values. Returns `None` for any other object, which the
/// caller parses into a [`Value`] and passes to [`normalise`]; that path
/// decides, logs and dead-letters every unusual case. Reading the text
/// straight into a lead takes less than half the CPU of building a JSON
/// tree first and normalising that (`benches/lead_encode.rs`).
pub fn normalise_usual(json: &str, context: LeadContext<'_>) -> Option<Lead> {
    let wire: WireLead = serde_json::from_str(json).ok()?;
    if !is_graph_id(&wire.id) {
        return None;
    }
    let created_time_ms = parse_time_text(&wire.created_time).ok()?;
    if wire
        .form_id
        .as_deref()
        .is_some_and(|form_id| form_id != context.form_id)
    {
        return None;
    }
    let field_data = wire
        .field_data
        .into_iter()
        .map(|field| (field.name, field.values.unwrap_or_default()))
        .collect();
    let custom_disclaimer_responses = wire
        .custom_disclaimer_responses
        .unwrap_or_default()
        .into_iter()
        .map(|response| DisclaimerResponse {
            checkbox_key: response.checkbox_key,
            // Meta sends "1" for a ticked box and "" for an unticked one.
            is_checked: matches!(response.is_checked.as_deref(), Some("1" | "true")),
        })
        .collect();

    Some(Lead {
        lead_id: wire.id,
        form_id: context.form_id.to_owned(),
        page_id: context.page_id.to_owned(),
        created_time_ms,
        ad_id: wire.ad_id,
        ad_name: wire.ad_name,
        adset_id: wire.adset_id,
        adset_name: wire.adset_name,
        campaign_id: wire.campaign_id,
        campaign_name: wire.campaign_name,
        is_organic: wire.is_organic,
        platform: wire.platform,
        partner_name: wire.partner_name,
        field_data,
        custom_disclaimer_responses,
        extra_fields: BTreeMap::new(),
        source: context.source,
    })
}

/// The usual lead object. An unknown field fails the parse, so that such a
/// lead goes through [`normalise`] and keeps the field in `extra_fields`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLead {
    id: String,
    created_time: String,
    #[serde(default)]
    form_id: Option<String>,
    #[serde(default)]
    ad_id: Option<String>,
    #[serde(default)]
    ad_name: Option<String>,
    #[serde(default)]
    adset_id: Option<String>,
    #[serde(default)]
    adset_name: Option<String>,
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    campaign_name: Option<String>,
    #[serde(default)]
    is_organic: Option<bool>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    partner_name: Option<String>,
    field_data: Vec<WireField>,
    #[serde(default)]
    custom_disclaimer_responses: Option<Vec<WireDisclaimer>>,
}

/// Other keys of an entry are ignored, as [`normalise`] ignores them.
#[derive(serde::Deserialize)]
struct WireField {
    name: String,
    #[serde(default)]
    values: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct WireDisclaimer {
    checkbox_key: String,
    #[serde(default)]
    is_checked: Option<String>,
}

/// Parses a lead creation time into Unix milliseconds.
///
/// Lead bodies carry `2015-02-28T08:49:14+0000` (no colon in the offset);
/// `+00:00` and `Z` are accepted too. Webhooks carry Unix seconds, as a
/// number or a string of digits.
pub fn parse_created_time(value: &Value) -> Result<i64, LeadError> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .filter(|seconds| (0..100_000_000_000).contains(seconds))
            .map(|seconds| seconds * 1000)
            .ok_or_else(|| LeadError::InvalidTime(number.to_string())),
        Value::String(text) => parse_time_text(text),
        other => Err(LeadError::InvalidTime(other.to_string())),
    }
}

fn parse_time_text(text: &str) -> Result<i64, LeadError> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return parse_created_time(&Value::from(
            trimmed
                .parse::<i64>()
                .map_err(|_| LeadError::InvalidTime(text.to_owned()))?,
        ));
    }
    if let Some(millis) = parse_graph_time(trimmed.as_bytes()) {
        return Ok(millis);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(time.timestamp_millis());
    }
    if let Ok(time) = DateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%z") {
        return Ok(time.timestamp_millis());
    }
    if let Ok(time) = NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%SZ") {
        return Ok(time.and_utc().timestamp_millis());
    }
    Err(LeadError::InvalidTime(text.to_owned()))
}

/// Parses the Graph API's own time format, `2015-02-28T08:49:14+0000`,
/// without chrono's format strings. Returns `None` for any other text,
/// which the general parsers then try.
fn parse_graph_time(text: &[u8]) -> Option<i64> {
    let [y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1, s2, sign, oh1, oh2, om1, om2] =
        *text
    else {
        return None;
    };
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |total, &digit| {
            digit
                .is_ascii_digit()
                .then(|| total * 10 + u32::from(digit - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(&[y1, y2, y3, y4])?).ok()?,
        number(&[mo1, mo2])?,
        number(&[d1, d2])?,
    )?;
    let time = date.and_hms_opt(number(&[h1, h2])?, number(&[mi1, mi2])?, number(&[s1, s2])?)?;
    let (offset_hours, offset_rest) = (number(&[oh1, oh2])?, number(&[om1, om2])?);
    if offset_hours > 23 || offset_rest > 59 {
        return None;
    }
    let offset_minutes = i64::from(offset_hours * 60 + offset_rest);
    let offset_minutes = match sign {
        b'+' => offset_minutes,
        b'-' => -offset_minutes,
        _ => return None,
    };
    Some(time.and_utc().timestamp_millis() - offset_minutes * 60_000)
}

fn parse_field_data(value: &Value) -> Result<Vec<(String, Vec<String>)>, LeadError> {
    let shape = |detail: String| LeadError::InvalidShape {
        field: "field_data",
        detail,
    };
    let entries = value
        .as_array()
        .ok_or_else(|| shape("expected a list".to_owned()))?;

    let mut fields: Vec<(String, Vec<String>)> = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| shape("an entry has no string `name`".to_owned()))?;
        let values = match entry.get("values") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(answer_text)
                .collect::<Result<_, _>>()
                .map_err(shape)?,
            Some(other) => {
                return Err(shape(format!(
                    "`values` of `{name}` is {other}, expected a list"
                )))
            }
        };
        // A repeated question name keeps every answer rather than the last one.
        match fields.iter_mut().find(|(existing, _)| existing == name) {
            Some((_, existing)) => existing.extend(values),
            None => fields.push((name.to_owned(), values)),
        }
    }
    Ok(fields)
}

fn answer_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        other => Err(format!("an answer is {other}, expected text")),
    }
}

fn parse_disclaimers(value: &Value) -> Result<Vec<DisclaimerResponse>, LeadError> {
    let shape = |detail: &str| LeadError::InvalidShape {
        field: "custom_disclaimer_responses",
        detail: detail.to_owned(),
    };
    let entries = value.as_array().ok_or_else(|| shape("expected a list"))?;

    entries
        .iter()
        .map(|entry| {
            let checkbox_key = entry
                .get("checkbox_key")
                .and_then(Value::as_str)
                .ok_or_else(|| shape("an entry has no string `checkbox_key`"))?;
            // Meta sends "1" for a ticked box and "" for an unticked one.
            let is_checked = match entry.get("is_checked") {
                Some(Value::String(text)) => matches!(text.as_str(), "1" | "true"),
                Some(Value::Bool(flag)) => *flag,
                Some(Value::Number(number)) => number.as_i64() == Some(1),
                None | Some(Value::Null) => false,
                Some(_) => return Err(shape("`is_checked` is not text, a number or a boolean")),
            };
            Ok(DisclaimerResponse {
                checkbox_key: checkbox_key.to_owned(),
                is_checked,
            })
        })
        .collect()
}

fn required_string(map: &Map<String, Value>, field: &'static str) -> Result<String, LeadError> {
    optional_string(map, field)?.ok_or(LeadError::MissingField(field))
}

/// Reads an optional text field; ids sent as JSON numbers become text.
fn optional_string(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, LeadError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(other) => Err(LeadError::InvalidShape {
            field,
            detail: format!("expected text, found {other}"),
        }),
    }
}

fn optional_bool(map: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, LeadError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(Value::String(text)) if text == "1" || text == "true" => Ok(Some(true)),
        Some(Value::String(text)) if text == "0" || text == "false" || text.is_empty() => {
            Ok(Some(false))
        }
        Some(Value::Number(number)) => Ok(Some(number.as_i64() == Some(1))),
        Some(other) => Err(LeadError::InvalidShape {
            field,
            detail: format!("expected a boolean, found {other}"),
        }),
    }
}

/// Whether a text is a Graph object id: digits only, up to 32 of them.
pub fn is_graph_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= 32 && value.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn graph_time_parser_agrees_with_chrono() {
        let texts = [
            "2015-02-28T08:49:14+0000",
            "2024-02-29T23:59:59+0000",
            "2024-12-31T00:00:00-0800",
            "2025-06-01T12:30:00+0530",
            "1970-01-01T00:00:00+0000",
            "2023-02-29T10:00:00+0000",
            "2025-13-01T10:00:00+0000",
            "2025-01-01T24:00:00+0000",
            "2025-01-01T10:00:00+2400",
            "2025-01-01T10:00:00+0060",
            "2025-01-01T10:00:00*0000",
            "2025-0a-01T10:00:00+0000",
            "2025-01-01 10:00:00+0000",
        ];
        for text in texts {
            let chrono = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z")
                .ok()
                .map(|time| time.timestamp_millis());
            let fast = parse_graph_time(text.as_bytes());
            assert_eq!(fast, chrono, "{text}");
        }
        assert_eq!(
            parse_graph_time(b"2015-02-28T08:49:14+0000"),
            Some(1_425_113_354_000)
        );
    }

    fn context() -> LeadContext<'static> {
        LeadContext {
            form_id: "200000000000001",
            page_id: "100000000000001",
            source: LeadSource::Backfill,
        }
    }

    #[test]
    fn meta_time_without_colon_parses() {
        let millis = parse_created_time(&json!("2015-02-28T08:49:14+0000")).unwrap();

        assert_eq!(millis, 1_425_113_354_000);
    }

    #[test]
    fn every_time_form_is_same_instant() {
        for value in [
            json!("2015-02-28T08:49:14+0000"),
            json!("2015-02-28T08:49:14+00:00"),
            json!("2015-02-28T08:49:14Z"),
            json!("2015-02-28T09:49:14+0100"),
            json!(1_425_113_354),
            json!("1425113354"),
        ] {
            assert_eq!(parse_created_time(&value), Ok(1_425_113_354_000), "{value}");
        }
    }

    #[test]
    fn unparseable_time_is_an_error() {
        for value in [
            json!("yesterday"),
            json!("2015-02-30T08:49:14+0000"),
            json!(true),
            json!(1_425_113_354_000_i64),
        ] {
            assert!(
                matches!(parse_created_time(&value), Err(LeadError::InvalidTime(_))),
                "{value}"
            );
        }
    }

    #[test]
    fn missing_field_data_is_an_error_not_an_empty_lead() {
        let object = json!({"id": "900000000000001"});

        let error = normalise(&object, context()).unwrap_err();

        assert_eq!(error, LeadError::MissingField("created_time"));
        let object = json!({"id": "900000000000001", "created_time": "2024-05-01T10:00:00+0000"});
        assert_eq!(
            normalise(&object, context()).unwrap_err(),
            LeadError::MissingField("field_data")
        );
    }

    #[test]
    fn repeated_question_keeps_all_answers() {
        let object = json!({
            "id": "1", "created_time": "2024-05-01T10:00:00+0000",
            "field_data": [{"name": "q", "values": ["a"]}, {"name": "q", "values": ["b"]}]
        });

        let lead = normalise(&object, context()).unwrap();

        assert_eq!(
            lead.field_data,
            vec![("q".to_owned(), vec!["a".to_owned(), "b".to_owned()])]
        );
    }

    #[test]
    fn unknown_fields_are_kept_as_json() {
        let object = json!({
            "id": "1", "created_time": "2024-05-01T10:00:00+0000", "field_data": [],
            "vehicle": {"make": "Honda"}
        });

        let lead = normalise(&object, context()).unwrap();

        assert_eq!(
            lead.extra_fields.get("vehicle").map(String::as_str),
            Some(r#"{"make":"Honda"}"#)
        );
    }

    #[test]
    fn lead_of_other_form_is_rejected() {
        let object = json!({"id": "1", "created_time": "2024-05-01T10:00:00+0000", "form_id": "2", "field_data": []});

        let error = normalise(&object, context()).unwrap_err();

        assert!(matches!(error, LeadError::WrongForm { .. }));
    }

    #[test]
    fn disclaimer_text_flags_become_booleans() {
        let object = json!({
            "id": "1", "created_time": "2024-05-01T10:00:00+0000", "field_data": [],
            "custom_disclaimer_responses": [
                {"checkbox_key": "optional_1", "is_checked": "1"},
                {"checkbox_key": "optional_2", "is_checked": ""}
            ]
        });

        let lead = normalise(&object, context()).unwrap();

        assert!(lead.custom_disclaimer_responses[0].is_checked);
        assert!(!lead.custom_disclaimer_responses[1].is_checked);
    }

    #[test]
    fn non_digit_id_is_invalid() {
        let object =
            json!({"id": "12ab", "created_time": "2024-05-01T10:00:00+0000", "field_data": []});

        assert_eq!(
            normalise(&object, context()).unwrap_err(),
            LeadError::InvalidId("12ab".to_owned())
        );
    }
}
