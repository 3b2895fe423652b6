//! Graph API query parameters: `fields` selection, `filtering` on lead
//! creation time, and `limit`.

use serde_json::{Map, Value};

use super::error::GraphError;
use super::paging::TimeRange;

/// Page size when the request has no `limit`.
pub(crate) const DEFAULT_LIMIT: usize = 25;
/// Largest page Meta returns; larger `limit` values are clamped to it.
pub(crate) const MAX_LIMIT: usize = 100;

/// Node type names Meta uses in "nonexisting field" errors.
pub(crate) const LEAD_NODE_TYPE: &str = "LeadgenLead";
pub(crate) const FORM_NODE_TYPE: &str = "LeadgenForm";
pub(crate) const PAGE_NODE_TYPE: &str = "Page";

/// Fields a lead can be asked for. A lead lacking one of them, such as the
/// ad fields of an organic lead, omits it from the response.
pub(crate) const LEAD_FIELDS: &[&str] = &[
    "id",
    "ad_id",
    "ad_name",
    "adset_id",
    "adset_name",
    "campaign_id",
    "campaign_name",
    "created_time",
    "custom_disclaimer_responses",
    "field_data",
    "form_id",
    "home_listing",
    "is_organic",
    "partner_name",
    "platform",
    "post",
    "post_submission_check_result",
    "retailer_item_id",
    "vehicle",
];

pub(crate) const FORM_FIELDS: &[&str] = &[
    "id",
    "name",
    "status",
    "leads_count",
    "created_time",
    "locale",
    "page",
];

pub(crate) const PAGE_FIELDS: &[&str] = &["id", "name"];

