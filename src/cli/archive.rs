//! `cordon archive`: sealed archives verified and opened (records officers), and the
//! public key that signs them printed.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(super) enum Cmd {
    /// Check a sealed archive: decrypt it with a records officer's identity, check
    /// every member against the manifest's SHA-256s, recount the transcripts and check
    /// the manifest's signature; prints the manifest's summary.
    ///
    /// The archive must be signed by a key you trust: give it with --signer, or list
    /// the keys you trust in a --trust-file; without either, nothing is verified.
    ///
    /// Exits 0 when the archive is intact, 1 when a check fails (not encrypted to the
    /// identity, truncated or damaged, altered, badly signed, signed by a key not
    /// trusted; the error names that key), 2 on other errors (usage, no trusted key,
    /// unreadable files).
    Verify {
        /// The archive, `<incident>.cordon-archive.age`.
        file: PathBuf,
        #[command(flatten)]
        keys: ArchiveKeys,
    },
    /// Verify a sealed archive, then write its files (transcripts, Markdown renderings,
    /// attachments, audit log) into a new directory, with the pre-seal segments
    /// decrypted and merged into `rooms/<key>.merged.jsonl` and `.merged.md`, the
    /// decision log, the debrief, and the clinical advice as a FHIR bundle
    /// (fhir/advice.json).
    ///
    /// Exits like `verify`; nothing is written unless the archive verifies.
    Open {
        /// The archive, `<incident>.cordon-archive.age`.
        file: PathBuf,
        #[command(flatten)]
        keys: ArchiveKeys,
        /// Where to write (must be empty or absent) [default: ./<incident>/]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Verify a sealed archive, then print its debrief report: the timeline, the time
    /// each role took to join, METHANE versions, SITREP compliance, the decision log,
    /// clinical advice and the time to transcribe it, and what was outstanding at
    /// stand-down. Nothing is written to disk (`open` writes the same report as
    /// debrief.md and debrief.json).
    ///
    /// Exits like `verify`.
    Report {
        /// The archive, `<incident>.cordon-archive.age`.
        file: PathBuf,
        #[command(flatten)]
        keys: ArchiveKeys,
        /// Print debrief.json instead of the Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Verify a sealed archive, then print the FHIR R4 bundle of its clinical advice:
    /// a `transaction` Bundle of one `Communication` per advice item (text, author,
    /// time, the patient's NHS number when one was given, who flagged it and who
    /// marked it transcribed), for the electronic patient record or an integration
    /// engine to load. Nothing is written to disk (`open` writes the same bundle as
    /// fhir/advice.json).
    ///
    /// Exits like `verify`.
    Fhir {
        /// The archive, `<incident>.cordon-archive.age`.
        file: PathBuf,
        #[command(flatten)]
        keys: ArchiveKeys,
    },
    /// Print the public key that signs this cordon's archives, for records officers to
    /// pin with `--signer`. Needs no secrets; exits 1 if the bot has not created the key
    /// yet.
    #[command(group(
        clap::ArgGroup::new("where").required(true).args(["config", "state_dir"])
    ))]
    Pubkey {
        /// The bot's config file (its `state_dir` holds the key).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The bot's state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub(super) struct ArchiveKeys {
    /// A records officer's age identity file (as age-keygen writes it); repeat for
    /// several.
    #[arg(short = 'i', long = "identity", value_name = "KEY", required = true)]
    identity: Vec<PathBuf>,
    /// A key the archive may be signed by, as `cordon archive pubkey` prints it on the
    /// cordon server; repeat for several. This or --trust-file is required: the
    /// signature alone proves integrity, not who sealed the archive.
    #[arg(long, value_name = "ed25519:KEY", value_parser = archive_key)]
    signer: Vec<cordon::archive::ArchivePublicKey>,
    /// A file of the signing keys you trust, one `ed25519:KEY label` a line (`#`
    /// comments); see docs/archive-format.md. May be combined with --signer.
    #[arg(long, value_name = "FILE")]
    trust_file: Option<PathBuf>,
}

impl ArchiveKeys {
    /// Every key trusted by --signer and --trust-file.
    fn trusted(&self) -> Result<cordon::archive::TrustedSigners, cordon::archive::ArchiveError> {
        let mut trusted = cordon::archive::TrustedSigners::new();
        for key in &self.signer {
            trusted.pin(*key);
        }
        if let Some(file) = &self.trust_file {
            trusted.add_file(file)?;
        }
        Ok(trusted)
    }
}

