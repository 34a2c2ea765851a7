"""Tests for L{media.server.dtmf}: digits, telephone-event payloads, the
RFC 4733 sender and the receiver (loss, reordering, repeated ends)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.dtmf import (
    DIGITS,
    FLASH,
    SOURCE_INBAND,
    SOURCE_RFC4733,
    DtmfError,
    DtmfEvent,
    TelephoneEventPacket,
    TelephoneEventReceiver,
    digit_to_event,
    event_to_digit,
    parse_telephone_event,
    telephone_event_packets,
    telephone_event_payload,
)


class DigitTests(SynchronousTestCase):
    """Digits, event codes and the event value."""

    def test_codes(self) -> None:
        """0-9 are codes 0-9, * 10, # 11, A-D 12-15, flash 16, and back."""
        self.assertEqual(
            [digit_to_event(d) for d in "09*#ABCD!"], [0, 9, 10, 11, 12, 13, 14, 15, 16]
        )
        self.assertEqual("".join(event_to_digit(code) for code in range(17)), DIGITS)
        self.assertEqual(digit_to_event("c"), 14)
        self.assertEqual(FLASH, "!")

    def test_bad_digits(self) -> None:
        """Anything else is refused, as are codes above 16."""
        for digit in ("", "E", "55", " ", "x"):
            self.assertRaises(DtmfError, digit_to_event, digit)
        self.assertRaises(DtmfError, event_to_digit, 17)
        self.assertRaises(DtmfError, event_to_digit, -1)

    def test_event_validation(self) -> None:
        """An event needs a digit, a non-negative duration and a known source."""
        event = DtmfEvent("5", 160, SOURCE_RFC4733)
        self.assertEqual((event.digit, event.duration_ms, event.source), ("5", 160, "rfc4733"))
        self.assertRaises(DtmfError, DtmfEvent, "E", 160, SOURCE_RFC4733)
        self.assertRaises(DtmfError, DtmfEvent, "5", -1, SOURCE_RFC4733)
        self.assertRaises(DtmfError, DtmfEvent, "5", 1.5, SOURCE_RFC4733)
        self.assertRaises(DtmfError, DtmfEvent, "5", 100, "carrier-pigeon")


class PayloadTests(SynchronousTestCase):
    """The 4-byte telephone-event payload."""

    def test_layout(self) -> None:
        """Event, E bit, R bit clear, volume, duration (network order)."""
        payload = telephone_event_payload(11, 0x1234, end=True, volume=7)
        self.assertEqual(payload, bytes([11, 0x80 | 7, 0x12, 0x34]))
        self.assertEqual(parse_telephone_event(payload), (11, True, 7, 0x1234))

    def test_reserved_bit_and_trailing_blocks_ignored(self) -> None:
        """The R bit is not volume; blocks after the first are not read."""
        event = parse_telephone_event(bytes([5, 0x40 | 10, 0, 160, 9, 0x80, 0, 0]))
        self.assertEqual(event, (5, False, 10, 160))

    def test_short(self) -> None:
        """A payload shorter than 4 bytes is refused."""
        self.assertRaises(DtmfError, parse_telephone_event, b"\x05\x0a\x00")

    def test_ranges(self) -> None:
        """Fields out of range are refused when building."""
        self.assertRaises(DtmfError, telephone_event_payload, 256, 0)
        self.assertRaises(DtmfError, telephone_event_payload, 1, 0x10000)
        self.assertRaises(DtmfError, telephone_event_payload, 1, 0, volume=64)

    @given(st.integers(0, 255), st.integers(0, 0xFFFF), st.booleans(), st.integers(0, 63))
    def test_round_trip(self, event: int, duration: int, end: bool, volume: int) -> None:
        """Whatever is built parses back to the same fields."""
        payload = telephone_event_payload(event, duration, end=end, volume=volume)
        self.assertEqual(parse_telephone_event(payload), (event, end, volume, duration))


def fields(packet: TelephoneEventPacket) -> tuple[int, int, bool, int, bool, int, int]:
    """(send time, timestamp, marker, event, end, volume, duration) of a packet."""
    event = parse_telephone_event(packet.payload)
    return (
        packet.send_at_ms,
        packet.timestamp,
        packet.marker,
        event.event,
        event.end,
        event.volume,
        event.duration,
    )


