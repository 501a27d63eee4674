//! `cordon doctor`: the preflight an operator runs before the first start and after
//! every change. Each check prints one line, `PASS`, `FAIL`, `WARN` or `SKIP`, and a
//! failure or warning says what to do on an indented `fix:` line.
//!
//! - [`access`]: who the service user is, and whether it may read or write a path
//!   (judged from mode bits and ownership when doctor runs as someone else, e.g. root);
//! - [`local`]: the secrets, the state and archive directories, the playbooks (the
//!   same diagnostics as `cordon check`), the metrics address and the free disk space;
//! - [`server`]: the homeserver: reachable with this system's trust store, login (as a
//!   throwaway device, logged out at once), the saved session's token, admin rights
//!   through the configured URL, rate limits, room version 12, aliases;
//! - [`fhir`]: the FHIR server advice is delivered to, when one is configured: its token,
//!   and a FHIR R4 CapabilityStatement that takes transactions.
//!
//! It is safe beside a running bot: it never takes the state directory's lock, never
//! opens the store or matrix-sdk's stores, and never uses the bot's device (its login
//! is a device of its own, logged out before it ends). Its only writes to the
//! homeserver are that device's login and logout.
//!
//! Uses `input` (config, playbooks) and `matrix` (the admin API, the session file):
//! a service beside `trust` and `retention`, below `app`.

pub mod access;
pub mod fhir;
pub mod local;
pub mod server;

use std::io::{self, Write};

use crate::input::config::Config;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As it should be.
    Pass,
    /// cordon would not work, or not safely: exit 1.
    Fail,
    /// cordon works, but something is worth an operator's look.
    Warn,
    /// Not checked, because a check it needs failed.
    Skip,
}

impl Status {
    /// The word that starts the line.
    fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Warn => "WARN",
            Self::Skip => "SKIP",
        }
    }
}

/// One check's outcome: `PASS  name: detail`, then any further lines (diagnostics)
/// and the fix, indented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The outcome.
    pub status: Status,
    /// What was checked (`login`, `state_dir`, a playbook's file, …).
    pub name: String,
    /// What was found.
    pub detail: String,
    /// Lines shown under it, indented (a playbook's diagnostics).
    pub more: Vec<String>,
    /// What to do, for a failure or a warning.
    pub fix: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Status::Pass, name, detail, None)
    }

    /// A check that failed, and what to do.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(Status::Fail, name, detail, Some(fix.into()))
    }

    /// A warning, and what to do.
    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(Status::Warn, name, detail, Some(fix.into()))
    }

    /// A check not made because `needs` failed.
    pub fn skip(name: impl Into<String>, needs: &str) -> Self {
        Self::new(Status::Skip, name, format!("(needs {needs})"), None)
    }

    fn new(
        status: Status,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            status,
            name: name.into(),
            detail: detail.into(),
            more: Vec::new(),
            fix,
        }
    }

    /// With `lines` shown under the check.
    pub fn with_lines(mut self, lines: Vec<String>) -> Self {
        self.more = lines;
        self
    }

    /// Writes the check as the operator reads it.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.status == Status::Skip {
            writeln!(out, "{}  {} {}", self.status.word(), self.name, self.detail)?;
        } else {
            writeln!(
                out,
                "{}  {}: {}",
                self.status.word(),
                self.name,
                self.detail
            )?;
        }
        for line in &self.more {
            for part in line.lines() {
                writeln!(out, "{INDENT}{part}")?;
            }
        }
        if let Some(fix) = &self.fix {
            writeln!(out, "{INDENT}fix: {fix}")?;
        }
        Ok(())
    }
}

/// The indentation of a check's further lines, under its name.
const INDENT: &str = "      ";

/// What doctor was asked to do besides the config.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The least free space the state and archive directories' file systems may have.
    pub min_free: MinFree,
}

/// A free-space threshold: bytes, or a percentage of the file system's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    /// At least this many bytes.
    Bytes(u64),
    /// At least this percentage of the file system.
    Percent(u8),
}

impl Default for MinFree {
    fn default() -> Self {
        Self::Bytes(1 << 30)
    }
}

impl std::str::FromStr for MinFree {
    type Err = String;

