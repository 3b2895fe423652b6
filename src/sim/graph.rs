//! Graph API request routing and response bodies: which object and edge a
//! path names, and the JSON for nodes, `?ids=` lookups, `/leads` and
//! `/leadgen_forms` pages.
//!
//! Access checks, budget and faults run before these functions, in
//! `server.rs`; here the caller's Page is already known.

use serde_json::{json, Map, Value};

use super::error::GraphError;
use super::faults::EndpointKind;
use super::paging::{decode_cursor, encode_cursor, select_page, PageCursor, SortKey, TimeRange};
use super::query::{
    parse_fields, parse_filtering, parse_limit, select_fields, FORM_FIELDS, FORM_NODE_TYPE,
    LEAD_FIELDS, LEAD_NODE_TYPE, PAGE_FIELDS, PAGE_NODE_TYPE,
};
use super::store::{ObjectRef, Store};

/// Most ids one `?ids=` call may name.
pub(crate) const MAX_IDS: usize = 50;

/// Fields of a form when the request has no `fields`.
const DEFAULT_FORM_FIELDS: &[&str] = &[
    "id",
    "name",
    "status",
    "leads_count",
    "created_time",
    "locale",
];
/// Fields of a Page when the request has no `fields`.
const DEFAULT_PAGE_FIELDS: &[&str] = &["id", "name"];

/// A parsed Graph API request.
#[derive(Debug, Clone)]
pub(crate) struct GraphRequest {
    pub method: String,
    /// Version prefix such as `v25.0`, when the path has one.
    pub version: Option<String>,
    /// Path as received, used in `paging.next` links.
    pub path: String,
    pub route: Route,
    /// Query parameters in request order.
    pub params: Vec<(String, String)>,
    /// Access token from `access_token` or the `Authorization` header.
    pub token: Option<String>,
    /// `http://host:port` of the request, the prefix of `paging` links.
    pub origin: String,
}

/// Object and edge named by a path, after the version prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/`, used with `?ids=`.
    Root,
    /// `/{id}`.
    Node(String),
    /// `/{id}/{edge}`.
    Edge(String, String),
    /// Three or more segments; `components` is the part after the node.
    Unknown { components: String },
}

impl GraphRequest {
    /// Parses the parts of an HTTP request the Graph API looks at.
    pub fn parse(
        method: &str,
        path: &str,
        query: Option<&str>,
        authorization: Option<&str>,
        origin: String,
    ) -> Self {
        let params: Vec<(String, String)> = query
            .map(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .map(|(name, value)| (name.into_owned(), value.into_owned()))
                    .collect()
            })
            .unwrap_or_default();

        let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let version = match segments.first() {
            Some(first) if is_version(first) => Some(segments.remove(0).to_owned()),
            _ => None,
        };
        let route = match segments.as_slice() {
            [] => Route::Root,
            [node] => Route::Node((*node).to_owned()),
            [node, edge] => Route::Edge((*node).to_owned(), (*edge).to_owned()),
            [_, rest @ ..] => Route::Unknown {
                components: format!("/{}/", rest.join("/")),
            },
        };

        let token = params
            .iter()
            .find(|(name, _)| name == "access_token")
            .map(|(_, value)| value.clone())
            .or_else(|| authorization.and_then(bearer_token));

        Self {
            method: method.to_owned(),
            version,
            path: path.to_owned(),
            route,
            params,
            token,
            origin,
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn fields(&self) -> Option<Vec<String>> {
        self.param("fields").map(parse_fields)
    }

    /// Ids named by `?ids=`, trimmed, without blanks or repeats.
    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for id in self.param("ids").unwrap_or_default().split(',') {
            let id = id.trim();
            if !id.is_empty() && !ids.iter().any(|seen| seen == id) {
                ids.push(id.to_owned());
            }
        }
        ids
    }

