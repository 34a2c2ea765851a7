"""Tests for the SIPp harness in L{tests.trial.integration.sipp}.

The harness is proven against a tiny fake SIP responder written here with
plain Twisted, not against our stack: the stack's own integration tests use
the same harness.  The sipp runs use the real reactor (integration tests are
the one place allowed to), are bounded by C{-m 3} and a 20 second timeout,
and talk to loopback only.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.trial.integration.sipp import (
    SippResult,
    SippTimeoutError,
    free_port,
    require_program,
    run_sipp,
    scenario,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"
REALM = "127.0.0.1"
USER = "1000"
PASSWORD = "1234"

#: How each integration test bounds its sipp run.
CALLS = 3
TIMEOUT = 20.0


def _md5(text: str) -> str:
    """Return the hexadecimal MD5 digest of C{text}."""
    return hashlib.md5(text.encode()).hexdigest()


def _auth_params(value: str) -> dict[str, str]:
    """Return the parameters of a C{Digest ...} Authorization header value."""
    return {
        key.lower(): quoted if quoted else bare
        for key, quoted, bare in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value)
    }


class FakeResponder:
    """A stateless fake UAS good enough to prove the harness.

    It answers OPTIONS with C{options_status} (C{200} carries an C{Allow}
    header) and REGISTER with a digest challenge until the request carries
    a valid C{Authorization} for L{USER} / L{PASSWORD}; every other request
    gets C{405}.  Responses copy Via, From, To, Call-ID and CSeq.

    @ivar requests: the methods received, in order.
    """

    def __init__(self, options_status: int = 200) -> None:
        """Answer OPTIONS with C{options_status}."""
        self.options_status = options_status
        self.requests: list[str] = []

    def answer(self, data: bytes) -> bytes | None:
        """Return the response to the request C{data}, or C{None} to drop it."""
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        start, *lines = head.split("\r\n")
        if start.startswith("SIP/2.0") or len(start.split()) != 3:
            return None
        method, uri, _ = start.split()
        self.requests.append(method)
        headers: list[tuple[str, str]] = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        if method == "OPTIONS":
            status = self.options_status
            extra = [f"Allow: {ALLOW}"] if status == 200 else []
        elif method == "REGISTER":
            status, extra = self._register(headers, uri)
        else:
            status, extra = 405, [f"Allow: {ALLOW}"]
        reasons = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
        response = [f"SIP/2.0 {status} {reasons[status]}"]
        for name, value in headers:
            if name == "via":
                response.append(f"Via: {value}")
        for name, label in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
            value = next(v for n, v in headers if n == name)
            if name == "to" and ";tag=" not in value:
                value += ";tag=fake" + secrets.token_hex(4)
            response.append(f"{label}: {value}")
        response += [*extra, "Content-Length: 0", "", ""]
        return "\r\n".join(response).encode()

    def _register(self, headers: Sequence[tuple[str, str]], uri: str) -> tuple[int, list[str]]:
        """Check a REGISTER's digest credentials; return status and extra headers."""
        authorization = next((v for n, v in headers if n == "authorization"), None)
        if authorization is not None and authorization.startswith("Digest "):
            params = _auth_params(authorization[len("Digest "):])
            ha1 = _md5(f"{params.get('username')}:{REALM}:{PASSWORD}")
            ha2 = _md5(f"REGISTER:{params.get('uri', uri)}")
            if "qop" in params:
                expected = _md5(
                    f"{ha1}:{params.get('nonce')}:{params.get('nc')}:"
                    f"{params.get('cnonce')}:{params['qop']}:{ha2}"
                )
            else:
                expected = _md5(f"{ha1}:{params.get('nonce')}:{ha2}")
            if params.get("username") == USER and params.get("response") == expected:
                return 200, ["Expires: 60"]
        nonce = secrets.token_hex(8)
        challenge = f'WWW-Authenticate: Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5, qop="auth"'
        return 401, [challenge]


