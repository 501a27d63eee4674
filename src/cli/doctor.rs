//! `cordon doctor`: the preflight, one line per check.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

// `cordon doctor`'s arguments.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The config file the bot runs with.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The least free space the state and archive directories' file systems may have:
    /// a size (`1GiB`, `500MiB`) or a share of the file system (`5%`).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    min_free: cordon::doctor::MinFree,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config) = super::load_config(&args.config)? else {
        eprintln!(
            "{}: the config cannot be read; fix it first (`cordon config check {}`)",
            args.config.display(),
            args.config.display()
        );
        return Ok(ExitCode::from(2));
    };
    let options = cordon::doctor::Options {
        min_free: args.min_free,
    };
    let summary = super::runtime()?.block_on(async {
        cordon::doctor::run(&config, options, &mut io::stdout().lock()).await
    })?;
    Ok(super::exit_status(summary.ok()))
}
