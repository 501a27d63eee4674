import os
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import STANDIN_SECRET, StandIn, Synapse  # noqa: E402

# The timeout the main test Synapse gives cordon: short, so that the hanging
# stand-in test is quick, long enough for a loaded 2-core machine.
TIMEOUT_MS = 1500


def write_secret(directory, text=STANDIN_SECRET + "\n"):
    path = os.path.join(str(directory), "prevention.secret")
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.fixture(scope="module")
def standin():
    s = StandIn().start()
    yield s
    s.stop()


def _dump_on_failure(hs, request):
    if getattr(request.node, "_failed_any", False):
        sys.stderr.write("\n--- synapse output (%s) ---\n%s\n" % (hs.dir, hs.output()[-20000:]))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        item.module._failed_any = True  # noqa: SLF001
        setattr(item.session, "_cordon_failed", True)


@pytest.fixture(scope="module")
def world(standin, tmp_path_factory, request):
    d = tmp_path_factory.mktemp("hs")
    hs = Synapse(str(d / "synapse"), {
        "endpoint": standin.endpoint,
        "secret_file": write_secret(d),
        "timeout_ms": TIMEOUT_MS,
    })
    hs.start()
    try:
        w = SimpleNamespace(hs=hs, standin=standin)
        w.admin = hs.register("admin", admin=True)
        w.bot = hs.register("cordon")
        w.alice = hs.register("alice")
        w.bob = hs.register("bob")
        w.mallory = hs.register("mallory")
        yield w
    finally:
        hs.stop()
        if getattr(request.module, "_failed_any", False):
            sys.stderr.write("\n--- synapse log tail (%s) ---\n%s\n"
                             % (hs.dir, hs.output()[-15000:]))
