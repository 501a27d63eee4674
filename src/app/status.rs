//! The `status` reply: each incident, its rooms, who has joined, who is invited, and
//! the time to expiry. Short enough for a phone screen: with more than
//! [`DETAILED_UP_TO`] incidents each gets two lines with its rooms added up, and
//! `!cordon status <id>` shows one incident's rooms.

use matrix_sdk::RoomMemberships;
use matrix_sdk::ruma::events::room::member::MembershipState;

use super::ctx::Ctx;
use crate::domain::incident::plan::{format_remaining, format_time};
use crate::domain::incident::{Incident, State};
use crate::matrix::rooms;
use crate::store::standdown::FhirOutcome;
use crate::store::{RoomStatus, RosterStatus};

/// Up to this many incidents are shown room by room.
pub const DETAILED_UP_TO: usize = 2;

/// Renders `incidents` as the status reply.
pub async fn render(ctx: &Ctx, incidents: &[Incident]) -> String {
    let mut views = Vec::with_capacity(incidents.len());
    for incident in incidents {
        views.push(gather(ctx, incident).await);
    }
    let mut out = format(&views);
    if let Some(line) = crate::app::prevention::status_line(ctx) {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

/// What the reply says about one incident, gathered from the store and the rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentView {
    /// A drill: listed after the real incidents, under its own heading.
    pub exercise: bool,
    /// The first line: id, name, state, hold.
    pub title: String,
    /// Commander and closing time.
    pub times: String,
    /// Further facts, one line each (advice outstanding, failure, stand-down step,
    /// archive).
    pub notes: Vec<String>,
    /// Short forms of the notes, for the compact reply.
    pub flags: Vec<String>,
    /// The rooms, in playbook order.
    pub rooms: Vec<RoomView>,
}

/// One room of an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    /// The room's name.
    pub name: String,
    /// Where it stands.
    pub state: RoomState,
}

/// Where a room stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomState {
    /// Live, with its member counts (cordon not counted).
    Live {
        /// Members who have joined.
        joined: usize,
        /// Invited, not joined yet.
        invited: usize,
        /// Admitted but not invited yet, or waiting (unverified, no account …).
        pending: usize,
    },
    /// Not created yet.
    NotCreated,
    /// Gone or going, in words.
    Gone(&'static str),
}

