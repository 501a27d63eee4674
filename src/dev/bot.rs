//! cordon itself as a separate process, for the end-to-end tests, the crash tests, the
//! demo and the benchmark: the real `cordon run` with a generated config, so that a
//! test can SIGKILL it at any point and start it again on the same state.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use matrix_sdk::ruma::OwnedUserId;

use super::{HarnessError, Synapse};

/// Runs cordon under a watchdog: the bot's pid goes to a file (so a test can SIGKILL the
/// bot itself), and the bot is killed once the owning process (`$1`) is gone, so a
/// killed test run leaves no orphan. Arguments: owner pid, pid file, then the command.
const WATCHDOG: &str = r#"owner=$1; pidfile=$2; shift 2
"$@" &
child=$!
echo "$child" >"$pidfile"
(
  while kill -0 "$owner" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
  kill -KILL "$child" 2>/dev/null
) &
trap 'kill -TERM "$child" 2>/dev/null' TERM
wait "$child"
status=$?
exit $status
"#;

/// What a bot needs on disk: its account, config, secrets and state directory.
#[derive(Debug, Clone)]
pub struct BotSetup {
    /// The directory holding everything below.
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The playbooks directory.
    pub playbooks_dir: PathBuf,
    /// The bot's log (stderr), appended across restarts.
    pub log: PathBuf,
    /// The bot's user id.
    pub user_id: OwnedUserId,
}

impl BotSetup {
    /// Registers the bot's account on `hs` (a server admin) and writes a config with
    /// `operators`, a password file and a store passphrase file into a fresh directory
    /// under `parent`. Playbooks are read from `playbooks_dir`.
    pub async fn create(
        hs: &Synapse,
        parent: &Path,
        localpart: &str,
        playbooks_dir: &Path,
        operators: &[OwnedUserId],
        extra_config: &str,
    ) -> Result<Self, HarnessError> {
        let password = format!("pw-{}", random_token());
        let user_id = hs.register(localpart, &password, true).await?;
        let dir = parent.join(format!("bot-{localpart}"));
        let io = |what: &str, e: std::io::Error| HarnessError::io(what, e);
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the bot's directory", e))?;
        let state_dir = dir.join("state");
        // Owner-only, as docs/deploy.md asks of the secrets (`cordon doctor` checks).
        write_secret(&dir.join("password"), &password)
            .map_err(|e| io("writing the bot's password file", e))?;
        write_secret(&dir.join("store-passphrase"), &random_token())
            .map_err(|e| io("writing the bot's store passphrase", e))?;
        let operators: Vec<String> = operators.iter().map(|o| format!("\"{o}\"")).collect();
        let config = dir.join("cordon.yaml");
        let text = format!(
            "homeserver: {hs_url}\n\
             user: \"{user_id}\"\n\
             password: {{ file: password }}\n\
             store_passphrase: {{ file: store-passphrase }}\n\
             state_dir: state\n\
             playbooks_dir: {playbooks}\n\
             archive_dir: archives\n\
             operators: [{operators}]\n\
             metrics: {{ listen: \"127.0.0.1:0\", sync_stale_after: 45s }}\n\
             {extra_config}",
            hs_url = hs.base_url(),
            playbooks = playbooks_dir.display(),
            operators = operators.join(", "),
        );
        std::fs::write(&config, text).map_err(|e| io("writing the bot's config", e))?;
        Ok(Self {
            log: dir.join("bot.log"),
            dir,
            config,
            state_dir,
            playbooks_dir: playbooks_dir.to_path_buf(),
            user_id,
        })
    }

    /// The store passphrase the config names (what opens the sealed session token and
    /// archive signing key).
    pub fn store_passphrase(&self) -> Result<crate::input::config::Secret, HarnessError> {
        std::fs::read_to_string(self.dir.join("store-passphrase"))
            .map(crate::input::config::Secret::new)
            .map_err(|e| HarnessError::io("reading the bot's store passphrase", e))
    }
}

/// Writes a secret file with mode 0600.
fn write_secret(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(value.as_bytes())
}

/// A running `cordon run`.
pub struct BotProcess {
    watchdog: Option<Child>,
    pid: u32,
    log: PathBuf,
    log_start: u64,
}

