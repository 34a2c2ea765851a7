"""Sipp-to-sipp checks of the call scenarios, without the B2BUA.

Each caller scenario (C{uac_*.xml}) is played against the callee scenario
it is meant to meet through the B2BUA (C{uas_*.xml}), directly on loopback:
if the pair cannot complete a call here, a failure through the B2BUA would
prove nothing about the B2BUA.  The digest path of the callers is proven
against C{uas_challenge.xml} (with 407 and with 401); the REGISTER
scenarios against the fake registrar of L{test_sipp_harness}; the callees'
tolerance of INVITE retransmissions against a scripted UDP caller.

Every run uses the real reactor (integration tests are the one place
allowed to), talks to 127.0.0.1 only, and is bounded: at most L{CALLS}
calls, sipp's own timeout of L{TIMEOUT} seconds plus a hard kill, and
C{-recv_timeout} of 5 seconds.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.trial.integration.sipp import (
    PortWaitTimeout,
    SippResult,
    free_port,
    port_in_use,
    require_program,
    run_sipp,
    run_sipp_uas,
    scenario,
    wait_for_port,
)
from tests.trial.integration.test_sipp_harness import (
    PASSWORD,
    USER,
    FakeProcessReactor,
    FakeResponder,
    FakeUDP,
)

#: Calls per run, and seconds of sipp's global timeout.
CALLS = 2
TIMEOUT = 20.0

#: Credentials the callers present to uas_challenge.xml.
CREDENTIALS = ("-au", USER, "-ap", PASSWORD, "-set", "caller", USER)


class Pair:
    """What one caller/callee run left behind."""

    def __init__(self, caller: SippResult, callee: SippResult) -> None:
        """Keep both results."""
        self.caller = caller
        self.callee = callee

    def describe(self) -> str:
        """Return both sipps' accounts, for a failure message."""
        return f"=== caller ===\n{self.caller.describe()}\n=== callee ===\n{self.callee.describe()}"


