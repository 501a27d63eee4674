//! The one world the end-to-end modules build their scenarios in: a Synapse, the people
//! (a commander and nurses, each with a matrix-sdk client of their own), playbooks, the
//! bot's account and config, and, once started, the bot as its own `cordon run` process
//! with a control room. [`World::builder`] says which of these a test needs.
//!
//! The bot always runs with a movable clock ([`cordon::clock::FILE_VAR`], a `test-hooks`
//! build): a test moves it past an expiry, a retention window or a cron firing
//! ([`World::advance_clock`], [`World::freeze_clock`]) instead of waiting for it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use cordon::clock::Setting;
use cordon::dev::bot::{BotProcess, BotSetup, enrol};
use cordon::dev::{Synapse, TestUser};
use cordon_testkit::attack::ServerAdmin;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::Value;

use crate::support::{WAIT, cordon_bin, unique};

/// The time limits, retention and reminders of a drill playbook, as YAML.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    /// The `duration:` mapping.
    pub duration: &'static str,
    /// The `retention:` mapping.
    pub retention: &'static str,
    /// The command room's `reminders:` list (`[]` for none).
    pub reminders: &'static str,
    /// The archive's age recipient (a records officer's public key); a fixed key nobody
    /// in the test holds when `None`.
    pub recipient: Option<String>,
    /// More top-level YAML for the playbook (`decisions: { by: [nurse] }`), or `""`.
    pub extra: &'static str,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            duration: "{ max: 2h, warn_before: [30m], extend_max: 1h }",
            retention: "{ messages: 1h }",
            reminders: "[]",
            recipient: None,
            extra: "",
        }
    }
}

/// The archive recipient of playbooks whose archive nobody in the test opens.
const NOBODYS_KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

/// A drill playbook whose holders are the test's own users.
fn drill_playbook(id: &str, lead: &OwnedUserId, nurses: &[OwnedUserId], timing: &Timing) -> String {
    let nurses: Vec<String> = nurses.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"id: {id}
title: "Drill: major incident"
trigger: {{ allowed: [role:lead] }}
duration: {duration}
retention: {retention}
roles:
  lead:
    title: Incident lead
    holders: ["{lead}"]
    min: 1
    instructions: "Lead {{incident}}. Run METHANE."
  nurse:
    title: Nurse in charge
    holders: [{nurses}]
    instructions: "Report bed state to {{commander}}."
rooms:
  - key: command
    name: "{{incident}} - Command"
    members: [lead, nurse]
    moderators: [lead]
    reminders: {reminders}
  - key: ward
    name: "{{incident}} - Ward"
    members: [nurse]
archive:
  recipients: ["{recipient}"]
  keep: 30d
{extra}
"#,
        extra = timing.extra,
        recipient = timing.recipient.as_deref().unwrap_or(NOBODYS_KEY),
        nurses = nurses.join(", "),
        duration = timing.duration,
        retention = timing.retention,
        reminders = timing.reminders,
    )
}

/// A guard drill playbook: one lead, one nurse, and the `identity_change` policy.
fn guard_playbook(
    id: &str,
    lead: &OwnedUserId,
    nurse: &OwnedUserId,
    identity_change: &str,
) -> String {
    format!(
        r#"id: {id}
title: "Drill: guard"
trigger: {{ allowed: [role:lead] }}
identity_change: {identity_change}
duration: {{ max: 2h, warn_before: [30m], extend_max: 1h }}
retention: {{ messages: 1h }}
roles:
  lead: {{ title: Incident lead, holders: ["{lead}"], min: 1 }}
  nurse: {{ title: Nurse in charge, holders: ["{nurse}"] }}
rooms:
  - key: command
    name: "{{incident}} - Command"
    members: [lead, nurse]
    moderators: [lead]
  - key: ward
    name: "{{incident}} - Ward"
    members: [nurse]
archive:
  recipients: ["{NOBODYS_KEY}"]
  keep: 30d
"#
    )
}

