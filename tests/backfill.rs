//! The backfill path end to end against the simulator, the real broker and
//! the real registry: a complete first run, a restart that re-emits
//! nothing, new leads picked up on the next interval, and the compacted
//! offsets topic.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    assert_unique_keys, config, graph_field_data, read_leads, stack, PageSpec, Reader, Record,
    Running, Topics,
};
use leadgen_connector::lead::parse_created_time;
use leadgen_connector::sim::{self, SimConfig, SimForm, SimHandle, SimPage};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::Value;

const PAGE: &str = "100000000000001";
const TOKEN: &str = "EAASIM-backfill-token";
const FORMS: [&str; 3] = ["200000001000001", "200000001000002", "200000001000003"];

async fn simulator(leads_per_form: [usize; 3]) -> SimHandle {
    let forms = FORMS
        .iter()
        .zip(leads_per_form)
        .enumerate()
        .map(|(index, (id, initial_leads))| SimForm {
            id: (*id).to_owned(),
            name: format!("Form {index}"),
            initial_leads,
        })
        .collect();
    let config = SimConfig {
        seed: 7,
        pages: vec![SimPage {
            id: PAGE.to_owned(),
            access_token: TOKEN.to_owned(),
            forms,
        }],
        ..SimConfig::default()
    };
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

fn all_sim_leads(sim: &SimHandle) -> HashMap<String, (String, Value)> {
    FORMS
        .iter()
        .flat_map(|form| {
            sim.leads(form).into_iter().map(move |lead| {
                (
                    lead["id"].as_str().expect("lead id").to_owned(),
                    ((*form).to_owned(), lead),
                )
            })
        })
        .collect()
}

fn assert_matches_sim(record: &Record, form: &str, lead: &Value) {
    assert_eq!(
        record.string("form_id").as_deref(),
        Some(form),
        "lead {}",
        record.key
    );
    assert_eq!(record.string("page_id").as_deref(), Some(PAGE));
    assert_eq!(
        record.field_data(),
        graph_field_data(lead),
        "answers of lead {}",
        record.key
    );
    let created = parse_created_time(&lead["created_time"]).expect("simulator times parse");
    assert_eq!(
        record.timestamp_millis("created_time"),
        Some(created),
        "lead {}",
        record.key
    );
    assert_eq!(
        record.string("ad_id"),
        lead["ad_id"].as_str().map(str::to_owned),
        "lead {}",
        record.key
    );
    assert_eq!(
        record.boolean("is_organic"),
        lead["is_organic"].as_bool(),
        "lead {}",
        record.key
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_writes_every_lead_once() {
    let stack = stack();
    let sim = simulator([834, 833, 833]).await;
    let topics = Topics::new("complete-run");
    let config = config(
        &stack,
        &sim.base_url(),
        &topics,
        &[PageSpec {
            id: PAGE,
            token: TOKEN,
            forms: &FORMS,
        }],
        "interval = \"1h\"",
    );
    let reader = Reader::new(&stack, &topics.leads);

    let running = Running::start(config).await;
    let records = read_leads(
        &stack,
        &reader,
        2500,
        Duration::from_secs(180),
        Duration::from_secs(5),
    )
    .await;
    running.stop().await;

    assert_eq!(records.len(), 2500);
    assert_unique_keys(&records);
    let expected = all_sim_leads(&sim);
    assert_eq!(expected.len(), 2500);
    for record in &records {
        let (form, lead) = expected
            .get(&record.key)
            .unwrap_or_else(|| panic!("lead {} is not in the simulator", record.key));
        assert_matches_sim(record, form, lead);
    }

    let answers: Vec<BTreeMap<String, Vec<String>>> =
        records.iter().map(Record::field_data).collect();
    assert!(
        answers
            .iter()
            .any(|fields| fields.values().any(Vec::is_empty)),
        "some lead has an empty answer"
    );
    assert!(
        answers
            .iter()
            .any(|fields| fields.values().any(|values| values.len() > 1)),
        "some lead has several answers"
    );
    assert!(
        answers
            .iter()
            .any(|fields| fields.values().flatten().any(|value| !value.is_ascii())),
        "some answer has non-ASCII text"
    );
    assert!(
        records
            .iter()
            .any(|record| record.key.parse::<u64>().unwrap() > 1 << 53),
        "ids above 2^53 survive"
    );
    assert!(
        records
            .iter()
            .any(|record| record.string("ad_id").is_none()),
        "organic leads have no ad id"
    );
    let pages_read = sim.stats().endpoint(sim::EndpointKind::FormLeads).calls;
    assert!(
        pages_read >= 27,
        "2 500 leads at 100 a page take at least 27 page reads, not {pages_read}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_writes_only_new_leads() {
    let stack = stack();
    let sim = simulator([120, 90, 90]).await;
    let topics = Topics::new("restart");
    let make_config = || {
        config(
            &stack,
            &sim.base_url(),
            &topics,
            &[PageSpec {
                id: PAGE,
                token: TOKEN,
                forms: &FORMS,
            }],
            "",
        )
    };
    let reader = Reader::new(&stack, &topics.leads);

    let first = Running::start(make_config()).await;
    let before = reader
        .read(300, Duration::from_secs(120), Duration::from_secs(3))
        .await;
    first.stop().await;
    assert_eq!(before.len(), 300);

    let second = Running::start(make_config()).await;
    // Several one-second intervals: every form is read again with its overlap.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reread_calls = sim.stats().endpoint(sim::EndpointKind::FormLeads).calls;
    let after_restart = reader.read(1, Duration::from_secs(3), Duration::ZERO).await;
    assert!(
        after_restart.is_empty(),
        "restart re-emitted {} leads",
        after_restart.len()
    );

    let added: HashSet<String> = sim.add_leads(FORMS[1], 50).into_iter().collect();
    let new_records = read_leads(
        &stack,
        &reader,
        50,
        Duration::from_secs(60),
        Duration::from_secs(4),
    )
    .await;
    second.stop().await;

    assert!(reread_calls > 0);
    let keys = assert_unique_keys(&new_records);
    assert_eq!(
        keys, added,
        "exactly the 50 new leads arrive after the restart"
    );
    let first_keys: HashSet<String> = before
        .iter()
        .filter_map(|record| record.key.clone())
        .collect();
    assert!(first_keys.is_disjoint(&keys));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_topic_is_compacted_with_one_record_per_form() {
    let stack = stack();
    let sim = simulator([150, 40, 10]).await;
    let topics = Topics::new("offsets");
    let config = config(
        &stack,
        &sim.base_url(),
        &topics,
        &[PageSpec {
            id: PAGE,
            token: TOKEN,
            forms: &FORMS,
        }],
        "interval = \"1h\"",
    );
    let leads = Reader::new(&stack, &topics.leads);

    let running = Running::start(config).await;
    let records = leads
        .read(200, Duration::from_secs(120), Duration::from_secs(2))
        .await;
    running.stop().await;
    assert_eq!(records.len(), 200);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create()
        .unwrap();
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&topics.offsets)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let resource = described
        .into_iter()
        .next()
        .unwrap()
        .expect("offsets topic config is readable");
    assert_eq!(
        resource
            .get("cleanup.policy")
            .and_then(|entry| entry.value.as_deref()),
        Some("compact")
    );

    let stored = Reader::new(&stack, &topics.offsets)
        .read(usize::MAX, Duration::from_secs(5), Duration::ZERO)
        .await;
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for record in stored {
        let key = record.key.expect("offset records are keyed by form id");
        latest.insert(
            key,
            serde_json::from_slice(record.payload.as_deref().expect("offset payload")).unwrap(),
        );
    }
    assert_eq!(
        latest.keys().map(String::as_str).collect::<Vec<_>>(),
        FORMS.to_vec(),
        "one current record per form"
    );
    for form in FORMS {
        let newest = sim
            .leads(form)
            .iter()
            .map(|lead| parse_created_time(&lead["created_time"]).unwrap() / 1000)
            .max()
            .unwrap();
        assert_eq!(
            latest[form]["watermark"], newest,
            "watermark of {form} is its newest lead's time"
        );
    }
}
