"""Tests for the pieces of the media server's transfer: L{media.server.refer}
(target, sipfrag, the L{Referral} states), the transfer node's C{timeout}
field, and how the interpreter and L{MediaCall} treat a transfer's outcome.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.message import Request, Response
from media.server.ivr import FlowError, load_flow
from media.server.ivr_actions import builtin_actions
from media.server.ivr_runtime import FlowResult, run_flow
from media.server.ivr_session import TransferFailed, TransferTimedOut
from media.server.refer import (
    DEFAULT_TRANSFER_TIMEOUT,
    ReferNotSupported,
    Referral,
    answer_notify,
    parse_sipfrag,
    refer_target,
)
from media.server.ua_session import MediaCall


def notify(body: bytes, event: str = "refer;id=7", state: str = "active;expires=180") -> Request:
    """A NOTIFY as the switch sends it."""
    return Request("NOTIFY", "sip:ms@127.0.0.1", [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"), ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:c@d>;tag=2"), ("Call-ID", "c1"), ("CSeq", "3 NOTIFY"),
        ("Event", event), ("Subscription-State", state),
        ("Content-Type", "message/sipfrag;version=2.0")], body)


class TargetTests(SynchronousTestCase):
    """L{refer_target}: what the switch will accept as Refer-To."""

    def test_number(self) -> None:
        """A number becomes a SIP URI at the domain."""
        self.assertEqual(str(refer_target("1002", "tenant.example")), "sip:1002@tenant.example")
        self.assertEqual(str(refer_target("+4930123", "t")), "sip:+4930123@t")

    def test_hash_escaped(self) -> None:
        """A # in a number is escaped in the SIP user part."""
        self.assertEqual(str(refer_target("*60#", "t")), "sip:*60%23@t")

    def test_tel(self) -> None:
        """A tel: URI loses its visual separators and parameters."""
        self.assertEqual(str(refer_target("tel:+1-(555)-0100;ext=7", "t")), "sip:+15550100@t")

    def test_sip(self) -> None:
        """SIP and SIPS URIs are kept as they are."""
        self.assertEqual(str(refer_target("sips:op@pbx.example;transport=tls", "t")),
                         "sips:op@pbx.example;transport=tls")

    def test_bad(self) -> None:
        """Anything else is a ValueError naming the target."""
        for target in ("mailto:a@b", "12a", "tel:abc", "sip:", ""):
            with self.assertRaises(ValueError, msg=target):
                refer_target(target, "t")
        with self.assertRaises(ValueError):
            refer_target("1002", "")


