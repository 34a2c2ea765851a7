"""Music on hold through every order of holds and resumes of both parties
(mutual hold), with the call closing in each state, and the hold metrics
through codec changes."""

from __future__ import annotations

from itertools import permutations
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import SessionDescription, parse_sdp
from media.server.rtp_packet import parse_rtp
from tests.trial.media.support import A_SDP, B_SDP, RelayHarness, audio_offer
from tests.trial.media.test_moh import offer

OTHER = {"a": "b", "b": "a"}
SDP = {"a": A_SDP, "b": B_SDP}
EVENTS = (("hold", "a"), ("hold", "b"), ("resume", "a"), ("resume", "b"))


def orders() -> list[tuple[tuple[str, str], ...]]:
    """Every order of the four events in which each party holds before it
    resumes (six orders)."""
    return [order for order in permutations(EVENTS)
            if order.index(("hold", "a")) < order.index(("resume", "a"))
            and order.index(("hold", "b")) < order.index(("resume", "b"))]


class Call:
    """One call on a relay with music on hold, driven by offers and answers
    the way RFC 3264 and RFC 6337 make phones send them.

    @ivar holding: the parties holding now, as the phones see it.
    """

    def __init__(self, style: str, formats: str = "0 8 101") -> None:
        """
        @param style: how a party holds a party that does not hold:
            C{"sendonly"} (answered C{recvonly}) or C{"inactive"} (answered
            C{inactive}, which reads as a hold of the answerer too).
        @param formats: the formats both parties signal.
        """
        self.style = style
        self.formats = formats
        self.h = RelayHarness()
        self.backend = self.h.backend
        moh = self.backend.moh
        assert moh is not None
        self.moh = moh
        self.backend.start()
        self.ports = dict(zip("ab", self.h.establish(), strict=True))
        self.h.reactor.take()
        self.endpoints = {end.side: end.rtp for end in self.backend.relay.ends("call-1")}
        self.holding: set[str] = set()

    def direction(self, side: str) -> str:
        """What C{side} offers now (RFC 6337 section 5.3)."""
        holds, held = side in self.holding, OTHER[side] in self.holding
        if holds and held:
            return "inactive"
        if holds:
            return self.style
        return "recvonly" if held else "sendrecv"

    def answer_to(self, side: str, offered: str) -> str:
        """What C{side} answers to C{offered}: no more than it was offered,
        and not receiving while it holds."""
        holds = side in self.holding
        if offered == "inactive":
            return "inactive"
        if offered == "sendonly":
            return "inactive" if holds else "recvonly"
        if offered == "recvonly":
            return "sendonly"
        return "sendonly" if holds else "sendrecv"

    def sdp(self, side: str, direction: str) -> SessionDescription:
        """An SDP of C{side} with C{direction}."""
        return offer(*SDP[side], formats=self.formats, direction=direction)

    def exchange(self, side: str) -> None:
        """C{side} offers its present state; the other party answers."""
        offered = self.direction(side)
        self.h.offer("call-1", self.sdp(side, offered), side=side)
        answerer = OTHER[side]
        self.h.answer("call-1", self.sdp(answerer, self.answer_to(answerer, offered)),
                      side=answerer)

    def event(self, what: str, side: str) -> None:
        """C{side} holds or resumes."""
        if what == "hold":
            self.holding.add(side)
        else:
            self.holding.discard(side)
        self.exchange(side)

    def expected_listener(self) -> str | None:
        """Who must hear music now: the held party of a one-sided hold."""
        if len(self.holding) == 1:
            return OTHER[next(iter(self.holding))]
        return None

    def heard(self) -> list[str]:
        """Who got packets over the next 40 ms (one entry per packet)."""
        for _ in range(2):
            self.h.reactor.advance(0.02)
        who = []
        for sent in self.h.reactor.take():
            side = "a" if (sent.local, sent.destination) == (self.ports["a"], A_SDP) else "b"
            assert (sent.local, sent.destination) == (self.ports[side], SDP[side])
            assert parse_rtp(sent.data) is not None
            who.append(side)
        return who

    def muted(self) -> list[str]:
        """The parties whose packets are not relayed."""
        return [side for side in "ab" if self.endpoints[side].mute]


