use super::*;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 4).unwrap()
}

#[test]
fn the_check_digit_is_modulus_11() {
    for valid in ["9434765919", "9434765870", "4010232137", "9000000009"] {
        assert!(nhs_check_digit_ok(valid), "{valid}");
    }
    // A mistyped digit, two swapped digits, and nine digits whose check would be 10.
    for invalid in [
        "9434765918",
        "9434765991",
        "4857773456",
        "123456789",
        "94347659190",
    ] {
        assert!(!nhs_check_digit_ok(invalid), "{invalid}");
    }
}

#[test]
fn a_typed_nhs_number_is_read_with_or_without_spaces() {
    assert_eq!(parse_nhs_number("943 476 5919").unwrap(), "9434765919");
    assert_eq!(parse_nhs_number(" 9434765919 ").unwrap(), "9434765919");
    assert!(
        parse_nhs_number("943 476 5918")
            .unwrap_err()
            .contains("check digit")
    );
    assert!(
        parse_nhs_number("94347659")
            .unwrap_err()
            .contains("ten digits")
    );
    assert!(
        parse_nhs_number("943-476-591X")
            .unwrap_err()
            .contains("ten digits")
    );
}

#[test]
fn nhs_numbers_are_found_spaced_or_not_and_only_when_valid() {
    let found = scan("Pt 943 476 5919 to CT, then 9434765870 to theatre", today());
    assert_eq!(found.nhs_numbers, 2);
    // A wrong check digit, a phone number and a longer number are not NHS numbers.
    for text in [
        "Pt 943 476 5918 to CT",
        "Ring 020 7946 0958 or 07700 900123",
        "Ref 94347659190",
        "Bed 12, 3 units O neg",
    ] {
        assert_eq!(scan(text, today()).nhs_numbers, 0, "{text}");
    }
}

#[test]
fn a_date_of_birth_is_found_by_its_words_or_its_age() {
    for text in [
        "DOB 12/03/1984",
        "d.o.b. 1984-03-12",
        "born 12 March 1984",
        "Female, 12th Mar 1984, query pelvic fracture",
        "Child born 02/12/2026 to theatre",
    ] {
        assert_eq!(scan(text, today()).dates_of_birth, 1, "{text}");
    }
    // Recent dates are an incident's own (today's, a list's); impossible dates and
    // future ones are not birthdays.
    for text in [
        "Theatre list for 04/12/2026",
        "Major incident declared 4 December 2026",
        "Next review 2027-01-05",
        "Ref 31/02/1984",
    ] {
        assert_eq!(scan(text, today()).dates_of_birth, 0, "{text}");
    }
}

#[test]
fn what_was_found_is_said_without_its_value() {
    let found = scan("943 476 5919 DOB 12/03/1984", today());
    assert_eq!(found.words(), "an NHS number and a date of birth");
    assert_eq!(found.kinds(), ["nhs-number", "date-of-birth"]);
    assert!(scan("nothing here", today()).is_empty());
}
