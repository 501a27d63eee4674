//! Prevention: the homeserver asks cordon before it lets any membership or state event
//! exist in cordon's rooms, so an injection is refused instead of undone.
//!
//! The Synapse module `cordon_synapse` (`synapse-module/`) puts every such event to the
//! listener here (`POST /_cordon/prevention/v1/check`, a bearer secret shared through
//! a file, loopback only); [`judge`] answers from cordon's records alone. A refusal
//! becomes the server's own 403, so the admin API call fails and the event never
//! exists; cordon audits it (`prevention.refused`) and tells the incident's control
//! room what was attempted and through which account. The answer goes out first: the
//! report never holds up the homeserver, and nothing here waits on a request cordon
//! itself has in flight (the homeserver asks about the events of cordon's own
//! `createRoom` while that call is open).
//!
//! cordon reads the module's status resource at start and every
//! [`STATUS_INTERVAL`]: `status`, `/metrics` and `/healthz` say whether prevention is
//! on, and the control rooms are told when it is off, and when it is back. The guard
//! stays as the backstop either way.

pub mod judge;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use matrix_sdk::ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{error, info, warn};

use super::chat::send_once;
use super::ctx::{ACTOR, AppError, Ctx, PreventionSeen};
use crate::domain::incident::{Incident, IncidentId};
use crate::http::{Answer, Listener, Router, TEXT, reply};
use crate::input::config::{Prevention, Secret};
use crate::matrix::rooms::{self, notice};
use crate::tasks::Tasks;
use judge::{Proposed, Records, Verdict};

/// The path the module's questions come to.
pub const CHECK_PATH: &str = "/_cordon/prevention/v1/check";
/// The largest question read.
const MAX_BODY: usize = 64 * 1024;
/// How long a question's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the module's status is read.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(15);
/// How long reading the status may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one control-room alert per room and claimed sender in this long (every
/// refusal is audited).
const ALERT_EVERY: Duration = Duration::from_secs(60);

/// The listener, bound before cordon logs in (a port already taken is a start-up
/// error); it refuses to judge until [`Gate::attach`] hands it the context.
pub struct Gate {
    listener: Listener,
    ctx: Arc<OnceLock<Weak<Ctx>>>,
}

