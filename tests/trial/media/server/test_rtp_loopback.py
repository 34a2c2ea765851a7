"""Two RTP sessions talking over real UDP sockets on 127.0.0.1.

Bounded: a dozen frames each way, a 10 s timeout; loopback only.
"""

from __future__ import annotations

import struct

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from media.ports import PortPool
from media.server.g711 import PCMA
from media.server.rtp_session import RtpSession

HOST = "127.0.0.1"
FRAMES = 12


def tone(n: int) -> bytes:
    """A recognisable 20 ms frame."""
    return struct.pack("<160h", *((n * 53 + i * 97) % 16000 - 8000 for i in range(160)))


class Listener:
    """Collects non-silent frames and fires once it has C{FRAMES}."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.done: Deferred[None] = Deferred()

    def __call__(self, frame: bytes) -> None:
        """A frame arrived from the jitter buffer."""
        if frame != bytes(320):
            self.frames.append(frame)
            if len(self.frames) == FRAMES:
                self.done.callback(None)


class LoopbackTests(TestCase):
    """Real sockets and the global reactor."""

    timeout = 10

    @inlineCallbacks
    def test_audio_both_ways(self):  # type: ignore[no-untyped-def]
        """Each side hears the other's frames, in order, through G.711
        (a frame lost to a stalled machine is tolerated, a wrong or
        reordered one is not); latching keeps both on their addresses."""
        pool = PortPool(44000, 44399)
        frames = [tone(n) for n in range(FRAMES * 3)]
        feeds = [iter(frames), iter(frames)]
        listeners = [Listener(), Listener()]
        sessions = [
            RtpSession(
                reactor,
                PCMA,
                interface=HOST,
                source=lambda feed=feed: next(feed, None),
                on_audio=listener,
            )
            for feed, listener in zip(feeds, listeners, strict=True)
        ]
        ports = [pool.acquire(session.listen)[0] for session in sessions]
        for session in sessions:
            self.addCleanup(session.stop)
        a, b = sessions
        a.update(remote=(HOST, ports[1]), direction="sendrecv", codec=PCMA)
        b.update(remote=(HOST, ports[0]), direction="sendrecv", codec=PCMA)
        a.start()
        b.start()
        yield listeners[0].done
        yield listeners[1].done
        index = {PCMA.decode(PCMA.encode(frame)): n for n, frame in enumerate(frames)}
        for listener in listeners:
            heard = [index[frame] for frame in listener.frames]
            self.assertEqual(heard, sorted(set(heard)))
            self.assertLess(heard[-1], FRAMES + 3)
        self.assertEqual(a.destination, (HOST, ports[1]))
        self.assertEqual(b.counters.malformed + b.counters.foreign, 0)
