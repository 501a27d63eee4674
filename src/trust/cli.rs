//! The operator's side of `cordon verify`: reach the running bot over its admin socket,
//! or, with the bot stopped, take the state directory and serve the request in this
//! process with the same server code; show progress, the emojis and the question, and
//! print the result.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufReader};
use tokio::net::UnixStream;
use tracing::{debug, warn};

use super::socket::{self, AdminContext, Answer, CODE_ERROR, CODE_OK, Reply, Request, SOCKET_FILE};
use super::{Listed, Trust};
use crate::input::config::Config;
use crate::matrix::session::{LockError, StateLock};
use crate::store::EnrolMethod;

/// How long the CLI waits for a bot that holds the state directory but has not opened
/// its admin socket yet (it is starting).
const STARTING_BOT_WAIT: Duration = Duration::from_secs(60);

/// Why `cordon verify` could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The state directory is held by another process.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::input::config::SecretError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The Matrix session could not be opened.
    #[error(transparent)]
    Matrix(#[from] crate::matrix::MatrixError),
    /// Talking to the bot failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bot answered something this CLI does not understand.
    #[error("unexpected answer from cordon: {0}")]
    Protocol(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let context = context.into();
    move |source| CliError::Io { context, source }
}

/// Standard input as an async reader, fed line by line by a plain thread (the thread
/// is left behind if nobody needs the input, and ends with the process).
pub fn stdin_reader() -> BufReader<tokio::io::DuplexStream> {
    let (reader, mut writer) = tokio::io::duplex(4096);
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let write = tokio::io::AsyncWriteExt::write_all(&mut writer, line.as_bytes());
                    if handle.block_on(write).is_err() {
                        break;
                    }
                }
            }
        }
    });
    BufReader::new(reader)
}

/// How the CLI prints: human lines, or the raw `done` reply as JSON (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Lines for people.
    Human,
    /// One JSON object (the final reply).
    Json,
}

/// The operator's name for the audit log: `operator:` and the login name
/// (`$SUDO_USER` when run through sudo as the bot's user, else `$USER` or `$LOGNAME`),
/// or the uid when none is set.
pub fn operator_name() -> String {
    let name = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.trim().is_empty());
    match name {
        Some(name) => format!("operator:{}", name.trim()),
        None => {
            use std::os::unix::fs::MetadataExt;
            match std::fs::metadata("/proc/self") {
                Ok(meta) => format!("operator:uid-{}", meta.uid()),
                Err(_) => "operator:unknown".to_owned(),
            }
        }
    }
}

