"""Benchmark: concurrent IVR calls the media server carries on one core.

A server process (this script with C{--server-child}: the Twisted epoll
reactor and a L{media.server.ua.MediaServerUA}, pinned to CPU 0) answers
calls to the flow C{bench}: a C{collect} node that plays a long synthetic
prompt (a minute of changing two-tone audio, written to a temporary prompt
set) with barge-in and waits for three digits; C{123} hangs up with the
cause C{pin_ok}.  The load process (this script, pinned to CPU 1, plain
sockets, no Twisted) plays the callers.  Per step of N calls:

  1. N INVITEs with a minimal SDP offer (PCMU + telephone-event, C{a=rtcp}
     to a sink socket) at C{--cps} calls per second over UDP on loopback;
     every 200 is ACKed.  From its ACK on, each caller sends 20 ms PCMU
     packets to the server, as a phone does, and receives the server's.
  2. 0.5 s to settle, then the measured window of C{--step-seconds}: every
     call hears the prompt while its collector waits.
  3. Each caller sends the digits 1 2 3 as RFC 4733 telephone-events (the
     callers' start times spread over one second); the server's BYE must
     carry C{text="pin_ok"} (the flow really collected the digits) and is
     answered 200.  The window ends when every call is over.

Lateness is measured B{at the server}, without changing its code: the
child replaces the C{RtpSession} class the user agent builds with a
subclass whose C{start()} wraps the session's C{source}.  The source is
called once per frame, just before the frame is encoded and sent; frame
C{k} (counted from the RTP timestamp) is due C{k x 20 ms} after the
session's C{epoch} (the shared pacer's phase it joined, at most 20 ms
before its start; the first frame is sent synchronously at start and
counts as on time), so its lateness is C{now - (epoch + k x 20 ms)}.
Frames the session skipped after a stall count as late.  The load
process also measures, for information, how late the server's packets
arrive (arrival minus C{k x 20 ms}, against the earliest such offset of
the call).

A step passes when at most C{--late-fraction} (1 %) of the frames in the
window ran more than C{--late-ms} (5 ms) behind their schedule, every call
was answered and every call ended with C{pin_ok}.  N follows C{--steps}
(50, 100, 150, 200, 300, ...) until a step fails, then is bisected between
the last pass and the first failure until they are within 10 % or the
C{--budget} is used.  A failed step is run once more (C{--retries}) before it
counts, since on a shared machine another process can take CPU 0 for a
while.  One line per step, then the summary line.

Usage::

    .venv/bin/python bench/media_server.py [--step-seconds 8] [--budget 240]
        [--steps 50,100,150,200,300,400,600,800] [--cps 200]

Loopback only; the server process is stopped at the end, also on errors,
Ctrl-C and SIGTERM.  Exits 0 when a step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
PTIME = 0.020
FRAME_SAMPLES = 160
#: Send slots per 20 ms in the load process; calls are spread over them.
SLOTS = 20
#: RTP sockets in the load process; calls are spread over them.
SOCKETS = 8
TE_PAYLOAD_TYPE = 101
#: Entered once by every caller during the measured window (the prompt restarts).
PIN = "123"
#: Entered by every caller after the window: the flow hangs up with C{pin_ok}.
LAST_PIN = "999"
PIN_OK_TEXT = 'text="pin_ok"'
#: Lateness histogram: 0.1 ms buckets up to 1 s.
BUCKETS = 10001

FLOW = """
[flow]
name = "bench"
start = "ask"
max_duration = 600

[nodes.ask]
type = "collect"
prompt = "bench-tone"
barge_in = true
variable = "pin"
max_digits = 3
first_digit_timeout = 120
inter_digit_timeout = 5
retries = 0
on_timeout = "wrong"
on_invalid = "wrong"
next = "check"

[nodes.check]
type = "branch"
variable = "pin"
cases = { "123" = "ask", "999" = "right" }
default = "wrong"

[nodes.right]
type = "hangup"
cause = "pin_ok"

