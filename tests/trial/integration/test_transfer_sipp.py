"""Blind transfer by the switch, with real sipp phones under C{twistd}.

C{twistd -n b2bua --config FILE} runs on free loopback ports with the demo
tenant.  Three sipps take part:

  - B (extension 1001, C{uas_refer.xml}) answers, then REFERs its caller
    to extension 1002; it requires the 202, a NOTIFY C{SIP/2.0 100 Trying},
    a NOTIFY C{SIP/2.0 200 OK} (C{Subscription-State: terminated}) and
    then the switch's BYE;
  - C (extension 1002, C{uas_answer.xml}) gets the transfer's INVITE,
    answers, and later gets the BYE when A hangs up;
  - A (extension 1000, C{uac_transferred.xml}) calls B, accepts the
    switch's re-INVITE carrying C's media, talks a second and hangs up.

Each scenario checks its own messages (C{check_it}); the test requires all
three to complete, and the switch to have written two CDRs: A to B ended
by the transfer, A to C ended by A.  Everything is bounded (C{-m 1}, short timeouts) and
talks to 127.0.0.1 only.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from tests.trial.integration.sipp import (
    cdr_disconnects,
    free_port,
    run_sipp_uas,
    scenario,
    wait_for_port,
)
from tests.trial.integration.transfer_switch import TIMEOUT, TransferSwitchCase


class TransferWithSippTests(TransferSwitchCase):
    """A sipp callee transfers its sipp caller to a third sipp phone."""

    prefix = "b2bua-xfer-"

    async def _transfer(self) -> None:
        b_port, c_port = free_port("udp"), free_port("udp")
        await self.register("1001", b_port)
        await self.register("1002", c_port)
        transferor = run_sipp_uas(
            reactor, scenario("uas_refer.xml"), b_port, "u1",
            ["-d", "500", "-set", "target", "sip:1002@127.0.0.1", "-mp", str(free_port("udp"))],
            timeout=TIMEOUT, sipp=self.sipp)
        target = self.answering_phone(c_port, "-d", "200")
        await wait_for_port(reactor, b_port, "udp", ended=transferor)
        await wait_for_port(reactor, c_port, "udp", ended=target)
        caller = await self.transferred_caller("1001")
        self.assert_all_ok({"A (transferee)": caller, "B (transferor)": await transferor,
                            "C (target)": await target})
        # two CDRs: A to B ended by the transfer, then A to C ended by A
        await self.stop_switch()
        self.assertEqual(
            cdr_disconnects(self.database),
            [("sip:1000@127.0.0.1", "sip:1001@127.0.0.1", "answered", "transferred"),
             ("sip:1000@127.0.0.1", "sip:1002@127.0.0.1", "answered", "caller")])

    def test_blind_transfer(self) -> None:
        """B REFERs A to C: B gets 202, NOTIFY 100 and 200, then BYE; A is
        re-INVITEd with C's media; C is hung up when A hangs up."""
        return ensureDeferred(self._transfer())
