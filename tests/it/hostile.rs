//! Hostile input to the playbook and config loaders: anything gives `Ok` or clean
//! `file:line:col: error:` diagnostics, never a panic or a hang, within the parser's
//! limits. (The chat grammar's properties are in `grammar.rs`.)

use std::path::Path;

use cordon::config::Config;
use cordon::diagnostic::Diagnostic;
use proptest::prelude::*;

const PLAYBOOK: &str = include_str!("../../playbooks/mass-casualty.yaml");
const CONFIG: &str = include_str!("../../cordon.example.yaml");

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

/// Every diagnostic names the file, and says `error:` after its position.
fn assert_clean(file: &str, diagnostics: &[Diagnostic]) -> Result<(), TestCaseError> {
    prop_assert!(!diagnostics.is_empty(), "an Err without a diagnostic");
    for d in diagnostics {
        let text = d.to_string();
        let first = text.lines().next().unwrap_or_default();
        prop_assert!(
            first.starts_with(file) && first.contains(" error: "),
            "not a clean diagnostic: {text}"
        );
    }
    Ok(())
}

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
        if let Err(d) = cordon::playbook::load_str(Path::new("any.yaml"), &text) {
            assert_clean("any.yaml", &d)?;
        }
    }

    #[test]
    fn playbook_loader_never_panics_on_a_damaged_playbook(edits in edits()) {
        let text = mutate(PLAYBOOK, &edits);
        match cordon::playbook::load_str(Path::new("damaged.yaml"), &text) {
            // What loads is a whole playbook: it can be explained without a panic.
            Ok(pb) => {
                let example = cordon::incident::explain::Example {
                    name: "x".into(),
                    commander: None,
                    at: chrono::DateTime::UNIX_EPOCH,
                    time_zone: chrono_tz::UTC,
                };
                let _ = cordon::incident::explain::explain(&pb, &example);
            }
            Err(d) => assert_clean("damaged.yaml", &d)?,
        }
    }

    #[test]
    fn config_loader_never_panics_on_any_text(text in any::<String>()) {
        if let Err(d) = Config::from_text(Path::new("/etc/cordon/any.yaml"), &text) {
            assert_clean("/etc/cordon/any.yaml", &d)?;
        }
    }

    #[test]
    fn config_loader_never_panics_on_a_damaged_config(edits in edits()) {
        let text = mutate(CONFIG, &edits);
        if let Err(d) = Config::from_text(Path::new("/etc/cordon/damaged.yaml"), &text) {
            assert_clean("/etc/cordon/damaged.yaml", &d)?;
        }
    }
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
        let errs = cordon::playbook::load_str(file, &text).expect_err("refused");
        assert!(!errs.is_empty());
        for e in &errs {
            assert!(e.to_string().starts_with("bomb.yaml:"), "{e}");
        }
    }
}
