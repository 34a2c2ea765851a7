"""Tests for the media server's transfer by REFER (L{media.server.ua}).

A test phone (L{b2bua.testing.Phone}) plays the switch: it calls the user
agent, which runs a flow whose C{transfer} node sends a REFER in the
call's dialog; the phone answers it (C{phone.answers["REFER"]}) and sends
the NOTIFYs the switch would send (C{docs/transfer.md}).  Everything runs
on one fake reactor; nothing touches a socket.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.directory import DEMO_DOMAIN
from b2bua.sip.headers import parse_name_addr
from b2bua.sip.message import Request, Response
from b2bua.testing import Outgoing, PhoneCall
from media.server.ivr import load_flow
from media.server.ivr_actions import builtin_actions
from media.server.ivr_runtime import FlowResult
from media.server.ua import TRANSFERRED_BYE_WAIT, TRANSFERRED_REASON, MediaServerUA
from media.server.ua_session import reason_for_cause
from tests.trial.media.server.test_ua import UATestsMixin

UA = ("127.0.0.1", 5070)
SIPFRAG_TYPE = "message/sipfrag;version=2.0"

TRANSFER_FLOW = """
[flow]
name = "xfer"
start = "go"
max_duration = 600

[nodes.go]
type = "transfer"
target = "1002"
on_error = "sorry"

[nodes.sorry]
type = "play"
prompt = "line-busy"
next = "bye"

[nodes.bye]
type = "hangup"
cause = "after_failure"
"""

BARE_FLOW = """
[flow]
name = "bare"
start = "go"

[nodes.go]
type = "transfer"
target = "tel:+49-30-1234;phone-context=+49"
"""

QUICK_FLOW = """
[flow]
name = "quick"
start = "go"

[nodes.go]
type = "transfer"
target = "sip:operator@pbx.example"
timeout = 5
on_error = "bye"

[nodes.bye]
type = "hangup"
"""

SHORT_FLOW = """
[flow]
name = "short"
start = "go"
max_duration = 3

[nodes.go]
type = "transfer"
target = "1002"
"""


class TransferTestsMixin(UATestsMixin):
    """A user agent and a phone (the switch, which takes REFER) on one fake
    reactor."""

    flow_texts = (("xfer", TRANSFER_FLOW), ("bare", BARE_FLOW), ("quick", QUICK_FLOW),
                  ("short", SHORT_FLOW))

    def setUp(self) -> None:
        super().setUp()
        self.phone.answers["REFER"] = 202

    def call(self, flow: str = "xfer") -> PhoneCall:
        """The phone calls a flow; the flow starts at the ACK."""
        call = self.phone.call(f"sip:{flow}@127.0.0.1:5070")
        self.network.flush()
        return call

    def advance(self, seconds: float, step: float = 0.02) -> None:
        """Let time pass at the RTP sessions' pace (the same clock)."""
        for _ in range(round(seconds / step)):
            self.reactor.advance(step)
            self.network.flush()

    def received(self, method: str) -> list[Request]:
        """Requests of C{method} the phone received."""
        return [r for r in self.phone.requests if r.method == method]

    def notify(self, call: PhoneCall, status: str, *, final: bool | None = None,
               event: str | None = None, body: bytes | None = None) -> Outgoing:
        """Send the NOTIFY the switch would send with sipfrag C{status}."""
        refer = self.received("REFER")[-1]
        code = int(status.split()[0])
        if final is None:
            final = code >= 200
        state = "terminated;reason=noresource" if final else "active;expires=180"
        headers = [("Event", event or f"refer;id={refer.cseq.number}"),
                   ("Subscription-State", state)]
        payload = body if body is not None else f"SIP/2.0 {status}\r\n".encode()
        outgoing = call.request("NOTIFY", payload, SIPFRAG_TYPE, headers)
        self.network.flush()
        return outgoing

    def result(self) -> FlowResult:
        """The one run's result."""
        self.assertEqual(len(self.results), 1)  # type: ignore[attr-defined]
        return self.results[0][1]

    def assert_idle(self) -> None:
        """No call left, the ports back in the pool, no timer pending."""
        self.reactor.advance(1)
        self.assertEqual(self.ua.calls, {})  # type: ignore[attr-defined]
        self.assertEqual(self.pool.in_use, 0)  # type: ignore[attr-defined]
        self.network.flush()
        for _ in range(70):  # the transactions' own timers
            self.reactor.advance(1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])  # type: ignore[attr-defined]


