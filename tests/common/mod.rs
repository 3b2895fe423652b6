//! Shared pieces of the integration tests: the real Kafka broker and schema
//! registry started by `scripts/stack up`, per-test topics, a connector run
//! in-process, and a `read_committed` reader that decodes lead records
//! through the registry.
//!
//! Tests that need the broker or the registry fail, never skip, when either
//! is unreachable.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use apache_avro::types::Value as AvroValue;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use leadgen_connector::config::Config;
use leadgen_connector::connector::Connector;
use leadgen_connector::sim::{self, SimConfig, SimForm, SimHandle, SimPage};

/// Addresses of the test stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub bootstrap: String,
    pub registry_url: String,
}

/// The running stack; panics with the fix when Kafka or the registry does
/// not answer.
pub fn stack() -> Stack {
    let stack = Stack {
        bootstrap: std::env::var("LEADGEN_KAFKA_BOOTSTRAP")
            .unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
        registry_url: std::env::var("LEADGEN_SCHEMA_REGISTRY_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".to_owned()),
    };
    let kafka_address = stack
        .bootstrap
        .split(',')
        .next()
        .expect("split yields at least one item");
    assert!(
        reachable(kafka_address),
        "Kafka is not reachable at {kafka_address}; start the test stack with `scripts/stack up`"
    );
    let registry =
        url::Url::parse(&stack.registry_url).expect("LEADGEN_SCHEMA_REGISTRY_URL is a URL");
    let registry_address = format!(
        "{}:{}",
        registry.host_str().expect("registry URL has a host"),
        registry
            .port_or_known_default()
            .expect("registry URL has a port")
    );
    assert!(
        reachable(&registry_address),
        "schema registry is not reachable at {registry_address}; start the test stack with `scripts/stack up`"
    );
    stack
}

fn reachable(address: &str) -> bool {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(3)).is_ok())
}

/// A name unique to this test run, for topics and transactional ids.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock is after 1970")
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}-{count}", std::process::id())
}

/// Topic names and transactional id of one test.
#[derive(Debug, Clone)]
pub struct Topics {
    pub leads: String,
    pub offsets: String,
    pub dead_letter: String,
    pub notifications: String,
    pub transactional_id: String,
}

impl Topics {
    pub fn new(test: &str) -> Self {
        let base = unique(test);
        Self {
            leads: format!("{base}.leads"),
            offsets: format!("{base}.offsets"),
            dead_letter: format!("{base}.dead-letter"),
            notifications: format!("{base}.notifications"),
            transactional_id: format!("{base}-tx"),
        }
    }
}

/// One `[[pages]]` entry.
pub struct PageSpec<'a> {
    pub id: &'a str,
    pub token: &'a str,
    pub forms: &'a [&'a str],
}

/// Test-specific parts of a config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra lines of the `[graph]` section.
    pub graph: String,
    /// Extra lines of the `[backfill]` section.
    pub backfill: String,
    /// Webhook verify token; `Some` turns the webhook receiver on.
    pub webhook_verify_token: Option<String>,
    /// Extra lines of the `[webhook]` section.
    pub webhook: String,
    /// Webhook listener address; default `127.0.0.1:0`.
    pub webhook_listen: Option<String>,
    /// Admin listener address; default `127.0.0.1:0`.
    pub admin_listen: Option<String>,
}

/// A free TCP port on 127.0.0.1, for a connector run as a child process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a local port is free")
        .local_addr()
        .expect("bound address")
        .port()
}

/// App secret of the webhook tests, as in Meta's signed example cases.
pub const APP_SECRET: &str = "test_secret";

