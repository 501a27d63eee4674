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

/// A value together with where it was written (1-based line and column; 0 if unknown).
///
/// Deserialises like `T` and has `T`'s JSON Schema, so it can wrap any field of a raw
/// type. See the [module docs](self) for how to report a semantic error at it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Located<T> {
    /// The value itself.
    pub value: T,
    /// 1-based line where the value (or the alias standing for it) is written.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl<T> Located<T> {
    /// A value with a known position.
    pub fn new(value: T, line: usize, column: usize) -> Self {
        Self {
            value,
            line,
            column,
        }
    }

    /// A diagnostic pointing at this value in `text`, the contents of `file`.
    pub fn error(&self, file: &Path, text: &str, message: impl Into<String>) -> Diagnostic {
        if self.line == 0 {
            Diagnostic::file(file, message)
        } else {
            Diagnostic::at(file, text, self.line, self.column, message)
        }
    }
}

impl Located<String> {
    /// A diagnostic pointing inside this string value: at `needle`, the text as written
    /// in the file from character `char_offset` of the value (e.g. `{incidnet}`).
    ///
    /// YAML may write a string plain, quoted, or as a `|` block, so the position in the
    /// value is not simply added to the value's column: the needle is found in the file
    /// after the value's start instead. When it cannot be found (escapes), the value's own
    /// position is used.
    pub fn error_at_text(
        &self,
        file: &Path,
        text: &str,
        char_offset: usize,
        needle: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        let message = message.into();
        if let Some((line, column)) = self.find_in_source(text, char_offset, needle) {
            return Diagnostic::at(file, text, line, column, message);
        }
        self.error(file, text, message)
    }

    fn find_in_source(
        &self,
        text: &str,
        char_offset: usize,
        needle: &str,
    ) -> Option<(usize, usize)> {
        if needle.is_empty() || self.line == 0 {
            return None;
        }
        let start = byte_of_line_col(text, self.line, self.column)?;
        // Which occurrence of the needle in the value is meant?
        let byte_in_value = self
            .value
            .char_indices()
            .nth(char_offset)
            .map_or(self.value.len(), |(i, _)| i);
        let nth = self.value.get(..byte_in_value)?.matches(needle).count();
        let after = text.get(start..)?;
        // Do not wander past the value: stop at the next line that is not more indented.
        let (index, _) = after.match_indices(needle).nth(nth)?;
        let (line, column) = line_col_of_byte(text, start + index);
        let span_lines = self.value.matches('\n').count() + 2;
        (line <= self.line + span_lines).then_some((line, column))
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let loc = spanned.referenced;
        Ok(Self {
            value: spanned.value,
            line: to_usize(loc.line()),
            column: to_usize(loc.column()),
        })
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// The JSON Schema of a mapping whose values are `V`, for an ordered map field
/// (`indexmap::IndexMap`, which keeps the order the entries were written in; serde-saphyr
/// refuses duplicate keys before it sees them): name it with
/// `#[schemars(with = "Located<MapSchema<V>>")]`. It only describes; nothing has this type.
pub struct MapSchema<V>(std::marker::PhantomData<V>);

impl<V: JsonSchema> JsonSchema for MapSchema<V> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<V>(),
        })
    }
}

/// A YAML document as a plain tree with positions, used to report every shape problem.
#[derive(Debug)]
struct Node {
    kind: NodeKind,
    line: usize,
    column: usize,
}

#[derive(Debug)]
enum NodeKind {
    Map(Vec<(Located<String>, Node)>),
    Seq(Vec<Node>),
    Str(String),
    Bool,
    Int(i128),
    Float,
    Null,
}

impl NodeKind {
    fn describe(&self) -> &'static str {
        match self {
            NodeKind::Map(_) => "a mapping",
            NodeKind::Seq(_) => "a list",
            NodeKind::Str(_) => "text",
            NodeKind::Bool => "true/false",
            NodeKind::Int(_) => "a whole number",
            NodeKind::Float => "a number",
            NodeKind::Null => "an empty value",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<RawKind>::deserialize(deserializer)?;
        Ok(Node {
            kind: s.value.0,
            line: to_usize(s.referenced.line()),
            column: to_usize(s.referenced.column()),
        })
    }
}

