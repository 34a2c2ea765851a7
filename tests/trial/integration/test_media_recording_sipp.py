"""Recording on the media server, checked by its content: a known tone in,
the same frequency found in the file.

C{twistd -n b2bua} runs with the media server enabled, a recording
directory in the test's folder and the flow C{ms_flows/record_tone.toml}
on extension 7124: it records the whole call (stereo, C{record =
"always"}) and the caller's message (mono) until C{#}, then hangs up with
cause C{recorded}.  A sipp caller (demo extension 1000) dials 7124 and
plays a pcap this test writes with the project's own G.711 encoder: two
seconds of a pure 1000 Hz tone (PCMU), 300 ms of nothing, then C{#} as an
RFC 4733 telephone-event.  The scenario (C{scenarios/ms_pin_uac.xml})
requires the media server's BYE to carry the cause.

The test then opens both WAV files and finds, by a Goertzel scan over
200-3000 Hz, that the caller's audio peaks at 1000 Hz (within 3 Hz), that
the tone lasts about the two seconds played, that the message stopped at
the C{#} (well before its ten-second limit), that the media server's side
of the stereo file is silent, and that the switch's log names the files.
Loopback only, bounded well under a minute.
"""

from __future__ import annotations

import math
import struct
from array import array
from pathlib import Path

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial import unittest

from media.server.dtmf import telephone_event_packets
from media.server.g711 import ulaw_encode
from media.server.goertzel import goertzel_power
from media.server.pcm import to_samples
from media.server.wav import Audio, read_wav
from tests.trial.integration import test_media_server_sipp as base
from tests.trial.integration.sipp import MEDIA_SERVER_CONFIG, SWITCH_CONFIG

EXTENSION = "7124"
TONE_HZ = 1000
TONE_MS = 2000
GAP_MS = 300
AMPLITUDE = 8000
#: When the first packet is sent, after sipp's ACK.
START_MS = 200
_PCMU = 0
_TELEPHONE_EVENT_PT = 101
_SSRC = 0x5245_434F

CONFIG = SWITCH_CONFIG + MEDIA_SERVER_CONFIG + '''recordings = "{folder}/recordings"
extensions = {{ "{extension}" = "record_tone" }}
'''


def tone_pcm(frequency: float, milliseconds: int, amplitude: int = AMPLITUDE) -> bytes:
    """A pure sine as 8 kHz 16-bit linear PCM."""
    count = milliseconds * 8
    step = 2 * math.pi * frequency / 8000
    return array("h", (round(amplitude * math.sin(step * n)) for n in range(count))).tobytes()


def _rtp(payload_type: int, sequence: int, timestamp: int, payload: bytes,
         marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type,
                       sequence & 0xFFFF, timestamp & 0xFFFFFFFF, _SSRC) + payload


def write_tone_pcap(path: Path, *, frequency: float = TONE_HZ, tone_ms: int = TONE_MS,
                    gap_ms: int = GAP_MS, stop: str = "#") -> None:
    """A pcap of the tone (PCMU, 20 ms packets), then C{stop} as RFC 4733
    events C{gap_ms} after the tone, on one SSRC."""
    pcm = tone_pcm(frequency, tone_ms)
    packets: list[tuple[int, bytes]] = []
    sequence, timestamp = 1, 16000
    for n, offset in enumerate(range(0, len(pcm), 320)):
        packets.append((START_MS + 20 * n,
                        _rtp(_PCMU, sequence, timestamp, ulaw_encode(pcm[offset:offset + 320]),
                             marker=n == 0)))
        sequence += 1
        timestamp += 160
    event_ms = START_MS + tone_ms + gap_ms
    event_timestamp = timestamp + gap_ms * 8
    for packet in telephone_event_packets(stop, 100, event_timestamp, interval_ms=20):
        packets.append((event_ms + packet.send_at_ms,
                        _rtp(_TELEPHONE_EVENT_PT, sequence, packet.timestamp, packet.payload,
                             packet.marker)))
        sequence += 1
    base.write_rtp_pcap(path, packets)


def dominant_frequency(samples: list[int], low: int = 200, high: int = 3000) -> float:
    """The frequency of the strongest component between C{low} and C{high}
    Hz: a 10 Hz Goertzel scan over 100 ms, refined in 1 Hz steps over up
    to a second."""
    coarse = samples[:800]
    peak = max(range(low, high + 1, 10), key=lambda f: goertzel_power(coarse, f))
    fine = samples[:8000]
    return max(range(max(low, peak - 15), min(high, peak + 15) + 1),
               key=lambda f: goertzel_power(fine, f))


def loud_ms(samples: list[int], threshold: int = AMPLITUDE // 4) -> int:
    """Milliseconds of 20 ms frames whose peak is above C{threshold}."""
    frames = (samples[i:i + 160] for i in range(0, len(samples), 160))
    return 20 * sum(1 for frame in frames if max(abs(s) for s in frame) > threshold)


def channel(audio: Audio, index: int) -> list[int]:
    """One channel's samples."""
    samples = to_samples(audio.pcm)
    return list(samples[index::audio.channels])


def loud_part(samples: list[int], threshold: int = AMPLITUDE // 4) -> list[int]:
    """The samples from the first loud one on."""
    for n, sample in enumerate(samples):
        if abs(sample) > threshold:
            return samples[n:]
    return []


class MediaRecordingWithSippTests(base.MediaServerCase):
    """A sipp caller's tone is recorded by the media server."""

    config_template = CONFIG
    extension = EXTENSION

    def assertNear(self, value: float, expected: float, within: float) -> None:
        """C{value} is C{expected} give or take C{within}."""
        self.assertLessEqual(abs(value - expected), within, f"{value} is not {expected} "
                             f"+/- {within}")

    async def _record(self) -> None:
        pcap = self.folder / "tone.pcap"
        write_tone_pcap(pcap)
        await self.dial(pcap, "recorded")
        log = self.output
        files = sorted((self.folder / "recordings").rglob("*.wav"))
        self.assertEqual(len(files), 2, f"{files}\n{log[-3000:]}")
        audio = {read_wav(path).channels: (path, read_wav(path)) for path in files}
        self.assertEqual(set(audio), {1, 2})

        message_path, message = audio[1]
        caller = loud_part(channel(message, 0))
        self.assertNear(dominant_frequency(caller), TONE_HZ, 3)
        self.assertNear(loud_ms(channel(message, 0)), TONE_MS, 100)
        self.assertGreaterEqual(message.duration_ms, TONE_MS - 100)
        self.assertLessEqual(message.duration_ms, TONE_MS + GAP_MS + 500)  # stopped by '#'

        call_path, call = audio[2]
        left = loud_part(channel(call, 0))
        self.assertNear(dominant_frequency(left), TONE_HZ, 3)
        self.assertNear(loud_ms(channel(call, 0)), TONE_MS, 100)
        self.assertEqual(max(abs(s) for s in channel(call, 1)), 0)
        self.assertGreaterEqual(call.duration_ms, message.duration_ms)
        for path in (message_path, call_path):
            self.assertIn(str(path), log)

    def test_tone_is_recorded(self) -> Deferred[None]:
        """The 1000 Hz tone is found in both files, about as long as played."""
        return ensureDeferred(self._record())


class FrequencyScanTests(unittest.SynchronousTestCase):
    """The scan itself finds other tones (so the check above can fail)."""

    def test_scan(self) -> None:
        """440 Hz, 1003 Hz and 1633 Hz tones are found as such."""
        for frequency in (440, 1003, 1633):
            samples = list(to_samples(tone_pcm(frequency, 1000)))
            self.assertEqual(dominant_frequency(samples), frequency)
