//! `cordon doctor`, the operator's preflight, against the real Synapse: a working
//! setup passes (beside the running bot, whose device it leaves alone), and each
//! failure it names comes with its fix: an unreadable playbook, a wrong password, an
//! account without admin rights, an older default room version (on which a declare
//! still makes room version 12 rooms).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use cordon::dev::SynapseOptions;
use cordon::dev::bot::BotSetup;
use cordon::dev::synapse::Synapse;

use crate::support::{cordon_bin, unique};
use crate::world::{World, admin_get, incident_id_in};

/// A valid playbook, for setups whose playbooks are not the subject.
const PLAYBOOK: &str = include_str!("../../../playbooks/mass-casualty.yaml");

/// Runs `cordon doctor --config CONFIG`; its output and exit code.
async fn doctor(config: &Path) -> (Output, String) {
    doctor_with(config, &[]).await
}

/// Runs `cordon doctor --config CONFIG ARGS…`; its output and exit code.
async fn doctor_with(config: &Path, args: &[&str]) -> (Output, String) {
    let output = tokio::process::Command::new(cordon_bin())
        .args(["doctor", "--config"])
        .arg(config)
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// Runs `script` (in `dir`) with the harness's Python and `args`; the script prints
/// the port it listens on as its first line. The process dies with the handle.
async fn python_server(dir: &Path, script: &str, args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let python = cordon::dev::install::ensure_installed().await.unwrap();
    let mut server = tokio::process::Command::new(python)
        .arg(script)
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut port = String::new();
    let stdout = server.stdout.take().unwrap();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut port)
        .await
        .unwrap();
    (server, port.trim().to_owned())
}

/// The line that starts with `start`, and the line after it.
fn line_and_next<'a>(text: &'a str, start: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"));
    (lines[i], lines.get(i + 1).copied().unwrap_or_default())
}

