//! `cordon run`: the bot itself, until SIGTERM or ctrl-c.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

// `cordon run`'s arguments (the help text is the subcommand's, in `cli`).
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The config file (see cordon.example.yaml and docs/config.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Log lines on stderr: `human` (default) or `json`, one object per line with
    /// `timestamp`, `level`, `target`, `fields` and `spans`, for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// When cordon sets up recovery (its first start), write the recovery key to this
    /// new file (mode 0600; an existing file is never overwritten) rather than the
    /// terminal. Move it offline at once.
    #[arg(long, value_name = "FILE")]
    recovery_key_out: Option<PathBuf>,
    /// Print the recovery key on standard output even when it is not a terminal
    /// (without this or `--recovery-key-out`, a first start whose output is not a
    /// terminal, such as a service's journal, does not set up recovery and says so).
    #[arg(long, conflicts_with = "recovery_key_out")]
    recovery_key_to_stdout: bool,
    /// Refuse to start (exit 78) unless cordon has started before (its state directory
    /// holds `session.json`): the first start is an operator's, in a terminal or with
    /// `--recovery-key-out`. The Docker image runs with it; the systemd unit has the
    /// same guard as `ConditionPathExists=`.
    #[arg(long)]
    require_session: bool,
}

/// `cordon run --log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Readable lines (ANSI colours on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match cordon::input::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(diagnostics) => {
            let mut err = io::stderr().lock();
            for d in &diagnostics {
                writeln!(err, "{d}")?;
            }
            return Ok(ExitCode::from(NEEDS_OPERATOR));
        }
    };
    let session = config.state_dir.join(cordon::matrix::session::SESSION_FILE);
    if args.require_session && !session.exists() {
        eprintln!(
            "cordon: error: {} does not exist: cordon has never started with this state \
             directory. Do its first start by hand, which sets up its recovery key: in a \
             terminal, or with `--recovery-key-out FILE` (docs/deploy.md, \"First start\"); \
             then start it as a service",
            session.display()
        );
        return Ok(ExitCode::from(NEEDS_OPERATOR));
    }
    init_tracing(args.log_format);
    let runtime = super::runtime()?;
    let ran = runtime.block_on(async move {
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
        let recovery_key = cordon::matrix::session::RecoveryKeyOut::choose(
            args.recovery_key_out,
            args.recovery_key_to_stdout,
        );
        cordon::app::run(config, recovery_key, shutdown).await
    });
    match ran {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.needs_operator() => {
            eprintln!("cordon: error: {e}");
            Ok(ExitCode::from(NEEDS_OPERATOR))
        }
        Err(e) => Err(e.into()),
    }
}

/// The exit code for what a restart cannot fix (an invalid config, an unreadable
/// secret, a refused login): 78, `EX_CONFIG` in sysexits.h. The systemd unit has
/// `RestartPreventExitStatus=78`, so cordon waits for an operator instead of
/// restarting every 5 seconds.
const NEEDS_OPERATOR: u8 = 78;

/// Logs on stderr, readable or JSON. `RUST_LOG` overrides the default filter, which
/// keeps matrix-sdk quiet; no level logs secrets or message bodies.
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

/// SIGTERM or ctrl-c.
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
