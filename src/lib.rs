//! leadgen-connector: moves Meta Lead Ads leads into Kafka as Avro records,
//! every lead once, by webhook and by periodic bulk read.

pub mod admin;
pub mod avro;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod connector;
pub mod fetcher;
pub mod forms;
pub mod graph;
pub mod kafka;
pub mod lead;
pub mod metrics;
pub mod notification_consumer;
pub mod offsets;
pub mod reader;
pub mod secret;
pub mod sim;
pub mod tail;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod webhook;