/// A bot's account (a server admin), config, secrets, its state directory and one valid
/// playbook, in a directory everyone may search (so a service user other than root can
/// be judged).
async fn setup(hs: &Synapse, dir: &Path, tag: &str) -> BotSetup {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    std::fs::write(playbooks.join("mass-casualty.yaml"), PLAYBOOK).unwrap();
    let operator = hs.user_id(&unique("docop")).unwrap();
    let setup = BotSetup::create(hs, dir, &unique(tag), &playbooks, &[operator], "")
        .await
        .unwrap();
    // The state directory exists (owner-only), so its owner is the service user, whatever
    // accounts this host has (without it, doctor would judge for an account `cordon`).
    std::fs::create_dir_all(&setup.state_dir).unwrap();
    std::fs::set_permissions(&setup.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    setup
}

/// The working setup, checked while the bot runs (as operators do after a change):
/// every check passes, the saved session's token is accepted, and doctor's own login
/// is a device that is gone again afterwards while the bot runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_working_setup_while_the_bot_runs_and_leaves_no_device_behind() {
    let mut w = World::builder().prefix("doc").build().await;
    let bot = w.bot_id();
    let devices_path = format!("_synapse/admin/v2/users/{bot}/devices");
    let devices_before = admin_get(w.hs, &devices_path).await["devices"].clone();
    let (output, text) = doctor(&w.setup.config).await;
    assert_eq!(output.status.code(), Some(0), "{text}");
    for line in [
        format!("PASS  admin: {bot} is a server admin, through {}_synapse/admin/", w.hs.base_url()),
        format!("PASS  rate limits: lifted for {bot}"),
        "PASS  room versions: 12 is available and the server's default".to_owned(),
        "PASS  saved session: the homeserver accepts the saved token of cordon's device ".to_owned(),
        "PASS  homeserver: ".to_owned(),
        format!("PASS  login: {bot} logged in with the configured password, as a temporary device \"cordon doctor (temporary)\""),
        "PASS  logout: the temporary device ".to_owned(),
        "PASS  aliases: the server's alias_creation_rules let cordon create its rooms' creation aliases".to_owned(),
        "PASS  playbooks: 1 valid in ".to_owned(),
        "PASS  password: ".to_owned(),
        "PASS  store_passphrase: ".to_owned(),
        "PASS  state_dir: ".to_owned(),
        "PASS  metrics: ".to_owned(),
        "PASS  disk: ".to_owned(),
    ] {
        assert!(text.lines().any(|l| l.starts_with(&line)), "no {line:?} in:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("0 failed"), "{text}");
    // The bot is untouched, and doctor's device is gone: only the bot's remains.
    let bot_process = w.bot.as_mut().unwrap();
    assert!(bot_process.is_running(), "{}", bot_process.log_text());
    let devices_after = admin_get(w.hs, &devices_path).await["devices"].clone();
    assert_eq!(devices_after, devices_before, "doctor left a device behind");
    assert!(
        !devices_after.to_string().contains("cordon doctor"),
        "{devices_after}"
    );
    w.stop_bot();
}

/// As root, `chmod 600` does not stop doctor reading a playbook, but it stops the
/// service user: the checks are made for the owner of the state directory (here
/// `nobody`), from the file's mode and owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_a_playbook_the_service_user_cannot_read_and_says_how_to_open_it() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "docread").await;
    // The service user is nobody: it owns the state directory and the bot's files.
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&setup.dir)
        .status()
        .unwrap();
    assert!(status.success());
    let playbook: PathBuf = setup.playbooks_dir.join("mass-casualty.yaml");
    std::fs::set_permissions(&playbook, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (output, text) = doctor(&setup.config).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let nobody = format!("{} (uid 65534)", cordon::doctor::access::user_name(65534));
    let group = cordon::doctor::access::group_name(65534);
    let p = playbook.display();
    assert!(
        text.contains(&format!(
            "Checking for the service user {nobody}, the owner of the state directory"
        )),
        "{text}"
    );
    let (line, fix) = line_and_next(&text, &format!("FAIL  playbook {p}:"));
    assert_eq!(
        line,
        format!("FAIL  playbook {p}: {p} is not readable by {nobody} (mode 0600, owner root:root)")
    );
    assert_eq!(
        fix,
        format!(
            "      fix: let {nobody} read it: chgrp {group} {p} && chmod 0640 {p} (or chmod 0644 {p})"
        )
    );
    // That is the only failure: the rest of the setup is sound for nobody.
    assert!(text.contains(" 1 failed"), "{text}");
}

/// A wrong password: the login fails with where the password goes, and what needs a
/// login is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_a_wrong_password_and_skips_what_needs_a_login() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "docpw").await;
    std::fs::write(setup.dir.join("password"), "not-the-password").unwrap();

    let (output, text) = doctor(&setup.config).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let (line, fix) = line_and_next(&text, "FAIL  login:");
    assert!(
        line.starts_with(&format!(
            "FAIL  login: the homeserver refused the password for {} (",
            setup.user_id
        )),
        "{line}"
    );
    assert_eq!(
        fix,
        format!(
            "      fix: put the account's password in what `password` names in {} (or set a new one: docs/operations.md, \"Rotating the bot's password\")",
            setup.config.display()
        )
    );
    for skipped in ["admin", "rate limits", "room versions", "aliases"] {
        assert!(
            text.lines()
                .any(|l| l == format!("SKIP  {skipped} (needs login)")),
            "{skipped}:\n{text}"
        );
    }
}

/// An account that is not a server admin: named, with how to make it one; what needs
/// admin rights is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_an_account_without_admin_rights() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "docadm").await;
    // The config names another account, with its password: not an admin.
    let plain = hs
        .register(&unique("docplain"), "plain-pw", false)
        .await
        .unwrap();
    std::fs::write(setup.dir.join("password"), "plain-pw").unwrap();
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let config = config.replace(setup.user_id.as_str(), plain.as_str());
    std::fs::write(&setup.config, config).unwrap();

    let (output, text) = doctor(&setup.config).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let (line, fix) = line_and_next(&text, "FAIL  admin:");
    assert_eq!(
        line,
        format!(
            "FAIL  admin: {plain} is not a server admin: cordon cannot lift its rate limits or purge incident rooms at stand-down"
        )
    );
    assert_eq!(
        fix,
        "      fix: make it a server admin (docs/deploy.md, step 2: `register_new_matrix_user --admin`, or the admin API's PUT /_synapse/admin/v2/users/<user> with \"admin\": true)"
    );
    assert!(
        text.lines()
            .any(|l| l == "SKIP  rate limits (needs admin rights)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "SKIP  aliases (needs admin rights)"),
        "{text}"
    );
    assert!(text.contains(" 1 failed"), "{text}");
}

