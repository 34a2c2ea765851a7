"""Media anchoring through a real rtpengine, driven by the switch itself.

C{twistd b2bua} runs in a child process with C{[media] backend =
"rtpengine"} and C{[media.rtpengine] instances} naming a real rtpengine
(Debian's C{rtpengine-daemon}), itself a child process in userspace mode on
loopback (L{RtpengineChild}).  The switch's provisioning is a fresh SQLite
database (or a PostgreSQL schema when C{DATABASE_URL} is set) seeded with
the demo tenant C{127.0.0.1}, whose extensions answer password C{1234}.

A sipp callee registers as extension 1001 (digest), then answers; a sipp
caller, extension 1000, calls 1001 through the switch (its INVITE is
challenged with 407 and sent again with credentials).  Each sipp offers or
answers its own media address and, once the call is up, plays G.711 A-law
RTP from sip-tester's C{g711a.pcap} to the address of the SDP it received
(rtpengine_switch_uac.xml, rtpengine_switch_uas.xml), for two seconds,
then the caller hangs up.  The switch is stopped with SIGTERM so that its
CDR writer flushes, and the test checks:

  1. the SDP each sipp received (read from its C{-trace_msg} file) points
     at rtpengine: every C{c=} is 127.0.0.1 and the C{m=audio} port is one
     of the C{--port-min}..C{--port-max} given to rtpengine, a different
     port for each party, neither of them a sipp's own media port;
  2. RTP went through rtpengine both ways: a raw-socket tap (L{RtpTap})
     sees each sipp's RTP reach rtpengine's port facing it, and RTP reach
     each sipp from rtpengine's port facing it, and none go from one sipp
     to the other;
  3. the call's CDR (C{cdrs.breakdown.media}, which the media plugin fills
     from rtpengine's C{delete} statistics) lists the audio stream with
     C{packets > 0} for side C{a} and for side C{b}.

rtpengine keeps its default endpoint learning: each sipp sends its RTP
from the very address and port its SDP names ([media_ip]:[media_port]),
so what rtpengine learns is what the SDP already said, and its forwarding
reaches the sipps' media ports (whose sockets swallow it: hence the tap).
Unlike C{test_rtpengine}, no listener of the test stands in for a party,
so C{--endpoint-learning=off} is not needed.

Ports are awaited by reading C{/proc/net/udp} (L{wait_until_bound})
rather than with C{sipp.wait_for_port}, whose probe binds the port and can
make the child's own bind fail.  Without sipp, rtpengine, raw sockets
(root) or the pcap the tests are skipped, and fail under C{CI=true}.
Loopback only, bounded: about 4 s a test (trial stops one at 60 s).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from b2bua.db.database import Database
from b2bua.demo import seed_database
from b2bua.sip.sdp import SessionDescription
from tests.trial.integration.prepaid_switch import stored_json
from tests.trial.integration.rtpengine_switch import (
    RtpengineChild,
    RtpTap,
    received_sdps,
    require_pcap,
    skip_or_fail,
    wait_until_bound,
)
from tests.trial.integration.sipp import (
    SippResult,
    SwitchProcessMixin,
    free_port,
    require_program,
    run_sipp,
    run_sipp_uas,
    scenario,
)
from tests.trial.integration.test_rtpengine import media_port, require_raw_sockets

ROOT = Path(__file__).resolve().parents[3]
DATABASE_URL = os.environ.get("DATABASE_URL")
#: The demo tenant and its two extensions (password 1234).
TENANT = "127.0.0.1"
CALLER = "1000"
CALLEE = "1001"
PASSWORD = "1234"
#: How long the caller talks (ms): the pcap plays meanwhile.
TALK_MS = 2000
#: Seconds for each sipp run.
SIPP_TIMEOUT = 20.0

CONFIG = """
[sip]
listen = ["udp:127.0.0.1:{port}"]
# sipp answers only MD5 challenges and digests its own URI
digest_algorithms = ["MD5", "SHA-256"]
digest_check_uri = false

[core]
drain_timeout = 5

[oam]
listen = "tcp:{oam}:interface=127.0.0.1"

[storage]
database = "{database}"
balances = "memory"
migrate = true

[media]
backend = "rtpengine"