class ReferTests(TransferTestsMixin, SynchronousTestCase):
    """The REFER the transfer node sends."""

    def test_refer_headers(self) -> None:
        """The REFER goes in the call's dialog: Refer-To the number at the
        caller's domain, Referred-By our URI, our Contact, the next CSeq."""
        call = self.call()
        refers = self.received("REFER")
        self.assertEqual(len(refers), 1)
        refer = refers[0]
        invite = call.invite
        self.assertEqual(refer.call_id, invite.call_id)
        self.assertEqual(refer.to.tag, invite.from_.tag)
        self.assertEqual(refer.from_.tag, call.dialog.remote_tag)
        self.assertEqual(refer.headers.get("refer-to"), f"<sip:1002@{DEMO_DOMAIN}>")
        self.assertEqual(str(parse_name_addr(refer.headers.get("referred-by")).uri),
                         "sip:xfer@127.0.0.1:5070")
        self.assertEqual(parse_name_addr(refer.headers.get("contact")).uri.host, "127.0.0.1")
        self.assertEqual(refer.cseq.number, 1)  # the UA had sent nothing in the dialog
        self.assertEqual(str(refer.uri), str(call.dialog.local_contact.uri))

    def test_tel_target(self) -> None:
        """A tel: target becomes a SIP URI at the caller's domain (the switch
        refuses other schemes), its separators and parameters dropped."""
        self.call("bare")
        self.assertEqual(self.received("REFER")[0].headers.get("refer-to"),
                         f"<sip:+49301234@{DEMO_DOMAIN}>")

    def test_sip_target(self) -> None:
        """A SIP URI target is sent as it is."""
        self.call("quick")
        self.assertEqual(self.received("REFER")[0].headers.get("refer-to"),
                         "<sip:operator@pbx.example>")

    def test_allow_lists_notify(self) -> None:
        """The UA's Allow names NOTIFY (it receives the REFER's NOTIFYs)."""
        call = self.call()
        self.assertIn("NOTIFY", call.outgoing.final.headers.get("allow"))


class SuccessTests(TransferTestsMixin, SynchronousTestCase):
    """202, NOTIFY 100, NOTIFY 200: the caller is transferred."""

    def test_transferred(self) -> None:
        """The NOTIFYs are answered 200; the run's outcome is transfer; the
        UA sends no BYE; the switch's BYE is answered 200 and frees all."""
        call = self.call()
        self.assertEqual(self.received("REFER")[0].method, "REFER")
        trying = self.notify(call, "100 Trying")
        self.assertEqual(trying.code, 200)
        self.assertEqual(self.results, [])
        self.advance(5)
        ok = self.notify(call, "200 OK")
        self.assertEqual(ok.code, 200)
        result = self.result()
        self.assertEqual((result.outcome, result.detail), ("transfer", "1002"))
        self.advance(10)
        self.assertEqual(self.received("BYE"), [])
        self.assertEqual(len(self.ua.calls), 1)
        bye = call.hangup('SIP;cause=200;text="Call transferred"')
        self.network.flush()
        self.assertEqual(bye.code, 200)
        self.assertEqual(self.received("BYE"), [])
        self.assertEqual(self.ua.transfers, {"transferred": 1})
        self.assert_idle()

    def test_switch_never_hangs_up(self) -> None:
        """Should the switch's BYE never come, the UA sends its own after
        L{TRANSFERRED_BYE_WAIT} seconds."""
        call = self.call()
        self.notify(call, "200 OK")
        self.advance(TRANSFERRED_BYE_WAIT - 1)
        self.assertEqual(self.received("BYE"), [])
        self.advance(2)
        byes = self.received("BYE")
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].headers.get("reason"), TRANSFERRED_REASON)
        self.assert_idle()

    def test_notify_overtakes_202(self) -> None:
        """A final NOTIFY that comes before the 202 (RFC 3515 2.4.4) ends
        the transfer all the same."""
        self.network.drop(lambda d: isinstance(d.message, Response)
                          and d.message.cseq.method == "REFER", count=None)
        call = self.call()
        self.assertEqual(self.notify(call, "200 OK").code, 200)
        self.assertEqual(self.result().outcome, "transfer")
        call.hangup()
        self.network.flush()
        self.assert_idle()