/// Which playbooks the world writes.
enum Playbooks {
    /// One drill playbook (`drill-<tag>`) with this timing, its nurses the world's plus
    /// a holder whose account does not exist.
    Drill(Timing),
    /// One guard playbook per `identity_change` policy (`guard-<policy>-<tag>`), its
    /// nurse the world's first.
    Guard(Vec<&'static str>),
}

/// How a test wants its world. Start with [`World::builder`]; every option has the
/// default of the plain end-to-end scenario: the shared Synapse, one enrolled nurse, the
/// default drill playbook, the bot started and greeting its control room.
pub(crate) struct Builder {
    hs: Option<&'static Synapse>,
    prefix: &'static str,
    nurses: usize,
    unenrolled: usize,
    playbooks: Playbooks,
    env: Vec<(String, String)>,
    start: bool,
    server_admin: bool,
    config: String,
}

impl Builder {
    /// On the homeserver `hs` (one of the test's own) instead of the shared one.
    pub(crate) fn on(mut self, hs: &'static Synapse) -> Self {
        self.hs = Some(hs);
        self
    }

    /// Names start with `prefix` (which module's world it is, in the homeserver's log).
    pub(crate) fn prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    /// `count` nurses, of whom the last `unenrolled` are not enrolled.
    pub(crate) fn nurses(mut self, count: usize, unenrolled: usize) -> Self {
        self.nurses = count;
        self.unenrolled = unenrolled;
        self
    }

    /// The drill playbook with `timing`.
    pub(crate) fn timing(mut self, timing: Timing) -> Self {
        self.playbooks = Playbooks::Drill(timing);
        self
    }

    /// Guard playbooks instead of the drill: one per `identity_change` policy.
    pub(crate) fn guard_playbooks(mut self, policies: &[&'static str]) -> Self {
        self.playbooks = Playbooks::Guard(policies.to_vec());
        self
    }

    /// `env` in the bot's environment at its first start.
    pub(crate) fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    /// Accounts, playbooks and config only: the bot is not started, nobody is enrolled
    /// and there is no control room (the enrolment tests do those steps themselves).
    pub(crate) fn unstarted(mut self) -> Self {
        self.start = false;
        self
    }

    /// `text` appended to the bot's config (YAML sections of its own).
    pub(crate) fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self
    }

    /// A server admin who attacks and audits ([`World::admin`]).
    pub(crate) fn server_admin(mut self) -> Self {
        self.server_admin = true;
        self
    }

    /// Registers everyone, writes the playbooks and the config, and (unless
    /// [`Builder::unstarted`]) starts the bot, enrols the commander and the enrolled
    /// nurses, and opens the control room.
    pub(crate) async fn build(self) -> World {
        let hs = match self.hs {
            Some(hs) => hs,
            None => Synapse::shared().await.expect("synapse"),
        };
        let dir = tempfile::tempdir().unwrap();
        let tag = unique(self.prefix);
        let commander = person(hs, &format!("{tag}-lead")).await;
        let mut nurses = Vec::new();
        for i in 0..self.nurses {
            nurses.push(person(hs, &format!("{tag}-nurse{i}")).await);
        }
        let playbooks = dir.path().join("playbooks");
        std::fs::create_dir_all(&playbooks).unwrap();
        let lead = commander.user_id().to_owned();
        let mut playbook_id = String::new();
        match &self.playbooks {
            Playbooks::Drill(timing) => {
                playbook_id = format!("drill-{tag}");
                let mut holders: Vec<OwnedUserId> =
                    nurses.iter().map(|n| n.user_id().to_owned()).collect();
                // A holder whose account does not exist (a typo in the playbook): their
                // invite is refused, and the incident must go ahead without them.
                holders.push(hs.user_id(&format!("{tag}-ghost")).unwrap());
                std::fs::write(
                    playbooks.join(format!("{playbook_id}.yaml")),
                    drill_playbook(&playbook_id, &lead, &holders, timing),
                )
                .unwrap();
            }
            Playbooks::Guard(policies) => {
                let nurse = nurses.first().expect("a guard world has a nurse");
                for policy in policies {
                    let id = format!("guard-{policy}-{tag}");
                    std::fs::write(
                        playbooks.join(format!("{id}.yaml")),
                        guard_playbook(&id, &lead, &nurse.user_id().to_owned(), policy),
                    )
                    .unwrap();
                }
            }
        }
        let setup = BotSetup::create(
            hs,
            dir.path(),
            &format!("{tag}-cordon"),
            &playbooks,
            std::slice::from_ref(&lead),
            &format!(
                "{}{}",
                hs.prevention()
                    .map(|p| p.cordon_config())
                    .unwrap_or_default(),
                self.config
            ),
        )
        .await
        .unwrap();
        let admin = match self.server_admin {
            true => Some(
                ServerAdmin::register(hs, &format!("{tag}-admin"))
                    .await
                    .unwrap(),
            ),
            false => None,
        };
        let mut w = World {
            hs,
            clock_file: dir.path().join("clock"),
            clock: Mutex::new(Setting::Offset(TimeDelta::zero())),
            dir,
            tag,
            setup,
            bot: None,
            commander,
            nurses,
            control: None,
            playbook_id,
            admin,
        };
        if !self.start {
            return w;
        }
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        w.bot = Some(w.spawn_bot(&env));
        w.wait_ready().await;
        // Enrolled in person before anything else: cordon's messages (even its greeting
        // in the control room) go only to verified devices.
        let enrolled = self.nurses.saturating_sub(self.unenrolled);
        for person in std::iter::once(&w.commander).chain(w.nurses.iter().take(enrolled)) {
            if let Err(e) = enrol(&cordon_bin(), &w.setup, person).await {
                panic!("enrolling {}: {e}\nbot log:\n{}", person.user_id(), w.log());
            }
        }
        let control = w
            .commander
            .create_encrypted_room("Control", std::slice::from_ref(&w.setup.user_id))
            .await
            .unwrap();
        w.control = Some(control);
        w.bot_says("control room").await;
        w
    }
}

/// Registers `localpart` on `hs` and logs them in.
async fn person(hs: &Synapse, localpart: &str) -> TestUser {
    hs.register(localpart, "pw", false).await.unwrap();
    TestUser::login(hs, localpart, "pw").await.unwrap()
}

/// One scenario's world: a Synapse, a commander, nurses, a bot and a control room.
pub(crate) struct World {
    pub hs: &'static Synapse,
    pub dir: tempfile::TempDir,
    /// What every name in this world starts with.
    pub tag: String,
    pub setup: BotSetup,
    pub bot: Option<BotProcess>,
    pub commander: TestUser,
    pub nurses: Vec<TestUser>,
    control: Option<OwnedRoomId>,
    /// The drill playbook's id (empty in a world of guard playbooks).
    pub playbook_id: String,
    admin: Option<ServerAdmin>,
    /// The file the bot's movable clock reads, and what was last written to it.
    clock_file: PathBuf,
    clock: Mutex<Setting>,
}

impl World {
    /// How the world is built: see [`Builder`].
    pub(crate) fn builder() -> Builder {
        Builder {
            hs: None,
            prefix: "t",
            nurses: 1,
            unenrolled: 0,
            playbooks: Playbooks::Drill(Timing::default()),
            env: Vec::new(),
            start: true,
            server_admin: false,
            config: String::new(),
        }
    }