/// What `report` and `fhir` print.
#[derive(Debug, Clone, Copy)]
enum Printed {
    /// The debrief's Markdown.
    Debrief,
    /// debrief.json.
    DebriefJson,
    /// The FHIR bundle of the advice.
    Fhir,
}

/// Verifies `file` and prints what it holds as `what`, warnings on stderr.
fn report(
    out: &mut impl Write,
    file: &std::path::Path,
    inputs: Result<
        (Vec<age::x25519::Identity>, cordon::archive::TrustedSigners),
        cordon::archive::ArchiveError,
    >,
    what: Printed,
    fail: impl Fn(cordon::archive::ArchiveError) -> ExitCode,
) -> anyhow::Result<ExitCode> {
    let (ids, trusted) = match inputs {
        Ok(inputs) => inputs,
        Err(e) => return Ok(fail(e)),
    };
    let report = match cordon::archive::report_file(file, &ids, &trusted) {
        Ok(report) => report,
        Err(e) => return Ok(fail(e)),
    };
    match what {
        Printed::Debrief => out.write_all(report.markdown.as_bytes())?,
        Printed::DebriefJson => {
            serde_json::to_writer_pretty(&mut *out, &report.debrief)?;
            writeln!(out)?;
        }
        Printed::Fhir => {
            serde_json::to_writer_pretty(&mut *out, &report.fhir)?;
            writeln!(out)?;
        }
    }
    for warning in &report.warnings {
        eprintln!("warning: {}", shown(warning));
    }
    Ok(ExitCode::SUCCESS)
}

fn archive_key(s: &str) -> Result<cordon::archive::ArchivePublicKey, String> {
    s.parse()
        .map_err(|e: cordon::archive::ArchiveError| e.to_string())
}

