//! The guard: watches every incident room all the time and reconciles what the server
//! shows against cordon's own records (the roster, and each room's desired state and
//! name, topic and pins), whatever sender an event claims.
//!
//! Synapse's admin API can forge a power-levels change and an invite in cordon's name
//! (`make_room_admin`) and force-join anyone (`/_synapse/admin/v1/join`). So no event
//! is believed: any state event only tells the guard to look at the incident, and each
//! room's whole state is then read from the server and judged against the store alone:
//!
//! - a member or invitee cordon did not let in is banned;
//! - a role holder cordon let in whom someone else banned or removed is let back in
//!   (one who left by their own hand stays out, and `status` names them);
//! - every state event is as cordon set it: one of a type cordon set is put back to
//!   cordon's content, one it never set (a tombstone, a widget, a server ACL, pins, an
//!   avatar, any custom type or state key) is emptied;
//! - cordon itself no longer in a room it never left is raised at once.
//!
//! Each burst of findings in an incident is raised once, in its control room and
//! command room, as a possible server compromise. Control rooms, which are the
//! operators' and not cordon's, are watched for joins no operator asked for.
//!
//! # Layout
//!
//! - [`state`]: the room's state as the server shows it, and what in it is not as
//!   cordon set it (pure).
//! - [`members`]: who may be in a room and who was put out (pure), removing members
//!   whose identity changed or whose enrolment was revoked, inviting them back once
//!   verified again, and letting back in holders someone else put out.
//! - [`devices`]: the device and identity watchers, and alerts about devices their
//!   owner has not cross-signed.
//! - `alert`: alert texts (pure), and sending each alert once to the incident's control
//!   and command rooms.
//! - `standing`: people's standing enforced in cordon's crypto store on every key
//!   update (revoked: every device blacklisted; identity changed: no device keeps local
//!   trust), and raised in the control rooms they are in.
//! - `control`: control-room members who joined without an operator's invite.
//!
//! # When it runs
//!
//! - On every state event in an incident room, that room is reconciled [`SETTLE`]
//!   later, with every other room of the incident that has an event meanwhile, so that
//!   a burst of changes is undone and raised together; events arriving during a
//!   reconcile queue one more. An event that sets what cordon intends asks for
//!   nothing (an invite or join of someone the room's roster lets in, any other state
//!   as the room's record has it): it changes nothing the guard would find wrong, and
//!   under load it is nearly all of the events.
//! - On every membership change in a control room, that room is checked at once
//!   (changes during a check queue one more).
//! - On every new device or identity matrix-sdk learns of, that person is checked.
//! - At start-up ([`reconcile_all`]) and every [`PERIOD`] after it, everything is:
//!   changes made while cordon was down are caught then.
//!
//! Rooms are watched in every incident state in which they exist (`failed`, and
//! `archived` while destruction waits or a legal hold keeps them, included), until
//! the stand-down records a room as being destroyed.
//!
//! Crash safety: each alert's text is stored before the guard acts and sent once (see
//! `alert`), each offending event is alerted once (marked in the store), and every
//! action is idempotent, so a restart repeats what was cut short without duplicates.
//! Every action is audited with actor `cordon`, the event time and the detection time.

mod alert;
mod control;
pub mod devices;
mod look;
pub mod members;
mod standing;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use matrix_sdk::ruma::api::client::state::get_state_events;
use matrix_sdk::ruma::events::AnySyncStateEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Room, RoomState};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, instrument, warn};

pub use members::{IDENTITY_CHANGED, REVOKED};

use crate::app::ctx::{ACTOR, Ctx};
use crate::domain::incident::{Incident, IncidentId, State};
use crate::matrix::MatrixError;
use crate::store::{IncidentFilter, RoomRecord, RoomStatus, RosterEntry, RosterStatus};
use crate::trust::{self, Trust};
use alert::Finding;
use look::{Look, look};
use members::Verdict;

/// How often everything is reconciled in the background.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Incident states whose rooms are watched.
///
/// Every state in which its rooms exist: `failed` (a step failed, the rooms are still
/// there) and `archived` (sealed, destruction waiting, or held by a legal hold)
/// included. Rooms being destroyed are not watched (see [`Watched::from_record`]).
const WATCHED_STATES: [State; 5] = [
    State::Provisioning,
    State::Active,
    State::StandingDown,
    State::Failed,
    State::Archived,
];

