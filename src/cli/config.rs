//! `cordon config`: the bot's configuration file checked.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(super) enum Cmd {
    /// Check a config file; exits 1 and reports every problem if it is invalid.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

pub(super) fn run(command: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Check { file } = command;
    match cordon::input::config::Config::load(&file) {
        Ok(config) => {
            writeln!(
                io::stdout().lock(),
                "{}: ok ({})",
                file.display(),
                config.summary()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(diagnostics) => {
            let mut err = io::stderr().lock();
            for d in &diagnostics {
                writeln!(err, "{d}")?;
            }
            writeln!(err, "{}: {} problem(s)", file.display(), diagnostics.len())?;
            Ok(ExitCode::FAILURE)
        }
    }
}
