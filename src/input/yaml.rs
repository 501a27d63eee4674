//! Bounded YAML loading shared by playbooks and the bot config.
//!
//! Files written by people are hostile input until proven otherwise. Everything here
//! turns problems into [`Diagnostic`]s (`file:line:col: error: message`) and never
//! panics or hangs:
//!
//! - [`read_bounded`] refuses anything that is not a regular file (a FIFO or
//!   `/dev/zero` is never opened), anything over [`MAX_FILE_BYTES`] (checked through the
//!   metadata *and* by reading through `take()`, in case the file grows), empty files and
//!   text that is not UTF-8.
//! - [`from_str`] parses with tight resource limits ([`options`]): nesting depth, node
//!   count, alias expansion (a "billion laughs" alias bomb), one document per file.
//! - [`from_str_checked`] additionally walks the document against the type's JSON Schema
//!   when deserialisation fails, so *every* unknown key, missing field and wrong type is
//!   reported at once instead of only the first one serde stops at.
//!
//! # Locating semantic errors
//!
//! Serde reports shape errors (unknown key, wrong type) with their location. Errors found
//! *after* deserialising ("this role is not defined", "warn_before is longer than the
//! incident") need the location of the value they concern. Wrap such fields of the raw
//! type in [`Located<T>`]:
//!
//! ```
//! use cordon::input::yaml::{self, Located};
//! use std::path::Path;
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct RawConfig {
//!     /// How many times to retry.
//!     retries: Located<u32>,
//! }
//!
//! let file = Path::new("config.yaml");
//! let text = "retries: 99\n";
//! let raw: RawConfig = yaml::from_str_checked(file, text).unwrap();
//! if raw.retries.value > 10 {
//!     let d = raw.retries.error(file, text, "at most 10 retries");
//!     assert_eq!(d.to_string().lines().next(), Some("config.yaml:1:10: error: at most 10 retries"));
//! }
//! ```
//!
//! `Located<T>` deserialises exactly like `T` (it is `serde_saphyr::Spanned<T>`
//! underneath) and its JSON Schema is `T`'s, so the raw types still generate the editor
//! schema. Do not put `Located` inside `#[serde(flatten)]` or untagged enums: serde
//! buffers those and the location is lost (it reads as line 0, which [`Located::error`]
//! turns into a whole-file diagnostic rather than a wrong position). For a position
//! *inside* a string value (a template variable, say), use [`Located::error_at_text`].

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use schemars::JsonSchema;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::{Error as YamlError, MessageFormatter, UserMessageFormatter};

use crate::input::diagnostic::Diagnostic;

/// Largest file cordon will read as YAML.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Deepest nesting of mappings and lists accepted (a playbook needs about six).
pub const MAX_DEPTH: usize = 32;

/// Reads `path` as UTF-8 text, refusing files that are too large, empty or binary.
///
/// Special files (FIFOs, devices, sockets) and directories are refused before they are
/// opened, so nothing here can block or read forever.
pub fn read_bounded(path: &Path) -> Result<String, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| io_problem(path, &e))?;
    if meta.is_dir() {
        return Err(Diagnostic::file(path, "is a directory, not a YAML file"));
    }
    if !meta.is_file() {
        return Err(Diagnostic::file(
            path,
            "is not a regular file (a device, pipe or socket); refusing to read it",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(path, meta.len()));
    }
    let file = File::open(path).map_err(|e| io_problem(path, &e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_problem(path, &e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, bytes.len() as u64));
    }
    decode(path, bytes)
}

fn too_large(path: &Path, len: u64) -> Diagnostic {
    Diagnostic::file(
        path,
        format!("file is too large ({len} bytes); the limit is {MAX_FILE_BYTES} bytes (1 MiB)"),
    )
}

fn io_problem(path: &Path, err: &std::io::Error) -> Diagnostic {
    let why = match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => format!("cannot read: {err}"),
    };
    Diagnostic::file(path, why)
}

