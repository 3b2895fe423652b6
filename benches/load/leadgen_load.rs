//! `leadgen-load`: the load generator and Kafka counter that
//! `scripts/bench` drives against a running connector, simulator and
//! Kafka on this machine.
//!
//! Every subcommand prints its results as one JSON object per line on
//! standard output and progress on standard error.
//!
//! - `count` waits until a `read_committed` consumer has seen a number of
//!   distinct lead records, then reads the connector's CPU time and peak
//!   RSS from `/proc`.
//! - `webhook` offers signed webhook POSTs at fixed rates and reports
//!   acknowledgement and end-to-end latency.
//! - `burst` sends a burst of webhooks and reports the Graph API calls the
//!   connector made to read their leads.
//! - `kafka-baseline` measures Kafka's produce latency with the webhook
//!   receiver's producer settings, without the connector.

mod baseline;
mod latency;
mod process;
mod records;
mod simulator;
mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use process::{ProcessSample, Watched};
use records::KeyRecorder;
use simulator::Simulator;
use webhook::{RateSettings, Target};

#[derive(Parser)]
#[command(
    name = "leadgen-load",
    about = "Load generator and Kafka counter for the leadgen-connector benchmarks"
)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    bootstrap: String,
    /// Leads topic to read with a read_committed consumer.
    #[arg(long, global = true)]
    topic: Option<String>,
    /// Seconds to wait for the leads topic to exist.
    #[arg(long, default_value_t = 120, global = true)]
    topic_timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Counts distinct lead records, then samples a process's CPU and memory.
    Count(CountArgs),
    /// Offers signed webhooks at fixed rates and measures latency.
    Webhook(WebhookArgs),
    /// Sends a burst of webhooks and counts the Graph API calls it caused.
    Burst(BurstArgs),
    /// Produces to a new topic at a fixed rate and measures delivery latency.
    KafkaBaseline(BaselineArgs),
}

#[derive(Args)]
struct BaselineArgs {
    /// Topic to create and write to.
    #[arg(long)]
    baseline_topic: String,
    /// Partitions of the created topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Records per second.
    #[arg(long)]
    rate: f64,
    /// Seconds to produce.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Producer linger.ms, in milliseconds. The webhook receiver uses 1.
    #[arg(long, default_value_t = 1)]
    linger_ms: u32,
}

#[derive(Args)]
struct CountArgs {
    /// Distinct lead records to wait for.
    #[arg(long)]
    expect: usize,
    /// Process id of the connector.
    #[arg(long)]
    pid: u32,
    /// When the connector was started, in nanoseconds since the Unix epoch
    /// (`date +%s%N` just before starting it).
    #[arg(long)]
    started_unix_ns: u128,
    /// Kernel clock ticks per second, the unit of /proc CPU times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Process id of the simulator, to report its CPU time too.
    #[arg(long)]
    sim_pid: Option<u32>,
    /// Seconds to wait for the records before giving up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Seconds to wait after the last record before the final memory sample.
    #[arg(long, default_value_t = 0)]
    settle: u64,
}

#[derive(Args)]
struct TargetArgs {
    /// Webhook URL of the connector.
    #[arg(long)]
    url: String,
    /// App secret that signs the bodies. It must equal graph.app_secret.
    #[arg(long, env = "LEADGEN_LOAD_APP_SECRET", hide_env_values = true)]
    app_secret: String,
    /// Base URL of the simulator, such as http://127.0.0.1:8090.
    #[arg(long)]
    sim_url: String,
    /// Page id that owns the forms.
    #[arg(long)]
    page_id: String,
    /// Form ids to create leads in, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    forms: Vec<String>,
    /// Process whose CPU use to report, as NAME=PID, repeatable. This
    /// process is always reported as `load`.
    #[arg(long = "watch", value_name = "NAME=PID", value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
    /// Kernel clock ticks per second, the unit of /proc CPU times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

fn parse_watch(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid --watch `{text}`: expected NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("invalid --watch `{text}`: PID is not a number"))?;
    Ok((name.to_owned(), pid))
}

#[derive(Args)]
struct WebhookArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Offered rates in requests per second, comma-separated, run in order.
    #[arg(long, value_delimiter = ',', required = true)]
    rates: Vec<f64>,
    /// Seconds measured at each rate.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds sent before each measured part and not counted.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Create each lead right before its webhook and measure end-to-end
    /// latency from that creation.
    #[arg(long)]
    create_inline: bool,
    /// Name made-up lead ids instead of creating leads, and skip the
    /// end-to-end measurement. Meant for forms the connector does not read.
    #[arg(long, conflicts_with = "create_inline")]
    synthetic_leads: bool,
    /// Stop after the first rate whose ack p99 exceeds this many milliseconds
    /// or that has a failed request.
    #[arg(long)]
    stop_above_p99_ms: Option<f64>,
    /// Seconds to wait for the lead records after each rate.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
}

#[derive(Args)]
struct BurstArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Webhooks in the burst, one new lead each.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Seconds to wait for the lead records.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("failed to start the Tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::KafkaBaseline(args) = &cli.command {
        if !(args.rate.is_finite() && args.rate > 0.0) {
            bail!("--rate needs a positive number, got {}", args.rate);
        }
        let report = baseline::run(
            &cli.bootstrap,
            &args.baseline_topic,
            args.partitions,
            args.rate,
            Duration::from_secs_f64(args.duration),
            args.linger_ms,
        )
        .await?;
        print_json(&report);
        return Ok(());
    }

    let topic = cli.topic.clone().context("--topic is required")?;
    let recorder = Arc::new(KeyRecorder::start(
        &cli.bootstrap,
        &topic,
        Duration::from_secs(cli.topic_timeout),
    )?);
    match cli.command {
        Command::Count(args) => count(&recorder, args).await,
        Command::Webhook(args) => webhook_rates(&recorder, args).await,
        Command::Burst(args) => burst(&recorder, args).await,
        Command::KafkaBaseline(_) => unreachable!("handled before the recorder starts"),
    }
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("reports serialise to JSON")
    );
}

