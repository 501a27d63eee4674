use super::*;

#[test]
fn user_ids() {
    assert!(parse_user_id("@a.patel:nhs.example").is_ok());
    for bad in [
        "a.patel:nhs.example",
        "@a patel:nhs.example",
        "@a.patel",
        "@:nhs.example",
        "@a\u{202e}b:nhs.example",
        "@a\u{200b}:nhs.example",
        "@A.Patel:nhs.example",
        "@a:",
        "",
    ] {
        assert!(parse_user_id(bad).is_err(), "{bad:?}");
    }
    assert!(
        parse_user_id("@A.Patel:nhs.example")
            .unwrap_err()
            .contains("@a.patel:nhs.example")
    );
}
