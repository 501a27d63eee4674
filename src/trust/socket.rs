//! The admin socket: how `cordon verify` reaches the running bot, so that every
//! enrolment runs on the bot's own client and device (two processes on one device
//! drift apart).
//!
//! # Where and who
//!
//! `cordon run` listens on `admin.sock` in its state directory (mode 0600, in a 0700
//! directory) and serves only peers whose effective uid is its own (`SO_PEERCRED`).
//! A socket file left by a killed bot is replaced at start; the state directory's lock
//! (`cordon.lock`) makes sure that no live bot owns it then. With the bot stopped, the
//! CLI takes the lock and runs the very same [`serve`] in-process over an in-memory
//! pipe, so there is one implementation.
//!
//! The listener and each connection run on the bot's [`Tasks`]: when they stop (see
//! [`crate::tasks`]) it stops accepting, ends open connections and removes the file.
//!
//! # Protocol (version 1)
//!
//! One JSON object per line, UTF-8, each line at most 64 KiB.
//!
//! The client sends one request:
//!
//! ```json
//! {"v":1,"by":"operator:alice","op":"fingerprint","user":"@a:hs","fingerprint":"…"}
//! {"v":1,"by":"operator:alice","op":"sas","user":"@a:hs","device":null,"timeout_secs":300}
//! {"v":1,"by":"operator:alice","op":"list"}
//! {"v":1,"by":"operator:alice","op":"revoke","user":"@a:hs","reason":"left the trust"}
//! {"v":1,"by":"operator:alice","op":"status","user":"@a:hs"}
//! {"v":1,"by":"operator:alice","op":"snapshot"}
//! ```
//!
//! `by` names the operator in the audit log; the bot takes it on trust, since only its
//! own uid may connect. The server answers with zero or more `progress` lines, for
//! `sas` one `emojis` line, and always ends with one `done` line:
//!
//! ```json
//! {"event":"progress","message":"asked @a:hs to verify on 1 device(s) …"}
//! {"event":"emojis","device":"ABCDEFGH","emojis":[{"symbol":"🐶","name":"Dog"}, …]}
//! {"event":"done","code":0,"message":"…","list":[…],"trust":{"status":"verified"}}
//! ```
//!
//! After `emojis` the client answers `{"answer":"match"}` or `{"answer":"mismatch"}`;
//! closing the connection counts as a mismatch. `code` is the CLI's exit status: 0
//! done, 1 refused (a fingerprint or emoji mismatch, no identity, cancelled, timed
//! out, or for `status` not verified), 2 any other error. A request with another `v`
//! is answered with code 2 and changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::encryption::verification::Emoji;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::UnixListener;
use tracing::{info, instrument, warn};

use super::{Listed, Trust, TrustError, fingerprint, sas};
use crate::clock::Clock;
use crate::store::Store;
use crate::tasks::Tasks;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// File name of the socket in the state directory.
pub const SOCKET_FILE: &str = "admin.sock";
/// The longest line either side accepts.
pub const MAX_LINE: usize = 64 * 1024;

/// A request, the first line a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The operator, for the audit log (`operator:alice`).
    pub by: String,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Enrol by master-key fingerprint.
    Fingerprint {
        /// The person.
        user: String,
        /// Their master key as they read it out.
        fingerprint: String,
    },
    /// Enrol by emoji comparison.
    Sas {
        /// The person.
        user: String,
        /// Only this device of theirs.
        device: Option<String>,
        /// How long the whole comparison may take.
        timeout_secs: u64,
    },
    /// Every enrolment and revocation, with each person's standing now.
    List,
    /// Revoke an enrolment.
    Revoke {
        /// The person.
        user: String,
        /// Why, in the operator's words.
        reason: Option<String>,
    },
    /// One person's standing.
    Status {
        /// The person.
        user: String,
    },
    /// A consistent snapshot of the state directory for `cordon backup`
    /// ([`crate::store::backup`]), written into a new owner-only directory inside it;
    /// `done`'s message is that directory, which the client packs and removes.
    Snapshot,
}

