//! Command-line entry point of leadgen-connector.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use leadgen_connector::cli;
use leadgen_connector::config::Config;
use leadgen_connector::connector::{Connector, Reloader};
use leadgen_connector::tail::TailOptions;
use leadgen_connector::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "leadgen-connector",
    version,
    about = "Moves Meta Lead Ads leads into Kafka as Avro records"
)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the connector until SIGINT or SIGTERM.
    Run {
        /// Path of the connector configuration.
        #[arg(long, short, default_value = "connector.toml")]
        config: PathBuf,
    },
    /// Prints the lead records that reach Kafka, decoded, as they arrive.
    Tail {
        #[arg(long, short, default_value = "connector.toml")]
        config: PathBuf,
        /// Start from the oldest record instead of the newest.
        #[arg(long)]
        from_beginning: bool,
        /// Print one JSON object per record.
        #[arg(long)]
        json: bool,
    },
    /// Prints the Avro schema of lead records, or checks it against the
    /// schema registry.
    Schema(cli::schema::SchemaArgs),
    /// Checks the configuration, Kafka, the topics, the schema registry and
    /// every Page's token, one line per check.
    Validate(cli::validate::ValidateArgs),
    /// Shows or resets the stored per-form offsets.
    Offsets(cli::offsets::OffsetsArgs),
    /// Reads one form's leads over a time range once, writing the new ones
    /// without moving the form's watermark.
    Backfill(cli::backfill::BackfillArgs),
    /// Reads dead-lettered leads again and writes those that map now.
    Replay(cli::replay::ReplayArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);

    match cli.command {
        Command::Run { config } => run(config).await,
        Command::Tail {
            config,
            from_beginning,
            json,
        } => {
            let config = load(&config)?;
            let shutdown = CancellationToken::new();
            stop_on_signal(shutdown.clone())?;
            let options = TailOptions {
                from_beginning,
                json,
            };
            leadgen_connector::tail::tail(&config, options, shutdown).await
        }
        Command::Schema(args) => cli::schema::run(args).await,
        Command::Validate(args) => cli::validate::run(args).await,
        Command::Offsets(args) => cli::offsets::run(args).await,
        Command::Backfill(args) => cli::backfill::run(args).await,
        Command::Replay(args) => cli::replay::run(args).await,
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("invalid configuration in `{}`", path.display()))
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = load(&path)?;
    // Handlers go in before start-up, so a signal that arrives while the
    // connector connects is handled instead of ending the process.
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone())?;
    let hangup = signal(SignalKind::hangup()).context("cannot install a SIGHUP handler")?;

    let connector = tokio::select! {
        _ = shutdown.cancelled() => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
        connector = Connector::start(config) => connector?,
    };
    tokio::spawn(reload_on_hangup(path, hangup, connector.reloader()));
    connector.run(shutdown).await
}

/// Re-reads the config file on SIGHUP and applies new Page tokens.
async fn reload_on_hangup(path: PathBuf, mut hangup: Signal, reloader: Reloader) {
    while hangup.recv().await.is_some() {
        match load(&path) {
            Ok(config) => reloader.apply(&config),
            Err(error) => {
                tracing::error!(error = %format_args!("{error:#}"), "configuration not reloaded; the running one stays")
            }
        }
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM. The handlers are in
/// place when this returns.
fn stop_on_signal(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received; stopping"),
            _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
        }
        shutdown.cancel();
    });
    Ok(())
}