/// How long a burst of events in an incident's rooms settles before the guard looks,
/// so that an intruder's changes are undone and raised together.
const SETTLE: Duration = Duration::from_secs(2);

/// One lock per room or person, so two checks of the same thing never interleave (a
/// burst of events would otherwise ban twice and alert twice), and a flag that a check
/// is already queued behind the running one.
///
/// Process-wide rather than on [`Ctx`] because the bot's struct is not the guard's to
/// extend; room and user ids are unique, so sharing it between bots is harmless.
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    queued: AtomicBool,
    /// For an incident: its rooms with events since the queued check took them.
    rooms: std::sync::Mutex<BTreeSet<OwnedRoomId>>,
}

static SLOTS: LazyLock<std::sync::Mutex<HashMap<String, Arc<Slot>>>> =
    LazyLock::new(Default::default);

fn slot(key: String) -> Arc<Slot> {
    let mut slots = match SLOTS.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    slots
        .entry(key)
        .or_insert_with(|| {
            Arc::new(Slot {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                queued: AtomicBool::new(false),
                rooms: std::sync::Mutex::default(),
            })
        })
        .clone()
}

/// Holds off the guard's look at `incident`'s rooms while cordon itself changes their
/// state or takes them down: the record first, then the event, and a look in between
/// would take cordon's own change, half made, for a forgery (and raise it).
pub(crate) async fn changing(incident: &IncidentId) -> tokio::sync::OwnedMutexGuard<()> {
    slot(format!("incident:{incident}"))
        .lock
        .clone()
        .lock_owned()
        .await
}

/// A member's roster entries in one open incident.
pub(crate) struct Seats {
    incident: Incident,
    entries: Vec<RosterEntry>,
}

/// The incident, if its rooms are watched.
fn open_incident(ctx: &Ctx, id: &IncidentId) -> Option<Incident> {
    match ctx.store.incident(id) {
        Ok(Some(i)) if WATCHED_STATES.contains(&i.state) => Some(i),
        Ok(_) => None,
        Err(e) => {
            error!(error = %e, "store: reading an incident");
            None
        }
    }
}

/// `user`'s roster entries whose status passes `keep`, by open incident.
fn seats_where(ctx: &Ctx, user: &UserId, keep: fn(&RosterStatus) -> bool) -> Vec<Seats> {
    let entries = match ctx.store.roster_for_user(user.as_str()) {
        Ok(e) => e,
        Err(e) => {
            error!(error = %e, "store: reading a member's roster");
            return Vec::new();
        }
    };
    let mut by_incident: BTreeMap<IncidentId, Vec<RosterEntry>> = BTreeMap::new();
    for e in entries.into_iter().filter(|e| keep(&e.status)) {
        by_incident.entry(e.incident.clone()).or_default().push(e);
    }
    by_incident
        .into_iter()
        .filter_map(|(id, entries)| {
            open_incident(ctx, &id).map(|incident| Seats { incident, entries })
        })
        .collect()
}

/// An incident room the guard watches.
struct Watched {
    incident: Incident,
    record: RoomRecord,
    room_id: OwnedRoomId,
}

impl Watched {
    fn from_record(ctx: &Ctx, record: RoomRecord) -> Option<Self> {
        if !matches!(record.status, RoomStatus::Created | RoomStatus::Frozen) {
            return None;
        }
        let room_id = OwnedRoomId::try_from(record.room_id.as_deref()?).ok()?;
        let incident = open_incident(ctx, &record.incident)?;
        Some(Self {
            incident,
            record,
            room_id,
        })
    }

    fn name(&self) -> String {
        self.record
            .desired
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.record.key.clone())
    }
}

fn watched(ctx: &Ctx, room_id: &RoomId) -> Option<Watched> {
    match ctx.store.room_by_matrix_id(room_id.as_str()) {
        Ok(Some(record)) => Watched::from_record(ctx, record),
        Ok(None) => None,
        Err(e) => {
            error!(error = %e, "store: looking up a room");
            None
        }
    }
}