class SenderTests(SynchronousTestCase):
    """L{telephone_event_packets}."""

    def test_sequence(self) -> None:
        """Start with marker and duration 0, an update every 50 ms, then
        three end packets 50 ms apart, all with the same timestamp."""
        packets = telephone_event_packets("5", 160, 1000, volume=12)
        self.assertEqual(
            [fields(p) for p in packets],
            [
                (0, 1000, True, 5, False, 12, 0),
                (50, 1000, False, 5, False, 12, 400),
                (100, 1000, False, 5, False, 12, 800),
                (150, 1000, False, 5, False, 12, 1200),
                (160, 1000, False, 5, True, 12, 1280),
                (210, 1000, False, 5, True, 12, 1280),
                (260, 1000, False, 5, True, 12, 1280),
            ],
        )

    def test_short_press_and_flash(self) -> None:
        """A press shorter than the interval is a start and the ends; the
        flash is event 16."""
        packets = telephone_event_packets(FLASH, 30, 0, end_packets=2)
        self.assertEqual(
            [fields(p) for p in packets],
            [
                (0, 0, True, 16, False, 10, 0),
                (30, 0, False, 16, True, 10, 240),
                (80, 0, False, 16, True, 10, 240),
            ],
        )

    def test_other_clock_rate(self) -> None:
        """Durations are in units of the event clock (here 16 kHz)."""
        packets = telephone_event_packets("#", 100, 5, clock_rate=16000, interval_ms=20)
        self.assertEqual(
            [fields(p)[6] for p in packets], [0, 320, 640, 960, 1280, 1600, 1600, 1600]
        )
        self.assertEqual({fields(p)[3] for p in packets}, {11})

    def test_timestamp_wraps(self) -> None:
        """Timestamps are taken modulo 2**32."""
        packets = telephone_event_packets("1", 60, 2**32 + 7)
        self.assertEqual({p.timestamp for p in packets}, {7})

    def test_long_press_segments(self) -> None:
        """A press longer than 65535 units (8.19 s at 8 kHz) continues in
        segments: the next timestamp is the old one plus 65535, no marker."""
        packets = telephone_event_packets("0", 10_000, 100)
        timestamps = sorted({p.timestamp for p in packets})
        self.assertEqual(timestamps, [100, 100 + 0xFFFF])
        self.assertEqual(sum(p.marker for p in packets), 1)
        first = [fields(p) for p in packets if p.timestamp == 100]
        self.assertEqual(first[-1][4:], (False, 10, 0xFFFF))
        ends = [fields(p) for p in packets if fields(p)[4]]
        self.assertEqual({e[6] for e in ends}, {80_000 - 0xFFFF})
        self.assertEqual(len(ends), 3)
        durations = [fields(p)[6] for p in packets]
        self.assertTrue(all(0 <= d <= 0xFFFF for d in durations))

    def test_bad_arguments(self) -> None:
        """Bad digit, duration, volume or interval are refused."""
        self.assertRaises(DtmfError, telephone_event_packets, "E", 100, 0)
        self.assertRaises(DtmfError, telephone_event_packets, "1", 0, 0)
        self.assertRaises(DtmfError, telephone_event_packets, "1", 3_600_001, 0)
        self.assertRaises(DtmfError, telephone_event_packets, "1", 100, 0, volume=64)
        self.assertRaises(DtmfError, telephone_event_packets, "1", 100, 0, interval_ms=0)
        self.assertRaises(DtmfError, telephone_event_packets, "1", 100, 0, end_packets=0)


Wire = tuple[bytes, int, int, bool]


def press(digit: str, duration_ms: int, timestamp: int, first_seq: int) -> list[Wire]:
    """The (payload, timestamp, sequence, marker) of one press, numbered."""
    return [
        (p.payload, p.timestamp, (first_seq + i) % 65536, p.marker)
        for i, p in enumerate(telephone_event_packets(digit, duration_ms, timestamp))
    ]


