//! `cordon recover`: cordon's identity restored on a new state directory from its
//! recovery key.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use cordon::trust::recovery::{self, RecoverError};

// `cordon recover`'s arguments.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Also log out cordon's other devices (the lost disk's), with the password.
    #[arg(long)]
    remove_old_devices: bool,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config) = super::load_config(&args.config)? else {
        return Ok(ExitCode::from(2));
    };
    super::init_tracing_with("warn,matrix_sdk_crypto=error");
    let key = match recovery::read_recovery_key() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cordon: error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let by = cordon::trust::cli::operator_name();
    let runtime = super::runtime()?;
    let result = runtime.block_on(recovery::recover(
        &config,
        &key,
        &by,
        args.remove_old_devices,
    ));
    drop(key);
    match result {
        Ok(done) => {
            let mut out = io::stdout().lock();
            writeln!(
                out,
                "cordon's identity is restored on a new device ({}): its cross-signing keys \
                 came back from secret storage and the device is signed by its self-signing \
                 key. People enrolled before stay verified. Start the bot with `cordon run`.",
                done.device
            )?;
            if !done.other_devices.is_empty() {
                let list: Vec<String> = done.other_devices.iter().map(|d| d.to_string()).collect();
                if done.removed_other_devices {
                    writeln!(
                        out,
                        "Logged out cordon's other devices: {}.",
                        list.join(", ")
                    )?;
                } else {
                    writeln!(
                        out,
                        "cordon's other devices are still logged in: {}. If they were on the \
                         lost disk, log them out (`cordon recover` cannot be re-run; use your \
                         homeserver's admin tools or Element's session list).",
                        list.join(", ")
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (RecoverError::WrongKey(_) | RecoverError::NotSetUp)) => {
            eprintln!("cordon: error: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("cordon: error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
