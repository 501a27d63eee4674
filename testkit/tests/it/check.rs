//! `cordon check` from outside: exit codes, summaries, and every message at the right
//! `file:line:col`, on the sample playbooks, on fixtures with one kind of mistake each,
//! and on hostile input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FIXTURES: &str = "testkit/tests/data/playbooks";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cordon(args: &[&str]) -> Run {
    let out = Command::new(crate::support::cordon_bin())
        .args(args)
        .current_dir(cordon_testkit::repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run cordon");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check(paths: &[&str]) -> Run {
    let mut args = vec!["check"];
    args.extend_from_slice(paths);
    cordon(&args)
}

fn bad(name: &str) -> String {
    format!("{FIXTURES}/bad/{name}")
}

/// Asserts that `stderr` has an error at `file:line:col` whose message contains `needle`.
#[track_caller]
fn assert_error(run: &Run, file: &str, line: usize, col: usize, needle: &str) {
    let prefix = format!("{file}:{line}:{col}: error: ");
    let found = run
        .stderr
        .lines()
        .any(|l| l.starts_with(&prefix) && l.contains(needle));
    assert!(
        found,
        "expected `{prefix}…{needle}…` in stderr:\n{}",
        run.stderr
    );
}

fn error_count(run: &Run) -> usize {
    run.stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .count()
}

