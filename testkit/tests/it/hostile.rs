//! Hostile input to the playbook and config loaders: anything gives `Ok` or clean
//! `file:line:col: error:` diagnostics, never a panic or a hang, within the parser's
//! limits. The properties are the fuzz targets' own (`cordon_testkit::fuzz`), so this is the
//! short run of the cargo-afl targets in `fuzz/`, with their seeds replayed. (More of
//! the chat grammar's properties are in `grammar.rs`.)

use std::path::Path;

use cordon::input::config::Config;
use proptest::prelude::*;

const PLAYBOOK: &str = include_str!("../../../playbooks/mass-casualty.yaml");
const CONFIG: &str = include_str!("../../../cordon.example.yaml");

/// Fragments that mean something to YAML, to cordon's templates or to a terminal.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "\"",
    "'",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "? ",
    "|",
    ">-",
    "#",
    "@",
    "@room",
    "{incident}",
    "{nope",
    "\u{202e}",
    "\u{200b}",
    "\u{1b}[2J",
    "\0",
    "\u{feff}",
    "é",
    "∞",
    "0x1F",
    "1e400",
    "-1",
    "99999999999999999999",
    "null",
    "~",
    "true",
    "<b>",
    "age1",
    "role:",
    "*/0 * * * *",
];

/// `base` with `edits` applied: each inserts a fragment, or deletes a few characters,
/// at a place given as a fraction of the text.
fn mutate(base: &str, edits: &[(u16, usize, bool)]) -> String {
    let mut text: Vec<char> = base.chars().collect();
    for &(at, fragment, delete) in edits {
        let i = usize::from(at) * text.len() / usize::from(u16::MAX).max(1);
        let i = i.min(text.len());
        if delete {
            let end = (i + 1 + fragment % 8).min(text.len());
            text.drain(i..end);
        } else {
            let f = FRAGMENTS[fragment % FRAGMENTS.len()];
            text.splice(i..i, f.chars());
        }
    }
    text.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(u16, usize, bool)>> {
    prop::collection::vec((any::<u16>(), any::<usize>(), any::<bool>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn playbook_loader_never_panics_on_any_text(text in any::<String>()) {
        cordon_testkit::fuzz::playbook(text.as_bytes());
    }

    #[test]
    fn playbook_loader_never_panics_on_a_damaged_playbook(edits in edits()) {
        // What loads is a whole playbook: the target also explains it.
        cordon_testkit::fuzz::playbook(mutate(PLAYBOOK, &edits).as_bytes());
    }

    #[test]
    fn config_loader_never_panics_on_any_text(text in any::<String>()) {
        cordon_testkit::fuzz::config(text.as_bytes());
    }

    #[test]
    fn config_loader_never_panics_on_a_damaged_config(edits in edits()) {
        cordon_testkit::fuzz::config(mutate(CONFIG, &edits).as_bytes());
    }

    #[test]
    fn every_fuzz_target_holds_for_any_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        cordon_testkit::fuzz::playbook(&data);
        cordon_testkit::fuzz::config(&data);
        cordon_testkit::fuzz::command(&data);
    }
}

/// The fuzz targets' seeds (and every finding added to them once fixed) hold for good.
#[test]
fn the_fuzz_seeds_hold() {
    let root = cordon_testkit::repo_root();
    let mut replayed = 0;
    for (target, run) in [
        ("playbook", cordon_testkit::fuzz::playbook as fn(&[u8])),
        ("config", cordon_testkit::fuzz::config),
        ("command", cordon_testkit::fuzz::command),
    ] {
        let dir = root.join("fuzz/seeds").join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    for file in std::fs::read_dir(root.join("playbooks")).unwrap() {
        cordon_testkit::fuzz::playbook(&std::fs::read(file.unwrap().path()).unwrap());
        replayed += 1;
    }
    assert!(replayed >= 6, "only {replayed} seeds found");
}

/// A "billion laughs": each alias doubles the one before.
fn alias_bomb(key: &str) -> String {
    let mut text = format!("{key}: &a0 [x, x]\n");
    for i in 1..40 {
        text.push_str(&format!("k{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
    }
    text
}

#[test]
fn config_alias_bomb_and_deep_nesting_are_clean_errors() {
    let file = Path::new("/etc/cordon/bomb.yaml");
    for text in [
        alias_bomb("homeserver"),
        format!("homeserver: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("homeserver: {}", "{a: ".repeat(50_000)),
    ] {
        let errs = Config::from_text(file, &text).expect_err("refused");
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = errs[0].to_string();
        assert!(e.starts_with("/etc/cordon/bomb.yaml:"), "{e}");
    }
}

#[test]
fn playbook_alias_bomb_and_deep_nesting_are_clean_errors() {
    let file = Path::new("bomb.yaml");
    for text in [
        alias_bomb("id"),
        format!("id: {}{}", "{a: ".repeat(50_000), "}".repeat(50_000)),
        format!("roles:\n{}", "  - ".repeat(10_000)),
    ] {
        let errs = cordon::input::playbook::load_str(file, &text).expect_err("refused");
        assert!(!errs.is_empty());
        for e in &errs {
            assert!(e.to_string().starts_with("bomb.yaml:"), "{e}");
        }
    }
}
