//! Pre-seal segments: the events a sweep is about to redact, as transcript lines
//! (JSON Lines), encrypted with age to the playbook's records recipients.
//!
//! The format is the archive's transcript format, specified in
//! `docs/archive-format.md`; the stand-down merges these segments into the final
//! archive. cordon keeps no key that can open a segment.
//!
//! A segment is written to a hidden temporary name in its directory, flushed to disk,
//! renamed into place, and the directory is flushed too, so that after a crash a
//! segment is either complete or absent (a leftover temporary file is never read).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::domain::incident::IncidentId;
use crate::domain::transcript::TranscriptLine;
use crate::durable;

/// Why a segment could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// There is no recipient to encrypt to.
    #[error("no archive recipients to seal to")]
    NoRecipients,
    /// age refused the recipients.
    #[error("sealing with age: {0}")]
    Encrypt(#[from] age::EncryptError),
    /// age could not open a segment (wrong identity, damaged file).
    #[error("opening a segment with age: {0}")]
    Decrypt(#[from] age::DecryptError),
    /// A line does not encode or decode.
    #[error("segment line {line}: {source}")]
    Line {
        /// The line number (from 1).
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
    /// The room key cannot name a file.
    #[error("room key {0:?} cannot name a segment file (only a-z, 0-9, `-` and `_`)")]
    BadRoomKey(String),
}

/// A segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSegment {
    /// Relative to the archive directory.
    pub file: String,
    /// SHA-256 of the encrypted file, hex.
    pub sha256: String,
    /// Size of the encrypted file.
    pub bytes: u64,
}

/// The segment's path relative to the archive directory:
/// `<incident>/pre-seal/<room key>-<seq:06>.jsonl.age`.
pub fn segment_path(incident: &IncidentId, room_key: &str, seq: u64) -> Result<String, SealError> {
    check_room_key(room_key)?;
    Ok(format!("{incident}/pre-seal/{room_key}-{seq:06}.jsonl.age"))
}

/// Refuses a room key that could escape its directory or surprise a shell.
pub fn check_room_key(room_key: &str) -> Result<(), SealError> {
    let ok = !room_key.is_empty()
        && room_key.len() <= 64
        && !room_key.starts_with('-')
        && room_key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SealError::BadRoomKey(room_key.to_owned()))
    }
}

/// Encodes lines as JSON Lines (one object per line, `\n` after each).
pub fn encode_lines(lines: &[TranscriptLine]) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        serde_json::to_writer(&mut out, line).map_err(|source| SealError::Line {
            line: i + 1,
            source,
        })?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Decodes JSON Lines; blank lines are ignored.
pub fn decode_lines(text: impl BufRead) -> Result<Vec<TranscriptLine>, SealError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.map_err(|source| SealError::Line {
            line: i + 1,
            source: serde_json::Error::io(source),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| SealError::Line {
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

/// Writes one segment under `archive_dir`, durably (temporary file, fsync, rename,
/// directory fsync). An existing file of the same name (left by an attempt that
/// crashed before the store recorded it) is replaced.
pub fn write_segment(
    archive_dir: &Path,
    relative: &str,
    lines: &[TranscriptLine],
    recipients: &[age::x25519::Recipient],
) -> Result<WrittenSegment, SealError> {
    let plaintext = encode_lines(lines)?;
    write_sealed(archive_dir, relative, &plaintext, recipients)
}

/// Encrypts `plaintext` with age to `recipients` and writes it under `archive_dir` at
/// `relative`, durably (temporary file, fsync, rename, directory fsync): after a crash
/// the file is complete or absent. An existing file of the same name (left by an
/// attempt that crashed before the store recorded it) is replaced. The plaintext never
/// touches the disk.
pub fn write_sealed(
    archive_dir: &Path,
    relative: &str,
    plaintext: &[u8],
    recipients: &[age::x25519::Recipient],
) -> Result<WrittenSegment, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let path = archive_dir.join(relative);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SealError::Io { path, source }
    };
    let dir = path
        .parent()
        .ok_or_else(|| SealError::BadRoomKey(relative.to_owned()))?
        .to_owned();
    create_private_dirs(&dir)?;
    // The file name must be text: the segment is recorded by it.
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| SealError::BadRoomKey(relative.to_owned()))?;

    let (tmp, file) = durable::create_temp(&path, 0o600)
        .map_err(|(path, source)| SealError::Io { path, source })?;
    let mut hashing = HashingWriter {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))?;
    let mut writer = encryptor.wrap_output(&mut hashing).map_err(io_err(&tmp))?;
    writer.write_all(plaintext).map_err(io_err(&tmp))?;
    writer.finish().map_err(io_err(&tmp))?;
    let HashingWriter { inner, hash, bytes } = hashing;
    let file = inner.into_inner().map_err(|e| SealError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    durable::commit(file, &tmp, &path).map_err(|(path, source)| SealError::Io { path, source })?;
    Ok(WrittenSegment {
        file: relative.to_owned(),
        sha256: hex::encode(hash.finalize()),
        bytes,
    })
}