#[test]
fn sample_playbooks_are_valid_and_summarised() {
    let run = check(&[]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    for (file, summary) in [
        (
            "playbooks/mass-casualty.yaml",
            "mass-casualty (4 rooms, 9 roles, max 24h, extendable by 24h)",
        ),
        (
            "playbooks/cbrn-decontamination.yaml",
            "cbrn-decontamination (3 rooms",
        ),
        (
            "playbooks/cyber-business-continuity.yaml",
            "cyber-business-continuity (3 rooms",
        ),
    ] {
        assert!(
            run.stdout.contains(&format!("{file}: ok: {summary}")),
            "{file}: {}",
            run.stdout
        );
    }
}

#[test]
fn good_fixtures_including_the_design_sketch_pass() {
    let run = check(&[&format!("{FIXTURES}/good")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("design-sketch.yaml: ok: mass-casualty"));
    assert!(
        run.stdout
            .contains("minimal.yaml: ok: minimal (1 room, 1 role, max 8h)")
    );
}

#[test]
fn a_problem_fails_the_run_and_ends_with_a_count() {
    let run = check(&["playbooks", &bad("rooms.yaml")]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout.lines().count(),
        3,
        "valid playbooks still summarised"
    );
    assert_eq!(
        run.stderr.lines().last(),
        Some("error: 3 problems in 1 file; 3 playbooks valid")
    );
}

#[test]
fn syntax_error_points_at_the_break_and_the_unclosed_bracket() {
    let f = bad("syntax.yaml");
    let run = check(&[&f]);
    assert_eq!(run.code, 1);
    assert_error(&run, &f, 5, 9, "is the `[` on line 4 closed?");
    assert!(run.stderr.contains("5 | duration:"), "source line shown");
    assert_eq!(error_count(&run), 1);
}

#[test]
fn every_unknown_key_is_reported_with_a_suggestion() {
    let f = bad("unknown-keys.yaml");
    let run = check(&[&f]);
    assert_eq!(run.code, 1);
    assert_error(
        &run,
        &f,
        2,
        1,
        "unknown key `tittle`; did you mean `title`?",
    );
    assert_error(
        &run,
        &f,
        16,
        5,
        "unknown key `membrs`; did you mean `members`?",
    );
    assert_error(&run, &f, 17, 5, "unknown key `colour`");
    assert_error(&run, &f, 17, 5, "allowed: federate, key, members");
    assert_error(&run, &f, 1, 1, "missing required field `title`");
    assert_error(
        &run,
        &f,
        14,
        5,
        "`rooms[0]` is missing required field `members`",
    );
}

#[test]
fn every_missing_field_is_reported_once() {
    let f = bad("missing-fields.yaml");
    let run = check(&[&f]);
    assert_error(&run, &f, 1, 1, "missing required field `rooms`");
    assert_error(&run, &f, 5, 1, "`duration` is missing required field `max`");
    assert_error(
        &run,
        &f,
        10,
        3,
        "`roles.commander` is missing required field `title`",
    );
    assert_eq!(error_count(&run), 3, "{}", run.stderr);
}

#[test]
fn undefined_roles_in_trigger_members_and_moderators() {
    let f = bad("undefined-roles.yaml");
    let run = check(&[&f]);
    assert_eq!(run.code, 1);
    assert_error(
        &run,
        &f,
        4,
        13,
        "role `site-commander`, which is not defined",
    );
    assert_error(&run, &f, 4, 34, "did you mean `role:ed-lead`?");
    assert_error(
        &run,
        &f,
        19,
        26,
        "role `ed-led`, which is not defined in `roles`; did you mean `ed-lead`?",
    );
    assert_error(
        &run,
        &f,
        20,
        18,
        "moderator of room `command` refers to role `loggist`",
    );
    assert_error(
        &run,
        &f,
        13,
        3,
        "role `ed-lead` is not a member of any room",
    );
}

#[test]
fn room_without_members_duplicate_key_and_moderator_outside_members() {
    let f = bad("rooms.yaml");
    let run = check(&[&f]);
    assert_error(&run, &f, 23, 14, "room `ed` has no members");
    assert_error(
        &run,
        &f,
        24,
        10,
        "room key `command` is used twice (first on line 17)",
    );
    assert_error(
        &run,
        &f,
        20,
        18,
        "moderator `ed-lead` of room `command` is not one of its members",
    );
    assert_eq!(error_count(&run), 3, "{}", run.stderr);
}

#[test]
fn bad_cron_expressions() {
    let f = bad("cron.yaml");
    let run = check(&[&f]);
    assert_error(&run, &f, 18, 15, "cron needs 5 fields");
    assert_error(&run, &f, 20, 15, "fires more than once a minute");
    assert_error(&run, &f, 22, 15, "write days of the week as names");
    assert_error(&run, &f, 24, 15, "invalid cron expression");
    assert_error(&run, &f, 26, 15, "found 7");
}

#[test]
fn bad_durations_and_zero_where_nonsense() {
    let f = bad("durations.yaml");
    let run = check(&[&f]);
    assert_error(&run, &f, 6, 8, "duration.max `24` is not a duration");
    assert_error(&run, &f, 6, 8, "`24h`");
    assert_error(&run, &f, 7, 17, "`soon` is not a duration");
    assert_error(&run, &f, 7, 23, "must be longer than zero");
    assert_error(&run, &f, 8, 15, "duration.extend_max `forever`");
    assert_error(
        &run,
        &f,
        10,
        13,
        "retention.messages must be longer than zero",
    );
    assert_error(&run, &f, 21, 9, "archive.keep must be longer than zero");
}

#[test]
fn warn_before_and_retention_must_fit_the_incident() {
    let f = bad("time-limits.yaml");
    let run = check(&[&f]);
    assert_error(
        &run,
        &f,
        7,
        17,
        "warn_before 12h is not shorter than duration.max 12h",
    );
    assert_error(&run, &f, 7, 27, "warn_before 13h");
    assert_error(
        &run,
        &f,
        9,
        13,
        "retention.messages 2d is longer than duration.max 12h",
    );
    assert_eq!(error_count(&run), 3, "{}", run.stderr);
}

#[test]
fn malformed_user_ids() {
    let f = bad("user-ids.yaml");
    let run = check(&[&f]);
    assert_error(
        &run,
        &f,
        4,
        29,
        "`duty-manager` must be `role:<role-id>` or a Matrix user id",
    );
    assert_error(&run, &f, 4, 43, "did you mean `@duty-manager:nhs.example`?");
    assert_error(&run, &f, 13, 9, "contains whitespace");
    assert_error(&run, &f, 14, 9, "is not a valid Matrix user id");
    assert_error(&run, &f, 15, 9, "invisible characters");
    assert_error(&run, &f, 17, 9, "listed twice");
    assert!(!run.stderr.contains('\u{202e}') || run.stderr.contains("\\u{202e}"));
}

#[test]
fn invalid_age_recipients() {
    let f = bad("archive.yaml");
    let run = check(&[&f]);
    assert_error(
        &run,
        &f,
        19,
        7,
        "`age1notarealkey` is not a valid age recipient",
    );
    assert_error(&run, &f, 20, 7, "this is a SECRET key");
    assert_error(&run, &f, 21, 7, "SSH keys are not accepted");
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.contains("error:") && l.contains("AGE-SECRET-KEY-1Q")),
        "a secret key is not repeated in the message"
    );
}

