//! The services a production-shaped Synapse stands on: PostgreSQL and Redis, from the
//! distribution's packages, each started here in its own throwaway data directory on a
//! free loopback port, under the same watchdog as Synapse (stopped and removed when the
//! owning process ends).
//!
//! - [`Postgres::shared`]: one cluster per process, a fresh database per homeserver
//!   ([`Postgres::create_database`]). PostgreSQL refuses to run as root: when the
//!   process is root, the cluster belongs to and runs as the `postgres` account the
//!   package creates (`CORDON_PG_USER` names another), else as the caller.
//! - [`Redis::start`]: one server per homeserver. Synapse's replication channels are
//!   named after the server name, which every test homeserver shares (`localhost`), so
//!   two homeservers on one Redis would hear each other.
//!
//! The binaries are found in `CORDON_PG_BIN` (a directory), else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's layout), else on `PATH`; Redis as
//! `redis-server` on `PATH`. A missing one is an error that says which package to
//! install.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::process::{WATCHDOG, free_port, signal};
use super::{HarnessError, fresh_temp_dir, keep_data, tail};

/// How long a service may take to answer after being started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A process started under the watchdog, killed with its process group when dropped.
#[derive(Debug)]
struct Supervised {
    child: std::sync::Mutex<Option<Child>>,
}

impl Supervised {
    /// Starts `program args` under the watchdog, as `user` when given, with output in
    /// `<data>/stdout.log`.
    fn spawn(
        data: &Path,
        user: Option<&str>,
        program: &Path,
        args: &[String],
    ) -> Result<Self, HarnessError> {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("cordon-service-watchdog")
            .arg(std::process::id().to_string())
            .arg(data)
            .arg(if keep_data() { "1" } else { "0" });
        if let Some(user) = user {
            // setpriv executes the program in its place (runuser would stay as its
            // parent, and the watchdog's kill would miss the server).
            cmd.args(as_user(user));
        }
        use std::os::unix::process::CommandExt;
        cmd.arg(program)
            .args(args)
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", program.display()), e))?;
        Ok(Self {
            child: std::sync::Mutex::new(Some(child)),
        })
    }

    /// Whether it exited, and how.
    fn exited(&self) -> Option<String> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => None,
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            None => Some("stopped".to_owned()),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = child.take() {
            signal(child.id(), "-KILL", true);
            let _ = child.wait();
        }
    }
}

