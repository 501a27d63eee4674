//! The running bot: `cordon run`.
//!
//! Start-up, in order: read the secrets, listen for `/metrics` and `/healthz`, restore
//! (or create) the Matrix session, open the store, lift rate limits when cordon is a
//! server admin, register the event handlers, sync once, then catch up: commands that
//! arrived while cordon was down are found by paging back through each control room,
//! and incidents left half-provisioned are resumed (by the scheduler, like a
//! stand-down). Then it syncs until SIGTERM or ctrl-c, and shuts down as
//! [`crate::tasks`] describes: every task it started runs on the context's one tracker
//! and stops on its one token, and [`run`] returns once all have ended.
//!
//! - `dispatch`: chat commands, checked in DESIGN.md's order, run, each answered once;
//!   `resolve` finds the incident a command is about; `declare` starts one.
//! - `provision`: the resumable provisioning pipeline behind `declare`, a scheduler job
//!   like the stand-down.
//! - `status`: the `status` reply.
//! - `attachments`: notes every attachment address sync delivers in an incident room,
//!   for stand-down to delete.
//! - `forget`: after destruction, cordon's own Matrix stores forget the room.

mod advice;
mod attachments;
mod chat;
mod ctx;
mod deadlines;
mod declare;
mod destroy;
mod dispatch;
mod fhir;
mod forget;
pub mod guard;
mod health;
mod invites;
mod jobs;
mod pid;
mod pins;
pub mod prevention;
mod provision;
mod record;
mod reminders;
mod resolve;
mod roster;
mod seal;
mod standdown;
mod status;
mod sweep;
mod timers;
mod turns;

pub use ctx::{ACTOR, AppError, Ctx, millis_to_utc};
pub use standdown::frozen_power_levels;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::OwnedUserId;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent};
use matrix_sdk::{Room, RoomState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument, warn};

use crate::input::config::Config;
use crate::matrix::admin::{RateLimits, SynapseAdmin};
use crate::matrix::{self, MatrixError};
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;

/// How often pending holders are checked for a new enrolment.
const ROSTER_INTERVAL: Duration = Duration::from_secs(60);

/// How often ended budget windows are audited (see [`crate::domain::command::flood`]).
const FLOOD_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest interval between syncs while a pipeline is running.
const BUSY_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a sync holds cordon's sends back (`matrix::rooms::hold_sends`): one that
/// takes longer lets them go on beside it.
const HOLD_SENDS_AT_MOST: Duration = Duration::from_secs(10);

/// How long the work under way at shutdown (a job, a command, a reconcile) is given to
/// finish before it is cut short; every step resumes at the next start (see
/// [`crate::tasks`]).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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

