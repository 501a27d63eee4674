"""Synapse refuses to start with a bad module config, and says why."""

import pytest

from conftest import write_secret
from harness import Synapse, wait_until

ENDPOINT = "http://127.0.0.1:9/_cordon/prevention/v1/check"


def refuses_to_start(directory, module_config):
    hs = Synapse(str(directory), module_config)
    proc = hs.spawn()
    try:
        wait_until("synapse to exit", lambda: proc.poll() is not None, timeout=90)
    finally:
        hs.stop()
    out = hs.output()
    print(out[-3000:])
    assert proc.returncode != 0, out
    return out


@pytest.mark.parametrize("case", ["missing secret file", "remote endpoint"])
def test_bad_config_stops_synapse(tmp_path, case):
    if case == "missing secret file":
        out = refuses_to_start(tmp_path / "hs", {
            "endpoint": ENDPOINT, "secret_file": str(tmp_path / "no-such.secret")})
        assert "cordon_synapse: config key 'secret_file': cannot read" in out
        assert "no-such.secret" in out
    else:
        out = refuses_to_start(tmp_path / "hs", {
            "endpoint": "http://cordon.example.org/check",
            "secret_file": write_secret(tmp_path)})
        assert "is not a loopback address" in out and "allow_remote: true" in out