fn all_watched(ctx: &Ctx) -> Vec<Watched> {
    let incidents = match ctx
        .store
        .incidents(&IncidentFilter::in_states(&WATCHED_STATES))
    {
        Ok(list) => list,
        Err(e) => {
            error!(error = %e, "store: listing incidents");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for incident in incidents {
        match ctx.store.rooms(&incident.id) {
            Ok(records) => out.extend(
                records
                    .into_iter()
                    .filter_map(|r| Watched::from_record(ctx, r)),
            ),
            Err(e) => error!(error = %e, "store: listing an incident's rooms"),
        }
    }
    out
}

/// Registers the guard's event handlers on the bot's client, and starts the device
/// and identity watchers.
pub fn register(ctx: &Arc<Ctx>) {
    let b = ctx.clone();
    ctx.client
        .add_event_handler(move |ev: Raw<AnySyncStateEvent>, room: Room| {
            let ctx = b.clone();
            async move { on_state_event(ctx, ev, room).await }
        });
    devices::start(ctx);
}

/// Any state event in a watched room, or a membership in a control room: look at it.
async fn on_state_event(ctx: Arc<Ctx>, ev: Raw<AnySyncStateEvent>, room: Room) {
    let Ok(Some(event_type)) = ev.get_field::<String>("type") else {
        return;
    };
    if event_type == "m.room.create" && !ctx.is_control_room(room.room_id()) {
        // Inside the processing of the sync that takes in a room cordon has just made,
        // which has marked cordon's account for a key query: a fault test holds the
        // sync here (`matrix::rooms::hold_sends`).
        crate::failpoint::hit("sync.room-created").await;
    }
    if !state::is_watched(&event_type) {
        return;
    }
    if let Some(w) = watched(&ctx, room.room_id()) {
        if !as_cordon_intends(&ctx, &w, &ev) {
            schedule(&ctx, w.incident.id, w.room_id).await;
        }
    } else if event_type == "m.room.member" && ctx.is_control_room(room.room_id()) {
        control::schedule(&ctx, room.room_id().to_owned()).await;
    }
}

/// True for a state event that sets what cordon intends there: an invite or join of
/// someone the room's roster lets in now (cordon's own invites, the holders' joins), or
/// any other state as the room's record has it (cordon's own settings and pins, written
/// to the record before they are sent; the guard's own reverts). The one piece of state
/// it changes is what the guard would find as it should be, and any other change comes
/// as an event of its own, so the room need not be read again. The sender it claims is
/// not consulted: the content it sets is the change, whoever sent it. The judgement is
/// the look's own ([`members::verdict`], [`state::intended`]), for one event.
///
/// Under load this is nearly all of an incident's events: a declare's invites arrive
/// over minutes, and each burst of them read every room of the incident again, asked
/// of a homeserver already saturated by the declares.
fn as_cordon_intends(ctx: &Ctx, w: &Watched, ev: &Raw<AnySyncStateEvent>) -> bool {
    let (Ok(Some(event_type)), Ok(Some(state_key)), Ok(Some(content))) = (
        ev.get_field::<String>("type"),
        ev.get_field::<String>("state_key"),
        ev.get_field::<Value>("content"),
    ) else {
        return false;
    };
    if event_type != "m.room.member" {
        return state::intended(
            &w.record.desired,
            w.record.create_alias.as_deref(),
            &event_type,
            &state_key,
            &content,
        );
    }
    if !matches!(
        content.get("membership").and_then(Value::as_str),
        Some("invite" | "join")
    ) {
        return false;
    }
    match ctx.store.roster_entry(w.room_id.as_str(), &state_key) {
        Ok(entry) => matches!(
            members::verdict(
                &state_key,
                entry.as_ref(),
                ctx.user_id().as_str(),
                ctx.now()
            ),
            Verdict::Allowed
        ),
        Err(e) => {
            error!(error = %e, "store: reading the roster; looking at the room");
            false
        }
    }
}

/// Reconciles `room` of `incident` soon, with every other room of it that has an event
/// meanwhile, once for any number of events: an intruder's burst of changes (a ban, a
/// rename, a tombstone, a pin, in one room or several) is undone and raised together,
/// in one alert. Rooms without events are left to the full pass.
async fn schedule(ctx: &Arc<Ctx>, incident: IncidentId, room: OwnedRoomId) {
    let slot = slot(format!("incident:{incident}"));
    // The room is added before the flag is looked at, and taken after it is cleared, so
    // an event is either in the check already queued or queues one of its own.
    rooms_of(&slot).insert(room);
    if slot.queued.swap(true, Ordering::SeqCst) {
        return;
    }
    let b = ctx.clone();
    ctx.spawn(async move {
        tokio::time::sleep(SETTLE).await;
        let _held = slot.lock.lock().await;
        slot.queued.store(false, Ordering::SeqCst);
        let rooms = std::mem::take(&mut *rooms_of(&slot));
        if !rooms.is_empty() {
            reconcile_incident(&b, &incident, Asked::Event(&rooms)).await;
        }
    });
}

fn rooms_of(slot: &Slot) -> std::sync::MutexGuard<'_, BTreeSet<OwnedRoomId>> {
    match slot.rooms.lock() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Reads the room's whole current state from the homeserver (one request).
pub(crate) async fn fetch(ctx: &Ctx, room_id: &RoomId) -> Result<state::Snapshot, MatrixError> {
    Ok(state::snapshot(&fetch_events(ctx, room_id).await?))
}

/// The room's current state events, as JSON, from the homeserver (one request).
async fn fetch_events(ctx: &Ctx, room_id: &RoomId) -> Result<Vec<Value>, MatrixError> {
    let request = get_state_events::v3::Request::new(room_id.to_owned());
    let response = ctx
        .client
        .send(request)
        .await
        .map_err(|e| MatrixError::Http(e.to_string()))?;
    Ok(response
        .room_state
        .iter()
        .filter_map(|raw| serde_json::from_str(raw.json().get()).ok())
        .collect())
}

/// What asked the guard to look at an incident's rooms (counted by
/// `cordon_guard_room_looks_total`).
#[derive(Clone, Copy, Debug)]
enum Asked<'a> {
    /// State events in these of its rooms.
    Event(&'a BTreeSet<OwnedRoomId>),
    /// The full pass, at start-up and every [`PERIOD`]: every room.
    Pass,
}

impl Asked<'_> {
    fn label(self) -> &'static str {
        match self {
            Self::Event(_) => "event",
            Self::Pass => "pass",
        }
    }

    fn includes(self, room: &RoomId) -> bool {
        match self {
            Self::Event(rooms) => rooms.contains(room),
            Self::Pass => true,
        }
    }
}

