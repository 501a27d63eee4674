//! From the raw file to a validated [`Playbook`]: every semantic check, each reported at
//! the value it concerns, all of them at once.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use matrix_sdk::ruma::{OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use super::cron::CronSchedule;
use super::model::{
    Allowed, Archive, IdentityChange, Limits, Playbook, Reminder, Retention, Role, RoleId, Room,
    Sitrep, Trigger, Verification, check_slug, format_duration,
};
use super::raw::{RawIdentityChange, RawPlaybook, RawRole, RawRoom, RawVerification};
use super::template::Template;
use crate::input::diagnostic::Diagnostic;
use crate::input::yaml::{Located, closest, is_bidi_or_invisible, quote};

/// A reminder's text when the playbook gives none.
pub const DEFAULT_REMINDER: &str = "Reminder: this chat is NOT the medical record. Transcribe \
    clinical advice into the patient record now, attributed to the person who gave it, then \
    mark it transcribed (`!cordon transcribed <link>`). These rooms are destroyed at {expires} ({time_left} left), \
    and messages are deleted before then.";

/// How long cordon keeps a sealed archive when the playbook does not say.
pub const DEFAULT_ARCHIVE_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest duration accepted anywhere (100 years): beyond this, arithmetic on
/// timestamps would overflow, and no incident setting means it.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Longest title, role title or room key text worth showing in a chat client.
const MAX_TITLE_CHARS: usize = 200;

/// Where the playbook's `id` is written, for the duplicate-id check across files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdPosition {
    pub line: usize,
    pub column: usize,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err<T>(&mut self, at: &Located<T>, message: impl Into<String>) {
        self.errors.push(at.error(self.file, self.text, message));
    }

    /// A non-empty single-line title without control characters.
    fn title(&mut self, at: &Located<String>, what: &str) -> String {
        let t = at.value.trim();
        if t.is_empty() {
            self.err(at, format!("{what} is empty"));
        } else if t.chars().any(|c| c.is_control() || is_bidi_or_invisible(c)) {
            self.err(
                at,
                format!("{what} contains line breaks or invisible control characters"),
            );
        } else if t.chars().count() > MAX_TITLE_CHARS {
            self.err(
                at,
                format!("{what} is longer than {MAX_TITLE_CHARS} characters"),
            );
        }
        t.to_owned()
    }

    fn slug(&mut self, at: &Located<String>, what: &str) -> bool {
        match check_slug(&at.value) {
            Ok(()) => true,
            Err(e) => {
                self.err(at, format!("{what} {} {e}", quote(&at.value)));
                false
            }
        }
    }

    fn duration(&mut self, at: &Located<String>, what: &str, zero_ok: bool) -> Option<Duration> {
        let text = at.value.trim();
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.err(at, format!("{what} must be longer than zero"));
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.err(
                    at,
                    format!(
                        "{what} {} is unreasonably long (over 100 years)",
                        quote(text)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                let hint = if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
                    format!(" (a unit is required: `{text}s`, `{text}m`, `{text}h` or `{text}d`)")
                } else {
                    String::new()
                };
                self.err(
                    at,
                    format!(
                        "{what} {} is not a duration: {e}{hint}; write e.g. `90s`, `30m`, `12h`, `2d` or `1h 30m`",
                        quote(text)
                    ),
                );
                None
            }
        }
    }

    fn template(
        &mut self,
        at: &Located<String>,
        what: &str,
        allow_empty: bool,
    ) -> Option<Template> {
        if !allow_empty && at.value.trim().is_empty() {
            self.err(at, format!("{what} is empty"));
            return None;
        }
        match Template::parse(&at.value) {
            Ok(t) => Some(t),
            Err(errors) => {
                for e in errors {
                    let (offset, written) = e.position();
                    let d = at.error_at_text(
                        self.file,
                        self.text,
                        offset,
                        written,
                        format!("{what}: {e}"),
                    );
                    self.errors.push(d);
                }
                None
            }
        }
    }

    fn user(&mut self, at: &Located<String>, what: &str) -> Option<OwnedUserId> {
        match parse_user_id(&at.value) {
            Ok(u) => Some(u),
            Err(why) => {
                self.err(at, format!("{what} {} {why}", quote(&at.value)));
                None
            }
        }
    }

    /// Resolves a role reference, suggesting the closest defined role.
    fn role_ref(&mut self, at: &Located<String>, roles: &[RoleId], what: &str) -> Option<RoleId> {
        if let Some(r) = roles.iter().find(|r| r.as_str() == at.value) {
            return Some(r.clone());
        }
        let name = at.value.strip_prefix("role:").unwrap_or(&at.value);
        let mut msg = format!(
            "{what} refers to role {}, which is not defined in `roles`",
            quote(&at.value)
        );
        if let Some(r) = roles.iter().find(|r| r.as_str() == name) {
            msg.push_str(&format!("; write `{r}` without the `role:` prefix here"));
        } else if let Some(best) = closest(name, roles.iter().map(RoleId::as_str)) {
            msg.push_str(&format!("; did you mean `{best}`?"));
        } else if roles.is_empty() {
            msg.push_str("; no roles are defined");
        } else {
            let list: Vec<&str> = roles.iter().map(RoleId::as_str).collect();
            msg.push_str(&format!(" (defined: {})", list.join(", ")));
        }
        self.err(at, msg);
        None
    }
}