impl BotProcess {
    /// Starts `binary run --config …` with `env` added to its environment. Its stderr
    /// is appended to the setup's log.
    pub fn start(
        binary: &Path,
        setup: &BotSetup,
        env: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        let io = |what: &str, e: std::io::Error| HarnessError::io(what, e);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&setup.log)
            .map_err(|e| io("opening the bot's log", e))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let pidfile = setup.dir.join("bot.pid");
        let _ = std::fs::remove_file(&pidfile);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("cordon-bot-watchdog")
            .arg(std::process::id().to_string())
            .arg(&pidfile)
            .arg(binary)
            .arg("run")
            .arg("--config")
            .arg(&setup.config)
            // The log is where the harness and the demo read the recovery key from.
            .arg("--recovery-key-to-stdout")
            .current_dir(&setup.dir)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| io("duplicating the log handle", e))?,
            )
            .stderr(log)
            .env(
                "RUST_LOG",
                "info,cordon=debug,matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk_crypto=error",
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let watchdog = cmd.spawn().map_err(|e| io("starting the bot", e))?;
        let started = Instant::now();
        let pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(HarnessError::Timeout {
                    user: "the harness".into(),
                    what: "the bot's pid file".into(),
                    waited: Duration::from_secs(10),
                    seen: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Self {
            watchdog: Some(watchdog),
            pid,
            log: setup.log.clone(),
            log_start,
        })
    }

    /// The bot's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the bot is still running (the watchdog exits when it does).
    pub fn is_running(&mut self) -> bool {
        self.watchdog
            .as_mut()
            .is_some_and(|w| matches!(w.try_wait(), Ok(None)))
    }

    /// What this run of the bot has logged so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            use std::io::Seek;
            let _ = f.seek(std::io::SeekFrom::Start(self.log_start));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// The base URL of this run's `/metrics` and `/healthz` (`http://127.0.0.1:PORT`),
    /// once the bot has logged it.
    pub fn metrics_url(&self) -> Option<String> {
        const SERVING: &str = "serving /metrics and /healthz on ";
        let text = self.log_text();
        let at = text.rfind(SERVING)? + SERVING.len();
        let url: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '[' | ']'))
            .collect();
        (!url.is_empty()).then_some(url)
    }

    /// Waits until this run's log contains `needle`, or the bot exits, or `deadline`.
    pub async fn wait_for_log(
        &mut self,
        needle: &str,
        deadline: Duration,
    ) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(w) = &mut self.watchdog
                && let Ok(Some(status)) = w.try_wait()
            {
                return Err(HarnessError::BadResponse {
                    context: format!("the bot exited ({status}) before logging {needle:?}"),
                    detail: tail(&self.log_text(), 3000),
                });
            }
            if started.elapsed() > deadline {
                return Err(HarnessError::Timeout {
                    user: "the harness".into(),
                    what: format!("the bot to log {needle:?}"),
                    waited: deadline,
                    seen: format!("log tail:\n{}", tail(&self.log_text(), 3000)),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the bot to exit by itself, and returns its exit status.
    pub async fn wait_for_exit(
        &mut self,
        deadline: Duration,
    ) -> Result<std::process::ExitStatus, HarnessError> {
        let started = Instant::now();
        loop {
            if let Some(w) = &mut self.watchdog
                && let Ok(Some(status)) = w.try_wait()
            {
                self.watchdog = None;
                return Ok(status);
            }
            if self.watchdog.is_none() || started.elapsed() > deadline {
                return Err(HarnessError::Timeout {
                    user: "the harness".into(),
                    what: "the bot to exit".into(),
                    waited: deadline,
                    seen: format!("log tail:\n{}", tail(&self.log_text(), 3000)),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the bot (no clean-up of any kind) and reaps it.
    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.wait();
        }
    }

    /// SIGTERMs the bot and waits for it to exit (SIGKILL after `grace`). Returns its
    /// exit status as the watchdog saw it.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let mut w = self.watchdog.take()?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = w.try_wait() {
                return Some(status);
            }
            if started.elapsed() > grace {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
                return w.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.kill9();
        }
    }
}

/// `binary verify --config <setup's config>`, ready for more arguments: run from the
/// setup's directory, stdin closed, stdout and stderr piped, quiet logs. Tests add the
/// person (and `--fingerprint`, `--list`, …), and set stdin to a pipe to answer the
/// emoji question.
pub fn verify_command(binary: &Path, setup: &BotSetup) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("verify")
        .arg("--config")
        .arg(&setup.config)
        .current_dir(&setup.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// Enrols `user` with the bot of `setup` the scriptable way: reads the person's
/// master-key fingerprint and runs `cordon verify --config … <user> --fingerprint <fp>`,
/// which talks to the running bot over its admin socket, or (bot stopped) runs the
/// enrolment itself. A non-zero exit is an error carrying the command's output.
pub async fn enrol(
    binary: &Path,
    setup: &BotSetup,
    user: &super::TestUser,
) -> Result<(), HarnessError> {
    let fingerprint = user.master_key_fingerprint().await?;
    let output = verify_command(binary, setup)
        .arg(user.user_id().as_str())
        .arg("--fingerprint")
        .arg(&fingerprint)
        .output()
        .await
        .map_err(|e| HarnessError::io("running cordon verify", e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(HarnessError::BadResponse {
        context: format!("enrolling {} ({})", user.user_id(), output.status),
        detail: format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

fn tail(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}
