"""The trunking SIP clients against a real sipp playing the vendor.

The transport and transaction layers run in this process on the real
reactor (integration tests are the one place allowed to), on a free
loopback port; sipp listens on another.  One test registers with
C{trunk_registrar.xml} (401, 200 with a 2 s expiry, the refresh, the
removal), the other probes C{trunk_options_uas.xml}, which answers two
OPTIONS and exits: the connection goes up, then down.  Everything is
bounded by sipp's own timeout and the waits below.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial import unittest

from b2bua.sip.interfaces import Target
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transport import TransportLayer
from plugins.trunking.probing import ConnectionProber, Health, ProbeSettings
from plugins.trunking.registration import (
    OutboundRegistration,
    RegistrationConfig,
    RegistrationSettings,
)
from plugins.trunking.uac import CallableSender, Connection
from tests.trial.integration.sipp import (
    SippResult,
    free_port,
    require_program,
    run_sipp_uas,
    scenario,
    wait_for_port,
)

#: seconds of sipp's global timeout; the waits below are shorter
SIPP_TIMEOUT = 20.0


class _OnlySends:
    """The transaction user of a stack that only sends requests."""

    def request_received(self, request: object, transaction: object) -> None:
        """Nothing is served here."""

    def response_received(self, response: object, source: object) -> None:
        """No INVITE is sent."""

    def server_transaction_failed(self, transaction: object, error: object) -> None:
        """Nothing is served here."""


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll C{condition} every 50 ms; fail after C{timeout} seconds."""
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError(f"not {what} within {timeout:g} s")
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


class TrunkClientsWithSippTests(unittest.TestCase):
    """Registration and probing against sipp on loopback."""

    def setUp(self) -> None:
        """Start the stack on a free loopback UDP port; pick sipp's port."""
        self.sipp = require_program("sipp", "sip-tester")
        self.transport = TransportLayer(reactor, None)
        self.transactions = TransactionLayer(reactor, self.transport, _OnlySends())
        self.transport.user = self.transactions
        self.transport.listen(f"udp:127.0.0.1:{free_port('udp')}")
        self.addCleanup(self.transport.stop)
        self.addCleanup(self.transactions.stop)
        self.sender = CallableSender(self.transactions.send_request,
                                     self.transport.local_address)
        self.vendor_port = free_port("udp")

    def start_vendor(self, name: str, calls: int) -> Deferred[SippResult]:
        """sipp as the vendor, listening on L{vendor_port}; a test that fails
        early still waits for it to end (bounded by its timeout)."""
        vendor = run_sipp_uas(reactor, scenario(name), local_port=self.vendor_port,
                              timeout=SIPP_TIMEOUT, calls=calls, sipp=self.sipp)
        self.addCleanup(lambda: vendor.addBoth(lambda _: None))
        return vendor

    async def test_register_refresh_unregister(self) -> None:
        """Challenged, registered for 2 s, refreshed with the credentials
        sent at once, removed on stop; sipp checks every digest."""
        vendor = self.start_vendor("trunk_registrar.xml", calls=1)
        await wait_for_port(reactor, self.vendor_port, "udp", ended=vendor)
        config = RegistrationConfig(
            connection_id=1, name="sipp", target=Target("UDP", "127.0.0.1", self.vendor_port),
            registrar="sip:trunk.test", aor="sip:trunk7@trunk.test", username="trunk7",
            password="s3cret", realm="trunk.test", contact_user="trunk7",
            instance_id="urn:uuid:6f1c2a52-3d0e-4d43-9a8e-1f1f6d2c0b01",
            settings=RegistrationSettings(expires=60, margin=60, unregister_timeout=5))
        states: list[str] = []
        registration = OutboundRegistration(
            reactor, self.sender, config, on_change=lambda r, _: states.append(str(r.state)))
        self.addCleanup(registration.stop)
        registration.start()
        await wait_until(lambda: registration.registered, "registered")
        self.assertEqual(registration.granted_expires, 2)
        # the refresh goes after 1 s (half of 2 s) and is granted again
        await wait_until(lambda: registration.cseq >= 3 and registration.registered,
                         "refreshed")
        await registration.stop()
        result = await vendor
        self.assertTrue(result.ok, result.describe())
        self.assertEqual(states, ["registering", "registered", "registering", "registered",
                                  "unregistering", "unregistered"])
        self.assertEqual(registration.last_code, 200)
        self.assertEqual(registration.cseq, 4)

    async def test_probe_up_then_down(self) -> None:
        """Two probes answered 200: up; sipp gone, probes unanswered: down."""
        vendor = self.start_vendor("trunk_options_uas.xml", calls=2)
        await wait_for_port(reactor, self.vendor_port, "udp", ended=vendor)
        connection = Connection(1, "sipp", Target("UDP", "127.0.0.1", self.vendor_port),
                                f"127.0.0.1:{self.vendor_port}")
        prober = ConnectionProber(reactor, self.sender, ProbeSettings(
            interval=0.5, timeout=1.0, down_after=2, up_after=2))
        changes: list[tuple[bool, str]] = []
        prober.on_change(lambda _, available, health: changes.append((available,
                                                                       str(health))))
        prober.update([connection])
        prober.start()
        self.addCleanup(prober.stop)
        await wait_until(lambda: prober.health(1) is Health.UP, "up")
        result = await vendor
        self.assertTrue(result.ok, result.describe())
        self.assertEqual(result.successful, 2)
        await wait_until(lambda: prober.health(1) is Health.DOWN, "down")
        self.assertFalse(prober.is_available(1))
        prober.stop()
        self.assertEqual(changes, [(True, "unknown"), (True, "up"), (False, "down")])
