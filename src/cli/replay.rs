//! `leadgen-connector replay`: re-processes dead letters whose lead may
//! read and map now, for example after Meta returned "does not exist" for a
//! while.
//!
//! A dead letter qualifies when its key is a lead id and it has `form_id`
//! and `page_id` headers. Each qualifying lead is read again through the
//! Graph API and, when it maps and fits the schema, written with source
//! `REPLAY`. A dead-lettered lead id is already in its form's
//! deduplication memory, so that memory cannot tell whether a replay wrote
//! the lead. Instead every replayed lead gets a marker record in the
//! dead-letter topic, keyed by the lead id with header `reason=replayed`,
//! in the same transaction as the lead record, and later runs skip lead
//! ids that have a marker. Leads that still fail are reported and left as
//! they are; nothing new is dead-lettered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::{
    connect_sink, dedup_limits, lead_reader, stored_offsets, writer_setup, ConfigArg,
};
use crate::forms::PageHealth;
use crate::kafka::{Batch, DeadLetter, KafkaSetup};
use crate::lead::{is_graph_id, Lead, LeadContext, LeadSource};
use crate::offsets::{FormOffset, FormState, OffsetRecord};

/// Header value of `reason` on the marker of a replayed lead.
pub const REPLAYED_REASON: &str = "replayed";

/// Time allowed for reading the dead-letter topic up to its end.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed for one metadata or watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Offset to start at in every partition of the dead-letter topic.
    /// Default: the beginning.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub since_offset: i64,
    /// Maximum number of dead-lettered leads to read again in this run.
    #[arg(long, value_name = "N")]
    pub max: Option<usize>,
}

/// One record of the dead-letter topic.
#[derive(Debug, Clone)]
struct DeadRecord {
    partition: i32,
    offset: i64,
    key: Option<String>,
    headers: HashMap<String, String>,
}

impl DeadRecord {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    fn is_marker(&self) -> bool {
        self.header("reason") == Some(REPLAYED_REASON)
    }

    /// Lead id, form id and Page id of a dead-lettered lead.
    fn lead(&self) -> Option<(&str, &str, &str)> {
        let lead_id = self.key.as_deref().filter(|key| is_graph_id(key))?;
        let form_id = self.header("form_id")?;
        let page_id = self.header("page_id")?;
        (lead_id != form_id).then_some((lead_id, form_id, page_id))
    }
}

/// Counts of one run.
#[derive(Debug, Default)]
struct Tally {
    records: usize,
    not_leads: usize,
    already_replayed: usize,
    written: usize,
    still_failing: usize,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    if args.since_offset < 0 {
        anyhow::bail!(
            "--since-offset {} is negative; give 0 or a record offset",
            args.since_offset
        );
    }
    let setup = writer_setup(&config);
    let topic = config.kafka.dead_letter_topic.clone();
    let records = {
        let setup = setup.clone();
        let since = args.since_offset;
        tokio::task::spawn_blocking(move || read_dead_letters(&setup, since))
            .await
            .expect("reading the dead-letter topic does not panic")
    }
    .with_context(|| {
        format!(
            "cannot read dead-letter topic `{topic}` (kafka.dead_letter_topic) from Kafka at `{}`; check kafka.bootstrap_servers and that the broker is running",
            config.kafka.bootstrap_servers
        )
    })?;

    let mut tally = Tally {
        records: records.len(),
        ..Tally::default()
    };
    let replayed: HashSet<&str> = records
        .iter()
        .filter(|record| record.is_marker())
        .filter_map(|record| record.key.as_deref())
        .collect();
    // The latest dead letter of each lead id, in topic order.
    let mut candidates: BTreeMap<&str, &DeadRecord> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for record in records.iter().filter(|record| !record.is_marker()) {
        let Some((lead_id, _, _)) = record.lead() else {
            tally.not_leads += 1;
            continue;
        };
        if replayed.contains(lead_id) {
            tally.already_replayed += 1;
            continue;
        }
        if candidates.insert(lead_id, record).is_none() {
            order.push(lead_id);
        }
    }
    if let Some(max) = args.max {
        order.truncate(max);
    }

    let offsets = stored_offsets(&setup).await?;
    let reader = lead_reader(&config)?;
    let limits = dedup_limits(&config);
    let sink = if order.is_empty() {
        None
    } else {
        Some(connect_sink(&config, &setup).await?)
    };
    let mut states: HashMap<String, FormState> = HashMap::new();

