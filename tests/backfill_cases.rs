//! Bulk-read cases against the real broker and registry, with a fixture
//! Graph server that serves exact pages: empty pages that still have
//! `next`, answers without `paging`, and pages holding leads that cannot be
//! mapped.

mod common;

use std::time::Duration;

use common::{config, fixture, fixture_graph, read_leads, stack, PageSpec, Reader, Topics};
use serde_json::{json, Value};

const PAGE: &str = "100000000000001";
const FORM: &str = "200000000000001";
const OTHER_FORM: &str = "200000000000002";

fn page_of(leads: &[&str], next: Option<&str>) -> String {
    let data: Vec<Value> = leads
        .iter()
        .map(|name| {
            serde_json::from_str(&fixture(&format!("graph/{name}"))).expect("fixture is JSON")
        })
        .collect();
    let mut body = json!({ "data": data });
    if let Some(cursor) = next {
        body["paging"] = json!({
            "cursors": {"before": "AA", "after": cursor},
            "next": format!("{{{{BASE}}}}/v25.0/{FORM}/leads?after={cursor}")
        });
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_page_with_next_is_followed_and_missing_paging_ends() {
    let stack = stack();
    let graph = fixture_graph(
        vec![
            (FORM, None, fixture("graph/b2-empty-page-with-next.json")),
            (
                FORM,
                Some("QQ"),
                page_of(&["l1-empty-answer.json", "l2-several-answers.json"], None),
            ),
            (OTHER_FORM, None, fixture("graph/b3-no-paging.json")),
        ],
        vec![],
    )
    .await;
    let topics = Topics::new("b2-b3");
    let config = config(
        &stack,
        &graph.url,
        &topics,
        &[PageSpec {
            id: PAGE,
            token: "fixture-token",
            forms: &[FORM, OTHER_FORM],
        }],
        "",
    );
    let reader = Reader::new(&stack, &topics.leads);

    let running = common::Running::start(config).await;
    let records = read_leads(
        &stack,
        &reader,
        2,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    running.stop().await;

    let mut keys: Vec<&str> = records.iter().map(|record| record.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["900000000000001", "900000000000002"]);
    let requests = graph.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|request| request.starts_with(FORM) && request.contains("after=QQ")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|request| request.starts_with(OTHER_FORM)),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_keep_every_answer_through_kafka() {
    let stack = stack();
    let graph = fixture_graph(
        vec![(
            FORM,
            None,
            page_of(
                &[
                    "l1-empty-answer.json",
                    "l2-several-answers.json",
                    "l5-organic.json",
                    "meta-example-lead.json",
                ],
                None,
            ),
        )],
        vec![],
    )
    .await;
    let topics = Topics::new("lead-content");
    let config = config(
        &stack,
        &graph.url,
        &topics,
        &[PageSpec {
            id: PAGE,
            token: "fixture-token",
            forms: &[FORM],
        }],
        "",
    );
    let reader = Reader::new(&stack, &topics.leads);

    let running = common::Running::start(config).await;
    let records = read_leads(
        &stack,
        &reader,
        4,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    running.stop().await;

    assert_eq!(records.len(), 4);
    let by_id = |id: &str| {
        records
            .iter()
            .find(|record| record.key == id)
            .unwrap_or_else(|| panic!("lead {id} missing"))
    };

    let empty = by_id("900000000000001").field_data();
    assert_eq!(empty.get("company_name"), Some(&vec![]));
    let several = by_id("900000000000002").field_data();
    assert_eq!(
        several.get("preferred_days"),
        Some(&vec!["monday".to_owned(), "friday".to_owned()])
    );

    let organic = by_id("900000000000003");
    assert_eq!(organic.string("ad_id"), None);
    assert_eq!(organic.boolean("is_organic"), Some(true));
    assert_eq!(
        organic.field_data().get("full_name"),
        Some(&vec!["Zoë Ünal 😀".to_owned()])
    );
    assert_eq!(
        organic.field_data().get("city"),
        Some(&vec!["東京".to_owned()])
    );

    let example = by_id("900000000000006");
    assert_eq!(
        example.timestamp_millis("created_time"),
        Some(1_425_113_354_000)
    );
    assert_eq!(
        example.field_data().get("selected_dealer"),
        Some(&vec!["99213450".to_owned()])
    );
    assert_eq!(
        example.headers.get("form_id").map(String::as_str),
        Some(FORM)
    );
    assert_eq!(
        example.headers.get("page_id").map(String::as_str),
        Some(PAGE)
    );
    assert_eq!(
        example.headers.get("source").map(String::as_str),
        Some("BACKFILL")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmappable_leads_are_dead_lettered_and_offset_follows_produced_leads() {
    let stack = stack();
    let graph = fixture_graph(
        vec![(
            FORM,
            None,
            page_of(
                &[
                    "l2-several-answers.json",
                    "l3-unparseable-time.json",
                    "l4-no-fields.json",
                    "l1-empty-answer.json",
                ],
                None,
            ),
        )],
        vec![("900000000000005", fixture("graph/l4-no-fields.json"))],
    )
    .await;
    let topics = Topics::new("b4");
    let config = config(
        &stack,
        &graph.url,
        &topics,
        &[PageSpec {
            id: PAGE,
            token: "fixture-token",
            forms: &[FORM],
        }],
        "",
    );
    let leads = Reader::new(&stack, &topics.leads);
    let dead = Reader::new(&stack, &topics.dead_letter);
    let offsets = Reader::new(&stack, &topics.offsets);

    let running = common::Running::start(config).await;
    let records = read_leads(
        &stack,
        &leads,
        2,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    let letters = dead
        .read(2, Duration::from_secs(30), Duration::from_secs(3))
        .await;
    running.stop().await;

    let mut keys: Vec<&str> = records.iter().map(|record| record.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["900000000000001", "900000000000002"]);

    assert_eq!(
        letters.len(),
        2,
        "one dead letter per unmappable lead, written once"
    );
    let bad_time = letters
        .iter()
        .find(|letter| letter.key.as_deref() == Some("900000000000004"))
        .expect("bad time dead-lettered");
    assert_eq!(
        bad_time.headers.get("reason").map(String::as_str),
        Some("invalid_time")
    );
    assert_eq!(
        bad_time.headers.get("form_id").map(String::as_str),
        Some(FORM)
    );
    let original: Value = serde_json::from_slice(bad_time.payload.as_deref().expect("payload"))
        .expect("payload is the original JSON");
    assert_eq!(original["created_time"], "01/05/2024 10:00");
    let no_fields = letters
        .iter()
        .find(|letter| letter.key.as_deref() == Some("900000000000005"))
        .expect("fieldless lead dead-lettered");
    assert_eq!(
        no_fields.headers.get("reason").map(String::as_str),
        Some("missing_field")
    );
    let rereads = graph
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|request| request.starts_with("900000000000005?"))
        .count();
    assert!(
        (1..=3).contains(&rereads),
        "the fieldless lead is read again a bounded number of times, not {rereads}"
    );

    let stored = offsets
        .read(usize::MAX, Duration::from_secs(5), Duration::ZERO)
        .await;
    let latest = stored.last().expect("an offset record was written");
    let offset: Value =
        serde_json::from_slice(latest.payload.as_deref().expect("offset payload")).unwrap();
    // 2024-05-01T10:00:05Z: the newest produced lead, not the wall clock.
    assert_eq!(offset["watermark"], 1_714_557_605);
}
