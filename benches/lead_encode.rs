//! CPU cost of turning one Graph API lead object into Avro bytes. Each step
//! is measured alone (the JSON parse, the normalisation, the record
//! encoding) and chained, for a small lead (5 questions) and a large one
//! (100 questions with long texts). The connector reads a lead of the usual
//! shape straight from its JSON text (`normalise_usual`) and writes records
//! with `LeadEncoder::encode`, straight from the lead. The older routes are measured
//! beside them for comparison: through a `serde_json` value (`normalise`),
//! and through an `apache_avro` value (`lead_to_value`, then
//! `encode_datum`).
//!
//! Run with `cargo bench --bench lead_encode`. Times are the benchmark
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall-clock time, so
//! other work on the machine inflates them less. No registry is asked:
//! the writer uses the shipped schema under a fixed id.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};

use leadgen_connector::avro::{encode_datum, lead_schema, lead_to_value, LeadEncoder};
use leadgen_connector::lead::{normalise, normalise_usual, LeadContext, LeadSource};

const FORM_ID: &str = "200000001000001";
const PAGE_ID: &str = "100000000000001";
const INGESTED_TIME_MS: i64 = 1_700_000_000_000;

/// CPU time of the calling thread, as Criterion measures it.
struct ThreadCpuTime;

fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec, and
    // CLOCK_THREAD_CPUTIME_ID exists on every Linux since 2.6.12.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu_time().saturating_sub(started)
    }
    fn add(&self, left: &Duration, right: &Duration) -> Duration {
        *left + *right
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as with wall-clock time.
        const WALL_TIME: &WallTime = &WallTime;
        WALL_TIME.formatter()
    }
}

/// Builds a paid lead with the five questions of a typical contact form,
/// shaped like the simulator's generated leads.
fn small_lead() -> Value {
    json!({
        "id": "900000000000123",
        "created_time": "2024-05-01T10:00:00+0000",
        "form_id": FORM_ID,
        "ad_id": "600000000000001",
        "ad_name": "Spring offer, carousel",
        "adset_id": "610000000000001",
        "adset_name": "Spring offer, 25-44",
        "campaign_id": "620000000000001",
        "campaign_name": "Spring offer 2024",
        "is_organic": false,
        "platform": "ig",
        "field_data": [
            {"name": "full_name", "values": ["Zoë Ünal"]},
            {"name": "email", "values": ["zoe.unal@example.com"]},
            {"name": "phone_number", "values": ["+4915112345678"]},
            {"name": "city", "values": ["Köln"]},
            {"name": "preferred_days", "values": ["monday", "friday"]}
        ],
        "custom_disclaimer_responses": [
            {"checkbox_key": "optional_1", "is_checked": "1"}
        ]
    })
}

/// Builds a lead with 100 questions, each answered with about 400
/// characters of mixed-script text, about 40 kB of text in all.
fn large_lead() -> Value {
    let sentence = "Ich möchte gern einen Termin am Vormittag, bitte rufen Sie mich an. ";
    let long_text: String = sentence.repeat(6);
    let field_data: Vec<Value> = (0..100)
        .map(|index| {
            json!({
                "name": format!("custom_question_{index:03}"),
                "values": [format!("{index}: {long_text}")],
            })
        })
        .collect();
    let mut lead = small_lead();
    lead["field_data"] = Value::Array(field_data);
    lead
}

fn context() -> LeadContext<'static> {
    LeadContext {
        form_id: FORM_ID,
        page_id: PAGE_ID,
        source: LeadSource::Backfill,
    }
}

fn bench_lead(criterion: &mut Criterion<ThreadCpuTime>, size: &str, object: Value) {
    let schema = lead_schema();
    let json_bytes = object.to_string().into_bytes();
    let lead = normalise(&object, context()).expect("the benchmark lead is valid");
    let encoder = LeadEncoder::with_schema_id(1);
    let record = encoder.encode(&lead, INGESTED_TIME_MS);

    let mut group = criterion.benchmark_group(format!("lead_{size}"));
    group.throughput(Throughput::Elements(1));

    group.bench_function("parse_json", |bencher| {
        bencher
            .iter(|| serde_json::from_slice::<Value>(black_box(&json_bytes)).expect("valid JSON"))
    });
    group.bench_function("normalise", |bencher| {
        bencher.iter(|| normalise(black_box(&object), context()).expect("valid lead"))
    });
    group.bench_function("lead_to_value", |bencher| {
        bencher.iter(|| lead_to_value(black_box(&lead), INGESTED_TIME_MS))
    });
    group.bench_function("encode_datum", |bencher| {
        bencher.iter_batched(
            || lead_to_value(&lead, INGESTED_TIME_MS),
            |value| encode_datum(&schema, black_box(value)).expect("value fits the schema"),
            BatchSize::SmallInput,
        )
    });
    let json_text = String::from_utf8(json_bytes.clone()).expect("JSON is UTF-8");
    group.bench_function("normalise_usual", |bencher| {
        bencher.iter(|| normalise_usual(black_box(&json_text), context()).expect("usual lead"))
    });
    group.bench_function("write_record", |bencher| {
        bencher.iter(|| encoder.encode(black_box(&lead), INGESTED_TIME_MS))
    });
    group.bench_function("normalise_and_write", |bencher| {
        bencher.iter(|| {
            let lead = normalise(black_box(&object), context()).expect("valid lead");
            encoder.encode(&lead, INGESTED_TIME_MS)
        })
    });
    group.bench_function("read_and_write", |bencher| {
        bencher.iter(|| {
            let lead = normalise_usual(black_box(&json_text), context()).expect("usual lead");
            encoder.encode(&lead, INGESTED_TIME_MS)
        })
    });
    group.finish();

    println!(
        "lead_{size}: {} JSON bytes, {} record bytes (5 of them the wire-format prefix)",
        json_bytes.len(),
        record.len()
    );
}

fn lead_benches(criterion: &mut Criterion<ThreadCpuTime>) {
    bench_lead(criterion, "small", small_lead());
    bench_lead(criterion, "large", large_lead());
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = lead_benches
}
criterion_main!(benches);
