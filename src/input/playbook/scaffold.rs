//! `cordon playbook new`: a commented playbook for an emergency planner to fill in.
//!
//! Every key is written out with a comment saying what it does and its default, so the
//! file is its own guide. With the records officer's key (`--recipient`) it passes
//! `cordon check` as it is; without one its `archive.recipients` is empty, and `cordon
//! check` says that nobody could open the archive until a key is added. cordon never
//! invents a key: an archive sealed to a key nobody holds is a lost record.

use super::model::{SlugError, check_slug};

/// What goes into a new playbook.
#[derive(Debug, Clone)]
pub struct Scaffold<'a> {
    /// The playbook id (a slug), also the file's suggested name.
    pub id: &'a str,
    /// Its title; a placeholder when `None`.
    pub title: Option<&'a str>,
    /// The homeserver name for the example holders (`@incident-lead:<server>`).
    pub server: &'a str,
    /// The records officers' age public keys, checked by the caller or by `cordon check`.
    pub recipients: &'a [String],
}

/// Why a scaffold could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The id is not a slug.
    #[error("the playbook id `{id}` {reason}")]
    Id {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: SlugError,
    },
    /// A value that would break the YAML (a line break or a quote in the title).
    #[error("{what} must be one line without `\"` or `\\`")]
    Text {
        /// Which value.
        what: &'static str,
    },
    /// A recipient that is not an age public key.
    #[error("`{0}` is not an age public key (`age1…`)")]
    Recipient(String),
}

const TEMPLATE: &str = include_str!("scaffold.yaml");

/// The playbook's text.
pub fn render(s: &Scaffold<'_>) -> Result<String, ScaffoldError> {
    check_slug(s.id).map_err(|reason| ScaffoldError::Id {
        id: s.id.to_owned(),
        reason,
    })?;
    let plain = |v: &str, what: &'static str| {
        if v.is_empty() || v.contains(['\n', '\r', '"', '\\']) {
            Err(ScaffoldError::Text { what })
        } else {
            Ok(())
        }
    };
    let title = s.title.unwrap_or("Major incident (replace this title)");
    plain(title, "the title")?;
    plain(s.server, "the server name")?;
    for r in s.recipients {
        r.parse::<age::x25519::Recipient>()
            .map_err(|_| ScaffoldError::Recipient(r.clone()))?;
    }
    let recipients = if s.recipients.is_empty() {
        "  # REQUIRED: the records officer's age public key (`age-keygen -y KEYFILE` prints\n  \
         # it). `cordon check` refuses this playbook until one is here.\n  recipients: []"
            .to_owned()
    } else {
        let mut list = "  recipients:".to_owned();
        for r in s.recipients {
            list.push_str(&format!("\n    - {r}"));
        }
        list
    };
    Ok(TEMPLATE
        .replace("__ID__", s.id)
        .replace("__TITLE__", title)
        .replace("__SERVER__", s.server)
        .replace("__RECIPIENTS__", &recipients))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const KEY: &str = "age1t8v5qss4t65exu523uky9wesc5jyk3dkst9hnf75xxyfxcm374hqkx2632";

    fn scaffold<'a>(id: &'a str, recipients: &'a [String]) -> Scaffold<'a> {
        Scaffold {
            id,
            title: Some("Flooding: site evacuation"),
            server: "nhs.example",
            recipients,
        }
    }

    #[test]
    fn with_a_recipient_the_scaffold_is_a_valid_playbook() {
        let keys = [KEY.to_owned()];
        let text = render(&scaffold("flood-evacuation", &keys)).unwrap();
        let playbook = crate::input::playbook::load_str(Path::new("flood-evacuation.yaml"), &text)
            .unwrap_or_else(|d| panic!("{d:?}\n{text}"));
        assert_eq!(playbook.id, "flood-evacuation");
        assert_eq!(playbook.title, "Flooding: site evacuation");
        assert_eq!(playbook.rooms.len(), 2);
    }

    #[test]
    fn without_one_the_only_problem_is_the_missing_records_officer() {
        let text = render(&scaffold("flood-evacuation", &[])).unwrap();
        let problems = crate::input::playbook::load_str(Path::new("p.yaml"), &text).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .to_string()
                .contains("archive.recipients is empty"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn bad_ids_titles_and_keys_are_refused() {
        assert!(matches!(
            render(&scaffold("Flood Plan", &[])),
            Err(ScaffoldError::Id { .. })
        ));
        let mut s = scaffold("flood", &[]);
        s.title = Some("two\nlines: x");
        assert!(matches!(render(&s), Err(ScaffoldError::Text { .. })));
        let bad = ["age1nope".to_owned()];
        assert!(matches!(
            render(&scaffold("flood", &bad)),
            Err(ScaffoldError::Recipient(_))
        ));
    }
}
