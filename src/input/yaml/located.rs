//! A value with the place it was written, and the schema of a located map.

#[allow(clippy::wildcard_imports, reason = "the parent's imports and helpers")]
use super::*;

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
