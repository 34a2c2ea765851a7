"""Tests for L{media.server.pacer}: one timer for every RTP session.

Unit tests drive a L{Pacer} with fake members on a L{Clock}; the session
tests run many L{RtpSession}s on one fake reactor and look at the wire:
one pacer timer whatever the number of sessions, every packet on its
session's 20 ms schedule, and a stopped session out of the pacer.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.g711 import PCMU
from media.server.pacer import PERIOD, SLOTS, Pacer
from media.server.rtp_packet import parse_rtp
from media.server.rtp_session import RtpSession
from tests.trial.media.support import FakeUDPReactor


class Member:
    """A fake paced session: notes the times it is called."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def pace(self, now: float) -> None:
        """Note the call."""
        self.calls.append(now)


def pacer_timers(clock: Clock, pacer: Pacer) -> int:
    """How many delayed calls of C{clock} belong to C{pacer}."""
    return sum(1 for call in clock.getDelayedCalls()
               if getattr(call.func, "__self__", None) is pacer)


class PacerTests(SynchronousTestCase):
    """The pacer alone, with fake members."""

    def test_first_member_anchors_the_grid(self) -> None:
        """The first member's epoch is now; it is called every 20 ms."""
        clock = Clock()
        clock.advance(3.0)
        pacer = Pacer(clock)
        member = Member()
        self.assertEqual(pacer.join(member), 3.0)
        for _ in range(5):
            clock.advance(PERIOD)
        self.assertEqual(len(member.calls), 5)
        for n, when in enumerate(member.calls, 1):
            self.assertAlmostEqual(when, 3.0 + n * PERIOD, delta=2e-4)
        pacer.leave(member)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_members_spread_over_phases(self) -> None:
        """Members joining at once fill the phases evenly; each gets an
        epoch at most one period back, and is called once per period."""
        clock = Clock()
        pacer = Pacer(clock)
        members = [Member() for _ in range(3 * SLOTS)]
        epochs = [pacer.join(m) for m in members]
        self.assertEqual(epochs[0], 0.0)
        self.assertTrue(all(-PERIOD < e <= 0.0 for e in epochs))
        self.assertEqual(len(set(round(e, 6) for e in epochs)), SLOTS)
        self.assertEqual(pacer_timers(clock, pacer), 1)
        for _ in range(10 * SLOTS):
            clock.advance(PERIOD / SLOTS)
        for member, epoch in zip(members, epochs, strict=True):
            self.assertEqual(len(member.calls), 10)
            for n, when in enumerate(member.calls, 1):
                self.assertAlmostEqual(when, epoch + n * PERIOD, delta=2e-4)
        self.assertLessEqual(pacer.ticks, 10 * SLOTS)
        for member in members:
            pacer.leave(member)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_late_joiner_between_phases(self) -> None:
        """A member joining while the timer waits for a later phase is
        still called at its own phase's next time."""
        clock = Clock()
        pacer = Pacer(clock)
        first = Member()
        pacer.join(first)
        clock.advance(0.0071)
        second = Member()
        epoch = pacer.join(second)
        self.assertAlmostEqual(epoch, 0.006, delta=1e-9)  # the last phase time before now
        clock.advance(0)  # its phase's last time may be run as it joins: nothing is due then
        clock.advance(0.0139)  # to 0.021
        self.assertEqual(len(first.calls), 1)
        self.assertEqual([t for t in second.calls if t > 0.0075], [])
        clock.advance(0.005)  # to 0.026
        later = [t for t in second.calls if t > 0.0075]
        self.assertEqual(len(later), 1)
        self.assertAlmostEqual(later[0], 0.026, delta=2e-4)
        pacer.leave(first)
        pacer.leave(second)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_leaving_during_a_tick(self) -> None:
        """A member that makes another leave during a tick: the other is
        not called; leaving twice is harmless."""
        clock = Clock()
        pacer = Pacer(clock, slots=1)
        victim = Member()

        class Killer(Member):
            def pace(self, now: float) -> None:
                super().pace(now)
                pacer.leave(victim)

        killer = Killer()
        pacer.join(killer)
        pacer.join(victim)
        clock.advance(PERIOD)
        self.assertEqual((len(killer.calls), len(victim.calls)), (1, 0))
        pacer.leave(victim)
        self.assertEqual(len(pacer), 1)
        pacer.leave(killer)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stall_runs_each_phase_once(self) -> None:
        """After a stall of several periods, each phase runs once."""
        clock = Clock()
        pacer = Pacer(clock)
        members = [Member() for _ in range(SLOTS)]
        for member in members:
            pacer.join(member)
        clock.advance(5 * PERIOD)
        self.assertEqual([len(m.calls) for m in members], [1] * SLOTS)
        for member in members:
            pacer.leave(member)

    def test_observers_and_registry(self) -> None:
        """Observers hear joins and leaves until removed; L{Pacer.of} gives
        one pacer per reactor; joining twice is refused."""
        clock, other = Clock(), Clock()
        pacer = Pacer.of(clock)
        self.assertIs(Pacer.of(clock), pacer)
        self.assertIsNot(Pacer.of(other), pacer)
        heard: list[tuple[str, object]] = []
        remove = pacer.observe(lambda event, session: heard.append((event, session)))
        member = Member()
        pacer.join(member)
        self.assertRaises(ValueError, pacer.join, member)
        self.assertEqual(list(pacer.sessions()), [member])
        pacer.leave(member)
        remove()
        pacer.join(member)
        pacer.leave(member)
        self.assertEqual(heard, [("join", member), ("leave", member)])
        self.assertRaises(ValueError, Pacer, clock, slots=0)


