//! Operating cordon as a service: what a restart cannot fix makes it exit 78 (which the
//! unit does not restart on) instead of crash-looping, and the recovery key goes only
//! where the operator said.

use std::process::Stdio;
use std::time::Duration;

use cordon::dev::bot::{BotProcess, BotSetup};
use cordon::dev::synapse::Synapse;

use crate::support::{cordon_bin, unique};

/// `cordon run`'s exit code for what only an operator can fix (EX_CONFIG).
const NEEDS_OPERATOR: i32 = 78;

async fn setup(hs: &Synapse, dir: &std::path::Path, tag: &str) -> BotSetup {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    let operator = hs.user_id(&unique("operator")).unwrap();
    BotSetup::create(hs, dir, &unique(tag), &playbooks, &[operator], "")
        .await
        .unwrap()
}

/// A wrong password at the first start: the login is refused, and cordon exits 78
/// naming the password, rather than 2 (which systemd would restart every 5 seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_exits_78_for_an_operator_instead_of_crash_looping() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "wrongpw").await;
    std::fs::write(setup.dir.join("password"), "not-the-password").unwrap();
    let mut bot = BotProcess::start(&cordon_bin(), &setup, &[]).unwrap();
    let status = bot.wait_for_exit(Duration::from_secs(60)).await.unwrap();
    let log = bot.log_text();
    assert_eq!(status.code(), Some(NEEDS_OPERATOR), "{log}");
    assert!(log.contains("refused to log"), "{log}");
    assert!(log.contains("check the password"), "{log}");
    // Nothing was left behind that a corrected start would trip over.
    assert!(!setup.state_dir.join("session.json").exists());
}

/// The Docker image's first-start guard: `--require-session` refuses a state directory
/// cordon never started with (exit 78), so the recovery key is never set up by a start
/// whose output nobody reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_start_before_the_first_start_is_refused_with_what_to_do() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "guard").await;
    let out = tokio::process::Command::new(cordon_bin())
        .arg("run")
        .arg("--config")
        .arg(&setup.config)
        .arg("--require-session")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(NEEDS_OPERATOR), "{err}");
    assert!(
        err.contains("never started") && err.contains("--recovery-key-out"),
        "{err}"
    );
    assert!(!setup.state_dir.join("session.json").exists());
}

/// The bot's password changed by an administrator who logged out every device (the
/// default of Synapse's password reset): cordon's device and its keys are gone. cordon
/// logs in again to look, finds the device empty, logs that login out, and stops with
/// 78 and the way back (`cordon recover`), instead of running as a new, unverified
/// device or restarting in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_that_deleted_cordons_device_stops_it_with_the_way_back() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "pwreset").await;
    let mut bot = BotProcess::start(&cordon_bin(), &setup, &[]).unwrap();
    bot.wait_for_log("cordon is ready", Duration::from_secs(90))
        .await
        .unwrap();
    bot.terminate(Duration::from_secs(15));

    let admin = hs
        .register_session(&unique("pwadmin"), "admin-pw-1", true)
        .await
        .unwrap();
    let new_password = "rotated-pw-2";
    let url = hs
        .base_url()
        .join(&format!(
            "_synapse/admin/v1/reset_password/{}",
            setup.user_id
        ))
        .unwrap();
    let reset = cordon::dev::synapse::http_client()
        .unwrap()
        .post(url)
        .bearer_auth(&admin.access_token)
        .json(&serde_json::json!({"new_password": new_password, "logout_devices": true}))
        .send()
        .await
        .unwrap();
    assert!(
        reset.status().is_success(),
        "{}",
        reset.text().await.unwrap()
    );
    // The operator updates the secret, as the runbook says.
    std::fs::write(setup.dir.join("password"), new_password).unwrap();

    let mut bot = BotProcess::start(&cordon_bin(), &setup, &[]).unwrap();
    let status = bot.wait_for_exit(Duration::from_secs(60)).await.unwrap();
    let log = bot.log_text();
    assert_eq!(status.code(), Some(NEEDS_OPERATOR), "{log}");
    assert!(log.contains("no longer exists on the homeserver"), "{log}");
    assert!(log.contains("cordon recover"), "{log}");
    // The look-up login was logged out again: the account has no device left.
    let devices: serde_json::Value = cordon::dev::synapse::http_client()
        .unwrap()
        .get(
            hs.base_url()
                .join(&format!(
                    "_synapse/admin/v2/users/{}/devices",
                    setup.user_id
                ))
                .unwrap(),
        )
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(devices["total"], 0, "{devices}");
}

