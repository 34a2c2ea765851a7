"""Attended transfer handled by the switch itself (RFC 5589 7, RFC 3891).

A subscriber B talks to A (the I{first call}), puts A on hold and calls C
(the I{second call}, B its caller or its callee, both through the switch),
then sends REFER in the first call with C{Refer-To:
<sip:C?Replaces=call-id;to-tag=..;from-tag=..>}, naming its own leg of the
second call.  The switch does not relay the REFER nor send C an INVITE
with Replaces: it joins A and C itself, B2BUA style.

  1. checks it (L{attended_refer}): the Replaces dialog must be a leg of
     the second call owned by the referrer (the same subscriber: the
     same identity and tenant, L{b2bua.core.transfer_policy}), both calls
     answered, in the same tenant, under C{[core] max_transfers}, with no
     transfer or offer in progress; anything else is refused on the REFER
     itself (C{403} for a dialog that is unknown or not the referrer's,
     alike, so that dialog ids cannot be probed; C{501} for a second call
     not answered yet), and C{b2bua_authorize_transfer} is asked;
  2. answers C{202} and NOTIFY C{100 Trying};
  3. re-INVITEs A with C's SDP (the last SDP the switch sent B in the
     second call); A refusing it leaves both calls as they were (NOTIFY
     with A's status);
  4. on A's 2xx, moves A's dialog into the second call, in place of B's
     leg there (a L{JoinedLeg}), and re-INVITEs C with A's answer
     (L{b2bua.core.transfer_reinvite.update_target});
  5. on C's 2xx, sends B NOTIFY C{200 OK} and BYEs B's two legs: the first
     call ends (C{disconnect="transferred"}), the second goes on between
     A and C.  C refusing ends the joined call (C{"transfer-failed"}).

Who pays: no call is placed; the second call goes on and keeps its
identity, tenant and CDR (B's call to C: B pays it to the end, as it would
have had B stayed), the first one ends.  When A is an outside callee of
the first call (a trunk leg the first call's payer is charged for), the
roles swap: the first call goes on with C moved in, the second ends; two
outside callees are never joined (C{403}).  The moved party transfers in
turn only as the party it was in its own call.  See C{docs/transfer.md},
"Attended transfer".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from twisted.logger import Logger

from b2bua.core.call import CallState
from b2bua.core.decisions import Reject
from b2bua.core.hooks import HookFailed
from b2bua.core.leg import ServerLeg
from b2bua.core.transfer_notify import notify_referrer, respond
from b2bua.core.transfer_policy import (
    TRANSFERS,
    Party,
    TransferRefused,
    callee_party,
    caller_party,
    transfer_payer,
    transfers_made,
)
from b2bua.core.transfer_reinvite import ack_answer, update_target
from b2bua.sip.dialog import DialogId
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request, Response

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from b2bua.core.call import Call
    from b2bua.core.leg import Leg
    from b2bua.sip.uri import URI

__all__ = ["Join", "JoinedLeg", "Replaces", "attended_refer", "find_leg", "parse_replaces"]

log = Logger()

#: the reason phrase of a Replaces naming no leg of the referrer's
NOT_YOURS = "Replaces does not name a call of yours"
_NOWHERE = Source("UDP", ("0.0.0.0", 0), ("0.0.0.0", 0))
_TRANSFERRED = 'SIP;cause=200;text="Call transferred"'


class BadReplaces(ValueError):
    """A C{Replaces} that cannot be parsed."""


@dataclass(frozen=True)
class Replaces:
    """The dialog a C{Replaces} names (RFC 3891 3).

    @ivar call_id: its Call-ID.
    @ivar to_tag: the tag of the dialog's recipient (here: the switch's).
    @ivar from_tag: the tag of the other end (here: the referrer's).
    @ivar early_only: the C{early-only} flag.
    """

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False


def parse_replaces(uri: URI) -> Replaces | None:
    """The C{Replaces} URI header field of a C{Refer-To} URI, or C{None}.

    @raise BadReplaces: when present but malformed or without both tags.
    """
    for part in (uri.headers or "").split("&"):
        name, _, value = part.partition("=")
        if name.strip().lower() != "replaces":
            continue
        fields = [field.strip() for field in unquote(value).split(";")]
        call_id = fields[0]
        params: dict[str, str] = {}
        for field in fields[1:]:
            key, _, val = field.partition("=")
            params[key.strip().lower()] = val.strip()
        to_tag, from_tag = params.get("to-tag", ""), params.get("from-tag", "")
        if not call_id or not to_tag or not from_tag:
            raise BadReplaces(value)
        return Replaces(call_id, to_tag, from_tag, "early-only" in params)
    return None


def _party(call: Call, leg: Leg) -> Party | None:
    """Whom C{leg} of C{call} calls as (L{b2bua.core.transfer_policy})."""
    return caller_party(call) if leg is call.a_leg else callee_party(leg)


def _outside(call: Call, leg: Leg) -> bool:
    """C{leg} is a callee the switch placed a call to on the payer's
    account (not one of its subscribers): the call it is in has to go on,
    to keep charging for it."""
    return leg is call.answered_leg and callee_party(leg) is None


def find_leg(context: Any, replaces: Replaces) -> Leg | None:
    """The switch's leg whose dialog C{replaces} names: its to-tag the
    switch's (local) tag, its from-tag the peer's; the other way round is
    accepted too (a phone naming the dialog as it sees it)."""
    for local, remote in ((replaces.to_tag, replaces.from_tag),
                          (replaces.from_tag, replaces.to_tag)):
        dialog = context.dialogs.find(DialogId(replaces.call_id, local, remote))
        if dialog is not None and dialog.user is not None:
            return dialog.user  # type: ignore[no-any-return]
    return None


def attended_refer(call: Call, leg: Leg, request: Request, transaction: Any,
                   target: URI, replaces: Replaces, max_transfers: int) -> None:
    """A REFER on C{leg} of C{call} with C{Replaces}: check it, then join
    (called by L{b2bua.core.transfer.refer_received} after the checks all
    REFERs share)."""
    context = call.context
    metrics = context.metrics
    transferee = call.relay.other(leg)
    if transferee is None or transferee.ended or leg.ended:
        metrics.call_transferred("refused_other")
        respond(call, transaction, request, 481)
        return
    try:
        payer = transfer_payer(call, leg, max_transfers)
    except TransferRefused as refused:
        metrics.request_rejected("forbidden")
        metrics.call_transferred(refused.result)
        respond(call, transaction, request, refused.code, refused.reason)
        return
    replaced = find_leg(context, replaces)
    second = replaced.call if replaced is not None else None
    if (replaced is None or second is None or second is call or second.ended
            or replaced.ended or _party(second, replaced) != payer):
        log.info("attended transfer refused: Replaces names no leg of the referrer's "
                 "(call {call_id})", call_id=call.id)
        metrics.request_rejected("forbidden")
        metrics.call_transferred("refused_policy")
        respond(call, transaction, request, 403, NOT_YOURS)
        return
    if (call.tenant or "").lower() != (second.tenant or "").lower():
        metrics.request_rejected("forbidden")
        metrics.call_transferred("refused_policy")
        respond(call, transaction, request, 403, "Calls of different tenants")
        return
    if transfers_made(second) >= max_transfers:
        metrics.request_rejected("forbidden")
        metrics.call_transferred("refused_limit")
        respond(call, transaction, request, 403, "Transfer limit reached")
        return
    if CallState.RELEASING in (call.state, second.state):
        metrics.call_transferred("refused_other")
        respond(call, transaction, request, 481)
        return
    other = second.relay.other(replaced)
    if not second.is_answered or other is None or other.ended:
        metrics.call_transferred("refused_invalid")
        respond(call, transaction, request, 501,
                 "Attended transfer to an unanswered call not supported")
        return
    if _outside(call, transferee) and _outside(second, other):
        metrics.request_rejected("forbidden")
        metrics.call_transferred("refused_policy")
        respond(call, transaction, request, 403, "Transfer would join two outside calls")
        return
    if (call.transfer is not None or call.relay.exchange is not None
            or second.transfer is not None or second.relay.exchange is not None):
        metrics.call_transferred("refused_other")
        respond(call, transaction, request, 491, "Request Pending")
        return
    join = Join(call, leg, transferee, second, replaced, other, request)
    call.transfer = second.transfer = join
    join.authorize(transaction, target)


class JoinedLeg(ServerLeg):
    """The moved party's side of the call that goes on: it carries that
    party's dialog (moved from its leg of the other call) in place of the
    referrer's leg; an ordinary answered leg, as the call's caller side or
    as its answered leg, whichever the referrer's was."""

    def __init__(self, call: Call, old: Leg, replaced: Leg, party: Party | None) -> None:
        source = (getattr(old, "source", None) or getattr(replaced, "source", None)
                  or _NOWHERE)
        super().__init__(call, Request("INVITE", "sip:joined.invalid", []), None, source,
                         call.context.new_tag())
        self.request = None  # answered long ago: only the dialog matters
        self.final_sent = 200
        self.flow = old.flow
        self.allows_update = old.allows_update
        self.dialog = old.dialog
        self.last_sdp = old.last_sdp
        #: whom it transfers as (L{b2bua.core.transfer_policy.callee_party})
        self.party = party
        if self.dialog is not None:
            self.dialog.user = self


class Join:
    """One attended transfer: join the transferee (A, in C{call}) with the
    other party (C) of the C{second} call, then let the referrer (B) go.

    One of the two calls goes on (C{kept}) with the other one's party
    (C{moved}) in place of B's leg there; the other call (C{ending}) ends
    as C{transferred}.  The second call goes on, unless A is an outside
    callee of the first call (the call charging for A's leg must go on):
    then C moves into the first call.

    It sits in both calls' C{transfer} (no other transfer meanwhile) and
    C{relay.exchange} (offers from the parties get C{491}) until done.

    @ivar state: C{authorizing}, C{reinviting} (the moved party's
        re-INVITE), C{joining} (the staying party's re-INVITE), C{done} or
        C{failed}.
    """

    def __init__(self, call: Call, referrer: Leg, transferee: Leg, second: Call,
                 replaced: Leg, other: Leg, request: Request) -> None:
        self.call = call
        self.referrer = referrer
        self.transferee = transferee
        self.second = second
        self.replaced = replaced
        self.other = other
        if _outside(call, transferee):
            self.kept, self.ending = call, second
            self.moved, self.staying = other, transferee
            self.b_kept, self.b_ending = referrer, replaced
        else:
            self.kept, self.ending = second, call
            self.moved, self.staying = transferee, other
            self.b_kept, self.b_ending = replaced, referrer
        self.request: Request | None = request
        self.event = f"refer;id={request.cseq.number}"
        self.state = "authorizing"
        self.joined: JoinedLeg | None = None

    # -- REFER ---------------------------------------------------------------

    def authorize(self, transaction: Any, target: URI) -> None:
        """Ask C{b2bua_authorize_transfer} (a L{Reject} refuses; a URI
        answer is ignored: the target is the second call's party)."""
        d = self.call.context.hooks.authorize_transfer(self.call, self.referrer, target)
        d.addCallbacks(self._authorized, self._hook_failed,
                       callbackArgs=(transaction,), errbackArgs=(transaction,))

    def _hook_failed(self, failure: Failure, transaction: Any) -> None:
        failure.trap(HookFailed)
        self._refuse(transaction, 500, "Plugin error", "refused_other")

    def _release_calls(self, keep_ending: bool = False) -> None:
        """Let the calls' offers and transfers go (but the ending call's
        C{transfer} when C{keep_ending}: B's BYE on it, until the final
        NOTIFY is answered, ends it as C{transferred})."""
        for call in (self.call, self.second):
            if call.transfer is self and not (keep_ending and call is self.ending):
                call.transfer = None
            if call.relay.exchange is self:
                call.relay.exchange = None

    def _refuse(self, transaction: Any, code: int, reason: str | None, result: str) -> None:
        self.call.context.metrics.call_transferred(result)
        self.state = "failed"
        self._release_calls()
        request, self.request = self.request, None
        if request is not None:
            respond(self.call, transaction, request, code, reason)

    def _gone(self, referrer: bool = True) -> bool:
        """A party the join needs left (B too unless C{referrer} is false:
        B may hang up once it got C{202})."""
        if referrer and (self.referrer.ended or self.replaced.ended):
            return True
        return (self.call.ended or self.second.ended or self.transferee.ended
                or self.other.ended)

    def _authorized(self, answer: Any, transaction: Any) -> None:
        if isinstance(answer, Reject):
            self.call.context.metrics.request_rejected("forbidden")
            self._refuse(transaction, answer.code, answer.reason, "refused_policy")
            return
        if self._gone() or self.call.relay.exchange is not None \
                or self.second.relay.exchange is not None:
            self._refuse(transaction, 481, None, "refused_other")
            return
        request, self.request = self.request, None
        assert request is not None
        respond(self.call, transaction, request, 202, "Accepted")
        self.call.context.metrics.call_transferred("accepted")
        self.call.relay.exchange = self.second.relay.exchange = self  # type: ignore[assignment]
        self.state = "reinviting"
        self._notify(100, "Trying", final=False)
        self._reinvite_moved()

    # -- NOTIFY ----------------------------------------------------------------

    def _notify(self, code: int, reason: str | None, final: bool, then: Any = None) -> None:
        notify_referrer(self.referrer, self.event, code, reason, final, then)

    # -- the exchanges -----------------------------------------------------------

    def _reinvite_moved(self) -> None:
        """Offer the moved party what the switch last sent B in the kept
        call (the staying party's media, as that call's media path has it)."""
        leg = self.moved
        body, content_type = self.b_kept.last_sdp
        acks: list[tuple[Request, URI]] = []

        def answered(response: Response) -> None:
            if response.code < 200:
                return
            if 200 <= response.code < 300:
                first = not acks
                ack_answer(leg, response, acks)
                if first:
                    self._join(response, body, content_type)
                return
            self._failed(response.code, response.reason)

        sent = leg.send_in_dialog("INVITE", body, content_type, on_response=answered,
                                  on_failure=lambda error: self._failed(408, None))
        if sent is None:
            self._failed(481, None)

    def _join(self, response: Response, body: bytes, content_type: str | None) -> None:
        """The moved party took the staying party's media: move its dialog
        into the kept call in place of B's leg, and offer the staying
        party its answer."""
        if self.state != "reinviting":
            return
        if self._gone(referrer=False):
            self._failed(481, None)
            return
        self.state = "joining"
        kept, ending = self.kept, self.ending
        moved, b_kept = self.moved, self.b_kept
        joined = JoinedLeg(kept, moved, b_kept, _party(ending, moved))
        if body:
            joined.last_sdp = (body, content_type)
        self.joined = joined
        moved.dialog = None
        moved.ended = True
        for relay, leg in ((ending.relay, moved), (kept.relay, b_kept)):
            timer = relay.timers.pop(id(leg), None)
            if timer is not None:
                timer.stop()
                if leg is moved and timer.interval:
                    kept.relay._arm(joined, timer.interval, timer.we_refresh)
        b_kept.stop_retransmitting()
        if b_kept.dialog is not None:
            # B's leg is out of the kept call from now on: a request on it
            # gets 481 from the switch, never reaches A or C (the BYE and
            # the NOTIFY still go on its dialog)
            kept.context.unregister_dialog(b_kept.dialog)
        if b_kept is kept.a_leg:
            kept.a_leg = joined
            # the moved party calls on as the party it was, never as B
            kept.caller_party = joined.party  # type: ignore[attr-defined]
        else:
            kept.answered_leg = joined  # type: ignore[assignment]
        kept.when_ended().addCallback(lambda _: self._forget_joined(joined))
        kept.data["joined_from"] = ending.id
        count = max(transfers_made(ending), transfers_made(kept)) + 1
        kept.data[TRANSFERS] = count
        ending.data[TRANSFERS] = count
        if kept.relay.exchange is self:
            kept.relay.exchange = None  # update_target takes it
        update_target(self, kept, response, self._staying_answered, target=self.staying)

    def _forget_joined(self, joined: JoinedLeg) -> None:
        """The kept call ended: what the switch does for its own legs
        (L{b2bua.core.switch.Switch.call_ended}) for the joined leg when it
        is not the call's caller leg."""
        joined.stop_retransmitting()
        if joined is not self.kept.a_leg and joined.dialog is not None:
            self.kept.context.unregister_dialog(joined.dialog)

    def _staying_answered(self, code: int) -> None:
        if self.state != "joining":
            return
        if 200 <= code < 300:
            self._done()
        else:
            self._failed(code, None)

    # -- outcomes --------------------------------------------------------------------

    def _done(self) -> None:
        self.state = "done"
        self.call.context.metrics.call_transferred("connected")
        self._release_calls(keep_ending=True)
        self._notify(200, "OK", final=True, then=self._let_referrer_go)

    def _failed(self, code: int, reason: str | None) -> None:
        """The moved party (before the join) or the staying one (after)
        refused its re-INVITE, or a party left: tell B; after the join the
        joined call ends too."""
        if self.state not in ("reinviting", "joining"):
            return
        joined = self.state == "joining"
        self.state = "failed"
        self.call.context.metrics.call_transferred("failed")
        self._release_calls(keep_ending=joined)
        if joined:
            self.kept.hangup(f'SIP;cause={code};text="transfer re-INVITE refused"',
                             disconnect="transfer-failed")
            self._notify(code, reason, final=True, then=self._let_referrer_go)
            return
        self._notify(code, reason, final=True)
        for call, leg in ((self.call, self.referrer), (self.second, self.replaced)):
            if leg.ended and not call.ended:
                # B left after the 202: nobody to go back to
                call.hangup(f'SIP;cause={code};text="transfer failed"',
                            disconnect="transfer-failed")

    def _let_referrer_go(self) -> None:
        """BYE B's legs: the ending call ends, B's leg of the kept one too."""
        ending, b_kept = self.ending, self.b_kept
        if ending.transfer is self:
            ending.transfer = None
        if not ending.ended:
            ending.release(self.moved, _TRANSFERRED, disconnect="transferred")
        context = ending.context
        dialog = b_kept.dialog

        def forget() -> None:
            if dialog is not None:
                context.unregister_dialog(dialog)

        if b_kept.ended:
            forget()
        else:
            b_kept.bye(_TRANSFERRED, on_done=forget)

    def referrer_left(self, leg: Leg) -> bool:
        """A BYE on C{leg} (already answered 200) of either call.  B's legs
        are let go while the join runs (it goes on); anything else ends
        the call as usual."""
        if self.joined is not None and leg is self.b_ending \
                and self.ending.transfer is self:
            # B hung up on the final NOTIFY: the ending call is over now
            self._forget_leg(leg)
            self.ending.transfer = None
            self.ending.release(self.moved, _TRANSFERRED, disconnect="transferred")
            return True
        if self.state not in ("reinviting", "joining") or leg not in (
                self.referrer, self.replaced):
            return False
        self._forget_leg(leg)
        return True

    def _forget_leg(self, leg: Leg) -> None:
        """B's C{leg} is gone (its BYE answered): stop its dialog and timer."""
        leg.ended = True
        if leg.dialog is not None:
            leg.dialog.terminate()
        for call in (self.call, self.second):
            timer = call.relay.timers.pop(id(leg), None)
            if timer is not None:
                timer.stop()

    def stop(self) -> None:
        """Nothing to cancel (the blind transfer's interface)."""