impl Gate {
    /// Listens on the configured address, on `tasks`.
    pub async fn bind(config: &Prevention, tasks: &Tasks) -> Result<Self, AppError> {
        let secret = config.secret.read()?;
        let ctx: Arc<OnceLock<Weak<Ctx>>> = Arc::new(OnceLock::new());
        let router = Arc::new(Asking(Arc::new(Questions {
            ctx: ctx.clone(),
            secret,
            alerted: Mutex::new(HashMap::new()),
        })));
        let listener = Listener::bind(config.listen, tasks, router, "prevention")
            .await
            .map_err(|source| AppError::Io {
                path: format!("prevention.listen {}", config.listen).into(),
                source,
            })?;
        info!(
            "answering the prevention module on http://{}{CHECK_PATH}",
            listener.local_addr()
        );
        Ok(Self { listener, ctx })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Starts judging with `ctx`.
    pub fn attach(&self, ctx: &Arc<Ctx>) {
        let _ = self.ctx.set(Arc::downgrade(ctx));
    }
}

/// The module's question, as it sends it (`synapse-module/README.md`).
#[derive(Debug, Deserialize)]
struct Question {
    v: u32,
    room_id: String,
    incident: Value,
    room_key: Option<String>,
    event: Asked,
    #[serde(default)]
    replaces: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Asked {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    state_key: String,
    sender: String,
    #[serde(default)]
    content: Value,
}

struct Questions {
    ctx: Arc<OnceLock<Weak<Ctx>>>,
    secret: Secret,
    /// When each (room, sender) was last told about in its control room.
    alerted: Mutex<HashMap<(String, String), Instant>>,
}

/// The listener's router: each question answered on its own task.
struct Asking(Arc<Questions>);

impl Router for Asking {
    fn route(&self, request: Request<Incoming>) -> Answer {
        let questions = self.0.clone();
        Box::pin(async move { questions.answer(request).await })
    }
}

impl Questions {
    async fn answer(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.uri().path() != CHECK_PATH {
            return reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into());
        }
        if request.method() != Method::POST {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only POST is served\n".into(),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        if !self.authorised(&request) {
            warn!("a prevention question without the shared secret; refused");
            return reply(StatusCode::UNAUTHORIZED, TEXT, "wrong secret\n".into());
        }
        let body = Limited::new(request.into_body(), MAX_BODY).collect();
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, body).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => {
                return reply(StatusCode::BAD_REQUEST, TEXT, format!("bad body: {e}\n"));
            }
            Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, TEXT, "too slow\n".into()),
        };
        let question: Question = match serde_json::from_slice(&bytes) {
            Ok(q) => q,
            Err(e) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("not a question: {e}\n"),
                );
            }
        };
        if question.v != 1 {
            return reply(
                StatusCode::BAD_REQUEST,
                TEXT,
                format!("protocol version {} is not 1\n", question.v),
            );
        }
        // Until cordon is up, there is nobody to judge: the module fails closed.
        let Some(ctx) = self.ctx.get().and_then(Weak::upgrade) else {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "cordon is starting\n".into(),
            );
        };
        let (verdict, incident) = decide(&ctx, &question);
        let body = match &verdict {
            Verdict::Allow => json!({ "allow": true }),
            Verdict::Refuse(why) => json!({ "allow": false, "reason": why }),
        };
        if let Verdict::Refuse(why) = verdict {
            crate::metrics::global().prevented();
            warn!(
                room = question.room_id,
                event_type = question.event.event_type,
                state_key = question.event.state_key,
                sender = question.event.sender,
                reason = why,
                "prevented a change in an incident room"
            );
            let alert = self.should_alert(&question.room_id, &question.event.sender);
            let c = ctx.clone();
            ctx.spawn(async move { report(&c, incident.as_ref(), &question, &why, alert).await });
        }
        reply(StatusCode::OK, "application/json", body.to_string())
    }

    fn authorised(&self, request: &Request<Incoming>) -> bool {
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(given.as_bytes(), self.secret.expose().as_bytes())
    }

    fn should_alert(&self, room: &str, sender: &str) -> bool {
        let Ok(mut seen) = self.alerted.lock() else {
            return true;
        };
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < ALERT_EVERY);
        let key = (room.to_owned(), sender.to_owned());
        if seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, now);
        true
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Judges one question against the store. A store that cannot be read refuses (the
/// module fails closed too).
fn decide(ctx: &Ctx, q: &Question) -> (Verdict, Option<Incident>) {
    let refuse = |e: &dyn std::fmt::Display| {
        error!(error = %e, "store: reading the records a prevention question needs");
        Verdict::Refuse("cordon could not read its records".to_owned())
    };
    let incident = match q.incident.as_str().map(IncidentId::parse) {
        Some(Ok(id)) => match ctx.store.incident(&id) {
            Ok(found) => found,
            Err(e) => return (refuse(&e), None),
        },
        _ => None,
    };
    let room = match (&incident, &q.room_key) {
        (Some(i), Some(key)) => match ctx.store.room(&i.id, key) {
            Ok(found) => found,
            Err(e) => return (refuse(&e), incident),
        },
        _ => None,
    };
    let target = if q.event.event_type == "m.room.member" {
        match ctx.store.roster_entry(&q.room_id, &q.event.state_key) {
            Ok(found) => found,
            Err(e) => return (refuse(&e), incident),
        }
    } else {
        None
    };
    let verdict = judge::judge(
        &Records {
            me: ctx.user_id().as_str(),
            incident: incident.as_ref(),
            room: room.as_ref(),
            target: target.as_ref(),
        },
        &Proposed {
            room_id: &q.room_id,
            event_type: &q.event.event_type,
            state_key: &q.event.state_key,
            sender: &q.event.sender,
            content: &q.event.content,
            replaces: q.replaces.as_ref().filter(|v| !v.is_null()),
        },
    );
    (verdict, incident)
}

/// What was attempted, in words.
fn attempted(q: &Question) -> String {
    let e = &q.event;
    if e.event_type == "m.room.member" {
        let m = e
            .content
            .get("membership")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return match m {
            "invite" => format!("an invite of {}", e.state_key),
            "join" => format!("{} joining", e.state_key),
            "ban" => format!("a ban of {}", e.state_key),
            "leave" => format!("{} put out of the room", e.state_key),
            other => format!("membership {other:?} for {}", e.state_key),
        };
    }
    match e.event_type.as_str() {
        "m.room.power_levels" => "a change of who may do what (power levels)".to_owned(),
        "m.room.join_rules" => "a change of who may join (join rules)".to_owned(),
        "m.room.name" => "a new room name".to_owned(),
        "m.room.topic" => "a new topic".to_owned(),
        other if e.state_key.is_empty() => format!("a `{other}` state event"),
        other => format!("a `{other}` state event ({})", e.state_key),
    }
}

/// Audits a refusal and, unless this room and sender were just told about, tells the
/// incident's control room (every control room when the incident is unknown).
async fn report(ctx: &Ctx, incident: Option<&Incident>, q: &Question, why: &str, alert: bool) {
    let what = attempted(q);
    let details = json!({
        "room": q.room_id, "room_key": q.room_key, "event_id": q.event.event_id,
        "type": q.event.event_type, "state_key": q.event.state_key,
        "claimed_sender": q.event.sender, "attempted": what, "reason": why,
    });
    let id = incident.map(|i| &i.id);
    if let Err(e) = ctx
        .store
        .audit(ACTOR, "prevention.refused", id, details, ctx.now())
    {
        error!(error = %e, "store: auditing a prevented change");
    }
    if !alert {
        return;
    }
    let name = incident
        .zip(q.room_key.as_deref())
        .and_then(|(i, key)| ctx.store.room(&i.id, key).ok().flatten())
        .and_then(|r| {
            r.desired
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| q.room_id.clone());
    let about = incident.map_or_else(String::new, |i| format!(" of {}", i.id));
    let through = if q.event.sender == ctx.user_id().as_str() {
        format!(
            "sent in cordon's own name ({}), which cordon did not intend: Synapse's admin \
             API forges events that way, and so does anyone holding cordon's credentials",
            q.event.sender
        )
    } else {
        format!("attempted through the account {}", q.event.sender)
    };
    let body = format!(
        "PREVENTED: the homeserver refused {what} in {name}{about}, {through}: {why}. \
         Nothing changed in the room.\nA server admin, or someone with a server admin's \
         or cordon's credentials, tried this: tell the server operators now. Further \
         attempts through this account in this room are audited without another alert \
         for a minute."
    );
    let key = format!(
        "prevention/{}/{}",
        q.room_id,
        q.event
            .event_id
            .clone()
            .unwrap_or_else(|| ctx.now().timestamp_millis().to_string())
    );
    let (targets, mention): (Vec<String>, Vec<OwnedUserId>) = match incident {
        Some(i) => (
            vec![i.control_room.clone()],
            OwnedUserId::try_from(i.commander.as_str())
                .ok()
                .into_iter()
                .collect(),
        ),
        None => (
            ctx.control_rooms()
                .iter()
                .map(ToString::to_string)
                .collect(),
            Vec::new(),
        ),
    };
    post(ctx, &targets, &key, id, &body, &mention).await;
}

/// Posts `body` once in each of `room_ids` (those cordon is in), mentioning `mention`,
/// under `key` and the room's id; a send that fails is logged.
async fn post<R: AsRef<str>>(
    ctx: &Ctx,
    room_ids: &[R],
    key: &str,
    incident: Option<&IncidentId>,
    body: &str,
    mention: &[OwnedUserId],
) {
    for room_id in room_ids {
        let room_id = room_id.as_ref();
        let Some(room) = rooms::joined(&ctx.client, room_id) else {
            continue;
        };
        let content = notice(body, mention);
        if let Err(e) = send_once(ctx, &room, &format!("{key}/{room_id}"), incident, content).await
        {
            warn!(error = %e, room = room_id, "could not post about prevention");
        }
    }
}

/// Reads the module's status now and every [`STATUS_INTERVAL`], on the bot's tasks;
/// tells the control rooms when prevention goes off, and when it is back.
pub fn watch(ctx: &Arc<Ctx>, config: &Prevention, listening: SocketAddr) {
    let ctx = ctx.clone();
    let url = config.status_url.clone();
    ctx.clone().spawn(async move {
        let http = match reqwest::Client::builder().timeout(STATUS_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "prevention: no HTTP client for the module's status");
                return;
            }
        };
        let mut tick = tokio::time::interval(STATUS_INTERVAL);
        let mut first = true;
        loop {
            tokio::select! {
                () = ctx.tasks.stopping() => return,
                _ = tick.tick() => {}
            }
            let seen = match read_status(&http, &url, listening).await {
                Ok(seen) => seen,
                // The homeserver is not answering at all: nothing changes in any room
                // meanwhile, and what comes back is judged when it does.
                Err(unreachable) if !first => {
                    warn!(
                        detail = unreachable.detail,
                        "prevention: the homeserver did not answer"
                    );
                    continue;
                }
                Err(unreachable) => unreachable,
            };
            let before = ctx
                .prevention
                .lock()
                .ok()
                .and_then(|mut p| p.replace(seen.clone()));
            crate::metrics::global().prevention(Some(seen.on));
            // What the start-up placeholder said is not a state prevention was in.
            let was_on = before.filter(|_| !first).map(|b| b.on);
            if first || was_on != Some(seen.on) {
                changed(&ctx, was_on, &seen, first).await;
            }
            first = false;
        }
    });
}

