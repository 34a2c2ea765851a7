"""The media server's IVR transferring a real sipp caller through the switch.

C{twistd -n b2bua} runs with the media server and the flow
C{ms_flows/transfer_to_1002.toml} on extension 7125: a C{transfer} node
whose target is demo extension 1002.  Three parties:

  - A (demo extension 1000, C{uac_transferred.xml}) dials 7125, answers the
    407, is answered by the media server, then accepts the switch's
    re-INVITE carrying C's media (port 6002 of C{uas_answer.xml}:
    checked), talks a second and hangs up;
  - the media server (the B leg) sends REFER C{Refer-To:
    <sip:1002@127.0.0.1>}, gets 202 and the NOTIFYs, and is hung up by the
    switch once the transfer is done;
  - C (extension 1002, registered, C{uas_answer.xml}) gets the transfer's
    INVITE, answers, and gets the BYE when A hangs up.

The test requires both sipps to complete, the switch's log to show the
media server's transfer, and the CDRs the transfer page describes: A to
7125 ended C{transferred}, A to 1002 ended by A.  Loopback only; every
sipp is bounded (C{-m 1}, short receive timeouts).
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from tests.trial.integration.sipp import (
    MEDIA_SERVER_CONFIG,
    SWITCH_CONFIG,
    cdr_disconnects,
    free_port,
    wait_for_port,
)
from tests.trial.integration.test_media_server_sipp import MediaServerCase
from tests.trial.integration.transfer_switch import TransferPhones

EXTENSION = "7125"

CONFIG = SWITCH_CONFIG + MEDIA_SERVER_CONFIG + '''extensions = {{ "{extension}" = "transfer_to_1002" }}
'''


class MediaTransferWithSippTests(TransferPhones, MediaServerCase):
    """An IVR flow transfers a sipp caller to a registered sipp phone."""

    timeout = 90
    config_template = CONFIG
    extension = EXTENSION

    async def _transfer(self) -> None:
        c_port = free_port("udp")
        await self.register("1002", c_port)
        target = self.answering_phone(c_port, "-d", "200")
        await wait_for_port(reactor, c_port, "udp", ended=target)
        caller = await self.transferred_caller(EXTENSION)
        self.assert_all_ok({"A (caller)": caller, "C (target)": await target})
        await self.stop_switch()
        log = self.output
        self.assertIn("REFER to sip:1002@127.0.0.1", log)
        self.assertRegex(log, r"media server: transfer of \S+: transferred \(\(200, ")
        self.assertRegex(log, r"flow transfer_to_1002 of \S+ ended: transfer \(1002\)")
        self.assertEqual(
            cdr_disconnects(self.database),
            [("sip:1000@127.0.0.1", f"sip:{EXTENSION}@127.0.0.1", "answered", "transferred"),
             ("sip:1000@127.0.0.1", "sip:1002@127.0.0.1", "answered", "caller")])

    def test_ivr_transfer(self) -> None:
        """The flow's transfer node moves the caller to extension 1002: C
        gets the INVITE, A the re-INVITE with C's media, and the CDRs show
        the transfer."""
        return ensureDeferred(self._transfer())
