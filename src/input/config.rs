//! The bot's own configuration file.
//!
//! Read in two phases, as ripgrep does: [`RawConfig`] mirrors the YAML exactly (unknown
//! keys are errors), then [`Config::load`] validates it once and builds the typed form
//! that the rest of cordon uses without re-checking. Every problem is reported at once,
//! located like playbook problems (`file:line:col: error: message`).
//!
//! Secrets (the bot's password, the store passphrase) are never written inline: the
//! file names an environment variable or a file, and the secret is read only when the
//! bot starts ([`SecretSource::read`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;

use crate::input::diagnostic::Diagnostic;
use crate::input::yaml::Located;

/// The default time zone for schedules and the times shown to people.
pub const DEFAULT_TIME_ZONE: chrono_tz::Tz = chrono_tz::Europe::London;

/// Commands older than this when cordon first sees them are not executed by default.
pub const DEFAULT_COMMAND_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// How long an incident whose deadline passed while cordon was down stays open after
/// cordon is back, unless the config says otherwise.
pub const DEFAULT_GRACE_AFTER_DOWNTIME: Duration = Duration::from_secs(10 * 60);

/// How many declares are provisioned at once by default; the others wait their turn, in
/// the order they were declared (`app::turns`). Synapse makes each room's membership
/// changes one at a time, so its throughput grows with the rooms in flight: at fifty
/// declares at once (`cordon-bench load`, postgres-workers, two cores), turns of 4 took
/// 2.3 times as long (p95) as a raw client with every room in flight, turns of 8 1.9
/// times. A turn lasts to the summary: released
/// after the invites, so that the next declares' invites overlapped the briefings,
/// dozens of declares posted their first encrypted messages at once, and their
/// briefings stalled for minutes.
pub const DEFAULT_PROVISIONING_AT_ONCE: usize = 8;

/// The most declares provisioned at once that the config takes.
pub const MAX_PROVISIONING_AT_ONCE: usize = 64;
/// `/healthz` reports sync as down when the last successful sync is older than this,
/// unless the config says otherwise. A long poll waits 30 s, and a failing sync
/// retries within a minute at most.
pub const DEFAULT_SYNC_STALE_AFTER: Duration = Duration::from_secs(90);
/// The shortest `metrics.sync_stale_after`: above the 30 s long poll, so an idle bot
/// never looks down.
pub const MIN_SYNC_STALE_AFTER: Duration = Duration::from_secs(45);

/// `/metrics` and `/healthz` listen here unless the config says otherwise: loopback
/// only, on the port registered for Prometheus exporters' examples.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// The config file exactly as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Base URL of the homeserver's client API, e.g. `https://matrix.nhs.example`.
    pub homeserver: Located<String>,
    /// The bot's full Matrix user id, e.g. `@cordon:nhs.example`.
    pub user: Located<String>,
    /// Where the bot's password comes from: `{ env: NAME }` or `{ file: PATH }`.
    pub password: Located<RawSecret>,
    /// Where the passphrase of the Matrix crypto and state store comes from.
    pub store_passphrase: Located<RawSecret>,
    /// Directory for the redb store, the Matrix session and the admin socket.
    pub state_dir: Located<String>,
    /// Directory of playbooks (`*.yaml`).
    pub playbooks_dir: Located<String>,
    /// Directory where sealed archives are written.
    pub archive_dir: Located<String>,
    /// Rooms that are control rooms from the start (operators can add more by inviting
    /// the bot).
    #[serde(default)]
    pub control_rooms: Vec<Located<String>>,
    /// Operators: may invite the bot into control rooms, enrol people, release holds.
    pub operators: Vec<Located<String>>,
    /// Records officers: may release legal holds.
    #[serde(default)]
    pub records_officers: Vec<Located<String>>,
    /// IANA time zone for schedules and displayed times. Default `Europe/London`.
    #[serde(default)]
    pub time_zone: Option<Located<String>>,
    /// Command handling.
    #[serde(default)]
    pub commands: Option<RawCommands>,
    /// Deadlines after downtime.
    #[serde(default)]
    pub deadlines: Option<RawDeadlines>,
    /// How many declares are provisioned at once.
    #[serde(default)]
    pub provisioning: Option<RawProvisioning>,
    /// The Prometheus `/metrics` and `/healthz` endpoints.
    #[serde(default)]
    pub metrics: Option<RawMetrics>,
    /// Prevention: the Synapse module `cordon_synapse` asks cordon before any
    /// membership or state change in its rooms (see `synapse-module/README.md`).
    #[serde(default)]
    pub prevention: Option<RawPrevention>,
    /// The patient record: the FHIR server advice is delivered to, and people's
    /// professional registrations for the FHIR export.
    #[serde(default)]
    pub fhir: Option<RawFhir>,
}