class SipfragTests(SynchronousTestCase):
    """L{parse_sipfrag}: the status line of a NOTIFY body."""

    def test_status(self) -> None:
        """Code and reason of the first line; later lines are ignored."""
        self.assertEqual(parse_sipfrag(b"SIP/2.0 486 Busy Here\r\nTo: x\r\n"),
                         (486, "Busy Here"))
        self.assertEqual(parse_sipfrag(b"SIP/2.0 200\n"), (200, ""))

    def test_bad(self) -> None:
        """A body that does not start with a status line is refused."""
        for body in (b"", b"hello", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 99 x"):
            with self.assertRaises(ValueError, msg=body):
                parse_sipfrag(body)


class ReferralTests(SynchronousTestCase):
    """The L{Referral} states."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.referral = Referral(self.clock, timeout=10)
        self.referral.event_id = "7"
        self.outcomes: list[Any] = []
        self.referral.deferred.addBoth(self.outcomes.append)

    def test_accepted_then_success(self) -> None:
        """202, NOTIFY 100, NOTIFY 200: fires with None, timer stopped."""
        self.referral.response_received(Response(202), None)
        self.assertEqual(self.referral.state, "accepted")
        self.assertEqual(self.referral.notify_received(notify(b"SIP/2.0 100 Trying\r\n")),
                         (200, "OK"))
        self.assertEqual(self.outcomes, [])
        self.referral.notify_received(notify(b"SIP/2.0 200 OK\r\n", state="terminated"))
        self.assertEqual(self.outcomes, [None])
        self.assertEqual(self.referral.outcome, "transferred")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failure_status(self) -> None:
        """A final error sipfrag fails with its code and reason."""
        self.referral.response_received(Response(202), None)
        self.referral.notify_received(notify(b"SIP/2.0 603 Decline\r\n", state="terminated"))
        error = self.outcomes[0].value
        self.assertIsInstance(error, TransferFailed)
        self.assertEqual((error.code, error.reason), (603, "Decline"))
        self.assertEqual(self.referral.outcome, "failed")

    def test_refused(self) -> None:
        """A final error to the REFER: TransferFailed, outcome refused."""
        self.referral.response_received(Response(100), None)
        self.assertEqual(self.outcomes, [])
        self.referral.response_received(Response(403, "Call transfer disabled"), None)
        error = self.outcomes[0].value
        self.assertEqual((type(error), error.code, error.reason),
                         (TransferFailed, 403, "Call transfer disabled"))
        self.assertEqual(self.referral.outcome, "refused")

    def test_not_supported(self) -> None:
        """405 and 501 mean no REFER support: ReferNotSupported."""
        self.referral.response_received(Response(501), None)
        self.assertIsInstance(self.outcomes[0].value, ReferNotSupported)
        self.assertEqual(self.referral.outcome, "fallback")

    def test_no_answer(self) -> None:
        """A REFER without an answer fails with 408."""
        self.referral.transaction_failed(None, Exception("timer F"))
        self.assertEqual(self.outcomes[0].value.code, 408)

    def test_timeout(self) -> None:
        """No final status within the timeout: TransferTimedOut."""
        self.referral.response_received(Response(202), None)
        self.clock.advance(9.9)
        self.assertEqual(self.outcomes, [])
        self.clock.advance(0.1)
        self.assertIsInstance(self.outcomes[0].value, TransferTimedOut)
        self.assertEqual(self.referral.outcome, "timeout")

    def test_default_timeout(self) -> None:
        """The default wait is 32 s; stop() cancels it without firing."""
        clock = Clock()
        referral = Referral(clock)
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()],
                         [DEFAULT_TRANSFER_TIMEOUT])
        self.assertEqual(DEFAULT_TRANSFER_TIMEOUT, 32.0)
        referral.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertNoResult(referral.deferred)
        self.assertEqual(referral.outcome, "given_up")

    def test_cancel(self) -> None:
        """Cancelling stops the timer; outcome given_up."""
        self.referral.deferred.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.referral.outcome, "given_up")
        self.outcomes[0].trap(Exception)

    def test_late_messages_ignored(self) -> None:
        """After the outcome, a 2xx to the REFER or a NOTIFY changes nothing
        (the NOTIFY is still answered 200)."""
        self.referral.notify_received(notify(b"SIP/2.0 200 OK\r\n"))
        self.referral.response_received(Response(202), None)
        self.assertEqual(self.referral.notify_received(notify(b"SIP/2.0 486 Busy\r\n")),
                         (200, "OK"))
        self.assertEqual(self.outcomes, [None])
        self.assertEqual(self.referral.state, "succeeded")

    def test_answer_notify(self) -> None:
        """481 without a referral, 489 for another event or id, 400 for a
        bad body."""
        self.assertEqual(answer_notify(None, notify(b"SIP/2.0 200 OK\r\n"))[0], 481)
        self.assertEqual(answer_notify(self.referral, notify(b"x", event="dialog"))[0], 489)
        self.assertEqual(answer_notify(self.referral, notify(b"x", event="refer;id=8"))[0], 489)
        self.assertEqual(answer_notify(self.referral, notify(b"x"))[0], 400)
        self.assertEqual(answer_notify(self.referral, notify(b"SIP/2.0 180 Ringing\r\n",
                                                             event="Refer"))[0], 200)
        self.assertEqual(self.outcomes, [])


class NodeTests(SynchronousTestCase):
    """The transfer node's optional C{timeout} field."""

    BASE = '[flow]\nstart = "go"\n[nodes.go]\ntype = "transfer"\ntarget = "1002"\n'

    def test_timeout(self) -> None:
        """A timeout is read; without one it is None."""
        self.assertIsNone(load_flow(self.BASE).nodes["go"].timeout)
        self.assertEqual(load_flow(self.BASE + "timeout = 12\n").nodes["go"].timeout, 12.0)

    def test_bad_timeout(self) -> None:
        """A timeout out of range or not a number is a problem naming it."""
        for value, message in (("0", "0 is outside 1-600"), ("601", "601 is outside 1-600"),
                               ('"x"', "must be a number of seconds")):
            with self.assertRaises(FlowError) as caught:
                load_flow(self.BASE + f"timeout = {value}\n")
            self.assertIn("node 'go', field 'timeout': " + message, str(caught.exception))


class _Session:
    """A session whose transfer answers with C{result}."""

    def __init__(self, result: Deferred[None]) -> None:
        self.result = result
        self.events: list[tuple[Any, ...]] = []

    def play(self, prompts: Any, barge_in: bool) -> Deferred[str | None]:
        self.events.append(("play",))
        return succeed(None)

    def collect(self, *args: Any) -> Deferred[str]:
        return succeed("")

    def transfer(self, target: str, timeout: float | None = None) -> Deferred[None]:
        self.events.append(("transfer", target, timeout))
        return self.result

    def hangup(self, cause: str) -> None:
        self.events.append(("hangup", cause))

    def now(self) -> Any:
        raise NotImplementedError


class RuntimeTests(SynchronousTestCase):
    """How the interpreter treats a transfer's outcome."""

    FLOW = ('[flow]\nstart = "go"\n[nodes.go]\ntype = "transfer"\ntarget = "1002"\n'
            'timeout = 7\non_error = "sorry"\n[nodes.sorry]\ntype = "play"\nprompt = "x"\n'
            'next = "bye"\n[nodes.bye]\ntype = "hangup"\n')

    def run_text(self, text: str, result: Deferred[None]) -> tuple[_Session, FlowResult]:
        session = _Session(result)
        _, done = run_flow(load_flow(text), session, actions=builtin_actions(), clock=Clock())
        return session, self.successResultOf(done)

    def test_timeout_passed(self) -> None:
        """The node's timeout reaches the session."""
        session, result = self.run_text(self.FLOW, succeed(None))
        self.assertEqual(session.events, [("transfer", "1002", 7.0)])
        self.assertEqual(result.outcome, "transfer")

    def test_failed_takes_on_error(self) -> None:
        """TransferFailed goes to on_error."""
        session, result = self.run_text(self.FLOW, fail(TransferFailed(486, "Busy Here")))
        self.assertEqual(session.events[1:], [("play",), ("hangup", "normal")])
        self.assertEqual(result.variables["last_error"],
                         "transfer to 1002 failed: 486 Busy Here")

    def test_timed_out_hangs_up(self) -> None:
        """TransferTimedOut hangs up even with on_error."""
        session, result = self.run_text(self.FLOW, fail(TransferTimedOut(408, "no final status")))
        self.assertEqual(session.events[1:], [("hangup", "transfer_timeout")])
        self.assertEqual((result.outcome, result.detail), ("hangup", "transfer_timeout"))

    def test_failed_without_on_error(self) -> None:
        """Without on_error, TransferFailed hangs up with transfer_failed."""
        text = '[flow]\nstart = "go"\n[nodes.go]\ntype = "transfer"\ntarget = "1"\n'
        session, result = self.run_text(text, fail(TransferFailed(480, "Unavailable")))
        self.assertEqual(session.events, [("transfer", "1", None), ("hangup", "transfer_failed")])
        self.assertEqual((result.outcome, result.detail), ("hangup", "transfer_failed"))


class MediaCallTests(SynchronousTestCase):
    """L{MediaCall.transfer} with and without a C{refer} callback."""

    def make(self, refer: Any = None) -> tuple[MediaCall, list[str]]:
        ended: list[str] = []
        call = MediaCall(Clock(), None, end=ended.append, telephone_event=True, refer=refer)
        return call, ended

    def test_without_refer(self) -> None:
        """No refer callback: BYE naming the target (the old behaviour)."""
        call, ended = self.make()
        self.assertIsNone(call.transfer("1002"))
        self.assertEqual(ended, ['SIP;cause=302;text="transfer 1002"'])

    def test_success(self) -> None:
        """The refer callback's success: transferred, no BYE."""
        pending: Deferred[None] = Deferred()
        asked: list[tuple[str, float | None]] = []
        call, ended = self.make(lambda target, timeout: asked.append((target, timeout))
                                or pending)
        d = call.transfer("1002", timeout=5)
        self.assertEqual(asked, [("1002", 5)])
        self.assertNoResult(d)
        self.assertIsNone(call.next_frame())  # silence while waiting
        pending.callback(None)
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(call.transferred)
        self.assertEqual(ended, [])

    def test_not_supported(self) -> None:
        """ReferNotSupported: the call ends the old way, the transfer
        succeeds."""
        call, ended = self.make(lambda target, timeout: fail(ReferNotSupported(501, "x")))
        self.assertIsNone(self.successResultOf(call.transfer("sip:op@pbx")))
        self.assertEqual(ended, ['SIP;cause=302;text="transfer sip:op@pbx"'])

    def test_failure_then_hangup(self) -> None:
        """After a TransferFailed, hangup("transfer_failed") carries its
        status in the Reason."""
        call, ended = self.make(lambda target, timeout: fail(TransferFailed(486, "Busy Here")))
        self.failureResultOf(call.transfer("1002"), TransferFailed)
        self.assertFalse(call.transferred)
        self.assertEqual(ended, [])
        call.hangup("transfer_failed")
        self.assertEqual(ended, ['SIP;cause=486;text="transfer failed: Busy Here"'])

    def test_caller_hangs_up(self) -> None:
        """The caller's BYE fails a pending transfer with CallerHungUp."""
        from media.server.ivr_session import CallerHungUp

        call, _ = self.make(lambda target, timeout: Deferred())
        d = call.transfer("1002")
        call.caller_hung_up()
        self.failureResultOf(d, CallerHungUp)

    def test_hangup_cancels(self) -> None:
        """Ending the call ourselves cancels the pending transfer."""
        pending: Deferred[None] = Deferred()
        call, _ = self.make(lambda target, timeout: pending)
        d = call.transfer("1002")
        call.hangup("normal")
        self.assertTrue(pending.called)  # cancelled: the REFER's wait stops
        self.failureResultOf(d, CancelledError)
