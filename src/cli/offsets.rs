//! `leadgen-connector offsets show` and `offsets reset`: read and replace
//! the per-form offsets stored in the compacted offsets topic.

use anyhow::Context;

use crate::cli::{
    check_no_running_connector, connect_sink, dedup_limits, format_time, page_of_form, parse_time,
    stored_offsets, writer_setup, ConfigArg,
};
use crate::kafka::{Batch, KafkaSetup};
use crate::offsets::{FormOffset, FormState, OffsetRecord};

#[derive(Debug, Clone, clap::Args)]
pub struct OffsetsArgs {
    #[command(subcommand)]
    pub command: OffsetsCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OffsetsCommand {
    /// Prints the stored offset of every form: watermark, remembered lead
    /// ids and pending webhook leads.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Print each stored offset record as one JSON line instead.
        #[arg(long)]
        json: bool,
    },
    /// Replaces a form's stored offset with one whose watermark is TIME,
    /// with no remembered lead ids and no pending leads. Stop every running
    /// connector first.
    Reset {
        #[command(flatten)]
        config: ConfigArg,
        /// Form id whose offset is replaced.
        #[arg(long = "form", value_name = "ID")]
        form_id: String,
        /// New watermark: Unix seconds or an RFC 3339 time.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: i64,
        /// Write even when kafka.consumer_group has members, which means a
        /// connector with webhooks is running.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(args: OffsetsArgs) -> anyhow::Result<()> {
    match args.command {
        OffsetsCommand::Show { config, json } => show(&config, json).await,
        OffsetsCommand::Reset {
            config,
            form_id,
            to,
            force,
        } => reset(&config, &form_id, to, force).await,
    }
}

async fn show(args: &ConfigArg, json: bool) -> anyhow::Result<()> {
    let config = args.load()?;
    let setup = KafkaSetup::new(config.kafka.clone());
    let offsets = stored_offsets(&setup).await?;
    let mut stored: Vec<&FormOffset> = offsets.values().collect();
    stored.sort_by(|left, right| left.form_id.cmp(&right.form_id));

    if json {
        for offset in stored {
            println!(
                "{}",
                serde_json::to_string(offset).expect("an offset record always serialises")
            );
        }
        return Ok(());
    }

    println!(
        "{:<20} {:<20} {:<22} {:>12} {:<22} {:>10} {:>8}",
        "FORM", "PAGE", "WATERMARK", "UNIX", "FLOOR", "RECENT_IDS", "PENDING"
    );
    for offset in &stored {
        println!(
            "{:<20} {:<20} {:<22} {:>12} {:<22} {:>10} {:>8}",
            offset.form_id,
            offset.page_id,
            watermark_text(offset.watermark),
            offset.watermark,
            format_time(offset.floor),
            offset.recent.len(),
            offset.pending.len()
        );
    }
    for (form_id, page_id) in config.configured_forms() {
        if !offsets.contains_key(&form_id) {
            println!("{form_id:<20} {page_id:<20} no stored offset; the first read starts at backfill.start");
        }
    }
    if stored.is_empty() {
        eprintln!(
            "no offset records in `{}` (kafka.offsets_topic)",
            config.kafka.offsets_topic
        );
    }
    Ok(())
}

/// Formats a watermark as RFC 3339, or `none` for 0.
fn watermark_text(watermark: i64) -> String {
    if watermark == 0 {
        "none".to_owned()
    } else {
        format_time(watermark)
    }
}

async fn reset(args: &ConfigArg, form_id: &str, to: i64, force: bool) -> anyhow::Result<()> {
    let config = args.load()?;
    let now = chrono::Utc::now().timestamp();
    if to > now {
        anyhow::bail!(
            "--to {} is in the future, so leads created until then would never be read; give a time in the past",
            format_time(to)
        );
    }
    let setup = writer_setup(&config);
    let offsets = stored_offsets(&setup).await?;
    let page_id = page_of_form(&config, &offsets, form_id)?;
    let previous = offsets.get(form_id);

    // The floor follows from the new watermark as in any offset update.
    let (offset, _) = FormState::new(FormOffset::new(form_id, &page_id), dedup_limits(&config))
        .next_offset(&[], Some(to));

    check_no_running_connector(&config, &setup, form_id, force).await?;
    let overlap = config.backfill.overlap.as_secs() as i64;
    if to == 0 {
        eprintln!(
            "warning: watermark 0 means no read completed: the connector reads form `{form_id}` from backfill.start ({}) and writes its leads to `{}` again",
            format_time(config.backfill.start.0),
            config.kafka.leads_topic
        );
    } else {
        eprintln!(
            "warning: leads of form `{form_id}` created from {} on (TIME minus backfill.overlap) will be written to `{}` again",
            format_time((to - overlap).max(0)),
            config.kafka.leads_topic
        );
    }
    if let Some(pending) = previous
        .map(|offset| offset.pending.len())
        .filter(|n| *n > 0)
    {
        eprintln!(
            "warning: {pending} pending webhook leads of form `{form_id}` are dropped; the bulk read finds them again only if they were created after TIME minus backfill.overlap"
        );
    }

    let sink = connect_sink(&config, &setup).await?;
    sink.commit(Batch {
        offsets: vec![OffsetRecord::of(&offset)],
        ..Batch::default()
    })
    .await
    .with_context(|| {
        format!(
            "cannot write the new offset of form `{form_id}` to `{}`; nothing was changed, run the command again",
            config.kafka.offsets_topic
        )
    })?;

    println!(
        "form {form_id}: offset reset to watermark {} ({to}); {} remembered lead ids and {} pending leads cleared",
        watermark_text(to),
        previous.map_or(0, |offset| offset.recent.len()),
        previous.map_or(0, |offset| offset.pending.len()),
    );
    Ok(())
}
