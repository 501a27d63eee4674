//! `cordon audit export`: the audit log written out for governance reports, as CSV
//! (RFC 4180) or JSON Lines, with the hash chain's fields so the export can be checked
//! against the store later.
//!
//! Every field is data, never a formula: a CSV cell that a spreadsheet would evaluate
//! (it starts with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with
//! `'`, except a Matrix user id in the actor column, which is left as it is.

use std::io::{self, Write};

use chrono::SecondsFormat;
use serde_json::json;

use super::audit::AuditEntry;

/// The export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One header row, then a row per entry.
    Csv,
    /// A JSON object per line.
    JsonLines,
}

/// The CSV header, in column order.
pub const CSV_HEADER: [&str; 8] = [
    "seq", "at", "actor", "action", "incident", "details", "prev", "hash",
];

/// Writes `entries` to `out` in `format`.
pub fn write(out: &mut dyn Write, entries: &[AuditEntry], format: ExportFormat) -> io::Result<()> {
    match format {
        ExportFormat::Csv => {
            // RFC 4180 ends records with CRLF.
            write!(out, "{}\r\n", CSV_HEADER.join(","))?;
            for e in entries {
                let at = e.at.to_rfc3339_opts(SecondsFormat::Millis, true);
                let incident = e.incident.as_ref().map(|i| i.as_str()).unwrap_or("");
                let actor = if matrix_sdk::ruma::UserId::parse(e.actor.as_str()).is_ok() {
                    quote(&e.actor)
                } else {
                    cell(&e.actor)
                };
                let row = [
                    e.seq.to_string(),
                    at,
                    actor,
                    cell(&e.action),
                    cell(incident),
                    cell(&e.details),
                    cell(&e.prev),
                    cell(&e.hash),
                ];
                write!(out, "{}\r\n", row.join(","))?;
            }
        }
        ExportFormat::JsonLines => {
            for e in entries {
                let line = json!({
                    "seq": e.seq,
                    "at": e.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    "actor": e.actor,
                    "action": e.action,
                    "incident": e.incident.as_ref().map(|i| i.as_str()),
                    "details": e.details_value(),
                    "prev": e.prev,
                    "hash": e.hash,
                });
                serde_json::to_writer(&mut *out, &line)?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

/// A CSV cell: defused if a spreadsheet would run it as a formula, then quoted.
fn cell(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        quote(&format!("'{value}"))
    } else {
        quote(value)
    }
}

/// Quoted when it has to be (a comma, a quote or a line break), quotes doubled.
fn quote(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::incident::IncidentId;

    fn entry(actor: &str, details: &str) -> AuditEntry {
        AuditEntry {
            seq: 3,
            at: Utc.with_ymd_and_hms(2026, 3, 1, 14, 5, 0).single().unwrap(),
            actor: actor.into(),
            action: "hold.set".into(),
            incident: Some(IncidentId::parse("mc-4k7p").unwrap()),
            details: details.into(),
            prev: "ab".into(),
            hash: "cd".into(),
        }
    }

    fn csv(entries: &[AuditEntry]) -> String {
        let mut out = Vec::new();
        write(&mut out, entries, ExportFormat::Csv).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_what_needs_it_and_doubles_quotes() {
        let text = csv(&[entry("@ic:nhs.example", r#"{"reason":"Inquest, 2026"}"#)]);
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines[0], "seq,at,actor,action,incident,details,prev,hash");
        assert_eq!(
            lines[1],
            r#"3,2026-03-01T14:05:00.000Z,@ic:nhs.example,hold.set,mc-4k7p,"{""reason"":""Inquest, 2026""}",ab,cd"#
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn a_cell_a_spreadsheet_would_run_is_defused() {
        let text = csv(&[entry("=HYPERLINK(\"http://x\")", "{}")]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains(",\"'=HYPERLINK(\"\"http://x\"\")\","), "{row}");
        // A user id stays as it is; anything else starting with @ is defused.
        assert!(csv(&[entry("@ic:nhs.example", "{}")]).contains(",@ic:nhs.example,"));
        assert!(csv(&[entry("@SUM(1+1)*cmd", "{}")]).contains(",'@SUM(1+1)*cmd,"));
    }

    #[test]
    fn json_lines_carry_the_details_as_json() {
        let mut out = Vec::new();
        write(
            &mut out,
            &[entry("cordon", r#"{"reason":"x"}"#)],
            ExportFormat::JsonLines,
        )
        .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["details"]["reason"], "x");
        assert_eq!(line["incident"], "mc-4k7p");
        assert_eq!(line["hash"], "cd");
    }
}
