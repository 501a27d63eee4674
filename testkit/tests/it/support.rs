//! What every end-to-end module shares: the `cordon` binary under test, unique names
//! on the one shared Synapse, and how long to wait for it.

use std::path::PathBuf;
use std::time::Duration;

/// How long a test waits for something on the real Synapse before it fails.
pub const WAIT: Duration = Duration::from_secs(90);

/// The `cordon` binary under test (`scripts/test` builds it first; see
/// [`cordon_testkit::cordon_bin`]).
pub fn cordon_bin() -> PathBuf {
    cordon_testkit::cordon_bin().unwrap_or_else(|why| panic!("{why}"))
}

/// `prefix` and 8 random hex digits: user names, playbook ids and so on that no other
/// test on the same Synapse uses.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random();
    format!("{prefix}{n:08x}")
}
