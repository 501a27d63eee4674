//! `!cordon help`, rendered from the clap tree of [`super::grammar`] as plain text (no
//! ANSI colour).

use super::error::Rejection;
use super::grammar::{clap_command, suggest};
use super::text::echo;

/// Resolves a help topic (a command name or alias, case-insensitive, with or without a
/// leading `!cordon`) to the command's canonical name.
pub(crate) fn topic(word: &str) -> Result<String, Rejection> {
    let word = word.trim();
    let word = word
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("!cordon"))
        .map_or(word, |_| word[7..].trim_start());
    super::grammar::canonical_name(word).ok_or_else(|| Rejection::UnknownCommand {
        given: echo(word),
        suggestion: suggest(word),
    })
}

/// The help text: with no topic, every command with its one-line description; with a
/// topic, that command's full help (description, example, usage, arguments).
///
/// # Errors
///
/// [`Rejection::UnknownCommand`] when the topic names no command.
pub fn help(topic: Option<&str>) -> Result<String, Rejection> {
    match topic.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(overview()),
        Some(word) => {
            let name = self::topic(word)?;
            let mut root = clap_command();
            let Some(sub) = root.find_subcommand_mut(&name) else {
                return Err(Rejection::UnknownCommand {
                    given: echo(word),
                    suggestion: None,
                });
            };
            let text = sub.render_long_help().to_string();
            Ok(tidy(&text))
        }
    }
}

/// The overview: one line per command, then how to get more.
fn overview() -> String {
    let root = clap_command();
    let subs: Vec<_> = root
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .collect();
    let width = subs.iter().map(|s| s.get_name().len()).max().unwrap_or(0);
    let mut out = String::from("cordon commands (type `!cordon <command> …`):\n");
    for sub in subs {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&format!("  {:width$}  {about}\n", sub.get_name()));
    }
    out.push_str(
        "\nThe incident may be left out when exactly one incident is active in this room.\n\
         Type `!cordon help <command>` for details and an example, like `!cordon help declare`.",
    );
    out
}

/// Trims trailing spaces from each line and trailing blank lines from the text.
fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::command::grammar::{command_names, usage};

    #[test]
    fn overview_lists_every_command_with_its_summary() {
        let text = help(None).unwrap();
        for name in command_names() {
            assert!(
                text.contains(&format!("  {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(
            text.contains("Declare an incident from a playbook"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn command_help_has_usage_arguments_and_example() {
        let text = help(Some("declare")).unwrap();
        assert!(
            text.contains("Usage: !cordon declare <PLAYBOOK> <NAME>..."),
            "{text}"
        );
        assert!(
            text.contains(r#"Example: !cordon declare mass-casualty "Tram crash Addiscombe""#),
            "{text}"
        );
        assert!(text.contains("<PLAYBOOK>"), "{text}");
        assert!(!text.contains('\u{1b}'));
        assert!(!text.contains("--help"), "{text}");
    }

    #[test]
    fn usage_lines_put_the_optional_incident_first() {
        assert_eq!(
            usage("extend").as_deref(),
            Some("Usage: !cordon extend [INCIDENT] <DURATION>")
        );
        assert_eq!(
            usage("add").as_deref(),
            Some("Usage: !cordon add [INCIDENT] <USER> --role <ROLE>")
        );
        assert_eq!(
            usage("hold").as_deref(),
            Some("Usage: !cordon hold [INCIDENT] --reason <REASON>...")
        );
    }

    #[test]
    fn help_topics_are_case_insensitive_and_checked() {
        assert!(help(Some("EXTEND")).unwrap().contains("extend [INCIDENT]"));
        assert!(help(Some("!cordon status")).is_ok());
        assert!(matches!(
            help(Some("delcare")),
            Err(Rejection::UnknownCommand { suggestion: Some(s), .. }) if s == "declare"
        ));
    }

    #[test]
    fn suggestions_catch_typos_and_prefixes() {
        assert_eq!(suggest("decalre").as_deref(), Some("declare"));
        assert_eq!(suggest("standown").as_deref(), Some("standdown"));
        assert_eq!(suggest("stat").as_deref(), Some("status"));
        assert_eq!(suggest("transcribe").as_deref(), Some("transcribed"));
        assert_eq!(suggest("xyzzy"), None);
        assert_eq!(suggest(&"a".repeat(500)), None);
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        // The suggestions use optimal string alignment: a swap of neighbours costs 1.
        use strsim::osa_distance as edit_distance;
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
