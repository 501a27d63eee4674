//! `cordon status`: what the store says, read with the bot stopped.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

// `cordon status`'s arguments.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The bot's state directory, or the `store` directory inside it.
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// Closed incidents too.
    #[arg(long)]
    all: bool,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_offline_store(&args.store)?;
    let report = cordon::store::offline_status::render(&store, chrono::Utc::now(), args.all)?;
    io::stdout().lock().write_all(report.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
