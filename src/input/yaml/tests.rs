use super::*;
use std::io::Write;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Inner {
    /// A.
    name: Located<String>,
    /// B.
    #[serde(default)]
    count: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Outer {
    /// Id.
    id: Located<String>,
    /// Items.
    items: Vec<Inner>,
}

fn p() -> &'static Path {
    Path::new("t.yaml")
}

#[test]
fn located_records_line_and_column() {
    let o: Outer = from_str(
        p(),
        "id: x\nitems:\n  - name: y\n  - name: z\n    count: 2\n",
    )
    .unwrap();
    assert_eq!(o.items[1].count, Some(2));
    assert_eq!((o.id.line, o.id.column), (1, 5));
    assert_eq!((o.items[0].name.line, o.items[0].name.column), (3, 11));
}

#[test]
fn every_unknown_key_and_missing_field_is_reported() {
    let text = "id: x\nitems:\n  - nmae: y\n  - name: z\n    cuont: 2\ncolour: red\n";
    let errs = from_str_checked::<Outer>(p(), text).unwrap_err();
    let shown: Vec<String> = errs
        .iter()
        .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
        .collect();
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("3:5 unknown key `nmae`; did you mean `name`?")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("3:5 `items[0]` is missing required field `name`")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("5:5 unknown key `cuont`; did you mean `count`?")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("6:1 unknown key `colour`")),
        "{shown:#?}"
    );
}

#[test]
fn wrong_types_are_reported_with_their_path() {
    let errs = from_str_checked::<Outer>(p(), "id: [a]\nitems: {}\n").unwrap_err();
    let shown: Vec<String> = errs
        .iter()
        .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
        .collect();
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("1:5 `id`: expected text, found a list")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("2:8 `items`: expected a list")),
        "{shown:#?}"
    );
}

#[test]
fn empty_and_whitespace_files_are_one_clear_error() {
    for text in ["", "\n\n  \n", "# only a comment\n"] {
        let errs = from_str::<Outer>(p(), text).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].message.contains("empty") || errs[0].message.contains("end of file"),
            "{:?}",
            errs[0]
        );
    }
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        text.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    text.push_str("id: *i\nitems: []\n");
    let errs = from_str_checked::<Outer>(p(), &text).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].line > 0);
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("id: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let errs = from_str_checked::<Outer>(p(), &text).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    let text = format!("id: {}\n", "[".repeat(100_000));
    assert_eq!(from_str_checked::<Outer>(p(), &text).unwrap_err().len(), 1);
}

#[test]
fn read_bounded_refuses_binary_empty_large_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, [0xff, 0xfe, 0x00, 0x9f]).unwrap();
    assert!(
        read_bounded(&bin)
            .unwrap_err()
            .message
            .contains("not UTF-8")
    );
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    assert!(read_bounded(&empty).unwrap_err().message.contains("empty"));
    let big = dir.path().join("big.yaml");
    let mut f = File::create(&big).unwrap();
    f.write_all(&vec![b'a'; (MAX_FILE_BYTES + 1) as usize])
        .unwrap();
    assert!(
        read_bounded(&big)
            .unwrap_err()
            .message
            .contains("too large")
    );
    assert!(
        read_bounded(Path::new("/dev/zero"))
            .unwrap_err()
            .message
            .contains("not a regular file")
    );
    assert!(
        read_bounded(dir.path())
            .unwrap_err()
            .message
            .contains("directory")
    );
    assert!(
        read_bounded(&dir.path().join("missing.yaml"))
            .unwrap_err()
            .message
            .contains("no such file")
    );
}

#[test]
fn positions_round_trip() {
    let text = "ab\ncdé\nf";
    for (line, col) in [(1, 1), (2, 3), (2, 4), (3, 1)] {
        let b = byte_of_line_col(text, line, col).unwrap();
        assert_eq!(line_col_of_byte(text, b), (line, col));
    }
}

#[test]
fn error_inside_a_block_string_points_at_the_text() {
    let text = "t: |\n  hello\n  {nope} there\n";
    #[derive(Deserialize)]
    struct T {
        t: Located<String>,
    }
    let t: T = from_str(p(), text).unwrap();
    let offset = t.t.value.find("{nope").unwrap();
    let d = t.t.error_at_text(p(), text, offset, "{nope", "bad");
    assert_eq!((d.line, d.column), (3, 3));
}

#[test]
fn quote_escapes_terminal_controls() {
    assert_eq!(quote("a\u{1b}b\u{202e}"), "`a\\u{1b}b\\u{202e}`");
}

#[test]
fn closest_suggests_typos_only() {
    assert_eq!(
        closest("membrs", ["members", "moderators"]),
        Some("members")
    );
    assert_eq!(closest("zzz", ["members", "moderators"]), None);
    assert_eq!(closest("nmae", ["name", "names"]), Some("name"));
}