struct RawKind(NodeKind);

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl<'de> Visitor<'de> for KindVisitor {
            type Value = RawKind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Bool))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Int(v.into())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Int(v.into())))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Int(v)))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Int(
                    i128::try_from(v).unwrap_or(i128::MAX),
                )))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Float))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Str(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Str(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<RawKind, E> {
                Ok(RawKind(NodeKind::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
                RawKind::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(RawKind(NodeKind::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Located<KeyText>>()? {
                    let value = map.next_value::<Node>()?;
                    let key = Located::new(key.value.0, key.line, key.column);
                    entries.push((key, value));
                }
                Ok(RawKind(NodeKind::Map(entries)))
            }
        }
        deserializer.deserialize_any(KindVisitor)
    }
}

/// A mapping key as text, whatever scalar it is (`1:` and `true:` are keys too).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let node = RawKind::deserialize(deserializer)?;
        Ok(KeyText(match node.0 {
            NodeKind::Str(s) => s,
            NodeKind::Int(i) => i.to_string(),
            other => format!("({})", other.describe()),
        }))
    }
}

/// Walks a [`Node`] tree against a JSON Schema generated by schemars, collecting every
/// unknown key, missing field and wrong type. It understands the subset schemars emits
/// for plain serde structs, lists, maps, options and unit enums; anything else is left
/// to serde's own error.
struct Walker<'a> {
    file: &'a Path,
    text: &'a str,
    root: &'a Value,
    out: Vec<Diagnostic>,
}

