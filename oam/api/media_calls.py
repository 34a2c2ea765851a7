"""Recording of a live call over the API (admins only).

    POST /api/v1/media/calls/{call_id}/recording
         {"action": "start" | "stop" | "pause" | "resume",
          "mode": "stereo" | "mixed" | "a" | "b"}          (mode: optional)

C{call_id} names one of two kinds of call, percent-encoded in the path:

  - B{a media-server call}: the SIP Call-ID of the media server's call (its
    B leg, as the switch's logs and the recording file names show it).
    The whole-call recording of C{media/server/recording.py}: stereo only
    (a C{mode} other than C{stereo} is 422).
  - B{a switch call} whose media the built-in relay anchors: the A leg's
    Call-ID, the C{call_id} of its CDR.  The relay-tap recording of
    C{media/call_recording.py} (C{docs/call-recording.md}); C{mode} chooses,
    for C{start}, both parties in stereo (the default), mixed into one
    channel, or one party (C{a} the caller, C{b} the callee).

The media server's calls are looked up first.  The answer is 200 with the
recording's state after the action:

    {"call_id": "a84b4c76e66710@pc33", "source": "relay", "state": "recording",
     "mode": "stereo",
     "path": "/var/lib/b2bua/recordings/2024/03/01/20240301-120005-...wav",
     "duration_ms": 0, "recordings": []}

C{recordings} lists the files already finished (a C{stop}, then a C{start},
makes a new file).  An action already in effect answers 200 unchanged, so
a retried request is harmless.

    =========================================================  ====
    a key that is not an admin key                             403
    no such live call (nor media server), recording not        404
    configured
    a body that is not C{{"action": ..., "mode": ...}}         422
    C{pause}/C{resume} with nothing recording, C{start} while  409
    paused, a call that is ending or not answered yet; a
    switch call whose policy is C{never}, or whose media is
    not in the built-in relay (rtpengine), or is listened to
    by another feature
    the file cannot be created (the disk, permissions)         503
    =========================================================  ====

The endpoint finds the media server in the plugins' shared state
(C{services.extra["media_server"]}, the running L{MediaServer} plugin,
whose C{ua} holds the calls) and the switch's calls in
C{services.extra["call_recordings"]} (the media plugin's
L{media.call_recording.RelayRecordings}), so the switch needs no other
wiring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from b2bua.db.interfaces import Scope
from media.call_recording import MODES
from media.relay_recordings import RecordingUnavailable, UnknownRecordingCall
from media.server.recorder import RecordingError
from media.server.recording import ACTIONS, RecordingConflict
from oam.api.endpoint import ApiContext, ApiEndpoint, json_body
from oam.api.problems import ApiError, Reply, conflict, forbidden, invalid, not_found
from oam.resource import NotFound

__all__ = ["MAX_CALL_ID", "MediaCallResource", "MediaCallsRoot", "MediaRoot",
           "RecordingResource", "parse_recording_action", "parse_recording_body"]

log = Logger()

#: The longest Call-ID looked up.
MAX_CALL_ID = 256
#: Where the media server plugin leaves itself in the shared state.
MEDIA_SERVER = "media_server"
#: Where the media plugin leaves the switch calls' recordings.
CALL_RECORDINGS = "call_recordings"


def parse_recording_body(body: Any) -> tuple[str | None, str | None, dict[str, str]]:
    """Check a recording body: C{{"action": "start", "mode": "mixed"}}
    (C{mode} optional).

    @return: the action (C{None} when bad), the mode (C{None} when not
        given) and the bad fields.
    """
    if not isinstance(body, dict):
        return None, None, {"body": "must be an object"}
    errors = {str(name)[:64]: "unknown field" for name in body
              if name not in ("action", "mode")}
    action = body.get("action")
    if action not in ACTIONS:
        errors["action"] = f"required: one of {', '.join(ACTIONS)}"
        action = None
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        errors["mode"] = f"one of {', '.join(MODES)}"
        mode = None
    return (None if errors else action), mode, errors


def parse_recording_action(body: Any) -> tuple[str | None, dict[str, str]]:
    """Check a recording body: C{{"action": "start"}} (see
    L{parse_recording_body}; the mode is left out).

    @return: the action (C{None} when bad) and the bad fields.
    """
    action, _, errors = parse_recording_body(body)
    return action, errors


class RecordingResource(ApiEndpoint):
    """C{POST /api/v1/media/calls/{call_id}/recording} (module docstring)."""

    isLeaf = True
    methods = ("POST",)

    def __init__(self, api: ApiContext, extra: Callable[[], Mapping[str, Any]],
                 call_id: str) -> None:
        super().__init__(api)
        self.extra = extra
        self.call_id = call_id

    async def handle_post(self, request: IRequest, scope: Scope) -> Reply:
        """Apply the action to the call's recording; its state."""
        if scope.role != "admin":
            raise forbidden()
        if len(self.call_id) > MAX_CALL_ID:
            raise not_found()
        action, mode, errors = parse_recording_body(json_body(request))
        recordings = self._media_server_call()
        if recordings is not None and mode not in (None, "stereo"):
            errors["mode"] = "a media-server call is recorded in stereo"
        if action is None or errors:
            raise invalid(errors)
        try:
            if recordings is not None:
                recordings.control(action)
                return Reply(200, {"call_id": self.call_id, "source": "media_server",
                                   **recordings.status()})
            return Reply(200, {"call_id": self.call_id, "source": "relay",
                               **self._switch_call(action, mode)})
        except (RecordingConflict, RecordingUnavailable) as error:
            raise conflict("action", str(error)) from None
        except RecordingError as error:
            log.warn("oam api: cannot record {call_id}: {error}", call_id=self.call_id,
                     error=error)
            raise ApiError(503, {"error": "unavailable", "reason": "the recording file "
                                 "cannot be created"}, {b"Retry-After": b"5"}) from None

    def _media_server_call(self) -> Any:
        """The media server's L{CallRecordings} of the call, or C{None}."""
        server = self.extra().get(MEDIA_SERVER)
        ua = getattr(server, "ua", None)
        return None if ua is None else ua.recordings_of(self.call_id)

    def _switch_call(self, action: str, mode: str | None) -> dict[str, object]:
        """The action on a switch call's relay recording. @raise ApiError: 404."""
        recordings = self.extra().get(CALL_RECORDINGS)
        if recordings is None:
            raise not_found()
        try:
            return recordings.control(self.call_id, action, mode)
        except UnknownRecordingCall:
            raise not_found() from None


