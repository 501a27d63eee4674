//! Faults from outside: the homeserver going away and coming back, as operators and
//! their monitoring see it.

use std::path::Path;
use std::time::{Duration, Instant};

use cordon::harness::Synapse;
use cordon::harness::bot::{BotProcess, BotSetup};

use crate::support::cordon_bin;

/// How long any one change of state is waited for (not a timing assertion: a hung
/// bot fails here instead of hanging the run).
const WAIT: Duration = Duration::from_secs(180);

/// Polls `/healthz` until it answers `want`, returning the body.
async fn healthz_becomes(base: &str, want: u16, bot: &BotProcess) -> serde_json::Value {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(resp) = http.get(format!("{base}/healthz")).send().await
            && resp.status().as_u16() == want
        {
            return resp.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {want}\nbot log:\n{}",
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_while_synapse_is_down_and_recovers_when_it_is_back() {
    // Its own homeserver: stopping the shared one would break the other tests.
    let mut hs = Synapse::start().await.expect("synapse");
    let dir = tempfile::tempdir().unwrap();
    let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let operator = hs.user_id("outage-operator").unwrap();
    let setup = BotSetup::create(
        &hs,
        dir.path(),
        "outage-cordon",
        &playbooks,
        &[operator],
        "",
    )
    .await
    .unwrap();
    let mut bot = BotProcess::start(&cordon_bin(), &setup, &[]).unwrap();
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    let base = bot
        .metrics_url()
        .expect("the bot logs where it serves /healthz");

    let up = healthz_becomes(&base, 200, &bot).await;
    assert_eq!(up["checks"]["sync"]["ok"], true, "{up}");

    hs.stop().await;
    let down = healthz_becomes(&base, 503, &bot).await;
    assert_eq!(down["status"], "failing", "{down}");
    assert_eq!(down["checks"]["sync"]["ok"], false, "{down}");
    assert!(
        down["checks"]["sync"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("reachable")),
        "{down}"
    );
    // The store is fine: the failing check is the one named.
    assert_eq!(down["checks"]["store"]["ok"], true, "{down}");
    assert!(
        bot.is_running(),
        "the bot rides out the outage:\n{}",
        bot.log_text()
    );

    hs.restart().await.expect("synapse comes back");
    let back = healthz_becomes(&base, 200, &bot).await;
    assert_eq!(back["checks"]["sync"]["ok"], true, "{back}");
    assert!(bot.is_running(), "{}", bot.log_text());
    let status = bot.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "a clean exit after the outage: {status:?}"
    );
}

/// The short version of `cordon bench load`: a few incidents at once from two
/// commanders, traffic with a sweep and a reminder running, then all stood down. No
/// timing is asserted; what must hold is that nothing is lost or left unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_of_several_incidents_at_once_loses_nothing_and_answers_every_command() {
    let options = cordon::bench::load::LoadOptions {
        binary: cordon_bin(),
        incidents: 5,
        commanders: 2,
        messages_per_minute: 60,
        traffic: Duration::from_secs(20),
        holders: 12,
        baseline_runs: 1,
    };
    let report = cordon::bench::load::load(options.clone())
        .await
        .expect("the load run completes");
    let text = report.render(&options);
    println!("{text}");
    assert!(report.problems.is_empty(), "{text}");
    assert_eq!(report.declare.len(), 5, "{text}");
    assert_eq!(report.standdown.len(), 5, "{text}");
    assert_eq!(report.destroyed.len(), 5, "{text}");
    assert_eq!(report.messages_failed, 0, "{text}");
    assert!(report.messages_sent >= 19, "{text}");
}