#[test]
fn empty_title_trigger_and_recipients() {
    let f = bad("empty-lists.yaml");
    let run = check(&[&f]);
    assert_error(&run, &f, 2, 8, "title is empty");
    assert_error(&run, &f, 4, 12, "trigger.allowed is empty");
    assert_error(&run, &f, 18, 15, "archive.recipients is empty");
}

#[test]
fn min_greater_than_holders() {
    let f = bad("min-holders.yaml");
    let run = check(&[&f]);
    assert_error(
        &run,
        &f,
        13,
        10,
        "min is 2 but role `commander` has only 1 holder",
    );
    assert_error(
        &run,
        &f,
        16,
        10,
        "min is 1 but role `loggist` has no holders",
    );
}

#[test]
fn ids_role_ids_and_room_keys_must_be_slugs() {
    let f = bad("slugs.yaml");
    let run = check(&[&f]);
    assert_error(
        &run,
        &f,
        1,
        5,
        "playbook id `Mass_Casualty` must be lowercase letters, digits and single hyphens",
    );
    assert_error(&run, &f, 13, 3, "role id `ED Lead` must be lowercase");
    assert_error(&run, &f, 17, 10, "room key `Command` must be lowercase");
}

#[test]
fn template_mistakes_point_inside_the_text() {
    let f = bad("templates.yaml");
    let run = check(&[&f]);
    assert_error(
        &run,
        &f,
        13,
        38,
        "unknown template variable `{incidnet}` (did you mean `{incident}`?)",
    );
    assert_error(&run, &f, 16, 33, "unknown template variable `{room}`");
    assert_error(&run, &f, 20, 27, "unclosed `{`");
    assert_error(
        &run,
        &f,
        23,
        32,
        "briefing: unknown template variable `{expires_at}`",
    );
}

#[test]
fn unquoted_template_and_colon_get_a_quoting_hint() {
    let f = bad("unquoted-brace.yaml");
    let run = check(&[&f]);
    assert_error(&run, &f, 15, 11, "must be quoted");
    let f = bad("unquoted-colon.yaml");
    let run = check(&[&f]);
    assert_error(
        &run,
        &f,
        3,
        22,
        "must be quoted, e.g. title: \"Major incident: mass casualty\"",
    );
}

#[test]
fn duplicate_ids_across_files_name_the_first() {
    let dir = format!("{FIXTURES}/duplicate-id");
    let run = check(&[&dir]);
    assert_eq!(run.code, 1);
    assert_error(
        &run,
        &format!("{dir}/second.yaml"),
        1,
        5,
        &format!("playbook id `shared-id` is already used by {dir}/first.yaml:1"),
    );
    assert!(run.stdout.contains("first.yaml: ok: shared-id"));
    assert!(!run.stdout.contains(".hidden.yaml") && !run.stderr.contains(".hidden.yaml"));
    assert!(!run.stderr.contains("notes.txt"));
}