/// Parses the `fields` parameter into top-level field names.
///
/// Field expansion syntax is accepted but not applied: `field_data{name}` and
/// `field_data.limit(2)` both select the whole `field_data`.
pub(crate) fn parse_fields(raw: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for character in raw.chars() {
        match character {
            '{' | '(' => {
                depth += 1;
                current.push(character);
            }
            '}' | ')' => {
                depth = depth.saturating_sub(1);
                current.push(character);
            }
            ',' if depth == 0 => {
                fields.push(std::mem::take(&mut current));
            }
            _ => current.push(character),
        }
    }
    fields.push(current);

    let mut names = Vec::new();
    for field in fields {
        let name = field
            .split(['{', '.', '('])
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Returns `id` plus the requested fields that `object` has.
///
/// Rejects a name outside `allowed` the way Meta does, with code 100.
pub(crate) fn select_fields(
    object: &Map<String, Value>,
    requested: &[String],
    allowed: &[&str],
    node_type: &str,
) -> Result<Map<String, Value>, GraphError> {
    if let Some(unknown) = requested
        .iter()
        .find(|name| !allowed.contains(&name.as_str()))
    {
        return Err(GraphError::nonexisting_field(unknown, node_type));
    }

    let mut selected = Map::new();
    if let Some(id) = object.get("id") {
        selected.insert("id".into(), id.clone());
    }
    for name in requested {
        if let Some(value) = object.get(name) {
            selected.insert(name.clone(), value.clone());
        }
    }
    Ok(selected)
}

/// Parses the `filtering` parameter, a JSON array of conditions on
/// `time_created` that all have to hold.
pub(crate) fn parse_filtering(raw: &str) -> Result<TimeRange, GraphError> {
    let parsed: Value = serde_json::from_str(raw).map_err(|error| {
        GraphError::invalid_parameter(format!("param filtering must be a JSON array: {error}"))
    })?;
    let Value::Array(conditions) = parsed else {
        return Err(GraphError::invalid_parameter(
            "param filtering must be a JSON array",
        ));
    };

    let mut range = TimeRange::default();
    for (position, condition) in conditions.iter().enumerate() {
        let field = condition.get("field").and_then(Value::as_str);
        let operator = condition.get("operator").and_then(Value::as_str);
        let value = condition.get("value");

        match field {
            Some("time_created") => {}
            Some(other) => {
                return Err(GraphError::invalid_parameter(format!(
                    "Filtering field {other} is invalid"
                )))
            }
            None => {
                return Err(GraphError::invalid_parameter(format!(
                    "param filtering[{position}][field] is required"
                )))
            }
        }

        let seconds = value.and_then(unix_seconds).ok_or_else(|| {
            GraphError::invalid_parameter(format!(
                "param filtering[{position}][value] must be a Unix time in seconds"
            ))
        })?;

        match operator {
            Some("GREATER_THAN") => range.require_at_least(seconds.saturating_add(1)),
            Some("GREATER_THAN_OR_EQUAL") => range.require_at_least(seconds),
            Some("LESS_THAN") => range.require_below(seconds),
            Some(other) => {
                return Err(GraphError::invalid_parameter(format!(
                    "Filtering operator {other} is not supported for field time_created"
                )))
            }
            None => {
                return Err(GraphError::invalid_parameter(format!(
                    "param filtering[{position}][operator] is required"
                )))
            }
        }
    }
    Ok(range)
}

/// Reads an integer or a string of digits as Unix seconds.
fn unix_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Parses `limit`: absent or 0 gives [`DEFAULT_LIMIT`], larger values are
/// clamped to [`MAX_LIMIT`].
///
/// NOTE: Meta's handling of `limit=0` and of non-numeric values is not
/// confirmed; here 0 means the default and other non-integers are rejected.
pub(crate) fn parse_limit(raw: Option<&str>) -> Result<usize, GraphError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    let limit: u64 = raw.trim().parse().map_err(|_| {
        GraphError::invalid_parameter(format!(
            "param limit must be a non-negative integer, got '{raw}'"
        ))
    })?;
    if limit == 0 {
        return Ok(DEFAULT_LIMIT);
    }
    Ok(usize::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lead() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "id": "9007199254740993",
            "created_time": "2024-05-01T10:00:00+0000",
            "form_id": "200000001000000",
            "field_data": [{"name": "email", "values": ["joe@example.com"]}],
            "is_organic": false,
        }) else {
            unreachable!("literal is an object")
        };
        map
    }

    #[test]
    fn fields_split_on_top_level_commas() {
        assert_eq!(
            parse_fields("created_time, field_data{name,values},ad_id"),
            ["created_time", "field_data", "ad_id"]
        );
        assert_eq!(parse_fields("field_data.limit(2),id"), ["field_data", "id"]);
        assert_eq!(parse_fields(""), Vec::<String>::new());
        assert_eq!(parse_fields("id,id"), ["id"]);
    }

    #[test]
    fn selection_returns_id_and_requested_fields() {
        let selected = select_fields(
            &lead(),
            &["created_time".to_owned()],
            LEAD_FIELDS,
            LEAD_NODE_TYPE,
        )
        .expect("created_time is a lead field");
        assert_eq!(
            Value::Object(selected),
            json!({"id": "9007199254740993", "created_time": "2024-05-01T10:00:00+0000"})
        );
    }

    #[test]
    fn selection_without_fields_returns_only_id() {
        let selected = select_fields(&lead(), &[], LEAD_FIELDS, LEAD_NODE_TYPE)
            .expect("an empty selection is valid");
        assert_eq!(Value::Object(selected), json!({"id": "9007199254740993"}));
    }

    #[test]
    fn selection_omits_absent_known_fields() {
        let selected = select_fields(&lead(), &["ad_id".to_owned()], LEAD_FIELDS, LEAD_NODE_TYPE)
            .expect("ad_id is a lead field");
        assert_eq!(Value::Object(selected), json!({"id": "9007199254740993"}));
    }

    #[test]
    fn selection_rejects_unknown_field() {
        let error = select_fields(&lead(), &["bogus".to_owned()], LEAD_FIELDS, LEAD_NODE_TYPE)
            .expect_err("bogus is not a lead field");
        assert_eq!(error.code, 100);
        assert_eq!(
            error.message,
            "(#100) Tried accessing nonexisting field (bogus) on node type (LeadgenLead)"
        );
    }

    #[test]
    fn filtering_builds_time_range() {
        let range = parse_filtering(
            r#"[{"field":"time_created","operator":"GREATER_THAN","value":100},
                {"field":"time_created","operator":"LESS_THAN","value":"200"}]"#,
        )
        .expect("valid filter");
        assert_eq!(range.min_inclusive, Some(101));
        assert_eq!(range.max_exclusive, Some(200));
    }

    #[test]
    fn filtering_greater_or_equal_is_inclusive() {
        let range = parse_filtering(
            r#"[{"field":"time_created","operator":"GREATER_THAN_OR_EQUAL","value":100}]"#,
        )
        .expect("valid filter");
        assert_eq!(range.min_inclusive, Some(100));
        assert_eq!(range.max_exclusive, None);
    }

    #[test]
    fn filtering_empty_array_is_unbounded() {
        assert_eq!(parse_filtering("[]").expect("valid"), TimeRange::default());
    }

    #[test]
    fn filtering_rejects_invalid_input() {
        let cases = [
            "not json",
            r#"{"field":"time_created"}"#,
            r#"[{"field":"ad_id","operator":"EQUAL","value":1}]"#,
            r#"[{"field":"time_created","operator":"BETWEEN","value":1}]"#,
            r#"[{"field":"time_created","operator":"LESS_THAN","value":"soon"}]"#,
            r#"[{"operator":"LESS_THAN","value":1}]"#,
            r#"[{"field":"time_created","value":1}]"#,
        ];
        for case in cases {
            let error = parse_filtering(case).expect_err(case);
            assert_eq!(error.code, 100, "{case}");
            assert!(error.message.starts_with("(#100) "), "{case}");
        }
    }

    #[test]
    fn limit_defaults_and_clamps() {
        assert_eq!(parse_limit(None).expect("absent"), 25);
        assert_eq!(parse_limit(Some("0")).expect("zero"), 25);
        assert_eq!(parse_limit(Some("7")).expect("seven"), 7);
        assert_eq!(parse_limit(Some("100")).expect("max"), 100);
        assert_eq!(parse_limit(Some("5000")).expect("large"), 100);
        assert!(parse_limit(Some("-1")).is_err());
        assert!(parse_limit(Some("ten")).is_err());
    }
}
