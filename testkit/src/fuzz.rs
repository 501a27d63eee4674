//! The bodies of cordon's fuzz targets: the three parsers that read what people write
//! (playbooks, the config, chat commands), each with the property that must hold for
//! any input. A violation panics, which is what a fuzzer reports.
//!
//! The same functions run in three places: the cargo-afl targets in `fuzz/` (long
//! runs, see docs/reliability.md), the proptests and the corpus replay in
//! `tests/it/hostile.rs` (a short run inside `scripts/test`, so in CI), and here, in the
//! unit tests.

use std::path::Path;

use cordon::input::diagnostic::Diagnostic;

/// The most input a target looks at: beyond this the loaders refuse on size alone.
const MAX_INPUT: usize = 1 << 20;

/// Inputs that are not UTF-8 are read lossily, as a text editor would show them.
fn text(data: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    (data.len() <= MAX_INPUT).then(|| String::from_utf8_lossy(data))
}

/// A playbook: loads, or gives diagnostics that each start `file:line:col: error:`. What
/// loads can be explained (`cordon check --explain`).
pub fn playbook(data: &[u8]) {
    let Some(text) = text(data) else { return };
    const FILE: &str = "fuzz.yaml";
    match cordon::input::playbook::load_str(Path::new(FILE), &text) {
        Ok(pb) => {
            let example = cordon::domain::incident::explain::Example {
                name: "Fuzz".into(),
                commander: None,
                at: chrono::DateTime::UNIX_EPOCH,
                time_zone: chrono_tz::UTC,
            };
            let _ = cordon::domain::incident::explain::explain(&pb, &example);
        }
        Err(diagnostics) => assert_located(FILE, &diagnostics),
    }
}

/// The bot's config: loads, or gives located diagnostics.
pub fn config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    const FILE: &str = "/etc/cordon/fuzz.yaml";
    if let Err(diagnostics) = cordon::input::config::Config::from_text(Path::new(FILE), &text) {
        assert_located(FILE, &diagnostics);
    }
}

/// A chat message: ignored, parsed, or refused with a usage reply that shows nothing
/// of the input that could mislead a reader (controls, bidi overrides, invisible
/// characters). Checked both as it is and addressed to cordon.
pub fn command(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let _ = cordon::domain::command::parse(&text);
    let addressed = format!("!cordon {text}");
    match cordon::domain::command::parse(&addressed) {
        None => panic!("a message starting `!cordon ` was not taken as a command"),
        Some(Err(rejection)) => assert_displayable(&rejection.reply()),
        Some(Ok(_)) => {}
    }
}

/// Every diagnostic names `file` and says `error:` after its position.
pub fn assert_located(file: &str, diagnostics: &[Diagnostic]) {
    assert!(!diagnostics.is_empty(), "an error without a diagnostic");
    for d in diagnostics {
        let text = d.to_string();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(file) && first.contains(" error: "),
            "not a located diagnostic: {text}"
        );
    }
}

/// `text` holds no control (but newline), bidi, zero-width or byte-order character.
pub fn assert_displayable(text: &str) {
    for c in text.chars() {
        let hidden = c.is_control()
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
            || ('\u{200B}'..='\u{200D}').contains(&c)
            || c == '\u{FEFF}';
        assert!(
            c == '\n' || !hidden,
            "undisplayable character U+{:04X} in {text:?}",
            u32::from(c)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_take_the_shipped_files_and_garbage() {
        for data in [
            include_bytes!("../../playbooks/mass-casualty.yaml").as_slice(),
            include_bytes!("../../cordon.example.yaml").as_slice(),
            b"\xff\xfe\x00",
            b"",
            b"declare mass-casualty \"Tram \xe2\x80\xae crash\"",
        ] {
            playbook(data);
            config(data);
            command(data);
        }
    }

    #[test]
    #[should_panic(expected = "undisplayable character U+202E")]
    fn a_bidi_override_in_a_reply_is_caught() {
        assert_displayable("usage: declare \u{202e}");
    }
}
