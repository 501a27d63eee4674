//! Commands whose argument is prose (`decision`, `sitrep`, `methane`): the text is taken as written, line
//! breaks, apostrophes and quotes included. Shell-style splitting would eat an
//! unbalanced apostrophe (`don't`), fold line breaks and cut a long rationale at the
//! word limit; a decision log must keep what was decided word for word.
//!
//! The flags are whole words: `--incident <ID>` and `--corrects <Dn>` anywhere before
//! `--because`, which takes the rest of the message as the rationale. Any other word
//! starting with `--` is refused rather than logged as part of the decision, so a
//! mistyped flag is never written into the record.

use super::Command;
use super::args::IncidentRef;
use super::error::Rejection;
use super::text::{Lookalike, echo};
use crate::domain::record::{MAX_TEXT_CHARS, METHANE_LINES, Methane, parse_decision_label};

/// The flags `decision` takes, for suggestions.
const FLAGS: [&str; 3] = ["--incident", "--corrects", "--because"];

/// An autocorrected dash (`—because`) read as the `--` it was typed as.
fn flag_of(word: &str) -> Option<String> {
    let rest = word
        .strip_prefix("--")
        .or_else(|| word.strip_prefix('—'))
        .or_else(|| word.strip_prefix('–'))?;
    rest.chars()
        .next()
        .filter(char::is_ascii_alphabetic)
        .map(|_| format!("--{}", rest.to_ascii_lowercase()))
}

