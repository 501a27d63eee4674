//! The context every part of the running bot shares: the configuration, the store, the
//! Matrix client, the clock, the signer, the tasks (the one tracker every task runs on
//! and the one token that stops them, [`crate::tasks`]), and the bookkeeping of the
//! running process (which incidents' pipelines run, the sync counter, the flood
//! budgets). It holds no
//! workflow: the files beside it do, and they import this one, never the reverse.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::{Client, Room};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{error, warn};

use crate::clock::Clock;
use crate::domain::incident::{Incident, IncidentId};
use crate::input::config::Config;
use crate::input::playbook::Playbook;
use crate::matrix::admin::{Account, RateLimits, SynapseAdmin};
use crate::matrix::{self, MatrixError, rooms};
use crate::store::{RoomRecord, Store, StoreError};

/// Why the bot could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::input::config::SecretError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Matrix layer failed.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// Another process holds the state directory.
    #[error(transparent)]
    Lock(#[from] matrix::session::LockError),
    /// The metrics endpoint could not listen.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::http::BindError),
    /// The admin socket could not be opened.
    #[error(transparent)]
    Admin(#[from] crate::trust::socket::AdminError),
    /// A retention sweep failed.
    #[error(transparent)]
    Sweep(#[from] crate::retention::SweepError),
    /// Sealing or verifying an archive failed.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// A file of cordon's could not be read, written or deleted.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The incident's pipeline is running already (the caller retries later).
    #[error("{0}'s pipeline is already running")]
    Busy(IncidentId),
    /// Sealing an entry of the command record to the records officers failed.
    #[error("sealing to the records officers: {0}")]
    Seal(#[from] crate::archive::segment::SealError),
    /// An entry of the command record could not be recorded or posted.
    #[error("{0}")]
    Record(String),
    /// The advice could not be delivered to the FHIR server (the stand-down waits).
    #[error("delivering the advice to the patient record: {0}")]
    Fhir(String),
}

impl AppError {
    /// Whether only an operator can fix this (an unreadable secret, a refused login, a
    /// session file the passphrase does not open), so that a restart would repeat it.
    /// `cordon run` exits 78 for these, and the systemd unit does not restart on 78.
    pub fn needs_operator(&self) -> bool {
        match self {
            Self::Secret(_) => true,
            Self::Matrix(e) => e.needs_operator(),
            Self::Archive(
                crate::archive::ArchiveError::SigningKey { .. }
                | crate::archive::ArchiveError::DeliveryKey { .. },
            ) => true,
            _ => false,
        }
    }
}

/// The actor name cordon uses for its own audit entries.
pub const ACTOR: &str = "cordon";

/// How long an identity fetched for a declare stands for the next declares naming the
/// same holder ([`Ctx::identity_is_fresh`]).
pub(crate) const IDENTITY_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a holder's account, found active for a declare, stands for the next
/// declares naming them ([`Ctx::account`]). Longer than [`IDENTITY_FRESH`]: an account
/// comes and goes rarely, and one deactivated meanwhile can no longer sign in, so an
/// invite to it lets nobody in.
pub(crate) const ACCOUNT_FRESH: std::time::Duration = std::time::Duration::from_secs(120);

/// Everything the handlers share.
pub struct Ctx {
    pub(crate) config: Config,
    pub(crate) store: Arc<Store>,
    pub(crate) client: Client,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rate_limits: RateLimits,
    pub(crate) admin: SynapseAdmin,
    /// Signs the manifests of sealed archives (its public key is what records officers
    /// pin). It cannot open an archive.
    pub(crate) signer: Arc<crate::archive::ArchiveSigner>,
    /// Opens the advice cordon delivers to a FHIR server (`fhir.base_url`), until it
    /// is delivered; `None` when delivery was never configured.
    pub(crate) fhir_key: Option<Arc<age::x25519::Identity>>,
    /// Deletes a destroyed room's keys from matrix-sdk's crypto store (see
    /// [`crate::matrix::forget`]).
    pub(crate) room_keys: Arc<crate::matrix::forget::RoomKeyEraser>,
    /// Incidents whose pipeline (provisioning or stand-down, each a scheduler job) is
    /// running in this process: while one is, the sync loop syncs at most once a second
    /// ([`Ctx::busy`]). The scheduler already never runs two jobs of one incident at
    /// once.
    pub(super) running: Mutex<HashSet<IncidentId>>,
    /// Asks the sync loop for a sync now (see [`Ctx::settle_sync`]).
    pub(super) sync_kick: Notify,
    /// How many syncs have completed.
    pub(super) syncs: tokio::sync::watch::Sender<u64>,
    /// Every task of the running bot, and its shutdown (see [`crate::tasks`]).
    pub(crate) tasks: crate::tasks::Tasks,
    /// The scheduler that runs the incidents' timers, once started.
    pub(super) scheduler: std::sync::OnceLock<crate::schedule::SchedulerHandle>,
    /// When the last sync succeeded (for `/healthz`).
    pub(super) last_sync: Mutex<Option<std::time::Instant>>,
    /// Requests that provisioning fans out (identity checks, invites), in flight at
    /// once across every incident: many incidents declared together share these
    /// rather than each sending its own burst, which would queue at the homeserver
    /// past the client's request timeout.
    pub(crate) fan_out: tokio::sync::Semaphore,
    /// Turns at provisioning (`provisioning.at_once` in the config, 8 by default), in
    /// the order of the declares (time, then id): declares made together are
    /// provisioned first declared, first served, instead of all sharing the homeserver
    /// and finishing together at the end.
    pub(crate) provisioning: super::turns::Turns<(chrono::DateTime<chrono::Utc>, IncidentId)>,
    /// When each holder's identity was last fetched from the homeserver for a declare
    /// (see [`Ctx::identity_is_fresh`]).
    pub(crate) identities_fetched:
        Mutex<std::collections::HashMap<OwnedUserId, std::time::Instant>>,
    /// When each holder's account was last found active for a declare (see
    /// [`Ctx::account`]).
    pub(crate) accounts_active: Mutex<std::collections::HashMap<OwnedUserId, std::time::Instant>>,
    /// The control rooms as last read from the store: who to tell when the store
    /// itself can no longer be read.
    pub(super) control_seen: Mutex<BTreeSet<OwnedRoomId>>,
    /// Each sender's answer budget for commands cordon does not trust.
    pub(super) flood: Mutex<crate::domain::command::flood::Flood>,
    /// People whose enrolment is revoked, as last read from the store (see
    /// [`Ctx::before_send`]).
    pub(super) revoked: Mutex<Vec<OwnedUserId>>,
    /// Prevention as last seen: `None` when it is not configured, else whether the
    /// homeserver's module is on and what its status said (see `app::prevention`).
    pub(crate) prevention: Mutex<Option<PreventionSeen>>,
    /// When this process started, by cordon's clock: a deadline before it passed while
    /// cordon was down.
    pub(crate) started_at: DateTime<Utc>,
}

/// What the prevention module's status said last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreventionSeen {
    /// Whether the module is on and asks this cordon.
    pub(crate) on: bool,
    /// What was found, for `status` and the alerts.
    pub(crate) detail: String,
}

impl Ctx {
    /// Prevention as last seen (`None` when not configured).
    pub(crate) fn prevention_seen(&self) -> Option<PreventionSeen> {
        self.prevention.lock().ok().and_then(|p| p.clone())
    }

    /// Records a successful sync, for `/healthz` and the metrics.
    pub(super) fn synced(&self) {
        if let Ok(mut last) = self.last_sync.lock() {
            *last = Some(std::time::Instant::now());
        }
        crate::metrics::global().synced(Utc::now());
    }

    /// Now, by the injectable clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The bot's own user id.
    pub fn user_id(&self) -> &matrix_sdk::ruma::UserId {
        &self.config.user
    }

    /// The server name used in matrix.to links.
    pub fn server_name(&self) -> &str {
        self.config.user.server_name().as_str()
    }

    /// True for configured control rooms and those an operator invited cordon into.
    pub fn is_control_room(&self, room: &RoomId) -> bool {
        self.config.control_rooms.iter().any(|r| r == room)
            || self
                .store
                .is_control_room(room.as_str())
                .unwrap_or_else(|e| {
                    error!(error = %e, "store: reading control rooms");
                    false
                })
    }

    /// All control rooms.
    pub fn control_rooms(&self) -> Vec<OwnedRoomId> {
        let mut rooms: BTreeSet<OwnedRoomId> = self.config.control_rooms.iter().cloned().collect();
        match self.store.control_rooms() {
            Ok(list) => {
                let read: BTreeSet<OwnedRoomId> =
                    list.iter().filter_map(|r| RoomId::parse(r).ok()).collect();
                rooms.extend(read.iter().cloned());
                if let Ok(mut seen) = self.control_seen.lock() {
                    *seen = read;
                }
            }
            Err(e) => {
                error!(error = %e, "store: reading control rooms");
                if let Ok(seen) = self.control_seen.lock() {
                    rooms.extend(seen.iter().cloned());
                }
            }
        }
        rooms.into_iter().collect()
    }

    /// True when cordon's account is a server admin (it lifted its own rate limits).
    pub fn is_server_admin(&self) -> bool {
        self.rate_limits == RateLimits::Lifted
    }

    /// True when `user` is a configured operator.
    pub fn is_operator(&self, user: &matrix_sdk::ruma::UserId) -> bool {
        self.config.operators.contains(user)
    }

    /// Whether a command's sending device may change anything, checked now against the
    /// homeserver's current keys (see [`crate::trust::sender::confirm_now`]). A device
    /// found to belong to a changed identity loses any local trust at once.
    pub(crate) async fn sender_device(
        &self,
        info: Option<&matrix_sdk::deserialized_responses::EncryptionInfo>,
        sender: &matrix_sdk::ruma::UserId,
    ) -> crate::trust::sender::SenderDevice {
        use crate::trust::sender::{SenderDevice, Why};
        let device =
            crate::trust::sender::confirm_now(&self.client, &self.store, info, sender).await;
        if matches!(device, SenderDevice::Unverified(Why::IdentityChanged)) {
            crate::trust::enforce(&self.client, &self.store, sender).await;
        }
        device
    }

    /// Reads who is revoked from the store again.
    pub(crate) fn refresh_revoked(&self) {
        let list: Vec<OwnedUserId> = match self.store.enrolments() {
            Ok(list) => list
                .into_iter()
                .filter(|e| !e.is_current())
                .filter_map(|e| OwnedUserId::try_from(e.user.as_str()).ok())
                .collect(),
            Err(e) => {
                error!(error = %e, "store: listing enrolments");
                return;
            }
        };
        match self.revoked.lock() {
            Ok(mut r) => *r = list,
            Err(poisoned) => *poisoned.into_inner() = list,
        }
    }

    /// Before cordon sends into `room`: every revoked person who is a member has their
    /// device list fetched now and every device blacklisted. matrix-sdk fetches the
    /// device lists it knows to be outdated as part of the send and shares the room key
    /// at once, so a device a revoked person added a moment ago would otherwise receive
    /// it before the device watcher could blacklist it.
    pub(crate) async fn before_send(&self, room: &Room) {
        let revoked = match self.revoked.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for user in revoked {
            let member = matches!(
                room.get_member_no_sync(&user).await,
                Ok(Some(m)) if matches!(m.membership(), MembershipState::Join | MembershipState::Invite)
            );
            if !member {
                continue;
            }
            if let Err(e) = crate::trust::blacklist_devices(&self.client, &user).await {
                warn!(user = %user, error = %e, "could not blacklist a revoked member's devices");
            }
        }
    }

    /// Takes one answer from `sender`'s budget (see [`crate::domain::command::flood`]).
    pub(crate) fn flood_take(
        &self,
        sender: &str,
        now: DateTime<Utc>,
    ) -> (
        crate::domain::command::flood::Gate,
        Option<crate::domain::command::flood::Suppressed>,
    ) {
        match self.flood.lock() {
            Ok(mut f) => f.take(sender, now),
            Err(poisoned) => poisoned.into_inner().take(sender, now),
        }
    }

    /// Audits the counts of every budget window that has ended (every window, at
    /// shutdown).
    pub(super) fn flood_flush(&self, all: bool) {
        let now = if all {
            self.now() + crate::domain::command::flood::WINDOW
        } else {
            self.now()
        };
        let closed = match self.flood.lock() {
            Ok(mut f) => f.flush(now),
            Err(poisoned) => poisoned.into_inner().flush(now),
        };
        for c in &closed {
            self.audit_suppressed(c);
        }
    }

    /// True while any pipeline runs in this process.
    pub(super) fn busy(&self) -> bool {
        match self.running.lock() {
            Ok(set) => !set.is_empty(),
            Err(poisoned) => !poisoned.into_inner().is_empty(),
        }
    }

    /// Waits until the sync loop has completed `n` more syncs, asking it to sync at
    /// once. Provisioning calls it after the invites with `n` = 2 (a sync under way may
    /// have started before them): a sync after the invites takes in the new members and
    /// sends their key queries before any send goes on (`matrix::rooms::hold_sends`),
    /// so the first encrypted message is shared with them. Bounded: a sync that does
    /// not come in ten seconds is not waited for.
    pub(crate) async fn settle_sync(&self, n: u64) {
        let mut seen = self.syncs.subscribe();
        let target = *seen.borrow() + n;
        let waited = async {
            while *seen.borrow_and_update() < target {
                self.sync_kick.notify_one();
                if seen.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), waited).await;
    }

    /// Whether `user`'s identity was fetched from the homeserver for a declare less
    /// than [`IDENTITY_FRESH`] ago; if not, records that it is being fetched now. Fifty
    /// declares at once naming the same holders made one `/keys/query` per holder per
    /// declare; within the window the copy matrix-sdk keeps (updated by sync when the
    /// holder's keys change) is used instead.
    pub(crate) fn identity_is_fresh(&self, user: &OwnedUserId) -> bool {
        let mut fetched = match self.identities_fetched.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = std::time::Instant::now();
        fetched.retain(|_, at| now.duration_since(*at) < IDENTITY_FRESH);
        if fetched.contains_key(user) {
            return true;
        }
        fetched.insert(user.clone(), now);
        false
    }

    /// Whether `user`'s account can be invited ([`SynapseAdmin::account`]), unless a
    /// declare found it active less than [`ACCOUNT_FRESH`] ago. Fifty declares at once
    /// naming the same holders asked the homeserver once per holder per declare. Only
    /// an active account is remembered: one missing (perhaps being created) or that
    /// the homeserver would not tell of is asked about again every time.
    pub(crate) async fn account(&self, user: &OwnedUserId) -> Account {
        let lock = || match self.accounts_active.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        {
            let mut active = lock();
            let now = std::time::Instant::now();
            active.retain(|_, at| now.duration_since(*at) < ACCOUNT_FRESH);
            if active.contains_key(user) {
                return Account::Exists;
            }
        }
        let account = self.admin.account(user, self.is_server_admin()).await;
        if account == Account::Exists {
            lock().insert(user.clone(), std::time::Instant::now());
        }
        account
    }

    fn try_start(&self, id: &IncidentId) -> bool {
        match self.running.lock() {
            Ok(mut set) => set.insert(id.clone()),
            Err(poisoned) => poisoned.into_inner().insert(id.clone()),
        }
    }

    fn finished(&self, id: &IncidentId) {
        match self.running.lock() {
            Ok(mut set) => set.remove(id),
            Err(poisoned) => poisoned.into_inner().remove(id),
        };
    }

    /// Marks `id`'s pipeline as running until the guard is dropped; `None` when it runs
    /// already.
    pub(crate) fn running_guard(self: &Arc<Self>, id: &IncidentId) -> Option<Running> {
        self.try_start(id).then(|| Running {
            ctx: self.clone(),
            id: id.clone(),
        })
    }

    /// Writes a window's count of unanswered commands as one audit entry.
    pub(crate) fn audit_suppressed(&self, closed: &crate::domain::command::flood::Suppressed) {
        if let Err(e) = self.store.audit(
            closed.sender.as_str(),
            "command.refusals-suppressed",
            None,
            json!({ "count": closed.count, "from": closed.from, "last": closed.last }),
            self.now(),
        ) {
            error!(error = %e, "store: auditing suppressed commands");
        }
    }

    /// Runs `fut` as tracked background work: it finishes through the shutdown's grace
    /// or is cut short at its end (see [`crate::tasks`]); a panic in it is logged.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn_detached(fut);
    }
}

/// An incident's pipeline running in this process; see [`Ctx::running_guard`].
pub(crate) struct Running {
    ctx: Arc<Ctx>,
    id: IncidentId,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ctx.finished(&self.id);
    }
}