/// Turns raw bytes into text, or explains where they stop being UTF-8 text.
fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    if bytes.is_empty() {
        return Err(Diagnostic::file(path, "file is empty"));
    }
    match String::from_utf8(bytes) {
        Ok(text) => {
            if text.contains('\0') {
                let (line, column) = line_col_of_byte(&text, text.find('\0').unwrap_or(0));
                return Err(Diagnostic::at(
                    path,
                    &text,
                    line,
                    column,
                    "file contains a NUL byte: this is a binary file, not YAML text",
                ));
            }
            Ok(text)
        }
        Err(err) => {
            let valid = err.utf8_error().valid_up_to();
            let bytes = err.into_bytes();
            let prefix = String::from_utf8_lossy(&bytes[..valid]);
            let (line, column) = line_col_of_byte(&prefix, prefix.len());
            Err(Diagnostic {
                file: path.to_path_buf(),
                line,
                column,
                message: format!(
                    "file is not UTF-8 text (invalid byte 0x{:02x}); save it as UTF-8",
                    bytes.get(valid).copied().unwrap_or(0)
                ),
                source_line: None,
            })
        }
    }
}

/// 1-based line and column (in characters) of byte `index` in `text`.
pub fn line_col_of_byte(text: &str, index: usize) -> (usize, usize) {
    let index = index.min(text.len());
    let before = text.get(..index).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Byte index of 1-based `line` and `column` (in characters) in `text`, if it exists.
pub fn byte_of_line_col(text: &str, line: usize, column: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += text.get(start..)?.find('\n')? + 1;
    }
    let rest = text.get(start..)?;
    let offset = rest
        .char_indices()
        .nth(column.checked_sub(1)?)
        .map_or(rest.len(), |(i, _)| i);
    Some(start + offset)
}

/// The parser options cordon uses for every file written by people.
///
/// The limits are far above what a playbook or config needs and far below what would
/// cost noticeable time or memory: 32 levels of nesting, 100,000 nodes, one document,
/// and alias expansion capped so that an alias bomb fails at once.
pub fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_FILE_BYTES as usize);
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_events = 400_000;
    budget.max_nodes = 100_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 20_000;
    budget.max_recorded_anchor_bytes = 2 * MAX_FILE_BYTES as usize;
    budget.max_total_scalar_bytes = 4 * MAX_FILE_BYTES as usize;
    budget.max_merge_keys = 100;
    budget.max_documents = 2;
    budget.max_inclusion_depth = 0;

    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 20_000;
    alias_limits.max_replay_stack_depth = 8;
    alias_limits.max_alias_expansions_per_anchor = 500;

    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options
}

/// Deserialises `text` (the contents of `file`), turning every problem into diagnostics.
///
/// This reports the first problem serde meets. Prefer [`from_str_checked`] for types
/// that derive `JsonSchema`: it reports every shape problem at once.
pub fn from_str<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Vec<Diagnostic>> {
    parse::<T>(file, text).map_err(|e| vec![e])
}

fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Diagnostic> {
    if text.trim_start_matches('\u{feff}').trim().is_empty() {
        return Err(Diagnostic::file(file, "file is empty"));
    }
    serde_saphyr::from_str_with_options::<T>(text, options()).map_err(|e| convert(file, text, &e))
}

