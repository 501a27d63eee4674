"""The pure parts of the gate: configuration, which events are put to cordon,
the question sent and the answer read back.

Nothing here touches Twisted or the homeserver, so all of it is unit-tested
directly (tests/test_unit.py).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple
from urllib.parse import urlsplit

try:  # the exception type Synapse turns into "refusing to start"
    from synapse.module_api.errors import ConfigError
except ImportError:  # pragma: no cover - only without Synapse installed

    class ConfigError(Exception):  # type: ignore[no-redef]
        def __init__(self, msg: str, path: Any = None):
            super().__init__(msg)
            self.msg = msg
            self.path = path


PROTOCOL_VERSION = 1

CREATE = "m.room.create"
MEMBER = "m.room.member"
INCIDENT_KEY = "org.cordon.incident"
ROOM_KEY_KEY = "org.cordon.room_key"

DEFAULT_TIMEOUT_MS = 2000
MIN_TIMEOUT_MS = 50
MAX_TIMEOUT_MS = 60000

KNOWN_KEYS = ("endpoint", "secret_file", "timeout_ms", "fail_open", "allow_remote")

EXAMPLE = (
    "  modules:\n"
    "    - module: cordon_synapse.CordonGate\n"
    "      config:\n"
    '        endpoint: "http://127.0.0.1:9479/_cordon/prevention/v1/check"\n'
    '        secret_file: "/etc/cordon/prevention.secret"\n'
    "        timeout_ms: 2000     # optional\n"
    "        fail_open: false     # optional"
)


@dataclass(frozen=True)
class GateConfig:
    endpoint: str
    secret: str
    secret_file: str
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    fail_open: bool = False
    allow_remote: bool = False

    def __repr__(self) -> str:  # never let the secret reach a log line
        return (
            "GateConfig(endpoint=%r, secret_file=%r, timeout_ms=%r, fail_open=%r, "
            "allow_remote=%r)"
            % (
                self.endpoint,
                self.secret_file,
                self.timeout_ms,
                self.fail_open,
                self.allow_remote,
            )
        )

    __str__ = __repr__


def _fail(msg: str, key: Optional[str] = None) -> ConfigError:
    where = "cordon_synapse: " + ("config key '%s': " % key if key else "")
    return ConfigError(where + msg)


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_config(raw: Any) -> GateConfig:
    """Checks the module's config block; raises ConfigError saying what is
    wrong and how to fix it, so that Synapse refuses to start."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _fail(
            "the module's 'config' must be a mapping, got %s; it should look like:\n%s"
            % (type(raw).__name__, EXAMPLE)
        )
    unknown = sorted(str(k) for k in raw if k not in KNOWN_KEYS)
    if unknown:
        raise _fail(
            "unknown config key(s) %s; the known keys are %s (check the spelling)"
            % (", ".join(repr(k) for k in unknown), ", ".join(KNOWN_KEYS))
        )

    def boolean(key: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise _fail(
                "must be true or false, got %r (%s)" % (value, type(value).__name__),
                key,
            )
        return value

    fail_open = boolean("fail_open", False)
    allow_remote = boolean("allow_remote", False)

    # endpoint
    endpoint = raw.get("endpoint")
    if endpoint is None:
        raise _fail(
            "'endpoint' is required: the URL of cordon's prevention listener, "
            "for example\n%s" % EXAMPLE
        )
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise _fail(
            "must be a non-empty string (a URL such as "
            "http://127.0.0.1:9479/_cordon/prevention/v1/check), got %r" % (endpoint,),
            "endpoint",
        )
    endpoint = endpoint.strip()
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
        parts.port  # raises ValueError on a bad port
    except ValueError as e:
        raise _fail("%r is not a valid URL: %s" % (endpoint, e), "endpoint")
    if parts.scheme not in ("http", "https"):
        raise _fail(
            "%r must be an http:// or https:// URL (cordon's prevention listener)"
            % (endpoint,),
            "endpoint",
        )
    if not host:
        raise _fail("%r has no host" % (endpoint,), "endpoint")
    if parts.username is not None or parts.password is not None:
        raise _fail(
            "%r must not carry credentials; the shared secret goes in secret_file"
            % (endpoint,),
            "endpoint",
        )
    if not _is_loopback_host(host) and not allow_remote:
        raise _fail(
            "host %r is not a loopback address; cordon's prevention listener is "
            "meant to be reached on 127.0.0.1 / ::1 / localhost. If cordon really "
            "runs on another machine, set 'allow_remote: true' (and use https)"
            % (host,),
            "endpoint",
        )

    # secret_file
    secret_file = raw.get("secret_file")
    if secret_file is None:
        raise _fail(
            "'secret_file' is required: a file holding the shared secret (one line) "
            "that cordon's prevention listener expects, for example\n%s" % EXAMPLE
        )
    if not isinstance(secret_file, str) or not secret_file.strip():
        raise _fail("must be a non-empty string (a file path), got %r" % (secret_file,),
                    "secret_file")
    try:
        with open(secret_file, "r", encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(
            "cannot read %r (%s); create it with the shared secret on one line and "
            "make it readable by the user Synapse runs as"
            % (secret_file, getattr(e, "strerror", None) or e),
            "secret_file",
        )
    if not secret:
        raise _fail(
            "%r is empty; put the shared secret (the one cordon's prevention "
            "listener expects) on one line in it" % (secret_file,),
            "secret_file",
        )
    if any(not (0x21 <= ord(c) <= 0x7E) for c in secret):
        raise _fail(
            "the secret in %r must be one line of printable ASCII without spaces "
            "(it is sent as an HTTP bearer token)" % (secret_file,),
            "secret_file",
        )

    # timeout_ms
    timeout_ms = raw.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise _fail(
            "must be a whole number of milliseconds, got %r (%s)"
            % (timeout_ms, type(timeout_ms).__name__),
            "timeout_ms",
        )
    if not MIN_TIMEOUT_MS <= timeout_ms <= MAX_TIMEOUT_MS:
        raise _fail(
            "must be between %d and %d milliseconds, got %d"
            % (MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, timeout_ms),
            "timeout_ms",
        )

    return GateConfig(
        endpoint=endpoint,
        secret=secret,
        secret_file=secret_file,
        timeout_ms=timeout_ms,
        fail_open=fail_open,
        allow_remote=allow_remote,
    )


# --- which events are asked -------------------------------------------------


@dataclass(frozen=True)
class RoomTag:
    incident: str
    room_key: Optional[str]


def room_tag(create_content: Optional[Mapping[str, Any]]) -> Optional[RoomTag]:
    """The cordon tag of a room from its m.room.create content, or None when
    the room is not cordon's.

    The room is cordon's as soon as the key is present: a value of the wrong
    type is still sent (as its JSON text) rather than waved through."""
    if not isinstance(create_content, Mapping) or INCIDENT_KEY not in create_content:
        return None
    incident = create_content.get(INCIDENT_KEY)
    if not isinstance(incident, str):
        incident = json.dumps(incident)
    room_key = create_content.get(ROOM_KEY_KEY)
    if room_key is not None and not isinstance(room_key, str):
        room_key = json.dumps(room_key)
    return RoomTag(incident=incident, room_key=room_key)


# Verdicts of needs_asking() for events in a cordon room.
ALLOW_CREATE = "create event"
ALLOW_NOT_STATE = "not a state event"
ALLOW_SELF_LEAVE = "a member leaving of their own accord"


def exempt_reason(
    event_type: str, state_key: Optional[str], sender: str, content: Mapping[str, Any]
) -> Optional[str]:
    """Why an event in a cordon room is allowed without asking, or None when
    it must be put to cordon."""
    if event_type == CREATE:
        return ALLOW_CREATE
    if state_key is None:
        return ALLOW_NOT_STATE
    if (
        event_type == MEMBER
        and isinstance(content, Mapping)
        and content.get("membership") == "leave"
        and state_key == sender
    ):
        return ALLOW_SELF_LEAVE
    return None


def plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (event content may come as
    frozen mappings that json cannot encode)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def build_question(
    room_id: str,
    tag: RoomTag,
    event_id: Optional[str],
    event_type: str,
    state_key: str,
    sender: str,
    content: Mapping[str, Any],
    replaces: Optional[Mapping[str, Any]] = None,
) -> dict:
    """The question for one event. `replaces` is the content of the state event of the
    same type and key that it would replace (None when there is none): cordon tells a
    kick from an unban by the membership it replaces."""
    return {
        "v": PROTOCOL_VERSION,
        "room_id": room_id,
        "incident": tag.incident,
        "room_key": tag.room_key,
        "event": {
            "event_id": event_id,
            "type": event_type,
            "state_key": state_key,
            "sender": sender,
            "content": plain(content),
        },
        "replaces": None if replaces is None else plain(replaces),
    }


# --- the answer -------------------------------------------------------------


class Unanswered(Exception):
    """cordon did not give a usable answer (the text says why)."""


@dataclass(frozen=True)
class Answer:
    allow: bool
    reason: Optional[str] = None


MAX_REASON = 500


def parse_answer(status: int, body: bytes) -> Answer:
    """Reads cordon's answer; raises Unanswered for anything but an HTTP 200
    with a JSON object holding a boolean 'allow'."""
    if status != 200:
        snippet = body[:200].decode("utf-8", errors="replace")
        raise Unanswered("HTTP %d from cordon: %r" % (status, snippet))
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Unanswered("malformed JSON from cordon: %s" % (e,))
    if not isinstance(doc, dict):
        raise Unanswered("cordon's answer is not a JSON object: %r" % (doc,))
    allow = doc.get("allow")
    if not isinstance(allow, bool):
        raise Unanswered("cordon's answer has no boolean 'allow': %r" % (doc,))
    if allow:
        return Answer(True)
    reason = doc.get("reason")
    if reason is None or reason == "":
        reason = "(no reason given)"
    elif not isinstance(reason, str):
        reason = json.dumps(reason)
    return Answer(False, reason[:MAX_REASON])
