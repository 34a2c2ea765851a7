"""Tests for L{media.server.conference}: rooms mixing their members.

Each member sends a pure tone of its own; what each receives is measured
with the Goertzel reference (L{goertzel_power}) at every member's
frequency.  Time is a L{Clock}; nothing touches a socket.
"""

from __future__ import annotations

import math
import struct

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.conference import (
    JOIN_TONE,
    LEAVE_TONE,
    MAX_CATCH_UP,
    NOISE_FLOOR,
    QUEUE_DEPTH,
    BadRoomName,
    ConferenceError,
    Conferences,
    Member,
    Room,
    RoomFull,
    tone_frames,
)
from media.server.goertzel import goertzel_power
from media.server.pcm import FRAME_BYTES, RATE, SILENCE_FRAME

#: Each member's tone (multiples of 50 Hz: whole cycles in a 20 ms window).
TONES = {"a": 400.0, "b": 1000.0, "c": 1700.0}


class Sine:
    """A continuous sine, 20 ms at a time."""

    def __init__(self, frequency: float, amplitude: float = 6000.0) -> None:
        self.frequency = frequency
        self.amplitude = amplitude
        self.index = 0

    def frame(self) -> bytes:
        """The next 160 samples."""
        step = 2 * math.pi * self.frequency / RATE
        samples = [round(self.amplitude * math.sin(step * (self.index + i))) for i in range(160)]
        self.index += 160
        return struct.pack("<160h", *samples)


def samples(frames: list[bytes | None]) -> list[int]:
    """The samples of frames (C{None} is a silent frame)."""
    out: list[int] = []
    for frame in frames:
        data = SILENCE_FRAME if frame is None else frame
        out.extend(struct.unpack("<160h", data))
    return out


def levels(heard: list[int]) -> dict[str, float]:
    """Goertzel power of each member's tone in C{heard}."""
    return {key: goertzel_power(heard, frequency) for key, frequency in TONES.items()}


def constant(value: int) -> bytes:
    """A frame of one sample value."""
    return struct.pack("<160h", *[value] * 160)


class RoomCase(SynchronousTestCase):
    """A clock and the rooms on it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.conferences = Conferences(self.clock)

    def run_ticks(self, members: dict[str, Member], count: int,
                  sources: dict[str, Sine] | None = None) -> dict[str, list[bytes | None]]:
        """C{count} ticks: each member with a source sends a frame, the
        room mixes, each member takes what it is sent."""
        heard: dict[str, list[bytes | None]] = {key: [] for key in members}
        for _ in range(count):
            for key, sine in (sources or {}).items():
                members[key].received(sine.frame())
            self.clock.advance(0.02)
            for key, member in members.items():
                heard[key].append(member.next_frame())
        return heard

    def three(self, room: str = "100", **options: object) -> dict[str, Member]:
        """Members a, b and c in one room."""
        return {key: self.conferences.join(room, key, **options)  # type: ignore[arg-type]
                for key in TONES}


class MixingTests(RoomCase):
    """Everybody hears everybody else, never itself."""

    def test_three_tones(self) -> None:
        """Each member's mix holds the two other tones and not its own."""
        members = self.three()
        sources = {key: Sine(frequency) for key, frequency in TONES.items()}
        heard = self.run_ticks(members, 10, sources)
        for key, frames in heard.items():
            self.assertNotIn(None, frames[1:], key)
            power = levels(samples(frames[1:]))
            others = [power[k] for k in TONES if k != key]
            self.assertGreater(min(others), 1e9, (key, power))
            self.assertLess(power[key], min(others) * 1e-6, (key, power))

    def test_one_timer_per_room(self) -> None:
        """A room mixes on one timer whatever its size; two rooms, two
        timers; an emptied room is destroyed and its timer stopped."""
        members = self.three("1")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        other = self.conferences.join("2", "z")
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.assertEqual(sorted(self.conferences.rooms), ["1", "2"])
        for member in members.values():
            member.leave()
        other.leave()
        self.assertEqual((len(self.conferences), self.clock.getDelayedCalls()), (0, []))
        room = members["a"].room
        self.assertTrue(room.closed)
        self.assertRaises(ConferenceError, room.join, "late")

    def test_ticks_on_the_grid(self) -> None:
        """One mix per 20 ms; after a stall the missed ticks are mixed at
        once, up to MAX_CATCH_UP, the rest skipped and counted."""
        member = self.conferences.join("1", "a")
        room = member.room
        for _ in range(50):
            self.clock.advance(0.02)
        self.assertEqual(room.counters.ticks, 50)
        self.clock.advance(0.06)
        self.assertEqual(room.counters.ticks, 53)
        self.clock.advance(1.0)
        self.assertEqual((room.counters.ticks, room.counters.skipped),
                         (53 + MAX_CATCH_UP, 50 - MAX_CATCH_UP))

    def test_silence_costs_no_mix(self) -> None:
        """Nobody speaking: everybody is sent silence (C{None}); line noise
        within the noise floor counts as silence, just above it does not."""
        heard = self.run_ticks(self.three(), 3)
        self.assertEqual(heard, {key: [None, None, None] for key in TONES})
        members = self.three("noise")
        members["a"].received(struct.pack("<160h", *([NOISE_FLOOR, -NOISE_FLOOR] * 80)))
        self.clock.advance(0.02)
        self.assertEqual([members[k].next_frame() for k in TONES], [None, None, None])
        members["a"].received(constant(NOISE_FLOOR + 1))
        self.clock.advance(0.02)
        self.assertEqual([members[k].next_frame() for k in TONES],
                         [None, constant(NOISE_FLOOR + 1), constant(NOISE_FLOOR + 1)])

    def test_queues_are_bounded(self) -> None:
        """A member whose session does not take its frames, or sends too
        many, holds QUEUE_DEPTH frames at most: the oldest are dropped."""
        members = self.three()
        for _ in range(10):
            members["a"].received(constant(500))
        for _ in range(10):
            members["b"].received(constant(700))
            self.clock.advance(0.02)
        room = members["a"].room
        self.assertEqual(room.counters.dropped_in, 10 - QUEUE_DEPTH)
        self.assertGreater(room.counters.dropped_out, 0)
        queued = []
        while (frame := members["c"].next_frame()) is not None:
            queued.append(frame)
        self.assertEqual(len(queued), QUEUE_DEPTH)
        self.assertEqual(queued[-1], constant(700))

    def test_bad_frames_dropped(self) -> None:
        """A frame that is not 320 bytes never reaches the mixer."""
        members = self.three()
        members["a"].received(b"\x01\x00" * 10)
        self.clock.advance(0.02)
        self.assertEqual(members["b"].next_frame(), None)
        self.assertEqual(members["a"].room.counters.bad_frames, 1)


