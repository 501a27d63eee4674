//! `cordon status --store DIR`: what the store says, read without the bot (which holds
//! the store's lock while it runs): each incident's state, deadlines, hold, failure,
//! stand-down step, rooms and armed timers, with failing timers' last errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{IncidentFilter, RoomStatus, Store, StoreError};
use crate::domain::incident::State;
use crate::domain::schedule::Schedule;

/// The report; closed incidents only with `all`.
pub fn render(store: &Store, now: DateTime<Utc>, all: bool) -> Result<String, StoreError> {
    let mut incidents = store.incidents(&IncidentFilter::all())?;
    incidents.retain(|i| all || i.state != State::Closed);
    // Real incidents first, then exercises: a drill never hides a real incident.
    incidents.sort_by_key(|i| (i.exercise, std::cmp::Reverse(i.declared_at)));
    let timers = store.timer_entries()?;
    let mut out = String::new();
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if incidents.is_empty() {
        out.push_str(if all {
            "no incidents in the store\n"
        } else {
            "no open incidents (--all lists closed ones too)\n"
        });
    }
    for (n, i) in incidents.iter().enumerate() {
        if i.exercise && incidents.get(n.wrapping_sub(1)).is_none_or(|p| !p.exercise) {
            out.push_str("EXERCISES (drills, not real incidents)\n");
        }
        let _ = writeln!(
            out,
            "{exercise}{id}  {state}  \"{name}\"  playbook {playbook}",
            exercise = if i.exercise { "EXERCISE  " } else { "" },
            id = i.id.as_str(),
            state = i.state.as_str(),
            name = i.display_name,
            playbook = i.playbook,
        );
        let _ = writeln!(
            out,
            "  commander {}, declared {}, control room {}",
            i.commander,
            time(i.declared_at),
            i.control_room
        );
        if matches!(i.state, State::Provisioning | State::Active | State::Failed) {
            let left = i.expires_at - now;
            let when = if left > chrono::TimeDelta::zero() {
                format!("in {}h {:02}m", left.num_hours(), left.num_minutes() % 60)
            } else {
                "now (past due)".to_owned()
            };
            let _ = writeln!(out, "  expires {} ({when})", time(i.expires_at));
        }
        if let Some(hold) = &i.hold {
            let _ = writeln!(
                out,
                "  LEGAL HOLD since {} by {}: {}",
                time(hold.since),
                hold.by,
                hold.reason
            );
        }
        if let Some(f) = &i.failure {
            let _ = writeln!(
                out,
                "  FAILED at {} during {}: {} (`!cordon retry {}` runs it again)",
                time(f.at),
                f.step.as_str(),
                f.reason,
                i.id.as_str()
            );
        }
        if let Some(sd) = store.standdown(&i.id)? {
            let _ = writeln!(
                out,
                "  stand-down step {} (since {}, seal attempts {})",
                sd.step.as_str(),
                time(sd.updated_at),
                sd.seal_attempts
            );
        }
        if let Some(a) = &i.archive {
            let _ = writeln!(
                out,
                "  archive {} (sha256 {}), kept until {}",
                a.location,
                a.sha256,
                time(a.keep_until)
            );
        }
        if i.purge_pending {
            out.push_str("  purge pending: a server admin must delete its rooms\n");
        }
        let mut rooms: BTreeMap<&'static str, usize> = BTreeMap::new();
        for r in store.rooms(&i.id)? {
            *rooms.entry(room_status(r.status)).or_default() += 1;
        }
        if !rooms.is_empty() {
            let list: Vec<String> = rooms.iter().map(|(s, n)| format!("{n} {s}")).collect();
            let _ = writeln!(out, "  rooms: {}", list.join(", "));
        }
        let mine: Vec<_> = timers
            .iter()
            .filter(|(t, _)| t.incident.as_ref() == Some(&i.id))
            .collect();
        for (t, state) in mine {
            let when = match &t.schedule {
                Schedule::At(at) => format!("at {}", time(*at)),
                Schedule::Cron { expr, tz } => format!("cron \"{expr}\" ({tz})"),
            };
            let failing = match (&state.last_error, state.attempts) {
                (Some(e), n) if n > 0 => format!(", failing ({n} attempts): {e}"),
                _ => String::new(),
            };
            let _ = writeln!(out, "  timer {} {when}{failing}", t.id);
        }
    }
    Ok(out)
}

fn room_status(s: RoomStatus) -> &'static str {
    match s {
        RoomStatus::Planned => "planned",
        RoomStatus::Created => "created",
        RoomStatus::Frozen => "frozen",
        RoomStatus::Deleting => "being deleted",
        RoomStatus::Destroyed => "destroyed",
        RoomStatus::PurgePending => "purge pending",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::incident::NewIncident;

    #[test]
    fn exercises_are_listed_after_real_incidents_under_their_own_heading() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = |h| Utc.with_ymd_and_hms(2026, 12, 4, h, 0, 0).unwrap();
        // The drill is declared last, so newest-first alone would put it on top.
        for (n, name, exercise) in [(1u64, "Tram crash", false), (2, "Exercise Tramline", true)] {
            let mut next = move || n;
            store
                .create_incident(
                    NewIncident {
                        playbook: "mass-casualty".into(),
                        display_name: name.into(),
                        control_room: "!ctl:hs".into(),
                        commander: "@ic:hs".into(),
                        expires_at: at(20),
                        exercise,
                    },
                    &mut next,
                    "@ic:hs",
                    at(8 + n as u32),
                )
                .unwrap();
        }
        let text = render(&store, at(12), false).unwrap();
        let real = text.find("\"Tram crash\"").unwrap();
        let heading = text.find("EXERCISES (drills, not real incidents)").unwrap();
        let drill = text.find("EXERCISE  ").unwrap();
        assert!(real < heading && heading < drill, "{text}");
        assert!(text[drill..].contains("\"Exercise Tramline\""), "{text}");
    }
}