    for lead_id in order {
        let record = candidates[lead_id];
        let (_, form_id, page_id) = record.lead().expect("candidates are lead records");
        let place = format!(
            "lead `{lead_id}` (form `{form_id}`, Page `{page_id}`, partition {} offset {})",
            record.partition, record.offset
        );
        let auth = match reader.pages.auth(page_id) {
            Ok(auth) => auth,
            Err(health) => {
                tally.still_failing += 1;
                println!("{place}: not read: {}", health_text(&health));
                continue;
            }
        };
        let context = LeadContext {
            form_id,
            page_id,
            source: LeadSource::Replay,
        };
        let lead = match reader.read_lead(&auth, lead_id, context).await {
            Ok(Ok(lead)) => lead,
            Ok(Err(letter)) => {
                tally.still_failing += 1;
                println!(
                    "{place}: still fails ({}): {}",
                    letter.reason, letter.detail
                );
                continue;
            }
            Err(error) => {
                tally.still_failing += 1;
                println!("{place}: Graph API read failed: {error}; run replay again later");
                continue;
            }
        };

        let state = states.entry(form_id.to_owned()).or_insert_with(|| {
            let offset = offsets
                .get(form_id)
                .cloned()
                .unwrap_or_else(|| FormOffset::new(form_id, page_id));
            FormState::new(offset, limits)
        });
        // A dead-lettered id is normally known already. When it is not, for
        // example after an offset reset, the offset records it so bulk reads
        // skip it.
        let created = lead.created_time_secs();
        let offset = (!state.is_known(lead_id, created))
            .then(|| state.next_offset(&[(lead_id.to_owned(), created)], None).0);

        let sink = sink
            .as_ref()
            .expect("a sink exists when there are candidates");
        let batch = Batch {
            dead_letters: vec![marker(&lead, &config.kafka.leads_topic)],
            leads: vec![lead],
            offsets: offset.iter().map(OffsetRecord::of).collect(),
            consumer: None,
        };
        sink.commit(batch).await.with_context(|| {
            format!("cannot write {place}; nothing of it was written, run replay again")
        })?;
        if let Some(offset) = offset {
            state.apply(offset);
        }
        tally.written += 1;
        println!("{place}: written to `{}`", config.kafka.leads_topic);
    }

    println!(
        "dead-letter topic `{topic}`: {} records read, {} leads written, {} already replayed earlier, {} still failing, {} records that are not leads skipped",
        tally.records, tally.written, tally.already_replayed, tally.still_failing, tally.not_leads
    );
    if tally.still_failing > 0 {
        anyhow::bail!(
            "{} dead-lettered leads still fail; see the lines above, fix their cause and run replay again",
            tally.still_failing
        );
    }
    Ok(())
}

fn health_text(health: &PageHealth) -> String {
    match health {
        PageHealth::Healthy => "the Page is healthy".to_owned(),
        PageHealth::TokenInvalid { detail } => {
            format!("the Page's access token does not work: {detail}; set a working token in the config")
        }
        PageHealth::PermissionMissing { detail } => {
            format!("the Page's access token lacks the leads permission: {detail}; grant leads_retrieval and set a new token in the config")
        }
    }
}

/// Builds the dead-letter record that marks a lead as written by a replay.
fn marker(lead: &Lead, leads_topic: &str) -> DeadLetter {
    let payload = serde_json::json!({
        "lead_id": lead.lead_id,
        "form_id": lead.form_id,
        "leads_topic": leads_topic,
        "replayed_time_ms": chrono::Utc::now().timestamp_millis(),
    });
    DeadLetter {
        key: lead.lead_id.clone(),
        payload: payload.to_string().into_bytes(),
        reason: REPLAYED_REASON.to_owned(),
        detail: format!("written to `{leads_topic}` by `leadgen-connector replay`; later replays skip this lead"),
        graph_error: None,
        form_id: lead.form_id.clone(),
        page_id: lead.page_id.clone(),
        source: LeadSource::Replay,
    }
}

/// Reads the committed records of the dead-letter topic from `since` (or
/// the earliest kept offset) in every partition up to its current end.
fn read_dead_letters(setup: &KafkaSetup, since: i64) -> anyhow::Result<Vec<DeadRecord>> {
    let topic = setup.config().dead_letter_topic.as_str();
    let consumer: BaseConsumer = setup.consumer_config("replay").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|entry| entry.name() == topic)
        .flat_map(|entry| entry.partitions().iter().map(|partition| partition.id()))
        .collect();

    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let start = since.max(low);
        if start < high {
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            remaining.insert(partition, high);
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment)?;

    let deadline = Instant::now() + READ_TIMEOUT;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            anyhow::bail!(
                "timed out after {} s; partitions still unread: {:?} (an open transaction may hold them)",
                READ_TIMEOUT.as_secs(),
                remaining.keys().collect::<Vec<_>>()
            );
        }
        if let Some(result) = consumer.poll(Duration::from_millis(500)) {
            let message = result?;
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|header| {
                            let value = header
                                .value
                                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                                .unwrap_or_default();
                            (header.key.to_owned(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(DeadRecord {
                partition: message.partition(),
                offset: message.offset(),
                key: message
                    .key()
                    .map(|key| String::from_utf8_lossy(key).into_owned()),
                headers,
            });
        }
        // Transaction markers end a partition without a message at
        // high - 1, so the consumer's position decides when it is read.
        for element in consumer.position()?.elements_for_topic(topic) {
            if let (Offset::Offset(position), Some(high)) =
                (element.offset(), remaining.get(&element.partition()))
            {
                if position >= *high {
                    remaining.remove(&element.partition());
                }
            }
        }
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    Ok(records)
}
