"""The Synapse side: the check_event_allowed callback and the status resource."""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Optional, Tuple

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

# Not re-exported by synapse.module_api, but stable for years and what
# Synapse's own timeouts use to fire errbacks from the sentinel context.
from synapse.logging.context import PreserveLoggingContext
from synapse.module_api import (
    EventBase,
    ModuleApi,
    StateMap,
    make_deferred_yieldable,
    run_in_background,
)

from ._version import __version__
from .rules import (
    CREATE,
    Answer,
    GateConfig,
    RoomTag,
    Unanswered,
    build_question,
    exempt_reason,
    parse_answer,
    parse_config,
    room_tag,
)

logger = logging.getLogger("cordon_synapse")

STATUS_PATH = "/_synapse/client/cordon/v1/status"
MAX_ANSWER_BYTES = 64 * 1024


class CordonGate:
    """Asks cordon before any membership or state event is accepted in one of
    its incident rooms (rooms whose m.room.create content carries
    org.cordon.incident)."""

    def __init__(self, config: GateConfig, api: ModuleApi):
        self._config = config
        self._api = api
        self._http = api.http_client
        self.asked = 0
        self.refused = 0
        self.unanswered = 0
        api.register_third_party_rules_callbacks(
            check_event_allowed=self.check_event_allowed
        )
        api.register_web_resource(STATUS_PATH, StatusResource(self))
        logger.info(
            "cordon_synapse %s: asking %s before state changes in cordon's rooms "
            "(timeout %d ms, %s)",
            __version__,
            config.endpoint,
            config.timeout_ms,
            "fail OPEN: unanswered questions are allowed"
            if config.fail_open
            else "fail closed: unanswered questions are refused",
        )

    @staticmethod
    def parse_config(config: Any) -> GateConfig:
        return parse_config(config)

    # --- status --------------------------------------------------------------

    def status(self) -> dict:
        return {
            "module": "cordon_synapse",
            "version": __version__,
            "fail_open": self._config.fail_open,
            "endpoint": self._config.endpoint,
            "asked": self.asked,
            "refused": self.refused,
            "unanswered": self.unanswered,
        }

    # --- the callback ----------------------------------------------------------

    async def _tag_of(
        self, event: EventBase, state_events: StateMap[EventBase]
    ) -> Optional[RoomTag]:
        create = state_events.get((CREATE, ""))
        if create is None:
            # Not expected for any event after the create event, but never let a
            # missing create event in the given state wave a change through.
            found = await self._api.get_room_state(event.room_id, [(CREATE, "")])
            create = found.get((CREATE, ""))
            if create is None:
                return None
        return room_tag(create.content)

    async def check_event_allowed(
        self, event: EventBase, state_events: StateMap[EventBase]
    ) -> Tuple[bool, Optional[dict]]:
        if event.type == CREATE or not event.is_state():
            return True, None
        state_key = event.get_state_key()
        content = event.content
        if exempt_reason(event.type, state_key, event.sender, content) is not None:
            return True, None
        tag = await self._tag_of(event, state_events)
        if tag is None:
            return True, None
        assert state_key is not None
        question = build_question(
            room_id=event.room_id,
            tag=tag,
            event_id=event.event_id,
            event_type=event.type,
            state_key=state_key,
            sender=event.sender,
            content=content,
            replaces=_content_of(state_events.get((event.type, state_key))),
        )
        what = "%s (state_key %r, sender %s) in %s" % (
            event.type,
            state_key,
            event.sender,
            event.room_id,
        )
        self.asked += 1
        try:
            answer = await self._ask(question)
        except Unanswered as e:
            self.unanswered += 1
            if self._config.fail_open:
                logger.warning(
                    "cordon did not answer about %s: %s; ALLOWING it (fail_open: true)",
                    what,
                    e,
                )
                return True, None
            logger.error(
                "cordon did not answer about %s: %s; refusing it (fail closed)",
                what,
                e,
            )
            return False, None
        if answer.allow:
            logger.info("cordon allowed %s", what)
            return True, None
        self.refused += 1
        logger.warning("cordon refused %s: %s", what, answer.reason)
        return False, None

    # --- asking ----------------------------------------------------------------

    async def _post(self, body: bytes) -> Answer:
        headers = Headers(
            {
                b"Authorization": [b"Bearer " + self._config.secret.encode("ascii")],
                b"Content-Type": [b"application/json"],
                b"Accept": [b"application/json"],
            }
        )
        response = await self._http.request(
            "POST", self._config.endpoint, data=body, headers=headers
        )
        length = response.length
        if isinstance(length, int) and length > MAX_ANSWER_BYTES:
            raise Unanswered("answer too large (%d bytes)" % length)
        raw = await make_deferred_yieldable(readBody(response))
        if len(raw) > MAX_ANSWER_BYTES:
            raise Unanswered("answer too large (%d bytes)" % len(raw))
        return parse_answer(response.code, raw)

    async def _post_retrying(self, body: bytes, attempt: "_Attempt") -> Answer:
        """One question, sent at most twice: a connection that the listener
        closed while it sat idle in Synapse's connection pool fails before any
        answer is read (Synapse reports it as RequestTimedOutError), and that
        says nothing about cordon. A second failure is the answer. The caller's
        timeout covers both tries."""
        try:
            return await self._post(body)
        except Unanswered:
            raise
        except Exception as e:
            if attempt.timed_out:
                raise
            logger.info(
                "asking cordon failed (%s); trying once more", _describe(e)
            )
        return await self._post(body)

    async def _ask(self, question: dict) -> Answer:
        """Sends the question; raises Unanswered unless cordon answered within
        timeout_ms.

        The timeout fires the result on its own: it does not wait for the HTTP
        request to wind down (Synapse's client may carry on with it in the
        background, up to its own 60 s limit; its outcome is then ignored)."""
        body = json.dumps(question).encode("utf-8")
        attempt = _Attempt()
        result: "defer.Deferred[Answer]" = defer.Deferred()

        def settle(outcome: Any) -> None:
            # called from the sentinel log context (d follows the logcontext
            # rules; time_out below enters it explicitly)
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            return None  # the outcome is consumed here; nothing left unhandled

        d = run_in_background(self._post_retrying, body, attempt)
        d.addBoth(settle)

        def time_out() -> None:
            if result.called:
                return
            attempt.timed_out = True
            with PreserveLoggingContext():
                try:
                    d.cancel()
                except Exception:  # a canceller throwing must not stop the timeout
                    logger.exception("cancelling the question to cordon failed")
                if not result.called:
                    result.errback(
                        Unanswered("no answer within %d ms" % self._config.timeout_ms)
                    )

        call = self._api.delayed_background_call(
            self._config.timeout_ms, time_out, desc="cordon_synapse_timeout"
        )
        try:
            return await make_deferred_yieldable(result)
        except Unanswered:
            raise
        except Exception as e:
            if attempt.timed_out:
                raise Unanswered("no answer within %d ms" % self._config.timeout_ms)
            raise Unanswered(_describe(e))
        finally:
            if call.active():
                call.cancel()


class _Attempt:
    timed_out = False


def _content_of(event: Optional[EventBase]) -> Optional[Mapping[str, Any]]:
    return None if event is None else event.content


def _describe(e: BaseException) -> str:
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


class StatusResource(Resource):
    """GET /_synapse/client/cordon/v1/status: is prevention on, and counters."""

    isLeaf = True

    def __init__(self, gate: CordonGate):
        super().__init__()
        self._gate = gate

    def _json(self, request: Any, code: int, doc: Mapping[str, Any]) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(doc).encode("utf-8")

    def render_GET(self, request: Any) -> bytes:
        if [p for p in request.postpath if p]:
            return self._json(request, 404, {"errcode": "M_NOT_FOUND", "error": "Not found"})
        return self._json(request, 200, self._gate.status())