/// A Synapse whose `default_room_version` is 10: doctor warns and passes (cordon asks
/// for 12 itself), and a declare works end to end, its rooms version 12 while the
/// control room the commander made is 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_warns_of_an_older_default_room_version_and_a_declare_still_makes_v12_rooms() {
    let hs = Synapse::own_with(SynapseOptions::default().default_room_version("10"))
        .await
        .expect("synapse");
    let mut w = World::builder().on(hs).prefix("doc10").build().await;

    let (output, text) = doctor(&w.setup.config).await;
    assert_eq!(output.status.code(), Some(0), "{text}");
    let (line, fix) = line_and_next(&text, "WARN  room versions:");
    assert_eq!(
        line,
        "WARN  room versions: 12 is available, but the server's default is 10: cordon asks for 12 in every room it creates, so its incident rooms are 12; control rooms people create get 10, which cordon handles"
    );
    assert_eq!(
        fix,
        "      fix: nothing for cordon; to make 12 the default for everyone, set `default_room_version: \"12\"` in homeserver.yaml"
    );

    let control = admin_get(hs, &format!("_synapse/admin/v1/rooms/{}", w.control())).await;
    assert_eq!(control["version"], "10", "{control}");
    w.say(&format!(
        "!cordon declare {} \"Old default drill\"",
        w.playbook_id
    ))
    .await;
    let incident = incident_id_in(&w.bot_says("DECLARED: Old default drill").await);
    let rooms = w.created_rooms(&incident).await;
    assert!(!rooms.is_empty());
    for (key, ids) in rooms {
        for id in ids {
            let state = admin_get(hs, &format!("_synapse/admin/v1/rooms/{id}/state")).await;
            let create = state["state"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == "m.room.create")
                .unwrap();
            assert_eq!(create["content"]["room_version"], "12", "{key}: {create}");
        }
    }
    w.stop_bot();
}

/// A playbook broken now: the same `file:line:col: error:` lines as `cordon check`,
/// under one failure for the file; the valid playbook beside it is not named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_a_broken_playbook_with_the_diagnostics_of_cordon_check() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "docbroken").await;
    let broken = setup.playbooks_dir.join("broken.yaml");
    std::fs::write(&broken, PLAYBOOK.replacen("title:", "titel:", 1)).unwrap();

    let (output, text) = doctor(&setup.config).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let check = std::process::Command::new(cordon_bin())
        .arg("check")
        .arg(&broken)
        .output()
        .unwrap();
    let expected: Vec<String> = String::from_utf8_lossy(&check.stderr)
        .lines()
        .filter(|l| l.contains(": error: "))
        .map(|l| format!("      {l}"))
        .collect();
    assert!(!expected.is_empty());
    let b = broken.display();
    let (line, _) = line_and_next(&text, &format!("FAIL  playbook {b}:"));
    assert_eq!(
        line,
        format!("FAIL  playbook {b}: {} problem(s)", expected.len())
    );
    for diagnostic in &expected {
        assert!(
            text.lines().any(|l| l == diagnostic),
            "{diagnostic}:\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l
            == format!(
                "      fix: correct it (`cordon check {b}` shows the same): a declare of it is refused until then"
            )),
        "{text}"
    );
    assert!(!text.contains("mass-casualty.yaml:"), "{text}");
    assert!(text.contains(" 1 failed"), "{text}");
}

