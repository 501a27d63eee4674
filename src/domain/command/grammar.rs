//! The grammar itself: a clap-derived enum whose doc comments are the chat help.
//!
//! [`Grammar`] mirrors what commanders type, word for word (a name may arrive as several
//! words, an incident may be left out). `parse` turns it into the typed [`Command`] the bot
//! acts on. Every variant's doc comment ends with an example, and
//! `!cordon help` renders these comments, so the help cannot drift from the parser.

use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use matrix_sdk::ruma::OwnedUserId;

use super::args::{EventRef, IncidentRef, PlaybookId, RoleId, parse_duration, parse_user};

/// The bin name clap shows in usage lines and errors.
pub(crate) const BIN_NAME: &str = "!cordon";

/// The whole chat grammar: `!cordon <COMMAND> …`.
#[derive(Debug, Parser)]
#[command(
    name = BIN_NAME,
    bin_name = BIN_NAME,
    disable_help_subcommand = true,
    disable_version_flag = true,
    color = clap::ColorChoice::Never,
    term_width = 0
)]
pub(crate) struct Chat {
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Grammar,
}

/// The commands, as typed. Doc comments here are the text of `!cordon help`.
#[derive(Debug, Subcommand)]
pub(crate) enum Grammar {
    /// Declare an incident from a playbook.
    ///
    /// cordon checks the playbook, creates its rooms, invites the verified role holders
    /// and starts the incident's clock. Quotes around the name are optional. With
    /// --exercise it runs the playbook as a drill: every room and message says EXERCISE,
    /// its archive is kept apart from real incidents', and no legal hold applies.
    ///
    /// Example: !cordon declare mass-casualty "Tram crash Addiscombe"
    ///
    /// Exercise: !cordon declare mass-casualty "Exercise Tramline" --exercise
    #[command(override_usage = "!cordon declare <PLAYBOOK> <NAME>... [--exercise]")]
    Declare {
        /// The playbook's id, as written in its file (like mass-casualty).
        #[arg(value_parser = PlaybookId::parse)]
        playbook: PlaybookId,
        /// A name for the incident, up to 200 characters; several words are joined.
        #[arg(required = true, num_args = 1..)]
        name: Vec<String>,
        /// Run it as an exercise (a drill), not a real incident.
        #[arg(long)]
        exercise: bool,
    },

    /// Show an incident's state, time left and roster.
    ///
    /// Example: !cordon status mc-4k7p
    Status {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
    },

    /// Extend an active incident's time limit, up to the playbook's bound.
    ///
    /// Example: !cordon extend mc-4k7p 4h
    #[command(allow_missing_positional = true)]
    Extend {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// How much longer, like 4h, 90m or 1h30m.
        #[arg(value_parser = parse_duration)]
        duration: Duration,
    },

    /// Stand an incident down: freeze its rooms, seal the archive, then destroy the rooms.
    ///
    /// Example: !cordon standdown mc-4k7p
    #[command(alias = "stand-down")]
    Standdown {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
    },

    /// Place a legal hold: nothing of the incident is destroyed until it is released.
    ///
    /// Quotes around the reason are optional; name the incident before --reason.
    ///
    /// Example: !cordon hold mc-4k7p --reason "Coroner's request"
    #[command(override_usage = "!cordon hold [INCIDENT] --reason <REASON>...")]
    Hold {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// Why the hold is placed, for the audit log.
        #[arg(long, required = true, num_args = 1..)]
        reason: Vec<String>,
    },

    /// Release a legal hold (operators and records officers only).
    ///
    /// Example: !cordon release mc-4k7p
    Release {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
    },

    /// Retry the step that failed, or the delivery of the advice to the patient record
    /// that the stand-down waits for.
    ///
    /// --skip-fhir (operators only) destroys the rooms without delivering the advice to
    /// the FHIR server; the bundle stays in the sealed archive.
    ///
    /// Example: !cordon retry mc-4k7p
    #[command(override_usage = "!cordon retry [INCIDENT] [--skip-fhir]")]
    Retry {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// Stop waiting for the FHIR delivery and destroy the rooms without it.
        #[arg(long)]
        skip_fhir: bool,
    },