class ReceiverTests(SynchronousTestCase):
    """L{TelephoneEventReceiver}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[DtmfEvent] = []
        self.receiver = TelephoneEventReceiver(self.clock, self.events.append)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def feed(self, packets: list[Wire]) -> None:
        for packet in packets:
            self.receiver.packet(*packet)

    def summary(self) -> list[tuple[str, int]]:
        return [(e.digit, e.duration_ms) for e in self.events]

    def test_one_press(self) -> None:
        """One event, with the end packet's duration, source rfc4733; the
        repeated ends are counted once."""
        self.feed(press("5", 160, 1000, 10))
        self.assertEqual(self.events, [DtmfEvent("5", 160, SOURCE_RFC4733)])
        self.assertEqual(self.receiver.counters.duplicates, 2)
        self.assertEqual(self.receiver.counters.events, 1)

    def test_same_digit_twice(self) -> None:
        """The same digit again is a new event because of its new timestamp."""
        self.feed(press("7", 100, 0, 0) + press("7", 120, 2000, 7))
        self.assertEqual(self.summary(), [("7", 100), ("7", 120)])

    def test_event_reported_when_end_arrives(self) -> None:
        """Nothing is emitted before the end packet."""
        packets = press("9", 200, 0, 0)
        self.feed(packets[:4])
        self.assertEqual(self.events, [])
        self.feed(packets[4:5])
        self.assertEqual(self.summary(), [("9", 200)])
        self.feed(packets[5:])

    def test_lost_start(self) -> None:
        """Without the marker packet the event still starts."""
        self.feed(press("3", 150, 0, 0)[1:])
        self.assertEqual(self.summary(), [("3", 150)])

    def test_only_one_end(self) -> None:
        """One end packet of three is enough."""
        packets = press("A", 100, 0, 0)
        self.feed([packets[0], packets[-1]])
        self.assertEqual(self.summary(), [("A", 100)])

    def test_lost_ends_timeout(self) -> None:
        """When all end packets are lost, the event is closed by the
        timeout on the clock, with the longest duration seen."""
        packets = press("4", 200, 0, 0)
        self.feed(packets[:4])
        self.clock.advance(0.49)
        self.assertEqual(self.events, [])
        self.clock.advance(0.02)
        self.assertEqual(self.summary(), [("4", 150)])
        self.assertEqual(self.receiver.counters.timeouts, 1)
        # A late end is not a second event.
        self.feed(packets[4:])
        self.assertEqual(len(self.events), 1)

    def test_timeout_restarts_with_each_packet(self) -> None:
        """Updates keep the event open."""
        packets = press("4", 400, 0, 0)
        for packet in packets[:8]:
            self.clock.advance(0.3)
            self.receiver.packet(*packet)
        self.assertEqual(self.events, [])
        self.feed(packets[8:])
        self.assertEqual(self.summary(), [("4", 400)])

    def test_lost_ends_next_digit(self) -> None:
        """A new timestamp closes the previous event whose ends were lost."""
        first = press("1", 100, 0, 0)
        self.feed(first[:2])
        self.feed(press("2", 100, 1600, 10))
        self.assertEqual(self.summary(), [("1", 50), ("2", 100)])
        self.assertEqual(self.receiver.counters.lost_ends, 1)

    def test_reordered_updates(self) -> None:
        """Updates out of order change nothing: the longest duration wins."""
        p = press("6", 200, 0, 0)
        self.feed([p[0], p[2], p[1], p[3], p[5], p[4], p[6]])
        self.assertEqual(self.summary(), [("6", 200)])

    def test_end_before_updates(self) -> None:
        """An end overtaking updates emits once; the late updates are dropped."""
        p = press("6", 200, 0, 0)
        self.feed([p[0], p[4], p[1], p[2], p[3], p[5], p[6]])
        self.assertEqual(self.summary(), [("6", 200)])
        self.assertEqual(self.receiver.counters.duplicates, 5)

    def test_late_packet_of_earlier_event(self) -> None:
        """A delayed update of an event already closed does not reopen it."""
        first = press("1", 100, 0, 0)
        second = press("2", 100, 1600, len(first))
        self.feed(first[:2] + second[:2] + first[2:3] + second[2:])
        self.assertEqual(self.summary(), [("1", 50), ("2", 100)])
        self.assertEqual(self.receiver.counters.duplicates, 3)

    def test_stale_event(self) -> None:
        """An earlier press delivered entirely after a later one is stale."""
        first = press("1", 100, 0, 0)
        second = press("2", 100, 1600, len(first))
        self.feed(second + first)
        self.assertEqual(self.summary(), [("2", 100)])
        self.assertEqual(self.receiver.counters.stale, len(first))

    def test_timestamp_reset_with_marker(self) -> None:
        """A marker packet with a newer sequence starts an event even if its
        timestamp went backwards (the sender reset its clock)."""
        self.feed(press("1", 100, 50_000, 0) + press("2", 100, 10, 8))
        self.assertEqual(self.summary(), [("1", 100), ("2", 100)])

    def test_older_timestamp_without_marker_is_stale(self) -> None:
        """Without the marker, a timestamp behind the last event is stale."""
        self.feed(press("1", 100, 50_000, 0) + press("2", 100, 10, 8)[1:])
        self.assertEqual(self.summary(), [("1", 100)])

    def test_long_press_joined(self) -> None:
        """Segments of a press longer than 65535 units are one event."""
        self.feed(press("0", 10_000, 123, 0))
        self.assertEqual(self.summary(), [("0", 10_000)])

    def test_sequence_and_timestamp_wrap(self) -> None:
        """Sequence numbers and timestamps wrap around."""
        self.feed(press("8", 100, 2**32 - 400, 65533) + press("9", 100, 2000, 65533 + 7))
        self.assertEqual(self.summary(), [("8", 100), ("9", 100)])

    def test_not_dtmf_and_malformed(self) -> None:
        """Events above 16 and short payloads are counted, not reported."""
        self.receiver.packet(telephone_event_payload(32, 800, end=True), 0, 0, True)
        self.receiver.packet(b"\x01", 0, 1, True)
        self.assertEqual(self.events, [])
        self.assertEqual((self.receiver.counters.ignored, self.receiver.counters.malformed), (1, 1))

    def test_close(self) -> None:
        """Closing reports the open event and stops the timer."""
        self.feed(press("#", 300, 0, 0)[:4])
        self.receiver.close()
        self.assertEqual(self.summary(), [("#", 150)])
        self.receiver.close()
        self.assertEqual(len(self.events), 1)

    def test_other_clock_rate(self) -> None:
        """Durations are converted with the stream's clock rate."""
        receiver = TelephoneEventReceiver(self.clock, self.events.append, clock_rate=16000)
        for p in telephone_event_packets("B", 90, 0, clock_rate=16000):
            receiver.packet(p.payload, p.timestamp, 0, p.marker)
        self.assertEqual(self.summary(), [("B", 90)])

    def test_source_constants(self) -> None:
        """The receiver marks its events rfc4733, not in-band."""
        self.feed(press("1", 60, 0, 0))
        self.assertNotEqual(self.events[0].source, SOURCE_INBAND)