/// Decrypts age-encrypted `bytes` with an identity (the records officer's).
pub fn open_sealed(bytes: &[u8], identity: &dyn age::Identity) -> Result<Vec<u8>, SealError> {
    let decryptor = age::Decryptor::new_buffered(bytes)?;
    let mut plaintext = Vec::new();
    decryptor
        .decrypt(std::iter::once(identity))?
        .read_to_end(&mut plaintext)
        .map_err(|source| SealError::Io {
            path: PathBuf::from("<sealed entry>"),
            source,
        })?;
    Ok(plaintext)
}

/// Opens a segment with an age identity (the records officer's) and decodes its lines.
pub fn read_segment(
    path: &Path,
    identity: &dyn age::Identity,
) -> Result<Vec<TranscriptLine>, SealError> {
    let file = File::open(path).map_err(|source| SealError::Io {
        path: path.to_owned(),
        source,
    })?;
    let decryptor = age::Decryptor::new_buffered(BufReader::new(file))?;
    let mut plaintext = Vec::new();
    decryptor
        .decrypt(std::iter::once(identity))?
        .read_to_end(&mut plaintext)
        .map_err(|source| SealError::Io {
            path: path.to_owned(),
            source,
        })?;
    decode_lines(plaintext.as_slice())
}

/// Creates `dir` and its missing parents with owner-only permissions, and flushes the
/// parents of every directory it created.
fn create_private_dirs(dir: &Path) -> Result<(), SealError> {
    crate::durable::create_private_dirs(dir)
        .map_err(|(path, source)| SealError::Io { path, source })
}

/// Counts and hashes what passes through to the file.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::fs;

    use super::*;
    use crate::domain::transcript::tests::line;

    #[test]
    fn a_segment_round_trips_through_age_and_only_its_recipient_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let incident = IncidentId::parse("mc-4k7p").unwrap();
        let relative = segment_path(&incident, "command", 7).unwrap();
        assert_eq!(relative, "mc-4k7p/pre-seal/command-000007.jsonl.age");
        let lines = vec![line("$a", "first"), line("$b", "second")];
        let written =
            write_segment(dir.path(), &relative, &lines, &[identity.to_public()]).unwrap();
        let path = dir.path().join(&relative);
        let raw = fs::read(&path).unwrap();
        assert_eq!(written.bytes, raw.len() as u64);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&raw)));
        assert!(!raw.windows(5).any(|w| w == b"first"), "plaintext on disk");
        assert_eq!(read_segment(&path, &identity).unwrap(), lines);
        assert!(matches!(
            read_segment(&path, &other),
            Err(SealError::Decrypt(_))
        ));
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        // Rewriting the same segment (a resumed attempt) replaces it.
        write_segment(dir.path(), &relative, &lines[..1], &[identity.to_public()]).unwrap();
        assert_eq!(read_segment(&path, &identity).unwrap().len(), 1);
    }

    #[test]
    fn lines_are_encoded_one_object_per_line() {
        let bytes = encode_lines(&[line("$e", "BP 90/60\nsecond line")]).unwrap();
        // One object per line: the newline in the body is escaped.
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(
            decode_lines(&bytes[..]).unwrap(),
            vec![line("$e", "BP 90/60\nsecond line")]
        );
    }

    #[test]
    fn room_keys_that_could_escape_are_refused() {
        let incident = IncidentId::parse("mc-4k7p").unwrap();
        for bad in ["", "../x", "a/b", "-x", "A", "a b"] {
            assert!(segment_path(&incident, bad, 1).is_err(), "{bad:?}");
        }
        assert!(segment_path(&incident, "ed-resus_2", 1).is_ok());
    }

    #[test]
    fn sealing_needs_a_recipient() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_segment(dir.path(), "x/pre-seal/k-000001.jsonl.age", &[], &[]),
            Err(SealError::NoRecipients)
        ));
    }
}
