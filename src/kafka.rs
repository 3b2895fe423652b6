//! Kafka plumbing: client settings, topic creation, and the transactional
//! sink that every lead, dead letter and offset record goes through.
//!
//! The sink commits one [`Batch`] per Kafka transaction with `acks=all` and
//! idempotence, so lead records, dead letters and the offset records that
//! account for them become visible to `read_committed` consumers together or
//! not at all. Only one transaction is open at a time.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::TopicPartitionList;
use tokio::sync::Mutex;

use crate::avro::LeadEncoder;
use crate::config::KafkaConfig;
use crate::graph::ApiError;
use crate::lead::{Lead, LeadSource};
use crate::metrics::{Metrics, Outcome, SourceForm};
use crate::offsets::OffsetRecord;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("Kafka operation failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("Kafka transaction failed: {0}")]
    Transaction(String),
    #[error("cannot load offsets: {0}")]
    Load(String),
}

/// Client settings shared by every Kafka client the connector creates.
#[derive(Debug, Clone)]
pub struct KafkaSetup {
    config: KafkaConfig,
}

impl KafkaSetup {
    pub fn new(config: KafkaConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Settings with the bootstrap servers and pass-through properties.
    pub fn base_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.config.bootstrap_servers);
        for (key, value) in self.config.properties.iter() {
            client.set(key, value);
        }
        client
    }

    /// A consumer that sees committed records only and commits nothing.
    pub fn consumer_config(&self, purpose: &str) -> ClientConfig {
        let mut client = self.base_config();
        client
            .set(
                "group.id",
                format!("{}-{purpose}", self.config.transactional_id),
            )
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        client
    }

    fn producer_config(&self) -> ClientConfig {
        let mut client = self.base_config();
        client
            .set("transactional.id", &self.config.transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "transaction.timeout.ms",
                self.config.transaction_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        client
    }

    /// Creates the leads, offsets, dead-letter and notifications topics when
    /// missing. The offsets topic is compacted.
    pub async fn create_topics(&self) -> Result<(), SinkError> {
        let admin: AdminClient<DefaultClientContext> = self.base_config().create()?;
        let replication = || TopicReplication::Fixed(self.config.replication_factor);
        let topics = [
            NewTopic::new(
                &self.config.leads_topic,
                self.config.partitions,
                replication(),
            ),
            NewTopic::new(
                &self.config.offsets_topic,
                self.config.partitions,
                replication(),
            )
            .set("cleanup.policy", "compact")
            .set("min.compaction.lag.ms", "0"),
            NewTopic::new(
                &self.config.dead_letter_topic,
                self.config.partitions,
                replication(),
            ),
            NewTopic::new(
                &self.config.notifications_topic,
                self.config.partitions,
                replication(),
            ),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));

        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(topic) => tracing::info!(topic = %topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(SinkError::Transaction(format!(
                        "cannot create topic `{topic}`: {code}"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// A lead or notification that can never be read or mapped, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Record key: the lead id, or the form id when no lead id is known.
    pub key: String,
    /// The original JSON as received.
    pub payload: Vec<u8>,
    pub reason: String,
    pub detail: String,
    pub graph_error: Option<ApiError>,
    pub form_id: String,
    pub page_id: String,
    pub source: LeadSource,
}

/// Consumed positions to commit with a transaction.
pub struct ConsumerPosition {
    pub offsets: TopicPartitionList,
    pub group: ConsumerGroupMetadata,
}

/// Everything one transaction writes.
#[derive(Default)]
pub struct Batch {
    pub leads: Vec<Lead>,
    pub dead_letters: Vec<DeadLetter>,
    pub offsets: Vec<OffsetRecord>,
    pub consumer: Option<ConsumerPosition>,
}

/// A batch with its leads encoded, ready for a transaction.
struct Prepared {
    encoded: Vec<(Lead, Vec<u8>)>,
    dead_letters: Vec<DeadLetter>,
    offsets: Vec<OffsetRecord>,
    consumer: Option<ConsumerPosition>,
}

/// Records written by one committed batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub leads: usize,
    pub dead_letters: usize,
    /// Source, form id and creation time of each lead record.
    pub produced: Vec<(LeadSource, String, i64)>,
    /// Reason of each dead letter.
    pub reasons: Vec<String>,
}

/// Value of the `client` label of the transactional producer's restarts.
const PRODUCER_CLIENT: &str = "transactional_producer";

/// The transactional producer behind every write.
pub struct Sink {
    setup: KafkaSetup,
    encoder: LeadEncoder,
    metrics: Arc<Metrics>,
    producer: Mutex<Option<FutureProducer>>,
}

impl Sink {
    /// Creates the producer and fences any earlier producer with the same
    /// transactional id, aborting its open transaction.
    pub async fn connect(
        setup: KafkaSetup,
        encoder: LeadEncoder,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, SinkError> {
        let producer = new_producer(&setup).await?;
        metrics.add_kafka_client(PRODUCER_CLIENT);
        Ok(Arc::new(Self {
            setup,
            encoder,
            metrics,
            producer: Mutex::new(Some(producer)),
        }))
    }

    /// Writes a batch in one transaction. On error nothing of the batch is
    /// visible to `read_committed` consumers, and the caller may retry.
    pub async fn commit(&self, batch: Batch) -> Result<Written, SinkError> {
        let prepared = self.prepare(batch);

        let mut slot = self.producer.lock().await;
        let producer = match slot.as_ref() {
            Some(producer) => producer.clone(),
            None => {
                let producer = new_producer(&self.setup).await?;
                self.metrics.kafka_client_restart(PRODUCER_CLIENT);
                *slot = Some(producer.clone());
                producer
            }
        };

        let result = self.write(&producer, prepared).await;
        self.record(&result);
        if let Err(error) = &result {
            if let Some((code, reason)) = producer.client().fatal_error() {
                // A fatal producer, for example one fenced by a newer
                // producer with the same transactional id, can neither
                // abort nor write again. Its open transaction is aborted by
                // the broker when the new producer initialises.
                tracing::error!(
                    transactional_id = %self.setup.config.transactional_id,
                    error = %error,
                    fatal_error = %format!("{reason} ({code:?})"),
                    "Kafka transactional producer failed with a fatal error; creating a new producer for the next transaction"
                );
                *slot = None;
                return result;
            }
            tracing::warn!(error = %error, "Kafka transaction failed; aborting it");
            if let Err(abort_error) = abort(&producer, self.setup.config.transaction_timeout).await
            {
                // The producer's transaction state is unknown; a new producer
                // with the same transactional id fences and aborts it.
                tracing::warn!(error = %abort_error, "abort failed; the producer will be recreated");
                *slot = None;
            }
        }
        result
    }

    /// Encodes the leads of a batch.
    fn prepare(&self, batch: Batch) -> Prepared {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let encoded = batch
            .leads
            .into_iter()
            .map(|lead| {
                let bytes = self.encoder.encode(&lead, now_ms);
                (lead, bytes)
            })
            .collect();
        Prepared {
            encoded,
            dead_letters: batch.dead_letters,
            offsets: batch.offsets,
            consumer: batch.consumer,
        }
    }

    async fn write(
        &self,
        producer: &FutureProducer,
        prepared: Prepared,
    ) -> Result<Written, SinkError> {
        let config = &self.setup.config;
        let written = Written {
            leads: prepared.encoded.len(),
            dead_letters: prepared.dead_letters.len(),
            produced: prepared
                .encoded
                .iter()
                .map(|(lead, _)| (lead.source, lead.form_id.clone(), lead.created_time_ms))
                .collect(),
            reasons: prepared
                .dead_letters
                .iter()
                .map(|letter| letter.reason.clone())
                .collect(),
        };
        let Prepared {
            encoded,
            dead_letters,
            offsets,
            consumer,
        } = prepared;

        producer.begin_transaction()?;
        let mut deliveries = Vec::with_capacity(encoded.len() + dead_letters.len() + offsets.len());

        for (lead, bytes) in &encoded {
            let headers = OwnedHeaders::new()
                .insert(header("form_id", &lead.form_id))
                .insert(header("page_id", &lead.page_id))
                .insert(header("source", lead.source.as_str()));
            let record = FutureRecord::to(&config.leads_topic)
                .key(lead.lead_id.as_bytes())
                .payload(bytes.as_slice())
                .headers(headers);
            deliveries.push(enqueue(producer, record).await?);
        }

        for letter in &dead_letters {
            let mut headers = OwnedHeaders::new()
                .insert(header("reason", &letter.reason))
                .insert(header("detail", &letter.detail))
                .insert(header("form_id", &letter.form_id))
                .insert(header("page_id", &letter.page_id))
                .insert(header("source", letter.source.as_str()));
            if let Some(error) = &letter.graph_error {
                headers = headers.insert(header("graph_code", &error.code.to_string()));
                if let Some(subcode) = error.error_subcode {
                    headers = headers.insert(header("graph_subcode", &subcode.to_string()));
                }
                if let Some(trace) = &error.fbtrace_id {
                    headers = headers.insert(header("fbtrace_id", trace));
                }
            }
            let record = FutureRecord::to(&config.dead_letter_topic)
                .key(letter.key.as_bytes())
                .payload(letter.payload.as_slice())
                .headers(headers);
            deliveries.push(enqueue(producer, record).await?);
        }

        for offset in &offsets {
            let record = FutureRecord::to(&config.offsets_topic)
                .key(offset.key.as_bytes())
                .payload(offset.payload.as_slice());
            deliveries.push(enqueue(producer, record).await?);
        }

        let timeout = config.transaction_timeout;
        if let Some(position) = consumer {
            let producer = producer.clone();
            tokio::task::spawn_blocking(move || {
                producer.send_offsets_to_transaction(&position.offsets, &position.group, timeout)
            })
            .await
            .expect("send_offsets_to_transaction does not panic")?;
        }

        // Waiting for every delivery report before the commit lets the
        // commit's internal flush return at once; otherwise rdkafka's flush
        // polls for 100 ms while the producer's own thread takes the reports.
        let reports = tokio::time::timeout(timeout, futures::future::join_all(deliveries))
            .await
            .map_err(|_| {
                SinkError::Transaction(format!("records were not acknowledged within {timeout:?}"))
            })?;
        for report in reports {
            match report {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(SinkError::Kafka(error)),
                Err(_) => {
                    return Err(SinkError::Transaction(
                        "delivery report was lost".to_owned(),
                    ))
                }
            }
        }

        let committer = producer.clone();
        tokio::task::spawn_blocking(move || committer.commit_transaction(timeout))
            .await
            .expect("commit_transaction does not panic")?;
        Ok(written)
    }

    fn record(&self, result: &Result<Written, SinkError>) {
        let outcome = match result {
            Ok(_) => "committed",
            Err(_) => "aborted",
        };
        self.metrics
            .transactions
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
        let Ok(written) = result else {
            self.metrics.kafka_produce_errors.inc();
            return;
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        // Leads of one form and source come in runs, so the labelled
        // counter is looked up once per run rather than once per lead.
        for run in
            written
                .produced
                .chunk_by(|(source, form_id, _), (next_source, next_form_id, _)| {
                    source == next_source && form_id == next_form_id
                })
        {
            let (source, form_id, _) = &run[0];
            self.metrics
                .leads_produced
                .get_or_create(&SourceForm {
                    source: source.as_str().to_owned(),
                    form_id: form_id.clone(),
                })
                .inc_by(run.len() as u64);
            for (_, _, created_time_ms) in run {
                self.metrics
                    .lead_latency
                    .observe((now_ms - created_time_ms).max(0) as f64 / 1000.0);
            }
        }
        for reason in &written.reasons {
            self.metrics.dead_letter(reason);
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value.as_bytes()),
    }
}

/// Enqueues a record, waiting while librdkafka's local queue is full.
async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> Result<DeliveryFuture, SinkError> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => return Err(SinkError::Kafka(error)),
        }
    }
}

async fn new_producer(setup: &KafkaSetup) -> Result<FutureProducer, SinkError> {
    let producer: FutureProducer = setup.producer_config().create()?;
    let timeout = setup.config.transaction_timeout;
    let initialising = producer.clone();
    tokio::task::spawn_blocking(move || initialising.init_transactions(timeout))
        .await
        .expect("init_transactions does not panic")?;
    tracing::info!(transactional_id = %setup.config.transactional_id, "Kafka transactional producer ready");
    Ok(producer)
}

async fn abort(producer: &FutureProducer, timeout: Duration) -> Result<(), KafkaError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || producer.abort_transaction(timeout))
        .await
        .expect("abort_transaction does not panic")
}
