//! The Synapse virtualenv: found, checked, or built once per machine.
//!
//! The venv lives in `$CORDON_SYNAPSE_VENV` if set, else in
//! `${XDG_CACHE_HOME:-$HOME/.cache}/cordon/synapse-1.163`, and survives between runs. It
//! is reused when its interpreter imports Synapse at a 1.163.x version, with PostgreSQL's
//! and Redis's drivers; otherwise it is rebuilt. A build happens in a unique directory
//! beside the target and is renamed into place, so a half-built venv is never visible; a
//! lock file beside it keeps parallel processes from building at the same time, and if
//! two builds still race, the loser discards its copy. Synapse is always started as `VENV/bin/python -m ...`: the venv's
//! console scripts carry the build directory in their shebangs, which a rename breaks,
//! while the interpreter symlink survives it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{HarnessError, tail, unique_name};

/// The Synapse requirement pip installs, with Redis for replication between workers.
pub const SYNAPSE_REQUIREMENT: &str = "matrix-synapse[redis]==1.163.*";

/// PostgreSQL's driver. Synapse's own `postgres` extra asks for `psycopg2`, which pip
/// builds from source against the distribution's libpq headers; the binary wheel is
/// the same module, built, and is what Synapse imports.
pub const POSTGRES_DRIVER: &str = "psycopg2-binary==2.9.*";

/// What a usable venv imports beside Synapse (the postgres-workers form's drivers).
const EXTRA_IMPORTS: &str = "import psycopg2, txredisapi, hiredis";

/// The version prefix a usable venv must report.
const VERSION_PREFIX: &str = "1.163.";

/// The venv directory name under the cache directory.
const VENV_NAME: &str = "synapse-1.163";

/// Bounds on each step, so a broken machine fails instead of hanging.
const VENV_TIMEOUT: Duration = Duration::from_secs(120);
const PIP_TIMEOUT: Duration = Duration::from_secs(600);
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for another process that holds the build lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(720);

/// Where the venv lives (it may not exist yet).
pub fn venv_dir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("CORDON_SYNAPSE_VENV").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .ok_or(HarnessError::NoCacheDir)?;
            PathBuf::from(home).join(".cache")
        }
    };
    Ok(cache.join("cordon").join(VENV_NAME))
}

/// The interpreter inside a venv; always run Synapse through it.
pub fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Makes sure a usable venv exists and returns its interpreter.
///
/// Fast when the venv is already there (one version check per process); otherwise builds
/// it, which takes up to a minute or two and needs network access to PyPI.
pub async fn ensure_installed() -> Result<PathBuf, HarnessError> {
    static KNOWN_GOOD: OnceLock<PathBuf> = OnceLock::new();
    let venv = venv_dir()?;
    let python = venv_python(&venv);
    if KNOWN_GOOD.get() == Some(&python) {
        return Ok(python);
    }
    if check_venv(&venv).await.is_ok() {
        let _ = KNOWN_GOOD.set(python.clone());
        return Ok(python);
    }

    let parent = venv
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent)
        .map_err(|e| HarnessError::io(format!("creating {}", parent.display()), e))?;
    let file_name = venv
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| VENV_NAME.to_owned());
    let _lock = BuildLock::acquire(&parent.join(format!(".{file_name}.lock"))).await?;

    // Another process may have finished a build while we waited for the lock.
    if check_venv(&venv).await.is_ok() {
        let _ = KNOWN_GOOD.set(python.clone());
        return Ok(python);
    }

    let build = parent.join(format!(".{}", unique_name(&format!("{file_name}.build"))));
    let started = Instant::now();
    tracing::info!(venv = %venv.display(), "installing Synapse (once per machine)");
    let result = build_venv(&build).await;
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&build);
        return Err(e);
    }
    install_in_place(&build, &venv, &parent, &file_name).await?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f32(),
        "Synapse installed"
    );
    let _ = KNOWN_GOOD.set(python.clone());
    Ok(python)
}

