//! Why a message addressed to cordon is not a command, and the polite reply that says so.
//!
//! [`Rejection`] is the one error enum of the chat grammar (the poise `on_error` idea):
//! its `Display` is a terse line for operator logs, [`Rejection::reply`] is what the
//! commander reads in chat: what was wrong, the usage line of the command, and what to do
//! next. Every piece of user input kept in a rejection has gone through `echo`, so a
//! reply never carries control, invisible or direction-changing characters back.

use super::grammar::{command_names, usage};
use super::text::Lookalike;

/// Why a message addressed to cordon was not accepted as a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Only `!cordon`, with no command.
    #[error("no command given")]
    Empty,

    /// The command text is longer than the limit.
    #[error("command is {bytes} bytes long; the limit is {limit}")]
    TooLong {
        /// Its length in bytes.
        bytes: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// More arguments than any command takes.
    #[error("command has {count} arguments; the limit is {limit}")]
    TooManyArguments {
        /// How many arguments there were (after the command word).
        count: usize,
        /// The limit.
        limit: usize,
    },

    /// One word is longer than the limit.
    #[error("word {position} is {chars} characters long; the limit is {limit}")]
    ArgumentTooLong {
        /// 1-based position of the word after `!cordon`.
        position: usize,
        /// Its length in characters.
        chars: usize,
        /// The limit in characters.
        limit: usize,
    },

    /// A quote was opened and never closed.
    #[error("unbalanced {quote} quote")]
    UnbalancedQuotes {
        /// The quote character (after typographic quotes were made ASCII).
        quote: char,
    },

    /// The message ends with a backslash that escapes nothing.
    #[error("trailing backslash")]
    TrailingBackslash,

    /// A word contains a control, invisible or direction-changing character.
    #[error("word {position} contains {} U+{:04X}", kind.describe(), u32::from(*character))]
    Lookalike {
        /// The command, when the first word named one.
        command: Option<String>,
        /// 1-based position of the word after `!cordon`.
        position: usize,
        /// The word, made safe by `echo`.
        word: String,
        /// The offending character.
        character: char,
        /// What kind of character it is.
        kind: Lookalike,
    },

    /// The first word is not a command (or `help` was asked about one that does not exist).
    #[error("unknown command `{given}`")]
    UnknownCommand {
        /// What was typed, made safe by `echo`.
        given: String,
        /// The closest command, if one is close.
        suggestion: Option<String>,
    },

    /// A required argument or flag is missing.
    #[error("`{command}` is missing {argument}")]
    MissingArgument {
        /// The command.
        command: String,
        /// The missing argument(s), as in the usage line (`<DURATION>`, `--unverified`).
        argument: String,
    },

    /// An argument or flag the command does not take.
    #[error("`{command}` does not take `{argument}`")]
    UnexpectedArgument {
        /// The command.
        command: String,
        /// The unexpected word, made safe by `echo`.
        argument: String,
        /// A similar flag the command does take, if any.
        suggestion: Option<String>,
    },

    /// An argument has the wrong form.
    #[error("bad {argument} for `{command}`: {reason}")]
    InvalidArgument {
        /// The command.
        command: String,
        /// The argument, as in the usage line (`<DURATION>`, `--role <ROLE>`).
        argument: String,
        /// What is wrong with it (user input inside is made safe by `echo`).
        reason: String,
    },

    /// Any other misuse of a command's arguments (a flag given twice, a flag without its
    /// value, …).
    #[error("`{command}`: {message}")]
    Usage {
        /// The command.
        command: String,
        /// What is wrong (user input inside is made safe by `echo`).
        message: String,
    },
}

impl Rejection {
    /// The command this rejection is about, when known.
    pub fn command(&self) -> Option<&str> {
        match self {
            Self::Lookalike { command, .. } => command.as_deref(),
            Self::MissingArgument { command, .. }
            | Self::UnexpectedArgument { command, .. }
            | Self::InvalidArgument { command, .. }
            | Self::Usage { command, .. } => Some(command),
            _ => None,
        }
    }

