//! Who may run a command on an incident: the one table of command authority, checked by
//! the dispatcher after the incident is resolved and before the workflow runs.
//!
//! `declare` is decided by the playbook's trigger, and `advice`/`transcribed` by
//! membership of the incident room: both need more than the incident, so their
//! workflows check them, with [`Standing`] for the operator part.

use super::Command;

/// Who a sender is to one incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// The incident's commander.
    pub commander: bool,
    /// One of cordon's operators (the config's `operators`).
    pub operator: bool,
    /// A records officer (the config's `records_officers`).
    pub records_officer: bool,
    /// Holds a role that may log decisions (a loggist, or a role the playbook's
    /// `decisions.by` names).
    pub loggist: bool,
}

/// Who may run a command on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// Anyone in the control room (`status`, `help`), or a rule of its own (`declare`,
    /// `advice`, `transcribed`; see the module's documentation).
    Anyone,
    /// The commander or an operator, to do `action` (`"extend it"`).
    CommanderOrOperator {
        /// What they would do, as the refusal says it.
        action: &'static str,
    },
    /// An operator alone, to do `action`: skipping the delivery of advice to the
    /// patient record.
    OperatorOnly {
        /// What they would do, as the refusal says it.
        action: &'static str,
    },
    /// The commander alone: the emergency override `admit --unverified`.
    CommanderOnly,
    /// The commander, an operator or a records officer: a legal hold.
    CommanderOperatorOrRecordsOfficer,
    /// An operator or a records officer: releasing a legal hold.
    OperatorOrRecordsOfficer,
    /// The commander or a loggist (a role the playbook lets log decisions).
    CommanderOrLoggist,
    /// The commander, a loggist, or a holder of the role the playbook asks SITREPs from
    /// (`loggist` stands for both here: the dispatcher sets it for either).
    CommanderLoggistOrReporter,
}

impl Authority {
    /// Who may run `command`.
    pub fn of(command: &Command) -> Self {
        match command {
            Command::Extend { .. } => Self::CommanderOrOperator {
                action: "extend it",
            },
            Command::Standdown { .. } => Self::CommanderOrOperator {
                action: "stand it down",
            },
            Command::Retry {
                skip_fhir: true, ..
            } => Self::OperatorOnly {
                action: "destroy its rooms without delivering its advice to the patient \
                         record",
            },
            Command::Retry { .. } => Self::CommanderOrOperator { action: "retry it" },
            Command::Add { .. } | Command::Remove { .. } => Self::CommanderOrOperator {
                action: "change its roster",
            },
            Command::Handover { .. } => Self::CommanderOrOperator {
                action: "hand it over",
            },
            Command::Admit { .. } => Self::CommanderOnly,
            Command::Hold { .. } => Self::CommanderOperatorOrRecordsOfficer,
            Command::Release { .. } => Self::OperatorOrRecordsOfficer,
            Command::Decision { .. } | Command::Methane { .. } => Self::CommanderOrLoggist,
            Command::Sitrep { .. } => Self::CommanderLoggistOrReporter,
            Command::Declare { .. }
            | Command::Status { .. }
            | Command::Advice { .. }
            | Command::Transcribed { .. }
            | Command::Log { .. }
            | Command::Help { .. } => Self::Anyone,
        }
    }

    /// Whether someone of this standing may.
    pub fn allows(self, who: Standing) -> bool {
        match self {
            Self::Anyone => true,
            Self::CommanderOrOperator { .. } => who.commander || who.operator,
            Self::CommanderOnly => who.commander,
            Self::OperatorOnly { .. } => who.operator,
            Self::CommanderOperatorOrRecordsOfficer => {
                who.commander || who.operator || who.records_officer
            }
            Self::OperatorOrRecordsOfficer => who.operator || who.records_officer,
            Self::CommanderOrLoggist | Self::CommanderLoggistOrReporter => {
                who.commander || who.loggist
            }
        }
    }