/// Renames a finished build into place. If a usable venv appeared meanwhile, the build
/// is discarded; a broken one is moved aside and removed.
async fn install_in_place(
    build: &Path,
    venv: &Path,
    parent: &Path,
    file_name: &str,
) -> Result<(), HarnessError> {
    for _ in 0..3 {
        match std::fs::rename(build, venv) {
            Ok(()) => return Ok(()),
            Err(rename_err) => {
                if check_venv(venv).await.is_ok() {
                    // Someone else won the race: keep theirs.
                    let _ = std::fs::remove_dir_all(build);
                    return Ok(());
                }
                if venv.exists() {
                    let stale =
                        parent.join(format!(".{}", unique_name(&format!("{file_name}.stale"))));
                    if std::fs::rename(venv, &stale).is_ok() {
                        let _ = std::fs::remove_dir_all(&stale);
                    }
                } else {
                    let _ = std::fs::remove_dir_all(build);
                    return Err(HarnessError::io(
                        format!("moving {} to {}", build.display(), venv.display()),
                        rename_err,
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(build);
    Err(HarnessError::BrokenVenv {
        venv: venv.to_path_buf(),
        reason: "could not replace the existing, unusable venv".to_owned(),
    })
}

/// Creates a venv in `dir` and pip-installs Synapse into it.
async fn build_venv(dir: &Path) -> Result<(), HarnessError> {
    let python = std::env::var("CORDON_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut venv_cmd = Command::new(&python);
    venv_cmd.arg("-m").arg("venv").arg(dir);
    let out = match run_bounded(venv_cmd, VENV_TIMEOUT).await {
        Ok(out) => out,
        Err(RunError::Spawn(source)) => return Err(HarnessError::PythonMissing { python, source }),
        Err(RunError::TimedOut(output_tail)) => {
            return Err(HarnessError::VenvUnavailable {
                python,
                status: format!("timed out after {VENV_TIMEOUT:?}"),
                output_tail,
            });
        }
    };
    if !out.success {
        return Err(HarnessError::VenvUnavailable {
            python,
            status: out.status,
            output_tail: out.tail,
        });
    }

    let mut pip = Command::new(venv_python(dir));
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ])
    .arg(SYNAPSE_REQUIREMENT)
    .arg(POSTGRES_DRIVER);
    let out = match run_bounded(pip, PIP_TIMEOUT).await {
        Ok(out) => out,
        Err(RunError::Spawn(source)) => {
            return Err(HarnessError::io(
                format!("running pip in the new venv {}", dir.display()),
                source,
            ));
        }
        Err(RunError::TimedOut(output_tail)) => {
            return Err(HarnessError::PipFailed {
                status: format!("timed out after {PIP_TIMEOUT:?}"),
                output_tail,
            });
        }
    };
    if !out.success {
        return Err(HarnessError::PipFailed {
            status: out.status,
            output_tail: out.tail,
        });
    }
    check_venv(dir).await
}

/// Checks that `venv`'s interpreter imports Synapse at the expected version, and the
/// drivers of the postgres-workers form (a venv built before them is built again).
async fn check_venv(venv: &Path) -> Result<(), HarnessError> {
    let python = venv_python(venv);
    let broken = |reason: String| HarnessError::BrokenVenv {
        venv: venv.to_path_buf(),
        reason,
    };
    if !python.exists() {
        return Err(broken(format!("{} does not exist", python.display())));
    }
    let mut cmd = Command::new(&python);
    cmd.args([
        "-c",
        &format!("import synapse; {EXTRA_IMPORTS}; print(synapse.__version__)"),
    ]);
    let out = match run_bounded(cmd, CHECK_TIMEOUT).await {
        Ok(out) => out,
        Err(RunError::Spawn(e)) => {
            return Err(broken(format!("cannot run {}: {e}", python.display())));
        }
        Err(RunError::TimedOut(_)) => return Err(broken("the version check timed out".to_owned())),
    };
    let version = out.stdout.trim();
    if out.success && version.starts_with(VERSION_PREFIX) {
        Ok(())
    } else {
        Err(broken(format!(
            "expected Synapse {VERSION_PREFIX}x, got: {}",
            out.tail
        )))
    }
}

/// What a finished command left behind.
struct RunOutput {
    success: bool,
    status: String,
    stdout: String,
    tail: String,
}

enum RunError {
    Spawn(std::io::Error),
    TimedOut(String),
}

/// Runs a command to completion with a deadline, killing it if the deadline passes.
async fn run_bounded(mut cmd: Command, limit: Duration) -> Result<RunOutput, RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(RunError::Spawn)?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr);
            Ok(RunOutput {
                success: out.status.success(),
                status: out.status.to_string(),
                tail: tail(&format!("{stderr}\n{stdout}"), 30),
                stdout,
            })
        }
        Ok(Err(e)) => Err(RunError::Spawn(e)),
        // Dropping the future drops the child, which kills it (kill_on_drop).
        Err(_) => Err(RunError::TimedOut(String::new())),
    }
}

/// An exclusive lock on a file beside the venv, held while building. Released on drop
/// (closing the file releases the lock, also when the process dies).
struct BuildLock {
    _file: std::fs::File,
}

impl BuildLock {
    async fn acquire(path: &Path) -> Result<Self, HarnessError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| HarnessError::io(format!("opening {}", path.display()), e))?;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(HarnessError::io(
                        format!("waiting for another Synapse install ({})", path.display()),
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "lock held too long"),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(HarnessError::io(format!("locking {}", path.display()), e));
                }
            }
        }
    }
}
