//! End-to-end tests: a simulator on 127.0.0.1 driven over HTTP with reqwest.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::DateTime;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::*;

const PAGE: &str = "100000000000001";
const TOKEN: &str = "EAASIM100000000000001";
const OTHER_PAGE_TOKEN: &str = "EAASIM100000000000002";
const FORM: &str = "200000001000001";
const OTHER_PAGE_FORM: &str = "200000002000001";
const LEAD_FIELDS: &str = "id,created_time,field_data,ad_id,form_id,is_organic,platform";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Two Pages with two forms of 250 leads each.
async fn start_sim(adjust: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig::generated(7, 2, 2, 250);
    adjust(&mut config);
    start(config, loopback()).await.expect("simulator starts")
}

struct Response {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Response {
    fn error_code(&self) -> Option<i64> {
        self.body["error"]["code"].as_i64()
    }

    fn header_json(&self, name: &str) -> Value {
        let text = self
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("response lacks header {name}"))
            .to_str()
            .expect("header is text");
        serde_json::from_str(text).expect("header is JSON")
    }

    fn page_call_count(&self, page_id: &str) -> i64 {
        self.header_json("x-business-use-case-usage")[page_id][0]["call_count"]
            .as_i64()
            .expect("call_count is a number")
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client builds")
}

async fn get_url(url: &str) -> Response {
    let response = client().get(url).send().await.expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body is text");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Response {
        status,
        headers,
        body,
    }
}

async fn get(sim: &SimHandle, path: &str, params: &[(&str, &str)]) -> Response {
    let mut url = url::Url::parse(&format!("{}{path}", sim.base_url())).expect("valid URL");
    url.query_pairs_mut().extend_pairs(params);
    get_url(url.as_str()).await
}

fn created_seconds(lead: &Value) -> i64 {
    let text = lead["created_time"].as_str().expect("created_time is text");
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z")
        .expect("created_time parses")
        .timestamp()
}

/// Follows `paging.next` from the first page and returns every page.
async fn all_pages(sim: &SimHandle, params: &[(&str, &str)]) -> Vec<Response> {
    let mut pages = vec![get(sim, &format!("/v25.0/{FORM}/leads"), params).await];
    while let Some(next) = pages.last().and_then(|p| p.body["paging"]["next"].as_str()) {
        assert!(pages.len() < 50, "paging does not end");
        let next = next.to_owned();
        pages.push(get_url(&next).await);
    }
    pages
}

#[tokio::test]
async fn form_leads_page_newest_first() {
    let sim = start_sim(|_| {}).await;
    let pages = all_pages(
        &sim,
        &[
            ("fields", LEAD_FIELDS),
            ("limit", "100"),
            ("access_token", TOKEN),
        ],
    )
    .await;

    assert_eq!(pages.len(), 3);
    for page in &pages {
        assert_eq!(page.status, 200, "{}", page.body);
    }
    assert_eq!(pages[0].body["data"].as_array().expect("data").len(), 100);
    assert_eq!(pages[1].body["data"].as_array().expect("data").len(), 100);
    assert_eq!(pages[2].body["data"].as_array().expect("data").len(), 50);
    assert!(pages[0].body["paging"]["next"].is_string());
    assert!(pages[2].body["paging"].get("next").is_none());
    assert!(pages[2].body["paging"]["cursors"]["after"].is_string());

    let leads: Vec<&Value> = pages
        .iter()
        .flat_map(|p| p.body["data"].as_array().expect("data"))
        .collect();
    let ids: Vec<&str> = leads
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 250);
    assert_eq!(ids, sim.lead_ids(FORM));

    for pair in leads.windows(2) {
        let (newer, older) = (created_seconds(pair[0]), created_seconds(pair[1]));
        assert!(newer >= older, "leads not newest first");
        if newer == older {
            let newer_id: u64 = pair[0]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("numeric");
            let older_id: u64 = pair[1]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("numeric");
            assert!(newer_id > older_id, "same-second leads not ordered by id");
        }
    }
    assert!(
        leads
            .windows(2)
            .any(|pair| pair[0]["created_time"] == pair[1]["created_time"]),
        "no two leads share a second"
    );
}

