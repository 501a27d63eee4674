//! Trust that cannot be replayed, reset or outlived, attacked against a real Synapse:
//! a server admin replaying a commander's encrypted commands through the admin login
//! API, a commander's identity reset from a new device while the old one (a lost
//! phone) goes on sending, a revoked person adding a cross-signed device, and a member
//! flooding the control room with junk commands.

use cordon::dev::TestUser;
use cordon::domain::incident::{IncidentId, State};
use cordon_testkit::attack;
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId};

use crate::guard::{audited, wait_undecryptable};
use crate::support::WAIT;
use crate::world::World;

/// The id in a `DECLARED: NAME (ID)` summary.
fn declared_id(summary: &str) -> String {
    let start = summary.find('(').unwrap() + 1;
    let end = start + summary[start..].find(')').unwrap();
    summary[start..end].to_owned()
}

/// The commander sends `text` in the control room; returns its event id.
async fn command(w: &World, text: &str) -> OwnedEventId {
    w.commander.send_text(w.control(), text).await.unwrap()
}

/// Invites the nurse into the control room and waits until they have joined and can
/// read the bot there (they are enrolled: cordon shares its keys with them).
async fn nurse_in_control_room(w: &World) {
    w.commander
        .invite(w.control(), w.nurse().user_id())
        .await
        .unwrap();
    w.nurse().wait_for_invite(WAIT).await.unwrap();
    w.nurse().join(w.control()).await.unwrap();
    let bot = w.bot_id();
    command(w, "!cordon help").await;
    w.nurse()
        .wait_for_message(w.control(), WAIT, |s, b| s == bot && b.contains("declare"))
        .await
        .unwrap_or_else(|e| panic!("the nurse never read cordon: {e}\n{}", w.log()));
}

/// A message from the bot in the control room with every needle, as `user` reads it:
/// its event id and body.
async fn bot_message(w: &World, user: &TestUser, needles: &[&str]) -> (OwnedEventId, String) {
    let bot = w.bot_id();
    let wanted = |s: &OwnedUserId, b: &str| *s == bot && needles.iter().all(|n| b.contains(n));
    user.wait_for_message(w.control(), WAIT, |s, b| wanted(&s.to_owned(), b))
        .await
        .unwrap_or_else(|e| panic!("waiting for {needles:?}: {e}\nbot log:\n{}", w.log()));
    let found = user
        .messages(w.control())
        .into_iter()
        .find(|m| wanted(&m.sender, &m.body))
        .expect("the message just read");
    (found.event_id, found.body)
}

/// A message from the bot in the control room, as the nurse reads it.
async fn nurse_reads(w: &World, needles: &[&str]) -> (OwnedEventId, String) {
    bot_message(w, w.nurse(), needles).await
}

/// A server admin replays a commander's encrypted `declare`, then (once that incident
/// is stood down and another declared) the commander's bare `standdown`: the same
/// ciphertexts posted again as new events through the admin login API, which decrypt
/// as the commander's verified device with fresh timestamps. Neither runs: the replayed
/// `declare` declares nothing, the replayed `standdown` (naming no incident, so it
/// would take whichever is active now) leaves the second incident active, and each
/// replay is raised in the control room and audited as `command.replayed`, naming the
/// original event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_declare_and_standdown_create_and_destroy_nothing_and_raise_the_alert() {
    let mut w = World::guarded(&["alert"], &[]).await;
    let playbook = format!("guard-alert-{}", w.tag);
    let commander = w.commander.user_id().to_owned();

    let declare = command(&w, &format!("!cordon declare {playbook} \"Replay one\"")).await;
    let first = declared_id(&w.bot_says("DECLARED: Replay one").await);
    let copy = w
        .admin()
        .replay(&commander, w.control(), &declare)
        .await
        .unwrap();
    let alert = w
        .bot_says_all(&["possible compromise", copy.as_str(), declare.as_str()])
        .await;
    assert!(alert.contains(commander.as_str()), "{alert}");

    let standdown = command(&w, "!cordon standdown").await;
    w.bot_says_all(&[first.as_str(), "has stood down"]).await;
    command(&w, &format!("!cordon declare {playbook} \"Replay two\"")).await;
    let second = declared_id(&w.bot_says("DECLARED: Replay two").await);

    let copy = w
        .admin()
        .replay(&commander, w.control(), &standdown)
        .await
        .unwrap();
    w.bot_says_all(&["possible compromise", copy.as_str(), standdown.as_str()])
        .await;
    // Anything the replay would have started has had time to show by now.
    command(&w, &format!("!cordon status {second}")).await;
    w.bot_says(&format!("{second} · Replay two · active")).await;

    let store = w.stop_and_open_store();
    let mine: Vec<_> = store
        .incidents(&cordon::store::IncidentFilter::default())
        .unwrap()
        .into_iter()
        .filter(|i| i.playbook == playbook)
        .collect();
    assert_eq!(mine.len(), 2, "the replayed declare declared: {mine:?}");
    let second = store
        .incident(&IncidentId::parse(&second).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(second.state, State::Active, "the replayed standdown ran");
    let replays = audited(&store, "command.replayed");
    assert_eq!(replays.len(), 2, "{replays:?}");
    assert_eq!(replays[0]["original_event"], declare.as_str());
    assert_eq!(replays[1]["original_event"], standdown.as_str());
    assert_eq!(replays[1]["command"], "standdown");
}

