//! `cordon check --explain`: the plan a playbook would produce, in words, without a
//! server.
//!
//! The text is made from the same pure plans the bot provisions from
//! ([`plan::plan_rooms`], [`timers`]), for an example incident declared at a given time,
//! so what a planner reads here is what cordon would do: the rooms and their settings,
//! who is invited to each and why, who may redact, what is posted, when reminders and
//! warnings come, when messages are deleted, and where the archive goes.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use matrix_sdk::ruma::{OwnedUserId, UserId};

use super::plan::{self, IncidentFacts, format_time};
use super::{Incident, IncidentId, NewIncident, timers};
use crate::domain::schedule::occurrences::occurrences_after;
use crate::input::playbook::model::format_duration;
use crate::input::playbook::{Allowed, IdentityChange, Playbook, Verification};

/// How many upcoming firings of each reminder are listed.
const NEXT_FIRINGS: usize = 3;

/// The example incident a playbook is explained for.
#[derive(Debug, Clone)]
pub struct Example {
    /// The incident's name, as a commander would type it.
    pub name: String,
    /// Who declares it; `None` shows the commander as `<commander>`.
    pub commander: Option<OwnedUserId>,
    /// When it is declared.
    pub at: DateTime<Utc>,
    /// The zone times are shown in (the bot's `time_zone`).
    pub time_zone: Tz,
}

/// Stands in for the commander when none is given; never shown.
const PLACEHOLDER: &str = "@commander:cordon.invalid";
/// How the placeholder commander is shown.
const COMMANDER: &str = "<commander>";

/// The plan `playbook` would produce for `example`, as text for a terminal.
pub fn explain(playbook: &Playbook, example: &Example) -> String {
    let placeholder: OwnedUserId = PLACEHOLDER
        .try_into()
        .unwrap_or_else(|_| unreachable!("the placeholder is a valid user id"));
    let commander = example.commander.clone().unwrap_or(placeholder);
    let id = IncidentId::generate(&playbook.id, &mut || 0);
    let expires_at = example.at
        + chrono::TimeDelta::from_std(playbook.duration.max).unwrap_or(chrono::TimeDelta::MAX);
    let incident = Incident::new(
        id,
        NewIncident {
            playbook: playbook.id.clone(),
            display_name: example.name.clone(),
            control_room: String::new(),
            commander: commander.to_string(),
            expires_at,
            exercise: false,
        },
        example.at,
    );
    let facts = IncidentFacts::of(&incident, playbook, &commander, example.time_zone);
    let text = Explainer {
        pb: playbook,
        facts: &facts,
        incident: &incident,
        example,
        commander: &commander,
        out: String::new(),
    }
    .run();
    let text = if example.commander.is_none() {
        text.replace(PLACEHOLDER, COMMANDER)
    } else {
        text
    };
    terminal_safe(&text)
}

struct Explainer<'a> {
    pb: &'a Playbook,
    facts: &'a IncidentFacts<'a>,
    incident: &'a Incident,
    example: &'a Example,
    commander: &'a UserId,
    out: String,
}

// `write!` to a `String` cannot fail.
macro_rules! say {
    ($self:ident, $($arg:tt)*) => {{
        let _ = writeln!($self.out, $($arg)*);
    }};
}