class TransitionTests(SynchronousTestCase):
    """Intended: a one-sided hold plays music to the held party and mutes
    the holder; while both hold nobody hears music and nobody is muted;
    when one resumes, the one still holding is the holder."""

    def check(self, call: Call, label: str) -> None:
        """Music and muting agree with who holds."""
        listener = call.expected_listener()
        self.assertEqual(call.heard(), [listener] * 2 if listener else [], label)
        holder = OTHER[listener] if listener else None
        self.assertEqual(call.muted(), [holder] if holder else [], label)
        self.assertEqual(call.moh.counters().listeners, 1 if listener else 0, label)

    def check_closed(self, call: Call, label: str) -> None:
        """After the call's end: no music, no timer, nobody muted."""
        call.h.result(call.backend.delete("call-1"))
        self.assertEqual(call.heard(), [], label)
        self.assertFalse(call.moh.timer_active, label)
        self.assertEqual(call.muted(), [], label)
        counters = call.moh.counters()
        self.assertEqual((counters.listeners, counters.waiting), (0, 0), label)

    def test_every_order(self) -> None:
        """The six orders of A hold, B hold, A resume, B resume, for both
        ways of holding: after each step the right party (or nobody) hears
        the music and the right party (or nobody) is muted."""
        for style in ("sendonly", "inactive"):
            for order in orders():
                call = Call(style)
                done = []
                for what, side in order:
                    call.event(what, side)
                    done.append(f"{side} {what}")
                    self.check(call, f"{style}: {', '.join(done)}")

    def test_close_in_every_state(self) -> None:
        """Closing the call after each prefix of each order stops the music
        and unmutes the holder."""
        for style in ("sendonly", "inactive"):
            for order in orders():
                for length in range(len(order) + 1):
                    call = Call(style)
                    for what, side in order[:length]:
                        call.event(what, side)
                    steps = ", ".join(f"{side} {what}" for what, side in order[:length])
                    self.check_closed(call, f"{style}: close after [{steps}]")

    def test_refresh_keeps_acknowledgement(self) -> None:
        """A holds with a=inactive, B answers a=inactive; A re-offers the
        same hold (a session refresh) and B answers a=inactive again: B
        still hears the music (its answers are not holds)."""
        call = Call("inactive")
        call.event("hold", "a")
        call.exchange("a")
        call.exchange("a")
        self.check(call, "refresh")

    def test_held_party_answers_holding(self) -> None:
        """A holds with a=inactive (B acknowledges), A resumes and B
        answers a=sendonly: B now holds, so A hears the music."""
        call = Call("inactive")
        call.event("hold", "a")
        call.holding = {"b"}
        call.h.offer("call-1", call.sdp("a", "sendrecv"), side="a")
        call.h.answer("call-1", call.sdp("b", "sendonly"), side="b")
        self.check(call, "B holds in its answer to the resume")


class HoldCountTests(SynchronousTestCase):
    """A hold is counted once, whatever codec changes it goes through."""

    def test_codec_change_while_listening(self) -> None:
        """B re-offers PCMA, then a codec the service cannot play, then
        PCMU again while held: one hold, one no-codec hold."""
        call = Call("sendonly")
        call.event("hold", "a")
        for formats in ("8 101", "9 101", "0 101"):
            call.h.offer("call-1", offer(*B_SDP, formats=formats, direction="recvonly"),
                         side="b")
            call.h.answer("call-1", audio_offer(*A_SDP, direction="sendonly"), side="a")
        self.assertEqual(call.heard(), ["b", "b"])
        counters = call.moh.counters()
        self.assertEqual((counters.holds, counters.no_codec, counters.refused), (1, 1, 0))

    def test_codec_change_while_waiting(self) -> None:
        """With one place: the second held party changes codec while it
        waits; its hold and refusal are counted once, it keeps its place in
        the queue and gets the music in the new codec."""
        h = RelayHarness(moh=SimpleNamespace(enabled=True, file="", max_listeners=1))
        moh = h.backend.moh
        assert moh is not None
        h.backend.start()
        ports = {}
        for call_id in ("call-1", "call-2", "call-3"):
            ports[call_id] = h.establish(call_id)
            h.offer(call_id, audio_offer(*A_SDP, direction="sendonly"))
        pcma = parse_sdp(offer(*B_SDP, formats="8 101", direction="recvonly").to_bytes())
        h.offer("call-2", pcma, side="b")
        h.answer("call-2", audio_offer(*A_SDP, direction="sendonly"), side="a")
        counters = moh.counters()
        self.assertEqual((counters.holds, counters.refused, counters.waiting), (3, 2, 2))
        h.offer("call-1", audio_offer(*A_SDP))  # call-1 resumes: call-2 is first in line
        h.reactor.take()
        h.reactor.advance(0.02)
        sent = h.reactor.take()
        self.assertEqual([s.local for s in sent], [ports["call-2"][1]])
        self.assertEqual(parse_rtp(sent[0].data).payload_type, 8)  # type: ignore[union-attr]


class OfferAnswerTests(SynchronousTestCase):
    """Whether an SDP the relay saw no hold change in was an offer."""

    def test_told_offer(self) -> None:
        """Told that B's C{inactive} SDP was an offer, the service takes it
        as B's own hold (mutual hold: no music, nobody muted)."""
        call = Call("inactive")
        call.event("hold", "a")
        self.assertEqual(call.heard(), ["b", "b"])
        call.moh.formats_changed("call-1", "b", answer=False)
        self.assertEqual(call.heard(), [])
        self.assertEqual(call.muted(), [])

    def test_told_answer(self) -> None:
        """Told that it was an answer, it stays an acknowledgement."""
        call = Call("inactive")
        call.event("hold", "a")
        call.moh.formats_changed("call-1", "b", answer=True)
        self.assertEqual(call.heard(), ["b", "b"])
        self.assertEqual(call.muted(), ["a"])
