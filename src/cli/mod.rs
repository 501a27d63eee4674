//! The command line: one file per subcommand, each holding its arguments and what it
//! does. Every subcommand calls one thing in the library and maps the outcome to an
//! exit code; nothing here decides anything the library does not.
//!
//! Exit codes: 0 success; 1 a check failed (a playbook, a config, the audit chain, an
//! archive, a verification); 2 any other error (usage, unreadable files, the server).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod archive;
mod audit;
mod backup;
mod check;
mod config;
mod demo;
mod doctor;
mod healthcheck;
mod playbook;
mod recover;
mod rekey;
mod rotate_recovery_key;
mod run;
mod status;
mod verify;

/// cordon: incident-mode messaging on Matrix, with the governance made automatic.
#[derive(Debug, Parser)]
#[command(name = "cordon", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the bot: sync with the homeserver and handle commands until SIGTERM or ctrl-c.
    Run(run::Args),
    /// Run a scripted major incident end to end on a throwaway Synapse (installed from
    /// PyPI on first use), printing a timeline of rooms, invites and joins.
    Demo(demo::Args),
    /// Preflight: check the config, secrets, directories, playbooks, homeserver, metrics
    /// address and disk space, one PASS/FAIL/WARN/SKIP line each, with a fix for each
    /// failure. Safe while the bot runs.
    ///
    /// Exits 0 when nothing failed (warnings allowed), 1 when a check failed, 2 when the
    /// config cannot be read.
    Doctor(doctor::Args),
    /// Check playbooks and report every problem as `file:line:col: error: message`.
    ///
    /// Exits 0 when every playbook is valid, 1 otherwise.
    Check(check::Args),
    /// What the store says, read without the bot running: incidents, states,
    /// deadlines, holds, failures, stand-down steps, rooms and timers.
    Status(status::Args),
    /// Playbook tools.
    Playbook {
        #[command(subcommand)]
        command: playbook::Cmd,
    },
    /// The bot's configuration file.
    Config {
        #[command(subcommand)]
        command: config::Cmd,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: audit::Cmd,
    },
    /// Sealed incident archives: verify and open them (records officers), print the key
    /// that signs them.
    Archive {
        #[command(subcommand)]
        command: archive::Cmd,
    },
    /// Enrol people (verify their identity in person), list and revoke enrolments.
    ///
    /// `cordon verify --config F @user:hs` compares emojis with one of the person's
    /// devices; `--fingerprint KEY` checks the master key they read out instead. Talks to
    /// the running bot over its admin socket; with the bot stopped, does the work itself.
    /// Exits 0 on success, 1 when refused (mismatch, no identity, cancelled, timed out,
    /// or for --status not verified), 2 on other errors.
    Verify(verify::Args),
    /// Restore cordon's identity on a new (empty) state directory from the recovery key
    /// printed at its first start, read from standard input. The bot must be stopped.
    Recover(recover::Args),
    /// Ask the running bot's /healthz (from the config's `metrics.listen`): exits 0
    /// when it is healthy, 1 when not or when nothing answers. For Docker's
    /// HEALTHCHECK and other probes without an HTTP client.
    Healthcheck(healthcheck::Args),
    /// Back up the state directory: a consistent snapshot (taken by the running bot over
    /// its admin socket, or here with the bot stopped), encrypted with age to the
    /// operators' keys. Run it as the bot's user.
    Backup(backup::Args),
    /// Restore a backup into an empty or absent state directory, the bot stopped.
    Restore(backup::RestoreArgs),
    /// Seal everything the store passphrase protects (matrix-sdk's stores, the session
    /// token, the archive signing key) under a new passphrase. The bot must be stopped;
    /// an interrupted run is finished by running it again.
    Rekey(rekey::Args),
    /// Replace cordon's recovery key: secret storage is made again under a new key,
    /// written to a new file; the old key opens nothing afterwards. The bot must be
    /// stopped.
    RotateRecoveryKey(rotate_recovery_key::Args),
}

impl Cli {
    /// Runs the subcommand. An `Err` is reported by `main` and exits 2.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Cmd::Run(args) => run::run(args),
            Cmd::Demo(args) => demo::run(args),
            Cmd::Doctor(args) => doctor::run(args),
            Cmd::Check(args) => check::run(args),
            Cmd::Status(args) => status::run(args),
            Cmd::Playbook { command } => playbook::run(command),
            Cmd::Config { command } => config::run(command),
            Cmd::Audit { command } => audit::run(command),
            Cmd::Archive { command } => archive::run(command),
            Cmd::Verify(args) => verify::run(args),
            Cmd::Recover(args) => recover::run(args),
            Cmd::Healthcheck(args) => healthcheck::run(args),
            Cmd::Backup(args) => backup::run(args),
            Cmd::Restore(args) => backup::restore(args),
            Cmd::Rekey(args) => rekey::run(args),
            Cmd::RotateRecoveryKey(args) => rotate_recovery_key::run(args),
        }
    }
}

/// Parses a Matrix user id argument.
fn user_id(s: &str) -> Result<matrix_sdk::ruma::OwnedUserId, String> {
    cordon::input::config::parse_user_id(s)
        .map_err(|why| format!("`{s}` is not a Matrix user id: {why}"))
}

/// Loads the config for a command that needs it, printing its problems on stderr
/// (`None` then).
fn load_config(path: &Path) -> anyhow::Result<Option<cordon::input::config::Config>> {
    match cordon::input::config::Config::load(path) {
        Ok(c) => Ok(Some(c)),
        Err(diagnostics) => {
            let mut err = io::stderr().lock();
            for d in &diagnostics {
                writeln!(err, "{d}")?;
            }
            Ok(None)
        }
    }
}

/// Opens the store for an offline command, given the state directory or the store
/// directory inside it. Creates nothing.
fn open_offline_store(dir: &Path) -> anyhow::Result<cordon::store::Store> {
    let inner = dir.join("store");
    let dir = if !dir.join(cordon::store::FILE_NAME).exists()
        && inner.join(cordon::store::FILE_NAME).exists()
    {
        inner
    } else {
        dir.to_path_buf()
    };
    cordon::store::Store::open_existing(&dir).with_context(|| {
        format!(
            "opening the store in {} (stop the bot first: it holds the store's lock)",
            dir.display()
        )
    })
}

/// Creates `path` for writing; an existing file is an error, never overwritten.
fn create_new(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten)",
                path.display()
            )
        })
}

/// Logs on stderr for the short-lived commands that talk to a server (`verify`,
/// `recover`); `RUST_LOG` overrides `default_filter`.
fn init_tracing_with(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The async runtime for the commands that need one.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// 0 when `ok`, else 1.
fn exit_status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