/// The store marker of "alerted about this", for an offending event (or a missing
/// state type).
fn marker(room_id: &RoomId, id: &str) -> String {
    format!("guard:{room_id}:{id}")
}

/// Reconciles the watched rooms of one incident that `asked` names (every one for the
/// full pass, the ones with events otherwise): looks at each, records one alert for
/// what is new across them, then bans whoever cordon did not let in, lets back in the
/// holders someone else put out, puts back every state event cordon did not set as it
/// is, and rotates the room key after a ban.
#[instrument(skip_all, fields(incident = %id))]
async fn reconcile_incident(ctx: &Arc<Ctx>, id: &IncidentId, asked: Asked<'_>) {
    let rooms: Vec<Watched> = match ctx.store.rooms(id) {
        Ok(records) => records
            .into_iter()
            .filter_map(|r| Watched::from_record(ctx, r))
            .filter(|w| asked.includes(&w.room_id))
            .collect(),
        Err(e) => {
            error!(error = %e, "store: listing an incident's rooms");
            return;
        }
    };
    let Some(incident) = rooms.first().map(|w| w.incident.clone()) else {
        return;
    };
    let mut looks = Vec::new();
    let looked = rooms.len();
    for w in rooms {
        if let Some(l) = look(ctx, &w, asked).await
            && !l.is_clean()
        {
            looks.push((w, l));
        }
    }
    debug!(
        rooms = looked,
        unclean = looks.len(),
        "incident's rooms looked at"
    );
    if looks.is_empty() {
        return;
    }
    let now = ctx.now();
    let own = ctx.user_id().as_str();

    // What is new (each offending event is alerted once), recorded before acting.
    let mut fresh_markers = Vec::new();
    let mut by_room = Vec::new();
    for (w, l) in &looks {
        let fresh: Vec<Finding> = l
            .findings
            .iter()
            .filter(|(m, _)| !ctx.store.is_processed(m).unwrap_or(false))
            .map(|(m, f)| {
                fresh_markers.push(m.clone());
                f.clone()
            })
            .collect();
        if !fresh.is_empty() {
            by_room.push((w.name(), fresh));
        }
    }
    let pending_alert = if fresh_markers.is_empty() {
        None
    } else {
        fresh_markers.sort_unstable();
        let digest = hex::encode(Sha256::digest(fresh_markers.join("\n").as_bytes()));
        let key = format!("guard/{}/compromise/{}", incident.id, &digest[..16]);
        let body = alert::compromise_body(&incident, &by_room, own, now, ctx.config.time_zone);
        let entry = alert::record(ctx, &incident, &key, &body);
        if entry.is_some() {
            // A room taken from cordon is audited once, with the alert that raised it;
            // every later pass finds it again and has nothing to do there.
            for (w, l) in &looks {
                if let Some((m, f @ Finding::CordonRemoved { .. })) = l.findings.first()
                    && fresh_markers.contains(m)
                {
                    audit(
                        ctx,
                        &w.incident.id,
                        "guard.cordon-removed",
                        json!({ "room": w.room_id, "room_key": w.record.key, "finding": format!("{f:?}"), "detected_at": now }),
                    );
                }
            }
            for m in &fresh_markers {
                if let Err(e) = ctx.store.mark_processed(m, now) {
                    error!(error = %e, "store: marking a finding alerted");
                }
            }
            warn!(
                findings = fresh_markers.len(),
                "possible server compromise: forged membership or room state"
            );
        }
        entry
    };

    // Act, room by room: bans first (take the actors out), then state, then the
    // holders back in, then a fresh room key.
    crate::failpoint::hit("guard.before_acting").await;
    for (w, l) in &looks {
        act(ctx, w, l, now).await;
    }
    if let Some(entry) = pending_alert {
        alert::deliver(ctx, &entry).await;
    }
}

