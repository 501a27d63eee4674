//! The `cordon` binary: parses the command line and hands it to [`cli`], which calls
//! one thing in the library per subcommand and maps the outcome to an exit code: 0 on
//! success, 1 when a check fails, 2 on any other error.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    match cli::Cli::parse().run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cordon: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