class ScenarioPairTests(unittest.TestCase):
    """Each caller scenario completes its calls against its callee scenario."""

    timeout = 60

    def setUp(self) -> None:
        """Find sipp (skip or, under CI, fail without it)."""
        self.sipp = require_program("sipp", "sip-tester")

    async def pair(
        self,
        uac: str,
        uas: str,
        uac_args: Sequence[str] = (),
        uas_args: Sequence[str] = (),
        transport: str = "u1",
        calls: int = CALLS,
    ) -> Pair:
        """Start the callee C{uas}, wait until it listens, run the caller C{uac}.

        The callee's result is always awaited, also when the caller could not
        start, so no sipp outlives the test.
        """
        port = free_port("udp" if transport == "u1" else "tcp")
        callee = run_sipp_uas(
            reactor, scenario(uas), local_port=port, transport=transport,
            extra_args=uas_args, timeout=TIMEOUT, calls=calls, sipp=self.sipp,
        )  # fmt: skip
        try:
            await wait_for_port(reactor, port, "udp" if transport == "u1" else "tcp", ended=callee)
            caller = await run_sipp(
                reactor, scenario(uac), target=f"127.0.0.1:{port}", transport=transport,
                extra_args=["-s", "1001", *uac_args], timeout=TIMEOUT, calls=calls,
                sipp=self.sipp,
            )  # fmt: skip
        finally:
            callee_result = await callee
        return Pair(caller, callee_result)

    def assertBothSucceeded(self, pair: Pair, calls: int = CALLS) -> None:
        """Fail with both sipps' accounts unless every call succeeded on both sides."""
        for result in (pair.caller, pair.callee):
            self.assertEqual(result.exit_code, 0, pair.describe())
            self.assertEqual((result.successful, result.failed), (calls, 0), pair.describe())

    async def test_call_udp(self) -> None:
        """uac_call.xml completes basic calls against uas_answer.xml over UDP."""
        pair = await self.pair("uac_call.xml", "uas_answer.xml", ["-d", "100"])
        self.assertBothSucceeded(pair)

    async def test_call_tcp(self) -> None:
        """uac_call.xml completes basic calls against uas_answer.xml over TCP."""
        pair = await self.pair("uac_call.xml", "uas_answer.xml", ["-d", "100"], transport="t1")
        self.assertBothSucceeded(pair)

    async def test_call_rings_first(self) -> None:
        """A callee that rings for a while (-d) before answering is waited for."""
        pair = await self.pair("uac_call.xml", "uas_answer.xml", uas_args=["-d", "700"], calls=1)
        self.assertBothSucceeded(pair, calls=1)

    async def test_cancel(self) -> None:
        """uac_cancel.xml cancels a ringing uas_ring_then_cancel.xml: 200, 487, ACK."""
        pair = await self.pair("uac_cancel.xml", "uas_ring_then_cancel.xml", ["-d", "200"])
        self.assertBothSucceeded(pair)

    async def test_busy(self) -> None:
        """uac_busy.xml gets 486 from uas_busy.xml and ACKs it."""
        self.assertBothSucceeded(await self.pair("uac_busy.xml", "uas_busy.xml"))

    async def test_unavailable(self) -> None:
        """uac_unavailable.xml gets 480 from uas_unavailable.xml and ACKs it."""
        self.assertBothSucceeded(await self.pair("uac_unavailable.xml", "uas_unavailable.xml"))

    async def test_callee_hangs_up(self) -> None:
        """uas_hangs_up.xml ends the call with BYE; uac_callee_hangs_up.xml answers 200."""
        pair = await self.pair(
            "uac_callee_hangs_up.xml", "uas_hangs_up.xml", uas_args=["-d", "200"]
        )
        self.assertBothSucceeded(pair)

    async def test_hold_resume_udp(self) -> None:
        """uac_hold_resume.xml holds (sendonly/recvonly) and resumes against uas_answer.xml."""
        pair = await self.pair("uac_hold_resume.xml", "uas_answer.xml", ["-d", "100"])
        self.assertBothSucceeded(pair)

    async def test_hold_resume_tcp(self) -> None:
        """The hold and resume pair works over TCP too."""
        pair = await self.pair(
            "uac_hold_resume.xml", "uas_answer.xml", ["-d", "100"], transport="t1", calls=1
        )
        self.assertBothSucceeded(pair, calls=1)

    async def test_digest_407(self) -> None:
        """uac_call.xml answers a 407 challenge with Proxy-Authorization, then completes."""
        pair = await self.pair("uac_call.xml", "uas_challenge.xml", CREDENTIALS)
        self.assertBothSucceeded(pair)

    async def test_digest_401(self) -> None:
        """uac_call.xml answers a 401 challenge with Authorization, then completes."""
        pair = await self.pair(
            "uac_call.xml", "uas_challenge.xml", CREDENTIALS,
            ["-set", "www_authenticate", "yes"],
        )  # fmt: skip
        self.assertBothSucceeded(pair)

    async def test_wrong_outcome_fails(self) -> None:
        """A caller expecting an answer fails against a busy callee (exit code 1)."""
        pair = await self.pair("uac_call.xml", "uas_busy.xml", calls=1)
        self.assertEqual(pair.caller.exit_code, 1, pair.describe())
        self.assertEqual(pair.caller.failed, 1, pair.describe())


class RecordingResponder(FakeResponder):
    """The harness's fake registrar, keeping each request's text too."""

    def __init__(self) -> None:
        """Start with no request."""
        super().__init__()
        self.texts: list[str] = []

    def answer(self, data: bytes) -> bytes | None:
        """Keep C{data}, then answer as the fake registrar does."""
        self.texts.append(data.decode("utf-8", "replace"))
        return super().answer(data)


