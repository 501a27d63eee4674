//! The checks on this host: the secrets, the state and archive directories, the
//! playbooks, the metrics address and the free disk space.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access::{ServiceUser, Want, describe_meta};
use super::{Check, MinFree, Report, human_bytes};
use crate::input::config::{Config, Secret, SecretSource};
use crate::input::diagnostic::Diagnostic;

/// The secrets that could be read, for the homeserver checks.
#[derive(Debug, Default)]
pub struct Secrets {
    /// The bot's password.
    pub password: Option<Secret>,
    /// The store passphrase (which opens the saved session's token).
    pub store_passphrase: Option<Secret>,
}

/// Who may read a secret file, as docs/deploy.md sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    /// Owned by the service user, mode 0600: the password and the store passphrase.
    OwnerOnly,
    /// Shared with Synapse through a group, never with others: the prevention secret.
    Group,
}

/// Checks each secret the config names: readable, and (a file) owned and moded as the
/// deploy guide says.
pub fn secrets(
    config: &Config,
    user: &ServiceUser,
    report: &mut Report<'_>,
) -> io::Result<Secrets> {
    let password = secret(
        config,
        user,
        "password",
        &config.password,
        Sharing::OwnerOnly,
        report,
    )?;
    let store_passphrase = secret(
        config,
        user,
        "store_passphrase",
        &config.store_passphrase,
        Sharing::OwnerOnly,
        report,
    )?;
    if let Some(p) = &config.prevention {
        secret(
            config,
            user,
            "prevention.secret",
            &p.secret,
            Sharing::Group,
            report,
        )?;
    }
    Ok(Secrets {
        password,
        store_passphrase,
    })
}

fn secret(
    config: &Config,
    user: &ServiceUser,
    name: &str,
    source: &SecretSource,
    sharing: Sharing,
    report: &mut Report<'_>,
) -> io::Result<Option<Secret>> {
    let value = match source.read() {
        Ok(v) => v,
        Err(e) => {
            let fix = match source {
                SecretSource::Env(var) => format!(
                    "set {var} in the environment doctor runs in (the service's environment \
                     is not this shell's), or name a file in `{name}` of {}",
                    config.path.display()
                ),
                SecretSource::File(path) => format!(
                    "write the secret into {} (docs/deploy.md, step 4), or correct `{name}` \
                     in {}",
                    path.display(),
                    config.path.display()
                ),
                SecretSource::Credential(_) => {
                    "run doctor with the service's credentials, as the message says".to_owned()
                }
            };
            report.add(Check::fail(name, e.to_string(), fix))?;
            return Ok(None);
        }
    };
    let path = match source {
        SecretSource::Env(var) => {
            report.add(Check::pass(
                name,
                format!("environment variable {var} is set"),
            ))?;
            return Ok(Some(value));
        }
        SecretSource::Credential(credential) => {
            report.add(Check::pass(
                name,
                format!("systemd credential `{credential}` is readable"),
            ))?;
            return Ok(Some(value));
        }
        SecretSource::File(path) => path,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            report.add(Check::fail(
                name,
                format!("{}: {e}", path.display()),
                "run doctor again (the file changed while it was read)",
            ))?;
            return Ok(Some(value));
        }
    };
    let shown = describe_meta(&meta);
    let owner = user.name.clone().unwrap_or_else(|| user.uid.to_string());
    if let Err(why) = user.may(path, Want::Read) {
        let fix = match sharing {
            Sharing::OwnerOnly => {
                format!("chown {owner}: {p} && chmod 0600 {p}", p = path.display())
            }
            Sharing::Group => format!(
                "put it in a group {owner} and Synapse share, mode 0640 (docs/deploy.md, \
                 \"Prevention\"): chgrp GROUP {p} && chmod 0640 {p}",
                p = path.display()
            ),
        };
        report.add(Check::fail(name, why, fix))?;
        return Ok(Some(value));
    }
    let problem = match sharing {
        Sharing::OwnerOnly if meta.uid() != user.uid => Some((
            format!(
                "{} is owned by someone other than {} ({shown})",
                path.display(),
                user.label()
            ),
            format!("chown {owner}: {p} && chmod 0600 {p}", p = path.display()),
        )),
        Sharing::OwnerOnly if meta.mode() & 0o077 != 0 => Some((
            format!(
                "{} is readable by group or others ({shown})",
                path.display()
            ),
            format!("chmod 0600 {}", path.display()),
        )),
        Sharing::Group if meta.mode() & 0o007 != 0 => Some((
            format!("{} is readable by others ({shown})", path.display()),
            format!("chmod 0640 {}", path.display()),
        )),
        _ => None,
    };
    match problem {
        Some((detail, fix)) => report.add(Check::fail(name, detail, fix))?,
        None => report.add(Check::pass(name, format!("{} ({shown})", path.display())))?,
    };
    Ok(Some(value))
}

