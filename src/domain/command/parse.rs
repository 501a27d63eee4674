//! The parse pipeline: addressed? → words → command word → clap → typed command. Each
//! step either hands on or returns the one [`Rejection`] that explains the problem.

use clap::error::{ContextKind, ContextValue, ErrorKind};

use super::Command;
use super::args::{EventRef, parse_duration};
use super::args::{IncidentName, Reason};
use super::error::Rejection;
use super::freetext::{parse_decision, parse_methane, parse_sitrep};
use super::grammar::{Grammar, canonical_name, parse_words, suggest, takes_many_values};
use super::lexer::MAX_BODY_BYTES;
use super::lexer::{addressed, words};
use super::text::echo;
use crate::domain::pid::NhsNumber;

/// Parses a message body.
///
/// Returns `None` when the message is not addressed to cordon (it does not start with
/// `!cordon`, in any case, after leading whitespace and any reply fallback), and
/// `Some(Err(..))` for anything addressed to cordon that is not a valid command.
///
/// The body is the plain-text `body` of an `m.room.message`. It never panics, and its
/// work is linear in the length of the body.
pub fn parse(body: &str) -> Option<Result<Command, Rejection>> {
    let (whole, rest) = addressed(body)?;
    Some(parse_addressed(whole, rest))
}

fn parse_addressed(whole: &str, rest: &str) -> Result<Command, Rejection> {
    if let Some(parsed) = free_text(whole, rest) {
        return parsed;
    }
    let mut words = words(whole, rest)?;
    let Some(first) = words.first() else {
        return Err(Rejection::Empty);
    };
    if first == "--help" || first == "-h" {
        return Ok(Command::Help { topic: None });
    }
    let Some(name) = canonical_name(first) else {
        return Err(Rejection::UnknownCommand {
            given: echo(first),
            suggestion: suggest(first),
        });
    };
    if words.iter().skip(1).any(|w| w == "--help" || w == "-h") {
        return Ok(Command::Help { topic: Some(name) });
    }
    words[0] = name.clone();
    split_equals_of_many_valued_flags(&name, &mut words);
    if name == "extend" {
        merge_spaced_duration(&mut words);
    }
    let grammar: Grammar = parse_words(&words).map_err(|err| from_clap(&err, &name))?;
    into_command(grammar)
}

/// A command whose argument is prose (`decision`, `methane`, `sitrep`), parsed as written rather than split
/// into words; `None` for every other command.
fn free_text(whole: &str, rest: &str) -> Option<Result<Command, Rejection>> {
    let trimmed = rest.trim_start();
    let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let name = canonical_name(&trimmed[..end])?;
    if !matches!(name.as_str(), "decision" | "methane" | "sitrep") {
        return None;
    }
    if whole.len() > MAX_BODY_BYTES {
        return Some(Err(Rejection::TooLong {
            bytes: whole.len(),
            limit: MAX_BODY_BYTES,
        }));
    }
    let args = &trimmed[end..];
    Some(match name.as_str() {
        "methane" => parse_methane(args),
        "sitrep" => parse_sitrep(args),
        _ => parse_decision(args),
    })
}

/// `--reason=Coroner asked`: clap stops collecting a flag's values after `=`, so the
/// rest of the reason would be refused. Split `--reason=Coroner` into `--reason Coroner`
/// for flags that take several words.
fn split_equals_of_many_valued_flags(command: &str, words: &mut Vec<String>) {
    let mut index = 1;
    while let Some(word) = words.get(index) {
        if let Some((flag, value)) = word.strip_prefix("--").and_then(|w| w.split_once('='))
            && takes_many_values(command, flag)
        {
            let (flag, value) = (format!("--{flag}"), value.to_owned());
            words[index] = flag;
            words.insert(index + 1, value);
            index += 1;
        }
        index += 1;
    }
}

