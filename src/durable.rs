//! Owner-only directories created durably, shared by the sealed archive and the
//! pre-seal segments.

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
