//! `cordon verify`: enrol people, list and revoke enrolments, through the running bot's
//! admin socket or, with the bot stopped, directly.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use cordon::trust::cli::{self, Output};
use cordon::trust::socket::{Op, PROTOCOL_VERSION, Request};
use matrix_sdk::ruma::OwnedUserId;

// `cordon verify`'s arguments.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("what").required(true).args(["user", "list", "revoke", "status"])
))]
pub(super) struct Args {
    /// The config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The person to enrol, e.g. @alice:nhs.example.
    #[arg(value_name = "USER", value_parser = super::user_id)]
    user: Option<OwnedUserId>,
    /// Their master-key fingerprint, as they read it out (Element: Settings > Security
    /// > Cross-signing); without it, the emojis are compared.
    #[arg(long, value_name = "KEY", requires = "user", conflicts_with_all = ["device", "timeout"])]
    fingerprint: Option<String>,
    /// Compare with this device of theirs only (default: ask every device, use the
    /// first that accepts).
    #[arg(long, value_name = "ID", requires = "user")]
    device: Option<String>,
    /// How long the emoji comparison may take, the person's time included.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration, requires = "user")]
    timeout: std::time::Duration,
    /// List every enrolment (who, method, by whom, since when, standing now) and
    /// revocation.
    #[arg(long)]
    list: bool,
    /// Revoke this person's enrolment: cordon stops treating them as verified and
    /// blacklists their devices.
    #[arg(long, value_name = "USER", value_parser = super::user_id)]
    revoke: Option<OwnedUserId>,
    /// Why (with --revoke), for the audit log.
    #[arg(long, value_name = "TEXT", requires = "revoke")]
    reason: Option<String>,
    /// Print this person's standing now; exits 0 only if verified.
    #[arg(long, value_name = "USER", value_parser = super::user_id)]
    status: Option<OwnedUserId>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// What to ask the bot to do.
    fn op(self) -> anyhow::Result<Op> {
        Ok(if self.list {
            Op::List
        } else if let Some(user) = self.revoke {
            Op::Revoke {
                user: user.to_string(),
                reason: self.reason,
            }
        } else if let Some(user) = self.status {
            Op::Status {
                user: user.to_string(),
            }
        } else if let Some(user) = self.user {
            match self.fingerprint {
                Some(fingerprint) => Op::Fingerprint {
                    user: user.to_string(),
                    fingerprint,
                },
                None => Op::Sas {
                    user: user.to_string(),
                    device: self.device,
                    timeout_secs: self.timeout.as_secs().max(1),
                },
            }
        } else {
            anyhow::bail!("say whom to verify, or give --list, --revoke or --status");
        })
    }
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config) = super::load_config(&args.config)? else {
        return Ok(ExitCode::from(2));
    };
    super::init_tracing_with("warn,matrix_sdk_crypto=error");
    let output = if args.json {
        Output::Json
    } else {
        Output::Human
    };
    let request = Request {
        v: PROTOCOL_VERSION,
        by: cli::operator_name(),
        op: args.op()?,
    };
    let runtime = super::runtime()?;
    let result = runtime.block_on(async {
        let mut input = cli::stdin_reader();
        let mut out = io::stdout();
        let mut err = io::stderr();
        cli::run(&config, &request, output, &mut input, &mut out, &mut err).await
    });
    // A read of stdin may still be pending (the comparison ended without an answer).
    runtime.shutdown_background();
    match result {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            eprintln!("cordon: error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
