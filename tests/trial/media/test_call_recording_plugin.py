"""Tests for the recording side of L{media.plugin}: switch calls anchored in
the built-in relay (on a fake UDP reactor that is the harness's clock),
recorded by policy or on demand, the files in C{call.data["recordings"]};
and the per-account policy of L{media.call_recording.call_policy}."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import succeed
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import SessionDescription
from b2bua.sip.uri import parse_uri
from b2bua.testing import SwitchHarness
from media.backend import RelayBackend
from media.plugin import CALL_RECORDINGS, NAME, MediaAnchor
from media.relay_recordings import (
    RecordingSettings,
    RecordingUnavailable,
    RelayRecordings,
    UnknownRecordingCall,
    call_policy,
)
from media.server.recording import RecordingConflict
from media.server.wav import read_wav
from tests.trial.media.support import A_SDP, B_SDP, FakeUDPReactor, RelayHarness, audio_offer
from tests.trial.media.test_call_recording import packet, samples, tone
from tests.trial.media.test_plugin import RELAY, Ended, media_of


class RecordingPluginCase(SynchronousTestCase):
    """Alice (1000) calls Bob (1001) through the relay; the plugin records."""

    policy = "always"

    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.reactor.advance(1_700_000_000)
        self.backend = RelayBackend(self.reactor, interface=RELAY, port_range=(40000, 40099),
                                    clock=self.reactor)
        self.folder = Path(self.mktemp())
        names = iter(f"{n:08x}" for n in range(100))
        self.anchor = MediaAnchor(self.backend,
                                  recording=RecordingSettings(self.folder, self.policy),
                                  token=lambda: next(names))
        self.ended = Ended()
        self.h = SwitchHarness({NAME: self.anchor, "ended": self.ended}, clock=self.reactor)
        self.recordings = self.h.services.extra[CALL_RECORDINGS]
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")

    def tearDown(self) -> None:
        self.backend.stop()

    def connect(self) -> tuple[Any, Any, str]:
        """Alice calls, Bob answers: the phone calls and the switch call's id."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[-1]
        incoming.answer()
        self.h.flush()
        self.assertEqual(call.code, 200)
        (call_id,) = self.h.switch.calls
        return call, incoming, call_id

    def talk(self, call: Any, incoming: Any, milliseconds: int) -> None:
        """Both phones send G.711 tones (Alice 1000 Hz, Bob 500 Hz) to the
        relay, 20 ms at a time."""
        to_alice, to_bob = media_of(call.remote_sdp), media_of(incoming.invite.body)
        alice, bob = media_of(call.local_sdp), media_of(incoming.local_sdp)
        for n in range(milliseconds // 20):
            self.reactor.deliver(to_alice[1], packet(n, 160 * n, tone(1000, 160, start=160 * n),
                                                     0xA), alice)
            self.reactor.deliver(to_bob[1], packet(n, 160 * n, tone(500, 160, start=160 * n),
                                                   0xB), bob)
            self.reactor.take()
            self.h.advance(0.02)

    def hang_up(self, call: Any) -> dict[str, Any]:
        """Alice hangs up: the ended call's data."""
        call.hangup()
        self.h.settle()
        data, _ = self.ended.calls[-1]
        return data


class AlwaysTests(RecordingPluginCase):
    """Policy C{always}: recorded from the answer on."""

    def test_recorded_and_listed(self) -> None:
        """A stereo file of the call is listed in C{call.data["recordings"]}
        with its duration, A's tone left and B's right."""
        call, incoming, call_id = self.connect()
        self.assertEqual(self.recordings.status(call_id)["state"], "recording")
        self.talk(call, incoming, 1500)
        data = self.hang_up(call)
        (entry,) = data["recordings"]
        self.assertEqual((entry["mode"], entry["source"]), ("stereo", "relay"))
        self.assertTrue(1450 <= entry["duration_ms"] <= 1700, entry)
        path = Path(entry["path"])
        self.assertTrue(path.is_absolute() and path.is_relative_to(self.folder.absolute()))
        audio = read_wav(path)
        left, right = samples(audio.pcm)[0::2], samples(audio.pcm)[1::2]
        self.assertGreater(max(left), 6000)
        self.assertGreater(max(right), 6000)
        self.assertEqual(self.h.metric("b2bua_media_call_recordings_started_total"), 1)
        self.assertEqual(self.h.metric("b2bua_media_call_recordings_finished_total"), 1)
        self.assertIsNone(self.recordings.status(call_id))
        self.h.assert_idle()

    def test_late_offer(self) -> None:
        """A call whose INVITE has no SDP gets its streams from the 200's
        offer: the taps follow, and the file has both parties."""
        call = self.alice.call("1001", sdp=False)
        incoming = self.bob.incoming[-1]
        incoming.answer()
        self.h.flush()
        self.assertEqual(call.code, 200)
        (call_id,) = self.h.switch.calls
        self.assertEqual(self.recordings.status(call_id)["state"], "recording")
        ends = self.backend.relay.ends(call_id)
        self.assertEqual(len(ends), 2)
        self.assertTrue(all(end.rtp.tap is not None for end in ends))
        to_alice, alice = media_of(call.remote_sdp), media_of(call.local_sdp)
        self.assertEqual(to_alice[0], RELAY)
        for n in range(25):
            self.reactor.deliver(to_alice[1], packet(n, 160 * n, tone(1000, 160, start=160 * n),
                                                     0xA), alice)
            self.h.advance(0.02)
        (entry,) = self.hang_up(call)["recordings"]
        self.assertGreater(max(samples(read_wav(entry["path"]).pcm)[0::2]), 6000)

    def test_shutdown_stops_writing(self) -> None:
        """The relay closing every call (shutdown) stops the recordings; the
        files are listed when the calls end."""
        call, incoming, call_id = self.connect()
        self.talk(call, incoming, 400)
        self.backend.stop()
        self.assertEqual(self.recordings.status(call_id)["state"], "stopped")
        (entry,) = self.hang_up(call)["recordings"]
        self.assertGreaterEqual(entry["duration_ms"], 400)

    def test_unanswered_not_recorded(self) -> None:
        """A call that is never answered records nothing."""
        call = self.alice.call("1001")
        self.h.flush()
        call.cancel()
        self.h.settle()
        data, _ = self.ended.calls[-1]
        self.assertNotIn("recordings", data)
        self.assertFalse(self.folder.exists())

    def test_api_pause_resume(self) -> None:
        """The API pauses and resumes the policy's recording: one file
        without the paused time."""
        call, incoming, call_id = self.connect()
        self.talk(call, incoming, 1000)
        self.assertEqual(self.recordings.control(call_id, "pause")["state"], "paused")
        self.talk(call, incoming, 2000)
        self.assertEqual(self.recordings.control(call_id, "resume")["state"], "recording")
        self.talk(call, incoming, 1000)
        (entry,) = self.hang_up(call)["recordings"]
        self.assertTrue(1950 <= entry["duration_ms"] <= 2250, entry)


class OnDemandTests(RecordingPluginCase):
    """Policy C{on_demand}: only when the API asks."""

    policy = "on_demand"

    def test_not_recorded_unless_asked(self) -> None:
        """Nothing is recorded by itself."""
        call, incoming, _ = self.connect()
        self.talk(call, incoming, 200)
        self.assertNotIn("recordings", self.hang_up(call))

    def test_started_by_the_api(self) -> None:
        """C{start} in a mode, C{stop}, C{start} again: two files listed."""
        call, incoming, call_id = self.connect()
        status = self.recordings.control(call_id, "start", "mixed")
        self.assertEqual((status["state"], status["mode"]), ("recording", "mixed"))
        self.talk(call, incoming, 600)
        self.assertEqual(self.recordings.control(call_id, "stop")["state"], "stopped")
        self.recordings.control(call_id, "start", "b")
        self.talk(call, incoming, 600)
        entries = self.hang_up(call)["recordings"]
        self.assertEqual([e["mode"] for e in entries], ["mixed", "b"])
        self.assertEqual([read_wav(e["path"]).channels for e in entries], [1, 1])

    def test_refusals(self) -> None:
        """An unknown call, a call not answered yet, an ended call."""
        self.assertRaises(UnknownRecordingCall, self.recordings.control, "nope", "start")
        call = self.alice.call("1001")
        self.h.flush()
        (call_id,) = self.h.switch.calls
        self.assertRaises(RecordingConflict, self.recordings.control, call_id, "start")
        self.bob.incoming[-1].answer()
        self.h.flush()
        self.recordings.control(call_id, "start")
        self.hang_up(call)
        self.assertRaises(UnknownRecordingCall, self.recordings.control, call_id, "stop")

    def test_another_tap(self) -> None:
        """When another feature listens to the media, recording is refused
        rather than taking its tap."""
        call, _, call_id = self.connect()
        other = []
        ends = self.backend.relay.ends(call_id)
        ends[0].rtp.tap = lambda data, now: other.append(data)
        self.assertRaises(RecordingUnavailable, self.recordings.control, call_id, "start")
        self.assertIs(ends[1].rtp.tap, None)
        self.hang_up(call)


class NeverTests(RecordingPluginCase):
    """Policy C{never}: the API is refused."""

    policy = "never"

    def test_refused(self) -> None:
        """C{start} is refused; nothing is recorded."""
        call, _, call_id = self.connect()
        self.assertRaises(RecordingUnavailable, self.recordings.control, call_id, "start")
        self.assertNotIn("recordings", self.hang_up(call))


class NotTheRelay:
    """A backend that anchors without a relay of ours (like rtpengine)."""

    def offer(self, call_id: str, from_tag: str, sdp: SessionDescription, **kw: Any) -> Any:
        return succeed(sdp.copy())

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: SessionDescription,
               **kw: Any) -> Any:
        return succeed(sdp.copy())

    def delete(self, call_id: str) -> Any:
        return succeed(None)

    def query(self, call_id: str) -> Any:
        return succeed(None)


