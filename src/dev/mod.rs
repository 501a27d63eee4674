//! `cordon demo`'s embedded dev mode (like `vault server -dev`): a real, throwaway
//! Synapse on loopback, matrix-sdk users to play the people, and cordon itself as a
//! separate `cordon run` process. Never used by `cordon run`: the bot talks to the
//! deployment's own homeserver, and nothing outside this module (and the demo in it)
//! reaches in here.
//!
//! The demo runs against a real homeserver because the behaviour cordon depends on
//! (power levels, retention, admin APIs, end-to-end encryption) is the server's and the
//! SDK's, not ours. The testkit crate (`testkit/`, `cordon-testkit`), which the
//! integration tests and the benchmarks live in, re-uses this module rather than keeping
//! a copy; the attack tooling it adds on top is there, not here.
//!
//! # Layout
//!
//! - [`install`]: the Synapse virtualenv, built once per machine in a cache directory
//!   (`$CORDON_SYNAPSE_VENV`, else `${XDG_CACHE_HOME:-$HOME/.cache}/cordon/synapse-1.163`)
//!   and shared by every process. Builds go to a unique directory beside it and are
//!   renamed into place, so parallel processes never see a half-built venv.
//! - [`synapse`]: one running homeserver ([`Synapse`]) on a free loopback port with its
//!   own temporary data directory, every rate limit lifted, shared-secret registration,
//!   restart and stop. [`Synapse::shared`] gives a process-wide instance.
//! - [`user`]: a role holder ([`TestUser`]): their own matrix-sdk client with its own
//!   store, cross-signing bootstrapped, a background sync loop, and a log of the
//!   invites and decrypted messages it has received.
//! - [`bot`]: cordon itself as a separate `cordon run` process on a generated config.
//! - [`demo`]: `cordon demo`, the scripted incident that puts the above together.
//!
//! # Processes and clean-up
//!
//! [`Synapse`] holds nothing bound to a tokio runtime (the homeserver is a
//! `std::process::Child`, HTTP clients are made per call), so one instance may be shared
//! by `#[tokio::test]`s that each run their own runtime. Synapse runs under a small `sh`
//! watchdog that kills it, and removes its data directory, once the owning process is
//! gone; a `static` instance (never dropped) or a SIGKILLed process leaves no orphan.
//! Dropping a [`Synapse`] kills it and removes its data directory at once, unless
//! `CORDON_KEEP_SYNAPSE=1`, in which case the directory is kept and its path printed.
//!
//! # Environment
//!
//! - `CORDON_SYNAPSE_VENV`: where the Synapse virtualenv lives (see [`install`]).
//! - `CORDON_PYTHON`: the interpreter used to build it (default `python3`).
//! - `CORDON_KEEP_SYNAPSE=1`: keep data directories (config, logs, database) after use.
//! - `CORDON_SYNAPSE_LOG_LEVEL`: Synapse's log level (default `WARNING`).
//! - `CORDON_SYNAPSE`: the homeserver's form ([`Form`]): `sqlite` (the default: one
//!   process on sqlite) or `postgres-workers` (PostgreSQL, an event persister and a
//!   background worker, Redis between them; see [`services`]).
//! - `CORDON_PG_BIN`, `CORDON_PG_USER`: PostgreSQL's programs and, when run as root,
//!   the account it runs as (see [`services`]).
//!
//! # Enrolment (verification)
//!
//! cordon only talks to people whose identity it has verified. The people's half of that
//! is [`TestUser::master_key_fingerprint`], which a person would read out to an operator
//! for `cordon verify @user:hs --fingerprint KEY`; [`bot::enrol`] runs that command.

pub mod bot;
pub mod demo;
pub mod install;
mod process;
pub mod services;
pub mod synapse;
pub mod user;

use std::path::PathBuf;
use std::time::Duration;

pub use synapse::{Form, Options as SynapseOptions, Prevention, Registration, Synapse, TestModule};
pub use user::{ReceivedInvite, ReceivedMessage, TestUser};

