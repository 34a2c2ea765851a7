"""Conference rooms: N parties mixed so that each hears the others.

A L{Room} is a L{Mixer} with a clock.  Each participant is a L{Member}
that sits between the room and the participant's RTP session: the
session's C{on_audio} hands each received 20 ms frame to
L{Member.received} (a short inbox), and the session's C{source} takes the
next frame to send from L{Member.next_frame} (a short outbox).  Once per
20 ms the room's one timer (on an absolute grid, like the RTP sessions'
pacing) takes one frame from every inbox, mixes, and puts into every
outbox the mix minus that member's own audio.  The mixing is thus one
shared tick per room whatever the number of members; the members' RTP
sessions keep their own 20 ms pacing (the sender's clock), and the
inboxes and outboxes (L{QUEUE_DEPTH} frames at most, the oldest dropped)
absorb the phase between the two clocks, adding about one frame (20 ms)
per queue in steady state.

Guarantees, each covered by the tests:

  - B{No echo}: a member's own audio is subtracted from the total before
    the 16-bit clamp (L{Mixer.mix}), so nobody hears itself, even when
    the total overflows.
  - B{No wraparound}: every mixed sample is clamped to -32768..32767, so
    loud rooms distort (clip) rather than wrap to the opposite sign.
  - B{Silence}: a frame below L{NOISE_FLOOR} is not mixed, so a room
    costs what its speaking members cost.
  - B{Mute}: a muted member (listen-only) hears the room; its audio is
    dropped on arrival and never reaches the mix.
  - B{Full rooms}: a join is refused with L{RoomFull} when the room holds
    its limit already; the limit is the room's own (set by the join that
    created it) or the joining party's, whichever is smaller.
  - B{Announcements} (optional per member): when a member that asked for
    them joins or leaves, everybody in the room hears a short tone
    (L{JOIN_TONE}: low then high; L{LEAVE_TONE}: high then low), mixed in
    as a speak-only party.
  - B{Empty rooms} are destroyed: the last member leaving stops the timer
    and removes the room from its L{Conferences}.

The module knows nothing of SIP or of IVR flows; the media server's
calls (L{media.server.ua_session.MediaCall}) join rooms through it.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from media.server.mixer import Mixer
from media.server.pcm import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, RATE, SILENCE_FRAME, to_samples

__all__ = [
    "JOIN_TONE",
    "LEAVE_TONE",
    "MAX_CATCH_UP",
    "NOISE_FLOOR",
    "QUEUE_DEPTH",
    "ROOM_NAME",
    "BadRoomName",
    "ConferenceError",
    "Conferences",
    "Member",
    "Room",
    "RoomCounters",
    "RoomFull",
    "tone_frames",
]

#: What a room name may be (the C{<room>} of an ad-hoc C{conf-<room>} URI).
ROOM_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}\Z")
#: Frames a member's inbox and outbox hold at most (the oldest is dropped).
QUEUE_DEPTH = 3
#: Ticks mixed at once after the reactor was late; older ones are skipped.
MAX_CATCH_UP = 5
#: Seconds per tick.
PTIME = FRAME_MS / 1000
#: Scheduled this early, so a clock made of float steps never misses a tick.
_EARLY = 0.0001
#: Frames whose samples all lie within +-this (about -54 dBFS) are not
#: mixed: a party that is silent but for line noise costs nothing.
NOISE_FLOOR = 64
#: Peak amplitude of the announcement tones (about -12 dBFS).
TONE_AMPLITUDE = 8000

log = Logger()


def tone_frames(*parts: tuple[float, int], amplitude: int = TONE_AMPLITUDE) -> tuple[bytes, ...]:
    """20 ms frames of sine tones played one after the other.

    @param parts: C{(frequency in Hz, duration in ms)} each; a frequency
        of 0 is silence.  Each part is rounded up to whole frames.
    @param amplitude: the peak sample value.
    @return: the frames (320 bytes each).
    """
    frames: list[bytes] = []
    for frequency, ms in parts:
        count = max(1, math.ceil(ms / FRAME_MS))
        total = count * FRAME_SAMPLES
        step = 2 * math.pi * frequency / RATE
        samples = [round(amplitude * math.sin(step * i)) if frequency else 0
                   for i in range(total)]
        for n in range(count):
            chunk = samples[n * FRAME_SAMPLES:(n + 1) * FRAME_SAMPLES]
            frames.append(b"".join(s.to_bytes(2, "little", signed=True) for s in chunk))
    return tuple(frames)


#: Heard by the room when a member joins: 600 Hz then 900 Hz, 100 ms each.
JOIN_TONE = tone_frames((600, 100), (900, 100))
#: Heard by the room when a member leaves: 900 Hz then 600 Hz.
LEAVE_TONE = tone_frames((900, 100), (600, 100))

#: The mixer key of the announcements (a speak-only party).
_ANNOUNCER = object()


class ConferenceError(Exception):
    """A conference operation that cannot be done."""


class BadRoomName(ConferenceError, ValueError):
    """A room name that L{ROOM_NAME} does not match."""

    def __init__(self, name: str) -> None:
        """@param name: the refused name."""
        super().__init__(f"{name!r} is not a room name (1-64 of letters, digits, _ . + -)")
        self.name = name


class RoomFull(ConferenceError):
    """The room holds its maximum number of participants already.

    @ivar room: the room's name.
    @ivar limit: the limit that refused the join.
    """

    def __init__(self, room: str, limit: int) -> None:
        """@param room: the room's name. @param limit: its limit."""
        super().__init__(f"conference room {room!r} is full ({limit} participants)")
        self.room = room
        self.limit = limit


