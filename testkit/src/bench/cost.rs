//! `cordon-bench cost`: how a declare's time grows with its role holders and with the
//! incidents declared at once, cordon beside the raw-HTTP baseline, on one homeserver
//! (`CORDON_SYNAPSE` picks its form).
//!
//! For each holder count, one incident is declared alone (cordon, then the baseline);
//! for each count of incidents, that many are declared at once, spread over the
//! commanders (cordon, then the baseline at the same concurrency), with the smallest
//! holder count. Each cell's incidents are stood down (cordon) or deleted (the
//! baseline) before the next cell, so every cell starts from the same homeserver (the
//! last cell's are left: nothing is measured after them). The
//! baseline is `cordon-bench load`'s: the same requests, built from the same room plans,
//! from an admin account of its own with a plain HTTP client.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::join_all;

use super::BenchError;
use super::load::{self, Crew, RawBaseline, other, percentile, ratio};
use cordon::dev::Synapse;
use cordon::domain::incident::IncidentId;

/// Options of `cordon-bench cost`.
#[derive(Debug, Clone)]
pub struct CostOptions {
    /// The `cordon` binary.
    pub binary: PathBuf,
    /// Holder counts, each declared alone.
    pub holders: Vec<usize>,
    /// Counts of incidents declared at once.
    pub incidents: Vec<usize>,
    /// Commanders the concurrent declares are spread over.
    pub commanders: usize,
}

/// One cell of the table.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Role holders in the playbook.
    pub holders: usize,
    /// Incidents declared at once.
    pub incidents: usize,
    /// Invites one incident sends.
    pub invites: usize,
    /// cordon's declares: command to summary.
    pub cordon: Vec<Duration>,
    /// The baseline's: first request to last response.
    pub baseline: Vec<Duration>,
}

/// What the run measured.
#[derive(Debug, Clone, Default)]
pub struct CostReport {
    /// The homeserver's form.
    pub form: &'static str,
    /// The holder sweep, then the concurrency sweep.
    pub cells: Vec<Cell>,
    /// Declares unanswered, steps retried.
    pub problems: Vec<String>,
}

impl CostReport {
    /// The table, in Markdown.
    pub fn render(&self) -> String {
        let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let mut out = format!(
            "homeserver: {}\n\n| holders | incidents at once | invites each | cordon p50 | cordon p95 | baseline p50 | baseline p95 | cordon/baseline p50 | p95 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.form
        );
        for c in &self.cells {
            let (c50, c95) = (percentile(&c.cordon, 50.0), percentile(&c.cordon, 95.0));
            let (b50, b95) = (percentile(&c.baseline, 50.0), percentile(&c.baseline, 95.0));
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
                c.holders,
                c.incidents,
                c.invites,
                s(c50),
                s(c95),
                s(b50),
                s(b95),
                ratio(c50, b50),
                ratio(c95, b95),
            ));
        }
        for p in &self.problems {
            out.push_str(&format!("PROBLEM: {p}\n"));
        }
        out
    }
}

/// The playbook id for `holders` holders.
fn playbook_id(holders: usize) -> String {
    format!("cost-h{holders}")
}

