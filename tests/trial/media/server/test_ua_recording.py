"""Tests for recording in L{media.server.ua}: the whole-call policy, the
C{X-Recording} header of the BYE and of the 200 to the caller's BYE, the
run's variables, and the live calls' recordings for the API."""

from __future__ import annotations

import struct
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import PhoneCall
from media.server.g711 import ulaw_decode, ulaw_encode
from media.server.ivr import load_flow
from media.server.ivr_actions import builtin_actions
from media.server.pcm import to_samples
from media.server.recording import CallRecordings
from media.server.ua import MediaServerUA
from media.server.wav import read_wav
from tests.trial.media.server.test_ua import PHONE_RTP, PIN_FLOW, UATestsMixin, rtp_packet

#: The pin flow, recording the whole call.
RECORDED_PIN_FLOW = PIN_FLOW.replace('name = "pin"', 'name = "recorded_pin"') + """
[variables]
record = "always"
"""
#: The caller's audio: a constant, as PCMU carries it.
SAMPLE = 1000
PAYLOAD = ulaw_encode(struct.pack("<160h", *[SAMPLE] * 160))
DECODED = to_samples(ulaw_decode(PAYLOAD))[0]


def parse_header(value: str) -> tuple[Path, int]:
    """C{<path>;duration=<ms>} -> (path, ms)."""
    path, _, duration = value.partition(";duration=")
    return Path(path), int(duration)


class RecordingUATests(UATestsMixin, SynchronousTestCase):
    """The user agent with a recording directory."""

    def setUp(self) -> None:
        super().setUp()
        self.directory = Path(self.mktemp())
        self.ua.recordings_directory = self.directory
        self.ua.flows["recorded_pin"] = load_flow(RECORDED_PIN_FLOW, actions=builtin_actions())

    def talk(self, call: PhoneCall, frames: int) -> None:
        """The phone sends C{frames} PCMU packets of L{SAMPLE}, 20 ms apart."""
        port = self.ua_port(call)
        for n in range(frames):
            self.reactor.deliver(port, rtp_packet(0, 500 + n, 8000 + 160 * n, PAYLOAD),
                                 ("127.0.0.2", PHONE_RTP))
            self.reactor.advance(0.02)

    def test_flow_variable_records_the_whole_call(self) -> None:
        """C{record = "always"} in the flow: the call is recorded stereo from
        the ACK; the media server's BYE names the file and its duration,
        and the run's variables too."""
        call = self.call("recorded_pin")
        self.talk(call, 25)
        for digit in "123":
            call.info(f"Signal={digit}\r\nDuration=100\r\n".encode())
        self.network.flush()
        bye = self.byes()[0]
        lines = bye.headers.get_lines("x-recording")
        self.assertEqual(len(lines), 1)
        path, duration = parse_header(lines[0])
        self.assertTrue(path.is_file())
        self.assertTrue(str(path).startswith(str(self.directory)))
        self.assertIn(call.dialog.call_id.replace("@", "_"), path.name)
        audio = read_wav(path)
        self.assertEqual((audio.channels, audio.duration_ms), (2, duration))
        self.assertGreaterEqual(duration, 480)
        samples = to_samples(audio.pcm)
        left, right = samples[0::2], samples[1::2]
        self.assertGreaterEqual(list(left).count(DECODED), 20 * 160)
        self.assertEqual(set(right), {0})
        variables = self.results[0][1].variables
        self.assertEqual(variables["call_recording"], str(path))
        self.assertEqual(variables["call_recording_ms"], str(duration))

    def test_policy_always_and_caller_bye(self) -> None:
        """C{record_policy = "always"}: a plain flow is recorded too; when
        the caller hangs up, our 200 carries the header."""
        self.ua.record_policy = "always"
        call = self.call("pin")
        self.talk(call, 10)
        response = call.hangup().final
        self.assertEqual(response.code, 200)
        path, duration = parse_header(response.headers.get("x-recording"))
        self.assertEqual(read_wav(path).duration_ms, duration)
        self.assertEqual(self.results[0][1].outcome, "caller_hangup")
        self.assertEqual(self.results[0][1].variables["call_recording"], str(path))

    def test_on_demand(self) -> None:
        """On demand nothing records until asked; L{recordings_of} finds
        the live call's recordings by Call-ID (the API's way in)."""
        call = self.call("pin")
        self.talk(call, 5)
        self.assertEqual(list(self.directory.rglob("*.wav")), [])
        recordings = self.ua.recordings_of(call.dialog.call_id)
        self.assertIsInstance(recordings, CallRecordings)
        self.assertIsNone(self.ua.recordings_of("no-such-call"))
        self.assertEqual(recordings.control("start"), "recording")
        self.talk(call, 5)
        response = call.hangup().final
        self.assertEqual(len(response.headers.get_lines("x-recording")), 1)
        self.assertIsNone(self.ua.recordings_of(call.dialog.call_id))

    def test_not_configured(self) -> None:
        """Without a directory nothing records and no header is sent."""
        self.ua.recordings_directory = None
        self.ua.record_policy = "always"
        call = self.call("pin")
        self.assertIsNone(self.ua.recordings_of(call.dialog.call_id))
        self.assertIsNone(call.hangup().final.headers.get("x-recording"))

    def test_bad_policy(self) -> None:
        """An unknown policy is refused when the UA is built."""
        with self.assertRaises(ValueError):
            MediaServerUA(self.reactor, flows={}, actions=builtin_actions(), prompts=None,
                          port_pool=self.pool, record_policy="sometimes")
