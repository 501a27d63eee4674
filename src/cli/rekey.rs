//! `cordon rekey`: a new store passphrase for everything the old one protects
//! ([`cordon::matrix::rekey`]), with the bot stopped.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cordon::input::config::SecretSource;
use cordon::matrix::rekey::{self, Rekeyed};

/// Seals a key file in the state directory again under a new passphrase: `Ok(false)`
/// when the new one opens it already.
type KeyReseal = fn(
    &std::path::Path,
    &cordon::input::config::Secret,
    &cordon::input::config::Secret,
) -> Result<bool, cordon::archive::ArchiveError>;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The bot's config file; its `store_passphrase` is the current passphrase.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A file holding the new passphrase (trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    new_passphrase_file: PathBuf,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config) = super::load_config(&args.config)? else {
        return Ok(ExitCode::from(2));
    };
    let old = config.store_passphrase.read()?;
    let new = SecretSource::File(args.new_passphrase_file.clone())
        .read()
        .context("reading the new passphrase")?;
    anyhow::ensure!(
        old != new,
        "the new passphrase is the one the config already names"
    );
    anyhow::ensure!(
        new.expose().len() >= 20,
        "the new passphrase is shorter than 20 characters: generate a long random one \
         (e.g. `openssl rand -base64 32`)"
    );
    // The bot must be stopped: it holds the lock while it runs.
    let _lock = cordon::matrix::session::StateLock::acquire(&config.state_dir)?;
    let state_dir = &config.state_dir;
    let paths = cordon::matrix::session::SessionPaths::new(state_dir);
    let mut parts: Vec<(String, Rekeyed)> = Vec::new();
    let mut stores: Vec<PathBuf> = match std::fs::read_dir(&paths.sdk_store) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sqlite3"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", paths.sdk_store.display()));
        }
    };
    stores.sort();
    let interrupted = "; run the same command again to finish: the parts done already are \
                       left as they are";
    for store in stores {
        let done = rekey::sqlite_store(&store, &old, &new)
            .with_context(|| format!("re-keying {}{interrupted}", store.display()))?;
        parts.push((store.display().to_string(), done));
    }
    let done = rekey::session_file(&paths.session, &old, &new)
        .with_context(|| format!("re-keying {}{interrupted}", paths.session.display()))?;
    parts.push((paths.session.display().to_string(), done));
    // The key files sealed with the passphrase: the archive signing key, and the FHIR
    // delivery key when there is one.
    let keys: [(PathBuf, KeyReseal); 2] = [
        (
            cordon::archive::signing::signing_key_path(state_dir),
            cordon::archive::ArchiveSigner::reseal,
        ),
        (
            cordon::archive::delivery::key_path(state_dir),
            cordon::archive::delivery::reseal,
        ),
    ];
    for (key, reseal) in keys {
        let done = if key.exists() {
            match reseal(state_dir, &old, &new)
                .with_context(|| format!("re-keying {}{interrupted}", key.display()))?
            {
                true => Rekeyed::Done,
                false => Rekeyed::AlreadyNew,
            }
        } else {
            Rekeyed::Absent
        };
        parts.push((key.display().to_string(), done));
    }
    for (part, done) in &parts {
        let said = match done {
            Rekeyed::Done => "sealed with the new passphrase",
            Rekeyed::AlreadyNew => "already sealed with the new passphrase",
            Rekeyed::Absent => "not there (nothing to do)",
        };
        println!("{part}: {said}");
    }
    println!(
        "done. Now make the config's `store_passphrase` give the new passphrase (replace \
         the file or credential it names), then start cordon; keep the old passphrase \
         until it has started, and for the backups taken before today"
    );
    Ok(ExitCode::SUCCESS)
}
