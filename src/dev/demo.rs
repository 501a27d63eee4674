//! `cordon demo`: a scripted major incident on a throwaway Synapse.
//!
//! Brings up a real Synapse on loopback, registers the commander and the role holders
//! of the sample mass-casualty playbook (rewritten from `nhs.example` to the local
//! server), starts `cordon run` as its own process, has the commander invite it into an
//! encrypted control room and declare the incident from their own client, and prints a
//! timeline of rooms, invites and joins with elapsed times. It ends with the stand-down:
//! the archive sealed, verified and destroyed rooms, then the records officer verifying
//! and opening the archive with `cordon archive`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};

use crate::dev::bot::{BotProcess, BotSetup};
use crate::dev::{HarnessError, Synapse, TestUser};

const WAIT: Duration = Duration::from_secs(120);

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The homeserver harness failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The playbook could not be prepared.
    #[error("the demo playbook: {0}")]
    Playbook(String),
    /// A step of the script failed.
    #[error("{0}")]
    Step(String),
}

/// Options of `cordon demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `cordon` binary to run as the bot.
    pub binary: PathBuf,
    /// The sample playbook to declare.
    pub playbook: PathBuf,
    /// The incident's name.
    pub incident_name: String,
    /// Keep the demo's files (config, store, logs) and print where they are.
    pub keep: bool,
}

struct Timeline {
    started: Instant,
}

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        println!(
            "[{:>6.2}s] {}",
            self.started.elapsed().as_secs_f64(),
            what.as_ref()
        );
    }
}