/// Does what [`look`] found needed in one room.
async fn act(ctx: &Arc<Ctx>, w: &Watched, l: &Look, now: DateTime<Utc>) {
    let Some(room) = ctx.client.get_room(&w.room_id) else {
        return;
    };
    if room.state() != RoomState::Joined {
        // Nothing cordon can do from outside; audited with its alert.
        return;
    }
    let mut banned_any = false;
    for (event_id, f) in &l.intruders {
        let Finding::Intruder {
            user,
            membership,
            claimed_sender,
            at,
            why,
        } = f
        else {
            continue;
        };
        let Ok(user_id) = UserId::parse(user.as_str()) else {
            continue;
        };
        match room
            .ban_user(
                &user_id,
                Some("cordon: not let in by cordon (possible server compromise)"),
            )
            .await
        {
            Ok(()) => {
                banned_any = true;
                info!(user = %user_id, "banned an intruder");
                audit(
                    ctx,
                    &w.incident.id,
                    "guard.banned",
                    json!({
                        "room": w.room_id, "room_key": w.record.key, "user": user,
                        "membership": membership,
                        "event_id": event_id,
                        "claimed_sender": claimed_sender, "why": why,
                        "event_at": at, "detected_at": now,
                    }),
                );
            }
            Err(e) => error!(user = %user_id, error = %e, "could not ban an intruder"),
        }
    }
    for user in &l.leaving {
        if let Ok(user_id) = UserId::parse(user.as_str())
            && members::kick_if_present(&room, &user_id, "cordon: removed from the incident").await
        {
            banned_any = true;
        }
    }
    for d in &l.drifts {
        match room
            .send_state_event_raw(&d.event_type, &d.state_key, d.restore.clone())
            .await
        {
            Ok(_) => {
                info!(event_type = %d.event_type, state_key = %d.state_key, own = d.own, "put back forged room state");
                audit(
                    ctx,
                    &w.incident.id,
                    if d.own {
                        "guard.state-reverted"
                    } else {
                        "guard.state-emptied"
                    },
                    json!({
                        "room": w.room_id, "room_key": w.record.key,
                        "event_type": d.event_type,
                        "state_key": d.state_key,
                        "event_id": d.seen.as_ref().map(|s| &s.event_id),
                        "claimed_sender": d.seen.as_ref().map(|s| &s.sender),
                        "found": d.seen.as_ref().map(|s| &s.content),
                        "restored": d.restore,
                        "event_at": d.seen.as_ref().map(|s| s.at),
                        "detected_at": now,
                    }),
                );
            }
            Err(e) => {
                error!(event_type = %d.event_type, error = %e, "could not put back room state")
            }
        }
    }
    for f in &l.ejected {
        members::let_back_in(ctx, w, &room, f, now).await;
    }
    if banned_any && let Err(e) = room.discard_room_key().await {
        warn!(error = %e, "could not rotate the room key");
    }
}

