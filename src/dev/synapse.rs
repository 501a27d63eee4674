//! One running Synapse: configuration, start, restart, stop and registration.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use matrix_sdk::ruma::serde::Base64;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedUserId};
use serde_json::json;
use tokio::sync::OnceCell;
use url::Url;

use super::process::{WATCHDOG, free_port, signal};
use super::services::{Postgres, Redis};
use super::{HarnessError, fresh_temp_dir, install, keep_data, tail, unique_name};

/// How long Synapse may take to answer after being started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How many fresh ports to try when another process grabs ours first.
const PORT_ATTEMPTS: usize = 5;
/// The homeserver's name; user ids look like `@alice:localhost`.
const SERVER_NAME: &str = "localhost";

/// How a test homeserver runs: chosen by `CORDON_SYNAPSE` for the tests and the
/// benchmarks ([`Form::from_env`]); the demo runs the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// One Python process on sqlite: the simplest form, and the default.
    #[default]
    Sqlite,
    /// As hospitals run it when one process is not enough: PostgreSQL, and beside the
    /// main process an event persister (every event is written by it, through
    /// replication) and a background worker (Synapse's scheduled tasks, among them the
    /// room deletions cordon asks for, and the retention purges), with Redis carrying
    /// replication between them. Clients talk to the main process.
    PostgresWorkers,
}

impl Form {
    /// The form `CORDON_SYNAPSE` names (`sqlite` or `postgres-workers`), `Sqlite` when
    /// it is unset or empty.
    pub fn from_env() -> Result<Form, HarnessError> {
        match std::env::var("CORDON_SYNAPSE").unwrap_or_default().trim() {
            "" | "sqlite" => Ok(Form::Sqlite),
            "postgres-workers" => Ok(Form::PostgresWorkers),
            other => Err(HarnessError::UnknownForm(other.to_owned())),
        }
    }

    /// Its name, as `CORDON_SYNAPSE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Form::Sqlite => "sqlite",
            Form::PostgresWorkers => "postgres-workers",
        }
    }
}

/// The workers of a [`Form::PostgresWorkers`] homeserver, and what they stand on.
#[derive(Debug)]
struct Workers {
    /// The process's PostgreSQL cluster.
    postgres: &'static Postgres,
    /// The database's name in it.
    database: String,
    redis: Redis,
    /// The main process's replication listener.
    main_replication: u16,
    /// Each worker's name and replication port.
    ports: Vec<(&'static str, u16)>,
    /// The workers' watchdogs, once started.
    processes: std::sync::Mutex<Vec<Child>>,
}

/// The workers a [`Form::PostgresWorkers`] homeserver runs: the event persister and the
/// background worker.
const WORKERS: [&str; 2] = ["persister1", "background1"];

/// One running Synapse homeserver on `127.0.0.1`, with its own data directory.
///
/// Holds nothing tied to a tokio runtime, so a `static` instance (see [`Synapse::shared`])
/// can serve tests that each run their own runtime. Dropping it kills the homeserver and
/// removes its data directory (kept when `CORDON_KEEP_SYNAPSE=1`).
pub struct Synapse {
    port: u16,
    base_url: Url,
    data_dir: PathBuf,
    python: PathBuf,
    shared_secret: String,
    /// The prevention module's settings, when it runs with it.
    prevention: Option<Prevention>,
    /// `default_room_version` in its config, when not Synapse's own default.
    default_room_version: Option<String>,
    /// Modules of the test's own ([`Options::test_modules`]).
    test_modules: Vec<TestModule>,
    /// Settings of the test's own ([`Options::settings`]).
    settings: serde_json::Map<String, serde_json::Value>,
    /// Its workers, in the postgres-workers form.
    workers: Option<Workers>,
    /// The watchdog shell, leader of the process group that holds Synapse.
    process: std::sync::Mutex<Option<Child>>,
}

impl fmt::Debug for Synapse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Synapse")
            .field("base_url", &self.base_url.as_str())
            .field("data_dir", &self.data_dir)
            .field("running", &self.child().is_some())
            .finish_non_exhaustive()
    }
}

