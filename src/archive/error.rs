//! Why an archive could not be sealed, verified or opened.
//!
//! The messages are read by records officers at a terminal, so each says what is wrong
//! with the archive (or with what they gave) in plain words; the CLI adds what to do.

use std::io;
use std::path::PathBuf;

/// Why an archive could not be sealed, verified or opened.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// None of the identities given can open the archive.
    #[error("this archive is not encrypted to the given identity")]
    WrongKey,
    /// The file ends early, or its encrypted bytes were damaged or altered (age's
    /// authentication failed), or it is not an age file at all.
    #[error("the archive is truncated or damaged ({detail})")]
    Damaged {
        /// What age or the container reader reported.
        detail: String,
    },
    /// A member's bytes do not match the SHA-256 (or size) the manifest records.
    #[error("{file} does not match its SHA-256 in the manifest: the archive was altered")]
    Tampered {
        /// The member, e.g. `rooms/command.jsonl`.
        file: String,
    },
    /// The manifest's figures do not match what the transcripts hold.
    #[error("{file}: {detail}: the manifest does not describe its contents")]
    Inconsistent {
        /// The member the figure is about.
        file: String,
        /// Which figure, and the two values.
        detail: String,
    },
    /// `manifest.sig` is not a valid signature of `manifest.json` by the key it names.
    #[error("the manifest's signature does not verify: manifest.json was altered after sealing")]
    BadSignature,
    /// The archive was signed, validly, by a key the records officer does not trust.
    #[error("the archive is signed by {found}, not by {trusted}")]
    UntrustedSigner {
        /// What is trusted ([`super::TrustedSigners::describe`]).
        trusted: String,
        /// The key that signed the archive.
        found: String,
    },
    /// No signing key was given to check the archive's signer against.
    #[error(
        "no trusted signing key was given: the signature alone proves the archive intact, \
         not who sealed it"
    )]
    NoTrustedSigner,
    /// A trust file cannot be read or has wrong lines; each is `file:line: error: …`.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    TrustFile(Vec<crate::input::diagnostic::Diagnostic>),
    /// A member the manifest lists (or every archive has) is absent.
    #[error("the archive has no {0}")]
    MissingMember(String),
    /// A member the manifest does not list, a second member of the same name, or a
    /// member that is not a plain file.
    #[error("the archive holds an unexpected member {0:?}")]
    UnexpectedMember(String),
    /// A member's name is absolute, climbs with `..`, or is not one cordon writes.
    #[error("the archive holds a member with an unsafe name {0:?}")]
    UnsafePath(String),
    /// `manifest.json` (or `manifest.sig`) cannot be read.
    #[error("{file} cannot be read: {detail}")]
    BadManifest {
        /// `manifest.json` or `manifest.sig`.
        file: String,
        /// Why.
        detail: String,
    },
    /// The manifest's format version is not one this cordon reads.
    #[error(
        "archive format version {0} is not supported by this cordon (it reads versions {readable})",
        readable = readable_versions()
    )]
    UnsupportedVersion(u32),
    /// A transcript line does not decode.
    #[error("{file} line {line}: {detail}")]
    Transcript {
        /// The member.
        file: String,
        /// The line (from 1).
        line: usize,
        /// Why.
        detail: String,
    },
    /// There is no records officer to encrypt to.
    #[error("no archive recipients to seal to")]
    NoRecipients,
    /// age refused to encrypt.
    #[error("sealing with age: {0}")]
    Encrypt(#[from] age::EncryptError),
    /// A room key, file name or media reference given to the writer is not usable.
    #[error("cannot archive: {0}")]
    BadInput(String),
    /// A pre-seal segment is not the file retention wrote.
    #[error(
        "pre-seal segment {file} has SHA-256 {found}, but {expected} was recorded when it was \
         written: refusing to archive it"
    )]
    PreSealMismatch {
        /// The segment's file name.
        file: String,
        /// The SHA-256 recorded when it was written.
        expected: String,
        /// The SHA-256 of the bytes given.
        found: String,
    },
    /// A sealed entry of the command record is not the file sealed when it was made.
    #[error(
        "{label}'s sealed entry {file} has SHA-256 {found}, but {expected} was recorded when \
         it was sealed: refusing to archive it"
    )]
    RecordMismatch {
        /// The entry's label, e.g. `D3`.
        label: String,
        /// The entry's file name.
        file: String,
        /// The SHA-256 recorded when it was sealed.
        expected: String,
        /// The SHA-256 of the bytes given.
        found: String,
    },
    /// An earlier call on this writer failed, so the archive is incomplete.
    #[error("an earlier write to this archive failed; start a new one")]
    Poisoned,
    /// The identity file is missing, unreadable or holds no usable identity.
    #[error("identity file {path}: {detail}")]
    Identities {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The signing key file is missing or unreadable.
    #[error("signing key {path}: {detail}")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The FHIR delivery key is unreadable or does not open.
    #[error("FHIR delivery key {path}: {detail}")]
    DeliveryKey {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// No signing key exists yet in the state directory.
    #[error("no archive signing key in {0} yet")]
    NoSigningKey(PathBuf),
    /// A public key is not `ed25519:<unpadded base64 of 32 bytes>`.
    #[error("{0:?} is not an archive signing key (expected `ed25519:` and 43 base64 characters)")]
    BadPublicKey(String),
    /// The output directory exists and is not empty.
    #[error("{0} already exists and is not empty; choose an empty or new directory")]
    OutputNotEmpty(PathBuf),
}

/// `1, 2 and 3`: the versions this cordon reads, for a refusal.
fn readable_versions() -> String {
    let all: Vec<String> = super::manifest::READABLE_VERSIONS
        .iter()
        .map(ToString::to_string)
        .collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => all.concat(),
    }
}

