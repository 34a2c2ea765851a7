"""Tests for L{oam.api.media_calls}: recording a live media-server call.

The media server is a fake (a plugin object with a C{ua} that knows one
call); the call's recordings are real (L{CallRecordings} on a temporary
directory), so the files the API starts and stops are checked on disk.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from media.relay_recordings import RecordingSettings, RelayRecordings
from media.rtp import rtp_packet
from media.server.recording import CallRecordings
from media.server.wav import read_wav
from oam.api.media_calls import parse_recording_action, parse_recording_body
from oam.api.openapi import build_document
from tests.trial.oam.api.support import VERSION, open_api

CALL_ID = "a84b4c76e66710@pc33.example.com"
PATH = "media/calls/a84b4c76e66710%40pc33.example.com/recording"


class FakeUA:
    """The part of L{MediaServerUA} the endpoint uses."""

    def __init__(self, calls: dict[str, CallRecordings]) -> None:
        self.calls = calls

    def recordings_of(self, call_id: str) -> CallRecordings | None:
        return self.calls.get(call_id)


class FakeMediaServer:
    """The media server plugin as it sits in the shared state."""

    def __init__(self, ua: FakeUA | None) -> None:
        self.ua = ua


class RecordingEndpointTests(TestCase):
    """C{POST /api/v1/media/calls/{call_id}/recording}."""

    async def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1709294405.0)
        self.directory = Path(self.mktemp())
        self.recordings = CallRecordings(self.clock, self.directory, CALL_ID)
        self.state: dict[str, Any] = {
            "media_server": FakeMediaServer(FakeUA({CALL_ID: self.recordings}))}
        self.api = await open_api(self, lambda: self.state)
        self.admin = await self.api.key("admin")

    async def post(self, body: Any, path: str = PATH, key: str | None = "") -> Any:
        return await self.api.request("POST", path, key=self.admin if key == "" else key,
                                      body=body)

    async def test_start_pause_resume_stop(self) -> None:
        """Each action answers 200 with the state; the file is on disk with
        what was recorded while not paused."""
        reply = await self.post({"action": "start"})
        self.assertEqual(reply.code, 200, reply.body)
        body = reply.json()
        self.assertEqual((body["call_id"], body["state"]), (CALL_ID, "recording"))
        path = Path(body["path"])
        self.assertTrue(str(path).startswith(str(self.directory)))
        self.recordings.received(bytes(320))
        self.recordings.received(bytes(320))
        self.assertEqual((await self.post({"action": "pause"})).json()["state"], "paused")
        self.recordings.received(bytes(320))
        self.assertEqual((await self.post({"action": "resume"})).json()["state"], "recording")
        reply = await self.post({"action": "stop"})
        body = reply.json()
        self.assertEqual((body["state"], body["path"]), ("stopped", None))
        self.assertEqual(body["recordings"],
                         [{"path": str(path), "mode": "stereo", "duration_ms": 40}])
        self.assertEqual(read_wav(path).channels, 2)

    async def test_unknown_call(self) -> None:
        """An unknown Call-ID, or no media server running: 404."""
        reply = await self.post({"action": "start"}, path="media/calls/nope/recording")
        self.assertEqual(reply.code, 404)
        self.state["media_server"] = FakeMediaServer(None)
        self.assertEqual((await self.post({"action": "start"})).code, 404)
        del self.state["media_server"]
        self.assertEqual((await self.post({"action": "start"})).code, 404)

    async def test_bad_action(self) -> None:
        """An unknown action, a missing one, an extra field: 422 naming them."""
        for body, field in [({"action": "rewind"}, "action"), ({}, "action"),
                            ({"action": "start", "when": 1}, "when"), ([], "body")]:
            reply = await self.post(body)
            self.assertEqual(reply.code, 422, body)
            self.assertIn(field, reply.json()["fields"])
        self.assertEqual(self.recordings.state, "idle")

    async def test_conflict(self) -> None:
        """Pausing with nothing recording: 409."""
        reply = await self.post({"action": "pause"})
        self.assertEqual(reply.code, 409)
        self.assertEqual(reply.json()["field"], "action")

    async def test_cannot_create(self) -> None:
        """A directory that cannot be created: 503."""
        blocker = Path(self.mktemp())
        blocker.write_text("not a directory")
        self.recordings.directory = blocker / "sub"
        reply = await self.post({"action": "start"})
        self.assertEqual(reply.code, 503)

    async def test_admins_only(self) -> None:
        """Other keys get 403, no key 401; nothing starts."""
        key = await self.api.key("reseller", await self.api.build.tenant())
        self.assertEqual((await self.post({"action": "start"}, key=key)).code, 403)
        self.assertEqual((await self.post({"action": "start"}, key=None)).code, 401)
        self.assertEqual(self.recordings.state, "idle")

    async def test_post_only(self) -> None:
        """GET is 405; the call itself and unknown children are 404."""
        reply = await self.api.request("GET", PATH, key=self.admin)
        self.assertEqual(reply.code, 405)
        reply = await self.api.request("GET", "media/calls/x", key=self.admin)
        self.assertEqual(reply.code, 404)
        reply = await self.api.request("POST", "media/calls/x/other", key=self.admin)
        self.assertEqual(reply.code, 404)


SWITCH_CALL = "5a1f3c@10.0.0.1"
SWITCH_PATH = "media/calls/5a1f3c%4010.0.0.1/recording"


class FakeRelay:
    """The relay's feature interface, for one call with one audio stream."""

    def __init__(self) -> None:
        self.hold_listeners: list[Any] = []
        self.close_listeners: list[Any] = []
        self.taps = {side: SimpleNamespace(tap=None) for side in "ab"}

    def ends(self, call_id: str) -> list[Any]:
        if call_id != SWITCH_CALL:
            return []
        return [SimpleNamespace(call_id=call_id, index=0, side=side, media="audio",
                                rtp=self.taps[side], held=False) for side in "ab"]