#[tokio::test]
async fn next_link_keeps_query_params() {
    let sim = start_sim(|_| {}).await;
    let filter = r#"[{"field":"time_created","operator":"GREATER_THAN","value":0}]"#;
    let first = get(
        &sim,
        &format!("/v25.0/{FORM}/leads"),
        &[
            ("fields", "id"),
            ("limit", "10"),
            ("filtering", filter),
            ("access_token", TOKEN),
        ],
    )
    .await;
    let next = first.body["paging"]["next"].as_str().expect("next link");
    let next = url::Url::parse(next).expect("next is an absolute URL");

    assert_eq!(next.path(), format!("/v25.0/{FORM}/leads"));
    assert_eq!(next.port(), Some(sim.addr().port()));
    let params: Vec<(String, String)> = next.query_pairs().into_owned().collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(param("access_token"), Some(TOKEN));
    assert_eq!(param("filtering"), Some(filter));
    assert_eq!(param("limit"), Some("10"));
    assert_eq!(param("fields"), Some("id"));
    assert_eq!(
        param("after"),
        first.body["paging"]["cursors"]["after"].as_str()
    );
}

#[tokio::test]
async fn limit_is_clamped_and_defaults() {
    let sim = start_sim(|_| {}).await;
    let path = format!("/v25.0/{FORM}/leads");
    let default = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(default.body["data"].as_array().expect("data").len(), 25);
    let large = get(&sim, &path, &[("limit", "1000"), ("access_token", TOKEN)]).await;
    assert_eq!(large.body["data"].as_array().expect("data").len(), 100);
}

#[tokio::test]
async fn time_filters_select_leads() {
    let sim = start_sim(|_| {}).await;
    let all = sim.leads(FORM);
    let pivot = created_seconds(&all[100]);
    let upper = created_seconds(&all[20]);
    let expected_after: Vec<&str> = all
        .iter()
        .filter(|l| created_seconds(l) > pivot)
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    let expected_between: Vec<&str> = all
        .iter()
        .filter(|l| created_seconds(l) > pivot && created_seconds(l) < upper)
        .map(|l| l["id"].as_str().expect("id"))
        .collect();

    let greater =
        format!(r#"[{{"field":"time_created","operator":"GREATER_THAN","value":{pivot}}}]"#);
    let response = get(
        &sim,
        &format!("/v25.0/{FORM}/leads"),
        &[
            ("limit", "100"),
            ("filtering", &greater),
            ("access_token", TOKEN),
        ],
    )
    .await;
    let ids: Vec<&str> = response.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, expected_after);

    let between = format!(
        r#"[{{"field":"time_created","operator":"GREATER_THAN","value":{pivot}}},
            {{"field":"time_created","operator":"LESS_THAN","value":"{upper}"}}]"#
    );
    let response = get(
        &sim,
        &format!("/{FORM}/leads"),
        &[
            ("limit", "100"),
            ("filtering", &between),
            ("access_token", TOKEN),
        ],
    )
    .await;
    let ids: Vec<&str> = response.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, expected_between);

    let future = r#"[{"field":"time_created","operator":"GREATER_THAN","value":99999999999}]"#;
    let empty = get(
        &sim,
        &format!("/v25.0/{FORM}/leads"),
        &[("filtering", future), ("access_token", TOKEN)],
    )
    .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body, json!({"data": []}));
}

#[tokio::test]
async fn invalid_filtering_is_code_100() {
    let sim = start_sim(|_| {}).await;
    for filter in [
        "not json",
        r#"[{"field":"ad_id","operator":"EQUAL","value":1}]"#,
        r#"[{"field":"time_created","operator":"IN_RANGE","value":1}]"#,
    ] {
        let response = get(
            &sim,
            &format!("/v25.0/{FORM}/leads"),
            &[("filtering", filter), ("access_token", TOKEN)],
        )
        .await;
        assert_eq!(response.status, 400, "{filter}");
        assert_eq!(response.error_code(), Some(100), "{filter}");
        assert_eq!(response.body["error"]["type"], "OAuthException", "{filter}");
    }
}

