use super::*;
use chrono::TimeZone;

fn t(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0)
        .single()
        .unwrap()
}

fn incident(state: State, held: bool, failed_step: Option<State>) -> Incident {
    let mut i = Incident::new(
        IncidentId::parse("mc-4k7p").unwrap(),
        NewIncident {
            playbook: "mass-casualty".into(),
            display_name: "Tram crash".into(),
            control_room: "!control".into(),
            commander: "@a:hs".into(),
            expires_at: t(10),
            exercise: false,
        },
        t(1),
    );
    i.state = state;
    if state == State::Failed {
        i.failure = failed_step.map(|step| Failure {
            step,
            reason: "boom".into(),
            at: t(2),
        });
    }
    if held {
        i.hold = Some(Hold {
            reason: "inquest 42".into(),
            by: "@ro:hs".into(),
            since: t(2),
        });
    }
    if matches!(state, State::Destroyed | State::Archived) {
        i.archive = Some(ArchiveInfo {
            sha256: "ab".into(),
            location: "a.age".into(),
            keep_until: t(5),
            contents: None,
        });
    }
    i
}

/// A valid example of each event kind (the times pass the extra checks).
fn example(kind: EventKind) -> Event {
    match kind {
        EventKind::Provisioned => Event::Provisioned,
        EventKind::Failed => Event::Failed {
            reason: "createRoom 500".into(),
        },
        EventKind::Extended => Event::Extended { new_expiry: t(14) },
        EventKind::RosterChanged => Event::RosterChanged {
            commander: Some("@b:hs".into()),
        },
        EventKind::StandDown => Event::StandDown { by: "@a:hs".into() },
        EventKind::Archived => Event::Archived(ArchiveInfo {
            sha256: "cd".into(),
            location: "b.age".into(),
            keep_until: t(5),
            contents: None,
        }),
        EventKind::Destroyed => Event::Destroyed {
            purge_pending: false,
        },
        EventKind::Closed => Event::Closed,
        EventKind::Retry => Event::Retry,
        EventKind::HoldSet => Event::HoldSet {
            reason: "inquest 43".into(),
            by: "@ro:hs".into(),
        },
        EventKind::HoldReleased => Event::HoldReleased {
            by: "@op:hs".into(),
        },
    }
}

#[derive(Debug, PartialEq)]
enum Expect {
    To(State),
    Illegal,
    NotFailed,
    Held,
    NotHeld,
}

/// The expected outcome, written out from the DESIGN.md table independently of
/// [`target`]. `step` is the failed step recorded for `failed`.
fn expected(state: State, kind: EventKind, held: bool, step: State) -> Expect {
    use EventKind as E;
    use Expect::*;
    use State as S;
    let legal: &[(State, EventKind, State)] = &[
        (S::Provisioning, E::Provisioned, S::Active),
        (S::Provisioning, E::Failed, S::Failed),
        (S::Active, E::Extended, S::Active),
        (S::Active, E::RosterChanged, S::Active),
        (S::Active, E::StandDown, S::StandingDown),
        (S::StandingDown, E::Archived, S::Archived),
        (S::StandingDown, E::Failed, S::Failed),
        (S::Archived, E::Destroyed, S::Destroyed),
        (S::Destroyed, E::Closed, S::Closed),
        (S::Failed, E::StandDown, S::StandingDown),
    ];
    if state == S::Closed {
        return Illegal;
    }
    match kind {
        E::HoldSet => return To(state),
        E::HoldReleased => return if held { To(state) } else { NotHeld },
        E::Retry => {
            return if state == S::Failed {
                To(step)
            } else {
                NotFailed
            };
        }
        _ => {}
    }
    match legal.iter().find(|(s, e, _)| *s == state && *e == kind) {
        Some((_, E::Destroyed | E::Closed, _)) if held => Held,
        Some((_, _, to)) => To(*to),
        None => Illegal,
    }
}