async fn gather(ctx: &Ctx, incident: &Incident) -> IncidentView {
    let now = ctx.now();
    let tz = ctx.config.time_zone;
    let held = if incident.is_held() {
        " · LEGAL HOLD"
    } else {
        ""
    };
    let mut view = IncidentView {
        exercise: incident.exercise,
        title: format!(
            "{exercise}{id} · {name} · {state}{held}",
            exercise = crate::domain::incident::plan::exercise_label(incident.exercise),
            id = incident.id.as_str(),
            name = incident.display_name,
            state = incident.state.as_str(),
        ),
        times: format!(
            "commander {commander} · closes {expires} ({left})",
            commander = incident.commander,
            expires = format_time(incident.expires_at, tz),
            left = format_remaining(incident.expires_at, now),
        ),
        notes: Vec::new(),
        flags: Vec::new(),
        rooms: Vec::new(),
    };
    if let Ok(n) = ctx.store.pid_nudge_count(&incident.id)
        && n > 0
    {
        view.notes.push(format!(
            "notices about patient identifiers (NHS numbers, dates of birth) in messages: {n}"
        ));
        view.flags.push(format!("{n} PID notice(s)"));
    }
    let advice = super::advice::outstanding_count(ctx, incident);
    if advice > 0 {
        let unconfirmed = super::advice::unconfirmed_count(ctx, incident);
        let unconfirmed = if unconfirmed > 0 {
            format!(
                " ({unconfirmed} with a ✅ reaction, unconfirmed: confirm with `!cordon \
                 transcribed <link>`)"
            )
        } else {
            String::new()
        };
        view.notes.push(format!(
            "advice not yet marked transcribed: {advice}{unconfirmed}"
        ));
        view.flags.push(format!("{advice} advice untranscribed"));
    }
    let entries = ctx.store.record_entries(&incident.id).unwrap_or_default();
    use crate::domain::record::EntryKind;
    let decisions: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Decision)
        .collect();
    let reports: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Methane)
        .collect();
    if let Some(last) = entries.iter().rfind(|e| e.kind == EntryKind::Sitrep) {
        view.notes.push(format!(
            "{} from {} at {}",
            last.label(),
            last.logged_by,
            format_time(last.logged_at, tz)
        ));
    }
    match reports.last() {
        Some(latest) => view.notes.push(format!(
            "{} from {} at {}",
            latest.label(),
            latest.logged_by,
            format_time(latest.logged_at, tz)
        )),
        None if incident.state == State::Active => view
            .notes
            .push("no METHANE report yet (`!cordon methane`, then the seven lines)".to_owned()),
        None => {}
    }
    if let Some(last) = decisions.last() {
        view.notes.push(format!(
            "decision log: {} entr{}, the latest {} at {} (`!cordon log {}`)",
            decisions.len(),
            if decisions.len() == 1 { "y" } else { "ies" },
            last.label(),
            format_time(last.logged_at, tz),
            incident.id.as_str()
        ));
    }
    if let Some(failure) = &incident.failure
        && incident.state == State::Failed
    {
        view.notes.push(format!(
            "failed: {} (`!cordon retry {}` once fixed)",
            failure.reason,
            incident.id.as_str()
        ));
        view.flags.push("FAILED".to_owned());
    }
    if incident.state == State::StandingDown
        && let Ok(Some(record)) = ctx.store.standdown(&incident.id)
    {
        view.notes
            .push(format!("stand-down at: {}", record.step.as_str()));
        view.flags.push(format!("at {}", record.step.as_str()));
    }
    if let Some(archive) = &incident.archive {
        view.notes.push(format!(
            "archive sealed and verified, SHA-256 {}…, kept at least until {}",
            archive.sha256.get(..12).unwrap_or(&archive.sha256),
            format_time(archive.keep_until, tz)
        ));
        view.flags.push("archive sealed".to_owned());
    }
    if let Ok(Some(d)) = ctx
        .store
        .standdown(&incident.id)
        .map(|r| r.and_then(|r| r.fhir))
    {
        let note = match &d.outcome {
            None => format!(
                "advice ({} item(s)) waiting to be delivered to the patient record, {} \
                 attempt(s) so far: the rooms are destroyed once it is (`!cordon retry {}` \
                 tries now)",
                d.items,
                d.attempts,
                incident.id.as_str()
            ),
            Some(FhirOutcome::Delivered { url, .. }) => {
                format!(
                    "advice ({} item(s)) delivered to the patient record at {url}",
                    d.items
                )
            }
            Some(FhirOutcome::Skipped { by, .. }) => format!(
                "advice ({} item(s)) not delivered to the patient record: skipped by {by}",
                d.items
            ),
        };
        if d.is_pending() {
            view.flags.push("waiting for FHIR delivery".to_owned());
        }
        view.notes.push(note);
    }
    let mut records = ctx.store.rooms(&incident.id).unwrap_or_default();
    records.sort_by_key(|r| {
        r.desired
            .get("position")
            .and_then(|p| p.as_u64())
            .unwrap_or(u64::MAX)
    });
    for record in records {
        let name = record
            .desired
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or(&record.key)
            .to_owned();
        let planned = record
            .desired
            .get("invites")
            .and_then(|i| i.as_array())
            .map_or(0, |a| a.len());
        let gone = match record.status {
            RoomStatus::Deleting => Some("being destroyed"),
            RoomStatus::Destroyed => Some("destroyed"),
            RoomStatus::PurgePending => Some("closed, purge pending on the server"),
            _ => None,
        };
        if let Some(gone) = gone {
            view.rooms.push(RoomView {
                name,
                state: RoomState::Gone(gone),
            });
            continue;
        }
        let Some(room) = record
            .room_id
            .as_deref()
            .and_then(|id| rooms::joined(&ctx.client, id))
        else {
            view.rooms.push(RoomView {
                name,
                state: RoomState::NotCreated,
            });
            continue;
        };
        let members = room
            .members(RoomMemberships::JOIN | RoomMemberships::INVITE)
            .await
            .unwrap_or_default();
        let me = ctx.user_id();
        let joined = members
            .iter()
            .filter(|m| m.user_id() != me && *m.membership() == MembershipState::Join)
            .count();
        let invited = members
            .iter()
            .filter(|m| *m.membership() == MembershipState::Invite)
            .count();
        // From the roster when there is one: who cordon let in but has not joined
        // yet, and who is waiting (unverified, no account …).
        let roster = ctx
            .store
            .roster_for_room(room.room_id().as_str())
            .unwrap_or_default();
        // Holders cordon let in who left by their own hand (or declined): the guard
        // lets back in only those someone else put out, so these are named here.
        let left: Vec<String> = room
            .members(RoomMemberships::LEAVE)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|m| {
                m.event().sender() == m.user_id()
                    && roster
                        .iter()
                        .any(|e| e.is_allowed() && e.user == m.user_id().as_str())
            })
            .map(|m| m.user_id().to_string())
            .collect();
        if !left.is_empty() {
            view.notes.push(format!(
                "left {name} by their own hand, not invited again: {}",
                left.join(", ")
            ));
        }
        let pending = if roster.is_empty() {
            planned.saturating_sub(joined + invited)
        } else {
            let waiting = roster
                .iter()
                .filter(|e| matches!(e.status, RosterStatus::Pending { .. }))
                .count();
            let allowed = roster.iter().filter(|e| e.is_allowed()).count();
            waiting + allowed.saturating_sub(joined + invited + left.len())
        };
        view.rooms.push(RoomView {
            name,
            state: RoomState::Live {
                joined,
                invited,
                pending,
            },
        });
    }
    view
}