class FailureTests(TransferTestsMixin, SynchronousTestCase):
    """Transfers that fail: the caller stays in the flow, or is hung up."""

    def test_notify_busy_takes_on_error(self) -> None:
        """NOTIFY 486: the node's on_error runs (a prompt, then the hangup
        node's BYE), with last_error naming the status."""
        call = self.call()
        self.notify(call, "100 Trying")
        self.assertEqual(self.notify(call, "486 Busy Here").code, 200)
        self.advance(2)
        byes = self.received("BYE")
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].headers.get("reason"), reason_for_cause("after_failure"))
        result = self.result()
        self.assertEqual((result.outcome, result.node), ("hangup", "bye"))
        self.assertEqual(result.variables["last_error"],
                         "transfer to 1002 failed: 486 Busy Here")
        self.assertEqual(self.ua.transfers, {"failed": 1})
        self.assert_idle()

    def test_caller_stays_after_failure(self) -> None:
        """After a failed transfer the caller is still in the call: the
        on_error prompt is being played (no BYE yet)."""
        call = self.call()
        self.notify(call, "480 Temporarily Unavailable")
        self.assertEqual(self.received("BYE"), [])
        self.assertEqual(len(self.ua.calls), 1)
        call.hangup()
        self.network.flush()
        self.assertEqual(self.result().outcome, "caller_hangup")
        self.assert_idle()

    def test_refer_refused(self) -> None:
        """A 403 to the REFER: on_error, no NOTIFY expected."""
        self.phone.answers["REFER"] = 403
        self.call()
        self.advance(2)
        result = self.result()
        self.assertEqual(result.node, "bye")
        self.assertEqual(result.variables["last_error"], "transfer to 1002 failed: 403 Forbidden")
        self.assertEqual(self.ua.transfers, {"refused": 1})
        self.assert_idle()

    def test_failure_without_on_error(self) -> None:
        """Without on_error a failed transfer hangs up with a Reason that
        names the failure."""
        call = self.call("bare")
        self.notify(call, "486 Busy Here")
        byes = self.received("BYE")
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].headers.get("reason"),
                         'SIP;cause=486;text="transfer failed: Busy Here"')
        self.assertEqual((self.result().outcome, self.result().detail),
                         ("hangup", "transfer_failed"))
        self.assert_idle()

    def test_subscription_terminated_without_outcome(self) -> None:
        """A NOTIFY ending the subscription with a provisional status is a
        failure too."""
        call = self.call()
        self.notify(call, "100 Trying", final=True)
        self.advance(2)
        self.assertEqual(self.result().node, "bye")
        self.assert_idle()


class FallbackTests(TransferTestsMixin, SynchronousTestCase):
    """A peer that does not take REFER (405, 501): the old behaviour."""

    def _fallback(self, code: int) -> None:
        self.phone.answers["REFER"] = code
        self.call()
        byes = self.received("BYE")
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].headers.get("reason"), 'SIP;cause=302;text="transfer 1002"')
        self.assertEqual(self.result().outcome, "transfer")
        self.assertEqual(self.ua.transfers, {"fallback": 1})
        self.assert_idle()

    def test_501(self) -> None:
        """501 Not Implemented: BYE naming the target, outcome transfer."""
        self._fallback(501)

    def test_405(self) -> None:
        """405 Method Not Allowed: the same."""
        self._fallback(405)


class TimeoutTests(TransferTestsMixin, SynchronousTestCase):
    """No final NOTIFY in time: the call is hung up."""

    def test_default_timeout(self) -> None:
        """32 s after the REFER without a final status: BYE with the
        transfer_timeout Reason (even though the node has on_error)."""
        call = self.call()
        self.notify(call, "100 Trying")
        self.advance(31)
        self.assertEqual(self.received("BYE"), [])
        self.advance(1.5)
        byes = self.received("BYE")
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].headers.get("reason"), reason_for_cause("transfer_timeout"))
        self.assertIn("cause=102", byes[0].headers.get("reason"))
        self.assertEqual((self.result().outcome, self.result().detail),
                         ("hangup", "transfer_timeout"))
        self.assertEqual(self.ua.transfers, {"timeout": 1})
        self.assert_idle()

    def test_node_timeout(self) -> None:
        """A node's timeout replaces the default."""
        self.call("quick")
        self.advance(4.5)
        self.assertEqual(self.received("BYE"), [])
        self.advance(1)
        self.assertEqual(len(self.received("BYE")), 1)
        self.assert_idle()

    def test_ua_timeout(self) -> None:
        """The UA's transfer_timeout is the default of the nodes."""
        self.ua.transfer_timeout = 10
        self.call()
        self.advance(9.5)
        self.assertEqual(self.received("BYE"), [])
        self.advance(1)
        self.assertEqual(len(self.received("BYE")), 1)
        self.assert_idle()

    def test_bad_timeout(self) -> None:
        """A transfer_timeout that is not positive is refused."""
        with self.assertRaises(ValueError):
            MediaServerUA(self.reactor, flows={}, actions=builtin_actions(), prompts=None,
                          port_pool=self.pool, transfer_timeout=0)


