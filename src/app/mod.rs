//! The running bot: `cordon run`.
//!
//! Start-up, in order: read the secrets, listen for `/metrics` and `/healthz`, restore
//! (or create) the Matrix session, open the store, lift rate limits when cordon is a server admin, register the event
//! handlers, sync once, then catch up: commands that arrived while cordon was down are
//! found by paging back through each control room, and incidents left half-provisioned
//! are resumed. Then it syncs until SIGTERM or ctrl-c.
//!
//! - `commands`: chat commands, checked in DESIGN.md's order, each answered.
//! - `provision`: the resumable provisioning pipeline behind `declare`.
//! - `status`: the `status` reply.
//! - `attachments`: notes every attachment address sync delivers in an incident room,
//!   for stand-down to delete.
//! - `forget`: after destruction, cordon's own Matrix stores forget the room.

mod advice;
mod attachments;
pub(crate) mod commands;
mod deadlines;
mod destroy;
mod forget;
pub mod guard;
mod health;
mod jobs;
mod pins;
mod provision;
mod reminders;
mod roster;
mod seal;
mod standdown;
mod status;
mod sweep;
mod timers;

pub use standdown::frozen_power_levels;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::{Client, Room, RoomState};
use tokio::sync::Notify;
use tracing::{error, info, instrument, warn};

use crate::clock::Clock;
use crate::domain::incident::{IncidentId, State};
use crate::input::config::Config;
use crate::matrix::admin::{RateLimits, SynapseAdmin};
use crate::matrix::{self, MatrixError};
use crate::store::{IncidentFilter, Store, StoreError};

/// Why the bot could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
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
}

/// How often pending holders are checked for a new enrolment.
const ROSTER_INTERVAL: Duration = Duration::from_secs(60);

/// How often ended budget windows are audited (see [`crate::domain::command::flood`]).
const FLOOD_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest interval between syncs while a pipeline is running.
const BUSY_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What cordon asks the homeserver to sync: no presence, no typing or read receipts
/// (they would wake the bot for nothing). Members are not lazy-loaded: cordon needs
/// every member of its rooms, and with lazy loading matrix-sdk 0.18 loads them all at
/// the first message of a new room and then waits (five seconds) on key queries for
/// the members who have no device yet.
fn sync_filter() -> matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter {
    use matrix_sdk::ruma::api::client::filter::{Filter, FilterDefinition, RoomEventFilter};
    let mut definition = FilterDefinition::empty();
    definition.presence = Filter::ignore_all();
    definition.room.ephemeral = RoomEventFilter::ignore_all();
    matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter::FilterDefinition(definition)
}

/// The actor name cordon uses for its own audit entries.
pub const ACTOR: &str = "cordon";

/// Everything the handlers share.
pub struct Bot {
    pub(crate) config: Config,
    pub(crate) store: Arc<Store>,
    pub(crate) client: Client,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rate_limits: RateLimits,
    pub(crate) admin: SynapseAdmin,
    /// Signs the manifests of sealed archives (its public key is what records officers
    /// pin). It cannot open an archive.
    pub(crate) signer: Arc<crate::archive::ArchiveSigner>,
    /// Deletes a destroyed room's keys from matrix-sdk's crypto store (see
    /// [`crate::matrix::forget`]).
    pub(crate) room_keys: Arc<crate::matrix::forget::RoomKeyEraser>,
    /// Incidents whose pipeline is running in this process, so that two triggers (a
    /// command and the start-up resume) never run one incident twice at once.
    running: Mutex<HashSet<IncidentId>>,
    /// Asks the sync loop for a sync now (see [`Bot::settle_sync`]).
    sync_kick: Notify,
    /// How many syncs have completed.
    syncs: tokio::sync::watch::Sender<u64>,
    /// Work spawned by handlers, awaited (briefly) at shutdown.
    tasks: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
    /// The scheduler that runs the incidents' timers, once started.
    scheduler: std::sync::OnceLock<crate::schedule::SchedulerHandle>,
    /// When the last sync succeeded (for `/healthz`).
    last_sync: Mutex<Option<std::time::Instant>>,
    /// Requests that provisioning fans out (identity checks, invites), in flight at
    /// once across every incident: many incidents declared together share these
    /// rather than each sending its own burst, which would queue at the homeserver
    /// past the client's request timeout.
    pub(crate) fan_out: tokio::sync::Semaphore,
    /// The control rooms as last read from the store: who to tell when the store
    /// itself can no longer be read.
    control_seen: Mutex<BTreeSet<OwnedRoomId>>,
    /// Each sender's answer budget for commands cordon does not trust.
    flood: Mutex<crate::domain::command::flood::Flood>,
    /// People whose enrolment is revoked, as last read from the store (see
    /// [`Bot::before_send`]).
    revoked: Mutex<Vec<OwnedUserId>>,
}