/// `fhir:` section as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFhir {
    /// A FHIR R4 server's base URL (https; http only to a loopback address). When set,
    /// the stand-down POSTs each incident's advice bundle there (a transaction) after
    /// the archive is sealed, and destroys the rooms only once it is delivered or an
    /// operator skips it (`!cordon retry --skip-fhir`).
    pub base_url: Option<Located<String>>,
    /// The bearer token for it: `{ file: PATH }`, `{ env: NAME }` or
    /// `{ credential: NAME }`. Default: none.
    pub token: Option<Located<RawSecret>>,
    /// Shorthand for `token: { file: PATH }`.
    pub token_file: Option<Located<String>>,
    /// People's professional registrations, as the patient record identifies them:
    /// Matrix user id → `gmc:1234567`, `nmc:12A3456B`, `hcpc:PA12345` or
    /// `<system URI>|<value>`. Advice from someone listed names them by it in the FHIR
    /// export; from anyone else, by Matrix user id.
    #[serde(default)]
    pub practitioners: std::collections::BTreeMap<String, Located<String>>,
}

/// `prevention:` section as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPrevention {
    /// Address and port the module's questions come to (loopback, like the module's
    /// `endpoint`), e.g. `127.0.0.1:9479`.
    pub listen: Located<String>,
    /// The secret shared with the module: `{ file: PATH }` or `{ env: NAME }`, the same
    /// value as the module's `secret_file`.
    pub secret: Located<RawSecret>,
    /// The module's status URL. Default: the homeserver's
    /// `/_synapse/client/cordon/v1/status`.
    pub status_url: Option<Located<String>>,
}

/// `metrics:` section as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Serve `/metrics` and `/healthz`. Default `true`.
    pub enabled: Option<Located<bool>>,
    /// Address and port to listen on. Default `127.0.0.1:9464` (loopback only).
    pub listen: Option<Located<String>>,
    /// `/healthz` fails when the last successful sync is older than this. Default
    /// `90s`; between `45s` and `1h`.
    pub sync_stale_after: Option<Located<String>>,
}

/// `deadlines:` section as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDeadlines {
    /// When cordon comes back after an incident's expiry passed while it was down, it
    /// warns first and stands the incident down this long after (the commander may
    /// `extend` meanwhile). Default `10m`; `0s` stands it down at once; at most `2h`.
    pub grace_after_downtime: Option<Located<String>>,
}

/// `provisioning:` section as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProvisioning {
    /// How many declares are provisioned at once; the others wait their turn in the
    /// order declared. Default `8`; between `1` and `64`.
    pub at_once: Option<Located<u32>>,
}

/// `commands:` section as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCommands {
    /// Commands that arrived while cordon was down and are older than this are not
    /// executed; the sender is asked to re-issue them. Default `15m`.
    pub max_age: Option<Located<String>>,
}

/// A secret reference as written: exactly one of `env`, `file` or `credential`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline ignored).
    pub file: Option<String>,
    /// Name of a systemd credential (`LoadCredential=NAME:…` or
    /// `LoadCredentialEncrypted=NAME:…` in the unit), read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    pub credential: Option<String>,
}

/// Where a secret is read from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file; relative paths were resolved against the config file's directory.
    File(PathBuf),
    /// A systemd credential, by name: `$CREDENTIALS_DIRECTORY/NAME` when read.
    Credential(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Credential(name) => write!(f, "credential:{name}"),
        }
    }
}

