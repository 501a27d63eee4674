"""End to end: a real Synapse 1.163 with the module, and a stand-in for cordon.

Every protection test here fails when check_event_allowed is made to return
(True, None) unconditionally (see the README)."""

import json
import time
import urllib.request

import pytest

from conftest import TIMEOUT_MS
from harness import STANDIN_SECRET, STATUS_PATH, CordonLike, q, wait_until


@pytest.fixture(autouse=True)
def fresh_standin(world):
    """Each test scripts its own stand-in behaviour."""
    s = world.standin
    if not s.running:
        s.start()
    s.reset()
    s.secret = STANDIN_SECRET
    yield s
    s.release.set()


def member_events(events, user):
    return [e for e in events if e["type"] == "m.room.member" and e["state_key"] == user.id]


def assert_refused(status, doc, what):
    print("%s -> HTTP %s %s" % (what, status, json.dumps(doc)))
    assert not 200 <= status < 300, "%s went through: %s %s" % (what, status, doc)


def tagged_room(w, allowed=(), power_ok=None, **extra):
    """A room made like cordon makes one, with a cordon-like stand-in."""
    w.standin.policy = CordonLike(w.bot.id, {u.id for u in allowed},
                                  None if power_ok is None else {u.id for u in power_ok})
    return w.bot.create_room("INC-%d" % time.monotonic_ns(), **extra)


def status(w):
    with urllib.request.urlopen(w.hs.base + STATUS_PATH, timeout=10) as r:
        assert r.status == 200
        assert r.headers.get("Content-Type") == "application/json"
        return r.read()


# --- the attack ------------------------------------------------------------------


def test_make_room_admin_and_forced_joins_are_refused(world):
    w = world
    room = tagged_room(w)
    before = len(w.standin.questions(room))

    st, doc = w.admin.call("POST", "/_synapse/admin/v1/rooms/%s/make_room_admin" % q(room), {})
    assert_refused(st, doc, "make_room_admin")
    st, doc = w.admin.join(room)
    assert_refused(st, doc, "the admin joining")
    st, doc = w.admin.call("POST", "/_synapse/admin/v1/join/%s" % q(room), {"user_id": w.mallory.id})
    assert_refused(st, doc, "admin join API for a third user")

    state = w.bot.state(room)
    timeline = w.bot.messages(room)
    for intruder in (w.admin, w.mallory):
        assert member_events(state, intruder) == [], intruder
        assert member_events(timeline, intruder) == [], intruder
    pl = [e for e in state if e["type"] == "m.room.power_levels"][0]["content"]
    assert w.admin.id not in pl.get("users", {})

    asked = w.standin.questions(room)[before:]
    refused = [r for r in asked if r["answer"] == {"allow": False, "reason": r["answer"].get("reason")}]
    assert refused and len(refused) == len(asked), asked
    # make_room_admin forges its power levels in the name of the room's admin,
    # the bot: the sender is the bot, the grant to the admin is in the content.
    forged = [r["question"]["event"] for r in refused
              if r["question"]["event"]["type"] == "m.room.power_levels"]
    assert forged and forged[0]["sender"] == w.bot.id
    assert w.admin.id in forged[0]["content"]["users"]
    # the admin join API's invite is sent by the admin itself
    invites = [r["question"]["event"] for r in refused
               if r["question"]["event"]["content"].get("membership") == "invite"]
    assert any(e["sender"] == w.admin.id and e["state_key"] == w.mallory.id for e in invites), invites
    for r in asked:
        assert r["question"]["incident"] and r["question"]["room_key"] == "command"


def test_admin_in_the_room_cannot_force_a_third_user_in(world):
    """The admin join API used by a server admin who is a legitimate, powerful
    member: its invite (sender: the admin) and the forced join are refused."""
    w = world
    room = tagged_room(w, allowed=[w.admin], power_ok=[w.admin],
                       invite=[w.admin.id],
                       power_level_content_override={"users": {w.admin.id: 100}})
    assert w.admin.join(room)[0] == 200
    w.standin.policy = CordonLike(w.bot.id, set())  # from now on: nobody else
    before = len(w.standin.questions(room))

    st, doc = w.admin.call("POST", "/_synapse/admin/v1/join/%s" % q(room), {"user_id": w.mallory.id})
    assert_refused(st, doc, "admin join API for a third user")
    st, doc = w.admin.invite(room, w.mallory)
    assert_refused(st, doc, "the admin's own invite")

    assert member_events(w.bot.state(room), w.mallory) == []
    assert member_events(w.bot.messages(room), w.mallory) == []
    asked = [r["question"]["event"] for r in w.standin.questions(room)[before:]]
    assert asked and all(e["sender"] == w.admin.id and e["state_key"] == w.mallory.id for e in asked)