/// `extend 4h 30m` (or `extend mc-4k7p 1 h`): a duration typed with spaces arrives as
/// several words. When the trailing words only make sense together as one duration, join
/// them. Incident ids never parse as durations, so this cannot swallow one.
fn merge_spaced_duration(words: &mut Vec<String>) {
    if words.len() < 3 || words.iter().skip(1).any(|w| w.starts_with('-')) {
        return;
    }
    for start in 1..=2 {
        if words.len() - start < 2 {
            return;
        }
        let joined = words[start..].join(" ");
        if parse_duration(&joined).is_ok() {
            words.truncate(start);
            words.push(joined);
            return;
        }
    }
}

/// The values of one kind of context in a clap error.
fn context(err: &clap::Error, kind: ContextKind) -> Vec<String> {
    match err.get(kind) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        Some(ContextValue::StyledStr(s)) => vec![s.to_string()],
        Some(ContextValue::StyledStrs(v)) => v.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    }
}

/// Turns a clap error into a [`Rejection`] that names the argument. Anything from the
/// input goes through [`echo`].
fn from_clap(err: &clap::Error, command: &str) -> Rejection {
    let command = command.to_owned();
    let invalid_arg = context(err, ContextKind::InvalidArg);
    match err.kind() {
        ErrorKind::MissingRequiredArgument if !invalid_arg.is_empty() => {
            Rejection::MissingArgument {
                command,
                argument: invalid_arg.join(", "),
            }
        }
        ErrorKind::UnknownArgument if !invalid_arg.is_empty() => Rejection::UnexpectedArgument {
            command,
            argument: invalid_arg.first().map(|a| echo(a)).unwrap_or_default(),
            suggestion: context(err, ContextKind::SuggestedArg).first().cloned(),
        },
        ErrorKind::ValueValidation => {
            let reason = std::error::Error::source(err)
                .map(ToString::to_string)
                .unwrap_or_else(|| clap_message(err));
            Rejection::InvalidArgument {
                command,
                argument: invalid_arg.join(", "),
                reason,
            }
        }
        ErrorKind::InvalidValue
            if context(err, ContextKind::InvalidValue)
                .iter()
                .all(String::is_empty) =>
        {
            // `--reason <REASON>...` → `--reason`
            let flag = invalid_arg
                .first()
                .and_then(|a| a.split(' ').next())
                .unwrap_or("the flag");
            Rejection::MissingArgument {
                command,
                argument: format!("a value after {flag}"),
            }
        }
        _ => Rejection::Usage {
            command,
            message: clap_message(err),
        },
    }
}

/// The first line of clap's plain-text message, without its `error: ` tag, made safe to
/// echo word by word (each quoted piece of input is at most a few dozen characters).
fn clap_message(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    line.split(' ').map(echo).collect::<Vec<_>>().join(" ")
}

/// `advice`'s words: the link (or none, for a reply) and the NHS number after
/// `--patient`, spaced or not. clap hands `--patient` up to three words, so a link written
/// after the number arrives among them: a word that reads as a link is the link.
fn advice(link: Option<EventRef>, patient: &[String]) -> Result<Command, Rejection> {
    let invalid = |argument: &str, reason: String| Rejection::InvalidArgument {
        command: "advice".to_owned(),
        argument: argument.to_owned(),
        reason,
    };
    let looks_like_link = |w: &str| {
        let w = w.trim_start_matches('<');
        w.starts_with('$') || w.starts_with("https://") || w.starts_with("matrix:")
    };
    let (links, digits): (Vec<&String>, Vec<&String>) =
        patient.iter().partition(|w| looks_like_link(w));
    let mut event = link;
    match links.as_slice() {
        [] => {}
        [one] if event.is_none() => {
            event = Some(EventRef::parse(one).map_err(|e| invalid("<LINK>", e.to_string()))?);
        }
        _ => {
            return Err(invalid(
                "<LINK>",
                "give one message: its link, or send the command as a reply to it".to_owned(),
            ));
        }
    }
    let patient = if patient.is_empty() {
        None
    } else {
        let typed: Vec<&str> = digits.iter().map(|w| w.as_str()).collect();
        Some(NhsNumber::parse(&typed.join(" ")).map_err(|e| invalid("--patient <NHS NUMBER>", e))?)
    };
    Ok(Command::Advice { event, patient })
}

