//! `leadgen-connector backfill`: a one-shot bulk read of one form over a
//! time range, through the same deduplication and transactional sink as the
//! connector's own reads.
//!
//! The read never moves the form's watermark. Every page is written in one
//! transaction with the form's offset, which records the ids written, so a
//! second run over the same range and the connector's later reads skip
//! them. Leads created before the form's deduplication floor count as
//! already written, so the read starts at the floor when the range begins
//! earlier.

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::backfill::{Backfill, ReadSummary};
use crate::cli::{
    check_no_running_connector, connect_sink, dedup_limits, format_time, lead_reader, page_of_form,
    parse_time, stored_offsets, writer_setup, ConfigArg,
};
use crate::forms::FormHandle;
use crate::offsets::{FormOffset, FormState};

#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Form id to read.
    #[arg(long = "form", value_name = "ID")]
    pub form_id: String,
    /// Earliest lead creation time read: Unix seconds or RFC 3339.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: i64,
    /// Creation time where the read stops, exclusive: Unix seconds or RFC
    /// 3339. Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,
    /// Write even when kafka.consumer_group has members, which means a
    /// connector with webhooks is running.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let form_id = args.form_id.as_str();
    if let Some(until) = args.until {
        if until <= args.since {
            anyhow::bail!(
                "--until {} is not after --since {}; give a later --until",
                format_time(until),
                format_time(args.since)
            );
        }
    }

    let setup = writer_setup(&config);
    let offsets = stored_offsets(&setup).await?;
    let page_id = page_of_form(&config, &offsets, form_id)?;
    let offset = offsets
        .get(form_id)
        .cloned()
        .unwrap_or_else(|| FormOffset::new(form_id, &page_id));

    let floor = offset.floor;
    let since = args.since.max(floor);
    if since > args.since {
        eprintln!(
            "note: form `{form_id}` counts every lead created before {} (its deduplication floor) as already written, so the read starts there",
            format_time(floor)
        );
    }
    if args.until.is_some_and(|until| until <= since) {
        println!(
            "form {form_id}: nothing to read; the whole range is before the form's deduplication floor {}",
            format_time(floor)
        );
        return Ok(());
    }
    check_no_running_connector(&config, &setup, form_id, args.force).await?;

    let sink = connect_sink(&config, &setup).await?;
    let backfill = Backfill {
        reader: lead_reader(&config)?,
        sink,
        settings: config.backfill.clone(),
        webhooks_enabled: false,
    };
    let form = FormHandle {
        form_id: form_id.to_owned(),
        page_id,
        state: tokio::sync::Mutex::new(FormState::new(offset, dedup_limits(&config))),
    };

    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });

    let bar = progress_bar();
    let shown = Arc::new(bar.clone());
    let progress = move |summary: &ReadSummary| shown.set_message(counts(summary));
    bar.set_message(counts(&ReadSummary::default()));
    let result = backfill
        .read_range(&form, since, args.until, &cancel, &progress)
        .await;
    bar.finish_and_clear();

    let range = format!(
        "{} to {}",
        format_time(since),
        args.until.map_or_else(|| "now".to_owned(), format_time)
    );
    match result {
        Ok(summary) => {
            println!(
                "form {form_id}, {range}: {}, {} skipped as already written",
                counts(&summary),
                summary
                    .leads_seen
                    .saturating_sub(summary.leads_written + summary.dead_letters)
            );
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!(
            "backfill of form `{form_id}` over {range} stopped: {error}; the pages written so far are recorded in the form's offset, so running the same command again continues without writing them twice"
        )),
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .expect("the progress template is valid"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

fn counts(summary: &ReadSummary) -> String {
    format!(
        "{} pages, {} leads seen, {} written, {} dead letters",
        summary.pages, summary.leads_seen, summary.leads_written, summary.dead_letters
    )
}
