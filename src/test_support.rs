//! Helpers shared by the unit tests of several modules.

use std::time::Duration;

use crate::config::SchemaRegistryConfig;

/// Starts a local registry stand-in that returns 404 with `body` to every
/// request, and returns its base URL.
pub async fn not_found_registry(body: &'static str) -> String {
    let app = axum::Router::new()
        .fallback(move || async move { (axum::http::StatusCode::NOT_FOUND, body) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// Returns registry settings for `url` without credentials.
pub fn registry_config(url: String) -> SchemaRegistryConfig {
    SchemaRegistryConfig {
        url,
        username: None,
        password: None,
        timeout: Duration::from_secs(5),
    }
}
