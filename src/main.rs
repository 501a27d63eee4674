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
    /// Benchmarks, each against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
    /// Check playbooks and report every problem as `file:line:col: error: message`.
    ///
    /// Exits 0 when every playbook is valid, 1 otherwise.
    Check {
        /// Playbook files or directories of playbooks [default: playbooks]
        paths: Vec<PathBuf>,
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
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Time a declare (command to last invite and briefing confirmed) against a raw
    /// HTTP client sending the same requests to the same throwaway Synapse.
    Declare {
        /// Runs of each.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Role holders in the benchmark playbook.
        #[arg(long, default_value_t = 40)]
        holders: usize,
    },
}

#[derive(Debug, Subcommand)]
enum PlaybookCmd {
    /// Print the JSON Schema of the playbook format (for editor validation).
    Schema,
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
        /// The bot's state directory (holding the store).
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
    },
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
        Cmd::Run { config } => {
            let config = match cordon::config::Config::load(&config) {
                Ok(c) => c,
                Err(diagnostics) => {
                    let mut err = stderr.lock();
                    for d in &diagnostics {
                        writeln!(err, "{d}")?;
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            init_tracing();
            let runtime = runtime()?;
            runtime.block_on(async move {
                let shutdown = std::sync::Arc::new(tokio::sync::Notify::new());
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("signal received; shutting down");
                    signal.notify_waiters();
                    // A second signal while draining stops at once.
                    wait_for_signal().await;
                    std::process::exit(130);
                });
                cordon::bot::run(config, shutdown).await
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
            runtime.block_on(cordon::demo::run(cordon::demo::DemoOptions {
                binary,
                playbook,
                incident_name: name,
                keep,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            command: BenchCmd::Declare { runs, holders },
        } => {
            let binary = std::env::current_exe().context("finding the cordon binary")?;
            let runtime = runtime()?;
            let report = runtime.block_on(cordon::bench::declare(cordon::bench::BenchOptions {
                binary,
                runs: runs.max(1),
                holders,
            }))?;
            println!(
                "declare, {} rooms, {} invites, {} runs each: cordon median {:.3} s, baseline median {:.3} s, ratio cordon/baseline {:.2}",
                report.rooms,
                report.invites,
                report.cordon.len(),
                report.cordon_median().as_secs_f64(),
                report.baseline_median().as_secs_f64(),
                report.ratio()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { paths } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("playbooks")]
            } else {
                paths
            };
            let report = cordon::playbook::check::run(&paths);
            report.write(&mut stdout.lock(), &mut stderr.lock())?;
            Ok(exit_status(report.is_ok()))
        }
        Cmd::Playbook {
            command: PlaybookCmd::Schema,
        } => {
            let schema = cordon::playbook::schema::json_schema();
            let mut out = stdout.lock();
            serde_json::to_writer_pretty(&mut out, &schema)?;
            writeln!(out)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config {
            command: ConfigCmd::Check { file },
        } => match cordon::config::Config::load(&file) {
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
        Cmd::Audit {
            command: AuditCmd::Verify { store },
        } => {
            let store = cordon::store::Store::open_existing(&store)
                .with_context(|| format!("opening the store in {}", store.display()))?;
            let report = store.verify_audit()?;
            writeln!(stdout.lock(), "{report}")?;
            Ok(exit_status(report.is_intact()))
        }
    }
}

/// Human-readable logs on stderr. `RUST_LOG` overrides the default filter, which keeps
/// matrix-sdk quiet; no level logs secrets or message bodies.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk_crypto=error,matrix_sdk_sqlite=warn")
    });
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
