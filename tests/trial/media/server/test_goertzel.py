"""Tests for L{media.server.goertzel}: in-band DTMF detection on tones
synthesised here (sine sums at the DTMF frequencies, with noise, twist,
frequency error), and on signals that must not be taken for digits."""

from __future__ import annotations

import math
import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.server.dtmf import SOURCE_INBAND, DtmfEvent
from media.server.goertzel import (
    COLUMN_FREQUENCIES,
    KEYPAD,
    ROW_FREQUENCIES,
    DetectorSettings,
    DtmfDetector,
    amplitude_for_dbm0,
    goertzel_power,
)

RATE = 8000
ALL_DIGITS = "0123456789*#ABCD"


def frequencies(digit: str) -> tuple[float, float]:
    """The row and column frequency of a keypad digit."""
    for row, keys in enumerate(KEYPAD):
        if digit in keys:
            return ROW_FREQUENCIES[row], COLUMN_FREQUENCIES[keys.index(digit)]
    raise ValueError(digit)


def sines(parts: list[tuple[float, float]], ms: int, phase: float = 0.3) -> list[float]:
    """A sum of sines, each (frequency, level in dBm0), lasting C{ms}."""
    n = ms * RATE // 1000
    out = [0.0] * n
    for index, (frequency, level) in enumerate(parts):
        amplitude = amplitude_for_dbm0(level)
        step = 2 * math.pi * frequency / RATE
        start = phase * (index + 1)
        for i in range(n):
            out[i] += amplitude * math.sin(step * i + start)
    return out


def dtmf(
    digit: str, ms: int, *, level: float = -10.0, twist: float = 0.0, offset: float = 0.0
) -> list[float]:
    """A DTMF tone: the row at C{level}, the column C{twist} dB above it,
    both frequencies off by the fraction C{offset}."""
    row, column = frequencies(digit)
    return sines([(row * (1 + offset), level), (column * (1 + offset), level + twist)], ms)


