//! The guard: watches every incident room all the time and reconciles what the server
//! shows against cordon's own records (the roster and each room's desired state),
//! whatever sender an event claims.
//!
//! Synapse's admin API can forge a power-levels change and an invite in cordon's name
//! (`make_room_admin`) and force-join anyone (`/_synapse/admin/v1/join`). So no event
//! is believed: any membership or watched state event only tells the guard to look at
//! the room, and the room's whole state is then read from the server and judged
//! against the store alone.
//!
//! # Layout
//!
//! - [`state`]: the room's state as the server shows it, and its drift from the
//!   desired state (pure).
//! - [`members`]: who may be in a room (pure), removing members whose identity changed
//!   or whose enrolment was revoked, and inviting them back once verified again.
//! - [`devices`]: the device and identity watchers, and alerts about devices their
//!   owner has not cross-signed.
//! - `alert`: alert texts (pure), and sending each alert once to the incident's control
//!   and command rooms.
//! - `standing`: people's standing enforced in cordon's crypto store on every key
//!   update (revoked: every device blacklisted; identity changed: no device keeps local
//!   trust), and raised in the control rooms they are in.
//!
//! # When it runs
//!
//! - On every `m.room.member` or watched state event in an incident room, that room is
//!   reconciled: intruders banned, drifted state reverted, then the room key rotated
//!   and an alert raised. Events arriving during a reconcile queue one more.
//! - On every new device or identity matrix-sdk learns of, that person is checked.
//! - At start-up ([`reconcile_all`]) and every [`PERIOD`] after it, everything is:
//!   changes made while cordon was down are caught then.
//!
//! Crash safety: each alert's text is stored before the guard acts and sent once (see
//! `alert`), each offending event is alerted once (marked in the store), and every
//! action is idempotent, so a restart repeats what was cut short without duplicates.
//! Every action is audited with actor `cordon`, the event time and the detection time.

mod alert;
pub mod devices;
pub mod members;
mod standing;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use matrix_sdk::ruma::api::client::state::get_state_events;
use matrix_sdk::ruma::events::AnySyncStateEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Room, RoomState};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, instrument, warn};

pub use members::{IDENTITY_CHANGED, REVOKED};

use crate::bot::{ACTOR, Bot};
use crate::incident::{Incident, IncidentId, State};
use crate::matrix::MatrixError;
use crate::store::{IncidentFilter, RoomRecord, RoomStatus, RosterEntry, RosterStatus};
use crate::trust::{self, Trust};
use alert::Finding;
use members::Verdict;

/// How often everything is reconciled in the background.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Incident states whose rooms are watched.
const WATCHED_STATES: [State; 3] = [State::Provisioning, State::Active, State::StandingDown];

/// One lock per room or person, so two checks of the same thing never interleave (a
/// burst of events would otherwise ban twice and alert twice), and a flag that a check
/// is already queued behind the running one.
///
/// Process-wide rather than on [`Bot`] because the bot's struct is not the guard's to
/// extend; room and user ids are unique, so sharing it between bots is harmless.
struct Slot {
    lock: tokio::sync::Mutex<()>,
    queued: AtomicBool,
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
                lock: tokio::sync::Mutex::new(()),
                queued: AtomicBool::new(false),
            })
        })
        .clone()
}

/// A member's roster entries in one open incident.
pub(crate) struct Seats {
    incident: Incident,
    entries: Vec<RosterEntry>,
}

/// The incident, if its rooms are watched.
fn open_incident(bot: &Bot, id: &IncidentId) -> Option<Incident> {
    match bot.store.incident(id) {
        Ok(Some(i)) if WATCHED_STATES.contains(&i.state) => Some(i),
        Ok(_) => None,
        Err(e) => {
            error!(error = %e, "store: reading an incident");
            None
        }
    }
}

