//! Supervising the harness's child processes (Synapse, its workers, PostgreSQL, Redis):
//! the watchdog they run under, signals, free ports.

use std::process::Stdio;

use super::HarnessError;

/// The watchdog Synapse, its workers, PostgreSQL and Redis run under. It starts the
/// command in the background, forwards SIGTERM to it (a graceful stop), exits with its
/// status, and, in a second background loop, kills it and removes the data directory
/// once the owning process (`$1`) is gone. Arguments: owner pid, data dir, keep (0/1),
/// then the command.
pub(super) const WATCHDOG: &str = r#"owner=$1; data=$2; keep=$3; shift 3
"$@" >>"$data/stdout.log" 2>&1 </dev/null &
child=$!
(
  while kill -0 "$owner" 2>/dev/null; do sleep 1; done
  kill -KILL "$child" 2>/dev/null
  [ "$keep" = 1 ] || rm -rf "$data"
) &
watcher=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
while :; do
  wait "$child"; status=$?
  if kill -0 "$child" 2>/dev/null; then continue; fi
  break
done
kill "$watcher" 2>/dev/null
exit $status
"#;

/// Sends `sig` (like `-TERM`) to a process, or to its whole process group.
pub(super) fn signal(pid: u32, sig: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    // `kill` through sh: the builtin exists everywhere, /usr/bin/kill may not.
    let _ = std::process::Command::new("sh")
        .args(["-c", "kill \"$1\" \"$2\" 2>/dev/null", "sh", sig, &target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A port that was free a moment ago (Synapse may still lose a race for it; callers retry).
pub(super) fn free_port() -> Result<u16, HarnessError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| HarnessError::io("finding a free loopback port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("finding a free loopback port", e))?
        .port();
    Ok(port)
}