#[test]
fn missing_path_and_directory_without_playbooks() {
    let run = check(&["no/such/dir"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("no/such/dir: error: no such file or directory"),
        "{}",
        run.stderr
    );
    let empty = format!("{FIXTURES}/empty-dir");
    let run = check(&[&empty]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("directory has no playbooks"),
        "{}",
        run.stderr
    );
}

#[test]
fn two_documents_in_one_file() {
    let f = bad("two-documents.yaml");
    let run = check(&[&f]);
    assert_error(&run, &f, 4, 1, "a second YAML document");
    assert_eq!(error_count(&run), 1);
}

#[test]
fn alias_bomb_is_one_clean_error() {
    let f = bad("alias-bomb.yaml");
    let run = check(&[&f]);
    assert_eq!(run.code, 1);
    assert_eq!(error_count(&run), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("too complex") || run.stderr.contains("aliases"),
        "{}",
        run.stderr
    );
}

#[test]
fn empty_file_is_one_clear_error() {
    let f = bad("empty.yaml");
    let run = check(&[&f]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with(&format!("{f}: error: file is empty")),
        "{}",
        run.stderr
    );
    assert_eq!(error_count(&run), 1);
}

fn temp_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(bytes).expect("write");
    path
}

#[test]
fn random_bytes_are_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Deterministic pseudo-random bytes (xorshift), including invalid UTF-8.
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let path = temp_file(dir.path(), "random.yaml", &bytes);
    let run = check(&[path.to_str().expect("utf-8 path")]);
    assert_eq!(run.code, 1);
    assert_eq!(error_count(&run), 1, "{}", run.stderr);
    assert!(run.stderr.contains("not UTF-8"), "{}", run.stderr);
}

#[test]
fn fifty_megabyte_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.yaml");
    let f = std::fs::File::create(&path).expect("create");
    f.set_len(50 * 1024 * 1024).expect("set_len");
    let run = check(&[path.to_str().expect("utf-8 path")]);
    assert_eq!(run.code, 1);
    assert_eq!(error_count(&run), 1);
    assert!(
        run.stderr.contains("file is too large (52428800 bytes)"),
        "{}",
        run.stderr
    );
}

#[test]
fn deeply_nested_brackets_are_one_clean_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from("id: ");
    text.push_str(&"[".repeat(100_000));
    text.push_str(&"]".repeat(100_000));
    let path = temp_file(dir.path(), "nested.yaml", text.as_bytes());
    let run = check(&[path.to_str().expect("utf-8 path")]);
    assert_eq!(run.code, 1);
    assert_eq!(error_count(&run), 1, "{}", run.stderr);
}

