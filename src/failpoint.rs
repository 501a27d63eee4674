//! Named stop points for crash tests.
//!
//! When the environment variable `CORDON_FAILPOINT` names a point (a comma-separated
//! list, each `name` or `name@N` for the N-th time it is reached), the task that reaches
//! it prints `cordon: failpoint reached: NAME` to stderr and stops there for good. The
//! crash tests wait for that line and then SIGKILL the process, so the kill lands at
//! exactly that point, between a store write and the side effect it announces. Unset,
//! a failpoint costs one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

const VAR: &str = "CORDON_FAILPOINT";

static ARMED: OnceLock<bool> = OnceLock::new();
static COUNTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
static REACHED: AtomicBool = AtomicBool::new(false);

fn armed() -> bool {
    *ARMED.get_or_init(|| std::env::var_os(VAR).is_some())
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

/// Marks the point `name`. Stops the calling task for good if it is armed.
pub async fn hit(name: &str) {
    if !armed() || !should_stop(name) {
        return;
    }
    REACHED.store(true, Ordering::SeqCst);
    eprintln!("cordon: failpoint reached: {name}");
    std::future::pending::<()>().await;
}

fn should_stop(name: &str) -> bool {
    let Ok(value) = std::env::var(VAR) else {
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
        .entry(name.to_owned())
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
