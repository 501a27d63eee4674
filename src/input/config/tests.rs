use super::*;

const GOOD: &str = "\
homeserver: https://matrix.nhs.example
user: \"@cordon:nhs.example\"
password: { env: CORDON_PASSWORD }
store_passphrase: { file: secrets/store-passphrase }
state_dir: /var/lib/cordon
playbooks_dir: playbooks
archive_dir: /var/lib/cordon/archives
control_rooms: [\"!control:nhs.example\"]
operators: [\"@it-oncall:nhs.example\"]
records_officers: [\"@records:nhs.example\"]
";

fn load(text: &str) -> Result<Config, Vec<Diagnostic>> {
    Config::from_text(Path::new("/etc/cordon/cordon.yaml"), text)
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn good_config_loads_with_defaults() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.user.as_str(), "@cordon:nhs.example");
    assert_eq!(c.time_zone, chrono_tz::Europe::London);
    assert_eq!(c.command_max_age, Duration::from_secs(900));
    assert_eq!(c.playbooks_dir, PathBuf::from("/etc/cordon/playbooks"));
    assert_eq!(
        c.store_passphrase,
        SecretSource::File(PathBuf::from("/etc/cordon/secrets/store-passphrase"))
    );
    assert_eq!(c.password, SecretSource::Env("CORDON_PASSWORD".into()));
}

#[test]
fn sync_stale_after_is_bounded() {
    assert_eq!(
        load(GOOD).unwrap().sync_stale_after,
        DEFAULT_SYNC_STALE_AFTER
    );
    let c = load(&format!("{GOOD}metrics: {{ sync_stale_after: 2m }}\n")).unwrap();
    assert_eq!(c.sync_stale_after, Duration::from_secs(120));
    for bad in ["10s", "2h"] {
        let errs = errors(&format!("{GOOD}metrics: {{ sync_stale_after: {bad} }}\n"));
        assert!(errs[0].contains("between 45s and 1h"), "{errs:?}");
    }
    let errs = errors(&format!("{GOOD}metrics: {{ sync_stale_after: soon }}\n"));
    assert!(
        errs[0].contains(":11:30: error: metrics.sync_stale_after `soon` is not a duration"),
        "{errs:?}"
    );
}

#[test]
fn metrics_listen_is_checked_and_can_be_turned_off() {
    assert_eq!(
        load(GOOD).unwrap().metrics_listen,
        Some(DEFAULT_METRICS_LISTEN)
    );
    let on = load(&format!("{GOOD}metrics: {{ listen: \"[::1]:9100\" }}\n")).unwrap();
    assert_eq!(on.metrics_listen, Some("[::1]:9100".parse().unwrap()));
    let off = load(&format!("{GOOD}metrics: {{ enabled: false }}\n")).unwrap();
    assert_eq!(off.metrics_listen, None);
    let errs = errors(&format!("{GOOD}metrics: {{ listen: localhost }}\n"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("cordon.yaml:11:20: error: metrics.listen `localhost`"),
        "{errs:#?}"
    );
    let errs = errors(&format!(
        "{GOOD}metrics: {{ enabled: false, listen: \"127.0.0.1:1\" }}\n"
    ));
    assert!(errs[0].contains("remove one of them"), "{errs:#?}");
    let errs = errors(&format!("{GOOD}metrics: {{ port: 9 }}\n"));
    assert!(errs[0].contains("port"), "{errs:#?}");
}

#[test]
fn inline_password_is_refused_with_its_line() {
    let text = GOOD.replace("{ env: CORDON_PASSWORD }", "hunter2");
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.contains("cordon.yaml:3:") && e.contains("must not be written")),
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| !e.contains("hunter2")), "{errs:#?}");
}