#[tokio::test]
async fn fields_select_lead_contents() {
    let sim = start_sim(|_| {}).await;
    let lead_id = sim.lead_ids(FORM)[0].clone();

    let bare = get(
        &sim,
        &format!("/v25.0/{lead_id}"),
        &[("access_token", TOKEN)],
    )
    .await;
    assert_eq!(bare.status, 200);
    assert_eq!(bare.body, json!({ "id": lead_id }));

    let listed = get(
        &sim,
        &format!("/v25.0/{FORM}/leads"),
        &[("access_token", TOKEN)],
    )
    .await;
    for lead in listed.body["data"].as_array().expect("data") {
        assert_eq!(lead.as_object().expect("object").len(), 1, "{lead}");
    }

    let chosen = get(
        &sim,
        &format!("/v25.0/{lead_id}"),
        &[
            ("fields", "created_time,field_data"),
            ("access_token", TOKEN),
        ],
    )
    .await;
    let keys: HashSet<&str> = chosen
        .body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["id", "created_time", "field_data"]));

    let unknown = get(
        &sim,
        &format!("/v25.0/{lead_id}"),
        &[("fields", "id,bogus"), ("access_token", TOKEN)],
    )
    .await;
    assert_eq!(unknown.error_code(), Some(100));
}

#[tokio::test]
async fn example_lead_is_oldest_of_first_form() {
    let sim = start_sim(|_| {}).await;
    let oldest = sim.lead_ids(FORM).last().cloned().expect("form has leads");
    let lead = get(
        &sim,
        &format!("/v25.0/{oldest}"),
        &[
            ("fields", "field_data,custom_disclaimer_responses"),
            ("access_token", TOKEN),
        ],
    )
    .await;
    assert_eq!(
        lead.body["field_data"],
        json!([
            {"name": "car_make", "values": ["Honda"]},
            {"name": "full_name", "values": ["Joe Example"]},
            {"name": "email", "values": ["joe@example.com"]},
            {"name": "selected_dealer", "values": ["99213450"]},
        ])
    );
    assert_eq!(
        lead.body["custom_disclaimer_responses"][0]["is_checked"],
        "1"
    );
}

#[tokio::test]
async fn ids_lookup_returns_map_or_code_100() {
    let sim = start_sim(|_| {}).await;
    let ids = sim.lead_ids(FORM);
    let pair = format!("{},{}", ids[0], ids[1]);

    let found = get(
        &sim,
        "/v25.0/",
        &[
            ("ids", &pair),
            ("fields", "id,created_time"),
            ("access_token", TOKEN),
        ],
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.body);
    let map = found.body.as_object().expect("object");
    assert_eq!(map.len(), 2);
    assert_eq!(found.body[&ids[0]]["id"], ids[0].as_str());
    assert!(found.body[&ids[1]]["created_time"].is_string());

    let with_unknown = format!("{},123456789", ids[0]);
    let missing = get(
        &sim,
        "/v25.0/",
        &[("ids", &with_unknown), ("access_token", TOKEN)],
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.error_code(), Some(100));
    assert_eq!(
        missing.body["error"]["message"],
        "(#100) Some of the aliases you requested do not exist: 123456789"
    );

    let many: Vec<String> = ids.iter().take(51).cloned().collect();
    let too_many = get(
        &sim,
        "/",
        &[("ids", &many.join(",")), ("access_token", TOKEN)],
    )
    .await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.error_code(), Some(100));

    let other_page_lead = sim.lead_ids(OTHER_PAGE_FORM)[0].clone();
    let foreign = get(
        &sim,
        "/",
        &[("ids", &other_page_lead), ("access_token", TOKEN)],
    )
    .await;
    assert_eq!(foreign.error_code(), Some(100));
}

