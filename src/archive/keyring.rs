//! The signing keys a records officer trusts: [`TrustedSigners`], from `--signer` and
//! from a trust file (`--trust-file`).
//!
//! A signature only proves that an archive is intact since someone signed it; anyone
//! can make an ed25519 key and encrypt to a records officer's public age key. So an
//! archive is verified or opened only against keys the officer chose beforehand, and
//! one signed by any other key is refused, naming that key, so it can be looked into
//! rather than read as the record.
//!
//! A trust file is text the records office keeps (one per office, beside its age
//! identity files):
//!
//! ```text
//! # cordon archive signing keys trusted by the records office
//! ed25519:mT1K9cX0S5w6vN0kq2m7wH3hKkO8m3rU1iWbqkXcZ8A  St Elsewhere cordon (prod), 2026-01-12
//! ed25519:Q2V4aWZ8cW1ZcW9Xb2lQZ2JwN3JqZ2JzR1lNbUl6bE0  DR site
//! ```
//!
//! Each line is blank, a `#` comment, or a key as `cordon archive pubkey` prints it
//! followed, after spaces, by a label (the rest of the line) that `verify` prints when
//! that key signed. Every problem is reported at once as `file:line: error: …`: a line
//! that is not a key, a key listed twice, a secret key pasted by mistake (never echoed),
//! a file with no key at all.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::ArchiveError;
use super::signing::ArchivePublicKey;
use crate::input::diagnostic::Diagnostic;

/// The largest trust file read: a few hundred keys fit in far less.
const TRUST_FILE_LIMIT: u64 = 64 << 10;

/// The signing keys an archive may be signed by. Never empty when built through
/// [`TrustedSigners::pinned`] or [`TrustedSigners::read_file`]; the reader refuses an
/// empty one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedSigners {
    keys: Vec<TrustedKey>,
    /// The trust files read, for the refusal's wording.
    files: Vec<PathBuf>,
}

/// One trusted key and where the trust in it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key.
    pub key: ArchivePublicKey,
    /// Where it was named.
    pub source: KeySource,
}

/// Where a trusted key was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--signer` on the command line (or a caller that pinned it).
    Pinned,
    /// A line of a trust file, with its label (possibly empty).
    TrustFile {
        /// The file, as given.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The rest of the line after the key.
        label: String,
    },
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Pinned => write!(f, "pinned with --signer"),
            KeySource::TrustFile { path, line, label } if label.is_empty() => {
                write!(f, "{}:{line}", path.display())
            }
            KeySource::TrustFile { path, line, label } => {
                write!(f, "{}:{line}, \u{201c}{label}\u{201d}", path.display())
            }
        }
    }
}

impl TrustedSigners {
    /// No key yet: add some with [`Self::pin`] or [`Self::add_file`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Exactly one trusted key.
    pub fn pinned(key: ArchivePublicKey) -> Self {
        let mut t = Self::new();
        t.pin(key);
        t
    }

    /// Trusts `key` too (a second pin of the same key changes nothing).
    pub fn pin(&mut self, key: ArchivePublicKey) {
        if !self.keys.iter().any(|k| k.key == key) {
            self.keys.push(TrustedKey {
                key,
                source: KeySource::Pinned,
            });
        }
    }

    /// Reads a trust file: see the module documentation for its format.
    pub fn read_file(path: &Path) -> Result<Self, ArchiveError> {
        let mut t = Self::new();
        t.add_file(path)?;
        Ok(t)
    }

    /// Trusts every key of the trust file at `path` too. Either the whole file is
    /// taken or, when any line is wrong, none of it, with every problem reported.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ArchiveError> {
        let text = read_text(path).map_err(|d| ArchiveError::TrustFile(vec![d]))?;
        let keys = parse(path, &text).map_err(ArchiveError::TrustFile)?;
        for key in keys {
            if !self.keys.iter().any(|k| k.key == key.key) {
                self.keys.push(key);
            }
        }
        self.files.push(path.to_owned());
        Ok(())
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The entry for `key`, when it is trusted.
    pub fn find(&self, key: &ArchivePublicKey) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| &k.key == key)
    }

    /// What is trusted, for a refusal: `the pinned key ed25519:…`, or `any of the 2
    /// keys in records.keys`.
    pub fn describe(&self) -> String {
        let pinned: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| k.source == KeySource::Pinned)
            .collect();
        let from_files = self.keys.len() - pinned.len();
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        match (pinned.as_slice(), from_files) {
            ([], 0) => "any trusted key (none was given)".to_owned(),
            ([only], 0) => format!("the pinned key {}", only.key),
            (pinned, 0) => format!("any of the {} keys pinned with --signer", pinned.len()),
            ([], n) => format!("any of the {n} key(s) in {}", files.join(", ")),
            (pinned, n) => format!(
                "any of the {} key(s) pinned with --signer or the {n} in {}",
                pinned.len(),
                files.join(", ")
            ),
        }
    }
}

