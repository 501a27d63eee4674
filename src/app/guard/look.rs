//! One look at one room: who is in it, who was put out of it, and its state, judged
//! against the store alone, into what the guard will do there.

#[allow(clippy::wildcard_imports, reason = "the guard's imports and helpers")]
use super::*;

/// What the guard found in one room, and what it will do there.
pub(super) struct Look {
    /// Findings with their alert markers, whether new or alerted before.
    pub(super) findings: Vec<(String, Finding)>,
    /// Members to ban, with their member event's id.
    pub(super) intruders: Vec<(String, Finding)>,
    /// Members cordon is removing (kick, no alert).
    pub(super) leaving: Vec<String>,
    /// State to put back.
    pub(super) drifts: Vec<state::Drift>,
    /// Role holders to let back in.
    pub(super) ejected: Vec<Finding>,
}

impl Look {
    pub(super) fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.leaving.is_empty()
    }
}

/// Looks at one room: who is in it, who was put out of it, and its state, against the
/// store alone. `None` when the room cannot be judged now (a read failed).
pub(super) async fn look(ctx: &Ctx, w: &Watched, asked: Asked<'_>) -> Option<Look> {
    let room = ctx.client.get_room(&w.room_id)?;
    if room.state() != RoomState::Joined {
        return Some(removed_from(ctx, w, &room).await);
    }
    crate::metrics::global().guard_look(asked.label());
    let snapshot = match fetch(ctx, &w.room_id).await {
        Ok(s) => s,
        Err(e) => {
            warn!(room = %w.room_id, error = %e, "could not read the room's state; retrying at the next pass");
            return None;
        }
    };
    let now = ctx.now();
    let own = ctx.user_id().as_str();
    let mut out = Look {
        findings: Vec::new(),
        intruders: Vec::new(),
        leaving: Vec::new(),
        drifts: Vec::new(),
        ejected: Vec::new(),
    };

    // Judge every joined or invited member from the store alone, as it stands now.
    for (user, membership, seen) in snapshot.present() {
        let entry = match ctx.store.roster_entry(w.room_id.as_str(), user) {
            Ok(e) => e,
            Err(e) => {
                // Never ban on a store failure: it could ban everyone.
                error!(error = %e, "store: reading the roster; not judging this room now");
                return None;
            }
        };
        match members::verdict(user, entry.as_ref(), own, now) {
            Verdict::Allowed => {}
            Verdict::BeingRemoved => out.leaving.push(user.to_owned()),
            Verdict::Intruder { why } => {
                let f = Finding::Intruder {
                    user: user.to_owned(),
                    membership: membership.to_owned(),
                    claimed_sender: seen.sender.clone(),
                    at: seen.at,
                    why,
                };
                out.findings
                    .push((marker(&w.room_id, &seen.event_id), f.clone()));
                out.intruders.push((seen.event_id.clone(), f));
            }
        }
    }

    // Every role holder cordon let in and did not take out: banned or removed by
    // someone else, they are let back in. One who left by their own hand stays out
    // (`status` lists them).
    let roster = match ctx.store.roster_for_room(w.room_id.as_str()) {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "store: reading the roster; not judging this room now");
            return None;
        }
    };
    for entry in roster.iter().filter(|e| e.is_allowed()) {
        let Some((membership, seen)) = snapshot.membership(&entry.user) else {
            continue;
        };
        if !members::ejected(&entry.user, membership, &seen.sender, seen.at, entry.at) {
            continue;
        }
        let f = Finding::Ejected {
            user: entry.user.clone(),
            membership: membership.to_owned(),
            claimed_sender: seen.sender.clone(),
            at: seen.at,
        };
        out.findings
            .push((marker(&w.room_id, &seen.event_id), f.clone()));
        out.ejected.push(f);
    }

    // Every state event against what cordon set.
    out.drifts = state::drift(
        &w.record.desired,
        w.record.create_alias.as_deref(),
        &snapshot,
    );
    for d in &out.drifts {
        let id = match &d.seen {
            Some(s) => s.event_id.clone(),
            None => format!("missing:{}:{}", d.event_type, d.state_key),
        };
        out.findings.push((
            marker(&w.room_id, &id),
            Finding::Drift {
                event_type: d.event_type.clone(),
                state_key: d.state_key.clone(),
                claimed_sender: d.seen.as_ref().map(|s| s.sender.clone()),
                at: d.seen.as_ref().map(|s| s.at),
                own: d.own,
            },
        ));
    }
    Some(out)
}

/// cordon is not joined to a room it never left: whoever made it leave (a kick, a ban,
/// a leave sent with its stolen or admin-issued token) has taken the room from it.
pub(super) async fn removed_from(ctx: &Ctx, w: &Watched, room: &Room) -> Look {
    let member = room.get_member_no_sync(ctx.user_id()).await.ok().flatten();
    let finding = match member {
        Some(m) => {
            let event = m.event();
            Finding::CordonRemoved {
                membership: m.membership().to_string(),
                claimed_sender: Some(event.sender().to_string()),
                at: event
                    .timestamp()
                    .map(|ts| crate::app::millis_to_utc(u64::from(ts))),
            }
        }
        None => Finding::CordonRemoved {
            membership: format!("{:?}", room.state()).to_lowercase(),
            claimed_sender: None,
            at: None,
        },
    };
    // One alert per room, whichever look saw it first: an early look may find no
    // member event of cordon's yet, a later one its event id.
    Look {
        findings: vec![(marker(&w.room_id, "cordon-removed"), finding)],
        intruders: Vec::new(),
        leaving: Vec::new(),
        drifts: Vec::new(),
        ejected: Vec::new(),
    }
}
