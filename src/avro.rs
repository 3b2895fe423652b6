//! Avro encoding of leads in the Confluent wire format.
//!
//! The schema in `schemas/lead.avsc` is compiled into the binary and
//! registered under the subject `<leads topic>-value` at start-up, so the
//! registry's compatibility rules judge every schema change before a single
//! record is written with it.

use apache_avro::types::Value;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::config::SchemaRegistryConfig;
use crate::lead::{Lead, LeadSource};

/// The lead record schema, as shipped in `schemas/lead.avsc`.
pub const LEAD_SCHEMA: &str = include_str!("../schemas/lead.avsc");

/// Full name of the lead record in the schema.
pub const LEAD_RECORD_NAME: &str = "io.leadgen.connector.Lead";

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("schema registry request failed: {0}")]
    Registry(String),
}

impl EncodeError {
    fn from_registry(error: SRCError) -> Self {
        if is_not_found_without_code(&error) {
            return EncodeError::Registry(format!(
                "{error}; the registry returned 404 without a Confluent error code, so {WRONG_REGISTRY_PATH_HINT}"
            ));
        }
        EncodeError::Registry(error.to_string())
    }
}

/// Advice for a registry 404 that carries no Confluent error code, because
/// such a 404 comes from a path outside the Confluent-compatible API.
pub const WRONG_REGISTRY_PATH_HINT: &str = "check that schema_registry.url is the base URL of the Confluent-compatible API, which Apicurio Registry serves under /apis/ccompat/v7 (for example http://127.0.0.1:8081/apis/ccompat/v7)";

/// Confluent error code of a 404 for a subject that does not exist.
const SUBJECT_NOT_FOUND: u32 = 40401;

/// Confluent error code of a 404 for a version that does not exist.
const VERSION_NOT_FOUND: u32 = 40402;

/// Returns whether the body of a registry 404 is the Confluent error for a
/// subject or version that does not exist, as opposed to a 404 for a path
/// that the registry does not serve.
pub fn is_missing_subject(body: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error_code: u32,
    }

    serde_json::from_str::<ErrorBody>(body).is_ok_and(|error| {
        error.error_code == SUBJECT_NOT_FOUND || error.error_code == VERSION_NOT_FOUND
    })
}

/// Returns whether a registry call failed with 404 and a body without a
/// Confluent error code. The converter keeps the status only in the message
/// and sets `error_code` 0 when the body is not a Confluent error.
fn is_not_found_without_code(error: &SRCError) -> bool {
    let not_found = error
        .error
        .ends_with(&reqwest::StatusCode::NOT_FOUND.to_string());
    let error_code = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<RawError>())
        .map(|raw| raw.error_code);
    not_found && error_code.is_none_or(|code| code < SUBJECT_NOT_FOUND)
}

/// Builds registry settings from the config.
pub fn registry_settings(config: &SchemaRegistryConfig) -> Result<SrSettings, EncodeError> {
    let mut builder = SrSettings::new_builder(config.url.trim_end_matches('/').to_owned());
    builder.set_timeout(config.timeout).no_proxy();
    if let Some(username) = &config.username {
        builder.set_basic_authorization(
            username,
            config.password.as_ref().map(|password| password.expose()),
        );
    }
    builder.build().map_err(EncodeError::from_registry)
}

/// Encodes leads against the registered lead schema.
#[derive(Clone, Debug)]
pub struct LeadEncoder {
    schema_id: u32,
}

