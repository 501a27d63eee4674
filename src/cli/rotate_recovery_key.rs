//! `cordon rotate-recovery-key`: a new recovery key, the old one void.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The bot's config file. The bot must be stopped.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Write the new recovery key to this new file (mode 0600, never overwritten), then
    /// move it offline.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config) = super::load_config(&args.config)? else {
        return Ok(ExitCode::from(2));
    };
    super::init_tracing_with("warn,matrix_sdk_crypto=error");
    let by = cordon::trust::cli::operator_name();
    super::runtime()?.block_on(cordon::trust::recovery::rotate_key(&config, &args.out, &by))?;
    println!(
        "cordon's recovery key is replaced: the new one is in {} (move it offline and \
         shred that copy); the old one opens nothing any more",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
