//! Typed arguments. Each parser takes one word as typed in chat and either returns a
//! validated value or an [`ArgError`] that says, in plain words, what was wrong and what
//! a good value looks like. Nothing downstream re-checks these values.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use matrix_sdk::ruma::matrix_uri::MatrixId;
use matrix_sdk::ruma::{
    EventId, MatrixToUri, MatrixUri, OwnedEventId, OwnedRoomOrAliasId, OwnedServerName,
    OwnedUserId, UserId,
};

use super::text::{Lookalike, echo};

/// Why one argument was refused. The message is safe to show in chat: anything taken from
/// the input has been passed through `echo` (no control or invisible characters, and
/// length-limited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(String);

impl ArgError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// True for the characters of a slug: `[a-z0-9-]`.
fn is_slug_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// Validates a slug (`[a-z0-9][a-z0-9-]*`, at most `max` characters) for `what`.
fn parse_slug(s: &str, what: &str, example: &str, max: usize) -> Result<String, ArgError> {
    let good_shape = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(is_slug_char);
    if s.is_empty() {
        return Err(ArgError::new(format!("the {what} is empty")));
    }
    if s.chars().count() > max {
        return Err(ArgError::new(format!(
            "the {what} is longer than {max} characters"
        )));
    }
    if good_shape {
        return Ok(s.to_owned());
    }
    let lowered = s.to_ascii_lowercase();
    let hint = if lowered != s
        && lowered
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && lowered.chars().all(is_slug_char)
    {
        format!(" (did you mean `{}`?)", echo(&lowered))
    } else {
        String::new()
    };
    Err(ArgError::new(format!(
        "`{}` is not a {what}: use lowercase letters, digits and `-`, like `{example}`{hint}",
        echo(s)
    )))
}

/// A playbook id as written in its file: `[a-z0-9][a-z0-9-]*`, at most 64 characters
/// (`mass-casualty`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaybookId(String);

