//! Enrolment against a real Synapse: `cordon verify` by emoji comparison (driven through
//! stdin, as an operator would answer) and by fingerprint, with the bot running (admin
//! socket) and stopped (the CLI does the work itself); list and revoke; the socket's
//! permissions and the state directory's lock; and `cordon recover` from the recovery
//! key printed at first start.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use cordon::dev::TestUser;
use cordon::dev::bot::{BotProcess, BotSetup, enrol, verify_command};
use cordon::dev::user::SasOutcome;
use cordon::store::Store;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{WAIT, cordon_bin};
use crate::world::World;

impl World {
    /// A bot account with its config and `people` with their own clients (the world's
    /// nurses), nobody enrolled and the bot not started.
    async fn enrolment(people: usize) -> World {
        World::builder()
            .prefix("v")
            .nurses(people, people)
            .unstarted()
            .build()
            .await
    }

    /// Starts the bot (not owned by the world) and waits until it is ready.
    async fn start_bot(&self) -> BotProcess {
        let mut bot = self.spawn_bot(&[]);
        bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
        bot
    }

    /// Runs `cordon verify --config … ARGS` to the end with stdin closed.
    async fn verify(&self, args: &[&str]) -> Output {
        let run = verify_command(&cordon_bin(), &self.setup)
            .args(args)
            .output();
        tokio::time::timeout(WAIT * 2, run)
            .await
            .expect("cordon verify finished")
            .unwrap()
    }

    /// `--list --json`: the enrolment rows.
    async fn list(&self) -> Vec<Value> {
        let out = self.verify(&["--list", "--json"]).await;
        assert!(out.status.success(), "--list failed: {}", show(&out));
        let value: Value = serde_json::from_slice(&out.stdout).unwrap();
        value["list"].as_array().unwrap().clone()
    }

    /// The standing `--status` reports, and whether it exited 0.
    async fn status(&self, user: &TestUser) -> (String, bool) {
        let out = self
            .verify(&["--status", user.user_id().as_str(), "--json"])
            .await;
        let value: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("--status printed no JSON ({e}): {}", show(&out)));
        (
            value["trust"]["status"].as_str().unwrap_or("").to_owned(),
            out.status.success(),
        )
    }
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn row_for<'a>(list: &'a [Value], user: &TestUser) -> Option<&'a Value> {
    list.iter()
        .find(|r| r["enrolment"]["user"].as_str() == Some(user.user_id().as_str()))
}

/// The audit actions recorded in the (closed) store of a stopped bot.
fn audit_actions(store_dir: &Path) -> Vec<(String, Value)> {
    let store = Store::open_existing(store_dir).unwrap();
    store
        .audit_entries(.., None)
        .unwrap()
        .into_iter()
        .map(|e| (e.action.clone(), e.details_value()))
        .collect()
}

