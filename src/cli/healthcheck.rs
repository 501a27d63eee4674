//! `cordon healthcheck`: asks the running bot's `/healthz` and exits 0 when it says
//! ok, 1 otherwise. For probes that cannot make an HTTP request themselves: the
//! Docker image's `HEALTHCHECK` (it has no curl), a monitoring agent's exec check.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The bot's config file; its `metrics.listen` is where `/healthz` is asked.
    #[arg(long, value_name = "FILE", default_value = "/etc/cordon/cordon.yaml")]
    config: PathBuf,
    /// Ask this address (`HOST:PORT`) instead of the config's `metrics.listen`.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<SocketAddr>,
    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addr = match args.addr {
        Some(addr) => addr,
        None => {
            let Some(config) = super::load_config(&args.config)? else {
                return Ok(ExitCode::from(2));
            };
            config.metrics_listen.with_context(|| {
                format!(
                    "{} serves no /healthz (`metrics.listen` is off); set it, or give --addr",
                    args.config.display()
                )
            })?
        }
    };
    anyhow::ensure!(
        addr.port() != 0,
        "`metrics.listen` has port 0 (a port the system picks at each start): give --addr \
         with the port the bot logged (`serving /metrics and /healthz on …`)"
    );
    let url = format!("http://{}/healthz", reachable(addr));
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let answer = super::runtime()?.block_on(async {
        let response = client.get(&url).send().await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body))
    });
    let mut out = std::io::stdout().lock();
    match answer {
        Ok((status, body)) => {
            let summary: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let said = summary["status"].as_str().unwrap_or("(no status)");
            writeln!(out, "{url}: {} {said}", status.as_u16())?;
            if !status.is_success() {
                // The failing checks, so the orchestrator's log says why.
                if let Some(checks) = summary["checks"].as_object() {
                    for (name, check) in checks {
                        if check["ok"] == false {
                            let detail = check["detail"].as_str().unwrap_or("");
                            writeln!(out, "  {name}: {detail}")?;
                        }
                    }
                }
            }
            Ok(super::exit_status(status.is_success()))
        }
        Err(e) => {
            writeln!(out, "{url}: no answer ({e})")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// An address to connect to for a listening address: the wildcard becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}
