//! Control rooms: who joined without an operator's invite.
//!
//! Control rooms are the operators' rooms, not cordon's: cordon cannot ban there, and
//! has no roster to judge members against. What it can tell from the room's own
//! history is who let each member in. A member who joined without an invite from an
//! operator (force-joined through the admin API, or invited by someone who is not an
//! operator) sees the incident's commands and alerts, so each such join is raised once
//! to the operators in that room. The room's creators, the operators and cordon are
//! members by right.
//!
//! The inviter is the sender the invite *claims*: a server admin can forge an invite in
//! an operator's name (`make_room_admin` does), which this cannot tell apart. What it
//! catches is a join nobody with the right to let people in asked for.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use matrix_sdk::ruma::api::client::room::get_room_event;
use matrix_sdk::ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{Value, json};
use tracing::{error, warn};

use super::state::{self, Seen};
use crate::app::ctx::Ctx;

/// How far back a member's history is followed to the invite that let them in (each
/// step is one display-name or avatar change).
const HISTORY_LIMIT: usize = 20;

/// Checks `room_id` soon, once for any number of member events arriving meanwhile.
pub(super) async fn schedule(ctx: &Arc<Ctx>, room_id: OwnedRoomId) {
    let slot = super::slot(format!("control:{room_id}"));
    if slot.queued.swap(true, Ordering::SeqCst) {
        return;
    }
    let b = ctx.clone();
    ctx.spawn(async move {
        let _held = slot.lock.lock().await;
        slot.queued.store(false, Ordering::SeqCst);
        check(&b, &room_id).await;
    });
}

/// Every control room (the guard's pass).
pub(super) async fn check_all(ctx: &Arc<Ctx>) {
    for room_id in ctx.control_rooms() {
        let slot = super::slot(format!("control:{room_id}"));
        let _held = slot.lock.lock().await;
        check(ctx, &room_id).await;
    }
}

/// Who let a member in, as the room's history tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LetIn {
    /// Invited by this (claimed) sender.
    InvitedBy(String),
    /// Joined without an invite before it.
    NoInvite,
    /// The history could not be followed that far.
    Unknown,
}

/// The step back from one member event: who let them in, or the earlier event to read
/// next (a join after a join is a profile change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The answer.
    Found(LetIn),
    /// Read this earlier event of theirs next.
    Back(String),
}

/// One step back through `user`'s member events, from `seen`.
pub fn step(seen: &Seen) -> Step {
    let Some(prev) = &seen.prev else {
        return Step::Found(LetIn::NoInvite);
    };
    match prev.membership() {
        Some("invite") => match &prev.sender {
            Some(sender) => Step::Found(LetIn::InvitedBy(sender.clone())),
            None => Step::Back(prev.event_id.clone()),
        },
        // A profile change, or a replaced event the server named without its content
        // (`prev_content` is not always filled in): read it.
        Some("join") | None => Step::Back(prev.event_id.clone()),
        _ => Step::Found(LetIn::NoInvite),
    }
}

/// What an earlier member event, read because the later one's `unsigned` did not name
/// its sender, says about who let its member in: `None` when it is itself a join (a
/// profile change), to be followed further back.
pub fn judge_earlier(earlier: &Seen) -> Option<LetIn> {
    match earlier.content.get("membership").and_then(Value::as_str) {
        Some("invite") => Some(LetIn::InvitedBy(earlier.sender.clone())),
        Some("join") => None,
        _ => Some(LetIn::NoInvite),
    }
}