class MediaCallResource(Resource):
    """C{/api/v1/media/calls/{call_id}}: only C{recording} below it."""

    def __init__(self, api: ApiContext, extra: Callable[[], Mapping[str, Any]],
                 call_id: str) -> None:
        super().__init__()
        self.api = api
        self.extra = extra
        self.call_id = call_id

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """C{recording}; anything else is 404."""
        if path == b"recording":
            return RecordingResource(self.api, self.extra, self.call_id)
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        """The call itself: 404 (no call listing yet)."""
        return NotFound().render(request)


class MediaCallsRoot(Resource):
    """C{/api/v1/media/calls}: each child is one call, by its Call-ID."""

    def __init__(self, api: ApiContext, extra: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__()
        self.api = api
        self.extra = extra

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """The call C{path} (percent-decoded by the web server)."""
        if path == b"":
            return NotFound()
        return MediaCallResource(self.api, self.extra, path.decode("utf-8", "replace"))

    def render(self, request: IRequest) -> bytes:
        """The path itself: 404."""
        return NotFound().render(request)


class MediaRoot(Resource):
    """C{/api/v1/media}: only C{calls} below it."""

    def __init__(self, api: ApiContext, extra: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__()
        self.putChild(b"calls", MediaCallsRoot(api, extra))

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """Unknown: 404."""
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        """The path itself: 404."""
        return NotFound().render(request)
