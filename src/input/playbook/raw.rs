//! The playbook file exactly as written: the first of the two phases.
//!
//! These types mirror the YAML one to one. They refuse unknown keys and carry the
//! position of every value that a later check may need to point at. Their doc comments
//! are the descriptions in the JSON Schema (`cordon playbook schema`), so they are
//! written for planners. Nothing outside [`super::validate`] reads them: everything else
//! uses the validated [`super::Playbook`].

use schemars::JsonSchema;
use serde::Deserialize;

use indexmap::IndexMap;

use crate::input::yaml::{Located, MapSchema};

/// A humantime duration such as `90s`, `30m`, `12h`, `2d` or `1h 30m`.
const DURATION_PATTERN: &str = r"^\s*[0-9]+\s*[a-zA-Zµ]+(\s*[0-9]+\s*[a-zA-Zµ]+)*\s*$";

/// A lowercase slug: letters, digits and single hyphens, starting with a letter.
const SLUG_PATTERN: &str = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$";

/// An incident playbook: who may declare it, which rooms and roles it creates, how long
/// it may run, and how its record is retained and sealed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "cordon playbook")]
pub struct RawPlaybook {
    /// Stable identifier used in `!cordon declare <id>`: lowercase letters, digits and
    /// hyphens, starting with a letter (e.g. `mass-casualty`). Unique across all playbooks.
    #[schemars(regex(pattern = SLUG_PATTERN), length(max = 64))]
    pub id: Located<String>,
    /// Human title shown to responders, e.g. "Major incident: mass casualty".
    #[schemars(length(min = 1))]
    pub title: Located<String>,
    /// What this playbook is for and when to declare it (free text for planners).
    #[serde(default)]
    pub description: Option<Located<String>>,
    /// Who may declare an incident from this playbook.
    pub trigger: Located<RawTrigger>,
    /// What happens to role holders whose identity cordon has not verified:
    /// `required` (default: not invited, the commander is told) or `warn` (invited with a
    /// warning).
    #[serde(default)]
    pub verification: Option<Located<RawVerification>>,
    /// What happens when a member's identity changes after cordon verified it (a reset,
    /// or an attack): `remove` (default: removed from the rooms until re-verified, and
    /// an alert) or `alert` (an alert only).
    #[serde(default)]
    pub identity_change: Option<Located<RawIdentityChange>>,
    /// How long an incident may run and when people are warned before it ends.
    pub duration: Located<RawDuration>,
    /// How long messages stay in the incident rooms before cordon redacts them.
    pub retention: Located<RawRetention>,
    /// The roles of this incident, by role id (a slug such as `site-commander`). Order is
    /// kept: it is the order of the roster shown to the commander.
    #[schemars(with = "Located<MapSchema<RawRole>>")]
    #[schemars(extend("propertyNames" = { "pattern": SLUG_PATTERN }))]
    pub roles: Located<IndexMap<Located<String>, RawRole>>,
    /// The rooms created when the incident is declared, in this order.
    #[schemars(length(min = 1))]
    pub rooms: Located<Vec<Located<RawRoom>>>,
    /// Briefing posted and pinned in every room when the incident starts (a template).
    #[serde(default)]
    pub briefing: Option<Located<String>>,
    /// Who receives the sealed archive of the incident's record.
    pub archive: Located<RawArchive>,
    /// The decision log (`!cordon decision`): who may log decisions besides the
    /// commander. Without it, the holders of a role called `loggist`, when there is one.
    #[serde(default)]
    pub decisions: Option<Located<RawDecisions>>,
    /// Whether the incident needs a METHANE report (`!cordon methane`): `required` (the
    /// commander is reminded after declaring until one is given) or `optional`
    /// (default).
    #[serde(default)]
    pub methane: Option<Located<RawMethane>>,
    /// Situation reports on a cycle: cordon asks the `from` role in the command room
    /// every `every`, and raises a missing one after `grace`.
    #[serde(default)]
    pub sitrep: Option<Located<RawSitrep>>,
    /// Whether cordon nudges a sender whose message in an incident room holds an NHS
    /// number or a full date of birth (to minimise patient-identifiable data). Default
    /// `true`.
    #[serde(default)]
    pub pid_nudges: Option<Located<bool>>,
}

/// Situation reports on a cycle.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSitrep {
    /// How often a SITREP is due, from the declaration, e.g. `30m`.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub every: Located<String>,
    /// The role whose holders send it (`!cordon sitrep <text>`).
    pub from: Located<String>,
    /// How long after it is due a missing SITREP is raised with the role holders and
    /// the commander, e.g. `10m`. Default `10m`; shorter than `every`.
    #[serde(default)]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub grace: Option<Located<String>>,
}

/// Whether a METHANE report is required.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawMethane {
    /// The commander is reminded after declaring until a report is given.
    Required,
    /// No reminder.
    Optional,
}

/// Who may log decisions.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDecisions {
    /// Role ids whose holders may log decisions (`!cordon decision`), besides the
    /// incident commander, e.g. `[loggist, site-commander]`. An empty list leaves it to
    /// the commander alone.
    pub by: Located<Vec<Located<String>>>,
}

