//! `leadgen-connector tail`: prints the lead records a `read_committed`
//! consumer sees, decoded through the schema registry, one line each.

use std::time::Duration;

use apache_avro::types::Value as AvroValue;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::avro::registry_settings;
use crate::config::Config;
use crate::kafka::KafkaSetup;

/// How `tail` prints records.
#[derive(Debug, Clone, Copy)]
pub struct TailOptions {
    /// Start at the oldest record rather than at the end of the topic.
    pub from_beginning: bool,
    /// Print each record as one JSON object instead of a summary line.
    pub json: bool,
}

/// Prints lead records until `shutdown`.
pub async fn tail(
    config: &Config,
    options: TailOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let setup = KafkaSetup::new(config.kafka.clone());
    let mut client = setup.base_config();
    let group = format!(
        "leadgen-tail-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    client
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if options.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        );
    let consumer: StreamConsumer = client.create()?;
    consumer.subscribe(&[&config.kafka.leads_topic])?;
    let decoder = AvroDecoder::new(registry_settings(&config.schema_registry)?);
    eprintln!(
        "reading committed records of `{}`; press Ctrl-C to stop",
        config.kafka.leads_topic
    );

    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                eprintln!("consumer error: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let decoded = match decoder.decode(message.payload()).await {
            Ok(decoded) => decoded.value,
            Err(error) => {
                eprintln!(
                    "cannot decode record at offset {}: {error}",
                    message.offset()
                );
                continue;
            }
        };
        let record = avro_to_json(decoded);
        if options.json {
            println!("{record}");
        } else {
            println!("{}", summary(&record));
        }
    }
}

/// Converts a decoded lead to JSON, unwrapping unions and rendering
/// timestamps as RFC 3339.
pub fn avro_to_json(value: AvroValue) -> Value {
    match value {
        AvroValue::Null => Value::Null,
        AvroValue::Boolean(flag) => Value::Bool(flag),
        AvroValue::Int(number) => Value::from(number),
        AvroValue::Long(number) => Value::from(number),
        AvroValue::String(text) => Value::String(text),
        AvroValue::Enum(_, symbol) => Value::String(symbol),
        AvroValue::Union(_, inner) => avro_to_json(*inner),
        AvroValue::TimestampMillis(millis) => chrono::DateTime::from_timestamp_millis(millis)
            .map(|time| Value::String(time.to_rfc3339()))
            .unwrap_or(Value::from(millis)),
        AvroValue::Array(items) => Value::Array(items.into_iter().map(avro_to_json).collect()),
        AvroValue::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key, avro_to_json(value)))
                .collect(),
        ),
        AvroValue::Record(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key, avro_to_json(value)))
                .collect::<Map<_, _>>(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

fn summary(record: &Value) -> String {
    let text = |field: &str| {
        record
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let answers = record
        .get("field_data")
        .and_then(Value::as_object)
        .map(|fields| {
            fields
                .iter()
                .map(|(name, values)| {
                    let values: Vec<&str> = values
                        .as_array()
                        .map(|items| items.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    // One line per lead: line breaks inside answers are shown escaped.
                    format!("{name}={}", values.join("|").replace('\n', "\\n"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "{:<8} lead={} form={} created={} {}",
        text("source"),
        text("lead_id"),
        text("form_id"),
        text("created_time"),
        answers
    )
}