impl PlaybookId {
    /// The longest playbook id accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a playbook id.
    pub fn parse(s: &str) -> Result<Self, ArgError> {
        parse_slug(s, "playbook id", "mass-casualty", Self::MAX_LEN).map(Self)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A role id from a playbook: `[a-z0-9][a-z0-9-]*`, at most 64 characters (`ed-lead`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleId(String);

impl RoleId {
    /// The longest role id accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a role id.
    pub fn parse(s: &str) -> Result<Self, ArgError> {
        parse_slug(s, "role id", "ed-lead", Self::MAX_LEN).map(Self)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reference to an incident by its short id (`mc-4k7p`): 1–32 characters of ASCII
/// letters, digits and `-`, normalised to lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncidentRef(String);

impl IncidentRef {
    /// The longest incident id accepted.
    pub const MAX_LEN: usize = 32;

    /// Validates and lowercases an incident id.
    pub fn parse(s: &str) -> Result<Self, ArgError> {
        if s.is_empty() {
            return Err(ArgError::new("the incident id is empty"));
        }
        if s.starts_with('@') || s.contains("matrix.to/") || s.starts_with("matrix:") {
            return Err(ArgError::new(format!(
                "`{}` looks like a person, not an incident id; when you name the incident, \
                 it comes first (like `mc-4k7p @name:server`)",
                echo(s)
            )));
        }
        if s.len() > Self::MAX_LEN {
            return Err(ArgError::new(format!(
                "`{}` is too long for an incident id (at most {} characters)",
                echo(s),
                Self::MAX_LEN
            )));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ArgError::new(format!(
                "`{}` is not an incident id: incident ids are letters, digits and `-`, \
                 like `mc-4k7p`",
                echo(s)
            )));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The normalised (lowercase) id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An incident's display name: the words given to `declare`, joined with single spaces;
/// 1–200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IncidentName(String);

impl IncidentName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Joins the words of a name and validates it.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<Self, ArgError> {
        let joined = join_words(words);
        if joined.is_empty() {
            return Err(ArgError::new("the incident name is empty"));
        }
        let chars = joined.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(ArgError::new(format!(
                "the incident name is {chars} characters long; the limit is {}",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(joined))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A free-text reason for the audit log (`hold`, `admit`): the words given, joined with
/// single spaces; 1–512 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reason(String);

impl Reason {
    /// The longest reason accepted, in characters.
    pub const MAX_CHARS: usize = 512;

    /// Joins the words of a reason and validates it.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<Self, ArgError> {
        let joined = join_words(words);
        if joined.is_empty() {
            return Err(ArgError::new("the reason is empty"));
        }
        let chars = joined.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(ArgError::new(format!(
                "the reason is {chars} characters long; the limit is {}",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(joined))
    }

    /// The reason as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Trims each word, drops empty ones and joins the rest with single spaces.
fn join_words<S: AsRef<str>>(words: &[S]) -> String {
    let mut out = String::new();
    for word in words.iter().map(|w| w.as_ref().trim()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

macro_rules! string_newtype_impls {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}
string_newtype_impls!(PlaybookId, RoleId, IncidentRef, IncidentName, Reason);

impl FromStr for PlaybookId {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl FromStr for RoleId {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl FromStr for IncidentRef {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The longest extension accepted by the grammar. The playbook's own bound is enforced
/// later; this one only keeps absurd values (which could overflow time arithmetic) out.
pub const MAX_EXTENSION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Parses a positive humantime duration (`4h`, `90m`, `1h30m`), at most
/// [`MAX_EXTENSION`].
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let parsed = humantime::parse_duration(s).map_err(|_| {
        ArgError::new(format!(
            "`{}` is not a duration; write it like `4h`, `90m` or `1h30m`",
            echo(s)
        ))
    })?;
    if parsed.is_zero() {
        return Err(ArgError::new("the duration must be longer than zero"));
    }
    if parsed > MAX_EXTENSION {
        return Err(ArgError::new(format!(
            "`{}` is longer than cordon accepts ({})",
            echo(s),
            humantime::format_duration(MAX_EXTENSION)
        )));
    }
    Ok(parsed)
}

/// Starts of a `matrix.to` link, as Element and others copy it.
const MATRIX_TO_PREFIXES: [&str; 2] = ["https://matrix.to/", "http://matrix.to/"];

/// Decodes `%XX` escapes (invalid ones are kept as typed); invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn matrix_to(s: &str) -> Option<Result<MatrixToUri, ArgError>> {
    let rest = MATRIX_TO_PREFIXES.iter().find_map(|p| s.strip_prefix(p))?;
    // Percent-encoding must not smuggle in what a typed identifier may not contain.
    if let Err(e) = check_identifier_text(&percent_decode(s), "link") {
        return Some(Err(e));
    }
    // ruma only knows the https form.
    let link = format!("https://matrix.to/{rest}");
    if has_an_empty_half(&link) {
        return Some(Err(ArgError::new(format!(
            "`{}` is not a valid matrix.to link (an identifier in it is empty)",
            echo(s)
        ))));
    }
    Some(
        MatrixToUri::parse(&link).map_err(|e| {
            ArgError::new(format!("`{}` is not a valid matrix.to link ({e})", echo(s)))
        }),
    )
}

/// Whether the identifiers of a matrix.to `link` are a pair with an empty half
/// (`#/!room:hs//`, `#//$event`). ruma 0.19's `MatrixToUri::parse` indexes the first
/// byte of each half and panics on those (found by fuzzing), so they are refused before
/// it sees them. This reads the link as ruma does: after `https://matrix.to/#`, one
/// trailing `/` off, up to the first `?`, one `/` off each end.
fn has_an_empty_half(link: &str) -> bool {
    let Some(s) = link.strip_prefix("https://matrix.to/#") else {
        return false;
    };
    let s = s.strip_suffix('/').unwrap_or(s);
    let ids = s.split('?').next().unwrap_or_default();
    let ids = ids.strip_prefix('/').unwrap_or(ids);
    let ids = ids.strip_suffix('/').unwrap_or(ids);
    ids.matches('/').count() == 1
        && ids
            .split_once('/')
            .is_some_and(|(first, second)| first.is_empty() || second.is_empty())
}

fn matrix_uri(s: &str) -> Option<Result<MatrixUri, ArgError>> {
    if !s.starts_with("matrix:") {
        return None;
    }
    if let Err(e) = check_identifier_text(&percent_decode(s), "link") {
        return Some(Err(e));
    }
    Some(
        MatrixUri::parse(s)
            .map_err(|e| ArgError::new(format!("`{}` is not a valid matrix: link ({e})", echo(s)))),
    )
}

/// Refuses identifier text that could pass for something else: non-ASCII (homoglyphs such
/// as a Cyrillic `а` in a server name), whitespace, control and invisible characters.
/// Links are checked after percent-decoding, so `%E2%80%AE` cannot sneak one in.
fn check_identifier_text(id: &str, what: &str) -> Result<(), ArgError> {
    if let Some((c, kind)) = Lookalike::find(id) {
        return Err(ArgError::new(format!(
            "the {what} `{}` contains {} (U+{:04X}), which can make one name look like \
             another; type it by hand rather than pasting it",
            echo(id),
            kind.describe(),
            u32::from(c)
        )));
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii()) {
        return Err(ArgError::new(format!(
            "the {what} `{}` contains the non-ASCII character `{c}` (U+{:04X}); Matrix \
             identifiers are plain ASCII, so this may be a lookalike of a real one",
            echo(id),
            u32::from(c)
        )));
    }
    if id.chars().any(|c| c.is_ascii_whitespace()) {
        return Err(ArgError::new(format!(
            "the {what} `{}` contains a space",
            echo(id)
        )));
    }
    Ok(())
}

/// Parses a Matrix user: `@name:server`, a `https://matrix.to/#/@name:server` link (also
/// percent-encoded), or a `matrix:u/name:server` URI. Non-ASCII, invisible and
/// direction-changing characters are refused as possible lookalikes.
pub fn parse_user(s: &str) -> Result<OwnedUserId, ArgError> {
    let s = s.trim_start_matches('<').trim_end_matches('>');
    let wrong_kind = |what: &str| {
        ArgError::new(format!(
            "`{}` is a link to {what}, not to a person; use their user id, like \
             `@name:server`",
            echo(s)
        ))
    };
    let id: OwnedUserId = if let Some(uri) = matrix_to(s) {
        match uri?.id() {
            MatrixId::User(user) => user.clone(),
            _ => return Err(wrong_kind("a room or message")),
        }
    } else if let Some(uri) = matrix_uri(s) {
        match uri?.id() {
            MatrixId::User(user) => user.clone(),
            _ => return Err(wrong_kind("a room or message")),
        }
    } else if s.starts_with('@') {
        check_identifier_text(s, "user id")?;
        return UserId::parse(s).map_err(|e| {
            ArgError::new(format!(
                "`{}` is not a valid Matrix user id ({e}); user ids look like \
                 `@name:server`",
                echo(s)
            ))
        });
    } else {
        return Err(ArgError::new(format!(
            "`{}` is not a Matrix user id; user ids start with `@` and look like \
             `@name:server`",
            echo(s)
        )));
    };
    check_identifier_text(id.as_str(), "user id")?;
    Ok(id)
}

/// A reference to one message (event), as given to `advice` and `transcribed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// The room, when the reference was a link that names it; `None` for a bare event id
    /// (then the command's own room is meant).
    pub room: Option<OwnedRoomOrAliasId>,
    /// The event.
    pub event: OwnedEventId,
    /// Servers the link suggested for routing (`?via=`).
    pub via: Vec<OwnedServerName>,
}

impl EventRef {
    /// Parses an event id (`$…`), a `https://matrix.to/#/!room/$event?via=…` link or a
    /// `matrix:roomid/room/e/event` URI.
    pub fn parse(s: &str) -> Result<Self, ArgError> {
        let s = s.trim_start_matches('<').trim_end_matches('>');
        let not_a_message = || {
            ArgError::new(format!(
                "`{}` links to a room or a person, not to a message; use the message's \
                 own link (Options → Share → Copy link)",
                echo(s)
            ))
        };
        let (id, via) = if let Some(uri) = matrix_to(s) {
            let uri = uri?;
            (uri.id().clone(), uri.via().to_vec())
        } else if let Some(uri) = matrix_uri(s) {
            let uri = uri?;
            (uri.id().clone(), uri.via().to_vec())
        } else if s.starts_with('$') {
            check_identifier_text(s, "event id")?;
            let event = EventId::parse(s).map_err(|e| {
                ArgError::new(format!("`{}` is not a valid event id ({e})", echo(s)))
            })?;
            return Ok(Self {
                room: None,
                event,
                via: Vec::new(),
            });
        } else {
            return Err(ArgError::new(format!(
                "`{}` is not a message link or event id; copy the message's link \
                 (Options → Share → Copy link) and paste it here",
                echo(s)
            )));
        };
        let MatrixId::Event(room, event) = id else {
            return Err(not_a_message());
        };
        check_identifier_text(room.as_str(), "room id")?;
        check_identifier_text(event.as_str(), "event id")?;
        Ok(Self {
            room: Some(room),
            event,
            via,
        })
    }
}

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.room {
            Some(room) => write!(f, "{room}/{}", self.event),
            None => write!(f, "{}", self.event),
        }
    }
}

impl FromStr for EventRef {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
