//! `cordon-bench`: cordon's benchmarks, each against a baseline measured in the same run
//! on the same throwaway Synapse (docs/benchmarks.md, docs/reliability.md).
//!
//! Those that run the bot as its own process (`declare`, `load`, `standdown`) use the
//! `cordon` binary beside this one, or `$CORDON_BIN`: build both in the same profile,
//! e.g. `cargo build --release -p cordon -p cordon-testkit` and then
//! `target/release/cordon-bench load`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cordon_testkit::bench;

/// Benchmarks, each against a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "cordon-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: BenchCmd,
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
    /// The cost of prevention: the declare benchmark on a Synapse running the
    /// cordon_synapse module (asking cordon about every membership and state event),
    /// against the same benchmark without it, in the same run. Exits 1 when the module
    /// adds 10 % or more to cordon's median.
    Prevention {
        /// Runs of each.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Role holders in the benchmark playbook.
        #[arg(long, default_value_t = 40)]
        holders: usize,
    },
    /// Many incidents at once from several commanders, with traffic, sweeps and
    /// reminders, then all stood down: peak RSS, CPU and command-to-confirmation
    /// p50/p95 against one incident alone in the same run. Exits 1 when a target is
    /// missed (an incident lost, a command unanswered, RSS at 150 MiB or more).
    Load {
        /// Incidents declared at once.
        #[arg(long, default_value_t = 50)]
        incidents: usize,
        /// Commanders they are spread over, each in their own control room.
        #[arg(long, default_value_t = 5)]
        commanders: usize,
        /// Messages a minute across every room during the traffic.
        #[arg(long, default_value_t = 200)]
        messages_per_minute: u32,
        /// How long the traffic runs, e.g. 2m.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        traffic: std::time::Duration,
        /// Role holders in the playbook.
        #[arg(long, default_value_t = 20)]
        holders: usize,
        /// Lone declare and stand-down runs for the baseline.
        #[arg(long, default_value_t = 3)]
        baseline_runs: usize,
    },
    /// How a declare's time grows with its role holders (each count declared alone) and
    /// with the incidents declared at once, cordon beside the raw-HTTP baseline on the
    /// same homeserver: a Markdown table. Exits 1 when a declare or stand-down goes
    /// unanswered or a step is retried.
    Cost {
        /// Holder counts, each declared alone.
        #[arg(long, value_delimiter = ',', default_values_t = [10, 40, 160])]
        holders: Vec<usize>,
        /// Counts of incidents declared at once (with the smallest holder count).
        #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 50])]
        incidents: Vec<usize>,
        /// Commanders the concurrent declares are spread over.
        #[arg(long, default_value_t = 5)]
        commanders: usize,
    },
    /// Time a retention sweep over a backlog of due events against a raw HTTP client
    /// sending the same redactions to the same throwaway Synapse.
    Sweep {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Due events per room.
        #[arg(long, default_value_t = 5000)]
        events: usize,
        /// Redactions in flight, for cordon and the baseline alike.
        #[arg(long, default_value_t = cordon::retention::SweepTuning::default().concurrency)]
        concurrency: usize,
        /// cordon's /messages page size.
        #[arg(long, default_value_t = cordon::retention::SweepTuning::default().page_size)]
        page_size: u32,
        /// Seal each page before redacting it (seal_before_redact).
        #[arg(long)]
        seal: bool,
        /// Do not let the baseline read its room's history (untimed) before it starts,
        /// leaving Synapse's event cache colder for it than for cordon.
        #[arg(long)]
        cold_baseline: bool,
    },
    /// Time a stand-down (command to rooms destroyed, archive sealed and verified)
    /// against a raw HTTP client paging as much history and deleting as many rooms on
    /// the same throwaway Synapse.
    Standdown {
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Rooms per incident.
        #[arg(long, default_value_t = 4)]
        rooms: usize,
        /// Encrypted messages per room.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cordon-bench: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: BenchCmd) -> anyhow::Result<ExitCode> {
    match command {
        BenchCmd::Declare { runs, holders } => {
            let binary = binary()?;
            let report = runtime()?.block_on(bench::declare(bench::BenchOptions {
                binary,
                runs: runs.max(1),
                holders,
                prevention: false,
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
        BenchCmd::Prevention { runs, holders } => {
            let binary = binary()?;
            let rt = runtime()?;
            let options = |prevention| bench::BenchOptions {
                binary: binary.clone(),
                runs: runs.max(1),
                holders,
                prevention,
            };
            println!("without the module:");
            let plain = rt.block_on(bench::declare(options(false)))?;
            println!("with the module:");
            let guarded = rt.block_on(bench::declare(options(true)))?;
            let extra = guarded.cordon_median().as_secs_f64()
                / plain.cordon_median().as_secs_f64().max(1e-9);
            println!(
                "prevention, {} rooms, {} invites, {} runs each: cordon median without the module {:.3} s (baseline {:.3} s), with it {:.3} s (baseline {:.3} s); with/without {:.2} (target below 1.10)",
                plain.rooms,
                plain.invites,
                plain.cordon.len(),
                plain.cordon_median().as_secs_f64(),
                plain.baseline_median().as_secs_f64(),
                guarded.cordon_median().as_secs_f64(),
                guarded.baseline_median().as_secs_f64(),
                extra
            );
            Ok(if extra < 1.10 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCmd::Load {
            incidents,
            commanders,
            messages_per_minute,
            traffic,
            holders,
            baseline_runs,
        } => {
            init_tracing();
            let options = bench::load::LoadOptions {
                binary: binary()?,
                incidents: incidents.max(1),
                commanders: commanders.max(1),
                messages_per_minute: messages_per_minute.max(1),
                traffic,
                holders,
                baseline_runs: baseline_runs.max(1),
            };
            let report = runtime()?.block_on(bench::load::load(options.clone()))?;
            print!("{}", report.render(&options));
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCmd::Cost {
            holders,
            incidents,
            commanders,
        } => {
            init_tracing();
            let options = bench::cost::CostOptions {
                binary: binary()?,
                holders: holders.into_iter().map(|h| h.max(1)).collect(),
                incidents: incidents.into_iter().map(|n| n.max(1)).collect(),
                commanders: commanders.max(1),
            };
            let report = runtime()?.block_on(bench::cost::cost(options))?;
            print!("{}", report.render());
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCmd::Sweep {
            runs,
            events,
            concurrency,
            page_size,
            seal,
            cold_baseline,
        } => {
            // Rate-limit waits and failures are warnings; RUST_LOG=cordon::retention=debug
            // times every page.
            init_tracing();
            let report =
                runtime()?.block_on(bench::sweep::sweep(bench::sweep::SweepBenchOptions {
                    runs: runs.max(1),
                    events,
                    concurrency,
                    page_size,
                    seal,
                    cold_baseline,
                }))?;
            println!(
                "sweep, {} due events, {} in flight, pages of {}{}, {} runs each: cordon median {:.3} s, baseline median {:.3} s, ratio cordon/baseline {:.2}",
                events,
                concurrency,
                page_size,
                match (seal, cold_baseline) {
                    (false, false) => "",
                    (true, false) => ", sealed",
                    (false, true) => ", cold baseline",
                    (true, true) => ", sealed, cold baseline",
                },
                report.cordon.len(),
                report.cordon_median().as_secs_f64(),
                report.baseline_median().as_secs_f64(),
                report.ratio()
            );
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Standdown {
            runs,
            rooms,
            messages,
        } => {
            let binary = binary()?;
            let report = runtime()?.block_on(bench::standdown::standdown(
                bench::standdown::StandDownBenchOptions {
                    binary,
                    runs: runs.max(1),
                    rooms: rooms.max(1),
                    messages,
                },
            ))?;
            println!(
                "standdown, {rooms} rooms x {messages} encrypted messages, {} runs each: cordon median {:.3} s, baseline median {:.3} s, ratio cordon/baseline {:.2}",
                report.cordon.len(),
                report.cordon_median().as_secs_f64(),
                report.baseline_median().as_secs_f64(),
                report.ratio()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The `cordon` binary the benchmark runs (see the module doc).
fn binary() -> anyhow::Result<std::path::PathBuf> {
    cordon_testkit::cordon_bin().map_err(anyhow::Error::msg)
}

/// Warnings on stderr, matrix-sdk silent; `RUST_LOG` overrides.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,matrix_sdk=off,matrix_sdk_base=off,matrix_sdk_crypto=off",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