[nodes.wrong]
type = "hangup"
cause = "pin_wrong"
"""

_RTP = struct.Struct("!BBHII")


def _cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _preempted() -> int:
    """How often this process was switched out while it could run."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _percentile(buckets: list[int], total: int, fraction: float) -> float:
    """A percentile in milliseconds of a 0.1 ms histogram."""
    wanted = fraction * max(1, total)
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= wanted:
            return index / 10.0
    return (len(buckets) - 1) / 10.0


# ---- the server process -----------------------------------------------------


def tone_prompt(seconds: int) -> bytes:
    """C{seconds} of 8 kHz 16-bit PCM: a two-tone chord changing every
    half second (so every frame really has to be encoded)."""
    samples = array("h")
    chords = [(440.0, 620.0), (523.0, 784.0), (350.0, 900.0), (697.0, 1209.0)]
    block = 4000
    for number in range(seconds * 2):
        low, high = chords[number % len(chords)]
        step_low, step_high = 2 * math.pi * low / 8000, 2 * math.pi * high / 8000
        samples.extend(
            int(6000 * math.sin(step_low * n) + 6000 * math.sin(step_high * n))
            for n in range(block)
        )
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


class Lateness:
    """How far behind its 20 ms schedule each frame of each session ran."""

    def __init__(self, late_limit: float) -> None:
        self.late_limit = late_limit
        self.reset()

    def reset(self) -> None:
        """Start a new window."""
        self.frames = 0
        self.late = 0
        self.skipped = 0
        self.worst = 0.0
        self.buckets = [0] * BUCKETS

    def report(self) -> dict[str, Any]:
        """The window's figures."""
        return {
            "frames": self.frames,
            "late": self.late,
            "skipped": self.skipped,
            "worst_ms": self.worst * 1000.0,
            "p99_ms": _percentile(self.buckets, self.frames, 0.99),
            "p999_ms": _percentile(self.buckets, self.frames, 0.999),
        }


