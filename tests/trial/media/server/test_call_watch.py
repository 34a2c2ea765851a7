"""Tests for L{media.server.call_watch}: the media server's calls followed
through the pacer's joins and leaves, and their digits by source."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.call_watch import CallWatch, DtmfFigures
from media.server.pacer import Pacer


class Session:
    """A fake RTP session (what the pacer paces)."""

    def pace(self, now: float) -> None:
        """Nothing to send."""


def fake_call(call_id: str, *, rfc4733: int = 0, inband: int | None = None,
              digits: str = "") -> Any:
    """A user agent call as the watch reads it."""
    detector = None if inband is None else SimpleNamespace(digits=inband)
    media = SimpleNamespace(events=SimpleNamespace(counters=SimpleNamespace(events=rfc4733)),
                            detector=detector, digits=list(digits))
    return SimpleNamespace(rtp=Session(), invite=SimpleNamespace(call_id=call_id), media=media)


class CallWatchTests(SynchronousTestCase):
    """Joins find the call; leaves tell the listeners."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.pacer = Pacer(self.clock)
        self.ua = SimpleNamespace(calls={})
        self.watch = CallWatch(self.ua, self.pacer)
        self.ended: list[Any] = []
        self.watch.on_end(self.ended.append)

    def start(self, call: Any) -> None:
        """The UA adds the call, then starts its session."""
        self.ua.calls[(call.invite.call_id, "tag")] = call
        self.pacer.join(call.rtp)

    def stop(self, call: Any) -> None:
        """The UA releases the call, then stops its session."""
        del self.ua.calls[(call.invite.call_id, "tag")]
        self.pacer.leave(call.rtp)

    def test_follows_calls(self) -> None:
        """Calls are found; a foreign session is ignored; an ended call
        reaches the listeners once, with its Call-ID; a closed watch
        hears nothing more."""
        first, second = fake_call("a@x"), fake_call("b@x")
        self.start(first)
        self.start(second)
        foreign = Session()
        self.pacer.join(foreign)
        self.assertEqual({w.call_id for w in self.watch.live.values()}, {"a@x", "b@x"})
        self.stop(first)
        self.pacer.leave(foreign)
        self.assertEqual([w.call_id for w in self.ended], ["a@x"])
        self.watch.close()
        self.stop(second)
        self.assertEqual(len(self.ended), 1)
        self.assertEqual(self.watch.live, {})

    def test_finds_an_older_call(self) -> None:
        """A session whose call is not the newest is still found."""
        older, newer = fake_call("old@x"), fake_call("new@x")
        self.ua.calls[("old@x", "tag")] = older
        self.ua.calls[("new@x", "tag")] = newer
        self.pacer.join(older.rtp)
        self.assertEqual([w.call_id for w in self.watch.live.values()], ["old@x"])
        self.pacer.leave(older.rtp)

    def test_digits_by_source(self) -> None:
        """RFC 4733 from the receiver, in-band from the detectors (also one
        the call dropped at its end), the rest of the call's digits INFO."""
        call = fake_call("d@x", rfc4733=2, inband=1, digits="123456")
        self.start(call)
        [watched] = self.watch.live.values()
        self.assertEqual(watched.dtmf(), DtmfFigures(rfc4733=2, info=3, inband=1))
        call.media.detector = None  # the call's end drops it
        self.stop(call)
        self.assertEqual(self.ended[0].dtmf(), DtmfFigures(rfc4733=2, info=3, inband=1))

    def test_detector_made_later(self) -> None:
        """A detector made by a re-INVITE counts with the first one."""
        call = fake_call("e@x", inband=1, digits="12")
        self.start(call)
        [watched] = self.watch.live.values()
        call.media.detector = SimpleNamespace(digits=1)
        self.assertEqual(watched.dtmf(), DtmfFigures(rfc4733=0, info=0, inband=2))
        self.stop(call)
