"""Unit tests of the pure parts: configuration, which events are asked, the
question and the answer."""

import json

import pytest

from cordon_synapse import CordonGate, __version__
from cordon_synapse.rules import (
    ALLOW_CREATE,
    ALLOW_NOT_STATE,
    ALLOW_SELF_LEAVE,
    Answer,
    ConfigError,
    RoomTag,
    Unanswered,
    build_question,
    exempt_reason,
    parse_answer,
    parse_config,
    room_tag,
)
from synapse.config._base import ConfigError as SynapseConfigError

ENDPOINT = "http://127.0.0.1:9479/_cordon/prevention/v1/check"


@pytest.fixture
def secret_file(tmp_path):
    p = tmp_path / "prevention.secret"
    p.write_text("  s3cret-token \n\n")
    return str(p)


def good(secret_file, **over):
    cfg = {"endpoint": ENDPOINT, "secret_file": secret_file}
    cfg.update(over)
    return cfg


def refused(cfg, *words):
    with pytest.raises(ConfigError) as e:
        CordonGate.parse_config(cfg)
    msg = str(e.value)
    assert "cordon_synapse" in msg
    for w in words:
        assert w in msg, msg
    return msg


# --- configuration ------------------------------------------------------------


def test_config_error_is_synapses_own():
    assert ConfigError is SynapseConfigError


def test_good_config_defaults(secret_file):
    c = parse_config(good(secret_file))
    assert c.endpoint == ENDPOINT
    assert c.secret == "s3cret-token"  # whitespace stripped
    assert c.timeout_ms == 2000
    assert c.fail_open is False
    assert c.allow_remote is False


def test_good_config_all_keys(secret_file):
    c = parse_config(good(secret_file, timeout_ms=500, fail_open=True,
                          endpoint="https://[::1]:9/x"))
    assert (c.timeout_ms, c.fail_open) == (500, True)
    assert parse_config(good(secret_file, endpoint="http://localhost:1/c")).endpoint


def test_secret_never_in_repr(secret_file):
    c = parse_config(good(secret_file))
    assert "s3cret" not in repr(c) and "s3cret" not in str(c)


@pytest.mark.parametrize("cfg_maker,words", [
    (lambda f: {"secret_file": f}, ["'endpoint' is required"]),
    (lambda f: {"endpoint": ENDPOINT}, ["'secret_file' is required"]),
    (lambda f: None, ["'endpoint' is required"]),
    (lambda f: ["x"], ["must be a mapping"]),
    (lambda f: good(f, endpoint=""), ["endpoint", "non-empty string"]),
    (lambda f: good(f, endpoint=9479), ["endpoint", "non-empty string"]),
    (lambda f: good(f, endpoint="ftp://127.0.0.1/x"), ["endpoint", "http://"]),
    (lambda f: good(f, endpoint="127.0.0.1:9479/x"), ["endpoint", "http://"]),
    (lambda f: good(f, endpoint="http:///x"), ["endpoint", "no host"]),
    (lambda f: good(f, endpoint="http://127.0.0.1:99999/x"), ["endpoint", "not a valid URL"]),
    (lambda f: good(f, endpoint="http://u:p@127.0.0.1/x"), ["credentials"]),
    (lambda f: good(f, endpoint="http://cordon.example.org/x"),
     ["not a loopback", "allow_remote: true"]),
    (lambda f: good(f, endpoint="http://10.0.0.5/x"), ["not a loopback"]),
    (lambda f: good(f, timeout_ms="2000"), ["timeout_ms", "whole number"]),
    (lambda f: good(f, timeout_ms=2.5), ["timeout_ms", "whole number"]),
    (lambda f: good(f, timeout_ms=True), ["timeout_ms", "whole number"]),
    (lambda f: good(f, timeout_ms=0), ["timeout_ms", "between"]),
    (lambda f: good(f, timeout_ms=10 ** 6), ["timeout_ms", "between"]),
    (lambda f: good(f, fail_open="false"), ["fail_open", "true or false"]),
    (lambda f: good(f, fail_open=0), ["fail_open", "true or false"]),
    (lambda f: good(f, allow_remote="yes"), ["allow_remote", "true or false"]),
    (lambda f: good(f, failopen=True), ["unknown config key", "'failopen'"]),
    (lambda f: good(f, secret="abc"), ["unknown config key", "'secret'"]),
    (lambda f: {"endpoint": ENDPOINT, "secret_file": ""}, ["secret_file", "non-empty string"]),
    (lambda f: {"endpoint": ENDPOINT, "secret_file": 3}, ["secret_file", "non-empty string"]),
])
def test_bad_configs(secret_file, cfg_maker, words):
    refused(cfg_maker(secret_file), *words)


def test_remote_allowed_when_said(secret_file):
    c = parse_config(good(secret_file, endpoint="https://cordon.example.org/c",
                          allow_remote=True))
    assert c.allow_remote


def test_missing_secret_file(tmp_path):
    msg = refused({"endpoint": ENDPOINT, "secret_file": str(tmp_path / "nope")},
                  "cannot read", "nope", "create it")
    assert "No such file" in msg


def test_secret_file_is_a_directory(tmp_path):
    refused({"endpoint": ENDPOINT, "secret_file": str(tmp_path)}, "cannot read")


def test_empty_secret_file(tmp_path):
    p = tmp_path / "s"
    p.write_text(" \n\t\n")
    refused({"endpoint": ENDPOINT, "secret_file": str(p)}, "is empty")