class RegisterScenarioTests(unittest.TestCase):
    """register_contact.xml, unregister.xml and register_rejected.xml against a fake registrar."""

    timeout = 60

    def setUp(self) -> None:
        """Find sipp and serve a fake registrar over UDP."""
        self.sipp = require_program("sipp", "sip-tester")
        self.registrar = RecordingResponder()
        port = reactor.listenUDP(0, FakeUDP(self.registrar), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.target = f"127.0.0.1:{port.getHost().port}"

    def register(self, name: str, password: str, local_port: int) -> Deferred[SippResult]:
        """Run the REGISTER scenario C{name} once from C{local_port}."""
        return run_sipp(
            reactor, scenario(name), target=self.target, local_port=local_port,
            extra_args=["-s", USER, "-au", USER, "-ap", password], timeout=TIMEOUT,
            sipp=self.sipp,
        )  # fmt: skip

    async def test_register_contact(self) -> None:
        """register_contact.xml registers the -p port as contact for an hour."""
        port = free_port("udp")
        result = await self.register("register_contact.xml", PASSWORD, port)
        self.assertTrue(result.ok, result.describe())
        self.assertEqual(self.registrar.requests, ["REGISTER", "REGISTER"])
        final = self.registrar.texts[-1]
        self.assertEqual(header(final, "Contact"), f"<sip:{USER}@127.0.0.1:{port};transport=UDP>")
        self.assertEqual(header(final, "Expires"), "3600")
        self.assertIn("Digest", header(final, "Authorization"))

    async def test_unregister(self) -> None:
        """unregister.xml sends the same contact with Expires: 0."""
        port = free_port("udp")
        result = await self.register("unregister.xml", PASSWORD, port)
        self.assertTrue(result.ok, result.describe())
        final = self.registrar.texts[-1]
        self.assertEqual(header(final, "Contact"), f"<sip:{USER}@127.0.0.1:{port};transport=UDP>")
        self.assertEqual(header(final, "Expires"), "0")

    async def test_register_rejected(self) -> None:
        """register_rejected.xml succeeds when the wrong password is refused again."""
        result = await self.register("register_rejected.xml", "wrong", free_port("udp"))
        self.assertTrue(result.ok, result.describe())
        self.assertEqual(self.registrar.requests, ["REGISTER", "REGISTER"])

    async def test_register_rejected_fails_when_accepted(self) -> None:
        """register_rejected.xml fails when the registrar accepts the credentials."""
        result = await self.register("register_rejected.xml", PASSWORD, free_port("udp"))
        self.assertEqual(result.exit_code, 1, result.describe())
        self.assertEqual(result.failed, 1, result.describe())


class ScriptedPeer(DatagramProtocol):
    """A UDP peer that sends exactly what a test says, to retransmit at will.

    @ivar remote: where the last message came from, for L{reply}.
    """

    def __init__(self) -> None:
        """Start with nothing received."""
        self.received: DeferredQueue[str] = DeferredQueue()
        self.remote: tuple[str, int] | None = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Queue each message received; remember its sender."""
        self.remote = addr
        self.received.put(datagram.decode("utf-8", "replace"))

    def send(self, text: str, port: int) -> None:
        """Send C{text} (with CRLF line ends) to sipp on C{port}."""
        self.transport.write(text.replace("\n", "\r\n").encode(), ("127.0.0.1", port))

    def reply(self, text: str) -> None:
        """Send C{text} (with CRLF line ends) to where the last message came from."""
        assert self.remote is not None, "nothing received yet"
        self.transport.write(text.replace("\n", "\r\n").encode(), self.remote)

    async def expect(self, start: str, seconds: float = 3.0) -> str:
        """Return the next message, failing unless its first line starts with C{start}."""
        got = self.received.get()
        timer = reactor.callLater(seconds, got.cancel)
        try:
            message = await got
        finally:
            if timer.active():
                timer.cancel()
        first = message.split("\r\n", 1)[0]
        if not first.startswith(start):
            raise AssertionError(f"expected {start!r}, got {first!r}")
        return message


def respond(request: str, status: str, to_tag: str, *extra: str) -> str:
    """Return a response to C{request} (Via, From, To with C{to_tag}, Call-ID, CSeq copied)."""
    lines = [f"SIP/2.0 {status}"]
    for line in request.split("\r\n")[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in ("via", "from", "call-id", "cseq"):
            lines.append(line)
        elif name == "to":
            lines.append(line if ";tag=" in line else f"{line};tag={to_tag}")
    return "\n".join([*lines, *extra, "Content-Length: 0", "", ""])


def header(message: str, name: str) -> str:
    """Return the value of the first header C{name} of C{message} ("" if none)."""
    match = re.search(rf"^{name}:[ \t]*(.*?)\r?$", message, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else ""


class RetransmissionTests(unittest.TestCase):
    """The callee scenarios tolerate INVITE retransmissions over UDP."""

    timeout = 60

    def setUp(self) -> None:
        """Find sipp, listen with the scripted caller."""
        self.sipp = require_program("sipp", "sip-tester")
        self.caller = ScriptedPeer()
        listening = reactor.listenUDP(0, self.caller, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.caller_port = listening.getHost().port

    def invite(self) -> str:
        """Return the caller's INVITE, byte for byte the same at each retransmission."""
        return (
            "INVITE sip:1001@127.0.0.1 SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.caller_port};branch=z9hG4bK-retrans-1\n"
            "Max-Forwards: 70\n"
            "From: <sip:1000@127.0.0.1>;tag=caller-1\n"
            "To: <sip:1001@127.0.0.1>\n"
            "Call-ID: retransmission-test@127.0.0.1\n"
            "CSeq: 1 INVITE\n"
            f"Contact: <sip:1000@127.0.0.1:{self.caller_port}>\n"
            "Content-Length: 0\n\n"
        )

    def in_dialog(self, method: str, cseq: int, branch: str, to_tag: str) -> str:
        """Return an ACK or BYE for the dialog the callee answered with C{to_tag}."""
        number = 1 if method == "ACK" else cseq
        return (
            self.invite()
            .replace("INVITE sip:", f"{method} sip:")
            .replace("CSeq: 1 INVITE", f"CSeq: {number} {method}")
            .replace("branch=z9hG4bK-retrans-1", f"branch={branch}")
            .replace("To: <sip:1001@127.0.0.1>", f"To: <sip:1001@127.0.0.1>;tag={to_tag}")
        )

    async def callee(self, name: str, script: Callable[[int], Awaitable[None]]) -> SippResult:
        """Run the callee C{name} for one call while C{script(port)} plays the caller."""
        port = free_port("udp")
        result = run_sipp_uas(reactor, scenario(name), local_port=port, timeout=TIMEOUT,
                              sipp=self.sipp)  # fmt: skip
        try:
            await wait_for_port(reactor, port, "udp", ended=result)
            await script(port)
        finally:
            outcome = await result
        return outcome

    async def test_answer_absorbs_retransmissions(self) -> None:
        """uas_answer.xml: INVITE copies after the 200 and after the ACK do not break the call."""

        async def script(port: int) -> None:
            """INVITE, copy after the 200, ACK, late copy, ACK again, BYE."""
            self.caller.send(self.invite(), port)
            await self.caller.expect("SIP/2.0 180")
            ok = await self.caller.expect("SIP/2.0 200")
            to_tag = re.search(r"^To:.*;tag=([^;\s]+)", ok, re.MULTILINE)
            assert to_tag is not None, ok
            self.caller.send(self.invite(), port)
            await self.caller.expect("SIP/2.0 200")
            self.caller.send(self.in_dialog("ACK", 1, "z9hG4bK-ack-1", to_tag.group(1)), port)
            self.caller.send(self.invite(), port)
            await self.caller.expect("SIP/2.0 200")
            self.caller.send(self.in_dialog("ACK", 1, "z9hG4bK-ack-2", to_tag.group(1)), port)
            self.caller.send(self.in_dialog("BYE", 2, "z9hG4bK-bye-1", to_tag.group(1)), port)
            await self.caller.expect("SIP/2.0 200")

        result = await self.callee("uas_answer.xml", script)
        self.assertTrue(result.ok, result.describe())

    async def test_busy_answers_retransmission(self) -> None:
        """uas_busy.xml sends its 486 again for a copy of the INVITE."""

        async def script(port: int) -> None:
            """INVITE, copy after the 486, ACK."""
            self.caller.send(self.invite(), port)
            busy = await self.caller.expect("SIP/2.0 486")
            self.caller.send(self.invite(), port)
            await self.caller.expect("SIP/2.0 486")
            to_tag = re.search(r"^To:.*;tag=([^;\s]+)", busy, re.MULTILINE)
            assert to_tag is not None, busy
            ack = self.in_dialog("ACK", 1, "z9hG4bK-retrans-1", to_tag.group(1))
            self.caller.send(ack, port)

        result = await self.callee("uas_busy.xml", script)
        self.assertTrue(result.ok, result.describe())

    def test_port_probe(self) -> None:
        """port_in_use tells a bound port from a free one."""
        self.assertTrue(port_in_use(self.caller_port, "udp"))
        self.assertFalse(port_in_use(free_port("udp"), "udp"))


class LateChallengeTests(unittest.TestCase):
    """uac_call.xml ACKs copies of the challenge that come late, as a B2BUA may send them."""

    timeout = 60

    def setUp(self) -> None:
        """Find sipp; a scripted callee plays the B2BUA."""
        self.sipp = require_program("sipp", "sip-tester")
        self.peer = ScriptedPeer()
        listening = reactor.listenUDP(0, self.peer, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port

    async def test_late_challenge_copies_are_acked(self) -> None:
        """Copies of the 407 after the second INVITE and during the call get an ACK each.

        The dialog is not disturbed: the BYE carries the 200's To tag and
        CSeq 3, not what the last (late) 407 said.
        """
        caller = run_sipp(
            reactor, scenario("uac_call.xml"), target=f"127.0.0.1:{self.port}",
            extra_args=["-s", "1001", *CREDENTIALS, "-d", "300"], timeout=TIMEOUT, sipp=self.sipp,
        )  # fmt: skip
        peer = self.peer
        try:
            first = await peer.expect("INVITE")
            challenge = respond(first, "407 Proxy Authentication Required", "challenger",
                                'Proxy-Authenticate: Digest realm="127.0.0.1", nonce="n1", '
                                "algorithm=MD5")  # fmt: skip
            peer.reply(challenge)
            self.assertEqual(header(await peer.expect("ACK"), "CSeq"), "1 ACK")
            second = await peer.expect("INVITE")
            self.assertIn("Digest", header(second, "Proxy-Authorization"))
            peer.reply(challenge)
            self.assertEqual(header(await peer.expect("ACK"), "CSeq"), "1 ACK")
            peer.reply(respond(second, "180 Ringing", "callee"))
            peer.reply(respond(second, "200 OK", "callee", f"Contact: <sip:127.0.0.1:{self.port}>"))
            self.assertEqual(header(await peer.expect("ACK"), "CSeq"), "2 ACK")
            peer.reply(challenge)
            self.assertEqual(header(await peer.expect("ACK"), "CSeq"), "1 ACK")
            bye = await peer.expect("BYE")
            self.assertEqual(header(bye, "CSeq"), "3 BYE")
            self.assertTrue(header(bye, "To").endswith(";tag=callee"), bye)
            peer.reply(respond(bye, "200 OK", "callee"))
        finally:
            result = await caller
        self.assertTrue(result.ok, result.describe())


class UASHarnessUnitTests(unittest.SynchronousTestCase):
    """run_sipp_uas and wait_for_port, without a real sipp or a real clock."""

    def test_uas_command_line(self) -> None:
        """run_sipp_uas gives no target and listens on the port it is given."""
        fake = FakeProcessReactor()
        run_sipp_uas(fake, "/uas.xml", local_port=5999, transport="t1", calls=2, timeout=7,
                     extra_args=["-d", "100"])  # fmt: skip
        [(transport, args, _)] = fake.spawned
        self.assertEqual(
            args[:12],
            ["sipp", "-sf", "/uas.xml", "-t", "t1", "-i", "127.0.0.1", "-p", "5999", "-m", "2",
             "-timeout"],
        )  # fmt: skip
        self.assertEqual(args[-2:], ["-d", "100"])
        transport.protocol.processEnded(Failure(ProcessTerminated(exitCode=0)))

    def test_wait_for_port_polls_until_bound(self) -> None:
        """wait_for_port fires once the port is bound, polling on the clock."""
        clock = Clock()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            self.successResultOf(wait_for_port(clock, port, "udp"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_wait_for_port_times_out(self) -> None:
        """wait_for_port fails with PortWaitTimeout when nothing listens in time."""
        clock = Clock()
        d = wait_for_port(clock, free_port("udp"), "udp", timeout=1.0, interval=0.25)
        clock.pump([0.25] * 3)
        self.assertNoResult(d)
        clock.advance(0.25)
        self.failureResultOf(d, PortWaitTimeout)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_wait_for_port_stops_when_sipp_ended(self) -> None:
        """wait_for_port fails at once when the sipp meant to listen has ended."""
        clock = Clock()
        ended: Deferred[SippResult] = Deferred()
        d = wait_for_port(clock, free_port("udp"), "udp", ended=ended)
        self.assertNoResult(d)
        ended.callback(SippResult(exit_code=255, successful=None, failed=None))
        clock.advance(0.05)
        failure = self.failureResultOf(d, PortWaitTimeout)
        self.assertIn("sipp exited 255", str(failure.value))
        self.assertEqual(self.successResultOf(ended).exit_code, 255)