/// A fingerprint that is well-formed but not the person's: the last character changed.
fn wrong(fingerprint: &str) -> String {
    let mut chars: Vec<char> = fingerprint.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Runs the interactive `cordon verify @person` against the person's client, answering
/// the question with `answer` once both sides show emojis. Returns the CLI's output, the
/// emojis it printed and those the person's client showed, and how the comparison ended
/// on the person's side.
pub(crate) async fn compare_emojis(
    setup: &BotSetup,
    person: &TestUser,
    person_confirms: bool,
    answer: &str,
) -> (
    Output,
    Vec<(String, String)>,
    Vec<(String, String)>,
    SasOutcome,
) {
    let mut child = verify_command(&cordon_bin(), setup)
        .arg(person.user_id().as_str())
        .args(["--timeout", "2m"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();

    let read_emojis = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let mut emojis = Vec::new();
        let mut in_block = false;
        while emojis.len() < 7 {
            let Some(line) = lines.next_line().await.unwrap() else {
                panic!("cordon verify ended before showing emojis; it printed {seen:?}");
            };
            seen.push(line.clone());
            if line.starts_with("Compare these emojis") {
                in_block = true;
            } else if in_block {
                let (symbol, name) = line.split_once("  ").expect("`SYMBOL  Name`");
                emojis.push((symbol.to_owned(), name.to_owned()));
            }
        }
        (emojis, lines)
    };
    let (session, cli) = tokio::join!(
        person.accept_sas(WAIT),
        tokio::time::timeout(WAIT, read_emojis)
    );
    let session = session.unwrap();
    let (cli_emojis, mut rest) = cli.expect("the CLI showed emojis in time");
    if person_confirms {
        session.confirm().await.unwrap();
    } else {
        session.mismatch().await.unwrap();
    }
    stdin.write_all(answer.as_bytes()).await.unwrap();
    drop(stdin);

    let mut tail = String::new();
    while let Ok(Some(line)) = rest.next_line().await {
        tail.push_str(&line);
        tail.push('\n');
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("cordon verify exited")
        .unwrap();
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_end(&mut stderr).await;
    }
    let outcome = session.finished(WAIT).await.unwrap();
    let output = Output {
        status,
        stdout: tail.into_bytes(),
        stderr,
    };
    (output, cli_emojis, session.emojis().to_vec(), outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_comparison_through_the_cli_enrols_the_person_when_the_operator_says_yes() {
    let w = World::enrolment(1).await;
    let person = &w.nurses[0];
    let mut bot = w.start_bot().await;
    let (status, verified) = w.status(person).await;
    assert_eq!(
        (status.as_str(), verified),
        ("not-enrolled", false),
        "before the comparison"
    );

    let (out, cli_emojis, person_emojis, outcome) =
        compare_emojis(&w.setup, person, true, "y\n").await;
    assert!(
        out.status.success(),
        "{}\nbot log:\n{}",
        show(&out),
        bot.log_text()
    );
    assert_eq!(
        cli_emojis, person_emojis,
        "the operator saw other emojis than the person"
    );
    assert_eq!(outcome, SasOutcome::Done);

    let list = w.list().await;
    let row = row_for(&list, person).expect("the person is listed");
    assert_eq!(row["trust"]["status"], "verified", "{row}");
    assert_eq!(row["enrolment"]["method"]["kind"], "sas", "{row}");
    assert_eq!(
        row["enrolment"]["master_key"].as_str().unwrap(),
        person.master_key_fingerprint().await.unwrap()
    );
    assert!(
        row["enrolment"]["by"]
            .as_str()
            .unwrap()
            .starts_with("operator:"),
        "{row}"
    );
    bot.terminate(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_mismatch_enrols_nobody_and_exits_1() {
    let w = World::enrolment(1).await;
    let person = &w.nurses[0];
    let mut bot = w.start_bot().await;

    let (out, cli_emojis, person_emojis, outcome) =
        compare_emojis(&w.setup, person, true, "n\n").await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(cli_emojis, person_emojis);
    assert!(
        matches!(outcome, SasOutcome::Cancelled(_)),
        "the person's side must see the cancel, got {outcome:?}"
    );
    assert!(
        row_for(&w.list().await, person).is_none(),
        "nothing may be recorded"
    );
    assert_eq!(w.status(person).await, ("not-enrolled".to_owned(), false));

    bot.terminate(Duration::from_secs(20));
    let actions = audit_actions(&w.store_dir());
    assert!(
        actions.iter().any(|(a, d)| a == "identity.verify-failed"
            && d["method"] == "sas"
            && d["user"] == person.user_id().as_str()),
        "the failed comparison is audited: {actions:?}"
    );
    assert!(!actions.iter().any(|(a, _)| a == "identity.verified"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_enrolment_checks_the_key_with_the_bot_running_and_stopped() {
    let w = World::enrolment(2).await;
    let (running_person, stopped_person) = (&w.nurses[0], &w.nurses[1]);

    // Bot stopped (never started even): the CLI takes the state directory itself.
    let fp = stopped_person.master_key_fingerprint().await.unwrap();
    let out = w
        .verify(&[
            stopped_person.user_id().as_str(),
            "--fingerprint",
            &wrong(&fp),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match"),
        "{}",
        show(&out)
    );
    enrol(&cordon_bin(), &w.setup, stopped_person)
        .await
        .expect("the right key enrols offline");

    // Bot running: over the admin socket.
    let mut bot = w.start_bot().await;
    let fp = running_person.master_key_fingerprint().await.unwrap();
    let out = w
        .verify(&[
            running_person.user_id().as_str(),
            "--fingerprint",
            &wrong(&fp),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(row_for(&w.list().await, running_person).is_none());
    enrol(&cordon_bin(), &w.setup, running_person)
        .await
        .expect("the right key enrols through the socket");
    let out = w.verify(&["--list"]).await;
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not running"),
        "the running bot must serve the CLI: {}",
        show(&out)
    );

    let list = w.list().await;
    for person in [running_person, stopped_person] {
        let row = row_for(&list, person).expect("listed");
        assert_eq!(row["trust"]["status"], "verified", "{row}");
        assert_eq!(row["enrolment"]["method"]["kind"], "fingerprint");
    }

    // A bad argument changes nothing and is a usage error.
    let out = w
        .verify(&[running_person.user_id().as_str(), "--fingerprint", "short"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));

    bot.terminate(Duration::from_secs(20));
    let actions = audit_actions(&w.store_dir());
    let failed: Vec<_> = actions
        .iter()
        .filter(|(a, d)| a == "identity.verify-failed" && d["method"] == "fingerprint")
        .collect();
    assert_eq!(failed.len(), 2, "both wrong keys are audited: {actions:?}");
    let verified = actions
        .iter()
        .filter(|(a, _)| a == "identity.verified")
        .count();
    assert_eq!(verified, 2, "{actions:?}");
    assert!(actions.iter().any(|(a, _)| a == "identity.listed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_then_list_shows_the_revocation() {
    let w = World::enrolment(1).await;
    let person = &w.nurses[0];
    let mut bot = w.start_bot().await;
    enrol(&cordon_bin(), &w.setup, person).await.unwrap();
    assert_eq!(w.status(person).await, ("verified".to_owned(), true));

    let out = w
        .verify(&[
            "--revoke",
            person.user_id().as_str(),
            "--reason",
            "left the trust",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));

    let list = w.list().await;
    let row = row_for(&list, person).unwrap();
    assert_eq!(row["trust"]["status"], "revoked", "{row}");
    assert_eq!(row["enrolment"]["revoked"]["reason"], "left the trust");
    assert!(
        row["enrolment"]["revoked"]["by"]
            .as_str()
            .unwrap()
            .starts_with("operator:")
    );
    let table = w.verify(&["--list"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(person.user_id().as_str()))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("revoked") && line.contains("left the trust"),
        "{line}"
    );
    assert_eq!(w.status(person).await, ("revoked".to_owned(), false));
    bot.terminate(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_is_owner_only_and_one_process_owns_the_state_directory() {
    let w = World::enrolment(0).await;
    let mut bot = w.start_bot().await;
    let socket = w.setup.state_dir.join("admin.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(&w.setup.state_dir).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);

    // A second bot on the same state directory is refused, naming the first.
    let mut second = w.spawn_bot(&[]);
    second
        .wait_for_log(
            &format!(
                "cordon is already running with this state directory ({}) (pid {})",
                w.setup.state_dir.display(),
                bot.pid()
            ),
            WAIT,
        )
        .await
        .unwrap();
    let status = second.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second bot must fail"
    );
    // The first is unharmed and still serves the CLI.
    let out = w.verify(&["--list"]).await;
    assert!(out.status.success(), "{}", show(&out));

    // SIGKILL leaves the socket file behind; the next start replaces it.
    bot.kill9();
    assert!(socket.exists(), "a killed bot leaves its socket file");
    let mut bot = w.start_bot().await;
    let out = w.verify(&["--list"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not running"),
        "the restarted bot serves the CLI: {}",
        show(&out)
    );
    bot.terminate(Duration::from_secs(20));
    assert!(!socket.exists(), "a clean shutdown removes the socket file");
}

/// The recovery key from the framed block the bot printed (on stdout, which the harness
/// appends to the bot's log).
fn recovery_key_in(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix("Recovery key: "))
        .map(|k| k.trim().to_owned())
}

async fn recover(w: &World, key: &str) -> Output {
    let mut child = tokio::process::Command::new(cordon_bin())
        .arg("recover")
        .arg("--config")
        .arg(&w.setup.config)
        .current_dir(&w.setup.dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{key}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("cordon recover finished")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_key_restores_the_identity_on_a_wiped_disk_and_holders_stay_verified() {
    let w = World::enrolment(1).await;
    let holder = &w.nurses[0];
    let mut bot = w.start_bot().await;
    let key = recovery_key_in(&bot.log_text()).expect("the first start prints a recovery key");
    assert!(
        !bot.log_text().contains(&format!("{key}\n{key}")),
        "printed once"
    );
    enrol(&cordon_bin(), &w.setup, holder).await.unwrap();
    assert_eq!(w.status(holder).await, ("verified".to_owned(), true));
    bot.terminate(Duration::from_secs(20));

    // The disk is lost.
    std::fs::remove_dir_all(&w.setup.state_dir).unwrap();

    // Without recovery, the bot refuses to run as a cordon that cannot sign anyone.
    let mut refused = w.spawn_bot(&[]);
    refused.wait_for_log("cordon recover", WAIT).await.unwrap();
    assert!(
        refused
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| !s.success())
    );
    assert!(!w.setup.state_dir.join("session.json").exists());

    // A wrong key changes nothing.
    let out = recover(&w, &wrong(&key)).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("recovery key does not open"),
        "{}",
        show(&out)
    );
    assert!(!w.setup.state_dir.join("session.json").exists());
    assert!(!w.store_dir().exists(), "no store is written");

    let out = recover(&w, &key).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(w.setup.state_dir.join("session.json").exists());
    let actions = audit_actions(&w.store_dir());
    assert!(
        actions.iter().any(|(a, _)| a == "identity.recovered"),
        "{actions:?}"
    );

    // The bot starts on the recovered identity (no new recovery key), and the holder
    // it signed before is still verified, though the new store has no record of them.
    let mut bot = w.start_bot().await;
    assert!(
        recovery_key_in(&bot.log_text()).is_none(),
        "a recovered cordon must not set up recovery again:\n{}",
        bot.log_text()
    );
    assert!(
        row_for(&w.list().await, holder).is_none(),
        "the store is new"
    );
    assert_eq!(w.status(holder).await, ("verified".to_owned(), true));
    bot.terminate(Duration::from_secs(20));
}

/// `cordon rotate-recovery-key`: the new key goes to the file named, the old key opens
/// nothing any more, and the new one restores cordon's identity on a wiped disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_recovery_key_restores_the_identity_and_the_old_one_no_longer_does() {
    let w = World::enrolment(0).await;
    let mut bot = w.start_bot().await;
    let old = recovery_key_in(&bot.log_text()).expect("the first start prints a recovery key");
    bot.terminate(Duration::from_secs(20));

    let file = w.setup.dir.join("new-recovery-key.txt");
    let out = tokio::process::Command::new(cordon_bin())
        .args(["rotate-recovery-key", "--config"])
        .arg(&w.setup.config)
        .arg("--out")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let new = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(new, old);
    assert!(!show(&out).contains(&new), "the key is only in the file");
    let actions = audit_actions(&w.store_dir());
    assert!(
        actions
            .iter()
            .any(|(a, _)| a == "identity.recovery-key-rotated"),
        "{actions:?}"
    );

    // The disk is lost: the old key opens nothing, the new one restores cordon.
    std::fs::remove_dir_all(&w.setup.state_dir).unwrap();
    let out = recover(&w, &old).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(!w.setup.state_dir.join("session.json").exists());
    let out = recover(&w, &new).await;
    assert!(out.status.success(), "{}", show(&out));
    let mut bot = w.start_bot().await;
    assert!(bot.is_running(), "{}", bot.log_text());
    bot.terminate(Duration::from_secs(20));
}
