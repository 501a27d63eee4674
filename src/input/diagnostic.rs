//! Located errors in files written by people (playbooks, the bot config).
//!
//! Rendered as `file:line:col: error: message`, the format editors and CI logs already
//! understand, followed by the offending source line and a caret when it is known.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong, and where it helps, what would be right.
    pub message: String,
    /// The text of `line`, shown under the message with a caret at `column`.
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// A problem with the file as a whole (unreadable, empty, too large).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            source_line: None,
        }
    }

    /// A problem at `line:column` (1-based) of `source`, the file's text.
    pub fn at(
        file: &Path,
        source: &str,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        let source_line = line
            .checked_sub(1)
            .and_then(|i| source.lines().nth(i))
            .map(|l| l.chars().take(200).collect::<String>());
        Self {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            source_line,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.line, self.column) {
            (0, _) => write!(f, "{file}: error: {}", self.message)?,
            (l, 0) => write!(f, "{file}:{l}: error: {}", self.message)?,
            (l, c) => write!(f, "{file}:{l}:{c}: error: {}", self.message)?,
        }
        if let Some(src) = &self.source_line {
            // Control characters in a hostile file must not drive the terminal.
            let shown: String = src
                .chars()
                .map(|c| {
                    if c.is_control() && c != '\t' {
                        '\u{FFFD}'
                    } else {
                        c
                    }
                })
                .collect();
            let gutter = self.line.to_string().len();
            write!(f, "\n{:>gutter$} | {shown}", self.line)?;
            if self.column > 0 {
                let pad: String = shown
                    .chars()
                    .take(self.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "\n{:>gutter$} | {pad}^", "")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_col_and_caret() {
        let d = Diagnostic::at(Path::new("p.yaml"), "a: 1\nbad: [\n", 2, 6, "unclosed");
        let s = d.to_string();
        assert!(s.starts_with("p.yaml:2:6: error: unclosed"), "{s}");
        assert!(s.contains("2 | bad: ["), "{s}");
        assert!(s.ends_with("  |      ^"), "{s:?}");
    }

    #[test]
    fn whole_file_problem_has_no_position() {
        let d = Diagnostic::file(Path::new("x.yaml"), "file is empty");
        assert_eq!(d.to_string(), "x.yaml: error: file is empty");
    }

    #[test]
    fn control_characters_are_not_echoed() {
        let d = Diagnostic::at(Path::new("x"), "a\u{1b}[2Jb", 1, 1, "m");
        assert!(!d.to_string().contains('\u{1b}'));
    }
}