#[tokio::test]
async fn unknown_and_deleted_objects_are_100_33() {
    let sim = start_sim(|_| {}).await;
    let unknown = get(&sim, "/v25.0/424242", &[("access_token", TOKEN)]).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.error_code(), Some(100));
    assert_eq!(unknown.body["error"]["error_subcode"], 33);
    assert_eq!(unknown.body["error"]["type"], "GraphMethodException");
    assert!(unknown.body["error"]["fbtrace_id"].is_string());

    let lead_id = sim.lead_ids(FORM)[3].clone();
    assert!(sim.delete_lead(&lead_id));
    let deleted = get(
        &sim,
        &format!("/v25.0/{lead_id}"),
        &[("access_token", TOKEN)],
    )
    .await;
    assert_eq!(deleted.error_code(), Some(100));
    assert_eq!(deleted.body["error"]["error_subcode"], 33);

    let foreign_form = get(
        &sim,
        &format!("/v25.0/{OTHER_PAGE_FORM}/leads"),
        &[("access_token", TOKEN)],
    )
    .await;
    assert_eq!(foreign_form.body["error"]["error_subcode"], 33);
}

#[tokio::test]
async fn token_errors_match_meta() {
    let sim = start_sim(|_| {}).await;
    let path = format!("/v25.0/{FORM}/leads");

    let wrong = get(&sim, &path, &[("access_token", "EAAnot-a-token")]).await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.error_code(), Some(190));
    assert_eq!(wrong.body["error"]["type"], "OAuthException");
    assert!(wrong.headers.contains_key("www-authenticate"));

    let missing = get(&sim, &path, &[]).await;
    assert_eq!(missing.error_code(), Some(104));

    let other_page = get(&sim, &path, &[("access_token", OTHER_PAGE_TOKEN)]).await;
    assert_eq!(other_page.error_code(), Some(100));

    sim.set_token_state(PAGE, TokenState::Expired);
    let expired = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(expired.status, 400);
    assert_eq!(expired.error_code(), Some(190));
    assert_eq!(expired.body["error"]["error_subcode"], 463);

    sim.set_token_state(PAGE, TokenState::PermissionRevoked);
    let revoked = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(revoked.error_code(), Some(200));
    let page_read = get(&sim, "/v25.0/me", &[("access_token", TOKEN)]).await;
    assert_eq!(page_read.status, 200);
    assert_eq!(page_read.body["id"], PAGE);

    sim.set_access_token(PAGE, "EAAreplacement");
    let old = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(old.error_code(), Some(190));
    let new = get(&sim, &path, &[("access_token", "EAAreplacement")]).await;
    assert_eq!(new.status, 200);
}

#[tokio::test]
async fn token_in_authorization_header_is_accepted() {
    let sim = start_sim(|_| {}).await;
    let response = client()
        .get(format!("{}/v25.0/{FORM}/leads", sim.base_url()))
        .header("Authorization", format!("OAuth {TOKEN}"))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn appsecret_proof_is_enforced() {
    let sim = start_sim(|config| config.app_secret = Some("app-secret".into())).await;
    let path = format!("/v25.0/{FORM}/leads");

    let missing = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.error_code(), Some(100));
    assert_eq!(
        missing.body["error"]["message"],
        "API calls from the server require an appsecret_proof argument"
    );
    assert_eq!(missing.body["error"]["type"], "GraphMethodException");

    let wrong_proof = appsecret_proof("other-secret", TOKEN);
    let wrong = get(
        &sim,
        &path,
        &[("access_token", TOKEN), ("appsecret_proof", &wrong_proof)],
    )
    .await;
    assert_eq!(wrong.error_code(), Some(100));
    assert_eq!(
        wrong.body["error"]["message"],
        "Invalid appsecret_proof provided in the API argument"
    );

    let proof = appsecret_proof("app-secret", TOKEN);
    let right = get(
        &sim,
        &path,
        &[("access_token", TOKEN), ("appsecret_proof", &proof)],
    )
    .await;
    assert_eq!(right.status, 200, "{}", right.body);
    let next = right.body["paging"]["next"].as_str().expect("next link");
    assert_eq!(get_url(next).await.status, 200);
}

