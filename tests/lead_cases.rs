//! Lead content cases checked without a broker: empty and multiple answers,
//! time formats, missing fields, organic leads and the bulk-read filter.

mod common;

use apache_avro::types::Value as AvroValue;
use serde_json::Value;

use leadgen_connector::avro::{encode_datum, lead_schema, lead_to_value};
use leadgen_connector::config::{Config, StartTime};
use leadgen_connector::graph::{filtering_param, TimeFilter};
use leadgen_connector::lead::{
    normalise, normalise_usual, parse_created_time, LeadContext, LeadError, LeadSource,
};

fn context() -> LeadContext<'static> {
    LeadContext {
        form_id: "200000000000001",
        page_id: "100000000000001",
        source: LeadSource::Backfill,
    }
}

fn lead_fixture(name: &str) -> Value {
    serde_json::from_str(&common::fixture(&format!("graph/{name}"))).expect("fixture is JSON")
}

fn encoded_field(value: &AvroValue, field: &str) -> AvroValue {
    let AvroValue::Record(fields) = value else {
        panic!("lead value is a record")
    };
    fields
        .iter()
        .find(|(name, _)| name == field)
        .map(|(_, value)| value.clone())
        .expect("field exists")
}

#[test]
fn empty_answer_maps_to_empty_list() {
    let lead = normalise(&lead_fixture("l1-empty-answer.json"), context()).expect("lead maps");

    assert_eq!(lead.field_data[1], ("company_name".to_owned(), vec![]));
    let value = lead_to_value(&lead, 0);
    encode_datum(&lead_schema(), value).expect("lead with an empty answer encodes");
}

#[test]
fn several_answers_keep_order() {
    let lead = normalise(&lead_fixture("l2-several-answers.json"), context()).expect("lead maps");

    let days = lead
        .field_data
        .iter()
        .find(|(name, _)| name == "preferred_days")
        .expect("question present");
    assert_eq!(days.1, vec!["monday".to_owned(), "friday".to_owned()]);
}

#[test]
fn lead_body_and_webhook_times_agree() {
    let body = lead_fixture("meta-example-lead.json");
    let webhook = lead_fixture("webhook-l3-created-time.json");

    let from_body = parse_created_time(&body["created_time"]).expect("lead body time parses");
    let from_webhook = parse_created_time(&webhook["created_time"]).expect("webhook time parses");

    assert_eq!(from_body, 1_425_113_354_000);
    assert_eq!(from_webhook, 1_425_113_354_000);
    let lead = normalise(&body, context()).expect("lead maps");
    assert_eq!(
        encoded_field(&lead_to_value(&lead, 0), "created_time"),
        AvroValue::TimestampMillis(1_425_113_354_000)
    );
}

#[test]
fn colon_offset_and_zulu_times_parse() {
    for text in ["2015-02-28T08:49:14+00:00", "2015-02-28T08:49:14Z"] {
        assert_eq!(
            parse_created_time(&Value::from(text)),
            Ok(1_425_113_354_000),
            "{text}"
        );
    }
}

#[test]
fn unparseable_time_is_a_mapping_error() {
    let error = normalise(&lead_fixture("l3-unparseable-time.json"), context()).unwrap_err();

    assert!(matches!(error, LeadError::InvalidTime(_)), "{error}");
    assert_eq!(error.reason(), "invalid_time");
}

#[test]
fn id_only_answer_is_an_error_worth_rereading() {
    let error = normalise(&lead_fixture("l4-no-fields.json"), context()).unwrap_err();

    assert!(error.is_worth_rereading(), "{error}");
}

#[test]
fn request_always_asks_for_field_data() {
    let fields: Vec<&str> = leadgen_connector::lead::LEAD_FIELDS.split(',').collect();

    for field in [
        "id",
        "created_time",
        "field_data",
        "custom_disclaimer_responses",
        "is_organic",
    ] {
        assert!(fields.contains(&field), "{field} is not requested");
    }
}

#[test]
fn organic_lead_has_null_ad_fields() {
    let lead = normalise(&lead_fixture("l5-organic.json"), context()).expect("lead maps");
    let value = lead_to_value(&lead, 0);

    for field in ["ad_id", "adset_id", "campaign_id"] {
        assert_eq!(
            encoded_field(&value, field),
            AvroValue::Union(0, Box::new(AvroValue::Null)),
            "{field}"
        );
    }
    assert_eq!(
        encoded_field(&value, "is_organic"),
        AvroValue::Union(1, Box::new(AvroValue::Boolean(true)))
    );
}