/// The commander's phone is lost: they reset their cross-signing identity from a new
/// device, while the old device (now a thief's) goes on sending commands. The old
/// device's megolm session stays "verified" in matrix-sdk for good; cordon checks the
/// device against the commander's current identity when the command runs, so the
/// command is refused, and the old device cannot decrypt what cordon sends next (for a
/// person enrolled by emoji comparison, whose compared device cordon trusted locally,
/// too). The control room is told what the change means.
async fn after_an_identity_reset_the_old_device_is_refused_and_reads_nothing(emoji: bool) {
    let mut w = World::guarded(&["alert"], &[]).await;
    nurse_in_control_room(&w).await;
    if emoji {
        let (out, ..) = crate::verify::compare_emojis(&w.setup, &w.commander, true, "y\n").await;
        assert!(
            out.status.success(),
            "emoji enrolment: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            w.log()
        );
    }
    let playbook = format!("guard-alert-{}", w.tag);
    command(
        &w,
        &format!("!cordon declare {playbook} \"Before the reset\""),
    )
    .await;
    w.bot_says("DECLARED: Before the reset").await;

    let name = w.commander.user_id().localpart().to_owned();
    let new_phone = TestUser::login(w.hs, &name, "pw").await.unwrap();
    attack::reset_identity(&new_phone, "pw").await.unwrap();
    let commander = w.commander.user_id().to_owned();
    nurse_reads(
        &w,
        &[
            "identity (cross-signing keys)",
            commander.as_str(),
            "enrols them",
        ],
    )
    .await;

    // The old device, through the megolm session cordon already holds.
    command(
        &w,
        &format!("!cordon declare {playbook} \"After the reset\""),
    )
    .await;
    let (refusal, text) = nurse_reads(&w, &["did not act on `declare`", "identity changed"]).await;
    assert!(text.contains(commander.as_str()), "{text}");
    wait_undecryptable(&w.commander, w.control(), &refusal).await;

    let store = w.stop_and_open_store();
    let declared: Vec<String> = store
        .incidents(&cordon::store::IncidentFilter::default())
        .unwrap()
        .into_iter()
        .map(|i| i.display_name)
        .collect();
    assert!(
        !declared.iter().any(|n| n == "After the reset"),
        "the old device declared: {declared:?}"
    );
    let refused = audited(&store, "command.refused");
    assert!(
        refused.iter().any(|r| r["why"] == "identity-changed"),
        "{refused:?}"
    );
    let changed = audited(&store, "trust.identity-changed");
    assert!(!changed.is_empty(), "{changed:?}");
    if emoji {
        assert!(
            changed.iter().any(|c| c["devices_distrusted"] == 1),
            "the emoji-compared device kept its local trust: {changed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reset_the_old_device_of_a_fingerprint_enrolled_commander_is_refused() {
    after_an_identity_reset_the_old_device_is_refused_and_reads_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reset_the_old_device_of_an_emoji_enrolled_commander_is_refused_and_reads_nothing()
{
    after_an_identity_reset_the_old_device_is_refused_and_reads_nothing(true).await;
}

/// An operator revokes the nurse, who is in the control room. cordon's signature on
/// the nurse's identity stays valid on the homeserver, so a device the nurse (or
/// whoever holds their self-signing key) cross-signs afterwards would be trusted. It
/// is blacklisted as soon as cordon sees it: it cannot decrypt what cordon sends next
/// in the control room, and the operators are told the revoked nurse is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_added_after_revocation_cannot_read_the_control_room() {
    let mut w = World::guarded(&["alert"], &[]).await;
    nurse_in_control_room(&w).await;
    let nurse = w.nurse().user_id().to_owned();
    w.revoke_nurse("left the trust").await;
    w.bot_says_all(&["still a member of this control room", nurse.as_str()])
        .await;

    let added = attack::login_cross_signed_device(w.hs, w.nurse(), w.nurse_name(), "pw")
        .await
        .unwrap();
    // Give cordon's sync the device-list change, as a real attacker would wait.
    added.wait_for_syncs(2, WAIT).await.unwrap();
    command(&w, "!cordon status").await;
    let (reply, _) = bot_message(&w, &w.commander, &["No open incident"]).await;
    wait_undecryptable(&added, w.control(), &reply).await;

    let store = w.stop_and_open_store();
    let alerted = audited(&store, "trust.revoked-member");
    assert_eq!(alerted.len(), 1, "{alerted:?}");
}

/// A member whose device cordon does not trust sends 200 junk commands. They get a
/// few answers and one "suppressed" notice per minute-long window, the audit log
/// grows by a few entries and one counter per window, and the verified commander is
/// answered all along.
///
/// On a slow machine the burst outlasts one window, and cordon rightly opens a new
/// budget: the bounds are per window, with the number of windows the burst could
/// span taken from the test's own clock (a bound, never a timed assertion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_commands_gets_bounded_answers_and_the_commander_is_still_answered() {
    let mut w = World::guarded(&["alert"], &[]).await;
    let name = format!("{}-junk", w.tag);
    w.hs.register(&name, "pw", false).await.unwrap();
    let junk = TestUser::login(w.hs, &name, "pw").await.unwrap();
    w.commander
        .invite(w.control(), junk.user_id())
        .await
        .unwrap();
    junk.wait_for_invite(WAIT).await.unwrap();
    junk.join(w.control()).await.unwrap();
    let junk_id: OwnedUserId = junk.user_id().to_owned();

    let began = std::time::Instant::now();
    for i in 0..200 {
        junk.send_text(w.control(), &format!("!cordon frobnicate {i}"))
            .await
            .unwrap();
    }
    command(&w, "!cordon status").await;
    w.bot_says("No open incident").await;
    let bot = w.bot_id();
    // Everything cordon said to the junk sender, as the commander reads it.
    w.commander.wait_for_syncs(2, WAIT).await.unwrap();
    let windows = burst_windows(began.elapsed());
    let answers = w
        .commander
        .messages(w.control())
        .into_iter()
        .filter(|m| {
            m.sender == bot && (m.body.contains("frobnicate") || m.body.contains(junk_id.as_str()))
        })
        .count();
    assert!(
        (1..=(BUDGET + 1) * windows).contains(&answers),
        "{answers} answers to 200 junk commands in {windows} window(s)"
    );

    // The counter entry is written when the minute is over, or at shutdown.
    let store = w.stop_and_open_store();
    // Commands decrypted late may have opened one more window before the stop.
    let windows = burst_windows(began.elapsed());
    let entries = store.audit_entries(.., None).unwrap();
    let by_junk: Vec<_> = entries
        .iter()
        .filter(|e| e.actor == junk_id.as_str())
        .collect();
    let refused = by_junk
        .iter()
        .filter(|e| e.action == "command.refused")
        .count();
    let counted: u64 = by_junk
        .iter()
        .filter(|e| e.action == "command.refusals-suppressed")
        .map(|e| e.details_value()["count"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        refused <= BUDGET * windows,
        "{refused} refusals audited one by one in {windows} window(s)"
    );
    // Nearly every junk command is counted (a few may not have decrypted at cordon).
    assert!(
        refused as u64 + counted >= 150 && refused as u64 + counted <= 200,
        "{refused} refused and {counted} counted of 200"
    );
    assert!(
        by_junk.len() <= (BUDGET + 1) * windows,
        "{} audit entries in {windows} window(s)",
        by_junk.len()
    );
}

/// The answers one sender may get per window, as a count.
const BUDGET: usize = cordon::domain::command::flood::BUDGET as usize;

/// How many flood windows cordon can have opened for one sender within `span` of the
/// sender's first command: a window opens at a command and lasts
/// [`cordon::domain::command::flood::WINDOW`], so one per whole window and one for
/// the part left over.
fn burst_windows(span: std::time::Duration) -> usize {
    let window = cordon::domain::command::flood::WINDOW
        .to_std()
        .expect("a positive window");
    (span.as_secs_f64() / window.as_secs_f64()).floor() as usize + 1
}
