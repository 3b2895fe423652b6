//! Avro encoding of leads in the Confluent wire format.
//!
//! The schema in `schemas/lead.avsc` is compiled into the binary and
//! registered under the subject `<leads topic>-value` at start-up, so the
//! registry's compatibility rules judge every schema change before a single
//! record is written with it.

use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::config::SchemaRegistryConfig;
use crate::lead::Lead;

/// The lead record schema, as shipped in `schemas/lead.avsc`.
pub const LEAD_SCHEMA: &str = include_str!("../schemas/lead.avsc");

/// Full name of the lead record in the schema.
pub const LEAD_RECORD_NAME: &str = "io.leadgen.connector.Lead";

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("schema registry request failed: {0}")]
    Registry(String),
    #[error("lead `{lead_id}` does not fit the lead schema: {detail}")]
    Schema { lead_id: String, detail: String },
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
#[derive(Clone)]
pub struct LeadEncoder {
    encoder: Arc<AvroEncoder>,
    strategy: SubjectNameStrategy,
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
        let encoder = Self {
            encoder: Arc::new(AvroEncoder::new(settings)),
            strategy: SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_owned(),
                false,
                schema,
            ),
        };

        let subject = encoder
            .strategy
            .get_subject()
            .map_err(EncodeError::from_registry)?;
        if let Err(error) = encoder
            .encoder
            .get_schema_and_id(&subject, encoder.strategy.clone())
            .await
        {
            // A failed registration is cached by the encoder; clear it so a
            // later attempt talks to the registry again.
            encoder.encoder.remove_errors_from_cache();
            return Err(EncodeError::from_registry(error));
        }
        Ok(encoder)
    }

    /// Encodes one lead; `ingested_time_ms` is the produce time.
    pub async fn encode(&self, lead: &Lead, ingested_time_ms: i64) -> Result<Vec<u8>, EncodeError> {
        self.encoder
            .encode_value(lead_to_value(lead, ingested_time_ms), &self.strategy)
            .await
            .map_err(|error| EncodeError::Schema {
                lead_id: lead.lead_id.clone(),
                detail: error.to_string(),
            })
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
    let symbol = lead.source.as_str();
    let index = ["BACKFILL", "WEBHOOK", "REPLAY"]
        .iter()
        .position(|candidate| *candidate == symbol)
        .expect("every LeadSource has a symbol in the schema");
    Value::Enum(index as u32, symbol.to_owned())
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

    use super::*;
    use crate::lead::{DisclaimerResponse, LeadSource};

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

    /// Starts a local registry stand-in that returns 404 with `body` to every
    /// request, and returns its base URL.
    async fn not_found_registry(body: &'static str) -> String {
        let app = axum::Router::new()
            .fallback(move || async move { (axum::http::StatusCode::NOT_FOUND, body) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn registry_config(url: String) -> SchemaRegistryConfig {
        SchemaRegistryConfig {
            url,
            username: None,
            password: None,
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn register_on_wrong_path_names_ccompat() {
        let url = not_found_registry(r#"{"status":404,"title":"Could not find resource"}"#).await;

        let error = LeadEncoder::register(&registry_config(url), "leads")
            .await
            .err()
            .expect("a 404 fails the registration");

        let message = error.to_string();
        assert!(message.contains("404"), "{message}");
        assert!(message.contains("/apis/ccompat/v7"), "{message}");
    }

    #[tokio::test]
    async fn register_on_confluent_404_has_no_path_hint() {
        let url = not_found_registry(r#"{"error_code":40401,"message":"Subject not found"}"#).await;

        let error = LeadEncoder::register(&registry_config(url), "leads")
            .await
            .err()
            .expect("a 404 fails the registration");

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
            .err()
            .expect("nothing listens on the port");

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

    #[test]
    fn question_names_never_become_field_names() {
        let schema = lead_schema();
        let Schema::Record(record) = schema else {
            panic!("lead schema is a record")
        };

        let names: Vec<&str> = record
            .fields
            .iter()
            .map(|field| field.name.as_str())
            .collect();

        assert!(!names.contains(&"preferred_days"));
        assert!(names.contains(&"field_data"));
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