#[tokio::test]
async fn budget_exhaustion_returns_80005() {
    let sim = start_sim(|config| config.daily_budget_per_page = Some(4)).await;
    let path = format!("/v25.0/{FORM}/leads");

    let mut counts = Vec::new();
    for _ in 0..4 {
        let response = get(&sim, &path, &[("access_token", TOKEN)]).await;
        assert_eq!(response.status, 200);
        assert!(response.header_json("x-app-usage")["call_count"].is_number());
        counts.push(response.page_call_count(PAGE));
    }
    assert_eq!(counts, [25, 50, 75, 100]);

    let limited = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(limited.status, 400);
    assert_eq!(limited.error_code(), Some(80005));
    assert_eq!(limited.body["error"]["is_transient"], true);
    let usage = limited.header_json("x-business-use-case-usage");
    assert_eq!(usage[PAGE][0]["type"], "lead_generation");
    assert_eq!(usage[PAGE][0]["call_count"], 100);
    assert!(usage[PAGE][0]["estimated_time_to_regain_access"].as_i64() > Some(0));

    // The other Page has its own budget.
    let other = get(
        &sim,
        &format!("/v25.0/{OTHER_PAGE_FORM}/leads"),
        &[("access_token", OTHER_PAGE_TOKEN)],
    )
    .await;
    assert_eq!(other.status, 200);

    sim.set_daily_budget(Some(8));
    let raised = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(raised.status, 200);
    assert_eq!(raised.page_call_count(PAGE), 62);
}

#[tokio::test]
async fn budget_window_rolls() {
    let sim = start_sim(|config| {
        config.daily_budget_per_page = Some(2);
        // Long enough that the first two calls stay in the window on a
        // loaded machine, short enough to wait out in a test.
        config.budget_window = Duration::from_secs(2);
    })
    .await;
    let path = format!("/v25.0/{FORM}/leads");
    for _ in 0..2 {
        assert_eq!(
            get(&sim, &path, &[("access_token", TOKEN)]).await.status,
            200
        );
    }
    assert_eq!(
        get(&sim, &path, &[("access_token", TOKEN)])
            .await
            .error_code(),
        Some(80005)
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        get(&sim, &path, &[("access_token", TOKEN)]).await.status,
        200
    );
}

#[tokio::test]
async fn usage_headers_on_every_response() {
    let sim = start_sim(|_| {}).await;
    let success = get(&sim, "/v25.0/me", &[("access_token", TOKEN)]).await;
    let error = get(&sim, "/v25.0/1", &[("access_token", "bad")]).await;
    for response in [&success, &error] {
        let app = response.header_json("x-app-usage");
        for key in ["call_count", "total_cputime", "total_time"] {
            assert!(app[key].is_number(), "{key} missing");
        }
        assert!(response.headers.contains_key("x-business-use-case-usage"));
        assert_eq!(
            response
                .headers
                .get("facebook-api-version")
                .map(|v| v.as_bytes()),
            Some(&b"v25.0"[..])
        );
    }
    assert_eq!(success.page_call_count(PAGE), 0);
    assert_eq!(error.header_json("x-business-use-case-usage"), json!({}));
}

#[tokio::test]
async fn injected_fault_fires_exactly_k_times() {
    let sim = start_sim(|_| {}).await;
    let path = format!("/v25.0/{FORM}/leads");
    sim.inject(
        Fault::new(EndpointKind::FormLeads, FaultAction::transient_error())
            .for_object(FORM)
            .times(3),
    );

    let other_form = get(
        &sim,
        "/v25.0/200000001000002/leads",
        &[("access_token", TOKEN)],
    )
    .await;
    assert_eq!(other_form.status, 200);

    for _ in 0..3 {
        let faulted = get(&sim, &path, &[("access_token", TOKEN)]).await;
        assert_eq!(faulted.status, 400);
        assert_eq!(faulted.error_code(), Some(2));
        assert_eq!(faulted.body["error"]["is_transient"], true);
    }
    let recovered = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(recovered.status, 200);

    let stats = sim.stats();
    assert_eq!(stats.faults_applied, 3);
    assert_eq!(stats.errors_by_code.get(&2), Some(&3));
    assert_eq!(stats.endpoint(EndpointKind::FormLeads).calls, 5);
}