/// Runs the demo.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    let t = Timeline {
        started: Instant::now(),
    };
    println!("cordon demo: a scripted major incident on a throwaway Synapse homeserver\n");
    let dir = std::env::temp_dir().join(format!("cordon-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| DemoError::Io(dir.display().to_string(), e))?;
    t.say(
        "installing (first run only) and starting Synapse 1.163 on loopback, with the \
         cordon_synapse module (prevention: Synapse asks cordon before any member or \
         setting changes in its rooms)",
    );
    let hs = Synapse::start_with(Some(super::Prevention::create(&dir)?)).await?;
    t.say(format!(
        "Synapse is up at {} (server name {})",
        hs.base_url(),
        hs.server_name()
    ));
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks)
        .map_err(|e| DemoError::Io(playbooks.display().to_string(), e))?;
    let text = std::fs::read_to_string(&options.playbook)
        .map_err(|e| DemoError::Io(options.playbook.display().to_string(), e))?;
    let local = text.replace(":nhs.example", &format!(":{}", hs.server_name()));
    // The demo's records officer (and a deputy): the archive is sealed to their keys.
    let (local, officer_key) = with_demo_recipients(&local, &dir)?;
    let file_name = options
        .playbook
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("demo.yaml"));
    let demo_playbook = playbooks.join(file_name);
    std::fs::write(&demo_playbook, &local)
        .map_err(|e| DemoError::Io(demo_playbook.display().to_string(), e))?;
    let playbook = crate::input::playbook::load_file(&demo_playbook).map_err(|problems| {
        DemoError::Playbook(
            problems
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;

    // Every holder gets an account; the commander is the first site commander.
    let mut holders: Vec<OwnedUserId> = playbook
        .roles
        .iter()
        .flat_map(|r| r.holders.iter().cloned())
        .collect();
    holders.sort();
    holders.dedup();
    let commander_id = playbook
        .trigger
        .allowed
        .iter()
        .find_map(|a| match a {
            crate::input::playbook::Allowed::Role(role) => {
                playbook.role(role).and_then(|r| r.holders.first().cloned())
            }
            crate::input::playbook::Allowed::User(u) => Some(u.clone()),
        })
        .ok_or_else(|| DemoError::Playbook("nobody may declare it".into()))?;
    for holder in &holders {
        hs.register(holder.localpart(), "demo-password", false)
            .await?;
    }
    t.say(format!(
        "registered {} role holders; the incident commander is {commander_id}",
        holders.len()
    ));

    let setup = BotSetup::create(
        &hs,
        &dir,
        "cordon",
        &playbooks,
        std::slice::from_ref(&commander_id),
        &format!(
            "time_zone: Europe/London\n{}",
            hs.prevention()
                .map(super::Prevention::cordon_config)
                .unwrap_or_default()
        ),
    )
    .await?;
    let mut bot = BotProcess::start(&options.binary, &setup, &[])?;
    bot.wait_for_log("cordon is ready", WAIT).await?;
    t.say(format!(
        "cordon is running as {} (a server admin, so it lifted its own rate limits)",
        setup.user_id
    ));

    let commander = TestUser::login(&hs, commander_id.localpart(), "demo-password").await?;
    // A few clinicians have their phones out: they will accept their invites.
    let watchers: Vec<OwnedUserId> = holders
        .iter()
        .filter(|h| **h != commander_id)
        .step_by(3)
        .cloned()
        .collect();
    let mut clinicians = Vec::new();
    for w in &watchers {
        clinicians.push(TestUser::login(&hs, w.localpart(), "demo-password").await?);
    }
    t.say(format!(
        "{} clinicians' clients are signed in and syncing",
        clinicians.len() + 1
    ));
    // The operator enrols them in person: each reads out their master-key fingerprint,
    // which cordon checks against the server's copy before signing it. Holders without
    // a client here stay unenrolled, so cordon will list them as pending.
    for person in std::iter::once(&commander).chain(clinicians.iter()) {
        crate::dev::bot::enrol(&options.binary, &setup, person).await?;
        t.say(format!(
            "operator: cordon verify {} --fingerprint {}  (enrolled in person)",
            person.user_id(),
            shorten(&person.master_key_fingerprint().await?, 12)
        ));
    }

    let control = commander
        .create_encrypted_room(
            "Hospital control centre",
            std::slice::from_ref(&setup.user_id),
        )
        .await?;
    t.say("the commander created an encrypted control room and invited cordon");
    let bot_id = setup.user_id.clone();
    commander
        .wait_for_message(&control, WAIT, |s, b| {
            s == bot_id && b.contains("control room")
        })
        .await?;
    t.say("cordon joined it: \"This is now a control room\"");

    let command = format!(
        "!cordon declare {} \"{}\"",
        playbook.id, options.incident_name
    );
    let declared_at = Instant::now();
    commander.send_text(&control, &command).await?;
    t.say(format!("commander: {command}"));

    // Invites arrive at the clinicians; each joins.
    let mut joined: Vec<(OwnedUserId, OwnedRoomId)> = Vec::new();
    for c in &clinicians {
        let room = c.wait_for_invite(WAIT).await?;
        let reason = c
            .invites()
            .into_iter()
            .find(|i| i.room_id == room.room_id())
            .and_then(|i| i.reason)
            .unwrap_or_default();
        let name = room.name().unwrap_or_else(|| room.room_id().to_string());
        t.say(format!("invite  {} -> {name}", c.user_id()));
        t.say(format!("        reason: {}", shorten(&reason, 150)));
        c.join(room.room_id()).await?;
        t.say(format!("joined  {} -> {name}", c.user_id()));
        joined.push((c.user_id().to_owned(), room.room_id().to_owned()));
    }

    let (_, summary) = commander
        .wait_for_message(&control, WAIT, |s, b| {
            s == bot_id && b.starts_with("DECLARED")
        })
        .await?;
    t.say(format!(
        "cordon confirmed the incident {:.1} s after the command:",
        declared_at.elapsed().as_secs_f64()
    ));
    for line in summary.lines() {
        println!("           | {line}");
    }

    if let (Some(c), Some((_, room))) = (clinicians.first(), joined.first()) {
        let (_, briefing) = c
            .wait_for_message(room, WAIT, |s, b| s == bot_id && b.starts_with("BRIEFING"))
            .await?;
        t.say(format!(
            "{} decrypted the pinned briefing: \"{}\"",
            c.user_id(),
            shorten(briefing.lines().nth(1).unwrap_or_default(), 90)
        ));
    }

    commander.send_text(&control, "!cordon status").await?;
    t.say("commander: !cordon status");
    let (_, status) = commander
        .wait_for_message(&control, WAIT, |s, b| {
            s == bot_id && b.contains(" · active")
        })
        .await?;
    for line in status.lines() {
        println!("           | {line}");
    }

    // A rogue server admin tries the injection the guard was built to undo: Synapse's
    // `make_room_admin` on an incident room. Synapse asks cordon first, and refuses.
    if let Some((_, room)) = joined.first() {
        let rogue = hs
            .register_session("rogue-admin", "demo-password", true)
            .await?;
        t.say(format!(
            "a rogue server admin ({}) calls Synapse's make_room_admin on an incident room",
            rogue.user_id
        ));
        let refused = make_room_admin(&hs, &rogue, room).await;
        t.say(format!("Synapse answered: {refused}"));
        let (_, alert) = commander
            .wait_for_message(&control, WAIT, |s, b| {
                s == bot_id && b.starts_with("PREVENTED")
            })
            .await?;
        t.say("cordon told the control room:");
        for line in alert.lines() {
            println!("           | {line}");
        }
    }

    let incident = summary
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_default();

    // The command record: a METHANE report (pinned in the command room), two decisions,
    // the second correcting the first, and a SITREP. Each is sealed to the records
    // officer, numbered and posted in the command room.
    for (command, answer) in [
        (
            "!cordon methane\nM: Major incident declared\nE: Addiscombe Road tram stop\nT: Tram derailment, two carriages on their side\nH: Overhead lines may be live; diesel leak\nA: From Lower Addiscombe Road only\nN: About 12 P1, 20 P2, 40 P3\nE: Ambulance, fire and police on scene; HART requested".to_owned(),
            "Recorded as METHANE v1",
        ),
        (
            "!cordon decision Divert P1 trauma to St George's until CT is back --because CT scanner down since 14:05".to_owned(),
            "Logged as D1",
        ),
        (
            "!cordon decision --corrects D1 Divert P1 trauma to King's instead --because St George's is full".to_owned(),
            "Logged as D2",
        ),
        (
            "!cordon sitrep 14 in resus, 3 to theatre, CT back at 15:10; need 2 more ODPs".to_owned(),
            "Recorded as SITREP 1",
        ),
        (format!("!cordon log {incident}"), "Decision log of"),
    ] {
        commander.send_text(&control, &command).await?;
        t.say(format!("commander: {command}"));
        let (_, reply) = commander
            .wait_for_message(&control, WAIT, |s, b| s == bot_id && b.contains(answer))
            .await?;
        t.say("cordon:");
        for line in reply.lines() {
            println!("           | {line}");
        }
    }

    // Clinical advice in an incident room, flagged for a patient (the command with the
    // NHS number is taken out of the chat once the number is sealed), then marked
    // transcribed into the patient record by the commander from the control room.
    if let (Some(c), Some((_, room))) = (clinicians.first(), joined.first()) {
        let said =
            "Bed 4: give 1 g tranexamic acid IV over 10 minutes, then repeat the Hb in one hour";
        let advice = c.send_text(room, said).await?;
        t.say(format!("{}: {said}", c.user_id()));
        let flag = format!("!cordon advice {advice} --patient 943 476 5919");
        c.send_text(room, &flag).await?;
        t.say(format!("{}: {flag}", c.user_id()));
        let (_, reply) = c
            .wait_for_message(room, WAIT, |s, b| {
                s == bot_id && b.contains("Flagged as clinical advice")
            })
            .await?;
        t.say("cordon:");
        for line in reply.lines() {
            println!("           | {line}");
        }
        let mark = format!("!cordon transcribed https://matrix.to/#/{room}/{advice}");
        commander.send_text(&control, &mark).await?;
        t.say(format!("commander: {mark}"));
        let (_, reply) = commander
            .wait_for_message(&control, WAIT, |s, b| {
                s == bot_id && b.contains("Marked transcribed")
            })
            .await?;
        t.say(format!("cordon: {reply}"));
    }

    // The time limit: extended once, then the incident is stood down, which freezes
    // its rooms read-only.
    for (command, answers) in [
        (format!("!cordon extend {incident} 2h"), &["Extended"][..]),
        (
            format!("!cordon standdown {incident}"),
            &[
                "has stood down",
                "is sealed and verified",
                "room(s) are destroyed",
            ][..],
        ),
    ] {
        commander.send_text(&control, &command).await?;
        t.say(format!("commander: {command}"));
        for answer in answers {
            let (_, reply) = commander
                .wait_for_message(&control, WAIT, |s, b| s == bot_id && b.contains(answer))
                .await?;
            t.say("cordon:");
            for line in reply.lines() {
                println!("           | {line}");
            }
        }
    }

    // The operator hands the records officer cordon's archive signing key, which they
    // keep in their trust file; they check the sealed archive against it and open it
    // with their own age key.
    let state_arg = setup.state_dir.display().to_string();
    let pubkey_args = ["archive", "pubkey", "--state-dir", state_arg.as_str()];
    t.say(format!("operator: cordon {}", pubkey_args.join(" ")));
    let signer = run_cli(&options.binary, &pubkey_args)
        .await?
        .trim()
        .to_owned();
    println!("           | {signer}");
    let trust_file = dir.join("records-office.keys");
    std::fs::write(
        &trust_file,
        format!("# archive signing keys the records office trusts\n{signer}  cordon demo\n"),
    )
    .map_err(|e| DemoError::Io(trust_file.display().to_string(), e))?;
    t.say(format!(
        "records officer: adds it to {} as `{signer}  cordon demo`",
        trust_file.display()
    ));
    let archive = setup
        .dir
        .join("archives")
        .join(crate::archive::archive_file_name(&incident));
    let opened = dir.join("opened");
    let archive_arg = archive.display().to_string();
    let key_arg = officer_key.display().to_string();
    let opened_arg = opened.display().to_string();
    let trust_arg = trust_file.display().to_string();
    for args in [
        vec![
            "archive",
            "verify",
            &archive_arg,
            "-i",
            &key_arg,
            "--trust-file",
            &trust_arg,
        ],
        vec![
            "archive",
            "open",
            &archive_arg,
            "-i",
            &key_arg,
            "--signer",
            &signer,
            "--out",
            &opened_arg,
        ],
    ] {
        t.say(format!("records officer: cordon {}", args.join(" ")));
        let out = run_cli(&options.binary, &args).await?;
        for line in out.lines() {
            println!("           | {line}");
        }
    }
    if let Some(first) = std::fs::read_dir(opened.join("rooms"))
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .min()
        })
    {
        t.say(format!("the readable transcript {}:", first.display()));
        let text = std::fs::read_to_string(&first)
            .map_err(|e| DemoError::Io(first.display().to_string(), e))?;
        for line in text.lines().take(14) {
            println!("           | {line}");
        }
    }

    for (file, what) in [
        ("decision-log.md", "the decision log"),
        ("methane.md", "the METHANE reports"),
        ("sitreps.md", "the SITREPs"),
    ] {
        let path = opened.join(file);
        if let Ok(text) = std::fs::read_to_string(&path) {
            t.say(format!("{what} {}:", path.display()));
            for line in text.lines().take(24) {
                println!("           | {line}");
            }
        }
    }

    // `cordon archive <command>` on the sealed archive, with the records officer's key
    // and the trust file.
    let archive_cli = |command: &'static str| {
        [
            "archive",
            command,
            archive_arg.as_str(),
            "-i",
            key_arg.as_str(),
            "--trust-file",
            trust_arg.as_str(),
        ]
    };

    // The emergency planner's debrief, straight from the sealed archive.
    let args = archive_cli("report");
    t.say(format!(
        "emergency planner: cordon {} (the debrief report; also {} in the opened archive)",
        args.join(" "),
        opened.join(crate::archive::DEBRIEF_RENDERING).display()
    ));
    let report = run_cli(&options.binary, &args).await?;
    for line in report.lines() {
        println!("           | {line}");
    }

    // The records officer's export of the advice for the electronic patient record.
    let args = archive_cli("fhir");
    t.say(format!(
        "records officer: cordon {} (the advice as a FHIR R4 transaction bundle, for the \
         patient record; also {} in the opened archive)",
        args.join(" "),
        opened.join(crate::archive::FHIR_ADVICE_FILE).display()
    ));
    let bundle = run_cli(&options.binary, &args).await?;
    for line in bundle.lines() {
        println!("           | {line}");
    }

    bot.terminate(Duration::from_secs(20));
    t.say("cordon stopped (SIGTERM); the demo is over");
    if options.keep {
        println!(
            "\nfiles kept in {} (bot log: {})",
            dir.display(),
            setup.log.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    for c in clinicians {
        c.stop().await;
    }
    commander.stop().await;
    Ok(())
}

/// Replaces the playbook's archive recipients with freshly made demo keys (the first is
/// the records officer's, whose identity file is written to `dir`; the others a
/// deputy's each). Returns the playbook text and the officer's identity file.
fn with_demo_recipients(text: &str, dir: &Path) -> Result<(String, PathBuf), DemoError> {
    use age::secrecy::ExposeSecret;
    let officer = age::x25519::Identity::generate();
    let key_file = dir.join("records-officer.key");
    std::fs::write(
        &key_file,
        format!(
            "# the demo records officer's age identity\n{}\n",
            officer.to_string().expose_secret()
        ),
    )
    .map_err(|e| DemoError::Io(key_file.display().to_string(), e))?;
    let mut out = String::with_capacity(text.len());
    let mut first = true;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(key) = trimmed
            .strip_prefix("- ")
            .map(str::trim)
            .filter(|k| k.starts_with("age1"))
        {
            let replacement = if first {
                officer.to_public().to_string()
            } else {
                age::x25519::Identity::generate().to_public().to_string()
            };
            first = false;
            out.push_str(&line.replacen(key, &replacement, 1));
        } else {
            out.push_str(line);
        }
    }
    if first {
        return Err(DemoError::Playbook(
            "it lists no archive recipient (`- age1…` under archive.recipients)".into(),
        ));
    }
    Ok((out, key_file))
}

