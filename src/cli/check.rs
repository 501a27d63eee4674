//! `cordon check`: playbooks checked, every problem reported, and with `--explain` the
//! plan each would produce.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use cordon::domain::incident::explain;

// `cordon check`'s arguments.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Playbook files or directories of playbooks [default: playbooks]
    paths: Vec<PathBuf>,
    /// Also print the plan each valid playbook would produce for an example
    /// incident, without touching a server: rooms and their settings, who is
    /// invited and why, moderators, posts, reminders, warnings, retention, archive.
    #[arg(long)]
    explain: bool,
    /// With --explain: the example incident's name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "Example incident",
        requires = "explain"
    )]
    name: String,
    /// With --explain: who declares it (shown as <commander> if not given).
    #[arg(long, value_name = "USER", requires = "explain")]
    commander: Option<matrix_sdk::ruma::OwnedUserId>,
    /// With --explain: when it is declared, RFC 3339 [default: now].
    #[arg(long, value_name = "TIME", requires = "explain")]
    at: Option<chrono::DateTime<chrono::Utc>>,
    /// With --explain: the IANA time zone times are shown in; use the bot's
    /// `time_zone` from its config.
    #[arg(long, value_name = "TZ", default_value = "UTC", requires = "explain")]
    time_zone: chrono_tz::Tz,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("playbooks")]
    } else {
        args.paths
    };
    let report = cordon::input::playbook::check::run(&paths);
    report.write(&mut io::stdout().lock(), &mut io::stderr().lock())?;
    if args.explain {
        let example = explain::Example {
            name: args.name,
            commander: args.commander,
            at: args.at.unwrap_or_else(chrono::Utc::now),
            time_zone: args.time_zone,
        };
        let mut out = io::stdout().lock();
        for playbook in report.playbooks() {
            writeln!(out)?;
            out.write_all(explain::explain(playbook, &example).as_bytes())?;
        }
    }
    Ok(super::exit_status(report.is_ok()))
}