#[derive(Serialize)]
struct CountReport {
    kind: &'static str,
    records: usize,
    /// Records seen, repeats of a key included.
    records_with_repeats: u64,
    /// From the connector's start to the first record.
    first_record_s: f64,
    /// From the connector's start to the last expected record.
    elapsed_s: f64,
    leads_per_s: f64,
    /// Between the first and the last record.
    steady_leads_per_s: f64,
    /// Connector CPU time (user + system) over all records.
    cpu_s: f64,
    cpu_us_per_lead: f64,
    /// Connector CPU time between the first and the last record, per lead.
    steady_cpu_us_per_lead: f64,
    connector_at_first_record: ProcessSample,
    connector_at_last_record: ProcessSample,
    /// Taken `settle` seconds after the last record.
    connector_after_settle: ProcessSample,
    simulator_at_last_record: Option<ProcessSample>,
}

async fn count(recorder: &KeyRecorder, args: CountArgs) -> anyhow::Result<()> {
    let started = UNIX_EPOCH + Duration::from_nanos(args.started_unix_ns as u64);
    let since_start = || {
        SystemTime::now()
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);

    let mut first: Option<(f64, usize, ProcessSample)> = None;
    loop {
        let distinct = recorder.distinct();
        if first.is_none() && distinct > 0 {
            first = Some((
                since_start(),
                distinct,
                process::sample(args.pid, args.clk_tck)?,
            ));
        }
        if distinct >= args.expect {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "saw {distinct} of {} lead records within {} s",
                args.expect,
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed_s = since_start();
    let last = process::sample(args.pid, args.clk_tck)?;
    let simulator = args
        .sim_pid
        .map(|pid| process::sample(pid, args.clk_tck))
        .transpose()?;
    let (first_s, first_count, first_sample) = first.expect("set before the loop ends");
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let settled = process::sample(args.pid, args.clk_tck)?;

    let records = recorder.distinct();
    let steady_leads = (records - first_count).max(1) as f64;
    print_json(&CountReport {
        kind: "count",
        records,
        records_with_repeats: recorder.records(),
        first_record_s: first_s,
        elapsed_s,
        leads_per_s: records as f64 / elapsed_s,
        steady_leads_per_s: steady_leads / (elapsed_s - first_s).max(1e-9),
        cpu_s: last.cpu_s(),
        cpu_us_per_lead: last.cpu_s() / records as f64 * 1e6,
        steady_cpu_us_per_lead: (last.cpu_s() - first_sample.cpu_s()) / steady_leads * 1e6,
        connector_at_first_record: first_sample,
        connector_at_last_record: last,
        connector_after_settle: settled,
        simulator_at_last_record: simulator,
    });
    Ok(())
}

fn target(args: TargetArgs) -> anyhow::Result<(Target, Simulator, Watched)> {
    let simulator = Simulator::new(&args.sim_url)?;
    let mut processes = args.watch;
    processes.push(("load".to_owned(), std::process::id()));
    let watched = Watched {
        processes,
        ticks_per_second: args.clk_tck,
    };
    let target = Target::new(args.url, args.app_secret, args.page_id, args.forms)?;
    Ok((target, simulator, watched))
}

#[derive(Serialize)]
struct StepSummary {
    kind: &'static str,
    limit_p99_ms: f64,
    /// Highest offered rate whose ack p99 stayed within the limit with no
    /// failed request, or `None` when even the first rate missed.
    highest_passing_rate: Option<f64>,
    /// First rate that missed, if any.
    first_failing_rate: Option<f64>,
}

async fn webhook_rates(recorder: &Arc<KeyRecorder>, args: WebhookArgs) -> anyhow::Result<()> {
    let (target, simulator, watched) = target(args.target)?;
    let mut highest_passing_rate = None;
    let mut first_failing_rate = None;
    for rate in args.rates {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rates needs positive numbers, got {rate}");
        }
        let settings = RateSettings {
            rate,
            duration: Duration::from_secs_f64(args.duration),
            warmup: Duration::from_secs_f64(args.warmup),
            create_inline: args.create_inline,
            synthetic_leads: args.synthetic_leads,
            drain_timeout: Duration::from_secs(args.drain_timeout),
        };
        let report = webhook::run_rate(&target, &simulator, recorder, &watched, settings).await?;
        print_json(&report);

        if let Some(limit) = args.stop_above_p99_ms {
            if report.ack.p99_ms <= limit && report.outcomes.failures() == 0 {
                highest_passing_rate = Some(rate);
            } else {
                first_failing_rate = Some(rate);
                break;
            }
        }
    }
    if let Some(limit) = args.stop_above_p99_ms {
        print_json(&StepSummary {
            kind: "webhook_steps",
            limit_p99_ms: limit,
            highest_passing_rate,
            first_failing_rate,
        });
    }
    Ok(())
}

async fn burst(recorder: &Arc<KeyRecorder>, args: BurstArgs) -> anyhow::Result<()> {
    let (target, simulator, watched) = target(args.target)?;
    let report = webhook::run_burst(
        &target,
        &simulator,
        recorder,
        &watched,
        args.count,
        args.concurrency,
        Duration::from_secs(args.drain_timeout),
        Duration::from_secs(2),
    )
    .await?;
    print_json(&report);
    Ok(())
}