    /// Builds a link to the same request with `cursor_param` set to `cursor`
    /// and every other parameter, access token included, kept.
    fn page_link(&self, cursor_param: &str, cursor: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.params {
            if name != "after" && name != "before" {
                query.append_pair(name, value);
            }
        }
        query.append_pair(cursor_param, cursor);
        format!("{}{}?{}", self.origin, self.path, query.finish())
    }
}

/// Matches `vNN.N`, the version prefix of Graph API paths.
fn is_version(segment: &str) -> bool {
    let Some(number) = segment.strip_prefix('v') else {
        return false;
    };
    let mut parts = number.splitn(2, '.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    !major.is_empty()
        && !minor.is_empty()
        && major.chars().all(|c| c.is_ascii_digit())
        && minor.chars().all(|c| c.is_ascii_digit())
}

/// Reads the token of an `Authorization: OAuth <token>` or `Bearer <token>`
/// header, both of which the Graph API accepts.
fn bearer_token(header: &str) -> Option<String> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    let known = scheme.eq_ignore_ascii_case("oauth") || scheme.eq_ignore_ascii_case("bearer");
    (known && !token.is_empty()).then(|| token.to_owned())
}

/// Returns the endpoint kind of a request and the object ids it names, for
/// counting and fault matching.
pub(crate) fn classify(store: &Store, request: &GraphRequest) -> (EndpointKind, Vec<String>) {
    if request.method != "GET" {
        return (EndpointKind::Other, Vec::new());
    }
    match &request.route {
        Route::Root => (EndpointKind::Ids, request.ids()),
        Route::Node(id) => {
            let is_node = id == "me" || store.page(id).is_some() || store.form(id).is_some();
            let kind = if is_node {
                EndpointKind::Node
            } else {
                EndpointKind::Lead
            };
            (kind, vec![id.clone()])
        }
        Route::Edge(id, edge) => {
            let kind = match edge.as_str() {
                "leads" => EndpointKind::FormLeads,
                "leadgen_forms" => EndpointKind::LeadgenForms,
                _ => EndpointKind::Other,
            };
            (kind, vec![id.clone()])
        }
        Route::Unknown { .. } => (EndpointKind::Other, Vec::new()),
    }
}

/// Builds the response body of an authorised request made with the token of
/// `page_id`. Objects of other Pages are treated as missing.
pub(crate) fn execute(
    store: &Store,
    request: &GraphRequest,
    page_id: &str,
) -> Result<Value, GraphError> {
    let fields = request.fields();
    match &request.route {
        Route::Unknown { components } => Err(GraphError::unknown_path(components)),
        _ if request.method != "GET" => {
            let target = match &request.route {
                Route::Node(id) | Route::Edge(id, _) => id.as_str(),
                _ => "",
            };
            Err(GraphError::object_not_found(&request.method, target))
        }
        Route::Root => lookup_ids(store, request, page_id, fields.as_deref()),
        Route::Node(id) => {
            let id = if id == "me" { page_id } else { id.as_str() };
            let object = owned_object(store, id, page_id)
                .ok_or_else(|| GraphError::object_not_found("GET", id))?;
            render(store, object, fields.as_deref()).map(Value::Object)
        }
        Route::Edge(id, edge) => {
            let id = if id == "me" { page_id } else { id.as_str() };
            let object = owned_object(store, id, page_id)
                .ok_or_else(|| GraphError::object_not_found("GET", id))?;
            match (object, edge.as_str()) {
                (ObjectRef::Form(form), "leads") => {
                    let range = match request.param("filtering") {
                        Some(raw) => parse_filtering(raw)?,
                        None => TimeRange::default(),
                    };
                    list_page(
                        request,
                        &form.leads,
                        |lead| &lead.key,
                        &range,
                        |lead| {
                            select_fields(
                                &lead.body,
                                fields.as_deref().unwrap_or_default(),
                                LEAD_FIELDS,
                                LEAD_NODE_TYPE,
                            )
                        },
                    )
                }
                (ObjectRef::Page(page), "leadgen_forms") => {
                    let forms = store.forms_of_page(&page.id);
                    list_page(
                        request,
                        &forms,
                        |form| &form.key,
                        &TimeRange::default(),
                        |form| render(store, ObjectRef::Form(form), fields.as_deref()),
                    )
                }
                (object, edge) => Err(GraphError::nonexisting_field(edge, node_type(object))),
            }
        }
    }
}