/// What shared-secret registration returns: a logged-in session for the new account.
#[derive(Clone)]
pub struct Registration {
    /// The new account.
    pub user_id: OwnedUserId,
    /// An access token for it (never log it).
    pub access_token: String,
    /// The device the token belongs to.
    pub device_id: OwnedDeviceId,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("user_id", &self.user_id)
            .field("access_token", &"<redacted>")
            .field("device_id", &self.device_id)
            .finish()
    }
}

/// The Synapse module `cordon_synapse` (`synapse-module/`), compiled into the binary so
/// that the demo and the tests run the repository's own module whatever directory
/// they run in: written into the data directory and put on Synapse's `PYTHONPATH`.
const MODULE_FILES: [(&str, &str); 4] = [
    (
        "__init__.py",
        include_str!("../../synapse-module/cordon_synapse/__init__.py"),
    ),
    (
        "_version.py",
        include_str!("../../synapse-module/cordon_synapse/_version.py"),
    ),
    (
        "gate.py",
        include_str!("../../synapse-module/cordon_synapse/gate.py"),
    ),
    (
        "rules.py",
        include_str!("../../synapse-module/cordon_synapse/rules.py"),
    ),
];

/// How a Synapse runs the prevention module: where cordon's questions go and the secret
/// they share.
#[derive(Debug, Clone)]
pub struct Prevention {
    /// The loopback port cordon answers on (chosen before either starts).
    pub cordon_port: u16,
    /// The file holding the shared secret (mode 0600).
    pub secret_file: PathBuf,
    /// The module's `fail_open`.
    pub fail_open: bool,
}

impl Prevention {
    /// A free port and a fresh secret in `dir`.
    pub fn create(dir: &Path) -> Result<Self, HarnessError> {
        let secret_file = dir.join("prevention.secret");
        write(&secret_file, &format!("{}\n", random_secret()))?;
        set_private(&secret_file)?;
        Ok(Self {
            cordon_port: free_port()?,
            secret_file,
            fail_open: false,
        })
    }

    /// cordon's `prevention:` config section for this module.
    pub fn cordon_config(&self) -> String {
        format!(
            "prevention: {{ listen: \"127.0.0.1:{}\", secret: {{ file: \"{}\" }} }}\n",
            self.cordon_port,
            self.secret_file.display()
        )
    }
}

fn set_private(path: &Path) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| HarnessError::io("making the prevention secret private", e))
}

/// How a test homeserver differs from the plain one ([`Synapse::start_with_options`]).
/// Start from `Options::default()` and set what the test needs.
#[derive(Debug, Default)]
pub struct Options {
    /// Run the prevention module with these settings.
    pub prevention: Option<Prevention>,
    /// Synapse's `default_room_version` (the version of rooms created without one),
    /// e.g. `"10"` for a server configured before room version 12 was the default.
    pub default_room_version: Option<String>,
    /// Its form; `None` for the one `CORDON_SYNAPSE` names ([`Form::from_env`]).
    pub form: Option<Form>,
    /// Modules of a test's own, loaded after the prevention module.
    pub test_modules: Vec<TestModule>,
    /// Top-level `homeserver.yaml` settings of the test's own, set last (for example
    /// `alias_creation_rules`).
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// A Synapse module a test brings (a fault it puts into the homeserver): one Python
/// file, written beside the prevention module on Synapse's `PYTHONPATH`, and loaded as
/// `{file stem}.{class}` with `config`.
#[derive(Debug, Clone)]
pub struct TestModule {
    /// The file's name (`creation_fault.py`); its stem is the module's name.
    pub file_name: String,
    /// The file's text.
    pub source: String,
    /// The module's class.
    pub class: String,
    /// Its `config`.
    pub config: serde_json::Value,
}

impl TestModule {
    /// Its `modules` entry in `homeserver.yaml`.
    fn entry(&self) -> serde_json::Value {
        let stem = self.file_name.trim_end_matches(".py");
        json!({ "module": format!("{stem}.{}", self.class), "config": self.config })
    }
}

impl Options {
    /// With `default_room_version: version`.
    pub fn default_room_version(mut self, version: &str) -> Self {
        self.default_room_version = Some(version.to_owned());
        self
    }
}

/// Why one launch attempt failed.
enum LaunchError {
    /// The port was taken; try another (or wait and retry the same one).
    PortInUse,
    Other(HarnessError),
}

impl Synapse {
    /// Installs Synapse if needed (cached between runs), then starts it on a free
    /// loopback port in a fresh temporary data directory, and waits (at most 60 s) until
    /// it answers.
    pub async fn start() -> Result<Synapse, HarnessError> {
        Self::start_with(None).await
    }