/// The room's creators: the create event's sender and, in room version 12, its
/// `additional_creators`.
fn creators(create: Option<&Value>) -> Vec<String> {
    let Some(create) = create else {
        return Vec::new();
    };
    let mut out: Vec<String> = create
        .get("sender")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(more) = create
        .pointer("/content/additional_creators")
        .and_then(Value::as_array)
    {
        out.extend(more.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    out
}

async fn get_event(ctx: &Ctx, room_id: &RoomId, event_id: &str) -> Option<Value> {
    let event_id = EventId::parse(event_id).ok()?;
    let request = get_room_event::v3::Request::new(room_id.to_owned(), event_id);
    match ctx.client.send(request).await {
        Ok(response) => serde_json::from_str(response.event.json().get()).ok(),
        Err(e) => {
            warn!(room = %room_id, error = %e, "could not read a member event");
            None
        }
    }
}

/// One member event, read on its own.
async fn read_member(ctx: &Ctx, room_id: &RoomId, event_id: &str) -> Option<Seen> {
    let ev = get_event(ctx, room_id, event_id).await?;
    state::snapshot(std::slice::from_ref(&ev))
        .members
        .into_values()
        .next()
        .map(|(_, seen)| seen)
}

/// Follows `seen` back to the invite that let its member in.
async fn let_in(ctx: &Ctx, room_id: &RoomId, seen: &Seen) -> LetIn {
    let mut current = seen.clone();
    if current.prev.is_none() {
        // No replaced event named: a first join, or a state listing that left out the
        // event's `unsigned`. The event read on its own says which, before a join is
        // called uninvited.
        let Some(again) = read_member(ctx, room_id, &seen.event_id).await else {
            return LetIn::Unknown;
        };
        current = again;
    }
    for _ in 0..HISTORY_LIMIT {
        match step(&current) {
            Step::Found(found) => return found,
            Step::Back(event_id) => {
                let Some(earlier) = read_member(ctx, room_id, &event_id).await else {
                    return LetIn::Unknown;
                };
                // The event read is the one `current` replaced: it is judged itself (an
                // invite names its sender), and only a join is followed further back.
                if let Some(found) = judge_earlier(&earlier) {
                    return found;
                }
                current = earlier;
            }
        }
    }
    LetIn::Unknown
}

/// Checks one control room's joined members, raising each join no operator asked for.
async fn check(ctx: &Arc<Ctx>, room_id: &RoomId) {
    let Some(room) = crate::matrix::rooms::joined(&ctx.client, room_id.as_str()) else {
        return;
    };
    let events: Vec<Value> = match super::fetch_events(ctx, room_id).await {
        Ok(e) => e,
        Err(e) => {
            warn!(room = %room_id, error = %e, "could not read a control room's state");
            return;
        }
    };
    let create = events
        .iter()
        .find(|e| e.get("type").and_then(Value::as_str) == Some("m.room.create"));
    let by_right = creators(create);
    let snapshot = state::snapshot(&events);
    let own = ctx.user_id().as_str();
    for (user, membership, seen) in snapshot.present() {
        if membership != "join"
            || user == own
            || by_right.iter().any(|c| c == user)
            || ctx.config.operators.iter().any(|o| o.as_str() == user)
        {
            continue;
        }
        let marker = format!("control:{room_id}:{}", seen.event_id);
        if ctx.store.is_processed(&marker).unwrap_or(false) {
            continue;
        }
        let found = let_in(ctx, room_id, seen).await;
        let operator_invite = matches!(&found, LetIn::InvitedBy(s)
            if ctx.config.operators.iter().any(|o| o.as_str() == s) || by_right.iter().any(|c| c == s));
        if !operator_invite && found != LetIn::Unknown {
            raise(ctx, &room, user, seen, &found).await;
        }
        if found != LetIn::Unknown
            && let Err(e) = ctx.store.mark_processed(&marker, ctx.now())
        {
            error!(error = %e, "store: marking a control-room join judged");
        }
    }
}

/// The alert for a member who joined a control room without an operator's invite.
pub fn joiner_body(user: &str, found: &LetIn, joined: &str) -> String {
    let how = match found {
        LetIn::InvitedBy(sender) => format!("invited by {sender}, who is not an operator"),
        LetIn::NoInvite | LetIn::Unknown => "without any invite".to_owned(),
    };
    format!(
        "SECURITY ALERT: {user} joined this control room at {joined}, {how}. Control rooms \
         see every incident command and alert. cordon did not let them in and cannot \
         remove them here.\nOperators: if nobody expected {user}, remove them from this \
         room now and tell the server operators: a server admin can force people into \
         rooms."
    )
}

async fn raise(ctx: &Arc<Ctx>, room: &matrix_sdk::Room, user: &str, seen: &Seen, found: &LetIn) {
    let joined = crate::domain::incident::plan::format_time(seen.at, ctx.config.time_zone);
    let body = joiner_body(user, found, &joined);
    let key = format!("guard/control/{}/{}", room.room_id(), seen.event_id);
    let invited_by = match found {
        LetIn::InvitedBy(s) => Some(s.as_str()),
        _ => None,
    };
    let details = json!({
        "user": user, "room": room.room_id(), "event_id": seen.event_id,
        "invited_by": invited_by, "event_at": seen.at, "detected_at": ctx.now(),
    });
    let mention: Vec<OwnedUserId> = ctx.config.operators.iter().cloned().collect();
    super::standing::raise(
        ctx,
        room,
        &key,
        "guard.control-room-joiner",
        details,
        &body,
        &mention,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn member(prev: Option<Value>) -> Seen {
        let mut ev = json!({
            "type": "m.room.member", "state_key": "@x:hs", "event_id": "$j",
            "sender": "@x:hs", "origin_server_ts": 1, "content": { "membership": "join" },
        });
        if let Some(unsigned) = prev {
            ev["unsigned"] = unsigned;
        }
        state::snapshot(&[ev]).members.remove("@x:hs").unwrap().1
    }

    #[test]
    fn an_earlier_event_read_back_is_judged_itself_not_by_what_it_replaced() {
        // The invite read back (the join's `unsigned` named no sender): it was the
        // first of its member's events, and still it names who let them in.
        let invite = state::snapshot(&[json!({
            "type": "m.room.member", "state_key": "@x:hs", "event_id": "$i",
            "sender": "@admin:hs", "origin_server_ts": 1, "content": { "membership": "invite" },
        })])
        .members
        .remove("@x:hs")
        .unwrap()
        .1;
        assert_eq!(
            judge_earlier(&invite),
            Some(LetIn::InvitedBy("@admin:hs".into()))
        );
        assert_eq!(judge_earlier(&member(None)), None);
        let mut left = member(None);
        left.content = json!({ "membership": "leave" });
        assert_eq!(judge_earlier(&left), Some(LetIn::NoInvite));
    }

    #[test]
    fn an_invite_before_the_join_names_who_let_them_in() {
        let seen = member(Some(json!({
            "replaces_state": "$i", "prev_sender": "@op:hs",
            "prev_content": { "membership": "invite" },
        })));
        assert_eq!(step(&seen), Step::Found(LetIn::InvitedBy("@op:hs".into())));
    }

    #[test]
    fn a_profile_change_is_followed_back_and_no_history_is_no_invite() {
        let seen = member(Some(json!({
            "replaces_state": "$earlier", "prev_sender": "@x:hs",
            "prev_content": { "membership": "join", "displayname": "X" },
        })));
        assert_eq!(step(&seen), Step::Back("$earlier".into()));
        assert_eq!(step(&member(None)), Step::Found(LetIn::NoInvite));
        let after_leave = member(Some(json!({
            "replaces_state": "$l", "prev_sender": "@x:hs",
            "prev_content": { "membership": "leave" },
        })));
        assert_eq!(step(&after_leave), Step::Found(LetIn::NoInvite));
        // The replaced event named without its content is read, not taken for "none".
        let bare = member(Some(json!({ "replaces_state": "$i" })));
        assert_eq!(step(&bare), Step::Back("$i".into()));
    }

    #[test]
    fn creators_include_additional_ones() {
        let create = json!({ "sender": "@a:hs", "content": { "additional_creators": ["@b:hs"] } });
        assert_eq!(creators(Some(&create)), vec!["@a:hs", "@b:hs"]);
        assert!(creators(None).is_empty());
    }

    #[test]
    fn the_alert_says_who_invited_and_what_to_do() {
        let body = joiner_body("@eve:hs", &LetIn::InvitedBy("@admin:hs".into()), "03:12");
        assert!(
            body.contains("invited by @admin:hs, who is not an operator"),
            "{body}"
        );
        assert!(
            body.contains("Operators: if nobody expected @eve:hs"),
            "{body}"
        );
        let body = joiner_body("@eve:hs", &LetIn::NoInvite, "03:12");
        assert!(body.contains("without any invite"), "{body}");
    }
}