/// The reply for `views`: room by room for up to [`DETAILED_UP_TO`] incidents, two
/// lines each beyond that.
pub fn format(views: &[IncidentView]) -> String {
    if views.is_empty() {
        return "No open incident in this control room. Declare one with \
                `!cordon declare <playbook> \"<name>\"`; `!cordon help declare` explains."
            .to_owned();
    }
    let compact = views.len() > DETAILED_UP_TO;
    let mut blocks = Vec::with_capacity(views.len() + 2);
    // Real incidents first, then the exercises under their own heading: a drill never
    // stands between a commander and a real incident.
    let (real, drills): (Vec<&IncidentView>, Vec<&IncidentView>) =
        views.iter().partition(|v| !v.exercise);
    let heading_at = (!drills.is_empty() && !real.is_empty()).then_some(real.len());
    for (n, view) in real.into_iter().chain(drills).enumerate() {
        if heading_at == Some(n) {
            blocks.push("EXERCISES (drills, not real incidents):".to_owned());
        }
        let mut lines = vec![view.title.clone()];
        if compact {
            let mut second = view.times.clone();
            second.push_str(" · ");
            second.push_str(&rooms_summary(&view.rooms));
            for flag in &view.flags {
                second.push_str(" · ");
                second.push_str(flag);
            }
            lines.push(second);
        } else {
            lines.push(view.times.clone());
            lines.extend(view.notes.iter().cloned());
            for room in &view.rooms {
                lines.push(format!("- {}: {}", room.name, room_state(&room.state)));
            }
        }
        blocks.push(lines.join("\n"));
    }
    if compact {
        let drills = views.iter().filter(|v| v.exercise).count();
        let real = views.len() - drills;
        let counted = match drills {
            0 => format!("{real} incidents"),
            1 => format!("{real} incident(s) and 1 exercise"),
            n => format!("{real} incident(s) and {n} exercises"),
        };
        blocks.push(format!(
            "{counted}. `!cordon status <id>` shows one incident's rooms."
        ));
    }
    blocks.join("\n\n")
}

fn room_state(state: &RoomState) -> String {
    match state {
        RoomState::Live {
            joined,
            invited,
            pending,
        } => format!("{joined} joined, {invited} invited, {pending} pending"),
        RoomState::NotCreated => "not created yet".to_owned(),
        RoomState::Gone(why) => (*why).to_owned(),
    }
}