/// Milliseconds since the epoch as a UTC time (the epoch itself if out of range).
pub fn millis_to_utc(ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default()
}

/// The playbook exactly as it was declared.
pub(crate) fn declared_playbook(ctx: &Ctx, id: &IncidentId) -> Result<Playbook, AppError> {
    let snapshot = ctx
        .store
        .playbook_snapshot(id)?
        .ok_or_else(|| MatrixError::Client(format!("no playbook snapshot for {}", id.as_str())))?;
    crate::input::playbook::load_str(std::path::Path::new(&snapshot.path), &snapshot.text).map_err(
        |problems| {
            MatrixError::Client(format!(
                "the declared playbook no longer loads: {}",
                problems.first().map(|d| d.to_string()).unwrap_or_default()
            ))
            .into()
        },
    )
}

/// The incident room `room_id` is (its record) and the incident it belongs to, when it
/// is one of cordon's incident rooms.
pub(crate) fn incident_room(ctx: &Ctx, room_id: &str) -> Option<(RoomRecord, Incident)> {
    let record = ctx.store.room_by_matrix_id(room_id).ok().flatten()?;
    let incident = ctx.store.incident(&record.incident).ok().flatten()?;
    Some((record, incident))
}

/// An incident's command room among its room records: the room with key `command`,
/// else its first room. Alerts, the decision log, METHANE and SITREPs go there.
pub(crate) fn command_room_record(
    records: &[crate::store::RoomRecord],
) -> Option<&crate::store::RoomRecord> {
    records.iter().find(|r| r.key == "command").or_else(|| {
        records.iter().min_by_key(|r| {
            r.desired
                .get("position")
                .and_then(serde_json::Value::as_u64)
        })
    })
}

/// The incident's rooms that exist and that cordon has joined, with their records, in
/// playbook order.
pub(crate) fn incident_rooms(
    ctx: &Ctx,
    incident: &Incident,
) -> Result<Vec<(RoomRecord, Room)>, AppError> {
    let mut records = ctx.store.rooms(&incident.id)?;
    records.sort_by_key(|r| {
        r.desired
            .get("position")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    });
    Ok(records
        .into_iter()
        .filter_map(|record| {
            let room = rooms::joined(&ctx.client, record.room_id.as_deref()?)?;
            Some((record, room))
        })
        .collect())
}
