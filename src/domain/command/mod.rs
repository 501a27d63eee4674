//! The chat grammar: `!cordon declare mass-casualty "Tram crash Addiscombe"` → a typed
//! [`Command`], or a [`Rejection`] whose [`Rejection::reply`] tells the commander what to
//! type instead. No Matrix I/O happens here.
//!
//! # Layout
//!
//! - `lexer`: is the message addressed to cordon (`!cordon`, after any reply
//!   fallback), what phone keyboards did to it (curly quotes, autocorrected dashes,
//!   apostrophes), shell-style splitting with `shlex`, the size limits and the lookalike
//!   check.
//! - `grammar`: the clap-derived enum of commands. Its doc comments are the chat help,
//!   so `!cordon help` cannot drift from the parser.
//! - `args`: typed, validated arguments ([`IncidentRef`], [`PlaybookId`], [`RoleId`],
//!   [`IncidentName`], [`Reason`], [`EventRef`], users, durations).
//! - `parse`: the pipeline from body to [`Command`], and clap errors to [`Rejection`]s.
//! - `freetext`: `decision` and `methane`, whose text is taken as written (line breaks, apostrophes)
//!   rather than split into words.
//! - `help`: help text, usage lines and "did you mean" suggestions, rendered from the
//!   clap tree as plain text.
//! - `error`: [`Rejection`], the one error enum, and its polite reply.
//! - [`flood`]: how many answers a sender gets for commands cordon does not trust.
//! - [`authority`]: who may run each command on an incident (the commander, an
//!   operator, a records officer).
//!
//! The dispatcher (`app::dispatch`) runs the checks in order on the parsed [`Command`]:
//! a verified device for anything that [`Command::changes_state`], then the incident,
//! then [`authority::Authority`], then the workflow's own rules.

mod args;
pub mod authority;
mod error;
pub mod flood;
mod freetext;
mod grammar;
mod help;
mod lexer;
mod parse;
mod text;

use std::time::Duration;

use matrix_sdk::ruma::OwnedUserId;

pub use args::{
    ArgError, EventRef, IncidentName, IncidentRef, MAX_EXTENSION, PlaybookId, Reason, RoleId,
    parse_duration, parse_user,
};
pub use error::Rejection;
pub use help::help;
pub use lexer::{MAX_ARG_CHARS, MAX_ARGS, MAX_BODY_BYTES, PREFIX, strip_reply_fallback};
pub use parse::parse;

/// A valid cordon command with typed arguments. `incident: None` means "the one incident
/// active in this control room"; the bot resolves it, and refuses when there is not
/// exactly one. See `!cordon help <command>` for what each does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `declare <PLAYBOOK> <NAME>... [--exercise]`: declare an incident from a playbook.
    Declare {
        /// The playbook to run.
        playbook: PlaybookId,
        /// The incident's display name.
        name: IncidentName,
        /// A drill, not a real incident.
        exercise: bool,
    },
    /// `status [INCIDENT]`: show an incident's state.
    Status {
        /// The incident, if named.
        incident: Option<IncidentRef>,
    },
    /// `extend [INCIDENT] <DURATION>`: extend an active incident's time limit.
    Extend {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// How much longer (positive, at most [`MAX_EXTENSION`]).
        duration: Duration,
    },
    /// `standdown [INCIDENT]`: stand the incident down (freeze, seal, destroy).
    Standdown {
        /// The incident, if named.
        incident: Option<IncidentRef>,
    },
    /// `hold [INCIDENT] --reason <REASON>...`: place a legal hold.
    Hold {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// Why, for the audit log.
        reason: Reason,
    },
    /// `release [INCIDENT]`: release a legal hold.
    Release {
        /// The incident, if named.
        incident: Option<IncidentRef>,
    },
    /// `retry [INCIDENT] [--skip-fhir]`: retry the failed step (or the FHIR delivery),
    /// or skip the FHIR delivery.
    Retry {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// Destroy without delivering the advice to the FHIR server.
        skip_fhir: bool,
    },
    /// `add [INCIDENT] <USER> --role <ROLE>`: add a verified person in a role.
    Add {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// The person.
        user: OwnedUserId,
        /// Their role.
        role: RoleId,
    },
    /// `remove [INCIDENT] <USER>`: take a person out of the incident.
    Remove {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// The person.
        user: OwnedUserId,
    },
    /// `handover [INCIDENT] <USER>`: hand the commander role over.
    Handover {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// The new commander.
        user: OwnedUserId,
    },
    /// `admit [INCIDENT] <USER> --unverified --reason <REASON>...`: the audited emergency
    /// override that lets in an unverified person. Only parsed when `--unverified` was
    /// given explicitly.
    Admit {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// The unverified person.
        user: OwnedUserId,
        /// Why, for the audit log.
        reason: Reason,
    },
    /// `advice [<LINK>] [--patient <NHS NUMBER>]`: flag a message as clinical advice to
    /// transcribe, optionally for a patient.
    Advice {
        /// The message; `None` when the command replies to it.
        event: Option<EventRef>,
        /// The patient it is about, when given.
        patient: Option<crate::domain::pid::NhsNumber>,
    },
    /// `transcribed <LINK>`: mark flagged advice as transcribed.
    Transcribed {
        /// The message.
        event: EventRef,
    },
    /// `decision [--incident <ID>] [--corrects <Dn>] <TEXT>... [--because <RATIONALE>...]`:
    /// log a decision. `text: None` asks for the message replied to.
    Decision {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// What was decided, as written; `None` when left out (a reply).
        text: Option<String>,
        /// The rationale, as written.
        because: Option<String>,
        /// The number of the decision this one corrects.
        corrects: Option<u32>,
    },
    /// `methane [--incident <ID>]` and seven lines: a METHANE report.
    Methane {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// The report.
        report: crate::domain::record::Methane,
    },
    /// `sitrep [--incident <ID>] <TEXT>...`: a situation report.
    Sitrep {
        /// The incident, if named.
        incident: Option<IncidentRef>,
        /// The report, as written.
        text: String,
    },
    /// `log [INCIDENT]`: list the decision log.
    Log {
        /// The incident, if named.
        incident: Option<IncidentRef>,
    },
    /// `help [COMMAND]`: list the commands or explain one.
    Help {
        /// The canonical name of the command asked about, if any.
        topic: Option<String>,
    },
}

