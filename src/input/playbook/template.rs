//! Message templates: text with `{variable}` placeholders, parsed once.
//!
//! Variables: `{incident}` (the incident's display name), `{incident_id}`, `{playbook}`
//! (the playbook's title), `{expires}` (when the incident stands down), `{time_left}` and
//! `{commander}`. `{{` and `}}` are literal braces. An unknown variable, an unclosed `{`
//! or a lone `}` is an error, so a typo is caught by `cordon check` and never reaches a
//! clinician as `{incidnet}`.

use std::fmt;

/// The variables a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{incident}`: the incident's display name ("Tram crash Addiscombe").
    Incident,
    /// `{incident_id}`: the incident's short id.
    IncidentId,
    /// `{playbook}`: the playbook's title.
    Playbook,
    /// `{expires}`: when the incident stands down, in the config's time zone.
    Expires,
    /// `{time_left}`: time until stand-down ("3h 20m").
    TimeLeft,
    /// `{commander}`: the incident commander.
    Commander,
}

impl Var {
    /// Every variable with its name, in the order documented.
    pub const ALL: [(&'static str, Var); 6] = [
        ("incident", Var::Incident),
        ("incident_id", Var::IncidentId),
        ("playbook", Var::Playbook),
        ("expires", Var::Expires),
        ("time_left", Var::TimeLeft),
        ("commander", Var::Commander),
    ];

    fn from_name(name: &str) -> Option<Var> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The variable's name as written between braces.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }
}

/// The values substituted when a template is rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    /// `{incident}`
    pub incident: String,
    /// `{incident_id}`
    pub incident_id: String,
    /// `{playbook}`
    pub playbook: String,
    /// `{expires}`
    pub expires: String,
    /// `{time_left}`
    pub time_left: String,
    /// `{commander}`
    pub commander: String,
}