    /// Add a verified person to the incident in a role, and invite them to its rooms.
    ///
    /// Example: !cordon add mc-4k7p @dr.patel:nhs.example --role ed-lead
    #[command(
        allow_missing_positional = true,
        override_usage = "!cordon add [INCIDENT] <USER> --role <ROLE>"
    )]
    Add {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// The person: a user id like @name:server, or their matrix.to link.
        #[arg(value_parser = parse_user)]
        user: OwnedUserId,
        /// The playbook role they take (like ed-lead).
        #[arg(long, value_parser = RoleId::parse)]
        role: RoleId,
    },

    /// Take a person out of the incident and its rooms.
    ///
    /// Example: !cordon remove mc-4k7p @dr.patel:nhs.example
    #[command(allow_missing_positional = true)]
    Remove {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// The person: a user id like @name:server, or their matrix.to link.
        #[arg(value_parser = parse_user)]
        user: OwnedUserId,
    },

    /// Hand the incident commander role over to another person.
    ///
    /// Example: !cordon handover mc-4k7p @duty-manager:nhs.example
    #[command(allow_missing_positional = true)]
    Handover {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// The new commander: a user id like @name:server, or their matrix.to link.
        #[arg(value_parser = parse_user)]
        user: OwnedUserId,
    },

    /// Emergency override: let in a person whose identity cordon has not verified.
    ///
    /// Both --unverified and --reason are required. The override is audited, and the
    /// person cannot read cordon's own encrypted messages until they are verified. Name
    /// the incident and the person before the flags.
    ///
    /// Example: !cordon admit mc-4k7p @locum:nhs.example --unverified --reason "Locum on shift, verifying later"
    #[command(
        allow_missing_positional = true,
        override_usage = "!cordon admit [INCIDENT] <USER> --unverified --reason <REASON>..."
    )]
    Admit {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// The person: a user id like @name:server, or their matrix.to link.
        #[arg(value_parser = parse_user)]
        user: OwnedUserId,
        /// Confirms that you are letting in someone unverified.
        #[arg(long, required = true)]
        unverified: bool,
        /// Why, for the audit log.
        #[arg(long, required = true, num_args = 1..)]
        reason: Vec<String>,
    },

    /// Flag a message as clinical advice that must be transcribed into the patient record.
    ///
    /// Use the message's link (Options, Share, Copy link) or its event id, or send the
    /// command as a reply to the message. --patient ties the advice to a patient by NHS
    /// number (checked; sealed to the records officers, never kept by cordon in the
    /// clear), for the export to the patient record; send it again with --patient to add
    /// one to advice already flagged.
    ///
    /// Example: !cordon advice https://matrix.to/#/!abc:nhs.example/$def?via=nhs.example --patient 943 476 5919
    #[command(override_usage = "!cordon advice [LINK] [--patient <NHS NUMBER>]")]
    Advice {
        /// The message: its matrix.to link, a matrix: link, or its event id ($…). Leave
        /// it out when replying to the message.
        #[arg(value_parser = EventRef::parse)]
        link: Option<EventRef>,
        /// The patient's NHS number: ten digits, spaced 3 3 4 or not.
        #[arg(long, value_name = "NHS NUMBER", num_args = 1..=3)]
        patient: Vec<String>,
    },

    /// Mark flagged advice as transcribed into the patient record, with attribution.
    ///
    /// Example: !cordon transcribed https://matrix.to/#/!abc:nhs.example/$def?via=nhs.example
    Transcribed {
        /// The message: its matrix.to link, a matrix: link, or its event id ($…).
        #[arg(value_parser = EventRef::parse)]
        link: EventRef,
    },

    /// Log a decision in the incident's decision log: numbered (D1, D2, …), timed,
    /// attributed, posted in the command room, never edited.
    ///
    /// The commander, a loggist or a role the playbook names may log one. Send it as a
    /// reply to a message to log that message as the decision, its author as the one who
    /// decided. The text is kept as written, line breaks and all; --because takes the
    /// rest of the message. A mistake is corrected by a new entry: --corrects D5.
    ///
    /// Example: !cordon decision Divert P1 trauma to St George's --because CT scanner down
    #[command(
        override_usage = "!cordon decision [--incident <INCIDENT>] [--corrects <Dn>] <TEXT>... [--because <RATIONALE>...]"
    )]
    Decision {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(long, value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// The decision this one corrects, as numbered in the log (like D5).
        #[arg(long, value_name = "Dn")]
        corrects: Option<String>,
        /// What was decided; leave it out when replying to the message that says it.
        #[arg(num_args = 0..)]
        text: Vec<String>,
        /// Why: the rationale, recorded with the decision.
        #[arg(long, num_args = 1.., value_name = "RATIONALE")]
        because: Vec<String>,
    },

    /// Record a METHANE report: the command, then seven lines, one each.
    ///
    /// M: major incident declared or standby; E: exact location; T: type of incident;
    /// H: hazards; A: access; N: number and severity of casualties; E: emergency
    /// services present and required. The report is pinned in the command room and a
    /// later one supersedes it (v2, v3; all are kept).
    ///
    /// Example: !cordon methane (then, on the next lines) M: declared / E: Addiscombe Road tram stop / T: tram derailment / H: live overhead lines / A: from Lower Addiscombe Road / N: 12 P1, 20 P2 / E: ambulance, fire, police; HART requested
    #[command(override_usage = "!cordon methane [--incident <INCIDENT>] <LINES>...")]
    Methane {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(long, value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// The seven lines, M: to E:, each on its own line.
        #[arg(num_args = 0..)]
        lines: Vec<String>,
    },

    /// Send a situation report (SITREP) for the incident's cycle.
    ///
    /// The playbook says how often one is due and from which role; cordon asks for it in
    /// the command room and raises a late one. The text is kept as written.
    ///
    /// Example: !cordon sitrep 14 in resus, 3 to theatre, CT back at 15:10; need 2 ODPs
    #[command(override_usage = "!cordon sitrep [--incident <INCIDENT>] <TEXT>...")]
    Sitrep {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(long, value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
        /// The situation now.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },

    /// List an incident's decision log: number, time, who decided and logged, and where.
    ///
    /// Example: !cordon log mc-4k7p
    Log {
        /// The incident's short id (like mc-4k7p); leave it out when exactly one incident
        /// is active in this room.
        #[arg(value_parser = IncidentRef::parse)]
        incident: Option<IncidentRef>,
    },

    /// List the commands, or explain one.
    ///
    /// Example: !cordon help declare
    Help {
        /// The command to explain.
        command: Option<String>,
    },
}

/// The clap command tree for the grammar, built (so bin names are set for usage lines),
/// with clap's own `--help` flags turned off: `--help` is handled before clap sees it, and
/// `help` is a command of its own.
pub(crate) fn clap_command() -> clap::Command {
    let mut cmd = Chat::command()
        .disable_help_flag(true)
        .mut_subcommands(|sub| sub.disable_help_flag(true));
    cmd.build();
    cmd
}

/// The canonical name of the command `word` names (by name or alias, ASCII
/// case-insensitively), if any.
pub(crate) fn canonical_name(word: &str) -> Option<String> {
    let word = word.to_ascii_lowercase();
    clap_command()
        .find_subcommand(&word)
        .map(|sub| sub.get_name().to_owned())
}

/// Whether `--long` of `command` takes several words (`--reason Coroner asked`).
pub(crate) fn takes_many_values(command: &str, long: &str) -> bool {
    clap_command()
        .find_subcommand(command)
        .and_then(|sub| sub.get_arguments().find(|a| a.get_long() == Some(long)))
        .and_then(|arg| arg.get_num_args())
        .is_some_and(|range| range.max_values() > 1)
}

/// Runs clap over `args` (the words after `!cordon`, the command word first).
pub(crate) fn parse_words(args: &[String]) -> Result<Grammar, clap::Error> {
    let mut matches = clap_command()
        .try_get_matches_from(std::iter::once(BIN_NAME).chain(args.iter().map(String::as_str)))?;
    Chat::from_arg_matches_mut(&mut matches).map(|chat| chat.command)
}

/// The commands, in the order of the grammar (aliases and hidden commands left out).
pub(crate) fn command_names() -> Vec<String> {
    clap_command()
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| sub.get_name().to_owned())
        .collect()
}

/// The usage line of `command` (`Usage: !cordon extend [INCIDENT] <DURATION>`).
pub(crate) fn usage(command: &str) -> Option<String> {
    let mut root = clap_command();
    let sub = root.find_subcommand_mut(command)?;
    Some(sub.render_usage().to_string().trim_end().to_owned())
}

/// The command closest to `word`, if one is close enough to be a likely typo.
pub(crate) fn suggest(word: &str) -> Option<String> {
    // Long words are not typos of short commands; bounding them also bounds the work.
    if word.is_empty() || word.chars().count() > 24 {
        return None;
    }
    let word = word.to_lowercase();
    let names = command_names();
    if let Some(prefixed) = names
        .iter()
        .filter(|n| word.chars().count() >= 3 && n.starts_with(&word))
        .min_by_key(|n| n.len())
    {
        return Some(prefixed.clone());
    }
    names
        .into_iter()
        .map(|name| (strsim::osa_distance(&word, &name), name))
        .filter(|(d, name)| *d <= 2.max(name.len() / 4) && *d < name.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        clap_command().debug_assert();
    }

    #[test]
    fn every_usage_line_names_every_argument() {
        // Three commands override their usage line to put the incident first; this keeps
        // those lines from drifting from the arguments they describe.
        let mut root = clap_command();
        for sub in root.get_subcommands_mut() {
            let usage = sub.render_usage().to_string();
            for arg in sub.get_arguments() {
                let shown = match arg.get_long() {
                    Some(long) => format!("--{long}"),
                    None => arg
                        .get_value_names()
                        .and_then(|names| names.first())
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                };
                assert!(
                    usage.contains(&shown),
                    "usage of {} lacks {shown}: {usage}",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn every_command_has_an_example() {
        for sub in clap_command().get_subcommands() {
            let long = sub
                .get_long_about()
                .map(|s| s.to_string())
                .unwrap_or_default();
            assert!(
                long.contains(&format!("Example: !cordon {}", sub.get_name())),
                "{} has no example: {long}",
                sub.get_name()
            );
        }
    }

    #[test]
    fn aliases_resolve_to_the_command() {
        assert_eq!(canonical_name("stand-down").as_deref(), Some("standdown"));
        assert_eq!(canonical_name("DECLARE").as_deref(), Some("declare"));
        assert_eq!(canonical_name("frobnicate"), None);
    }
}