/// What the status resource says, judged against where cordon listens; `Err` (off, with
/// why) when the homeserver did not answer at all.
async fn read_status(
    http: &reqwest::Client,
    url: &url::Url,
    listening: SocketAddr,
) -> Result<PreventionSeen, PreventionSeen> {
    let off = |detail: String| PreventionSeen { on: false, detail };
    let response = match http.get(url.clone()).send().await {
        Ok(r) => r,
        Err(e) => {
            return Err(off(format!(
                "the module's status at {url} did not answer ({e})"
            )));
        }
    };
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(off(format!(
            "the homeserver has no cordon_synapse module ({url} is not found)"
        )));
    }
    if !response.status().is_success() {
        return Ok(off(format!(
            "the module's status at {url} said {}",
            response.status()
        )));
    }
    let status: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => {
            return Ok(off(format!(
                "the module's status at {url} is not JSON ({e})"
            )));
        }
    };
    if status.get("module").and_then(Value::as_str) != Some("cordon_synapse") {
        return Ok(off(format!("{url} is not cordon_synapse's status")));
    }
    let endpoint = status.get("endpoint").and_then(Value::as_str).unwrap_or("");
    if !asks_here(endpoint, listening) {
        return Ok(off(format!(
            "the module asks {endpoint}, but cordon listens on {listening}{CHECK_PATH}"
        )));
    }
    let fail_open = status.get("fail_open").and_then(Value::as_bool) == Some(true);
    Ok(PreventionSeen {
        on: true,
        detail: format!(
            "cordon_synapse {} asks cordon first ({})",
            status.get("version").and_then(Value::as_str).unwrap_or("?"),
            if fail_open {
                "fail open: while cordon does not answer, changes go through"
            } else {
                "fail closed: while cordon does not answer, changes are refused"
            }
        ),
    })
}

