"""Recording of the switch's own calls, from the built-in relay's taps.

A call anchored by the built-in relay (C{media/relay.py}) passes every RTP
packet a party sends through the C{tap} of the relay end facing that party.
L{RelayCallRecorder} turns those packets into a WAV file through the media
server's L{media.server.recorder.Recorder} (same file naming, same
collision-free names, same WAV writer), in one of four modes:

  - C{stereo}: party A (the caller) on the left, party B on the right;
  - C{mixed}: both summed into one channel (half the size);
  - C{a} / C{b}: one party alone (mono).

B{Placement by RTP timestamp.}  Each party's audio is placed on the
recording's timeline (8 kHz samples since the recording started, pauses
excluded).  A source's first packet is placed where it arrives (the clock
reading the relay hands the tap); every later packet of the same SSRC is
placed by its RTP timestamp relative to that first one.  So:

  - lost packets, silence suppression and hold leave silence (zeros);
  - packets arriving out of order are put where they belong, as long as
    they come within L{REORDER_WINDOW} (0.2 s): the timeline is written to
    the file only up to C{now - REORDER_WINDOW}; a later packet is counted
    as late and dropped;
  - a new SSRC (the phone restarted its stream, a transfer) and a
    timestamp that lands more than L{RESYNC} (1 s) away from where the
    packet arrives (a sender restarting its clock, long clock drift) start
    a new placement at the arrival time;
  - only G.711 is decoded: PCMU (payload type 0) and PCMA (8).
    Telephone-event, comfort noise, RTCP multiplexed on the RTP port and
    every other payload type are skipped (counted), leaving silence.

B{Writing.}  Packets only fill a small in-memory buffer per party; a
timer on the injected clock (every L{FLUSH_INTERVAL}, 1 s) writes the
settled part to the file in one chunk (16 kB per second of stereo), so the
reactor does one buffered write per recording per second and never one
per packet.  A disk error stops that recording (the file keeps what was
written; the failure is counted and logged); the call goes on.

B{States} (C{media.server.recording.STATES}, the same as the media
server's): C{idle}, C{recording}, C{paused}, C{stopped}, driven by
C{start}, C{stop}, C{pause}, C{resume}.  Decision: a paused recording
writes nothing (as the media server's does): the file holds only what was
recorded, and its duration is the audio it holds.  C{stop} finishes the
file; a later C{start} opens a new one (in the mode it names).

Which calls are recorded, and the taps, are L{media.relay_recordings}'s.

B{Several producers, one CDR.}  The files of a call go into
C{call.data["recordings"]} (a list of C{{"path", "mode", "duration_ms",
"source"}}); a producer whose files are finished only later (the media
server's, reported in a BYE) registers a Deferred with
L{add_recording_wait}; the CDR plugin waits for all of them
(L{recording_waits}).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from media.server.g711 import alaw_decode, ulaw_decode
from media.server.pcm import RATE
from media.server.recorder import Recorder, Recording, RecordingError
from media.server.recording import ACTIONS, STATES, plan_action

__all__ = [
    "FLUSH_INTERVAL",
    "MODES",
    "POLICIES",
    "RECORDINGS",
    "RECORDINGS_SETTLED",
    "REORDER_WINDOW",
    "RESYNC",
    "SOURCE",
    "STATES",
    "ChannelPlacement",
    "RecordingMetrics",
    "RelayCallRecorder",
    "add_recording",
    "add_recording_wait",
    "recording_waits",
    "rtp_audio",
]

#: The recording modes (C{a}: the caller alone, C{b}: the callee alone).
MODES = ("stereo", "mixed", "a", "b")
#: The recording policies of an account (and of the switch, by default).
POLICIES = ("always", "on_demand", "never")
#: Seconds a packet may come late and still be placed in the file.
REORDER_WINDOW = 0.2
#: Seconds between two writes of a recording's settled audio to its file.
FLUSH_INTERVAL = 1.0
#: Seconds between where a packet's timestamp places it and where it
#: arrives beyond which the placement starts again at the arrival.
RESYNC = 1.0
#: The C{call.data} key of a call's recordings, and of the Deferreds to
#: wait for before its CDR is written.
RECORDINGS = "recordings"
RECORDINGS_SETTLED = "recordings_settled"
#: The C{source} of the files this module makes.
SOURCE = "relay"

_DECODERS: dict[int, Callable[[Any], bytes]] = {0: ulaw_decode, 8: alaw_decode}
_TIMESTAMP_SSRC = struct.Struct("!II")
_RECORDER_MODES = {"stereo": "stereo", "mixed": "mixed", "a": "mono", "b": "mono"}
_RESYNC_SAMPLES = int(RESYNC * RATE)
_TAIL_SAMPLES = RATE // 5

log = Logger()


# ---- several producers, one CDR ---------------------------------------------------


def add_recording(call: Any, path: str, mode: str, duration_ms: int, source: str) -> None:
    """Add one finished file to C{call.data["recordings"]}.

    @param call: the switch's call (anything with a C{data} dict).
    @param path: the file (absolute).
    @param mode: how it was recorded (C{stereo}, C{mixed}, C{a}, C{b} ...).
    @param duration_ms: the audio it holds.
    @param source: who made it (C{relay}, C{media_server}).
    """
    call.data.setdefault(RECORDINGS, []).append(
        {"path": path, "mode": mode, "duration_ms": int(duration_ms), "source": source})


def add_recording_wait(call: Any, d: Deferred[Any]) -> None:
    """Make the call's CDR wait for C{d} (a producer whose files are
    finished later): it should fire once its files are in
    C{call.data["recordings"]} (L{add_recording}).  Its failure is logged
    by the CDR plugin, which then writes the CDR with what is known; the
    CDR never waits longer than C{[plugins.cdrs] settle_timeout}.

    Call it before (or during) C{b2bua_call_ended}: the CDR plugin runs
    last and reads the list then.
    """
    call.data.setdefault(RECORDINGS_SETTLED, []).append(d)


def recording_waits(call: Any) -> list[Deferred[Any]]:
    """The Deferreds registered with L{add_recording_wait} (a single
    Deferred stored under the key is accepted too)."""
    value = call.data.get(RECORDINGS_SETTLED)
    if isinstance(value, Deferred):
        return [value]
    if isinstance(value, list | tuple):
        return [d for d in value if isinstance(d, Deferred)]
    return []


# ---- RTP to PCM ------------------------------------------------------------------


def rtp_audio(data: bytes) -> tuple[int, int, int, int, int] | None:
    """Read a G.711 RTP packet: C{(payload type, timestamp, ssrc, start,
    end)}, where C{data[start:end]} is the payload (CSRCs, header
    extension and padding skipped).

    @return: C{None} for anything else: not RTP version 2, too short, a
        payload type other than 0 (PCMU) or 8 (PCMA), an empty payload.
    """
    size = len(data)
    if size < 12:
        return None
    first = data[0]
    if first >> 6 != 2:
        return None
    payload_type = data[1] & 0x7F
    if payload_type not in _DECODERS:
        return None
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if size < start + 4:
            return None
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    end = size - data[-1] if first & 0x20 else size
    if end <= start:
        return None
    timestamp, ssrc = _TIMESTAMP_SSRC.unpack_from(data, 4)
    return payload_type, timestamp, ssrc, start, end


class ChannelPlacement:
    """One party's audio on the recording's timeline (module docstring).

    Samples from L{base} on are held in L{pcm} (16-bit little-endian)
    until L{take} hands them to the file.

    @ivar base: the timeline position of the first sample held.
    @ivar packets: packets placed.
    @ivar late: packets dropped for coming after their place was written.
    @ivar skipped: packets that are not G.711 RTP (telephone-event ...).
    @ivar resyncs: placements started again (new SSRC, timestamp jump).
    """

    __slots__ = ("anchor_position", "anchor_timestamp", "base", "late", "packets", "pcm",
                 "resyncs", "skipped", "ssrc")

    def __init__(self, base: int = 0) -> None:
        """Start empty at timeline position C{base}."""
        self.pcm = bytearray()
        self.base = base
        self.ssrc: int | None = None
        self.anchor_timestamp = 0
        self.anchor_position = 0
        self.packets = 0
        self.late = 0
        self.skipped = 0
        self.resyncs = 0

    @property
    def end(self) -> int:
        """The timeline position just after the last sample held."""
        return self.base + len(self.pcm) // 2

    def restart(self, base: int) -> None:
        """Forget what is held and the placement: the next packet starts
        a new one (after a pause)."""
        self.pcm.clear()
        self.base = base
        self.ssrc = None

    def place(self, data: bytes, arrival: int) -> None:
        """Decode one RTP packet and put it where its timestamp says.

        @param data: the packet as the party sent it.
        @param arrival: the timeline position of its arrival.
        """
        parsed = rtp_audio(data)
        if parsed is None:
            self.skipped += 1
            return
        payload_type, timestamp, ssrc, start, end = parsed
        if ssrc != self.ssrc:
            position = self._anchor(ssrc, timestamp, arrival)
        else:
            delta = (timestamp - self.anchor_timestamp) & 0xFFFFFFFF
            if delta & 0x80000000:
                delta -= 0x100000000
            position = self.anchor_position + delta
            if position - arrival > _RESYNC_SAMPLES or arrival - position > _RESYNC_SAMPLES:
                position = self._anchor(ssrc, timestamp, arrival)
        offset = position - self.base
        if offset < 0:  # its place (or part of it) is written already
            start -= offset
            if start >= end:
                self.late += 1
                return
            offset = 0
        pcm = _DECODERS[payload_type](memoryview(data)[start:end])
        first = 2 * offset
        last = first + len(pcm)
        held = len(self.pcm)
        if last > held:
            self.pcm.extend(bytes(last - held))
        self.pcm[first:last] = pcm
        self.packets += 1

    def _anchor(self, ssrc: int, timestamp: int, arrival: int) -> int:
        if self.ssrc is not None:
            self.resyncs += 1
        self.ssrc = ssrc
        self.anchor_timestamp = timestamp
        self.anchor_position = arrival
        return arrival

    def take(self, count: int) -> bytes:
        """The next C{count} samples (silence where nothing came); they
        are forgotten and L{base} moves past them."""
        size = 2 * count
        chunk = bytes(self.pcm[:size])
        del self.pcm[:size]
        self.base += count
        if len(chunk) < size:
            chunk += bytes(size - len(chunk))
        return chunk


# ---- metrics ---------------------------------------------------------------------


class RecordingMetrics:
    """Counters of the switch's call recordings (through the relay)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        """Register the counters in C{registry}."""
        self.started = Counter("b2bua_media_call_recordings_started_total",
                               "Call recordings (files) started through the relay.",
                               registry=registry)
        self.finished = Counter("b2bua_media_call_recordings_finished_total",
                                "Call recordings (files) finished.", registry=registry)
        self.failed = Counter("b2bua_media_call_recordings_failed_total",
                              "Call recordings that could not be created or were cut by a "
                              "write error.", registry=registry)
        self.bytes = Counter("b2bua_media_call_recording_bytes_total",
                             "Bytes of audio written to call recordings.", registry=registry)


