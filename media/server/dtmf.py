"""DTMF digits as events, and RFC 4733 telephone-events on RTP.

A digit reaches the media server three ways: as RFC 4733 telephone-event
RTP packets, in a SIP INFO body (L{media.server.dtmf_info}) or as tones in
the audio (L{media.server.goertzel}).  Each way ends in the same value, a
L{DtmfEvent}: one per key press, with its duration and where it came from.

L{TelephoneEventReceiver} turns the packets of one RTP stream into events.
A key press is a run of packets sharing one RTP timestamp: a start packet
(marker bit), updates with a growing duration and an end packet (E bit)
sent three times.  The receiver emits the event once, when the first end
packet arrives; later copies of the end, and late updates, are recognised
by their timestamp and dropped.  A new timestamp starts a new event (and
closes the previous one if its end was lost); when no packet arrives for
C{end_timeout} seconds on the injected clock, the open event is closed
with the longest duration seen.  Sequence numbers recognise stale packets
(reordered from an earlier event).  Events longer than the 16-bit duration
field (RFC 4733 2.5.1.3 segments) are joined into one.

L{telephone_event_packets} is the sending side: the packets for one digit
of a given duration, with the times to send them.

Digits are the characters C{0-9 * # A-D}, and C{!} for a hook flash
(event code 16).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "DIGITS",
    "FLASH",
    "SOURCE_INBAND",
    "SOURCE_INFO",
    "SOURCE_RFC4733",
    "DtmfError",
    "DtmfEvent",
    "TelephoneEvent",
    "TelephoneEventCounters",
    "TelephoneEventPacket",
    "TelephoneEventReceiver",
    "digit_to_event",
    "event_to_digit",
    "parse_telephone_event",
    "telephone_event_packets",
    "telephone_event_payload",
]

#: The hook-flash "digit" (RFC 4733 event code 16).
FLASH = "!"
#: Every digit, indexed by its RFC 4733 event code (0-16).
DIGITS = "0123456789*#ABCD" + FLASH

#: L{DtmfEvent.source} of a digit received as RFC 4733 telephone-events.
SOURCE_RFC4733 = "rfc4733"
#: L{DtmfEvent.source} of a digit received in a SIP INFO request.
SOURCE_INFO = "info"
#: L{DtmfEvent.source} of a digit detected in the audio.
SOURCE_INBAND = "inband"
_SOURCES = frozenset((SOURCE_RFC4733, SOURCE_INFO, SOURCE_INBAND))

_EVENT_CODES = {digit: code for code, digit in enumerate(DIGITS)}
_PAYLOAD = struct.Struct("!BBH")
_MAX_DURATION = 0xFFFF
_MAX_VOLUME = 63
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
#: The longest key press L{telephone_event_packets} builds (one hour).
MAX_SEND_DURATION_MS = 3_600_000


class DtmfError(ValueError):
    """A digit, event code, duration, volume or payload that is not valid DTMF."""


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One key press.

    @ivar digit: one of L{DIGITS} (C{0-9 * # A-D}, C{!} for a flash).
    @ivar duration_ms: how long the key was held, in milliseconds.
    @ivar source: how it arrived: L{SOURCE_RFC4733}, L{SOURCE_INFO} or
        L{SOURCE_INBAND}.
    """

    digit: str
    duration_ms: int
    source: str

    def __post_init__(self) -> None:
        """Refuse a digit, duration or source outside the definitions."""
        if len(self.digit) != 1 or self.digit not in _EVENT_CODES:
            raise DtmfError(f"not a DTMF digit: {self.digit!r}")
        if not isinstance(self.duration_ms, int) or self.duration_ms < 0:
            raise DtmfError(f"bad DTMF duration: {self.duration_ms!r}")
        if self.source not in _SOURCES:
            raise DtmfError(f"unknown DTMF source: {self.source!r}")