    /// `5%`, or a size: `1GiB`, `500MiB`, `2G`, `1048576` (bytes).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(n) if n <= 100 => Ok(Self::Percent(n)),
                _ => Err(format!("`{s}`: a percentage is 0% to 100%")),
            };
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{s}` is not a size (e.g. 1GiB, 500MiB) or a percentage (5%)"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" | "kb" => 1 << 10,
            "m" | "mib" | "mb" => 1 << 20,
            "g" | "gib" | "gb" => 1 << 30,
            "t" | "tib" | "tb" => 1 << 40,
            other => return Err(format!("`{other}` is not a size unit (KiB, MiB, GiB, TiB)")),
        };
        number
            .checked_mul(scale)
            .map(Self::Bytes)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => f.write_str(&human_bytes(*b)),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`, `512 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if b >= size {
            #[allow(clippy::cast_precision_loss, reason = "a figure for people")]
            let value = b as f64 / size as f64;
            return if value >= 10.0 || b.is_multiple_of(size) {
                format!("{value:.0} {unit}")
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{b} B")
}

/// The counts behind the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Checks that passed.
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Warnings.
    pub warned: usize,
    /// Checks skipped.
    pub skipped: usize,
}

impl Summary {
    /// True when nothing failed (warnings allowed).
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    fn count(&mut self, status: Status) {
        match status {
            Status::Pass => self.passed += 1,
            Status::Fail => self.failed += 1,
            Status::Warn => self.warned += 1,
            Status::Skip => self.skipped += 1,
        }
    }
}

/// Where the checks go as they are made: written at once (an operator watches a
/// slow homeserver check arrive) and counted.
pub struct Report<'a> {
    out: &'a mut dyn Write,
    summary: Summary,
}

impl<'a> Report<'a> {
    /// A report written to `out`.
    pub fn new(out: &'a mut dyn Write) -> Self {
        Self {
            out,
            summary: Summary::default(),
        }
    }

    /// Writes and counts `check`; returns its status.
    pub fn add(&mut self, check: Check) -> io::Result<Status> {
        check.write(self.out)?;
        self.out.flush()?;
        self.summary.count(check.status);
        Ok(check.status)
    }

    /// Writes a line that is not a check (who the checks are for).
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{text}")
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }
}

/// Runs every check against `config`, writing each line to `out` as it is made, then
/// the summary line.
pub async fn run(config: &Config, options: Options, out: &mut dyn Write) -> io::Result<Summary> {
    let mut report = Report::new(out);
    report.add(Check::pass(
        "config",
        format!("{} ({})", config.path.display(), config.summary()),
    ))?;
    let user = access::ServiceUser::find(&config.state_dir);
    report.note(&format!("Checking for {}.", user.describe()))?;
    let secrets = local::secrets(config, &user, &mut report)?;
    local::directories(config, &user, &mut report)?;
    local::playbooks(config, &user, &mut report)?;
    server::checks(config, &secrets, &mut report).await?;
    fhir::check(config, &mut report).await?;
    local::metrics(config, &mut report).await?;
    local::disk(config, options.min_free, &mut report)?;
    let summary = report.summary();
    let verdict = if summary.ok() {
        "cordon is ready to start"
    } else {
        "fix each FAIL above, then run cordon doctor again"
    };
    report.note(&format!(
        "doctor: {} passed, {} failed, {} warning(s), {} skipped: {verdict}",
        summary.passed, summary.failed, summary.warned, summary.skipped
    ))?;
    Ok(summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_prints_its_line_then_the_fix_indented() {
        let mut out = Vec::new();
        Check::fail("login", "refused", "check the password")
            .write(&mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "FAIL  login: refused\n      fix: check the password\n"
        );
    }

    #[test]
    fn a_skipped_check_says_what_it_needs() {
        let mut out = Vec::new();
        Check::skip("admin", "login").write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SKIP  admin (needs login)\n"
        );
    }

    #[test]
    fn min_free_reads_sizes_and_percentages() {
        assert_eq!("5%".parse::<MinFree>(), Ok(MinFree::Percent(5)));
        assert_eq!("1GiB".parse::<MinFree>(), Ok(MinFree::Bytes(1 << 30)));
        assert_eq!("500M".parse::<MinFree>(), Ok(MinFree::Bytes(500 << 20)));
        assert_eq!("4096".parse::<MinFree>(), Ok(MinFree::Bytes(4096)));
        assert!("lots".parse::<MinFree>().is_err());
        assert!("101%".parse::<MinFree>().is_err());
        assert!("3 parsecs".parse::<MinFree>().is_err());
    }

    #[test]
    fn sizes_are_shown_for_people() {
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(512), "512 B");
    }
}