impl ArchiveError {
    /// True when the archive itself failed a check (wrong key, damaged, altered, badly
    /// signed, not by a trusted signer): what `cordon archive verify` exits 1 for. False
    /// for problems with the command's own inputs or the disk.
    pub fn is_check_failure(&self) -> bool {
        matches!(
            self,
            Self::WrongKey
                | Self::Damaged { .. }
                | Self::Tampered { .. }
                | Self::Inconsistent { .. }
                | Self::BadSignature
                | Self::UntrustedSigner { .. }
                | Self::MissingMember(_)
                | Self::UnexpectedMember(_)
                | Self::UnsafePath(_)
                | Self::BadManifest { .. }
                | Self::UnsupportedVersion(_)
                | Self::Transcript { .. }
        )
    }

    /// What a records officer should do about it, one sentence.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::WrongKey => {
                "use the identity file of one of the records officers this incident's playbook seals to"
            }
            Self::Damaged { .. } => {
                "the copy is incomplete or corrupted; fetch the archive again from cordon's archive directory or a backup"
            }
            Self::Tampered { .. }
            | Self::Inconsistent { .. }
            | Self::BadSignature
            | Self::MissingMember(_)
            | Self::UnexpectedMember(_)
            | Self::UnsafePath(_)
            | Self::BadManifest { .. }
            | Self::Transcript { .. } => {
                "do not rely on this copy; compare its SHA-256 with the one cordon logged at sealing and report it"
            }
            Self::UntrustedSigner { .. } => {
                "do not rely on it: it was not sealed by a cordon you trust. If it should have been, compare that key with `cordon archive pubkey` on the server before you trust it; otherwise report it"
            }
            Self::NoTrustedSigner => {
                "pass --signer ed25519:… with the key `cordon archive pubkey` prints on the cordon server, or --trust-file FILE listing the keys you trust"
            }
            Self::UnsupportedVersion(_) => "open it with a newer cordon",
            _ => "check the paths and permissions given",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }
}