/// Checks the state and archive directories: writable by the service user, or
/// creatable by it at the first start.
pub fn directories(config: &Config, user: &ServiceUser, report: &mut Report<'_>) -> io::Result<()> {
    directory(config, user, "state_dir", &config.state_dir, true, report)?;
    directory(
        config,
        user,
        "archive_dir",
        &config.archive_dir,
        false,
        report,
    )?;
    Ok(())
}

fn directory(
    config: &Config,
    user: &ServiceUser,
    name: &str,
    dir: &Path,
    private: bool,
    report: &mut Report<'_>,
) -> io::Result<()> {
    let owner = user.name.clone().unwrap_or_else(|| user.uid.to_string());
    let create = format!("install -d -o {owner} -g {owner} -m 0700 {}", dir.display());
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            report.add(Check::fail(
                name,
                format!("{} is not a directory", dir.display()),
                format!(
                    "move it aside, or correct `{name}` in {}",
                    config.path.display()
                ),
            ))?;
        }
        Ok(meta) => match user.may(dir, Want::Write) {
            Err(why) => {
                report.add(Check::fail(
                    name,
                    why,
                    format!("chown {owner}: {d} && chmod 0700 {d}", d = dir.display()),
                ))?;
            }
            Ok(()) if private && meta.mode() & 0o077 != 0 => {
                report.add(Check::warn(
                    name,
                    format!(
                        "{} is open to group or others ({}): it holds cordon's session and keys",
                        dir.display(),
                        describe_meta(&meta)
                    ),
                    format!("chmod 0700 {}", dir.display()),
                ))?;
            }
            Ok(()) => {
                report.add(Check::pass(
                    name,
                    format!(
                        "{} is writable by {} ({})",
                        dir.display(),
                        user.label(),
                        describe_meta(&meta)
                    ),
                ))?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = existing_ancestor(dir);
            match user.may(&parent, Want::Write) {
                Ok(()) => {
                    report.add(Check::pass(
                        name,
                        format!(
                            "{} does not exist yet; cordon creates it at its first start ({} \
                             may write in {})",
                            dir.display(),
                            user.label(),
                            parent.display()
                        ),
                    ))?;
                }
                Err(why) => {
                    report.add(Check::fail(
                        name,
                        format!(
                            "{} does not exist, and cordon cannot create it: {why}",
                            dir.display()
                        ),
                        create,
                    ))?;
                }
            }
        }
        Err(e) => {
            report.add(Check::fail(name, format!("{}: {e}", dir.display()), create))?;
        }
    }
    Ok(())
}

/// `dir`, or the nearest of its ancestors that exists.
fn existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| a.exists())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// The playbooks in `dir` that are broken now, each with its diagnostics, in file
/// order: the same checks as `cordon check`. A problem with the directory itself (it
/// does not exist, it holds no playbook) comes under the directory's own path.
pub fn broken_playbooks(dir: &Path) -> BTreeMap<PathBuf, Vec<Diagnostic>> {
    by_file(crate::input::playbook::check::run(&[dir.to_path_buf()]).diagnostics())
}

/// Logs a warning for each playbook in `dir` that is broken now (its file and first
/// problems), so that an operator hears of it before a commander's declare is refused.
/// `cordon run` calls this at start.
pub fn warn_broken_playbooks(dir: &Path) {
    for (file, diagnostics) in broken_playbooks(dir) {
        let first: Vec<String> = diagnostics
            .iter()
            .take(3)
            .map(|d| d.to_string().lines().next().unwrap_or_default().to_owned())
            .collect();
        tracing::warn!(
            file = %file.display(),
            problems = diagnostics.len(),
            first = %first.join("; "),
            "a playbook is broken: a declare of it will be refused until it is corrected \
             (`cordon check` or `cordon doctor` shows every problem)"
        );
    }
}

/// `diagnostics` grouped by file.
fn by_file(diagnostics: &[Diagnostic]) -> BTreeMap<PathBuf, Vec<Diagnostic>> {
    let mut files: BTreeMap<PathBuf, Vec<Diagnostic>> = BTreeMap::new();
    for d in diagnostics {
        files.entry(d.file.clone()).or_default().push(d.clone());
    }
    files
}

