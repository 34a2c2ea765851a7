"""Tests for L{b2bua.core.switch}: the transaction user in front of the
calls (REGISTER and INVITE authentication, requests that are not calls,
merged requests, drain), on the in-memory harness of L{b2bua.testing}."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from b2bua.core.switch import ALLOW
from b2bua.hookspecs import hookimpl
from b2bua.sip.message import Request
from b2bua.testing import SwitchHarness
from tests.trial.core.test_call import CallTestCase


class RegisterTests(CallTestCase):
    """REGISTER through the switch: digest, then the registrar."""

    def test_digest_then_binding(self) -> None:
        """A REGISTER is challenged (401), then accepted with the credentials;
        the binding lists the phone's Contact."""
        carol = self.h.phone("1002")
        register = carol.register()
        self.assertEqual([r.code for r in register.responses], [401, 200])
        challenge = register.responses[0].headers.get_lines("WWW-Authenticate")
        self.assertTrue(challenge)
        self.assertIn("<sip:1002@127.0.0.4:5060>", register.final.headers.get("Contact") or "")
        bindings = self.successResultOf(self.h.registrar.lookup("1002@127.0.0.1"))
        self.assertEqual([b.contact for b in bindings], ["sip:1002@127.0.0.4:5060"])
        self.finish()

    def test_interval_too_brief(self) -> None:
        """A too brief interval gets 423 with Min-Expires (after the digest)."""
        carol = self.h.phone("1002")
        register = carol.register(expires=30)
        self.assertEqual([r.code for r in register.responses], [401, 423])
        self.assertEqual(register.final.headers.get("Min-Expires"), "60")
        self.finish()

    def test_wrong_password(self) -> None:
        """Refused credentials get another 401 and no binding."""
        carol = self.h.phone("1002", password="4321")
        register = carol.register()
        self.assertEqual([r.code for r in register.responses], [401, 401])
        self.assertEqual(self.successResultOf(self.h.registrar.lookup("1002@127.0.0.1")), [])
        self.finish()

    def test_someone_elses_aor(self) -> None:
        """Credentials of one extension do not register another's AOR."""
        carol = self.h.phone("1002")
        carol.aor = "sip:1003@127.0.0.1"
        register = carol.register()
        self.assertEqual(register.code, 403)
        self.finish()


class InviteAdmissionTests(CallTestCase):
    """What happens to an INVITE before it becomes a call."""

    def test_unknown_extension_after_authentication(self) -> None:
        """A call to an unknown number is challenged first and gets 404 only
        once the caller authenticated."""
        call = self.alice.call("7777")
        self.assertEqual([r.code for r in call.responses if r.code >= 200], [407, 404])
        unauthenticated = self.alice.call("7777", authenticate=False)
        self.assertEqual(unauthenticated.code, 407)
        self.assertEqual(len(self.recorder.ended), 1)
        self.finish()

    def test_wrong_user_and_wrong_password_look_alike(self) -> None:
        """An unknown user and a known user with a wrong password both get
        a fresh 407 challenge, the same way."""
        stranger = self.h.phone("9999")
        liar = self.h.phone("1002", password="0000")
        first = stranger.call("1001")
        second = liar.call("1001")
        self.assertEqual([r.code for r in first.responses], [407, 407])
        self.assertEqual([r.code for r in second.responses], [407, 407])
        last = first.responses[-1], second.responses[-1]
        self.assertEqual(last[0].reason, last[1].reason)
        self.assertEqual([n.lower() for n, _ in last[0].headers],
                         [n.lower() for n, _ in last[1].headers])
        for response in last:
            self.assertNotIn("stale", response.headers.get("Proxy-Authenticate") or "")
        self.assertEqual(self.recorder.ended, [])
        self.assertEqual(self.bob.incoming, [])
        self.assertEqual(self.h.metric("b2bua_sip_rejected_requests_total",
                                       reason="auth_failed"), 2)
        self.finish()

    def test_merged_request(self) -> None:
        """A second copy of an INVITE (same Call-ID, From tag and CSeq, other
        branch: it forked upstream) gets 482 (RFC 3261 8.2.2.2)."""
        call = self.alice.call("1001")
        invite = call.invite
        copy = Request("INVITE", invite.uri_text,
                       [(n, v) for n, v in invite.headers
                        if n.lower() not in ("via", "content-length")], invite.body)
        merged = self.alice.send(copy, authenticate=False)
        self.h.flush()
        self.assertEqual(merged.code, 482)
        self.assertEqual(self.h.metric("b2bua_sip_rejected_requests_total",
                                       reason="loop_detected"), 1)
        self.assertEqual(len(self.bob.incoming), 1)
        call.cancel()
        self.finish()

    def test_max_forwards(self) -> None:
        """The B leg's Max-Forwards is one less than the caller's; a request
        that may not be forwarded any more gets 483 (a loop)."""
        call = self.alice.call("1001", headers=(("Max-Forwards", "10"),))
        self.assertEqual(self.bob.incoming[0].invite.headers.get("Max-Forwards"), "9")
        call.cancel()
        looped = self.alice.call("1001", headers=(("Max-Forwards", "0"),))
        self.assertEqual(looped.code, 483)
        self.assertEqual(self.h.metric("b2bua_sip_rejected_requests_total",
                                       reason="too_many_hops"), 1)
        self.finish()

    def test_session_interval_too_small(self) -> None:
        """A Session-Expires below Min-SE gets 422 with Min-SE (RFC 4028)."""
        call = self.alice.call("1001", headers=(("Session-Expires", "30"),))
        self.assertEqual(call.code, 422)
        self.assertEqual(call.responses[-1].headers.get("Min-SE"), "90")
        self.finish()