fn owned_object<'a>(store: &'a Store, id: &str, page_id: &str) -> Option<ObjectRef<'a>> {
    let (object, owner) = store.resolve(id)?;
    (owner == page_id).then_some(object)
}

fn node_type(object: ObjectRef<'_>) -> &'static str {
    match object {
        ObjectRef::Page(_) => PAGE_NODE_TYPE,
        ObjectRef::Form(_) => FORM_NODE_TYPE,
        ObjectRef::Lead(_) => LEAD_NODE_TYPE,
    }
}

/// Renders one object with the requested fields. Without `fields`, a lead
/// has only its id, while forms and Pages get their default fields.
fn render(
    store: &Store,
    object: ObjectRef<'_>,
    fields: Option<&[String]>,
) -> Result<Map<String, Value>, GraphError> {
    let defaults =
        |names: &[&str]| -> Vec<String> { names.iter().map(|&n| n.to_owned()).collect() };
    match object {
        ObjectRef::Lead(lead) => select_fields(
            &lead.body,
            fields.unwrap_or_default(),
            LEAD_FIELDS,
            LEAD_NODE_TYPE,
        ),
        ObjectRef::Form(form) => {
            let page_name = store
                .page(&form.page_id)
                .map(|p| p.name.as_str())
                .unwrap_or_default();
            let requested =
                fields.map_or_else(|| defaults(DEFAULT_FORM_FIELDS), <[String]>::to_vec);
            select_fields(
                &form.to_json(page_name),
                &requested,
                FORM_FIELDS,
                FORM_NODE_TYPE,
            )
        }
        ObjectRef::Page(page) => {
            let requested =
                fields.map_or_else(|| defaults(DEFAULT_PAGE_FIELDS), <[String]>::to_vec);
            select_fields(&page.to_json(), &requested, PAGE_FIELDS, PAGE_NODE_TYPE)
        }
    }
}

/// Looks up `GET /?ids=A,B` and returns a map from id to object. Fails with
/// code 100 when any id is missing or there are more than [`MAX_IDS`].
fn lookup_ids(
    store: &Store,
    request: &GraphRequest,
    page_id: &str,
    fields: Option<&[String]>,
) -> Result<Value, GraphError> {
    let ids = request.ids();
    if ids.is_empty() {
        return Err(GraphError::invalid_parameter(
            "Missing required parameter: ids",
        ));
    }
    if ids.len() > MAX_IDS {
        return Err(GraphError::too_many_ids(ids.len(), MAX_IDS));
    }

    let missing: Vec<String> = ids
        .iter()
        .filter(|id| owned_object(store, id, page_id).is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(GraphError::aliases_not_found(&missing));
    }

    let mut result = Map::new();
    for id in ids {
        if let Some(object) = owned_object(store, &id, page_id) {
            result.insert(id, Value::Object(render(store, object, fields)?));
        }
    }
    Ok(Value::Object(result))
}

/// Builds one page of a list edge: `{"data":[...],"paging":{...}}`, or
/// `{"data":[]}` with no paging when nothing matches.
fn list_page<T>(
    request: &GraphRequest,
    items: &[T],
    key_of: impl Fn(&T) -> &SortKey,
    range: &TimeRange,
    render_item: impl Fn(&T) -> Result<Map<String, Value>, GraphError>,
) -> Result<Value, GraphError> {
    let limit = parse_limit(request.param("limit"))?;
    let cursor = page_cursor(request)?;
    let selection = select_page(items, &key_of, range, cursor.as_ref(), limit);

    let mut data = Vec::with_capacity(selection.indices.len());
    for &index in &selection.indices {
        data.push(Value::Object(render_item(&items[index])?));
    }
    let (Some(&first), Some(&last)) = (selection.indices.first(), selection.indices.last()) else {
        return Ok(json!({ "data": [] }));
    };

    let before = encode_cursor(key_of(&items[first]));
    let after = encode_cursor(key_of(&items[last]));
    let mut paging = Map::new();
    paging.insert(
        "cursors".into(),
        json!({ "before": before, "after": after }),
    );
    if selection.has_older {
        paging.insert("next".into(), json!(request.page_link("after", &after)));
    }
    if selection.has_newer && cursor.is_some() {
        paging.insert(
            "previous".into(),
            json!(request.page_link("before", &before)),
        );
    }
    Ok(json!({ "data": data, "paging": Value::Object(paging) }))
}

/// Reads `after`, or else `before`, as a cursor.
fn page_cursor(request: &GraphRequest) -> Result<Option<PageCursor>, GraphError> {
    let decode = |name: &str, raw: &str| {
        decode_cursor(raw).ok_or_else(|| {
            GraphError::invalid_parameter(format!("The {name} cursor '{raw}' is not valid"))
        })
    };
    if let Some(raw) = request.param("after") {
        return Ok(Some(PageCursor::After(decode("after", raw)?)));
    }
    if let Some(raw) = request.param("before") {
        return Ok(Some(PageCursor::Before(decode("before", raw)?)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, query: &str) -> GraphRequest {
        GraphRequest::parse("GET", path, Some(query), None, "http://127.0.0.1:1".into())
    }

    #[test]
    fn version_prefix_is_optional() {
        assert_eq!(
            request("/v25.0/123/leads", "").route,
            Route::Edge("123".into(), "leads".into())
        );
        assert_eq!(
            request("/v25.0/123/leads", "").version.as_deref(),
            Some("v25.0")
        );
        assert_eq!(
            request("/123/leads", "").route,
            Route::Edge("123".into(), "leads".into())
        );
        assert_eq!(request("/v3.1/", "").route, Route::Root);
        assert_eq!(request("/", "").route, Route::Root);
        assert_eq!(
            request("/v25/9", "").route,
            Route::Edge("v25".into(), "9".into())
        );
    }

    #[test]
    fn deep_paths_are_unknown() {
        assert_eq!(
            request("/v25.0/1/leads/extra", "").route,
            Route::Unknown {
                components: "/leads/extra/".into()
            }
        );
    }

    #[test]
    fn token_comes_from_query_or_header() {
        assert_eq!(
            request("/1", "access_token=abc").token.as_deref(),
            Some("abc")
        );
        let from_header =
            GraphRequest::parse("GET", "/1", None, Some("OAuth xyz"), "http://h".into());
        assert_eq!(from_header.token.as_deref(), Some("xyz"));
        let bearer = GraphRequest::parse("GET", "/1", None, Some("Bearer t"), "http://h".into());
        assert_eq!(bearer.token.as_deref(), Some("t"));
        let basic = GraphRequest::parse("GET", "/1", None, Some("Basic t"), "http://h".into());
        assert_eq!(basic.token, None);
    }

    #[test]
    fn ids_are_trimmed_and_unique() {
        assert_eq!(request("/", "ids=a,%20b,,a").ids(), ["a", "b"]);
    }

    #[test]
    fn page_link_keeps_params_and_replaces_cursor() {
        let request = request(
            "/v25.0/9/leads",
            "fields=id,created_time&limit=100&after=old&access_token=t%2B1&filtering=%5B%5D",
        );
        let link = request.page_link("after", "a+b/c=");
        assert_eq!(
            link,
            "http://127.0.0.1:1/v25.0/9/leads?fields=id%2Ccreated_time&limit=100\
             &access_token=t%2B1&filtering=%5B%5D&after=a%2Bb%2Fc%3D"
        );
    }
}
