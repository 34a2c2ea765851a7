"""Tests for SDP hooks that answer later (a media backend over the
network): the core waits, keeps the call's SDPs in order, and copes with
the call changing meanwhile."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from b2bua.hookspecs import hookimpl
from tests.trial.core.test_call import CallTestCase


class SlowRewriter:
    """Marks every SDP it rewrites, C{delay} seconds later (never: C{None})."""

    def __init__(self) -> None:
        self.delay: float | None = 1.0
        self.clock: Any = None
        self.seen: list[str] = []

    @hookimpl
    def b2bua_configure(self, services: Any, settings: dict[str, Any]) -> None:
        self.clock = services.clock

    @hookimpl
    def b2bua_rewrite_sdp(self, call: Any, leg: Any, sdp: Any, direction: str) -> Any:
        self.seen.append(direction)
        if direction == "offer" and leg is not call.a_leg and not call.b_legs[-1].done \
                and len(self.seen) == 1:
            sdp.session_name = "rewritten"  # the first offer: at once (B leg INVITE)
            return None

        def rewrite() -> None:
            sdp.session_name = "rewritten"

        if self.delay is None:
            from twisted.internet.defer import Deferred

            return Deferred()
        return deferLater(self.clock, self.delay, rewrite)


class AsyncSdpTests(CallTestCase):
    """Alice calls Bob; SDP rewriting takes a second."""

    def setUp(self) -> None:
        super().setUp()
        self.rewriter = SlowRewriter()
        self.h.pm.register(self.rewriter, name="slow")
        self.rewriter.clock = self.h.clock

    def test_answers_wait_in_order(self) -> None:
        """A 183 and a 200 with SDP reach the caller after their rewriting,
        rewritten (an 18x still waiting when the 200 is answered is dropped:
        the 200 follows)."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[-1]
        self.assertIn(b"s=rewritten", incoming.invite.body)
        incoming.ring(183, sdp=True)
        self.h.flush()
        self.assertEqual([r.code for r in call.responses if 100 < r.code < 200], [])
        self.h.advance(1.0)
        self.assertEqual([r.code for r in call.responses if 100 < r.code < 200], [183])
        incoming.answer()
        self.h.flush()
        self.assertEqual(call.code, None)
        self.h.advance(1.0)
        self.assertEqual(call.code, 200)
        self.assertIn(b"s=rewritten", call.remote_sdp)
        call.hangup()
        self.finish()

    def test_cancel_while_the_answer_waits(self) -> None:
        """The caller CANCELs while the answer's SDP is being made: the
        caller gets 487 and the answered callee a BYE."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[-1]
        incoming.ring()
        incoming.answer()
        self.h.flush()
        call.cancel()
        self.h.flush()
        self.h.advance(1.0)
        self.assertEqual(call.code, 487)
        self.assertEqual(incoming.state, "terminated")
        self.assertIn("BYE", [r.method for r in incoming.requests])
        self.finish()

    def test_reinvite_waits(self) -> None:
        """A re-INVITE's offer and its answer are both rewritten late."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[-1]
        incoming.answer()
        self.h.advance(1.0)
        self.assertEqual(call.code, 200)
        call.reinvite(direction="sendonly")
        self.h.flush()
        before = len(incoming.requests)
        self.h.advance(1.0)
        self.assertGreater(len(incoming.requests), before)
        self.h.advance(1.0)
        self.assertIn(b"s=rewritten", call.remote_sdp)
        call.hangup()
        self.finish()

    def test_hook_timeout(self) -> None:
        """A hook that never answers holds the SDP for the hook timeout at
        most; then the answer goes as it came."""
        call = self.alice.call("1001")
        self.rewriter.delay = None
        incoming = self.bob.incoming[-1]
        incoming.answer()
        self.h.flush()
        self.assertIsNone(call.code)
        self.h.advance(5.0)  # the harness's hook timeout
        self.assertEqual(call.code, 200)
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total", hook="b2bua_rewrite_sdp"),
                         1)
        self.flushLoggedErrors()
        call.hangup()
        self.finish()