/// Waits until `ready` says yes, the process exits, or the start time runs out.
async fn wait_ready(
    what: &str,
    process: &Supervised,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), HarnessError> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = process.exited() {
            return Err(HarnessError::ServiceFailed {
                what: what.to_owned(),
                detail: format!("exited ({status})"),
                log_tail: tail(&std::fs::read_to_string(log).unwrap_or_default(), 30),
            });
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(HarnessError::ServiceFailed {
                what: what.to_owned(),
                detail: format!("did not answer within {START_TIMEOUT:?}"),
                log_tail: tail(&std::fs::read_to_string(log).unwrap_or_default(), 30),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A running PostgreSQL cluster on loopback, with trust authentication for its one
/// role (`cordon`), which owns the databases made for homeservers.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    _process: Supervised,
}

/// The cluster's superuser role, which the homeservers connect as.
const PG_ROLE: &str = "cordon";

impl Postgres {
    /// The process's cluster, started on first use.
    pub async fn shared() -> Result<&'static Postgres, HarnessError> {
        static SHARED: OnceCell<Postgres> = OnceCell::const_new();
        SHARED.get_or_try_init(Postgres::start).await
    }

    async fn start() -> Result<Postgres, HarnessError> {
        let bin = pg_bin()?;
        let data = fresh_temp_dir("cordon-postgres")?;
        let user = service_user()?;
        let cluster = data.join("cluster");
        std::fs::create_dir(&cluster)
            .map_err(|e| HarnessError::io(format!("creating {}", cluster.display()), e))?;
        if let Some(user) = &user {
            chown_to(&data, user)?;
            chown_to(&cluster, user)?;
        }
        let mut initdb = std::process::Command::new(if user.is_some() {
            PathBuf::from("setpriv")
        } else {
            bin.join("initdb")
        });
        if let Some(user) = &user {
            initdb.args(&as_user(user)[1..]).arg(bin.join("initdb"));
        }
        let out = initdb
            .arg("-D")
            .arg(&cluster)
            .args(["-U", PG_ROLE, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::io("running initdb", e))?;
        if !out.status.success() {
            return Err(HarnessError::ServiceFailed {
                what: "PostgreSQL's initdb".to_owned(),
                detail: out.status.to_string(),
                log_tail: tail(
                    &format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    30,
                ),
            });
        }
        let port = free_port()?;
        let log = data.join("stdout.log");
        // fsync off: a throwaway cluster, and the suite's speed is the homeserver's.
        let args: Vec<String> = [
            "-D",
            &cluster.display().to_string(),
            "-p",
            &port.to_string(),
            "-h",
            "127.0.0.1",
            "-k",
            &data.display().to_string(),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let process = Supervised::spawn(&data, user.as_deref(), &bin.join("postgres"), &args)?;
        wait_ready("PostgreSQL", &process, &log, || listening(port)).await?;
        let postgres = Postgres {
            port,
            bin,
            data,
            _process: process,
        };
        // Accepting connections is not yet accepting queries: wait for a query.
        let started = Instant::now();
        while postgres.psql("SELECT 1").is_err() {
            if started.elapsed() > START_TIMEOUT {
                return Err(HarnessError::ServiceFailed {
                    what: "PostgreSQL".to_owned(),
                    detail: "never answered a query".to_owned(),
                    log_tail: tail(&std::fs::read_to_string(&log).unwrap_or_default(), 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::debug!(port, data = %postgres.data.display(), "PostgreSQL started");
        Ok(postgres)
    }

    /// Runs one SQL statement as the cluster's role.
    fn psql(&self, sql: &str) -> Result<(), HarnessError> {
        self.query("postgres", sql).map(drop)
    }

    /// Runs one SQL statement in database `database` and returns its rows, one a line,
    /// columns separated by `|`.
    pub fn query(&self, database: &str, sql: &str) -> Result<String, HarnessError> {
        let out = std::process::Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                PG_ROLE,
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::io("running psql", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HarnessError::ServiceFailed {
                what: "PostgreSQL".to_owned(),
                detail: format!("{sql}: {}", out.status),
                log_tail: tail(&String::from_utf8_lossy(&out.stderr), 10),
            })
        }
    }

    /// A new, empty database as Synapse wants it (UTF8, C collation), named `name`
    /// (letters, digits and `_` only).
    pub fn create_database(&self, name: &str) -> Result<(), HarnessError> {
        debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        self.psql(&format!(
            "CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
    }

    /// Synapse's `database:` section for database `name`.
    pub fn synapse_database(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "name": "psycopg2",
            "args": {
                "user": PG_ROLE,
                "database": name,
                "host": "127.0.0.1",
                "port": self.port,
                "cp_min": 2,
                "cp_max": 10,
            }
        })
    }
}

/// A running Redis server on loopback, for one homeserver's replication.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    _process: Supervised,
}

impl Redis {
    /// Starts a server in `dir` (created if needed).
    pub async fn start(dir: &Path) -> Result<Redis, HarnessError> {
        let program = which("redis-server").ok_or_else(|| HarnessError::ServiceMissing {
            program: "redis-server".to_owned(),
            package: "redis-server".to_owned(),
        })?;
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
                "--logfile",
                "redis.log",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            let process = Supervised::spawn(dir, None, &program, &args)?;
            match wait_ready("Redis", &process, &dir.join("redis.log"), || {
                listening(port)
            })
            .await
            {
                Ok(()) => {
                    return Ok(Redis {
                        port,
                        _process: process,
                    });
                }
                // Another process took the port first: try another.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(HarnessError::ServiceFailed {
            what: "Redis".to_owned(),
            detail: "no free port".to_owned(),
            log_tail: String::new(),
        }))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Where PostgreSQL's server programs are.
fn pg_bin() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("CORDON_PG_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    which("postgres")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| HarnessError::ServiceMissing {
            program: "postgres".to_owned(),
            package: "postgresql".to_owned(),
        })
}

/// `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// The account PostgreSQL runs as: `None` (the caller) unless the caller is root, which
/// PostgreSQL refuses.
fn service_user() -> Result<Option<String>, HarnessError> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .map_err(|e| HarnessError::io("reading who runs the tests", e))?;
    if uid != 0 {
        return Ok(None);
    }
    Ok(Some(
        std::env::var("CORDON_PG_USER").unwrap_or_else(|_| "postgres".to_owned()),
    ))
}

/// The command words that run what follows them as `user` (its own groups too), in
/// place of the caller: `setpriv`, from util-linux.
fn as_user(user: &str) -> [String; 5] {
    [
        "setpriv".to_owned(),
        format!("--reuid={user}"),
        format!("--regid={user}"),
        "--init-groups".to_owned(),
        "--".to_owned(),
    ]
}

/// Gives `path` to `user` (by name, through `chown`, which resolves it).
fn chown_to(path: &Path, user: &str) -> Result<(), HarnessError> {
    let status = std::process::Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .map_err(|e| HarnessError::io("running chown", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::ServiceFailed {
            what: format!("chown {user} {}", path.display()),
            detail: format!(
                "{status} (is there a `{user}` account? The postgresql package makes one)"
            ),
            log_tail: String::new(),
        })
    }
}
