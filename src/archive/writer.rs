//! [`ArchiveWriter`]: streams an incident's members into one age-encrypted tar file.
//!
//! Members go straight through tar and age to a hidden temporary file: attachments are
//! never held beyond the call that hands them in, and no plaintext touches the disk.
//! Each room's Markdown rendering waits in memory until [`ArchiveWriter::finish`],
//! which knows the incident's name for its heading. The file is also encrypted to a
//! one-time x25519 identity that only this writer holds, in memory, so that `finish`
//! can decrypt what reached the disk and check every member before anything is
//! destroyed; the identity is dropped (and its secret zeroised, which age's x25519 key
//! does on drop) when the writer is.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::manifest::{
    AdviceManifest, AuditManifest, Counts, FileHash, MANIFEST_VERSION, Manifest, MediaManifest,
    PreSealManifest, RecordManifest, RoomManifest,
};
use super::render::{self, RoomHeading, UnauthenticatedEvent, UndecryptableEvent};
use super::signing::ArchiveSigner;
use super::{
    ADVICE_DIR, AUDIT_FILE, ArchiveError, ArchiveHeader, INDEX_FILE, MANIFEST_FILE, MediaEntry,
    RECORD_DIR, RoomExport, SIGNATURE_FILE, Sealed, create_private_dirs, is_safe_name, reader,
    sync_dir,
};
use crate::archive::segment::{self, check_room_key};

type Sink = age::stream::StreamWriter<BufWriter<File>>;

/// A file sealed before the stand-down, as [`ArchiveWriter::add_sealed`] copies it: the
/// directory it goes under, its name and bytes, and what was recorded when it was
/// sealed.
struct SealedCopy<'a> {
    dir: &'static str,
    file_name: &'a str,
    bytes: &'a [u8],
    sha256: &'a str,
    size: u64,
    content_sha256: &'a str,
}

/// Writes one sealed archive. See the module documentation; `Send`, so the stand-down
/// can drive it from a blocking task.
pub struct ArchiveWriter {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    tar: Option<tar::Builder<Sink>>,
    one_time: Option<age::x25519::Identity>,
    /// Every member written: path → (SHA-256, size).
    members: BTreeMap<String, (String, u64)>,
    rooms: Vec<RoomManifest>,
    media: Vec<MediaManifest>,
    media_seq: HashMap<String, u64>,
    pre_seal: Vec<PreSealManifest>,
    record: Vec<RecordManifest>,
    advice: Vec<AdviceManifest>,
    audit: Option<AuditManifest>,
    /// Room renderings without their heading, written by `finish`.
    pending: Vec<(usize, String)>,
    undecryptable: Vec<UndecryptableEvent>,
    /// Every event nothing proves came from its sender, for `index.md`.
    unauthenticated: Vec<UnauthenticatedEvent>,
    poisoned: bool,
    finished: bool,
}

impl ArchiveWriter {
    /// Starts `<dir>/<file_name>`, written first as `<dir>/.<file_name>.tmp`, encrypted
    /// to `recipients` plus a fresh one-time x25519 identity held only in memory (for
    /// verification). Creates `dir` 0700; the file is 0600.
    pub fn create(
        dir: &Path,
        file_name: &str,
        recipients: &[age::x25519::Recipient],
    ) -> Result<Self, ArchiveError> {
        if recipients.is_empty() {
            return Err(ArchiveError::NoRecipients);
        }
        if !is_safe_name(file_name) {
            return Err(ArchiveError::BadInput(format!(
                "{file_name:?} cannot name an archive file"
            )));
        }
        create_private_dirs(dir)?;
        let path = dir.join(file_name);
        // A leftover temporary file is from an attempt that crashed; it is replaced.
        let (tmp, file) = crate::durable::create_temp(&path, 0o600)
            .map_err(|(path, source)| ArchiveError::Io { path, source })?;
        let one_time = age::x25519::Identity::generate();
        let one_time_recipient = one_time.to_public();
        let all = recipients
            .iter()
            .chain(std::iter::once(&one_time_recipient))
            .map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(all)?;
        let stream = encryptor
            .wrap_output(BufWriter::new(file))
            .map_err(ArchiveError::io(&tmp))?;
        Ok(Self {
            dir: dir.to_owned(),
            path,
            tmp,
            tar: Some(tar::Builder::new(stream)),
            one_time: Some(one_time),
            members: BTreeMap::new(),
            rooms: Vec::new(),
            media: Vec::new(),
            media_seq: HashMap::new(),
            pre_seal: Vec::new(),
            record: Vec::new(),
            advice: Vec::new(),
            audit: None,
            pending: Vec::new(),
            undecryptable: Vec::new(),
            unauthenticated: Vec::new(),
            poisoned: false,
            finished: false,
        })
    }