/// Like [`from_str`], and when deserialising fails, checks the whole document against
/// `T`'s JSON Schema so that every unknown key, missing field and wrong type is reported,
/// each at its own line and column, with the closest allowed key suggested.
pub fn from_str_checked<T: DeserializeOwned + JsonSchema>(
    file: &Path,
    text: &str,
) -> Result<T, Vec<Diagnostic>> {
    if text.trim_start_matches('\u{feff}').trim().is_empty() {
        return Err(vec![Diagnostic::file(file, "file is empty")]);
    }
    let first = match serde_saphyr::from_str_with_options::<T>(text, options()) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    // Reading the document as a plain tree fails only on syntax, limits (an alias bomb)
    // or a second document: that problem comes first, whatever serde met on the way.
    let tree = match serde_saphyr::from_str_with_options::<Node>(text, options()) {
        Ok(tree) => tree,
        Err(e) => return Err(vec![convert(file, text, &e)]),
    };
    let schema = schemars::SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value();
    let mut walker = Walker {
        file,
        text,
        root: &schema,
        out: Vec::new(),
    };
    walker.walk(&schema, &tree, "", tree.line, tree.column, 0);
    let mut out = walker.out;
    // The walk covers unknown keys, missing fields and wrong types; serde's own report
    // of the same problem would only repeat it at a slightly different position.
    let first_is_shape = matches!(
        unwrap_error(&first),
        YamlError::SerdeUnknownField { .. }
            | YamlError::SerdeMissingField { .. }
            | YamlError::SerdeInvalidType { .. }
            | YamlError::SerdeUnknownVariant { .. }
            | YamlError::Unexpected { .. }
            | YamlError::NullIntoString { .. }
            | YamlError::InvalidScalar { .. }
    );
    let first = convert(file, text, &first);
    if out.is_empty()
        || (!first_is_shape
            && !out
                .iter()
                .any(|d| d.line == first.line && d.column == first.column))
    {
        out.push(first);
    }
    out.sort_by_key(|d| (d.line, d.column));
    out.dedup_by(|a, b| a.line == b.line && a.column == b.column && a.message == b.message);
    Err(out)
}

fn unwrap_error(err: &YamlError) -> &YamlError {
    let inner = err.without_snippet();
    if let YamlError::AliasError { error, .. } = inner {
        return error.without_snippet();
    }
    inner
}

/// Converts a serde-saphyr error into a diagnostic at its location.
fn convert(file: &Path, text: &str, err: &YamlError) -> Diagnostic {
    let inner = unwrap_error(err);
    let message = match inner {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => unknown_key_message(field, expected),
        YamlError::SerdeMissingField { field, .. } => {
            format!("missing required field `{field}` in this mapping")
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown value {}; expected one of: {}",
            quote(variant),
            expected.join(", ")
        ),
        YamlError::Eof { .. } => "unexpected end of file: the YAML is incomplete".to_owned(),
        YamlError::MultipleDocuments { .. } => {
            "a second YAML document (`---`) was found; put one per file".to_owned()
        }
        YamlError::DuplicateMappingKey { key, .. } => match key {
            Some(k) => format!("key {} appears twice in this mapping", quote(k)),
            None => "a key appears twice in this mapping".to_owned(),
        },
        YamlError::Budget { breach, .. } => format!(
            "document is too complex to be a playbook or config (limit exceeded: {breach:?}); \
             nesting is limited to {MAX_DEPTH} levels and aliases are limited"
        ),
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. } => {
            "YAML aliases expand too far (an alias bomb?); write the values out instead".to_owned()
        }
        YamlError::NullIntoString { .. } => "expected text here, found an empty value".to_owned(),
        other => sanitise(&UserMessageFormatter.format_message(other)),
    };
    let (line, column) = inner
        .location()
        .or_else(|| err.location())
        .map_or((0, 0), |l| (to_usize(l.line()), to_usize(l.column())));
    let (mut message, column) = brace_hint(text, line, column, message);
    if let Some(open) = unclosed_bracket_before(text, line) {
        message.push_str(&format!(
            " (is the `{}` on line {} closed?)",
            open.1, open.0
        ));
    }
    if message.contains("mapping values are not allowed") {
        message.push_str(
            " (a value containing `: ` must be quoted, e.g. title: \"Major incident: mass casualty\")",
        );
    }
    if line == 0 {
        Diagnostic::file(file, message)
    } else {
        Diagnostic::at(file, text, line, column, message)
    }
}