#[tokio::test]
async fn server_error_faults() {
    let sim = start_sim(|_| {}).await;
    let lead_id = sim.lead_ids(FORM)[0].clone();
    let path = format!("/v25.0/{lead_id}");
    sim.inject(Fault::new(EndpointKind::Lead, FaultAction::html_server_error(502)).times(1));
    sim.inject(Fault::new(EndpointKind::Any, FaultAction::server_error(503)).times(1));

    let html = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(html.status, 502);
    assert!(html.body.as_str().is_some_and(|b| b.contains("<html")));

    let json_error = get(&sim, &path, &[("access_token", TOKEN)]).await;
    assert_eq!(json_error.status, 503);
    assert_eq!(json_error.error_code(), Some(2));

    assert_eq!(
        get(&sim, &path, &[("access_token", TOKEN)]).await.status,
        200
    );
}

#[tokio::test]
async fn damaging_faults_change_leads() {
    let sim = start_sim(|_| {}).await;
    let path = format!("/v25.0/{FORM}/leads");
    let params = [("fields", LEAD_FIELDS), ("access_token", TOKEN)];

    sim.inject(
        Fault::new(
            EndpointKind::FormLeads,
            FaultAction::omit_field("field_data"),
        )
        .times(1),
    );
    let without = get(&sim, &path, &params).await;
    assert_eq!(without.status, 200);
    for lead in without.body["data"].as_array().expect("data") {
        assert!(lead.get("field_data").is_none());
    }

    sim.inject(Fault::new(EndpointKind::FormLeads, FaultAction::invalid_created_time()).times(1));
    let unparseable = get(&sim, &path, &params).await;
    assert_eq!(
        unparseable.body["data"][0]["created_time"],
        "28/02/2015 08:49"
    );

    let normal = get(&sim, &path, &params).await;
    assert!(normal.body["data"][0]["field_data"].is_array());
}