# ---- one call --------------------------------------------------------------------


class RelayCallRecorder:
    """The recordings of one switch call, fed by the relay's taps.

    The plugin points the taps of the call's audio ends at L{tap_a} and
    L{tap_b}; they do nothing unless a recording runs.

    @ivar state: one of L{STATES}.
    @ivar mode: the current (or last) file's mode, one of L{MODES}.
    @ivar finished: every file finished, in order.
    """

    def __init__(self, clock: IReactorTime, directory: str | Path, call_id: str, *,
                 metrics: RecordingMetrics | None = None,
                 token: Callable[[], str] | None = None,
                 flush_interval: float = FLUSH_INTERVAL) -> None:
        """
        @param clock: the time source (the relay's), for the timeline, the
            flush timer and the file names' dates.
        @param directory: where the files go.
        @param call_id: the switch call's id (part of the file names).
        @param metrics: where to count (optional).
        @param token: the random part of the names (tests inject it).
        @param flush_interval: seconds between writes to the file.
        """
        self._clock = clock
        self.directory = Path(directory)
        self.call_id = call_id
        self._metrics = metrics
        self._token = token
        self._flush_interval = flush_interval
        self.state = "idle"
        self.mode = "stereo"
        self.finished: list[Recording] = []
        self._finished_modes: list[str] = []
        self._recorder: Recorder | None = None
        self._a = ChannelPlacement()
        self._b = ChannelPlacement()
        self._take_a = self._take_b = True
        self._origin = 0.0
        self._written = 0
        self._timer: LoopingCall | None = None
        self._closed = False

    # -- the taps (hot path) -----------------------------------------------------------

    def tap_a(self, data: bytes, now: float) -> None:
        """A packet from party A (the relay end's C{tap})."""
        if self.state == "recording" and self._take_a:
            self._a.place(data, int((now - self._origin) * RATE))

    def tap_b(self, data: bytes, now: float) -> None:
        """A packet from party B."""
        if self.state == "recording" and self._take_b:
            self._b.place(data, int((now - self._origin) * RATE))

    # -- control -----------------------------------------------------------------------

    def control(self, action: str, mode: str | None = None) -> str:
        """Start, stop, pause or resume (the API and the policy).

        An action already in effect changes nothing (C{start} while
        recording, C{pause} while paused, C{stop} when nothing records).

        @param mode: for C{start}, one of L{MODES} (default C{stereo});
            ignored otherwise.
        @return: the state after it.
        @raise ValueError: for an unknown action or mode.
        @raise RecordingConflict: C{pause}/C{resume} with nothing
            recording, C{start} while paused, anything after the call.
        @raise RecordingError: when the file cannot be created.
        """
        if action in ACTIONS and mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        step = plan_action(action, self.state, self._closed)
        if step == "start":
            self._start(mode or "stereo")
        elif step == "stop":
            self._finish()
        elif step == "pause":
            now = self._clock.seconds()
            self._flush(self._final(now))
            self._stop_timer()
            if self.state == "recording":  # a write error may have stopped it
                self.state = "paused"
        elif step == "resume":
            # the timeline goes on from what the file holds (the pause is not in it)
            self._origin = self._clock.seconds() - self._written / RATE
            self._a.restart(self._written)
            self._b.restart(self._written)
            self.state = "recording"
            self._start_timer()
        return self.state

    def _start(self, mode: str) -> None:
        try:
            self._recorder = Recorder.create(
                self.directory, self.call_id, clock=self._clock, mode=_RECORDER_MODES[mode],
                **({} if self._token is None else {"token": self._token}))
        except RecordingError:
            if self._metrics is not None:
                self._metrics.failed.inc()
            raise
        self.mode = mode
        self._take_a = mode != "b"
        self._take_b = mode != "a"
        self._origin = self._clock.seconds()
        self._written = 0
        self._a = ChannelPlacement()
        self._b = ChannelPlacement()
        self.state = "recording"
        if self._metrics is not None:
            self._metrics.started.inc()
        self._start_timer()

    def status(self) -> dict[str, object]:
        """The recording as the API shows it: state, mode, the current
        file and its duration so far, the files finished."""
        current = self._recorder
        return {
            "state": self.state,
            "mode": self.mode,
            "path": str(current.path) if current is not None else None,
            "duration_ms": current.duration_ms if current is not None else None,
            "recordings": [{"path": str(r.path), "mode": m, "duration_ms": r.duration_ms}
                           for r, m in zip(self.finished, self._finished_modes, strict=True)],
        }

    # -- the file ----------------------------------------------------------------------

    def flush(self) -> None:
        """Write what has settled (older than L{REORDER_WINDOW}) to the
        file (the timer calls it)."""
        if self.state == "recording":
            now = self._clock.seconds()
            self._flush(int((now - REORDER_WINDOW - self._origin) * RATE))

    def _final(self, now: float) -> int:
        """Where the timeline ends when the recording pauses or stops:
        now, plus the tail of the last packets (at most 0.2 s)."""
        position = int((now - self._origin) * RATE)
        end = max(position, self._a.end if self._take_a else 0,
                  self._b.end if self._take_b else 0)
        return min(end, position + _TAIL_SAMPLES)

    def _flush(self, until: int) -> None:
        count = until - self._written
        recorder = self._recorder
        if count <= 0 or recorder is None:
            return
        mode = self.mode
        if mode == "a":
            written = recorder.write(self._a.take(count))
        elif mode == "b":
            written = recorder.write(self._b.take(count))
        else:
            written = recorder.write(self._a.take(count), self._b.take(count))
        self._written = until
        if self._metrics is not None:
            self._metrics.bytes.inc(2 * count * (2 if mode == "stereo" else 1))
        if not written:
            log.warn("call recording: {path} of {call_id} stopped: {error}",
                     path=str(recorder.path), call_id=self.call_id,
                     error=recorder.error or "limit reached")
            if self._metrics is not None:
                self._metrics.failed.inc()
            self._finish(flush=False)

    def _finish(self, flush: bool = True) -> None:
        """Write the rest, close the file, keep its report."""
        if flush and self.state == "recording":
            self._flush(self._final(self._clock.seconds()))
        self._stop_timer()
        recorder, self._recorder = self._recorder, None
        if self.state in ("recording", "paused"):
            self.state = "stopped"
        if recorder is None:
            return
        self.finished.append(recorder.close())
        self._finished_modes.append(self.mode)
        if self._metrics is not None:
            self._metrics.finished.inc()

    def _start_timer(self) -> None:
        if self._timer is None:
            timer = LoopingCall(self.flush)
            timer.clock = self._clock
            timer.start(self._flush_interval, now=False)
            self._timer = timer

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.running:
            timer.stop()

    # -- the end -----------------------------------------------------------------------

    def close(self) -> list[tuple[Recording, str]]:
        """The call ended: finish the file (idempotent).

        @return: every file finished, with the mode it was recorded in.
        """
        if not self._closed:
            self._finish()
            self._closed = True
        return list(zip(self.finished, self._finished_modes, strict=True))
