"""Recording of an ordinary switch call (phone to phone, media anchored by
the built-in relay), checked by its content: a known tone in, the same
frequency found in the file the CDR names.

C{twistd -n b2bua} runs with C{[media] backend = "relay"} and a recording
directory in the test's folder.  The callee (demo extension 1001) is the
NATed sipp phone of L{test_nat_media_sipp} (it answers and plays Debian's
G.711 speech pcap); the caller (1000) is a sipp phone playing a pcap this
test writes with the project's own G.711 encoder: two seconds of a pure
1000 Hz tone (PCMA, as its SDP offers), then a key press as RFC 4733
events (which the recorder must skip).

  - L{CallRecordingSippTests.test_account_policy_always}: account 1000's
    C{features} say C{{"recording": "always"}} (the switch-wide default is
    C{on_demand}): the call is recorded from its answer, in stereo.
  - L{CallRecordingSippTests.test_started_through_the_api}: no policy says
    C{always}; the test starts the recording of the caller alone (C{mode
    "a"}) with C{POST /api/v1/media/calls/{call_id}/recording} while the
    call is up (the caller's Call-ID is fixed with sipp's C{-cid_str}).

Both then stop the switch (SIGTERM) and read the CDR: its
C{breakdown.recordings} names one file, with the mode and a duration that
matches the WAV file; the file's caller channel peaks at 1000 Hz (within
3 Hz, a Goertzel scan) for about the two seconds played.  Loopback only,
bounded well under a minute each; root is needed for sipp's pcap play (the
tests skip without it, and fail under C{CI=true}).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import fields
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from b2bua.core.directory import Extension
from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.repository import Repository
from b2bua.demo import seed_database
from media.server.dtmf import telephone_event_packets
from media.server.g711 import alaw_encode
from media.server.wav import read_wav
from tests.trial.integration import test_media_server_sipp as frames
from tests.trial.integration import test_nat_media_sipp as nat
from tests.trial.integration.nat_media import (
    RELAY_MEDIA_CONFIG,
    free_port_range,
    require_raw_sockets,
    skip_or_fail,
)
from tests.trial.integration.sipp import scenario
from tests.trial.integration.test_media_recording_sipp import (
    channel,
    dominant_frequency,
    loud_ms,
    loud_part,
    tone_pcm,
)
from tests.trial.integration.trunk_switch import TrunkSwitchCase, free_port_on

TONE_HZ = 1000
TONE_MS = 2000
#: Silence between the tone and the key press.
GAP_MS = 300
#: When the tone starts, after the caller's ACK (room for the API's start).
START_MS = 600
_PCMA = 8
_TELEPHONE_EVENT = 101
_SSRC = 0x7265_6331
#: The caller's Call-ID (sipp's C{-cid_str}: one call, no need for its C{%u}).
CALL_ID = "callrec-test@127.0.0.52"

MEDIA_CONFIG = RELAY_MEDIA_CONFIG + """media_timeout = 10
record_policy = "on_demand"
recordings = "{recordings}"

[plugins.local_routing]
ring_timeout = 10