/// Parses a Matrix user id, refusing what ruma accepts for historical reasons but what
/// in a playbook can only be a mistake or a spoof: whitespace, control and bidi
/// characters, and capital letters (Synapse lowercases new user ids).
pub fn parse_user_id(s: &str) -> Result<OwnedUserId, String> {
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_bidi_or_invisible(c))
    {
        return Err("contains whitespace or invisible characters".to_owned());
    }
    if !s.starts_with('@') {
        return Err(
            "is not a Matrix user id: it must start with `@`, e.g. `@a.patel:nhs.example`"
                .to_owned(),
        );
    }
    let user = UserId::parse(s).map_err(|e| {
        format!("is not a valid Matrix user id ({e}); write `@localpart:server`, e.g. `@a.patel:nhs.example`")
    })?;
    let local = user.localpart();
    if local.is_empty() {
        return Err(
            "has an empty name before the `:`; write e.g. `@a.patel:nhs.example`".to_owned(),
        );
    }
    if local.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "has capital letters; Matrix user ids are lowercase: did you mean `@{}:{}`?",
            local.to_lowercase(),
            user.server_name()
        ));
    }
    Ok(user)
}

/// Builds the validated playbook, or every problem found.
pub(crate) fn validate(
    file: &Path,
    text: &str,
    raw: RawPlaybook,
) -> Result<(Playbook, IdPosition), Vec<Diagnostic>> {
    let mut cx = Ctx {
        file,
        text,
        errors: Vec::new(),
    };
    let cx = &mut cx;

    cx.slug(&raw.id, "playbook id");
    let title = cx.title(&raw.title, "title");
    let description = raw.description.as_ref().map(|d| d.value.trim().to_owned());

    // Roles first: everything else refers to them.
    let mut role_ids = Vec::new();
    let mut roles = Vec::new();
    if raw.roles.value.is_empty() {
        cx.err(&raw.roles, "a playbook needs at least one role");
    }
    for (key, role) in &raw.roles.value {
        let valid = cx.slug(key, "role id");
        if let Some(r) = build_role(cx, key, role) {
            if valid {
                role_ids.push(r.id.clone());
                roles.push(r);
            }
        } else if valid && let Ok(id) = RoleId::parse(&key.value) {
            // Still a known role for references, so one mistake is not reported twice.
            role_ids.push(id);
        }
    }

    let trigger = build_trigger(cx, &raw, &role_ids);
    let verification = match raw.verification.as_ref().map(|v| v.value) {
        None | Some(RawVerification::Required) => Verification::Required,
        Some(RawVerification::Warn) => Verification::Warn,
    };
    let identity_change = match raw.identity_change.as_ref().map(|v| v.value) {
        None | Some(RawIdentityChange::Remove) => IdentityChange::Remove,
        Some(RawIdentityChange::Alert) => IdentityChange::Alert,
    };

    // Durations.
    let d = &raw.duration.value;
    let max = cx.duration(&d.max, "duration.max", false);
    let mut warn_before = Vec::new();
    if let Some(list) = &d.warn_before {
        let mut seen: Vec<(Duration, usize)> = Vec::new();
        for w in &list.value {
            let at = Located::new(w.value.0.clone(), w.line, w.column);
            let Some(dur) = cx.duration(&at, "duration.warn_before entry", false) else {
                continue;
            };
            if let Some(max) = max
                && dur >= max
            {
                cx.err(
                    &at,
                    format!(
                        "warn_before {} is not shorter than duration.max {}: the warning would come before the incident starts",
                        format_duration(dur),
                        format_duration(max)
                    ),
                );
                continue;
            }
            if let Some((_, line)) = seen.iter().find(|(s, _)| *s == dur) {
                cx.err(
                    &at,
                    format!("this warning time is listed twice (also on line {line})"),
                );
                continue;
            }
            seen.push((dur, at.line));
            warn_before.push(dur);
        }
    }
    warn_before.sort_by(|a, b| b.cmp(a));
    let extend_max = match &d.extend_max {
        Some(e) => cx.duration(e, "duration.extend_max", true),
        None => Some(Duration::ZERO),
    };

    let r = &raw.retention.value;
    let messages = cx.duration(&r.messages, "retention.messages", false);
    if let (Some(m), Some(max)) = (messages, max)
        && m > max
    {
        cx.err(
            &r.messages,
            format!(
                "retention.messages {} is longer than duration.max {}: retention must end within the incident",
                format_duration(m),
                format_duration(max)
            ),
        );
    }
    let seal_before_redact = r.seal_before_redact.as_ref().is_some_and(|s| s.value);

    // Rooms.
    let mut rooms = Vec::new();
    let mut room_keys: HashMap<String, usize> = HashMap::new();
    if raw.rooms.value.is_empty() {
        cx.err(&raw.rooms, "a playbook needs at least one room");
    }
    for room in &raw.rooms.value {
        if let Some(first) = room_keys.get(&room.value.key.value) {
            let line = *first;
            cx.err(
                &room.value.key,
                format!(
                    "room key {} is used twice (first on line {line})",
                    quote(&room.value.key.value)
                ),
            );
        } else {
            room_keys.insert(room.value.key.value.clone(), room.value.key.line);
        }
        if let Some(r) = build_room(cx, &room.value, &role_ids) {
            rooms.push(r);
        }
    }
    // A role in no room would have its holders invited nowhere.
    for (key, _) in &raw.roles.value {
        let in_room = raw.rooms.value.iter().any(|room| {
            room.value
                .members
                .value
                .iter()
                .any(|m| m.value == key.value)
        });
        if !in_room && !raw.rooms.value.is_empty() {
            cx.err(
                key,
                format!(
                    "role {} is not a member of any room, so its holders would be invited nowhere; add it to a room's `members`",
                    quote(&key.value)
                ),
            );
        }
    }

    let briefing = raw
        .briefing
        .as_ref()
        .and_then(|b| cx.template(b, "briefing", false));

    let archive = build_archive(cx, &raw);
    let decision_loggers = build_decision_loggers(cx, &raw, &role_ids);
    let sitrep = build_sitrep(cx, &raw, &role_ids);

    if !cx.errors.is_empty() {
        let mut errors = std::mem::take(&mut cx.errors);
        errors.sort_by_key(|d| (d.line, d.column));
        return Err(errors);
    }
    let (Some(max), Some(extend_max), Some(messages), Some(archive), Some(trigger)) =
        (max, extend_max, messages, archive, trigger)
    else {
        // Every None above has pushed an error; this is unreachable in practice.
        return Err(vec![Diagnostic::file(file, "playbook is invalid")]);
    };
    let playbook = Playbook {
        id: raw.id.value.clone(),
        title,
        description,
        trigger,
        verification,
        identity_change,
        duration: Limits {
            max,
            warn_before,
            extend_max,
        },
        retention: Retention {
            messages,
            seal_before_redact,
        },
        roles,
        rooms,
        briefing,
        archive,
        decision_loggers,
        methane_required: raw
            .methane
            .as_ref()
            .is_some_and(|m| m.value == super::raw::RawMethane::Required),
        sitrep,
        pid_nudges: raw.pid_nudges.as_ref().is_none_or(|p| p.value),
        source: file.to_path_buf(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
    };
    Ok((
        playbook,
        IdPosition {
            line: raw.id.line,
            column: raw.id.column,
        },
    ))
}

fn build_role(cx: &mut Ctx<'_>, key: &Located<String>, role: &RawRole) -> Option<Role> {
    let before = cx.errors.len();
    let what = format!("role `{}`", key.value);
    let title = cx.title(&role.title, &format!("title of {what}"));
    let mut holders: Vec<OwnedUserId> = Vec::new();
    if let Some(list) = &role.holders {
        let mut seen: HashMap<OwnedUserId, usize> = HashMap::new();
        for h in &list.value {
            let Some(user) = cx.user(h, &format!("holder of {what}:")) else {
                continue;
            };
            if let Some(line) = seen.get(&user) {
                cx.err(
                    h,
                    format!("`{user}` is listed twice as a holder of {what} (also on line {line})"),
                );
                continue;
            }
            seen.insert(user.clone(), h.line);
            holders.push(user);
        }
    }
    let count = role.holders.as_ref().map_or(0, |l| l.value.len());
    let min = match &role.min {
        Some(m) => {
            if m.value as usize > count {
                let has = match count {
                    0 => "no holders".to_owned(),
                    1 => "only 1 holder".to_owned(),
                    n => format!("only {n} holders"),
                };
                cx.err(
                    m,
                    format!(
                        "min is {} but {what} has {has}; lower `min` or add holders",
                        m.value
                    ),
                );
            }
            m.value
        }
        None => u32::from(count > 0),
    };
    let instructions = role
        .instructions
        .as_ref()
        .and_then(|i| cx.template(i, &format!("instructions of {what}"), false));
    let id = RoleId::parse(&key.value).ok()?;
    (cx.errors.len() == before).then_some(Role {
        id,
        title,
        holders,
        min,
        instructions,
    })
}

fn build_trigger(cx: &mut Ctx<'_>, raw: &RawPlaybook, roles: &[RoleId]) -> Option<Trigger> {
    let list = &raw.trigger.value.allowed;
    if list.value.is_empty() {
        cx.err(
            list,
            "trigger.allowed is empty, so nobody but an operator could declare this playbook; list `role:<role-id>` entries or user ids",
        );
        return None;
    }
    let before = cx.errors.len();
    let mut allowed = Vec::new();
    for entry in &list.value {
        let v = entry.value.trim();
        let item = if let Some(role) = v.strip_prefix("role:") {
            let at = Located::new(role.trim().to_owned(), entry.line, entry.column);
            cx.role_ref(&at, roles, "trigger.allowed")
                .map(Allowed::Role)
        } else if v.starts_with('@') {
            cx.user(entry, "trigger.allowed entry").map(Allowed::User)
        } else {
            let hint = if roles.iter().any(|r| r.as_str() == v) {
                format!("; did you mean `role:{v}`?")
            } else {
                String::new()
            };
            cx.err(
                entry,
                format!(
                    "trigger.allowed entry {} must be `role:<role-id>` or a Matrix user id such as `@duty-manager:nhs.example`{hint}",
                    quote(v)
                ),
            );
            None
        };
        if let Some(item) = item {
            if allowed.contains(&item) {
                cx.err(
                    entry,
                    format!("{} is listed twice in trigger.allowed", quote(v)),
                );
            }
            allowed.push(item);
        }
    }
    (cx.errors.len() == before).then_some(Trigger { allowed })
}

fn build_room(cx: &mut Ctx<'_>, room: &RawRoom, roles: &[RoleId]) -> Option<Room> {
    let before = cx.errors.len();
    cx.slug(&room.key, "room key");
    let what = format!("room `{}`", room.key.value);
    let name = cx.template(&room.name, &format!("name of {what}"), false);
    let topic = room
        .topic
        .as_ref()
        .and_then(|t| cx.template(t, &format!("topic of {what}"), true));

    let mut members = Vec::new();
    if room.members.value.is_empty() {
        cx.err(
            &room.members,
            format!("{what} has no members; list the role ids to invite"),
        );
    }
    for m in &room.members.value {
        if let Some(id) = cx.role_ref(m, roles, &format!("member of {what}")) {
            if members.contains(&id) {
                cx.err(
                    m,
                    format!("role `{id}` is listed twice in the members of {what}"),
                );
            }
            members.push(id);
        }
    }
    let mut moderators = Vec::new();
    for m in room.moderators.iter().flat_map(|l| l.value.iter()) {
        let Some(id) = cx.role_ref(m, roles, &format!("moderator of {what}")) else {
            continue;
        };
        if !room.members.value.iter().any(|x| x.value == m.value) {
            cx.err(
                m,
                format!(
                    "moderator `{id}` of {what} is not one of its members; add it to `members`"
                ),
            );
        } else if moderators.contains(&id) {
            cx.err(
                m,
                format!("role `{id}` is listed twice in the moderators of {what}"),
            );
        }
        moderators.push(id);
    }
    let federate = room.federate.as_ref().is_some_and(|f| f.value);

    let mut reminders = Vec::new();
    for r in room.reminders.iter().flat_map(|l| l.value.iter()) {
        let schedule = match CronSchedule::parse(&r.value.cron.value) {
            Ok(s) => Some(s),
            Err(e) => {
                cx.err(&r.value.cron, format!("reminder in {what}: {e}"));
                None
            }
        };
        let text = match &r.value.text {
            Some(text) => cx.template(text, &format!("reminder text in {what}"), false),
            None => Template::parse(DEFAULT_REMINDER).ok(),
        };
        if let (Some(schedule), Some(text)) = (schedule, text) {
            reminders.push(Reminder { schedule, text });
        }
    }
    let name = name?;
    (cx.errors.len() == before).then_some(Room {
        key: room.key.value.clone(),
        name,
        topic,
        members,
        moderators,
        federate,
        reminders,
    })
}

/// The grace when `sitrep.grace` is left out.
const DEFAULT_SITREP_GRACE: Duration = Duration::from_secs(10 * 60);

/// `sitrep`: a cycle, a role that exists, a grace shorter than the cycle.
fn build_sitrep(cx: &mut Ctx<'_>, raw: &RawPlaybook, roles: &[RoleId]) -> Option<Sitrep> {
    let s = &raw.sitrep.as_ref()?.value;
    let every = cx.duration(&s.every, "sitrep.every", false);
    let from = cx.role_ref(&s.from, roles, "sitrep.from");
    let grace = match &s.grace {
        Some(g) => cx.duration(g, "sitrep.grace", false),
        None => Some(DEFAULT_SITREP_GRACE),
    };
    let mut ok = true;
    if let Some(e) = every
        && e < Duration::from_secs(5 * 60)
    {
        cx.err(
            &s.every,
            "sitrep.every is shorter than 5m; SITREPs that often would flood the command room",
        );
        ok = false;
    }
    if let (Some(e), Some(g)) = (every, grace)
        && g >= e
    {
        let at = s.grace.as_ref().unwrap_or(&s.every);
        cx.err(
            at,
            format!(
                "sitrep.grace ({}) must be shorter than sitrep.every ({}), or a late SITREP \
                 would only be raised after the next one is due",
                humantime::format_duration(g),
                humantime::format_duration(e)
            ),
        );
        ok = false;
    }
    let (every, from, grace) = (every?, from?, grace?);
    if !ok {
        return None;
    }
    Some(Sitrep { every, from, grace })
}

/// `decisions.by`, or `loggist` when the playbook has that role and does not say.
fn build_decision_loggers(cx: &mut Ctx<'_>, raw: &RawPlaybook, roles: &[RoleId]) -> Vec<RoleId> {
    let Some(decisions) = &raw.decisions else {
        return roles
            .iter()
            .filter(|r| r.as_str() == "loggist")
            .cloned()
            .collect();
    };
    let mut out: Vec<RoleId> = Vec::new();
    for entry in &decisions.value.by.value {
        let Some(id) = cx.role_ref(entry, roles, "decisions.by") else {
            continue;
        };
        if out.contains(&id) {
            cx.err(
                entry,
                format!("role `{id}` is listed twice in decisions.by"),
            );
        } else {
            out.push(id);
        }
    }
    out
}

fn build_archive(cx: &mut Ctx<'_>, raw: &RawPlaybook) -> Option<Archive> {
    let a = &raw.archive.value;
    let before = cx.errors.len();
    if a.recipients.value.is_empty() {
        cx.err(
            &a.recipients,
            "archive.recipients is empty, so nobody could open the sealed record; add the records officer's age public key (`age1…`)",
        );
    }
    let mut recipients: Vec<age::x25519::Recipient> = Vec::new();
    for r in &a.recipients.value {
        match age::x25519::Recipient::from_str(r.value.trim()) {
            Ok(key) => {
                if recipients.contains(&key) {
                    cx.err(r, "this recipient is listed twice");
                }
                recipients.push(key);
            }
            Err(e) => {
                let hint = if r.value.starts_with("AGE-SECRET-KEY-") {
                    "; this is a SECRET key: remove it from the file now and use its public key (`age-keygen -y`)"
                } else if r.value.starts_with("ssh-") {
                    "; SSH keys are not accepted, use an age x25519 key (`age1…`)"
                } else {
                    "; expected an age x25519 public key starting with `age1`"
                };
                let shown = if r.value.starts_with("AGE-SECRET-KEY-") {
                    "`AGE-SECRET-KEY-…`".to_owned()
                } else {
                    quote(&r.value)
                };
                cx.err(
                    r,
                    format!("archive recipient {shown} is not a valid age recipient ({e}){hint}"),
                );
            }
        }
    }
    let keep = match &a.keep {
        Some(k) => cx.duration(k, "archive.keep", false),
        None => Some(DEFAULT_ARCHIVE_KEEP),
    };
    (cx.errors.len() == before).then_some(Archive {
        recipients,
        keep: keep?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