    /// Adds one attachment's (decrypted) bytes. Returns where it is in the archive.
    pub fn add_media(
        &mut self,
        room_key: &str,
        event_id: &str,
        mxc: &str,
        mimetype: Option<&str>,
        bytes: &[u8],
    ) -> Result<MediaEntry, ArchiveError> {
        room_key_ok(room_key)?;
        let n = self.media_seq.entry(room_key.to_owned()).or_insert(0);
        *n += 1;
        let file = format!("media/{room_key}-{n}.{}", extension(mimetype));
        let (sha256, size) = self.append(&file, bytes)?;
        self.media.push(MediaManifest {
            file: file.clone(),
            sha256: sha256.clone(),
            bytes: size,
            mxc: mxc.to_owned(),
            event_id: event_id.to_owned(),
            room_key: room_key.to_owned(),
        });
        Ok(MediaEntry { file, sha256, size })
    }

    /// Adds a room's transcript (and its rendering). Call after the room's media: a
    /// line's `media.file` must name an attachment added for this room.
    pub fn add_room(&mut self, room: &RoomExport) -> Result<(), ArchiveError> {
        room_key_ok(&room.key)?;
        if self.rooms.iter().any(|r| r.key == room.key) {
            return Err(ArchiveError::BadInput(format!(
                "room {} was added twice",
                room.key
            )));
        }
        for line in &room.lines {
            if line.room_key != room.key {
                return Err(ArchiveError::BadInput(format!(
                    "event {} has room key {:?} but was exported with room {}",
                    line.event_id, line.room_key, room.key
                )));
            }
            let Some(file) = line.media.as_ref().and_then(|m| m.file.as_deref()) else {
                continue;
            };
            let known = self
                .media
                .iter()
                .find(|m| m.file == file && m.room_key == room.key);
            let ok = known.is_some_and(|m| {
                line.media
                    .as_ref()
                    .and_then(|r| r.sha256.as_deref())
                    .is_none_or(|s| s.eq_ignore_ascii_case(&m.sha256))
            });
            if !ok {
                return Err(ArchiveError::BadInput(format!(
                    "event {} refers to {file}, which was not added (with that SHA-256) for room {}",
                    line.event_id, room.key
                )));
            }
        }
        let bytes = segment::encode_lines(&room.lines)
            .map_err(|e| ArchiveError::BadInput(format!("room {}: {e}", room.key)))?;
        let file = format!("rooms/{}.jsonl", room.key);
        let (sha256, size) = self.append(&file, &bytes)?;
        self.rooms.push(RoomManifest {
            key: room.key.clone(),
            room_id: room.room_id.clone(),
            name: room.name.clone(),
            file,
            sha256,
            bytes: size,
            counts: Counts::of(&room.lines),
        });
        self.pending
            .push((self.rooms.len() - 1, render::room_body(&room.lines)));
        self.undecryptable
            .extend(UndecryptableEvent::all(&room.lines));
        self.unauthenticated
            .extend(UnauthenticatedEvent::all(&room.lines));
        Ok(())
    }

    /// Copies a pre-seal segment verbatim; refuses it if its SHA-256 differs from the
    /// one recorded when it was written.
    pub fn add_pre_seal(
        &mut self,
        room_key: &str,
        file_name: &str,
        bytes: &[u8],
        expected_sha256: &str,
        lines: u64,
    ) -> Result<(), ArchiveError> {
        room_key_ok(room_key)?;
        if !is_safe_name(file_name) {
            return Err(ArchiveError::BadInput(format!(
                "{file_name:?} cannot name a pre-seal segment"
            )));
        }
        let found = hex::encode(Sha256::digest(bytes));
        if !found.eq_ignore_ascii_case(expected_sha256.trim()) {
            return Err(ArchiveError::PreSealMismatch {
                file: file_name.to_owned(),
                expected: expected_sha256.to_owned(),
                found,
            });
        }
        let file = format!("pre-seal/{file_name}");
        let (sha256, size) = self.append(&file, bytes)?;
        self.pre_seal.push(PreSealManifest {
            room_key: room_key.to_owned(),
            file,
            sha256,
            bytes: size,
            lines,
        });
        Ok(())
    }