/// A secret's value. Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its value (one the caller read from where the config says).
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for handing to the login or the store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A secret could not be read at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or empty.
    #[error("environment variable {0} is not set or is empty")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("secret file {0} is empty")]
    FileEmpty(PathBuf),
    /// A credential was named, but systemd gave this process none.
    #[error(
        "the config names the systemd credential `{0}`, but $CREDENTIALS_DIRECTORY is not \
         set: systemd sets it only for a unit with `LoadCredential={0}:…` (or \
         `LoadCredentialEncrypted=`). Outside the service, run the command under it, e.g. \
         `systemd-run --pipe --wait -p LoadCredential={0}:… -p User=cordon cordon …`, or \
         use a config that names a file"
    )]
    NoCredentials(String),
}

impl SecretSource {
    /// Reads the secret now. A single trailing newline in a file is ignored.
    pub fn read(&self) -> Result<Secret, SecretError> {
        match self {
            Self::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY");
                Self::File(credential_path(dir.as_deref(), name)?).read()
            }
            Self::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                let value = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                if value.is_empty() {
                    return Err(SecretError::FileEmpty(path.clone()));
                }
                Ok(Secret(value.to_owned()))
            }
        }
    }
}

/// Where systemd put the credential `name`, given `$CREDENTIALS_DIRECTORY`.
pub fn credential_path(dir: Option<&std::ffi::OsStr>, name: &str) -> Result<PathBuf, SecretError> {
    dir.filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .ok_or_else(|| SecretError::NoCredentials(name.to_owned()))
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from.
    pub path: PathBuf,
    /// Homeserver base URL.
    pub homeserver: url::Url,
    /// The bot's user id.
    pub user: OwnedUserId,
    /// The bot's password source.
    pub password: SecretSource,
    /// The store passphrase source.
    pub store_passphrase: SecretSource,
    /// State directory.
    pub state_dir: PathBuf,
    /// Playbooks directory.
    pub playbooks_dir: PathBuf,
    /// Archive directory.
    pub archive_dir: PathBuf,
    /// Configured control rooms.
    pub control_rooms: Vec<OwnedRoomId>,
    /// Operators.
    pub operators: BTreeSet<OwnedUserId>,
    /// Records officers.
    pub records_officers: BTreeSet<OwnedUserId>,
    /// Time zone.
    pub time_zone: chrono_tz::Tz,
    /// Maximum age of a command for it to be executed.
    pub command_max_age: Duration,
    /// How long an incident that expired while cordon was down stays open once cordon
    /// is back (zero: it stands down at once).
    pub grace_after_downtime: Duration,
    /// How many declares are provisioned at once (`provisioning.at_once`).
    pub provisioning_at_once: usize,
    /// Where `/metrics` and `/healthz` are served; `None` when turned off.
    pub metrics_listen: Option<SocketAddr>,
    /// `/healthz` reports sync as down when the last sync is older than this.
    pub sync_stale_after: Duration,
    /// Prevention through the Synapse module; `None` when not configured.
    pub prevention: Option<Prevention>,
    /// The patient record's side (FHIR export of advice).
    pub fhir: Fhir,
}

/// The `fhir:` section, checked.
#[derive(Debug, Clone, Default)]
pub struct Fhir {
    /// Where the advice bundles are delivered; `None`: they are not (they are in the
    /// archives all the same).
    pub delivery: Option<FhirDelivery>,
    /// Professional registrations by Matrix user id.
    pub practitioners: std::collections::BTreeMap<OwnedUserId, Registration>,
}

/// A practitioner's professional registration as the patient record knows it: a FHIR
/// identifier (system and value). Written `gmc:1234567` (General Medical Council),
/// `nmc:12A3456B` (Nursing and Midwifery Council), `hcpc:PA12345` (Health and Care
/// Professions Council), or `<system URI>|<value>` for any other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    /// The identifier system, e.g. `https://fhir.hl7.org.uk/Id/gmc-number`.
    pub system: String,
    /// The number.
    pub value: String,
}

