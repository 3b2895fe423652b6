//! Helpers of the command-line tests: config files on disk, the
//! `leadgen-connector` binary run as a subprocess, and closed local ports.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{unique, PageSpec, Stack, Topics, APP_SECRET};

/// Maximum run time of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Exit status and output of one command.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Both streams, for messages that may go to either.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Returns the stdout line that starts with `prefix`.
    pub fn line(&self, prefix: &str) -> String {
        self.stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starts with `{prefix}` in:\n{}", self.all()))
            .to_owned()
    }
}

/// Runs `leadgen-connector` with `args` and waits for it.
pub async fn run_cli(args: &[&str]) -> CliOutput {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadgen-connector"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("`leadgen-connector {}` did not finish", args.join(" ")))
        .expect("leadgen-connector starts");
    let result = CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ leadgen-connector {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        result.code,
        result.stdout,
        result.stderr
    );
    result
}

/// Builds config file text for the test stack, a Graph API at `graph_url` and
/// `pages`, with the webhook receiver on when `webhook` is set.
pub fn config_text(
    stack: &Stack,
    graph_url: &str,
    topics: &Topics,
    pages: &[PageSpec<'_>],
    webhook: bool,
) -> String {
    let mut text = format!(
        r#"
[graph]
base_url = "{graph_url}"
version = "v25.0"
app_secret = "{APP_SECRET}"
initial_backoff = "50ms"
max_backoff = "1s"
max_attempts = 4

[backfill]
interval = "1h"
overlap = "10m"
start = 1000000000
window = "3650d"

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
listen = "127.0.0.1:0"
"#,
        bootstrap = stack.bootstrap,
        leads = topics.leads,
        offsets = topics.offsets,
        dead_letter = topics.dead_letter,
        notifications = topics.notifications,
        transactional_id = topics.transactional_id,
        registry = stack.registry_url,
    );
    if webhook {
        text.push_str(
            "\n[webhook]\nlisten = \"127.0.0.1:0\"\npath = \"/webhook\"\nverify_token = \"verify\"\n",
        );
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

/// Writes config text to a new file in the temp folder.
pub fn write_config(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("leadgen-cli-config")));
    std::fs::write(&path, text).expect("the temp folder is writable");
    path
}

/// Returns a local port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port exists");
    let port = listener.local_addr().expect("bound address").port();
    drop(listener);
    port
}