/// For a syntax error on `line`: the nearest line above that opens a flow list or
/// mapping (`[`, `{`) it does not close, a common cause of a confusing parser message.
fn unclosed_bracket_before(text: &str, line: usize) -> Option<(usize, char)> {
    let lines: Vec<&str> = text.lines().take(line.saturating_sub(1)).collect();
    for (i, l) in lines.iter().enumerate().rev().take(20) {
        let code = l.split(" #").next().unwrap_or(l);
        let mut depth_sq = 0i32;
        let mut depth_curly = 0i32;
        let mut quote: Option<char> = None;
        for c in code.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '[') => depth_sq += 1,
                (None, ']') => depth_sq -= 1,
                (None, '{') => depth_curly += 1,
                (None, '}') => depth_curly -= 1,
                _ => {}
            }
        }
        if depth_sq > 0 {
            return Some((i + 1, '['));
        }
        if depth_curly > 0 {
            return Some((i + 1, '{'));
        }
    }
    None
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A plain YAML value that starts with `{` is a mapping, not text. Planners writing
/// `name: {incident} - Command` meet this first; say what to do about it.
fn brace_hint(text: &str, line: usize, column: usize, message: String) -> (String, usize) {
    const HINT: &str =
        " (a value that starts with `{` must be quoted, e.g. \"{incident} - Command\")";
    let at = byte_of_line_col(text, line, column).and_then(|i| text.get(i..));
    let value_on_line = line
        .checked_sub(1)
        .and_then(|i| text.lines().nth(i))
        .and_then(|l| l.split_once(": ").map(|(_, v)| v.trim()));
    let template_like = |v: &str| {
        v.starts_with('{') && {
            // `{incident} - Command`: text after the closing brace, or a brace never closed.
            let close = v.find('}');
            close.is_none_or(|c| {
                !v[c + 1..].trim().is_empty() || v.len() == c + 1 && !v.contains(':')
            })
        }
    };
    let hinted = at.is_some_and(|rest| rest.starts_with('{') && message.contains("string"))
        || value_on_line.is_some_and(template_like);
    if !hinted {
        return (message, column);
    }
    // Point at the brace: that is where the quote goes.
    let brace_column = line
        .checked_sub(1)
        .and_then(|i| text.lines().nth(i))
        .and_then(|l| l.split_once(": "))
        .filter(|(_, v)| v.trim_start().starts_with('{'))
        .map_or(column, |(k, v)| {
            k.chars().count() + 2 + (v.chars().count() - v.trim_start().chars().count()) + 1
        });
    (format!("{message}{HINT}"), brace_column)
}

fn unknown_key_message(field: &str, expected: &[&str]) -> String {
    let mut msg = format!("unknown key {}", quote(field));
    if let Some(best) = closest(field, expected.iter().copied()) {
        msg.push_str(&format!("; did you mean `{best}`?"));
    }
    if expected.is_empty() {
        msg.push_str("; no keys are allowed here");
    } else {
        msg.push_str(&format!(" (allowed: {})", expected.join(", ")));
    }
    msg
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, c), c))
        .filter(|(d, c)| *d <= typo_budget(c) || lower.replace(['-', ' '], "_") == *c)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn typo_budget(word: &str) -> usize {
    match word.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    }
}

/// Optimal-string-alignment distance ([`strsim::osa_distance`]): insertions, deletions,
/// substitutions and transpositions of neighbours (`nmae` → `name`) each cost 1. Only
/// the first 200 characters of each side count, which bounds the work on long input.
fn edit_distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(first_chars(a, 200), first_chars(b, 200))
}

/// `s` cut to its first `n` characters.
fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Quotes text from the file for a message: backticks, control and bidi characters
/// escaped (they could drive or spoof a terminal), and long text shortened.
pub fn quote(s: &str) -> String {
    let mut out = String::from("`");
    for (n, c) in s.chars().enumerate() {
        if n >= 80 {
            out.push('…');
            break;
        }
        if c.is_control() || is_bidi_or_invisible(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_bidi_or_invisible(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Bidirectional overrides and invisible formatting characters, which make text read
/// differently from what it is (a user id that looks like another).
pub fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{061C}'
        | '\u{00AD}')
}

mod located;
mod shape;

pub use located::{Located, MapSchema};
use shape::{Node, Walker};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