impl Bot {
    /// Records a successful sync, for `/healthz` and the metrics.
    fn synced(&self) {
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
    fn flood_flush(&self, all: bool) {
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
            commands::audit_suppressed(self, c);
        }
    }

    /// True while any pipeline runs in this process.
    fn busy(&self) -> bool {
        match self.running.lock() {
            Ok(set) => !set.is_empty(),
            Err(poisoned) => !poisoned.into_inner().is_empty(),
        }
    }

    /// Waits until the sync loop has completed `n` more syncs, asking it to sync at
    /// once. Provisioning calls it after the invites: the first sync takes in the new
    /// members, whose key queries the SDK then sends at the start of the next, so their
    /// device lists are settled before the first encrypted message. Bounded: a sync
    /// that does not come in ten seconds is not waited for.
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
            bot: self.clone(),
            id: id.clone(),
        })
    }

    /// Runs `fut` as tracked background work.
    pub(crate) async fn spawn(self: &Arc<Self>, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.lock().await.spawn(fut);
    }
}

/// An incident's pipeline running in this process; see [`Bot::running_guard`].
pub(crate) struct Running {
    bot: Arc<Bot>,
    id: IncidentId,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.bot.finished(&self.id);
    }
}

/// Runs the bot until `shutdown` is notified (SIGTERM or ctrl-c in `cordon run`). Notify
/// it with `notify_one`, whose permit is kept while the loop is busy elsewhere.
pub async fn run(config: Config, shutdown: Arc<Notify>) -> Result<(), BotError> {
    // One process per state directory, for as long as this one runs: a second bot, or
    // an offline CLI, on the same device would drift apart from this one.
    let _lock = matrix::session::StateLock::acquire(&config.state_dir)?;
    let password = config.password.read()?;
    let passphrase = config.store_passphrase.read()?;
    // Before logging in: a port already taken is a start-up error an operator fixes in
    // the config, and /healthz says "starting" while cordon connects.
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let server = crate::metrics::http::Server::bind(addr).await?;
            info!(
                "serving /metrics and /healthz on http://{}",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };
    matrix::session::create_private_dir(&config.state_dir)?;
    // The session first: a cordon that must be recovered leaves no store behind.
    let client = matrix::session::connect(&config, &password, &passphrase).await?;
    let store = Arc::new(Store::open(&config.state_dir.join("store"))?);
    // While the passphrase is at hand: the crypto store's cipher, to find a destroyed
    // room's keys in it (PBKDF2, so off the runtime).
    let room_keys = {
        let sdk_store = matrix::session::SessionPaths::new(&config.state_dir).sdk_store;
        let passphrase = passphrase.clone();
        tokio::task::spawn_blocking(move || {
            matrix::forget::RoomKeyEraser::open(&sdk_store, passphrase.expose())
        })
        .await
        .map_err(|e| MatrixError::Client(format!("opening the crypto store's cipher: {e}")))??
    };
    let signer = Arc::new(crate::archive::ArchiveSigner::load_or_create(
        &config.state_dir,
    )?);
    info!(key = %signer.public(), "archive signing key (pin it with `cordon archive pubkey`)");
    drop(password);
    drop(passphrase);

    let admin = SynapseAdmin::new(&client)?;
    let rate_limits = match admin.lift_own_rate_limits(&config.user).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "could not lift rate limits");
            RateLimits::NotAdmin
        }
    };

    let bot = Arc::new(Bot {
        config,
        store,
        client: client.clone(),
        clock: crate::clock::from_env(),
        rate_limits,
        admin,
        signer,
        room_keys: Arc::new(room_keys),
        running: Mutex::new(HashSet::new()),
        sync_kick: Notify::new(),
        syncs: tokio::sync::watch::Sender::new(0),
        tasks: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        scheduler: std::sync::OnceLock::new(),
        last_sync: Mutex::new(None),
        fan_out: tokio::sync::Semaphore::new(provision::INVITE_CONCURRENCY),
        control_seen: Mutex::new(BTreeSet::new()),
        flood: Mutex::new(crate::domain::command::flood::Flood::default()),
        revoked: Mutex::new(Vec::new()),
    });
    bot.refresh_revoked();
    // Who to tell if the store fails, before anything else can fail it.
    bot.control_rooms();
    // A store that can no longer be read or written (a full disk) stops cordon: it
    // tells the control rooms, then shuts down, and its last complete commit is where
    // the next start resumes. Going on would act without recording what it did.
    let store_watch = {
        let bot = bot.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let failure = bot.store.failed().await;
            error!(error = %failure, "the store failed; cordon is stopping");
            tell_store_failed(&bot, &failure).await;
            shutdown.notify_one();
        })
    };

    register_handlers(&bot);
    crate::app::guard::register(&bot);
    if let Some(server) = &metrics {
        server.attach(Arc::new(health::BotProbe::new(&bot)));
    }

    // `cordon verify` talks to this process; the bot's own client runs every flow.
    let admin_socket = crate::trust::socket::AdminSocket::bind(
        &bot.config.state_dir,
        Arc::new(crate::trust::socket::AdminContext {
            client: client.clone(),
            store: bot.store.clone(),
            clock: bot.clock.clone(),
            on_enrolled: Some(person_hook(&bot, |bot, user| async move {
                bot.refresh_revoked();
                roster::admit_enrolled(&bot, Some(&*user)).await;
                crate::app::guard::on_enrolled(&bot, &user).await;
            })),
            on_revoked: Some(person_hook(&bot, |bot, user| async move {
                crate::app::guard::on_revoked(&bot, &user).await;
            })),
        }),
    )?;

    // First sync: from the saved token, so events since the last run reach the handlers
    // (each command is deduplicated by event id in the store).
    let settings = SyncSettings::default().timeout(Duration::from_secs(0));
    let first = tokio::select! {
        r = client.sync_once(settings) => r,
        () = shutdown.notified() => {
            admin_socket.close().await;
            return Ok(());
        }
    };
    if let Err(e) = first {
        admin_socket.close().await;
        return Err(MatrixError::from(e).into());
    }
    bot.synced();
    info!("first sync done; catching up");

    catch_up_invites(&bot).await;
    commands::catch_up(&bot).await;
    resume_incidents(&bot).await;
    crate::app::guard::reconcile_all(&bot).await;
    roster::replay_invites(&bot).await;
    roster::admit_enrolled(&bot, None).await;
    // Time limits, retention and reminders: the timers of every open incident, then the
    // scheduler, which catches up on whatever fell due while cordon was down.
    timers::ensure_all(&bot);
    let scheduler = crate::schedule::Scheduler::spawn(
        bot.store.clone(),
        bot.clock.clone(),
        Arc::new(jobs::BotJobs {
            bot: Arc::downgrade(&bot),
        }),
        crate::schedule::SchedulerConfig {
            time_zone: bot.config.time_zone,
            ..crate::schedule::SchedulerConfig::default()
        },
    );
    let _ = bot.scheduler.set(scheduler.clone());
    // Pending holders enrolled while cordon ran (or offline) are let in within a minute.
    let enrolled_watch = {
        let b = bot.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ROSTER_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                roster::admit_enrolled(&b, None).await;
            }
        })
    };
    // The counts of suppressed commands are audited soon after each window ends.
    let flood_watch = {
        let weak = Arc::downgrade(&bot);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLOOD_FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                let Some(bot) = weak.upgrade() else { return };
                bot.flood_flush(false);
            }
        })
    };
    info!(user = %bot.config.user, "cordon is ready");

    let settings = SyncSettings::default()
        .timeout(Duration::from_secs(30))
        .filter(sync_filter());
    let mut backoff = Duration::from_secs(1);
    let busy_settings = settings.clone().timeout(Duration::from_secs(0));
    let mut last_sync = tokio::time::Instant::now();
    loop {
        // While a pipeline runs, every invite it sends would wake the long poll at once;
        // syncing at most once a second then leaves the homeserver to the invites. A
        // command waits at most that second longer.
        let busy = bot.busy();
        if busy {
            let next = last_sync + BUSY_SYNC_INTERVAL;
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = bot.sync_kick.notified() => {}
                () = shutdown.notified() => break,
            }
        }
        last_sync = tokio::time::Instant::now();
        // While busy, no long poll: a pipeline asking for a sync is served at once.
        let this = if busy {
            busy_settings.clone()
        } else {
            settings.clone()
        };
        tokio::select! {
            r = client.sync_once(this) => match r {
                Ok(_) => {
                    bot.synced();
                    backoff = Duration::from_secs(1);
                    bot.syncs.send_modify(|n| *n += 1);
                }
                Err(e) => {
                    if let Some(kind) = e.client_api_error_kind()
                        && matches!(kind, matrix_sdk::ruma::api::error::ErrorKind::UnknownToken(_))
                    {
                        error!("the homeserver no longer accepts cordon's access token (logged out?)");
                        admin_socket.close().await;
                        return Err(MatrixError::from(e).into());
                    }
                    warn!(error = %e, retry_in = ?backoff, "sync failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.notified() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            },
            () = shutdown.notified() => break,
        }
        reap(&bot).await;
    }

    info!("shutting down");
    admin_socket.close().await;
    enrolled_watch.abort();
    flood_watch.abort();
    bot.flood_flush(true);
    // Running jobs finish (every one is resumable, so a slow one is cut short).
    if tokio::time::timeout(Duration::from_secs(10), scheduler.shutdown())
        .await
        .is_err()
    {
        warn!("stopping unfinished scheduled jobs; they run again at the next start");
    }
    let mut tasks = std::mem::take(&mut *bot.tasks.lock().await);
    // Every step is resumable, so in-flight work may be cut short; give it a moment to
    // finish what it is doing.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        warn!("stopping unfinished work; it resumes at the next start");
    }
    store_watch.abort();
    match bot.store.unusable() {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
}

/// Tells every control room, without recording it (the store cannot be written), that
/// cordon is stopping because its store failed, and what operators should do.
async fn tell_store_failed(bot: &Bot, failure: &StoreError) {
    let body = format!(
        "ALERT: cordon has stopped: {failure}.\nUntil it is running again it does not \
         answer commands, provision, remind, redact expired messages, guard the rooms or \
         stand incidents down; the rooms themselves stay as they are (invite-only, and \
         only cordon may invite)."
    );
    let mention: Vec<OwnedUserId> = bot.config.operators.iter().cloned().collect();
    let send = async {
        for room_id in bot.control_rooms() {
            let Some(room) = crate::matrix::rooms::joined(&bot.client, room_id.as_str()) else {
                continue;
            };
            let content = crate::matrix::rooms::notice(&body, &mention);
            let txn = matrix_sdk::ruma::TransactionId::new();
            if let Err(e) = crate::matrix::rooms::send_message(&room, content, txn.as_str()).await {
                warn!(room = %room_id, error = %e, "could not tell a control room the store failed");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), send)
        .await
        .is_err()
    {
        warn!("telling the control rooms the store failed took too long");
    }
}

/// An admin-socket hook that runs `act` for the person as tracked background work of
/// the bot, if it still runs.
fn person_hook<F, Fut>(bot: &Arc<Bot>, act: F) -> crate::trust::socket::PersonHook
where
    F: Fn(Arc<Bot>, OwnedUserId) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let weak = Arc::downgrade(bot);
    let act = Arc::new(act);
    Arc::new(move |user: OwnedUserId| {
        let Some(bot) = weak.upgrade() else { return };
        let act = act.clone();
        tokio::spawn(async move {
            let work = act(bot.clone(), user);
            bot.spawn(work).await;
        });
    })
}

async fn reap(bot: &Arc<Bot>) {
    let mut tasks = bot.tasks.lock().await;
    while let Some(done) = tasks.try_join_next() {
        if let Err(e) = done
            && e.is_panic()
        {
            error!("a background task panicked");
        }
    }
}

fn register_handlers(bot: &Arc<Bot>) {
    let b = bot.clone();
    bot.client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent,
              room: Room,
              encryption: Option<matrix_sdk::deserialized_responses::EncryptionInfo>| {
            let bot = b.clone();
            async move { on_message(bot, ev, room, encryption).await }
        },
    );
    let b = bot.clone();
    bot.client.add_event_handler(
        move |ev: matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent, room: Room| {
            let bot = b.clone();
            async move {
                let b = bot.clone();
                bot.spawn(advice::on_reaction(b, ev, room)).await;
            }
        },
    );
    // Attachment addresses, noted as cordon first reads each message (decrypted when it
    // can be), for stand-down to delete.
    let b = bot.clone();
    bot.client.add_event_handler(
        move |ev: matrix_sdk::ruma::serde::Raw<
            matrix_sdk::ruma::events::AnySyncMessageLikeEvent,
        >,
              room: Room| {
            let bot = b.clone();
            async move { attachments::on_message_like(&bot, &ev, &room) }
        },
    );
    let b = bot.clone();
    bot.client
        .add_event_handler(move |ev: StrippedRoomMemberEvent, room: Room| {
            let bot = b.clone();
            async move { on_invite(bot, ev, room).await }
        });
}