impl Registration {
    /// The UK Core identifier systems of the registers, by the prefix that names them.
    pub const REGISTERS: [(&'static str, &'static str); 3] = [
        ("gmc", "https://fhir.hl7.org.uk/Id/gmc-number"),
        ("nmc", "https://fhir.hl7.org.uk/Id/nmc-number"),
        ("hcpc", "https://fhir.hl7.org.uk/Id/hcpc-number"),
    ];

    /// Reads `gmc:1234567`, `nmc:…`, `hcpc:…` or `<system URI>|<value>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let usage = "write it as gmc:1234567, nmc:12A3456B, hcpc:PA12345 or <system URI>|<value>";
        let (system, value) = if let Some((system, value)) = text.split_once('|') {
            let uri = system.starts_with("https://")
                || system.starts_with("http://")
                || system.starts_with("urn:");
            if !uri {
                return Err(format!(
                    "not a registration: the system before `|` is not a URI ({usage})"
                ));
            }
            (system.to_owned(), value)
        } else if let Some((prefix, value)) = text.split_once(':')
            && let Some((_, system)) = Self::REGISTERS
                .iter()
                .find(|(p, _)| p.eq_ignore_ascii_case(prefix))
        {
            ((*system).to_owned(), value)
        } else {
            return Err(format!("not a registration cordon knows ({usage})"));
        };
        let value = value.trim();
        let plain = !value.is_empty()
            && value.len() <= 64
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !plain {
            return Err(format!(
                "not a registration: the number must be letters, digits and `-`, at most 64 \
                 ({usage})"
            ));
        }
        Ok(Self {
            system,
            value: value.to_owned(),
        })
    }
}

/// A FHIR server the stand-down delivers the advice to.
#[derive(Debug, Clone)]
pub struct FhirDelivery {
    /// Its base URL (ending in `/`): the transaction is POSTed there.
    pub base_url: url::Url,
    /// The bearer token, when it needs one.
    pub token: Option<SecretSource>,
}

impl Fhir {
    /// `user`'s registration, when the config maps them to one.
    pub fn registration_of(&self, user: &str) -> Option<Registration> {
        let user = UserId::parse(user).ok()?;
        self.practitioners.get(&user).cloned()
    }
}

/// Where the Synapse module's questions come to, and how cordon checks it is on.
#[derive(Debug, Clone)]
pub struct Prevention {
    /// The listener's address (loopback).
    pub listen: SocketAddr,
    /// The secret the module sends as a bearer token.
    pub secret: SecretSource,
    /// The module's status resource on the homeserver.
    pub status_url: url::Url,
}

/// Where the module serves its status, under the homeserver's base URL.
pub const PREVENTION_STATUS_PATH: &str = "_synapse/client/cordon/v1/status";