impl Explainer<'_> {
    /// A user as shown: the placeholder commander as `<commander>`.
    fn who(&self, user: &str) -> String {
        if user == PLACEHOLDER {
            COMMANDER.to_owned()
        } else {
            user.to_owned()
        }
    }

    fn time(&self, at: DateTime<Utc>) -> String {
        format_time(at, self.example.time_zone)
    }

    fn run(mut self) -> String {
        self.header();
        self.limits();
        self.roles();
        self.rooms();
        self.command_record();
        self.stand_down();
        self.out
    }

    /// Who keeps the decision log, and whether a METHANE report is chased.
    fn command_record(&mut self) {
        let loggers: Vec<&str> = self
            .pb
            .decision_loggers
            .iter()
            .map(|r| r.as_str())
            .collect();
        say!(
            self,
            "\nDecision log (`!cordon decision`): kept by the commander{}; each decision is \
             sealed to the records officers, numbered D1, D2, … and posted in the command room.",
            if loggers.is_empty() {
                " alone".to_owned()
            } else {
                format!(" and holders of {}", loggers.join(", "))
            }
        );
        let due = self.example.at
            + chrono::TimeDelta::from_std(super::timers::METHANE_FIRST)
                .unwrap_or(chrono::TimeDelta::zero());
        if self.pb.methane_required {
            say!(
                self,
                "METHANE (`!cordon methane`): required; without one, the commander is reminded \
                 from {} and every {} after, until one is given.",
                plan::format_time(due, self.example.time_zone),
                format_duration(super::timers::METHANE_EVERY)
            );
        } else {
            say!(self, "METHANE (`!cordon methane`): optional, no reminder.");
        }
        if self.pb.pid_nudges {
            say!(
                self,
                "Patient identifiers: a message in an incident room holding an NHS number or \
                 a date of birth gets a short notice to its sender (at most once an hour \
                 each) to use initials, or the bed and ward."
            );
        } else {
            say!(
                self,
                "Patient identifiers: no notices (`pid_nudges: false`)."
            );
        }
        match &self.pb.sitrep {
            Some(s) => {
                let first = self.example.at
                    + chrono::TimeDelta::from_std(s.every).unwrap_or(chrono::TimeDelta::MAX);
                say!(
                    self,
                    "SITREPs (`!cordon sitrep`): from {} every {}, the first due {}; one not in \
                     within {} is raised with the role's holders and the commander, and \
                     recorded late.",
                    s.from,
                    format_duration(s.every),
                    plan::format_time(first, self.example.time_zone),
                    format_duration(s.grace)
                );
            }
            None => say!(
                self,
                "SITREPs: none on a cycle (`!cordon sitrep` records one any time)."
            ),
        }
    }

    fn header(&mut self) {
        let pb = self.pb;
        say!(
            self,
            "{}: {} ({}, sha256 {})",
            pb.id,
            pb.title,
            pb.source.display(),
            &pb.sha256[..pb.sha256.len().min(12)],
        );
        if let Some(d) = &pb.description {
            say!(self, "  {}", plan::one_line(d, usize::MAX));
        }
        say!(
            self,
            "Example: \"{}\" ({}), declared {} by {}. Times in {}.",
            self.incident.display_name,
            self.incident.id.as_str(),
            self.time(self.example.at),
            self.commander,
            self.example.time_zone,
        );
        let allowed: Vec<String> = pb
            .trigger
            .allowed
            .iter()
            .map(|a| match a {
                Allowed::Role(r) => format!("holders of {r}"),
                Allowed::User(u) => u.to_string(),
            })
            .collect();
        say!(
            self,
            "\nWho may declare: {}, and cordon's operators.",
            allowed.join(", ")
        );
    }

    fn limits(&mut self) {
        let pb = self.pb;
        let d = &pb.duration;
        say!(
            self,
            "Runs for: {}, closing {} unless extended.",
            format_duration(d.max),
            self.time(self.incident.expires_at),
        );
        let warnings = timers::warnings(self.incident, pb, self.example.at);
        if warnings.is_empty() {
            say!(self, "Warnings before the end: none.");
        } else {
            let marks: Vec<String> = pb
                .duration
                .warn_before
                .iter()
                .zip(&warnings)
                .filter_map(|(before, timer)| match timer.schedule {
                    crate::domain::schedule::Schedule::At(at) => Some(format!(
                        "{} before ({})",
                        format_duration(*before),
                        self.time(at)
                    )),
                    crate::domain::schedule::Schedule::Cron { .. } => None,
                })
                .collect();
            say!(
                self,
                "Warnings before the end, to the commander and in every room: {}.",
                marks.join(", ")
            );
        }
        if d.extend_max.is_zero() {
            say!(self, "Extension: not allowed.");
        } else {
            say!(
                self,
                "Extension: `!cordon extend` may add up to {} in total.",
                format_duration(d.extend_max)
            );
        }
        say!(
            self,
            "Unverified role holders: {}",
            match pb.verification {
                Verification::Required =>
                    "not invited until cordon has verified their cross-signing identity; \
                     listed as pending and the commander is told.",
                Verification::Warn => "invited, with a warning in the invite and to the commander.",
            }
        );
        say!(
            self,
            "Identity or device change of a verified member: {}",
            match pb.identity_change {
                IdentityChange::Remove =>
                    "an alert, and removed from the rooms until verified again.",
                IdentityChange::Alert => "an alert only.",
            }
        );
        let r = &pb.retention;
        say!(
            self,
            "Retention: every message is redacted {} after it is sent{}; Synapse's own purge \
             (max_lifetime {}) is the backstop. The briefing is re-posted before it goes.",
            format_duration(r.messages),
            if r.seal_before_redact {
                ", after being sealed into the archive"
            } else {
                " (not sealed first: the archive keeps only a list of what was redacted)"
            },
            format_duration(plan::retention_max_lifetime(r.messages)),
        );
    }

    fn roles(&mut self) {
        let pb = self.pb;
        say!(self, "\nRoles ({}):", pb.roles.len());
        let width = pb
            .roles
            .iter()
            .map(|r| r.id.as_str().len())
            .max()
            .unwrap_or(0);
        for role in &pb.roles {
            let holders: Vec<String> = role.holders.iter().map(ToString::to_string).collect();
            say!(
                self,
                "  {:width$}  {}: {} holder{}, needs {} verified{}",
                role.id.as_str(),
                role.title,
                role.holders.len(),
                if role.holders.len() == 1 { "" } else { "s" },
                role.min,
                if role.instructions.is_some() {
                    "; has instructions"
                } else {
                    ""
                },
            );
            if !holders.is_empty() {
                say!(self, "  {:width$}  {}", "", holders.join(", "));
            }
        }
    }

    fn rooms(&mut self) {
        let pb = self.pb;
        let plans = plan::plan_rooms(self.facts, self.example.at);
        say!(
            self,
            "\nRooms ({}), each end-to-end encrypted, invite-only, closed to guests, with \
             history visible to members from their invite; only cordon may invite, kick, \
             change settings or notify the whole room:",
            plans.len()
        );
        for room_plan in &plans {
            let Some(room) = pb.room(&room_plan.key) else {
                continue;
            };
            say!(
                self,
                "\n  {}. {}: \"{}\"{}",
                room_plan.position + 1,
                room_plan.key,
                room_plan.name,
                if room.federate {
                    " (federated: other homeservers' users may be invited)"
                } else {
                    " (this homeserver only)"
                },
            );
            for (n, topic_line) in room_plan.topic.lines().enumerate() {
                let label = if n == 0 { "Topic:" } else { "" };
                say!(self, "     {label:6} {topic_line}");
            }
            let mut moderators: Vec<String> = room_plan
                .power_levels
                .get("users")
                .and_then(|u| u.as_object())
                .map(|u| u.keys().map(|k| self.who(k)).collect())
                .unwrap_or_default();
            moderators.sort();
            say!(
                self,
                "     May redact others' messages: {}",
                moderators.join(", ")
            );
            say!(self, "     Invites ({}):", room_plan.invites.len());
            let width = room_plan
                .invites
                .iter()
                .map(|i| self.who(i.user.as_str()).chars().count())
                .max()
                .unwrap_or(0);
            // The commander first, then the role holders in the plan's order.
            let mut invites: Vec<_> = room_plan.invites.iter().collect();
            invites.sort_by_key(|i| *i.user != *self.commander);
            for invite in invites {
                let mut why = invite.roles.join(", ");
                if *invite.user == *self.commander {
                    why = if why.is_empty() {
                        "the commander".to_owned()
                    } else {
                        format!("the commander; {why}")
                    };
                }
                say!(
                    self,
                    "       {:width$}  {why}",
                    self.who(invite.user.as_str())
                );
            }
            let instructions: Vec<String> =
                plan::role_messages(self.facts, &room_plan.key, self.example.at)
                    .into_iter()
                    .map(|m| m.role)
                    .collect();
            say!(
                self,
                "     Posts: the briefing (pinned){}.",
                if instructions.is_empty() {
                    String::new()
                } else {
                    format!(", instructions for {}", instructions.join(", "))
                }
            );
            if room.reminders.is_empty() {
                say!(self, "     Reminders: none.");
            } else {
                say!(self, "     Reminders:");
            }
            for reminder in &room.reminders {
                let firings: Vec<DateTime<Utc>> =
                    occurrences_after(&reminder.schedule, self.example.time_zone, self.example.at)
                        .take_while(|at| *at < self.incident.expires_at)
                        .take(NEXT_FIRINGS)
                        .collect();
                let next: Vec<String> = firings.iter().map(|at| self.time(*at)).collect();
                say!(
                    self,
                    "       `{}`: {}",
                    reminder.schedule.source(),
                    if next.is_empty() {
                        "does not fire before the incident closes".to_owned()
                    } else {
                        format!("first {}", next.join(", "))
                    }
                );
                // The text as it is posted the first time (`{time_left}` is then).
                let vars = self
                    .facts
                    .vars(firings.first().copied().unwrap_or(self.example.at));
                let text = reminder.text.render(&vars);
                say!(self, "         \"{}\"", plan::one_line(&text, usize::MAX));
            }
        }
    }

    fn stand_down(&mut self) {
        let a = &self.pb.archive;
        let keys: Vec<String> = a
            .recipients
            .iter()
            .map(|r| abbreviate(&r.to_string()))
            .collect();
        say!(
            self,
            "\nStand-down (by `!cordon standdown` or at the close): the rooms are frozen, \
             their messages sealed into an archive encrypted to {} records officer key{} \
             ({}), the archive verified, then the rooms destroyed. The archive is kept {}.",
            a.recipients.len(),
            if a.recipients.len() == 1 { "" } else { "s" },
            keys.join(", "),
            format_duration(a.keep),
        );
    }
}