def test_secret_with_inner_space_or_newline(tmp_path):
    p = tmp_path / "s"
    p.write_text("two words\n")
    refused({"endpoint": ENDPOINT, "secret_file": str(p)}, "printable ASCII")
    p.write_text("line1\nline2\n")
    refused({"endpoint": ENDPOINT, "secret_file": str(p)}, "one line")


# --- which events are asked ------------------------------------------------------


def test_room_tag():
    assert room_tag({"creator": "@c:hs"}) is None
    assert room_tag(None) is None
    assert room_tag({"org.cordon.incident": "INC-7", "org.cordon.room_key": "command"}) \
        == RoomTag("INC-7", "command")
    assert room_tag({"org.cordon.incident": "INC-7"}) == RoomTag("INC-7", None)
    # A tag of the wrong type still makes the room cordon's (asked, not waved through).
    assert room_tag({"org.cordon.incident": 7}) == RoomTag("7", None)


@pytest.mark.parametrize("typ,sk,sender,content,why", [
    ("m.room.create", "", "@c:hs", {}, ALLOW_CREATE),
    ("m.room.message", None, "@a:hs", {"body": "hi"}, ALLOW_NOT_STATE),
    ("m.reaction", None, "@a:hs", {}, ALLOW_NOT_STATE),
    ("m.room.redaction", None, "@admin:hs", {}, ALLOW_NOT_STATE),
    ("m.room.member", "@a:hs", "@a:hs", {"membership": "leave"}, ALLOW_SELF_LEAVE),
    # asked:
    ("m.room.member", "@a:hs", "@c:hs", {"membership": "leave"}, None),  # a kick
    ("m.room.member", "@a:hs", "@a:hs", {"membership": "join"}, None),
    ("m.room.member", "@a:hs", "@c:hs", {"membership": "invite"}, None),
    ("m.room.member", "@a:hs", "@c:hs", {"membership": "ban"}, None),
    ("m.room.member", "@a:hs", "@a:hs", {"membership": "knock"}, None),
    ("m.room.member", "@a:hs", "@a:hs", {}, None),
    ("m.room.power_levels", "", "@c:hs", {"users": {}}, None),
    ("m.room.name", "", "@c:hs", {"name": "x"}, None),
    ("m.room.topic", "", "@c:hs", {"topic": "x"}, None),
    ("m.room.join_rules", "", "@c:hs", {"join_rule": "public"}, None),
    ("m.room.pinned_events", "", "@c:hs", {"pinned": []}, None),
    ("org.example.anything", "k", "@c:hs", {}, None),
])
def test_exempt_reason(typ, sk, sender, content, why):
    assert exempt_reason(typ, sk, sender, content) == why


def test_question_shape():
    class Frozen(dict):
        pass

    qn = build_question("!r:hs", RoomTag("INC-1", "command"), "$e", "m.room.member",
                        "@x:hs", "@admin:hs", Frozen(membership="invite", x=(1, 2)))
    assert qn == {
        "v": 1, "room_id": "!r:hs", "incident": "INC-1", "room_key": "command",
        "event": {"event_id": "$e", "type": "m.room.member", "state_key": "@x:hs",
                  "sender": "@admin:hs", "content": {"membership": "invite", "x": [1, 2]}},
        "replaces": None,
    }
    json.dumps(qn)
    assert build_question("!r:hs", RoomTag("I", None), "$e", "t", "", "@s:hs", {})["room_key"] is None
    unban = build_question("!r:hs", RoomTag("I", "c"), "$e", "m.room.member", "@x:hs",
                           "@bot:hs", {"membership": "leave"}, Frozen(membership="ban"))
    assert unban["replaces"] == {"membership": "ban"}


# --- the answer -------------------------------------------------------------------


def test_answers():
    assert parse_answer(200, b'{"allow": true}') == Answer(True)
    assert parse_answer(200, b'{"allow": true, "reason": "x"}') == Answer(True)
    assert parse_answer(200, b'{"allow": false, "reason": "not on the list"}') \
        == Answer(False, "not on the list")
    assert parse_answer(200, b'{"allow": false}').reason == "(no reason given)"
    assert parse_answer(200, b'{"allow": false, "reason": 5}').reason == "5"
    assert len(parse_answer(200, json.dumps({"allow": False, "reason": "r" * 9999})
                            .encode()).reason) == 500


@pytest.mark.parametrize("status,body,words", [
    (401, b'{"allow": true}', "HTTP 401"),
    (500, b"", "HTTP 500"),
    (201, b'{"allow": true}', "HTTP 201"),
    (200, b"", "malformed JSON"),
    (200, b"allow", "malformed JSON"),
    (200, b"\xff\xfe", "malformed JSON"),
    (200, b"[true]", "not a JSON object"),
    (200, b"{}", "no boolean 'allow'"),
    (200, b'{"allow": "true"}', "no boolean 'allow'"),
    (200, b'{"allow": 1}', "no boolean 'allow'"),
    (200, b'{"allow": null}', "no boolean 'allow'"),
])
def test_unusable_answers(status, body, words):
    with pytest.raises(Unanswered) as e:
        parse_answer(status, body)
    assert words in str(e.value)


def test_version_is_the_package_version():
    from importlib.metadata import version

    assert version("cordon-synapse") == __version__
