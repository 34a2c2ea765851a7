"""Attended transfer by the switch, with real sipp phones under C{twistd}.

C{twistd -n b2bua --config FILE} runs on free loopback ports with the demo
tenant.  Four sipps take part, phone B being two twin sipps (3PCC, so that
one can tell the other the consultation call's dialog):

  - B1 (extension 1001, C{uas_attended_refer.xml}, 3PCC master) answers
    A, asks its twin for the consultation call's dialog, then REFERs A to
    1002 with C{Replaces}; it requires the 202, NOTIFY C{100 Trying} and
    C{200 OK}, and the switch's BYE;
  - B2 (1001 calling, C{uac_attended_consult.xml}, 3PCC slave) calls C,
    passes the dialog (Call-ID and both tags) to B1, and requires the
    switch's BYE (C{Reason: ... Call transferred}) after the join;
  - C (extension 1002, C{uas_answer.xml}) answers B2, accepts the
    switch's re-INVITE carrying A's media, and later gets A's BYE;
  - A (extension 1000, C{uac_transferred.xml}) calls B, accepts the
    switch's re-INVITE carrying C's media (port 6002; B's is 6004), talks
    a second and hangs up.

The switch must have written two CDRs: A to B ended by the transfer, B to
C (the call that went on) ended by A, its new caller side.  Everything is
bounded (C{-m 1}, short timeouts) and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

from tests.trial.integration.sipp import (
    SippResult,
    cdr_disconnects,
    free_port,
    run_sipp,
    run_sipp_uas,
    scenario,
    wait_for_port,
)
from tests.trial.integration.transfer_switch import TIMEOUT, TransferSwitchCase


class AttendedTransferWithSippTests(TransferSwitchCase):
    """A sipp callee consults a third sipp phone, then joins its caller
    with it."""

    prefix = "b2bua-attxfer-"

    async def _transfer(self) -> None:
        b_port, c_port = free_port("udp"), free_port("udp")
        master, slave = free_port("tcp"), free_port("tcp")
        twins = os.path.abspath(self.mktemp())
        with open(twins, "w") as config:
            config.write(f"m;127.0.0.1:{master}\ns1;127.0.0.1:{slave}\n")
        await self.register("1001", b_port)
        await self.register("1002", c_port)
        started: list[Deferred[SippResult]] = []
        try:
            results = await self._phones(b_port, c_port, slave, twins, started)
        finally:
            # a failed wait leaves the phones already started: let them end
            # (each is bounded by its own timeout) so the reactor is clean
            for phone in started:
                if not phone.called:
                    await DeferredList([phone], consumeErrors=True)
        self.assert_all_ok(results)
        # two CDRs: A to B ended by the transfer, B to C (A's now) ended by A
        await self.stop_switch()
        self.assertEqual(
            sorted(cdr_disconnects(self.database)),
            [("sip:1000@127.0.0.1", "sip:1001@127.0.0.1", "answered", "transferred"),
             ("sip:1001@127.0.0.1", "sip:1002@127.0.0.1", "answered", "caller")])

    async def _phones(self, b_port: int, c_port: int, slave: int, twins: str,
                      started: list[Deferred[SippResult]]) -> dict[str, SippResult]:
        """Start C, B2 (the 3PCC slave), B1 (the master), then A; their
        results by role."""
        target = self.answering_phone(c_port)
        started.append(target)
        await wait_for_port(reactor, c_port, "udp", ended=target)
        consult = run_sipp(
            reactor, scenario("uac_attended_consult.xml"), self.target, "u1",
            ["-s", "1002", "-au", "1001", "-ap", "1234", "-slave", "s1",
             "-slave_cfg", twins, "-mp", str(free_port("udp"))],
            timeout=TIMEOUT, recv_timeout=10.0, sipp=self.sipp)
        started.append(consult)
        await wait_for_port(reactor, slave, "tcp", ended=consult)
        transferor = run_sipp_uas(
            reactor, scenario("uas_attended_refer.xml"), b_port, "u1",
            ["-d", "300", "-master", "m", "-slave_cfg", twins,
             "-set", "target", "sip:1002@127.0.0.1", "-mp", str(free_port("udp"))],
            timeout=TIMEOUT, recv_timeout=10.0, sipp=self.sipp)
        started.append(transferor)
        await wait_for_port(reactor, b_port, "udp", ended=transferor)
        caller = self.transferred_caller("1001")
        started.append(caller)
        return {"A (transferee)": await caller, "B1 (transferor)": await transferor,
                "B2 (consultation)": await consult, "C (target)": await target}

    def test_attended_transfer(self) -> None:
        """B REFERs A with Replaces naming its call to C: A and C are
        re-INVITEd with each other's media, B gets 202, NOTIFY 100 and
        200, then BYE on both calls; C is hung up when A hangs up."""
        return ensureDeferred(self._transfer())