async fn on_message(
    bot: Arc<Bot>,
    ev: OriginalSyncRoomMessageEvent,
    room: Room,
    encryption: Option<matrix_sdk::deserialized_responses::EncryptionInfo>,
) {
    if ev.sender == bot.config.user {
        return;
    }
    let MessageType::Text(text) = &ev.content.msgtype else {
        return;
    };
    let Some(parsed) = crate::domain::command::parse(&text.body) else {
        return;
    };
    let body = text.body.clone();
    let b = bot.clone();
    bot.spawn(async move {
        let device = b.sender_device(encryption.as_ref(), &ev.sender).await;
        let incoming = commands::Incoming {
            room,
            device,
            sender: ev.sender.clone(),
            event_id: ev.event_id.clone(),
            sent_at: millis_to_utc(ev.origin_server_ts.get().into()),
            body,
            encryption,
            parsed,
        };
        commands::handle(b, incoming).await
    })
    .await;
}

/// Joins an encrypted room as a control room when an operator invited cordon; declines
/// every other invite.
#[instrument(skip_all, fields(room = %room.room_id(), inviter = %ev.sender))]
async fn on_invite(bot: Arc<Bot>, ev: StrippedRoomMemberEvent, room: Room) {
    if ev.state_key != bot.config.user || ev.content.membership != MembershipState::Invite {
        return;
    }
    if room.state() != RoomState::Invited {
        return;
    }
    handle_invite(&bot, &room, &ev.sender).await;
}

