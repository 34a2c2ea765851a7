"""The SIP stack end to end: real sipp processes against the minimal UAS.

The transport layer, the transaction layer and L{MinimalUAS} run in this
process on the real reactor (integration tests are the one place allowed
to), listening on free loopback ports; sipp drives them over UDP and TCP
with the OPTIONS and the REGISTER-with-digest scenarios.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from b2bua.core.directory import demo_directory
from b2bua.sip.auth import DigestServer
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transport import TransportLayer
from b2bua.sip.uas import MinimalUAS
from tests.trial.integration.sipp import (
    SippResult,
    free_port,
    require_program,
    run_sipp,
    scenario,
)

CALLS = 3
TIMEOUT = 20.0


class StackWithSippTests(unittest.TestCase):
    """sipp as a UAC against the stack and the minimal UAS."""

    def setUp(self) -> None:
        """Start the stack on a free loopback port for UDP and TCP."""
        self.sipp = require_program("sipp", "sip-tester")
        directory = demo_directory()
        # sipp answers only MD5 challenges, and takes the first one offered
        digest = DigestServer("127.0.0.1", b"integration-secret", reactor,
                              algorithms=("MD5", "SHA-256"))
        self.uas = MinimalUAS(digest, directory.lookup_ha1)
        self.transport = TransportLayer(reactor, None)
        self.transactions = TransactionLayer(reactor, self.transport, self.uas)
        self.transport.user = self.transactions
        self.uas.find_cancelled = self.transactions.find_cancelled
        port = free_port("both")
        self.transport.listen(f"udp:127.0.0.1:{port}")
        self.transport.listen(f"tcp:127.0.0.1:{port}")
        self.target = f"127.0.0.1:{port}"
        self.addCleanup(self.transport.stop)
        self.addCleanup(self.transactions.stop)

    def run_scenario(self, name: str, transport: str, *args: str) -> Deferred[SippResult]:
        """Run scenario C{name} with sipp, bounded."""
        return run_sipp(reactor, scenario(name), self.target, transport, args,
                        timeout=TIMEOUT, calls=CALLS, sipp=self.sipp)

    def assertAllSucceeded(self, result: SippResult) -> None:
        """Every call of the run succeeded."""
        self.assertEqual(result.exit_code, 0, result.describe())
        self.assertEqual(result.successful, CALLS, result.describe())

    def test_options_udp(self) -> Deferred[None]:
        """OPTIONS over UDP gets 200 with Allow."""
        d = self.run_scenario("options.xml", "u1")
        d.addCallback(self.assertAllSucceeded)
        return d.addCallback(lambda _: self.assertEqual(self.uas.answered.get(200), CALLS))

    def test_options_tcp(self) -> Deferred[None]:
        """OPTIONS over TCP gets 200 with Allow."""
        return self.run_scenario("options.xml", "t1").addCallback(self.assertAllSucceeded)

    def test_register_udp(self) -> Deferred[None]:
        """REGISTER is challenged, then accepted with the right password (UDP)."""
        d = self.run_scenario("register_auth.xml", "u1", "-s", "1000", "-au", "1000",
                              "-ap", "1234")
        d.addCallback(self.assertAllSucceeded)
        return d.addCallback(lambda _: self.assertEqual(self.uas.answered.get(401), CALLS))

    def test_register_tcp(self) -> Deferred[None]:
        """REGISTER is challenged, then accepted with the right password (TCP)."""
        d = self.run_scenario("register_auth.xml", "t1", "-s", "1001", "-au", "1001",
                              "-ap", "1234")
        return d.addCallback(self.assertAllSucceeded)

    def test_register_wrong_password(self) -> Deferred[None]:
        """A wrong password never gets 200."""
        def check(result: SippResult) -> None:
            self.assertEqual(result.failed, CALLS, result.describe())
            self.assertNotIn(200, self.uas.answered)

        d = self.run_scenario("register_auth.xml", "u1", "-s", "1000", "-au", "1000",
                              "-ap", "wrong")
        return d.addCallback(check)
