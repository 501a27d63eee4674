//! `cordon audit`: the audit log's hash chain verified, and the log exported for
//! governance reports.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};

#[derive(Debug, clap::Subcommand)]
pub(super) enum Cmd {
    /// Verify the audit log's hash chain; exits 1 if any entry was modified, removed or
    /// reordered.
    Verify {
        /// The bot's state directory, or the `store` directory inside it.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
    },
    /// Write the audit log out as CSV or JSON Lines for governance reports (the bot must
    /// be stopped). The hash chain is checked first; a broken chain is reported on
    /// stderr and exits 1, after the export.
    Export {
        /// The bot's state directory, or the `store` directory inside it.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Only this incident's entries.
        #[arg(long, value_name = "ID")]
        incident: Option<String>,
        /// Only entries at or after this time (RFC 3339, e.g. 2026-03-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<DateTime<Utc>>,
        /// Only entries before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<DateTime<Utc>>,
        /// Write to this new file (never overwritten) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `cordon audit export --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum Format {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

pub(super) fn run(command: Cmd) -> anyhow::Result<ExitCode> {
    match command {
        Cmd::Verify { store } => {
            let store = super::open_offline_store(&store)?;
            let report = store.verify_audit()?;
            writeln!(io::stdout().lock(), "{report}")?;
            Ok(super::exit_status(report.is_intact()))
        }
        Cmd::Export {
            store,
            format,
            incident,
            since,
            until,
            out,
        } => export(
            &store,
            format,
            incident.as_deref(),
            since,
            until,
            out.as_deref(),
        ),
    }
}

fn export(
    dir: &Path,
    format: Format,
    incident: Option<&str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use cordon::store::audit_export::{ExportFormat, write};
    let incident = match incident {
        None => None,
        Some(id) => Some(
            cordon::domain::incident::IncidentId::parse(id).map_err(|e| {
                anyhow::anyhow!(
                    "--incident {id:?} is not an incident id ({e}); nothing was written"
                )
            })?,
        ),
    };
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        anyhow::bail!("--since must be before --until; nothing was written");
    }
    let store = super::open_offline_store(dir)?;
    let report = store.verify_audit()?;
    let entries: Vec<_> = store
        .audit_entries(.., incident.as_ref())?
        .into_iter()
        .filter(|e| since.is_none_or(|s| e.at >= s) && until.is_none_or(|u| e.at < u))
        .collect();
    let format = match format {
        Format::Csv => ExportFormat::Csv,
        Format::Jsonl => ExportFormat::JsonLines,
    };
    match out {
        Some(path) => {
            let file = super::create_new(path)?;
            let mut w = io::BufWriter::new(file);
            write(&mut w, &entries, format)?;
            w.into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let mut w = io::BufWriter::new(io::stdout().lock());
            write(&mut w, &entries, format)?;
            w.flush()?;
        }
    }
    let mut err = io::stderr().lock();
    writeln!(
        err,
        "exported {} audit entr{}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    )?;
    if report.is_intact() {
        writeln!(
            err,
            "hash chain intact ({} entries in the log)",
            report.entries
        )?;
    } else {
        writeln!(
            err,
            "WARNING: the audit log's hash chain is broken; the export holds what the store holds now:\n{report}"
        )?;
    }
    Ok(super::exit_status(report.is_intact()))
}