impl TemplateVars {
    fn get(&self, var: Var) -> &str {
        match var {
            Var::Incident => &self.incident,
            Var::IncidentId => &self.incident_id,
            Var::Playbook => &self.playbook,
            Var::Expires => &self.expires,
            Var::TimeLeft => &self.time_left,
            Var::Commander => &self.commander,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template does not parse, and where (a character offset into the template).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` with a name that is not a variable.
    #[error(
        "unknown template variable `{{{name}}}`{hint}; variables are {{incident}}, {{incident_id}}, {{playbook}}, {{expires}}, {{time_left}}, {{commander}} (write `{{{{` for a literal brace)"
    )]
    UnknownVariable {
        /// The name as written (shortened if long).
        name: String,
        /// " (did you mean `{x}`?)" or empty.
        hint: String,
        /// Character offset of the `{`.
        offset: usize,
        /// The text as written from the `{` (used to find it in the file).
        written: String,
    },
    /// A `{` with no `}` after it.
    #[error("unclosed `{{` in template; close it with `}}` or write `{{{{` for a literal brace")]
    Unclosed {
        /// Character offset of the `{`.
        offset: usize,
        /// The text as written from the `{`.
        written: String,
    },
    /// A `}` that closes nothing.
    #[error("unmatched `}}` in template; write `}}}}` for a literal brace")]
    Unmatched {
        /// Character offset of the `}`.
        offset: usize,
        /// The text as written from the `}`.
        written: String,
    },
}

impl TemplateError {
    /// Character offset in the template and the text as written there.
    pub fn position(&self) -> (usize, &str) {
        match self {
            TemplateError::UnknownVariable {
                offset, written, ..
            }
            | TemplateError::Unclosed { offset, written }
            | TemplateError::Unmatched { offset, written } => (*offset, written),
        }
    }
}

impl Template {
    /// Parses `source`, reporting every problem (not only the first).
    pub fn parse(source: &str) -> Result<Self, Vec<TemplateError>> {
        let chars: Vec<char> = source.chars().collect();
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        let written = |from: usize, to: usize| -> String {
            chars[from..to.min(chars.len())]
                .iter()
                .take_while(|c| **c != '\n')
                .collect()
        };
        while i < chars.len() {
            match chars[i] {
                '{' if chars.get(i + 1) == Some(&'{') => {
                    text.push('{');
                    i += 2;
                }
                '}' if chars.get(i + 1) == Some(&'}') => {
                    text.push('}');
                    i += 2;
                }
                '{' => {
                    let close = chars[i + 1..]
                        .iter()
                        .position(|c| *c == '}' || *c == '{' || *c == '\n')
                        .map(|p| p + i + 1);
                    match close {
                        Some(end) if chars[end] == '}' => {
                            let name: String = chars[i + 1..end].iter().collect();
                            match Var::from_name(name.trim()) {
                                Some(var) => {
                                    if !text.is_empty() {
                                        parts.push(Part::Text(std::mem::take(&mut text)));
                                    }
                                    parts.push(Part::Var(var));
                                }
                                None => {
                                    let hint = crate::input::yaml::closest(
                                        &name,
                                        Var::ALL.iter().map(|(n, _)| *n),
                                    )
                                    .map(|b| format!(" (did you mean `{{{b}}}`?)"))
                                    .unwrap_or_default();
                                    errors.push(TemplateError::UnknownVariable {
                                        name: name.chars().take(40).collect(),
                                        hint,
                                        offset: i,
                                        written: written(i, end + 1),
                                    });
                                }
                            }
                            i = end + 1;
                        }
                        _ => {
                            errors.push(TemplateError::Unclosed {
                                offset: i,
                                written: written(i, i + 12),
                            });
                            i += 1;
                        }
                    }
                }
                '}' => {
                    errors.push(TemplateError::Unmatched {
                        offset: i,
                        written: written(i, i + 12),
                    });
                    i += 1;
                }
                c => {
                    text.push(c);
                    i += 1;
                }
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if errors.is_empty() {
            Ok(Self {
                source: source.to_owned(),
                parts,
            })
        } else {
            Err(errors)
        }
    }

    /// The template as written in the playbook.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables this template uses, in order of appearance.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            Part::Text(_) => None,
        })
    }

    /// Substitutes `vars`.
    pub fn render(&self, vars: &TemplateVars) -> String {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(vars.get(*v)),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        TemplateVars {
            incident: "Tram crash".into(),
            incident_id: "mc-7f3a".into(),
            playbook: "Mass casualty".into(),
            expires: "02:00".into(),
            time_left: "3h".into(),
            commander: "@a:nhs.example".into(),
        }
    }

    #[test]
    fn renders_every_variable_and_literal_braces() {
        let t = Template::parse(
            "{incident} ({incident_id}) {playbook} until {expires}, {time_left} left; ask {commander} {{x}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&vars()),
            "Tram crash (mc-7f3a) Mass casualty until 02:00, 3h left; ask @a:nhs.example {x}"
        );
    }

    #[test]
    fn substituted_values_are_not_reparsed() {
        let mut v = vars();
        v.incident = "{commander}".into();
        assert_eq!(
            Template::parse("{incident}").unwrap().render(&v),
            "{commander}"
        );
    }

    #[test]
    fn unknown_variable_points_at_its_brace_and_suggests() {
        let errs = Template::parse("ab {incidnet} {nope}").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].position(), (3, "{incidnet}"));
        assert!(
            errs[0].to_string().contains("did you mean `{incident}`"),
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].position().0, 14);
    }

    #[test]
    fn unclosed_and_unmatched_braces() {
        let errs = Template::parse("a {incident").unwrap_err();
        assert!(matches!(errs[0], TemplateError::Unclosed { offset: 2, .. }));
        let errs = Template::parse("a } b").unwrap_err();
        assert!(matches!(
            errs[0],
            TemplateError::Unmatched { offset: 2, .. }
        ));
        let errs = Template::parse("{inc\nident}").unwrap_err();
        assert!(matches!(errs[0], TemplateError::Unclosed { .. }));
    }

    #[test]
    fn plain_text_has_no_vars() {
        let t = Template::parse("Transcribe advice.").unwrap();
        assert_eq!(t.vars().count(), 0);
        assert_eq!(t.render(&vars()), "Transcribe advice.");
    }
}
