//! The validated playbook: the second of the two phases.
//!
//! A [`Playbook`] is built once by [`super::validate`] and is correct by construction:
//! every role reference resolves, every duration is consistent, every user id and age
//! recipient parses, every template and cron schedule is compiled. Nothing downstream
//! re-checks.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use matrix_sdk::ruma::OwnedUserId;

use super::cron::CronSchedule;
use super::template::Template;

/// The identifier of a role within a playbook (a slug such as `site-commander`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleId(String);

/// What is wrong with a would-be slug (playbook id, role id, room key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    /// Nothing was written.
    #[error("is empty")]
    Empty,
    /// More than [`MAX_SLUG_LEN`] characters.
    #[error("is longer than {MAX_SLUG_LEN} characters")]
    TooLong,
    /// Anything else: the message says what is allowed.
    #[error(
        "must be lowercase letters, digits and single hyphens, starting with a letter \
         and not ending with a hyphen (e.g. `site-commander`)"
    )]
    Format,
}

/// Longest slug accepted.
pub const MAX_SLUG_LEN: usize = 64;

/// Checks that `s` is a slug: `^[a-z][a-z0-9]*(-[a-z0-9]+)*$`, at most 64 characters.
pub fn check_slug(s: &str) -> Result<(), SlugError> {
    if s.is_empty() {
        return Err(SlugError::Empty);
    }
    if s.chars().count() > MAX_SLUG_LEN {
        return Err(SlugError::TooLong);
    }
    let bytes = s.as_bytes();
    let ok = bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok { Ok(()) } else { Err(SlugError::Format) }
}

impl RoleId {
    /// Parses a role id, checking the slug format.
    pub fn parse(s: &str) -> Result<Self, SlugError> {
        check_slug(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RoleId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RoleId {
    type Err = SlugError;
    fn from_str(s: &str) -> Result<Self, SlugError> {
        Self::parse(s)
    }
}

/// A validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// Stable identifier, used in `!cordon declare <id>`.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Planner's description, if any.
    pub description: Option<String>,
    /// Who may declare an incident from this playbook (operators always may).
    pub trigger: Trigger,
    /// What happens to unverified role holders.
    pub verification: Verification,
    /// What happens when a member's verified identity changes.
    pub identity_change: IdentityChange,
    /// Time limits.
    pub duration: Limits,
    /// Message retention in the rooms.
    pub retention: Retention,
    /// Roles in the order written (an ordered map by [`Role::id`]; see [`Playbook::role`]).
    pub roles: Vec<Role>,
    /// Rooms in the order written.
    pub rooms: Vec<Room>,
    /// Briefing posted and pinned in every room.
    pub briefing: Option<Template>,
    /// Sealed-archive settings.
    pub archive: Archive,
    /// The roles whose holders may log decisions besides the commander (`decisions.by`;
    /// without it, `loggist` when the playbook has that role).
    pub decision_loggers: Vec<RoleId>,
    /// Whether a METHANE report is required (`methane: required`): the commander is
    /// reminded after declaring until one is given.
    pub methane_required: bool,
    /// Situation reports on a cycle (`sitrep`), if the playbook asks for them.
    pub sitrep: Option<Sitrep>,
    /// Whether a message holding an NHS number or a date of birth gets a nudge
    /// (`pid_nudges`, default true).
    pub pid_nudges: bool,
    /// Where the playbook was read from.
    pub source: PathBuf,
    /// SHA-256 of the file's text (lowercase hex), for the audit log: which exact
    /// version of the playbook an incident ran under.
    pub sha256: String,
}

impl Playbook {
    /// The role with this id.
    pub fn role(&self, id: &RoleId) -> Option<&Role> {
        self.roles.iter().find(|r| &r.id == id)
    }

    /// The room with this key.
    pub fn room(&self, key: &str) -> Option<&Room> {
        self.rooms.iter().find(|r| r.key == key)
    }

    /// Whether `user` may declare this playbook through the trigger (by being listed, or
    /// by holding a listed role). Operators are checked elsewhere.
    pub fn may_declare(&self, user: &matrix_sdk::ruma::UserId) -> bool {
        self.trigger.allowed.iter().any(|a| match a {
            Allowed::User(u) => u == user,
            Allowed::Role(r) => self
                .role(r)
                .is_some_and(|role| role.holders.iter().any(|h| h == user)),
        })
    }

    /// One-line summary for `cordon check`: rooms, roles and limits.
    pub fn summary(&self) -> String {
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        format!(
            "{} ({}, {}, max {}{})",
            self.id,
            plural(self.rooms.len(), "room"),
            plural(self.roles.len(), "role"),
            format_duration(self.duration.max),
            if self.duration.extend_max.is_zero() {
                String::new()
            } else {
                format!(
                    ", extendable by {}",
                    format_duration(self.duration.extend_max)
                )
            }
        )
    }
}

/// Formats a duration the way planners write them: `90s`, `30m`, `1h 30m`, `24h`, `3d`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    if secs.is_multiple_of(86_400) && secs >= 2 * 86_400 {
        return format!("{}d", secs / 86_400);
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}

/// Who may declare an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Never empty.
    pub allowed: Vec<Allowed>,
}