    /// As [`Synapse::start`], with the prevention module when `prevention` is given.
    pub async fn start_with(prevention: Option<Prevention>) -> Result<Synapse, HarnessError> {
        Self::start_with_options(Options {
            prevention,
            ..Options::default()
        })
        .await
    }

    /// As [`Synapse::start`], configured as `options` say.
    pub async fn start_with_options(options: Options) -> Result<Synapse, HarnessError> {
        let Options {
            prevention,
            default_room_version,
            form,
            test_modules,
            settings,
        } = options;
        let form = match form {
            Some(form) => form,
            None => Form::from_env()?,
        };
        let python = install::ensure_installed().await?;
        let data_dir = fresh_temp_dir("cordon-synapse")?;
        let workers = match form {
            Form::Sqlite => None,
            Form::PostgresWorkers => {
                let postgres = Postgres::shared().await?;
                let database = format!("synapse_{}", &random_secret()[..16]);
                postgres.create_database(&database)?;
                let redis = Redis::start(&data_dir.join("redis")).await?;
                let mut ports = Vec::new();
                for name in WORKERS {
                    ports.push((name, free_port()?));
                }
                Some(Workers {
                    postgres,
                    database,
                    redis,
                    main_replication: free_port()?,
                    ports,
                    processes: std::sync::Mutex::new(Vec::new()),
                })
            }
        };
        let mut synapse = Synapse {
            port: 0,
            base_url: local_url(0)?,
            data_dir,
            python,
            shared_secret: random_secret(),
            prevention,
            default_room_version,
            test_modules,
            settings,
            workers,
            process: std::sync::Mutex::new(None),
        };
        // From here on, dropping `synapse` cleans up after a failure.
        synapse.write_static_files()?;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            synapse.port = port;
            synapse.base_url = local_url(port)?;
            synapse.write_config()?;
            match synapse.launch().await {
                Ok(()) => {
                    tracing::debug!(url = %synapse.base_url, "Synapse started");
                    return Ok(synapse);
                }
                Err(LaunchError::PortInUse) => continue,
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(HarnessError::SynapseExited {
            status: format!("no free port after {PORT_ATTEMPTS} attempts"),
            log_tail: synapse.log_tail(),
        })
    }

    /// One Synapse for the whole test process, started on first use.
    ///
    /// Safe to call from tests that each run their own tokio runtime. Never dropped; its
    /// watchdog stops it and removes its data when the process ends. Tests that restart
    /// or stop the homeserver must start their own instead.
    pub async fn shared() -> Result<&'static Synapse, HarnessError> {
        static SHARED: OnceCell<Synapse> = OnceCell::const_new();
        SHARED.get_or_try_init(Synapse::start).await
    }

    /// A homeserver of its own, for a test that stops or restarts it while a world
    /// built on it runs. Never dropped: like the shared one, its watchdog stops it and
    /// removes its data when the process ends.
    pub async fn own() -> Result<&'static Synapse, HarnessError> {
        Ok(Box::leak(Box::new(Synapse::start().await?)))
    }