[plugins.nat]
ping_interval = 0
"""


def write_tone_pcap(path: Path) -> None:
    """A pcap of the tone (PCMA, 20 ms packets, from C{START_MS} on), then
    the key 5 as RFC 4733 events C{GAP_MS} after it, on the same SSRC."""
    pcm = tone_pcm(TONE_HZ, TONE_MS)
    packets = []
    sequence, timestamp = 1, 8000
    for n, offset in enumerate(range(0, len(pcm), 320)):
        packets.append((START_MS + 20 * n, _rtp(_PCMA, sequence, timestamp,
                                                alaw_encode(pcm[offset:offset + 320]), n == 0)))
        sequence += 1
        timestamp += 160
    event_ms = START_MS + TONE_MS + GAP_MS
    for event in telephone_event_packets("5", 100, timestamp + GAP_MS * 8, interval_ms=20):
        packets.append((event_ms + event.send_at_ms,
                        _rtp(_TELEPHONE_EVENT, sequence, event.timestamp, event.payload,
                             event.marker)))
        sequence += 1
    frames.write_rtp_pcap(path, packets)


def _rtp(payload_type: int, sequence: int, timestamp: int, payload: bytes,
         marker: bool) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type,
                       sequence & 0xFFFF, timestamp & 0xFFFFFFFF, _SSRC) + payload


def loudness(samples: list[int]) -> str:
    """The peak of each 100 ms, for a failure message."""
    return " ".join(str(max(map(abs, samples[i:i + 800]), default=0))
                    for i in range(0, len(samples), 800))


class CallRecordingSippTests(TrunkSwitchCase):
    """Two sipp phones, the relay between them, the call recorded."""

    timeout = 90

    # the NATed callee and the caller of the relay's own sipp tests
    trap = nat.NatMediaTests.trap
    context = nat.NatMediaTests.context
    register_callee = nat.NatMediaTests.register_callee
    callee = nat.NatMediaTests.callee
    caller = nat.NatMediaTests.caller

    async def start(self, *, admin_key: bool = False, features: dict[str, Any] | None = None
                    ) -> str | None:
        """Seed the demo tenant (account 1000 with C{features}), start the
        switch with the relay and register the callee; the admin key when
        asked for."""
        require_raw_sockets()
        for pcap in nat.PCAPS:
            if not pcap.is_file():
                skip_or_fail(f"{pcap} is missing; get it with: apt-get install sip-tester")
        self.database = self.database_url()
        seeded = await seed_database(self.database, reactor, admin_key=admin_key)
        if features is not None:
            await self.set_features(nat.CALLER, features)
        self.recordings = self.folder / "recordings"
        port_min = free_port_range(nat.RELAY, nat.RANGE)
        self.port_min, self.port_max = port_min, port_min + nat.RANGE - 1
        self.config_extra = MEDIA_CONFIG.format(relay=nat.RELAY, port_min=port_min,
                                                port_max=self.port_max,
                                                recordings=self.recordings)
        self.sip_trap, private_sip_port = self.trap()
        self.rtp_trap, private_rtp_port = self.trap()
        sip_port = free_port_on("127.0.0.51")
        rtp_port = free_port_on("127.0.0.51")
        while rtp_port in (sip_port, sip_port - 2):
            rtp_port = free_port_on("127.0.0.51")
        self.phone = nat.NattedPhone(sip_port, rtp_port, private_sip_port, private_rtp_port)
        await self.start_switch()
        await self.register_callee()
        return getattr(seeded, "admin_key", None)

    async def set_features(self, number: str, features: dict[str, Any]) -> None:
        """Provision C{features} on the demo account C{number}."""
        database = Database(self.database, reactor)
        try:
            accounts = Repository("accounts", database, ChangeFeed(), "")
            scope = Scope.admin("test")
            page = await accounts.list(scope, {"number": number})
            (row,) = page.rows
            await accounts.update(row["id"], {"features": features}, scope)
        finally:
            await database.close()

    def caller_scenario(self) -> Path:
        """The talking caller's scenario playing the tone pcap (which holds
        its key press) instead of the speech and the key pcaps: sipp stops
        a pcap still playing when the next one starts."""
        pcap = self.folder / "tone.pcap"
        write_tone_pcap(pcap)
        text = Path(scenario("nat_uac_rtp.xml")).read_text()
        speech = "/usr/share/sip-tester/g711a.pcap"
        key = re.compile(r"<nop>\s*<action>\s*<exec play_pcap_audio="
                         r'"/usr/share/sip-tester/dtmf_2833_1.pcap"/>\s*</action>\s*</nop>')
        self.assertIn(speech, text)
        text, count = key.subn("", text.replace(speech, str(pcap)))
        self.assertEqual(count, 1)
        path = self.folder / "uac_tone.xml"
        path.write_text(text)
        return path

    async def call(self, api_key: str | None = None, mode: str = "stereo") -> None:
        """One call: the caller plays the tone (then a key) and hangs up
        about 3.8 s after its ACK; the callee answers and plays speech.  With
        C{api_key}, recording is started through the API once the call is
        up (in C{mode})."""
        uac = self.caller_scenario()
        answering = await self.callee("nat_uas_answer.xml", ["-set", "rtp", "1"],
                                      recv_timeout=15)
        calling = self.caller(str(uac), ["-d", "2800", "-cid_str", CALL_ID])
        if api_key is not None:
            await self.start_recording(api_key, CALL_ID, mode)
        called = await calling
        answered = await answering
        context = self.context(caller=called, callee=answered)
        self.assertTrue(called.ok, context)
        self.assertTrue(answered.ok, context)

    async def start_recording(self, key: str, call_id: str, mode: str) -> None:
        """POST start until the call is up (404 before it exists, 409 while
        it rings), at most 5 s."""
        url = (f"http://127.0.0.1:{self.oam}/api/v1/media/calls/"
               f"{call_id.replace('@', '%40')}/recording")
        pool = HTTPConnectionPool(reactor, persistent=False)
        answers = []
        for _ in range(100):
            response = await treq.post(url, json={"action": "start", "mode": mode},
                                       headers={"Authorization": f"Bearer {key}"},
                                       timeout=5, pool=pool)
            body = await response.text()
            answers.append((response.code, body))
            if response.code == 200:
                state = json.loads(body)
                self.assertEqual((state["source"], state["state"], state["mode"]),
                                 ("relay", "recording", mode), body)
                return
            await deferLater(reactor, 0.05, lambda: None)
        log = "\n".join(line for line in self.output.splitlines() if "POST /api" not in line)
        self.fail(f"the API never started the recording: {answers[-3:]}\n{log[-6000:]}")

    async def recorded(self) -> tuple[dict[str, Any], Any]:
        """Stop the switch; the CDR's one recording and the file's audio."""
        await self.stop_switch()
        (cdr,) = await self.read_cdrs()
        recordings = cdr["breakdown"].get("recordings")
        self.assertIsNotNone(recordings, f"no recordings in the CDR {cdr}\n{self.output[-3000:]}")
        (entry,) = recordings
        path = Path(entry["path"])
        self.assertEqual(path.parent.parent.parent.parent, self.recordings, entry)
        self.assertEqual(sorted(self.recordings.rglob("*.wav")), [path])
        self.assertEqual(entry["source"], "relay")
        audio = read_wav(path)
        self.assertEqual(entry["duration_ms"], audio.duration_ms)
        self.assertIn(str(path), self.output)
        return entry, audio

    def assertTone(self, samples: list[int]) -> None:
        """The caller's tone is in C{samples}: 1000 Hz (+/- 3 Hz), about
        the two seconds played."""
        frequency = dominant_frequency(loud_part(samples))
        self.assertLessEqual(abs(frequency - TONE_HZ), 3, frequency)
        self.assertLessEqual(abs(loud_ms(samples) - TONE_MS), 100,
                             f"{loud_ms(samples)} ms loud; peaks per 100 ms: {loudness(samples)}")

    async def test_account_policy_always(self) -> None:
        """The caller's account says C{always}: the whole call is recorded
        in stereo, the tone on the caller's (left) channel."""
        if "features" not in {f.name for f in fields(Extension)}:
            skip_or_fail("the directory does not carry accounts' features yet "
                         "(b2bua.core.directory.Extension.features; see "
                         "docs/call-recording.md)")
        await self.start(features={"recording": "always"})
        await self.call()
        entry, audio = await self.recorded()
        self.assertEqual((entry["mode"], audio.channels), ("stereo", 2))
        self.assertTone(channel(audio, 0))
        self.assertGreaterEqual(entry["duration_ms"], START_MS + TONE_MS)
        right = channel(audio, 1)
        self.assertGreater(max(abs(s) for s in right), 1000, "the callee's speech is missing")

    async def test_started_through_the_api(self) -> None:
        """Nobody's policy is C{always}: the API starts recording the caller
        alone, and the CDR names that file."""
        key = await self.start(admin_key=True)
        self.assertIsNotNone(key)
        assert key is not None
        await self.call(api_key=key, mode="a")
        entry, audio = await self.recorded()
        self.assertEqual((entry["mode"], audio.channels), ("a", 1))
        self.assertTone(channel(audio, 0))