/// Everything that can go wrong while installing, running or talking to the test
/// homeserver. Each message says what happened and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The Python interpreter used to build the venv could not be run at all.
    #[error(
        "cannot run `{python}` to install Synapse: {source} (install Python 3.10 or newer, \
         or point CORDON_PYTHON at an interpreter)"
    )]
    PythonMissing {
        /// The interpreter that was tried.
        python: String,
        /// Why it could not be started.
        source: std::io::Error,
    },

    /// `python3 -m venv` failed, usually because the venv module is not installed.
    #[error(
        "`{python} -m venv` failed ({status}); on Debian or Ubuntu install the `python3-venv` \
         package. Its output ends with:\n{output_tail}"
    )]
    VenvUnavailable {
        /// The interpreter that was tried.
        python: String,
        /// The exit status.
        status: String,
        /// The end of its stderr and stdout.
        output_tail: String,
    },

    /// `pip install matrix-synapse` failed or took too long.
    #[error("installing Synapse with pip failed ({status}). Its output ends with:\n{output_tail}")]
    PipFailed {
        /// The exit status, or that it timed out.
        status: String,
        /// The end of its stderr and stdout.
        output_tail: String,
    },

    /// A venv was built but does not import the expected Synapse version.
    #[error("the Synapse venv at {venv} is unusable: {reason}")]
    BrokenVenv {
        /// The venv directory.
        venv: PathBuf,
        /// What the version check printed.
        reason: String,
    },

    /// No directory to cache the venv in could be found.
    #[error("cannot choose a cache directory for Synapse: set CORDON_SYNAPSE_VENV or HOME")]
    NoCacheDir,

    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A service the production-shaped homeserver needs (PostgreSQL, Redis) is not
    /// installed.
    #[error(
        "`{program}` is not installed: the postgres-workers homeserver needs it (Debian: \
         apt-get install {package}; or set CORDON_SYNAPSE=sqlite)"
    )]
    ServiceMissing {
        /// The program looked for.
        program: String,
        /// The distribution's package that has it.
        package: String,
    },

    /// A service the homeserver stands on did not start or answer.
    #[error("{what} failed: {detail}. Its output ends with:\n{log_tail}")]
    ServiceFailed {
        /// Which service, or which step.
        what: String,
        /// What happened.
        detail: String,
        /// The end of its log.
        log_tail: String,
    },

    /// `CORDON_SYNAPSE` names no homeserver form.
    #[error("CORDON_SYNAPSE={0:?} is not a homeserver form: use `sqlite` or `postgres-workers`")]
    UnknownForm(String),

    /// Synapse exited while starting (or restarting).
    #[error("Synapse exited during start-up ({status}). Its log ends with:\n{log_tail}")]
    SynapseExited {
        /// The exit status.
        status: String,
        /// The end of Synapse's own log and of its stdout/stderr.
        log_tail: String,
    },

    /// Synapse did not answer `/_matrix/client/versions` in time.
    #[error("Synapse did not answer within {waited:?}. Its log ends with:\n{log_tail}")]
    StartTimeout {
        /// How long we waited.
        waited: Duration,
        /// The end of Synapse's own log and of its stdout/stderr.
        log_tail: String,
    },

    /// The homeserver is not running (it was stopped).
    #[error("Synapse is not running")]
    NotRunning,

    /// An HTTP request to the homeserver failed.
    #[error("{context}: {source}")]
    Http {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: reqwest::Error,
    },

    /// The homeserver answered a request with an error.
    #[error("{context}: HTTP {status}: {body}")]
    Refused {
        /// What was being done.
        context: String,
        /// The HTTP status.
        status: u16,
        /// The response body (a Matrix error object).
        body: String,
    },

    /// The homeserver answered with something we could not understand.
    #[error("{context}: unexpected response: {detail}")]
    BadResponse {
        /// What was being done.
        context: String,
        /// What was wrong with it.
        detail: String,
    },

    /// The matrix-sdk client could not be built.
    #[error("building the matrix-sdk client failed: {0}")]
    ClientBuild(Box<matrix_sdk::ClientBuildError>),

    /// A matrix-sdk call failed.
    #[error("{context}: {source}")]
    Matrix {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: Box<matrix_sdk::Error>,
    },

    /// A room the user's client does not know about.
    #[error("{user} does not know room {room}")]
    UnknownRoom {
        /// The user.
        user: String,
        /// The room.
        room: String,
    },

    /// A bounded wait ran out.
    #[error("{user} waited {waited:?} for {what} in vain; {seen}")]
    Timeout {
        /// The user who waited.
        user: String,
        /// What they waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// A summary of what did arrive, to help debugging.
        seen: String,
    },
}

impl From<matrix_sdk::ClientBuildError> for HarnessError {
    fn from(e: matrix_sdk::ClientBuildError) -> Self {
        Self::ClientBuild(Box::new(e))
    }
}

impl HarnessError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn matrix(context: impl Into<String>, source: impl Into<matrix_sdk::Error>) -> Self {
        Self::Matrix {
            context: context.into(),
            source: Box::new(source.into()),
        }
    }
}

/// A unique name for a temporary directory: process id, a per-process counter and
/// randomness, so parallel processes and parallel tests never collide.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("{prefix}-{}-{n}-{salt:08x}", std::process::id())
}

/// Creates a fresh directory under the system temp dir (never reusing an existing one).
pub fn fresh_temp_dir(prefix: &str) -> Result<PathBuf, HarnessError> {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir(&dir)
        .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Whether `CORDON_KEEP_SYNAPSE=1` asks to keep data directories.
pub fn keep_data() -> bool {
    std::env::var("CORDON_KEEP_SYNAPSE").is_ok_and(|v| v == "1")
}