class ClippingTests(RoomCase):
    """Loud rooms clip; they never wrap around."""

    def test_constant_overflow(self) -> None:
        """Two members at +30000 and one at -30000: the sum is clamped,
        each member's own part removed before the clamp."""
        members = self.three()
        for key, value in (("a", 30000), ("b", 30000), ("c", -30000)):
            members[key].received(constant(value))
        self.clock.advance(0.02)
        self.assertEqual(members["c"].next_frame(), constant(32767))
        self.assertEqual(members["a"].next_frame(), constant(0))
        for key in ("a", "b", "c"):
            members[key].received(constant(-30000))
        self.clock.advance(0.02)
        self.assertEqual(members["a"].next_frame(), constant(-32768))

    def test_loud_tones_keep_their_sign(self) -> None:
        """Three near full-scale tones: every sample heard stays in range
        and has the sign of the true sum (no wraparound)."""
        members = self.three()
        sources = {key: Sine(frequency, 30000) for key, frequency in TONES.items()}
        copies = {key: Sine(frequency, 30000) for key, frequency in TONES.items()}
        heard = self.run_ticks(members, 5, sources)
        sent = {key: samples([copies[key].frame() for _ in range(5)]) for key in TONES}
        for key, frames in heard.items():
            got = samples(frames)
            others = [k for k in TONES if k != key]
            for n, value in enumerate(got[:160 * 4]):
                true = sum(sent[k][n] for k in others)
                self.assertEqual(value, max(-32768, min(32767, true)), (key, n))