/// Whether the module's endpoint is this listener (a loopback host, this port, the
/// check path).
fn asks_here(endpoint: &str, listening: SocketAddr) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    loopback && url.port_or_known_default() == Some(listening.port()) && url.path() == CHECK_PATH
}

async fn changed(ctx: &Ctx, was_on: Option<bool>, seen: &PreventionSeen, first: bool) {
    let action = if seen.on {
        "prevention.on"
    } else {
        "prevention.off"
    };
    if seen.on {
        info!(detail = seen.detail, "prevention is on");
    } else {
        warn!(detail = seen.detail, "prevention is OFF");
    }
    if let Err(e) = ctx.store.audit(
        ACTOR,
        action,
        None,
        json!({ "detail": seen.detail, "at_start": first }),
        ctx.now(),
    ) {
        error!(error = %e, "store: auditing prevention's state");
    }
    // Told: off (at start, or after being on), and on again after being off.
    let body = match (seen.on, was_on) {
        (false, _) => format!(
            "PREVENTION OFF: {}.\nThe homeserver no longer asks cordon before members or \
             settings change in incident rooms. The guard still undoes what it finds, \
             after the fact. Server operators: check the cordon_synapse module in Synapse's \
             config and restart Synapse.",
            seen.detail
        ),
        (true, Some(false)) => format!("Prevention is on again: {}.", seen.detail),
        (true, _) => return,
    };
    let key = format!("prevention/state/{}", ctx.now().timestamp_millis());
    let operators: Vec<OwnedUserId> = ctx.config.operators.iter().cloned().collect();
    post(ctx, &ctx.control_rooms(), &key, None, &body, &operators).await;
}