/// A line from the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Reply {
    /// How things stand.
    Progress {
        /// For the operator.
        message: String,
    },
    /// The emojis to compare; answer with [`Answer`].
    Emojis {
        /// The person's device in the comparison.
        device: String,
        /// The seven emojis, in order.
        emojis: Vec<ShownEmoji>,
    },
    /// The last line.
    Done {
        /// The exit status: 0 done, 1 refused, 2 error.
        code: u8,
        /// One line for the operator.
        message: String,
        /// For `list`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list: Option<Vec<Listed>>,
        /// For `status`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trust: Option<Trust>,
    },
}

impl Reply {
    fn done(code: u8, message: impl Into<String>) -> Self {
        Reply::Done {
            code,
            message: message.into(),
            list: None,
            trust: None,
        }
    }
}

/// One emoji of the comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownEmoji {
    /// The emoji itself.
    pub symbol: String,
    /// Its English name, as every client shows it.
    pub name: String,
}

/// The operator's answer to [`Reply::Emojis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    /// The emojis match.
    Match,
    /// They do not.
    Mismatch,
}

/// Exit status: done.
pub const CODE_OK: u8 = 0;
/// Exit status: refused (mismatch, no identity, cancelled, not verified).
pub const CODE_REFUSED: u8 = 1;
/// Exit status: any other error.
pub const CODE_ERROR: u8 = 2;

/// Called with the person after a successful enrolment or revocation.
pub type PersonHook = Arc<dyn Fn(OwnedUserId) + Send + Sync>;

/// What the server runs requests with: the bot's own client and store.
pub struct AdminContext {
    /// The bot's state directory (where `snapshot` writes).
    pub state_dir: PathBuf,
    /// The bot's client.
    pub client: Client,
    /// The bot's store.
    pub store: Arc<Store>,
    /// The clock for audit times.
    pub clock: Arc<dyn Clock>,
    /// Called after an enrolment succeeded: the running bot lets the person into the
    /// rooms they are pending for, or that the guard removed them from.
    pub on_enrolled: Option<PersonHook>,
    /// Called after a revocation: the running bot takes the person out of every open
    /// incident at once.
    pub on_revoked: Option<PersonHook>,
}

/// Why the admin socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Binding or securing the socket failed.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The listening admin socket of a running bot. It stops, ending open connections and
/// removing the socket file, when the [`Tasks`] it was bound on stop.
pub struct AdminSocket {
    path: PathBuf,
}