/// Builds a config through the same TOML parser users go through.
pub fn config(
    stack: &Stack,
    graph_url: &str,
    topics: &Topics,
    pages: &[PageSpec<'_>],
    extra_backfill: &str,
) -> Config {
    let options = Options {
        backfill: extra_backfill.to_owned(),
        ..Options::default()
    };
    config_with(stack, graph_url, topics, pages, &options)
}

/// Lines of a config section: `extra`, then each default whose key `extra`
/// does not set.
fn section(extra: &str, defaults: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = extra.lines().map(str::to_owned).collect();
    for (key, value) in defaults {
        let set = extra.lines().any(|line| {
            line.trim_start().starts_with(&format!("{key} "))
                || line.trim_start().starts_with(&format!("{key}="))
        });
        if !set {
            lines.push(format!("{key} = {value}"));
        }
    }
    lines.join("\n")
}

/// Returns a simulated world of `page`, each of its forms named `form_name`
/// with `initial_leads` leads.
pub fn one_form_world(
    seed: u64,
    page: &PageSpec<'_>,
    form_name: &str,
    initial_leads: usize,
) -> SimConfig {
    SimConfig {
        seed,
        pages: vec![SimPage {
            id: page.id.to_owned(),
            access_token: page.token.to_owned(),
            forms: page
                .forms
                .iter()
                .map(|id| SimForm {
                    id: (*id).to_owned(),
                    name: form_name.to_owned(),
                    initial_leads,
                })
                .collect(),
        }],
        ..SimConfig::default()
    }
}

/// Starts the simulator on a free loopback port.
pub async fn start_sim(config: SimConfig) -> SimHandle {
    sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

/// Starts a connector that reads one Page from the simulator at `graph_url`.
pub async fn start_connector(
    stack: &Stack,
    graph_url: &str,
    topics: &Topics,
    page: PageSpec<'_>,
    options: &Options,
) -> Running {
    Running::start(config_with(stack, graph_url, topics, &[page], options)).await
}

/// Builds a config with webhook and Graph options.
pub fn config_with(
    stack: &Stack,
    graph_url: &str,
    topics: &Topics,
    pages: &[PageSpec<'_>],
    options: &Options,
) -> Config {
    let text = config_text(stack, graph_url, topics, pages, options);
    Config::parse(&text, &|_| None).expect("test config is valid")
}

/// The TOML text of a test config.
pub fn config_text(
    stack: &Stack,
    graph_url: &str,
    topics: &Topics,
    pages: &[PageSpec<'_>],
    options: &Options,
) -> String {
    let mut text = format!(
        r#"
[graph]
base_url = "{graph_url}"
version = "v25.0"
{graph}

[backfill]
{backfill}

[kafka]
bootstrap_servers = "{bootstrap}"
leads_topic = "{leads}"
offsets_topic = "{offsets}"
dead_letter_topic = "{dead_letter}"
notifications_topic = "{notifications}"
consumer_group = "{transactional_id}-group"
transactional_id = "{transactional_id}"
partitions = 3
transaction_timeout = "20s"

[schema_registry]
url = "{registry}"

[admin]
listen = "{admin_listen}"
"#,
        admin_listen = options.admin_listen.as_deref().unwrap_or("127.0.0.1:0"),
        graph = section(
            &options.graph,
            &[
                ("page_size", "100"),
                ("initial_backoff", "\"50ms\""),
                ("max_backoff", "\"1s\"")
            ]
        ),
        backfill = section(
            &options.backfill,
            &[
                ("interval", "\"1s\""),
                ("overlap", "\"10m\""),
                ("start", "1000000000"),
                ("window", "\"3650d\"")
            ],
        ),
        bootstrap = stack.bootstrap,
        leads = topics.leads,
        offsets = topics.offsets,
        dead_letter = topics.dead_letter,
        notifications = topics.notifications,
        transactional_id = topics.transactional_id,
        registry = stack.registry_url,
    );
    if let Some(token) = &options.webhook_verify_token {
        text.push_str(&format!(
            "\n[webhook]\nlisten = \"{}\"\npath = \"/webhook\"\nverify_token = \"{token}\"\n{}\n",
            options.webhook_listen.as_deref().unwrap_or("127.0.0.1:0"),
            options.webhook
        ));
    }
    for page in pages {
        let forms: Vec<String> = page
            .forms
            .iter()
            .map(|form| format!("\"{form}\""))
            .collect();
        text.push_str(&format!(
            "\n[[pages]]\nid = \"{}\"\naccess_token = \"{}\"\nforms = [{}]\n",
            page.id,
            page.token,
            forms.join(", ")
        ));
    }
    text
}

/// A connector running in this process.
pub struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    pub webhook_url: Option<String>,
    pub admin_url: String,
    pub metrics: std::sync::Arc<leadgen_connector::metrics::Metrics>,
    pub reloader: leadgen_connector::connector::Reloader,
}

impl Running {
    pub async fn start(config: Config) -> Self {
        let connector = Connector::start(config).await.expect("connector starts");
        let webhook_url = connector
            .webhook_addr()
            .map(|addr| format!("http://{addr}/webhook"));
        let admin_url = format!("http://{}", connector.admin_addr());
        let metrics = connector.metrics().clone();
        let reloader = connector.reloader();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(connector.run(shutdown.clone()));
        Self {
            shutdown,
            task,
            webhook_url,
            admin_url,
            metrics,
            reloader,
        }
    }

    /// Stops the connector and waits for its in-flight work.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("connector stops within a minute")
            .expect("connector task does not panic")
            .expect("connector run ends without error");
    }
}

/// A lead record as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub headers: HashMap<String, String>,
    pub fields: BTreeMap<String, AvroValue>,
}

impl Record {
    pub fn string(&self, field: &str) -> Option<String> {
        match self.fields.get(field)? {
            AvroValue::String(text) => Some(text.clone()),
            AvroValue::Union(_, inner) => match inner.as_ref() {
                AvroValue::String(text) => Some(text.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn boolean(&self, field: &str) -> Option<bool> {
        match self.fields.get(field)? {
            AvroValue::Boolean(flag) => Some(*flag),
            AvroValue::Union(_, inner) => match inner.as_ref() {
                AvroValue::Boolean(flag) => Some(*flag),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn timestamp_millis(&self, field: &str) -> Option<i64> {
        match self.fields.get(field)? {
            AvroValue::TimestampMillis(millis) | AvroValue::Long(millis) => Some(*millis),
            _ => None,
        }
    }

    pub fn field_data(&self) -> BTreeMap<String, Vec<String>> {
        let Some(AvroValue::Map(map)) = self.fields.get("field_data") else {
            panic!("record has no field_data map: {:?}", self.fields)
        };
        map.iter()
            .map(|(name, answers)| {
                let AvroValue::Array(items) = answers else {
                    panic!("answers of {name} are not an array")
                };
                let answers = items
                    .iter()
                    .map(|item| match item {
                        AvroValue::String(text) => text.clone(),
                        other => panic!("answer is not a string: {other:?}"),
                    })
                    .collect();
                (name.clone(), answers)
            })
            .collect()
    }
}

/// A raw record of any topic.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

/// Reads committed records of one topic from the beginning.
pub struct Reader {
    consumer: StreamConsumer,
}

impl Reader {
    pub fn new(stack: &Stack, topic: &str) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.bootstrap)
            .set("group.id", unique("test-reader"))
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("test consumer is created");
        consumer
            .subscribe(&[topic])
            .expect("test consumer subscribes");
        Self { consumer }
    }

    /// Reads until `count` records have arrived or `timeout` passes, then
    /// keeps reading for `settle` to catch records beyond `count`.
    pub async fn read(&self, count: usize, timeout: Duration, settle: Duration) -> Vec<RawRecord> {
        let mut records = Vec::new();
        let deadline = Instant::now() + timeout;
        let mut settle_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let until = match settle_deadline {
                Some(settle_end) => settle_end,
                None => deadline,
            };
            if now >= until {
                break;
            }
            match tokio::time::timeout(until - now, self.consumer.recv()).await {
                Ok(Ok(message)) => {
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
                    records.push(RawRecord {
                        key: message
                            .key()
                            .map(|key| String::from_utf8_lossy(key).into_owned()),
                        payload: message.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                    if records.len() >= count && settle_deadline.is_none() {
                        settle_deadline = Some(Instant::now() + settle);
                    }
                }
                // The topic may not exist yet when the reader starts first,
                // and a broker restart shows up as transport errors; both
                // pass, and a missing record still fails the count.
                Ok(Err(error)) => {
                    eprintln!("test consumer: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => break,
            }
        }
        records
    }
}

/// Decodes lead records through the schema registry.
pub async fn decode(stack: &Stack, records: &[RawRecord]) -> Vec<Record> {
    let decoder = AvroDecoder::new(SrSettings::new(stack.registry_url.clone()));
    let mut decoded = Vec::with_capacity(records.len());
    for record in records {
        let result = decoder
            .decode(record.payload.as_deref())
            .await
            .expect("lead record decodes through the registry");
        let AvroValue::Record(fields) = result.value else {
            panic!("lead record is not an Avro record")
        };
        decoded.push(Record {
            key: record.key.clone().expect("lead record has a key"),
            headers: record.headers.clone(),
            fields: fields.into_iter().collect(),
        });
    }
    decoded
}

/// Reads and decodes lead records.
pub async fn read_leads(
    stack: &Stack,
    reader: &Reader,
    count: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Record> {
    let raw = reader.read(count, timeout, settle).await;
    decode(stack, &raw).await
}

/// Asserts that no key repeats and returns the keys.
pub fn assert_unique_keys(records: &[Record]) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    for record in records {
        assert!(
            seen.insert(record.key.clone()),
            "lead {} was written more than once",
            record.key
        );
    }
    seen
}

/// Copies one `field_data` list of a Graph lead into a map.
pub fn graph_field_data(lead: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in lead["field_data"].as_array().expect("lead has field_data") {
        let name = entry["name"].as_str().expect("field has a name").to_owned();
        let values = entry["values"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|value| value.as_str().expect("answer is text").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        fields
            .entry(name)
            .or_default()
            .extend::<Vec<String>>(values);
    }
    fields
}

/// A Graph API stand-in that serves fixed bulk-read pages from files, for
/// cases whose exact bytes matter. Pages are chosen by form id and `after`
/// cursor; `{{BASE}}` in a body becomes the server's URL. Any other path
/// answers Meta's "object does not exist" error.
pub struct FixtureGraph {
    pub url: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub async fn fixture_graph(
    pages: Vec<(&str, Option<&str>, String)>,
    objects: Vec<(&str, String)>,
) -> FixtureGraph {
    use axum::extract::{Path, RawQuery, State};
    use axum::http::StatusCode;

    type Pages = std::sync::Arc<HashMap<(String, Option<String>), String>>;
    type Requests = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("fixture server binds");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    let pages: Pages = std::sync::Arc::new(
        pages
            .into_iter()
            .map(|(form, after, body)| {
                (
                    (form.to_owned(), after.map(str::to_owned)),
                    body.replace("{{BASE}}", &url),
                )
            })
            .collect(),
    );
    let requests: Requests = Default::default();
    let objects: Pages = std::sync::Arc::new(
        objects
            .into_iter()
            .map(|(id, body)| ((id.to_owned(), None), body))
            .collect(),
    );

    async fn leads(
        State((pages, requests)): State<(Pages, Requests)>,
        Path((_version, object)): Path<(String, String)>,
        RawQuery(query): RawQuery,
    ) -> (StatusCode, String) {
        let query = query.unwrap_or_default();
        requests
            .lock()
            .expect("request log lock")
            .push(format!("{object}?{query}"));
        let after = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "after")
            .map(|(_, value)| value.into_owned());
        match pages.get(&(object.clone(), after)) {
            Some(body) => (StatusCode::OK, body.clone()),
            None => not_found(&object),
        }
    }

    fn not_found(object: &str) -> (StatusCode, String) {
        (
            StatusCode::BAD_REQUEST,
            format!(
                r#"{{"error":{{"message":"Unsupported get request. Object with ID '{object}' does not exist","type":"GraphMethodException","code":100,"error_subcode":33,"fbtrace_id":"FIXTURE"}}}}"#
            ),
        )
    }

    async fn object(
        State((objects, requests)): State<(Pages, Requests)>,
        Path((_version, object)): Path<(String, String)>,
        RawQuery(query): RawQuery,
    ) -> (StatusCode, String) {
        requests
            .lock()
            .expect("request log lock")
            .push(format!("{object}?{}", query.unwrap_or_default()));
        match objects.get(&(object.clone(), None)) {
            Some(body) => (StatusCode::OK, body.clone()),
            None => not_found(&object),
        }
    }

    async fn many(
        State((objects, requests)): State<(Pages, Requests)>,
        Path(_version): Path<String>,
        RawQuery(query): RawQuery,
    ) -> (StatusCode, String) {
        let query = query.unwrap_or_default();
        requests
            .lock()
            .expect("request log lock")
            .push(format!("?{query}"));
        let ids = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "ids")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        let mut answer = serde_json::Map::new();
        for id in ids.split(',').filter(|id| !id.is_empty()) {
            match objects.get(&(id.to_owned(), None)) {
                Some(body) => {
                    answer.insert(
                        id.to_owned(),
                        serde_json::from_str(body).expect("fixture object is JSON"),
                    );
                }
                None => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!(
                            r#"{{"error":{{"message":"(#100) Some of the aliases you requested do not exist: {id}","type":"OAuthException","code":100,"fbtrace_id":"FIXTURE"}}}}"#
                        ),
                    )
                }
            }
        }
        (
            StatusCode::OK,
            serde_json::Value::Object(answer).to_string(),
        )
    }

    let app = axum::Router::new()
        .route(
            "/{version}/",
            axum::routing::get(many).with_state((objects.clone(), requests.clone())),
        )
        .route(
            "/{version}/{object}/leads",
            axum::routing::get(leads).with_state((pages, requests.clone())),
        )
        .route(
            "/{version}/{object}",
            axum::routing::get(object).with_state((objects, requests.clone())),
        );
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("fixture server runs");
    });
    FixtureGraph { url, requests }
}

/// `X-Hub-Signature-256` value of a body signed with [`APP_SECRET`].
pub fn sign(body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes())
        .expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A signed webhook body naming one lead, as Meta sends it.
pub fn webhook_body(page_id: &str, form_id: &str, lead_ids: &[String]) -> String {
    let changes: Vec<serde_json::Value> = lead_ids
        .iter()
        .map(|lead_id| {
            serde_json::json!({"field": "leadgen", "value": {
                "leadgen_id": lead_id, "page_id": page_id, "form_id": form_id, "created_time": chrono::Utc::now().timestamp()
            }})
        })
        .collect();
    serde_json::json!({"object": "page", "entry": [{"id": page_id, "time": chrono::Utc::now().timestamp(), "changes": changes}]}).to_string()
}

/// Posts a signed webhook and returns the HTTP status.
pub async fn post_webhook(url: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

/// Reads a file from `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read fixture {}: {error}", path.display()))
}
