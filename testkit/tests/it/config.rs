//! `cordon config check` through the real binary.

use std::path::Path;
use std::process::Command;

fn cordon(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(crate::support::cordon_bin())
        .args(args)
        .output()
        .expect("run cordon");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_config_is_valid() {
    let example = cordon_testkit::repo_root().join("cordon.example.yaml");
    let (code, out, err) = cordon(&["config", "check", example.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("@cordon:nhs.example"), "{out}");
}

#[test]
fn bad_config_reports_every_problem_with_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cordon.yaml");
    std::fs::write(
        &file,
        "homeserver: ftp://matrix.nhs.example\n\
         user: \"@cordon:nhs.example\"\n\
         password: hunter2\n\
         store_passphrase: { env: STORE }\n\
         state_dir: state\n\
         playbooks_dir: playbooks\n\
         archive_dir: archives\n\
         operators: []\n",
    )
    .unwrap();
    let (code, out, err) = cordon(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    // The inline password stops deserialisation at its line; nothing else is claimed.
    assert!(err.contains("cordon.yaml:3:"), "{err}");
    assert!(err.contains("must not be written"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the secret was echoed back: {err}"
    );

    std::fs::write(
        &file,
        "homeserver: ftp://matrix.nhs.example\n\
         user: \"@cordon:nhs.example\"\n\
         password: { env: PW }\n\
         store_passphrase: { env: STORE }\n\
         state_dir: state\n\
         playbooks_dir: playbooks\n\
         archive_dir: archives\n\
         operators: []\n\
         time_zone: Europe/Londn\n",
    )
    .unwrap();
    let (code, _, err) = cordon(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cordon.yaml:1:13: error: homeserver"), "{err}");
    assert!(err.contains("cordon.yaml:9:12: error: time_zone"), "{err}");
    assert!(err.contains("at least one operator"), "{err}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let (code, _, err) = cordon(&["config", "check", "/nonexistent/cordon.yaml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/cordon.yaml"), "{err}");
}

/// A config whose homeserver refuses connections: `cordon run` logs, then exits.
fn unreachable_config(dir: &Path) -> String {
    std::fs::write(dir.join("password"), "pw").unwrap();
    std::fs::write(dir.join("store-passphrase"), "passphrase").unwrap();
    let file = dir.join("cordon.yaml");
    std::fs::write(
        &file,
        format!(
            "homeserver: http://127.0.0.1:9\n\
             user: \"@cordon:localhost\"\n\
             password: {{ file: password }}\n\
             store_passphrase: {{ file: store-passphrase }}\n\
             state_dir: state\n\
             playbooks_dir: {}\n\
             archive_dir: archives\n\
             operators: [\"@op:localhost\"]\n\
             metrics: {{ enabled: false }}\n",
            cordon_testkit::repo_root().join("playbooks").display()
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_owned()
}

#[test]
fn run_logs_one_json_object_per_line_with_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = unreachable_config(dir.path());
    let (code, _, err) = cordon(&["run", "--config", &config, "--log-format", "json"]);
    assert_ne!(code, 0, "{err}");
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.starts_with("cordon: error:"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logs.is_empty(), "{err}");
    for line in &logs {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        assert!(line["fields"].is_object(), "{line}");
    }
    // The default stays readable.
    let (_, _, human) = cordon(&["run", "--config", &config]);
    assert!(!human.lines().any(|l| l.starts_with('{')), "{human}");
    let (code, _, bad) = cordon(&["run", "--config", &config, "--log-format", "xml"]);
    assert_eq!(code, 2, "{bad}");
}
