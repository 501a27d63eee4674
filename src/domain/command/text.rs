//! Characters that make typed text look like something it is not, and `echo`, which
//! makes user input safe to quote back in a reply. A leaf: the arguments, the lexer and
//! the rejections all use it.

/// The kind of character that makes an argument look like something it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookalike {
    /// A C0/C1 control character (bell, escape, tab or newline inside an argument, …).
    Control,
    /// A bidirectional override, embedding, isolate or mark (U+202A–U+202E, U+2066–U+2069,
    /// U+200E, U+200F, U+061C): it can make text display in a different order from how
    /// it is stored.
    Direction,
    /// A zero-width or otherwise invisible character (U+200B, U+2060, U+FEFF, soft hyphen,
    /// Hangul fillers, tag characters, …).
    Invisible,
}

impl Lookalike {
    /// Classifies `c`, or `None` when it is an ordinary visible character.
    pub fn of(c: char) -> Option<Self> {
        match c {
            c if c.is_control() => Some(Self::Control),
            '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{061C}' => Some(Self::Direction),
            '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180E}'
            | '\u{3164}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}' => Some(Self::Invisible),
            _ => None,
        }
    }

    /// Finds the first suspicious character in `s`.
    pub fn find(s: &str) -> Option<(char, Self)> {
        s.chars().find_map(|c| Self::of(c).map(|kind| (c, kind)))
    }

    /// A short description for a chat reply.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Control => "a control character",
            Self::Direction => "a text-direction control character",
            Self::Invisible => "an invisible (zero-width) character",
        }
    }
}

/// The longest piece of user input echoed back in a reply, in characters.
const ECHO_MAX_CHARS: usize = 48;

/// Makes user input safe to quote in a reply: control, invisible and direction-changing
/// characters become `\u{…}` escapes, backticks become `'` (so they cannot break the
/// reply's code spans), `<` and `>` become `‹` and `›` (no HTML), `@room` is defused
/// (it would notify the whole room), and the result is cut to [`ECHO_MAX_CHARS`]
/// characters.
pub(crate) fn echo(s: &str) -> String {
    let mut out = String::new();
    for (count, c) in s.chars().enumerate() {
        if count == ECHO_MAX_CHARS {
            out.push('…');
            break;
        }
        match c {
            '`' => out.push('\''),
            // Keeps echoed input from reading as HTML if a reply is ever sent as markup.
            '<' => out.push('‹'),
            '>' => out.push('›'),
            c if Lookalike::of(c).is_some() || (c.is_whitespace() && c != ' ') => {
                out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    defuse_room_mention(&out)
}

/// Replaces `@room` (any case) so that a reply cannot notify everyone in the room.
fn defuse_room_mention(s: &str) -> String {
    const NEEDLE: &str = "@room";
    let lower = s.to_ascii_lowercase();
    if !lower.contains(NEEDLE) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = 0;
    for (at, _) in lower.match_indices(NEEDLE) {
        // `to_ascii_lowercase` keeps byte offsets, so `at` is a boundary in `s` too.
        out.push_str(&s[rest..at]);
        out.push_str("(at)");
        out.push_str(&s[at + 1..at + NEEDLE.len()]);
        rest = at + NEEDLE.len();
    }
    out.push_str(&s[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_escapes_invisible_and_control_characters() {
        assert_eq!(echo("a\u{202E}b"), "a\\u{202e}b");
        assert_eq!(echo("a\u{1b}[31mb"), "a\\u{001b}[31mb");
        assert_eq!(echo("a\tb"), "a\\u{0009}b");
        assert_eq!(echo("`x`"), "'x'");
        assert_eq!(echo("<img src=x>"), "‹img src=x›");
    }

    #[test]
    fn echo_truncates_long_input() {
        let long = "x".repeat(500);
        let echoed = echo(&long);
        assert_eq!(echoed.chars().count(), ECHO_MAX_CHARS + 1);
        assert!(echoed.ends_with('…'));
    }

    #[test]
    fn echo_defuses_room_mentions() {
        assert_eq!(echo("hi @room!"), "hi (at)room!");
        assert_eq!(echo("@ROOM"), "(at)ROOM");
        assert!(!echo("é@Room@room").to_ascii_lowercase().contains("@room"));
    }
}