    /// A world whose commander and `nurse_count` nurses are all enrolled.
    pub(crate) async fn new(nurse_count: usize) -> World {
        Self::builder().nurses(nurse_count, 0).build().await
    }

    /// A world whose playbook has `timing`, with `nurse_count` nurses of whom the last
    /// `unenrolled` are not enrolled.
    pub(crate) async fn timed(nurse_count: usize, unenrolled: usize, timing: &Timing) -> World {
        Self::builder()
            .nurses(nurse_count, unenrolled)
            .timing(timing.clone())
            .build()
            .await
    }

    /// The control room the commander opened with the bot.
    pub(crate) fn control(&self) -> &OwnedRoomId {
        self.control
            .as_ref()
            .expect("a started world has a control room")
    }

    /// The server admin (a world built with [`Builder::server_admin`]).
    pub(crate) fn admin(&self) -> &ServerAdmin {
        self.admin.as_ref().expect("a world with a server admin")
    }

    /// The first nurse.
    pub(crate) fn nurse(&self) -> &TestUser {
        &self.nurses[0]
    }

    /// The first nurse's localpart (their password is `pw`).
    pub(crate) fn nurse_name(&self) -> &str {
        self.nurses[0].user_id().localpart()
    }

    pub(crate) fn bot_id(&self) -> OwnedUserId {
        self.setup.user_id.clone()
    }

    /// The running bot's value of metric `series` (its name and labels as `/metrics`
    /// writes them, e.g. `cordon_rooms{status="created"}`), or `None` without one.
    pub(crate) async fn metric(&self, series: &str) -> Option<f64> {
        let base = self
            .bot
            .as_ref()
            .and_then(|b| b.metrics_url())
            .expect("metrics URL logged");
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|n| n.parse().ok())
    }

    /// What the running bot has logged so far in this run.
    pub(crate) fn log(&self) -> String {
        self.bot.as_ref().map(|b| b.log_text()).unwrap_or_default()
    }