/// Collects diagnostics for one file.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error<T>(&mut self, at: &Located<T>, message: impl Into<String>) {
        self.problems.push(at.error(self.file, self.text, message));
    }

    /// The duration at `field`, between `min` and `max` (each with how it is written), or
    /// `default` (likewise) when it is absent or wrong, which is reported.
    fn duration(
        &mut self,
        field: &str,
        raw: Option<&Located<String>>,
        (min, min_text): (Duration, &str),
        (max, max_text): (Duration, &str),
        (default, default_text): (Duration, &str),
    ) -> Duration {
        let Some(raw) = raw else {
            return default;
        };
        match humantime::parse_duration(raw.value.trim()) {
            Ok(d) if d >= min && d <= max => d,
            Ok(_) => {
                self.error(
                    raw,
                    format!("{field} must be between {min_text} and {max_text}"),
                );
                default
            }
            Err(e) => {
                self.error(
                    raw,
                    format!(
                        "{field} `{}` is not a duration ({e}); for example {default_text}",
                        shown(&raw.value)
                    ),
                );
                default
            }
        }
    }

    fn user(&mut self, field: &str, raw: &Located<String>) -> Option<OwnedUserId> {
        match parse_user_id(&raw.value) {
            Ok(user) => Some(user),
            Err(why) => {
                self.error(raw, format!("{field}: `{}` {why}", shown(&raw.value)));
                None
            }
        }
    }

    fn dir(&mut self, field: &str, raw: &Located<String>, base: &Path) -> PathBuf {
        if raw.value.trim().is_empty() {
            self.error(raw, format!("{field} must not be empty"));
        }
        resolve(base, &raw.value)
    }

    /// The `fhir:` section: the server delivered to, and each practitioner's user id
    /// and registration.
    fn fhir(&mut self, raw: &RawFhir, base: &Path) -> Fhir {
        let token = match (&raw.token, &raw.token_file) {
            (Some(t), Some(f)) => {
                self.error(f, "give fhir.token or fhir.token_file, not both");
                Some(self.secret("fhir.token", t, base))
            }
            (Some(t), None) => Some(self.secret("fhir.token", t, base)),
            (None, Some(f)) => {
                if f.value.trim().is_empty() {
                    self.error(f, "fhir.token_file must not be empty");
                }
                Some(SecretSource::File(resolve(base, &f.value)))
            }
            (None, None) => None,
        };
        let delivery = match &raw.base_url {
            None => {
                if let Some(f) = &raw.token_file {
                    self.error(f, "fhir.token_file is set but fhir.base_url is not");
                } else if let Some(t) = &raw.token {
                    self.error(t, "fhir.token is set but fhir.base_url is not");
                }
                None
            }
            Some(u) => match fhir_base_url(&u.value) {
                Ok(base_url) => Some(FhirDelivery { base_url, token }),
                Err(why) => {
                    self.error(u, format!("fhir.base_url `{}` {why}", shown(&u.value)));
                    None
                }
            },
        };
        let mut practitioners = std::collections::BTreeMap::new();
        for (user, registration) in &raw.practitioners {
            let field = format!("fhir.practitioners `{}`", shown(user));
            let user = match parse_user_id(user) {
                Ok(user) => Some(user),
                Err(why) => {
                    self.error(registration, format!("{field}: the key {why}"));
                    None
                }
            };
            let parsed = Registration::parse(&registration.value).map_err(|why| {
                self.error(
                    registration,
                    format!("{field}: `{}` is {why}", shown(&registration.value)),
                );
            });
            if let (Some(user), Ok(parsed)) = (user, parsed) {
                practitioners.insert(user, parsed);
            }
        }
        Fhir {
            delivery,
            practitioners,
        }
    }

    /// The `prevention:` section: a loopback listener (the module refuses a remote one
    /// unless told otherwise, and so does cordon: the questions carry room state), the
    /// shared secret, and the status URL.
    fn prevention(
        &mut self,
        raw: &RawPrevention,
        base: &Path,
        homeserver: Option<&url::Url>,
    ) -> Option<Prevention> {
        let secret = self.secret("prevention.secret", &raw.secret, base);
        let listen = match raw.listen.value.trim().parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Some(addr),
            Ok(_) => {
                self.error(
                    &raw.listen,
                    format!(
                        "prevention.listen `{}` is not a loopback address; the module and \
                         cordon talk on this machine only, e.g. 127.0.0.1:9479",
                        shown(&raw.listen.value)
                    ),
                );
                None
            }
            Err(_) => {
                self.error(
                    &raw.listen,
                    format!(
                        "prevention.listen `{}` is not an address and port, e.g. 127.0.0.1:9479",
                        shown(&raw.listen.value)
                    ),
                );
                None
            }
        };
        let status_url = match &raw.status_url {
            Some(u) => match url::Url::parse(u.value.trim()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                _ => {
                    self.error(
                        u,
                        format!(
                            "prevention.status_url `{}` is not an http(s) URL, e.g. \
                             https://matrix.nhs.example/{PREVENTION_STATUS_PATH}",
                            shown(&u.value)
                        ),
                    );
                    None
                }
            },
            None => homeserver.and_then(|h| {
                let mut base = h.clone();
                if !base.path().ends_with('/') {
                    base.set_path(&format!("{}/", base.path()));
                }
                base.join(PREVENTION_STATUS_PATH).ok()
            }),
        };
        Some(Prevention {
            listen: listen?,
            secret,
            status_url: status_url?,
        })
    }

    fn secret(&mut self, field: &str, raw: &Located<RawSecret>, base: &Path) -> SecretSource {
        let given = [
            raw.value.env.is_some(),
            raw.value.file.is_some(),
            raw.value.credential.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => {
                self.error(
                    raw,
                    format!("{field}: give `env: VARIABLE`, `file: PATH` or `credential: NAME`"),
                );
                return SecretSource::Env(String::new());
            }
            1 => {}
            _ => {
                self.error(
                    raw,
                    format!("{field}: give one of `env`, `file` or `credential`, not several"),
                );
                return SecretSource::Env(String::new());
            }
        }
        if let Some(name) = &raw.value.env {
            if !valid_env_name(name) {
                self.error(
                    raw,
                    format!(
                        "{field}.env: `{}` is not an environment variable name \
                         (letters, digits and `_`, not starting with a digit)",
                        shown(name)
                    ),
                );
            }
            SecretSource::Env(name.clone())
        } else if let Some(path) = &raw.value.file {
            if path.trim().is_empty() {
                self.error(raw, format!("{field}.file must not be empty"));
                return SecretSource::File(PathBuf::new());
            }
            SecretSource::File(resolve(base, path))
        } else {
            let name = raw.value.credential.as_deref().unwrap_or_default();
            // systemd's credential names: a file name, no `/`, not `.` or `..`.
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                self.error(
                    raw,
                    format!(
                        "{field}.credential: `{}` is not a systemd credential name (the \
                         NAME of `LoadCredential=NAME:…`: no `/`, not empty)",
                        shown(name)
                    ),
                );
            }
            SecretSource::Credential(name.to_owned())
        }
    }
}

