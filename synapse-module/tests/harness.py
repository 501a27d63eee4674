"""Test harness: a real Synapse in a temporary directory, a Matrix client made
of urllib calls, and a stand-in for cordon's prevention listener."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

SERVER_NAME = "cordon.test"
SHARED_SECRET = "registration-shared-secret-for-tests"
STANDIN_SECRET = "prevention-secret-for-tests-0123456789"
CHECK_PATH = "/_cordon/prevention/v1/check"
STATUS_PATH = "/_synapse/client/cordon/v1/status"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0,
               interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - polled
            last_exc = e
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s (last error: %r)"
                         % (timeout, what, last_exc))


# --- a stand-in for cordon ---------------------------------------------------

Verdict = Tuple[int, Any]  # (HTTP status, JSON document or raw bytes)


class StandIn:
    """cordon's prevention listener as the tests script it.

    `policy(question) -> (status, doc)`; `hang_seconds` makes it sit on every
    request before answering; every request is recorded (with whether its
    bearer secret was right, the status answered and the document)."""

    def __init__(self, secret: str = STANDIN_SECRET, port: int = 0):
        self.secret = secret
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.records: List[Dict[str, Any]] = []
        self.policy: Callable[[dict], Verdict] = lambda q: (200, {"allow": True})
        self.hang_seconds = 0.0
        self.drop_next = 0
        self.release = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d%s" % (self.port, CHECK_PATH)

    def reset(self) -> None:
        with self.lock:
            self.records = []
        self.policy = lambda q: (200, {"allow": True})
        self.hang_seconds = 0.0
        self.drop_next = 0
        self.release.clear()

    def questions(self, room_id: Optional[str] = None) -> List[Dict[str, Any]]:
        with self.lock:
            recs = list(self.records)
        return [r for r in recs if room_id is None
                or (isinstance(r.get("question"), dict)
                    and r["question"].get("room_id") == room_id)]

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                record: Dict[str, Any] = {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "content_type": self.headers.get("Content-Type"),
                    "raw": raw,
                }
                try:
                    record["question"] = json.loads(raw)
                except ValueError:
                    record["question"] = None
                with standin.lock:
                    drop = standin.drop_next > 0
                    if drop:
                        standin.drop_next -= 1
                if drop:  # a connection closed before any answer
                    record["status"], record["answer"] = None, None
                    with standin.lock:
                        standin.records.append(record)
                    self.close_connection = True
                    return
                if standin.hang_seconds:
                    standin.release.wait(standin.hang_seconds)
                if self.path != CHECK_PATH:
                    status, doc = 404, {"error": "no such path"}
                elif record["authorization"] != "Bearer " + standin.secret:
                    status, doc = 401, {"error": "bad secret"}
                elif record["content_type"] != "application/json":
                    status, doc = 415, {"error": "want application/json"}
                else:
                    status, doc = standin.policy(record["question"])
                record["status"], record["answer"] = status, doc
                with standin.lock:
                    standin.records.append(record)
                body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    # an HTTP/1.0 server closes after each answer: say so, or
                    # the client's pool reuses a connection being closed
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the module gave up waiting

        return Handler

    def start(self) -> "StandIn":
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None


class CordonLike:
    """A policy shaped like cordon's: the bot's own set-up is allowed, invites
    and joins only for an allow-list, power only for the bot and the
    allow-list; everything else (and anything from anyone else) refused."""

    def __init__(self, bot: str, allowed: set, power_ok: Optional[set] = None):
        self.bot = bot
        self.allowed = set(allowed)
        self.power_ok = set(power_ok if power_ok is not None else allowed) | {bot}

    def __call__(self, q: dict) -> Verdict:
        ev = q["event"]
        typ, sk, sender, content = ev["type"], ev["state_key"], ev["sender"], ev["content"]
        no = lambda why: (200, {"allow": False, "reason": why})  # noqa: E731
        if typ == "m.room.member":
            m = content.get("membership")
            if sk == self.bot and sender == self.bot and m == "join":
                return 200, {"allow": True}
            if m == "invite" and sender == self.bot and sk in self.allowed:
                return 200, {"allow": True}
            if m == "join" and sender == sk and sk in self.allowed:
                return 200, {"allow": True}
            if m in ("leave", "ban") and sender == self.bot:
                return 200, {"allow": True}
            return no("%s of %s by %s is not on the allow-list" % (m, sk, sender))
        if typ == "m.room.power_levels":
            users = set((content.get("users") or {}).keys())
            if sender == self.bot and users <= self.power_ok:
                return 200, {"allow": True}
            return no("power levels would grant %s" % sorted(users - self.power_ok))
        if sender == self.bot:
            return 200, {"allow": True}
        return no("%s from %s" % (typ, sender))


# --- Synapse -------------------------------------------------------------------

LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    filename: {log}
    formatter: precise
loggers:
  synapse.storage.SQL:
    level: WARNING
  synapse.access:
    level: WARNING
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"""


def write_signing_key(path: str) -> None:
    from signedjson.key import generate_signing_key, write_signing_keys

    with open(path, "w") as f:
        write_signing_keys(f, [generate_signing_key("a_test")])


