//! `leadgen-connector schema`: prints the lead schema and, with `--check`,
//! queries the schema registry whether it is compatible with the latest version
//! registered for the leads topic.

use crate::avro::LEAD_SCHEMA;
use crate::cli::registry::{check_lead_schema, lead_subject, Compatibility};
use crate::cli::validate::explain;
use crate::cli::ConfigArg;

#[derive(Debug, Clone, clap::Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Check compatibility with the latest version registered under
    /// `<kafka.leads_topic>-value` instead of printing the schema; exits
    /// non-zero when it is not compatible.
    #[arg(long)]
    pub check: bool,
}

pub async fn run(args: SchemaArgs) -> anyhow::Result<()> {
    if !args.check {
        print!("{LEAD_SCHEMA}");
        return Ok(());
    }

    let config = args.config.load()?;
    let subject = lead_subject(&config.kafka.leads_topic);
    let registry = config.schema_registry.display_url();
    match check_lead_schema(&config.schema_registry, &subject).await {
        Ok(Compatibility::Compatible) => {
            println!("schemas/lead.avsc is compatible with the latest version of subject `{subject}` at `{registry}`");
            Ok(())
        }
        Ok(Compatibility::NotRegistered) => {
            println!("subject `{subject}` has no version at `{registry}` yet; the connector registers schemas/lead.avsc at start-up");
            Ok(())
        }
        Ok(Compatibility::Incompatible(messages)) => anyhow::bail!(
            "schemas/lead.avsc is not compatible with the latest version of subject `{subject}` at `{registry}`{}; make the change compatible (add fields with defaults), or register it under a new kafka.leads_topic",
            explain(&messages)
        ),
        Err(message) => anyhow::bail!("{message}"),
    }
}