#[test]
fn devices_and_fifos_are_refused_not_read() {
    let run = check(&["/dev/zero"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("/dev/zero: error: is not a regular file"),
        "{}",
        run.stderr
    );
}

#[test]
fn other_files_are_still_checked_after_a_broken_one() {
    let run = check(&[
        &bad("syntax.yaml"),
        &bad("empty.yaml"),
        "playbooks/mass-casualty.yaml",
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("mass-casualty.yaml: ok"));
    assert!(run.stderr.contains("syntax.yaml:5:9"));
    assert!(run.stderr.contains("empty.yaml: error: file is empty"));
}

fn yaml_to_json(path: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(cordon_testkit::repo_root().join(path)).expect("read sample");
    serde_saphyr::from_str::<serde_json::Value>(&text).expect("sample is YAML")
}

#[test]
fn json_schema_accepts_samples_and_rejects_unknown_keys() {
    let run = cordon(&["playbook", "schema"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    for sample in [
        "playbooks/mass-casualty.yaml",
        "playbooks/cbrn-decontamination.yaml",
        "playbooks/cyber-business-continuity.yaml",
        "testkit/tests/data/playbooks/good/minimal.yaml",
        "testkit/tests/data/playbooks/good/design-sketch.yaml",
    ] {
        let instance = yaml_to_json(sample);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{sample}: {errors:?}");
    }
    let mut instance = yaml_to_json("playbooks/mass-casualty.yaml");
    instance["rooms"][0]["membrs"] = serde_json::json!(["site-commander"]);
    assert!(!validator.is_valid(&instance), "unknown key in a room");
    let mut instance = yaml_to_json("playbooks/mass-casualty.yaml");
    instance["duration"]["max"] = serde_json::json!("soon");
    assert!(!validator.is_valid(&instance), "duration pattern");
    let mut instance = yaml_to_json("playbooks/mass-casualty.yaml");
    instance.as_object_mut().expect("object").remove("archive");
    assert!(!validator.is_valid(&instance), "missing required field");
    let mut instance = yaml_to_json("playbooks/mass-casualty.yaml");
    instance["verification"] = serde_json::json!("maybe");
    assert!(!validator.is_valid(&instance), "verification enum");
}

/// A bad enum word is reported beside an unknown key elsewhere: documented enum
/// variants render as `oneOf` constants in the schema, which the walk once skipped.
#[test]
fn bad_enum_word_is_reported_alongside_other_shape_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flood.yaml");
    std::fs::write(
        &file,
        "id: flood\ntitle: Flood\ntrigger: { allowed: [role:gold] }\nverification: maybe\n\
         duration: { max: 6h }\nretention: { messages: 1h }\n\
         roles:\n  gold: { title: Gold, holders: [\"@g:nhs.example\"], colour: red }\n\
         rooms:\n  - { key: command, name: Command, members: [gold] }\n\
         archive: { recipients: [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"] }\n",
    )
    .unwrap();
    let run = check(&[file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let name = file.to_str().unwrap();
    assert!(
        run.stderr.contains(&format!(
            "{name}:4:15: error: `verification`: unknown value `maybe`"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("{name}:8:53: error: unknown key `colour`")),
        "{}",
        run.stderr
    );
}

/// The command record's keys: roles that do not exist (with the closest suggested), a
/// role listed twice, a grace as long as the cycle, and an unknown `methane` word, each
/// at its line and column, all in one run.
#[test]
fn command_record_keys_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let head = "id: flood\ntitle: Flood\ntrigger: { allowed: [role:gold] }\n\
                duration: { max: 6h }\nretention: { messages: 1h }\n\
                roles:\n  gold: { title: Gold, holders: [\"@g:nhs.example\"] }\n\
                rooms:\n  - { key: command, name: Command, members: [gold] }\n\
                archive: { recipients: [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"] }\n";
    let semantic = dir.path().join("record.yaml");
    std::fs::write(
        &semantic,
        format!(
            "{head}decisions: {{ by: [golf, gold, gold] }}\n\
             sitrep: {{ every: 30m, from: silver, grace: 45m }}\n"
        ),
    )
    .unwrap();
    let shape = dir.path().join("methane.yaml");
    std::fs::write(&shape, format!("{head}methane: always\n")).unwrap();
    let (a, b) = (semantic.to_str().unwrap(), shape.to_str().unwrap());
    let run = check(&[a, b]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_error(&run, a, 11, 19, "decisions.by refers to role `golf`");
    assert_error(&run, a, 11, 19, "did you mean `gold`?");
    assert_error(
        &run,
        a,
        11,
        31,
        "role `gold` is listed twice in decisions.by",
    );
    assert_error(&run, a, 12, 29, "sitrep.from refers to role `silver`");
    assert_error(
        &run,
        a,
        12,
        44,
        "sitrep.grace (45m) must be shorter than sitrep.every (30m)",
    );
    assert_error(&run, b, 11, 10, "`methane`: unknown value `always`");
}

const OFFICER_KEY: &str = "age1t8v5qss4t65exu523uky9wesc5jyk3dkst9hnf75xxyfxcm374hqkx2632";

#[test]
fn playbook_new_writes_a_playbook_that_checks_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flood.yaml");
    let path = file.to_str().unwrap();
    let made = cordon(&[
        "playbook",
        "new",
        "flood-evacuation",
        "--title",
        "Flooding: site evacuation",
        "--server",
        "nhs.example",
        "--recipient",
        OFFICER_KEY,
        "--out",
        path,
    ]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(made.stderr.contains("cordon check"), "{}", made.stderr);
    let checked = check(&[path]);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("id: flood-evacuation"));
    assert!(text.contains("@incident-lead:nhs.example"));

    let again = cordon(&["playbook", "new", "other", "--out", path]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("never overwritten"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn playbook_new_without_a_key_is_refused_by_check_and_bad_input_writes_nothing() {
    let out = cordon(&["playbook", "new", "flood"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flood.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let checked = check(&[file.to_str().unwrap()]);
    assert_eq!(checked.code, 1);
    assert!(
        checked.stderr.contains("archive.recipients is empty"),
        "{}",
        checked.stderr
    );

    for args in [
        &["playbook", "new", "Flood Plan"][..],
        &["playbook", "new", "flood", "--recipient", "age1nope"][..],
        &["playbook", "new", "flood", "--title", "a\"b"][..],
    ] {
        let bad_out = dir.path().join("bad.yaml");
        let mut args = args.to_vec();
        args.extend(["--out", bad_out.to_str().unwrap()]);
        let run = cordon(&args);
        assert_ne!(run.code, 0, "{args:?}");
        assert!(
            run.stderr.contains("nothing was written"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!bad_out.exists(), "{args:?}");
    }
}

#[test]
fn explain_prints_the_plan_of_each_valid_playbook_without_a_server() {
    let run = cordon(&[
        "check",
        "--explain",
        "--name",
        "Tram crash",
        "--at",
        "2026-12-03T12:10:00Z",
        "--time-zone",
        "Europe/London",
        "playbooks/mass-casualty.yaml",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for needle in [
        "playbooks/mass-casualty.yaml: ok: mass-casualty",
        "(mc-2222), declared Thu 03 Dec 12:10 GMT by <commander>. Times in Europe/London.",
        "Runs for: 24h, closing Fri 04 Dec 12:10 GMT unless extended.",
        "redacted 12h after it is sent",
        "Rooms (4)",
        "1. command: \"Tram crash - Command\" (this homeserver only)",
        "2. ed-resus: \"Tram crash - ED and resus\"",
        "4. site-comms: \"Tram crash - Site and communications\"",
        "<commander>",
        "`*/30 * * * *`: first Thu 03 Dec 12:30 GMT, Thu 03 Dec 13:00 GMT, Thu 03 Dec 13:30 GMT",
        "`0 * * * *`: first Thu 03 Dec 13:00 GMT",
        "Stand-down (by `!cordon standdown` or at the close)",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?} in:\n{}",
            run.stdout
        );
    }
    // Every holder of a member role is listed under the rooms that invite them.
    let pb =
        std::fs::read_to_string(cordon_testkit::repo_root().join("playbooks/mass-casualty.yaml"))
            .expect("read");
    let holders: Vec<&str> = pb
        .lines()
        .filter(|l| l.trim_start().starts_with("holders:"))
        .flat_map(|l| l.split('"'))
        .filter(|s| s.starts_with('@') && s.contains(':'))
        .collect();
    assert!(holders.len() > 10, "{holders:?}");
    for holder in holders {
        assert!(
            run.stdout.contains(&format!("       {holder}")),
            "{holder} is not invited anywhere:\n{}",
            run.stdout
        );
    }
}

#[test]
fn explain_with_a_bad_playbook_reports_it_explains_the_rest_and_fails() {
    let run = cordon(&[
        "check",
        "--explain",
        "playbooks/cbrn-decontamination.yaml",
        &bad("undefined-roles.yaml"),
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("cbrn-decontamination: CBRN"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Rooms (3)"), "{}", run.stdout);
    assert_eq!(run.stdout.matches("\nRooms (").count(), 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("undefined-roles.yaml:"),
        "{}",
        run.stderr
    );
}

#[test]
fn explain_options_are_checked() {
    let run = cordon(&["check", "--name", "x", "playbooks"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--explain"), "{}", run.stderr);
    let run = cordon(&[
        "check",
        "--explain",
        "--time-zone",
        "Mars/Olympus",
        "playbooks",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("Mars/Olympus"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let run = cordon(&[
        "check",
        "--explain",
        "--commander",
        "not-a-user",
        "playbooks",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