async fn handle_invite(bot: &Arc<Bot>, room: &Room, inviter: &OwnedUserId) {
    let now = bot.now();
    let room_id = room.room_id().to_owned();
    if !bot.is_operator(inviter) {
        decline(
            bot,
            room,
            inviter,
            "invited by someone who is not a configured operator",
        )
        .await;
        return;
    }
    // The invite's stripped state normally carries m.room.encryption; when the server
    // leaves it out, join and ask the server, and leave again if it is not encrypted.
    let stripped_encrypted = room
        .get_state_event(StateEventType::RoomEncryption, "")
        .await
        .ok()
        .flatten()
        .is_some();
    if let Err(e) = room.join().await {
        warn!(error = %e, "could not join the control room");
        return;
    }
    let encrypted = stripped_encrypted
        || room
            .latest_encryption_state()
            .await
            .map(|s| s.is_encrypted())
            .unwrap_or(false);
    if !encrypted {
        decline(bot, room, inviter, "the room is not end-to-end encrypted").await;
        return;
    }
    if let Err(e) = bot
        .store
        .add_control_room(room_id.as_str(), inviter.as_str(), now)
    {
        error!(error = %e, "store: recording the control room");
        return;
    }
    info!("joined as a control room");
    let body = "cordon is here. This is now a control room: incident commanders can \
                declare incidents here. Type `!cordon help` to see what I can do.";
    let key = format!("control/{room_id}/hello");
    let _ = commands::send_once(
        bot,
        room,
        &key,
        None,
        crate::matrix::rooms::notice(body, &[]),
    )
    .await;
}