#[tokio::test]
async fn delay_fault_slows_response() {
    let sim = start_sim(|_| {}).await;
    sim.inject(
        Fault::new(
            EndpointKind::Node,
            FaultAction::delay(Duration::from_millis(300)),
        )
        .times(1),
    );
    let started = std::time::Instant::now();
    let response = get(&sim, "/v25.0/me", &[("access_token", TOKEN)]).await;
    assert_eq!(response.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn new_leads_do_not_shift_pages() {
    let sim = start_sim(|_| {}).await;
    let path = format!("/v25.0/{FORM}/leads");
    let first = get(&sim, &path, &[("limit", "100"), ("access_token", TOKEN)]).await;
    let added = sim.add_leads(FORM, 3);
    let next = first.body["paging"]["next"].as_str().expect("next link");
    let second = get_url(next).await;
    let expected: Vec<String> = sim.lead_ids(FORM)[103..203].to_vec();
    let ids: Vec<String> = second.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|l| l["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, expected);

    let newest = get(
        &sim,
        &path,
        &[
            ("limit", "3"),
            ("fields", "created_time"),
            ("access_token", TOKEN),
        ],
    )
    .await;
    let newest_ids: Vec<&str> = newest.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        newest_ids,
        [added[2].as_str(), added[1].as_str(), added[0].as_str()]
    );
}

#[tokio::test]
async fn leadgen_forms_lists_page_forms() {
    let sim = start_sim(|_| {}).await;
    let response = get(
        &sim,
        &format!("/v25.0/{PAGE}/leadgen_forms"),
        &[("access_token", TOKEN)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let forms = response.body["data"].as_array().expect("data");
    assert_eq!(forms.len(), 2);
    for form in forms {
        assert_eq!(form["status"], "ACTIVE");
        assert_eq!(form["leads_count"], 250);
        assert!(form["name"].is_string());
        assert!(form["created_time"]
            .as_str()
            .is_some_and(|t| t.ends_with("+0000")));
    }
    assert!(response.body["paging"].get("next").is_none());

    sim.add_form(
        PAGE,
        SimForm {
            id: "300".into(),
            name: "Added form".into(),
            initial_leads: 5,
        },
    );
    let paged = get(
        &sim,
        &format!("/{PAGE}/leadgen_forms"),
        &[("limit", "2"), ("access_token", TOKEN)],
    )
    .await;
    assert_eq!(paged.body["data"].as_array().expect("data").len(), 2);
    let next = paged.body["paging"]["next"].as_str().expect("next link");
    let rest = get_url(next).await;
    assert_eq!(rest.body["data"].as_array().expect("data").len(), 1);
    assert_eq!(sim.lead_ids("300").len(), 5);
}

#[tokio::test]
async fn admin_endpoints_drive_simulator() {
    let sim = start_sim(|_| {}).await;
    let http = client();
    let base = sim.base_url();

    let added: Value = http
        .post(format!("{base}/_sim/leads"))
        .json(&json!({"form_id": FORM, "count": 2}))
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("JSON body");
    let ids = added["ids"].as_array().expect("ids");
    assert_eq!(ids.len(), 2);
    assert_eq!(sim.lead_ids(FORM).len(), 252);

    let unknown_form = http
        .post(format!("{base}/_sim/leads"))
        .json(&json!({"form_id": "nope", "count": 1}))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(unknown_form.status().as_u16(), 404);

    let fault = json!({"endpoint": "lead", "times": 1,
        "action": {"kind": "graph_error", "code": 17, "message": "(#17) User request limit reached"}});
    let injected = http
        .post(format!("{base}/_sim/faults"))
        .json(&fault)
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(injected.status().as_u16(), 204);
    let lead_id = ids[0].as_str().expect("id");
    let faulted = get(
        &sim,
        &format!("/v25.0/{lead_id}"),
        &[("access_token", TOKEN)],
    )
    .await;
    assert_eq!(faulted.error_code(), Some(17));

    let expire = http
        .put(format!("{base}/_sim/pages/{PAGE}/token"))
        .json(&json!({"state": "expired"}))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(expire.status().as_u16(), 204);
    let expired = get(
        &sim,
        &format!("/v25.0/{lead_id}"),
        &[("access_token", TOKEN)],
    )
    .await;
    assert_eq!(expired.body["error"]["error_subcode"], 463);

    let deleted = http
        .delete(format!("{base}/_sim/leads/{lead_id}"))
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(deleted.status().as_u16(), 204);

    let leads: Vec<Value> = http
        .get(format!("{base}/_sim/forms/{FORM}/leads"))
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("JSON body");
    assert_eq!(leads.len(), 251);
    assert!(leads[0]["field_data"].is_array());

    let stats: SimStats = http
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .expect("request succeeds")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(stats.total.calls, 2);
    assert_eq!(stats.endpoint(EndpointKind::Lead).errors, 2);
    assert_eq!(stats.page(PAGE).calls, 2);
    assert_eq!(stats.errors_by_code.get(&190), Some(&1));
    assert_eq!(stats.leads_created, 2);
}

#[tokio::test]
async fn raw_lead_edge_cases_are_served() {
    let sim = start_sim(|_| {}).await;
    let id = sim.insert_lead(
        FORM,
        json!({"id": "9100000000000000001", "form_id": FORM, "created_time": "not a time"}),
    );
    let lead = get(
        &sim,
        &format!("/v25.0/{id}"),
        &[
            ("fields", "created_time,field_data"),
            ("access_token", TOKEN),
        ],
    )
    .await;
    assert_eq!(lead.body, json!({"id": id, "created_time": "not a time"}));
}

#[tokio::test]
async fn lead_rate_creates_leads() {
    let sim = start_sim(|config| config.leads_per_second = 50.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.set_leads_per_second(0.0);
    let created = sim.stats().leads_created;
    assert!(
        (5..=50).contains(&created),
        "{created} leads in 0.5 s at 50/s"
    );
}

#[tokio::test]
async fn shutdown_stops_server() {
    let sim = start_sim(|_| {}).await;
    sim.shutdown();
    tokio::time::timeout(Duration::from_secs(5), sim.stopped())
        .await
        .expect("server stops within 5 s");
    let result = client()
        .get(format!("{}/v25.0/me", sim.base_url()))
        .send()
        .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn same_seed_serves_same_leads() {
    let first = start_sim(|_| {}).await;
    let second = start_sim(|_| {}).await;
    let strip_time = |leads: Vec<Value>| -> Vec<Value> {
        leads
            .into_iter()
            .map(|mut lead| {
                lead.as_object_mut().expect("object").remove("created_time");
                lead
            })
            .collect()
    };
    assert_eq!(
        strip_time(first.leads(FORM)),
        strip_time(second.leads(FORM))
    );
}