class ReceiverPropertyTests(SynchronousTestCase):
    """Random presses through a lossy, reordering network."""

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(st.sampled_from(DIGITS), st.integers(40, 600), st.integers(40, 400)),
            min_size=1,
            max_size=6,
        ),
        st.data(),
    )
    def test_each_press_once(
        self, presses: list[tuple[str, int, int]], data: st.DataObject
    ) -> None:
        """Whatever is lost (short of every end packet of a press) and
        however packets of one press are reordered, each press is reported
        exactly once, in order, with its duration."""
        clock = Clock()
        events: list[DtmfEvent] = []
        receiver = TelephoneEventReceiver(clock, events.append)
        timestamp = data.draw(st.integers(0, 2**32 - 1))
        seq = data.draw(st.integers(0, 65535))
        for digit, duration, gap in presses:
            packets = press(digit, duration, timestamp, seq)
            seq += len(packets)
            timestamp += (duration + gap) * 8
            ends = [p for p in packets if parse_telephone_event(p[0]).end]
            others = [p for p in packets if not parse_telephone_event(p[0]).end]
            kept = [p for p in others if data.draw(st.booleans())]
            kept += [p for p in ends if data.draw(st.booleans())] or [ends[-1]]
            kept = data.draw(st.permutations(kept))
            for packet in kept:
                receiver.packet(*packet)
        receiver.close()
        self.assertEqual([(e.digit, e.duration_ms) for e in events], [p[:2] for p in presses])
        self.assertEqual(clock.getDelayedCalls(), [])
