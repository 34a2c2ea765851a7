"""The switch side of call recording: which calls are recorded, and the
relay's taps pointed at their L{media.call_recording.RelayCallRecorder}.

L{RelayRecordings} belongs to the media plugin (C{media/plugin.py}), which
leaves it in C{services.extra["call_recordings"]} for the HTTP API
(C{oam/api/media_calls.py}).  It

  - decides each call's B{policy} (L{call_policy}): C{always} records from
    the answer on, C{on_demand} when the API asks, C{never} refuses the API;
    the caller's and (for a call to an extension) the callee's accounts'
    C{features["recording"]}, else the switch-wide C{[media] record_policy};
  - points the B{taps} of the call's first audio stream (both parties) at
    the call's recorder, and a stream that appears later (a late offer, a
    re-INVITE) too, through the relay's C{hold_listeners};
  - at the call's end finishes the files and lists them in
    C{call.data["recordings"]} (L{media.call_recording.add_recording}), so
    the CDR (built right after) has them.

Only the built-in relay can be recorded: with rtpengine (C{relay} is
C{None}) every API action is refused with L{RecordingUnavailable} and a
call whose policy is C{always} is logged once.  C{docs/call-recording.md}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from media.call_recording import (
    POLICIES,
    SOURCE,
    RecordingMetrics,
    RelayCallRecorder,
    add_recording,
)
from media.server.recorder import RecordingError
from media.server.recording import RecordingConflict

__all__ = [
    "RecordingSettings",
    "RecordingUnavailable",
    "RelayRecordings",
    "UnknownRecordingCall",
    "account_policy",
    "call_policy",
]

log = Logger()


class RecordingUnavailable(Exception):
    """Recording cannot be had on this call: its policy is C{never}, the
    media backend is not the built-in relay, or another feature listens to
    its media.  The API answers 409."""


class UnknownRecordingCall(KeyError):
    """No call with media anchored by the switch has this id (404)."""


class RecordingSettings:
    """Where files go and the switch-wide default policy (C{[media]
    recordings}, C{[media] record_policy}).

    @ivar directory: absolute.
    @ivar policy: one of L{POLICIES}.
    """

    def __init__(self, directory: str | Path = "recordings", policy: str = "on_demand") -> None:
        """@raise ValueError: for a policy not in L{POLICIES}."""
        if policy not in POLICIES:
            raise ValueError(f"record_policy must be one of {', '.join(POLICIES)}, "
                             f"not {policy!r}")
        self.directory = Path(directory).absolute()
        self.policy = policy

    @classmethod
    def from_config(cls, media: Any) -> RecordingSettings:
        """From the C{[media]} section (L{b2bua.config.MediaConfig}); the
        defaults when C{media} is C{None} or older."""
        if media is None:
            return cls()
        return cls(getattr(media, "recordings", "recordings"),
                   getattr(media, "record_policy", "on_demand"))


def account_policy(directory: Any, domain: str, number: str) -> str | None:
    """The C{features["recording"]} of the extension C{number} of the
    tenant at C{domain}, when it is one of L{POLICIES}; else C{None}."""
    if directory is None or not domain or not number:
        return None
    try:
        extension = directory.extension(domain, number)
    except Exception:
        log.failure("call recording: directory lookup of {number}@{domain} failed",
                    number=number, domain=domain)
        return None
    features = getattr(extension, "features", None)
    value = features.get("recording") if hasattr(features, "get") else None
    if value is None:
        return None
    if value not in POLICIES:
        log.warn("call recording: {number}@{domain} has features.recording = {value!r}; "
                 "expected one of {policies}: ignored", number=number, domain=domain,
                 value=value, policies=", ".join(POLICIES))
        return None
    return value


def call_policy(call: Any, directory: Any, default: str) -> str:
    """The recording policy of a call (a decision the brief left open):

      - the caller's account's (C{call.identity}, an extension AOR) and,
        for a call to an extension of the tenant, the callee's account's
        C{features["recording"]};
      - when both are set the one that records more wins (C{always} over
        C{on_demand} over C{never}): a duty to record one party's calls
        is kept, and C{never} only takes an account out of the default;
      - when neither is set, the switch-wide C{default}.
    """
    found = []
    number, _, domain = (getattr(call, "identity", "") or "").rpartition("@")
    found.append(account_policy(directory, domain, number))
    callee = getattr(call, "callee", None)
    tenant = getattr(call, "tenant", "") or ""
    host = getattr(callee, "host", None) or ""
    user = getattr(callee, "user", None) or ""
    if user and host and (not tenant or host.lower() == tenant.lower()):
        found.append(account_policy(directory, host, user))
    for policy in POLICIES:
        if policy in found:
            return policy
    return default


class RelayRecordings:
    """The switch side of call recording: one L{RelayCallRecorder} per
    call that records (or did), the policy, the taps, the API's control.

    @ivar settings: the directory and default policy.
    @ivar available: whether calls can be recorded (the backend is the
        built-in relay).
    """

    def __init__(self, clock: IReactorTime, relay: Any, settings: RecordingSettings,
                 metrics: RecordingMetrics | None, *, calls: Callable[[str], Any],
                 directory: Callable[[], Any] = lambda: None,
                 token: Callable[[], str] | None = None) -> None:
        """
        @param clock: the relay's clock.
        @param relay: the L{media.relay.Relay} (C{None}: another backend,
            nothing can be recorded).
        @param calls: the live anchored call of an id, or C{None}.
        @param directory: the provisioning directory now (for policies).
        @param token: the random part of file names (tests).
        """
        self._clock = clock
        self.relay = relay
        self.settings = settings
        self.metrics = metrics
        self._calls = calls
        self._directory = directory
        self._token = token
        self._recorders: dict[str, RelayCallRecorder] = {}
        self._policies: dict[str, str] = {}
        self._warned = False
        if relay is not None:
            relay.hold_listeners.append(self._end_changed)
            relay.close_listeners.append(self._media_closed)

    @property
    def available(self) -> bool:
        """Whether the backend lets calls be recorded."""
        return self.relay is not None

    def policy(self, call: Any) -> str:
        """The call's policy (L{call_policy}), read once per call."""
        policy = self._policies.get(call.id)
        if policy is None:
            policy = self._policies[call.id] = call_policy(call, self._directory(),
                                                           self.settings.policy)
        return policy

    def answered(self, call: Any) -> None:
        """The call was answered: start recording when its policy is
        C{always} (a file that cannot be created is logged and counted;
        the call goes on)."""
        if not self.available:
            if not self._warned and self.policy(call) == "always":
                self._warned = True
                log.warn("call recording: {call_id} should be recorded (policy always) but "
                         "the media backend cannot record (only the built-in relay can); "
                         "said once", call_id=call.id)
            return
        if self.policy(call) != "always":
            return
        try:
            self._recorder(call.id).control("start")
        except (RecordingError, RecordingUnavailable) as error:
            log.warn("call recording: {call_id} not recorded: {error}", call_id=call.id,
                     error=error)

    def control(self, call_id: str, action: str, mode: str | None = None) -> dict[str, object]:
        """The API's action on a live call.

        @return: the recording's status after it.
        @raise UnknownRecordingCall: no such live call.
        @raise RecordingUnavailable: not the relay, policy C{never}, the
            media already tapped by another feature.
        @raise RecordingConflict: not answered yet, or the state forbids it.
        @raise RecordingError: the file cannot be created.
        @raise ValueError: a bad action or mode.
        """
        call = self._calls(call_id)
        if call is None or getattr(call, "ended", False):
            raise UnknownRecordingCall(call_id)
        if not self.available:
            raise RecordingUnavailable('recording needs the built-in relay ([media] backend = '
                                       '"relay")')
        if self.policy(call) == "never":
            raise RecordingUnavailable("the recording policy of this call is never")
        if getattr(call, "answered_at", None) is None:
            raise RecordingConflict("the call is not answered yet")
        recorder = self._recorder(call_id)
        recorder.control(action, mode)
        return recorder.status()

    def status(self, call_id: str) -> dict[str, object] | None:
        """A call's recording status (C{None}: nothing ever recorded)."""
        recorder = self._recorders.get(call_id)
        return None if recorder is None else recorder.status()

    def ended(self, call: Any) -> None:
        """The call ended: finish its files, list them in
        C{call.data["recordings"]}, let go of the call."""
        self._policies.pop(call.id, None)
        recorder = self._recorders.pop(call.id, None)
        if recorder is None:
            return
        self._detach(call.id, recorder)
        for recording, mode in recorder.close():
            add_recording(call, str(recording.path), mode, recording.duration_ms, SOURCE)
            log.info("call recording: {call_id} recorded in {path} ({duration_ms} ms)",
                     call_id=call.id, path=str(recording.path),
                     duration_ms=recording.duration_ms)

    # -- taps ----------------------------------------------------------------------

    def _recorder(self, call_id: str) -> RelayCallRecorder:
        recorder = self._recorders.get(call_id)
        if recorder is None:
            recorder = RelayCallRecorder(self._clock, self.settings.directory, call_id,
                                         metrics=self.metrics, token=self._token)
            if not self._attach(call_id, recorder):
                raise RecordingUnavailable("another feature listens to this call's media")
            self._recorders[call_id] = recorder
        return recorder

    def _attach(self, call_id: str, recorder: RelayCallRecorder) -> bool:
        """Point the taps of the call's first audio stream at C{recorder}.

        @return: false when another feature's tap is there.
        """
        audio = [end for end in self.relay.ends(call_id) if end.media == "audio"]
        if not audio:
            return True  # no stream yet (a late offer): attached when it comes
        first = min(end.index for end in audio)
        taps = {"a": recorder.tap_a, "b": recorder.tap_b}
        for end in audio:
            if end.index != first:
                continue
            current = end.rtp.tap
            if current is None:
                end.rtp.tap = taps[end.side]
            elif current != taps[end.side]:
                return False
        return True

    def _detach(self, call_id: str, recorder: RelayCallRecorder) -> None:
        if self.relay is None:
            return
        for end in self.relay.ends(call_id):
            if end.rtp.tap in (recorder.tap_a, recorder.tap_b):
                end.rtp.tap = None

    def _end_changed(self, end: Any) -> None:
        """A relay end appeared or changed hold state: a recorded call's
        new audio stream gets the taps."""
        recorder = self._recorders.get(end.call_id)
        if recorder is not None and end.media == "audio" and end.rtp.tap is None:
            self._attach(end.call_id, recorder)

    def _media_closed(self, call_id: str) -> None:
        """The relay closed a call's media (its end, or shutdown): stop
        writing; the files are listed when the call's end is handled."""
        recorder = self._recorders.get(call_id)
        if recorder is not None and recorder.state in ("recording", "paused"):
            recorder.control("stop")

    def close_all(self) -> None:
        """Shutdown: finish every file."""
        for recorder in list(self._recorders.values()):
            recorder.close()