/// Declines an invite (or leaves a room joined to inspect it), and audits why.
async fn decline(bot: &Arc<Bot>, room: &Room, inviter: &OwnedUserId, why: &str) {
    info!(why, "declining invite");
    let _ = bot.store.audit(
        ACTOR,
        "invite.declined",
        None,
        serde_json::json!({ "room": room.room_id(), "inviter": inviter, "why": why }),
        bot.now(),
    );
    if let Err(e) = room.leave().await {
        warn!(error = %e, "could not decline the invite");
    }
}

/// Invites that arrived while cordon was down and were not handled.
async fn catch_up_invites(bot: &Arc<Bot>) {
    for room in bot.client.invited_rooms() {
        let Ok(Some(me)) = room.get_member_no_sync(&bot.config.user).await else {
            continue;
        };
        let inviter = me.event().sender().to_owned();
        handle_invite(bot, &room, &inviter).await;
    }
}

/// Resumes every incident whose pipeline was interrupted.
async fn resume_incidents(bot: &Arc<Bot>) {
    let incidents = match bot
        .store
        .incidents(&IncidentFilter::in_states(&[State::Provisioning]))
    {
        Ok(list) => list,
        Err(e) => {
            error!(error = %e, "store: listing incidents to resume");
            return;
        }
    };
    for incident in incidents {
        info!(incident = %incident.id, "resuming provisioning");
        let b = bot.clone();
        bot.spawn(async move { provision::run(b, incident.id).await })
            .await;
    }
    // A stand-down interrupted by a stop or a crash resumes through its timer, armed
    // again by `timers::ensure_all`.
}

/// Milliseconds since the epoch as a UTC time (the epoch itself if out of range).
pub fn millis_to_utc(ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default()
}
