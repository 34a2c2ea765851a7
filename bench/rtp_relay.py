"""Benchmark: RTP packets per second the built-in relay carries on one core.

A relay process (this script with C{--relay-child}: the Twisted epoll reactor
and L{media.backend.RelayBackend}, pinned to CPU 0) anchors N calls, set up
through the backend's own offer/answer like the switch does.  The load
process (this script, pinned to CPU 1, plain sockets, no Twisted) plays both
phones of every call: one bidirectional G.711 stream per call, 160-byte
payload every 20 ms in each direction (50 packets/s, so 100 packets/s per
call through the relay), the calls' send times spread evenly over the
20 ms.  Each packet carries its send time; the receiving side counts it,
and a packet that arrives later than C{--late-ms} or not at all by the end
of the step counts against the step.

N starts at C{--start} and doubles while a step passes (no packet lost or
late), then is bisected between the last pass and the first failure until
the two are within 10 % or the time budget is used.  For every step the
script prints the offered and relayed rates, loss, latency, and the CPU
share of the relay process; at the end, the highest N without loss and its
packet rate.  Between steps every call is deleted and the relay's port pool
is checked to be full again.

Usage::

    python bench/rtp_relay.py [--step-seconds 5] [--budget 150] [--start 50]

Loopback only; both processes are stopped at the end, also on errors and
Ctrl-C.  Exits non-zero when a step cannot be run at all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
PACKET_INTERVAL = 0.020
PAYLOAD = 160
SLOTS = 20
#: Load sockets per side; calls are spread over them.
SOCKETS = 4

_HEADER = struct.Struct("!BBHII")
_STAMP = struct.Struct("!d")


# ---- the relay process ----------------------------------------------------


def run_relay(first_port: int, last_port: int) -> None:
    """The relay process: a line protocol on stdin/stdout drives the backend."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver

    sys.path.insert(0, str(ROOT))
    from b2bua.sip.sdp import parse_sdp
    from media.backend import RelayBackend

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    backend = RelayBackend(reactor, interface=HOST, port_range=(first_port, last_port))

    def sdp_for(host: str, port: int) -> Any:
        body = (
            f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        )
        return parse_sdp(body.encode())

    class Control(LineReceiver):
        delimiter = b"\n"
        calls: list[str] = []

        def lineReceived(self, line: bytes) -> None:
            command = json.loads(line)
            name = command["cmd"]
            if name == "setup":
                self.setup(command)
            elif name == "usage":
                self.reply(usage=_cpu_seconds(), counters=asdict(backend.stats()))
            elif name == "teardown":
                self.teardown()
            elif name == "quit":
                reactor.stop()

        def setup(self, command: dict[str, Any]) -> None:
            ports = []
            a_addrs, b_addrs = command["a"], command["b"]
            for number in range(command["calls"]):
                call_id = f"bench-{number}"
                a_host, a_port = a_addrs[number % len(a_addrs)]
                b_host, b_port = b_addrs[number % len(b_addrs)]
                results: list[Any] = []
                backend.offer(call_id, "f", sdp_for(a_host, a_port), side="a").addBoth(
                    results.append
                )
                backend.answer(call_id, "f", "t", sdp_for(b_host, b_port), side="b").addBoth(
                    results.append
                )
                offer, answer = results
                if not hasattr(offer, "media") or not hasattr(answer, "media"):
                    self.reply(error=f"call {number}: {offer!r} {answer!r}")
                    return
                # The offer goes to B (port facing B), the answer to A.
                ports.append([answer.media[0].port, offer.media[0].port])
                self.calls.append(call_id)
            self.reply(ports=ports)

        def teardown(self) -> None:
            calls, self.calls = self.calls, []
            done = [backend.delete(call_id) for call_id in calls]
            from twisted.internet.defer import gatherResults

            def report(_: object) -> None:
                pool = backend.relay.pool
                self.reply(free=pool.free, capacity=pool.capacity)

            gatherResults(done).addCallback(report)

        def reply(self, **fields: Any) -> None:
            self.sendLine(json.dumps(fields).encode())

    stdio.StandardIO(Control())
    reactor.run()


def _cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the load process ------------------------------------------------------


