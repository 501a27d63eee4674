//! What a records officer runs: [`verify_file`] checks an archive end to end, and
//! [`open_file`] writes it out, with the pre-seal segments decrypted and merged, the
//! command record's entries decrypted into the decision log, and the advice items into
//! the FHIR bundle.
//!
//! Both read the file as a stream: age authenticates every 64 KiB chunk and the end of
//! the stream (so a truncated or altered file fails), tar members are hashed as they
//! pass, and only each room's figures, the manifest and the signature are kept. Every
//! check runs at the end, when the manifest (the last members) has been read:
//! signature first, then that its key is one the records officer trusts
//! ([`TrustedSigners`]; there is no way to verify without one), then the members
//! against the manifest's list and hashes, then the figures recomputed from the
//! transcripts.
//!
//! Opening writes files whose names come from the archive. A signature says who sealed
//! an archive, not that its names are harmless (a signing key can leak), so every name
//! taken from the manifest (room keys included, since the merged transcripts are named
//! after them) is checked before it is used in a path, and `write_new` refuses any
//! path that is not a plain name under the output directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::keyring::{KeySource, TrustedSigners};
use super::manifest::{Counts, Manifest, READABLE_VERSIONS};
use super::merge::merge;
use super::render::{self, RoomHeading};
use super::signing::ArchivePublicKey;
use super::{
    ADVICE_DIR, AUDIT_FILE, ArchiveError, DEBRIEF_FILE, DEBRIEF_RENDERING, FHIR_ADVICE_FILE,
    INDEX_FILE, MANIFEST_FILE, RECORD_DIR, SIGNATURE_FILE, create_private_dirs, is_safe_name,
};
use crate::archive::segment::{self, check_room_key};
use crate::domain::transcript::TranscriptLine;

/// The largest `manifest.json` read (a manifest lists files, so this is generous).
const MANIFEST_LIMIT: u64 = 64 << 20;
/// The largest `manifest.sig` read.
const SIGNATURE_LIMIT: u64 = 4 << 10;

/// What the walk read of each member: path → (SHA-256, size).
type MemberDigests = BTreeMap<String, (String, u64)>;

/// What the manifest says each member is: path → (SHA-256, size), where recorded.
type ExpectedMembers = BTreeMap<String, (Option<String>, Option<u64>)>;

/// A verified archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its manifest, checked against every member.
    pub manifest: Manifest,
    /// The key that signed it (the manifest's `signing_key`).
    pub signer: ArchivePublicKey,
    /// Why that key is trusted: pinned, or a trust file's line and label.
    pub trusted_as: KeySource,
    /// SHA-256 of the archive file, hex.
    pub file_sha256: String,
    /// Its size.
    pub file_size: u64,
}

/// An opened archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// What was verified before anything was written.
    pub verified: Verified,
    /// The output directory.
    pub out: PathBuf,
    /// Every file written, relative to `out`, in the order written.
    pub written: Vec<String>,
    /// Things a reader should know that did not stop the opening (a pre-seal segment
    /// the identities could not decrypt, a line count that differs from the record, a
    /// decision that could not be opened or does not match the manifest's record of
    /// it).
    pub warnings: Vec<String>,
}

/// Decrypts with `identities`, checks structure, hashes, counts recomputed from the
/// transcripts, and the signature, whose key must be one of `trusted`
/// ([`ArchiveError::UntrustedSigner`], naming the key, when it is not;
/// [`ArchiveError::NoTrustedSigner`] when `trusted` is empty).
pub fn verify_file(
    path: &Path,
    identities: &[age::x25519::Identity],
    trusted: &TrustedSigners,
) -> Result<Verified, ArchiveError> {
    let ids = as_dyn(identities);
    verify_with(path, &ids, trusted)
}