class OtherRequestTests(CallTestCase):
    """Requests that are not calls."""

    def send(self, method: str, to_tag: str | None = None) -> int | None:
        """Alice sends C{method} outside any call; the final code."""
        tag = f";tag={to_tag}" if to_tag else ""
        request = Request(method, "sip:127.0.0.1", [
            ("Max-Forwards", "70"), ("From", "<sip:1000@127.0.0.1>;tag=abc"),
            ("To", f"<sip:127.0.0.1>{tag}"), ("Call-ID", f"{method}-1@127.0.0.2"),
            ("CSeq", f"1 {method}")])
        outgoing = self.alice.send(request, authenticate=False)
        self.h.flush()
        return outgoing.code

    def test_options(self) -> None:
        """OPTIONS gets 200 with what we allow."""
        self.assertEqual(self.send("OPTIONS"), 200)
        [response] = self.h.network.responses(200, "OPTIONS")
        self.assertEqual(response.headers.get("Allow"), ALLOW)
        self.finish()

    def test_unknown_and_misplaced_methods(self) -> None:
        """An unknown method gets 501, a BYE outside a dialog 481, an
        in-dialog request matching no dialog 481."""
        self.assertEqual(self.send("FROB"), 501)
        self.assertEqual(self.send("BYE"), 481)
        self.assertEqual(self.send("INFO", to_tag="nosuch"), 481)
        self.finish()


class CdrWriter:
    """A plugin whose C{b2bua_call_ended} returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.pending: list[Deferred[None]] = []

    @hookimpl
    def b2bua_call_ended(self, call: Any, record: Any) -> Deferred[None]:
        """Start "writing" the CDR."""
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


class DrainTests(CallTestCase):
    """L{Switch.drain}: refuse new calls, wait for the others, then end them."""

    def test_drain_waits_for_calls(self) -> None:
        """While draining a new INVITE gets 503 (with Retry-After, before any
        challenge); the drain completes when the last call ends."""
        call, _ = self.connect()
        done = self.h.switch.drain()
        self.assertNoResult(done)
        refused = self.h.register("1002").call("1000")
        self.assertEqual([r.code for r in refused.responses], [503])
        self.assertEqual(refused.responses[0].headers.get("Retry-After"), "30")
        self.assertEqual(self.h.metric("b2bua_sip_rejected_requests_total",
                                       reason="overload"), 1)
        self.h.advance(30)
        self.assertNoResult(done)
        call.hangup()
        self.successResultOf(done)
        self.finish()

    def test_drain_timeout_ends_calls(self) -> None:
        """Calls still up when the drain times out get a BYE on both sides,
        with a Reason; unanswered ones fail with 480."""
        call, incoming = self.connect()
        carol = self.h.register("1002")
        ringing = carol.call("1003")
        dave = self.h.phone("1003")
        self.assertEqual(ringing.code, 480)
        dave.register()
        ringing = carol.call("1003")
        dave.incoming[0].ring()
        done = self.h.switch.drain()
        self.h.advance(60)
        self.successResultOf(done)
        for side in (self.a_side("BYE"), self.b_side("BYE")):
            self.assertIn("shutting down", side[0].headers.get("Reason") or "")
        self.assertEqual((call.state, incoming.state), ("terminated", "terminated"))
        self.assertEqual(ringing.code, 480)
        self.assertEqual(dave.incoming[0].code, 487)
        self.assertEqual([r.disconnect for _, r in self.recorder.ended][-2:],
                         ["drain", "drain"])
        self.finish()

    def test_drain_waits_for_plugins(self) -> None:
        """A Deferred a plugin returned from C{b2bua_call_ended} (a CDR being
        written) holds the drain until it fires."""
        writer = CdrWriter()
        self.h.pm.register(writer, name="cdr")
        call, _ = self.connect()
        done = self.h.switch.drain()
        call.hangup()
        self.assertNoResult(done)
        writer.pending[0].callback(None)
        self.successResultOf(done)
        self.finish()

    def test_drain_bounded_by_plugins(self) -> None:
        """A plugin that never finishes holds the drain only until its
        timeout."""
        writer = CdrWriter()
        self.h.pm.register(writer, name="cdr")
        call, _ = self.connect()
        done = self.h.switch.drain()
        call.hangup()
        self.h.advance(59.9)
        self.assertNoResult(done)
        self.h.advance(0.1)
        self.successResultOf(done)
        self.finish()

    def test_idle_drain(self) -> None:
        """Without calls a drain completes at once and leaves no timer."""
        h = SwitchHarness()
        self.successResultOf(h.switch.drain())
        h.assert_idle()
        self.finish()
