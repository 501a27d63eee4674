//! The `/metrics` and `/healthz` endpoints: a deliberately small HTTP/1.1 server on a
//! tokio listener, the request head parsed with `httparse`. It answers `GET` and `HEAD`
//! for those two paths and nothing else, closes each connection after one answer, and
//! bounds what a client can make it hold: an 8 KiB head, 5 s to send it, and 16
//! connections at once.
//!
//! `/healthz` answers 503 `starting` until the bot [`Server::attach`]es its [`Probe`],
//! then 200 `ok` when sync is live and the store is writable, else 503 `failing` naming
//! the check that failed, as JSON:
//! `{"status":"ok","checks":{"sync":{"ok":true,"detail":"…"},"store":{…}}}`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::Snapshot;

/// The largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;

/// One health check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// What was found, for the operator (`last sync 4 s ago`).
    pub detail: String,
}

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Whether the sync with the homeserver is live.
    pub sync: Check,
    /// Whether the store can be written.
    pub store: Check,
}

impl Health {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.sync.ok && self.store.ok
    }
}

/// What the running bot tells the endpoints.
pub trait Probe: Send + Sync {
    /// The health checks, now.
    fn health(&self) -> Health;
    /// The store's gauges, now; `None` when the store cannot be read.
    fn snapshot(&self) -> Option<Snapshot>;
}

/// The listening endpoints.
pub struct Server {
    addr: SocketAddr,
    probe: Arc<OnceLock<Arc<dyn Probe>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Why the endpoints could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "metrics.listen {addr}: {source}; choose another address or port, or set \
     `metrics: {{ enabled: false }}` in the config"
)]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why binding failed.
    pub source: std::io::Error,
}

impl Server {
    /// Listens on `addr` and serves until dropped.
    pub async fn bind(addr: SocketAddr) -> Result<Self, BindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| BindError { addr, source })?;
        let probe: Arc<OnceLock<Arc<dyn Probe>>> = Arc::new(OnceLock::new());
        let task = tokio::spawn(serve(listener, probe.clone()));
        Ok(Self {
            addr: local,
            probe,
            task,
        })
    }

    /// The address it listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands the endpoints the bot's probe; until then `/healthz` says `starting`.
    pub fn attach(&self, probe: Arc<dyn Probe>) {
        let _ = self.probe.set(probe);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, probe: Arc<OnceLock<Arc<dyn Probe>>>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let probe = probe.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, probe.get().cloned()).await {
                debug!(%peer, error = %e, "metrics endpoint: connection ended");
            }
            drop(permit);
        });
    }
}

/// A response, before it is written.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            allow: false,
        }
    }
}

async fn answer(mut stream: TcpStream, probe: Option<Arc<dyn Probe>>) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Io(e))) => return Err(e),
        Ok(Err(HeadError::TooLarge)) => {
            let r = Response::text(
                "431 Request Header Fields Too Large",
                "request head too large",
            );
            return write(&mut stream, r, false).await;
        }
        Ok(Err(HeadError::Malformed)) => {
            let r = Response::text("400 Bad Request", "malformed request");
            return write(&mut stream, r, false).await;
        }
        Err(_) => {
            let r = Response::text("408 Request Timeout", "request head not received in time");
            return write(&mut stream, r, false).await;
        }
    };
    let (method, path) = head;
    let head_only = method == "HEAD";
    let response = if method != "GET" && method != "HEAD" {
        Response {
            allow: true,
            ..Response::text("405 Method Not Allowed", "only GET and HEAD are served")
        }
    } else {
        route(&path, probe.as_deref())
    };
    write(&mut stream, response, head_only).await
}

