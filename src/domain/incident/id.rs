//! Short, human-typeable incident ids such as `mc-4k7p`.
//!
//! An id is a prefix of two or three letters taken from the playbook id (the initials of
//! its words: `mass-casualty` gives `mc`), a hyphen, and four characters from an alphabet
//! without look-alikes (no `0`/`o`, `1`/`l`/`i`), so that a commander can read one off a
//! screen and type it on a phone. Uniqueness is the store's job: it generates again on a
//! collision.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The characters of the random part: digits and lowercase letters without `0 1 i l o`.
pub const ALPHABET: &[u8; 31] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// How many characters of [`ALPHABET`] follow the prefix in a generated id.
pub const RANDOM_LEN: usize = 4;

/// A validated incident id: 1 to 32 characters of `[a-z0-9-]`, not starting with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IncidentId(String);

/// Why a string is not an incident id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("an incident id cannot be empty")]
    Empty,
    /// The string is longer than [`IncidentId::MAX_LEN`].
    #[error("an incident id has at most {max} characters; this one has {len}", max = IncidentId::MAX_LEN)]
    TooLong {
        /// The length in characters.
        len: usize,
    },
    /// The string holds a character outside `[a-z0-9-]`.
    #[error("an incident id holds only lowercase letters, digits and `-`; found {found:?}")]
    BadChar {
        /// The first offending character.
        found: char,
    },
    /// The string starts with `-` (it would read as a command-line flag).
    #[error("an incident id cannot start with `-`")]
    LeadingHyphen,
}

impl IncidentId {
    /// The longest id accepted, in characters.
    pub const MAX_LEN: usize = 32;

    /// Parses an id exactly as stored: lowercase `[a-z0-9-]`, 1 to 32 characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Parses an id as a person typed it: surrounding whitespace is ignored and ASCII
    /// capitals are lowered (phones capitalise the first letter), then [`Self::parse`].
    pub fn from_user_input(s: &str) -> Result<Self, IdError> {
        Self::parse(&s.trim().to_ascii_lowercase())
    }

    /// Generates an id for a playbook, drawing the random part from `next`, which the
    /// caller supplies (a random number generator in the bot, a counter in tests).
    ///
    /// The same `(playbook_id, draws)` always give the same id.
    pub fn generate(playbook_id: &str, next: &mut dyn FnMut() -> u64) -> Self {
        let mut id = prefix(playbook_id);
        id.push('-');
        let mut draw = next();
        for _ in 0..RANDOM_LEN {
            let len = ALPHABET.len() as u64;
            // `draw % len` is below 31, so the index is in range.
            let index = usize::try_from(draw % len).unwrap_or(0);
            id.push(char::from(ALPHABET[index]));
            draw /= len;
        }
        Self(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The prefix of generated ids for a playbook: the initials of its first three words
/// (`mass-casualty` → `mc`), or its first two letters when it has one word (`fire` →
/// `fi`), or `in` when it offers nothing usable.
pub fn prefix(playbook_id: &str) -> String {
    let words: Vec<&str> = playbook_id
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: String = match words.as_slice() {
        [] => String::new(),
        [one] => one.chars().take(2).collect(),
        many => many
            .iter()
            .take(3)
            .filter_map(|w| w.chars().next())
            .collect(),
    };
    out.make_ascii_lowercase();
    if out.is_empty() {
        out.push_str("in");
    }
    out
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let len = s.chars().count();
    if len > IncidentId::MAX_LEN {
        return Err(IdError::TooLong { len });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(IdError::BadChar { found });
    }
    if s.starts_with('-') {
        return Err(IdError::LeadingHyphen);
    }
    Ok(())
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IncidentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for IncidentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate(&s)?;
        Ok(Self(s))
    }
}

impl From<IncidentId> for String {
    fn from(id: IncidentId) -> Self {
        id.0
    }
}

impl AsRef<str> for IncidentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counter(start: u64) -> impl FnMut() -> u64 {
        let mut n = start;
        move || {
            let v = n;
            n += 1;
            v
        }
    }

    #[test]
    fn generated_id_has_playbook_initials_and_four_unambiguous_chars() {
        let id = IncidentId::generate("mass-casualty", &mut counter(0));
        assert_eq!(id.as_str(), "mc-2222");
        let id = IncidentId::generate("mass-casualty", &mut counter(1));
        assert_eq!(id.as_str(), "mc-3222");
        // 31 → second digit.
        let id = IncidentId::generate("mass-casualty", &mut counter(31 + 30));
        assert_eq!(id.as_str(), "mc-z322");
    }

    #[test]
    fn prefix_takes_initials_or_first_letters() {
        assert_eq!(prefix("mass-casualty"), "mc");
        assert_eq!(prefix("major-incident-fire"), "mif");
        assert_eq!(prefix("a-b-c-d"), "abc");
        assert_eq!(prefix("fire"), "fi");
        assert_eq!(prefix("x"), "x");
        assert_eq!(prefix("CBRN_Alert"), "ca");
        assert_eq!(prefix("---"), "in");
        assert_eq!(prefix(""), "in");
        assert_eq!(prefix("émeute"), "me");
    }

    #[test]
    fn parse_accepts_valid_and_rejects_invalid_ids() {
        assert!(IncidentId::parse("mc-4k7p").is_ok());
        assert!(IncidentId::parse("a").is_ok());
        assert!(IncidentId::parse(&"a".repeat(32)).is_ok());
        assert_eq!(IncidentId::parse(""), Err(IdError::Empty));
        assert_eq!(
            IncidentId::parse(&"a".repeat(33)),
            Err(IdError::TooLong { len: 33 })
        );
        assert_eq!(
            IncidentId::parse("MC-4k7p"),
            Err(IdError::BadChar { found: 'M' })
        );
        assert_eq!(
            IncidentId::parse("mc 4k7p"),
            Err(IdError::BadChar { found: ' ' })
        );
        assert_eq!(
            IncidentId::parse("mc/4k7p"),
            Err(IdError::BadChar { found: '/' })
        );
        assert_eq!(
            IncidentId::parse("mc-é"),
            Err(IdError::BadChar { found: 'é' })
        );
        assert_eq!(IncidentId::parse("-mc"), Err(IdError::LeadingHyphen));
    }

    #[test]
    fn user_input_is_trimmed_and_lowered() {
        let id = IncidentId::from_user_input("  Mc-4K7P\n");
        assert_eq!(id.map(String::from), Ok("mc-4k7p".to_owned()));
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let id = IncidentId::parse("mc-4k7p").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"mc-4k7p\"");
        assert_eq!(serde_json::from_str::<IncidentId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<IncidentId>("\"MC/1\"").is_err());
    }

    proptest! {
        #[test]
        fn every_generated_id_parses(playbook in "\\PC{0,40}", draw in any::<u64>()) {
            let id = IncidentId::generate(&playbook, &mut || draw);
            prop_assert!(IncidentId::parse(id.as_str()).is_ok(), "{id}");
            let (pre, random) = id.as_str().split_once('-').unwrap();
            prop_assert!((1..=3).contains(&pre.len()));
            prop_assert_eq!(random.len(), RANDOM_LEN);
            prop_assert!(random.bytes().all(|b| ALPHABET.contains(&b)));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_the_grammar(s in "\\PC{0,40}") {
            let ok = IncidentId::parse(&s).is_ok();
            let expected = !s.is_empty()
                && s.chars().count() <= 32
                && !s.starts_with('-')
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            prop_assert_eq!(ok, expected);
        }
    }
}