/// [`verify_file`], then writes every file into `out` (created 0700; it must be empty
/// or absent), and decrypts each pre-seal segment with the same identities to write
/// `rooms/<key>.merged.jsonl` (see [`super::merge`]) and its rendering
/// `rooms/<key>.merged.md` for every room. Last, it decrypts the command record's
/// entries with the same identities, checks each against the manifest, and writes
/// the decision log, [`super::DECISION_LOG_FILE`] and [`super::DECISION_LOG_RENDERING`]
/// (both always, even when no decision was logged). An entry that cannot be decrypted
/// or does not match the manifest is a warning, and is marked as such in both files.
/// Then the debrief, and the advice items decrypted into the FHIR bundle,
/// [`super::FHIR_ADVICE_FILE`] (always; empty when no advice was flagged).
pub fn open_file(
    path: &Path,
    identities: &[age::x25519::Identity],
    trusted: &TrustedSigners,
    out: &Path,
) -> Result<Opened, ArchiveError> {
    let verified = verify_file(path, identities, trusted)?;
    prepare_out(out)?;
    let ids = as_dyn(identities);
    let expected = expected_members(&verified.manifest)?;
    let mut written = Vec::new();
    // Second pass: the file is read again, so each member is hashed again on its way
    // to disk and compared with the verified manifest (the file could have changed
    // between the passes).
    let walk = walk(path, &ids, |name, data| {
        if !expected.contains_key(name) {
            return Err(ArchiveError::UnexpectedMember(name.to_owned()));
        }
        write_new(out, name, |f| io::copy(data, f).map(drop))?;
        written.push(name.to_owned());
        Ok(())
    })?;
    compare_members(&expected, &walk.members)?;

    let mut warnings = Vec::new();
    let m = &verified.manifest;
    // Every room's membership events, for the debrief.
    let mut exported: Vec<TranscriptLine> = Vec::new();
    let mut room_keys: Vec<&str> = m.rooms.iter().map(|r| r.key.as_str()).collect();
    for p in &m.pre_seal {
        if !room_keys.contains(&p.room_key.as_str()) {
            room_keys.push(&p.room_key);
        }
    }
    for key in room_keys {
        let room = m.rooms.iter().find(|r| r.key == key);
        let export = match room {
            Some(r) => read_lines(&out.join(&r.file), &r.file)?,
            None => Vec::new(),
        };
        let mut sealed = Vec::new();
        for p in m.pre_seal.iter().filter(|p| p.room_key == key) {
            let file = out.join(&p.file);
            match read_pre_seal(&file, &ids) {
                Ok(lines) => {
                    if lines.len() as u64 != p.lines {
                        warnings.push(format!(
                            "{}: holds {} line(s), {} were recorded when it was written",
                            p.file,
                            lines.len(),
                            p.lines
                        ));
                    }
                    sealed.extend(lines);
                }
                Err(e) => warnings.push(format!(
                    "{}: could not be decrypted with the identities given ({e}); its messages are not merged",
                    p.file
                )),
            }
        }
        let merged = merge(&export, &sealed);
        let jsonl = format!("rooms/{key}.merged.jsonl");
        let bytes = segment::encode_lines(&merged)
            .map_err(|e| ArchiveError::BadInput(format!("{jsonl}: {e}")))?;
        write_new(out, &jsonl, |f| f.write_all(&bytes))?;
        written.push(jsonl);
        let md_name = format!("rooms/{key}.merged.md");
        let mut md = render::room_heading(&RoomHeading {
            incident: &m.incident,
            display_name: &m.display_name,
            room_key: key,
            room_id: room.map(|r| r.room_id.as_str()).unwrap_or(""),
            room_name: room.map(|r| r.name.as_str()).unwrap_or(key),
            merged: true,
        });
        md.push_str(&render::room_body(&merged));
        write_new(out, &md_name, |f| f.write_all(md.as_bytes()))?;
        written.push(md_name);
        exported.extend(member_events(export));
    }
    let record = decisions::open_record(m, |r| decrypt_file(&out.join(&r.file), &ids));
    decisions::write_log(m, out, &record, &mut written, &mut warnings)?;
    let audit_path = out.join(AUDIT_FILE);
    let audit = read_audit(
        &mut File::open(&audit_path).map_err(ArchiveError::io(&audit_path))?,
        &mut warnings,
    )?;
    let (debrief, md) = debrief_of(m, &audit, &exported, &record, &mut warnings);
    let json = serde_json::to_vec_pretty(&debrief)
        .map_err(|e| ArchiveError::BadInput(format!("{DEBRIEF_FILE}: {e}")))?;
    write_new(out, DEBRIEF_FILE, |f| f.write_all(&json))?;
    written.push(DEBRIEF_FILE.to_owned());
    write_new(out, DEBRIEF_RENDERING, |f| f.write_all(md.as_bytes()))?;
    written.push(DEBRIEF_RENDERING.to_owned());
    let bundle = advice_bundle(m, |f| decrypt_file(&out.join(f), &ids), &mut warnings);
    let fhir = advice::to_bytes(&bundle)?;
    write_new(out, FHIR_ADVICE_FILE, |f| f.write_all(&fhir))?;
    written.push(FHIR_ADVICE_FILE.to_owned());
    Ok(Opened {
        verified,
        out: out.to_owned(),
        written,
        warnings,
    })
}