    /// A homeserver of its own that asks cordon through the prevention module (see
    /// [`Prevention`]); never dropped, like [`Synapse::own`].
    pub async fn own_with_prevention(
        prevention: Prevention,
    ) -> Result<&'static Synapse, HarnessError> {
        Ok(Box::leak(Box::new(
            Synapse::start_with(Some(prevention)).await?,
        )))
    }

    /// A homeserver of its own configured as `options` say; never dropped, like
    /// [`Synapse::own`].
    pub async fn own_with(options: Options) -> Result<&'static Synapse, HarnessError> {
        Ok(Box::leak(Box::new(
            Synapse::start_with_options(options).await?,
        )))
    }

    /// Its form.
    pub fn form(&self) -> Form {
        if self.workers.is_some() {
            Form::PostgresWorkers
        } else {
            Form::Sqlite
        }
    }

    /// Runs one SQL statement in the homeserver's PostgreSQL database (the
    /// postgres-workers form only) and returns its rows, one a line.
    pub fn sql(&self, sql: &str) -> Result<String, HarnessError> {
        let workers = self
            .workers
            .as_ref()
            .ok_or_else(|| HarnessError::ServiceFailed {
                what: "SQL".to_owned(),
                detail: "this homeserver runs on sqlite".to_owned(),
                log_tail: String::new(),
            })?;
        workers.postgres.query(&workers.database, sql)
    }

    /// The prevention module's settings, when this homeserver runs it.
    pub fn prevention(&self) -> Option<&Prevention> {
        self.prevention.as_ref()
    }

    /// The client-server API base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> Url {
        self.base_url.clone()
    }

    /// The homeserver's name (`localhost`): user ids are `@name:localhost`.
    pub fn server_name(&self) -> &str {
        SERVER_NAME
    }

    /// The data directory: config, signing key, database, media and logs.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Synapse's own log file (Python logging, `WARNING` and above by default).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("homeserver.log")
    }

    /// Where Synapse's stdout and stderr go (start-up failures show up here).
    pub fn stdout_path(&self) -> PathBuf {
        self.data_dir.join("stdout.log")
    }

    /// A fresh directory for one client's store, inside the data directory (so it is
    /// cleaned up, or kept, with the homeserver's data).
    pub fn client_store_dir(&self, label: &str) -> Result<PathBuf, HarnessError> {
        let clients = self.data_dir.join("clients");
        std::fs::create_dir_all(&clients)
            .map_err(|e| HarnessError::io(format!("creating {}", clients.display()), e))?;
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = clients.join(unique_name(&label));
        std::fs::create_dir(&dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    /// The port Synapse listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user id a localpart gets on this server.
    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId, HarnessError> {
        OwnedUserId::try_from(format!("@{localpart}:{SERVER_NAME}")).map_err(|e| {
            HarnessError::BadResponse {
                context: format!("user id for {localpart:?}"),
                detail: e.to_string(),
            }
        })
    }

    /// Registers an account through the shared-secret admin API and returns its id.
    pub async fn register(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<OwnedUserId, HarnessError> {
        Ok(self
            .register_session(localpart, password, admin)
            .await?
            .user_id)
    }

    /// Registers an account through the shared-secret admin API and returns the session
    /// it creates (useful for an admin token, or a bot that restores a session).
    pub async fn register_session(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<Registration, HarnessError> {
        let context = format!("registering {localpart:?}");
        let url = self.endpoint("_synapse/admin/v1/register")?;
        let client = http_client()?;
        let nonce_body: serde_json::Value =
            json_response(&context, client.get(url.clone()).send().await).await?;
        let nonce = nonce_body["nonce"]
            .as_str()
            .ok_or_else(|| HarnessError::BadResponse {
                context: context.clone(),
                detail: "no nonce".to_owned(),
            })?;

        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(self.shared_secret.as_bytes()).map_err(|e| {
                HarnessError::BadResponse {
                    context: context.clone(),
                    detail: e.to_string(),
                }
            })?;
        let role = if admin { "admin" } else { "notadmin" };
        for (i, part) in [nonce, localpart, password, role].iter().enumerate() {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        let mac = hex::encode(mac.finalize().into_bytes());
        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac,
        });
        let reply: serde_json::Value =
            json_response(&context, client.post(url).json(&body).send().await).await?;
        let field = |name: &str| {
            reply[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| HarnessError::BadResponse {
                    context: context.clone(),
                    detail: format!("no {name}"),
                })
        };
        let user_id =
            OwnedUserId::try_from(field("user_id")?).map_err(|e| HarnessError::BadResponse {
                context: context.clone(),
                detail: e.to_string(),
            })?;
        Ok(Registration {
            user_id,
            access_token: field("access_token")?,
            device_id: OwnedDeviceId::from(field("device_id")?.as_str()),
        })
    }

    /// Stops Synapse gracefully and starts it again on the same port with the same data.
    pub async fn restart(&self) -> Result<(), HarnessError> {
        self.stop().await;
        // The old socket may linger for a moment; retry the same port for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(LaunchError::PortInUse) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(LaunchError::PortInUse) => {
                    return Err(HarnessError::SynapseExited {
                        status: format!("port {} stayed in use", self.port),
                        log_tail: self.log_tail(),
                    });
                }
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
    }

    /// Restarts Synapse with its prevention module loaded (`on`) or left out of
    /// `homeserver.yaml` (a homeserver whose operator removed it). Only for a homeserver
    /// started with [`Prevention`].
    pub async fn restart_with_module(&self, on: bool) -> Result<(), HarnessError> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| HarnessError::io("reading homeserver.yaml", e))?;
        let mut config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| HarnessError::BadResponse {
                context: "reading homeserver.yaml".into(),
                detail: e.to_string(),
            })?;
        if on {
            if let Some(modules) = self.module_config() {
                config["modules"] = modules;
            }
        } else if let Some(map) = config.as_object_mut() {
            map.remove("modules");
        }
        write(&path, &config.to_string())?;
        self.restart().await
    }

    /// The `modules` entry: the prevention module, when this homeserver runs it, then
    /// the test's own.
    fn module_config(&self) -> Option<serde_json::Value> {
        let mut modules: Vec<serde_json::Value> = self.prevention_entry().into_iter().collect();
        modules.extend(self.test_modules.iter().map(TestModule::entry));
        (!modules.is_empty()).then(|| json!(modules))
    }

    /// The prevention module's `modules` entry, when this homeserver runs it.
    fn prevention_entry(&self) -> Option<serde_json::Value> {
        let p = self.prevention.as_ref()?;
        Some(json!({
            "module": "cordon_synapse.CordonGate",
            "config": {
                "endpoint": format!(
                    "http://127.0.0.1:{}/_cordon/prevention/v1/check",
                    p.cordon_port
                ),
                "secret_file": p.secret_file,
                "timeout_ms": 5000,
                "fail_open": p.fail_open,
            }
        }))
    }

    /// Stops Synapse (SIGTERM, then SIGKILL after 20 s). Keeps the data directory, so
    /// [`Synapse::restart`] can bring it back; dropping removes it. Does nothing if
    /// already stopped.
    pub async fn stop(&self) {
        if let Some(workers) = &self.workers {
            let children: Vec<Child> = std::mem::take(&mut *lock(&workers.processes));
            for child in children {
                stop_child(child).await;
            }
        }
        let Some(child) = self.child().take() else {
            return;
        };
        stop_child(child).await;
    }
}