class OtherBackendTests(SynchronousTestCase):
    """With a backend other than the relay nothing can be recorded."""

    def test_warned_and_refused(self) -> None:
        """Policy C{always} warns at start-up; the API gets
        L{RecordingUnavailable}; calls still go through."""
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        anchor = MediaAnchor(NotTheRelay(), recording=RecordingSettings(self.mktemp(), "always"))
        h = SwitchHarness({NAME: anchor})
        self.assertTrue(any("cannot record" in str(e.get("log_format", "")) for e in logged))
        alice, bob = h.register("1000"), h.register("1001")
        call = alice.call("1001")
        bob.incoming[-1].answer()
        h.flush()
        (call_id,) = h.switch.calls
        recordings = h.services.extra[CALL_RECORDINGS]
        self.assertFalse(recordings.available)
        self.assertRaises(RecordingUnavailable, recordings.control, call_id, "start")
        call.hangup()
        h.settle()


class FakeDirectory:
    """Extensions with C{features}, by (domain, number)."""

    def __init__(self, features: dict[tuple[str, str], Any]) -> None:
        self.features = features

    def extension(self, domain: str, number: str) -> Any:
        if (domain, number) not in self.features:
            return None
        return SimpleNamespace(features=self.features[(domain, number)])


class PolicyTests(SynchronousTestCase):
    """L{call_policy}: the caller's and callee's accounts, the default."""

    def call(self, callee: str = "sip:1001@pbx.example") -> Any:
        return SimpleNamespace(identity="1000@pbx.example", tenant="pbx.example",
                               callee=parse_uri(callee))

    def policy(self, caller: Any, callee: Any, default: str = "on_demand",
               target: str = "sip:1001@pbx.example") -> str:
        features = {}
        if caller is not None:
            features[("pbx.example", "1000")] = {"recording": caller}
        if callee is not None:
            features[("pbx.example", "1001")] = {"recording": callee}
        return call_policy(self.call(target), FakeDirectory(features), default)

    def test_default(self) -> None:
        """No account says: the switch's default."""
        self.assertEqual(self.policy(None, None, "never"), "never")
        self.assertEqual(call_policy(self.call(), None, "always"), "always")

    def test_caller_or_callee(self) -> None:
        """Either account's policy applies, over the default."""
        self.assertEqual(self.policy("always", None, "never"), "always")
        self.assertEqual(self.policy(None, "always"), "always")
        self.assertEqual(self.policy("never", None, "always"), "never")

    def test_most_recording_wins(self) -> None:
        """Both set: C{always} over C{on_demand} over C{never}."""
        self.assertEqual(self.policy("never", "always"), "always")
        self.assertEqual(self.policy("on_demand", "never", "always"), "on_demand")

    def test_callee_of_another_domain_ignored(self) -> None:
        """A callee outside the tenant's domain is no account of ours."""
        self.assertEqual(self.policy(None, "always", target="sip:1001@elsewhere.example"),
                         "on_demand")

    def test_bad_value_ignored(self) -> None:
        """A value that is not a policy is ignored (and logged)."""
        self.assertEqual(self.policy("sometimes", None, "never"), "never")
        self.assertEqual(call_policy(self.call(), FakeDirectory(
            {("pbx.example", "1000"): ["always"]}), "never"), "never")

    def test_settings(self) -> None:
        """The settings make the directory absolute and check the policy."""
        settings = RecordingSettings("rel", "always")
        self.assertTrue(settings.directory.is_absolute())
        self.assertRaises(ValueError, RecordingSettings, "x", "sometimes")
        media = SimpleNamespace(recordings="/var/rec", record_policy="never")
        self.assertEqual(RecordingSettings.from_config(media).policy, "never")
        self.assertEqual(RecordingSettings.from_config(None).policy, "on_demand")


