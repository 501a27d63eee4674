//! Commands whose argument is prose (`decision`): the text is taken as written, line
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
use crate::domain::record::{MAX_TEXT_CHARS, parse_decision_label};

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
    let command = "decision";
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
            return Ok(Command::Help {
                topic: Some(command.to_owned()),
            });
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
                because = Some(checked(rest, "--because <RATIONALE>")?);
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
        Some(checked(&text, "<TEXT>")?)
    };
    Ok(Command::Decision {
        incident,
        text,
        because,
        corrects,
    })
}

/// Refuses text that is too long or holds characters that could disguise it (line
/// breaks and tabs are kept).
fn checked(text: &str, argument: &str) -> Result<String, Rejection> {
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(Rejection::InvalidArgument {
            command: "decision".to_owned(),
            argument: argument.to_owned(),
            reason: format!("it is {chars} characters long; the limit is {MAX_TEXT_CHARS}"),
        });
    }
    for line in text.split(['\n', '\t']) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((character, kind)) = Lookalike::find(line) {
            return Err(Rejection::InvalidArgument {
                command: "decision".to_owned(),
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