/// Stops one watchdog's process (SIGTERM, then SIGKILL to its group after 20 s).
async fn stop_child(mut child: Child) {
    {
        signal(child.id(), "-TERM", false);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(None) => {
                    tracing::warn!("Synapse did not stop in {STOP_TIMEOUT:?}; killing it");
                    signal(child.id(), "-KILL", true);
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

impl Synapse {
    /// Whether the homeserver process is running (it may have crashed).
    pub fn is_running(&self) -> bool {
        match &mut *self.child() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The end of Synapse's log and of its stdout/stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let mut files = vec![self.log_path(), self.stdout_path()];
        if self.workers.is_some() {
            for name in WORKERS {
                files.push(self.data_dir.join(format!("{name}.log")));
            }
        }
        files
            .iter()
            .map(|f| format!("--- {} ---\n{}", f.display(), tail(&read_lossy(f), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn endpoint(&self, path: &str) -> Result<Url, HarnessError> {
        self.base_url
            .join(path)
            .map_err(|e| HarnessError::BadResponse {
                context: format!("joining {path} to {}", self.base_url),
                detail: e.to_string(),
            })
    }

    fn config_path(&self) -> PathBuf {
        self.data_dir.join("homeserver.yaml")
    }

    /// Writes the files that do not depend on the port: signing key and log config.
    fn write_static_files(&self) -> Result<(), HarnessError> {
        // A signing key is any 32 random bytes (an ed25519 seed); writing it ourselves
        // saves a Python start-up for `--generate-keys`.
        let seed: [u8; 32] = rand::random();
        let key = format!(
            "ed25519 a_{} {}\n",
            &random_secret()[..4],
            Base64::<matrix_sdk::ruma::serde::base64::Standard>::new(seed.to_vec()).encode()
        );
        write(&self.data_dir.join("signing.key"), &key)?;

        let level =
            std::env::var("CORDON_SYNAPSE_LOG_LEVEL").unwrap_or_else(|_| "WARNING".to_owned());
        // YAML is a superset of JSON, so serde_json writes Synapse's YAML files safely.
        let log_config = json!({
            "version": 1,
            "formatters": {
                "precise": { "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s" }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": self.log_path(),
                    "encoding": "utf8"
                }
            },
            "root": { "level": level, "handlers": ["file"] },
            "disable_existing_loggers": false
        });
        write(&self.data_dir.join("log.yaml"), &log_config.to_string())?;
        if self.workers.is_some() {
            for name in WORKERS {
                let mut worker_log = log_config.clone();
                worker_log["handlers"]["file"]["filename"] =
                    json!(self.data_dir.join(format!("{name}.log")));
                write(
                    &self.data_dir.join(format!("{name}.log.yaml")),
                    &worker_log.to_string(),
                )?;
            }
        }
        if self.prevention.is_some() {
            let package = self.modules_dir().join("cordon_synapse");
            std::fs::create_dir_all(&package)
                .map_err(|e| HarnessError::io("creating the module's directory", e))?;
            for (name, text) in MODULE_FILES {
                write(&package.join(name), text)?;
            }
        }
        if !self.test_modules.is_empty() {
            std::fs::create_dir_all(self.modules_dir())
                .map_err(|e| HarnessError::io("creating the modules' directory", e))?;
            for m in &self.test_modules {
                write(&self.modules_dir().join(&m.file_name), &m.source)?;
            }
        }
        Ok(())
    }

    /// Where the prevention module's package is written (on Synapse's `PYTHONPATH`).
    fn modules_dir(&self) -> PathBuf {
        self.data_dir.join("modules")
    }

    /// Writes `homeserver.yaml` for the current port.
    fn write_config(&self) -> Result<(), HarnessError> {
        let unlimited = json!({ "per_second": 10000, "burst_count": 100000 });
        let dir = &self.data_dir;
        let config = json!({
            "server_name": SERVER_NAME,
            "public_baseurl": self.base_url.as_str(),
            "pid_file": dir.join("homeserver.pid"),
            "listeners": [{
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": false,
                "x_forwarded": false,
                "resources": [{ "names": ["client"], "compress": false }]
            }],
            "database": { "name": "sqlite3", "args": { "database": dir.join("homeserver.db") } },
            "log_config": dir.join("log.yaml"),
            "media_store_path": dir.join("media_store"),
            "signing_key_path": dir.join("signing.key"),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": random_secret(),
            "form_secret": random_secret(),
            "report_stats": false,
            "trusted_key_servers": [],
            "suppress_key_server_warning": true,
            "federation_domain_whitelist": [],
            "bcrypt_rounds": 4,
            "enable_registration": false,
            "retention": { "enabled": true },
            // As docs/deploy.md asks of production: Synapse keeps a redacted event's
            // original content for this long (7 days by default) before censoring it;
            // 0, the shortest it takes, censors at its next pass (every 5 minutes).
            "redaction_retention_period": 0,
            "rc_message": unlimited,
            "rc_registration": unlimited,
            "rc_login": {
                "address": unlimited,
                "account": unlimited,
                "failed_attempts": unlimited
            },
            "rc_joins": { "local": unlimited, "remote": unlimited },
            "rc_invites": { "per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited },
            "rc_admin_redaction": unlimited,
            "rc_key_requests": unlimited,
            "rc_3pid_validation": unlimited,
            "rc_media_create": unlimited,
            "rc_room_creation": unlimited,
            "rc_delayed_event_mgmt": unlimited,
            "rc_reports": unlimited,
            "rc_presence": { "per_user": unlimited }
        });
        let mut config = config;
        if let Some(workers) = &self.workers {
            self.add_workers(&mut config, workers)?;
        }
        if let Some(version) = &self.default_room_version {
            config["default_room_version"] = json!(version);
        }
        if let Some(modules) = self.module_config() {
            config["modules"] = modules;
        }
        for (key, value) in &self.settings {
            config[key] = value.clone();
        }
        write(&self.config_path(), &config.to_string())
    }

    /// The postgres-workers form's part of `homeserver.yaml` (PostgreSQL, the main
    /// process's replication listener, who writes events and runs the background
    /// tasks, Redis), and each worker's own file.
    fn add_workers(
        &self,
        config: &mut serde_json::Value,
        workers: &Workers,
    ) -> Result<(), HarnessError> {
        config["database"] = workers.postgres.synapse_database(&workers.database);
        let replication = |port: u16| {
            json!({
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": false,
                "resources": [{ "names": ["replication"] }]
            })
        };
        if let Some(listeners) = config["listeners"].as_array_mut() {
            listeners.push(replication(workers.main_replication));
        }
        let mut instances = serde_json::Map::new();
        instances.insert(
            "main".to_owned(),
            json!({ "host": "127.0.0.1", "port": workers.main_replication }),
        );
        for (name, port) in &workers.ports {
            instances.insert(
                (*name).to_owned(),
                json!({ "host": "127.0.0.1", "port": port }),
            );
        }
        config["instance_map"] = serde_json::Value::Object(instances);
        config["stream_writers"] = json!({ "events": [WORKERS[0]] });
        config["run_background_tasks_on"] = json!(WORKERS[1]);
        config["redis"] = json!({
            "enabled": true,
            "host": "127.0.0.1",
            "port": workers.redis.port()
        });
        config["worker_replication_secret"] = json!(random_secret());
        for (name, port) in &workers.ports {
            let worker = json!({
                "worker_app": "synapse.app.generic_worker",
                "worker_name": name,
                "worker_listeners": [replication(*port)],
                "worker_log_config": self.data_dir.join(format!("{name}.log.yaml")),
            });
            write(
                &self.data_dir.join(format!("{name}.yaml")),
                &worker.to_string(),
            )?;
        }
        Ok(())
    }

    /// Starts the workers, each under a watchdog of its own, once the main process
    /// answers (it prepares the database's schema, which a worker only checks), and
    /// waits until each answers on its replication listener.
    async fn launch_workers(&self) -> Result<(), HarnessError> {
        let Some(workers) = &self.workers else {
            return Ok(());
        };
        for (name, _) in &workers.ports {
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c")
                .arg(WATCHDOG)
                .arg("cordon-synapse-worker-watchdog")
                .arg(std::process::id().to_string())
                .arg(&self.data_dir)
                .arg(if keep_data() { "1" } else { "0" })
                .arg(&self.python)
                .args(["-m", "synapse.app.generic_worker", "--config-path"])
                .arg(self.config_path())
                .arg("--config-path")
                .arg(self.data_dir.join(format!("{name}.yaml")))
                .current_dir(&self.data_dir)
                .env("PYTHONPATH", self.modules_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let child = cmd
                .spawn()
                .map_err(|e| HarnessError::io(format!("starting Synapse's {name}"), e))?;
            lock(&workers.processes).push(child);
        }
        let client = http_client()?;
        let started = Instant::now();
        for (name, port) in &workers.ports {
            let health =
                local_url(*port)?
                    .join("health")
                    .map_err(|e| HarnessError::BadResponse {
                        context: "the worker's health URL".to_owned(),
                        detail: e.to_string(),
                    })?;
            loop {
                let ready = client
                    .get(health.clone())
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                let exited = lock(&workers.processes)
                    .iter_mut()
                    .any(|c| !matches!(c.try_wait(), Ok(None)));
                if exited || started.elapsed() > START_TIMEOUT {
                    return Err(HarnessError::ServiceFailed {
                        what: format!("Synapse's worker {name}"),
                        detail: if exited {
                            "exited during start-up".to_owned()
                        } else {
                            format!("did not answer within {START_TIMEOUT:?}")
                        },
                        log_tail: self.log_tail(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Starts the watchdog and Synapse under it, and waits until Synapse answers.
    async fn launch(&self) -> Result<(), LaunchError> {
        // Only what this attempt logs counts, so a stale "address in use" cannot mislead.
        let log_start = file_len(&self.log_path());
        let stdout_start = file_len(&self.stdout_path());
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("cordon-synapse-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.data_dir)
            .arg(if keep_data() { "1" } else { "0" })
            .arg(&self.python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.config_path())
            .current_dir(&self.data_dir)
            .env("PYTHONPATH", self.modules_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a terminal's Ctrl-C does not reach it (the watchdog
            // handles the owner's death), and one signal can reach the whole tree.
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| LaunchError::Other(HarnessError::io("starting sh to run Synapse", e)))?;
        *self.child() = Some(child);

        let started = Instant::now();
        let versions = self
            .endpoint("_matrix/client/versions")
            .map_err(LaunchError::Other)?;
        let client = http_client().map_err(LaunchError::Other)?;
        loop {
            let exited = match &mut *self.child() {
                Some(child) => child.try_wait(),
                None => Ok(None),
            };
            match exited {
                Ok(None) => {}
                Ok(Some(status)) => {
                    *self.child() = None;
                    let log_tail = self.log_tail();
                    let this_attempt = format!(
                        "{}{}",
                        read_lossy_from(&self.log_path(), log_start),
                        read_lossy_from(&self.stdout_path(), stdout_start)
                    );
                    if this_attempt.contains("Address already in use") {
                        return Err(LaunchError::PortInUse);
                    }
                    return Err(LaunchError::Other(HarnessError::SynapseExited {
                        status: status.to_string(),
                        log_tail,
                    }));
                }
                Err(e) => {
                    return Err(LaunchError::Other(HarnessError::io(
                        "waiting for Synapse",
                        e,
                    )));
                }
            }
            let ready = client
                .get(versions.clone())
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return self.launch_workers().await.map_err(|e| {
                    self.kill_now();
                    LaunchError::Other(e)
                });
            }
            if started.elapsed() > START_TIMEOUT {
                let log_tail = self.log_tail();
                self.kill_now();
                return Err(LaunchError::Other(HarnessError::StartTimeout {
                    waited: START_TIMEOUT,
                    log_tail,
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The watchdog's handle (a poisoned lock still holds it).
    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.process
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Kills the whole process group at once and reaps the watchdog (the workers' too).
    fn kill_now(&self) {
        if let Some(workers) = &self.workers {
            for mut child in std::mem::take(&mut *lock(&workers.processes)) {
                signal(child.id(), "-KILL", true);
                let _ = child.wait();
            }
        }
        if let Some(mut child) = self.child().take() {
            signal(child.id(), "-KILL", true);
            let _ = child.wait();
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.kill_now();
        if keep_data() {
            eprintln!("cordon: kept Synapse data in {}", self.data_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A lock's guard, also when a panic poisoned it.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn local_url(port: u16) -> Result<Url, HarnessError> {
    Url::parse(&format!("http://127.0.0.1:{port}")).map_err(|e| HarnessError::BadResponse {
        context: "building the base URL".to_owned(),
        detail: e.to_string(),
    })
}

/// 32 random bytes as hex: secrets are per instance.
fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn write(path: &Path, contents: &str) -> Result<(), HarnessError> {
    std::fs::write(path, contents)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

fn read_lossy(path: &Path) -> String {
    read_lossy_from(path, 0)
}

/// A file's text from byte `offset` on (lossy UTF-8), or why it cannot be read.
fn read_lossy_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(cannot read: {e})"),
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A fresh HTTP client for one call (a pooled client would tie itself to the runtime
/// that first used it). Never goes through a proxy: the server is on loopback.
pub fn http_client() -> Result<reqwest::Client, HarnessError> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| HarnessError::Http {
            context: "building an HTTP client".to_owned(),
            source,
        })
}

/// Reads a JSON body from a response, turning HTTP errors into [`HarnessError::Refused`].
pub async fn json_response(
    context: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<serde_json::Value, HarnessError> {
    let response = response.map_err(|source| HarnessError::Http {
        context: context.to_owned(),
        source,
    })?;
    let status = response.status();
    let body = response.text().await.map_err(|source| HarnessError::Http {
        context: context.to_owned(),
        source,
    })?;
    if !status.is_success() {
        return Err(HarnessError::Refused {
            context: context.to_owned(),
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&body).map_err(|e| HarnessError::BadResponse {
        context: context.to_owned(),
        detail: e.to_string(),
    })
}