#[test]
fn filtering_is_integer_unix_seconds() {
    let param = filtering_param(&[TimeFilter::GreaterThan(1_714_557_600)]);

    assert_eq!(
        param,
        r#"[{"field":"time_created","operator":"GREATER_THAN","value":1714557600}]"#
    );
}

#[test]
fn millisecond_start_time_is_rejected() {
    assert!(StartTime::from_unix_seconds(1_714_557_600).is_ok());
    let message = StartTime::from_unix_seconds(1_714_557_600_000).unwrap_err();
    assert!(message.contains("milliseconds"), "{message}");

    let text = r#"
        [graph]
        [[pages]]
        id = "1"
        access_token = "t"
        forms = ["2"]
        [backfill]
        start = "1714557600000"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        [schema_registry]
        url = "http://127.0.0.1:8081"
    "#;
    let error = Config::parse(text, &|_| None).unwrap_err().to_string();
    assert!(
        error.contains("backfill.start") && error.contains("milliseconds"),
        "{error}"
    );
}

/// Every lead that the direct reader accepts maps exactly as through a JSON
/// value, and every lead that `normalise` rejects is left to it.
#[test]
fn direct_reading_agrees_with_normalise() {
    let mut objects: Vec<Value> = [
        "l1-empty-answer.json",
        "l2-several-answers.json",
        "l3-unparseable-time.json",
        "l4-no-fields.json",
        "l5-organic.json",
        "meta-example-lead.json",
    ]
    .iter()
    .map(|name| lead_fixture(name))
    .collect();
    let base = lead_fixture("l2-several-answers.json");
    let variant = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut object = base.clone();
        change(object.as_object_mut().expect("fixture is an object"));
        object
    };
    objects.extend([
        variant(&|lead| {
            lead.insert("id".into(), Value::from(900_000_000_000_002_u64));
        }),
        variant(&|lead| {
            lead.insert("id".into(), Value::from("12ab"));
        }),
        variant(&|lead| {
            lead.insert("created_time".into(), Value::from(1_714_557_605));
        }),
        variant(&|lead| {
            lead.insert("created_time".into(), Value::from("1714557605"));
        }),
        variant(&|lead| {
            lead.insert("form_id".into(), Value::from("200000000000999"));
        }),
        variant(&|lead| {
            lead.insert("form_id".into(), Value::Null);
            lead.insert("ad_name".into(), Value::Null);
        }),
        variant(&|lead| {
            lead.insert("is_organic".into(), Value::from("1"));
        }),
        variant(&|lead| {
            lead.insert("home_listing".into(), serde_json::json!({"id": "1"}));
        }),
        variant(&|lead| {
            lead.insert(
                "field_data".into(),
                serde_json::json!([{"name": "age", "values": [42]}, {"name": "note"}, {"name": "x", "values": null, "id": "7"}]),
            );
        }),
        variant(&|lead| {
            lead.insert(
                "custom_disclaimer_responses".into(),
                serde_json::json!([{"checkbox_key": "a", "is_checked": "1"}, {"checkbox_key": "b", "is_checked": ""}, {"checkbox_key": "c"}]),
            );
        }),
        variant(&|lead| {
            lead.insert(
                "custom_disclaimer_responses".into(),
                serde_json::json!([{"checkbox_key": "a", "is_checked": true}]),
            );
        }),
        variant(&|lead| {
            lead.insert(
                "field_data".into(),
                serde_json::json!([{"name": "full_name", "values": ["Zoë \"Z\" Ünal\n😀"]}]),
            );
        }),
    ]);

    let mut direct = 0;
    for object in &objects {
        let text = object.to_string();
        let expected = normalise(object, context());
        // `None` leaves the lead to `normalise`: every lead it rejects, and
        // the unusual shapes it maps (numbers for text, extra fields).
        if let Some(lead) = normalise_usual(&text, context()) {
            direct += 1;
            assert_eq!(Ok(lead), expected, "lead {text}");
        }
    }
    // The fixtures l1, l2, l5 and the Meta example, the text time, the
    // nulls, the text disclaimers and the escaped answer.
    assert_eq!(direct, 8, "leads that took the direct route");
}