@dataclass
class RoomCounters:
    """What a room did (for logs and tests).

    @ivar ticks: mixes done.
    @ivar skipped: ticks skipped because the reactor was very late.
    @ivar dropped_in: received frames dropped from a full inbox.
    @ivar dropped_out: mixed frames dropped from a full outbox (the
        member's session did not take them).
    @ivar bad_frames: received frames that were not 320 bytes (dropped).
    """

    ticks: int = 0
    skipped: int = 0
    dropped_in: int = 0
    dropped_out: int = 0
    bad_frames: int = 0


class Member:
    """One participant of a L{Room}: the inbox and outbox of its audio.

    Give L{received} to the participant's RTP session as C{on_audio} and
    L{next_frame} as its C{source} (or call them from those callbacks).

    @ivar key: the participant's key in the room.
    @ivar room: the room (until it left).
    @ivar announce: whether its joining and leaving are announced.
    @ivar left: whether it left the room.
    """

    def __init__(self, room: Room, key: Hashable, *, muted: bool, announce: bool) -> None:
        """Use L{Room.join}."""
        self.room = room
        self.key = key
        self.announce = announce
        self.left = False
        self._muted = muted
        self._inbox: deque[bytes] = deque()
        self._outbox: deque[bytes | None] = deque()

    @property
    def muted(self) -> bool:
        """Whether the member is listen-only (its audio is not mixed)."""
        return self._muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self._muted = bool(value)
        if self._muted:
            self._inbox.clear()
        if not self.left:
            self.room.mixer.participant(self.key).speaks = not self._muted

    def received(self, frame: bytes) -> None:
        """A 20 ms frame the participant sent (the RTP session's
        C{on_audio}); dropped when muted, after leaving, or not 320
        bytes."""
        if self.left or self._muted:
            return
        if len(frame) != FRAME_BYTES:
            self.room.counters.bad_frames += 1
            return
        if len(self._inbox) >= QUEUE_DEPTH:
            self._inbox.popleft()
            self.room.counters.dropped_in += 1
        self._inbox.append(frame)

    def next_frame(self) -> bytes | None:
        """The next frame to send the participant (the RTP session's
        C{source}): the room minus itself, or C{None} (silence)."""
        return self._outbox.popleft() if self._outbox else None

    def leave(self) -> None:
        """Leave the room (idempotent)."""
        if not self.left:
            self.room.leave(self)

    # -- for the room -----------------------------------------------------------------

    def _take(self) -> bytes | None:
        """The next frame to mix; C{None} when there is none or it is
        below L{NOISE_FLOOR} (line noise is not worth mixing)."""
        if not self._inbox:
            return None
        frame = self._inbox.popleft()
        samples = to_samples(frame)
        if max(samples) <= NOISE_FLOOR and min(samples) >= -NOISE_FLOOR:
            return None
        return frame

    def _give(self, frame: bytes) -> None:
        if len(self._outbox) >= QUEUE_DEPTH:
            self._outbox.popleft()
            self.room.counters.dropped_out += 1
        self._outbox.append(None if frame is SILENCE_FRAME else frame)

    def _gone(self) -> None:
        self.left = True
        self._inbox.clear()
        self._outbox.clear()


