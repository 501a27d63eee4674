//! # cordon-testkit
//!
//! Everything only cordon's tests and benchmarks use, in its own crate so that none of
//! it is compiled into the product: `cordon` never depends on this crate. It re-uses the
//! product's dev mode ([`cordon::dev`]: the throwaway Synapse, matrix-sdk users playing
//! the people, cordon as its own `cordon run` process) instead of keeping a copy.
//!
//! # Layout
//!
//! - [`attack`]: what an attacker does without anyone's keys, for the guard's tests: a
//!   server admin forging power levels and invites and force-joining people, a holder's
//!   password used on an unverified device, a holder's identity reset.
//! - [`bench`]: the benchmarks behind the `cordon-bench` binary (`declare`, `sweep`,
//!   `standdown`, `load`), each against a baseline measured in the same run.
//! - [`fuzz`]: the properties of the fuzz targets (playbook, config, chat grammar),
//!   shared by the cargo-afl targets in `fuzz/` and the short runs in `tests/it/hostile.rs`.
//! - [`cordon_bin`]: where the `cordon` binary under test is.
//! - `tests/it/`: the integration tests, run by `scripts/test`.
//!
//! # The binary under test
//!
//! The integration tests and the benchmarks run cordon as its own process. Cargo only
//! tells a package's own tests where that package's binaries are, so [`cordon_bin`]
//! finds it: `$CORDON_BIN` if set, else `cordon` in the target directory the test (or
//! benchmark) executable was built into. `scripts/test` builds it first, with the
//! `test-hooks` feature the fault tests need.

pub mod attack;
pub mod bench;
pub mod fuzz;

use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The `cordon` binary under test: `$CORDON_BIN` if set, else `target/<profile>/cordon`
/// beside the running executable (a test executable's `deps/` directory is skipped).
///
/// Fails, saying how to build it, when there is no such file. Build it with the hooks
/// (`cargo build --features test-hooks --bin cordon`) for the integration tests.
pub fn cordon_bin() -> Result<PathBuf, String> {
    let path = match std::env::var_os("CORDON_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find the running executable: {e}"))?;
            let mut dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
            if dir.file_name().is_some_and(|name| name == "deps") {
                dir.pop();
            }
            dir.join("cordon")
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no cordon binary at {}: build it first (`cargo build --features test-hooks \
             --bin cordon`, with `--release` for a release test executable), or set \
             CORDON_BIN to one",
            path.display()
        ))
    }
}

/// The repository's root directory (the sample playbooks, `cordon.example.yaml`,
/// `fuzz/seeds`).
pub fn repo_root() -> &'static Path {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().unwrap_or(testkit)
}

/// What stays unescaped in a URL path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment of a raw Matrix request (room, user and event ids
/// contain `!`, `@`, `$` and `:`).
pub(crate) fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn path_segments_keep_only_the_unreserved_characters() {
        assert_eq!(encode("@cordon:nhs.example"), "%40cordon%3Anhs.example");
        assert_eq!(encode("a/b"), "a%2Fb");
        assert_eq!(encode("Az09-_.~ é"), "Az09-_.~%20%C3%A9");
    }
}
