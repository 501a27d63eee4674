//! Owner-only directories created durably, shared by the sealed archive and the
//! pre-seal segments; and files replaced atomically (a temporary file beside the
//! target, fsynced, renamed over it, the directory fsynced), shared by the segments,
//! the sealed archive and the session file.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Creates `dir` and its missing parents owner-only (0700), flushing the parent of
/// every directory it created. On failure, the path that failed and why.
pub(crate) fn create_private_dirs(dir: &Path) -> Result<(), (PathBuf, io::Error)> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_private_dirs(parent)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err((dir.to_owned(), source)),
    }
    if let Some(parent) = parent {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), (PathBuf, io::Error)> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| (dir.to_owned(), source))
}

/// The temporary file [`create_temp`] writes for `target`: `<dir>/.<name>.tmp`, beside
/// it so the rename stays within one file system.
pub(crate) fn temp_beside(target: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(".tmp");
    target.with_file_name(name)
}

/// Creates the temporary file for `target` (see [`temp_beside`]) with permissions
/// `mode` (on unix), replacing one an attempt that crashed left behind. Write it, then
/// hand it to [`commit`]. On failure, the path that failed and why.
pub(crate) fn create_temp(
    target: &Path,
    mode: u32,
) -> Result<(PathBuf, File), (PathBuf, io::Error)> {
    let tmp = temp_beside(target);
    // A leftover is removed rather than truncated: opening it would keep its mode.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err((tmp, e)),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    match options.open(&tmp) {
        Ok(file) => Ok((tmp, file)),
        Err(source) => Err((tmp, source)),
    }
}

/// Puts the written temporary file `tmp` in place of `target`: flushes it to disk,
/// renames it over `target`, and flushes the directory so the rename survives a crash.
/// On failure, the path that failed and why.
pub(crate) fn commit(file: File, tmp: &Path, target: &Path) -> Result<(), (PathBuf, io::Error)> {
    file.sync_all().map_err(|source| (tmp.to_owned(), source))?;
    drop(file);
    fs::rename(tmp, target).map_err(|source| (target.to_owned(), source))?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir)
}

/// Replaces `target` with `bytes` atomically, the file created with permissions `mode`
/// (on unix): [`create_temp`], write, [`commit`]. The temporary file is removed when a
/// step fails. On failure, the path that failed and why.
pub(crate) fn write_atomic(
    target: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), (PathBuf, io::Error)> {
    use std::io::Write;
    let (tmp, mut file) = create_temp(target, mode)?;
    let written = file
        .write_all(bytes)
        .map_err(|source| (tmp.clone(), source))
        .and_then(|()| commit(file, &tmp, target));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_target_with_its_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("session.json");
        fs::write(&target, b"old").unwrap();
        fs::write(temp_beside(&target), b"left by a crash").unwrap();
        write_atomic(&target, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!temp_beside(&target).exists());
        assert_eq!(temp_beside(&target), dir.path().join(".session.json.tmp"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_failed_write_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing").join("file");
        let (path, _) = write_atomic(&target, b"x", 0o600).unwrap_err();
        assert_eq!(path, temp_beside(&target));
        assert!(!target.exists());
    }
}
