//! Kafka's own produce latency on this machine, for comparison with the
//! webhook acknowledgements: the producer settings of the connector's
//! webhook receiver (`acks=all`, idempotence, `linger.ms=1` unless
//! changed), offered at a fixed rate with nothing else of the connector
//! running.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::latency::Percentiles;

/// A notification-sized record: the JSON the receiver writes is about this long.
const PAYLOAD: &[u8] = br#"{"leadgen_id":"9007199254740993","page_id":"100000000000001","form_id":"200000001000001","ad_id":null,"adgroup_id":null,"created_time":1700000000,"received_at_ms":1700000000000}"#;

/// Result of one baseline run.
#[derive(Debug, Serialize)]
pub struct BaselineReport {
    pub kind: &'static str,
    pub topic: String,
    pub offered_rate: f64,
    pub duration_s: f64,
    pub linger_ms: u32,
    pub failed: usize,
    /// From the scheduled send instant to the delivery report.
    pub produce: Percentiles,
}

/// Creates `topic` with `partitions` partitions, then produces to it at
/// `rate` records per second for `duration` and reports the latency of
/// each delivery.
pub async fn run(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    rate: f64,
    duration: Duration,
    linger_ms: u32,
) -> anyhow::Result<BaselineReport> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("failed to create the Kafka admin client")?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for result in admin
        .create_topics([&new_topic], &AdminOptions::new())
        .await
        .context("failed to create the baseline topic")?
    {
        result
            .map_err(|(topic, code)| anyhow::anyhow!("failed to create topic `{topic}`: {code}"))?;
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .create()
        .context("failed to create the Kafka producer")?;

    let total = (rate * duration.as_secs_f64()).ceil() as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = JoinSet::new();
    for index in 0..total {
        let scheduled = start + Duration::from_secs_f64(index as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let key = index.to_string();
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(key.as_bytes()).payload(PAYLOAD))
            .map_err(|(error, _)| anyhow::anyhow!("failed to enqueue a record: {error}"))?;
        tasks.spawn(async move {
            let delivered = matches!(delivery.await, Ok(Ok(_)));
            (scheduled, Instant::now(), delivered)
        });
    }

    let mut samples = Vec::with_capacity(total);
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let (scheduled, delivered_at, delivered) = joined.context("a delivery task panicked")?;
        if delivered {
            samples.push(delivered_at - scheduled);
        } else {
            failed += 1;
        }
    }
    Ok(BaselineReport {
        kind: "kafka_baseline",
        topic: topic.to_owned(),
        offered_rate: rate,
        duration_s: duration.as_secs_f64(),
        linger_ms,
        failed,
        produce: Percentiles::of(samples),
    })
}