class SwitchCallTests(TestCase):
    """The same endpoint on a switch call whose media the relay anchors."""

    async def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1709294405.0)
        self.directory = Path(self.mktemp())
        self.relay = FakeRelay()
        self.call = SimpleNamespace(id=SWITCH_CALL, answered_at=1.0, identity="1000@t",
                                    tenant="t", callee=None, ended=False, data={})
        self.recordings = self.relays(self.relay, "on_demand")
        self.media_server = CallRecordings(self.clock, self.directory, CALL_ID)
        self.state: dict[str, Any] = {
            "call_recordings": self.recordings,
            "media_server": FakeMediaServer(FakeUA({CALL_ID: self.media_server}))}
        self.api = await open_api(self, lambda: self.state)
        self.admin = await self.api.key("admin")

    def relays(self, relay: Any, policy: str) -> RelayRecordings:
        return RelayRecordings(self.clock, relay, RecordingSettings(self.directory, policy),
                               None, calls={SWITCH_CALL: self.call}.get)

    async def post(self, body: Any, path: str = SWITCH_PATH) -> Any:
        return await self.api.request("POST", path, key=self.admin, body=body)

    async def test_start_with_mode_and_stop(self) -> None:
        """C{start} in a mode, packets through the taps, C{stop}: the file
        is listed with its mode."""
        reply = await self.post({"action": "start", "mode": "mixed"})
        self.assertEqual(reply.code, 200, reply.body)
        body = reply.json()
        self.assertEqual((body["call_id"], body["source"], body["state"], body["mode"]),
                         (SWITCH_CALL, "relay", "recording", "mixed"))
        for n in range(25):
            self.relay.taps["a"].tap(rtp_packet(0, n, 160 * n, 1, b"\x10" * 160),
                                     self.clock.seconds())
            self.clock.advance(0.02)
        body = (await self.post({"action": "stop"})).json()
        self.assertEqual(body["state"], "stopped")
        (recording,) = body["recordings"]
        self.assertEqual(recording["mode"], "mixed")
        self.assertGreaterEqual(recording["duration_ms"], 500)
        self.assertEqual(read_wav(recording["path"]).channels, 1)

    async def test_unknown_switch_call(self) -> None:
        """A Call-ID neither the media server nor the switch knows: 404."""
        self.assertEqual((await self.post({"action": "start"}, "media/calls/x/recording")).code,
                         404)
        del self.state["call_recordings"]
        self.assertEqual((await self.post({"action": "start"})).code, 404)

    async def test_refusals(self) -> None:
        """Policy C{never}, another backend (rtpengine), not answered yet:
        409 saying why."""
        self.state["call_recordings"] = self.relays(self.relay, "never")
        reply = await self.post({"action": "start"})
        self.assertEqual(reply.code, 409)
        self.assertIn("never", reply.json()["message"])
        self.state["call_recordings"] = self.relays(None, "always")
        reply = await self.post({"action": "start"})
        self.assertEqual(reply.code, 409)
        self.assertIn("built-in relay", reply.json()["message"])
        self.state["call_recordings"] = self.recordings
        self.call.answered_at = None
        self.assertEqual((await self.post({"action": "start"})).code, 409)

    async def test_bad_mode(self) -> None:
        """An unknown mode: 422; a media-server call is stereo only."""
        reply = await self.post({"action": "start", "mode": "quad"})
        self.assertEqual(reply.code, 422)
        self.assertIn("mode", reply.json()["fields"])
        reply = await self.post({"action": "start", "mode": "a"}, PATH)
        self.assertEqual(reply.code, 422)
        self.assertEqual(self.media_server.state, "idle")
        reply = await self.post({"action": "start", "mode": "stereo"}, PATH)
        self.assertEqual(reply.json()["source"], "media_server")
        self.media_server.close()

    async def test_cannot_create(self) -> None:
        """A directory that cannot be created: 503."""
        blocker = Path(self.mktemp())
        blocker.write_text("not a directory")
        self.recordings.settings.directory = blocker / "sub"
        self.assertEqual((await self.post({"action": "start"})).code, 503)


class DocumentTests(SynchronousTestCase):
    """The OpenAPI entry and the body check."""

    def test_document(self) -> None:
        """The route is in the document when served."""
        path = "/media/calls/{call_id}/recording"
        self.assertIn(path, build_document(VERSION, media=True)["paths"])
        self.assertNotIn(path, build_document(VERSION)["paths"])

    def test_parse(self) -> None:
        """Only C{{"action": one of four}} is accepted."""
        self.assertEqual(parse_recording_action({"action": "pause"}), ("pause", {}))
        self.assertEqual(parse_recording_action({"action": 1})[0], None)
        self.assertEqual(parse_recording_action("start"), (None, {"body": "must be an object"}))
        self.assertEqual(parse_recording_body({"action": "start", "mode": "b"}),
                         ("start", "b", {}))
        self.assertEqual(parse_recording_body({"action": "start", "mode": "x"})[2],
                         {"mode": "one of stereo, mixed, a, b"})