/// A store passphrase that does not open the saved session: named, with the fix. The
/// metrics address the running bot listens on is told from one another program holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_wrong_store_passphrase_and_tells_the_running_cordon_on_the_metrics_address()
{
    let mut w = World::builder().prefix("docpass").build().await;
    let dir = &w.setup.dir;
    let bot_metrics = w
        .bot
        .as_ref()
        .unwrap()
        .metrics_url()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let original = std::fs::read_to_string(&w.setup.config).unwrap();
    assert!(original.contains("127.0.0.1:0"), "{original}");

    // The running cordon's own address: in use, by cordon.
    let on_bot = dir.join("on-bot.yaml");
    std::fs::write(&on_bot, original.replace("127.0.0.1:0", &bot_metrics)).unwrap();
    let (output, text) = doctor(&on_bot).await;
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.lines().any(|l| l
            == format!(
                "PASS  metrics: {bot_metrics} is in use by the running cordon (/healthz: ok)"
            )),
        "{text}"
    );

    // An address another program holds, and a passphrase that is not cordon's.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = other.local_addr().unwrap().to_string();
    std::fs::write(dir.join("wrong-passphrase"), "not the passphrase").unwrap();
    let wrong = dir.join("wrong.yaml");
    std::fs::write(
        &wrong,
        original
            .replace("127.0.0.1:0", &taken)
            .replace("{ file: store-passphrase }", "{ file: wrong-passphrase }"),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("wrong-passphrase"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (output, text) = doctor(&wrong).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let session = w.setup.state_dir.join("session.json");
    let (line, fix) = line_and_next(&text, "FAIL  saved session:");
    assert!(
        line.starts_with(&format!(
            "FAIL  saved session: session file {}: its access token: ",
            session.display()
        )),
        "{line}"
    );
    assert_eq!(
        fix,
        format!(
            "      fix: `store_passphrase` in {} must name the passphrase cordon first started with (it also opens the crypto store): put that one back from your password vault",
            wrong.display()
        )
    );
    let (line, fix) = line_and_next(&text, "FAIL  metrics:");
    assert_eq!(
        line,
        format!(
            "FAIL  metrics: {taken} is in use by another program (it does not answer as cordon's /healthz)"
        )
    );
    assert_eq!(
        fix,
        format!(
            "      fix: stop that program, or set `metrics.listen` in {} to a free address",
            wrong.display()
        )
    );
    assert!(text.contains(" 2 failed"), "{text}");
    drop(other);
    w.stop_bot();
}

/// A config that cannot be read: its problems as `cordon config check` prints them,
/// and exit 2, before any check runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_exits_2_with_the_configs_problems_when_it_cannot_read_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cordon.yaml");
    std::fs::write(
        &config,
        "homeserver: https://matrix.example\nusr: \"@cordon:example\"\n",
    )
    .unwrap();
    let (output, text) = doctor(&config).await;
    assert_eq!(output.status.code(), Some(2), "{text}");
    let check = std::process::Command::new(cordon_bin())
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let problems = String::from_utf8_lossy(&check.stderr);
    let first = problems.lines().next().unwrap();
    assert!(first.contains(": error: "), "{problems}");
    assert!(text.lines().any(|l| l == first), "{first}:\n{text}");
    assert!(!text.contains("PASS"), "{text}");
}

/// The bot reads playbooks again at each declare, so one broken now is logged at start,
/// with its file and first problem, before a commander meets it; the bot starts anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_warns_at_start_of_a_playbook_that_is_broken_now() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "docstart").await;
    let broken = setup.playbooks_dir.join("broken.yaml");
    std::fs::write(&broken, PLAYBOOK.replacen("title:", "titel:", 1)).unwrap();
    let mut bot = cordon::dev::bot::BotProcess::start(&cordon_bin(), &setup, &[]).unwrap();
    bot.wait_for_log("cordon is ready", std::time::Duration::from_secs(90))
        .await
        .unwrap();
    let log = bot.log_text();
    bot.terminate(std::time::Duration::from_secs(15));
    let warning = log
        .lines()
        .find(|l| l.contains("a playbook is broken"))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&broken.display().to_string()), "{warning}");
    assert!(
        warning.contains("unknown key `titel`") || warning.contains("titel"),
        "{warning}"
    );
    assert!(!log.contains("mass-casualty.yaml"), "{log}");
}

