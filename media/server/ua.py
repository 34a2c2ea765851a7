"""The media server as a SIP user agent: it answers calls and runs IVR flows.

L{MediaServerUA} is an in-process user agent on its own loopback listener,
built on the project's SIP stack (transport layer, transaction layer,
dialogs).  The switch reaches it like any phone: a route whose destination
is C{sip:<flow>@127.0.0.1:<port>} (see C{media/server/plugin.py}).

  - B{INVITE}: the Request-URI user names the flow (C{404} when there is
    none); the SDP offer is answered with L{negotiate} (C{488} with a
    C{Warning} when nothing is acceptable, also for an INVITE without an
    offer); an L{RtpSession} is opened on a pool port (C{503} when the
    pool is exhausted) and the C{200} carries the answer, re-sent until
    the ACK (RFC 3261 13.3.1.4; no ACK in 64*T1: BYE).
  - B{ACK}: the flow starts (L{run_flow}) on a L{MediaCall}, with the
    variables C{caller} (the From user), C{called} (the flow name),
    C{tenant} (the From host) and C{language}: the tenant's language
    (C{tenant_languages}, by From host, case-insensitive) or the default
    language; a flow's C{set} of C{language} switches the call's prompt
    set (C{languages}, one L{PromptSet} per code, each with its own cache).
  - B{In-dialog requests} (BYE, INFO, re-INVITE, UPDATE, OPTIONS, the
    NOTIFYs of a transfer) and the B{REFER} of a flow's C{transfer} node:
    L{media.server.ua_dialog} (L{InDialogRequests}, a base class of
    L{MediaServerUA}).
  - B{the flow's end}: the session's C{hangup} sends a BYE with a
    C{Reason} (L{reason_for_cause}); the user agent reports each run's
    L{FlowResult} to C{on_result}.  After a transfer it waits for the
    switch's BYE (L{TRANSFERRED_BYE_WAIT} at most, then sends its own).
  - B{Recording} (with a C{recordings} directory): each call gets its
    L{CallRecordings}; the whole call is recorded (stereo) from the ACK on
    when the call's policy is C{always} (the flow variable C{record}, or
    C{record_policy}); L{recordings_of} gives a live call's recordings to
    the API.  When the call ends every file is finished, named in one
    C{X-Recording: <path>;duration=<ms>} header per file on the BYE we send
    (or on our C{200} to the caller's BYE), and the whole-call files go
    into the run's variables C{call_recording} (paths, comma-separated)
    and C{call_recording_ms} (their total duration).
  - B{Ad-hoc conference rooms}: an INVITE whose Request-URI user is
    C{conf-<room>} (and no flow has that name) joins room C{<room>} of
    L{conferences} directly, with no flow: at the C{200}, so that a full
    room is refused with C{486 Busy Here} before anything is answered
    (C{404} for a bad room name); the Request-URI parameters C{max=N}
    (the room's limit) and C{muted} (listen-only) apply to the join.
    The call stays in the room until
    either side hangs up.  This is what three-way calling uses (see
    C{docs/media-server-conference.md}).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from b2bua.core.leg import target_for_uri
from b2bua.sip.dialog import Dialog
from b2bua.sip.errors import ParseError, SIPError, TransactionTimeout, TransportError
from b2bua.sip.headers import NameAddress
from b2bua.sip.interfaces import Source, Transport
from b2bua.sip.message import KNOWN_METHODS, Request, Response, make_response
from b2bua.sip.sdp import parse_sdp
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transaction_server import TwoXXRetransmitter
from b2bua.sip.uri import URI
from media.ports import PortPool, PortsExhausted
from media.server.conference import ROOM_NAME, ConferenceError, Conferences, RoomFull
from media.server.g711 import PCMU
from media.server.ivr import Flow
from media.server.ivr_actions import ActionRegistry
from media.server.ivr_runtime import FlowResult, run_flow
from media.server.negotiation import NotAcceptableHere, make_origin, negotiate
from media.server.prompts import PromptSet
from media.server.recorder import Recording, RecordingError
from media.server.recording import RECORD_POLICIES, CallRecordings, header_value
from media.server.refer import DEFAULT_TRANSFER_TIMEOUT
from media.server.rtp_session import RtpSession
from media.server.ua_dialog import ALLOWED, AnsweredCall, InDialogRequests
from media.server.ua_session import MediaCall, reason_for_cause

__all__ = ["ALLOWED", "CONFERENCE_PREFIX", "NO_ACK_REASON", "STOPPING_REASON",
           "TRANSFERRED_BYE_WAIT", "TRANSFERRED_REASON", "MediaServerUA", "reason_for_cause"]

#: Seconds a transferred call waits for the switch's BYE before sending its own.
TRANSFERRED_BYE_WAIT = 32.0
#: The Reason of that BYE.
TRANSFERRED_REASON = 'SIP;cause=200;text="Call transferred"'
#: The Reason of the BYE when no ACK came for the 200.
NO_ACK_REASON = 'SIP;cause=408;text="no ACK"'
#: The Request-URI user prefix of ad-hoc conference rooms (C{conf-<room>}).
CONFERENCE_PREFIX = "conf-"
#: The largest C{max} parameter of a C{conf-<room>} Request-URI.
MAX_ROOM_LIMIT = 1000
#: The Reason of the BYEs sent when the media server stops.
STOPPING_REASON = 'Q.850;cause=41;text="media server stopping"'


def _from_host(request: Request) -> str:
    """The From host of a request (the tenant), C{""} when unparsable."""
    try:
        return request.from_.uri.host or ""
    except (ParseError, AttributeError):
        return ""


class _ByeOwner:
    """The client transaction user of a BYE we sent: nothing to do but log."""

    log = Logger()

    def __init__(self, label: str) -> None:
        self.label = label
        self.code: int | None = None

    def response_received(self, response: Response, transaction: object) -> None:
        """Keep the final code."""
        if response.code >= 200:
            self.code = response.code

    def transaction_failed(self, transaction: object, error: Exception) -> None:
        """The BYE got no answer: the dialog is gone either way."""
        self.log.info("media server: BYE of {call} failed: {error!r}", call=self.label,
                      error=error)


class MediaServerUA(InDialogRequests):
    """The media server's SIP user agent (a transaction user).

    @ivar calls: the calls answered and not yet ended, by (Call-ID, our tag).
    @ivar transactions: the L{TransactionLayer} (once started).
    @ivar answered: final responses sent to INVITEs, by code.
    @ivar missing_prompts: prompt names already logged as missing.
    @ivar transfers: transfers (REFERs sent) by outcome, and bad NOTIFYs.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 5070),
        flows: Mapping[str, Flow],
        actions: ActionRegistry,
        prompts: PromptSet | None,
        port_pool: PortPool,
        media_address: str | None = None,
        transport: Transport | None = None,
        timers: Timers | None = None,
        tz: datetime.tzinfo | None = None,
        on_result: Callable[[Flow, FlowResult], object] | None = None,
        user_agent: str = "b2bua media server",
        random: Callable[[int], bytes] = os.urandom,
        recordings: str | os.PathLike[str] | None = None,
        record_policy: str = "on_demand",
        conferences: Conferences | None = None,
        conference_max: int = 0,
        conference_announce: bool = False,
        transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT,
        languages: Mapping[str, PromptSet | None] | None = None,
        language: str = "",
        tenant_languages: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param reactor: the clock and (for the RTP sessions and, without
            C{transport}, the SIP listener) C{IReactorUDP}.
        @param listen: the UDP address of the SIP listener.
        @param flows: the applications, by flow name (the Request-URI user).
        @param actions: what the flows' C{action} nodes call.
        @param prompts: the prompt set (C{None}: every prompt is silence).
        @param port_pool: where the RTP/RTCP port pairs come from.
        @param media_address: the address of our RTP (default: the SIP
            listener's host).
        @param transport: a ready transport (tests); default: a
            L{b2bua.sip.transport.TransportLayer} listening at C{listen}.
        @param tz: the zone of the flows' clock (default: local).
        @param on_result: called with the flow and the L{FlowResult} of
            every run.
        @param recordings: the directory of the recordings (C{None}: the
            calls cannot record).
        @param record_policy: C{on_demand} or C{always} (every call is
            recorded whole, stereo).
        @param conferences: the conference rooms (default: a new
            L{Conferences} on C{reactor}); ad-hoc C{conf-<room>} calls and
            the flows' C{conference} nodes share them.
        @param conference_max: the limit of an ad-hoc room created by a
            C{conf-<room>} call (C{0}: none).
        @param conference_announce: whether ad-hoc joins and leaves are
            announced by a tone.
        @param transfer_timeout: seconds a transfer waits for its final
            status (a C{transfer} node's C{timeout} overrides it).
        @param languages: every prompt set a call may use, by language code
            (C{None}: that language's prompts are silence); default: just
            C{prompts}.
        @param language: the default language (default: that of C{prompts});
            C{prompts} should be its set.
        @param tenant_languages: a tenant's (From host's) own default
            language, by tenant domain.
        @raise ValueError: for an unknown C{record_policy}, a negative
            C{conference_max}, a C{transfer_timeout} that is not positive,
            or a C{language} or tenant language not among C{languages}.
        """
        if record_policy not in RECORD_POLICIES:
            raise ValueError(f"record_policy must be one of {', '.join(RECORD_POLICIES)}, "
                             f"not {record_policy!r}")
        if conference_max < 0:
            raise ValueError(f"conference_max must be 0 (none) or more, not {conference_max}")
        if not transfer_timeout > 0:
            raise ValueError(f"transfer_timeout must be positive, not {transfer_timeout}")
        if languages is None:
            languages = {prompts.code: prompts} if prompts is not None else {}
        self.languages: dict[str, PromptSet | None] = dict(languages)
        self.language = language or (prompts.code if prompts is not None else "")
        self.tenant_languages = {domain.lower(): code
                                 for domain, code in (tenant_languages or {}).items()}
        for code in (self.language, *self.tenant_languages.values()):
            if code and code not in self.languages:
                raise ValueError(f"language {code!r} is not one of the loaded languages "
                                 f"({', '.join(sorted(self.languages)) or 'none'})")
        self.reactor = reactor
        self.listen_address = listen
        self.flows = dict(flows)
        self.actions = actions
        self.prompts = prompts
        self.port_pool = port_pool
        self.media_address = media_address or listen[0]
        self.timers = timers or Timers()
        self.tz = tz
        self.on_result = on_result
        self.user_agent = user_agent
        self._random = random
        self.recordings_directory = recordings
        self.record_policy = record_policy
        self._transport: Any = transport
        self._own_transport = transport is None
        self.transactions: TransactionLayer | None = None
        self.calls: dict[tuple[str, str], AnsweredCall] = {}
        self.answered: dict[int, int] = {}
        self.missing_prompts: set[str] = set()
        self.conferences = conferences if conferences is not None else Conferences(reactor)
        self.conference_max = conference_max
        self.conference_announce = conference_announce
        self.transfer_timeout = transfer_timeout
        #: transfers by how they ended (L{Referral.outcome}); C{bad_notify}
        #: counts NOTIFYs answered 400, 481 or 489.
        self.transfers: dict[str, int] = {}

    def language_for(self, tenant: str) -> str:
        """The language a call of C{tenant} (a From host) starts in: the
        tenant's own, else the default (C{""} when no language is loaded)."""
        return self.tenant_languages.get(tenant.lower(), self.language)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Open the SIP listener (unless a transport was given) and the
        transaction layer.

        @raise Exception: what the transport layer raises when it cannot
            listen (C{CannotListenError}).
        """
        if self._transport is None:
            from b2bua.sip.transport import TransportLayer

            layer = TransportLayer(self.reactor, None)
            host, port = self.listen_address
            layer.listen(f"udp:{host}:{port}")
            self._transport = layer
        self.transactions = TransactionLayer(self.reactor, self._transport, self, self.timers,
                                             random=self._random)
        self._transport.user = self.transactions

    def stop(self) -> Deferred[Any]:
        """End every call (BYE), stop the transactions, close the listener."""
        for call in list(self.calls.values()):
            self._end(call, STOPPING_REASON)
        self.conferences.close()
        closing: list[Deferred[Any]] = []
        if self.transactions is not None:
            self.transactions.stop()
        if self._own_transport and self._transport is not None:
            closing.append(self._transport.stop())
            self._transport = None
        return DeferredList(closing) if closing else succeed(None)

    # -- TransactionUser --------------------------------------------------------------

    def request_received(self, request: Request, transaction: Any) -> None:
        """Every request: new INVITEs, ACKs, in-dialog requests, CANCEL."""
        method = request.method
        try:
            to_tag = request.to.tag
        except ParseError:
            to_tag = None
        if transaction is None:
            if method == "ACK":
                call = self.calls.get((request.call_id, to_tag or ""))
                if call is not None:
                    self._acked(call)
            return
        try:
            if to_tag:
                self._in_dialog(request, transaction)
            elif method == "INVITE":
                self._invite(request, transaction)
            elif method == "CANCEL":
                cancelled = self.transactions.find_cancelled(request) if self.transactions \
                    else None
                self._reply(transaction, request, 200 if cancelled is not None else 481)
            elif method == "OPTIONS":
                self._reply(transaction, request, 200,
                            headers=[("Allow", ", ".join(ALLOWED)),
                                     ("Accept", "application/sdp")])
            elif method in KNOWN_METHODS:
                # an in-dialog method of ours without a dialog: no such dialog
                code = 481 if method in ("BYE", "INFO", "UPDATE", "PRACK", "NOTIFY") else 405
                self._reply(transaction, request, code, headers=[("Allow", ", ".join(ALLOWED))])
            else:
                self._reply(transaction, request, 501, headers=[("Allow", ", ".join(ALLOWED))])
        except SIPError as error:
            self._reply(transaction, request, error.code, error.reason, error.headers)

    def response_received(self, response: Response, source: Source) -> None:
        """A stray response (our BYEs have their own owner): ignored."""

    def server_transaction_failed(self, transaction: object,
                                  error: TransactionTimeout | TransportError) -> None:
        """A response could not be delivered: logged."""
        self.log.info("media server: server transaction failed: {error!r}", error=error)

    # -- new calls --------------------------------------------------------------------

    def _invite(self, request: Request, transaction: Any) -> None:
        name = request.uri.user_unescaped or ""
        flow = self.flows.get(name)
        room = None
        if flow is None and name.startswith(CONFERENCE_PREFIX):
            room = name[len(CONFERENCE_PREFIX):]
            if not ROOM_NAME.match(room):
                room = None
        if flow is None and room is None:
            self._reply(transaction, request, 404, "Not Found")
            return
        if not request.body:
            raise NotAcceptableHere("an offer in the INVITE is required", agent=self.media_address)
        try:
            offer = parse_sdp(request.body)
        except ParseError as error:
            raise SIPError(400, f"Bad SDP: {error}") from None
        rtp = RtpSession(self.reactor, PCMU, interface=self.media_address)
        try:
            port, _ = self.port_pool.acquire(rtp.listen)
        except PortsExhausted:
            self.log.warn("media server: no RTP port free for {flow}", flow=name)
            raise SIPError(503, "Service Unavailable", [("Retry-After", "5")]) from None
        origin = make_origin(self.media_address)
        try:
            result = negotiate(offer, address=self.media_address, port=port, origin=origin)
        except NotAcceptableHere:
            self._close_media(rtp, port)
            raise
        rtp.update(**result.session_parameters())  # type: ignore[arg-type]
        local_tag = self._random(8).hex()
        contact = NameAddress(URI("sip", name, *self._sip_address()))
        try:
            dialog = Dialog.from_uas(request, local_tag, contact, confirmed=True)
        except SIPError:
            self._close_media(rtp, port)
            raise
        key = (request.call_id, local_tag)
        recordings = None
        if self.recordings_directory is not None:
            recordings = CallRecordings(self.reactor, self.recordings_directory,
                                        request.call_id)
        tenant = _from_host(request)
        language = self.language_for(tenant)
        media = MediaCall(self.reactor, self.prompts, telephone_event=result.telephone_event
                          is not None, end=lambda reason: self._end(call, reason),
                          missing=self.missing_prompts, tz=self.tz, label=request.call_id,
                          recordings=recordings, conferences=self.conferences,
                          refer=lambda target, timeout: self._refer(call, target, timeout),
                          languages=self.languages, language=language)
        answer = result.answer.to_bytes()
        call = AnsweredCall(key, flow, request, dialog, rtp, port, origin, media, answer,
                            room=room)
        if room is not None:
            self._join_adhoc(call, room, request.uri)
        try:
            call.variables = {"caller": request.from_.uri.user_unescaped or "",
                              "called": name, "tenant": tenant}
        except (ParseError, AttributeError):
            call.variables = {"called": name}
        if language:
            call.variables["language"] = language
        rtp.source = media.next_frame
        rtp.on_audio = media.audio_received
        rtp.on_event = media.event_received
        self.calls[key] = call
        response = make_response(request, 200, to_tag=local_tag, headers=[
            ("Contact", str(contact)), ("Allow", ", ".join(ALLOWED)),
            ("Content-Type", "application/sdp"), ("Server", self.user_agent)], body=answer)
        self.answered[200] = self.answered.get(200, 0) + 1
        transaction.respond(response)
        rtp.start()
        call.retransmitter = TwoXXRetransmitter(
            self.reactor, lambda: transaction.respond(response), self.timers,
            on_timeout=lambda: self._end(call, NO_ACK_REASON))
        call.retransmitter.start()

    def _join_adhoc(self, call: AnsweredCall, room: str, uri: URI) -> None:
        """Put a C{conf-<room>} call into its room before the 200.

        Request-URI parameters: C{max=N} (1-1000) is this join's limit
        (and the room's, when it creates it) instead of C{conference_max};
        C{muted} joins listen-only.

        @raise SIPError: C{400} for a bad C{max}, C{486} when the room is
            full, C{503} when it cannot be joined otherwise (the media are
            closed first).
        """
        limit = self.conference_max
        params = uri.params
        if "max" in params:
            text = params.get("max") or ""
            if not (text.isdigit() and 1 <= int(text) <= MAX_ROOM_LIMIT):
                self._close_media(call.rtp, call.port)
                raise SIPError(400, f"Bad max parameter (1-{MAX_ROOM_LIMIT})")
            limit = int(text)
        try:
            call.media.join_room(room, announce=self.conference_announce,
                                 max_participants=limit, muted="muted" in params)
        except ConferenceError as error:
            self._close_media(call.rtp, call.port)
            warning = [("Warning", f'399 {self.media_address} "{error}"')]
            if isinstance(error, RoomFull):
                self.log.info("media server: {error}", error=str(error))
                raise SIPError(486, "Busy Here", warning) from None
            raise SIPError(503, "Service Unavailable", warning) from None
        self.log.info("media server: {call_id} joined conference room {room} ({count} in it)",
                      call_id=call.invite.call_id, room=room,
                      count=len(call.media.member.room) if call.media.member else 0)

    def _sip_address(self) -> tuple[str, int]:
        if self._transport is not None:
            try:
                host, port = self._transport.local_address("UDP")
                return host, port
            except TransportError:
                pass
        return self.listen_address

    def _acked(self, call: AnsweredCall) -> None:
        """The ACK of our 200: the flow starts (once)."""
        if call.retransmitter is not None:
            call.retransmitter.ack_received()
            call.retransmitter = None
        if call.run is not None or call.released:
            return
        self._record_always(call)
        if call.flow is None:  # an ad-hoc conference call: in its room already
            return
        call.run, call.done = run_flow(call.flow, call.media, actions=self.actions,
                                       clock=self.reactor, variables=call.variables)
        call.done.addCallback(self._flow_ended, call)

    def _record_always(self, call: AnsweredCall) -> None:
        """Start the whole-call recording when the call's policy says so."""
        recordings = call.media.recordings
        if recordings is None:
            return
        flow_variables = call.flow.variables if call.flow is not None else {}
        policy = {**flow_variables, **call.variables}.get("record", "")
        if "always" not in (policy, self.record_policy):
            return
        try:
            recordings.control("start")
        except RecordingError as error:
            self.log.warn("media server: cannot record {call_id}: {error}",
                          call_id=call.invite.call_id, error=error)

    def recordings_of(self, call_id: str) -> CallRecordings | None:
        """The recordings of the live call with this SIP Call-ID (C{None}:
        no such call, or recording is not configured)."""
        for (ident, _), call in self.calls.items():
            if ident == call_id and not call.released:
                return call.media.recordings
        return None

    def _recorded(self, call: AnsweredCall, hung_up: bool) -> list[tuple[str, str]]:
        """Finish the call's recordings; their C{X-Recording} headers.  The
        whole-call files also go into the run's variables."""
        files: list[Recording] = call.media.close_recordings(hung_up=hung_up)
        whole = [r for r in files if r.mode == "stereo"]
        if whole and call.run is not None:
            call.run.variables["call_recording"] = ",".join(str(r.path) for r in whole)
            call.run.variables["call_recording_ms"] = str(sum(r.duration_ms for r in whole))
        for recording in files:
            self.log.info("media server: {call_id} recorded {path} ({ms} ms)",
                          call_id=call.invite.call_id, path=str(recording.path),
                          ms=recording.duration_ms)
        return [("X-Recording", header_value(r)) for r in files]

    def _flow_ended(self, result: FlowResult, call: AnsweredCall) -> None:
        assert call.flow is not None
        self.log.info("media server: flow {flow} of {call_id} ended: {outcome} ({detail})",
                      flow=call.flow.name, call_id=call.invite.call_id,
                      outcome=result.outcome, detail=result.detail)
        if self.on_result is not None:
            try:
                self.on_result(call.flow, result)
            except Exception:
                self.log.failure("media server: on_result failed")
        if call.released:
            return
        if call.media.transferred:  # the switch hangs up; in case it does not:
            call.bye_wait = self.reactor.callLater(TRANSFERRED_BYE_WAIT, self._end, call,
                                                   TRANSFERRED_REASON)
            return
        call.media.hangup("normal")  # a run always hangs up or transfers; be sure

    # -- the end ----------------------------------------------------------------------

    def _caller_hung_up(self, call: AnsweredCall) -> None:
        self._release(call)

    def _end(self, call: AnsweredCall, reason: str) -> None:
        """Our side ends the call: BYE with C{reason}, then free the media."""
        if call.released:
            return
        headers = [("Reason", reason), *self._recorded(call, True)]
        try:
            bye, hop = call.dialog.create_request("BYE", headers=headers)
            if self.transactions is not None:
                self.transactions.send_request(bye, target_for_uri(hop),
                                               _ByeOwner(call.invite.call_id))
        except (SIPError, TransportError, ValueError) as error:
            self.log.warn("media server: cannot send the BYE of {call_id}: {error}",
                          call_id=call.invite.call_id, error=error)
        self._release(call)

    def _release(self, call: AnsweredCall) -> None:
        if call.released:
            return
        call.released = True
        if call.retransmitter is not None:
            call.retransmitter.stop()
            call.retransmitter = None
        if call.referral is not None and not call.referral.done:
            call.referral.stop()  # the call ended while the transfer ran
            self.transfers["given_up"] = self.transfers.get("given_up", 0) + 1
        if call.bye_wait is not None and call.bye_wait.active():
            call.bye_wait.cancel()
        call.bye_wait = None
        call.dialog.terminate()
        self.calls.pop(call.key, None)
        by_flow = call.media.ended is not None  # the flow hung up or transferred
        call.media.caller_hung_up()  # pending operations fail: the run ends
        if call.run is not None and not by_flow:
            call.run.stop()
        self._close_media(call.rtp, call.port)

    def _close_media(self, rtp: RtpSession, port: int) -> None:
        """Close an RTP session and give its ports back once closed."""
        pool = self.port_pool

        def release(_: object) -> None:
            try:
                pool.release(port)
            except ValueError:
                pass

        rtp.stop().addBoth(release)

    # -- helpers ----------------------------------------------------------------------

    def _reply(self, transaction: Any, request: Request, code: int, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        fields = [*(headers or ()), ("Server", self.user_agent)]
        tag = None if request.to.tag else self._random(8).hex()
        if request.method == "INVITE" and code >= 200:
            self.answered[code] = self.answered.get(code, 0) + 1
        transaction.respond(make_response(request, code, reason, to_tag=tag, headers=fields))

    def active(self) -> int:
        """How many calls are up."""
        return len(self.calls)

