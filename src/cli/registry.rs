//! The schema registry's compatibility check of the shipped lead schema,
//! shared by `validate` and `schema --check`.

use serde::Deserialize;

use crate::avro::{is_missing_subject, LEAD_SCHEMA, WRONG_REGISTRY_PATH_HINT};
use crate::config::SchemaRegistryConfig;
use crate::telemetry::error_chain;

/// Media type of the Confluent REST API.
const REGISTRY_MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's verdict on the shipped lead schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    Compatible,
    /// With the registry's explanation, when it sent one.
    Incompatible(Vec<String>),
    /// The subject has no version yet. The connector registers one at
    /// start-up.
    NotRegistered,
}

#[derive(Deserialize)]
struct CompatibilityResponse {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

/// Subject of the lead schema under the topic name strategy.
pub fn lead_subject(leads_topic: &str) -> String {
    format!("{leads_topic}-value")
}

/// Asks the registry whether [`LEAD_SCHEMA`] is compatible with the latest
/// version under `subject`. `Err` describes what failed and what to check.
pub async fn check_lead_schema(
    registry: &SchemaRegistryConfig,
    subject: &str,
) -> Result<Compatibility, String> {
    let url = format!(
        "{}/compatibility/subjects/{subject}/versions/latest?verbose=true",
        registry.url.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(registry.timeout)
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
    let mut request = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, REGISTRY_MEDIA_TYPE)
        .json(&serde_json::json!({ "schema": LEAD_SCHEMA }));
    if let Some(username) = &registry.username {
        request = request.basic_auth(
            username,
            registry.password.as_ref().map(|password| password.expose()),
        );
    }

    let response = request.send().await.map_err(|error| {
        format!(
            "no answer from the schema registry at schema_registry.url `{}`: {}; check schema_registry.url and that the registry is running",
            registry.display_url(),
            error_chain(&error.without_url())
        )
    })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::NOT_FOUND {
        if is_missing_subject(&body) {
            return Ok(Compatibility::NotRegistered);
        }
        return Err(format!(
            "the schema registry at schema_registry.url `{}` returned HTTP {status} without a Confluent error code to the compatibility check of subject `{subject}`, so the URL does not lead to the Confluent-compatible API: {}; {WRONG_REGISTRY_PATH_HINT}",
            registry.display_url(),
            body.trim()
        ));
    }
    if !status.is_success() {
        return Err(format!(
            "the schema registry at schema_registry.url `{}` returned HTTP {status} to the compatibility check of subject `{subject}`: {}; check the URL, the credentials and the registry's log",
            registry.display_url(),
            body.trim()
        ));
    }
    let answer: CompatibilityResponse = serde_json::from_str(&body).map_err(|error| {
        format!(
            "the schema registry at schema_registry.url `{}` returned an invalid compatibility response ({error}): {}; check that the URL points at the Confluent-compatible API",
            registry.display_url(),
            body.trim()
        )
    })?;
    if answer.is_compatible {
        Ok(Compatibility::Compatible)
    } else {
        Ok(Compatibility::Incompatible(answer.messages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{not_found_registry, registry_config};

    #[tokio::test]
    async fn errors_hide_url_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let closed = format!("http://user:registry-pass-1@127.0.0.1:{port}/apis/ccompat/v7");
        let not_found = not_found_registry("Not Found")
            .await
            .replace("http://", "http://user:registry-pass-1@");

        for url in [closed, not_found] {
            let message = check_lead_schema(&registry_config(url.clone()), "leads-value")
                .await
                .expect_err("the check fails");

            assert!(!message.contains("registry-pass-1"), "{message}");
            assert!(message.contains("user:[redacted]@127.0.0.1"), "{message}");
        }
    }

    #[tokio::test]
    async fn subject_not_found_is_not_registered() {
        let url = not_found_registry(
            r#"{"error_code":40401,"message":"Subject 'leads-value' not found."}"#,
        )
        .await;

        let result = check_lead_schema(&registry_config(url), "leads-value").await;

        assert_eq!(result, Ok(Compatibility::NotRegistered));
    }

    #[tokio::test]
    async fn other_404_fails_with_path_hint() {
        let url = not_found_registry(
            r#"{"status":404,"title":"RESTEASY003210: Could not find resource for full path"}"#,
        )
        .await;

        let message = check_lead_schema(&registry_config(url.clone()), "leads-value")
            .await
            .expect_err("a 404 without a Confluent error code is a wrong URL");

        assert!(message.contains(&url), "{message}");
        assert!(message.contains("404"), "{message}");
        assert!(message.contains("/apis/ccompat/v7"), "{message}");
    }
}