    /// The refusal for someone it does not allow, about incident `id` whose commander
    /// is `commander`.
    pub fn refusal(self, id: &str, commander: &str) -> String {
        match self {
            Self::Anyone => format!("You cannot do that on {id}. Nothing was changed."),
            Self::CommanderOrOperator { action } => format!(
                "Only the commander of {id} ({commander}) or an operator can {action}. \
                 Nothing was changed."
            ),
            Self::CommanderOnly => format!(
                "Only the commander of {id} ({commander}) can admit someone unverified. \
                 Nothing was changed."
            ),
            Self::OperatorOnly { action } => {
                format!("Only an operator can {action} ({id}). Nothing was changed.")
            }
            Self::CommanderOperatorOrRecordsOfficer => format!(
                "Only the commander of {id} ({commander}), an operator or a records officer \
                 can place a legal hold. Nothing was changed."
            ),
            Self::OperatorOrRecordsOfficer => format!(
                "Only an operator or a records officer can release the legal hold on {id}. \
                 Nothing was changed."
            ),
            Self::CommanderOrLoggist => format!(
                "Only the commander of {id} ({commander}) or a loggist (a role its playbook \
                 lets log decisions) can add to its command record. Nothing was changed."
            ),
            Self::CommanderLoggistOrReporter => format!(
                "Only the commander of {id} ({commander}), a loggist, or a holder of the role \
                 its playbook asks SITREPs from can send one. Nothing was changed."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::command::parse;

    fn authority(body: &str) -> Authority {
        let command = parse(body).and_then(Result::ok).expect(body);
        Authority::of(&command)
    }

    const NOBODY: Standing = Standing {
        commander: false,
        operator: false,
        records_officer: false,
        loggist: false,
    };
    const COMMANDER: Standing = Standing {
        commander: true,
        ..NOBODY
    };
    const OPERATOR: Standing = Standing {
        operator: true,
        ..NOBODY
    };
    const RECORDS: Standing = Standing {
        records_officer: true,
        ..NOBODY
    };

    #[test]
    fn each_command_allows_exactly_its_people() {
        // (command, commander, operator, records officer, nobody)
        let table = [
            ("!cordon extend 1h", true, true, false, false),
            ("!cordon standdown", true, true, false, false),
            ("!cordon retry", true, true, false, false),
            ("!cordon retry --skip-fhir", false, true, false, false),
            ("!cordon add @a:b.c --role medic", true, true, false, false),
            ("!cordon remove @a:b.c", true, true, false, false),
            ("!cordon handover @a:b.c", true, true, false, false),
            (
                "!cordon admit @a:b.c --unverified --reason phone lost",
                true,
                false,
                false,
                false,
            ),
            ("!cordon hold --reason inquiry", true, true, true, false),
            ("!cordon release", false, true, true, false),
            ("!cordon status", true, true, true, true),
            ("!cordon help", true, true, true, true),
        ];
        for (body, commander, operator, records, nobody) in table {
            let a = authority(body);
            assert_eq!(a.allows(COMMANDER), commander, "{body}: commander");
            assert_eq!(a.allows(OPERATOR), operator, "{body}: operator");
            assert_eq!(a.allows(RECORDS), records, "{body}: records officer");
            assert_eq!(a.allows(NOBODY), nobody, "{body}: anyone else");
        }
    }

    #[test]
    fn decisions_are_logged_by_the_commander_or_a_loggist_only() {
        let a = authority("!cordon decision Divert P1 trauma --because CT down");
        let loggist = Standing {
            loggist: true,
            ..NOBODY
        };
        assert!(a.allows(COMMANDER));
        assert!(a.allows(loggist));
        assert!(!a.allows(OPERATOR));
        assert!(!a.allows(RECORDS));
        assert!(!a.allows(NOBODY));
        assert!(authority("!cordon log").allows(NOBODY));
        assert!(a.refusal("mc-4k7p", "@ic:hs").contains("or a loggist"));
        let methane = authority("!cordon methane\nM: declared\nE: x\nT: x\nH: x\nA: x\nN: x\nE: x");
        assert!(methane.allows(COMMANDER) && methane.allows(loggist));
        assert!(!methane.allows(OPERATOR));
    }

    #[test]
    fn refusals_name_who_may() {
        assert_eq!(
            authority("!cordon standdown").refusal("mc-4k7p", "@ic:hs"),
            "Only the commander of mc-4k7p (@ic:hs) or an operator can stand it down. \
             Nothing was changed."
        );
        assert!(
            authority("!cordon add @a:b.c --role medic")
                .refusal("mc-4k7p", "@ic:hs")
                .contains("can change its roster")
        );
        assert!(
            authority("!cordon release")
                .refusal("mc-4k7p", "@ic:hs")
                .starts_with("Only an operator or a records officer")
        );
    }
}
