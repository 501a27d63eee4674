//! The provisioning pipeline behind `declare`, resumable after kill -9 at any point.
//!
//! Steps, each recorded in the store before its side effect and skipped when already
//! done: progress message → create each room (or find it again by its tag) → invite
//! each holder with a reason → post and pin the briefing → post each role's
//! instructions → summary → `active`. Progress is one control-room message, edited in
//! place.
//!
//! Like the stand-down, the pipeline is a scheduler job, driven by one timer per
//! incident (`<id>/provision`, armed by `declare`, by `retry`, and at every start while
//! the incident is provisioning), so that resuming, retrying with backoff and never
//! running one incident's jobs twice at once are the scheduler's, one mechanism for
//! both pipelines. A failed attempt is retried after 2 s, doubling to 30 s
//! ([`crate::domain::incident::timers::provision_backoff`]); only the attempts that fail
//! while the homeserver answers count towards the [`ATTEMPTS`] after which the incident
//! is marked `failed` ([`crate::schedule::JobError::waiting`]): through an outage,
//! provisioning waits, then finishes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use matrix_sdk::Room;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use serde_json::json;
use tracing::{debug, error, info, instrument, warn};

use super::chat::send_once;
use super::ctx::{ACTOR, AppError, Ctx, declared_playbook};
use super::guard;
use super::turns::Entry;
use crate::domain::admission::{self, Admission, Seat};
use crate::domain::incident::plan::{self, IncidentFacts, RoomPlan};
use crate::domain::incident::timers::provision_backoff;
use crate::domain::incident::{Event, Incident, IncidentId, State};
use crate::domain::schedule::Timer;
use crate::input::playbook::Playbook;
use crate::matrix::MatrixError;
use crate::matrix::admin::Account;
use crate::matrix::rooms::{self, InviteOutcome, notice};
use crate::schedule::{FireContext, JobError};
use crate::store::{Effect, OutboxIntent, RoomRecord, RoomStatus, RosterEntry, RosterStatus};
use crate::trust::{self, Trust};

/// How many invites (and identity checks) go out at once, across every incident
/// ([`Ctx::fan_out`]).
pub(crate) const INVITE_CONCURRENCY: usize = 64;
/// Invites in flight in one room. Synapse makes a room's membership changes one at a
/// time, so more only queue there: under load (fifty declares at once) sixteen in one
/// room waited past the client's 30 s timeout, failing the step, while the bot-wide
/// slots they held kept other rooms idle.
pub(crate) const INVITES_PER_ROOM: usize = 4;
/// Attempts at the whole pipeline, failed while the homeserver answers, before the
/// incident is marked failed.
const ATTEMPTS: u32 = 5;

/// The provisioning timer's job: one attempt at the pipeline of the timer's incident
/// (nothing when it is no longer provisioning). A failed attempt returns the error, and
/// the scheduler runs the job again after the backoff; the fifth failure while the
/// homeserver answers marks the incident `failed` and tells the control room instead.
pub(crate) async fn on_job(
    ctx: &Arc<Ctx>,
    timer: &Timer,
    fire: FireContext,
) -> Result<(), JobError> {
    match &timer.incident {
        Some(id) => attempt(ctx, id, fire).await,
        None => Ok(()),
    }
}

#[instrument(skip_all, fields(incident = %id))]
async fn attempt(ctx: &Arc<Ctx>, id: &IncidentId, fire: FireContext) -> Result<(), JobError> {
    // Marks the pipeline running, for the sync loop (see `Ctx::busy`); the scheduler
    // already never runs two jobs of one incident at once.
    let Some(_running) = ctx.running_guard(id) else {
        return Err(JobError::new(AppError::Busy(id.clone()).to_string()));
    };
    let Err(e) = attempt_once(ctx, id).await else {
        return Ok(());
    };
    let retry_in = provision_backoff()
        .delay(fire.attempt)
        .to_std()
        .unwrap_or_default();
    // A homeserver that is down (restarting, upgraded, unreachable) is waited for:
    // only the attempts that fail while it answers count towards giving up.
    if !ctx.admin.reachable().await {
        warn!(error = %e, ?retry_in, "the homeserver cannot be reached; provisioning resumes once it answers");
        return Err(JobError::waiting(e.to_string()));
    }
    let failures = fire.strikes.saturating_add(1);
    if failures < ATTEMPTS {
        warn!(failures, error = %e, ?retry_in, "provisioning step failed; retrying");
        return Err(JobError::new(e.to_string()));
    }
    error!(error = %e, "provisioning failed");
    give_up(ctx, id, &e.to_string())
        .await
        .map_err(|e| JobError::new(e.to_string()))
}