def digit_to_event(digit: str) -> int:
    """The RFC 4733 event code of C{digit} (C{a-d} are taken as C{A-D}).

    @raise DtmfError: for anything but one of L{DIGITS}.
    """
    code = _EVENT_CODES.get(digit.upper()) if len(digit) == 1 else None
    if code is None:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return code


def event_to_digit(code: int) -> str:
    """The digit of RFC 4733 event code C{code} (0-16).

    @raise DtmfError: for codes outside 0-16 (tones and signals that are
        not DTMF).
    """
    if not 0 <= code < len(DIGITS):
        raise DtmfError(f"not a DTMF event code: {code}")
    return DIGITS[code]


class TelephoneEvent(NamedTuple):
    """The fields of one telephone-event payload (RFC 4733 2.3).

    @ivar event: the event code (0-255; 0-16 are DTMF).
    @ivar end: the E bit, set on the final packets of the event.
    @ivar volume: the power level as -dBm0 (0-63).
    @ivar duration: the duration so far, in RTP timestamp units.
    """

    event: int
    end: bool
    volume: int
    duration: int


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Read the first 4-byte event block of a telephone-event payload.

    Further blocks (several events in one packet, RFC 4733 2.5.1.5) are not
    used: DTMF senders put one event in a packet.

    @raise DtmfError: when the payload is shorter than 4 bytes.
    """
    if len(payload) < _PAYLOAD.size:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def telephone_event_payload(
    event: int, duration: int, *, end: bool = False, volume: int = 10
) -> bytes:
    """Build a 4-byte telephone-event payload.

    @param event: the event code (0-255).
    @param duration: timestamp units (0-65535).
    @param end: the E bit.
    @param volume: -dBm0 (0-63).
    @raise DtmfError: for a field out of range.
    """
    if not 0 <= event <= 0xFF:
        raise DtmfError(f"event code out of range: {event}")
    if not 0 <= duration <= _MAX_DURATION:
        raise DtmfError(f"event duration out of range: {duration}")
    if not 0 <= volume <= _MAX_VOLUME:
        raise DtmfError(f"volume out of range (0-63 -dBm0): {volume}")
    return _PAYLOAD.pack(event, (0x80 if end else 0) | volume, duration)


class TelephoneEventPacket(NamedTuple):
    """One telephone-event packet to send.

    @ivar send_at_ms: when to send it, in milliseconds after the key press
        began.
    @ivar timestamp: the RTP timestamp (the same for every packet of the
        press, except the segments of a press longer than 65535 units).
    @ivar marker: the RTP marker bit (set on the first packet only).
    @ivar payload: the 4-byte payload.
    """

    send_at_ms: int
    timestamp: int
    marker: bool
    payload: bytes


def telephone_event_packets(
    digit: str,
    duration_ms: int,
    timestamp: int,
    *,
    volume: int = 10,
    clock_rate: int = 8000,
    interval_ms: int = 50,
    end_packets: int = 3,
) -> list[TelephoneEventPacket]:
    """The packets that carry one key press (RFC 4733 2.5.1).

    The first packet, at time 0, has the marker bit and duration 0; an
    update follows every C{interval_ms} with the duration so far; at
    C{duration_ms} the end packet (E bit, final duration) is sent
    C{end_packets} times, C{interval_ms} apart.  Every packet carries
    C{timestamp}.  A press longer than 65535 timestamp units is sent as
    segments (RFC 4733 2.5.1.3): the last packet of a segment reports
    65535 and the next segment carries the timestamp plus 65535, without
    marker.  The caller numbers the packets in list order with consecutive
    RTP sequence numbers.

    @param digit: one of L{DIGITS}.
    @param duration_ms: the press, 1 ms to one hour.
    @param timestamp: the RTP timestamp of the start of the press.
    @param volume: -dBm0 (0-63).
    @param clock_rate: the telephone-event clock (the C{rate} of its SDP
        format, 8000 unless stated).
    @param interval_ms: the update interval.
    @param end_packets: copies of the end packet (at least 1).
    @raise DtmfError: for a bad digit, duration, volume or interval.
    """
    code = digit_to_event(digit)
    if not 0 < duration_ms <= MAX_SEND_DURATION_MS:
        raise DtmfError(f"key press duration out of range: {duration_ms} ms")
    if not 0 <= volume <= _MAX_VOLUME:
        raise DtmfError(f"volume out of range (0-63 -dBm0): {volume}")
    if interval_ms <= 0 or end_packets < 1 or clock_rate <= 0:
        raise DtmfError("interval, end packets and clock rate must be positive")
    total = duration_ms * clock_rate // 1000
    packets = [TelephoneEventPacket(0, timestamp % _TS_MOD, True, _PAYLOAD.pack(code, volume, 0))]
    segment_start = 0
    elapsed_ms = interval_ms
    while elapsed_ms < duration_ms:
        units = elapsed_ms * clock_rate // 1000
        if units - segment_start >= _MAX_DURATION:
            boundary = segment_start + _MAX_DURATION
            packets.append(
                _update(code, volume, timestamp + segment_start, _MAX_DURATION, elapsed_ms)
            )
            segment_start = boundary
        packets.append(
            _update(code, volume, timestamp + segment_start, units - segment_start, elapsed_ms)
        )
        elapsed_ms += interval_ms
    if total - segment_start > _MAX_DURATION:
        packets.append(_update(code, volume, timestamp + segment_start, _MAX_DURATION, duration_ms))
        segment_start += _MAX_DURATION
    end = _PAYLOAD.pack(code, 0x80 | volume, total - segment_start)
    for copy in range(end_packets):
        at_ms = duration_ms + copy * interval_ms
        packets.append(
            TelephoneEventPacket(at_ms, (timestamp + segment_start) % _TS_MOD, False, end)
        )
    return packets


def _update(code: int, volume: int, timestamp: int, units: int, at_ms: int) -> TelephoneEventPacket:
    """An update packet (no E bit, no marker)."""
    return TelephoneEventPacket(
        at_ms, timestamp % _TS_MOD, False, _PAYLOAD.pack(code, volume, units)
    )


@dataclass
class TelephoneEventCounters:
    """What a L{TelephoneEventReceiver} did with the packets it was given.

    @ivar packets: every packet given.
    @ivar events: events emitted.
    @ivar duplicates: packets of an event already emitted (the repeated end
        packets, late updates).
    @ivar stale: packets older than the current event (reordered).
    @ivar malformed: payloads shorter than 4 bytes.
    @ivar ignored: events that are not DTMF (codes above 16).
    @ivar lost_ends: events closed by the next event's first packet.
    @ivar timeouts: events closed by the timeout.
    """

    packets: int = 0
    events: int = 0
    duplicates: int = 0
    stale: int = 0
    malformed: int = 0
    ignored: int = 0
    lost_ends: int = 0
    timeouts: int = 0


@dataclass
class _OpenEvent:
    """The key press being received.

    @ivar timestamp: its RTP timestamp (of the current segment).
    @ivar code: its event code.
    @ivar units: the longest duration seen in the current segment.
    @ivar earlier: the units of the segments before the current one.
    """

    timestamp: int
    code: int
    units: int
    earlier: int = 0


class TelephoneEventReceiver:
    """Turn one stream's telephone-event packets into L{DtmfEvent}s.

    Feed it with L{packet} for every RTP packet of the telephone-event
    payload type; it calls C{deliver} once per key press.  Call L{close}
    when the stream ends.
    """

    def __init__(
        self,
        clock: IReactorTime,
        deliver: Callable[[DtmfEvent], object],
        *,
        clock_rate: int = 8000,
        end_timeout: float = 0.5,
        remembered: int = 16,
    ) -> None:
        """
        @param clock: the clock that runs the end timeout.
        @param deliver: called with each event.
        @param clock_rate: the telephone-event clock rate (SDP C{rate}).
        @param end_timeout: seconds without a packet after which an event
            whose end packets were all lost is closed.
        @param remembered: how many ended timestamps are kept to recognise
            their late packets.
        """
        self._clock = clock
        self._deliver = deliver
        self._clock_rate = clock_rate
        self._end_timeout = end_timeout
        self._open: _OpenEvent | None = None
        self._timer: IDelayedCall | None = None
        self._ended: deque[int] = deque(maxlen=remembered)
        self._highest_seq: int | None = None
        self._last_timestamp: int | None = None
        self.counters = TelephoneEventCounters()

    def packet(self, payload: bytes, timestamp: int, sequence: int, marker: bool) -> None:
        """Take one telephone-event packet.

        @param payload: the RTP payload.
        @param timestamp: the RTP timestamp.
        @param sequence: the RTP sequence number.
        @param marker: the RTP marker bit.
        """
        counters = self.counters
        counters.packets += 1
        try:
            event = parse_telephone_event(payload)
        except DtmfError:
            counters.malformed += 1
            return
        if event.event >= len(DIGITS):
            counters.ignored += 1
            return
        if timestamp in self._ended:
            counters.duplicates += 1
            return
        current = self._open
        newer = self._newer_sequence(sequence)
        if current is not None and timestamp == current.timestamp:
            pass
        elif not newer:
            counters.stale += 1
            return
        elif current is not None:
            if self._continues(current, event.event, timestamp):
                self._ended.append(current.timestamp)
                current.earlier += (timestamp - current.timestamp) % _TS_MOD
                current.timestamp = timestamp
                current.units = 0
                self._last_timestamp = timestamp
            elif marker or _ts_after(timestamp, current.timestamp):
                counters.lost_ends += 1
                self._finish()
                current = None
            else:
                counters.stale += 1
                return
        elif not (
            marker or self._last_timestamp is None or _ts_after(timestamp, self._last_timestamp)
        ):
            counters.stale += 1
            return
        if current is None:
            current = self._open = _OpenEvent(timestamp, event.event, 0)
            self._last_timestamp = timestamp
        current.units = max(current.units, event.duration)
        if event.end:
            self._finish()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._end_timeout, self._expire)
        else:
            self._timer.reset(self._end_timeout)

    def close(self) -> None:
        """The stream ended: emit the open event, if any, and stop the timer."""
        if self._open is not None:
            self._finish()

    def _newer_sequence(self, sequence: int) -> bool:
        """Record C{sequence}; whether it is ahead of every one seen."""
        sequence %= _SEQ_MOD
        highest = self._highest_seq
        if highest is not None and not 0 < (sequence - highest) % _SEQ_MOD < _SEQ_MOD // 2:
            return False
        self._highest_seq = sequence
        return True

    @staticmethod
    def _continues(current: _OpenEvent, code: int, timestamp: int) -> bool:
        """Whether a packet starts the next segment of C{current}."""
        return code == current.code and (timestamp - current.timestamp) % _TS_MOD == _MAX_DURATION

    def _expire(self) -> None:
        """No packet for C{end_timeout}: the end packets were lost."""
        self._timer = None
        self.counters.timeouts += 1
        self._finish()

    def _finish(self) -> None:
        """Emit the open event and remember its timestamp."""
        current = self._open
        assert current is not None
        self._open = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ended.append(current.timestamp)
        units = current.earlier + current.units
        duration_ms = (units * 1000 + self._clock_rate // 2) // self._clock_rate
        self.counters.events += 1
        self._deliver(DtmfEvent(DIGITS[current.code], duration_ms, SOURCE_RFC4733))


def _ts_after(timestamp: int, reference: int) -> bool:
    """Whether RTP timestamp C{timestamp} is later than C{reference}."""
    return 0 < (timestamp - reference) % _TS_MOD < _TS_MOD // 2
