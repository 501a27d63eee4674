//! The hooks themselves, compiled only with the `test-hooks` feature (see the parent
//! module's docs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

const VAR: &str = "CORDON_FAILPOINT";

/// The variable that injects a full disk under the store (see [`crate::failpoint`]).
pub const DISK_FULL_VAR: &str = "CORDON_FAULT_DISK_FULL";

/// The variable naming the point a task is held at (see [`crate::failpoint`]).
pub const HOLD_VAR: &str = "CORDON_FAILPOINT_HOLD";

/// The variable naming the file whose existence releases a held task.
pub const RELEASE_VAR: &str = "CORDON_FAILPOINT_RELEASE";

static ARMED: OnceLock<bool> = OnceLock::new();
static DISK_FULL_ARMED: OnceLock<bool> = OnceLock::new();
static COUNTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
static REACHED: AtomicBool = AtomicBool::new(false);
static DISK_FULL: AtomicBool = AtomicBool::new(false);

fn armed() -> bool {
    *ARMED.get_or_init(|| {
        std::env::var_os(VAR).is_some() || std::env::var_os(HOLD_VAR).is_some() || disk_full_armed()
    })
}

/// Whether a full disk may be injected in this process (its variable is set).
pub fn disk_full_armed() -> bool {
    *DISK_FULL_ARMED.get_or_init(|| std::env::var_os(DISK_FULL_VAR).is_some())
}

/// Whether the injected disk is full now.
pub fn disk_full() -> bool {
    if !disk_full_armed() {
        return false;
    }
    DISK_FULL.load(Ordering::SeqCst)
        || std::env::var(DISK_FULL_VAR).is_ok_and(|v| v.trim() == "now")
}

/// Parses the variable's value into (name, occurrence) pairs.
fn points(value: &str) -> Vec<(String, u32)> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('@') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (s.to_owned(), 1),
        })
        .collect()
}

/// Marks the point `name`: stops the calling task there for good, holds it there, or
/// fills the disk from there, as the environment asks (see [`crate::failpoint`]).
pub async fn hit(name: &str) {
    if !armed() {
        return;
    }
    if disk_full_armed() && !DISK_FULL.load(Ordering::SeqCst) && counted(DISK_FULL_VAR, name) {
        DISK_FULL.store(true, Ordering::SeqCst);
        eprintln!("cordon: disk full from failpoint: {name}");
    }
    if counted(HOLD_VAR, name) {
        hold(name).await;
    }
    if !counted(VAR, name) {
        return;
    }
    REACHED.store(true, Ordering::SeqCst);
    eprintln!("cordon: failpoint reached: {name}");
    std::future::pending::<()>().await;
}

/// Waits until the release file exists (forever, if no file is named).
async fn hold(name: &str) {
    eprintln!("cordon: failpoint holding: {name}");
    let release = std::env::var_os(RELEASE_VAR).map(std::path::PathBuf::from);
    loop {
        if release.as_ref().is_some_and(|p| p.exists()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("cordon: failpoint released: {name}");
}

/// Counts this arrival at `name` for the points named in `var`; true on the arrival
/// they ask for.
fn counted(var: &str, name: &str) -> bool {
    let Ok(value) = std::env::var(var) else {
        return false;
    };
    let wanted = points(&value);
    let Some((_, at)) = wanted.iter().find(|(n, _)| n == name) else {
        return false;
    };
    let mut guard = match COUNTS.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let count = guard
        .get_or_insert_with(HashMap::new)
        .entry(format!("{var}/{name}"))
        .or_insert(0);
    *count += 1;
    *count == *at
}

/// True once any failpoint has stopped a task: the process is about to be killed, so
/// other tasks should make no further progress worth testing.
pub fn reached() -> bool {
    REACHED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_occurrences() {
        assert_eq!(
            points("a, b@3,,c@x"),
            vec![("a".into(), 1), ("b".into(), 3), ("c".into(), 1)]
        );
    }
}