/// Runs the bot until `stop` is cancelled (by `cordon run` on SIGTERM or ctrl-c, or by
/// the bot itself when its store fails), then shuts down as [`crate::tasks`] describes:
/// the work under way gets [`SHUTDOWN_GRACE`] to finish and is then cut short, and this
/// returns only once every task the bot started has ended.
pub async fn run(
    config: Config,
    recovery_key: matrix::session::RecoveryKeyOut,
    stop: CancellationToken,
) -> Result<(), AppError> {
    // One process per state directory, for as long as this one runs: a second bot, or
    // an offline CLI, on the same device would drift apart from this one.
    let _lock = matrix::session::StateLock::acquire(&config.state_dir)?;
    let tasks = Tasks::new(stop);
    let ran = serve(config, &recovery_key, &tasks).await;
    info!("shutting down");
    if !tasks.drain(SHUTDOWN_GRACE).await {
        warn!("stopping unfinished work; it resumes at the next start");
    }
    match ran?.store.unusable() {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
}

/// Starts the bot on `tasks` and syncs until they stop. Returns the bot, to be looked
/// at once every task has ended.
async fn serve(
    config: Config,
    recovery_key: &matrix::session::RecoveryKeyOut,
    tasks: &Tasks,
) -> Result<Arc<Ctx>, AppError> {
    let password = config.password.read()?;
    let passphrase = config.store_passphrase.read()?;
    // Playbooks are read again at each declare: one broken now is worth a warning now.
    crate::doctor::local::warn_broken_playbooks(&config.playbooks_dir);
    // Before logging in: a port already taken is a start-up error an operator fixes in
    // the config, and /healthz says "starting" while cordon connects.
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let server = crate::metrics::http::Server::bind_until(addr, tasks).await?;
            info!(
                "serving /metrics and /healthz on http://{}",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };
    // Also before logging in: the prevention module's questions, refused ("starting")
    // until the bot is up, so the homeserver fails closed meanwhile.
    let gate = match &config.prevention {
        Some(p) => Some(prevention::Gate::bind(p, tasks).await?),
        None => None,
    };
    matrix::session::create_private_dir(&config.state_dir)?;
    // The session first: a cordon that must be recovered leaves no store behind.
    let client = matrix::session::connect(&config, &password, &passphrase, recovery_key).await?;
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
        &passphrase,
    )?);
    info!(key = %signer.public(), "archive signing key (pin it with `cordon archive pubkey`)");
    // The delivery key: made when a FHIR server is configured; kept loaded while its
    // file exists, for bundles that wait from before the config changed.
    let fhir_key = if config.fhir.delivery.is_some() {
        Some(crate::archive::delivery::load_or_create(
            &config.state_dir,
            &passphrase,
        )?)
    } else if crate::archive::delivery::key_path(&config.state_dir).exists() {
        Some(crate::archive::delivery::load(
            &config.state_dir,
            &passphrase,
        )?)
    } else {
        None
    }
    .map(Arc::new);
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

    let config_prevention = config.prevention.is_some();
    let provisioning_at_once = config.provisioning_at_once;
    let clock = crate::clock::from_env();
    let started_at = clock.now();
    let ctx = Arc::new(Ctx {
        config,
        store,
        client: client.clone(),
        clock,
        rate_limits,
        admin,
        signer,
        fhir_key,
        room_keys: Arc::new(room_keys),
        running: Mutex::new(HashSet::new()),
        sync_kick: Notify::new(),
        syncs: tokio::sync::watch::Sender::new(0),
        tasks: tasks.clone(),
        scheduler: std::sync::OnceLock::new(),
        last_sync: Mutex::new(None),
        fan_out: tokio::sync::Semaphore::new(provision::INVITE_CONCURRENCY),
        provisioning: turns::Turns::new(provisioning_at_once),
        identities_fetched: Mutex::new(std::collections::HashMap::new()),
        accounts_active: Mutex::new(std::collections::HashMap::new()),
        control_seen: Mutex::new(BTreeSet::new()),
        flood: Mutex::new(crate::domain::command::flood::Flood::default()),
        revoked: Mutex::new(Vec::new()),
        // Configured: off until the module's status says otherwise (read at once).
        prevention: Mutex::new(config_prevention.then(|| ctx::PreventionSeen {
            on: false,
            detail: "the module's status is not read yet".to_owned(),
        })),
        started_at,
    });
    ctx.refresh_revoked();
    // Who to tell if the store fails, before anything else can fail it.
    ctx.control_rooms();
    // A store that can no longer be read or written (a full disk) stops cordon: it
    // tells the control rooms, then shuts down, and its last complete commit is where
    // the next start resumes. Going on would act without recording what it did.
    {
        let ctx = ctx.clone();
        tasks.spawn_detached(async move {
            tokio::select! {
                failure = ctx.store.failed() => {
                    error!(error = %failure, "the store failed; cordon is stopping");
                    tell_store_failed(&ctx, &failure).await;
                    ctx.tasks.stop();
                }
                () = ctx.tasks.stopping() => {}
            }
        });
    }

    register_handlers(&ctx);
    crate::app::guard::register(&ctx);
    if let Some(server) = &metrics {
        server.attach(Arc::new(health::BotProbe::new(&ctx)));
    }
    // Before the first sync: a provisioning resumed from here creates rooms, and the
    // homeserver asks about their first events while `createRoom` is open.
    if let Some(gate) = &gate {
        gate.attach(&ctx);
    }

    // `cordon verify` talks to this process; the bot's own client runs every flow.
    let _admin_socket = crate::trust::socket::AdminSocket::bind(
        &ctx.config.state_dir,
        Arc::new(crate::trust::socket::AdminContext {
            state_dir: ctx.config.state_dir.clone(),
            client: client.clone(),
            store: ctx.store.clone(),
            clock: ctx.clock.clone(),
            on_enrolled: Some(person_hook(&ctx, |ctx, user| async move {
                ctx.refresh_revoked();
                roster::admit_enrolled(&ctx, Some(&*user)).await;
                crate::app::guard::on_enrolled(&ctx, &user).await;
            })),
            on_revoked: Some(person_hook(&ctx, |ctx, user| async move {
                crate::app::guard::on_revoked(&ctx, &user).await;
            })),
        }),
        tasks,
    )?;

    // First sync: from the saved token, so events since the last run reach the handlers
    // (each command is deduplicated by event id in the store).
    let settings = SyncSettings::default().timeout(Duration::from_secs(0));
    let first = tokio::select! {
        r = client.sync_once(settings) => r,
        () = tasks.stopping() => return Ok(ctx),
    };
    if let Err(e) = first {
        return Err(MatrixError::from(e).into());
    }
    ctx.synced();
    info!("first sync done; catching up");

    if let (Some(gate), Some(p)) = (&gate, &ctx.config.prevention) {
        prevention::watch(&ctx, p, gate.local_addr());
    }
    catch_up_invites(&ctx).await;
    dispatch::catch_up(&ctx).await;
    crate::app::guard::reconcile_all(&ctx).await;
    invites::replay(&ctx, invites::Kind::Roster).await;
    roster::admit_enrolled(&ctx, None).await;
    // Time limits, retention, reminders and the pipelines: the timers of every open
    // incident (a provisioning or a stand-down interrupted by a stop or a crash
    // resumes through its timer), then the scheduler, which catches up on whatever
    // fell due while cordon was down.
    timers::ensure_all(&ctx);
    let scheduler = crate::schedule::Scheduler::spawn(
        ctx.store.clone(),
        ctx.clock.clone(),
        Arc::new(jobs::AppJobs {
            ctx: Arc::downgrade(&ctx),
        }),
        crate::schedule::SchedulerConfig {
            time_zone: ctx.config.time_zone,
            backoff_by_kind: std::collections::HashMap::from([(
                crate::domain::schedule::TimerKind::Other(
                    crate::domain::incident::timers::PROVISION_KIND.to_owned(),
                ),
                crate::domain::incident::timers::provision_backoff(),
            )]),
            ..crate::schedule::SchedulerConfig::default()
        },
        tasks,
    );
    let _ = ctx.scheduler.set(scheduler);
    // Pending holders enrolled while cordon ran (or offline) are let in within a minute.
    {
        let b = ctx.clone();
        tasks.spawn_detached(async move {
            let mut tick = tokio::time::interval(ROSTER_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = b.tasks.stopping() => return,
                    _ = tick.tick() => {}
                }
                roster::admit_enrolled(&b, None).await;
            }
        });
    }
    // The counts of suppressed commands are audited soon after each window ends.
    {
        let b = ctx.clone();
        tasks.spawn_detached(async move {
            let mut tick = tokio::time::interval(FLOOD_FLUSH_INTERVAL);
            loop {
                tokio::select! {
                    () = b.tasks.stopping() => return,
                    _ = tick.tick() => {}
                }
                b.flood_flush(false);
            }
        });
    }
    info!(user = %ctx.config.user, "cordon is ready");

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
        let busy = ctx.busy();
        if busy {
            let next = last_sync + BUSY_SYNC_INTERVAL;
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = ctx.sync_kick.notified() => {}
                () = tasks.stopping() => break,
            }
        }
        last_sync = tokio::time::Instant::now();
        // While busy, no long poll: a pipeline asking for a sync is served at once. And no
        // encrypted send overlaps the sync (`matrix::rooms::hold_sends`): a pipeline's new
        // rooms and invites make it mark members for key queries, which every send would
        // otherwise wait five seconds for, one after another. Idle, the long poll stays:
        // cordon creates no rooms then, and invites only now and then (an enrolled
        // holder).
        let (this, mut held) = if busy {
            let held = tokio::select! {
                held = matrix::rooms::hold_sends() => held,
                () = tasks.stopping() => break,
            };
            (busy_settings.clone(), Some(held))
        } else {
            (settings.clone(), None)
        };
        // A homeserver slow to answer holds the sends back for a while at most.
        let sync = client.sync_once(this);
        tokio::pin!(sync);
        let release = tokio::time::sleep(HOLD_SENDS_AT_MOST);
        tokio::pin!(release);
        let synced = loop {
            tokio::select! {
                r = &mut sync => break Some(r),
                () = &mut release, if held.is_some() => {
                    warn!("a sync is taking long; sends go on beside it");
                    held = None;
                }
                () = tasks.stopping() => break None,
            }
        };
        drop(held);
        let Some(synced) = synced else { break };
        match synced {
            Ok(_) => {
                ctx.synced();
                backoff = Duration::from_secs(1);
                ctx.syncs.send_modify(|n| *n += 1);
            }
            Err(e) => {
                if let Some(kind) = e.client_api_error_kind()
                    && matches!(
                        kind,
                        matrix_sdk::ruma::api::error::ErrorKind::UnknownToken(_)
                    )
                {
                    error!("the homeserver no longer accepts cordon's access token (logged out?)");
                    return Err(MatrixError::from(e).into());
                }
                warn!(error = %e, retry_in = ?backoff, "sync failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tasks.stopping() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
    ctx.flood_flush(true);
    Ok(ctx)
}

/// Tells every control room, without recording it (the store cannot be written), that
/// cordon is stopping because its store failed, and what operators should do.
async fn tell_store_failed(ctx: &Ctx, failure: &StoreError) {
    let body = format!(
        "ALERT: cordon has stopped: {failure}.\nUntil it is running again it does not \
         answer commands, provision, remind, redact expired messages, guard the rooms or \
         stand incidents down; the rooms themselves stay as they are (invite-only, and \
         only cordon may invite)."
    );
    let mention: Vec<OwnedUserId> = ctx.config.operators.iter().cloned().collect();
    let send = async {
        for room_id in ctx.control_rooms() {
            let Some(room) = crate::matrix::rooms::joined(&ctx.client, room_id.as_str()) else {
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
fn person_hook<F, Fut>(ctx: &Arc<Ctx>, act: F) -> crate::trust::socket::PersonHook
where
    F: Fn(Arc<Ctx>, OwnedUserId) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let weak = Arc::downgrade(ctx);
    let act = Arc::new(act);
    Arc::new(move |user: OwnedUserId| {
        let Some(ctx) = weak.upgrade() else { return };
        ctx.spawn(act(ctx.clone(), user));
    })
}

fn register_handlers(ctx: &Arc<Ctx>) {
    let b = ctx.clone();
    ctx.client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent,
              room: Room,
              encryption: Option<matrix_sdk::deserialized_responses::EncryptionInfo>| {
            let ctx = b.clone();
            async move { on_message(ctx, ev, room, encryption).await }
        },
    );
    let b = ctx.clone();
    ctx.client.add_event_handler(
        move |ev: matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent, room: Room| {
            let ctx = b.clone();
            async move {
                let b = ctx.clone();
                ctx.spawn(advice::on_reaction(b, ev, room));
            }
        },
    );
    // Attachment addresses, noted as cordon first reads each message (decrypted when it
    // can be), for stand-down to delete.
    let b = ctx.clone();
    ctx.client.add_event_handler(
        move |ev: matrix_sdk::ruma::serde::Raw<
            matrix_sdk::ruma::events::AnySyncMessageLikeEvent,
        >,
              room: Room| {
            let ctx = b.clone();
            async move { attachments::on_message_like(&ctx, &ev, &room) }
        },
    );
    let b = ctx.clone();
    ctx.client
        .add_event_handler(move |ev: StrippedRoomMemberEvent, room: Room| {
            let ctx = b.clone();
            async move { on_invite(ctx, ev, room).await }
        });
}

async fn on_message(
    ctx: Arc<Ctx>,
    ev: OriginalSyncRoomMessageEvent,
    room: Room,
    encryption: Option<matrix_sdk::deserialized_responses::EncryptionInfo>,
) {
    if ev.sender == ctx.config.user {
        return;
    }
    let MessageType::Text(text) = &ev.content.msgtype else {
        return;
    };
    let Some(parsed) = crate::domain::command::parse(&text.body) else {
        // Not a command: a message in an incident room may hold patient identifiers.
        let body = text.body.clone();
        let b = ctx.clone();
        ctx.spawn(async move {
            pid::on_message(&b, &room, &ev.sender, &ev.event_id, &body).await;
        });
        return;
    };
    let body = text.body.clone();
    let reply_to = chat::reply_target(&ev.content);
    let b = ctx.clone();
    ctx.spawn(async move {
        let device = b.sender_device(encryption.as_ref(), &ev.sender).await;
        let incoming = chat::Incoming {
            room,
            device,
            sender: ev.sender.clone(),
            event_id: ev.event_id.clone(),
            sent_at: millis_to_utc(ev.origin_server_ts.get().into()),
            body,
            encryption,
            parsed,
            reply_to,
        };
        dispatch::handle(b, incoming).await
    });
}

/// Joins an encrypted room as a control room when an operator invited cordon; declines
/// every other invite.
#[instrument(skip_all, fields(room = %room.room_id(), inviter = %ev.sender))]
async fn on_invite(ctx: Arc<Ctx>, ev: StrippedRoomMemberEvent, room: Room) {
    if ev.state_key != ctx.config.user || ev.content.membership != MembershipState::Invite {
        return;
    }
    if room.state() != RoomState::Invited {
        return;
    }
    handle_invite(&ctx, &room, &ev.sender).await;
}

async fn handle_invite(ctx: &Arc<Ctx>, room: &Room, inviter: &OwnedUserId) {
    let now = ctx.now();
    let room_id = room.room_id().to_owned();
    if !ctx.is_operator(inviter) {
        decline(
            ctx,
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
        decline(ctx, room, inviter, "the room is not end-to-end encrypted").await;
        return;
    }
    if let Err(e) = ctx
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
    if let Err(e) = chat::send_once(
        ctx,
        room,
        &key,
        None,
        crate::matrix::rooms::notice(body, &[]),
    )
    .await
    {
        warn!(error = %e, "could not greet a new control room");
    }
}

/// Declines an invite (or leaves a room joined to inspect it), and audits why.
async fn decline(ctx: &Arc<Ctx>, room: &Room, inviter: &OwnedUserId, why: &str) {
    info!(why, "declining invite");
    if let Err(e) = ctx.store.audit(
        ACTOR,
        "invite.declined",
        None,
        serde_json::json!({ "room": room.room_id(), "inviter": inviter, "why": why }),
        ctx.now(),
    ) {
        error!(error = %e, "store: auditing a declined invite");
    }
    if let Err(e) = room.leave().await {
        warn!(error = %e, "could not decline the invite");
    }
}

/// Invites that arrived while cordon was down and were not handled.
async fn catch_up_invites(ctx: &Arc<Ctx>) {
    for room in ctx.client.invited_rooms() {
        let Ok(Some(me)) = room.get_member_no_sync(&ctx.config.user).await else {
            continue;
        };
        let inviter = me.event().sender().to_owned();
        handle_invite(ctx, &room, &inviter).await;
    }
}