/// Records the incident `failed` with `reason` and tells the control room.
async fn give_up(ctx: &Arc<Ctx>, id: &IncidentId, reason: &str) -> Result<(), AppError> {
    let (incident, _) = ctx.store.apply(
        id,
        Event::Failed {
            reason: reason.to_owned(),
        },
        ACTOR,
        ctx.now(),
    )?;
    if let Some(room) = control_room(ctx, &incident) {
        let body = format!(
            "Provisioning of {} ({}) FAILED: {reason}\nNothing more will be \
             created automatically; the rooms made so far stay as they are. \
             Operators: check cordon's logs.",
            incident.display_name,
            id.as_str()
        );
        let mention: Vec<OwnedUserId> = commander(&incident).into_iter().collect();
        let key = format!("{}/provision/failed", id.as_str());
        if let Err(e) = send_once(ctx, &room, &key, Some(id), notice(&body, &mention)).await {
            warn!(error = %e, "could not say that provisioning stopped");
        }
    }
    Ok(())
}

/// The incident's commander as a user id (recorded from a parsed id, so it always
/// parses).
pub(crate) fn commander(incident: &Incident) -> Result<OwnedUserId, AppError> {
    OwnedUserId::try_from(incident.commander.as_str()).map_err(|e| {
        MatrixError::Client(format!("stored commander {}: {e}", incident.commander)).into()
    })
}

fn control_room(ctx: &Ctx, incident: &Incident) -> Option<Room> {
    rooms::joined(&ctx.client, &incident.control_room)
}

struct Progress {
    rooms_total: usize,
    rooms_done: usize,
    invites_total: usize,
    invites_done: usize,
}

impl Progress {
    fn text(&self, incident: &Incident, title: &str, phase: &str) -> String {
        format!(
            "Declaring {name} ({id}) from {title}: {phase}\nrooms created {}/{} · invites {}/{}",
            self.rooms_done,
            self.rooms_total,
            self.invites_done,
            self.invites_total,
            name = incident.display_name,
            id = incident.id.as_str(),
        )
    }
}