    /// The polite chat reply: what was wrong, the usage line of the command when one is
    /// known, and what to do next. Plain text (with `code` spans), no ANSI colour, and no
    /// control characters other than newlines.
    pub fn reply(&self) -> String {
        let mut text = match self {
            Self::Empty => format!(
                "`!cordon` needs a command after it. Commands: {}.",
                command_names().join(", ")
            ),
            Self::TooLong { bytes, limit } => format!(
                "That message is too long for a cordon command ({bytes} bytes; the limit is \
                 {limit}). Commands are short: put long explanations in the incident room."
            ),
            Self::TooManyArguments { count, limit } => format!(
                "That command has {count} arguments; cordon accepts at most {limit}. If a name \
                 or reason has many words, put it in quotes."
            ),
            Self::ArgumentTooLong {
                position,
                chars,
                limit,
            } => format!(
                "Word {position} of that command is {chars} characters long; cordon accepts \
                 at most {limit} per word."
            ),
            Self::UnbalancedQuotes { quote } => format!(
                "I could not read that command: a {quote} quote is opened but never \
                 closed. Close the quote, or leave the quotes out (for example \
                 `!cordon declare mass-casualty Tram crash Addiscombe`)."
            ),
            Self::TrailingBackslash => "I could not read that command: it ends with a \
                 backslash (\\). Remove it and send the command again."
                .to_owned(),
            Self::Lookalike {
                position,
                word,
                character,
                kind,
                ..
            } => format!(
                "Word {position} (`{word}`) contains {} (U+{:04X}). Characters like this \
                 can make one name look like another, so cordon refuses them. Type the \
                 command by hand rather than pasting it.",
                kind.describe(),
                u32::from(*character)
            ),
            Self::UnknownCommand { given, suggestion } => {
                let mut s = if given.is_empty() {
                    "An empty word is not a cordon command.".to_owned()
                } else {
                    format!("`{given}` is not a cordon command.")
                };
                if let Some(suggestion) = suggestion {
                    s.push_str(&format!(" Did you mean `{suggestion}`?"));
                }
                s.push_str(&format!(" Commands: {}.", command_names().join(", ")));
                s
            }
            Self::MissingArgument { command, argument } => {
                let mut s = format!("`{command}` needs {argument}.");
                if command == "admit" && argument.contains("--unverified") {
                    s.push_str(
                        " `admit` lets in someone whose identity cordon has not verified, \
                         so it must be asked for explicitly with --unverified, and with a \
                         --reason for the audit log.",
                    );
                }
                s
            }
            Self::UnexpectedArgument {
                command,
                argument,
                suggestion,
            } => {
                let mut s = format!("`{command}` does not take `{argument}`.");
                if let Some(suggestion) = suggestion {
                    s.push_str(&format!(" Did you mean `{suggestion}`?"));
                } else if command == "declare" || command == "hold" || command == "admit" {
                    s.push_str(" If a name or reason contains it, put it in quotes.");
                }
                s
            }
            Self::InvalidArgument {
                command,
                argument,
                reason,
            } => format!("Problem with {argument} for `{command}`: {reason}."),
            Self::Usage { command, message } => format!("Problem with `{command}`: {message}."),
        };
        match self.command() {
            Some(command) => {
                if let Some(usage) = usage(command) {
                    text.push('\n');
                    text.push_str(&usage);
                }
                text.push_str(&format!("\nTry `!cordon help {command}`."));
            }
            None => text.push_str("\nTry `!cordon help`."),
        }
        // Belt and braces: nothing but newlines among control characters.
        text.chars()
            .map(|c| {
                if c != '\n' && Lookalike::of(c).is_some() {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_names_the_usage_and_next_step() {
        let r = Rejection::MissingArgument {
            command: "extend".into(),
            argument: "<DURATION>".into(),
        };
        let reply = r.reply();
        assert!(reply.contains("extend [INCIDENT] <DURATION>"), "{reply}");
        assert!(reply.contains("Try `!cordon help extend`."), "{reply}");
    }

    #[test]
    fn reply_for_unknown_command_lists_commands_and_suggests() {
        let r = Rejection::UnknownCommand {
            given: "decalre".into(),
            suggestion: Some("declare".into()),
        };
        let reply = r.reply();
        assert!(reply.contains("Did you mean `declare`?"), "{reply}");
        assert!(reply.contains("standdown"), "{reply}");
        assert!(reply.contains("Try `!cordon help`."), "{reply}");
    }
}