/// Who may declare an incident from this playbook.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// Each entry is either `role:<role-id>` (any holder of that role in this playbook)
    /// or a Matrix user id such as `@duty-manager:nhs.example`. Operators may always
    /// declare.
    #[schemars(length(min = 1))]
    pub allowed: Located<Vec<Located<String>>>,
}

/// What happens to role holders whose identity cordon has not verified.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawVerification {
    /// Unverified holders are not invited; they are listed as pending and the commander
    /// is told.
    Required,
    /// Unverified holders are invited, with a warning to them and to the commander.
    Warn,
}

/// What happens when a member's verified identity changes.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawIdentityChange {
    /// The member is removed from the incident's rooms until re-verified, with an alert.
    Remove,
    /// An alert only; the member stays.
    Alert,
}

/// How long an incident may run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDuration {
    /// Longest the incident runs before it stands down automatically, e.g. `24h`.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max: Located<String>,
    /// When to warn the rooms before the end, e.g. `[2h, 30m]`. Each must be shorter
    /// than `max`. Default: no warnings.
    #[serde(default)]
    pub warn_before: Option<Located<Vec<Located<DurationText>>>>,
    /// Total extra time the commander may add with `!cordon extend`, across all
    /// extensions, e.g. `24h`. Default `0s`: the incident cannot be extended.
    #[serde(default)]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub extend_max: Option<Located<String>>,
}

/// A humantime duration such as `90s`, `30m`, `12h` or `2d`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct DurationText(#[schemars(regex(pattern = DURATION_PATTERN))] pub String);

/// Message retention inside the incident rooms.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Messages older than this are redacted from the rooms, e.g. `12h`. Must not be
    /// longer than `duration.max`. Advice not yet marked transcribed gets one reminder
    /// to its author first.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub messages: Located<String>,
    /// Seal each message into the incident archive before redacting it, so that the
    /// archive keeps the whole conversation. Default `false`: the archive holds what
    /// retention has not yet removed, plus a manifest of what it did.
    #[serde(default)]
    pub seal_before_redact: Option<Located<bool>>,
}

/// One role in the incident.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    /// What responders call this role, e.g. "ED consultant in charge".
    #[schemars(length(min = 1))]
    pub title: Located<String>,
    /// Matrix user ids of the people invited to this role when the incident starts, e.g.
    /// `@a.patel:nhs.example`. Default: none (filled during the incident with `add`).
    #[serde(default)]
    pub holders: Option<Located<Vec<Located<String>>>>,
    /// How many holders must be invitable for the role to count as filled; fewer is
    /// flagged to the commander. Default 1 (0 when the role has no holders).
    #[serde(default)]
    pub min: Option<Located<u32>>,
    /// Action card posted in the incident's rooms for this role (a template).
    #[serde(default)]
    pub instructions: Option<Located<String>>,
}

/// One room created for the incident.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoom {
    /// Short key of the room within this playbook (a slug such as `command`); unique.
    #[schemars(regex(pattern = SLUG_PATTERN), length(max = 64))]
    pub key: Located<String>,
    /// Room name (a template), e.g. "{incident} - Command".
    #[schemars(length(min = 1))]
    pub name: Located<String>,
    /// Room topic (a template). cordon always adds the banner "not the medical record".
    #[serde(default)]
    pub topic: Option<Located<String>>,
    /// Role ids whose holders are invited to this room.
    #[schemars(length(min = 1))]
    pub members: Located<Vec<Located<String>>>,
    /// Role ids (among `members`) whose holders may redact messages in this room.
    #[serde(default)]
    pub moderators: Option<Located<Vec<Located<String>>>>,
    /// Allow users of other homeservers to join this room. Default `false`.
    #[serde(default)]
    pub federate: Option<Located<bool>>,
    /// Messages posted on a schedule, such as "transcribe advice into the patient record".
    #[serde(default)]
    pub reminders: Option<Located<Vec<Located<RawReminder>>>>,
}

/// A message posted in a room on a schedule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReminder {
    /// Cron schedule in the config's time zone: 5 fields `min hour day month weekday`
    /// (e.g. `*/30 * * * *`), or 6 with a leading seconds field. Weekdays are written as
    /// names (`MON-FRI`). At most once a minute.
    #[schemars(length(min = 1))]
    pub cron: Located<String>,
    /// The message (a template). Without it, cordon's standard reminder: transcribe and
    /// attribute clinical advice into the patient record; these rooms are destroyed at
    /// `{expires}`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub text: Option<Located<String>>,
}

/// Who receives the sealed archive.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    /// age x25519 public keys (`age1…`) of the records officers who can open the archive.
    #[schemars(length(min = 1))]
    pub recipients: Located<Vec<Located<String>>>,
    /// How long cordon keeps the sealed archive after the rooms are destroyed, e.g.
    /// `90d`. Default `30d`. (Records officers keep their own copy under their own
    /// retention schedule.)
    #[serde(default)]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub keep: Option<Located<String>>,
}