impl LeadEncoder {
    /// Registers the lead schema for `topic` (idempotent in the registry) and
    /// returns an encoder that uses it.
    pub async fn register(config: &SchemaRegistryConfig, topic: &str) -> Result<Self, EncodeError> {
        let settings = registry_settings(config)?;
        let schema = SuppliedSchema::new(
            Some(LEAD_RECORD_NAME.to_owned()),
            SchemaType::Avro,
            LEAD_SCHEMA.to_owned(),
        );
        let strategy =
            SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_owned(), false, schema);
        let subject = strategy.get_subject().map_err(EncodeError::from_registry)?;
        let registered = AvroEncoder::new(settings)
            .get_schema_and_id(&subject, strategy)
            .await
            .map_err(EncodeError::from_registry)?;
        Ok(Self::with_schema_id(registered.id))
    }

    /// Returns an encoder that writes the shipped schema under `schema_id`
    /// without asking a registry; for tests and benchmarks.
    pub fn with_schema_id(schema_id: u32) -> Self {
        Self { schema_id }
    }

    /// Returns the id the registry gave the lead schema.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// Encodes one lead in the Confluent wire format: a zero byte, the schema
    /// id as four big-endian bytes, then the Avro datum. `ingested_time_ms`
    /// is the produce time.
    ///
    /// The datum is written field by field in the order of
    /// [`LEAD_FIELDS`], which is the order of `schemas/lead.avsc`. Tests
    /// check the bytes against apache-avro's encoding of the same record.
    /// Every lead fits the schema, so encoding cannot fail.
    pub fn encode(&self, lead: &Lead, ingested_time_ms: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(WIRE_PREFIX_LEN + lead_size_hint(lead));
        out.push(0);
        out.extend_from_slice(&self.schema_id.to_be_bytes());

        write_string(&mut out, &lead.lead_id);
        write_string(&mut out, &lead.form_id);
        write_string(&mut out, &lead.page_id);
        write_long(&mut out, lead.created_time_ms);
        for text in [
            &lead.ad_id,
            &lead.ad_name,
            &lead.adset_id,
            &lead.adset_name,
            &lead.campaign_id,
            &lead.campaign_name,
        ] {
            write_nullable_string(&mut out, text.as_deref());
        }
        match lead.is_organic {
            None => write_long(&mut out, 0),
            Some(flag) => {
                write_long(&mut out, 1);
                out.push(u8::from(flag));
            }
        }
        write_nullable_string(&mut out, lead.platform.as_deref());
        write_nullable_string(&mut out, lead.partner_name.as_deref());

        // Each map and array is one block of all its items followed by the
        // empty block, so an empty one is the empty block alone.
        write_block_len(&mut out, lead.field_data.len());
        for (name, answers) in &lead.field_data {
            write_string(&mut out, name);
            write_block_len(&mut out, answers.len());
            for answer in answers {
                write_string(&mut out, answer);
            }
            end_items(&mut out);
        }
        end_items(&mut out);

        let disclaimers = &lead.custom_disclaimer_responses;
        write_block_len(&mut out, disclaimers.len());
        for response in disclaimers {
            write_string(&mut out, &response.checkbox_key);
            out.push(u8::from(response.is_checked));
        }
        end_items(&mut out);

        write_long(&mut out, i64::from(source_index(lead.source)));
        write_long(&mut out, ingested_time_ms);

        write_block_len(&mut out, lead.extra_fields.len());
        for (name, json) in &lead.extra_fields {
            write_string(&mut out, name);
            write_string(&mut out, json);
        }
        end_items(&mut out);
        out
    }
}

/// The lead record's fields in the order [`LeadEncoder::encode`] writes
/// them, which must be the order of `schemas/lead.avsc`.
pub const LEAD_FIELDS: [&str; 18] = [
    "lead_id",
    "form_id",
    "page_id",
    "created_time",
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
    "source",
    "ingested_time",
    "extra_fields",
];

/// Magic byte and schema id.
const WIRE_PREFIX_LEN: usize = 5;

/// Estimates the datum size, so that most records need no reallocation.
fn lead_size_hint(lead: &Lead) -> usize {
    let answers: usize = lead
        .field_data
        .iter()
        .map(|(name, values)| {
            name.len() + values.iter().map(|value| value.len() + 2).sum::<usize>() + 4
        })
        .sum();
    128 + answers
}

/// Writes an Avro `long` or `int`: zigzag, then seven bits per byte, low
/// bits first.
fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    write_long(out, text.len() as i64);
    out.extend_from_slice(text.as_bytes());
}

/// Writes a `["null", "string"]` union: the branch index, then the string.
fn write_nullable_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => write_long(out, 0),
        Some(text) => {
            write_long(out, 1);
            write_string(out, text);
        }
    }
}

/// Starts the one block of a non-empty map or array.
fn write_block_len(out: &mut Vec<u8>, len: usize) {
    if len > 0 {
        write_long(out, len as i64);
    }
}

/// Writes the empty block that ends every map and array.
fn end_items(out: &mut Vec<u8>) {
    out.push(0);
}

/// Returns the symbol's position in the schema's `LeadSource` enum.
fn source_index(source: LeadSource) -> u32 {
    match source {
        LeadSource::Backfill => 0,
        LeadSource::Webhook => 1,
        LeadSource::Replay => 2,
    }
}

/// Encodes a value as a bare Avro datum, without the wire-format prefix.
pub fn encode_datum(schema: &Schema, value: Value) -> Result<Vec<u8>, apache_avro::Error> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)
}

/// Decodes a bare Avro datum.
pub fn decode_datum(schema: &Schema, mut bytes: &[u8]) -> Result<Value, apache_avro::Error> {
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()?
        .read_value(&mut bytes)
}