class Relay:
    """The relay child process and its control pipe."""

    def __init__(self, first_port: int, last_port: int, cpu: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--relay-child", f"--ports={first_port}-{last_port}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        _pin(self.process.pid, cpu)

    def ask(self, **command: Any) -> dict[str, Any]:
        """Send one command, read one reply."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the relay process exited")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def stop(self) -> None:
        """Stop the child (politely, then not)."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"cmd": "quit"}\n')
                self.process.stdin.flush()
                self.process.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


#: The CPUs this process may use, read before it pins itself.
CPUS = frozenset(os.sched_getaffinity(0))


def _pin(pid: int, cpu: int) -> None:
    """Pin a process (0: this one) to one CPU when there is more than one."""
    if len(CPUS) > 1 and cpu in CPUS:
        os.sched_setaffinity(pid, {cpu})


def _socket() -> socket.socket:
    """A non-blocking loopback UDP socket with large buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


class Step:
    """One traffic run: N calls for a number of seconds."""

    def __init__(self, calls: int, seconds: float, late: float) -> None:
        self.calls = calls
        self.seconds = seconds
        self.late_limit = late
        self.a_socks = [_socket() for _ in range(SOCKETS)]
        self.b_socks = [_socket() for _ in range(SOCKETS)]
        self.sent = 0
        self.received = 0
        self.late = 0
        self.worst = 0.0
        self.buckets = [0] * 10001
        self.behind = 0.0

    def close(self) -> None:
        """Close the load sockets."""
        for sock in self.a_socks + self.b_socks:
            sock.close()

    def addresses(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """The A and B load addresses."""
        return (
            [s.getsockname() for s in self.a_socks],
            [s.getsockname() for s in self.b_socks],
        )

    def run(self, ports: list[list[int]]) -> None:
        """Send and receive for C{seconds}, then drain."""
        # schedule[slot] = [(send, destination, ssrc)], both directions.
        schedule: list[list[tuple[Any, tuple[str, int], int]]] = [[] for _ in range(SLOTS)]
        for number, (facing_a, facing_b) in enumerate(ports):
            slot = number * SLOTS // len(ports)
            a_sock = self.a_socks[number % SOCKETS]
            b_sock = self.b_socks[number % SOCKETS]
            schedule[slot].append((a_sock.sendto, (HOST, facing_a), 2 * number))
            schedule[slot].append((b_sock.sendto, (HOST, facing_b), 2 * number + 1))
        poller = select.epoll()
        receivers = {s.fileno(): s for s in self.a_socks + self.b_socks}
        for fd in receivers:
            poller.register(fd, select.EPOLLIN)
        frames = int(self.seconds / PACKET_INTERVAL)
        start = time.monotonic() + 0.05
        packet = bytearray(_HEADER.size + PAYLOAD)
        pack_header = _HEADER.pack_into
        pack_stamp = _STAMP.pack_into
        for frame in range(frames):
            seq = frame & 0xFFFF
            ts = (frame * 160) & 0xFFFFFFFF
            for slot, entries in enumerate(schedule):
                due = start + frame * PACKET_INTERVAL + slot * (PACKET_INTERVAL / SLOTS)
                self._receive_until(poller, receivers, due)
                now = time.monotonic()
                if now - due > self.behind:
                    self.behind = now - due
                # Every packet of a slot carries the slot's start time.
                pack_stamp(packet, _HEADER.size, now)
                for send, destination, ssrc in entries:
                    pack_header(packet, 0, 0x80, 0, seq, ts, ssrc)
                    send(packet, destination)
                self.sent += len(entries)
        self._receive_until(poller, receivers, time.monotonic() + self.late_limit + 0.2)
        poller.close()

    def _receive_until(self, poller: Any, receivers: dict[int, socket.socket], due: float) -> None:
        """Read everything that arrives until C{due}."""
        unpack = _STAMP.unpack_from
        buffer = bytearray(2048)
        offset = _HEADER.size
        buckets = self.buckets
        late_limit = self.late_limit
        while True:
            wait = due - time.monotonic()
            events = poller.poll(wait if wait > 0 else 0)
            if not events:
                return
            for fd, _ in events:
                receive = receivers[fd].recv_into
                while True:
                    try:
                        receive(buffer)
                    except BlockingIOError:
                        break
                    delay = time.monotonic() - unpack(buffer, offset)[0]
                    self.received += 1
                    if delay > late_limit:
                        self.late += 1
                    if delay > self.worst:
                        self.worst = delay
                    buckets[min(int(delay * 10000), 10000)] += 1

    def percentile(self, fraction: float) -> float:
        """A latency percentile in milliseconds (0.1 ms resolution)."""
        wanted = fraction * max(1, self.received)
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if seen >= wanted:
                return index / 10.0
        return 1000.0


def run_step(relay: Relay, calls: int, args: argparse.Namespace) -> dict[str, Any]:
    """Set up C{calls}, run traffic, tear down; the step's figures."""
    step = Step(calls, args.step_seconds, args.late_ms / 1000.0)
    try:
        a_addrs, b_addrs = step.addresses()
        ports = relay.ask(cmd="setup", calls=calls, a=a_addrs, b=b_addrs)["ports"]
        before = relay.ask(cmd="usage")
        load_before = _cpu_seconds()
        wall = time.monotonic()
        step.run(ports)
        wall = time.monotonic() - wall
        load_cpu = (_cpu_seconds() - load_before) / wall
        after = relay.ask(cmd="usage")
        pool = relay.ask(cmd="teardown")
    finally:
        step.close()
    lost = step.sent - step.received
    relayed = after["counters"]["packets_relayed"] - before["counters"]["packets_relayed"]
    return {
        "calls": calls,
        "offered_pps": step.sent / args.step_seconds,
        "relayed_pps": relayed / args.step_seconds,
        "sent": step.sent,
        "lost": max(0, lost),
        "late": step.late,
        "p99_ms": step.percentile(0.99),
        "max_ms": step.worst * 1000.0,
        "relay_cpu": (after["usage"] - before["usage"]) / wall,
        "relay_us": (after["usage"] - before["usage"]) * 1e6 / max(1, relayed),
        "load_cpu": load_cpu,
        "behind_ms": step.behind * 1000.0,
        "pool_full": pool["free"] == pool["capacity"],
        "passed": lost <= 0 and step.late == 0,
    }


def describe(result: dict[str, Any]) -> str:
    """One line for a step."""
    verdict = "pass" if result["passed"] else "FAIL"
    return (
        f"{result['calls']:5d} calls: offered {result['offered_pps']:,.0f} pps, "
        f"relayed {result['relayed_pps']:,.0f} pps, lost {result['lost']}, "
        f"late {result['late']}, p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms, "
        f"CPU relay {result['relay_cpu']:.0%} ({result['relay_us']:.1f} us/packet) "
        f"load {result['load_cpu']:.0%}, "
        f"load behind {result['behind_ms']:.1f} ms "
        f"-> {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for all steps")
    parser.add_argument("--start", type=int, default=50, help="calls in the first step")
    parser.add_argument("--max-calls", type=int, default=2400)
    parser.add_argument("--late-ms", type=float, default=100.0)
    parser.add_argument("--ports", default="40000-49999", help="relay port range")
    parser.add_argument("--relay-cpu", type=int, default=0, help="CPU to pin the relay to")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU to pin the load to")
    parser.add_argument("--relay-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    first, _, last = args.ports.partition("-")
    if args.relay_child:
        run_relay(int(first), int(last))
        return 0
    _pin(0, args.load_cpu)
    print(
        f"RTP relay benchmark: G.711, {PAYLOAD}-byte payload, 50 pps per direction, "
        f"{args.step_seconds:g} s per step, late after {args.late_ms:g} ms"
    )
    relay = Relay(int(first), int(last), args.relay_cpu)
    deadline = time.monotonic() + args.budget
    best: dict[str, Any] | None = None
    failed: int | None = None
    calls = args.start
    try:
        while time.monotonic() < deadline and calls <= args.max_calls:
            result = run_step(relay, calls, args)
            print(describe(result), flush=True)
            if not result["pool_full"]:
                print("port pool not full after teardown: leak")
                return 1
            if result["passed"]:
                best = result if best is None or calls > best["calls"] else best
            else:
                failed = calls if failed is None else min(failed, calls)
            low = best["calls"] if best else 0
            if failed is None:
                calls = calls * 2
            else:
                if failed - low <= max(10, low // 10):
                    break
                calls = (low + failed) // 2
    finally:
        relay.stop()
    if best is None:
        print("no step passed")
        return 1
    print(
        f"highest without loss: {best['calls']} concurrent G.711 calls = "
        f"{best['relayed_pps']:,.0f} packets/s relayed on one core "
        f"(relay CPU {best['relay_cpu']:.0%}, {best['relay_us']:.1f} us/packet, "
        f"i.e. about {1e6 / best['relay_us']:,.0f} packets/s for a whole idle core)"
    )
    if failed is None:
        print("(no step failed within the budget: the figure is a lower bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