class MembershipTests(RoomCase):
    """Mute, leave, full rooms, names, announcements."""

    def test_mute_is_listen_only(self) -> None:
        """A muted member hears the others; nobody hears it; unmuted it is
        heard again."""
        members = self.three()
        members["b"].muted = True
        sources = {key: Sine(frequency) for key, frequency in TONES.items()}
        heard = self.run_ticks(members, 8, sources)
        for key in ("a", "c"):
            self.assertLess(levels(samples(heard[key][1:]))["b"], 1e3, key)
        power = levels(samples(heard["b"][1:]))
        self.assertGreater(min(power["a"], power["c"]), 1e9)
        members["b"].muted = False
        heard = self.run_ticks(members, 8, sources)
        self.assertGreater(levels(samples(heard["a"][2:]))["b"], 1e9)

    def test_muted_join(self) -> None:
        """Joining muted is the same as muting after the join."""
        members = self.three(muted=True)
        sources = {key: Sine(frequency) for key, frequency in TONES.items()}
        heard = self.run_ticks(members, 4, sources)
        self.assertEqual(heard["a"], [None] * 4)
        self.assertTrue(members["a"].muted)

    def test_leave(self) -> None:
        """After B leaves, A hears C alone; B gets nothing more and its
        late frames are ignored; leaving twice is harmless."""
        members = self.three()
        members["b"].leave()
        members["b"].leave()
        self.assertTrue(members["b"].left)
        members["b"].received(constant(1000))
        sources = {key: Sine(TONES[key]) for key in ("a", "c")}
        heard = self.run_ticks({k: members[k] for k in ("a", "c")}, 6, sources)
        power = levels(samples(heard["a"][1:]))
        self.assertGreater(power["c"], 1e9)
        self.assertLess(power["b"], 1e3)
        self.assertIsNone(members["b"].next_frame())
        self.assertEqual(len(members["a"].room), 2)

    def test_full_room(self) -> None:
        """The room's limit (set by the join that created it) refuses one
        more member with a clear error; a joiner's smaller limit applies
        too; a place freed can be taken."""
        self.conferences.join("7", "a", max_participants=2)
        self.conferences.join("7", "b")
        with self.assertRaises(RoomFull) as caught:
            self.conferences.join("7", "c")
        self.assertEqual(str(caught.exception), "conference room '7' is full (2 participants)")
        self.assertEqual((caught.exception.room, caught.exception.limit), ("7", 2))
        self.assertEqual((self.conferences.joins, self.conferences.refused), (2, 1))
        room = self.conferences.room("7")
        assert room is not None
        self.assertEqual(len(room), 2)
        open_room = self.conferences.join("8", "x")
        self.conferences.join("8", "y")
        self.assertRaises(RoomFull, self.conferences.join, "8", "z", max_participants=2)
        self.conferences.join("8", "z", max_participants=3)
        self.assertEqual(len(open_room.room), 3)
        next(member for member in room if member.key == "b").leave()
        self.conferences.join("7", "c")

    def test_full_new_room_is_not_kept(self) -> None:
        """A refused join does not leave a room behind."""
        self.assertEqual(self.conferences.room("x"), None)
        self.assertRaises(ValueError, Room, "x", self.clock, limit=-1)

    def test_duplicate_key(self) -> None:
        """A key joins a room once."""
        self.conferences.join("1", "a")
        self.assertRaises(ValueError, self.conferences.join, "1", "a")

    def test_bad_names(self) -> None:
        """Room names are 1-64 of letters, digits, _ . + -."""
        for name in ("", "a b", "x" * 65, "a/b", "é"):
            self.assertRaises(BadRoomName, self.conferences.join, name, "k")
        self.assertEqual(len(self.conferences), 0)
        self.conferences.join("tenant.example.com-1234", "k")

    def test_announcements(self) -> None:
        """A member joining with announce: the room hears the join tone;
        leaving: the leave tone; without announce: nothing."""
        first = self.conferences.join("1", "a")
        heard = self.run_ticks({"a": first}, len(JOIN_TONE) + 2)
        self.assertEqual(heard["a"], [None] * (len(JOIN_TONE) + 2))
        second = self.conferences.join("1", "b", announce=True)
        heard = self.run_ticks({"a": first, "b": second}, len(JOIN_TONE) + 1)
        self.assertEqual(heard["a"][:len(JOIN_TONE)], list(JOIN_TONE))
        self.assertEqual(heard["b"][:len(JOIN_TONE)], list(JOIN_TONE))
        self.assertEqual(heard["a"][-1], None)
        low = samples(list(JOIN_TONE[:5]))
        self.assertGreater(goertzel_power(low, 600), 1e3 * goertzel_power(low, 900))
        second.leave()
        heard = self.run_ticks({"a": first}, len(LEAVE_TONE))
        self.assertEqual(heard["a"], list(LEAVE_TONE))
        high = samples(list(LEAVE_TONE[:5]))
        self.assertGreater(goertzel_power(high, 900), 1e3 * goertzel_power(high, 600))

    def test_tone_frames(self) -> None:
        """Tone parts round up to whole frames; 0 Hz is silence."""
        frames = tone_frames((440, 30), (0, 20))
        self.assertEqual(len(frames), 3)
        self.assertTrue(all(len(frame) == FRAME_BYTES for frame in frames))
        self.assertEqual(frames[2], SILENCE_FRAME)
        self.assertEqual(max(samples(list(frames[:2]))), 8000)

    def test_close_all(self) -> None:
        """Closing the conferences destroys every room and stops its timer."""
        members = self.three("1")
        self.conferences.join("2", "z")
        self.conferences.close()
        self.assertEqual((len(self.conferences), self.clock.getDelayedCalls()), (0, []))
        self.assertTrue(all(member.left for member in members.values()))