/// Runs the sweep.
pub async fn cost(options: CostOptions) -> Result<CostReport, BenchError> {
    let hs = Synapse::start().await?;
    let dir = std::env::temp_dir().join(format!("cordon-cost-{}", std::process::id()));
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).map_err(other)?;
    let smallest = options.holders.iter().copied().min().unwrap_or(10);
    let mut counts = options.holders.clone();
    counts.push(smallest);
    counts.sort_unstable();
    counts.dedup();
    for &h in &counts {
        let (text, _) = super::playbook_text(hs.server_name(), h);
        let id = playbook_id(h);
        let text = text.replacen("id: bench", &format!("id: {id}"), 1);
        std::fs::write(playbooks.join(format!("{id}.yaml")), text).map_err(other)?;
    }
    let most = counts.last().copied().unwrap_or(smallest);
    let (_, holders) = super::playbook_text(hs.server_name(), most);
    let crew = Crew::start(
        &hs,
        &dir,
        &playbooks,
        &options.binary,
        &holders,
        options.commanders,
    )
    .await?;
    let raw = RawBaseline::create(&hs).await?;
    let mut report = CostReport {
        form: hs.form().name(),
        ..CostReport::default()
    };
    let mut cells: Vec<(usize, usize)> = options.holders.iter().map(|&h| (h, 1)).collect();
    cells.extend(options.incidents.iter().map(|&n| (smallest, n)));
    let last = cells.len().saturating_sub(1);
    for (k, (h, n)) in cells.into_iter().enumerate() {
        let id = playbook_id(h);
        let playbook = load::load_playbook(&playbooks.join(format!("{id}.yaml")))?;
        // The last cell's incidents are left as they are: nothing is measured after it.
        let cordon = declare_and_stand_down(&crew, &id, k, n, k < last, &mut report).await;
        let (baseline, rooms) = raw.declare_all(&playbook, &format!("rb{k}"), n).await?;
        if k < last {
            raw.stand_down_all(&rooms).await?;
        }
        let invites = invites_of(&playbook);
        println!(
            "{h} holders, {n} at once ({invites} invites each): cordon p50 {:.1} s, baseline p50 {:.1} s",
            percentile(&cordon, 50.0).as_secs_f64(),
            percentile(&baseline, 50.0).as_secs_f64()
        );
        report.cells.push(Cell {
            holders: h,
            incidents: n,
            invites,
            cordon,
            baseline,
        });
    }
    let retried = load::retried_steps(&crew.bot);
    if retried > 0 {
        report.problems.push(format!(
            "{retried} steps failed and were retried (see the bot's log; CORDON_KEEP_BENCH=1 keeps it)"
        ));
    }
    let Crew {
        setup,
        mut bot,
        commanders,
        ..
    } = crew;
    bot.terminate(Duration::from_secs(30));
    for c in commanders {
        c.user.stop().await;
    }
    super::finish_dir(&dir, Some(&setup.log));
    Ok(report)
}

/// The invites one incident of `playbook` sends (every room's planned invites).
fn invites_of(playbook: &cordon::input::playbook::Playbook) -> usize {
    use cordon::domain::incident::plan::{self, IncidentFacts};
    let Ok(id) = IncidentId::parse("count-0") else {
        return 0;
    };
    let Ok(commander) = matrix_sdk::ruma::UserId::parse("@count:localhost") else {
        return 0;
    };
    let facts = IncidentFacts {
        id: &id,
        display_name: "count",
        playbook,
        commander: &commander,
        expires_at: chrono::Utc::now() + chrono::TimeDelta::hours(24),
        time_zone: chrono_tz::Europe::London,
        exercise: false,
    };
    plan::plan_rooms(&facts, chrono::Utc::now())
        .iter()
        .map(|p| p.invites.len())
        .sum()
}

/// `n` declares of `playbook` at once, spread over the commanders, then (with
/// `stand_down`) every one stood down at once and destroyed: the declares' times.
async fn declare_and_stand_down(
    crew: &Crew,
    playbook: &str,
    cell: usize,
    n: usize,
    stand_down: bool,
    report: &mut CostReport,
) -> Vec<Duration> {
    let commanders = &crew.commanders;
    let declares = (0..n).map(|i| {
        let c = &commanders[i % commanders.len()];
        async move {
            let name = format!("Cost {cell}.{i}");
            (i, load::declare(c, &crew.bot_id, playbook, &name).await)
        }
    });
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for (i, result) in join_all(declares).await {
        match result {
            Ok((id, t)) => {
                times.push(t);
                ids.push((i, id));
            }
            Err(e) => report
                .problems
                .push(format!("{playbook}: declare {i} unanswered: {e}")),
        }
    }
    if !stand_down {
        return times;
    }
    let standdowns = ids.iter().map(|(i, id)| {
        let c = &commanders[i % commanders.len()];
        async move { (id.clone(), load::stand_down(c, &crew.bot_id, id).await) }
    });
    for (id, result) in join_all(standdowns).await {
        if let Err(e) = result {
            report
                .problems
                .push(format!("stand-down of {} unanswered: {e}", id.as_str()));
        }
    }
    times
}