/// `user`'s roster entries whose status passes `keep`, by open incident.
fn seats_where(bot: &Bot, user: &UserId, keep: fn(&RosterStatus) -> bool) -> Vec<Seats> {
    let entries = match bot.store.roster_for_user(user.as_str()) {
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
            open_incident(bot, &id).map(|incident| Seats { incident, entries })
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
    fn from_record(bot: &Bot, record: RoomRecord) -> Option<Self> {
        if !matches!(record.status, RoomStatus::Created | RoomStatus::Frozen) {
            return None;
        }
        let room_id = OwnedRoomId::try_from(record.room_id.as_deref()?).ok()?;
        let incident = open_incident(bot, &record.incident)?;
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

fn watched(bot: &Bot, room_id: &RoomId) -> Option<Watched> {
    match bot.store.room_by_matrix_id(room_id.as_str()) {
        Ok(Some(record)) => Watched::from_record(bot, record),
        Ok(None) => None,
        Err(e) => {
            error!(error = %e, "store: looking up a room");
            None
        }
    }
}

fn all_watched(bot: &Bot) -> Vec<Watched> {
    let incidents = match bot
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
        match bot.store.rooms(&incident.id) {
            Ok(records) => out.extend(
                records
                    .into_iter()
                    .filter_map(|r| Watched::from_record(bot, r)),
            ),
            Err(e) => error!(error = %e, "store: listing an incident's rooms"),
        }
    }
    out
}

/// Registers the guard's event handlers on the bot's client, and starts the device
/// and identity watchers.
pub fn register(bot: &Arc<Bot>) {
    let b = bot.clone();
    bot.client
        .add_event_handler(move |ev: Raw<AnySyncStateEvent>, room: Room| {
            let bot = b.clone();
            async move { on_state_event(bot, ev, room).await }
        });
    devices::start(bot);
}

/// Any membership or watched state event in a watched room: look at the room.
async fn on_state_event(bot: Arc<Bot>, ev: Raw<AnySyncStateEvent>, room: Room) {
    let Ok(Some(event_type)) = ev.get_field::<String>("type") else {
        return;
    };
    if event_type != "m.room.member" && !state::is_watched(&event_type) {
        return;
    }
    if watched(&bot, room.room_id()).is_none() {
        return;
    }
    schedule(&bot, room.room_id().to_owned()).await;
}

/// Reconciles `room_id` soon, once for any number of events arriving meanwhile.
async fn schedule(bot: &Arc<Bot>, room_id: OwnedRoomId) {
    let slot = slot(format!("room:{room_id}"));
    if slot.queued.swap(true, Ordering::SeqCst) {
        return;
    }
    let b = bot.clone();
    bot.spawn(async move {
        let _held = slot.lock.lock().await;
        slot.queued.store(false, Ordering::SeqCst);
        if let Some(w) = watched(&b, &room_id) {
            reconcile_room(&b, &w).await;
        }
    })
    .await;
}

/// Reads the room's whole current state from the homeserver (one request).
async fn fetch(bot: &Bot, room_id: &RoomId) -> Result<state::Snapshot, MatrixError> {
    let request = get_state_events::v3::Request::new(room_id.to_owned());
    let response = bot
        .client
        .send(request)
        .await
        .map_err(|e| MatrixError::Http(e.to_string()))?;
    let events: Vec<Value> = response
        .room_state
        .iter()
        .filter_map(|raw| serde_json::from_str(raw.json().get()).ok())
        .collect();
    Ok(state::snapshot(&events))
}

/// The store marker of "alerted about this", for an offending event (or a missing
/// state type).
fn marker(room_id: &RoomId, id: &str) -> String {
    format!("guard:{room_id}:{id}")
}

/// Reconciles one room: bans whoever cordon did not let in, reverts drifted state,
/// rotates the room key after a ban, and raises one alert for what is new.
#[instrument(skip_all, fields(incident = %w.incident.id, room = %w.room_id))]
async fn reconcile_room(bot: &Arc<Bot>, w: &Watched) {
    let Some(room) = bot.client.get_room(&w.room_id) else {
        return;
    };
    if room.state() != RoomState::Joined {
        return;
    }
    let snapshot = match fetch(bot, &w.room_id).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "could not read the room's state; retrying at the next pass");
            return;
        }
    };
    let now = bot.now();
    let own = bot.user_id().as_str();

    // Judge every joined or invited member from the store alone, as it stands now.
    let mut intruders = Vec::new();
    let mut leaving = Vec::new();
    for (user, membership, seen) in snapshot.present() {
        let entry = match bot.store.roster_entry(w.room_id.as_str(), user) {
            Ok(e) => e,
            Err(e) => {
                // Never ban on a store failure: it could ban everyone.
                error!(error = %e, "store: reading the roster; not judging this room now");
                return;
            }
        };
        match members::verdict(user, entry.as_ref(), own, now) {
            Verdict::Allowed => {}
            Verdict::BeingRemoved => leaving.push(user.to_owned()),
            Verdict::Intruder { why } => intruders.push(Finding::Intruder {
                user: user.to_owned(),
                membership: membership.to_owned(),
                claimed_sender: seen.sender.clone(),
                at: seen.at,
                why,
            }),
        }
    }
    let drifts = state::drift(&w.record.desired, &snapshot);
    if intruders.is_empty() && leaving.is_empty() && drifts.is_empty() {
        return;
    }

    // What is new (each offending event is alerted once), recorded before acting.
    let event_of = |f: &Finding| -> String {
        match f {
            Finding::Intruder { user, .. } => snapshot
                .members
                .get(user)
                .map(|(_, s)| s.event_id.clone())
                .unwrap_or_default(),
            Finding::Drift { event_type, .. } => snapshot
                .state
                .get(event_type)
                .map(|s| s.event_id.clone())
                .unwrap_or_else(|| format!("missing:{event_type}")),
        }
    };
    let drift_findings: Vec<Finding> = drifts
        .iter()
        .map(|d| Finding::Drift {
            event_type: d.event_type.clone(),
            claimed_sender: d.seen.as_ref().map(|s| s.sender.clone()),
            at: d.seen.as_ref().map(|s| s.at),
        })
        .collect();
    let fresh: Vec<(String, Finding)> = intruders
        .iter()
        .chain(drift_findings.iter())
        .map(|f| (marker(&w.room_id, &event_of(f)), f.clone()))
        .filter(|(m, _)| !bot.store.is_processed(m).unwrap_or(false))
        .collect();
    let pending_alert = if fresh.is_empty() {
        None
    } else {
        let mut ids: Vec<&str> = fresh.iter().map(|(m, _)| m.as_str()).collect();
        ids.sort_unstable();
        let digest = hex::encode(Sha256::digest(ids.join("\n").as_bytes()));
        let key = format!(
            "guard/{}/{}/compromise/{}",
            w.incident.id,
            w.record.key,
            &digest[..16]
        );
        let findings: Vec<Finding> = fresh.iter().map(|(_, f)| f.clone()).collect();
        let body = alert::compromise_body(
            &w.incident,
            &w.name(),
            &findings,
            own,
            now,
            bot.config.time_zone,
        );
        let entry = alert::record(bot, &w.incident, &key, &body);
        if entry.is_some() {
            for (m, _) in &fresh {
                if let Err(e) = bot.store.mark_processed(m, now) {
                    error!(error = %e, "store: marking a finding alerted");
                }
            }
        }
        entry
    };
    if !fresh.is_empty() {
        warn!(
            findings = fresh.len(),
            "possible server compromise: forged membership or room state"
        );
    }

    // Act: bans first (take the actors out), then state, then a fresh room key.
    crate::failpoint::hit("guard.before_acting").await;
    let mut banned_any = false;
    for f in &intruders {
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
                    bot,
                    &w.incident.id,
                    "guard.banned",
                    json!({
                        "room": w.room_id, "room_key": w.record.key, "user": user,
                        "membership": membership, "event_id": event_of(f),
                        "claimed_sender": claimed_sender, "why": why,
                        "event_at": at, "detected_at": now,
                    }),
                );
            }
            Err(e) => error!(user = %user_id, error = %e, "could not ban an intruder"),
        }
    }
    for user in &leaving {
        if let Ok(user_id) = UserId::parse(user.as_str())
            && members::kick_if_present(&room, &user_id, "cordon: removed from the incident").await
        {
            banned_any = true;
        }
    }
    for d in &drifts {
        match room
            .send_state_event_raw(&d.event_type, "", d.desired.clone())
            .await
        {
            Ok(_) => {
                info!(event_type = %d.event_type, "reverted forged room state");
                audit(
                    bot,
                    &w.incident.id,
                    "guard.state-reverted",
                    json!({
                        "room": w.room_id, "room_key": w.record.key,
                        "event_type": d.event_type,
                        "event_id": d.seen.as_ref().map(|s| &s.event_id),
                        "claimed_sender": d.seen.as_ref().map(|s| &s.sender),
                        "found": d.seen.as_ref().map(|s| &s.content),
                        "restored": d.desired,
                        "event_at": d.seen.as_ref().map(|s| s.at),
                        "detected_at": now,
                    }),
                );
            }
            Err(e) => error!(event_type = %d.event_type, error = %e, "could not revert room state"),
        }
    }
    if banned_any && let Err(e) = room.discard_room_key().await {
        warn!(error = %e, "could not rotate the room key");
    }
    if let Some(entry) = pending_alert {
        alert::deliver(bot, &entry).await;
    }
}

