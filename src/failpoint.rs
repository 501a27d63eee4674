//! Named stop points for crash tests.
//!
//! These hooks exist only in a build with the cargo feature `test-hooks`, which
//! `scripts/test` turns on. Without it (every release build), [`hit`] is an empty
//! inline function, [`disk_full_armed`], [`disk_full`] and [`reached`] are constant
//! `false`, no environment variable is read, and none of the variables' names is in the
//! binary: whoever sets the service's environment cannot park the bot at a point or fake
//! a full disk. `scripts/check-no-test-hooks BINARY` checks a binary for their names.
//!
//! With the feature: when the environment variable `CORDON_FAILPOINT` names a point (a
//! comma-separated list, each `name` or `name@N` for the N-th time it is reached), the
//! task that reaches it prints `cordon: failpoint reached: NAME` to stderr and stops
//! there for good. The crash tests wait for that line and then SIGKILL the process, so
//! the kill lands at exactly that point, between a store write and the side effect it
//! announces. Unset, a failpoint costs one relaxed atomic load.
//!
//! `CORDON_FAULT_DISK_FULL` injects a full disk under the store instead (through its
//! storage backend, [`crate::store`]): `now` from the start, or a point (`name` or
//! `name@N`) from which on every write of the store fails with `ENOSPC`. The task that
//! reaches that point goes on, and prints `cordon: disk full from failpoint: NAME`.
//!
//! `CORDON_FAILPOINT_HOLD` holds the task that reaches a point (`name` or `name@N`)
//! until the file named by `CORDON_FAILPOINT_RELEASE` exists, then lets it go on: the
//! fault tests take the homeserver away while a step waits there. It prints
//! `cordon: failpoint holding: NAME`, then `cordon: failpoint released: NAME`.

#[cfg(feature = "test-hooks")]
mod armed;

#[cfg(feature = "test-hooks")]
pub use armed::{DISK_FULL_VAR, HOLD_VAR, RELEASE_VAR, disk_full, disk_full_armed, hit, reached};

/// Marks the point `name`. Without the `test-hooks` feature it does nothing.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub async fn hit(_name: &str) {}

/// Whether a full disk may be injected in this process: never without `test-hooks`.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub const fn disk_full_armed() -> bool {
    false
}

/// Whether the injected disk is full now: never without `test-hooks`.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub const fn disk_full() -> bool {
    false
}

/// Whether a failpoint has stopped a task: never without `test-hooks`.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub const fn reached() -> bool {
    false
}