fn route(path: &str, probe: Option<&dyn Probe>) -> Response {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    match path {
        "/metrics" => {
            let snapshot = probe.and_then(Probe::snapshot);
            Response {
                status: "200 OK",
                content_type: super::CONTENT_TYPE,
                body: super::global().render(snapshot.as_ref()),
                allow: false,
            }
        }
        "/healthz" => {
            let (status, body) = match probe.map(Probe::health) {
                None => ("503 Service Unavailable", json!({ "status": "starting" })),
                Some(health) => {
                    let check = |c: &Check| json!({ "ok": c.ok, "detail": c.detail });
                    let (status, word) = if health.ok() {
                        ("200 OK", "ok")
                    } else {
                        ("503 Service Unavailable", "failing")
                    };
                    (
                        status,
                        json!({
                            "status": word,
                            "checks": { "sync": check(&health.sync), "store": check(&health.store) },
                        }),
                    )
                }
            };
            Response {
                status,
                content_type: "application/json",
                body: format!("{body}\n"),
                allow: false,
            }
        }
        _ => Response::text("404 Not Found", "not found; try /metrics or /healthz"),
    }
}

enum HeadError {
    Io(std::io::Error),
    TooLarge,
    Malformed,
}

/// Reads until the end of the request head; returns its method and path.
async fn read_head(stream: &mut TcpStream) -> Result<(String, String), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Malformed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let (Some(method), Some(path)) = (request.method, request.path) else {
                    return Err(HeadError::Malformed);
                };
                return Ok((method.to_owned(), path.to_owned()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

async fn write(stream: &mut TcpStream, r: Response, head_only: bool) -> std::io::Result<()> {
    let allow = if r.allow { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         {allow}Connection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(r.body.as_bytes());
    }
    let written = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, written)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    struct Fixed(Health);

    impl Probe for Fixed {
        fn health(&self) -> Health {
            self.0.clone()
        }
        fn snapshot(&self) -> Option<Snapshot> {
            Some(Snapshot::default())
        }
    }

    fn check(ok: bool) -> Check {
        Check {
            ok,
            detail: if ok { "fine" } else { "broken" }.into(),
        }
    }

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
    }

    async fn server() -> Server {
        Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn healthz_says_starting_then_ok_then_failing() {
        let s = server().await;
        let r = get(s.local_addr(), "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.ends_with("{\"status\":\"starting\"}\n"), "{r}");
        s.attach(Arc::new(Fixed(Health {
            sync: check(true),
            store: check(true),
        })));
        let r = get(s.local_addr(), "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains("\"status\":\"ok\""), "{r}");

        let failing = server().await;
        failing.attach(Arc::new(Fixed(Health {
            sync: check(true),
            store: check(false),
        })));
        let r = get(failing.local_addr(), "/healthz?verbose").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["status"], "failing", "{r}");
        assert_eq!(body["checks"]["store"]["ok"], false, "{r}");
        assert_eq!(body["checks"]["store"]["detail"], "broken", "{r}");
        assert_eq!(body["checks"]["sync"]["ok"], true, "{r}");
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text_with_the_store_gauges() {
        let s = server().await;
        let r = get(s.local_addr(), "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(
            r.contains("Content-Type: application/openmetrics-text"),
            "{r}"
        );
        assert!(r.contains("cordon_build_info"), "{r}");
        assert!(!r.contains("cordon_invites_pending"), "no store yet: {r}");
        assert!(r.ends_with("# EOF\n"), "{r}");
        s.attach(Arc::new(Fixed(Health {
            sync: check(true),
            store: check(true),
        })));
        let r = get(s.local_addr(), "/metrics").await;
        assert!(r.lines().any(|l| l == "cordon_invites_pending 0"), "{r}");
    }

    #[tokio::test]
    async fn anything_else_is_refused_plainly() {
        let s = server().await;
        let a = s.local_addr();
        let r = request(
            a,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        assert!(r.contains("Allow: GET, HEAD"), "{r}");
        let r = get(a, "/admin").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = request(a, b"\x16\x03\x01 not http\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
        let r = request(a, &huge).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        let r = request(a, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "HEAD has no body: {r}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_is_cut_off() {
        let s = server().await;
        let mut idle = TcpStream::connect(s.local_addr()).await.unwrap();
        let mut out = String::new();
        // The paused clock jumps to the read timeout once everything is idle.
        idle.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_clear_error() {
        let s = server().await;
        let Err(e) = Server::bind(s.local_addr()).await else {
            panic!("bound twice");
        };
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("metrics.listen {}: ", s.local_addr())),
            "{text}"
        );
        assert!(text.contains("metrics: { enabled: false }"), "{text}");
    }
}
