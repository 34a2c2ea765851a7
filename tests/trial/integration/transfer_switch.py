"""The switch under C{twistd} and the sipp phones of the transfer
integration tests (C{test_transfer_sipp}, C{test_attended_transfer_sipp},
C{test_media_transfer_sipp}).

L{TransferPhones} is mixed into a L{SwitchProcessMixin} test case: it
registers the phones' contacts, starts the answering target (C{uas_answer.xml})
and the transferred caller (C{uac_transferred.xml}), and requires every
phone to have completed.  L{TransferSwitchCase} is the case of the
switch with the demo tenant alone (L{SWITCH_CONFIG}).  Every sipp is
bounded (C{-m 1}, L{TIMEOUT}, short receive timeouts) and talks to
127.0.0.1 only.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial import unittest

from tests.trial.integration.sipp import (
    SWITCH_CONFIG,
    SippResult,
    SwitchProcessMixin,
    free_port,
    register_contact,
    run_sipp,
    run_sipp_uas,
    scenario,
)

__all__ = ["TIMEOUT", "TransferPhones", "TransferSwitchCase"]

#: seconds each sipp of a transfer test may run (its C{-timeout})
TIMEOUT = 25.0


class TransferPhones(SwitchProcessMixin):
    """The phones of a transfer test, for a case with the switch running
    (L{SwitchProcessMixin.start_demo_switch} done)."""

    async def register(self, user: str, port: int) -> None:
        """Register a contact at C{port} for extension C{user}."""
        result = await register_contact(reactor, self.target, user, port, timeout=TIMEOUT,
                                        sipp=self.sipp)
        self.assertTrue(result.ok, result.describe())  # type: ignore[attr-defined]

    def answering_phone(self, port: int, *extra: str) -> Deferred[SippResult]:
        """Start the target: a sipp UAS on C{port} (C{uas_answer.xml},
        C{extra} arguments first) that answers, accepts a re-INVITE and
        takes the BYE."""
        return run_sipp_uas(
            reactor, scenario("uas_answer.xml"), port, "u1",
            [*extra, "-mp", str(free_port("udp"))],
            timeout=TIMEOUT, recv_timeout=10.0, sipp=self.sipp)

    def transferred_caller(self, dialled: str) -> Deferred[SippResult]:
        """Start the transferee A: extension 1000 dials C{dialled}
        (C{uac_transferred.xml}), accepts the switch's re-INVITE, talks a
        second and hangs up."""
        return run_sipp(
            reactor, scenario("uac_transferred.xml"), self.target, "u1",
            ["-s", dialled, "-au", "1000", "-ap", "1234", "-set", "caller", "1000",
             "-d", "1000", "-mp", str(free_port("udp"))],
            timeout=TIMEOUT, recv_timeout=10.0, sipp=self.sipp)

    def assert_all_ok(self, results: dict[str, SippResult]) -> None:
        """Every phone in C{results} (by role) completed its scenario; the
        failure message has their accounts and the switch's last output."""
        failed = [f"{who}: {result.describe()}" for who, result in results.items()
                  if not result.ok]
        self.assertEqual(  # type: ignore[attr-defined]
            failed, [], "\n".join(failed) + "\n" + self.output[-4000:])


class TransferSwitchCase(TransferPhones, unittest.TestCase):
    """The switch with the demo tenant under C{twistd}, started before
    each test, and the transfer phones.

    @cvar prefix: the prefix of the switch's temporary folder.
    """

    timeout = 90
    prefix = "b2bua-xfer-"

    def setUp(self) -> Deferred[object]:
        """Seed the demo tenant, start the switch, wait for its SIP port."""
        return ensureDeferred(self.start_demo_switch(SWITCH_CONFIG, prefix=self.prefix))