impl AdminSocket {
    /// Binds `admin.sock` in `state_dir` (replacing a stale file: the caller holds the
    /// state directory's lock) and serves connections from this uid with `ctx`, on
    /// `tasks`.
    pub fn bind(
        state_dir: &Path,
        ctx: Arc<AdminContext>,
        tasks: &Tasks,
    ) -> Result<Self, AdminError> {
        let path = state_dir.join(SOCKET_FILE);
        let io = |source: std::io::Error| AdminError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&path) {
            Ok(()) => info!("replaced a stale admin socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(&path).map_err(io)?;
        let own_uid = {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            // The socket file is ours: its owner is this process's effective uid.
            std::fs::metadata(&path).map_err(io)?.uid()
        };
        tasks.spawn_detached(accept_loop(
            listener,
            path.clone(),
            own_uid,
            ctx,
            tasks.clone(),
        ));
        info!(path = %path.display(), "admin socket listening");
        Ok(Self { path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Accepts connections until the tasks stop, then removes the socket file. Each
/// connection runs on the tasks too, and ends when they stop.
async fn accept_loop(
    listener: UnixListener,
    path: PathBuf,
    own_uid: u32,
    ctx: Arc<AdminContext>,
    tasks: Tasks,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let peer = stream.peer_cred().map(|c| c.uid());
                    match peer {
                        Ok(uid) if uid == own_uid => {
                            let ctx = ctx.clone();
                            let stop = tasks.stop_token();
                            tasks.spawn_detached(async move {
                                tokio::select! {
                                    served = serve(&ctx, stream) => if let Err(e) = served {
                                        warn!(error = %e, "admin socket: connection failed");
                                    },
                                    () = stop.cancelled() => {}
                                }
                            });
                        }
                        Ok(uid) => warn!(uid, "admin socket: refused a connection from another user"),
                        Err(e) => warn!(error = %e, "admin socket: no peer credentials; refused"),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            () = tasks.stopping() => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

/// Serves one connection: reads a request, runs it with `ctx`, and writes the replies.
/// The running bot calls it for each socket connection; the offline CLI over an
/// in-memory pipe.
#[instrument(skip_all)]
pub async fn serve<S>(ctx: &AdminContext, stream: S) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (read, write) = tokio::io::split(stream);
    let mut conn = Conn {
        reader: BufReader::new(read),
        writer: write,
    };
    let Some(line) = read_line(&mut conn.reader).await? else {
        return Ok(());
    };
    let reply = match parse_request(&line) {
        Ok(request) => handle(ctx, request, &mut conn).await,
        Err(reply) => reply,
    };
    conn.send(&reply).await?;
    conn.writer.shutdown().await
}

fn parse_request(line: &str) -> Result<Request, Reply> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Reply::done(CODE_ERROR, format!("not a cordon admin request: {e}")))?;
    let v = value.get("v").and_then(|v| v.as_u64());
    if v != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(Reply::done(
            CODE_ERROR,
            format!(
                "this cordon speaks admin protocol version {PROTOCOL_VERSION}, the request \
                 has {}; use the cordon binary that runs the bot",
                v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
            ),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| Reply::done(CODE_ERROR, format!("not a cordon admin request: {e}")))
}

fn user_arg(user: &str) -> Result<OwnedUserId, Reply> {
    crate::input::config::parse_user_id(user).map_err(|why| {
        Reply::done(
            CODE_ERROR,
            format!("`{user}` is not a Matrix user id: {why}"),
        )
    })
}

/// The exit status for a failed enrolment or check.
fn code_for(e: &TrustError) -> u8 {
    match e {
        TrustError::Mismatch { .. } | TrustError::NoIdentity { .. } | TrustError::Cancelled(_) => {
            CODE_REFUSED
        }
        TrustError::BadFingerprint(_)
        | TrustError::OwnAccount(_)
        | TrustError::Store(_)
        | TrustError::Matrix { .. } => CODE_ERROR,
    }
}

async fn handle<R, W>(ctx: &AdminContext, request: Request, conn: &mut Conn<R, W>) -> Reply
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin,
{
    let by = request.by.as_str();
    match request.op {
        Op::Fingerprint { user, fingerprint } => {
            let user = match user_arg(&user) {
                Ok(u) => u,
                Err(reply) => return reply,
            };
            let result = fingerprint::verify(
                &ctx.client,
                &ctx.store,
                &user,
                &fingerprint,
                by,
                ctx.clock.now(),
            )
            .await;
            enrolled(ctx, &user, result)
        }
        Op::Sas {
            user,
            device,
            timeout_secs,
        } => {
            let user = match user_arg(&user) {
                Ok(u) => u,
                Err(reply) => return reply,
            };
            let options = sas::SasOptions {
                device: device.map(OwnedDeviceId::from),
                timeout: Duration::from_secs(timeout_secs.max(1)),
            };
            let result = sas::verify(
                &ctx.client,
                &ctx.store,
                &user,
                &options,
                by,
                ctx.clock.as_ref(),
                conn,
            )
            .await;
            enrolled(ctx, &user, result)
        }
        Op::Snapshot => {
            // Audited before it is taken, so that the backup holds the record of its
            // own making: a restored audit log ends with it.
            if let Err(e) = ctx.store.audit(
                by,
                "backup.snapshot",
                None,
                json!({ "bot": "running" }),
                ctx.clock.now(),
            ) {
                return Reply::done(CODE_ERROR, format!("auditing the snapshot: {e}"));
            }
            let store = ctx.store.clone();
            let state_dir = ctx.state_dir.clone();
            let taken = tokio::task::spawn_blocking(move || {
                crate::store::backup::snapshot(&store, &state_dir)
            })
            .await;
            match taken {
                Ok(Ok(snapshot)) => {
                    info!(
                        by,
                        files = snapshot.files.len(),
                        "took a snapshot for a backup"
                    );
                    Reply::done(CODE_OK, snapshot.dir.display().to_string())
                }
                Ok(Err(e)) => Reply::done(CODE_ERROR, format!("taking the snapshot: {e}")),
                Err(e) => Reply::done(CODE_ERROR, format!("taking the snapshot: {e}")),
            }
        }
        Op::List => match super::list(&ctx.client, &ctx.store).await {
            Ok(list) => {
                let revoked = list.iter().filter(|l| !l.enrolment.is_current()).count();
                if let Err(e) = ctx.store.audit(
                    by,
                    "identity.listed",
                    None,
                    json!({ "enrolments": list.len(), "revoked": revoked }),
                    ctx.clock.now(),
                ) {
                    return Reply::done(CODE_ERROR, format!("store: {e}"));
                }
                Reply::Done {
                    code: CODE_OK,
                    message: format!("{} enrolment record(s), {revoked} revoked", list.len()),
                    list: Some(list),
                    trust: None,
                }
            }
            Err(e) => Reply::done(code_for(&e), e.to_string()),
        },
        Op::Revoke { user, reason } => {
            let user = match user_arg(&user) {
                Ok(u) => u,
                Err(reply) => return reply,
            };
            match super::revoke(&ctx.client, &ctx.store, &user, by, reason, ctx.clock.now()).await {
                Ok(_) => {
                    if let Some(hook) = &ctx.on_revoked {
                        hook(user.clone());
                    }
                    Reply::done(
                        CODE_OK,
                        format!(
                            "{user}'s enrolment is revoked: cordon no longer treats them as \
                         verified, and their devices get no room keys from cordon"
                        ),
                    )
                }
                Err(e) => Reply::done(code_for(&e), e.to_string()),
            }
        }
        Op::Status { user } => {
            let user = match user_arg(&user) {
                Ok(u) => u,
                Err(reply) => return reply,
            };
            let trust = super::status(&ctx.client, &ctx.store, &user, true).await;
            if let Err(e) = ctx.store.audit(
                by,
                "identity.checked",
                None,
                json!({ "user": user, "trust": trust }),
                ctx.clock.now(),
            ) {
                return Reply::done(CODE_ERROR, format!("store: {e}"));
            }
            Reply::Done {
                code: if trust.is_verified() {
                    CODE_OK
                } else {
                    CODE_REFUSED
                },
                message: format!("{user}: {}", trust.reason()),
                list: None,
                trust: Some(trust),
            }
        }
    }
}

fn enrolled(
    ctx: &AdminContext,
    user: &UserId,
    result: Result<crate::store::Enrolment, TrustError>,
) -> Reply {
    match result {
        Ok(enrolment) => {
            if let Some(hook) = &ctx.on_enrolled {
                hook(user.to_owned());
            }
            Reply::done(
                CODE_OK,
                format!(
                    "{user} is enrolled ({}; master key {})",
                    enrolment.method,
                    enrolment.master_key.as_deref().unwrap_or("unknown")
                ),
            )
        }
        Err(e) => Reply::done(code_for(&e), e.to_string()),
    }
}

/// One connection, as the SAS flow's operator.
struct Conn<R, W> {
    reader: BufReader<R>,
    writer: W,
}

impl<R, W> Conn<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin,
{
    async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        write_line(&mut self.writer, reply).await
    }
}

impl<R, W> sas::Operator for Conn<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin,
{
    async fn progress(&mut self, message: String) {
        let _ = self.send(&Reply::Progress { message }).await;
    }

    async fn compare(&mut self, device: &str, emojis: &[Emoji]) -> bool {
        let shown = emojis
            .iter()
            .map(|e| ShownEmoji {
                symbol: e.symbol.to_owned(),
                name: e.description.to_owned(),
            })
            .collect();
        let sent = self
            .send(&Reply::Emojis {
                device: device.to_owned(),
                emojis: shown,
            })
            .await;
        if sent.is_err() {
            return false;
        }
        match read_line(&mut self.reader).await {
            Ok(Some(line)) => matches!(serde_json::from_str(&line), Ok(Answer::Match)),
            _ => false,
        }
    }
}

/// Writes one JSON line and flushes.
pub async fn write_line<W, T>(writer: &mut W, value: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.flush().await
}

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes; `None` at the end
/// of the stream.
pub async fn read_line<R>(reader: &mut R) -> std::io::Result<Option<String>>
where
    R: AsyncBufRead + Unpin,
{
    let mut buf = Vec::new();
    let mut limited = (&mut *reader).take(MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "admin protocol line too long",
        ));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests;
