//! The `cordon` command line: a thin layer over the library.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// cordon: incident-mode messaging on Matrix, with the governance made automatic.
#[derive(Debug, Parser)]
#[command(name = "cordon", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the bot: sync with the homeserver and handle commands until SIGTERM or ctrl-c.
    Run {
        /// The config file (see cordon.example.yaml and docs/config.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log lines on stderr: `human` (default) or `json`, one object per line with
        /// `timestamp`, `level`, `target`, `fields` and `spans`, for log shippers.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Run a scripted major incident end to end on a throwaway Synapse (installed from
    /// PyPI on first use), printing a timeline of rooms, invites and joins.
    Demo {
        /// The playbook to declare.
        #[arg(long, default_value = "playbooks/mass-casualty.yaml")]
        playbook: PathBuf,
        /// The incident's name.
        #[arg(long, default_value = "Tram crash Addiscombe")]
        name: String,
        /// Keep the demo's files (config, store, logs) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Check playbooks and report every problem as `file:line:col: error: message`.
    ///
    /// Exits 0 when every playbook is valid, 1 otherwise.
    Check {
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
    },
    /// What the store says, read without the bot running: incidents, states,
    /// deadlines, holds, failures, stand-down steps, rooms and timers.
    Status {
        /// The bot's state directory, or the `store` directory inside it.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Closed incidents too.
        #[arg(long)]
        all: bool,
    },
    /// Playbook tools.
    Playbook {
        #[command(subcommand)]
        command: PlaybookCmd,
    },
    /// The bot's configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Sealed incident archives: verify and open them (records officers), print the key
    /// that signs them.
    Archive {
        #[command(subcommand)]
        command: ArchiveCmd,
    },
    /// Enrol people (verify their identity in person), list and revoke enrolments.
    ///
    /// `cordon verify --config F @user:hs` compares emojis with one of the person's
    /// devices; `--fingerprint KEY` checks the master key they read out instead. Talks to
    /// the running bot over its admin socket; with the bot stopped, does the work itself.
    /// Exits 0 on success, 1 when refused (mismatch, no identity, cancelled, timed out,
    /// or for --status not verified), 2 on other errors.
    Verify(VerifyArgs),
    /// Restore cordon's identity on a new (empty) state directory from the recovery key
    /// printed at its first start, read from standard input. The bot must be stopped.
    Recover {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Also log out cordon's other devices (the lost disk's), with the password.
        #[arg(long)]
        remove_old_devices: bool,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("what").required(true).args(["user", "list", "revoke", "status"])
))]
struct VerifyArgs {
    /// The config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The person to enrol, e.g. @alice:nhs.example.
    #[arg(value_name = "USER", value_parser = user_id)]
    user: Option<matrix_sdk::ruma::OwnedUserId>,
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
    #[arg(long, value_name = "USER", value_parser = user_id)]
    revoke: Option<matrix_sdk::ruma::OwnedUserId>,
    /// Why (with --revoke), for the audit log.
    #[arg(long, value_name = "TEXT", requires = "revoke")]
    reason: Option<String>,
    /// Print this person's standing now; exits 0 only if verified.
    #[arg(long, value_name = "USER", value_parser = user_id)]
    status: Option<matrix_sdk::ruma::OwnedUserId>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

fn user_id(s: &str) -> Result<matrix_sdk::ruma::OwnedUserId, String> {
    cordon::input::config::parse_user_id(s)
        .map_err(|why| format!("`{s}` is not a Matrix user id: {why}"))
}

#[derive(Debug, Subcommand)]
enum PlaybookCmd {
    /// Print the JSON Schema of the playbook format (for editor validation).
    Schema,
    /// Write a new playbook with every key commented, to fill in.
    New {
        /// The playbook id (lowercase letters, digits and hyphens), as in `!cordon
        /// declare <id>`.
        id: String,
        /// Its title.
        #[arg(long)]
        title: Option<String>,
        /// The homeserver name for the example holders.
        #[arg(long, default_value = "example.org", value_name = "NAME")]
        server: String,
        /// A records officer's age public key (repeat for several). Without one, the
        /// playbook does not pass `cordon check` until a key is added.
        #[arg(long = "recipient", value_name = "AGE_KEY")]
        recipients: Vec<String>,
        /// Write to this new file (never overwritten) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Check a config file; exits 1 and reports every problem if it is invalid.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
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
        #[arg(long, value_enum, default_value_t = AuditFormat::Csv)]
        format: AuditFormat,
        /// Only this incident's entries.
        #[arg(long, value_name = "ID")]
        incident: Option<String>,
        /// Only entries at or after this time (RFC 3339, e.g. 2026-03-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only entries before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Write to this new file (never overwritten) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `cordon run --log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Readable lines (ANSI colours on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}

/// `cordon audit export --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AuditFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Subcommand)]
enum ArchiveCmd {
    /// Check a sealed archive: decrypt it with a records officer's identity, check
    /// every member against the manifest's SHA-256s, recount the transcripts and check
    /// the manifest's signature; prints the manifest's summary.
    ///
    /// The archive must be signed by a key you trust: give it with --signer, or list
    /// the keys you trust in a --trust-file; without either, nothing is verified.
    ///
    /// Exits 0 when the archive is intact, 1 when a check fails (not encrypted to the
    /// identity, truncated or damaged, altered, badly signed, signed by a key not
    /// trusted; the error names that key), 2 on other errors (usage, no trusted key,
    /// unreadable files).
    Verify {
        /// The archive, `<incident>.cordon-archive.age`.
        file: PathBuf,
        #[command(flatten)]
        keys: ArchiveKeys,
    },
    /// Verify a sealed archive, then write its files (transcripts, Markdown renderings,
    /// attachments, audit log) into a new directory, with the pre-seal segments
    /// decrypted and merged into `rooms/<key>.merged.jsonl` and `.merged.md`.
    ///
    /// Exits like `verify`; nothing is written unless the archive verifies.
    Open {
        /// The archive, `<incident>.cordon-archive.age`.
        file: PathBuf,
        #[command(flatten)]
        keys: ArchiveKeys,
        /// Where to write (must be empty or absent) [default: ./<incident>/]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print the public key that signs this cordon's archives, for records officers to
    /// pin with `--signer`. Needs no secrets; exits 1 if the bot has not created the key
    /// yet.
    #[command(group(
        clap::ArgGroup::new("where").required(true).args(["config", "state_dir"])
    ))]
    Pubkey {
        /// The bot's config file (its `state_dir` holds the key).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The bot's state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct ArchiveKeys {
    /// A records officer's age identity file (as age-keygen writes it); repeat for
    /// several.
    #[arg(short = 'i', long = "identity", value_name = "KEY", required = true)]
    identity: Vec<PathBuf>,
    /// A key the archive may be signed by, as `cordon archive pubkey` prints it on the
    /// cordon server; repeat for several. This or --trust-file is required: the
    /// signature alone proves integrity, not who sealed the archive.
    #[arg(long, value_name = "ed25519:KEY", value_parser = archive_key)]
    signer: Vec<cordon::archive::ArchivePublicKey>,
    /// A file of the signing keys you trust, one `ed25519:KEY label` a line (`#`
    /// comments); see docs/archive-format.md. May be combined with --signer.
    #[arg(long, value_name = "FILE")]
    trust_file: Option<PathBuf>,
}

impl ArchiveKeys {
    /// Every key trusted by --signer and --trust-file.
    fn trusted(&self) -> Result<cordon::archive::TrustedSigners, cordon::archive::ArchiveError> {
        let mut trusted = cordon::archive::TrustedSigners::new();
        for key in &self.signer {
            trusted.pin(*key);
        }
        if let Some(file) = &self.trust_file {
            trusted.add_file(file)?;
        }
        Ok(trusted)
    }
}

fn archive_key(s: &str) -> Result<cordon::archive::ArchivePublicKey, String> {
    s.parse()
        .map_err(|e: cordon::archive::ArchiveError| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cordon: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    match cli.command {
        Cmd::Run { config, log_format } => {
            let config = match cordon::input::config::Config::load(&config) {
                Ok(c) => c,
                Err(diagnostics) => {
                    let mut err = stderr.lock();
                    for d in &diagnostics {
                        writeln!(err, "{d}")?;
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            init_tracing(log_format);
            let runtime = runtime()?;
            runtime.block_on(async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("signal received; shutting down");
                    signal.cancel();
                    // A second signal while draining stops at once.
                    wait_for_signal().await;
                    std::process::exit(130);
                });
                cordon::app::run(config, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo {
            playbook,
            name,
            keep,
        } => {
            let binary = std::env::current_exe().context("finding the cordon binary")?;
            let runtime = runtime()?;
            runtime.block_on(cordon::dev::demo::run(cordon::dev::demo::DemoOptions {
                binary,
                playbook,
                incident_name: name,
                keep,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check {
            paths,
            explain,
            name,
            commander,
            at,
            time_zone,
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("playbooks")]
            } else {
                paths
            };
            let report = cordon::input::playbook::check::run(&paths);
            report.write(&mut stdout.lock(), &mut stderr.lock())?;
            if explain {
                let example = cordon::domain::incident::explain::Example {
                    name,
                    commander,
                    at: at.unwrap_or_else(chrono::Utc::now),
                    time_zone,
                };
                let mut out = stdout.lock();
                for playbook in report.playbooks() {
                    writeln!(out)?;
                    out.write_all(
                        cordon::domain::incident::explain::explain(playbook, &example).as_bytes(),
                    )?;
                }
            }
            Ok(exit_status(report.is_ok()))
        }
        Cmd::Status { store, all } => {
            let store = open_offline_store(&store)?;
            let report = cordon::store::offline_status::render(&store, chrono::Utc::now(), all)?;
            stdout.lock().write_all(report.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Playbook {
            command: PlaybookCmd::Schema,
        } => {
            let schema = cordon::input::playbook::schema::json_schema();
            let mut out = stdout.lock();
            serde_json::to_writer_pretty(&mut out, &schema)?;
            writeln!(out)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Playbook {
            command:
                PlaybookCmd::New {
                    id,
                    title,
                    server,
                    recipients,
                    out,
                },
        } => {
            let text = cordon::input::playbook::scaffold::render(
                &cordon::input::playbook::scaffold::Scaffold {
                    id: &id,
                    title: title.as_deref(),
                    server: &server,
                    recipients: &recipients,
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?;
            match out {
                None => stdout.lock().write_all(text.as_bytes())?,
                Some(path) => {
                    let mut file = create_new(&path)?;
                    file.write_all(text.as_bytes())?;
                    file.sync_all()?;
                    let next = if recipients.is_empty() {
                        "add the records officer's age key under `archive.recipients`, "
                    } else {
                        ""
                    };
                    writeln!(
                        stderr.lock(),
                        "wrote {path}. Next: replace the example holders, {next}then run `cordon check {path}`.",
                        path = path.display()
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config {
            command: ConfigCmd::Check { file },
        } => match cordon::input::config::Config::load(&file) {
            Ok(config) => {
                writeln!(
                    stdout.lock(),
                    "{}: ok ({})",
                    file.display(),
                    config.summary()
                )?;
                Ok(ExitCode::SUCCESS)
            }
            Err(diagnostics) => {
                let mut err = stderr.lock();
                for d in &diagnostics {
                    writeln!(err, "{d}")?;
                }
                writeln!(err, "{}: {} problem(s)", file.display(), diagnostics.len())?;
                Ok(ExitCode::FAILURE)
            }
        },
        Cmd::Archive { command } => archive(command),
        Cmd::Verify(args) => verify(args),
        Cmd::Recover {
            config,
            remove_old_devices,
        } => recover(&config, remove_old_devices),
        Cmd::Audit {
            command: AuditCmd::Verify { store },
        } => {
            let store = open_offline_store(&store)?;
            let report = store.verify_audit()?;
            writeln!(stdout.lock(), "{report}")?;
            Ok(exit_status(report.is_intact()))
        }
        Cmd::Audit {
            command:
                AuditCmd::Export {
                    store,
                    format,
                    incident,
                    since,
                    until,
                    out,
                },
        } => audit_export(
            &store,
            format,
            incident.as_deref(),
            since,
            until,
            out.as_deref(),
        ),
    }
}

/// Opens the store for an offline command, given the state directory or the store
/// directory inside it. Creates nothing.
fn open_offline_store(dir: &std::path::Path) -> anyhow::Result<cordon::store::Store> {
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
fn create_new(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
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

fn audit_export(
    dir: &std::path::Path,
    format: AuditFormat,
    incident: Option<&str>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    out: Option<&std::path::Path>,
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
    let store = open_offline_store(dir)?;
    let report = store.verify_audit()?;
    let entries: Vec<_> = store
        .audit_entries(.., incident.as_ref())?
        .into_iter()
        .filter(|e| since.is_none_or(|s| e.at >= s) && until.is_none_or(|u| e.at < u))
        .collect();
    let format = match format {
        AuditFormat::Csv => ExportFormat::Csv,
        AuditFormat::Jsonl => ExportFormat::JsonLines,
    };
    match out {
        Some(path) => {
            let file = create_new(path)?;
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
    Ok(exit_status(report.is_intact()))
}

/// Loads the config for a command that needs it, printing its problems.
fn load_config(path: &std::path::Path) -> anyhow::Result<Option<cordon::input::config::Config>> {
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

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    use cordon::trust::cli::{self, Output};
    use cordon::trust::socket::{Op, PROTOCOL_VERSION, Request};
    let Some(config) = load_config(&args.config)? else {
        return Ok(ExitCode::from(2));
    };
    init_tracing_with("warn,matrix_sdk_crypto=error");
    let op = if args.list {
        Op::List
    } else if let Some(user) = args.revoke {
        Op::Revoke {
            user: user.to_string(),
            reason: args.reason,
        }
    } else if let Some(user) = args.status {
        Op::Status {
            user: user.to_string(),
        }
    } else if let Some(user) = args.user {
        match args.fingerprint {
            Some(fingerprint) => Op::Fingerprint {
                user: user.to_string(),
                fingerprint,
            },
            None => Op::Sas {
                user: user.to_string(),
                device: args.device,
                timeout_secs: args.timeout.as_secs().max(1),
            },
        }
    } else {
        anyhow::bail!("say whom to verify, or give --list, --revoke or --status");
    };
    let request = Request {
        v: PROTOCOL_VERSION,
        by: cli::operator_name(),
        op,
    };
    let output = if args.json {
        Output::Json
    } else {
        Output::Human
    };
    let runtime = runtime()?;
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

fn recover(config: &std::path::Path, remove_old_devices: bool) -> anyhow::Result<ExitCode> {
    use cordon::trust::recovery::{self, RecoverError};
    let Some(config) = load_config(config)? else {
        return Ok(ExitCode::from(2));
    };
    init_tracing_with("warn,matrix_sdk_crypto=error");
    let key = match recovery::read_recovery_key() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cordon: error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let by = cordon::trust::cli::operator_name();
    let runtime = runtime()?;
    let result = runtime.block_on(recovery::recover(&config, &key, &by, remove_old_devices));
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

fn archive(command: ArchiveCmd) -> anyhow::Result<ExitCode> {
    use cordon::archive::{self, ArchiveError, ArchiveSigner};
    // A failed check exits 1 with what to do; anything else exits 2. A trust file's
    // problems are already `file:line: error: …` lines.
    let fail = |e: ArchiveError| {
        if e.is_check_failure() {
            eprintln!("cordon: error: {e}; {}", e.advice());
            ExitCode::FAILURE
        } else if matches!(e, ArchiveError::TrustFile(_)) {
            eprintln!("{e}");
            ExitCode::from(2)
        } else if matches!(e, ArchiveError::NoTrustedSigner) {
            eprintln!("cordon: error: {e}; {}", e.advice());
            ExitCode::from(2)
        } else {
            eprintln!("cordon: error: {e}");
            ExitCode::from(2)
        }
    };
    // The identities and the trusted signing keys, both read before the archive is.
    let inputs = |keys: &ArchiveKeys| -> Result<
        (Vec<age::x25519::Identity>, archive::TrustedSigners),
        ArchiveError,
    > {
        let trusted = keys.trusted()?;
        if trusted.is_empty() {
            return Err(ArchiveError::NoTrustedSigner);
        }
        let mut all = Vec::new();
        for path in &keys.identity {
            all.extend(archive::read_identities(path)?);
        }
        Ok((all, trusted))
    };
    let mut out = io::stdout().lock();
    match command {
        ArchiveCmd::Verify { file, keys } => {
            let (ids, trusted) = match inputs(&keys) {
                Ok(inputs) => inputs,
                Err(e) => return Ok(fail(e)),
            };
            match archive::verify_file(&file, &ids, &trusted) {
                Ok(verified) => {
                    print_verified(&mut out, &file, &verified)?;
                    writeln!(out, "archive OK")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(fail(e)),
            }
        }
        ArchiveCmd::Open {
            file,
            keys,
            out: dir,
        } => {
            let (ids, trusted) = match inputs(&keys) {
                Ok(inputs) => inputs,
                Err(e) => return Ok(fail(e)),
            };
            let dir = match dir {
                Some(dir) => dir,
                None => {
                    // The default is named after the incident, so it takes a first
                    // verification to learn it.
                    let verified = match archive::verify_file(&file, &ids, &trusted) {
                        Ok(v) => v,
                        Err(e) => return Ok(fail(e)),
                    };
                    let incident = &verified.manifest.incident;
                    if cordon::domain::incident::IncidentId::parse(incident).is_err() {
                        eprintln!(
                            "cordon: error: the archive's incident id {:?} cannot name a \
                             directory; give --out DIR",
                            shown(incident)
                        );
                        return Ok(ExitCode::from(2));
                    }
                    PathBuf::from(".").join(incident)
                }
            };
            match archive::open_file(&file, &ids, &trusted, &dir) {
                Ok(opened) => {
                    print_verified(&mut out, &file, &opened.verified)?;
                    writeln!(
                        out,
                        "wrote {} files to {}:",
                        opened.written.len(),
                        opened.out.display()
                    )?;
                    for name in &opened.written {
                        writeln!(out, "  {name}")?;
                    }
                    for warning in &opened.warnings {
                        writeln!(out, "warning: {}", shown(warning))?;
                    }
                    writeln!(
                        out,
                        "archive OK; start with {}",
                        opened.out.join("index.md").display()
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(fail(e)),
            }
        }
        ArchiveCmd::Pubkey { config, state_dir } => {
            let state_dir = match (config, state_dir) {
                (_, Some(dir)) => dir,
                (Some(config), None) => {
                    let Some(config) = load_config(&config)? else {
                        return Ok(ExitCode::from(2));
                    };
                    config.state_dir
                }
                (None, None) => anyhow::bail!("give --config FILE or --state-dir DIR"),
            };
            match ArchiveSigner::load(&state_dir) {
                Ok(signer) => {
                    writeln!(out, "{}", signer.public())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ ArchiveError::NoSigningKey(_)) => {
                    eprintln!("cordon: error: {e}: start the bot once to create it");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("cordon: error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

/// The manifest's summary, as `cordon archive verify` prints it.
fn print_verified(
    out: &mut impl Write,
    file: &std::path::Path,
    v: &cordon::archive::Verified,
) -> io::Result<()> {
    let m = &v.manifest;
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    writeln!(
        out,
        "archive:    {} ({} bytes, sha256 {})",
        file.display(),
        v.file_size,
        v.file_sha256
    )?;
    writeln!(
        out,
        "incident:   {} \"{}\" (playbook {}, commander {})",
        shown(&m.incident),
        shown(&m.display_name),
        shown(&m.playbook),
        shown(&m.commander)
    )?;
    writeln!(out, "declared:   {}", time(&m.declared_at))?;
    writeln!(out, "expires:    {}", time(&m.expires_at))?;
    match (&m.stood_down_at, &m.stood_down_by) {
        (Some(at), by) => writeln!(
            out,
            "stood down: {}{}",
            time(at),
            by.as_deref()
                .map(|b| format!(" by {}", shown(b)))
                .unwrap_or_default()
        )?,
        (None, _) => writeln!(out, "stood down: no")?,
    }
    writeln!(
        out,
        "sealed:     {} on {} by cordon {}",
        time(&m.sealed_at),
        shown(&m.server_name),
        shown(&m.cordon_version)
    )?;
    writeln!(out, "rooms:")?;
    for r in &m.rooms {
        let c = &r.counts;
        writeln!(
            out,
            "  {} \"{}\" ({}): {} events, {} messages, {} state, {} edits, {} reactions, \
             {} redacted ({} by retention), {} undecryptable, {} media, {} media missing",
            shown(&r.key),
            shown(&r.name),
            shown(&r.room_id),
            c.events,
            c.messages,
            c.state,
            c.edits,
            c.reactions,
            c.redacted,
            c.retention_removed,
            c.undecryptable,
            c.media,
            c.media_missing
        )?;
        if c.unauthenticated() > 0 {
            writeln!(
                out,
                "    NOT PROVEN TO BE FROM THEIR SENDER: {} unencrypted, {} from an \
                 unverified device, {} under another sender's session (marked in the \
                 transcript and the rendering; listed in index.md)",
                c.unencrypted, c.unverified_device, c.mismatched_sender
            )?;
        }
        writeln!(
            out,
            "    {} {} bytes sha256 {}",
            shown(&r.file),
            r.bytes,
            shown(&r.sha256)
        )?;
    }
    writeln!(
        out,
        "media:      {} file(s); pre-seal segments: {}; audit: {} entries",
        m.media.len(),
        m.pre_seal.len(),
        m.audit.entries
    )?;
    writeln!(
        out,
        "signer:     {} (trusted: {})",
        v.signer,
        shown(&v.trusted_as.to_string())
    )?;
    Ok(())
}

/// Text from an archive, safe to print to a terminal (no control characters).
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Human-readable logs on stderr. `RUST_LOG` overrides the default filter, which keeps
/// matrix-sdk quiet; no level logs secrets or message bodies.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default_filter =
        "info,matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk_crypto=error,matrix_sdk_sqlite=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Each layer has its own filter: `RUST_LOG` decides what is logged, and the metrics
    // layer still sees matrix-sdk's request spans to time them.
    let logs = match format {
        LogFormat::Human => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(cordon::metrics::layer::layer())
        .init();
}

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

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn exit_status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