class FakeUDP(DatagramProtocol):
    """Carry L{FakeResponder} over UDP."""

    def __init__(self, responder: FakeResponder) -> None:
        """Answer with C{responder}."""
        self.responder = responder

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Send the response to where the request came from."""
        response = self.responder.answer(datagram)
        if response is not None:
            self.transport.write(response, addr)


class FakeTCP(Protocol):
    """Carry L{FakeResponder} over TCP (requests without bodies only)."""

    def __init__(self, responder: FakeResponder) -> None:
        """Answer with C{responder}."""
        self.responder = responder
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        """Answer each complete request in the stream."""
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            message, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            response = self.responder.answer(message + b"\r\n\r\n")
            if response is not None:
                self.transport.write(response)


class SippHarnessTests(unittest.TestCase):
    """Real sipp runs against the fake responder, over UDP and TCP."""

    timeout = 60

    def setUp(self) -> None:
        """Find sipp (skip or, under CI, fail without it)."""
        self.sipp = require_program("sipp", "sip-tester")

    def listen(self, responder: FakeResponder, transport: str) -> str:
        """Serve C{responder} on a free loopback port; return C{"127.0.0.1:PORT"}."""
        if transport == "u1":
            port = reactor.listenUDP(0, FakeUDP(responder), interface="127.0.0.1")
        else:
            factory = Factory.forProtocol(lambda: FakeTCP(responder))
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"127.0.0.1:{port.getHost().port}"

    def run_scenario(self, name: str, target: str, transport: str, *extra: str) -> Deferred[SippResult]:
        """Run the scenario C{name} against C{target}, bounded."""
        return run_sipp(
            reactor, scenario(name), target=target, transport=transport,
            extra_args=extra, timeout=TIMEOUT, calls=CALLS, sipp=self.sipp,
        )  # fmt: skip

    def assertAllSucceeded(self, result: SippResult) -> None:
        """Fail with sipp's own account unless every call succeeded."""
        self.assertEqual(result.exit_code, 0, result.describe())
        self.assertEqual((result.successful, result.failed), (CALLS, 0), result.describe())
        self.assertTrue(result.ok)

    def test_options_udp(self) -> Deferred[None]:
        """options.xml passes over UDP, exit code 0, against a 200-with-Allow UAS."""
        responder = FakeResponder()
        target = self.listen(responder, "u1")

        def check(result: SippResult) -> None:
            self.assertAllSucceeded(result)
            self.assertEqual(responder.requests, ["OPTIONS"] * CALLS)

        return self.run_scenario("options.xml", target, "u1").addCallback(check)

    def test_options_tcp(self) -> Deferred[None]:
        """options.xml passes over TCP too."""
        target = self.listen(FakeResponder(), "t1")
        return self.run_scenario("options.xml", target, "t1").addCallback(self.assertAllSucceeded)

    def test_options_failure_counted(self) -> Deferred[None]:
        """A 404 instead of 200 fails every call: exit code 1, failures counted."""
        target = self.listen(FakeResponder(options_status=404), "u1")

        def check(result: SippResult) -> None:
            self.assertEqual(result.exit_code, 1, result.describe())
            self.assertEqual((result.successful, result.failed), (0, CALLS), result.describe())
            self.assertFalse(result.ok)

        return self.run_scenario("options.xml", target, "u1").addCallback(check)

    def test_register_auth_udp(self) -> Deferred[None]:
        """register_auth.xml answers the digest challenge over UDP."""
        responder = FakeResponder()
        target = self.listen(responder, "u1")

        def check(result: SippResult) -> None:
            self.assertAllSucceeded(result)
            self.assertEqual(responder.requests, ["REGISTER"] * (2 * CALLS))

        credentials = ("-s", USER, "-au", USER, "-ap", PASSWORD)
        return self.run_scenario("register_auth.xml", target, "u1", *credentials).addCallback(check)

    def test_register_auth_tcp(self) -> Deferred[None]:
        """register_auth.xml answers the digest challenge over TCP."""
        target = self.listen(FakeResponder(), "t1")
        credentials = ("-s", USER, "-au", USER, "-ap", PASSWORD)
        d = self.run_scenario("register_auth.xml", target, "t1", *credentials)
        return d.addCallback(self.assertAllSucceeded)

    def test_register_wrong_password_fails(self) -> Deferred[None]:
        """A wrong password is not answered with 200, so every call fails."""
        target = self.listen(FakeResponder(), "u1")

        def check(result: SippResult) -> None:
            self.assertEqual(result.exit_code, 1, result.describe())
            self.assertEqual(result.failed, CALLS, result.describe())

        credentials = ("-s", USER, "-au", USER, "-ap", "wrong")
        d = self.run_scenario("register_auth.xml", target, "u1", *credentials)
        return d.addCallback(check)


class FakeProcessTransport:
    """A process that never ends by itself until it is signalled."""

    def __init__(self, protocol: ProcessProtocol) -> None:
        """Report to C{protocol}."""
        self.protocol = protocol
        self.signals: list[str | int] = []

    def signalProcess(self, signal: str | int) -> None:
        """Record C{signal} and end the process as killed by it."""
        self.signals.append(signal)
        self.protocol.processEnded(Failure(ProcessTerminated(signal=9)))