async fn attempt_once(ctx: &Arc<Ctx>, id: &IncidentId) -> Result<(), AppError> {
    let started = Instant::now();
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    if incident.state != State::Provisioning {
        return Ok(());
    }
    // Its place in the queue for a turn at provisioning, by the declare's time and id,
    // taken before anything here waits.
    let entry = ctx
        .provisioning
        .enter((incident.declared_at, incident.id.clone()));
    let playbook = declared_playbook(ctx, id)?;
    let commander = commander(&incident)?;
    let facts = IncidentFacts::of(&incident, &playbook, &commander, ctx.config.time_zone);
    // Planned as of the declaration, so a resumed run plans exactly the same rooms.
    let plans = plan::plan_rooms(&facts, incident.declared_at);
    let control = control_room(ctx, &incident);

    let mut progress = Progress {
        rooms_total: plans.len(),
        rooms_done: 0,
        invites_total: plans.iter().map(|p| p.invites.len()).sum(),
        invites_done: 0,
    };
    info!(elapsed_ms = started.elapsed().as_millis() as u64, "planned");
    let edit = |progress: &Progress, phase: &str, seq: &str| {
        let body = progress.text(&incident, &playbook.title, phase);
        let key = format!("{}/progress/{seq}", id.as_str());
        (key, body)
    };
    // The progress message and its edits go out one after another, in order, from
    // their own task, so that they never hold up the work they report on: many
    // declares from one control room share its sends (one at a time in a room). Only
    // the latest edit waiting is sent; the ones behind a slow send are out of date.
    let (edits, mut edit_queue) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let editor = {
        let tasks = ctx.tasks.clone();
        let ctx = ctx.clone();
        let id = id.clone();
        let control = control.clone();
        let first = progress.text(&incident, &playbook.title, "starting");
        tasks.spawn(async move {
            let original = match &control {
                Some(room) => {
                    let key = format!("{}/progress", id.as_str());
                    match send_once(&ctx, room, &key, Some(&id), notice(&first, &[])).await {
                        Ok(event) => Some(event),
                        Err(e) => {
                            warn!(error = %e, "could not post the declare's progress");
                            None
                        }
                    }
                }
                None => None,
            };
            while let Some(mut next) = edit_queue.recv().await {
                while let Ok(later) = edit_queue.try_recv() {
                    next = later;
                }
                if let (Some(room), Some(original)) = (&control, &original) {
                    let (key, body) = next;
                    let _ =
                        send_once(&ctx, room, &key, Some(&id), rooms::edit(original, &body)).await;
                }
            }
        })
    };

    // Its turn, in the order of the declares (its place was taken above, before any
    // wait).
    let _turn = match entry {
        Entry::Now(turn) => turn,
        Entry::Queued(waiting) => {
            let phase = format!(
                "waiting for its turn ({} queued before it; {} are provisioned at a time, \
                 in the order declared)",
                waiting.ahead, ctx.config.provisioning_at_once
            );
            let _ = edits.send(edit(&progress, &phase, "queued"));
            waiting.turn().await
        }
    };
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "its turn"
    );

    // Rooms, concurrently: each is found by its record or its tag before it is created.
    // Meanwhile, check that every holder's account exists: Synapse accepts an invite
    // for a local account that does not, and the holder would wait forever (unless a
    // declare found it active in the last two minutes: `Ctx::account`).
    let creating = stream::iter(plans.clone())
        .map(|p| {
            let ctx = ctx.clone();
            let id = id.clone();
            async move { ensure_room(&ctx, &id, &p).await.map(|room| (p, room)) }
        })
        .buffer_unordered(4)
        .collect::<Vec<Result<(RoomPlan, Room), AppError>>>();
    let mut holders: Vec<OwnedUserId> = plans
        .iter()
        .flat_map(|p| p.invites.iter().map(|i| i.user.clone()))
        .collect();
    holders.sort();
    holders.dedup();
    // And each holder's identity: fetched from the homeserver now (unless a declare
    // fetched it in the last 30 s: `Ctx::identity_is_fresh`), so an identity changed
    // since enrolment is caught before anyone is invited.
    let checking = stream::iter(holders)
        .map(|user| {
            let ctx = ctx.clone();
            async move {
                let _slot = ctx.fan_out.acquire().await;
                let fetch = !ctx.identity_is_fresh(&user);
                let (account, standing) = tokio::join!(
                    ctx.account(&user),
                    trust::status(&ctx.client, &ctx.store, &user, fetch),
                );
                (user, account, standing)
            }
        })
        .buffer_unordered(INVITE_CONCURRENCY)
        .collect::<Vec<(OwnedUserId, Account, Trust)>>();
    let (created, checked) = tokio::join!(creating, checking);
    let mut uninvitable: BTreeMap<OwnedUserId, &'static str> = BTreeMap::new();
    let mut standing: BTreeMap<OwnedUserId, Trust> = BTreeMap::new();
    for (user, account, trust) in checked {
        match account {
            Account::Missing => {
                uninvitable.insert(user.clone(), "the account does not exist on the homeserver");
            }
            Account::Deactivated => {
                uninvitable.insert(user.clone(), "the account is deactivated");
            }
            Account::Exists | Account::Unknown => {}
        }
        standing.insert(user, trust);
    }
    let mut rooms_by_key: BTreeMap<String, (RoomPlan, Room)> = BTreeMap::new();
    for r in created {
        let (p, room) = r?;
        rooms_by_key.insert(p.key.clone(), (p, room));
    }
    progress.rooms_done = rooms_by_key.len();
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rooms ready"
    );
    let _ = edits.send(edit(&progress, "rooms created; inviting", "rooms"));

    // Invites: every intent (the guard's invite record) is stored in one transaction
    // before any is sent; completions are stored together afterwards. A crash in
    // between re-sends some invites, which the server treats as no-ops.
    // Interleaved across rooms: Synapse handles one room's membership changes one at a
    // time, so a window full of one room's invites would leave the others idle.
    let per_room: Vec<Vec<(Room, &str, plan::InvitePlan)>> = plans
        .iter()
        .filter_map(|p| rooms_by_key.get(&p.key))
        .map(|(p, room)| {
            p.invites
                .iter()
                .map(|inv| (room.clone(), p.key.as_str(), inv.clone()))
                .collect()
        })
        .collect();
    let longest = per_room.iter().map(Vec::len).max().unwrap_or(0);
    let all_jobs: Vec<(Room, &str, plan::InvitePlan)> = (0..longest)
        .flat_map(|i| per_room.iter().filter_map(move |r| r.get(i).cloned()))
        .collect();

    // The verification policy (`domain::admission`), recorded in the roster (the guard's
    // ground truth) before any invite goes out. Someone already let in stays in; a
    // pending holder who has been enrolled since an interrupted attempt is let in now.
    let mut roster = Vec::new();
    let mut jobs = Vec::new();
    for (room, room_key, mut inv) in all_jobs {
        let existing = ctx
            .store
            .roster_entry(room.room_id().as_str(), inv.user.as_str())?;
        let trust = standing.get(&inv.user).cloned().unwrap_or(Trust::Unknown {
            why: "not checked".to_owned(),
        });
        let holder = admission::Holder {
            admitted_before: existing
                .as_ref()
                .filter(|e| e.is_allowed())
                .map(|e| e.unverified),
            uninvitable: uninvitable.get(&inv.user).map(|why| (*why).to_owned()),
            unverified_because: (!trust.is_verified()).then(|| trust.reason()),
        };
        let Admission { seat, unverified } = admission::admit(&holder, playbook.verification);
        let status = match seat {
            Seat::Invited => RosterStatus::Invited,
            Seat::Pending(why) => RosterStatus::Pending { why },
        };
        if status == RosterStatus::Invited && unverified {
            inv.reason = unverified_reason(&inv.reason);
        }
        if existing.as_ref().map(|e| (&e.status, e.unverified)) != Some((&status, unverified)) {
            roster.push(RosterEntry {
                incident: id.clone(),
                room_key: room_key.to_owned(),
                room_id: room.room_id().to_string(),
                user: inv.user.to_string(),
                roles: inv.roles.clone(),
                status: status.clone(),
                unverified,
                at: ctx.now(),
            });
        }
        if status == RosterStatus::Invited {
            let key = invite_key(id, room_key, &inv.user);
            jobs.push((room, inv, key));
        }
    }
    if !roster.is_empty() {
        ctx.store.roster_put(&roster, None, ctx.now())?;
    }
    progress.invites_total = jobs.len();
    let intents: Vec<OutboxIntent> = jobs
        .iter()
        .map(|(room, inv, key)| OutboxIntent {
            key: key.clone(),
            effect: Effect::Invite {
                room: room.room_id().to_string(),
                user: inv.user.to_string(),
                roles: inv.roles.clone(),
            },
        })
        .collect();
    let entries = ctx.store.outbox_put_many(Some(id), &intents, ctx.now())?;
    let pending: Vec<(Room, plan::InvitePlan, String)> = jobs
        .into_iter()
        .zip(entries)
        .filter(|(_, entry)| entry.is_pending())
        .map(|(job, _)| job)
        .collect();
    progress.invites_done = progress.invites_total.saturating_sub(pending.len());
    crate::failpoint::hit("provision.before_invite").await;
    let per_room: BTreeMap<OwnedRoomId, Arc<tokio::sync::Semaphore>> = pending
        .iter()
        .map(|(room, _, _)| {
            let slots = Arc::new(tokio::sync::Semaphore::new(INVITES_PER_ROOM));
            (room.room_id().to_owned(), slots)
        })
        .collect();
    let results: Vec<Result<(String, serde_json::Value), AppError>> = stream::iter(pending)
        .map(|(room, inv, key)| {
            let ctx = ctx.clone();
            let skip = uninvitable.get(&inv.user).copied();
            let room_slots = per_room.get(room.room_id()).cloned();
            async move {
                let outcome = match skip {
                    Some(why) => InviteOutcome::Refused(why.to_owned()),
                    None => {
                        // The room's slot first, then the bot-wide one: a bot-wide slot
                        // is only held by an invite that can go out now.
                        let _room_slot = match room_slots {
                            Some(slots) => slots.acquire_owned().await.ok(),
                            None => None,
                        };
                        let _slot = ctx.fan_out.acquire().await;
                        rooms::invite_with_reason(
                            &ctx.client,
                            room.room_id(),
                            &inv.user,
                            &inv.reason,
                        )
                        .await?
                    }
                };
                let outcome = match outcome {
                    InviteOutcome::Invited => json!({ "outcome": "invited" }),
                    InviteOutcome::AlreadyThere => json!({ "outcome": "already-there" }),
                    InviteOutcome::Refused(why) => {
                        warn!(user = %inv.user, %why, "invite refused; the holder stays pending");
                        json!({ "outcome": "refused", "why": why, "user": inv.user })
                    }
                };
                Ok((key, outcome))
            }
        })
        .buffer_unordered(INVITE_CONCURRENCY)
        .collect()
        .await;
    let mut completions = Vec::new();
    let mut first_error = None;
    for r in results {
        match r {
            Ok((key, outcome)) => completions.push((key, Some(outcome))),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    progress.invites_done += completions.len();
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "invites sent"
    );
    crate::failpoint::hit("provision.before_invites_recorded").await;
    ctx.store.outbox_complete_many(&completions, ctx.now())?;
    if let Some(e) = first_error {
        return Err(e);
    }
    let _ = edits.send(edit(
        &progress,
        "invites sent; posting briefings",
        "invites",
    ));

    // The invitees must be members, with their device lists settled, before the first
    // encrypted message (see `Ctx::settle_sync`): matrix-sdk shares the room's key with
    // the members it knows of when it sends.
    ctx.settle_sync(2).await;
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "device lists settled"
    );

    // Briefing (posted and pinned) and role instructions, in each room.
    let posts: Vec<Result<(), AppError>> = stream::iter(rooms_by_key.values().cloned())
        .map(|(p, room)| {
            let ctx = ctx.clone();
            let facts = facts.clone();
            let id = id.clone();
            async move {
                let key = format!("{}/{}/briefing", id.as_str(), p.key);
                let body = plan::briefing(&facts, &p, ctx.now());
                let event = send_once(&ctx, &room, &key, Some(&id), notice(&body, &[])).await?;
                crate::failpoint::hit("provision.before_pin").await;
                super::pins::pin(&ctx, &id, &p.key, &room, None, &event).await?;
                for msg in plan::role_messages(&facts, &p.key, ctx.now()) {
                    let key = format!("{}/{}/role/{}", id.as_str(), p.key, msg.role);
                    send_once(
                        &ctx,
                        &room,
                        &key,
                        Some(&id),
                        notice(&msg.body, &msg.mentions),
                    )
                    .await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for r in posts {
        r?;
    }

    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "briefings posted"
    );
    // Summary, then active.
    let summary = summary_text(
        ctx,
        &incident,
        &playbook,
        &plans,
        &rooms_by_key,
        started.elapsed(),
    );
    let _ = edits.send(edit(&progress, "done", "done"));
    drop(edits);
    // The last edit lands before the summary.
    let _ = editor.await;
    if let Some(room) = &control {
        let key = format!("{}/summary", id.as_str());
        send_once(
            ctx,
            room,
            &key,
            Some(id),
            notice(&summary, std::slice::from_ref(&commander)),
        )
        .await?;
    }
    crate::failpoint::hit("provision.before_active").await;
    let (active, _) = ctx.store.apply(id, Event::Provisioned, ACTOR, ctx.now())?;
    // Its time limit, retention and reminders from now on (armed again at every start,
    // so a crash right here loses nothing).
    super::timers::ensure(ctx, &active, &playbook)?;
    info!(elapsed = ?started.elapsed(), "incident active");
    Ok(())
}

/// The room for `plan`: recorded, found again by its tag, or created now.
async fn ensure_room(ctx: &Ctx, id: &IncidentId, p: &RoomPlan) -> Result<Room, AppError> {
    let now = ctx.now();
    let record = ctx.store.room(id, &p.key)?;
    if let Some(room_id) = record.as_ref().and_then(|r| r.room_id.clone()) {
        if let Some(room) = rooms::joined(&ctx.client, &room_id) {
            return Ok(room);
        }
        return Err(MatrixError::Client(format!(
            "room {room_id} of {} is recorded but not known to the client yet",
            p.key
        ))
        .into());
    }
    let planned_alias = record.and_then(|r| r.create_alias);
    if let Some(room) = rooms::find_tagged_room(&ctx.client, id.as_str(), &p.key).await {
        info!(room = %room.room_id(), key = %p.key, "found the room created before a restart");
        await_creation(ctx, id, p, room.room_id(), planned_alias.as_deref()).await?;
        record_room(
            ctx,
            id,
            p,
            room.room_id().to_owned(),
            planned_alias.clone(),
            now,
        )?;
        if let Some(alias) = &planned_alias {
            remove_creation_alias(ctx, p, alias).await;
        }
        return Ok(room);
    }
    // Intent first: the record says the room is planned, under an alias of its own, so
    // a createRoom cut short (a crash, a timeout) is found by the alias, or by the tag
    // lookup above, and never made twice.
    let alias = planned_alias.unwrap_or_else(rooms::new_creation_alias);
    ctx.store.upsert_room(&RoomRecord {
        incident: id.clone(),
        key: p.key.clone(),
        room_id: None,
        desired: p.desired_state(),
        status: RoomStatus::Planned,
        updated_at: now,
        delete_id: None,
        create_alias: Some(alias.clone()),
        forgotten_at: None,
    })?;
    crate::failpoint::hit("provision.before_create_room").await;
    let created = rooms::create_planned_room(&ctx.client, p, &alias).await?;
    let room_id = match &created {
        rooms::Created::New(room) => room.room_id().to_owned(),
        rooms::Created::Before(room_id) => {
            info!(room = %room_id, key = %p.key, "found the room an earlier request created");
            await_creation(ctx, id, p, room_id, Some(&alias)).await?;
            room_id.clone()
        }
    };
    crate::failpoint::hit("provision.after_create_room").await;
    record_room(ctx, id, p, room_id.clone(), Some(alias.clone()), ctx.now())?;
    crate::failpoint::hit("provision.before_alias_removed").await;
    remove_creation_alias(ctx, p, &alias).await;
    match created {
        rooms::Created::New(room) => Ok(room),
        rooms::Created::Before(_) => {
            rooms::joined(&ctx.client, room_id.as_str()).ok_or_else(|| {
                MatrixError::Client(format!(
                    "room {room_id} of {} is recorded but not known to the client yet",
                    p.key
                ))
                .into()
            })
        }
    }
}

/// How long a room an earlier request created may take to get its initial state before
/// cordon completes it itself.
const CREATION_SETTLES: Duration = Duration::from_secs(60);

/// Waits until a room an earlier request created (one cut short by a crash or a
/// timeout, found by its alias or its tags) has every state event cordon asked for.
///
/// Synapse takes a room's alias, and writes its create event and cordon's join, before
/// it writes the rest of the room's initial state; the request that asked for it may
/// still be running when cordon, restarted, finds the room. Recorded then, the room
/// would be judged by the guard half made, its power levels, encryption and join rules
/// "missing", and raised as a server compromise. Until the room is complete it is not
/// recorded (so the guard does not look at it) and nothing is sent in it.
///
/// A creation the homeserver never finished (it stopped in the middle) is completed by
/// cordon after [`CREATION_SETTLES`]: the missing state events, as cordon set them,
/// audited. State that is present but not as cordon set it is the guard's to judge
/// once the room is recorded.
async fn await_creation(
    ctx: &Ctx,
    id: &IncidentId,
    p: &RoomPlan,
    room_id: &matrix_sdk::ruma::RoomId,
    alias: Option<&str>,
) -> Result<(), AppError> {
    let desired = p.desired_state();
    let deadline = Instant::now() + CREATION_SETTLES;
    let mut pause = Duration::from_millis(100);
    loop {
        let missing: Vec<guard::state::Drift> = match guard::fetch(ctx, room_id).await {
            Ok(snapshot) => guard::state::drift(&desired, alias, &snapshot)
                .into_iter()
                .filter(|d| d.own && d.seen.is_none())
                .collect(),
            Err(e) if Instant::now() < deadline => {
                debug!(
                    room = %room_id, error = %e,
                    "the room an earlier request created cannot be read yet"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return complete_creation(ctx, id, p, room_id, &missing).await;
        }
        debug!(
            room = %room_id, missing = missing.len(),
            "the room an earlier request created is still being created"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Sends the state events a creation cut short on the homeserver never wrote, as cordon
/// set them, and audits it.
async fn complete_creation(
    ctx: &Ctx,
    id: &IncidentId,
    p: &RoomPlan,
    room_id: &matrix_sdk::ruma::RoomId,
    missing: &[guard::state::Drift],
) -> Result<(), AppError> {
    use matrix_sdk::ruma::api::client::state::send_state_event;
    for d in missing {
        let body = matrix_sdk::ruma::serde::Raw::new(&d.restore)
            .map_err(|e| MatrixError::Client(format!("{}: {e}", d.event_type)))?
            .cast_unchecked();
        let request = send_state_event::v3::Request::new_raw(
            room_id.to_owned(),
            d.event_type.as_str().into(),
            d.state_key.clone(),
            body,
        );
        ctx.client
            .send(request)
            .await
            .map_err(|e| MatrixError::Http(e.to_string()))?;
    }
    let types: Vec<&str> = missing.iter().map(|d| d.event_type.as_str()).collect();
    warn!(
        room = %room_id, key = %p.key, missing = ?types,
        "completed a room whose creation the homeserver cut short"
    );
    ctx.store.audit(
        ACTOR,
        "room.creation-completed",
        Some(id),
        json!({ "key": p.key, "room": room_id, "state_sent": types }),
        ctx.now(),
    )?;
    Ok(())
}

/// The alias has done its work once the room is recorded; one left behind (this failed,
/// or a crash came first) goes with the room at stand-down.
async fn remove_creation_alias(ctx: &Ctx, p: &RoomPlan, alias: &str) {
    if let Err(e) = rooms::remove_creation_alias(&ctx.client, alias).await {
        warn!(key = %p.key, error = %e, "could not remove the room's creation alias");
    }
}

/// Records the room as created. Its creation alias stays in the record: until the alias
/// is removed (and Synapse empties the room's canonical alias), the canonical alias
/// `createRoom` wrote for it is cordon's own state, which the guard and the prevention
/// module must not take for a forgery.
fn record_room(
    ctx: &Ctx,
    id: &IncidentId,
    p: &RoomPlan,
    room_id: OwnedRoomId,
    create_alias: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AppError> {
    ctx.store.upsert_room(&RoomRecord {
        incident: id.clone(),
        key: p.key.clone(),
        room_id: Some(room_id.to_string()),
        desired: p.desired_state(),
        status: RoomStatus::Created,
        updated_at: now,
        delete_id: None,
        create_alias,
        forgotten_at: None,
    })?;
    ctx.store.audit(
        ACTOR,
        "room.created",
        Some(id),
        json!({ "key": p.key, "room": room_id, "name": p.name }),
        now,
    )?;
    Ok(())
}

/// The invite reason for a holder admitted without a verified identity: the reason is
/// sent unencrypted, so it is the one thing they can read before an operator enrols
/// them.
pub(crate) fn unverified_reason(reason: &str) -> String {
    format!(
        "{reason} Your identity is not verified by cordon: its own messages in the \
         incident rooms stay unreadable to you until an operator enrols you in person \
         (`cordon verify`)."
    )
}

/// The outbox key of one invite.
fn invite_key(id: &IncidentId, room_key: &str, user: &matrix_sdk::ruma::UserId) -> String {
    format!("{}/{}/invite/{}", id.as_str(), room_key, user)
}

fn summary_text(
    ctx: &Ctx,
    incident: &Incident,
    playbook: &Playbook,
    plans: &[RoomPlan],
    rooms: &BTreeMap<String, (RoomPlan, Room)>,
    elapsed: Duration,
) -> String {
    let mut out = format!(
        "DECLARED: {name} ({id}), {title}.\nCommander: {commander}. Closes {expires}.\nRooms:",
        name = incident.display_name,
        id = incident.id.as_str(),
        title = playbook.title,
        commander = incident.commander,
        expires = plan::format_time(incident.expires_at, ctx.config.time_zone),
    );
    // Holders whose invite the server refused, once each, with the reason.
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    for p in plans {
        for inv in &p.invites {
            let key = invite_key(&incident.id, &p.key, &inv.user);
            if let Ok(Some(entry)) = ctx.store.outbox_get(&key)
                && let Some(outcome) = &entry.outcome
                && outcome.get("outcome").and_then(|o| o.as_str()) == Some("refused")
            {
                let why = outcome
                    .get("why")
                    .and_then(|w| w.as_str())
                    .unwrap_or("refused")
                    .to_owned();
                refused.entry(inv.user.to_string()).or_insert(why);
            }
        }
    }
    // Holders the verification policy kept out, and those let in unverified.
    let roster = ctx
        .store
        .roster_for_incident(&incident.id)
        .unwrap_or_default();
    let mut unverified: BTreeMap<String, String> = BTreeMap::new();
    let mut admitted_unverified: Vec<String> = Vec::new();
    for entry in &roster {
        match &entry.status {
            RosterStatus::Pending { why } => {
                unverified.entry(entry.user.clone()).or_insert(why.clone());
            }
            RosterStatus::Invited
                if entry.unverified && !admitted_unverified.contains(&entry.user) =>
            {
                admitted_unverified.push(entry.user.clone());
            }
            _ => {}
        }
    }
    let left_out = |user: &str| refused.contains_key(user) || unverified.contains_key(user);
    for p in plans {
        if let Some((_, room)) = rooms.get(&p.key) {
            let invited = p
                .invites
                .iter()
                .filter(|i| !left_out(i.user.as_str()))
                .count();
            out.push_str(&format!(
                "\n- {}: {} ({invited} invited)",
                p.name,
                rooms::room_link(room.room_id(), ctx.server_name()),
            ));
        }
    }
    let mut short: Vec<String> = refused
        .iter()
        .map(|(user, why)| format!("{user} not invited: {why}"))
        .collect();
    short.extend(
        unverified
            .iter()
            .filter(|(user, _)| !refused.contains_key(user.as_str()))
            .map(|(user, why)| format!("{user} not invited: {why}")),
    );
    // A role with fewer invitable holders than its `min` is flagged to the commander.
    for role in &playbook.roles {
        let invitable = role
            .holders
            .iter()
            .filter(|h| !left_out(h.as_str()))
            .count();
        if (invitable as u64) < u64::from(role.min) {
            short.push(format!(
                "WARNING: {} has {invitable} invitable holder(s) of the {} needed",
                role.title, role.min
            ));
        }
    }
    if short.is_empty() {
        out.push_str("\nPending: nobody.");
    } else {
        out.push_str(&format!("\nPending: {}.", short.join("; ")));
    }
    if !unverified.is_empty() {
        out.push_str(&format!(
            "\nTo let in a pending holder: an operator enrols them in person with \
             `cordon verify @user:server` (they are then invited), or in an emergency \
             `!cordon admit {} @user:server --unverified --reason \"…\"`.",
            incident.id.as_str()
        ));
    }
    if !admitted_unverified.is_empty() {
        out.push_str(&format!(
            "\nWARNING: invited without a verified identity (cordon's own messages stay \
             unreadable to them until they are enrolled): {}.",
            admitted_unverified.join(", ")
        ));
    }
    out.push_str(&format!(
        "\nProvisioned in {:.1} s. Type `!cordon status {}` at any time.",
        elapsed.as_secs_f64(),
        incident.id.as_str()
    ));
    out
}