/// Runs `cordon ARGS` and returns what it printed; a failure is the demo's failure.
async fn run_cli(binary: &Path, args: &[&str]) -> Result<String, DemoError> {
    let out = tokio::process::Command::new(binary)
        .args(args)
        .output()
        .await
        .map_err(|e| DemoError::Io(binary.display().to_string(), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(DemoError::Step(format!(
            "`cordon {}` failed: {text}",
            args.join(" ")
        )))
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// The default sample playbook, relative to the working directory.
pub fn default_playbook() -> PathBuf {
    Path::new("playbooks").join("mass-casualty.yaml")
}

/// Calls Synapse's `make_room_admin` on `room` as `admin`; returns what Synapse said.
async fn make_room_admin(hs: &Synapse, admin: &super::Registration, room: &RoomId) -> String {
    let url = match hs.base_url().join(&format!(
        "_synapse/admin/v1/rooms/{}/make_room_admin",
        percent_encoding::utf8_percent_encode(room.as_str(), percent_encoding::NON_ALPHANUMERIC)
    )) {
        Ok(url) => url,
        Err(e) => return format!("(no URL: {e})"),
    };
    let sent = match super::synapse::http_client() {
        Ok(client) => {
            client
                .post(url)
                .bearer_auth(&admin.access_token)
                .json(&serde_json::json!({ "user_id": admin.user_id }))
                .send()
                .await
        }
        Err(e) => return format!("(no HTTP client: {e})"),
    };
    match sent {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            format!("{status} {}", body.trim())
        }
        Err(e) => format!("(no answer: {e})"),
    }
}