/// Checks every playbook in `playbooks_dir`: valid, and readable by the service user.
pub fn playbooks(config: &Config, user: &ServiceUser, report: &mut Report<'_>) -> io::Result<()> {
    let dir = &config.playbooks_dir;
    let checked = crate::input::playbook::check::run(std::slice::from_ref(dir));
    let broken = by_file(checked.diagnostics());
    let mut failed = false;
    for (file, diagnostics) in &broken {
        failed = true;
        let lines = diagnostics.iter().map(ToString::to_string).collect();
        let (name, fix) = if file == dir {
            (
                "playbooks_dir".to_owned(),
                format!(
                    "put the planners' playbooks in {} (docs/deploy.md, \"Playbooks\"), or \
                     correct `playbooks_dir` in {}",
                    dir.display(),
                    config.path.display()
                ),
            )
        } else {
            (
                format!("playbook {}", file.display()),
                format!(
                    "correct it (`cordon check {}` shows the same): a declare of it is \
                     refused until then",
                    file.display()
                ),
            )
        };
        report.add(
            Check::fail(name, format!("{} problem(s)", diagnostics.len()), fix).with_lines(lines),
        )?;
    }
    let group = user
        .groups
        .first()
        .map_or_else(|| "GROUP".to_owned(), |g| super::access::group_name(*g));
    if dir.is_dir()
        && let Err(why) = user.may(dir, Want::Read)
    {
        failed = true;
        report.add(Check::fail(
            "playbooks_dir",
            why,
            format!("chgrp {group} {d} && chmod 0750 {d}", d = dir.display()),
        ))?;
    }
    let (files, _) = crate::input::playbook::discover(std::slice::from_ref(dir));
    for file in files.iter().filter(|f| !broken.contains_key(*f)) {
        if let Err(why) = user.may(file, Want::Read) {
            failed = true;
            report.add(Check::fail(
                format!("playbook {}", file.display()),
                why,
                format!(
                    "let {} read it: chgrp {group} {f} && chmod 0640 {f} (or chmod 0644 {f})",
                    user.label(),
                    f = file.display()
                ),
            ))?;
        }
    }
    if !failed {
        let ids: Vec<&str> = checked.playbooks().iter().map(|p| p.id.as_str()).collect();
        report.add(Check::pass(
            "playbooks",
            format!(
                "{} valid in {}, readable by {}: {}",
                ids.len(),
                dir.display(),
                user.label(),
                ids.join(", ")
            ),
        ))?;
    }
    Ok(())
}

/// Checks the metrics address: free, or in use by the running cordon.
pub async fn metrics(config: &Config, report: &mut Report<'_>) -> io::Result<()> {
    let Some(addr) = config.metrics_listen else {
        report.add(Check::pass("metrics", "off (metrics.enabled: false)"))?;
        return Ok(());
    };
    let fix_listen = format!(
        "set `metrics.listen` in {} to a free address",
        config.path.display()
    );
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            report.add(Check::pass("metrics", format!("{addr} is free")))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => match healthz(addr).await {
            Some(status) => {
                report.add(Check::pass(
                    "metrics",
                    format!("{addr} is in use by the running cordon (/healthz: {status})"),
                ))?;
            }
            None => {
                report.add(Check::fail(
                    "metrics",
                    format!("{addr} is in use by another program (it does not answer as cordon's /healthz)"),
                    format!("stop that program, or {fix_listen}"),
                ))?;
            }
        },
        Err(e) => {
            report.add(Check::fail(
                "metrics",
                format!("cannot listen on {addr}: {e}"),
                fix_listen,
            ))?;
        }
    }
    Ok(())
}

/// The `status` of cordon's `/healthz` at `addr`, when a cordon answers there.
async fn healthz(addr: std::net::SocketAddr) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .ok()?;
    let answer = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = answer.json().await.ok()?;
    body.get("status")?.as_str().map(str::to_owned)
}

/// Checks the free space on the file systems of the state and archive directories.
pub fn disk(config: &Config, min_free: MinFree, report: &mut Report<'_>) -> io::Result<()> {
    let mut seen = Vec::new();
    for dir in [&config.state_dir, &config.archive_dir] {
        let on = existing_ancestor(dir);
        let Ok(meta) = std::fs::metadata(&on) else {
            continue;
        };
        if seen.contains(&meta.dev()) {
            continue;
        }
        seen.push(meta.dev());
        let stats = match rustix::fs::statvfs(&on) {
            Ok(s) => s,
            Err(e) => {
                report.add(Check::fail(
                    "disk",
                    format!(
                        "cannot read the free space of {}: {}",
                        on.display(),
                        io::Error::from(e)
                    ),
                    "check the file system",
                ))?;
                continue;
            }
        };
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        let size = stats.f_blocks.saturating_mul(stats.f_frsize);
        let wanted = match min_free {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => size / 100 * u64::from(p),
        };
        let detail = format!(
            "{} free of {} on the file system of {} (at least {min_free} wanted)",
            human_bytes(free),
            human_bytes(size),
            dir.display()
        );
        if free >= wanted {
            report.add(Check::pass("disk", detail))?;
        } else {
            report.add(Check::fail(
                "disk",
                detail,
                "free space there: the store and the sealed archives grow with every \
                 incident, and cordon stops when its store cannot be written",
            ))?;
        }
    }
    Ok(())
}