/// `age1t8v5…2632`: enough to tell keys apart.
fn abbreviate(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 16 {
        return key.to_owned();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Control characters other than newlines, and bidirectional or invisible ones, escaped, so a
/// playbook cannot move the cursor or reorder what the planner reads.
fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() && c != '\n') || crate::input::yaml::is_bidi_or_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;

    const PLAYBOOK: &str = r#"
id: drill
title: "Major incident drill"
trigger: { allowed: [role:lead, "@duty:hs.example"] }
duration: { max: 2h, warn_before: [30m, 5m], extend_max: 1h }
retention: { messages: 1h }
roles:
  lead: { title: Incident lead, holders: ["@lead:hs.example"], instructions: "Run {incident}." }
  nurse: { title: Nurse in charge, holders: ["@n1:hs.example", "@n2:hs.example"], min: 2 }
rooms:
  - key: command
    name: "{incident} command"
    members: [lead, nurse]
    moderators: [lead]
    reminders:
      - { cron: "*/30 * * * *", text: "Transcribe advice for {incident_id}." }
  - key: clinical
    name: "{incident} clinical"
    topic: "Clinical room"
    members: [nurse]
archive:
  recipients: [age1t8v5qss4t65exu523uky9wesc5jyk3dkst9hnf75xxyfxcm374hqkx2632]
  keep: 30d
"#;

    fn example() -> Example {
        Example {
            name: "Tram crash".into(),
            commander: None,
            at: Utc.with_ymd_and_hms(2026, 12, 3, 12, 10, 0).unwrap(),
            time_zone: chrono_tz::Europe::London,
        }
    }

    fn playbook(text: &str) -> Playbook {
        crate::input::playbook::load_str(Path::new("drill.yaml"), text).unwrap()
    }

    #[test]
    fn explains_rooms_invites_schedules_retention_and_archive() {
        let text = explain(&playbook(PLAYBOOK), &example());
        for needle in [
            "drill: Major incident drill (drill.yaml, sha256 ",
            "Example: \"Tram crash\" (dr-2222), declared Thu 03 Dec 12:10 GMT by <commander>.",
            "Who may declare: holders of lead, @duty:hs.example, and cordon's operators.",
            "Runs for: 2h, closing Thu 03 Dec 14:10 GMT unless extended.",
            "30m before (Thu 03 Dec 13:40 GMT), 5m before (Thu 03 Dec 14:05 GMT)",
            "may add up to 1h in total",
            "redacted 1h after it is sent (not sealed first: the archive keeps only a list",
            "(max_lifetime 1h 15m)",
            "  lead   Incident lead: 1 holder, needs 1 verified; has instructions",
            "  nurse  Nurse in charge: 2 holders, needs 2 verified",
            "1. command: \"Tram crash command\" (this homeserver only)",
            "2. clinical: \"Tram crash clinical\"",
            "May redact others' messages: <commander>, @lead:hs.example",
            "Invites (4):",
            "<commander>       the commander",
            "@n2:hs.example    nurse",
            "Posts: the briefing (pinned), instructions for lead.",
            "`*/30 * * * *`: first Thu 03 Dec 12:30 GMT, Thu 03 Dec 13:00 GMT, Thu 03 Dec 13:30 GMT",
            "\"Transcribe advice for dr-2222.\"",
            "Reminders: none.",
            "encrypted to 1 records officer key (age1t8v5…2632)",
            "The archive is kept 30d.",
            "Decision log (`!cordon decision`): kept by the commander alone",
            "METHANE (`!cordon methane`): optional, no reminder.",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(!text.contains("cordon.invalid"), "{text}");
    }

    #[test]
    fn the_command_record_keys_are_explained() {
        let text = format!(
            "{PLAYBOOK}decisions: {{ by: [nurse, lead] }}\nmethane: required\nsitrep: {{ every: 30m, from: nurse }}\n"
        );
        let out = explain(&playbook(&text), &example());
        assert!(
            out.contains("kept by the commander and holders of nurse, lead"),
            "{out}"
        );
        assert!(
            out.contains("METHANE (`!cordon methane`): required; without one, the commander is reminded from Thu 03 Dec 12:15 GMT and every 10m after"),
            "{out}"
        );
        assert!(
            out.contains("SITREPs (`!cordon sitrep`): from nurse every 30m, the first due Thu 03 Dec 12:40 GMT; one not in within 10m"),
            "{out}"
        );
    }

    #[test]
    fn a_named_commander_who_holds_a_role_is_shown_with_it() {
        let mut ex = example();
        ex.commander = Some("@lead:hs.example".try_into().unwrap());
        let text = explain(&playbook(PLAYBOOK), &ex);
        assert!(
            text.contains("@lead:hs.example  the commander; lead"),
            "{text}"
        );
        assert!(text.contains("Invites (3):"), "{text}");
    }

    #[test]
    fn reminders_after_the_close_and_past_warnings_are_left_out() {
        let text = PLAYBOOK
            .replace("*/30 * * * *", "0 9 * * *")
            .replace("warn_before: [30m, 5m]", "warn_before: []");
        let text = explain(&playbook(&text), &example());
        assert!(
            text.contains("does not fire before the incident closes"),
            "{text}"
        );
        assert!(text.contains("Warnings before the end: none."), "{text}");
    }

    #[test]
    fn control_and_bidi_characters_from_the_playbook_are_escaped() {
        let pb = PLAYBOOK.replace("text: \"Transcribe advice", "text: \"Lead \\u202e\\e[2J");
        let out = explain(&playbook(&pb), &example());
        assert!(
            !out.contains('\u{202e}') && !out.contains('\u{1b}'),
            "{out}"
        );
        assert!(out.contains("Lead \\u{202e}\\u{1b}[2J"), "{out}");
    }
}