class FakeProcessReactor(Clock):
    """A clock that also records spawned processes."""

    def __init__(self) -> None:
        """Start with no process."""
        super().__init__()
        self.spawned: list[tuple[FakeProcessTransport, Sequence[str], str | None]] = []

    def spawnProcess(
        self,
        processProtocol: ProcessProtocol,  # noqa: N803 (Twisted's name)
        executable: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> FakeProcessTransport:
        """Record the process and return its fake transport."""
        transport = FakeProcessTransport(processProtocol)
        self.spawned.append((transport, args, path))
        return transport


class RunSippUnitTests(unittest.SynchronousTestCase):
    """The harness's bounds and lookups, without a real process."""

    def test_command_line(self) -> None:
        """run_sipp bounds the run and writes its traces in a work folder."""
        fake = FakeProcessReactor()
        run_sipp(fake, "/s.xml", "127.0.0.1:5060", transport="t1", calls=2,
                 timeout=7, local_port=5999, extra_args=["-s", "1000"])  # fmt: skip
        [(transport, args, path)] = fake.spawned
        self.assertEqual(
            args[:13],
            ["sipp", "-sf", "/s.xml", "127.0.0.1:5060", "-t", "t1", "-i", "127.0.0.1",
             "-p", "5999", "-m", "2", "-timeout"],
        )  # fmt: skip
        for flag in ("-timeout_error", "-nostdin", "-trace_stat", "-trace_err", "-trace_screen"):
            self.assertIn(flag, args)
        self.assertEqual(args[13], "7000ms")
        self.assertEqual(args[-2:], ["-s", "1000"])
        self.assertIsNotNone(path)
        self.assertTrue(os.path.isdir(path or ""))
        transport.protocol.processEnded(Failure(ProcessTerminated(exitCode=0)))
        self.assertFalse(os.path.exists(path or ""))

    def test_hard_kill(self) -> None:
        """A sipp that outlives its timeout plus grace is killed; SippTimeoutError says so."""
        fake = FakeProcessReactor()
        d = run_sipp(fake, "/s.xml", "127.0.0.1:5060", timeout=10)
        [(transport, _, path)] = fake.spawned
        fake.advance(14.9)
        self.assertNoResult(d)
        self.assertEqual(transport.signals, [])
        fake.advance(0.1)
        self.assertEqual(transport.signals, ["KILL"])
        failure = self.failureResultOf(d, SippTimeoutError)
        self.assertEqual(failure.value.result.exit_code, -9)
        self.assertFalse(os.path.exists(path or ""))
        self.assertEqual(fake.getDelayedCalls(), [])

    def test_exit_cancels_kill(self) -> None:
        """A sipp that exits by itself is not killed and leaves no delayed call."""
        fake = FakeProcessReactor()
        d = run_sipp(fake, "/s.xml", "127.0.0.1:5060")
        [(transport, _, _)] = fake.spawned
        transport.protocol.processEnded(Failure(ProcessTerminated(exitCode=1)))
        result = self.successResultOf(d)
        self.assertEqual((result.exit_code, result.successful, result.failed), (1, None, None))
        self.assertEqual(fake.getDelayedCalls(), [])

    def test_bad_transport(self) -> None:
        """Only u1 and t1 are accepted."""
        self.assertRaises(ValueError, run_sipp, FakeProcessReactor(), "/s.xml", "x", "l1")

    def test_free_port(self) -> None:
        """free_port returns a usable port number and rejects unknown kinds."""
        for kind in ("udp", "tcp"):
            self.assertTrue(1024 <= free_port(kind) <= 65535)
        self.assertRaises(ValueError, free_port, "sctp")


class RequireProgramTests(unittest.SynchronousTestCase):
    """require_program skips on a laptop and fails under CI."""

    missing = "b2bua-no-such-program"

    def with_ci(self, value: str | None) -> None:
        """Run the test with C{CI} set to C{value} (or unset)."""
        environ = dict(os.environ)
        environ.pop("CI", None)
        if value is not None:
            environ["CI"] = value
        self.patch(os, "environ", environ)

    def test_found(self) -> None:
        """A program on PATH is returned by path."""
        self.assertTrue(os.path.isabs(require_program("sh", "dash")))

    def test_missing_skips(self) -> None:
        """Outside CI a missing program skips, saying how to install it."""
        self.with_ci(None)
        error = self.assertRaises(unittest.SkipTest, require_program, self.missing, "sip-tester")
        self.assertIn("apt-get install sip-tester", str(error))

    def test_missing_fails_under_ci(self) -> None:
        """Under CI=true a missing program is a failure, never a skip."""
        self.with_ci("true")
        error = self.assertRaises(unittest.FailTest, require_program, self.missing, "sip-tester")
        self.assertIn("apt-get install sip-tester", str(error))