/// Runs `request` against the bot of `config` (over its socket if it runs, otherwise
/// in this process) and returns the exit status. `input` answers the emoji question;
/// `out` gets results, `err` progress.
pub async fn run<I>(
    config: &Config,
    request: &Request,
    output: Output,
    input: &mut I,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError>
where
    I: AsyncBufRead + Unpin,
{
    let socket = config.state_dir.join(SOCKET_FILE);
    if let Some(stream) = try_connect(&socket).await? {
        return talk(stream, request, output, input, out, err).await;
    }
    let lock = match StateLock::acquire(&config.state_dir) {
        Ok(lock) => lock,
        Err(LockError::Held { dir, pid }) => {
            // A bot that is starting holds the lock before it opens the socket.
            let _ = writeln!(
                err,
                "cordon is running{} but its admin socket is not open yet; waiting",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
            let until = tokio::time::Instant::now() + STARTING_BOT_WAIT;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(stream) = try_connect(&socket).await? {
                    return talk(stream, request, output, input, out, err).await;
                }
                match StateLock::acquire(&config.state_dir) {
                    Ok(lock) => break lock,
                    Err(LockError::Held { .. }) if tokio::time::Instant::now() < until => {}
                    Err(LockError::Held { pid, .. }) => {
                        return Err(LockError::Held { dir, pid }.into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    offline(config, lock, request, output, input, out, err).await
}

/// Connects to the socket; `None` when there is no bot listening.
async fn try_connect(socket: &Path) -> Result<Option<UnixStream>, CliError> {
    match UnixStream::connect(socket).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io(format!("connecting to {}", socket.display()))(e)),
    }
}

/// The bot is stopped: this process holds the state directory, opens the store and the
/// session, syncs in the background (to-device messages carry the emoji comparison),
/// and serves the request in-process with the socket's own server.
async fn offline<I>(
    config: &Config,
    _lock: StateLock,
    request: &Request,
    output: Output,
    input: &mut I,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError>
where
    I: AsyncBufRead + Unpin,
{
    let _ = writeln!(
        err,
        "cordon is not running; working on its state directory directly"
    );
    let password = config.password.read()?;
    let passphrase = config.store_passphrase.read()?;
    let store = Arc::new(crate::store::Store::open(&config.state_dir.join("store"))?);
    // Recovery is normally set up already, by the bot's first start; if not, its key
    // goes only to a terminal.
    let recovery_key = crate::matrix::session::RecoveryKeyOut::choose(None, false);
    let client =
        crate::matrix::session::connect(config, &password, &passphrase, &recovery_key).await?;
    drop(password);
    drop(passphrase);

    let syncing = tokio::spawn(sync_loop(client.clone()));
    let ctx = AdminContext {
        state_dir: config.state_dir.clone(),
        client: client.clone(),
        store,
        clock: crate::clock::from_env(),
        on_enrolled: None,
        on_revoked: None,
    };
    let (ours, theirs) = tokio::io::duplex(2 * socket::MAX_LINE);
    let server = async {
        if let Err(e) = socket::serve(&ctx, theirs).await {
            warn!(error = %e, "in-process admin server failed");
        }
    };
    let (_, code) = tokio::join!(server, talk(ours, request, output, input, out, err));
    syncing.abort();
    let _ = syncing.await;
    // The last to-device messages of a comparison (MAC, done, cancel) and cordon's
    // signature go out with the next syncs; exiting at once would leave the person's
    // device waiting.
    for _ in 0..2 {
        let settings = SyncSettings::default().timeout(Duration::ZERO);
        match tokio::time::timeout(Duration::from_secs(15), client.sync_once(settings)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => debug!(error = %e, "final sync failed"),
            Err(_) => debug!("final sync timed out"),
        }
    }
    code
}

async fn sync_loop(client: Client) {
    let settings = SyncSettings::default().timeout(Duration::from_secs(5));
    loop {
        if let Err(e) = client.sync_once(settings.clone()).await {
            debug!(error = %e, "sync failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Sends `request` over `stream` and follows the replies to the end: progress to `err`,
/// the emojis and the question to `out`, the operator's answer read from `input`, and
/// the result. Returns the exit status the server chose.
pub async fn talk<S, I>(
    stream: S,
    request: &Request,
    output: Output,
    input: &mut I,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: AsyncBufRead + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    socket::write_line(&mut write, request)
        .await
        .map_err(io("sending the request to cordon"))?;
    let user = match &request.op {
        socket::Op::Sas { user, .. } => user.clone(),
        _ => String::new(),
    };
    loop {
        let line = socket::read_line(&mut read)
            .await
            .map_err(io("reading cordon's answer"))?
            .ok_or_else(|| {
                CliError::Protocol("cordon closed the connection without a result".into())
            })?;
        let reply: Reply =
            serde_json::from_str(&line).map_err(|e| CliError::Protocol(format!("{e}: {line}")))?;
        match reply {
            Reply::Progress { message } => {
                let _ = writeln!(err, "{message}");
            }
            Reply::Emojis { device, emojis } => {
                let _ = writeln!(
                    out,
                    "Compare these emojis with the ones on {user}'s screen (device {device}):"
                );
                for emoji in &emojis {
                    let _ = writeln!(out, "{}  {}", emoji.symbol, emoji.name);
                }
                let _ = write!(out, "Do the emojis match what the person sees? [y/N] ");
                let _ = out.flush();
                // The comparison may end without us (the person cancels, it times out):
                // then the server's result arrives instead of our answer being needed.
                let mut answer_line = String::new();
                let answer = tokio::select! {
                    read = tokio::io::AsyncBufReadExt::read_line(input, &mut answer_line) => {
                        match read {
                            Ok(_) if is_yes(&answer_line) => Answer::Match,
                            _ => Answer::Mismatch,
                        }
                    }
                    next = socket::read_line(&mut read) => {
                        let _ = writeln!(out);
                        let line = next
                            .map_err(io("reading cordon's answer"))?
                            .ok_or_else(|| CliError::Protocol("cordon closed the connection without a result".into()))?;
                        let reply: Reply = serde_json::from_str(&line)
                            .map_err(|e| CliError::Protocol(format!("{e}: {line}")))?;
                        return Ok(finish(reply, output, out, err));
                    }
                };
                if answer == Answer::Mismatch && answer_line.is_empty() {
                    let _ = writeln!(out);
                }
                socket::write_line(&mut write, &answer)
                    .await
                    .map_err(io("sending the answer to cordon"))?;
            }
            done @ Reply::Done { .. } => return Ok(finish(done, output, out, err)),
        }
    }
}

fn is_yes(line: &str) -> bool {
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Prints the result and returns the exit status.
fn finish(reply: Reply, output: Output, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Reply::Done {
        code,
        message,
        list,
        trust,
    } = reply
    else {
        return CODE_ERROR;
    };
    if output == Output::Json {
        let value = serde_json::json!({
            "code": code, "message": message, "list": list, "trust": trust,
        });
        let _ = writeln!(out, "{value}");
        return code;
    }
    if let Some(list) = &list {
        let _ = write!(out, "{}", render_list(list));
    }
    if code == CODE_OK {
        let _ = writeln!(out, "{message}");
    } else {
        let kind = if code == CODE_ERROR {
            "error"
        } else {
            "refused"
        };
        let _ = writeln!(err, "cordon: {kind}: {message}");
    }
    code
}

/// The `--list` table: who, standing now, method, by whom, since when, and any
/// revocation.
pub fn render_list(list: &[Listed]) -> String {
    let mut rows = vec![[
        "USER".to_owned(),
        "STANDING".to_owned(),
        "METHOD".to_owned(),
        "BY".to_owned(),
        "SINCE".to_owned(),
        "REVOKED".to_owned(),
    ]];
    for row in list {
        let e = &row.enrolment;
        let method = match &e.method {
            EnrolMethod::Sas { device } => format!("sas ({device})"),
            EnrolMethod::Fingerprint => "fingerprint".to_owned(),
            EnrolMethod::Unrecorded => "-".to_owned(),
        };
        let revoked = match &e.revoked {
            Some(r) => format!(
                "{} by {}{}",
                r.at.format("%Y-%m-%d %H:%M UTC"),
                r.by,
                r.reason
                    .as_deref()
                    .map(|why| format!(": {why}"))
                    .unwrap_or_default()
            ),
            None => "-".to_owned(),
        };
        rows.push([
            e.user.clone(),
            standing(&row.trust).to_owned(),
            method,
            if e.by.is_empty() {
                "-".to_owned()
            } else {
                e.by.clone()
            },
            e.verified_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            revoked,
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if list.is_empty() {
        text.push_str("(nobody is enrolled yet)\n");
    }
    text
}

/// The short word for a standing, as `--list` shows it.
pub fn standing(trust: &Trust) -> &'static str {
    match trust {
        Trust::Verified => "verified",
        Trust::NoCrossSigning => "no-cross-signing",
        Trust::NotEnrolled => "not-enrolled",
        Trust::IdentityChanged => "identity-changed",
        Trust::Revoked => "revoked",
        Trust::Unknown { .. } => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Enrolment, Revocation};
    use socket::{Op, ShownEmoji};

    fn request(op: Op) -> Request {
        Request {
            v: socket::PROTOCOL_VERSION,
            by: "operator:test".into(),
            op,
        }
    }

    /// A scripted server: checks the request, sends `replies`, and returns what the
    /// client sent after the request.
    async fn scripted(
        server: tokio::io::DuplexStream,
        replies: Vec<Reply>,
        answer_after: Option<usize>,
    ) -> Vec<String> {
        let (read, mut write) = tokio::io::split(server);
        let mut read = BufReader::new(read);
        let first = socket::read_line(&mut read).await.unwrap().unwrap();
        serde_json::from_str::<Request>(&first).unwrap();
        let mut got = Vec::new();
        for (i, reply) in replies.iter().enumerate() {
            socket::write_line(&mut write, reply).await.unwrap();
            if answer_after == Some(i) {
                got.push(
                    socket::read_line(&mut read)
                        .await
                        .unwrap()
                        .unwrap_or_default(),
                );
            }
        }
        got
    }

    fn emojis() -> Reply {
        Reply::Emojis {
            device: "PHONE".into(),
            emojis: vec![
                ShownEmoji {
                    symbol: "🐶".into(),
                    name: "Dog".into(),
                };
                7
            ],
        }
    }

    async fn sas_with_input(input: &str, done_code: u8) -> (u8, String, Vec<String>) {
        let (client, server) = tokio::io::duplex(4096);
        let replies = vec![
            Reply::Progress {
                message: "waiting".into(),
            },
            emojis(),
            Reply::Done {
                code: done_code,
                message: "result".into(),
                list: None,
                trust: None,
            },
        ];
        let server = tokio::spawn(scripted(server, replies, Some(1)));
        let mut input = BufReader::new(input.as_bytes());
        let mut out = Vec::new();
        let mut err = Vec::new();
        let req = request(Op::Sas {
            user: "@p:hs".into(),
            device: None,
            timeout_secs: 60,
        });
        let code = talk(client, &req, Output::Human, &mut input, &mut out, &mut err)
            .await
            .unwrap();
        let sent = server.await.unwrap();
        (code, String::from_utf8(out).unwrap(), sent)
    }

    #[tokio::test]
    async fn a_yes_confirms_and_the_emojis_are_shown_one_per_line() {
        let (code, out, sent) = sas_with_input("y\n", 0).await;
        assert_eq!(code, 0);
        assert_eq!(sent, vec![r#"{"answer":"match"}"#.to_owned()]);
        assert_eq!(out.matches("🐶  Dog\n").count(), 7, "{out}");
        assert!(out.contains("Do the emojis match what the person sees? [y/N]"));
    }

    #[tokio::test]
    async fn anything_but_yes_is_a_mismatch() {
        for input in ["n\n", "\n", "", "yeah\n", "maybe"] {
            let (code, _, sent) = sas_with_input(input, 1).await;
            assert_eq!(code, 1);
            assert_eq!(
                sent,
                vec![r#"{"answer":"mismatch"}"#.to_owned()],
                "{input:?}"
            );
        }
        let (_, _, sent) = sas_with_input(" YES \n", 0).await;
        assert_eq!(sent, vec![r#"{"answer":"match"}"#.to_owned()]);
    }

    #[test]
    fn the_list_shows_method_standing_and_revocation() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let list = vec![
            Listed {
                enrolment: Enrolment {
                    user: "@a:hs".into(),
                    master_key: Some("K".into()),
                    method: EnrolMethod::Sas {
                        device: "PHONE".into(),
                    },
                    by: "operator:alice".into(),
                    verified_at: at,
                    revoked: None,
                },
                trust: Trust::Verified,
            },
            Listed {
                enrolment: Enrolment {
                    user: "@b:hs".into(),
                    master_key: Some("K".into()),
                    method: EnrolMethod::Fingerprint,
                    by: "operator:alice".into(),
                    verified_at: at,
                    revoked: Some(Revocation {
                        by: "operator:bob".into(),
                        at,
                        reason: Some("left".into()),
                    }),
                },
                trust: Trust::Revoked,
            },
        ];
        let text = render_list(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("USER"));
        assert!(lines[1].contains("@a:hs") && lines[1].contains("verified"));
        assert!(lines[1].contains("sas (PHONE)") && lines[1].contains("operator:alice"));
        assert!(lines[2].contains("revoked") && lines[2].contains("by operator:bob: left"));
    }
}