def test_admin_cannot_change_room_settings(world):
    w = world
    room = tagged_room(w, allowed=[w.admin], power_ok=[w.admin],
                       invite=[w.admin.id],
                       power_level_content_override={"users": {w.admin.id: 100}})
    assert w.admin.join(room)[0] == 200
    st, doc = w.admin.set_state(room, "m.room.join_rules", {"join_rule": "public"})
    assert_refused(st, doc, "join rules to public by the admin")
    st, doc = w.admin.set_state(room, "m.room.topic", {"topic": "mine now"})
    assert_refused(st, doc, "topic by the admin")
    rules = [e for e in w.bot.state(room) if e["type"] == "m.room.join_rules"][0]
    assert rules["content"]["join_rule"] == "invite"


# --- what is allowed -----------------------------------------------------------------


def test_room_creation_is_asked_with_the_final_room_id(world):
    w = world
    room = tagged_room(w)
    asked = [r["question"] for r in w.standin.questions(room)]
    types = [a["event"]["type"] for a in asked]
    # everything createRoom sends after m.room.create, under the final room id
    assert "m.room.create" not in types
    assert {"m.room.member", "m.room.power_levels", "m.room.join_rules"} <= set(types)
    assert all(a["event"]["sender"] == w.bot.id for a in asked)
    assert all(a["v"] == 1 and a["event"]["event_id"].startswith("$") for a in asked)


def test_allowed_work_goes_through(world):
    w = world
    room = tagged_room(w, allowed=[w.alice])
    before = len(w.standin.questions(room))

    assert w.bot.invite(room, w.alice)[0] == 200
    assert w.alice.join(room)[0] == 200
    assert w.bot.set_state(room, "m.room.topic", {"topic": "triage"})[0] == 200
    asked = [r["question"]["event"] for r in w.standin.questions(room)[before:]]
    assert [(e["type"], e["content"].get("membership"), e["sender"]) for e in asked] == [
        ("m.room.member", "invite", w.bot.id),
        ("m.room.member", "join", w.alice.id),
        ("m.room.topic", None, w.bot.id),
    ]
    assert w.bot.membership(room, w.alice) == "join"

    # a member leaving of their own accord is never asked about
    n = len(w.standin.questions())
    assert w.alice.leave(room)[0] == 200
    assert w.bot.membership(room, w.alice) == "leave"
    assert len(w.standin.questions()) == n

    # an invite of someone not on the list is refused
    st, doc = w.bot.invite(room, w.mallory)
    assert_refused(st, doc, "the bot inviting someone not on the allow-list")
    assert w.bot.membership(room, w.mallory) is None


def test_messages_are_never_asked(world):
    w = world
    room = tagged_room(w)
    n = len(w.standin.questions())
    assert w.bot.send(room, "first")[0] == 200
    st, doc = w.bot.send(room, "x", typ="m.reaction", content={})
    assert st == 200, doc
    assert w.bot.send(room, "second")[0] == 200
    assert len(w.standin.questions()) == n


def test_untagged_room_is_left_alone(world):
    w = world
    w.standin.policy = lambda q: (200, {"allow": False, "reason": "should never be asked"})
    room = w.bot.create_room(None)
    st, doc = w.admin.call("POST", "/_synapse/admin/v1/rooms/%s/make_room_admin" % q(room), {})
    assert st == 200, doc
    st, doc = w.admin.join(room)
    assert st == 200, doc
    st, doc = w.admin.call("POST", "/_synapse/admin/v1/join/%s" % q(room), {"user_id": w.mallory.id})
    assert st == 200, doc
    assert w.bot.membership(room, w.mallory) == "join"
    assert w.standin.questions() == []


# --- cordon not answering ------------------------------------------------------------


def _member_room(w):
    """A tagged room with alice in it, and an untagged one, made while the
    stand-in answers."""
    room = tagged_room(w, allowed=[w.alice])
    assert w.bot.invite(room, w.alice)[0] == 200
    assert w.alice.join(room)[0] == 200
    plain = w.bot.create_room(None)
    return room, plain