/// `4 rooms: 12 joined, 3 invited, 1 pending`, with the rooms not live counted apart.
fn rooms_summary(rooms: &[RoomView]) -> String {
    let (mut joined, mut invited, mut pending, mut live) = (0, 0, 0, 0);
    let mut other: Vec<String> = Vec::new();
    for room in rooms {
        match &room.state {
            RoomState::Live {
                joined: j,
                invited: i,
                pending: p,
            } => {
                live += 1;
                joined += j;
                invited += i;
                pending += p;
            }
            RoomState::NotCreated => other.push("not created yet".to_owned()),
            RoomState::Gone(why) => other.push((*why).to_owned()),
        }
    }
    let plural = |n: usize| if n == 1 { "room" } else { "rooms" };
    let mut parts = Vec::new();
    if live > 0 {
        parts.push(format!(
            "{live} {}: {joined} joined, {invited} invited, {pending} pending",
            plural(live)
        ));
    }
    other.sort();
    let mut i = 0;
    while i < other.len() {
        let n = other[i..].iter().take_while(|o| **o == other[i]).count();
        parts.push(format!("{n} {} {}", plural(n), other[i]));
        i += n;
    }
    if parts.is_empty() {
        "no rooms".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: usize, rooms: usize) -> IncidentView {
        IncidentView {
            exercise: false,
            title: format!("mc-{n:04} · Tram crash {n} · active"),
            times: "commander @ic:hs.example · closes Thu 03 Dec 14:10 GMT (1h 05m)".into(),
            notes: vec!["advice not yet marked transcribed: 2".into()],
            flags: vec!["2 advice untranscribed".into()],
            rooms: (0..rooms)
                .map(|r| RoomView {
                    name: format!("Tram crash {n} - room {r}"),
                    state: RoomState::Live {
                        joined: 3,
                        invited: 1,
                        pending: r % 2,
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn one_or_two_incidents_are_shown_room_by_room() {
        let text = format(&[view(1, 4)]);
        assert_eq!(text.lines().count(), 2 + 1 + 4, "{text}");
        assert!(text.contains("- Tram crash 1 - room 3: 3 joined, 1 invited, 1 pending"));
        assert!(text.contains("advice not yet marked transcribed: 2"));
        assert!(!text.contains("status <id>"), "{text}");
    }

    #[test]
    fn many_incidents_fit_a_phone_screen() {
        // A phone shows about 20 lines of a chat message.
        let views: Vec<_> = (1..=6).map(|n| view(n, 4)).collect();
        let text = format(&views);
        let lines = text.lines().filter(|l| !l.is_empty()).count();
        assert_eq!(lines, 6 * 2 + 1, "{text}");
        assert!(
            text.contains(
                "(1h 05m) · 4 rooms: 12 joined, 4 invited, 2 pending · 2 advice untranscribed"
            ),
            "{text}"
        );
        assert!(text.ends_with("6 incidents. `!cordon status <id>` shows one incident's rooms."));
        for n in 1..=6 {
            assert!(text.contains(&format!("mc-{n:04}")), "{text}");
        }
    }

    #[test]
    fn rooms_not_live_are_counted_apart() {
        let mut v = view(1, 1);
        v.rooms.push(RoomView {
            name: "a".into(),
            state: RoomState::Gone("destroyed"),
        });
        v.rooms.push(RoomView {
            name: "b".into(),
            state: RoomState::Gone("destroyed"),
        });
        v.rooms.push(RoomView {
            name: "c".into(),
            state: RoomState::NotCreated,
        });
        assert_eq!(
            rooms_summary(&v.rooms),
            "1 room: 3 joined, 1 invited, 0 pending, 2 rooms destroyed, 1 room not created yet"
        );
        assert_eq!(rooms_summary(&[]), "no rooms");
    }

    #[test]
    fn exercises_come_after_the_real_incidents_under_their_own_heading() {
        let mut drill = view(1, 1);
        drill.exercise = true;
        drill.title = format!("EXERCISE · {}", drill.title);
        let text = format(&[drill.clone(), view(2, 1)]);
        let real_at = text.find("mc-0002").unwrap();
        let heading_at = text.find("EXERCISES (drills").unwrap();
        let drill_at = text.find("EXERCISE · mc-0001").unwrap();
        assert!(real_at < heading_at && heading_at < drill_at, "{text}");
        // Only exercises: each says so in its title, no heading needed.
        let text = format(&[drill.clone()]);
        assert!(text.starts_with("EXERCISE · mc-0001"), "{text}");
        // Counted apart in the compact form.
        let mut views: Vec<_> = (2..=4).map(|n| view(n, 1)).collect();
        views.push(drill);
        let text = format(&views);
        assert!(
            text.ends_with(
                "3 incident(s) and 1 exercise. `!cordon status <id>` shows one incident's rooms."
            ),
            "{text}"
        );
    }

    #[test]
    fn nothing_open_says_how_to_declare() {
        assert!(format(&[]).contains("`!cordon declare <playbook> \"<name>\"`"));
    }
}
