use super::*;

#[test]
fn write_new_writes_only_plain_names_under_the_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    for bad in [
        "rooms/../../x.merged.jsonl",
        "../x",
        "/tmp/x",
        "rooms/.hidden",
        "a/b/c",
        "",
        "rooms//x",
        "rooms/x\\..\\y",
    ] {
        assert!(
            matches!(
                write_new(&out, bad, |f| f.write_all(b"x")),
                Err(ArchiveError::UnsafePath(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    write_new(&out, "rooms/command.merged.jsonl", |f| f.write_all(b"x")).unwrap();
    assert!(out.join("rooms/command.merged.jsonl").is_file());
}