/// A homeserver whose certificate an internal CA signed, on a host whose trust store
/// lacks that CA: named as such, with where to install the CA; with the CA trusted
/// (`SSL_CERT_FILE`, which the system's trust store reads as the installed CAs would
/// be), the same homeserver passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_certificate_from_an_internal_ca_this_host_does_not_trust() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    write("ca.pem", include_str!("../data/internal-ca/ca.pem"));
    write(
        "homeserver.pem",
        include_str!("../data/internal-ca/homeserver.pem"),
    );
    write(
        "homeserver.key",
        include_str!("../data/internal-ca/homeserver.key"),
    );
    // A homeserver stand-in: HTTPS with that certificate, answering the versions.
    write(
        "server.py",
        r#"import http.server, ssl, sys
class Versions(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"versions": ["v1.11"]}')
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Versions)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain("homeserver.pem", "homeserver.key")
server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#,
    );
    let (mut server, port) = python_server(d, "server.py", &[]).await;
    let port = port.as_str();
    std::fs::create_dir(d.join("playbooks")).unwrap();
    write("playbooks/mass-casualty.yaml", PLAYBOOK);
    for secret in ["password", "store-passphrase"] {
        write(secret, "secret");
        std::fs::set_permissions(d.join(secret), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::create_dir(d.join("state")).unwrap();
    write(
        "cordon.yaml",
        &format!(
            "homeserver: https://127.0.0.1:{port}\n\
             user: \"@cordon:localhost\"\n\
             password: {{ file: password }}\n\
             store_passphrase: {{ file: store-passphrase }}\n\
             state_dir: state\n\
             playbooks_dir: playbooks\n\
             archive_dir: archives\n\
             operators: [\"@op:localhost\"]\n\
             metrics: {{ listen: \"127.0.0.1:0\" }}\n"
        ),
    );
    let config = d.join("cordon.yaml");

    let (output, text) = doctor(&config).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let (line, fix) = line_and_next(&text, "FAIL  homeserver:");
    assert!(
        line.starts_with(
            "FAIL  homeserver: the homeserver's certificate is not trusted by this system's trust store ("
        ),
        "{line}"
    );
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert_eq!(
        fix,
        "      fix: if the certificate is signed by an internal CA, install the CA on this host (Debian: copy it to /usr/local/share/ca-certificates/ and run update-ca-certificates); otherwise give the homeserver a certificate from a public CA"
    );
    assert!(
        text.lines()
            .any(|l| l == "SKIP  login (needs the homeserver)"),
        "{text}"
    );

    let trusted = tokio::process::Command::new(cordon_bin())
        .args(["doctor", "--config"])
        .arg(&config)
        .env("SSL_CERT_FILE", d.join("ca.pem"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "PASS  homeserver: https://127.0.0.1:{port}/ reachable"
        ))),
        "{text}"
    );
    server.kill().await.unwrap();
}

/// A reverse proxy in front of Synapse that passes only `/_matrix/` (as many do): the
/// login works through it, but the admin API answers the proxy's 404, which is named
/// as the proxy's doing, with what to forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_reverse_proxy_that_does_not_forward_the_admin_api() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "docproxy").await;
    std::fs::write(
        dir.path().join("proxy.py"),
        r#"import http.client, http.server, sys
UPSTREAM = int(sys.argv[1])
class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def forward(self):
        if not self.path.startswith("/_matrix/"):
            body = b"<html><body>404 Not Found</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=30)
        upstream.request(self.command, self.path, body=data, headers=headers)
        answer = upstream.getresponse()
        payload = answer.read()
        self.send_response(answer.status)
        for k, v in answer.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
    do_GET = do_POST = do_PUT = do_DELETE = forward
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
print(server.server_address[1], flush=True)
server.serve_forever()
"#,
    )
    .unwrap();
    let (mut proxy, port) = python_server(dir.path(), "proxy.py", &[&hs.port().to_string()]).await;
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let proxied = format!("http://127.0.0.1:{port}/");
    std::fs::write(
        &setup.config,
        config.replace(hs.base_url().as_str(), &proxied),
    )
    .unwrap();

    let (output, text) = doctor(&setup.config).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("PASS  login: {} logged in", setup.user_id)),
        "{text}"
    );
    let (line, fix) = line_and_next(&text, "FAIL  admin:");
    assert_eq!(
        line,
        format!(
            "FAIL  admin: {proxied}_synapse/admin/ answered HTTP 404: the admin API is not reachable through this address"
        )
    );
    assert_eq!(
        fix,
        "      fix: your reverse proxy must forward /_synapse/admin/ to Synapse for cordon's account (docs/deploy.md, step 3), or point `homeserver` at Synapse's loopback listener when cordon runs on its host"
    );
    assert!(
        text.lines()
            .any(|l| l == "SKIP  rate limits (needs admin rights)"),
        "{text}"
    );
    assert!(text.contains(" 1 failed"), "{text}");
    proxy.kill().await.unwrap();
}

/// Less free space than `--min-free` asks for fails, naming the file system and why
/// it matters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_the_state_directorys_disk_has_less_free_space_than_asked() {
    let hs = Synapse::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(hs, dir.path(), "docdisk").await;
    let (output, text) = doctor_with(&setup.config, &["--min-free", "100%"]).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let (line, fix) = line_and_next(&text, "FAIL  disk:");
    assert!(
        line.ends_with(&format!(
            " on the file system of {} (at least 100% wanted)",
            setup.state_dir.display()
        )),
        "{line}"
    );
    assert_eq!(
        fix,
        "      fix: free space there: the store and the sealed archives grow with every incident, and cordon stops when its store cannot be written"
    );
    assert!(text.contains(" 1 failed"), "{text}");
}