def run_server(sip_port: int, first_port: int, last_port: int, late_ms: float) -> None:
    """The server process: a MediaServerUA driven by a line protocol on stdin."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver

    sys.path.insert(0, str(ROOT))
    from media.ports import PortPool
    from media.server import ua as ua_module
    from media.server.ivr import load_flow
    from media.server.ivr_actions import builtin_actions
    from media.server.prompts import PromptSet
    from media.server.rtp_session import RtpSession
    from media.server.wav import write_wav

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    (workdir / "en").mkdir()
    write_wav(workdir / "en" / "bench-tone.wav", tone_prompt(60))
    prompts = PromptSet.open(workdir, "en")
    prompts.audio("bench-tone")
    lateness = Lateness(late_ms / 1000.0)
    seconds = reactor.seconds

    class MeasuredSession(RtpSession):
        """An RtpSession whose source notes how late each frame is asked for."""

        def start(self) -> None:
            inner = self.source
            state: list[Any] = [None, 0, 0]  # first call time, its timestamp, last frame

            def source() -> bytes | None:
                now = seconds()
                stamp = self.timestamp
                if state[0] is None:
                    epoch = getattr(self, "epoch", None)  # older sessions: the first frame
                    state[0], state[1] = (now if epoch is None else epoch), stamp
                frame = ((stamp - state[1]) & 0xFFFFFFFF) // FRAME_SAMPLES
                stats = lateness
                if frame > state[2] + 1:
                    stats.skipped += frame - state[2] - 1
                state[2] = frame
                late = now - state[0] - frame * PTIME if frame else 0.0
                stats.frames += 1
                if late > stats.late_limit:
                    stats.late += 1
                if late > stats.worst:
                    stats.worst = late
                stats.buckets[min(max(int(late * 10000), 0), BUCKETS - 1)] += 1
                return inner() if inner is not None else None

            self.source = source
            super().start()

    ua_module.RtpSession = MeasuredSession  # type: ignore[misc]
    actions = builtin_actions()
    flow = load_flow(FLOW, source="bench.toml", actions=actions)
    pool = PortPool(first_port, last_port)
    results: Counter[str] = Counter()
    ua = ua_module.MediaServerUA(
        reactor, listen=(HOST, sip_port), flows={"bench": flow}, actions=actions,
        prompts=prompts, port_pool=pool,
        on_result=lambda _flow, result: results.update([f"{result.outcome}:{result.detail}"]),
        user_agent="media-server-bench",
    )
    ua.start()
    marks: dict[str, float] = {}

    class Control(LineReceiver):
        delimiter = b"\n"

        def connectionMade(self) -> None:
            self.reply(ready=True)

        def lineReceived(self, line: bytes) -> None:
            command = json.loads(line)["cmd"]
            if command == "mark":
                lateness.reset()
                results.clear()
                marks.update(cpu=_cpu_seconds(), wall=time.monotonic(), preempted=_preempted())
                self.reply(marked=True)
            elif command == "report":
                wall = time.monotonic() - marks["wall"]
                cpu = (_cpu_seconds() - marks["cpu"]) / wall
                self.reply(**lateness.report(), cpu=cpu, wall=wall, results=dict(results),
                           preempted=_preempted() - marks["preempted"])
            elif command == "status":
                self.reply(active=ua.active(), free=pool.free, capacity=pool.capacity)
            elif command == "quit":
                ua.stop().addBoth(lambda _: reactor.stop())

        def connectionLost(self, reason: object = None) -> None:
            if reactor.running:
                reactor.stop()

        def reply(self, **fields: Any) -> None:
            self.sendLine(json.dumps(fields).encode())

    stdio.StandardIO(Control())
    try:
        reactor.run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the load process -------------------------------------------------------


#: The CPUs this process may use, read before it pins itself.
CPUS = frozenset(os.sched_getaffinity(0))


def _pin(pid: int, cpu: int) -> None:
    """Pin a process (0: this one) to one CPU when there is more than one."""
    if len(CPUS) > 1 and cpu in CPUS:
        os.sched_setaffinity(pid, {cpu})


def _socket(port: int = 0) -> socket.socket:
    """A non-blocking loopback UDP socket with large buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
    sock.bind((HOST, port))
    sock.setblocking(False)
    return sock