/// The status line for `!cordon status`, when prevention is configured.
pub(crate) fn status_line(ctx: &Ctx) -> Option<String> {
    let seen = ctx.prevention_seen()?;
    Some(if seen.on {
        format!("Prevention: on. {}.", seen.detail)
    } else {
        format!(
            "Prevention: OFF. {}. The guard still undoes intrusions after the fact.",
            seen.detail
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn the_module_asks_here_only_at_this_port_and_path_on_loopback() {
        let here: SocketAddr = "127.0.0.1:9479".parse().unwrap();
        assert!(asks_here(
            "http://127.0.0.1:9479/_cordon/prevention/v1/check",
            here
        ));
        assert!(asks_here(
            "http://localhost:9479/_cordon/prevention/v1/check",
            here
        ));
        assert!(!asks_here(
            "http://127.0.0.1:9480/_cordon/prevention/v1/check",
            here
        ));
        assert!(!asks_here(
            "http://10.0.0.5:9479/_cordon/prevention/v1/check",
            here
        ));
        assert!(!asks_here("http://127.0.0.1:9479/elsewhere", here));
        assert!(!asks_here("not a url", here));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn what_was_attempted_is_said_in_words() {
        let q = |t: &str, k: &str, content: Value| Question {
            v: 1,
            room_id: "!r:hs".into(),
            incident: json!("mc-4k7p"),
            room_key: Some("command".into()),
            event: Asked {
                event_id: Some("$e".into()),
                event_type: t.into(),
                state_key: k.into(),
                sender: "@admin:hs".into(),
                content,
            },
            replaces: None,
        };
        assert_eq!(
            attempted(&q(
                "m.room.member",
                "@eve:hs",
                json!({ "membership": "invite" })
            )),
            "an invite of @eve:hs"
        );
        assert_eq!(
            attempted(&q("m.room.power_levels", "", json!({}))),
            "a change of who may do what (power levels)"
        );
        assert_eq!(
            attempted(&q("m.widget", "w1", json!({}))),
            "a `m.widget` state event (w1)"
        );
    }
}