    pub(crate) async fn say(&self, body: &str) {
        self.commander
            .send_text(self.control(), body)
            .await
            .unwrap();
    }

    /// Waits for a bot message in the control room containing `needle`.
    pub(crate) async fn bot_says(&self, needle: &str) -> String {
        self.bot_says_all(&[needle]).await
    }

    /// Waits for a bot message in the control room containing every needle.
    pub(crate) async fn bot_says_all(&self, needles: &[&str]) -> String {
        let bot = self.bot_id();
        match self
            .commander
            .wait_for_message(self.control(), WAIT, |s, b| {
                s == bot && needles.iter().all(|n| b.contains(n))
            })
            .await
        {
            Ok((_, body)) => body,
            Err(e) => panic!("waiting for {needles:?}: {e}\nbot log:\n{}", self.log()),
        }
    }

    pub(crate) fn bot_messages(&self, needle: &str) -> usize {
        let bot = self.bot_id();
        self.commander
            .messages(self.control())
            .iter()
            .filter(|m| m.sender == bot && m.body.contains(needle))
            .count()
    }

    /// Starts a bot process on this world's setup, with the movable clock and `env`;
    /// the world does not own it.
    pub(crate) fn spawn_bot(&self, env: &[(&str, &str)]) -> BotProcess {
        let clock_file = self.clock_file.to_str().unwrap().to_owned();
        let mut env = env.to_vec();
        env.push((cordon::clock::FILE_VAR, &clock_file));
        BotProcess::start(&cordon_bin(), &self.setup, &env).unwrap()
    }

    /// Stops the bot with SIGTERM (SIGKILL after 20 s) and starts it again with `env`.
    pub(crate) fn restart(&mut self, env: &[(&str, &str)]) -> &mut BotProcess {
        if let Some(mut b) = self.bot.take() {
            b.terminate(Duration::from_secs(20));
        }
        self.bot = Some(self.spawn_bot(env));
        self.bot.as_mut().unwrap()
    }

    /// SIGKILLs the bot (a crash) and starts it again with `env`.
    pub(crate) fn crash_restart(&mut self, env: &[(&str, &str)]) {
        if let Some(mut b) = self.bot.take() {
            b.kill9();
        }
        self.bot = Some(self.spawn_bot(env));
    }

    /// Waits until the running bot is ready.
    pub(crate) async fn wait_ready(&mut self) {
        let bot = self.bot.as_mut().expect("a running bot");
        if let Err(e) = bot.wait_for_log("cordon is ready", WAIT).await {
            panic!("the bot did not get ready: {e}");
        }
    }

    /// Waits for the running bot to stop at failpoint `point` (`name` or `name@N`), then
    /// SIGKILLs it there.
    pub(crate) async fn kill_at(&mut self, point: &str) {
        let name = point.split('@').next().unwrap_or(point);
        let needle = format!("failpoint reached: {name}");
        let bot = self.bot.as_mut().expect("a running bot");
        if let Err(e) = bot.wait_for_log(&needle, WAIT).await {
            panic!("{point} not reached: {e}\n{}", bot.log_text());
        }
        bot.kill9();
        self.bot = None;
    }

    /// Stops the bot with SIGTERM; it must shut down cleanly (exit status 0).
    pub(crate) fn stop_bot(&mut self) {
        if let Some(mut b) = self.bot.take() {
            let status = b.terminate(Duration::from_secs(20));
            assert!(
                status.is_some_and(|s| s.success()),
                "cordon did not shut down cleanly on SIGTERM ({status:?}):\n{}",
                b.log_text()
            );
        }
    }

    /// Stops the bot cleanly and opens its store.
    pub(crate) fn stop_and_open_store(&mut self) -> cordon::store::Store {
        self.stop_bot();
        cordon::store::Store::open_existing(&self.store_dir()).unwrap()
    }

    pub(crate) fn store_dir(&self) -> PathBuf {
        self.setup.state_dir.join("store")
    }