pub(super) fn run(command: Cmd) -> anyhow::Result<ExitCode> {
    use cordon::archive::{self, ArchiveError};
    // A failed check exits 1 with what to do; anything else exits 2. A trust file's
    // problems are already `file:line: error: …` lines.
    let fail = |e: ArchiveError| {
        if e.is_check_failure() {
            eprintln!("cordon: error: {e}; {}", e.advice());
            ExitCode::FAILURE
        } else if matches!(e, ArchiveError::TrustFile(_)) {
            eprintln!("{e}");
            ExitCode::from(2)
        } else if matches!(e, ArchiveError::NoTrustedSigner) {
            eprintln!("cordon: error: {e}; {}", e.advice());
            ExitCode::from(2)
        } else {
            eprintln!("cordon: error: {e}");
            ExitCode::from(2)
        }
    };
    // The identities and the trusted signing keys, both read before the archive is.
    let inputs = |keys: &ArchiveKeys| -> Result<
        (Vec<age::x25519::Identity>, archive::TrustedSigners),
        ArchiveError,
    > {
        let trusted = keys.trusted()?;
        if trusted.is_empty() {
            return Err(ArchiveError::NoTrustedSigner);
        }
        let mut all = Vec::new();
        for path in &keys.identity {
            all.extend(archive::read_identities(path)?);
        }
        Ok((all, trusted))
    };
    let mut out = io::stdout().lock();
    match command {
        Cmd::Verify { file, keys } => {
            let (ids, trusted) = match inputs(&keys) {
                Ok(inputs) => inputs,
                Err(e) => return Ok(fail(e)),
            };
            match archive::verify_file(&file, &ids, &trusted) {
                Ok(verified) => {
                    print_verified(&mut out, &file, &verified)?;
                    writeln!(out, "archive OK")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(fail(e)),
            }
        }
        Cmd::Open {
            file,
            keys,
            out: dir,
        } => {
            let (ids, trusted) = match inputs(&keys) {
                Ok(inputs) => inputs,
                Err(e) => return Ok(fail(e)),
            };
            let dir = match dir {
                Some(dir) => dir,
                None => {
                    // The default is named after the incident, so it takes a first
                    // verification to learn it.
                    let verified = match archive::verify_file(&file, &ids, &trusted) {
                        Ok(v) => v,
                        Err(e) => return Ok(fail(e)),
                    };
                    let incident = &verified.manifest.incident;
                    if cordon::domain::incident::IncidentId::parse(incident).is_err() {
                        eprintln!(
                            "cordon: error: the archive's incident id {:?} cannot name a \
                             directory; give --out DIR",
                            shown(incident)
                        );
                        return Ok(ExitCode::from(2));
                    }
                    PathBuf::from(".").join(incident)
                }
            };
            match archive::open_file(&file, &ids, &trusted, &dir) {
                Ok(opened) => {
                    print_verified(&mut out, &file, &opened.verified)?;
                    writeln!(
                        out,
                        "wrote {} files to {}:",
                        opened.written.len(),
                        opened.out.display()
                    )?;
                    for name in &opened.written {
                        writeln!(out, "  {name}")?;
                    }
                    for warning in &opened.warnings {
                        writeln!(out, "warning: {}", shown(warning))?;
                    }
                    writeln!(
                        out,
                        "archive OK; start with {}",
                        opened.out.join("index.md").display()
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(fail(e)),
            }
        }
        Cmd::Report { file, keys, json } => {
            let what = if json {
                Printed::DebriefJson
            } else {
                Printed::Debrief
            };
            report(&mut out, &file, inputs(&keys), what, fail)
        }
        Cmd::Fhir { file, keys } => report(&mut out, &file, inputs(&keys), Printed::Fhir, fail),
        Cmd::Pubkey { config, state_dir } => {
            let state_dir = match (config, state_dir) {
                (_, Some(dir)) => dir,
                (Some(config), None) => {
                    let Some(config) = super::load_config(&config)? else {
                        return Ok(ExitCode::from(2));
                    };
                    config.state_dir
                }
                (None, None) => anyhow::bail!("give --config FILE or --state-dir DIR"),
            };
            match cordon::archive::ArchivePublicKey::of_state_dir(&state_dir) {
                Ok(public) => {
                    writeln!(out, "{public}")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ ArchiveError::NoSigningKey(_)) => {
                    eprintln!("cordon: error: {e}: start the bot once to create it");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("cordon: error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

/// The manifest's summary, as `cordon archive verify` prints it.
fn print_verified(
    out: &mut impl Write,
    file: &std::path::Path,
    v: &cordon::archive::Verified,
) -> io::Result<()> {
    let m = &v.manifest;
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    writeln!(
        out,
        "archive:    {} ({} bytes, sha256 {})",
        file.display(),
        v.file_size,
        v.file_sha256
    )?;
    writeln!(
        out,
        "incident:   {} \"{}\" (playbook {}, commander {})",
        shown(&m.incident),
        shown(&m.display_name),
        shown(&m.playbook),
        shown(&m.commander)
    )?;
    if m.exercise {
        writeln!(out, "EXERCISE:   this was a drill, not a real incident")?;
    }
    writeln!(out, "declared:   {}", time(&m.declared_at))?;
    writeln!(out, "expires:    {}", time(&m.expires_at))?;
    match (&m.stood_down_at, &m.stood_down_by) {
        (Some(at), by) => writeln!(
            out,
            "stood down: {}{}",
            time(at),
            by.as_deref()
                .map(|b| format!(" by {}", shown(b)))
                .unwrap_or_default()
        )?,
        (None, _) => writeln!(out, "stood down: no")?,
    }
    writeln!(
        out,
        "sealed:     {} on {} by cordon {}",
        time(&m.sealed_at),
        shown(&m.server_name),
        shown(&m.cordon_version)
    )?;
    writeln!(out, "rooms:")?;
    for r in &m.rooms {
        let c = &r.counts;
        writeln!(
            out,
            "  {} \"{}\" ({}): {} events, {} messages, {} state, {} edits, {} reactions, \
             {} redacted ({} by retention), {} undecryptable, {} media, {} media missing",
            shown(&r.key),
            shown(&r.name),
            shown(&r.room_id),
            c.events,
            c.messages,
            c.state,
            c.edits,
            c.reactions,
            c.redacted,
            c.retention_removed,
            c.undecryptable,
            c.media,
            c.media_missing
        )?;
        if c.unauthenticated() > 0 {
            writeln!(
                out,
                "    NOT PROVEN TO BE FROM THEIR SENDER: {} unencrypted, {} from an \
                 unverified device, {} under another sender's session (marked in the \
                 transcript and the rendering; listed in index.md)",
                c.unencrypted, c.unverified_device, c.mismatched_sender
            )?;
        }
        writeln!(
            out,
            "    {} {} bytes sha256 {}",
            shown(&r.file),
            r.bytes,
            shown(&r.sha256)
        )?;
    }
    writeln!(
        out,
        "media:      {} file(s); pre-seal segments: {}; audit: {} entries",
        m.media.len(),
        m.pre_seal.len(),
        m.audit.entries
    )?;
    writeln!(
        out,
        "signer:     {} (trusted: {})",
        v.signer,
        shown(&v.trusted_as.to_string())
    )?;
    Ok(())
}

/// Text from an archive, safe to print to a terminal (no control characters).
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}