def gap(ms: int) -> list[float]:
    """Silence."""
    return [0.0] * (ms * RATE // 1000)


def with_noise(signal: list[float], sigma: float, seed: int = 1) -> list[float]:
    """C{signal} plus white Gaussian noise."""
    rng = random.Random(seed)
    return [value + rng.gauss(0.0, sigma) for value in signal]


def pcm(signal: list[float]) -> bytes:
    """16-bit little-endian PCM, clipped, padded to whole 20 ms frames."""
    samples = [max(-32768, min(32767, round(value))) for value in signal]
    samples += [0] * (-len(samples) % 160)
    return struct.pack(f"<{len(samples)}h", *samples)


def detect(signal: list[float], *, frame_bytes: int = 320, **overrides: object) -> list[DtmfEvent]:
    """Run the detector over C{signal} in frames; flush at the end."""
    events: list[DtmfEvent] = []
    detector = DtmfDetector(events.append, DetectorSettings(**overrides))  # type: ignore[arg-type]
    data = pcm(signal)
    for start in range(0, len(data), frame_bytes):
        detector.frame(data[start : start + frame_bytes])
    detector.flush()
    return events


def digits(signal: list[float], **overrides: object) -> str:
    """The digits detected in C{signal}."""
    return "".join(event.digit for event in detect(signal, **overrides))


class GoertzelPowerTests(SynchronousTestCase):
    """The reference L{goertzel_power}."""

    def test_energy_of_a_sine(self) -> None:
        """A sine of amplitude A over N samples at the measured frequency
        gives its energy N A^2 / 2; a frequency far away gives little."""
        samples = [1000 * math.sin(2 * math.pi * 770 * i / RATE) for i in range(160)]
        self.assertLess(abs(goertzel_power(samples, 770) / (160 * 1000**2 / 2) - 1.0), 0.02)
        self.assertLess(goertzel_power(samples, 1336) / (160 * 1000**2 / 2), 0.01)

    def test_level_scale(self) -> None:
        """0 dBm0 is 3.17 dB below a full-scale sine."""
        self.assertAlmostEqual(20 * math.log10(32768 / amplitude_for_dbm0(0)), 3.17, places=6)


class DetectionTests(SynchronousTestCase):
    """Tones that must be detected, once each, with their duration."""

    def test_every_digit(self) -> None:
        """Each of the 16 digits, 100 ms, at several alignments to the
        frame: detected once, lasting 100 ms to within 10 ms."""
        for digit in ALL_DIGITS:
            for lead in (0, 3, 47, 80, 121):
                events = detect([0.0] * lead + dtmf(digit, 100) + gap(100))
                self.assertEqual([e.digit for e in events], [digit], (digit, lead))
                self.assertEqual(events[0].source, SOURCE_INBAND)
                self.assertLessEqual(abs(events[0].duration_ms - 100), 10, (digit, lead))

    def test_durations(self) -> None:
        """Longer presses are measured to within 10 ms."""
        for ms in (60, 150, 400, 1500):
            events = detect(gap(33) + dtmf("8", ms) + gap(60))
            self.assertEqual(len(events), 1)
            self.assertLessEqual(abs(events[0].duration_ms - ms), 10, ms)

    def test_dialled_sequence(self) -> None:
        """A fast dialling sequence (50 ms tones, 50 ms pauses) comes out
        in order, each digit once."""
        signal: list[float] = []
        for digit in ALL_DIGITS + "1122":
            signal += dtmf(digit, 50) + gap(50)
        self.assertEqual(digits(signal), ALL_DIGITS + "1122")

    def test_digit_change_without_pause(self) -> None:
        """One digit followed directly by another gives both."""
        self.assertEqual(digits(dtmf("1", 80) + dtmf("9", 80) + gap(60)), "19")

    def test_noise(self) -> None:
        """White noise 10 dB below each tone does not stop detection."""
        sigma = amplitude_for_dbm0(-10) / math.sqrt(2) / 10 ** (10 / 20)
        signal: list[float] = []
        for digit in ALL_DIGITS:
            signal += dtmf(digit, 70) + gap(60)
        self.assertEqual(digits(with_noise(signal, sigma)), ALL_DIGITS)

    def test_twist_accepted(self) -> None:
        """Normal twist (column 7 dB below the row) and reverse twist
        (column 3.5 dB above) are accepted."""
        for twist in (-7.0, 3.5):
            for digit in ALL_DIGITS:
                self.assertEqual(digits(dtmf(digit, 80, twist=twist) + gap(60)), digit, twist)

    def test_frequency_tolerance(self) -> None:
        """Both tones 1.5% off (the ITU-T Q.24 acceptance) are accepted."""
        for offset in (-0.015, 0.015):
            for digit in ALL_DIGITS:
                self.assertEqual(digits(dtmf(digit, 80, offset=offset) + gap(60)), digit, offset)

    def test_levels(self) -> None:
        """From +0 down to -25 dBm0 per tone, 40 ms tones are detected."""
        for level in (0.0, -12.0, -25.0):
            for lead in (0, 40, 80, 120):
                self.assertEqual(
                    digits([0.0] * lead + dtmf("5", 40, level=level) + gap(60)), "5", (level, lead)
                )

    def test_forty_ms(self) -> None:
        """The shortest standard press, 40 ms, is detected at any alignment."""
        for digit in "0#D":
            for lead in range(0, 160, 16):
                self.assertEqual(digits([0.0] * lead + dtmf(digit, 40) + gap(60)), digit)

    def test_short_dropout_bridged(self) -> None:
        """A 10 ms interruption inside a press does not split it."""
        events = detect(dtmf("6", 100) + gap(10) + dtmf("6", 100) + gap(60))
        self.assertEqual([e.digit for e in events], ["6"])
        self.assertLessEqual(abs(events[0].duration_ms - 210), 10)

    def test_pause_separates(self) -> None:
        """A 40 ms pause separates two presses of the same key."""
        for lead in (0, 40, 80, 120):
            signal = [0.0] * lead + dtmf("6", 60) + gap(40) + dtmf("6", 60) + gap(60)
            self.assertEqual(digits(signal), "66", lead)

    def test_flush(self) -> None:
        """A press still sounding when the audio ends is reported by flush."""
        events: list[DtmfEvent] = []
        detector = DtmfDetector(events.append)
        detector.frame(pcm(dtmf("0", 200)))
        self.assertEqual(events, [])
        detector.flush()
        self.assertEqual([e.digit for e in events], ["0"])
        self.assertEqual(detector.digits, 1)

    def test_ten_ms_frames(self) -> None:
        """Frames of 80 samples give the same result as 160."""
        signal = gap(15) + dtmf("C", 90) + gap(50) + dtmf("*", 120) + gap(50)
        self.assertEqual(detect(signal, frame_bytes=160), detect(signal))

    def test_bad_frame(self) -> None:
        """A frame that is not a multiple of 80 samples is refused."""
        detector = DtmfDetector(lambda event: None)
        self.assertRaises(ValueError, detector.frame, bytes(321))
        self.assertRaises(ValueError, detector.frame, bytes(100))

    @settings(max_examples=25, deadline=None)
    @given(
        st.sampled_from(ALL_DIGITS),
        st.integers(45, 300),
        st.integers(0, 159),
        st.floats(-20.0, -3.0),
        st.floats(-6.0, 3.0),
    )
    def test_property(self, digit: str, ms: int, lead: int, level: float, twist: float) -> None:
        """Any digit, length, alignment, level and twist within limits is
        detected once with about its duration."""
        events = detect([0.0] * lead + dtmf(digit, ms, level=level, twist=twist) + gap(80))
        self.assertEqual([e.digit for e in events], [digit])
        self.assertLessEqual(abs(events[0].duration_ms - ms), 15)


class RejectionTests(SynchronousTestCase):
    """Signals that must not be taken for digits."""

    def test_silence(self) -> None:
        """Digital silence, and very quiet noise."""
        self.assertEqual(digits(gap(1000)), "")
        self.assertEqual(digits(with_noise(gap(1000), 30.0)), "")

    def test_loud_noise(self) -> None:
        """White noise at several levels."""
        for sigma in (300.0, 3000.0, 12000.0):
            self.assertEqual(digits(with_noise(gap(2000), sigma, seed=int(sigma))), "", sigma)

    def test_single_tones(self) -> None:
        """Each DTMF frequency alone."""
        for frequency in ROW_FREQUENCIES + COLUMN_FREQUENCIES:
            self.assertEqual(digits(sines([(frequency, -8.0)], 300)), "", frequency)

    def test_call_progress_tones(self) -> None:
        """400 Hz dial tone, 350+440 dial tone, 440+480 ringback, 480+620
        busy, 1000 Hz test tone, 425 Hz European tones."""
        for parts in (
            [(400.0, -10.0)],
            [(350.0, -13.0), (440.0, -13.0)],
            [(440.0, -19.0), (480.0, -19.0)],
            [(480.0, -24.0), (620.0, -24.0)],
            [(1000.0, -10.0)],
            [(425.0, -10.0)],
        ):
            self.assertEqual(digits(sines(parts, 1000)), "", parts)

    def test_out_of_tolerance(self) -> None:
        """Tones 3.5% off their frequencies (ITU-T Q.24 rejection)."""
        for offset in (-0.035, 0.035):
            for digit in ALL_DIGITS:
                self.assertEqual(digits(dtmf(digit, 100, offset=offset)), "", (digit, offset))

    def test_excessive_twist(self) -> None:
        """Column 10 dB below, or 6 dB above, the row."""
        for twist in (-10.0, 6.0):
            for digit in ALL_DIGITS:
                self.assertEqual(digits(dtmf(digit, 100, twist=twist)), "", (digit, twist))

    def test_too_short(self) -> None:
        """Tones of 20 ms or less are not presses."""
        for ms in (10, 20):
            for lead in range(0, 160, 20):
                self.assertEqual(digits([0.0] * lead + dtmf("3", ms, level=-3.0) + gap(60)), "")

    def test_too_quiet(self) -> None:
        """Tones below -40 dBm0."""
        self.assertEqual(digits(dtmf("1", 200, level=-40.0)), "")

    def test_third_tone(self) -> None:
        """A digit with a strong second row tone is ambiguous: rejected."""
        row, column = frequencies("5")
        self.assertEqual(digits(sines([(row, -10.0), (column, -10.0), (852.0, -11.0)], 200)), "")

    def test_voiced_speech(self) -> None:
        """Synthetic voiced speech (harmonics of a 85-260 Hz pitch with
        vibrato, shaped by three narrow formants, between bursts of noise)
        gives fewer than one false digit per 10 seconds.

        Steady vowels whose formants sit on a row and a column are the
        hardest case there is for a detector; see the doc for the rate
        measured over a longer run (about one per 30 s)."""
        false_digits = 0
        for seed in (21, 22, 23):
            rng = random.Random(seed)
            signal: list[float] = []
            while len(signal) < 12 * RATE:
                signal += vowel(rng, rng.choice((60, 80, 120, 160, 200, 300)))
                if rng.random() < 0.3:
                    signal += with_noise(gap(rng.randint(25, 150)), 300.0, rng.randint(0, 999))
            false_digits += len(detect(signal))
        self.assertLess(false_digits, 36 / 10)

    def test_music(self) -> None:
        """Synthetic music (chords of up to four notes with harmonics)."""
        rng = random.Random(21)
        signal: list[float] = []
        while len(signal) < 8 * RATE:
            notes = [440 * 2 ** (rng.randint(-24, 14) / 12) for _ in range(rng.randint(1, 4))]
            parts = [
                (note * harmonic, rng.uniform(-20, -8) - 6 * math.log2(harmonic))
                for note in notes
                for harmonic in range(1, 6)
                if note * harmonic < 3900
            ]
            signal += sines(parts, rng.choice((100, 150, 250, 400)), phase=rng.uniform(0, 6))
        self.assertEqual(digits(signal), "")


def vowel(rng: random.Random, ms: int) -> list[float]:
    """A steady synthetic vowel: the harmonics of a random pitch, weighted
    by three resonances (formants), with 5 Hz vibrato."""
    f0 = rng.uniform(85, 260)
    formants = (rng.uniform(250, 900), rng.uniform(850, 2500), rng.uniform(2200, 3200))
    bandwidth = rng.uniform(50, 120)
    amplitude = amplitude_for_dbm0(rng.uniform(-20, -5))
    vibrato = rng.uniform(0, 0.03)
    harmonics = []
    for k in range(1, int(3800 / f0) + 1):
        gain = sum(1 / (1 + ((k * f0 - f) / bandwidth) ** 2) for f in formants) / math.sqrt(k)
        harmonics.append((k * f0, gain, rng.uniform(0, 2 * math.pi)))
    norm = math.sqrt(sum(g * g for _, g, _ in harmonics))
    out = []
    for i in range(ms * RATE // 1000):
        t = i / RATE
        bend = 1 + vibrato * math.sin(2 * math.pi * 5 * t)
        value = sum(g * math.sin(2 * math.pi * f * bend * t + p) for f, g, p in harmonics)
        out.append(value * amplitude * 1.4 / norm)
    return out