/// The first start writes the recovery key to the file `--recovery-key-out` names,
/// owner-only, and nowhere else; a first start whose output is not a terminal, with
/// neither option, keeps it out of the output and does not set up recovery (a key
/// nobody holds would be worse than none), and says how to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_key_goes_to_the_file_named_or_is_not_made() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let named = setup(hs, dir.path(), "rkfile").await;
    let key_file = dir.path().join("recovery-key.txt");
    let out = run_until(
        &named,
        &["--recovery-key-out", key_file.to_str().unwrap()],
        "recovery is set up",
    )
    .await;
    let text = std::fs::read_to_string(&key_file).unwrap();
    let key = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a key line");
    assert!(key.split_whitespace().count() >= 12, "{text}");
    assert!(!out.contains(key), "the key is in the output:\n{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let unnamed = setup(hs, dir.path(), "rknone").await;
    let out = run_until(&unnamed, &[], "recovery is not set up").await;
    assert!(!out.contains("Recovery key:"), "{out}");
    assert!(out.contains("--recovery-key-out"), "{out}");
}

/// Runs `cordon run` with `args` (stdout and stderr piped, so not a terminal) until a
/// log line contains `wanted`, then stops it; returns everything it wrote.
async fn run_until(setup: &BotSetup, args: &[&str], wanted: &str) -> String {
    let mut child = tokio::process::Command::new(cordon_bin())
        .arg("run")
        .arg("--config")
        .arg(&setup.config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let a = tokio::spawn(pump(child.stdout.take().unwrap(), out.clone()));
    let b = tokio::spawn(pump(child.stderr.take().unwrap(), out.clone()));
    let started = std::time::Instant::now();
    while !out.lock().unwrap().contains(wanted) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no {wanted:?} in:\n{}",
            out.lock().unwrap()
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("cordon exited ({status}):\n{}", out.lock().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
    let _ = tokio::join!(a, b);
    out.lock().unwrap().clone()
}

/// Appends what `pipe` yields to `out` until it closes.
async fn pump(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    out: std::sync::Arc<std::sync::Mutex<String>>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// `cordon backup` while the bot runs an incident, then a lost disk: `cordon restore`
/// into an empty state directory, and the restored cordon carries on with the same
/// device, the same incident and an intact audit log. The backup opens only with an
/// operator's key, and holds nothing in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_bot_runs_restores_a_cordon_that_carries_on() {
    let mut w = crate::world::World::builder().build().await;
    w.say(&format!(
        "!cordon declare {} \"Backup drill\"",
        w.playbook_id
    ))
    .await;
    let incident = crate::world::incident_id_in(&w.bot_says("DECLARED: Backup drill").await);

    let keys = tempfile::tempdir().unwrap();
    let operator = age::x25519::Identity::generate();
    let key_file = keys.path().join("operator.key");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &key_file,
            format!("{}\n", operator.to_string().expose_secret()),
        )
        .unwrap();
    }
    let backup = keys.path().join("cordon.backup.age");
    let out = cordon_cli(&[
        "backup",
        "--config",
        w.setup.config.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
        "-r",
        &operator.to_public().to_string(),
    ])
    .await;
    assert_eq!(out.0, Some(0), "{}", out.1);
    assert!(w.bot.as_mut().unwrap().is_running(), "{}", w.log());
    // The snapshot the bot wrote is gone from its state directory.
    let leftovers: Vec<_> = std::fs::read_dir(&w.setup.state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Never over an existing file.
    let again = cordon_cli(&[
        "backup",
        "--config",
        w.setup.config.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
        "-r",
        &operator.to_public().to_string(),
    ])
    .await;
    assert_eq!(again.0, Some(2), "{}", again.1);

    // The disk is lost.
    w.stop_bot();
    let device_before = std::fs::read_to_string(w.setup.state_dir.join("session.json")).unwrap();
    let lost = w.setup.dir.join("state.lost");
    std::fs::rename(&w.setup.state_dir, &lost).unwrap();

    // Someone else's key opens nothing.
    let stranger = keys.path().join("stranger.key");
    {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        std::fs::write(&stranger, format!("{}\n", id.to_string().expose_secret())).unwrap();
    }
    let refused = cordon_cli(&[
        "restore",
        "--config",
        w.setup.config.to_str().unwrap(),
        "-i",
        stranger.to_str().unwrap(),
        backup.to_str().unwrap(),
    ])
    .await;
    assert_eq!(refused.0, Some(2), "{}", refused.1);
    assert!(refused.1.contains("do not open it"), "{}", refused.1);

    let restored = cordon_cli(&[
        "restore",
        "--config",
        w.setup.config.to_str().unwrap(),
        "-i",
        key_file.to_str().unwrap(),
        backup.to_str().unwrap(),
    ])
    .await;
    assert_eq!(restored.0, Some(0), "{}", restored.1);
    assert!(restored.1.contains("1 open incident"), "{}", restored.1);
    assert_eq!(
        std::fs::read_to_string(w.setup.state_dir.join("session.json")).unwrap(),
        device_before,
        "the same device comes back"
    );

    w.restart(&[]);
    w.wait_ready().await;
    w.say(&format!("!cordon status {incident}")).await;
    let status = w.bot_says(&format!("{incident} ·")).await;
    assert!(status.contains("active"), "{status}");
    assert!(
        w.log().contains("restored the saved session"),
        "the restored cordon kept its device:\n{}",
        w.log()
    );
    let store = w.stop_and_open_store();
    assert!(store.verify_audit().unwrap().is_intact());
    assert!(
        store
            .audit_entries(.., None)
            .unwrap()
            .iter()
            .any(|e| e.action == "backup.snapshot")
    );
}

/// Runs the cordon CLI; its exit code and everything it wrote.
async fn cordon_cli(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(cordon_bin())
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `cordon rekey`: a new store passphrase for everything the old one protects. The bot
/// starts with the new one as the same device and carries on; a second run finds
/// nothing left to do; the old passphrase opens nothing any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_passphrase_keeps_the_device_and_the_old_one_opens_nothing() {
    let mut w = crate::world::World::builder().build().await;
    w.say(&format!(
        "!cordon declare {} \"Rekey drill\"",
        w.playbook_id
    ))
    .await;
    let incident = crate::world::incident_id_in(&w.bot_says("DECLARED: Rekey drill").await);
    w.stop_bot();

    let config = w.setup.config.to_str().unwrap().to_owned();
    let new_file = w.setup.dir.join("new-passphrase");
    std::fs::write(&new_file, "a new and quite long store passphrase\n").unwrap();
    let rekeyed = cordon_cli(&[
        "rekey",
        "--config",
        &config,
        "--new-passphrase-file",
        new_file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(rekeyed.0, Some(0), "{}", rekeyed.1);
    assert!(
        rekeyed
            .1
            .contains("session.json: sealed with the new passphrase"),
        "{}",
        rekeyed.1
    );
    assert!(
        rekeyed.1.contains("crypto.sqlite3: sealed with the new"),
        "{}",
        rekeyed.1
    );
    // Finished already: a second run changes nothing.
    let old_file = w.setup.dir.join("store-passphrase");
    let old = std::fs::read_to_string(&old_file).unwrap();
    let again = cordon_cli(&[
        "rekey",
        "--config",
        &config,
        "--new-passphrase-file",
        new_file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(again.0, Some(0), "{}", again.1);
    assert!(!again.1.contains(": sealed with the new"), "{}", again.1);

    // With the old passphrase, cordon cannot open its session: 78, not a loop.
    let mut bot = w.spawn_bot(&[]);
    let status = bot.wait_for_exit(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.code(), Some(NEEDS_OPERATOR), "{}", bot.log_text());
    assert!(bot.log_text().contains("passphrase"), "{}", bot.log_text());

    // The operator puts the new one where the config points.
    std::fs::copy(&new_file, &old_file).unwrap();
    assert_ne!(old, std::fs::read_to_string(&old_file).unwrap());
    w.restart(&[]);
    w.wait_ready().await;
    assert!(
        w.log().contains("restored the saved session"),
        "{}",
        w.log()
    );
    w.say(&format!("!cordon status {incident}")).await;
    let status = w.bot_says(&format!("{incident} ·")).await;
    assert!(status.contains("active"), "{status}");
    w.stop_bot();
}
