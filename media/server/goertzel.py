"""In-band DTMF detection in 8 kHz 16-bit linear PCM.

For endpoints that send neither RFC 4733 events nor SIP INFO, the digits
are tones in the audio: one of four row frequencies (697, 770, 852,
941 Hz) plus one of four column frequencies (1209, 1336, 1477, 1633 Hz).
L{DtmfDetector} measures the eight frequencies in every window of audio
and turns runs of windows holding the same digit into L{DtmfEvent}s.

Windows
=======

A window is 160 samples (20 ms, a frequency resolution of 50 Hz, enough to
keep neighbouring rows 73 Hz apart separate).  Windows start every 80
samples (10 ms), so each 20 ms frame yields two: one made of the previous
frame's second half and this frame's first half, and the frame itself.
The half-window hop gives durations to about 10 ms and catches a 40 ms
tone whatever its alignment to the frames.  Each 80-sample half is
measured once and the window's value is combined from its two halves
(C{X = A + e^{-jwN/2} B}), so the overlap costs nothing extra.

The measurement is the Goertzel algorithm with precomputed coefficients
C{2cos(w)}: one pass over each half runs the eight recurrences side by
side, and the final states give each frequency's complex value (two
precomputed phase factors per frequency), from which the two windows that
contain the half are formed.  Windows whose total energy could not hold
two tones at the minimum level are rejected before any recurrence runs,
so silence costs one sum of squares per half.  In CPython this is about
70 us per 20 ms frame of speech and 5 us of silence (L{goertzel_power},
the textbook one-frequency form, is kept as the reference the tests
compare against).

Checks
======

A window holds a digit when all of these hold:

* level: the strongest row and the strongest column are each above
  C{min_level_dbm0};
* twist: the column is at most C{normal_twist_db} below the row, and at
  most C{reverse_twist_db} above it;
* relative peak: the strongest row exceeds every other row by
  C{relative_peak_db}, and likewise the column;
* tone energy: the two tones hold at least C{min_tone_fraction} of the
  window's energy (speech and music spread theirs);
* second harmonic: the energy at twice the column's frequency, and at
  twice the row's where that is not next to the column, is at least
  C{harmonic_db} below the tone (voiced speech has harmonics there).

A digit starts after enough consecutive windows hold it to make
C{min_duration_ms}, and ends after enough windows without it to make
C{min_pause_ms}; shorter interruptions are bridged.  The event is emitted
when the digit ends, with the duration from its first to its last window
(to within about 10 ms).  Time is counted in samples: the detector needs
no clock.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import mul

from media.server.dtmf import SOURCE_INBAND, DtmfEvent
from media.server.pcm import RATE, to_samples

__all__ = [
    "COLUMN_FREQUENCIES",
    "KEYPAD",
    "ROW_FREQUENCIES",
    "DetectorSettings",
    "DtmfDetector",
    "amplitude_for_dbm0",
    "goertzel_power",
]

#: The low-group (row) frequencies, Hz.
ROW_FREQUENCIES = (697.0, 770.0, 852.0, 941.0)
#: The high-group (column) frequencies, Hz.
COLUMN_FREQUENCIES = (1209.0, 1336.0, 1477.0, 1633.0)
#: The digit at each row and column.
KEYPAD = ("123A", "456B", "789C", "*0#D")

#: Samples in a window.
WINDOW = 160
#: Samples between window starts (half a window).
HOP = WINDOW // 2
_HOP_MS = HOP * 1000 // RATE

#: Peak amplitude of a 0 dBm0 sine in 16-bit linear PCM (G.711: a
#: full-scale sine is +3.17 dBm0).
_ZERO_DBM0 = 32768 * 10 ** (-3.17 / 20)


def amplitude_for_dbm0(level: float) -> float:
    """The peak amplitude of a sine at C{level} dBm0 in 16-bit PCM."""
    return _ZERO_DBM0 * 10 ** (level / 20)


def goertzel_power(samples: Sequence[int], frequency: float, rate: int = RATE) -> float:
    """The energy of C{samples} at C{frequency}, by the Goertzel recurrence.

    The reference implementation: C{s[n] = x[n] + 2cos(w) s[n-1] - s[n-2]},
    then C{|X|^2 = s1^2 + s2^2 - 2cos(w) s1 s2}, scaled by C{2/N} so that a
    sine of amplitude I{A} at C{frequency} gives its energy C{N A^2 / 2}.
    """
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for sample in samples:
        s1, s2 = sample + coefficient * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
    return 2.0 * power / len(samples)


def _db(value: float) -> float:
    """The power ratio of C{value} decibels."""
    return 10 ** (value / 10)


@dataclass(frozen=True)
class DetectorSettings:
    """The thresholds of L{DtmfDetector} (defaults follow common practice).

    @ivar min_level_dbm0: the weakest tone accepted, per frequency.
    @ivar normal_twist_db: how far the column may be below the row.
    @ivar reverse_twist_db: how far the row may be below the column.
    @ivar relative_peak_db: how far the strongest row (column) must exceed
        every other row (column).
    @ivar min_tone_fraction: the share of the window's energy the two
        tones must hold.
    @ivar harmonic_db: how far each tone's second harmonic must be below it.
    @ivar min_duration_ms: the shortest press reported.
    @ivar min_pause_ms: the shortest silence that separates two presses.
    """

    min_level_dbm0: float = -36.0
    normal_twist_db: float = 8.0
    reverse_twist_db: float = 4.0
    relative_peak_db: float = 6.0
    min_tone_fraction: float = 0.4
    harmonic_db: float = 15.0
    min_duration_ms: int = 40
    min_pause_ms: int = 40


_ROW_HARMONICS = tuple(2 * f for f in ROW_FREQUENCIES)
_COLUMN_HARMONICS = tuple(2 * f for f in COLUMN_FREQUENCIES)
#: Whether a row's second harmonic is clear of the column it is paired with:
#: 2 x 697, 2 x 770 and 2 x 852 Hz lie within 75 Hz of 1336, 1477 and
#: 1633 Hz (digits 2, 6 and C), where the column tone itself fills the bin.
_CLEAR_ROW_HARMONIC = tuple(
    tuple(abs(2 * fr - fc) > 100 for fc in COLUMN_FREQUENCIES) for fr in ROW_FREQUENCIES
)
_OMEGAS = tuple(2.0 * math.pi * f / RATE for f in ROW_FREQUENCIES + COLUMN_FREQUENCIES)
#: The Goertzel coefficients C{2cos(w)} of the eight frequencies.
_COEFFICIENTS = tuple(2.0 * math.cos(w) for w in _OMEGAS)
#: Per frequency, C{e^{-jw(M-1)}} and C{e^{-jwM}} (M = L{HOP}): a half's
#: C{sum x[n] e^{-jwn}} is C{s1 p - s2 q} from its final Goertzel states,
#: and C{q} also moves the second half's value to the window's start.
_PHASES = tuple(
    (
        complex(math.cos(w * (HOP - 1)), -math.sin(w * (HOP - 1))),
        complex(math.cos(w * HOP), -math.sin(w * HOP)),
    )
    for w in _OMEGAS
)
_SCALE = 2.0 / WINDOW


def _goertzel8(samples: Sequence[int]) -> list[complex]:
    """C{sum x[n] e^{-jwn}} of C{samples} at the eight DTMF frequencies.

    One pass runs the eight Goertzel recurrences side by side: in CPython
    this costs about a fifth less than eight passes.
    """
    c0, c1, c2, c3, c4, c5, c6, c7 = _COEFFICIENTS
    a1 = a2 = b1 = b2 = d1 = d2 = e1 = e2 = 0.0
    f1 = f2 = g1 = g2 = h1 = h2 = k1 = k2 = 0.0
    for x in samples:
        a1, a2 = x + c0 * a1 - a2, a1
        b1, b2 = x + c1 * b1 - b2, b1
        d1, d2 = x + c2 * d1 - d2, d1
        e1, e2 = x + c3 * e1 - e2, e1
        f1, f2 = x + c4 * f1 - f2, f1
        g1, g2 = x + c5 * g1 - g2, g1
        h1, h2 = x + c6 * h1 - h2, h1
        k1, k2 = x + c7 * k1 - k2, k1
    states = ((a1, a2), (b1, b2), (d1, d2), (e1, e2), (f1, f2), (g1, g2), (h1, h2), (k1, k2))
    return [s1 * p - s2 * q for (s1, s2), (p, q) in zip(states, _PHASES, strict=True)]


class _Half:
    """One 80-sample half window: its samples, energy and (lazily) its
    complex value at each of the eight frequencies."""

    __slots__ = ("bins", "energy", "samples")

    def __init__(self, samples: array) -> None:
        self.samples = samples
        self.energy: int = sum(map(mul, samples, samples))
        self.bins: list[complex] | None = None

    def values(self) -> list[complex]:
        """C{sum x[n] e^{-jwn}} at each of the eight frequencies."""
        if self.bins is None:
            self.bins = _goertzel8(self.samples)
        return self.bins


_SILENT_HALF = _Half(array("h", bytes(HOP * 2)))


class DtmfDetector:
    """Detect DTMF digits in one direction of a call's audio.

    Give it every frame with L{frame}; it calls C{deliver} once per digit
    when the digit ends.  Call L{flush} when the audio ends, to report a
    digit still sounding.
    """

    def __init__(
        self,
        deliver: Callable[[DtmfEvent], object],
        settings: DetectorSettings | None = None,
    ) -> None:
        """
        @param deliver: called with each detected digit.
        @param settings: thresholds; L{DetectorSettings} defaults if omitted.
        """
        self._deliver = deliver
        self.settings = settings = settings or DetectorSettings()
        self._min_power = WINDOW * amplitude_for_dbm0(settings.min_level_dbm0) ** 2 / 2
        self._normal_twist = _db(settings.normal_twist_db)
        self._reverse_twist = _db(settings.reverse_twist_db)
        self._relative_peak = _db(settings.relative_peak_db)
        self._harmonic = _db(settings.harmonic_db)
        # A tone of T ms makes about T/10 windows pass (partly filled edge
        # windows included); a pause of P ms leaves about P/10 - 1 empty.
        self._hits_needed = max(2, settings.min_duration_ms // _HOP_MS)
        self._misses_needed = max(2, settings.min_pause_ms // _HOP_MS - 1)
        self._previous = _SILENT_HALF
        self._window = 0
        self._candidate: str | None = None
        self._run = 0
        self._digit: str | None = None
        self._first = 0
        self._last = 0
        self._misses = 0
        #: Windows examined, and digits reported.
        self.windows = 0
        self.digits = 0

    def frame(self, pcm: bytes) -> None:
        """Take audio: 16-bit little-endian PCM, a multiple of 80 samples
        (a 20 ms frame is 160).

        @raise ValueError: for a length that is not a multiple of 160 bytes.
        """
        if len(pcm) % (HOP * 2):
            raise ValueError(f"PCM length {len(pcm)} is not a multiple of {HOP * 2} bytes")
        samples = to_samples(pcm)
        for start in range(0, len(samples), HOP):
            half = _Half(samples[start : start + HOP])
            self._step(self._classify(self._previous, half))
            self._previous = half

    def flush(self) -> None:
        """The audio ended: report the digit still sounding, if any."""
        if self._digit is not None:
            self._report()
        self._candidate = None
        self._run = 0
        self._previous = _SILENT_HALF

    def _classify(self, first: _Half, second: _Half) -> str | None:
        """The digit the window made of two halves holds, or C{None}."""
        self.windows += 1
        energy = first.energy + second.energy
        min_power = self._min_power
        if energy < 2 * min_power:
            return None
        powers = [
            abs(a + q * b) ** 2 * _SCALE
            for a, b, (_, q) in zip(first.values(), second.values(), _PHASES, strict=True)
        ]
        rows, columns = powers[:4], powers[4:]
        row = max(range(4), key=rows.__getitem__)
        column = max(range(4), key=columns.__getitem__)
        row_power, column_power = rows[row], columns[column]
        if row_power < min_power or column_power < min_power:
            return None
        if column_power < row_power:
            if row_power > column_power * self._normal_twist:
                return None
        elif column_power > row_power * self._reverse_twist:
            return None
        peak = self._relative_peak
        for index in range(4):
            if index != row and rows[index] * peak > row_power:
                return None
            if index != column and columns[index] * peak > column_power:
                return None
        if row_power + column_power < self.settings.min_tone_fraction * energy:
            return None
        samples = first.samples + second.samples
        limit = self._harmonic
        if goertzel_power(samples, _COLUMN_HARMONICS[column]) * limit > column_power:
            return None
        if (
            _CLEAR_ROW_HARMONIC[row][column]
            and goertzel_power(samples, _ROW_HARMONICS[row]) * limit > row_power
        ):
            return None
        return KEYPAD[row][column]

    def _step(self, candidate: str | None) -> None:
        """Advance the start/end logic by one window."""
        window = self._window
        self._window = window + 1
        if candidate is not None and candidate == self._candidate:
            self._run += 1
        else:
            self._candidate = candidate
            self._run = 1 if candidate is not None else 0
        if self._digit is not None:
            if candidate == self._digit:
                self._last = window
                self._misses = 0
                return
            self._misses += 1
            if self._misses < self._misses_needed:
                return
            self._report()
        if candidate is not None and self._run >= self._hits_needed:
            self._digit = candidate
            self._first = window - self._run + 1
            self._last = window
            self._misses = 0

    def _report(self) -> None:
        """Emit the digit that just ended."""
        digit = self._digit
        assert digit is not None
        self._digit = None
        self._misses = 0
        self.digits += 1
        duration = (self._last - self._first + 1) * _HOP_MS
        self._deliver(DtmfEvent(digit, duration, SOURCE_INBAND))