impl Command {
    /// The command's name as typed after `!cordon` (`"declare"`, `"status"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Declare { .. } => "declare",
            Self::Status { .. } => "status",
            Self::Extend { .. } => "extend",
            Self::Standdown { .. } => "standdown",
            Self::Hold { .. } => "hold",
            Self::Release { .. } => "release",
            Self::Retry { .. } => "retry",
            Self::Add { .. } => "add",
            Self::Remove { .. } => "remove",
            Self::Handover { .. } => "handover",
            Self::Admit { .. } => "admit",
            Self::Advice { .. } => "advice",
            Self::Transcribed { .. } => "transcribed",
            Self::Decision { .. } => "decision",
            Self::Methane { .. } => "methane",
            Self::Sitrep { .. } => "sitrep",
            Self::Log { .. } => "log",
            Self::Help { .. } => "help",
        }
    }

    /// Whether the command changes anything (the bot requires a verified device for
    /// these). Only `status`, `log` and `help` are read-only.
    pub fn changes_state(&self) -> bool {
        match self {
            Self::Status { .. } | Self::Log { .. } | Self::Help { .. } => false,
            Self::Declare { .. }
            | Self::Extend { .. }
            | Self::Standdown { .. }
            | Self::Hold { .. }
            | Self::Release { .. }
            | Self::Retry { .. }
            | Self::Add { .. }
            | Self::Remove { .. }
            | Self::Handover { .. }
            | Self::Admit { .. }
            | Self::Advice { .. }
            | Self::Transcribed { .. }
            | Self::Decision { .. }
            | Self::Methane { .. }
            | Self::Sitrep { .. } => true,
        }
    }

    /// The incident the command names, if it names one (`None` both when it was left out
    /// and for commands that take no incident).
    pub fn incident(&self) -> Option<&IncidentRef> {
        match self {
            Self::Status { incident }
            | Self::Extend { incident, .. }
            | Self::Standdown { incident }
            | Self::Hold { incident, .. }
            | Self::Release { incident }
            | Self::Retry { incident, .. }
            | Self::Add { incident, .. }
            | Self::Remove { incident, .. }
            | Self::Handover { incident, .. }
            | Self::Admit { incident, .. }
            | Self::Decision { incident, .. }
            | Self::Methane { incident, .. }
            | Self::Sitrep { incident, .. }
            | Self::Log { incident } => incident.as_ref(),
            Self::Declare { .. }
            | Self::Advice { .. }
            | Self::Transcribed { .. }
            | Self::Help { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_grammar() {
        // Every command name the parser knows is one `Command::name` can return.
        for name in grammar::command_names() {
            let body = format!("!cordon help {name}");
            assert_eq!(
                parse(&body),
                Some(Ok(Command::Help {
                    topic: Some(name.clone())
                }))
            );
        }
        assert_eq!(grammar::command_names().len(), 18);
    }

    #[test]
    fn only_status_and_help_are_read_only() {
        let read_only = ["!cordon status", "!cordon help", "!cordon log"];
        for body in read_only {
            assert!(!parse(body).unwrap().unwrap().changes_state(), "{body}");
        }
        let changing = [
            "!cordon declare mc x",
            "!cordon extend 1h",
            "!cordon standdown",
            "!cordon hold --reason x",
            "!cordon release",
            "!cordon retry",
            "!cordon add @a:b.c --role r",
            "!cordon remove @a:b.c",
            "!cordon handover @a:b.c",
            "!cordon admit @a:b.c --unverified --reason x",
            "!cordon advice $e",
            "!cordon transcribed $e",
            "!cordon decision Divert P1 trauma",
            "!cordon sitrep All stable",
        ];
        for body in changing {
            let command = parse(body).unwrap().unwrap();
            assert!(command.changes_state(), "{body}");
            assert_eq!(
                command.name(),
                body.split(' ').nth(1).unwrap(),
                "name of {body}"
            );
        }
    }

    #[test]
    fn incident_accessor() {
        let c = parse("!cordon extend MC-1 1h").unwrap().unwrap();
        assert_eq!(c.incident().map(IncidentRef::as_str), Some("mc-1"));
        assert_eq!(parse("!cordon status").unwrap().unwrap().incident(), None);
    }
}
