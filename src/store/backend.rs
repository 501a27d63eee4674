//! The store's storage backend: redb's own file backend, watched for I/O failures.
//!
//! redb latches the first failed read or write of its file: every later operation on
//! that [`redb::Database`] then fails with "previous I/O error" until it is opened
//! again, and its last complete (two-phase) commit stays on disk. The backend records
//! that first failure, so that the bot learns of it at once, wherever it happened, and
//! stops rather than carrying on with a store that silently records nothing (see
//! [`super::Store::failed`]).
//!
//! For the fault tests, in a build with the `test-hooks` feature only, it can also fail
//! the way a full disk does: with the environment variable `CORDON_FAULT_DISK_FULL` set
//! (see [`crate::failpoint`]), writes, growth and syncs fail with `ENOSPC` while
//! [`failpoint::disk_full`] holds. Unset, the only cost is one branch per I/O call.
//! Without the feature there is no such fault: [`Fault::from_env`] is always off.

use std::io;
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use redb::StorageBackend;
use redb::backends::FileBackend;

#[cfg(feature = "test-hooks")]
use crate::failpoint;

/// `ENOSPC`: what the file system answers when the disk is full.
const ENOSPC: i32 = 28;

/// The first I/O failure of the store's file, and a wake-up for whoever waits for one.
#[derive(Debug, Default)]
pub(crate) struct IoHealth {
    failure: OnceLock<(io::ErrorKind, String)>,
    notify: tokio::sync::Notify,
}

impl IoHealth {
    fn failed(&self, what: &str, e: &io::Error) {
        if self.failure.set((e.kind(), format!("{what}: {e}"))).is_ok() {
            self.notify.notify_one();
        }
    }

    /// The first failure, if any.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.get().map(|(_, f)| f.as_str())
    }

    /// The first failure, unless it says the file's content is wrong (cut short, not a
    /// store) rather than that the disk failed: that is a damaged store, refused as such.
    pub(crate) fn disk_failure(&self) -> Option<&str> {
        match self.failure.get() {
            Some((
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::InvalidData
                | io::ErrorKind::InvalidInput,
                _,
            )) => None,
            Some((_, f)) => Some(f),
            None => None,
        }
    }

    /// Waits for the first failure.
    pub(crate) async fn wait(&self) -> String {
        loop {
            if let Some(f) = self.failure() {
                return f.to_owned();
            }
            self.notify.notified().await;
        }
    }
}

/// Whether, and how, a full disk is injected.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Never (the environment variable was not set at start).
    Off,
    /// While [`failpoint::disk_full`] says so (the `test-hooks` feature only).
    #[cfg(feature = "test-hooks")]
    FromEnv,
    /// While the flag is set (the store's unit tests).
    #[cfg(test)]
    Flag(Arc<std::sync::atomic::AtomicBool>),
}

impl Fault {
    /// The fault the environment asks for.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn from_env() -> Self {
        if failpoint::disk_full_armed() {
            Fault::FromEnv
        } else {
            Fault::Off
        }
    }

    /// No fault: this build has no `test-hooks` feature, so the environment cannot ask
    /// for one.
    #[cfg(not(feature = "test-hooks"))]
    pub(crate) fn from_env() -> Self {
        Fault::Off
    }

    fn disk_full(&self) -> bool {
        match self {
            Fault::Off => false,
            #[cfg(feature = "test-hooks")]
            Fault::FromEnv => failpoint::disk_full(),
            #[cfg(test)]
            Fault::Flag(flag) => flag.load(std::sync::atomic::Ordering::SeqCst),
        }
    }
}

/// redb's file backend, reporting its failures to an [`IoHealth`].
#[derive(Debug)]
pub(crate) struct Watched {
    inner: FileBackend,
    health: Arc<IoHealth>,
    fault: Fault,
}

impl Watched {
    pub(crate) fn new(inner: FileBackend, health: Arc<IoHealth>, fault: Fault) -> Self {
        Self {
            inner,
            health,
            fault,
        }
    }

    /// The injected full disk, when it is on.
    fn full(&self) -> io::Result<()> {
        if self.fault.disk_full() {
            Err(io::Error::from_raw_os_error(ENOSPC))
        } else {
            Ok(())
        }
    }

    fn watch<T>(&self, what: &str, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            self.health.failed(what, e);
        }
        result
    }
}

impl StorageBackend for Watched {
    fn len(&self) -> io::Result<u64> {
        self.watch("reading its length", self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.watch("reading it", self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        // A full disk still lets a file shrink.
        let result = match self.inner.len() {
            Ok(now) if len > now => self.full(),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
        .and_then(|()| self.inner.set_len(len));
        self.watch("growing it", result)
    }

    fn sync_data(&self) -> io::Result<()> {
        let result = self.full().and_then(|()| self.inner.sync_data());
        self.watch("syncing it to disk", result)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let result = self.full().and_then(|()| self.inner.write(offset, data));
        self.watch("writing it", result)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
