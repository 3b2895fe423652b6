//! The shipped `connector.toml` parses as it is and documents every key.

use leadgen_connector::config::Config;

const SHIPPED: &str = include_str!("../connector.toml");

#[test]
fn shipped_config_parses_with_defaults() {
    let config = Config::parse(SHIPPED, &|_| None).expect("connector.toml is valid");

    assert_eq!(config.graph.base_url, "http://127.0.0.1:8090");
    assert_eq!(config.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(config.pages.len(), 2);
    assert_eq!(
        config.pages[0].access_token.expose(),
        "EAASIM100000000000001"
    );
    let webhook = config
        .webhook
        .expect("connector.toml has a [webhook] section");
    assert_eq!(
        webhook.body_read_timeout,
        std::time::Duration::from_secs(10)
    );
}

#[test]
fn shipped_config_takes_secrets_from_environment() {
    let lookup = |name: &str| match name {
        "META_PAGE_TOKEN_1" => Some("real-token".to_owned()),
        "META_APP_SECRET" => Some("real-secret".to_owned()),
        _ => None,
    };

    let config = Config::parse(SHIPPED, &lookup).expect("connector.toml is valid");

    assert_eq!(config.pages[0].access_token.expose(), "real-token");
    assert_eq!(
        config
            .graph
            .app_secret
            .as_ref()
            .map(|secret| secret.expose()),
        Some("real-secret")
    );
}

#[test]
fn shipped_config_documents_every_key() {
    let keys = [
        "base_url",
        "version",
        "app_secret",
        "request_timeout",
        "page_size",
        "max_attempts",
        "initial_backoff",
        "max_backoff",
        "id",
        "access_token",
        "forms",
        "interval",
        "overlap",
        "start",
        "window",
        "concurrency",
        "dedup_retention",
        "max_recent_ids",
        "listen",
        "path",
        "verify_token",
        "max_body_bytes",
        "body_read_timeout",
        "durable_timeout",
        "fetch_batch",
        "fetch_linger",
        "bootstrap_servers",
        "leads_topic",
        "offsets_topic",
        "dead_letter_topic",
        "notifications_topic",
        "consumer_group",
        "transactional_id",
        "create_topics",
        "partitions",
        "replication_factor",
        "transaction_timeout",
        "[kafka.properties]",
        "url",
        "username",
        "password",
        "timeout",
        "[admin]",
    ];
    for key in keys {
        let documented = SHIPPED.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.starts_with(&format!("{key} =")) || line.starts_with(key) && key.starts_with('[')
        });
        assert!(documented, "connector.toml does not show `{key}`");
    }
}