fn audit(ctx: &Ctx, incident: &IncidentId, action: &str, details: Value) {
    if let Err(e) = ctx
        .store
        .audit(ACTOR, action, Some(incident), details, ctx.now())
    {
        error!(error = %e, action, "store: auditing a guard action");
    }
}

/// Checks one person: an identity change or a revocation takes them out where the
/// playbook says so; otherwise devices they have not cross-signed are alerted.
pub(crate) async fn check_person(ctx: &Arc<Ctx>, user: &UserId) {
    if user == ctx.user_id() {
        return;
    }
    let slot = slot(format!("user:{user}"));
    let _held = slot.lock.lock().await;
    let seats = seats_where(ctx, user, |s| *s == RosterStatus::Invited);
    if seats.is_empty() {
        return;
    }
    match trust::status(&ctx.client, &ctx.store, user, false).await {
        Trust::IdentityChanged => members::identity_changed(ctx, user, &seats).await,
        Trust::Revoked => members::revoked(ctx, user, &seats).await,
        Trust::Verified | Trust::NotEnrolled => devices::check(ctx, user, &seats).await,
        // No identity at all (admitted unverified, every device unsigned), or unknown.
        Trust::NoCrossSigning | Trust::Unknown { .. } => {}
    }
}

/// Invites `user` back into the incident rooms the guard removed them from (identity
/// changed, or enrolment revoked), once they are verified again. Called after an
/// enrolment, and by the periodic pass.
pub async fn on_enrolled(ctx: &Arc<Ctx>, user: &UserId) {
    let slot = slot(format!("user:{user}"));
    let _held = slot.lock.lock().await;
    members::readmit(ctx, user).await;
}

/// Takes a person whose enrolment was just revoked out of every open incident, with an
/// alert (the periodic pass would, within [`PERIOD`]).
pub async fn on_revoked(ctx: &Arc<Ctx>, user: &UserId) {
    ctx.refresh_revoked();
    standing::check(ctx, user).await;
    check_person(ctx, user).await;
}

/// Enforces `user`'s standing in cordon's crypto store (see `standing`), raising
/// what is new in the control rooms.
pub(crate) async fn check_standing(ctx: &Arc<Ctx>, user: &UserId) {
    standing::check(ctx, user).await;
}

/// Reconciles every watched room and checks every member once (at start-up, after the
/// first sync), then again every [`PERIOD`] in the background.
pub async fn reconcile_all(ctx: &Arc<Ctx>) {
    pass(ctx).await;
    let ctx = ctx.clone();
    ctx.tasks.clone().spawn_detached(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = ctx.tasks.stopping() => return,
                _ = tick.tick() => {}
            }
            pass(&ctx).await;
        }
    });
}

/// One full pass: interrupted alerts and invites back, every room, every person.
async fn pass(ctx: &Arc<Ctx>) {
    ctx.refresh_revoked();
    standing::check_everyone(ctx).await;
    alert::resume(ctx).await;
    crate::app::invites::replay(ctx, crate::app::invites::Kind::Readmit).await;
    let rooms = all_watched(ctx);
    let mut incidents: BTreeSet<&IncidentId> = BTreeSet::new();
    for w in &rooms {
        incidents.insert(&w.incident.id);
    }
    for id in &incidents {
        let slot = slot(format!("incident:{id}"));
        let _held = slot.lock.lock().await;
        reconcile_incident(ctx, id, Asked::Pass).await;
    }
    control::check_all(ctx).await;
    let mut members: BTreeSet<OwnedUserId> = BTreeSet::new();
    let mut removed: BTreeSet<OwnedUserId> = BTreeSet::new();
    for id in incidents {
        let Ok(roster) = ctx.store.roster_for_incident(id) else {
            continue;
        };
        for e in roster {
            let Ok(user) = OwnedUserId::try_from(e.user.as_str()) else {
                continue;
            };
            match &e.status {
                RosterStatus::Invited => {
                    members.insert(user);
                }
                RosterStatus::Removed { why } if why == IDENTITY_CHANGED || why == REVOKED => {
                    removed.insert(user);
                }
                _ => {}
            }
        }
    }
    for user in &members {
        check_person(ctx, user).await;
    }
    for user in &removed {
        let slot = slot(format!("user:{user}"));
        let _held = slot.lock.lock().await;
        members::readmit(ctx, user).await;
    }
    debug!(
        rooms = rooms.len(),
        members = members.len(),
        "guard pass done"
    );
}