/// The debrief of a verified archive, built in memory: nothing is written to disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// What was verified first.
    pub verified: Verified,
    /// The debrief (`debrief.json`'s content).
    pub debrief: super::debrief::Debrief,
    /// Its Markdown rendering (`debrief.md`'s content).
    pub markdown: String,
    /// The FHIR bundle of the incident's advice (`fhir/advice.json`'s content).
    pub fhir: serde_json::Value,
    /// Things a reader should know (an entry of the command record that could not be
    /// opened, say); they are marked in the report too.
    pub warnings: Vec<String>,
}

/// [`verify_file`], then reads the archive again and builds its debrief report in
/// memory (the audit log, the rooms' membership events and the command record,
/// decrypted with the same identities): `cordon archive report`. Each member is hashed
/// again on the way and compared with the verified manifest, as [`open_file`] does.
pub fn report_file(
    path: &Path,
    identities: &[age::x25519::Identity],
    trusted: &TrustedSigners,
) -> Result<Reported, ArchiveError> {
    let verified = verify_file(path, identities, trusted)?;
    let ids = as_dyn(identities);
    let m = &verified.manifest;
    let expected = expected_members(m)?;
    let transcripts: BTreeSet<&str> = m.rooms.iter().map(|r| r.file.as_str()).collect();
    let records: BTreeSet<&str> = m
        .record
        .iter()
        .map(|r| r.file.as_str())
        .chain(
            m.advice
                .iter()
                .filter_map(|a| Some(a.sealed.as_ref()?.file.as_str())),
        )
        .collect();
    let mut audit = Vec::new();
    let mut audit_warnings = Vec::new();
    let mut exported: Vec<TranscriptLine> = Vec::new();
    let mut sealed: HashMap<String, Vec<u8>> = HashMap::new();
    let walk = walk(path, &ids, |name, data| {
        if !expected.contains_key(name) {
            return Err(ArchiveError::UnexpectedMember(name.to_owned()));
        }
        if name == AUDIT_FILE {
            audit = read_audit(data, &mut audit_warnings)?;
        } else if transcripts.contains(name) {
            let lines = segment::decode_lines(BufReader::new(data)).map_err(|e| {
                ArchiveError::Transcript {
                    file: name.to_owned(),
                    line: 0,
                    detail: e.to_string(),
                }
            })?;
            exported.extend(member_events(lines));
        } else if records.contains(name) {
            let mut bytes = Vec::new();
            data.read_to_end(&mut bytes)
                .map_err(ArchiveError::io(Path::new(name)))?;
            sealed.insert(name.to_owned(), bytes);
        } else {
            io::copy(data, &mut io::sink()).map_err(ArchiveError::io(Path::new(name)))?;
        }
        Ok(())
    })?;
    compare_members(&expected, &walk.members)?;
    let record = decisions::open_record(m, |r| match sealed.get(&r.file) {
        Some(bytes) => decrypt_from(bytes.as_slice(), Path::new(&r.file), &ids),
        None => Err(ArchiveError::MissingMember(r.file.clone())),
    });
    let mut warnings: Vec<String> = record
        .iter()
        .filter(|d| !d.problems.is_empty())
        .map(|d| {
            format!(
                "{} ({}): {}",
                d.label(),
                d.record.file,
                d.problems.join("; ")
            )
        })
        .collect();
    warnings.extend(audit_warnings);
    let (debrief, markdown) = debrief_of(m, &audit, &exported, &record, &mut warnings);
    let fhir = advice_bundle(
        m,
        |f| match sealed.get(f) {
            Some(bytes) => decrypt_from(bytes.as_slice(), Path::new(f), &ids),
            None => Err(ArchiveError::MissingMember(f.to_owned())),
        },
        &mut warnings,
    );
    Ok(Reported {
        verified: verified.clone(),
        debrief,
        markdown,
        fhir,
        warnings,
    })
}

