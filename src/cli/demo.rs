//! `cordon demo`: a scripted major incident on a throwaway Synapse.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

// `cordon demo`'s arguments.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The playbook to declare.
    #[arg(long, default_value = "playbooks/mass-casualty.yaml")]
    playbook: PathBuf,
    /// The incident's name.
    #[arg(long, default_value = "Tram crash Addiscombe")]
    name: String,
    /// Keep the demo's files (config, store, logs) afterwards.
    #[arg(long)]
    keep: bool,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let binary = std::env::current_exe().context("finding the cordon binary")?;
    let runtime = super::runtime()?;
    runtime.block_on(cordon::dev::demo::run(cordon::dev::demo::DemoOptions {
        binary,
        playbook: args.playbook,
        incident_name: args.name,
        keep: args.keep,
    }))?;
    Ok(ExitCode::SUCCESS)
}
