//! `cordon check`: validate playbooks and report every problem at once.
//!
//! Valid playbooks get one summary line each on stdout; problems go to stderr as
//! `file:line:col: error: message` with the source line and a caret, followed by a count.

use std::io::{self, Write};
use std::path::PathBuf;

use super::Catalog;
use crate::input::diagnostic::Diagnostic;

/// The outcome of checking some paths.
#[derive(Debug)]
pub struct Report {
    playbooks: Vec<super::Playbook>,
    summaries: Vec<String>,
    diagnostics: Vec<Diagnostic>,
    files: usize,
}

impl Report {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// Every problem, in file order and then line order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The valid playbooks, in file order.
    pub fn playbooks(&self) -> &[super::Playbook] {
        &self.playbooks
    }

    /// One line per valid playbook.
    pub fn summaries(&self) -> &[String] {
        &self.summaries
    }

    /// Writes summaries to `out` and diagnostics to `err`.
    pub fn write(&self, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
        for s in &self.summaries {
            writeln!(out, "{s}")?;
        }
        for d in &self.diagnostics {
            writeln!(err, "{d}")?;
            if d.source_line.is_some() {
                writeln!(err)?;
            }
        }
        if !self.diagnostics.is_empty() {
            let problem_files = {
                let mut files: Vec<_> = self.diagnostics.iter().map(|d| &d.file).collect();
                files.sort();
                files.dedup();
                files.len()
            };
            writeln!(
                err,
                "error: {} in {}; {} valid",
                plural(self.diagnostics.len(), "problem"),
                plural(problem_files, "file"),
                plural(self.summaries.len(), "playbook"),
            )?;
        }
        Ok(())
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Checks every playbook file under `paths` (files or directories).
pub fn run(paths: &[PathBuf]) -> Report {
    let (catalog, diagnostics) = Catalog::load(paths);
    let summaries = catalog
        .iter()
        .map(|p| format!("{}: ok: {}", p.source.display(), p.summary()))
        .collect();
    Report {
        playbooks: catalog.iter().cloned().collect(),
        summaries,
        diagnostics,
        files: catalog.files_read(),
    }
}

impl Report {
    /// Number of playbook files read.
    pub fn files_read(&self) -> usize {
        self.files
    }
}