impl Config {
    /// Loads and validates `path`, reporting every problem at once.
    pub fn load(path: &Path) -> Result<Self, Vec<Diagnostic>> {
        let text = crate::input::yaml::read_bounded(path).map_err(|d| vec![d])?;
        Self::from_text(path, &text)
    }

    /// Validates `text`, the contents of `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, Vec<Diagnostic>> {
        let raw: RawConfig = match crate::input::yaml::from_str_checked(path, text) {
            Ok(raw) => raw,
            Err(problems) => return Err(inline_secret_hint(problems)),
        };
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut c = Checker {
            file: path,
            text,
            problems: Vec::new(),
        };

        let homeserver = match url::Url::parse(raw.homeserver.value.trim()) {
            Ok(url) if url.scheme() == "https" => Some(url),
            Ok(url) if url.scheme() == "http" && is_loopback(&url) => Some(url),
            Ok(url) if url.scheme() == "http" => {
                c.error(
                    &raw.homeserver,
                    format!(
                        "homeserver `{url}` uses plain http to a non-loopback host; \
                         use https (plain http is allowed only for localhost)"
                    ),
                );
                None
            }
            Ok(url) => {
                c.error(
                    &raw.homeserver,
                    format!("homeserver `{url}` must be an https:// URL"),
                );
                None
            }
            Err(e) => {
                c.error(
                    &raw.homeserver,
                    format!(
                        "homeserver `{}` is not a URL ({e}); for example https://matrix.nhs.example",
                        shown(&raw.homeserver.value)
                    ),
                );
                None
            }
        };
        let user = c.user("user", &raw.user);
        let password = c.secret("password", &raw.password, &base);
        let store_passphrase = c.secret("store_passphrase", &raw.store_passphrase, &base);
        let state_dir = c.dir("state_dir", &raw.state_dir, &base);
        let playbooks_dir = c.dir("playbooks_dir", &raw.playbooks_dir, &base);
        let archive_dir = c.dir("archive_dir", &raw.archive_dir, &base);

