//! `cordon playbook`: the playbook format's schema, and a new playbook to fill in.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use cordon::input::playbook::{scaffold, schema};

#[derive(Debug, clap::Subcommand)]
pub(super) enum Cmd {
    /// Print the JSON Schema of the playbook format (for editor validation).
    Schema,
    /// Write a new playbook with every key commented, to fill in.
    New {
        /// The playbook id (lowercase letters, digits and hyphens), as in `!cordon
        /// declare <id>`.
        id: String,
        /// Its title.
        #[arg(long)]
        title: Option<String>,
        /// The homeserver name for the example holders.
        #[arg(long, default_value = "example.org", value_name = "NAME")]
        server: String,
        /// A records officer's age public key (repeat for several). Without one, the
        /// playbook does not pass `cordon check` until a key is added.
        #[arg(long = "recipient", value_name = "AGE_KEY")]
        recipients: Vec<String>,
        /// Write to this new file (never overwritten) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub(super) fn run(command: Cmd) -> anyhow::Result<ExitCode> {
    match command {
        Cmd::Schema => {
            let mut out = io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &schema::json_schema())?;
            writeln!(out)?;
        }
        Cmd::New {
            id,
            title,
            server,
            recipients,
            out,
        } => {
            let text = scaffold::render(&scaffold::Scaffold {
                id: &id,
                title: title.as_deref(),
                server: &server,
                recipients: &recipients,
            })
            .map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?;
            match out {
                None => io::stdout().lock().write_all(text.as_bytes())?,
                Some(path) => {
                    let mut file = super::create_new(&path)?;
                    file.write_all(text.as_bytes())?;
                    file.sync_all()?;
                    let next = if recipients.is_empty() {
                        "add the records officer's age key under `archive.recipients`, "
                    } else {
                        ""
                    };
                    writeln!(
                        io::stderr().lock(),
                        "wrote {path}. Next: replace the example holders, {next}then run `cordon check {path}`.",
                        path = path.display()
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
