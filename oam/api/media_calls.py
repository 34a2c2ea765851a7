"""Recording of a live media-server call over the API (admins only).

    POST /api/v1/media/calls/{call_id}/recording
         {"action": "start" | "stop" | "pause" | "resume"}

C{call_id} is the SIP Call-ID of the media server's call (its B leg, as the
switch's logs and the recording file names show it), percent-encoded in
the path.  The answer is 200 with the whole-call recording's state after
the action (C{media/server/recording.py}):

    {"call_id": "a84b4c76e66710@pc33", "state": "recording",
     "path": "/var/lib/b2bua/recordings/2024/03/01/20240301-120005-...wav",
     "duration_ms": 0, "recordings": []}

C{recordings} lists the files already finished (a C{stop}, then a C{start},
makes a new file).  An action already in effect answers 200 unchanged, so
a retried request is harmless.

    =========================================================  ====
    a key that is not an admin key                             403
    no media server, no such call, or recording not configured 404
    a body that is not C{{"action": one of the four}}          422
    C{pause}/C{resume} with nothing recording, C{start} while  409
    paused, a call that is ending
    the file cannot be created (the disk, permissions)         503
    =========================================================  ====

The endpoint finds the media server in the plugins' shared state
(C{services.extra["media_server"]}, the running L{MediaServer} plugin,
whose C{ua} holds the calls), so the switch needs no other wiring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from b2bua.db.interfaces import Scope
from media.server.recorder import RecordingError
from media.server.recording import ACTIONS, RecordingConflict
from oam.api.endpoint import ApiContext, ApiEndpoint, json_body
from oam.api.problems import ApiError, Reply, conflict, forbidden, invalid, not_found
from oam.resource import NotFound

__all__ = ["MAX_CALL_ID", "MediaCallResource", "MediaCallsRoot", "MediaRoot",
           "RecordingResource", "parse_recording_action"]

log = Logger()

#: The longest Call-ID looked up.
MAX_CALL_ID = 256
#: Where the media server plugin leaves itself in the shared state.
MEDIA_SERVER = "media_server"


def parse_recording_action(body: Any) -> tuple[str | None, dict[str, str]]:
    """Check a recording body: C{{"action": "start"}}.

    @return: the action (C{None} when bad) and the bad fields.
    """
    if not isinstance(body, dict):
        return None, {"body": "must be an object"}
    errors = {str(name)[:64]: "unknown field" for name in body if name != "action"}
    action = body.get("action")
    if action not in ACTIONS:
        errors["action"] = f"required: one of {', '.join(ACTIONS)}"
        action = None
    return (None if errors else action), errors


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
        """Apply the action to the call's whole-call recording; its state."""
        if scope.role != "admin":
            raise forbidden()
        recordings = self._recordings()
        action, errors = parse_recording_action(json_body(request))
        if action is None:
            raise invalid(errors)
        try:
            recordings.control(action)
        except RecordingConflict as error:
            raise conflict("action", str(error)) from None
        except RecordingError as error:
            log.warn("oam api: cannot record {call_id}: {error}", call_id=self.call_id,
                     error=error)
            raise ApiError(503, {"error": "unavailable", "reason": "the recording file "
                                 "cannot be created"}, {b"Retry-After": b"5"}) from None
        return Reply(200, {"call_id": self.call_id, **recordings.status()})

    def _recordings(self) -> Any:
        """The call's L{CallRecordings}. @raise ApiError: 404."""
        server = self.extra().get(MEDIA_SERVER)
        ua = getattr(server, "ua", None)
        if ua is None or len(self.call_id) > MAX_CALL_ID:
            raise not_found()
        recordings = ua.recordings_of(self.call_id)
        if recordings is None:
            raise not_found()
        return recordings


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