class SharedPacerSessionTests(SynchronousTestCase):
    """Many RTP sessions on one reactor share one timer."""

    def sessions(self, reactor: FakeUDPReactor, count: int) -> list[RtpSession]:
        """C{count} started sessions, one started every 3 ms."""
        started = []
        for n in range(count):
            session = RtpSession(reactor, PCMU, remote=("192.0.2.1", 40000 + 2 * n),
                                 rng=random.Random(n), rtcp_interval=60.0)
            session.listen(30000 + 2 * n)
            session.start()
            started.append(session)
            reactor.advance(0.003)
        return started

    def test_one_timer_packets_on_schedule(self) -> None:
        """Fifty sessions: one pacer timer (plus one RTCP timer each), and
        each session's packet C{n} leaves at its epoch plus C{n x 20 ms}
        (frame 0 at its start), with timestamps 160 apart."""
        reactor = FakeUDPReactor()
        sessions = self.sessions(reactor, 50)
        pacer = Pacer.of(reactor)
        self.assertEqual(len(pacer), 50)
        self.assertEqual(pacer_timers(reactor, pacer), 1)
        self.assertEqual(len(reactor.getDelayedCalls()), 1 + 50)
        times: dict[int, list[tuple[float, int]]] = {}
        sent = reactor.sent
        reactor.sent = []
        first: dict[int, object] = {}
        for packet in sent:
            first.setdefault(packet.local, packet)
        for _ in range(100):
            reactor.advance(0.001)
            for packet in reactor.sent:
                rtp = parse_rtp(packet.data)
                assert rtp is not None
                times.setdefault(packet.local, []).append((reactor.seconds(), rtp.timestamp))
            reactor.sent = []
        for session in sessions:
            assert session.port is not None and session.epoch is not None
            self.assertIn(session.port, first)
            seen = times[session.port]
            start_ts = parse_rtp(first[session.port].data).timestamp  # type: ignore[attr-defined,union-attr]
            for when, stamp in seen:
                n = ((stamp - start_ts) % (1 << 32)) // 160
                due = session.epoch + n * PERIOD
                self.assertGreaterEqual(when, due - 2e-4)
                self.assertLess(when - due, 0.0011)  # the millisecond steps of this test
        for session in sessions:
            session.stop()
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stopped_session_leaves(self) -> None:
        """A stopped session is out of the pacer and sends nothing more;
        the others go on; the last one out leaves no timer."""
        reactor = FakeUDPReactor()
        sessions = self.sessions(reactor, 3)
        pacer = Pacer.of(reactor)
        gone = sessions[1]
        gone.stop()
        self.assertEqual(len(pacer), 2)
        self.assertNotIn(gone, list(pacer.sessions()))
        reactor.sent = []
        for _ in range(5):
            reactor.advance(PERIOD)
        ports = {sent.local for sent in reactor.sent}
        self.assertEqual(ports, {sessions[0].port, sessions[2].port})
        sessions[0].stop()
        sessions[2].stop()
        self.assertEqual(len(pacer), 0)
        self.assertEqual(reactor.getDelayedCalls(), [])


class FailureTests(SynchronousTestCase):
    """A failing session or observer stops nothing else."""

    def test_failing_member_and_observer(self) -> None:
        """The exception is logged; the other member of the phase is
        still called, and the join and leave happen."""
        clock = Clock()
        pacer = Pacer(clock, slots=1)

        class Broken(Member):
            def pace(self, now: float) -> None:
                raise RuntimeError("broken")

        def observer(event: str, session: object) -> None:
            raise ValueError(event)

        pacer.observe(observer)
        broken, good = Broken(), Member()
        pacer.join(broken)
        pacer.join(good)
        clock.advance(PERIOD)
        self.assertEqual(len(good.calls), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        pacer.leave(broken)
        pacer.leave(good)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual(clock.getDelayedCalls(), [])


class DirectSendTests(SynchronousTestCase):
    """Packets go straight to the socket."""

    def test_socket_sendto(self) -> None:
        """With a port that has a socket, the session writes to the socket,
        not through the port's C{write}."""
        sent: list[tuple[bytes, tuple[str, int]]] = []

        class Socket:
            def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
                sent.append((data, addr))

        class SocketReactor(FakeUDPReactor):
            def listenUDP(self, port: int, protocol: Any, interface: str = "",
                          maxPacketSize: int = 8192) -> Any:  # noqa: N803
                listening = super().listenUDP(port, protocol, interface, maxPacketSize)
                listening.socket = Socket()  # type: ignore[attr-defined]
                return listening

        reactor = SocketReactor()
        session = RtpSession(reactor, PCMU, remote=("192.0.2.1", 4000), rng=random.Random(1))
        session.listen(30000)
        session.start()
        reactor.advance(PERIOD)
        self.assertEqual([addr for _, addr in sent], [("192.0.2.1", 4000)] * 2)
        self.assertEqual([s for s in reactor.sent if s.local == 30000], [])
        session.stop()

    def test_named_remote_waits_for_latching(self) -> None:
        """A remote that is a name is not looked up: nothing is sent until
        the remote's packets come."""
        reactor = FakeUDPReactor()
        session = RtpSession(reactor, PCMU, remote=("media.example", 4000),
                             rng=random.Random(1))
        session.listen(30000)
        session.start()
        self.assertIsNone(session.destination)
        self.assertEqual(session.counters.undeliverable, 1)
        session.stop()
