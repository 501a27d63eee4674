//! From a message body to words: is it addressed to cordon, what phone keyboards did to
//! it, and where the words are (shlex, POSIX shell rules). All of it is linear in the
//! length of the body.

use super::error::Rejection;
use super::text::{Lookalike, echo};

/// The prefix that addresses cordon (matched ASCII case-insensitively).
pub const PREFIX: &str = "!cordon";
/// The longest command accepted, in bytes, from `!cordon` to the end.
pub const MAX_BODY_BYTES: usize = 4096;
/// The most arguments accepted after the command word.
pub const MAX_ARGS: usize = 32;
/// The longest word accepted, in characters.
pub const MAX_ARG_CHARS: usize = 512;

/// Drops a reply fallback: leading lines that start with `>`, followed by a blank line.
/// Without the blank line the quoted lines are not a fallback and the body is kept as is.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with('>') {
        return body;
    }
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let next = offset + line.len();
        if line.starts_with('>') {
            offset = next;
            continue;
        }
        if line.trim().is_empty() {
            return &body[next..];
        }
        break;
    }
    body
}

/// The text after `!cordon` when `body` is addressed to cordon, else `None`.
///
/// Returns the whole command (prefix included, for the length limit) and the rest.
pub(crate) fn addressed(body: &str) -> Option<(&str, &str)> {
    let text = strip_reply_fallback(body).trim_start();
    let prefix = text.get(..PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &text[PREFIX.len()..];
    match rest.chars().next() {
        // `!cordonx`, `!cordon-bot`, `!cordoné`: another word, not cordon.
        Some(c) if c.is_alphanumeric() || c == '-' || c == '_' => None,
        // `!cordon: status`, `!cordon, status`: as if addressed with a space.
        Some(':' | ',') => Some((text, &rest[1..])),
        // The end, whitespace, or other punctuation (`!cordon?`, which gets the list of
        // commands in reply rather than silence).
        _ => Some((text, rest)),
    }
}

/// The ASCII quote a typographic quote stands for.
fn ascii_quote(c: char) -> Option<char> {
    match c {
        '"' | '“' | '”' | '„' | '‟' | '«' | '»' | '〝' | '〞' | '〟' | '＂' => {
            Some('"')
        }
        '\'' | '‘' | '’' | '‚' | '‛' | '‹' | '›' | '＇' => Some('\''),
        _ => None,
    }
}

/// Whitespace other than space, tab and newline (no-break spaces, Unicode spaces, line
/// separators, carriage returns) becomes a plain space. Control characters such as
/// vertical tab are left alone, to be refused later.
fn plain_space(c: char) -> char {
    if c == '\r' || (c.is_whitespace() && !c.is_control()) {
        ' '
    } else {
        c
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Undoes what phone keyboards do to a command, before shell-style splitting:
///
/// - typographic quotes (“ ” ‘ ’ „ « » …) become ASCII quotes;
/// - an apostrophe right after a letter (`St Mary’s`, `O'Brien`, `St Thomas’`) stays an
///   apostrophe instead of opening a quote;
/// - an em or en dash starting a word before a letter (`—reason`, autocorrected from
///   `--reason`) becomes `--`;
/// - `#` starting a word is kept (shlex would read it as a comment and drop the rest of
///   the line);
/// - no-break and other Unicode spaces become plain spaces.
///
/// # Errors
///
/// [`Rejection::UnbalancedQuotes`] or [`Rejection::TrailingBackslash`], found with the same
/// rules shlex uses.
pub(crate) fn normalise(text: &str) -> Result<String, Rejection> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut quote = Quote::None;
    let mut word_start = true;
    let mut i = 0;
    while let Some(&raw) = chars.get(i) {
        let prev = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
        let next = chars.get(i + 1).copied();
        // An apostrophe right after a letter, outside quotes (`O'Brien`, `St Thomas’`),
        // or between two letters inside quotes (`'St George's'`), is not a quote.
        let apostrophe = ascii_quote(raw) == Some('\'')
            && prev.is_some_and(char::is_alphanumeric)
            && (quote == Quote::None || next.is_some_and(char::is_alphanumeric));
        i += 1;
        if apostrophe {
            match (raw, quote) {
                ('\'', Quote::None) => out.push_str("\\'"),
                ('\'', Quote::Single) => out.push_str("'\\''"),
                (c, _) => out.push(c),
            }
            continue;
        }
        let c = ascii_quote(raw).unwrap_or_else(|| plain_space(raw));
        match quote {
            Quote::None => match c {
                ' ' | '\t' | '\n' => {
                    out.push(c);
                    word_start = true;
                    continue;
                }
                '\\' => {
                    let Some(&escaped) = chars.get(i) else {
                        return Err(Rejection::TrailingBackslash);
                    };
                    i += 1;
                    out.push('\\');
                    out.push(ascii_quote(escaped).unwrap_or_else(|| plain_space(escaped)));
                }
                '"' => {
                    quote = Quote::Double;
                    out.push('"');
                }
                '\'' => {
                    quote = Quote::Single;
                    out.push('\'');
                }
                '#' if word_start => out.push_str("\\#"),
                '—' | '–' if word_start && next.is_some_and(|n| n.is_ascii_alphabetic()) => {
                    out.push_str("--");
                }
                c => out.push(c),
            },
            Quote::Double => match c {
                '\\' => {
                    let Some(&escaped) = chars.get(i) else {
                        return Err(Rejection::UnbalancedQuotes { quote: '"' });
                    };
                    i += 1;
                    out.push('\\');
                    out.push(ascii_quote(escaped).unwrap_or_else(|| plain_space(escaped)));
                }
                '"' => {
                    quote = Quote::None;
                    out.push('"');
                }
                c => out.push(c),
            },
            Quote::Single => {
                if c == '\'' {
                    quote = Quote::None;
                }
                out.push(c);
            }
        }
        word_start = false;
    }
    match quote {
        Quote::None => Ok(out),
        Quote::Single => Err(Rejection::UnbalancedQuotes { quote: '\'' }),
        Quote::Double => Err(Rejection::UnbalancedQuotes { quote: '"' }),
    }
}

/// Splits the text after `!cordon` into words and applies the limits (at most
/// [`MAX_ARGS`] arguments after the command word) and the lookalike check. The command word is lowercased, as are the names of `--flags`.
pub(crate) fn words(whole: &str, rest: &str) -> Result<Vec<String>, Rejection> {
    if whole.len() > MAX_BODY_BYTES {
        return Err(Rejection::TooLong {
            bytes: whole.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    let normalised = normalise(rest)?;
    let mut words = shlex::split(&normalised).ok_or(Rejection::UnbalancedQuotes { quote: '"' })?;
    let arguments = words.len().saturating_sub(1);
    if arguments > MAX_ARGS {
        return Err(Rejection::TooManyArguments {
            count: arguments,
            limit: MAX_ARGS,
        });
    }
    for (index, word) in words.iter().enumerate() {
        let chars = word.chars().count();
        if chars > MAX_ARG_CHARS {
            return Err(Rejection::ArgumentTooLong {
                position: index + 1,
                chars,
                limit: MAX_ARG_CHARS,
            });
        }
    }
    for (index, word) in words.iter().enumerate() {
        if let Some((character, kind)) = Lookalike::find(word) {
            let command = words
                .first()
                .and_then(|w| super::grammar::canonical_name(w))
                .filter(|_| index > 0);
            return Err(Rejection::Lookalike {
                command,
                position: index + 1,
                word: echo(word),
                character,
                kind,
            });
        }
    }
    if let Some(first) = words.first_mut() {
        first.make_ascii_lowercase();
    }
    for word in words.iter_mut().skip(1) {
        if let Some(flag) = word.strip_prefix("--") {
            let name_len = flag.find('=').unwrap_or(flag.len());
            word[2..2 + name_len].make_ascii_lowercase();
        }
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(rest: &str) -> Result<Vec<String>, Rejection> {
        words(rest, rest)
    }

    #[test]
    fn addressed_needs_the_prefix_as_a_word() {
        assert_eq!(
            addressed("!cordon status"),
            Some(("!cordon status", " status"))
        );
        assert_eq!(addressed("  \n!CORDON"), Some(("!CORDON", "")));
        assert_eq!(addressed("!cordonx status"), None);
        assert_eq!(addressed("!cordon-status"), None);
        assert_eq!(addressed("!cordon_bot status"), None);
        assert_eq!(
            addressed("!cordon: status"),
            Some(("!cordon: status", " status"))
        );
        assert_eq!(addressed("!cordon?"), Some(("!cordon?", "?")));
        assert_eq!(addressed("cordon status"), None);
        assert_eq!(addressed("hello !cordon status"), None);
        assert_eq!(addressed("!cord"), None);
        assert_eq!(addressed("!cordoné"), None);
        assert_eq!(addressed(""), None);
    }

    #[test]
    fn reply_fallbacks_are_skipped() {
        let body = "> <@alice:example.org> !cordon standdown\n> second line\n\n!cordon status";
        assert_eq!(addressed(body).map(|(_, r)| r), Some(" status"));
        // A quoted command in a reply that is not itself a command does nothing.
        assert_eq!(addressed("> <@a:b> !cordon standdown\n\nthanks"), None);
        // Without the blank line it is not a fallback.
        assert_eq!(addressed("> quote\n!cordon status"), None);
        assert_eq!(
            strip_reply_fallback("> a\r\n\r\n!cordon status"),
            "!cordon status"
        );
    }

    #[test]
    fn curly_quotes_become_ascii() {
        assert_eq!(
            split("declare mc “Tram crash”").unwrap(),
            ["declare", "mc", "Tram crash"]
        );
        assert_eq!(
            split("x „a b“ «c d» ‘e f’").unwrap(),
            ["x", "a b", "c d", "e f"]
        );
    }

    #[test]
    fn apostrophes_inside_words_are_literal() {
        assert_eq!(
            split("declare mc St Mary’s fire").unwrap(),
            ["declare", "mc", "St", "Mary’s", "fire"]
        );
        assert_eq!(split("x O'Brien").unwrap(), ["x", "O'Brien"]);
        assert_eq!(
            split("x 'St George's' y").unwrap(),
            ["x", "St George's", "y"]
        );
        assert_eq!(split("x “St Mary’s”").unwrap(), ["x", "St Mary’s"]);
        assert_eq!(
            split("declare mc St Thomas’ Hospital").unwrap(),
            ["declare", "mc", "St", "Thomas’", "Hospital"]
        );
        assert_eq!(split("x ‘St Mary’s’").unwrap(), ["x", "St Mary’s"]);
    }

    #[test]
    fn autocorrected_dashes_become_flags() {
        assert_eq!(
            split("hold —reason x –role y").unwrap(),
            ["hold", "--reason", "x", "--role", "y"]
        );
        // A dash on its own, or in quotes, is left alone.
        assert_eq!(split("x a — b \"—c\"").unwrap(), ["x", "a", "—", "b", "—c"]);
    }

    #[test]
    fn hash_is_not_a_comment() {
        assert_eq!(
            split("hold --reason ward #3").unwrap(),
            ["hold", "--reason", "ward", "#3"]
        );
    }

    #[test]
    fn unbalanced_quotes_are_reported() {
        assert_eq!(
            split("declare mc \"Tram crash"),
            Err(Rejection::UnbalancedQuotes { quote: '"' })
        );
        assert_eq!(
            split("declare mc 'Tram crash"),
            Err(Rejection::UnbalancedQuotes { quote: '\'' })
        );
        assert_eq!(
            split("declare mc “Tram crash"),
            Err(Rejection::UnbalancedQuotes { quote: '"' })
        );
        assert_eq!(split("status \\"), Err(Rejection::TrailingBackslash));
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("status {}", "a".repeat(MAX_BODY_BYTES));
        assert!(matches!(split(&long), Err(Rejection::TooLong { .. })));
        let many = "a ".repeat(MAX_ARGS + 2);
        assert!(matches!(
            split(&many),
            Err(Rejection::TooManyArguments { count: 33, .. })
        ));
        assert!(split(&"a ".repeat(MAX_ARGS + 1)).is_ok());
        let word = format!("declare {}", "a".repeat(MAX_ARG_CHARS + 1));
        assert!(matches!(
            split(&word),
            Err(Rejection::ArgumentTooLong { position: 2, .. })
        ));
    }

    #[test]
    fn lookalikes_are_refused_anywhere() {
        let err = split("add @bob\u{202E}:hs --role x").unwrap_err();
        assert!(matches!(
            err,
            Rejection::Lookalike { position: 2, character: '\u{202E}', ref command, .. }
                if command.as_deref() == Some("add")
        ));
        assert!(matches!(
            split("declare mc \"Tram\u{7}crash\""),
            Err(Rejection::Lookalike { .. })
        ));
        assert!(matches!(
            split("status\u{0b}mc-1"),
            Err(Rejection::Lookalike { .. })
        ));
        assert!(matches!(
            split("declare mc \"Tram\ncrash\""),
            Err(Rejection::Lookalike { .. })
        ));
    }

    #[test]
    fn unicode_spaces_separate_words() {
        assert_eq!(split("status\u{a0}mc-1\r\n").unwrap(), ["status", "mc-1"]);
    }

    #[test]
    fn command_words_and_flag_names_are_lowercased() {
        assert_eq!(
            split("HOLD --Reason=Coroner").unwrap(),
            ["hold", "--reason=Coroner"]
        );
    }
}