def _fail_closed_checks(w, room, plain, why):
    t0 = time.monotonic()
    st, doc = w.bot.invite(room, w.bob)
    took = time.monotonic() - t0
    assert_refused(st, doc, "invite while cordon %s" % why)
    assert w.bot.membership(room, w.bob) is None
    st, doc = w.bot.set_state(room, "m.room.topic", {"topic": "x"})
    assert_refused(st, doc, "topic while cordon %s" % why)
    # messages still flow; the untagged room is untouched
    assert w.bot.send(room, "still talking")[0] == 200
    assert w.bot.invite(plain, w.bob)[0] == 200
    # leaving is still possible
    assert w.alice.leave(room)[0] == 200
    assert w.bot.membership(room, w.alice) == "leave"
    return took


def test_cordon_down_fails_closed(world):
    w = world
    room, plain = _member_room(w)
    before = json.loads(status(w))
    w.standin.stop()
    _fail_closed_checks(w, room, plain, "is down")
    after = json.loads(status(w))
    assert after["unanswered"] == before["unanswered"] + 2
    assert after["asked"] == before["asked"] + 2
    log = wait_until("the refusal in the log", lambda: [
        line for line in w.hs.log_text().splitlines()
        if "cordon did not answer" in line and w.bob.id in line and "fail closed" in line])
    assert "ERROR" in log[0] and room in log[0] and "m.room.member" in log[0]


def test_cordon_hanging_fails_closed_after_the_timeout(world):
    w = world
    room, plain = _member_room(w)
    w.standin.hang_seconds = 30
    took = _fail_closed_checks(w, room, plain, "hangs")
    assert TIMEOUT_MS / 1000 * 0.9 <= took < TIMEOUT_MS / 1000 + 10, took
    wait_until("the timeout in the log", lambda: "no answer within %d ms" % TIMEOUT_MS
               in w.hs.log_text())


def test_wrong_secret_is_not_an_answer(world):
    w = world
    room = tagged_room(w, allowed=[w.alice])
    w.standin.secret = "another-secret"
    w.standin.policy = lambda q: (200, {"allow": True})
    st, doc = w.bot.invite(room, w.alice)
    assert_refused(st, doc, "invite with the wrong secret")
    last = w.standin.questions(room)[-1]
    assert last["status"] == 401
    assert last["authorization"] == "Bearer " + STANDIN_SECRET
    assert last["content_type"] == "application/json"
    wait_until("the 401 in the log", lambda: "HTTP 401 from cordon" in w.hs.log_text())


@pytest.mark.parametrize("answer", [
    (500, {"allow": True}),
    (200, b"not json"),
    (200, {"allowed": True}),
    (200, {"allow": "yes"}),
])
def test_unusable_answers_are_refusals(world, answer):
    w = world
    room = tagged_room(w, allowed=[w.alice])
    w.standin.policy = lambda q: answer
    st, doc = w.bot.invite(room, w.alice)
    assert_refused(st, doc, "invite answered with %r" % (answer,))
    assert w.bot.membership(room, w.alice) is None


def test_refusal_is_logged_with_its_reason(world):
    w = world
    room = tagged_room(w)
    w.standin.policy = lambda q: (200, {"allow": False, "reason": "not on incident roster 42"})
    assert_refused(*w.bot.invite(room, w.bob), "invite")
    line = wait_until("the refusal in the log", lambda: [
        l for l in w.hs.log_text().splitlines() if "not on incident roster 42" in l])[0]
    assert "WARNING" in line and "cordon refused" in line and w.bob.id in line


# --- status ------------------------------------------------------------------------------


def test_status_resource(world):
    w = world
    room = tagged_room(w)
    s0 = json.loads(status(w))
    assert s0["module"] == "cordon_synapse"
    assert s0["fail_open"] is False
    assert s0["endpoint"] == w.standin.endpoint
    from cordon_synapse import __version__
    assert s0["version"] == __version__
    assert set(s0) == {"module", "version", "fail_open", "endpoint", "asked", "refused",
                       "unanswered"}
    w.standin.policy = lambda q: (200, {"allow": False, "reason": "no"})
    assert_refused(*w.bot.invite(room, w.bob), "invite")
    raw = status(w)
    s1 = json.loads(raw)
    assert (s1["asked"], s1["refused"], s1["unanswered"]) == (
        s0["asked"] + 1, s0["refused"] + 1, s0["unanswered"])
    assert STANDIN_SECRET.encode() not in raw