impl<'a> Walker<'a> {
    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let root: &'a Value = self.root;
            let Some(target) = reference.strip_prefix('#').and_then(|p| root.pointer(p)) else {
                break;
            };
            schema = target;
        }
        schema
    }

    fn push(&mut self, line: usize, column: usize, message: String) {
        self.out
            .push(Diagnostic::at(self.file, self.text, line, column, message));
    }

    fn walk(
        &mut self,
        schema: &'a Value,
        node: &Node,
        path: &str,
        line: usize,
        column: usize,
        depth: usize,
    ) {
        if depth > MAX_DEPTH + 4 {
            return;
        }
        let schema = self.resolve(schema);
        // Option<T>: `anyOf: [T, {type: null}]` or `type: [.., "null"]`.
        if let Some(alternatives) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            let non_null: Vec<&Value> = alternatives
                .iter()
                .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            if matches!(node.kind, NodeKind::Null) && non_null.len() < alternatives.len() {
                return;
            }
            if let [only] = non_null.as_slice() {
                self.walk(only, node, path, line, column, depth + 1);
                return;
            }
            // A documented unit enum renders as `oneOf` string constants: check the
            // word against them, as for a plain `enum`.
            let words: Option<Vec<&str>> = non_null
                .iter()
                .map(|alt| {
                    let alt = self.resolve(alt);
                    alt.get("const").and_then(Value::as_str).or_else(|| {
                        match alt.get("enum").and_then(Value::as_array).map(Vec::as_slice) {
                            Some([one]) => one.as_str(),
                            _ => None,
                        }
                    })
                })
                .collect();
            if let Some(words) = words {
                let at = if path.is_empty() {
                    "the top level".to_owned()
                } else {
                    format!("`{path}`")
                };
                match &node.kind {
                    NodeKind::Str(s) if words.contains(&s.as_str()) => {}
                    NodeKind::Str(s) => {
                        let mut msg = format!(
                            "{at}: unknown value {}; expected one of: {}",
                            quote(s),
                            words.join(", ")
                        );
                        if let Some(best) = closest(s, words.iter().copied()) {
                            msg.push_str(&format!(" (did you mean `{best}`?)"));
                        }
                        self.push(node.line, node.column, msg);
                    }
                    other => self.push(
                        node.line,
                        node.column,
                        format!(
                            "{at}: expected one of: {}, found {}",
                            words.join(", "),
                            other.describe()
                        ),
                    ),
                }
            }
            return;
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if types.is_empty() {
            return;
        }
        if matches!(node.kind, NodeKind::Null) && types.contains(&"null") {
            return;
        }
        let at = if path.is_empty() {
            "the top level".to_owned()
        } else {
            format!("`{path}`")
        };
        match (
            &node.kind,
            types
                .iter()
                .find(|t| **t != "null")
                .copied()
                .unwrap_or("null"),
        ) {
            (NodeKind::Map(entries), "object") => {
                self.walk_map(schema, entries, path, line, column, depth)
            }
            (NodeKind::Seq(items), "array") => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(
                            item_schema,
                            item,
                            &format!("{path}[{i}]"),
                            item.line,
                            item.column,
                            depth + 1,
                        );
                    }
                }
            }
            (NodeKind::Str(s), "string") => {
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                    let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                    if !names.contains(&s.as_str()) {
                        let mut msg = format!(
                            "{at}: unknown value {}; expected one of: {}",
                            quote(s),
                            names.join(", ")
                        );
                        if let Some(best) = closest(s, names.iter().copied()) {
                            msg.push_str(&format!(" (did you mean `{best}`?)"));
                        }
                        self.push(node.line, node.column, msg);
                    }
                }
            }
            // serde-saphyr accepts any scalar as text (`title: 2024` is the text "2024").
            (NodeKind::Bool | NodeKind::Int(_) | NodeKind::Float, "string")
                if schema.get("enum").is_none() => {}
            (NodeKind::Int(n), "integer") => {
                let min = schema
                    .get("minimum")
                    .and_then(Value::as_i64)
                    .map(i128::from);
                let max = schema
                    .get("maximum")
                    .and_then(Value::as_i64)
                    .map(i128::from);
                if min.is_some_and(|m| *n < m) || max.is_some_and(|m| *n > m) {
                    self.push(node.line, node.column, format!("{at}: {n} is out of range"));
                }
            }
            (NodeKind::Bool, "boolean") | (NodeKind::Int(_) | NodeKind::Float, "number") => {}
            (kind, expected) => {
                let expected = match expected {
                    "object" => "a mapping (`key: value` lines)",
                    "array" => "a list (`- item` lines or `[a, b]`)",
                    "string" if schema.get("enum").is_some() => "one of the allowed words",
                    "string" => "text",
                    "integer" => "a whole number",
                    "boolean" => "true or false",
                    _ => "something else",
                };
                self.push(
                    node.line,
                    node.column,
                    format!("{at}: expected {expected}, found {}", kind.describe()),
                );
            }
        }
    }

    fn walk_map(
        &mut self,
        schema: &'a Value,
        entries: &[(Located<String>, Node)],
        path: &str,
        line: usize,
        column: usize,
        depth: usize,
    ) {
        let properties: Option<&'a serde_json::Map<String, Value>> =
            schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let allowed: Vec<&str> = properties
            .into_iter()
            .flat_map(|p| p.keys().map(String::as_str))
            .collect();
        for (key, value) in entries {
            let child = if path.is_empty() {
                key.value.clone()
            } else {
                format!("{path}.{}", key.value)
            };
            if let Some(prop) = properties.and_then(|p| p.get(&key.value)) {
                self.walk(prop, value, &child, key.line, key.column, depth + 1);
            } else {
                match additional {
                    Some(Value::Bool(false)) => {
                        let mut msg = unknown_key_message(&key.value, &allowed);
                        if !path.is_empty() {
                            msg = format!("{msg} in `{path}`");
                        }
                        self.push(key.line, key.column, msg);
                    }
                    Some(extra @ Value::Object(_)) => {
                        self.walk(extra, value, &child, key.line, key.column, depth + 1)
                    }
                    _ => {}
                }
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for field in required.iter().filter_map(Value::as_str) {
                if !entries.iter().any(|(k, _)| k.value == field) {
                    let msg = if path.is_empty() {
                        format!("missing required field `{field}` at the top level")
                    } else {
                        format!("`{path}` is missing required field `{field}`")
                    };
                    self.push(line, column, msg);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        /// A.
        name: Located<String>,
        /// B.
        #[serde(default)]
        count: Option<u32>,
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        /// Id.
        id: Located<String>,
        /// Items.
        items: Vec<Inner>,
    }

    fn p() -> &'static Path {
        Path::new("t.yaml")
    }

    #[test]
    fn located_records_line_and_column() {
        let o: Outer = from_str(
            p(),
            "id: x\nitems:\n  - name: y\n  - name: z\n    count: 2\n",
        )
        .unwrap();
        assert_eq!(o.items[1].count, Some(2));
        assert_eq!((o.id.line, o.id.column), (1, 5));
        assert_eq!((o.items[0].name.line, o.items[0].name.column), (3, 11));
    }

    #[test]
    fn every_unknown_key_and_missing_field_is_reported() {
        let text = "id: x\nitems:\n  - nmae: y\n  - name: z\n    cuont: 2\ncolour: red\n";
        let errs = from_str_checked::<Outer>(p(), text).unwrap_err();
        let shown: Vec<String> = errs
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect();
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("3:5 unknown key `nmae`; did you mean `name`?")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("3:5 `items[0]` is missing required field `name`")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("5:5 unknown key `cuont`; did you mean `count`?")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("6:1 unknown key `colour`")),
            "{shown:#?}"
        );
    }

    #[test]
    fn wrong_types_are_reported_with_their_path() {
        let errs = from_str_checked::<Outer>(p(), "id: [a]\nitems: {}\n").unwrap_err();
        let shown: Vec<String> = errs
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect();
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("1:5 `id`: expected text, found a list")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("2:8 `items`: expected a list")),
            "{shown:#?}"
        );
    }

    #[test]
    fn empty_and_whitespace_files_are_one_clear_error() {
        for text in ["", "\n\n  \n", "# only a comment\n"] {
            let errs = from_str::<Outer>(p(), text).unwrap_err();
            assert_eq!(errs.len(), 1);
            assert!(
                errs[0].message.contains("empty") || errs[0].message.contains("end of file"),
                "{:?}",
                errs[0]
            );
        }
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            text.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = n;
        }
        text.push_str("id: *i\nitems: []\n");
        let errs = from_str_checked::<Outer>(p(), &text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].line > 0);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("id: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let errs = from_str_checked::<Outer>(p(), &text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let text = format!("id: {}\n", "[".repeat(100_000));
        assert_eq!(from_str_checked::<Outer>(p(), &text).unwrap_err().len(), 1);
    }

    #[test]
    fn read_bounded_refuses_binary_empty_large_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin.yaml");
        std::fs::write(&bin, [0xff, 0xfe, 0x00, 0x9f]).unwrap();
        assert!(
            read_bounded(&bin)
                .unwrap_err()
                .message
                .contains("not UTF-8")
        );
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        assert!(read_bounded(&empty).unwrap_err().message.contains("empty"));
        let big = dir.path().join("big.yaml");
        let mut f = File::create(&big).unwrap();
        f.write_all(&vec![b'a'; (MAX_FILE_BYTES + 1) as usize])
            .unwrap();
        assert!(
            read_bounded(&big)
                .unwrap_err()
                .message
                .contains("too large")
        );
        assert!(
            read_bounded(Path::new("/dev/zero"))
                .unwrap_err()
                .message
                .contains("not a regular file")
        );
        assert!(
            read_bounded(dir.path())
                .unwrap_err()
                .message
                .contains("directory")
        );
        assert!(
            read_bounded(&dir.path().join("missing.yaml"))
                .unwrap_err()
                .message
                .contains("no such file")
        );
    }

    #[test]
    fn positions_round_trip() {
        let text = "ab\ncdé\nf";
        for (line, col) in [(1, 1), (2, 3), (2, 4), (3, 1)] {
            let b = byte_of_line_col(text, line, col).unwrap();
            assert_eq!(line_col_of_byte(text, b), (line, col));
        }
    }

    #[test]
    fn error_inside_a_block_string_points_at_the_text() {
        let text = "t: |\n  hello\n  {nope} there\n";
        #[derive(Deserialize)]
        struct T {
            t: Located<String>,
        }
        let t: T = from_str(p(), text).unwrap();
        let offset = t.t.value.find("{nope").unwrap();
        let d = t.t.error_at_text(p(), text, offset, "{nope", "bad");
        assert_eq!((d.line, d.column), (3, 3));
    }

    #[test]
    fn quote_escapes_terminal_controls() {
        assert_eq!(quote("a\u{1b}b\u{202e}"), "`a\\u{1b}b\\u{202e}`");
    }

    #[test]
    fn closest_suggests_typos_only() {
        assert_eq!(
            closest("membrs", ["members", "moderators"]),
            Some("members")
        );
        assert_eq!(closest("zzz", ["members", "moderators"]), None);
        assert_eq!(closest("nmae", ["name", "names"]), Some("name"));
    }
}