        let mut control_rooms = Vec::new();
        for room in &raw.control_rooms {
            match RoomId::parse(room.value.trim()) {
                Ok(id) if !control_rooms.contains(&id) => control_rooms.push(id),
                Ok(_) => c.error(
                    room,
                    format!("control room `{}` is listed twice", room.value),
                ),
                Err(e) => c.error(
                    room,
                    format!(
                        "control_rooms: `{}` is not a room id ({e}); room ids start with `!`",
                        shown(&room.value)
                    ),
                ),
            }
        }

        let people = |field: &str, list: &[Located<String>], c: &mut Checker<'_>| {
            let mut set = BTreeSet::new();
            for raw in list {
                if let Some(user) = c.user(field, raw)
                    && !set.insert(user)
                {
                    c.error(raw, format!("{field}: `{}` is listed twice", raw.value));
                }
            }
            set
        };
        let operators = people("operators", &raw.operators, &mut c);
        let records_officers = people("records_officers", &raw.records_officers, &mut c);
        if raw.operators.is_empty() {
            c.problems.push(Diagnostic::file(
                path,
                "operators: list at least one operator; without one nobody can invite \
                 cordon into a control room, enrol staff or release a legal hold",
            ));
        }
        if let Some(user) = &user
            && operators.contains(user)
        {
            c.problems.push(Diagnostic::file(
                path,
                "operators must not include the bot's own user",
            ));
        }

        let time_zone = match &raw.time_zone {
            None => DEFAULT_TIME_ZONE,
            Some(tz) => match tz.value.trim().parse::<chrono_tz::Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    c.error(
                        tz,
                        format!(
                            "time_zone `{}` is not an IANA time zone name, e.g. Europe/London",
                            shown(&tz.value)
                        ),
                    );
                    DEFAULT_TIME_ZONE
                }
            },
        };

        let command_max_age = c.duration(
            "commands.max_age",
            raw.commands.as_ref().and_then(|s| s.max_age.as_ref()),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(24 * 3600), "24h"),
            (DEFAULT_COMMAND_MAX_AGE, "15m"),
        );

        let grace_after_downtime = c.duration(
            "deadlines.grace_after_downtime",
            raw.deadlines
                .as_ref()
                .and_then(|d| d.grace_after_downtime.as_ref()),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(2 * 3600), "2h"),
            (DEFAULT_GRACE_AFTER_DOWNTIME, "10m"),
        );

        let provisioning_at_once = match raw.provisioning.as_ref().and_then(|p| p.at_once.as_ref())
        {
            None => DEFAULT_PROVISIONING_AT_ONCE,
            Some(n) if (1..=MAX_PROVISIONING_AT_ONCE).contains(&(n.value as usize)) => {
                n.value as usize
            }
            Some(n) => {
                c.error(
                    n,
                    format!(
                        "provisioning.at_once must be between 1 and {MAX_PROVISIONING_AT_ONCE}"
                    ),
                );
                DEFAULT_PROVISIONING_AT_ONCE
            }
        };

        let metrics_listen = match &raw.metrics {
            None => Some(DEFAULT_METRICS_LISTEN),
            Some(m) if m.enabled.as_ref().is_some_and(|e| !e.value) => {
                if let Some(listen) = &m.listen {
                    c.error(
                        listen,
                        "metrics.listen is set but metrics.enabled is false; remove one of them",
                    );
                }
                None
            }
            Some(m) => match &m.listen {
                None => Some(DEFAULT_METRICS_LISTEN),
                Some(listen) => match listen.value.trim().parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        c.error(
                            listen,
                            format!(
                                "metrics.listen `{}` is not an address and port, \
                                 e.g. 127.0.0.1:9464 or [::1]:9464",
                                shown(&listen.value)
                            ),
                        );
                        None
                    }
                },
            },
        };

        let sync_stale_after = c.duration(
            "metrics.sync_stale_after",
            raw.metrics
                .as_ref()
                .and_then(|m| m.sync_stale_after.as_ref()),
            (MIN_SYNC_STALE_AFTER, "45s"),
            (Duration::from_secs(3600), "1h"),
            (DEFAULT_SYNC_STALE_AFTER, "90s"),
        );

        let prevention = raw
            .prevention
            .as_ref()
            .and_then(|p| c.prevention(p, &base, homeserver.as_ref()));

        let fhir = raw
            .fhir
            .as_ref()
            .map(|f| c.fhir(f, &base))
            .unwrap_or_default();

        match (c.problems.is_empty(), homeserver, user) {
            (true, Some(homeserver), Some(user)) => Ok(Config {
                path: path.to_path_buf(),
                homeserver,
                user,
                password,
                store_passphrase,
                state_dir,
                playbooks_dir,
                archive_dir,
                control_rooms,
                operators,
                records_officers,
                time_zone,
                command_max_age,
                grace_after_downtime,
                provisioning_at_once,
                metrics_listen,
                sync_stale_after,
                prevention,
                fhir,
            }),
            _ => Err(c.problems),
        }
    }

    /// One line describing the config, for `cordon config check`.
    pub fn summary(&self) -> String {
        let metrics = match self.metrics_listen {
            Some(addr) => format!("metrics on http://{addr}/metrics"),
            None => "metrics off".to_owned(),
        };
        let prevention = match &self.prevention {
            Some(p) => format!(", prevention questions on {}", p.listen),
            None => String::new(),
        };
        let fhir = match &self.fhir.delivery {
            Some(d) => format!(", advice delivered to {}", d.base_url),
            None => String::new(),
        };
        format!(
            "{} on {}, {} operator(s), {} control room(s), time zone {}, \
             {metrics}{prevention}{fhir}",
            self.user,
            self.homeserver,
            self.operators.len(),
            self.control_rooms.len(),
            self.time_zone,
        )
    }

    /// Path of the redb store file.
    pub fn store_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// Parses a Matrix user id strictly enough to refuse typos and lookalikes.
