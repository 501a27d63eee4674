//! The playbook language that emergency planners write.
//!
//! A playbook is a YAML file in `playbooks/` describing one kind of incident: who may
//! declare it, its roles and their holders, the rooms to create, time limits, message
//! retention, reminders, and who receives the sealed archive. `docs/playbooks.md` is the
//! planner's reference.
//!
//! Loading has two phases (see STYLE.md):
//! 1. [`raw`]: serde types that mirror the file exactly, refuse unknown keys, and keep
//!    the position of every value. The JSON Schema ([`schema`]) is generated from them.
//! 2. [`validate`]: builds the typed [`Playbook`] once, reporting every semantic problem
//!    at its `file:line:col`. Nothing downstream re-checks.
//!
//! - [`load_file`]: one file to a [`Playbook`], or all its problems.
//! - [`Catalog`]: every playbook of a directory (or list of files) by id, with problems
//!   including duplicate ids across files.
//! - [`check`]: `cordon check`, a report over a catalog.
//! - [`template`] and [`cron`]: message templates and reminder schedules, compiled once.

pub mod check;
pub mod cron;
pub mod model;
pub mod raw;
pub mod scaffold;
pub mod schema;
pub mod template;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use model::{
    Allowed, Archive, IdentityChange, Limits, Playbook, Reminder, Retention, Role, RoleId, Room,
    Sitrep, SlugError, Trigger, Verification,
};
pub use template::{Template, TemplateVars};

pub use self::cron::CronSchedule;
use crate::input::diagnostic::Diagnostic;
use crate::input::yaml;

/// Reads and validates one playbook file.
pub fn load_file(path: &Path) -> Result<Playbook, Vec<Diagnostic>> {
    load_with_position(path).map(|(p, _)| p)
}

/// Validates playbook `text` as if read from `path` (for tests and editors).
pub fn load_str(path: &Path, text: &str) -> Result<Playbook, Vec<Diagnostic>> {
    let raw: raw::RawPlaybook = yaml::from_str_checked(path, text)?;
    validate::validate(path, text, raw).map(|(p, _)| p)
}

fn load_with_position(path: &Path) -> Result<(Playbook, validate::IdPosition), Vec<Diagnostic>> {
    let text = yaml::read_bounded(path).map_err(|d| vec![d])?;
    let raw: raw::RawPlaybook = yaml::from_str_checked(path, &text)?;
    validate::validate(path, &text, raw)
}

/// The playbook files named by `paths`: files as given, directories as their `*.yaml`
/// and `*.yml` files (sorted, hidden files skipped, not recursive). A path that does not
/// exist, or a directory without playbooks, is a problem.
pub fn discover(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(Diagnostic::file(path, "no such file or directory"));
                continue;
            }
            Err(e) => {
                problems.push(Diagnostic::file(path, format!("cannot read: {e}")));
                continue;
            }
        };
        if !meta.is_dir() {
            // read_bounded refuses special files with a clear message.
            files.push(path.clone());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Diagnostic::file(
                    path,
                    format!("cannot list directory: {e}"),
                ));
                continue;
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.')
                    && (name.ends_with(".yaml") || name.ends_with(".yml"))
                    && !p.is_dir()
            })
            .collect();
        found.sort();
        if found.is_empty() {
            problems.push(Diagnostic::file(
                path,
                "directory has no playbooks (no *.yaml or *.yml files)",
            ));
        }
        files.extend(found);
    }
    // The same file named twice (directly and through its directory) is checked once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    (files, problems)
}

/// Every valid playbook found under some paths, by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    playbooks: Vec<Playbook>,
    by_id: BTreeMap<String, usize>,
    files: usize,
}

impl Catalog {
    /// Loads every playbook under `paths` (files or directories, see [`discover`]).
    ///
    /// Returns the valid playbooks and every problem found: per-file problems, paths that
    /// do not exist, and an `id` used by two files (reported at the second, naming the
    /// first). A file with problems is left out; the others still load.
    pub fn load(paths: &[PathBuf]) -> (Catalog, Vec<Diagnostic>) {
        let (files, mut problems) = discover(paths);
        let mut catalog = Catalog {
            files: files.len(),
            ..Catalog::default()
        };
        let mut origins: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
        for file in files {
            match load_with_position(&file) {
                Ok((playbook, at)) => {
                    if let Some((first, line)) = origins.get(&playbook.id) {
                        let text = yaml::read_bounded(&file).unwrap_or_default();
                        problems.push(Diagnostic::at(
                            &file,
                            &text,
                            at.line,
                            at.column,
                            format!(
                                "playbook id `{}` is already used by {}:{line}; ids must be unique",
                                playbook.id,
                                first.display()
                            ),
                        ));
                        continue;
                    }
                    origins.insert(playbook.id.clone(), (file.clone(), at.line));
                    catalog
                        .by_id
                        .insert(playbook.id.clone(), catalog.playbooks.len());
                    catalog.playbooks.push(playbook);
                }
                Err(mut diagnostics) => problems.append(&mut diagnostics),
            }
        }
        (catalog, problems)
    }

    /// The playbook with this id.
    pub fn get(&self, id: &str) -> Option<&Playbook> {
        self.by_id.get(id).and_then(|i| self.playbooks.get(*i))
    }

    /// The valid playbooks, in the order their files were read.
    pub fn iter(&self) -> impl Iterator<Item = &Playbook> {
        self.playbooks.iter()
    }

    /// Playbook ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// Number of valid playbooks.
    pub fn len(&self) -> usize {
        self.playbooks.len()
    }

    /// True when no playbook is valid.
    pub fn is_empty(&self) -> bool {
        self.playbooks.is_empty()
    }

    /// Number of files read (valid or not).
    pub fn files_read(&self) -> usize {
        self.files
    }
}