/// Whitespace-separated words of `s` with their byte ranges.
fn spans(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(b)) => {
                out.push((b, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(b) = start {
        out.push((b, s.len()));
    }
    out
}

/// Parses what follows `decision`. An empty text is allowed here (a decision sent as a
/// reply logs the message replied to); the dispatcher refuses it when it is not a reply.
pub(crate) fn parse_decision(args: &str) -> Result<Command, Rejection> {
    prose("decision", args).map(|p| match p {
        Ok(Prose {
            incident,
            text,
            because,
            corrects,
        }) => Command::Decision {
            incident,
            text,
            because,
            corrects,
        },
        Err(help) => help,
    })
}

/// Parses what follows `sitrep`: `--incident <ID>` and the report, as written.
pub(crate) fn parse_sitrep(args: &str) -> Result<Command, Rejection> {
    let command = "sitrep";
    let p = match prose(command, args)? {
        Ok(p) => p,
        Err(help) => return Ok(help),
    };
    if let Some(flag) = [
        ("--because", p.because.is_some()),
        ("--corrects", p.corrects.is_some()),
    ]
    .iter()
    .find_map(|(f, given)| given.then_some(*f))
    {
        return Err(Rejection::UnexpectedArgument {
            command: command.to_owned(),
            argument: flag.to_owned(),
            suggestion: None,
        });
    }
    let Some(text) = p.text else {
        return Err(Rejection::MissingArgument {
            command: command.to_owned(),
            argument: "<TEXT> (the situation now: what has changed, numbers, needs)".to_owned(),
        });
    };
    Ok(Command::Sitrep {
        incident: p.incident,
        text,
    })
}

/// Prose with its flags, as [`prose`] reads it.
struct Prose {
    incident: Option<IncidentRef>,
    text: Option<String>,
    because: Option<String>,
    corrects: Option<u32>,
}

/// Reads `args` as prose with the flags `--incident`, `--corrects` and `--because`;
/// `Ok(Err(help))` when it asks for help.
fn prose(command: &str, args: &str) -> Result<Result<Prose, Command>, Rejection> {
    let words = spans(args);
    let mut incident = None;
    let mut corrects = None;
    let mut because = None;
    // The text's pieces: the spans between flags, kept as written.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut piece_start = 0;
    let mut i = 0;
    while let Some(&(b, e)) = words.get(i) {
        let word = &args[b..e];
        if word == "--help" || word == "-h" {
            return Ok(Err(Command::Help {
                topic: Some(command.to_owned()),
            }));
        }
        let Some(flag) = flag_of(word) else {
            i += 1;
            continue;
        };
        pieces.push((piece_start, b));
        match flag.as_str() {
            "--because" => {
                let rest = args[e..].trim();
                if rest.is_empty() {
                    return Err(Rejection::MissingArgument {
                        command: command.to_owned(),
                        argument: "a rationale after --because".to_owned(),
                    });
                }
                because = Some(checked_as(rest, command, "--because <RATIONALE>")?);
                piece_start = args.len();
                break;
            }
            "--incident" | "--corrects" => {
                let Some(&(vb, ve)) = words.get(i + 1) else {
                    return Err(Rejection::MissingArgument {
                        command: command.to_owned(),
                        argument: format!("a value after {flag}"),
                    });
                };
                let value = &args[vb..ve];
                let twice = if flag == "--incident" {
                    let parsed =
                        IncidentRef::parse(value).map_err(|e| Rejection::InvalidArgument {
                            command: command.to_owned(),
                            argument: "--incident <INCIDENT>".to_owned(),
                            reason: e.to_string(),
                        })?;
                    incident.replace(parsed).is_some()
                } else {
                    let n =
                        parse_decision_label(value).ok_or_else(|| Rejection::InvalidArgument {
                            command: command.to_owned(),
                            argument: "--corrects <Dn>".to_owned(),
                            reason: format!(
                                "`{}` is not a decision's number; write it as in the log, like D5",
                                echo(value)
                            ),
                        })?;
                    corrects.replace(n).is_some()
                };
                if twice {
                    return Err(Rejection::Usage {
                        command: command.to_owned(),
                        message: format!("{flag} was given twice"),
                    });
                }
                piece_start = ve;
                i += 2;
            }
            other => {
                let name = other.trim_start_matches('-');
                let suggestion = FLAGS
                    .iter()
                    .map(|f| (strsim::osa_distance(name, &f[2..]), *f))
                    .filter(|(d, _)| *d <= 3)
                    .min_by_key(|(d, _)| *d)
                    .map(|(_, f)| f.to_owned());
                return Err(Rejection::UnexpectedArgument {
                    command: command.to_owned(),
                    argument: echo(word),
                    suggestion,
                });
            }
        }
    }
    pieces.push((piece_start, args.len()));
    let mut text = String::new();
    for (b, e) in pieces {
        let piece = args[b.min(args.len())..e.max(b).min(args.len())].trim();
        if piece.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(piece);
    }
    let text = if text.is_empty() {
        None
    } else {
        Some(checked_as(&text, command, "<TEXT>")?)
    };
    Ok(Ok(Prose {
        incident,
        text,
        because,
        corrects,
    }))
}

/// What a METHANE line's label names: its index in [`METHANE_LINES`] (the first `E`
/// for either `E`; the caller places it), or `None`.
fn methane_index(label: &str) -> Option<usize> {
    let l = label.trim().trim_end_matches('.').to_lowercase();
    Some(match l.as_str() {
        "m" | "major incident" | "major incident declared" | "major" => 0,
        "e" => 1,
        "exact location" | "location" => 1,
        "t" | "type" | "type of incident" => 2,
        "h" | "hazards" | "hazard" => 3,
        "a" | "access" => 4,
        "n" | "number" | "number of casualties" | "casualties" => 5,
        "emergency services" | "services" => 6,
        _ => return None,
    })
}

/// The line named as the usage reply says it: "the `T:` line (type of incident)".
fn methane_line_name(index: usize) -> String {
    let (letter, meaning) = METHANE_LINES[index];
    let which = match index {
        1 => "first ",
        6 => "second ",
        _ => "",
    };
    format!("the {which}`{letter}:` line ({meaning})")
}

/// Parses what follows `methane`: an optional `--incident <ID>` on the command's line,
/// then the seven lines, `M:` to `E:`, each once. Missing, unknown, repeated and empty
/// lines are refused, naming the line.
pub(crate) fn parse_methane(args: &str) -> Result<Command, Rejection> {
    let command = "methane";
    let mut lines = args.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut incident = None;
    let head: Vec<&str> = first.split_whitespace().collect();
    let mut rest_of_first = first;
    match head.as_slice() {
        [] => {}
        ["--help" | "-h", ..] => {
            return Ok(Command::Help {
                topic: Some(command.to_owned()),
            });
        }
        [flag, value, ..] if flag_of(flag).as_deref() == Some("--incident") => {
            incident = Some(
                IncidentRef::parse(value).map_err(|e| Rejection::InvalidArgument {
                    command: command.to_owned(),
                    argument: "--incident <INCIDENT>".to_owned(),
                    reason: e.to_string(),
                })?,
            );
            let after = first.find(value).map_or(first.len(), |i| i + value.len());
            rest_of_first = &first[after..];
        }
        [flag] if flag_of(flag).as_deref() == Some("--incident") => {
            return Err(Rejection::MissingArgument {
                command: command.to_owned(),
                argument: "a value after --incident".to_owned(),
            });
        }
        _ => {}
    }
    let mut slots: [Option<String>; 7] = Default::default();
    for line in std::iter::once(rest_of_first).chain(lines) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((label, value)) = line.split_once(':') else {
            return Err(Rejection::InvalidArgument {
                command: command.to_owned(),
                argument: "<LINES>".to_owned(),
                reason: format!(
                    "the line `{}` has no `X:` label; each line starts with M:, E:, T:, H:, \
                     A:, N: or E:",
                    echo(line)
                ),
            });
        };
        let Some(mut index) = methane_index(label) else {
            return Err(Rejection::InvalidArgument {
                command: command.to_owned(),
                argument: "<LINES>".to_owned(),
                reason: format!(
                    "`{}:` is not a METHANE line; the lines are M:, E:, T:, H:, A:, N: and E:",
                    echo(label.trim())
                ),
            });
        };
        // `E:` is the exact location the first time, the emergency services the second.
        if index == 1 && label.trim().eq_ignore_ascii_case("e") && slots[1].is_some() {
            index = 6;
        }
        if slots[index].is_some() {
            return Err(Rejection::Usage {
                command: command.to_owned(),
                message: format!("{} was given twice", methane_line_name(index)),
            });
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(Rejection::InvalidArgument {
                command: command.to_owned(),
                argument: "<LINES>".to_owned(),
                reason: format!(
                    "{} is empty; write what is known, or `not known`",
                    methane_line_name(index)
                ),
            });
        }
        slots[index] = Some(checked_as(value, command, "<LINES>")?);
    }
    let missing: Vec<String> = (0..7)
        .filter(|i| slots[*i].is_none())
        .map(methane_line_name)
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::MissingArgument {
            command: command.to_owned(),
            argument: format!(
                "{} (write `!cordon methane`, then one line each: M:, E:, T:, H:, A:, N:, E:)",
                missing.join(", ")
            ),
        });
    }
    let lines = slots.map(Option::unwrap_or_default);
    let m = lines[0].to_lowercase();
    if !m.contains("declared") && !m.contains("standby") {
        return Err(Rejection::InvalidArgument {
            command: command.to_owned(),
            argument: "<LINES>".to_owned(),
            reason: "the `M:` line says whether a major incident is `declared` or on \
                     `standby`"
                .to_owned(),
        });
    }
    Ok(Command::Methane {
        incident,
        report: Methane { lines },
    })
}