#[test]
fn every_state_and_event_pair_matches_the_design_table() {
    let mut checked = 0;
    for state in State::ALL {
        for kind in EventKind::ALL {
            for held in [false, true] {
                for step in [State::Provisioning, State::StandingDown] {
                    if held && state == State::Closed {
                        continue; // unreachable: a held incident cannot close
                    }
                    let mut inc = incident(state, held, Some(step));
                    let before = inc.clone();
                    let got = inc.apply(example(kind), t(6));
                    let want = expected(state, kind, held, step);
                    let ctx = format!("{state} + {kind} (held: {held}, step: {step})");
                    match (&got, &want) {
                        (Ok(tr), Expect::To(to)) => {
                            assert_eq!(tr.to, *to, "{ctx}");
                            assert_eq!(tr.from, state, "{ctx}");
                            assert_eq!(tr.event, kind, "{ctx}");
                            assert_eq!(inc.state, *to, "{ctx}");
                            assert_eq!(inc.updated_at, t(6), "{ctx}");
                        }
                        (Err(TransitionError::Illegal { from, to, event }), Expect::Illegal) => {
                            assert_eq!((*from, *event), (state, kind), "{ctx}");
                            assert_eq!(*to, nominal_target(state, kind), "{ctx}");
                        }
                        (Err(TransitionError::NotFailed { from }), Expect::NotFailed) => {
                            assert_eq!(*from, state, "{ctx}");
                        }
                        (Err(TransitionError::Held { from, .. }), Expect::Held) => {
                            assert_eq!(*from, state, "{ctx}");
                        }
                        (Err(TransitionError::NotHeld), Expect::NotHeld) => {}
                        _ => panic!("{ctx}: got {got:?}, expected {want:?}"),
                    }
                    if got.is_err() {
                        assert_eq!(inc, before, "{ctx}: a refused event changed the record");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 7 * 11 * 2 * 2 - 11 * 2);
}

#[test]
fn target_table_agrees_with_apply_for_every_pair() {
    for state in State::ALL {
        for kind in EventKind::ALL {
            let t = target(state, kind, Some(State::Provisioning));
            let want = expected(state, kind, true, State::Provisioning);
            match want {
                Expect::To(s) => assert_eq!(t, Some(s), "{state} + {kind}"),
                Expect::Held | Expect::NotHeld => assert!(t.is_some(), "{state} + {kind}"),
                Expect::Illegal | Expect::NotFailed => assert_eq!(t, None, "{state} + {kind}"),
            }
        }
    }
}

#[test]
fn failure_records_the_step_and_retry_returns_to_it() {
    for step in [State::Provisioning, State::StandingDown] {
        let mut inc = incident(step, false, None);
        inc.apply(
            Event::Failed {
                reason: "timeout".into(),
            },
            t(3),
        )
        .unwrap();
        assert_eq!(inc.state, State::Failed);
        let failure = inc.failure.clone().unwrap();
        assert_eq!(
            (failure.step, failure.reason.as_str(), failure.at),
            (step, "timeout", t(3))
        );
        let tr = inc.apply(Event::Retry, t(4)).unwrap();
        assert_eq!((tr.from, tr.to), (State::Failed, step));
        assert_eq!(inc.state, step);
        assert_eq!(inc.failure, None);
    }
}

#[test]
fn failed_without_a_recorded_step_cannot_retry_but_can_stand_down() {
    let mut inc = incident(State::Failed, false, None);
    assert_eq!(
        inc.apply(Event::Retry, t(4)),
        Err(TransitionError::NotFailed {
            from: State::Failed
        })
    );
    inc.apply(Event::StandDown { by: "@a:hs".into() }, t(4))
        .unwrap();
    assert_eq!(inc.state, State::StandingDown);
    assert_eq!(inc.stood_down_by.as_deref(), Some("@a:hs"));
    assert_eq!(inc.failure, None);
}

#[test]
fn extension_moves_expiry_and_adds_up() {
    let mut inc = incident(State::Active, false, None);
    inc.apply(Event::Extended { new_expiry: t(12) }, t(3))
        .unwrap();
    inc.apply(Event::Extended { new_expiry: t(13) }, t(3))
        .unwrap();
    assert_eq!(inc.expires_at, t(13));
    assert_eq!(inc.extended_total(), TimeDelta::hours(3));
    let err = inc.apply(Event::Extended { new_expiry: t(13) }, t(3));
    assert_eq!(
        err,
        Err(TransitionError::ExtensionNotLater {
            current: t(13),
            new: t(13)
        })
    );
}

#[test]
fn close_waits_for_the_keep_time() {
    let mut inc = incident(State::Destroyed, false, None);
    assert_eq!(
        inc.apply(Event::Closed, t(4)),
        Err(TransitionError::KeepTimeNotOver {
            keep_until: Some(t(5))
        })
    );
    assert_eq!(inc.state, State::Destroyed);
    inc.apply(Event::Closed, t(5)).unwrap();
    assert_eq!(inc.state, State::Closed);

    let mut no_archive = incident(State::Destroyed, false, None);
    no_archive.archive = None;
    assert_eq!(
        no_archive.apply(Event::Closed, t(23)),
        Err(TransitionError::KeepTimeNotOver { keep_until: None })
    );
}

#[test]
fn hold_blocks_destroy_and_close_until_released() {
    let mut inc = incident(State::Archived, false, None);
    inc.apply(
        Event::HoldSet {
            reason: "coroner".into(),
            by: "@ro:hs".into(),
        },
        t(3),
    )
    .unwrap();
    assert!(inc.is_held());
    let err = inc
        .apply(
            Event::Destroyed {
                purge_pending: false,
            },
            t(4),
        )
        .unwrap_err();
    assert!(err.to_string().contains("coroner"), "{err}");
    assert_eq!(inc.state, State::Archived);
    inc.apply(
        Event::HoldReleased {
            by: "@op:hs".into(),
        },
        t(4),
    )
    .unwrap();
    inc.apply(
        Event::Destroyed {
            purge_pending: true,
        },
        t(4),
    )
    .unwrap();
    assert!(inc.purge_pending);
    assert_eq!(
        inc.apply(
            Event::HoldReleased {
                by: "@op:hs".into()
            },
            t(4)
        ),
        Err(TransitionError::NotHeld)
    );
}

#[test]
fn rewording_a_hold_keeps_its_start() {
    let mut inc = incident(State::Active, true, None);
    inc.apply(
        Event::HoldSet {
            reason: "new".into(),
            by: "@x:hs".into(),
        },
        t(8),
    )
    .unwrap();
    let hold = inc.hold.unwrap();
    assert_eq!((hold.reason.as_str(), hold.since), ("new", t(2)));
}

#[test]
fn handover_changes_the_commander() {
    let mut inc = incident(State::Active, false, None);
    inc.apply(Event::RosterChanged { commander: None }, t(3))
        .unwrap();
    assert_eq!(inc.commander, "@a:hs");
    inc.apply(
        Event::RosterChanged {
            commander: Some("@b:hs".into()),
        },
        t(3),
    )
    .unwrap();
    assert_eq!(inc.commander, "@b:hs");
}

#[test]
fn illegal_transition_error_names_from_and_to() {
    let mut inc = incident(State::Active, false, None);
    let err = inc.apply(example(EventKind::Destroyed), t(3)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "an incident cannot go from active to destroyed (destroyed)"
    );
}

#[test]
fn states_and_events_serialise_in_kebab_case() {
    let names: Vec<String> = State::ALL
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "\"provisioning\"",
            "\"active\"",
            "\"standing-down\"",
            "\"archived\"",
            "\"destroyed\"",
            "\"closed\"",
            "\"failed\""
        ]
    );
    for s in State::ALL {
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
    }
    for k in EventKind::ALL {
        assert_eq!(example(k).kind(), k);
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        let json = serde_json::to_value(example(k)).unwrap();
        assert_eq!(json["event"], k.as_str(), "{json}");
    }
}

#[test]
fn an_exercise_takes_no_legal_hold_in_any_state() {
    for state in [
        State::Active,
        State::StandingDown,
        State::Archived,
        State::Destroyed,
    ] {
        let mut inc = incident(state, false, None);
        inc.exercise = true;
        let before = inc.clone();
        assert_eq!(
            inc.apply(
                Event::HoldSet {
                    reason: "inquest".into(),
                    by: "@ic:hs".into()
                },
                t(5)
            ),
            Err(TransitionError::ExerciseNotHeld),
            "{state}"
        );
        assert_eq!(inc, before, "a refused hold changes nothing");
    }
}