/// Parses the shipped schema; used by tests and the `schema` command.
pub fn lead_schema() -> Schema {
    Schema::parse_str(LEAD_SCHEMA).expect("schemas/lead.avsc is valid Avro")
}

fn nullable_string(value: &Option<String>) -> Value {
    match value {
        Some(text) => Value::Union(1, Box::new(Value::String(text.clone()))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn nullable_bool(value: Option<bool>) -> Value {
    match value {
        Some(flag) => Value::Union(1, Box::new(Value::Boolean(flag))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn source_symbol(lead: &Lead) -> Value {
    Value::Enum(source_index(lead.source), lead.source.as_str().to_owned())
}

/// Builds the Avro record of a lead, field by field in schema order.
pub fn lead_to_value(lead: &Lead, ingested_time_ms: i64) -> Value {
    let field_data = lead
        .field_data
        .iter()
        .map(|(name, answers)| {
            let answers = answers.iter().cloned().map(Value::String).collect();
            (name.clone(), Value::Array(answers))
        })
        .collect();
    let disclaimers = lead
        .custom_disclaimer_responses
        .iter()
        .map(|response| {
            Value::Record(vec![
                (
                    "checkbox_key".to_owned(),
                    Value::String(response.checkbox_key.clone()),
                ),
                ("is_checked".to_owned(), Value::Boolean(response.is_checked)),
            ])
        })
        .collect();
    let extra_fields = lead
        .extra_fields
        .iter()
        .map(|(name, json)| (name.clone(), Value::String(json.clone())))
        .collect();

    Value::Record(vec![
        ("lead_id".to_owned(), Value::String(lead.lead_id.clone())),
        ("form_id".to_owned(), Value::String(lead.form_id.clone())),
        ("page_id".to_owned(), Value::String(lead.page_id.clone())),
        (
            "created_time".to_owned(),
            Value::TimestampMillis(lead.created_time_ms),
        ),
        ("ad_id".to_owned(), nullable_string(&lead.ad_id)),
        ("ad_name".to_owned(), nullable_string(&lead.ad_name)),
        ("adset_id".to_owned(), nullable_string(&lead.adset_id)),
        ("adset_name".to_owned(), nullable_string(&lead.adset_name)),
        ("campaign_id".to_owned(), nullable_string(&lead.campaign_id)),
        (
            "campaign_name".to_owned(),
            nullable_string(&lead.campaign_name),
        ),
        ("is_organic".to_owned(), nullable_bool(lead.is_organic)),
        ("platform".to_owned(), nullable_string(&lead.platform)),
        (
            "partner_name".to_owned(),
            nullable_string(&lead.partner_name),
        ),
        ("field_data".to_owned(), Value::Map(field_data)),
        (
            "custom_disclaimer_responses".to_owned(),
            Value::Array(disclaimers),
        ),
        ("source".to_owned(), source_symbol(lead)),
        (
            "ingested_time".to_owned(),
            Value::TimestampMillis(ingested_time_ms),
        ),
        ("extra_fields".to_owned(), Value::Map(extra_fields)),
    ])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
    use serde::{Serialize, Serializer};

    use super::*;
    use crate::lead::DisclaimerResponse;
    use crate::test_support::{not_found_registry, registry_config};

    fn sample_lead() -> Lead {
        Lead {
            lead_id: "9007199254740993".to_owned(),
            form_id: "200000000000001".to_owned(),
            page_id: "100000000000001".to_owned(),
            created_time_ms: 1_425_113_354_000,
            ad_id: None,
            ad_name: None,
            adset_id: None,
            adset_name: None,
            campaign_id: None,
            campaign_name: None,
            is_organic: Some(true),
            platform: Some("ig".to_owned()),
            partner_name: None,
            field_data: vec![
                (
                    "preferred_days".to_owned(),
                    vec!["monday".to_owned(), "friday".to_owned()],
                ),
                ("company_name".to_owned(), vec![]),
                ("full_name".to_owned(), vec!["Zoë Ünal 😀".to_owned()]),
            ],
            custom_disclaimer_responses: vec![DisclaimerResponse {
                checkbox_key: "optional_1".to_owned(),
                is_checked: true,
            }],
            extra_fields: BTreeMap::new(),
            source: LeadSource::Webhook,
        }
    }

    #[tokio::test]
    async fn register_on_wrong_path_names_ccompat() {
        let url = not_found_registry(r#"{"status":404,"title":"Could not find resource"}"#).await;

        let error = LeadEncoder::register(&registry_config(url), "leads")
            .await
            .expect_err("a 404 fails the registration");

        let message = error.to_string();
        assert!(message.contains("404"), "{message}");
        assert!(message.contains("/apis/ccompat/v7"), "{message}");
    }

    #[tokio::test]
    async fn register_on_confluent_404_has_no_path_hint() {
        let url = not_found_registry(r#"{"error_code":40401,"message":"Subject not found"}"#).await;

        let error = LeadEncoder::register(&registry_config(url), "leads")
            .await
            .expect_err("a 404 fails the registration");

        let message = error.to_string();
        assert!(!message.contains("/apis/ccompat/v7"), "{message}");
    }

    #[tokio::test]
    async fn register_error_hides_url_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://user:registry-pass-1@127.0.0.1:{port}/apis/ccompat/v7");

        let error = LeadEncoder::register(&registry_config(url), "leads")
            .await
            .expect_err("nothing listens on the port");

        let message = error.to_string();
        assert!(!message.contains("registry-pass-1"), "{message}");
    }

    #[test]
    fn missing_subject_needs_confluent_code() {
        assert!(is_missing_subject(
            r#"{"error_code":40401,"message":"Subject 'leads-value' not found."}"#
        ));
        assert!(is_missing_subject(
            r#"{"error_code":40402,"message":"Version not found."}"#
        ));
        assert!(!is_missing_subject(
            r#"{"error_code":40403,"message":"Schema not found"}"#
        ));
        assert!(!is_missing_subject(
            r#"{"status":404,"title":"RESTEASY003210: Could not find resource"}"#
        ));
        assert!(!is_missing_subject("<html>Not Found</html>"));
        assert!(!is_missing_subject(""));
    }

    #[test]
    fn lead_round_trips_through_schema() {
        let schema = lead_schema();
        let value = lead_to_value(&sample_lead(), 1_700_000_000_000);

        let bytes = encode_datum(&schema, value.clone()).expect("lead value matches the schema");
        let decoded = decode_datum(&schema, &bytes).unwrap();

        assert_eq!(decoded, value);
    }

    /// Leads that reach every branch of the encoder: each source, null and
    /// set optional fields, empty and multi-byte counts and lengths.
    fn varied_leads() -> Vec<Lead> {
        let plain = sample_lead();

        let mut full = sample_lead();
        full.ad_id = Some("ad".to_owned());
        full.ad_name = Some(String::new());
        full.adset_id = Some("6".repeat(64));
        full.adset_name = Some("ad set".to_owned());
        full.campaign_id = Some("7".to_owned());
        full.campaign_name = Some("Spring \"sale\"".to_owned());
        full.partner_name = Some("partner".to_owned());
        full.is_organic = Some(false);
        full.source = LeadSource::Replay;
        full.extra_fields = BTreeMap::from([
            ("home_listing".to_owned(), r#"{"id":"1"}"#.to_owned()),
            ("vehicle".to_owned(), "null".to_owned()),
        ]);
        full.custom_disclaimer_responses.push(DisclaimerResponse {
            checkbox_key: "optional_2".to_owned(),
            is_checked: false,
        });

        let mut empty = sample_lead();
        empty.field_data.clear();
        empty.custom_disclaimer_responses.clear();
        empty.is_organic = None;
        empty.platform = None;
        empty.source = LeadSource::Backfill;
        empty.created_time_ms = -1;

        let mut large = sample_lead();
        large.field_data = (0..200)
            .map(|question| {
                let answers = (0..question % 70)
                    .map(|answer| "a".repeat(answer * 3))
                    .collect();
                (format!("question_{question}"), answers)
            })
            .collect();
        large.created_time_ms = i64::MAX;

        vec![plain, full, empty, large]
    }

    /// Encodes with apache-avro's schema-aware serializer, field by field,
    /// which is the reference for the hand-written encoder. Unlike an Avro
    /// value, whose maps are hash maps, it keeps the question order, so the
    /// bytes can be compared whole.
    fn reference_encode(schema: &Schema, lead: &Lead, ingested_time_ms: i64) -> Vec<u8> {
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .human_readable(false)
            .build()
            .expect("the shipped schema resolves");
        let mut bytes = Vec::new();
        writer
            .write_ser(
                &mut bytes,
                &LeadRecord {
                    lead,
                    ingested_time_ms,
                },
            )
            .expect("lead fits the schema");
        bytes
    }

    /// The lead as the schema's record, borrowed field by field in schema order.
    struct LeadRecord<'a> {
        lead: &'a Lead,
        ingested_time_ms: i64,
    }

    impl Serialize for LeadRecord<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let lead = self.lead;
            let mut record = serializer.serialize_struct("Lead", 18)?;
            record.serialize_field("lead_id", &lead.lead_id)?;
            record.serialize_field("form_id", &lead.form_id)?;
            record.serialize_field("page_id", &lead.page_id)?;
            record.serialize_field("created_time", &lead.created_time_ms)?;
            record.serialize_field("ad_id", &lead.ad_id)?;
            record.serialize_field("ad_name", &lead.ad_name)?;
            record.serialize_field("adset_id", &lead.adset_id)?;
            record.serialize_field("adset_name", &lead.adset_name)?;
            record.serialize_field("campaign_id", &lead.campaign_id)?;
            record.serialize_field("campaign_name", &lead.campaign_name)?;
            record.serialize_field("is_organic", &lead.is_organic)?;
            record.serialize_field("platform", &lead.platform)?;
            record.serialize_field("partner_name", &lead.partner_name)?;
            record.serialize_field("field_data", &FieldData(&lead.field_data))?;
            record.serialize_field(
                "custom_disclaimer_responses",
                &Disclaimers(&lead.custom_disclaimer_responses),
            )?;
            record.serialize_field("source", &Source(lead.source))?;
            record.serialize_field("ingested_time", &self.ingested_time_ms)?;
            record.serialize_field("extra_fields", &lead.extra_fields)?;
            record.end()
        }
    }

    /// `field_data` as an Avro map, in the order Meta sent the questions.
    struct FieldData<'a>(&'a [(String, Vec<String>)]);

    impl Serialize for FieldData<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (name, answers) in self.0 {
                map.serialize_entry(name, answers)?;
            }
            map.end()
        }
    }

    struct Disclaimers<'a>(&'a [DisclaimerResponse]);

    impl Serialize for Disclaimers<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut responses = serializer.serialize_seq(Some(self.0.len()))?;
            for response in self.0 {
                responses.serialize_element(&Disclaimer(response))?;
            }
            responses.end()
        }
    }

    struct Disclaimer<'a>(&'a DisclaimerResponse);

    impl Serialize for Disclaimer<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut record = serializer.serialize_struct("DisclaimerResponse", 2)?;
            record.serialize_field("checkbox_key", &self.0.checkbox_key)?;
            record.serialize_field("is_checked", &self.0.is_checked)?;
            record.end()
        }
    }

    struct Source(LeadSource);

    impl Serialize for Source {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_unit_variant("LeadSource", source_index(self.0), self.0.as_str())
        }
    }

    #[test]
    fn encoder_writes_what_apache_avro_writes() {
        let schema = lead_schema();
        let encoder = LeadEncoder::with_schema_id(0x0102_0304);
        for ingested in [0, 1_700_000_000_123, i64::MIN] {
            for lead in varied_leads() {
                let bytes = encoder.encode(&lead, ingested);

                assert_eq!(bytes[..5], [0, 1, 2, 3, 4], "wire-format prefix");
                let expected = reference_encode(&schema, &lead, ingested);
                assert!(bytes[5..] == expected[..], "lead {lead:?}");
                assert_eq!(
                    decode_datum(&schema, &bytes[5..]).unwrap(),
                    lead_to_value(&lead, ingested),
                    "lead {lead:?}"
                );
            }
        }
    }

    /// Returns the names of the lead record's fields, in schema order.
    fn schema_field_names() -> Vec<String> {
        let Schema::Record(record) = lead_schema() else {
            panic!("lead schema is a record")
        };
        record.fields.into_iter().map(|field| field.name).collect()
    }

    #[test]
    fn encoder_field_order_is_the_schema_order() {
        assert_eq!(schema_field_names(), LEAD_FIELDS);
    }

    #[test]
    fn writer_keeps_question_order() {
        let lead = sample_lead();
        let bytes = LeadEncoder::with_schema_id(1).encode(&lead, 0);

        let positions: Vec<usize> = lead
            .field_data
            .iter()
            .map(|(name, _)| {
                bytes
                    .windows(name.len())
                    .position(|window| window == name.as_bytes())
                    .expect("question name is in the record")
            })
            .collect();
        assert!(positions.is_sorted(), "{positions:?}");
    }

    #[test]
    fn question_names_never_become_field_names() {
        let names = schema_field_names();

        assert!(!names.iter().any(|name| name == "preferred_days"));
        assert!(names.iter().any(|name| name == "field_data"));
    }

    #[test]
    fn optional_fields_default_to_null() {
        let Schema::Record(record) = lead_schema() else {
            panic!("lead schema is a record")
        };

        for field in &record.fields {
            if let Schema::Union(_) = field.schema {
                assert_eq!(
                    field.default,
                    Some(serde_json::Value::Null),
                    "field {}",
                    field.name
                );
            }
        }
    }
}