/// The FHIR bundle of `m`'s advice: each sealed item opened with `decrypt` (its member's
/// path, `advice/…`, to its plaintext) and checked against the manifest, an item that
/// does not open or match left without text or patient and named in `warnings`. What
/// `open` writes, `report` prints, and the stand-down delivers.
pub fn advice_bundle(
    m: &Manifest,
    decrypt: impl Fn(&str) -> Result<Vec<u8>, ArchiveError>,
    warnings: &mut Vec<String>,
) -> serde_json::Value {
    let opened = advice::open_all(m, decrypt, warnings);
    advice::bundle(m, &opened)
}

/// The debrief of `m` from its audit slice, its rooms' membership events and its
/// opened command record, and its Markdown in the manifest's time zone: what `open`
/// writes and `report` prints.
fn debrief_of(
    m: &Manifest,
    audit: &[super::debrief::AuditLine],
    members: &[TranscriptLine],
    record: &[render::Decision<'_>],
    warnings: &mut Vec<String>,
) -> (super::debrief::Debrief, String) {
    let tz = decisions::time_zone(m, false, warnings);
    let debrief = super::debrief::build(&super::debrief::Sources {
        manifest: m,
        audit,
        transcripts: members,
        record,
    });
    let markdown = render::debrief_rendering(&debrief, tz);
    (debrief, markdown)
}

/// The membership events among a room's transcript lines: all the debrief reads of a
/// transcript, so only they are kept while the rest of the archive is read.
fn member_events(lines: Vec<TranscriptLine>) -> impl Iterator<Item = TranscriptLine> {
    lines
        .into_iter()
        .filter(|l| l.event_type == "m.room.member")
}

/// The identities as the age decryptor takes them.
fn as_dyn(identities: &[age::x25519::Identity]) -> Vec<&dyn age::Identity> {
    identities.iter().map(|i| i as &dyn age::Identity).collect()
}

/// The audit slice's lines (`audit.jsonl`), as the debrief reads them. A line that is
/// not an audit entry is left out of the debrief and named in `warnings` (the file is
/// still the one the manifest's hash covers).
fn read_audit(
    data: &mut dyn Read,
    warnings: &mut Vec<String>,
) -> Result<Vec<super::debrief::AuditLine>, ArchiveError> {
    let mut out = Vec::new();
    for (n, line) in BufReader::new(data).lines().enumerate() {
        let line = line.map_err(ArchiveError::io(Path::new(AUDIT_FILE)))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(entry) => out.push(entry),
            Err(e) => warnings.push(format!(
                "{AUDIT_FILE} line {}: not an audit entry ({e}); the debrief leaves it out",
                n + 1
            )),
        }
    }
    Ok(out)
}

