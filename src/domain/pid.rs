//! Patient-identifiable data in chat: NHS numbers (with their modulus-11 check digit)
//! and full dates of birth. cordon looks for them in incident-room messages only to
//! nudge the sender towards initials, or the bed and ward; it never keeps or repeats
//! what it found.
//!
//! The patterns are a regular expression (the `regex` crate); the check digit and the
//! calendar are checked here, since no crate does the NHS's modulus 11.

use std::sync::LazyLock;

use chrono::{Datelike, NaiveDate};
use regex::Regex;

/// Ten digits, or three, three and four separated by single spaces (as the NHS prints
/// them); the digits around the match are checked separately, so `12345678901` is not
/// read as an NHS number inside a longer one.
static NHS_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d{3} \d{3} \d{4}|\d{10}").unwrap_or_else(|e| unreachable!("{e}"))
});

/// A full date: day, month and four-digit year (`12/03/1984`, `12-03-1984`,
/// `12.03.1984`), ISO (`1984-03-12`), or written (`12 March 1984`, `12th Mar 1984`).
static FULL_DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        (?P<d>\d{1,2})[/.\-](?P<m>\d{1,2})[/.\-](?P<y>\d{4})
        | (?P<iy>\d{4})-(?P<im>\d{2})-(?P<id>\d{2})
        | (?P<wd>\d{1,2})(?:st|nd|rd|th)?\s+(?P<wm>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?,?\s+(?P<wy>\d{4})",
    )
    .unwrap_or_else(|e| unreachable!("{e}"))
});

/// Words that say the date after them is a date of birth.
static BIRTH_WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:d\.?o\.?b\.?|date of birth|born)\W*$")
        .unwrap_or_else(|e| unreachable!("{e}"))
});

/// True when `digits` (ten ASCII digits) is a valid NHS number: the first nine digits
/// weighted 10 down to 2, summed, taken modulo 11 and subtracted from 11 give the tenth
/// (11 reads as 0; 10 means no valid number has those nine digits).
pub fn nhs_check_digit_ok(digits: &str) -> bool {
    let d: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 10 || digits.len() != 10 {
        return false;
    }
    let sum: u32 = d[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(digit, weight)| digit * weight)
        .sum();
    match 11 - sum % 11 {
        11 => d[9] == 0,
        10 => false,
        check => d[9] == check,
    }
}

/// A checked NHS number: ten digits with a valid check digit. Its `Debug` does not show
/// the digits, so that a command logged or printed for debugging never carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct NhsNumber(String);

impl NhsNumber {
    /// Checks an NHS number as a person types it ([`parse_nhs_number`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_nhs_number(text).map(Self)
    }

    /// The ten digits.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NhsNumber(…)")
    }
}

/// An NHS number as a person types it (`943 476 5919` or `9434765919`), checked: the
/// ten digits, or why it is not one.
pub fn parse_nhs_number(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let digits: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != 10 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "an NHS number is ten digits (like 943 476 5919); {} is not",
            if trimmed.chars().count() > 20 {
                "that"
            } else {
                trimmed
            }
        ));
    }
    if !nhs_check_digit_ok(&digits) {
        return Err(
            "that is not a valid NHS number: its check digit does not match (a digit may \
             be mistyped)"
                .to_owned(),
        );
    }
    Ok(digits)
}

/// What a message holds that identifies a patient (counts only, never the values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// Valid NHS numbers.
    pub nhs_numbers: usize,
    /// Full dates of birth.
    pub dates_of_birth: usize,
}

impl Found {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.nhs_numbers == 0 && self.dates_of_birth == 0
    }

    /// What was found, in words (`an NHS number and a date of birth`).
    pub fn words(&self) -> String {
        match (self.nhs_numbers > 0, self.dates_of_birth > 0) {
            (true, true) => "an NHS number and a date of birth".to_owned(),
            (true, false) => "an NHS number".to_owned(),
            (false, true) => "a date of birth".to_owned(),
            (false, false) => "nothing".to_owned(),
        }
    }

    /// The kinds found, as the audit names them.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.nhs_numbers > 0 {
            out.push("nhs-number");
        }
        if self.dates_of_birth > 0 {
            out.push("date-of-birth");
        }
        out
    }
}

/// Looks for NHS numbers and full dates of birth in `text`, written on `today`.
///
/// A full date counts as a date of birth when the words before it say so (`DOB`, `date
/// of birth`, `born`), or when it is more than a year before `today`: the dates an
/// incident's messages carry otherwise (today's, a shift's, a theatre list's) are
/// recent, and a patient's birthday is not.
pub fn scan(text: &str, today: NaiveDate) -> Found {
    let mut found = Found::default();
    let bytes = text.as_bytes();
    let digit_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
    for m in NHS_NUMBER.find_iter(text) {
        let before = m.start().checked_sub(1);
        if digit_at(before) || digit_at(Some(m.end())) {
            continue;
        }
        let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
        if nhs_check_digit_ok(&digits) {
            found.nhs_numbers += 1;
        }
    }
    let year_ago = today - chrono::Days::new(366);
    for c in FULL_DATE.captures_iter(text) {
        let Some(whole) = c.get(0) else { continue };
        if digit_at(whole.start().checked_sub(1)) || digit_at(Some(whole.end())) {
            continue;
        }
        let num = |name: &str| c.name(name).and_then(|m| m.as_str().parse::<u32>().ok());
        let date = if let (Some(d), Some(m), Some(y)) = (num("d"), num("m"), num("y")) {
            ymd(y, m, d)
        } else if let (Some(y), Some(m), Some(d)) = (num("iy"), num("im"), num("id")) {
            ymd(y, m, d)
        } else if let (Some(d), Some(m), Some(y)) = (
            num("wd"),
            c.name("wm").and_then(|m| month(m.as_str())),
            num("wy"),
        ) {
            ymd(y, m, d)
        } else {
            None
        };
        let Some(date) = date else { continue };
        if date.year() < 1900 || date > today {
            continue;
        }
        let said_so = BIRTH_WORD.is_match(&text[..whole.start()]);
        if said_so || date < year_ago {
            found.dates_of_birth += 1;
        }
    }
    found
}

fn ymd(y: u32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
}

/// The month a written name or abbreviation means.
fn month(name: &str) -> Option<u32> {
    let n = name.to_ascii_lowercase();
    let months = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    months
        .iter()
        .position(|m| n.starts_with(m))
        .and_then(|i| u32::try_from(i + 1).ok())
}

#[cfg(test)]
mod tests;