class NewStreamTests(SynchronousTestCase):
    """A stream that gets new relay ends during the call (disabled with
    port 0, then enabled again) is tapped again: the recording goes on."""

    def test_re_enabled_stream(self) -> None:
        """The new ends get the recorder's taps through the relay's hold
        listeners; the file has audio from before and after."""
        h = RelayHarness()
        h.reactor.advance(1_700_000_000)
        call = SimpleNamespace(id="call-1", answered_at=1.0, identity="", tenant="",
                               callee=None, ended=False, data={})
        recordings = RelayRecordings(h.reactor, h.backend.relay,
                                     RecordingSettings(self.mktemp(), "always"), None,
                                     calls={"call-1": call}.get)
        facing_a, _ = h.establish()
        recordings.answered(call)
        first = [end.rtp for end in h.backend.relay.ends("call-1")]
        for n in range(10):
            h.reactor.deliver(facing_a, packet(n, 160 * n, tone(1000, 160, start=160 * n)), A_SDP)
            h.reactor.advance(0.02)
        disabled = audio_offer(*A_SDP)
        disabled.media[0].port = 0
        h.offer("call-1", disabled)
        h.answer("call-1", disabled)
        self.assertEqual(h.backend.relay.ends("call-1"), [])
        h.offer("call-1", audio_offer(*A_SDP))
        h.answer("call-1", audio_offer(*B_SDP))
        ends = h.backend.relay.ends("call-1")
        self.assertTrue(all(end.rtp not in first for end in ends))
        self.assertTrue(all(end.rtp.tap is not None for end in ends))
        facing_a = next(e for e in ends if e.side == "a")
        for n in range(10, 20):
            facing_a.rtp.datagramReceived(packet(n, 160 * n, tone(1000, 160, start=160 * n)),
                                          A_SDP)
            h.reactor.advance(0.02)
        recordings.ended(call)
        (entry,) = call.data["recordings"]
        left = samples(read_wav(entry["path"]).pcm)[0::2]
        self.assertGreater(max(left[:1600]), 6000)
        self.assertGreater(max(left[1600:3200]), 6000)
        h.backend.stop()