/// `finish`'s check of the file it just wrote: [`verify_file`]'s checks with the
/// one-time identity and the signer's key pinned, and then that the manifest and the
/// members are exactly the ones written.
pub(crate) fn check_sealed(
    path: &Path,
    identity: &age::x25519::Identity,
    signer: &ArchivePublicKey,
    manifest: &Manifest,
    members: &MemberDigests,
) -> Result<Verified, ArchiveError> {
    let ids: [&dyn age::Identity; 1] = [identity];
    let (verified, walked) = verify_walk(path, &ids, &TrustedSigners::pinned(*signer))?;
    if &verified.manifest != manifest {
        return Err(ArchiveError::Tampered {
            file: MANIFEST_FILE.to_owned(),
        });
    }
    for (name, written) in members {
        match walked.get(name) {
            None => return Err(ArchiveError::MissingMember(name.clone())),
            Some(read) if read != written => {
                return Err(ArchiveError::Tampered { file: name.clone() });
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = walked.keys().find(|k| !members.contains_key(*k)) {
        return Err(ArchiveError::UnexpectedMember(extra.clone()));
    }
    Ok(verified)
}

fn verify_with(
    path: &Path,
    ids: &[&dyn age::Identity],
    trusted: &TrustedSigners,
) -> Result<Verified, ArchiveError> {
    verify_walk(path, ids, trusted).map(|(v, _)| v)
}

/// What the verifying pass keeps of a room's transcript.
#[derive(Default)]
struct RoomFacts {
    counts: Counts,
    /// Lines whose `room_key` is not the file's.
    foreign: Option<String>,
    /// `media.file` and `media.sha256` of every attachment line.
    media: Vec<(String, Option<String>, String)>,
}

fn verify_walk(
    path: &Path,
    ids: &[&dyn age::Identity],
    trusted: &TrustedSigners,
) -> Result<(Verified, MemberDigests), ArchiveError> {
    // Refused before anything is decrypted: a verification that cannot say who sealed
    // the archive must not end in "archive OK".
    if trusted.is_empty() {
        return Err(ArchiveError::NoTrustedSigner);
    }
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut sig_bytes: Option<Vec<u8>> = None;
    let mut rooms: HashMap<String, RoomFacts> = HashMap::new();
    let mut audit_entries: Option<u64> = None;
    let walked = walk(path, ids, |name, data| {
        match name {
            MANIFEST_FILE => manifest_bytes = Some(read_limited(data, MANIFEST_LIMIT, name)?),
            SIGNATURE_FILE => sig_bytes = Some(read_limited(data, SIGNATURE_LIMIT, name)?),
            AUDIT_FILE => {
                let mut n = 0;
                for (i, line) in BufReader::new(data).lines().enumerate() {
                    let line = line.map_err(ArchiveError::io(name))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    serde_json::from_str::<serde_json::Value>(&line).map_err(|e| {
                        ArchiveError::Transcript {
                            file: name.to_owned(),
                            line: i + 1,
                            detail: e.to_string(),
                        }
                    })?;
                    n += 1;
                }
                audit_entries = Some(n);
            }
            _ if name.starts_with("rooms/") && name.ends_with(".jsonl") => {
                let key = &name["rooms/".len()..name.len() - ".jsonl".len()];
                let mut facts = RoomFacts::default();
                for (i, line) in BufReader::new(data).lines().enumerate() {
                    let line = line.map_err(ArchiveError::io(name))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let l: TranscriptLine =
                        serde_json::from_str(&line).map_err(|e| ArchiveError::Transcript {
                            file: name.to_owned(),
                            line: i + 1,
                            detail: e.to_string(),
                        })?;
                    facts.counts.add(&l);
                    if l.room_key != key && facts.foreign.is_none() {
                        facts.foreign = Some(l.event_id.clone());
                    }
                    if let Some(file) = l.media.as_ref().and_then(|m| m.file.clone()) {
                        let sha = l.media.as_ref().and_then(|m| m.sha256.clone());
                        facts.media.push((file, sha, l.event_id.clone()));
                    }
                }
                rooms.insert(name.to_owned(), facts);
            }
            _ => {}
        }
        Ok(())
    })?;

    let manifest_bytes =
        manifest_bytes.ok_or_else(|| ArchiveError::MissingMember(MANIFEST_FILE.into()))?;
    let sig_bytes = sig_bytes.ok_or_else(|| ArchiveError::MissingMember(SIGNATURE_FILE.into()))?;
    let bad_manifest = |detail: String| ArchiveError::BadManifest {
        file: MANIFEST_FILE.to_owned(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad_manifest(e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if READABLE_VERSIONS.iter().any(|r| u64::from(*r) == v) => {}
        Some(v) => {
            return Err(ArchiveError::UnsupportedVersion(
                u32::try_from(v).unwrap_or(u32::MAX),
            ));
        }
        None => return Err(bad_manifest("no format version `v`".into())),
    }
    let manifest: Manifest =
        serde_json::from_value(value).map_err(|e| bad_manifest(e.to_string()))?;
    let signer: ArchivePublicKey = manifest
        .signing_key
        .parse()
        .map_err(|e: ArchiveError| bad_manifest(e.to_string()))?;
    signer.verify(&manifest_bytes, &sig_bytes)?;
    let trusted_as = trusted
        .find(&signer)
        .map(|k| k.source.clone())
        .ok_or_else(|| ArchiveError::UntrustedSigner {
            trusted: trusted.describe(),
            found: signer.to_string(),
        })?;

    let expected = expected_members(&manifest)?;
    compare_members(&expected, &walked.members)?;

    for room in &manifest.rooms {
        let facts = rooms
            .get(&room.file)
            .ok_or_else(|| ArchiveError::MissingMember(room.file.clone()))?;
        if let Some(detail) = room.counts.first_difference(&facts.counts) {
            return Err(ArchiveError::Inconsistent {
                file: room.file.clone(),
                detail,
            });
        }
        if let Some(event) = &facts.foreign {
            return Err(ArchiveError::Inconsistent {
                file: room.file.clone(),
                detail: format!("event {event} belongs to another room"),
            });
        }
        for (file, sha, event) in &facts.media {
            let listed = manifest
                .media
                .iter()
                .find(|m| &m.file == file && m.room_key == room.key);
            let ok = listed.is_some_and(|m| {
                sha.as_deref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(&m.sha256))
            });
            if !ok {
                return Err(ArchiveError::Inconsistent {
                    file: room.file.clone(),
                    detail: format!(
                        "event {event}'s attachment {file} is not listed with that SHA-256"
                    ),
                });
            }
        }
    }
    match audit_entries {
        Some(n) if n == manifest.audit.entries => {}
        Some(n) => {
            return Err(ArchiveError::Inconsistent {
                file: manifest.audit.file.clone(),
                detail: format!(
                    "entries: manifest says {}, the file has {n}",
                    manifest.audit.entries
                ),
            });
        }
        None => return Err(ArchiveError::MissingMember(AUDIT_FILE.into())),
    }
    let verified = Verified {
        manifest,
        signer,
        trusted_as,
        file_sha256: walked.file_sha256,
        file_size: walked.file_size,
    };
    Ok((verified, walked.members))
}

/// Every member the manifest says the archive holds: path → (SHA-256, size if
/// recorded). Also checks the manifest's own structure.
fn expected_members(m: &Manifest) -> Result<ExpectedMembers, ArchiveError> {
    let bad = |detail: String| ArchiveError::BadManifest {
        file: MANIFEST_FILE.to_owned(),
        detail,
    };
    let mut out: ExpectedMembers = BTreeMap::new();
    let mut add = |file: &str, sha: Option<&str>, bytes: Option<u64>| {
        if classify(file) != Member::Known {
            return Err(bad(format!(
                "lists {file:?}, which is not a member name cordon writes"
            )));
        }
        match out.insert(file.to_owned(), (sha.map(str::to_ascii_lowercase), bytes)) {
            None => Ok(()),
            Some(_) => Err(bad(format!("lists {file} twice"))),
        }
    };
    // Room keys name files when the archive is opened (`rooms/<key>.merged.jsonl`):
    // every one, wherever the manifest gives it, must be a room key cordon writes.
    let room_key = |what: &str, key: &str| {
        check_room_key(key).map_err(|_| {
            bad(format!(
                "{what} has the room key {key:?}, which is not one cordon writes \
                 (a-z, 0-9, `-`, `_`)"
            ))
        })
    };
    add(MANIFEST_FILE, None, None)?;
    add(SIGNATURE_FILE, None, None)?;
    let mut room_keys = BTreeSet::new();
    for r in &m.rooms {
        room_key("a room", &r.key)?;
        if r.file != format!("rooms/{}.jsonl", r.key) || !room_keys.insert(r.key.as_str()) {
            return Err(bad(format!("room {:?} has file {:?}", r.key, r.file)));
        }
        add(&r.file, Some(&r.sha256), Some(r.bytes))?;
    }
    for media in &m.media {
        room_key(&format!("attachment {:?}", media.file), &media.room_key)?;
        if !media.file.starts_with("media/") {
            return Err(bad(format!(
                "media file {:?} is not under media/",
                media.file
            )));
        }
        add(&media.file, Some(&media.sha256), Some(media.bytes))?;
    }
    for p in &m.pre_seal {
        room_key(&format!("pre-seal segment {:?}", p.file), &p.room_key)?;
        if !p.file.starts_with("pre-seal/") {
            return Err(bad(format!(
                "pre-seal file {:?} is not under pre-seal/",
                p.file
            )));
        }
        add(&p.file, Some(&p.sha256), Some(p.bytes))?;
    }
    if m.audit.file != AUDIT_FILE {
        return Err(bad(format!(
            "the audit log is {:?}, not {AUDIT_FILE}",
            m.audit.file
        )));
    }
    let mut entries = BTreeSet::new();
    for r in &m.record {
        let label = r.label();
        let named = r
            .file
            .strip_prefix(RECORD_DIR)
            .and_then(|f| f.strip_prefix('/'))
            .is_some_and(is_safe_name);
        if !named {
            return Err(bad(format!(
                "{label}'s sealed entry {:?} is not under {RECORD_DIR}/",
                r.file
            )));
        }
        if !entries.insert((r.kind, r.number)) {
            return Err(bad(format!("lists {label} twice")));
        }
        add(&r.file, Some(&r.sha256), Some(r.bytes))?;
    }
    let mut advised = BTreeSet::new();
    for a in &m.advice {
        room_key(&format!("advice {:?}", a.event_id), &a.room_key)?;
        if !advised.insert(a.event_id.as_str()) {
            return Err(bad(format!("lists the advice {} twice", a.event_id)));
        }
        if let Some(s) = &a.sealed {
            let named = s
                .file
                .strip_prefix(ADVICE_DIR)
                .and_then(|f| f.strip_prefix('/'))
                .is_some_and(is_safe_name);
            if !named {
                return Err(bad(format!(
                    "the advice {}'s sealed copy {:?} is not under {ADVICE_DIR}/",
                    a.event_id, s.file
                )));
            }
            add(&s.file, Some(&s.sha256), Some(s.bytes))?;
        }
    }
    add(&m.audit.file, Some(&m.audit.sha256), None)?;
    for r in &m.renderings {
        add(&r.file, Some(&r.sha256), None)?;
    }
    let rendered: BTreeSet<&str> = m.renderings.iter().map(|r| r.file.as_str()).collect();
    for needed in m
        .rooms
        .iter()
        .map(|r| format!("rooms/{}.md", r.key))
        .chain(std::iter::once(INDEX_FILE.to_owned()))
    {
        if !rendered.contains(needed.as_str()) {
            return Err(bad(format!("does not list the rendering {needed}")));
        }
    }
    Ok(out)
}

/// Every member read must be listed, every listed member read, with its hash.
fn compare_members(
    expected: &BTreeMap<String, (Option<String>, Option<u64>)>,
    read: &MemberDigests,
) -> Result<(), ArchiveError> {
    if let Some(extra) = read.keys().find(|k| !expected.contains_key(*k)) {
        return Err(ArchiveError::UnexpectedMember(extra.clone()));
    }
    for (name, (sha, bytes)) in expected {
        let Some((read_sha, read_bytes)) = read.get(name) else {
            return Err(ArchiveError::MissingMember(name.clone()));
        };
        let sha_ok = sha.as_ref().is_none_or(|s| s == read_sha);
        let size_ok = bytes.is_none_or(|b| b == *read_bytes);
        if !sha_ok || !size_ok {
            return Err(ArchiveError::Tampered { file: name.clone() });
        }
    }
    Ok(())
}

mod advice;
mod decisions;
mod stream;

use stream::{Failure, Member, classify, decrypt_error, read_limited, walk};

/// Decrypts a pre-seal segment (written out by `open_file`) with the identities.
fn read_pre_seal(
    path: &Path,
    ids: &[&dyn age::Identity],
) -> Result<Vec<TranscriptLine>, ArchiveError> {
    let plaintext = decrypt_file(path, ids)?;
    segment::decode_lines(plaintext.as_slice()).map_err(|e| ArchiveError::Transcript {
        file: path.display().to_string(),
        line: 0,
        detail: e.to_string(),
    })
}

/// Decrypts a file that is still encrypted to the records officers (a pre-seal segment
/// or a sealed entry, written out by `open_file`) with the identities.
fn decrypt_file(path: &Path, ids: &[&dyn age::Identity]) -> Result<Vec<u8>, ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    decrypt_from(file, path, ids)
}

/// Decrypts `source` (named `path` in errors) with the identities.
fn decrypt_from(
    source: impl Read,
    path: &Path,
    ids: &[&dyn age::Identity],
) -> Result<Vec<u8>, ArchiveError> {
    let decryptor =
        age::Decryptor::new_buffered(BufReader::new(source)).map_err(|e| decrypt_error(e, path))?;
    let mut plaintext = Vec::new();
    decryptor
        .decrypt(ids.iter().copied())
        .map_err(|e| decrypt_error(e, path))?
        .read_to_end(&mut plaintext)
        .map_err(|e| {
            Failure {
                kind: e.kind(),
                message: e.to_string(),
            }
            .into_error(path)
        })?;
    Ok(plaintext)
}

fn read_lines(path: &Path, name: &str) -> Result<Vec<TranscriptLine>, ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    segment::decode_lines(BufReader::new(file)).map_err(|e| ArchiveError::Transcript {
        file: name.to_owned(),
        line: 0,
        detail: e.to_string(),
    })
}

/// `out` must be absent (it is created 0700) or an empty directory.
fn prepare_out(out: &Path) -> Result<(), ArchiveError> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ArchiveError::OutputNotEmpty(out.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_private_dirs(out),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(ArchiveError::OutputNotEmpty(out.to_owned()))
        }
        Err(source) => Err(ArchiveError::Io {
            path: out.to_owned(),
            source,
        }),
    }
}

/// Creates `out/<name>` (never replacing a file; owner-only) and fills it. `name` must
/// be a relative path of plain names ([`is_safe_name`], so no `..`, no root, no
/// hidden files) at most two deep: whatever a manifest says, nothing is written
/// outside `out`.
fn write_new(
    out: &Path,
    name: &str,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), ArchiveError> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| is_safe_name(p)) {
        return Err(ArchiveError::UnsafePath(name.to_owned()));
    }
    let path = out.join(name);
    if let Some(parent) = path.parent() {
        create_private_dirs(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(ArchiveError::io(&path))?;
    fill(&mut file).map_err(ArchiveError::io(&path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