class Synapse:
    def __init__(self, workdir: str, module_config: Optional[dict]):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.log = os.path.join(workdir, "homeserver.log")
        self.out = os.path.join(workdir, "stdout.log")
        self.proc: Optional[subprocess.Popen] = None
        self.module_config = module_config
        self.config_path = os.path.join(workdir, "homeserver.yaml")
        self._write_config()

    def _write_config(self) -> None:
        d = self.dir
        with open(os.path.join(d, "log.yaml"), "w") as f:
            f.write(LOG_CONFIG.format(log=self.log))
        write_signing_key(os.path.join(d, "signing.key"))
        big = {"per_second": 1000, "burst_count": 1000}
        cfg: Dict[str, Any] = {
            "server_name": SERVER_NAME,
            "pid_file": os.path.join(d, "homeserver.pid"),
            "listeners": [{
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }],
            "database": {"name": "sqlite3",
                         "args": {"database": os.path.join(d, "homeserver.db")}},
            "log_config": os.path.join(d, "log.yaml"),
            "media_store_path": os.path.join(d, "media"),
            "signing_key_path": os.path.join(d, "signing.key"),
            "registration_shared_secret": SHARED_SECRET,
            "macaroon_secret_key": "macaroon-secret-for-tests",
            "form_secret": "form-secret-for-tests",
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": False,
            "enable_metrics": False,
            "presence": {"enabled": False},
            "rc_message": big,
            "rc_registration": big,
            "rc_login": {"address": big, "account": big, "failed_attempts": big},
            "rc_joins": {"local": big, "remote": big},
            "rc_joins_per_room": big,
            "rc_invites": {"per_room": big, "per_user": big, "per_issuer": big},
            "rc_room_creation": big,
            "rc_admin_redaction": big,
            "rc_profile": big,
        }
        if self.module_config is not None:
            cfg["modules"] = [{"module": "cordon_synapse.CordonGate",
                               "config": self.module_config}]
        # JSON is YAML: no PyYAML needed on the test side.
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=1)

    def spawn(self) -> subprocess.Popen:
        out = open(self.out, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", self.config_path],
            cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
        )
        return self.proc

    def start(self, timeout: float = 90.0) -> "Synapse":
        self.spawn()

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("synapse exited with %s:\n%s"
                                   % (self.proc.returncode, self.output()))
            try:
                with urllib.request.urlopen(self.base + "/_matrix/client/versions",
                                            timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        try:
            wait_until("synapse to answer /_matrix/client/versions", up, timeout,
                       interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def output(self) -> str:
        text = ""
        for p in (self.out, self.log):
            if os.path.exists(p):
                with open(p, "r", errors="replace") as f:
                    text += f.read()
        return text

    def log_text(self) -> str:
        if not os.path.exists(self.log):
            return ""
        with open(self.log, "r", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)

    # --- client calls ---

    def call(self, method: str, path: str, token: Optional[str] = None,
             body: Any = None, timeout: float = 60.0) -> Tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    def register(self, localpart: str, admin: bool = False) -> "User":
        status, doc = self.call("GET", "/_synapse/admin/v1/register")
        assert status == 200, doc
        nonce = doc["nonce"]
        password = "pw-" + localpart
        mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        status, doc = self.call("POST", "/_synapse/admin/v1/register", body={
            "nonce": nonce, "username": localpart, "password": password,
            "admin": admin, "mac": mac.hexdigest()})
        assert status == 200, doc
        return User(self, doc["user_id"], doc["access_token"])


def q(room_id: str) -> str:
    return urllib.parse.quote(room_id, safe="")


class User:
    def __init__(self, hs: Synapse, user_id: str, token: str):
        self.hs, self.id, self.token = hs, user_id, token
        self._txn = 0

    def __repr__(self) -> str:
        return self.id

    def call(self, method: str, path: str, body: Any = None, **kw) -> Tuple[int, Any]:
        return self.hs.call(method, path, self.token, body, **kw)

    def create_room(self, incident: Optional[str], **extra) -> str:
        body: Dict[str, Any] = {"preset": "private_chat", "visibility": "private",
                                "name": "incident room"}
        creation = {"m.federate": False}
        if incident is not None:
            creation.update({"org.cordon.incident": incident,
                             "org.cordon.room_key": "command"})
        body["creation_content"] = creation
        body.update(extra)
        status, doc = self.call("POST", "/_matrix/client/v3/createRoom", body)
        assert status == 200, (status, doc)
        return doc["room_id"]

    def invite(self, room: str, user: "User") -> Tuple[int, Any]:
        return self.call("POST", "/_matrix/client/v3/rooms/%s/invite" % q(room),
                         {"user_id": user.id})

    def join(self, room: str) -> Tuple[int, Any]:
        return self.call("POST", "/_matrix/client/v3/join/%s" % q(room), {})

    def leave(self, room: str) -> Tuple[int, Any]:
        return self.call("POST", "/_matrix/client/v3/rooms/%s/leave" % q(room), {})

    def set_state(self, room: str, typ: str, content: dict, state_key: str = "") -> Tuple[int, Any]:
        return self.call("PUT", "/_matrix/client/v3/rooms/%s/state/%s/%s"
                         % (q(room), typ, urllib.parse.quote(state_key, safe="")), content)

    def send(self, room: str, body: str, typ: str = "m.room.message",
             content: Optional[dict] = None) -> Tuple[int, Any]:
        self._txn += 1
        return self.call("PUT", "/_matrix/client/v3/rooms/%s/send/%s/t%d-%f"
                         % (q(room), typ, self._txn, time.time()),
                         content or {"msgtype": "m.text", "body": body})

    def state(self, room: str) -> List[dict]:
        status, doc = self.call("GET", "/_matrix/client/v3/rooms/%s/state" % q(room))
        assert status == 200, (status, doc)
        return doc

    def messages(self, room: str) -> List[dict]:
        status, doc = self.call("GET", "/_matrix/client/v3/rooms/%s/messages?dir=b&limit=1000"
                                % q(room))
        assert status == 200, (status, doc)
        return doc["chunk"]

    def membership(self, room: str, user: "User") -> Optional[str]:
        for ev in self.state(room):
            if ev["type"] == "m.room.member" and ev["state_key"] == user.id:
                return ev["content"].get("membership")
        return None