fn audit(bot: &Bot, incident: &IncidentId, action: &str, details: Value) {
    if let Err(e) = bot
        .store
        .audit(ACTOR, action, Some(incident), details, bot.now())
    {
        error!(error = %e, action, "store: auditing a guard action");
    }
}

/// Checks one person: an identity change or a revocation takes them out where the
/// playbook says so; otherwise devices they have not cross-signed are alerted.
pub(crate) async fn check_person(bot: &Arc<Bot>, user: &UserId) {
    if user == bot.user_id() {
        return;
    }
    let slot = slot(format!("user:{user}"));
    let _held = slot.lock.lock().await;
    let seats = seats_where(bot, user, |s| *s == RosterStatus::Invited);
    if seats.is_empty() {
        return;
    }
    match trust::status(&bot.client, &bot.store, user, false).await {
        Trust::IdentityChanged => members::identity_changed(bot, user, &seats).await,
        Trust::Revoked => members::revoked(bot, user, &seats).await,
        Trust::Verified | Trust::NotEnrolled => devices::check(bot, user, &seats).await,
        // No identity at all (admitted unverified, every device unsigned), or unknown.
        Trust::NoCrossSigning | Trust::Unknown { .. } => {}
    }
}

/// Invites `user` back into the incident rooms the guard removed them from (identity
/// changed, or enrolment revoked), once they are verified again. Called after an
/// enrolment, and by the periodic pass.
pub async fn on_enrolled(bot: &Arc<Bot>, user: &UserId) {
    let slot = slot(format!("user:{user}"));
    let _held = slot.lock.lock().await;
    members::readmit(bot, user).await;
}

