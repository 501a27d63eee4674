//! One pass over a sealed archive: decrypted as a stream, each tar member hashed and
//! bounded on its way, and every way a read can fail told apart.

#[allow(clippy::wildcard_imports, reason = "the parent's imports and helpers")]
use super::*;

/// What one pass over the file saw.
pub(super) struct Walk {
    /// Member → (SHA-256, size).
    pub(super) members: MemberDigests,
    pub(super) file_sha256: String,
    pub(super) file_size: u64,
}

/// Decrypts `path` and hands every member, in order, to `visit` (which may read as
/// much of it as it likes); hashes every member and the file itself. Refuses members
/// that are not plain files, have unsafe or unknown names, or repeat a name.
pub(super) fn walk(
    path: &Path,
    ids: &[&dyn age::Identity],
    mut visit: impl FnMut(&str, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<Walk, ArchiveError> {
    if ids.is_empty() {
        return Err(ArchiveError::BadInput("no identity to decrypt with".into()));
    }
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    let mut file_hash = (Sha256::new(), 0u64);
    let mut members = BTreeMap::new();
    let late_failure = {
        let hashing = HashingReader {
            inner: &file,
            state: &mut file_hash,
        };
        let decryptor = age::Decryptor::new_buffered(BufReader::new(hashing))
            .map_err(|e| decrypt_error(e, path))?;
        let reader = decryptor
            .decrypt(ids.iter().copied())
            .map_err(|e| decrypt_error(e, path))?;
        let mut tracked = Tracked {
            inner: reader,
            failure: None,
        };
        let result = walk_members(&mut tracked, &mut members, &mut visit);
        if let Some(detail) = tracked.failure.take() {
            return Err(detail.into_error(path));
        }
        result?;
        // Past the end of the container: the rest must be tar's zero padding, and
        // reading it to the end makes age check the stream's final chunk.
        let mut rest = [0u8; 8192];
        loop {
            match tracked.read(&mut rest) {
                Ok(0) => break,
                Ok(n) if rest[..n].iter().all(|b| *b == 0) => {}
                Ok(_) => {
                    return Err(ArchiveError::UnexpectedMember(
                        "data after the end of the container".into(),
                    ));
                }
                Err(_) => {
                    let failure = tracked.failure.take();
                    return Err(failure.map(|f| f.into_error(path)).unwrap_or_else(|| {
                        ArchiveError::Damaged {
                            detail: "unreadable end of stream".into(),
                        }
                    }));
                }
            }
        }
        tracked.failure
    };
    if let Some(failure) = late_failure {
        return Err(failure.into_error(path));
    }
    // Whatever age did not need (there should be nothing) still counts in the file's
    // hash.
    let mut rest = HashingReader {
        inner: &file,
        state: &mut file_hash,
    };
    io::copy(&mut rest, &mut io::sink()).map_err(ArchiveError::io(path))?;
    let (hash, size) = file_hash;
    Ok(Walk {
        members,
        file_sha256: hex::encode(hash.finalize()),
        file_size: size,
    })
}

fn walk_members<R: Read>(
    reader: &mut R,
    members: &mut MemberDigests,
    visit: &mut impl FnMut(&str, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let container = |e: io::Error| ArchiveError::Damaged {
        detail: format!("not a cordon archive container: {e}"),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(container)? {
        let entry = entry.map_err(container)?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|e| ArchiveError::UnsafePath(String::from_utf8_lossy(e.as_bytes()).into()))?;
        match classify(&name) {
            Member::Known => {}
            Member::Unsafe => return Err(ArchiveError::UnsafePath(name)),
            Member::Unknown => return Err(ArchiveError::UnexpectedMember(name)),
        }
        if entry.header().entry_type() != tar::EntryType::Regular || members.contains_key(&name) {
            return Err(ArchiveError::UnexpectedMember(name));
        }
        let mut state = (Sha256::new(), 0u64);
        let mut hashing = HashingReader {
            inner: entry,
            state: &mut state,
        };
        visit(&name, &mut hashing)?;
        io::copy(&mut hashing, &mut io::sink()).map_err(ArchiveError::io(name.as_str()))?;
        let (hash, size) = state;
        members.insert(name, (hex::encode(hash.finalize()), size));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Member {
    Known,
    Unknown,
    Unsafe,
}

/// Whether `name` is one cordon writes: `manifest.json`, `manifest.sig`,
/// `audit.jsonl`, `index.md`, `rooms/<name>.jsonl|.md`, `media/<name>`,
/// `pre-seal/<name>`, `record/<name>`.
pub(super) fn classify(name: &str) -> Member {
    if name.starts_with('/')
        || name.contains('\\')
        || name
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Member::Unsafe;
    }
    match name.split_once('/') {
        None if [MANIFEST_FILE, SIGNATURE_FILE, AUDIT_FILE, INDEX_FILE].contains(&name) => {
            Member::Known
        }
        Some(("rooms", file))
            if is_safe_name(file) && (file.ends_with(".jsonl") || file.ends_with(".md")) =>
        {
            Member::Known
        }
        Some(("media" | "pre-seal" | RECORD_DIR | ADVICE_DIR, file)) if is_safe_name(file) => {
            Member::Known
        }
        _ => Member::Unknown,
    }
}

/// An error age reported while reading the stream.
pub(super) struct Failure {
    pub(super) kind: io::ErrorKind,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn into_error(self, path: &Path) -> ArchiveError {
        match self.kind {
            io::ErrorKind::UnexpectedEof => ArchiveError::Damaged {
                detail: format!("it ends early: {}", self.message),
            },
            io::ErrorKind::InvalidData => ArchiveError::Damaged {
                detail: self.message,
            },
            kind => ArchiveError::Io {
                path: path.to_owned(),
                source: io::Error::new(kind, self.message),
            },
        }
    }
}

/// Remembers the first error of the decrypting reader, so that an error surfacing
/// through tar or a visitor is reported as what it was.
struct Tracked<R> {
    inner: R,
    failure: Option<Failure>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.failure.is_none() {
                self.failure = Some(Failure {
                    kind: e.kind(),
                    message: e.to_string(),
                });
            }
        })
    }
}

pub(super) fn decrypt_error(e: age::DecryptError, path: &Path) -> ArchiveError {
    use age::DecryptError as D;
    match e {
        D::NoMatchingKeys => ArchiveError::WrongKey,
        D::Io(source)
            if !matches!(
                source.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
            ) =>
        {
            ArchiveError::Io {
                path: path.to_owned(),
                source,
            }
        }
        D::UnknownFormat | D::InvalidHeader => ArchiveError::Damaged {
            detail: "it is not an age-encrypted file, or its header is damaged".into(),
        },
        other => ArchiveError::Damaged {
            detail: other.to_string(),
        },
    }
}

/// Counts and hashes what is read through it.
struct HashingReader<'s, R> {
    inner: R,
    state: &'s mut (Sha256, u64),
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.state.0.update(&buf[..n]);
        self.state.1 += n as u64;
        Ok(n)
    }
}

pub(super) fn read_limited(
    data: &mut dyn Read,
    limit: u64,
    name: &str,
) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::new();
    data.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(ArchiveError::io(name))?;
    if out.len() as u64 > limit {
        return Err(ArchiveError::BadManifest {
            file: name.to_owned(),
            detail: format!("larger than {limit} bytes"),
        });
    }
    Ok(out)
}