    /// Copies one sealed entry of the command record verbatim, as `record/<file_name>`,
    /// and lists `entry` in the manifest (with its `file` set to that member). Refuses
    /// the bytes if their SHA-256 or size differs from `entry.sha256` and `entry.bytes`
    /// (the ones recorded when the entry was sealed; [`ArchiveError::RecordMismatch`]),
    /// and refuses a second entry of the same kind and number, an entry numbered 0, a
    /// `content_sha256` that is not a SHA-256 and a file name cordon does not write.
    pub fn add_record(
        &mut self,
        mut entry: RecordManifest,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<(), ArchiveError> {
        let label = entry.label();
        if entry.number == 0 {
            return Err(ArchiveError::BadInput(format!(
                "{label} is not an entry of the record (they are numbered from 1)"
            )));
        }
        if self
            .record
            .iter()
            .any(|r| r.kind == entry.kind && r.number == entry.number)
        {
            return Err(ArchiveError::BadInput(format!("{label} was added twice")));
        }
        let copied = self.add_sealed(
            &label,
            &format!("entry {label}"),
            SealedCopy {
                dir: RECORD_DIR,
                file_name,
                bytes,
                sha256: &entry.sha256,
                size: entry.bytes,
                content_sha256: &entry.content_sha256,
            },
        )?;
        (entry.file, entry.sha256, entry.bytes) = copied;
        entry.content_sha256.make_ascii_lowercase();
        self.record.push(entry);
        Ok(())
    }

    /// Copies a file sealed before the stand-down verbatim as `<dir>/<file_name>`,
    /// once its name is one cordon writes, its `content_sha256` is a SHA-256, and its
    /// bytes have the SHA-256 and size recorded when it was sealed
    /// ([`ArchiveError::RecordMismatch`]). `label` names it in errors, `named` after
    /// "the sealed". Returns the member's path, SHA-256 and size.
    fn add_sealed(
        &mut self,
        label: &str,
        named: &str,
        sealed: SealedCopy<'_>,
    ) -> Result<(String, String, u64), ArchiveError> {
        let SealedCopy {
            dir,
            file_name,
            bytes,
            sha256,
            size,
            content_sha256,
        } = sealed;
        if !is_safe_name(file_name) {
            return Err(ArchiveError::BadInput(format!(
                "{file_name:?} cannot name the sealed {named}"
            )));
        }
        if !is_sha256(content_sha256) {
            return Err(ArchiveError::BadInput(format!(
                "{label}: {content_sha256:?} is not the SHA-256 of its content"
            )));
        }
        let found = hex::encode(Sha256::digest(bytes));
        if !found.eq_ignore_ascii_case(sha256.trim()) {
            return Err(ArchiveError::RecordMismatch {
                label: label.to_owned(),
                file: file_name.to_owned(),
                expected: sha256.to_owned(),
                found,
            });
        }
        if size != bytes.len() as u64 {
            return Err(ArchiveError::BadInput(format!(
                "{label}: {file_name} is {} bytes, but {size} were recorded when it was sealed",
                bytes.len()
            )));
        }
        let file = format!("{dir}/{file_name}");
        let (sha256, size) = self.append(&file, bytes)?;
        Ok((file, sha256, size))
    }

    /// Lists one advice item in the manifest and, when it has a sealed copy, copies
    /// that verbatim as `advice/<file_name>` (setting `sealed.file` to that member).
    /// Refuses bytes whose SHA-256 or size differs from the ones recorded when the item
    /// was sealed ([`ArchiveError::RecordMismatch`]), an item listed twice, a
    /// `content_sha256` that is not a SHA-256 and a file name cordon does not write.
    pub fn add_advice(
        &mut self,
        mut item: AdviceManifest,
        sealed: Option<(&str, &[u8])>,
    ) -> Result<(), ArchiveError> {
        let label = format!("advice {}", item.event_id);
        check_room_key(&item.room_key)
            .map_err(|e| ArchiveError::BadInput(format!("{label}: {e}")))?;
        if self.advice.iter().any(|a| a.event_id == item.event_id) {
            return Err(ArchiveError::BadInput(format!("{label} was added twice")));
        }
        match (item.sealed.as_mut(), sealed) {
            (None, None) => {}
            (Some(member), Some((file_name, bytes))) => {
                let copied = self.add_sealed(
                    &label,
                    &label,
                    SealedCopy {
                        dir: ADVICE_DIR,
                        file_name,
                        bytes,
                        sha256: &member.sha256,
                        size: member.bytes,
                        content_sha256: &member.content_sha256,
                    },
                )?;
                (member.file, member.sha256, member.bytes) = copied;
                member.content_sha256.make_ascii_lowercase();
            }
            _ => {
                return Err(ArchiveError::BadInput(format!(
                    "{label}: its sealed copy and its listing disagree"
                )));
            }
        }
        self.advice.push(item);
        Ok(())
    }

    /// Adds the incident's slice of the audit log, one JSON object per line. Without
    /// it, `finish` writes an empty `audit.jsonl`.
    pub fn add_audit(&mut self, entries: &[Value]) -> Result<(), ArchiveError> {
        if self.audit.is_some() {
            return Err(ArchiveError::BadInput(
                "the audit log was added twice".into(),
            ));
        }
        let mut bytes = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry)
                .map_err(|e| ArchiveError::BadInput(format!("audit entry: {e}")))?;
            bytes.push(b'\n');
        }
        let (sha256, _) = self.append(AUDIT_FILE, &bytes)?;
        self.audit = Some(AuditManifest {
            file: AUDIT_FILE.to_owned(),
            sha256,
            entries: entries.len() as u64,
        });
        Ok(())
    }

    /// Writes the renderings, `index.md`, `manifest.json` and `manifest.sig`, finishes
    /// the age stream, fsyncs, renames into place, fsyncs the directory; then re-reads
    /// the file from disk, decrypts it with the one-time identity and checks its
    /// structure, every hash, the counts and the signature against what was written.
    /// Any mismatch is an error, and the file is then moved aside to
    /// `<file_name>.failed-check` so that nothing mistakes it for a good archive.
    pub fn finish(
        mut self,
        header: ArchiveHeader,
        signer: &ArchiveSigner,
    ) -> Result<Sealed, ArchiveError> {
        if self.poisoned {
            return Err(ArchiveError::Poisoned);
        }
        if let Some(tz) = &header.time_zone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(ArchiveError::BadInput(format!(
                "{tz:?} is not an IANA time zone name (like Europe/London)"
            )));
        }
        if self.audit.is_none() {
            self.add_audit(&[])?;
        }
        let mut renderings = Vec::new();
        for (i, body) in std::mem::take(&mut self.pending) {
            let room = &self.rooms[i];
            let file = format!("rooms/{}.md", room.key);
            let mut md = render::room_heading(&RoomHeading {
                incident: &header.incident,
                display_name: &header.display_name,
                room_key: &room.key,
                room_id: &room.room_id,
                room_name: &room.name,
                merged: false,
            });
            md.push_str(&body);
            let (sha256, _) = self.append(&file, md.as_bytes())?;
            renderings.push(FileHash { file, sha256 });
        }
        let mut manifest = Manifest {
            v: MANIFEST_VERSION,
            incident: header.incident,
            display_name: header.display_name,
            playbook: header.playbook,
            commander: header.commander,
            declared_at: header.declared_at,
            expires_at: header.expires_at,
            stood_down_at: header.stood_down_at,
            stood_down_by: header.stood_down_by,
            sealed_at: header.sealed_at,
            server_name: header.server_name,
            time_zone: header.time_zone,
            exercise: header.exercise,
            cordon_version: env!("CARGO_PKG_VERSION").to_owned(),
            signing_key: signer.public().to_string(),
            rooms: std::mem::take(&mut self.rooms),
            media: std::mem::take(&mut self.media),
            pre_seal: std::mem::take(&mut self.pre_seal),
            record: {
                let mut record = std::mem::take(&mut self.record);
                record.sort_by_key(|r| (r.kind, r.number));
                record
            },
            advice: {
                let mut advice = std::mem::take(&mut self.advice);
                advice.sort_by(|a, b| a.sent_at.cmp(&b.sent_at).then(a.event_id.cmp(&b.event_id)));
                advice
            },
            roles: header.roles,
            audit: self.audit.take().ok_or(ArchiveError::Poisoned)?,
            renderings,
        };
        let index = render::index(&manifest, &self.undecryptable, &self.unauthenticated);
        let (sha256, _) = self.append(INDEX_FILE, index.as_bytes())?;
        manifest.renderings.push(FileHash {
            file: INDEX_FILE.to_owned(),
            sha256,
        });
        let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ArchiveError::BadInput(format!("manifest: {e}")))?;
        manifest_bytes.push(b'\n');
        let signature = signer.sign(&manifest_bytes);
        self.append(MANIFEST_FILE, &manifest_bytes)?;
        self.append(SIGNATURE_FILE, signature.as_bytes())?;

        self.seal()?;
        self.finished = true;

        let one_time = self.one_time.take().ok_or(ArchiveError::Poisoned)?;
        let checked = reader::check_sealed(
            &self.path,
            &one_time,
            &signer.public(),
            &manifest,
            &self.members,
        );
        drop(one_time);
        match checked {
            Ok(verified) => {
                tracing::info!(
                    incident = %manifest.incident,
                    sha256 = %verified.file_sha256,
                    bytes = verified.file_size,
                    "archive sealed and checked"
                );
                Ok(Sealed {
                    path: self.path.clone(),
                    sha256: verified.file_sha256,
                    size: verified.file_size,
                    manifest,
                })
            }
            Err(e) => {
                tracing::error!(incident = %manifest.incident, error = %e, "the sealed archive failed its check");
                let aside = self.path.with_file_name(format!(
                    "{}.failed-check",
                    self.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ));
                let _ = fs::rename(&self.path, &aside);
                let _ = sync_dir(&self.dir);
                Err(e)
            }
        }
    }

    /// Ends the tar and age streams, flushes the file, renames it into place.
    fn seal(&mut self) -> Result<(), ArchiveError> {
        let tmp = self.tmp.clone();
        let tar = self.tar.take().ok_or(ArchiveError::Poisoned)?;
        let stream = tar.into_inner().map_err(ArchiveError::io(&tmp))?;
        let buffered = stream.finish().map_err(ArchiveError::io(&tmp))?;
        let file = buffered.into_inner().map_err(|e| ArchiveError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        crate::durable::commit(file, &tmp, &self.path)
            .map_err(|(path, source)| ArchiveError::Io { path, source })
    }

    /// Appends one member (fixed mode, owner and time, so the container is
    /// deterministic); returns its SHA-256 and size.
    fn append(&mut self, name: &str, bytes: &[u8]) -> Result<(String, u64), ArchiveError> {
        if self.poisoned {
            return Err(ArchiveError::Poisoned);
        }
        if self.members.contains_key(name) {
            return Err(ArchiveError::BadInput(format!("{name} was added twice")));
        }
        let tar = self.tar.as_mut().ok_or(ArchiveError::Poisoned)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let size = bytes.len() as u64;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o600);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if let Err(source) = tar.append_data(&mut header, name, bytes) {
            self.poisoned = true;
            return Err(ArchiveError::Io {
                path: self.tmp.clone(),
                source,
            });
        }
        self.members.insert(name.to_owned(), (sha256.clone(), size));
        Ok((sha256, size))
    }
}

impl Drop for ArchiveWriter {
    /// An archive that was not finished leaves nothing behind: its temporary file is
    /// removed.
    fn drop(&mut self) {
        if !self.finished {
            drop(self.tar.take());
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// True for 64 hex digits.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn room_key_ok(room_key: &str) -> Result<(), ArchiveError> {
    check_room_key(room_key).map_err(|e| ArchiveError::BadInput(e.to_string()))
}

/// The file extension for a MIME type (`bin` when unknown).
fn extension(mimetype: Option<&str>) -> &'static str {
    let m = mimetype
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match m.as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/heic" => "heic",
        "image/svg+xml" => "svg",
        "image/tiff" => "tiff",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "application/json" => "json",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/plain" => "txt",
        "text/csv" => "csv",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "video/quicktime" => "mov",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/mp4" => "m4a",
        "audio/wav" | "audio/x-wav" => "wav",
        "audio/webm" => "weba",
        _ => "bin",
    }
}