#[test]
fn every_problem_is_reported_at_once_with_locations() {
    let text = GOOD
        .replace("https://matrix.nhs.example", "http://matrix.nhs.example")
        .replace("\"@cordon:nhs.example\"", "cordon")
        .replace("[\"@it-oncall:nhs.example\"]", "[\"@it-oncall\"]")
        .replace("\"!control:nhs.example\"", "\"#control:nhs.example\"")
        + "time_zone: Mars/Olympus\ncommands: { max_age: soon }\n";
    let errs = errors(&text);
    for needle in [
        "cordon.yaml:1:13: error: homeserver",
        "cordon.yaml:2:7: error: user: `cordon`",
        "cordon.yaml:8:",
        "cordon.yaml:9:",
        "cordon.yaml:11:12: error: time_zone",
        "cordon.yaml:12:",
    ] {
        assert!(
            errs.iter().any(|e| e.contains(needle)),
            "{needle}: {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 6, "{errs:#?}");
}

#[test]
fn unknown_key_is_an_error() {
    let errs = errors(&format!("{GOOD}pasword_file: x\n"));
    assert!(errs.iter().any(|e| e.contains("pasword_file")), "{errs:#?}");
}

#[test]
fn plain_http_is_allowed_only_to_loopback() {
    let local = GOOD.replace("https://matrix.nhs.example", "http://127.0.0.1:8008");
    assert!(load(&local).is_ok());
    let remote = GOOD.replace("https://matrix.nhs.example", "http://10.0.0.5:8008");
    assert!(load(&remote).is_err());
}

#[test]
fn secret_needs_exactly_one_source() {
    let both = GOOD.replace(
        "{ env: CORDON_PASSWORD }",
        "{ env: CORDON_PASSWORD, file: /x }",
    );
    assert!(errors(&both).iter().any(|e| e.contains("not several")));
    let bad_env = GOOD.replace("CORDON_PASSWORD", "1-bad");
    assert!(
        errors(&bad_env)
            .iter()
            .any(|e| e.contains("environment variable"))
    );
}

#[test]
fn a_secret_may_be_a_systemd_credential() {
    let text = GOOD.replace("{ env: CORDON_PASSWORD }", "{ credential: password }");
    let c = load(&text).unwrap();
    assert_eq!(c.password, SecretSource::Credential("password".into()));
    for bad in ["../password", "\"\""] {
        let text = GOOD.replace(
            "{ env: CORDON_PASSWORD }",
            &format!("{{ credential: {bad} }}"),
        );
        assert!(
            errors(&text)
                .iter()
                .any(|e| e.contains("password.credential")),
            "{bad}"
        );
    }
    let three = GOOD.replace(
        "{ env: CORDON_PASSWORD }",
        "{ env: CORDON_PASSWORD, credential: password }",
    );
    assert!(errors(&three).iter().any(|e| e.contains("not several")));
}

#[test]
fn a_credential_is_read_from_the_directory_systemd_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    let path = credential_path(Some(dir.path().as_os_str()), "password").unwrap();
    assert_eq!(SecretSource::File(path).read().unwrap().expose(), "s3cret");
    let missing = credential_path(None, "password").unwrap_err();
    assert!(
        missing.to_string().contains("LoadCredential=password"),
        "{missing}"
    );
}

#[test]
fn lookalike_operator_is_refused() {
    // Cyrillic "о" in place of Latin "o".
    let text = GOOD.replace("@it-oncall:nhs.example", "@it-\u{43e}ncall:nhs.example");
    assert!(errors(&text).iter().any(|e| e.contains("non-ASCII")));
}

#[test]
fn secret_debug_never_shows_the_value() {
    let s = Secret("hunter2".into());
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn secret_file_trailing_newline_is_trimmed_and_empty_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "s3cret\n").unwrap();
    assert_eq!(
        SecretSource::File(f.clone()).read().unwrap().expose(),
        "s3cret"
    );
    std::fs::write(&f, "\n").unwrap();
    assert!(matches!(
        SecretSource::File(f).read(),
        Err(SecretError::FileEmpty(_))
    ));
}

#[test]
fn the_grace_after_downtime_defaults_to_ten_minutes_and_may_be_zero() {
    assert_eq!(
        load(GOOD).unwrap().grace_after_downtime,
        Duration::from_secs(600)
    );
    let zero = load(&format!(
        "{GOOD}deadlines: {{ grace_after_downtime: 0s }}\n"
    ))
    .unwrap();
    assert_eq!(zero.grace_after_downtime, Duration::ZERO);
    let errs = errors(&format!(
        "{GOOD}deadlines: {{ grace_after_downtime: 3h }}\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("deadlines.grace_after_downtime must be between 0s and 2h")),
        "{errs:#?}"
    );
}

#[test]
fn provisioning_at_once_defaults_to_eight_and_is_bounded() {
    assert_eq!(load(GOOD).unwrap().provisioning_at_once, 8);
    let one = load(&format!("{GOOD}provisioning: {{ at_once: 1 }}\n")).unwrap();
    assert_eq!(one.provisioning_at_once, 1);
    for bad in ["0", "65"] {
        let errs = errors(&format!("{GOOD}provisioning: {{ at_once: {bad} }}\n"));
        assert!(
            errs.iter().any(|e| e.contains(
                ":11:26: error: provisioning.at_once must be between 1 and 64"
            )),
            "{bad}: {errs:#?}"
        );
    }
    let errs = errors(&format!("{GOOD}provisioning: {{ at_once: many }}\n"));
    assert!(
        errs.iter().any(|e| e.contains(":11:")),
        "a word is refused where it stands: {errs:#?}"
    );
    let errs = errors(&format!("{GOOD}provisioning: {{ at_one: 4 }}\n"));
    assert!(
        errs.iter().any(|e| e.contains("at_one")),
        "a misspelt key is named: {errs:#?}"
    );
}

#[test]
fn prevention_listens_on_loopback_only_and_finds_the_status_on_the_homeserver() {
    let ok = load(&format!(
        "{GOOD}prevention: {{ listen: \"127.0.0.1:9479\", secret: {{ file: prevention.secret }} }}\n"
    ))
    .unwrap();
    let p = ok.prevention.unwrap();
    assert_eq!(p.listen, "127.0.0.1:9479".parse().unwrap());
    assert_eq!(
        p.status_url.as_str(),
        "https://matrix.nhs.example/_synapse/client/cordon/v1/status"
    );
    assert_eq!(
        p.secret,
        SecretSource::File(PathBuf::from("/etc/cordon/prevention.secret"))
    );
    let errs = errors(&format!(
        "{GOOD}prevention: {{ listen: \"0.0.0.0:9479\", secret: {{ file: s }} }}\n"
    ));
    assert!(
        errs.iter().any(|e| e.contains("is not a loopback address")),
        "{errs:#?}"
    );
    assert!(load(GOOD).unwrap().prevention.is_none());
}

#[test]
fn the_fhir_server_is_https_or_loopback_and_practitioners_are_checked_all_at_once() {
    let ok = load(&format!(
        "{GOOD}fhir:\n  base_url: https://fhir.trust.nhs.uk/R4\n  token_file: secrets/fhir\n  \
         practitioners:\n    \"@dr.patel:nhs.example\": gmc:7654321\n    \
         \"@n.jones:nhs.example\": \"https://example.org/Id/staff|A-12\"\n"
    ))
    .unwrap();
    let d = ok.fhir.delivery.as_ref().unwrap();
    assert_eq!(d.base_url.as_str(), "https://fhir.trust.nhs.uk/R4/");
    assert_eq!(
        d.token,
        Some(SecretSource::File(PathBuf::from(
            "/etc/cordon/secrets/fhir"
        )))
    );
    let gmc = ok.fhir.registration_of("@dr.patel:nhs.example").unwrap();
    assert_eq!(gmc.system, "https://fhir.hl7.org.uk/Id/gmc-number");
    assert_eq!(gmc.value, "7654321");
    assert_eq!(
        ok.fhir
            .registration_of("@n.jones:nhs.example")
            .unwrap()
            .value,
        "A-12"
    );
    assert!(ok.fhir.registration_of("@other:nhs.example").is_none());
    assert!(load(GOOD).unwrap().fhir.delivery.is_none());
    let local = load(&format!(
        "{GOOD}fhir: {{ base_url: \"http://127.0.0.1:8080/fhir\" }}\n"
    ))
    .unwrap();
    assert!(local.fhir.delivery.unwrap().token.is_none());

    let errs = errors(&format!(
        "{GOOD}fhir:\n  base_url: http://fhir.trust.nhs.uk/R4\n  token_file: a\n  \
         token: {{ file: b }}\n  practitioners:\n    \"@dr:nhs.example\": xyz:1\n    \
         \"not-a-user\": gmc:1\n"
    ));
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("must be https")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("not both")), "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("not a registration cordon knows")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.contains("`not-a-user`")), "{errs:?}");
    // Every problem with its place: file:line:col.
    assert!(
        errs.iter()
            .all(|e| e.starts_with("/etc/cordon/cordon.yaml:")),
        "{errs:?}"
    );
    let orphan = errors(&format!("{GOOD}fhir: {{ token_file: a }}\n"));
    assert!(orphan[0].contains("fhir.base_url is not"), "{orphan:?}");
}