/// The file's text, bounded and UTF-8.
fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let fail = |why: String| Diagnostic::file(path, why);
    let meta = std::fs::metadata(path).map_err(|e| fail(io_reason(&e)))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(TRUST_FILE_LIMIT + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(io_reason(&e)))?;
    if bytes.len() as u64 > TRUST_FILE_LIMIT {
        return Err(fail(format!(
            "is larger than {TRUST_FILE_LIMIT} bytes: a trust file holds public keys, one a line"
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail("is not UTF-8 text".into()))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => format!("cannot read it: {e}"),
    }
}

/// Every key of the file, or every problem in it.
fn parse(path: &Path, text: &str) -> Result<Vec<TrustedKey>, Vec<Diagnostic>> {
    let mut keys: Vec<TrustedKey> = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (first, label) = match line.split_once(char::is_whitespace) {
            Some((first, rest)) => (first, rest.trim()),
            None => (line, ""),
        };
        if first.starts_with("ed25519-secret:") || line.contains("AGE-SECRET-KEY-") {
            // Never echo it: the diagnostic carries no source line.
            problems.push(Diagnostic {
                file: path.to_owned(),
                line: n,
                column: 0,
                message: "this line holds a secret key; a trust file holds only public \
                          keys (`ed25519:…`, as `cordon archive pubkey` prints them). \
                          Remove it, and treat that secret key as exposed"
                    .into(),
                source_line: None,
            });
            continue;
        }
        let key: ArchivePublicKey = match first.parse() {
            Ok(k) => k,
            Err(_) => {
                problems.push(Diagnostic::at(
                    path,
                    text,
                    n,
                    0,
                    "expected an archive signing key, `ed25519:` and 43 base64 characters \
                     as `cordon archive pubkey` prints it, then an optional label",
                ));
                continue;
            }
        };
        let earlier = keys.iter().find_map(|k| match &k.source {
            KeySource::TrustFile { line, .. } if k.key == key => Some(*line),
            _ => None,
        });
        if let Some(earlier) = earlier {
            problems.push(Diagnostic::at(
                path,
                text,
                n,
                0,
                format!("this key is already listed on line {earlier}"),
            ));
            continue;
        }
        keys.push(TrustedKey {
            key,
            source: KeySource::TrustFile {
                path: path.to_owned(),
                line: n,
                label: label.chars().filter(|c| !c.is_control()).collect(),
            },
        });
    }
    if keys.is_empty() && problems.is_empty() {
        problems.push(Diagnostic::file(
            path,
            "names no signing key: add a line `ed25519:… label` for each cordon whose \
             archives you accept (`cordon archive pubkey` prints its key)",
        ));
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::archive::ArchiveSigner;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("records.keys");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn problems(e: ArchiveError) -> Vec<String> {
        match e {
            ArchiveError::TrustFile(d) => d.iter().map(ToString::to_string).collect(),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_trust_file_names_keys_with_labels_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            ArchiveSigner::generate().public(),
            ArchiveSigner::generate().public(),
        );
        let path = write(
            dir.path(),
            &format!("# trusted\n\n{a}  St Elsewhere cordon (prod)\n  {b}\n"),
        );
        let t = TrustedSigners::read_file(&path).unwrap();
        assert_eq!(t.keys().len(), 2);
        let found = t.find(&a).unwrap();
        assert_eq!(
            found.source.to_string(),
            format!(
                "{}:3, \u{201c}St Elsewhere cordon (prod)\u{201d}",
                path.display()
            )
        );
        assert_eq!(
            t.find(&b).unwrap().source.to_string(),
            format!("{}:4", path.display())
        );
        assert!(t.find(&ArchiveSigner::generate().public()).is_none());
        assert_eq!(
            t.describe(),
            format!("any of the 2 key(s) in {}", path.display())
        );
        assert_eq!(
            TrustedSigners::pinned(a).describe(),
            format!("the pinned key {a}")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_by_line_and_secrets_are_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let a = ArchiveSigner::generate().public();
        let secret = "ed25519-secret:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U";
        let path = write(
            dir.path(),
            &format!("{a} one\nnot a key\n{a} again\n{secret}\nAGE-SECRET-KEY-1QQQ\n"),
        );
        let all = problems(TrustedSigners::read_file(&path).unwrap_err());
        let file = path.display().to_string();
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(all[0].starts_with(&format!("{file}:2: error: expected an archive signing key")));
        assert!(all[1].starts_with(&format!(
            "{file}:3: error: this key is already listed on line 1"
        )));
        assert!(all[2].starts_with(&format!("{file}:4: error: this line holds a secret key")));
        assert!(all[3].starts_with(&format!("{file}:5: error: this line holds a secret key")));
        let joined = all.join("\n");
        assert!(
            !joined.contains("c2VjcmV0") && !joined.contains("1QQQ"),
            "{joined}"
        );
    }

    #[test]
    fn an_empty_missing_or_huge_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "# nothing yet\n");
        let all = problems(TrustedSigners::read_file(&empty).unwrap_err());
        assert!(all[0].contains("names no signing key"), "{all:?}");
        let missing = dir.path().join("absent.keys");
        let all = problems(TrustedSigners::read_file(&missing).unwrap_err());
        assert_eq!(all, [format!("{}: error: no such file", missing.display())]);
        let huge = write(dir.path(), &"#".repeat(70_000));
        let all = problems(TrustedSigners::read_file(&huge).unwrap_err());
        assert!(all[0].contains("is larger than"), "{all:?}");
    }

    #[test]
    fn pins_and_files_add_up_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let a = ArchiveSigner::generate().public();
        let b = ArchiveSigner::generate().public();
        let path = write(dir.path(), &format!("{a} from the file\n{b}\n"));
        let mut t = TrustedSigners::pinned(a);
        t.pin(a);
        t.add_file(&path).unwrap();
        assert_eq!(t.keys().len(), 2);
        // The pin came first and stays what `a` is trusted as.
        assert_eq!(t.find(&a).unwrap().source, KeySource::Pinned);
        assert!(
            t.describe().contains("pinned with --signer or the 1 in"),
            "{}",
            t.describe()
        );
        assert!(TrustedSigners::new().is_empty());
    }
}
