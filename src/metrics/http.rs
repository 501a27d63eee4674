//! The `/metrics` and `/healthz` endpoints, on [`crate::http`]'s small server. They
//! answer `GET` and `HEAD` for those two paths and nothing else.
//!
//! `/healthz` answers 503 `starting` until the bot [`Server::attach`]es its [`Probe`],
//! then 200 `ok` when sync is live and the store is writable, else 503 `failing` naming
//! the check that failed, as JSON:
//! `{"status":"ok","checks":{"sync":{"ok":true,"detail":"…"},"store":{…}}}`, with the
//! prevention module's state beside the checks (`"prevention":"on"`, `"off"`, or
//! `"not configured"`), which does not decide the status.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::Snapshot;
use crate::http::{Answer, Listener, Router, TEXT, reply};
use crate::tasks::Tasks;
use tokio_util::sync::CancellationToken;

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
    /// Whether the homeserver asks cordon before changes in its rooms: `None` when
    /// prevention is not configured. Reported, not a check: the guard still undoes what
    /// gets through.
    pub prevention: Option<bool>,
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
    listener: Listener,
    probe: Arc<OnceLock<Arc<dyn Probe>>>,
}

/// Routes `/metrics` and `/healthz` with the probe, once attached.
struct Endpoints {
    probe: Arc<OnceLock<Arc<dyn Probe>>>,
}

impl Router for Endpoints {
    fn route(&self, request: Request<Incoming>) -> Answer {
        let response = respond(&request, self.probe.get().map(|p| &**p));
        Box::pin(async move { response })
    }
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
    /// Listens on `addr` and serves until dropped, on tasks of its own.
    pub async fn bind(addr: SocketAddr) -> Result<Self, BindError> {
        Self::bind_until(addr, &Tasks::new(CancellationToken::new())).await
    }

    /// Listens on `addr` and serves, on `tasks`, until they stop or the server is
    /// dropped.
    pub async fn bind_until(addr: SocketAddr, tasks: &Tasks) -> Result<Self, BindError> {
        let probe: Arc<OnceLock<Arc<dyn Probe>>> = Arc::new(OnceLock::new());
        let router = Arc::new(Endpoints {
            probe: probe.clone(),
        });
        let listener = Listener::bind(addr, tasks, router, "metrics")
            .await
            .map_err(|source| BindError { addr, source })?;
        Ok(Self { listener, probe })
    }

    /// The address it listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Hands the endpoints the bot's probe; until then `/healthz` says `starting`.
    pub fn attach(&self, probe: Arc<dyn Probe>) {
        let _ = self.probe.set(probe);
    }

    /// Stops listening, and returns once the answers under way are written (each is
    /// bounded by the read and write timeouts).
    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }
}

/// The answer to one request. hyper leaves the body of a `HEAD` answer out and keeps
/// its `Content-Length`.
fn respond(request: &Request<Incoming>, probe: Option<&dyn Probe>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD are served\n".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let snapshot = probe.and_then(Probe::snapshot);
            reply(
                StatusCode::OK,
                super::CONTENT_TYPE,
                super::global().render(snapshot.as_ref()),
            )
        }
        "/healthz" => {
            let (status, body) = match probe.map(Probe::health) {
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "status": "starting" }),
                ),
                Some(health) => {
                    let check = |c: &Check| json!({ "ok": c.ok, "detail": c.detail });
                    let (status, word) = if health.ok() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "failing")
                    };
                    (
                        status,
                        json!({
                            "status": word,
                            "checks": { "sync": check(&health.sync), "store": check(&health.store) },
                            "prevention": match health.prevention {
                                Some(true) => "on",
                                Some(false) => "off",
                                None => "not configured",
                            },
                        }),
                    )
                }
            };
            reply(status, "application/json", format!("{body}\n"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics or /healthz\n".into(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::http::{MAX_CONNECTIONS, MAX_HEAD, MAX_HEADERS, READ_TIMEOUT};

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
            prevention: None,
        })));
        let r = get(s.local_addr(), "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains("\"status\":\"ok\""), "{r}");

        let failing = server().await;
        failing.attach(Arc::new(Fixed(Health {
            sync: check(true),
            store: check(false),
            prevention: None,
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
            prevention: None,
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
    async fn too_many_headers_are_refused() {
        let s = server().await;
        let mut raw = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend(format!("X-{i}: y\r\n").bytes());
        }
        raw.extend(b"\r\n");
        let r = request(s.local_addr(), &raw).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        let r = get(s.local_addr(), "/healthz").await;
        assert!(r.contains("Cache-Control: no-store"), "{r}");
        assert!(r.contains("Connection: close"), "{r}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_midway_is_cut_off() {
        let s = server().await;
        let mut slow = TcpStream::connect(s.local_addr()).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        slow.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(
            out.ends_with("\r\n\r\nrequest head not received in time\n"),
            "{out}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connections_beyond_the_cap_wait_their_turn() {
        let s = server().await;
        let a = s.local_addr();
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(a).await.unwrap());
        }
        let started = tokio::time::Instant::now();
        let r = get(a, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(
            started.elapsed() >= READ_TIMEOUT,
            "answered after {:?}, before a slot was free",
            started.elapsed()
        );
        for mut c in idle {
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        }
    }

    #[tokio::test]
    async fn the_token_stops_the_listener() {
        let cancel = CancellationToken::new();
        let s = Server::bind_until("127.0.0.1:0".parse().unwrap(), &Tasks::new(cancel.clone()))
            .await
            .unwrap();
        let a = s.local_addr();
        assert!(get(a, "/healthz").await.starts_with("HTTP/1.1 503"));
        cancel.cancel();
        let refused = async {
            while TcpStream::connect(a).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("still listening after the token was cancelled");
        s.shutdown().await;

        // Dropping a server stops it without cancelling the caller's token.
        let cancel = CancellationToken::new();
        let s = Server::bind_until("127.0.0.1:0".parse().unwrap(), &Tasks::new(cancel.clone()))
            .await
            .unwrap();
        let a = s.local_addr();
        drop(s);
        assert!(!cancel.is_cancelled());
        let refused = async {
            while TcpStream::connect(a).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("still listening after the server was dropped");
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_answer_under_way() {
        let s = server().await;
        let mut c = TcpStream::connect(s.local_addr()).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let stopping = tokio::spawn(s.shutdown());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stopping.is_finished(), "a connection is still open");
        c.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .unwrap()
            .unwrap();
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