def _free_port() -> int:
    """A UDP port free on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """The server child process and its control pipe."""

    def __init__(self, args: argparse.Namespace, sip_port: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--server-child", f"--sip-port={sip_port}",
             f"--ports={args.ports}", f"--late-ms={args.late_ms}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
        )
        _pin(self.process.pid, args.server_cpu)
        assert self.process.stdout is not None
        self.fd = self.process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.replies: deque[dict[str, Any]] = deque()

    def send(self, command: str) -> None:
        """Send one command; its reply arrives through L{readable}."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": command}).encode() + b"\n")
        self.process.stdin.flush()

    def readable(self) -> None:
        """Read what the child wrote; complete lines become replies."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError("the server process exited")
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self.replies.extend(json.loads(line) for line in lines if line.strip())

    def stop(self) -> None:
        """Stop the child (politely, then not) and its whole session."""
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(3)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


@dataclass(eq=False)
class Call:
    """One caller."""

    number: int
    call_id: str
    tag: str
    sock: int
    slot: int
    ssrc: int
    state: str = "new"  # new, inviting, up, ended, failed
    invited_at: float = 0.0
    to: str = ""
    request_uri: str = ""
    remote: tuple[str, int] | None = None
    sequence: int = 0
    timestamp: int = 0
    events: deque[tuple[float, bytes]] = field(default_factory=deque)
    reason: str = ""
    first: tuple[float, int] | None = None
    earliest: float = 0.0


class Load:
    """The callers: SIP over one socket, RTP over a few, on one event loop."""

    def __init__(self, server: Server, server_sip: tuple[str, int], args: argparse.Namespace,
                 late: float) -> None:
        self.server = server
        self.server_sip = server_sip
        self.args = args
        self.late_limit = late
        self.sip = _socket()
        self.sip_port = self.sip.getsockname()[1]
        self.rtp = [_socket() for _ in range(SOCKETS)]
        self.rtp_ports = [s.getsockname()[1] for s in self.rtp]
        self.rtcp = _socket()
        self.poller = select.epoll()
        self.handlers: dict[int, Any] = {self.sip.fileno(): self._sip_readable,
                                         self.rtcp.fileno(): self._drain_rtcp,
                                         server.fd: server.readable}
        for index, sock in enumerate(self.rtp):
            self.handlers[sock.fileno()] = lambda index=index: self._rtp_readable(index)
        for fd in self.handlers:
            self.poller.register(fd, select.EPOLLIN)
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        import media.server.dtmf  # noqa: F401  (imported now, not in a measured window)

        self.start = time.monotonic()
        self.tick = 0
        self.buffer = bytearray(2048)
        self.new_step(0)

    def close(self) -> None:
        """Close the sockets."""
        self.poller.close()
        for sock in [self.sip, self.rtcp, *self.rtp]:
            sock.close()

    def new_step(self, size: int) -> None:
        """Forget the last step; make C{size} callers."""
        step = getattr(self, "step_number", 0) + 1
        self.step_number = step
        self.calls = [Call(n, f"msb-{step}-{n}-{os.getpid()}@{HOST}", f"t{step}x{n}",
                           n % SOCKETS, n % SLOTS, 0x10000 * step + n)
                      for n in range(size)]
        self.by_id = {call.call_id: call for call in self.calls}
        self.by_remote: dict[tuple[int, int], Call] = {}
        self.slots: list[list[Call]] = [[] for _ in range(SLOTS)]
        self.invites: deque[tuple[float, Call]] = deque()
        self.received = 0
        self.rx_late = 0
        self.rx_buckets = [0] * BUCKETS
        self.behind = 0.0
        self.late_slots = 0

    # -- the event loop ---------------------------------------------------------

    def pump(self, seconds: float, done: Any = None) -> bool:
        """Run for C{seconds} or until C{done()}; whether C{done()} came true."""
        deadline = time.monotonic() + seconds
        while True:
            if done is not None and done():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            due = self.start + (self.tick + 1) * (PTIME / SLOTS)
            self._receive_until(min(due, deadline))
            now = time.monotonic()
            while self.start + (self.tick + 1) * (PTIME / SLOTS) <= now:
                self.tick += 1
                behind = now - (self.start + self.tick * (PTIME / SLOTS))
                if behind > self.behind:
                    self.behind = behind
                if behind > self.late_limit:
                    self.late_slots += 1
                self._send_slot(self.tick % SLOTS, now)

    def _receive_until(self, due: float) -> None:
        while True:
            wait = due - time.monotonic()
            events = self.poller.poll(wait if wait > 0 else 0)
            if not events:
                return
            for fd, _ in events:
                self.handlers[fd]()

    def _send_slot(self, slot: int, now: float) -> None:
        while self.invites and self.invites[0][0] <= now:
            self._invite(self.invites.popleft()[1], now)
        payload = b"\xff" * FRAME_SAMPLES
        for call in self.slots[slot]:
            if call.state != "up":
                continue
            send = self.rtp[call.sock].sendto
            while call.events and call.events[0][0] <= now:
                send(self._rtp(call, call.events.popleft()[1], advance=False), call.remote)
            send(self._rtp(call, payload, advance=True), call.remote)

    def _rtp(self, call: Call, body: bytes, *, advance: bool) -> bytes:
        """An RTP packet: audio (PCMU, timestamp grows) or an event (prebuilt
        header byte and timestamp in C{body}[:5])."""
        if advance:
            header = _RTP.pack(0x80, 0, call.sequence, call.timestamp, call.ssrc)
            call.timestamp = (call.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        else:
            marker_pt, stamp = struct.unpack_from("!BI", body)
            header = _RTP.pack(0x80, marker_pt, call.sequence, stamp, call.ssrc)
            body = body[5:]
        call.sequence = (call.sequence + 1) & 0xFFFF
        return header + body

    # -- SIP ----------------------------------------------------------------------

    def _invite(self, call: Call, now: float) -> None:
        port = self.rtp_ports[call.sock]
        sdp = (f"v=0\r\no=load {call.number} 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\n"
               f"t=0 0\r\nm=audio {port} RTP/AVP 0 {TE_PAYLOAD_TYPE}\r\n"
               f"a=rtpmap:0 PCMU/8000\r\na=rtpmap:{TE_PAYLOAD_TYPE} telephone-event/8000\r\n"
               f"a=fmtp:{TE_PAYLOAD_TYPE} 0-15\r\na=rtcp:{self.rtcp.getsockname()[1]}\r\n"
               f"a=ptime:20\r\na=sendrecv\r\n").encode()
        host, sport = self.server_sip
        call.state, call.invited_at = "inviting", now
        self._send_sip(
            f"INVITE sip:bench@{host}:{sport} SIP/2.0", call, "INVITE", 1,
            to=f"<sip:bench@{host}>", body=sdp,
            extra=[f"Contact: <sip:load@{HOST}:{self.sip_port}>",
                   "Content-Type: application/sdp"])

    def _send_sip(self, start_line: str, call: Call, method: str, cseq: int, *, to: str,
                  body: bytes = b"", extra: list[str] | None = None) -> None:
        lines = [start_line,
                 f"Via: SIP/2.0/UDP {HOST}:{self.sip_port};branch=z9hG4bK{call.tag}{method}"
                 f";rport",
                 "Max-Forwards: 70",
                 f"From: <sip:load@{HOST}>;tag={call.tag}",
                 f"To: {to}", f"Call-ID: {call.call_id}", f"CSeq: {cseq} {method}",
                 *(extra or []), f"Content-Length: {len(body)}", "", ""]
        self.sip.sendto("\r\n".join(lines).encode() + body, self.server_sip)

    def _sip_readable(self) -> None:
        while True:
            try:
                data, addr = self.sip.recvfrom(65536)
            except BlockingIOError:
                return
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("utf-8", "replace").split("\r\n")
            headers: dict[str, list[str]] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = _COMPACT.get(name.strip().lower(), name.strip().lower())
                headers.setdefault(name, []).append(value.strip())
            call = self.by_id.get((headers.get("call-id") or [""])[0])
            if lines[0].startswith("SIP/2.0 "):
                if call is not None:
                    self._response(call, int(lines[0].split()[1]), headers, body)
            elif lines[0].startswith("BYE "):
                self._answer_bye(lines, headers, addr, call)

    def _response(self, call: Call, code: int, headers: dict[str, list[str]],
                  body: bytes) -> None:
        method = (headers.get("cseq") or ["0 X"])[0].split()[-1]
        if method != "INVITE" or code < 200:
            return
        if code >= 300:
            call.state, call.reason = "failed", f"INVITE answered {code}"
            return
        if call.state == "inviting":
            match = _SDP_PORT.search(body)
            contact = _CONTACT.search((headers.get("contact") or [""])[0])
            if match is None or contact is None:
                call.state, call.reason = "failed", "200 without SDP port or Contact"
                return
            call.remote = (HOST, int(match.group(1)))
            call.to = headers["to"][0]
            call.request_uri = contact.group(1)
            self.by_remote[(call.sock, call.remote[1])] = call
            self.slots[call.slot].append(call)
            call.state = "up"
        if call.state in ("up", "ended"):
            self._send_sip(f"ACK {call.request_uri} SIP/2.0", call, "ACK", 1, to=call.to)

    def _answer_bye(self, lines: list[str], headers: dict[str, list[str]],
                    addr: tuple[str, int], call: Call | None) -> None:
        keep = [line for line in lines[1:]
                if _COMPACT.get(line.partition(":")[0].strip().lower(),
                                line.partition(":")[0].strip().lower())
                in ("via", "from", "to", "call-id", "cseq")]
        response = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""])
        self.sip.sendto(response.encode(), addr)
        if call is not None and call.state == "up":
            call.state = "ended"
            call.reason = (headers.get("reason") or ["(no Reason)"])[0]

    # -- RTP in ---------------------------------------------------------------------

    def _rtp_readable(self, index: int) -> None:
        sock = self.rtp[index]
        buffer = self.buffer
        by_remote = self.by_remote
        late_limit = self.late_limit
        while True:
            try:
                _size, addr = sock.recvfrom_into(buffer)
            except BlockingIOError:
                return
            now = time.monotonic()
            call = by_remote.get((index, addr[1]))
            if call is None:
                continue
            stamp = int.from_bytes(buffer[4:8], "big")
            if call.first is None:
                call.first = (now, stamp)
                call.earliest = now
            frame = ((stamp - call.first[1]) & 0xFFFFFFFF) / FRAME_SAMPLES
            offset = now - frame * PTIME
            if offset < call.earliest:
                call.earliest = offset
            late = offset - call.earliest
            self.received += 1
            if late > late_limit:
                self.rx_late += 1
            self.rx_buckets[min(int(late * 10000), BUCKETS - 1)] += 1

    def _drain_rtcp(self) -> None:
        while True:
            try:
                self.rtcp.recv(2048)
            except BlockingIOError:
                return

    # -- a step ---------------------------------------------------------------------

    def ask(self, command: str, timeout: float = 10.0) -> dict[str, Any]:
        """Send a command to the server and keep the calls running until
        its reply."""
        self.server.replies.clear()
        self.server.send(command)
        if not self.pump(timeout, lambda: bool(self.server.replies)):
            raise RuntimeError(f"the server did not answer {command!r}")
        return self.server.replies.popleft()

    def run_step(self, size: int) -> dict[str, Any]:
        """Set up C{size} calls, measure, send the digits, end; the figures."""
        self.new_step(size)
        now = time.monotonic()
        # A random offset within 20 ms on top of the set-up rate: otherwise a
        # rate dividing 50/s would start the sessions on a few 20 ms phases
        # only, and their ticks would all fall due together.
        chance = random.Random(size)
        for call in self.calls:
            offset = chance.uniform(0.0, PTIME)
            self.invites.append((now + call.number / self.args.cps + offset, call))
        self.invites = deque(sorted(self.invites, key=lambda entry: entry[0]))
        self.pump(size / self.args.cps + 5.0,
                  lambda: all(c.state not in ("new", "inviting") for c in self.calls))
        answered = sum(c.state == "up" for c in self.calls)
        for call in self.calls:
            if call.state in ("new", "inviting"):
                call.state, call.reason = "failed", "no answer"
        self.pump(0.5)
        self.ask("mark")
        load_cpu = _cpu_seconds()
        self.received = self.rx_late = 0
        self.rx_buckets = [0] * BUCKETS
        self.behind, self.late_slots = 0.0, 0
        wall = time.monotonic()
        window = self.args.step_seconds
        self._send_digits(PIN, wall + 0.5, max(0.5, window - 2.0))
        self.pump(window)
        server = self.ask("report")
        wall = time.monotonic() - wall
        load_cpu = (_cpu_seconds() - load_cpu) / wall
        received, rx_late = self.received, self.rx_late
        rx_p99 = _percentile(self.rx_buckets, received, 0.99)
        behind, late_slots = self.behind, self.late_slots
        self._send_digits(LAST_PIN, time.monotonic(), 1.0)
        self.pump(8.0, lambda: all(c.state != "up" for c in self.calls))
        hung_up = [c for c in self.calls if c.state == "up"]
        for call in hung_up:  # the flow did not end it: hang up ourselves
            call.state = "ended"
            call.reason = "no BYE from the server"
            self._send_sip(f"BYE {call.request_uri} SIP/2.0", call, "BYE", 2, to=call.to)
        status = self.ask("status")
        deadline = time.monotonic() + 5.0
        while (status["active"] or status["free"] != status["capacity"]) and \
                time.monotonic() < deadline:
            self.pump(0.2)
            status = self.ask("status")
        reasons = Counter(c.reason for c in self.calls)
        pin_ok = sum(PIN_OK_TEXT in c.reason for c in self.calls)
        frames = max(1, server["frames"])
        late_fraction = (server["late"] + server["skipped"]) / (frames + server["skipped"])
        return {
            "calls": size, "answered": answered, "pin_ok": pin_ok,
            "reasons": {k: v for k, v in reasons.items() if PIN_OK_TEXT not in k},
            "server": server, "late_fraction": late_fraction, "wall": wall,
            "load_cpu": load_cpu, "behind_ms": behind * 1000.0,
            "late_slots": late_slots, "received": received, "rx_late": rx_late,
            "rx_p99_ms": rx_p99,
            "left": status["active"], "pool_full": status["free"] == status["capacity"],
            "passed": (answered == size and pin_ok == size
                       and late_fraction <= self.args.late_fraction),
        }

    def _send_digits(self, digits: str, begin: float, spread: float) -> None:
        """Queue the RFC 4733 packets of C{digits} (100 ms presses, 300 ms
        apart) for every caller, their start times spread evenly over
        C{spread} seconds from C{begin}."""
        from media.server.dtmf import telephone_event_packets

        for call in self.calls:
            if call.state != "up":
                continue
            first = begin + spread * call.number / max(1, len(self.calls))
            # The press starts at the timestamp the call's audio has then.
            stamp = call.timestamp + int((first - time.monotonic()) * 8000)
            for index, digit in enumerate(digits):
                start = first + index * 0.3
                press_stamp = (stamp + int(index * 0.3 * 8000)) & 0xFFFFFFFF
                for packet in telephone_event_packets(digit, 100, press_stamp):
                    marker_pt = (0x80 if packet.marker else 0) | TE_PAYLOAD_TYPE
                    call.events.append((start + packet.send_at_ms / 1000.0,
                                        struct.pack("!BI", marker_pt, packet.timestamp)
                                        + packet.payload))


_COMPACT = {"i": "call-id", "t": "to", "f": "from", "v": "via", "m": "contact", "l":
            "content-length", "c": "content-type"}
_SDP_PORT = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)
_CONTACT = re.compile(r"<([^>]+)>")


def describe(result: dict[str, Any]) -> str:
    """One line for a step."""
    server = result["server"]
    verdict = "pass" if result["passed"] else "FAIL"
    problems = ""
    if result["reasons"]:
        problems = " (" + ", ".join(f"{n} x {r}" for r, n in result["reasons"].items()) + ")"
    return (
        f"{result['calls']:4d} calls: answered {result['answered']}, pin_ok "
        f"{result['pin_ok']}{problems}; server frames {server['frames']:,}, "
        f">{_LATE_MS:g} ms late {server['late'] + server['skipped']} "
        f"({result['late_fraction']:.2%}), p99 {server['p99_ms']:.1f} ms, "
        f"p99.9 {server['p999_ms']:.1f} ms, max {server['worst_ms']:.1f} ms, "
        f"server CPU {server['cpu']:.0%} = {_us_per_frame(server):.0f} us per call per 20 ms "
        f"(preempted {server['preempted']}x); received late {result['rx_late']} of "
        f"{result['received']:,} (p99 {result['rx_p99_ms']:.1f} ms), load CPU "
        f"{result['load_cpu']:.0%}, load behind max {result['behind_ms']:.1f} ms "
        f"-> {verdict}"
    )


_LATE_MS = 5.0


def _us_per_frame(server: dict[str, Any]) -> float:
    """Server CPU per call per 20 ms (a frame sent and one received)."""
    return float(server["cpu"] * server["wall"] * 1e6 / max(1, server["frames"]))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when a step passed."""
    global _LATE_MS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-seconds", type=float, default=8.0,
                        help="the measured window with every call up")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for all steps")
    parser.add_argument("--steps", default="50,100,150,200,300,400,600,800",
                        help="call counts to try, in order, until one fails")
    parser.add_argument("--cps", type=float, default=200.0, help="call set-up rate")
    parser.add_argument("--late-ms", type=float, default=5.0)
    parser.add_argument("--late-fraction", type=float, default=0.01)
    parser.add_argument("--retries", type=int, default=1,
                        help="runs of a failed step again before it counts as failed")
    parser.add_argument("--ports", default="44000-45999", help="the server's RTP port range")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--server-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sip-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _LATE_MS = args.late_ms
    first, _, last = args.ports.partition("-")
    if args.server_child:
        run_server(args.sip_port, int(first), int(last), args.late_ms)
        return 0
    ladder = [int(n) for n in args.steps.split(",")]
    capacity = (int(last) - int(first) + 1) // 2
    ladder = [n for n in ladder if n <= capacity]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    _pin(0, args.load_cpu)
    print(f"media server benchmark: flow 'bench' (prompt + collect 3 digits), PCMU both "
          f"ways, {args.step_seconds:g} s window per step, late after {args.late_ms:g} ms, "
          f"pass at <= {args.late_fraction:.0%} late; server on CPU {args.server_cpu}, "
          f"load on CPU {args.load_cpu}", flush=True)
    sip_port = _free_port()
    server = Server(args, sip_port)
    load: Load | None = None
    best: dict[str, Any] | None = None
    failed: int | None = None
    try:
        load = Load(server, (HOST, sip_port), args, args.late_ms / 1000.0)
        load.pump(20.0, lambda: bool(server.replies))
        if not server.replies or not server.replies.popleft().get("ready"):
            print("the server process did not start")
            return 1
        deadline = time.monotonic() + args.budget
        calls: int | None = ladder[0] if ladder else None
        while calls is not None and time.monotonic() < deadline:
            result = load.run_step(calls)
            print(describe(result), flush=True)
            for _ in range(args.retries):
                if result["passed"] or result["left"] or not result["pool_full"]:
                    break
                print("  (failed: run once more, another process may have taken CPU 0)",
                      flush=True)
                result = load.run_step(calls)
                print(describe(result), flush=True)
            if result["left"] or not result["pool_full"]:
                print(f"after the step: {result['left']} calls still up at the server, "
                      f"port pool full: {result['pool_full']}: leak")
                return 1
            if result["passed"]:
                if best is None or calls > best["calls"]:
                    best = result
            else:
                failed = calls if failed is None else min(failed, calls)
            low = best["calls"] if best else 0
            if failed is None:
                bigger = [n for n in ladder if n > calls]
                calls = bigger[0] if bigger else None
            elif failed - low <= max(10, low // 10):
                calls = None
            else:
                calls = (low + failed) // 2
    except KeyboardInterrupt:
        print("interrupted")
        return 1
    finally:
        if load is not None:
            load.close()
        server.stop()
    if best is None:
        print(f"media server: no step passed (first failure at {failed} calls)")
        return 1
    server_figures = best["server"]
    bound = "" if failed is not None else " (no step failed: a lower bound)"
    print(
        f"media server: {best['calls']} concurrent calls playing a prompt and collecting "
        f"digits on one core with <= {args.late_fraction:.0%} of packets more than "
        f"{args.late_ms:g} ms behind schedule ({best['late_fraction']:.2%} late, server CPU "
        f"{server_figures['cpu']:.0%}; first failure at "
        f"{failed if failed is not None else '-'} calls){bound}; "
        f"{_us_per_frame(server_figures):.0f} us CPU per call per 20 ms, i.e. about "
        f"{20000 / max(1.0, _us_per_frame(server_figures)):,.0f} calls to fill a whole idle core"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