[media.rtpengine]
instances = ["127.0.0.1:{ng}"]
timeout = 0.5
retries = 2
bind = "127.0.0.1"
"""


@dataclass(frozen=True)
class CallOutcome:
    """What one call through the switch left behind.

    @ivar call_id: the caller's Call-ID (the switch's call id).
    @ivar caller, callee: the two sipp runs.
    @ivar caller_media, callee_media: each sipp's own media port.
    @ivar at_caller: the SDP bodies of the 200s the caller received.
    @ivar at_callee: the SDP bodies of the INVITEs the callee received.
    @ivar tap: the RTP delivered on loopback during the call.
    """

    call_id: str
    caller: SippResult
    callee: SippResult
    caller_media: int
    callee_media: int
    at_caller: list[SessionDescription]
    at_callee: list[SessionDescription]
    tap: RtpTap


class RtpengineSwitchTests(SwitchProcessMixin, unittest.TestCase):
    """One call through the switch with its media anchored in rtpengine."""

    timeout = 60

    async def setUp(self) -> None:
        """Check the prerequisites; start rtpengine, then the switch."""
        self.sipp = require_program("sipp", "sip-tester")
        binary = require_program("rtpengine", "rtpengine-daemon")
        require_raw_sockets()
        require_pcap()
        if not Path("/proc/net/udp").is_file():
            skip_or_fail("the test reads /proc/net/udp (Linux) to see which ports are bound")
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir(parents=True)
        self.rtpengine = RtpengineChild(reactor, binary)
        self.addCleanup(self.rtpengine.stop)
        try:
            await self.rtpengine.start()
        except RuntimeError as error:
            self.fail(str(error))
        await self.start_switch()

    # -- the switch ------------------------------------------------------------------

    def database_url(self) -> str:
        """A fresh provisioning database: SQLite, or a PostgreSQL schema."""
        if DATABASE_URL:
            from tests.trial.db.support import database_url

            return database_url(self, "postgresql")
        return f"sqlite:///{self.folder / 'var' / 'b2bua.db'}"

    async def start_switch(self) -> None:
        """Seed the demo tenant, write the configuration, start twistd and
        wait for its SIP port."""
        self.database = self.database_url()
        await seed_database(self.database, reactor, admin_key=False)
        self.port = free_port("both")
        config = self.folder / "b2bua.toml"
        config.write_text(CONFIG.format(port=self.port, oam=free_port("tcp"),
                                        database=self.database, ng=self.rtpengine.ng_port))
        twistd = self.spawn_switch(config, self.folder)
        try:
            # the SIP port is bound only once the storage phase is over
            await wait_until_bound(reactor, self.port, twistd.ended, "the switch")
        except RuntimeError as error:
            self.fail(f"the switch did not start: {error}\n{self.output[-3000:]}")

    async def read_cdrs(self) -> list[dict[str, Any]]:
        """Every row of C{cdrs}, oldest first, C{breakdown} decoded."""
        database = Database(self.database, reactor)
        try:
            rows = await database.run(lambda c: c.execute(
                "SELECT call_id, caller, callee, answered_at, billsec, disposition, "
                "breakdown FROM cdrs ORDER BY id"))
        finally:
            await database.close()
        return [dict(row, breakdown=stored_json(row["breakdown"])) for row in rows]

    # -- the call --------------------------------------------------------------------

    async def place_call(self) -> CallOutcome:
        """Register the callee, run it, run the caller with an L{RtpTap}
        watching; then stop the switch."""
        uas_port = free_port("udp")
        registered = await run_sipp(reactor, scenario("register_contact.xml"),
                                    f"127.0.0.1:{self.port}", "u1",
                                    ["-s", CALLEE, "-au", CALLEE, "-ap", PASSWORD],
                                    timeout=SIPP_TIMEOUT, local_port=uas_port, sipp=self.sipp)
        self.assertTrue(registered.ok, registered.describe())

        call_id = f"rtpengine-switch-{random.randrange(10**9)}"
        caller_media, callee_media = media_port(), media_port()
        while callee_media in (caller_media, caller_media + 2):
            callee_media = media_port()
        uac_messages = self.folder / "uac-messages.log"
        uas_messages = self.folder / "uas-messages.log"
        tap = RtpTap(reactor)
        tap.start()
        self.addCleanup(tap.stop)
        uas = run_sipp_uas(reactor, scenario("rtpengine_switch_uas.xml"), uas_port,
                           timeout=SIPP_TIMEOUT, recv_timeout=10.0, sipp=self.sipp,
                           extra_args=["-mi", "127.0.0.1", "-mp", str(callee_media),
                                       "-trace_msg", "-message_file", str(uas_messages)])
        try:
            await wait_until_bound(reactor, uas_port, uas, "the sipp callee")
        except RuntimeError as error:
            self.fail(f"{error}\n{(await uas).describe()}")
        caller = await run_sipp(reactor, scenario("rtpengine_switch_uac.xml"),
                                f"127.0.0.1:{self.port}", timeout=SIPP_TIMEOUT,
                                sipp=self.sipp,
                                extra_args=["-s", CALLEE, "-au", CALLER, "-ap", PASSWORD,
                                            "-set", "caller", CALLER, "-d", str(TALK_MS),
                                            "-cid_str", f"{call_id}@%s",
                                            "-mi", "127.0.0.1", "-mp", str(caller_media),
                                            "-trace_msg", "-message_file", str(uac_messages)])
        callee = await uas
        tap.stop()
        await self.stop_switch()
        self.assertTrue(caller.ok, f"{caller.describe()}\n{self.output[-3000:]}")
        self.assertTrue(callee.ok, f"{callee.describe()}\n{self.output[-3000:]}")
        return CallOutcome(
            call_id=f"{call_id}@127.0.0.1", caller=caller, callee=callee,
            caller_media=caller_media, callee_media=callee_media, tap=tap,
            at_caller=received_sdps(uac_messages, "SIP/2.0 200"),
            at_callee=received_sdps(uas_messages, "INVITE"))

    def assertAnchored(self, sdp: SessionDescription, own: int, other: int) -> int:
        """C{sdp} points at rtpengine (every C{c=} 127.0.0.1, the audio port
        one of rtpengine's), not at the sipp whose media port is C{other};
        return its audio port."""
        self.assertIsNotNone(sdp.connection, sdp.to_bytes())
        self.assertEqual(sdp.connection.address, "127.0.0.1", sdp.to_bytes())
        (audio,) = [m for m in sdp.media if m.media == "audio"]
        if audio.connection is not None:
            self.assertEqual(audio.connection.address, "127.0.0.1", sdp.to_bytes())
        self.assertTrue(self.rtpengine.owns(audio.port),
                        f"m=audio {audio.port} is not one of rtpengine's ports "
                        f"{self.rtpengine.port_min}-{self.rtpengine.port_max}:\n"
                        f"{sdp.to_bytes().decode()}")
        self.assertNotIn(audio.port, (own, other), sdp.to_bytes())
        return audio.port

    # -- the tests -------------------------------------------------------------------

    async def test_sdp_and_rtp_go_through_rtpengine(self) -> None:
        """Each sipp got an SDP naming rtpengine, and the RTP each sent
        reached the other through rtpengine's ports, never directly."""
        call = await self.place_call()
        tap = call.tap
        self.assertEqual(len(call.at_callee), 1, "the callee received no INVITE with SDP")
        self.assertGreaterEqual(len(call.at_caller), 1, "the caller received no 200 with SDP")
        # the port rtpengine opened facing each party
        facing_callee = self.assertAnchored(call.at_callee[0], call.callee_media,
                                            call.caller_media)
        facing_caller = {self.assertAnchored(sdp, call.caller_media, call.callee_media)
                         for sdp in call.at_caller}
        self.assertEqual(len(facing_caller), 1, "the 200's retransmissions differ")
        (facing_caller_port,) = facing_caller
        self.assertNotEqual(facing_caller_port, facing_callee)

        flows = dict(tap.flows)
        # each party's RTP reached rtpengine's port facing it...
        self.assertGreater(tap.between([call.caller_media], [facing_caller_port]), 0, flows)
        self.assertGreater(tap.between([call.callee_media], [facing_callee]), 0, flows)
        # ...and came out of the port facing the other party, to that party
        self.assertGreater(tap.between([facing_callee], [call.callee_media]), 0, flows)
        self.assertGreater(tap.between([facing_caller_port], [call.caller_media]), 0, flows)
        # nothing went from one sipp to the other
        self.assertEqual(tap.between([call.caller_media], [call.callee_media]), 0, flows)
        self.assertEqual(tap.between([call.callee_media], [call.caller_media]), 0, flows)

    async def test_cdr_has_rtpengine_statistics(self) -> None:
        """The call's CDR lists the audio stream with packets from side a and
        side b, from rtpengine's delete statistics."""
        call = await self.place_call()
        rows = [row for row in await self.read_cdrs() if row["call_id"] == call.call_id]
        answered = [row for row in rows if row["answered_at"] is not None]
        self.assertEqual(len(answered), 1, f"CDRs of {call.call_id}: {rows}")
        (cdr,) = answered
        self.assertEqual((cdr["caller"], cdr["callee"], cdr["disposition"]),
                         (f"sip:{CALLER}@{TENANT}", f"sip:{CALLEE}@{TENANT}", "answered"), cdr)
        # RTP did reach rtpengine from both parties (rtpengine counts what it receives)
        self.assertGreater(call.tap.between([call.caller_media], self.rtpengine.ports), 0)
        self.assertGreater(call.tap.between([call.callee_media], self.rtpengine.ports), 0)
        media = cdr["breakdown"].get("media")
        self.assertTrue(media, f"the CDR has no media statistics although RTP went through "
                               f"rtpengine both ways: breakdown {cdr['breakdown']}\n"
                               f"RTP seen (source port, destination port): {dict(call.tap.flows)}")
        streams = {(s["index"], s["side"]): s for s in media}
        self.assertEqual(set(streams), {(0, "a"), (0, "b")}, media)
        for side in ("a", "b"):
            stream = streams[(0, side)]
            self.assertEqual(stream["media"], "audio", media)
            self.assertGreater(stream["packets"], 0, f"no packets from side {side}: {media}")
            self.assertGreater(stream["bytes"], stream["packets"] * 12, media)