class EndDuringTransferTests(TransferTestsMixin, SynchronousTestCase):
    """The call ends while the transfer is pending."""

    def test_caller_hangs_up(self) -> None:
        """The switch's BYE during the transfer: 200, the run ends
        caller_hangup, the wait is given up."""
        call = self.call()
        self.notify(call, "100 Trying")
        self.assertEqual(call.hangup().code, 200)
        self.assertEqual(self.result().outcome, "caller_hangup")
        self.assertEqual(self.ua.transfers, {"given_up": 1})
        self.assert_idle()

    def test_flow_times_out(self) -> None:
        """The flow's max_duration ends a pending transfer: BYE flow_timeout."""
        self.call("short")
        self.advance(3.5)
        byes = self.received("BYE")
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].headers.get("reason"), reason_for_cause("flow_timeout"))
        self.assertEqual(self.result().outcome, "timeout")
        self.assertEqual(self.ua.transfers, {"given_up": 1})
        self.assert_idle()

    def test_ua_stops(self) -> None:
        """Stopping the UA during a transfer ends the call and its timers."""
        self.call()
        self.ua.stop()
        self.network.flush()
        self.assertEqual(len(self.received("BYE")), 1)
        self.assert_idle()


class NotifyTests(TransferTestsMixin, SynchronousTestCase):
    """NOTIFYs the UA cannot use."""

    def test_bad_sipfrag(self) -> None:
        """A body that is no status line gets 400 and changes nothing."""
        call = self.call()
        bad = self.notify(call, "100 Trying", body=b"hello\r\n")
        self.assertEqual(bad.code, 400)
        self.assertEqual(self.results, [])
        self.assertEqual(self.notify(call, "200 OK").code, 200)
        self.assertEqual(self.result().outcome, "transfer")
        self.assertEqual(self.ua.transfers, {"bad_notify": 1, "transferred": 1})

    def test_other_event(self) -> None:
        """A NOTIFY of another event (or subscription id) gets 489."""
        call = self.call()
        self.assertEqual(self.notify(call, "200 OK", event="presence").code, 489)
        self.assertEqual(self.notify(call, "200 OK", event="refer;id=77").code, 489)
        self.assertEqual(self.results, [])

    def test_outside_a_dialog(self) -> None:
        """A NOTIFY outside any dialog (no To tag) gets 481, as BYE and
        INFO do: not 405, which would contradict the Allow listing NOTIFY."""
        uri = "sip:xfer@127.0.0.1:5070"
        request = Request("NOTIFY", uri, self.phone._headers(
            uri, "NOTIFY", self.phone.new_id(), f"{self.phone.new_id()}@127.0.0.2",
            (("Event", "refer"), ("Subscription-State", "terminated"),
             ("Content-Type", SIPFRAG_TYPE))), b"SIP/2.0 200 OK\r\n")
        outgoing = self.phone.send(request, target=None)
        self.network.flush()
        self.assertEqual(outgoing.code, 481)

    def test_no_refer(self) -> None:
        """A NOTIFY in a call that sent no REFER gets 481."""
        flows = {"pin": load_flow('[flow]\nstart = "p"\n[nodes.p]\ntype = "play"\n'
                                  'prompt = "x"\nnext = "p"\n', actions=builtin_actions())}
        self.ua.flows.update(flows)
        call = self.call("pin")
        outgoing = call.request("NOTIFY", b"SIP/2.0 200 OK\r\n", SIPFRAG_TYPE,
                                [("Event", "refer"), ("Subscription-State", "terminated")])
        self.network.flush()
        self.assertEqual(outgoing.code, 481)
        call.hangup()
        self.network.flush()