/// Takes a person whose enrolment was just revoked out of every open incident, with an
/// alert (the periodic pass would, within [`PERIOD`]).
pub async fn on_revoked(bot: &Arc<Bot>, user: &UserId) {
    bot.refresh_revoked();
    standing::check(bot, user).await;
    check_person(bot, user).await;
}

/// Enforces `user`'s standing in cordon's crypto store (see `standing`), raising
/// what is new in the control rooms.
pub(crate) async fn check_standing(bot: &Arc<Bot>, user: &UserId) {
    standing::check(bot, user).await;
}

/// Reconciles every watched room and checks every member once (at start-up, after the
/// first sync), then again every [`PERIOD`] in the background.
pub async fn reconcile_all(bot: &Arc<Bot>) {
    pass(bot).await;
    let weak = Arc::downgrade(bot);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(bot) = weak.upgrade() else { return };
            pass(&bot).await;
        }
    });
}

/// One full pass: interrupted alerts and invites back, every room, every person.
async fn pass(bot: &Arc<Bot>) {
    bot.refresh_revoked();
    standing::check_everyone(bot).await;
    alert::resume(bot).await;
    members::resume_readmissions(bot).await;
    let rooms = all_watched(bot);
    for w in &rooms {
        let slot = slot(format!("room:{}", w.room_id));
        let _held = slot.lock.lock().await;
        reconcile_room(bot, w).await;
    }
    let mut members: BTreeSet<OwnedUserId> = BTreeSet::new();
    let mut removed: BTreeSet<OwnedUserId> = BTreeSet::new();
    let mut incidents: BTreeSet<&IncidentId> = BTreeSet::new();
    for w in &rooms {
        incidents.insert(&w.incident.id);
    }
    for id in incidents {
        let Ok(roster) = bot.store.roster_for_incident(id) else {
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
        check_person(bot, user).await;
    }
    for user in &removed {
        let slot = slot(format!("user:{user}"));
        let _held = slot.lock.lock().await;
        members::readmit(bot, user).await;
    }
    debug!(
        rooms = rooms.len(),
        members = members.len(),
        "guard pass done"
    );
}