/// Turns the words as typed into a typed command, validating what clap could not
/// (joined names and reasons, help topics).
fn into_command(grammar: Grammar) -> Result<Command, Rejection> {
    let invalid = |command: &str, argument: &str, reason: String| Rejection::InvalidArgument {
        command: command.to_owned(),
        argument: argument.to_owned(),
        reason,
    };
    Ok(match grammar {
        Grammar::Declare {
            playbook,
            name,
            exercise,
        } => Command::Declare {
            playbook,
            exercise,
            name: IncidentName::from_words(&name)
                .map_err(|e| invalid("declare", "<NAME>", e.to_string()))?,
        },
        Grammar::Status { incident } => Command::Status { incident },
        Grammar::Extend { incident, duration } => Command::Extend { incident, duration },
        Grammar::Standdown { incident } => Command::Standdown { incident },
        Grammar::Hold { incident, reason } => Command::Hold {
            incident,
            reason: Reason::from_words(&reason)
                .map_err(|e| invalid("hold", "--reason <REASON>", e.to_string()))?,
        },
        Grammar::Release { incident } => Command::Release { incident },
        Grammar::Retry {
            incident,
            skip_fhir,
        } => Command::Retry {
            incident,
            skip_fhir,
        },
        Grammar::Add {
            incident,
            user,
            role,
        } => Command::Add {
            incident,
            user,
            role,
        },
        Grammar::Remove { incident, user } => Command::Remove { incident, user },
        Grammar::Handover { incident, user } => Command::Handover { incident, user },
        Grammar::Admit {
            incident,
            user,
            unverified,
            reason,
        } => {
            if !unverified {
                // clap requires the flag; this keeps the override explicit even if that
                // attribute is ever lost.
                return Err(Rejection::MissingArgument {
                    command: "admit".to_owned(),
                    argument: "--unverified".to_owned(),
                });
            }
            Command::Admit {
                incident,
                user,
                reason: Reason::from_words(&reason)
                    .map_err(|e| invalid("admit", "--reason <REASON>", e.to_string()))?,
            }
        }
        Grammar::Advice { link, patient } => advice(link, &patient)?,
        Grammar::Transcribed { link } => Command::Transcribed { event: link },
        // Parsed as written by `freetext` before clap sees it; this arm is what clap's
        // reading of the same words would mean, for completeness.
        Grammar::Decision {
            incident,
            corrects,
            text,
            because,
        } => Command::Decision {
            incident,
            text: (!text.is_empty()).then(|| text.join(" ")),
            because: (!because.is_empty()).then(|| because.join(" ")),
            corrects: match corrects {
                None => None,
                Some(c) => Some(crate::domain::record::parse_decision_label(&c).ok_or_else(
                    || {
                        invalid(
                            "decision",
                            "--corrects <Dn>",
                            "not a decision's number".into(),
                        )
                    },
                )?),
            },
        },
        Grammar::Log { incident } => Command::Log { incident },
        Grammar::Sitrep { incident, text } => Command::Sitrep {
            incident,
            text: text.join(" "),
        },
        // Parsed line by line by `freetext` before clap sees it: words lose the lines.
        Grammar::Methane { .. } => {
            return Err(Rejection::Usage {
                command: "methane".to_owned(),
                message: "write the report on seven lines after the command".to_owned(),
            });
        }
        Grammar::Help { command } => Command::Help {
            topic: match command {
                None => None,
                Some(topic) => Some(super::help::topic(&topic)?),
            },
        },
    })
}

#[cfg(test)]
mod tests;