def test_a_dropped_connection_is_tried_once_more(world):
    """A pooled connection the listener closed fails before any answer; the
    module asks once more (within the same timeout). Twice dropped: refused."""
    w = world
    room = tagged_room(w, allowed=[w.alice])
    w.standin.drop_next = 1
    assert w.bot.invite(room, w.alice)[0] == 200
    last_two = w.standin.questions(room)[-2:]
    assert [r["status"] for r in last_two] == [None, 200]
    assert last_two[0]["question"] == last_two[1]["question"]
    w.standin.drop_next = 2
    assert_refused(*w.bot.set_state(room, "m.room.topic", {"topic": "t"}), "topic, dropped twice")


def test_room_deletion_api_kicks_as_self_leaves(world):
    """Not prevented, documented: Synapse's room deletion API
    (DELETE /_synapse/admin/v2/rooms/{id}, block + purge) makes every local
    member leave *as themselves* (sender == state_key), which the module lets
    through unasked; then the room is purged. cordon sees nothing ask about it
    and must notice it otherwise (check_can_shutdown_room would be the hook)."""
    w = world
    room = tagged_room(w, allowed=[w.alice])
    assert w.bot.invite(room, w.alice)[0] == 200
    assert w.alice.join(room)[0] == 200
    n = len(w.standin.questions(room))
    st, doc = w.admin.call("DELETE", "/_synapse/admin/v2/rooms/%s" % q(room),
                           {"block": True, "purge": True})
    assert st == 200, doc

    def done():
        s, d = w.admin.call("GET", "/_synapse/admin/v2/rooms/delete_status/%s"
                            % doc["delete_id"])
        return d if s == 200 and d.get("status") in ("complete", "failed") else None

    result = wait_until("the room deletion", done)
    print("deletion:", json.dumps(result))
    assert result["status"] == "complete"
    assert set(result["shutdown_room"]["kicked_users"]) == {w.bot.id, w.alice.id}
    assert len(w.standin.questions(room)) == n


def test_make_room_admin_sends_two_events_in_the_bots_name(world):
    """Documented for cordon: make_room_admin's power-levels change and its
    invite are separate questions, both with the bot as sender. Each is judged
    on its own: allowing the first and refusing the second leaves the power
    change in place."""
    w = world
    room = tagged_room(w, power_ok=[w.admin])  # the grant passes, the invite does not
    n = len(w.standin.questions(room))
    st, doc = w.admin.call("POST", "/_synapse/admin/v1/rooms/%s/make_room_admin" % q(room), {})
    assert_refused(st, doc, "make_room_admin, invite refused")
    asked = [(r["question"]["event"], r["answer"]["allow"]) for r in w.standin.questions(room)[n:]]
    assert [(e["type"], e["sender"], e["state_key"], ok) for e, ok in asked] == [
        ("m.room.power_levels", w.bot.id, "", True),
        ("m.room.member", w.bot.id, w.admin.id, False),
    ]
    assert asked[1][0]["content"]["membership"] == "invite"
    pl = [e for e in w.bot.state(room) if e["type"] == "m.room.power_levels"][0]["content"]
    assert pl["users"].get(w.admin.id) == 100
    assert member_events(w.bot.state(room), w.admin) == []


def test_admin_puppeting_the_bot_looks_like_the_bot(world):
    """Documented for cordon: an admin can log in *as the bot*
    (POST /_synapse/admin/v1/users/{bot}/login) and act with its power. The
    question is then indistinguishable by sender from cordon's own work, so
    cordon must judge against what it is itself doing, not the sender."""
    w = world
    room = tagged_room(w)
    st, doc = w.admin.call("POST", "/_synapse/admin/v1/users/%s/login" % q(w.bot.id), {})
    assert st == 200, doc
    puppet = type(w.bot)(w.hs, w.bot.id, doc["access_token"])
    assert_refused(*puppet.invite(room, w.mallory), "invite by the puppeted bot")
    last = w.standin.questions(room)[-1]["question"]["event"]
    assert (last["sender"], last["state_key"]) == (w.bot.id, w.mallory.id)
    assert w.bot.membership(room, w.mallory) is None
