"""A second Synapse, configured fail_open: true, with nothing listening at
the endpoint: changes in cordon's rooms go through (prevention is off, the
guard still detects after the fact), loudly logged and counted."""

import json
import urllib.request

import pytest

from conftest import write_secret
from harness import STATUS_PATH, Synapse, free_port, wait_until


@pytest.fixture(scope="module")
def open_world(tmp_path_factory):
    d = tmp_path_factory.mktemp("hs-open")
    endpoint = "http://127.0.0.1:%d/_cordon/prevention/v1/check" % free_port()
    hs = Synapse(str(d / "synapse"), {
        "endpoint": endpoint, "secret_file": write_secret(d),
        "timeout_ms": 1000, "fail_open": True})
    hs.start()
    try:
        yield hs, hs.register("cordon"), hs.register("alice"), hs.register("admin", admin=True)
    finally:
        hs.stop()


def test_fail_open_lets_changes_through(open_world):
    hs, bot, alice, admin = open_world
    room = bot.create_room("INC-open")
    assert bot.invite(room, alice)[0] == 200
    assert alice.join(room)[0] == 200
    assert bot.membership(room, alice) == "join"
    with urllib.request.urlopen(hs.base + STATUS_PATH, timeout=10) as r:
        status = json.loads(r.read())
    assert status["fail_open"] is True
    assert status["unanswered"] == status["asked"] > 0
    assert status["refused"] == 0
    line = wait_until("the fail-open warning", lambda: [
        l for l in hs.log_text().splitlines()
        if "ALLOWING it (fail_open: true)" in l and alice.id in l])[0]
    assert "WARNING" in line and room in line