    /// Waits until the running bot has logged a line containing every one of `needles`.
    pub(crate) async fn wait_for_log_line(&self, needles: &[&str]) {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "no log line with {needles:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the running bot has logged `needle` on `n` lines.
    pub(crate) async fn wait_for_log_lines(&self, needle: &str, n: usize) {
        let started = Instant::now();
        loop {
            let seen = self.log().lines().filter(|l| l.contains(needle)).count();
            if seen >= n {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "{needle:?} logged {seen} times, not {n}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the running bot's scheduler has nothing due left to run and nothing
    /// running (it logs so after each look at its timers): every timer due by then has
    /// fired and its job finished.
    pub(crate) async fn wait_scheduler_idle(&self) {
        self.wait_for_log_line(&["scheduler idle"]).await;
    }

    /// Moves the bot's clock to `setting`; once the running bot has read it (it logs the
    /// move), returns. Call it with the bot ready or stopped (a bot starting up reads
    /// the file without logging a move). Kept across restarts.
    pub(crate) async fn set_clock(&self, setting: Setting) {
        {
            let mut current = self.clock.lock().unwrap();
            if *current == setting {
                return;
            }
            *current = setting;
        }
        let text = setting.to_string();
        // Whole or not at all: the bot reads the file every few milliseconds.
        let tmp = self.clock_file.with_extension("new");
        std::fs::write(&tmp, &text).unwrap();
        std::fs::rename(&tmp, &self.clock_file).unwrap();
        if self.bot.is_some() {
            self.wait_for_log_line(&[&format!("{} {text}", cordon::clock::MOVED)])
                .await;
        }
    }

    /// Moves the bot's clock `by` ahead of where it stands (a frozen clock stays
    /// frozen).
    pub(crate) async fn advance_clock(&self, by: Duration) {
        let by = TimeDelta::from_std(by).unwrap();
        let next = match *self.clock.lock().unwrap() {
            Setting::Offset(offset) => Setting::Offset(offset + by),
            Setting::Frozen(at) => Setting::Frozen(at + by),
        };
        self.set_clock(next).await;
    }

    /// Stops the bot's clock at `at`, until it is set again.
    pub(crate) async fn freeze_clock(&self, at: DateTime<Utc>) {
        self.set_clock(Setting::Frozen(at)).await;
    }

    /// Lets the bot's clock run again from `at` (a stopped clock restarted where it
    /// stood, say).
    pub(crate) async fn run_clock_from(&self, at: DateTime<Utc>) {
        self.set_clock(Setting::Offset(at - Utc::now())).await;
    }

    /// The rooms the bot created, by room key, from the tags in their create events
    /// (read through an admin account, as an auditor would).
    pub(crate) async fn created_rooms(&self, incident: &str) -> BTreeMap<String, Vec<OwnedRoomId>> {
        let mut out: BTreeMap<String, Vec<OwnedRoomId>> = BTreeMap::new();
        for id in self.rooms_created_by_bot().await {
            let state = admin_get(self.hs, &format!("_synapse/admin/v1/rooms/{id}/state")).await;
            for ev in state["state"].as_array().unwrap() {
                if ev["type"] == "m.room.create"
                    && ev["content"]["org.cordon.incident"].as_str() == Some(incident)
                {
                    let key = ev["content"]["org.cordon.room_key"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    out.entry(key)
                        .or_default()
                        .push(RoomId::parse(&id).unwrap());
                }
            }
        }
        out
    }

    /// Every room whose creator is the bot, as the admin API lists them.
    pub(crate) async fn rooms_created_by_bot(&self) -> Vec<String> {
        let rooms = admin_get(self.hs, "_synapse/admin/v1/rooms?limit=1000").await;
        rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["creator"].as_str() == Some(self.bot_id().as_str()))
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The access token of an admin account on `hs` (one per homeserver, registered on
/// first use), as an auditor would have.
pub(crate) async fn admin_token(hs: &Synapse) -> String {
    // One admin per Synapse (the shared one, and those tests start of their own).
    static TOKENS: tokio::sync::Mutex<BTreeMap<String, String>> =
        tokio::sync::Mutex::const_new(BTreeMap::new());
    let mut tokens = TOKENS.lock().await;
    let key = hs.base_url().to_string();
    if let Some(token) = tokens.get(&key) {
        return token.clone();
    }
    let name = unique("auditor");
    let token = hs
        .register_session(&name, "pw", true)
        .await
        .unwrap()
        .access_token;
    tokens.insert(key, token.clone());
    token
}

/// A GET on the Synapse admin API as the auditor account.
pub(crate) async fn admin_get(hs: &Synapse, path: &str) -> Value {
    let admin = admin_token(hs).await;
    reqwest::Client::new()
        .get(hs.base_url().join(path).unwrap())
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The incident id in a `DECLARED: <name> (<id>), …` summary.
pub(crate) fn incident_id_in(text: &str) -> String {
    let start = text.find('(').unwrap() + 1;
    let end = start + text[start..].find(')').unwrap();
    text[start..end].to_owned()
}