/// Refuses text that is too long or holds characters that could disguise it (line
/// breaks and tabs are kept).
fn checked_as(text: &str, command: &str, argument: &str) -> Result<String, Rejection> {
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(Rejection::InvalidArgument {
            command: command.to_owned(),
            argument: argument.to_owned(),
            reason: format!("it is {chars} characters long; the limit is {MAX_TEXT_CHARS}"),
        });
    }
    for line in text.split(['\n', '\t']) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((character, kind)) = Lookalike::find(line) {
            return Err(Rejection::InvalidArgument {
                command: command.to_owned(),
                argument: argument.to_owned(),
                reason: format!(
                    "it contains {} U+{:04X}; retype it without that character",
                    kind.describe(),
                    u32::from(character)
                ),
            });
        }
    }
    Ok(text.replace("\r\n", "\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn decision(args: &str) -> (Option<String>, Option<String>, Option<u32>, Option<String>) {
        match parse_decision(args).unwrap() {
            Command::Decision {
                incident,
                text,
                because,
                corrects,
            } => (
                text,
                because,
                corrects,
                incident.map(|i| i.as_str().to_owned()),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_text_is_kept_as_written() {
        let (text, because, corrects, incident) = decision(
            " Don't divert \"P1\" trauma to St George's\nuntil 15:00 --because CT's down; 40+ words of rationale here",
        );
        assert_eq!(
            text.as_deref(),
            Some("Don't divert \"P1\" trauma to St George's\nuntil 15:00")
        );
        assert_eq!(
            because.as_deref(),
            Some("CT's down; 40+ words of rationale here")
        );
        assert_eq!((corrects, incident), (None, None));
    }

    #[test]
    fn flags_anywhere_before_because() {
        let (text, because, corrects, incident) =
            decision("--incident MC-4K7P Open theatre 3 --corrects D5");
        assert_eq!(text.as_deref(), Some("Open theatre 3"));
        assert_eq!((because, corrects), (None, Some(5)));
        assert_eq!(incident.as_deref(), Some("mc-4k7p"));
        let (text, _, corrects, _) = decision("—corrects d2 Open theatre 4");
        assert_eq!(
            (text.as_deref(), corrects),
            (Some("Open theatre 4"), Some(2))
        );
    }

    #[test]
    fn an_empty_text_is_left_to_the_dispatcher() {
        let (text, because, ..) = decision("  --because agreed with ED lead");
        assert_eq!(text, None);
        assert_eq!(because.as_deref(), Some("agreed with ED lead"));
    }

    const REPORT: &str = "\nM: Major incident declared\nE: Addiscombe Road tram stop\nT: Tram derailment\nH: Overhead lines live\nA: From Lower Addiscombe Road\nN: 12 P1, 20 P2, 40 P3\nE: Ambulance, fire, police on scene; HART requested";

    #[test]
    fn a_methane_report_is_read_line_by_line() {
        let Command::Methane { incident, report } = parse_methane(REPORT).unwrap() else {
            panic!()
        };
        assert_eq!(incident, None);
        assert_eq!(report.lines[1], "Addiscombe Road tram stop");
        assert_eq!(
            report.lines[6],
            "Ambulance, fire, police on scene; HART requested"
        );
        assert!(report.declared());
        assert!(
            report
                .to_text()
                .starts_with("M: Major incident declared\nE: Addiscombe")
        );
        let long = REPORT
            .replace("M:", "Major incident:")
            .replace("T:", "Type:")
            .replace("N:", "Number of casualties:");
        let named = format!(" --incident mc-4k7p{long}");
        let Command::Methane { incident, .. } = parse_methane(&named).unwrap() else {
            panic!()
        };
        assert_eq!(incident.unwrap().as_str(), "mc-4k7p");
    }

    #[test]
    fn a_malformed_methane_report_names_the_line() {
        let without_t = REPORT.replace("T: Tram derailment\n", "");
        let err = parse_methane(&without_t).unwrap_err();
        assert!(
            matches!(&err, Rejection::MissingArgument { argument, .. } if argument.contains("`T:` line (type of incident)")),
            "{err:?}"
        );
        let without_second_e =
            REPORT.replace("\nE: Ambulance, fire, police on scene; HART requested", "");
        let err = parse_methane(&without_second_e).unwrap_err();
        assert!(
            matches!(&err, Rejection::MissingArgument { argument, .. } if argument.contains("second `E:` line")),
            "{err:?}"
        );
        let unknown = REPORT.replace("H:", "X:");
        assert!(matches!(
            parse_methane(&unknown),
            Err(Rejection::InvalidArgument { reason, .. }) if reason.contains("`X:` is not a METHANE line")
        ));
        let empty = REPORT.replace("H: Overhead lines live", "H:");
        assert!(matches!(
            parse_methane(&empty),
            Err(Rejection::InvalidArgument { reason, .. }) if reason.contains("`H:` line")
        ));
        let twice = format!("{REPORT}\nT: again");
        assert!(matches!(
            parse_methane(&twice),
            Err(Rejection::Usage { .. })
        ));
        let neither = REPORT.replace("Major incident declared", "Busy");
        assert!(matches!(
            parse_methane(&neither),
            Err(Rejection::InvalidArgument { reason, .. }) if reason.contains("standby")
        ));
        assert!(matches!(
            parse_methane(""),
            Err(Rejection::MissingArgument { .. })
        ));
    }

    #[test]
    fn a_sitrep_is_prose_and_needs_text() {
        assert_eq!(
            parse_sitrep(" 14 in resus, 3 to theatre\nCT back 15:10").unwrap(),
            Command::Sitrep {
                incident: None,
                text: "14 in resus, 3 to theatre\nCT back 15:10".into()
            }
        );
        assert!(matches!(
            parse_sitrep("  "),
            Err(Rejection::MissingArgument { command, .. }) if command == "sitrep"
        ));
        assert!(matches!(
            parse_sitrep("All well --because why"),
            Err(Rejection::UnexpectedArgument { .. })
        ));
    }

    #[test]
    fn mistakes_are_refused_and_named() {
        assert!(matches!(
            parse_decision("Divert --becuase CT down"),
            Err(Rejection::UnexpectedArgument { suggestion: Some(s), .. }) if s == "--because"
        ));
        assert!(matches!(
            parse_decision("Divert --because   "),
            Err(Rejection::MissingArgument { .. })
        ));
        assert!(matches!(
            parse_decision("--corrects X9 Divert"),
            Err(Rejection::InvalidArgument { argument, .. }) if argument == "--corrects <Dn>"
        ));
        assert!(matches!(
            parse_decision("--corrects D1 --corrects D2 Divert"),
            Err(Rejection::Usage { .. })
        ));
        assert!(matches!(
            parse_decision("Divert\u{202E}evila"),
            Err(Rejection::InvalidArgument { .. })
        ));
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert!(matches!(
            parse_decision(&long),
            Err(Rejection::InvalidArgument { .. })
        ));
        assert_eq!(
            parse_decision("--help").unwrap(),
            Command::Help {
                topic: Some("decision".into())
            }
        );
    }
}
