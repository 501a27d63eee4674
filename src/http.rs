//! The small HTTP/1.1 server under cordon's listeners (`/metrics` and `/healthz`, and
//! the prevention module's questions): hyper's `http1` connection on a tokio listener.
//! It closes each connection after one answer, and bounds what a client can make it
//! hold: an 8 KiB head of at most 32 headers (else 431), 5 s to send it (else 408), 10 s
//! to take the answer, and 16 connections at once. A malformed head gets hyper's 400.
//! What each path answers is the [`Router`]'s.
//!
//! A listener and each connection run on the [`Tasks`] given to [`Listener::bind`]
//! (see [`crate::tasks`] for the shutdown). It stops when they stop, or when it is
//! dropped: it stops accepting at once, and [`Listener::shutdown`] returns when the
//! answers under way are written.
//!
//! Written here rather than by hyper, one part: hyper closes a connection whose head is
//! late without a word, so the 408 after [`READ_TIMEOUT`] is written on the socket
//! hyper gives back.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::tasks::Tasks;

/// The largest request head read (also hyper's smallest read buffer).
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header lines a request may have.
pub const MAX_HEADERS: usize = 32;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// The content type of the plain-text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// One answer, on its way.
pub type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// What answers a listener's requests.
pub trait Router: Send + Sync + 'static {
    /// The answer to `request` (an answer is always given: errors are answers too).
    fn route(&self, request: Request<Incoming>) -> Answer;
}

/// A listening socket, served on tasks of its own until dropped or shut down.
pub struct Listener {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Option<()>>>,
}

impl Listener {
    /// Listens on `addr` and serves `router`, on `tasks`, until they stop or the
    /// listener is dropped. `name` is what the logs call it.
    pub async fn bind(
        addr: SocketAddr,
        tasks: &Tasks,
        router: Arc<dyn Router>,
        name: &'static str,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        // A child: dropping the listener stops it without stopping the caller's tasks.
        let stop = tasks.stop_token().child_token();
        let task = tasks.spawn(serve(listener, router, stop.clone(), tasks.clone(), name));
        Ok(Self {
            addr: local,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening, and returns once the answers under way are written (each is
    /// bounded by the read and write timeouts).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(
    listener: TcpListener,
    router: Arc<dyn Router>,
    stop: CancellationToken,
    tasks: Tasks,
    name: &'static str,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let next = async {
            let permit = permits.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        let (permit, accepted) = tokio::select! {
            () = stop.cancelled() => break,
            next = next => next,
        };
        let Ok(permit) = permit else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
        tasks.spawn_detached(async move {
            if let Err(e) = answer(stream, router).await {
                debug!(%peer, error = %e, listener = name, "connection ended");
            }
            drop(permit);
        });
    }
    // Stop listening now, then wait for the answers under way.
    drop(listener);
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves one connection: one request, one answer.
async fn answer(stream: TcpStream, router: Arc<dyn Router>) -> Result<(), BoxError> {
    let head_read = Arc::new(AtomicBool::new(false));
    let service = {
        let head_read = head_read.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            head_read.store(true, Ordering::Release);
            let response = router.route(request);
            async move { Ok::<_, Infallible>(response.await) }
        })
    };
    let mut connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .title_case_headers(true)
        .auto_date_header(false)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        served = &mut connection => return Ok(served?),
        () = tokio::time::sleep(READ_TIMEOUT) => {}
    }
    if head_read.load(Ordering::Acquire) {
        return match tokio::time::timeout(WRITE_TIMEOUT, connection).await {
            Ok(served) => Ok(served?),
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        };
    }
    // No complete head in time: hyper would close without a word; say why first.
    let mut stream = connection.into_parts().io.into_inner();
    let body = "request head not received in time\n";
    let late = format!(
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = async {
        stream.write_all(late.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, written).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

/// An answer with its headers; the connection closes after it.
pub fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let length = body.len();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