/// One entry of `trigger.allowed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Any holder of this role of the playbook (`role:<id>`).
    Role(RoleId),
    /// This Matrix user.
    User(OwnedUserId),
}

/// What happens to role holders whose identity cordon has not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verification {
    /// Not invited; listed as pending; the commander is told.
    #[default]
    Required,
    /// Invited with a warning.
    Warn,
}

/// What happens when a member's identity changes after cordon verified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityChange {
    /// Removed from the incident's rooms until re-verified, with an alert.
    #[default]
    Remove,
    /// An alert only.
    Alert,
}

/// Time limits of an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest the incident runs before standing down automatically (> 0).
    pub max: Duration,
    /// Warnings before the end, longest first, each shorter than `max`.
    pub warn_before: Vec<Duration>,
    /// Total extra time that `extend` may add (0: no extension).
    pub extend_max: Duration,
}

/// Message retention inside the rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this are redacted (0 < messages ≤ duration.max).
    pub messages: Duration,
    /// Seal each message into the archive before redacting it.
    pub seal_before_redact: bool,
}

/// One role.
#[derive(Debug, Clone)]
pub struct Role {
    /// The role's id.
    pub id: RoleId,
    /// What responders call it.
    pub title: String,
    /// People invited to it at declaration, in the order written, without duplicates.
    pub holders: Vec<OwnedUserId>,
    /// Invitable holders needed for the role to count as filled (≤ holders.len()).
    pub min: u32,
    /// Action card for the role.
    pub instructions: Option<Template>,
}

/// One room.
#[derive(Debug, Clone)]
pub struct Room {
    /// Key within the playbook (a slug), unique.
    pub key: String,
    /// Room name.
    pub name: Template,
    /// Room topic, before cordon's banner.
    pub topic: Option<Template>,
    /// Roles invited, never empty, without duplicates.
    pub members: Vec<RoleId>,
    /// Roles that may redact (each also in `members`).
    pub moderators: Vec<RoleId>,
    /// Whether other homeservers may join (`m.federate`).
    pub federate: bool,
    /// Scheduled messages.
    pub reminders: Vec<Reminder>,
}

/// A message posted on a schedule.
#[derive(Debug, Clone)]
pub struct Reminder {
    /// When (in the config's time zone); keeps the source text too.
    pub schedule: CronSchedule,
    /// What.
    pub text: Template,
}

/// Situation reports on a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sitrep {
    /// How often one is due, from the declaration.
    pub every: Duration,
    /// The role whose holders send it.
    pub from: RoleId,
    /// How long after it is due a missing one is raised.
    pub grace: Duration,
}

/// Sealed-archive settings.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Records officers' age keys; never empty, without duplicates.
    pub recipients: Vec<age::x25519::Recipient>,
    /// How long cordon keeps the sealed archive after destruction.
    pub keep: Duration,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "site-commander", "ed2", "a-1-b"] {
            assert_eq!(check_slug(ok), Ok(()), "{ok}");
        }
        for bad in ["", "A", "1a", "-a", "a-", "a--b", "a_b", "a b", "é", "a.b"] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
        assert_eq!(check_slug(&"a".repeat(65)), Err(SlugError::TooLong));
    }

    #[test]
    fn durations_format_as_planners_write_them() {
        let f = |s| format_duration(Duration::from_secs(s));
        assert_eq!(f(0), "0s");
        assert_eq!(f(90), "1m 30s");
        assert_eq!(f(1800), "30m");
        assert_eq!(f(86_400), "24h");
        assert_eq!(f(3 * 86_400), "3d");
        assert_eq!(f(5400), "1h 30m");
    }
}
