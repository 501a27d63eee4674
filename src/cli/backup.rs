//! `cordon backup` and `cordon restore`: the state directory, consistent while the bot
//! runs, encrypted to the operators' age keys ([`cordon::store::backup`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cordon::store::backup;
use cordon::trust::socket::{self, Op, Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The bot's config file (its `state_dir` is what is backed up).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The backup file to write (mode 0600; an existing file is never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// An operator's age public key (`age1…`, from `age-keygen`) to encrypt to; repeat
    /// for several.
    #[arg(short = 'r', long = "recipient", value_name = "AGE_KEY")]
    recipients: Vec<String>,
    /// A file of operators' age public keys, one a line (`#` comments allowed).
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    recipients_files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(super) struct RestoreArgs {
    /// The bot's config file (its `state_dir` is restored into, and must be empty or
    /// absent). The bot must be stopped.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// An operator's age identity file (as `age-keygen` writes it); repeat for several.
    #[arg(short = 'i', long = "identity", value_name = "FILE", required = true)]
    identities: Vec<PathBuf>,
    /// The backup `cordon backup` wrote.
    backup: PathBuf,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config) = super::load_config(&args.config)? else {
        return Ok(ExitCode::from(2));
    };
    let recipients = recipients(&args.recipients, &args.recipients_files)?;
    if recipients.is_empty() {
        anyhow::bail!("{}", backup::BackupError::NoRecipients);
    }
    // The output first: a backup that could not be written should not cost a snapshot.
    let mut out = super::create_new(&args.out)?;
    restrict(&args.out)?;
    let result = (|| {
        let snapshot = super::runtime()?.block_on(take_snapshot(&config.state_dir))?;
        let packed = backup::pack(&snapshot, &recipients, &mut out, &args.out);
        let _ = std::fs::remove_dir_all(&snapshot);
        anyhow::Ok(packed?)
    })();
    match result {
        Ok(files) => {
            let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
            println!(
                "wrote {} ({files} files, {size} bytes), encrypted to {} operator key(s); \
                 restore it with `cordon restore --config FILE -i KEY {}`",
                args.out.display(),
                recipients.len(),
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            drop(out);
            let _ = std::fs::remove_file(&args.out);
            Err(e)
        }
    }
}

pub(super) fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = super::load_config(&args.config)? else {
        return Ok(ExitCode::from(2));
    };
    let mut identities = Vec::new();
    for path in &args.identities {
        identities.extend(cordon::archive::read_identities(path)?);
    }
    let state_dir = &config.state_dir;
    if state_dir.join(socket::SOCKET_FILE).exists() {
        anyhow::bail!(
            "{} has an admin socket: stop cordon before restoring (and restore only into an \
             empty state directory)",
            state_dir.display()
        );
    }
    let restored = backup::unpack(&args.backup, &identities, state_dir)?;
    let store = cordon::store::Store::open_existing(&state_dir.join("store"))?;
    let open = store
        .incidents(&cordon::store::IncidentFilter::open())?
        .len();
    let last = store.audit_head()?.map(|h| h.seq).unwrap_or(0);
    println!(
        "restored {} files into {}: {open} open incident(s), the audit log up to entry \
         {last}. Anything after the backup is unknown to this cordon: read `cordon status \
         --store {}` and docs/operations.md (\"Restore\") before you start it",
        restored.len(),
        state_dir.display(),
        state_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The recipients from `-r` and `-R`.
fn recipients(keys: &[String], files: &[PathBuf]) -> anyhow::Result<Vec<age::x25519::Recipient>> {
    let parse = |text: &str, whence: &str| {
        text.parse::<age::x25519::Recipient>().map_err(|_| {
            anyhow::anyhow!(
                "{whence}: not an age public key (expected age1…, as age-keygen prints)"
            )
        })
    };
    let mut out = Vec::new();
    for key in keys {
        out.push(parse(key.trim(), &format!("-r {key}"))?);
    }
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(parse(line, &format!("{}:{}", file.display(), n + 1))?);
        }
    }
    Ok(out)
}

/// Owner-only, whatever the umask gave.
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} owner-only", path.display()))
}

/// A snapshot of `state_dir`: from the running bot over its admin socket, or, with the
/// bot stopped, taken here under the state directory's lock.
async fn take_snapshot(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = state_dir.join(socket::SOCKET_FILE);
    match tokio::net::UnixStream::connect(&path).await {
        Ok(stream) => ask_bot(stream).await,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let _lock = cordon::matrix::session::StateLock::acquire(state_dir)?;
            let store = cordon::store::Store::open_existing(&state_dir.join("store"))?;
            // Before it is taken: the backup holds the record of its own making.
            store.audit(
                &cordon::trust::cli::operator_name(),
                "backup.snapshot",
                None,
                serde_json::json!({ "bot": "stopped" }),
                chrono::Utc::now(),
            )?;
            Ok(backup::snapshot(&store, state_dir)?.dir)
        }
        Err(e) => Err(e).with_context(|| format!("connecting to {}", path.display())),
    }
}

/// Asks the running bot for a snapshot; its answer is the snapshot's directory.
async fn ask_bot(stream: tokio::net::UnixStream) -> anyhow::Result<PathBuf> {
    let (read, mut write) = stream.into_split();
    let request = Request {
        v: socket::PROTOCOL_VERSION,
        by: cordon::trust::cli::operator_name(),
        op: Op::Snapshot,
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Reply>(&line)? {
            Reply::Done {
                code: 0, message, ..
            } => return Ok(PathBuf::from(message)),
            Reply::Done { message, .. } => anyhow::bail!("the running cordon: {message}"),
            Reply::Progress { message } => {
                let _ = writeln!(std::io::stderr(), "{message}");
            }
            Reply::Emojis { .. } => anyhow::bail!("the running cordon answered out of turn"),
        }
    }
    anyhow::bail!("the running cordon closed the connection without an answer")
}
