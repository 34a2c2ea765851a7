"""A small adaptive jitter buffer for one received RTP audio stream.

Sans-IO.  The RTP session decodes each packet to linear PCM and L{put}s it
with its RTP timestamp and arrival time; a 20 ms tick L{pull}s exactly one
frame of 160 samples.  Frames are placed by RTP timestamp, so packets of any
size (10, 20 or 30 ms) and in any order fill the timeline; whatever no
packet covers is played as silence (zeros).

The playout point C{P} is the RTP timestamp of the next sample to play.

 - B{Start}: the first packet (and every re-anchoring) sets
   C{P = timestamp - target * 160}, so the packet plays after C{target}
   frames: the buffer then holds C{target} frames of delay.
 - B{Late} packets (ending at or before C{P}) and B{duplicates} (a
   timestamp already buffered) are dropped and counted.
 - B{Loss}: when nothing covers C{P} but later audio is buffered, the gap is
   concealed with silence and C{P} moves on.
 - B{Growth}: when the buffer is empty, C{P} does not move (a silent frame
   is played): a late stream thereby gains one frame of delay per empty
   tick, and a packet arriving a little late still plays.
 - B{Shrink}: when more than C{target + 1} frames stay buffered for
   L{SHRINK_AFTER} ticks in a row, one frame is discarded.
 - B{Re-anchoring}: a marker bit (start of a talkspurt) on an empty buffer,
   or a timestamp further than C{max_delay} frames ahead of C{P} or more
   than L{RESYNC_BEHIND} samples behind it (the sender jumped or
   restarted), re-anchors C{P} with the current target.

The target delay follows the interarrival jitter C{J} (RFC 3550 6.4.1,
measured here from the arrival times):
C{target = clamp(1 + ceil(3 * J / 160), min_delay, max_delay)} frames.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FRAME_BYTES",
    "FRAME_SAMPLES",
    "RESYNC_BEHIND",
    "SHRINK_AFTER",
    "JitterBuffer",
    "JitterCounters",
]

#: Samples in one 20 ms frame at 8 kHz, and its bytes of 16-bit PCM.
FRAME_SAMPLES = 160
FRAME_BYTES = 2 * FRAME_SAMPLES
#: Ticks the buffer must stay too full before one frame is discarded.
SHRINK_AFTER = 50
#: A packet this many samples (1 s) behind the playout point means the
#: sender restarted its timestamps: re-anchor instead of dropping it.
RESYNC_BEHIND = 8000
_RATE = 8000
_TS_MOD = 1 << 32
_TS_HALF = 1 << 31
_SILENCE = bytes(FRAME_BYTES)


def _delta(a: int, b: int) -> int:
    """C{a - b} between two RTP timestamps, across the 32-bit wrap."""
    return ((a - b + _TS_HALF) % _TS_MOD) - _TS_HALF


@dataclass(slots=True)
class JitterCounters:
    """What the buffer did since it was made.

    @ivar accepted: packets buffered.
    @ivar late: packets dropped because their time had passed.
    @ivar duplicates: packets dropped because their timestamp was buffered.
    @ivar played: frames delivered holding received audio.
    @ivar silent: frames delivered as silence (start-up delay, loss,
        empty buffer).
    @ivar discarded: frames discarded to shrink the delay.
    @ivar resyncs: re-anchorings after the first start.
    """

    accepted: int = 0
    late: int = 0
    duplicates: int = 0
    played: int = 0
    silent: int = 0
    discarded: int = 0
    resyncs: int = 0


class JitterBuffer:
    """Reorders one stream's packets and plays them out a frame per tick.

    @ivar min_delay: the smallest target delay, in frames.
    @ivar max_delay: the largest target delay, in frames; also how far
        ahead of the playout point a packet may be before re-anchoring.
    @ivar target: the current target delay, in frames.
    @ivar jitter: the interarrival jitter estimate, in samples.
    @ivar counters: the L{JitterCounters}.
    """

    def __init__(self, *, min_delay: int = 2, max_delay: int = 10, initial_delay: int = 3):
        """
        @param min_delay: smallest target delay in 20 ms frames (>= 1).
        @param max_delay: largest target delay in frames (>= min_delay).
        @param initial_delay: the target before any jitter is measured.
        @raise ValueError: when the delays are out of order.
        """
        if not 1 <= min_delay <= initial_delay <= max_delay:
            raise ValueError(
                "jitter buffer delays must satisfy 1 <= min_delay <= initial_delay <= "
                f"max_delay, not {min_delay}, {initial_delay}, {max_delay}"
            )
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.target = initial_delay
        self.jitter = 0.0
        self.counters = JitterCounters()
        self._packets: dict[int, bytes] = {}
        self._position: int | None = None
        self._transit: float | None = None
        self._too_full = 0
        #: the RTP timestamp just after the last buffered sample (kept as
        #: packets come and go, so that L{depth} is not a scan per tick)
        self._end = 0

    @property
    def started(self) -> bool:
        """Whether frames are being played (a packet has arrived)."""
        return self._position is not None

    @property
    def position(self) -> int | None:
        """The RTP timestamp of the next sample to play, or C{None}."""
        return self._position

    @property
    def depth(self) -> int:
        """Samples buffered at or after the playout point."""
        position = self._position
        if position is None or not self._packets:
            return 0
        return max(_delta(self._end, position), 0)

    def reset(self) -> None:
        """Forget every packet and the playout point (a new source): the
        next packet starts the stream again."""
        self._packets.clear()
        self._position = None
        self._transit = None
        self._too_full = 0

    def put(self, timestamp: int, pcm: bytes, arrival: float, *, marker: bool = False) -> bool:
        """A decoded packet arrived.

        @param timestamp: its RTP timestamp (8 kHz).
        @param pcm: its audio, 16-bit little-endian linear PCM.
        @param arrival: when it arrived, in seconds.
        @param marker: its marker bit (start of a talkspurt).
        @return: C{True} when buffered, C{False} when dropped as late or
            duplicate.
        """
        timestamp %= _TS_MOD
        samples = len(pcm) // 2
        position = self._position
        if position is None:
            self._anchor(timestamp, arrival)
        else:
            offset = _delta(timestamp, position)
            if (
                offset > self.max_delay * FRAME_SAMPLES
                or offset < -RESYNC_BEHIND
                or (marker and not self._packets)
            ):
                self._anchor(timestamp, arrival)
                self.counters.resyncs += 1
            else:
                self._measure(timestamp, arrival)
                if offset + samples <= 0:
                    self.counters.late += 1
                    return False
        packets = self._packets
        if timestamp in packets:
            self.counters.duplicates += 1
            return False
        end = (timestamp + samples) % _TS_MOD
        if not packets or _delta(end, self._end) > 0:
            self._end = end
        packets[timestamp] = bytes(pcm)
        self.counters.accepted += 1
        return True

    def pull(self) -> bytes | None:
        """The next 20 ms frame (call once per tick).

        @return: 320 bytes of linear PCM (silence where nothing was
            received), or C{None} before the first packet.
        """
        position = self._position
        if position is None:
            return None
        packets = self._packets
        if not packets:
            self.counters.silent += 1
            return _SILENCE
        self._shrink(position)
        position = self._position
        assert position is not None
        exact = packets.get(position)
        if exact is not None and len(exact) == FRAME_BYTES:
            del packets[position]
            self._position = (position + FRAME_SAMPLES) % _TS_MOD
            self.counters.played += 1
            return exact
        frame = bytearray(FRAME_BYTES)
        covered = False
        for timestamp in list(packets):
            pcm = packets[timestamp]
            offset = _delta(timestamp, position)
            end = offset + len(pcm) // 2
            if offset >= FRAME_SAMPLES:
                continue
            if end > 0:
                start = max(offset, 0)
                stop = min(end, FRAME_SAMPLES)
                frame[2 * start : 2 * stop] = pcm[2 * (start - offset) : 2 * (stop - offset)]
                covered = True
            if end <= FRAME_SAMPLES:
                del packets[timestamp]
        self._position = (position + FRAME_SAMPLES) % _TS_MOD
        if covered:
            self.counters.played += 1
            return bytes(frame)
        self.counters.silent += 1
        return _SILENCE

    def _anchor(self, timestamp: int, arrival: float) -> None:
        """Play the packet at C{timestamp} after C{target} frames; its
        transit time starts the jitter measurement afresh."""
        self._transit = arrival * _RATE - timestamp
        self._position = (timestamp - self.target * FRAME_SAMPLES) % _TS_MOD
        self._too_full = 0
        position = self._position
        stale = [ts for ts in self._packets if _delta(ts, position) < 0]
        for ts in stale:
            del self._packets[ts]
        if stale and self._packets:
            self._end = max(((ts + len(pcm) // 2) % _TS_MOD for ts, pcm in self._packets.items()),
                            key=lambda end: _delta(end, position))

    def _shrink(self, position: int) -> None:
        """Discard one frame when the buffer has stayed too full."""
        if self.depth > (self.target + 1) * FRAME_SAMPLES:
            self._too_full += 1
            if self._too_full >= SHRINK_AFTER:
                self._too_full = 0
                self.counters.discarded += 1
                new_position = (position + FRAME_SAMPLES) % _TS_MOD
                self._position = new_position
                gone = [
                    ts
                    for ts, pcm in self._packets.items()
                    if _delta(ts, new_position) + len(pcm) // 2 <= 0
                ]
                for ts in gone:
                    del self._packets[ts]
        else:
            self._too_full = 0

    def _measure(self, timestamp: int, arrival: float) -> None:
        """Update the jitter estimate (RFC 3550 A.8) and the target."""
        transit = arrival * _RATE - timestamp
        previous = self._transit
        self._transit = transit
        if previous is None:
            return
        d = abs(_delta(round(transit - previous) % _TS_MOD, 0))
        self.jitter += (d - self.jitter) / 16.0
        wanted = 1 + -(-int(3 * self.jitter) // FRAME_SAMPLES)
        self.target = min(max(wanted, self.min_delay), self.max_delay)