pub fn parse_user_id(s: &str) -> Result<OwnedUserId, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    if !s.is_ascii() {
        return Err("contains non-ASCII characters (possible lookalike)".into());
    }
    UserId::parse(s)
        .map_err(|e| format!("is not a Matrix user id ({e}); for example @name:nhs.example"))
}

/// A serde error that names the `password` key with a plain string means an inline
/// secret: say so plainly rather than "expected a map".
fn inline_secret_hint(mut problems: Vec<Diagnostic>) -> Vec<Diagnostic> {
    for d in &mut problems {
        let inline = d
            .source_line
            .as_deref()
            .map(|l| {
                let l = l.trim_start();
                (l.starts_with("password:") || l.starts_with("store_passphrase:"))
                    && !l.contains('{')
                    && l.split_once(':').is_some_and(|(_, v)| !v.trim().is_empty())
            })
            .unwrap_or(false);
        if inline {
            d.message = "secrets must not be written in the config file; use \
                         `{ env: VARIABLE }` or `{ file: /path/to/secret }`"
                .into();
            // Never echo the secret itself to a terminal or a CI log.
            d.source_line = d.source_line.as_deref().map(|l| {
                let (key, _) = l.split_once(':').unwrap_or((l, ""));
                format!("{key}: <redacted>")
            });
        }
    }
    problems
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A FHIR server's base URL: https, or http to a loopback address (a local
/// integration engine); no query or fragment; ending in `/` so that the transaction is
/// POSTed to the base itself.
fn fhir_base_url(text: &str) -> Result<url::Url, &'static str> {
    let mut url = url::Url::parse(text.trim())
        .map_err(|_| "is not a URL, e.g. https://fhir.trust.nhs.uk/R4")?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(
                "must be https: patient data does not cross a network in the clear \
                        (http is taken only to a loopback address)",
            );
        }
        _ => return Err("is not an http(s) URL, e.g. https://fhir.trust.nhs.uk/R4"),
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err("must be a server's base URL, without a query or fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials: give the token in fhir.token_file");
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path.trim());
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Shows user-supplied text in an error without letting control characters through.
fn shown(s: &str) -> String {
    s.chars()
        .take(120)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