class Room:
    """A named conference: members mixed on one 20 ms timer.

    @ivar name: the room's name.
    @ivar limit: the most members it admits (C{0}: no limit).
    @ivar mixer: the L{Mixer} (members, plus a speak-only announcer).
    @ivar counters: the L{RoomCounters}.
    @ivar closed: whether the room was destroyed (it emptied).
    """

    def __init__(
        self,
        name: str,
        clock: IReactorTime,
        *,
        limit: int = 0,
        on_empty: Callable[[Room], object] | None = None,
    ) -> None:
        """Open a room; its timer starts with the first member.

        @param name: a name matching L{ROOM_NAME}.
        @param clock: the reactor's clock (the room's timer).
        @param limit: the most members (C{0}: no limit).
        @param on_empty: called once when the last member left and the
            room closed.
        @raise BadRoomName: for a bad name.
        @raise ValueError: for a negative limit.
        """
        if not ROOM_NAME.match(name):
            raise BadRoomName(name)
        if limit < 0:
            raise ValueError(f"a room's limit is 0 (none) or more, not {limit}")
        self.name = name
        self.limit = limit
        self.mixer = Mixer()
        self.mixer.join(_ANNOUNCER, hears=False)
        self.counters = RoomCounters()
        self.closed = False
        self._clock = clock
        self._on_empty = on_empty
        self._members: dict[Hashable, Member] = {}
        self._announcement: deque[bytes] = deque()
        self._started: float | None = None
        self._due = 0
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        """The number of members."""
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        """The members, in the order they joined."""
        return iter(list(self._members.values()))

    def join(
        self,
        key: Hashable,
        *,
        muted: bool = False,
        limit: int = 0,
        announce: bool = False,
    ) -> Member:
        """Add a member.

        @param key: the member's key (unique in the room).
        @param muted: join listen-only.
        @param limit: the joining party's own limit (C{0}: none); the
            smaller of it and the room's applies.
        @param announce: the room hears L{JOIN_TONE} now and
            L{LEAVE_TONE} when this member leaves.
        @raise RoomFull: when the room holds the limit already.
        @raise ConferenceError: when the room was closed.
        @raise ValueError: when C{key} is a member already.
        """
        if self.closed:
            raise ConferenceError(f"conference room {self.name!r} is closed")
        limits = [n for n in (self.limit, limit) if n > 0]
        if limits and len(self._members) >= min(limits):
            raise RoomFull(self.name, min(limits))
        if key in self._members:
            raise ValueError(f"{key!r} is in room {self.name!r} already")
        self.mixer.join(key, speaks=not muted)
        member = Member(self, key, muted=muted, announce=announce)
        self._members[key] = member
        if announce:
            self.announce(JOIN_TONE)
        if self._timer is None:
            self._started = self._clock.seconds()
            self._due = 0
            self._schedule(self._started)
        return member

    def leave(self, member: Member) -> None:
        """Remove a member; the last one leaving closes the room."""
        if self._members.get(member.key) is not member:
            return
        del self._members[member.key]
        self.mixer.leave(member.key)
        member._gone()
        if not self._members:
            self.close()
        elif member.announce:
            self.announce(LEAVE_TONE)

    def announce(self, frames: tuple[bytes, ...]) -> None:
        """Play C{frames} to every member (after what is being announced)."""
        self._announcement.extend(frames)

    def close(self) -> None:
        """Destroy the room: every member leaves, the timer stops,
        C{on_empty} is told (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for member in list(self._members.values()):
            member._gone()
        self._members.clear()
        self._announcement.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._on_empty is not None:
            self._on_empty(self)

    def tick(self) -> None:
        """Mix one 20 ms frame: one frame from every inbox, the mix minus
        each member's own audio into every outbox."""
        self.counters.ticks += 1
        frames: dict[Hashable, bytes | None] = {
            key: member._take() for key, member in self._members.items()}
        if self._announcement:
            frames[_ANNOUNCER] = self._announcement.popleft()
        mixed = self.mixer.mix(frames)
        for key, frame in mixed.items():
            self._members[key]._give(frame)

    # -- the timer --------------------------------------------------------------------

    def _schedule(self, now: float) -> None:
        started = self._started
        assert started is not None
        delay = started + (self._due + 1) * PTIME - _EARLY - now
        self._timer = self._clock.callLater(max(delay, 0.0), self._pace)

    def _pace(self) -> None:
        """Run the ticks due since the room's start (absolute grid)."""
        self._timer = None
        started = self._started
        assert started is not None
        now = self._clock.seconds()
        due = int((now - started + 2 * _EARLY) / PTIME)
        count = due - self._due
        self._due = due
        skipped = max(count - MAX_CATCH_UP, 0)
        self.counters.skipped += skipped
        try:
            for _ in range(count - skipped):
                if self.closed:
                    return
                self.tick()
        except Exception:
            log.failure("conference room {room}: mixing failed", room=self.name)
        finally:
            if not self.closed:
                self._schedule(now)


class Conferences:
    """The rooms of one media server, by name, created on first join and
    destroyed when they empty.

    @ivar rooms: the open rooms by name.
    @ivar joins: joins accepted; C{refused}: joins refused (full).
    """

    def __init__(self, clock: IReactorTime) -> None:
        """@param clock: the reactor's clock (the rooms' timers)."""
        self._clock = clock
        self.rooms: dict[str, Room] = {}
        self.joins = 0
        self.refused = 0

    def __len__(self) -> int:
        """The number of open rooms."""
        return len(self.rooms)

    def room(self, name: str) -> Room | None:
        """The open room of that name, if any."""
        return self.rooms.get(name)

    def join(
        self,
        name: str,
        key: Hashable,
        *,
        muted: bool = False,
        max_participants: int = 0,
        announce: bool = False,
    ) -> Member:
        """Join room C{name}, creating it (with C{max_participants} as the
        room's limit) when it does not exist.

        @raise BadRoomName: for a bad name.
        @raise RoomFull: when the room is full (see L{Room.join}).
        """
        room = self.rooms.get(name)
        created = room is None
        if room is None:
            room = Room(name, self._clock, limit=max_participants, on_empty=self._emptied)
        try:
            member = room.join(key, muted=muted, limit=max_participants, announce=announce)
        except RoomFull:
            self.refused += 1
            raise
        if created:
            self.rooms[name] = room
        self.joins += 1
        return member

    def close(self) -> None:
        """Destroy every room (the media server stops)."""
        for room in list(self.rooms.values()):
            room.close()

    def _emptied(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
