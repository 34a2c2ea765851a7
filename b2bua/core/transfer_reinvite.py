"""The media exchange that follows a connected blind transfer.

When the target answers, L{b2bua.core.transfer.Transfer} re-INVITEs the
transferee with the target's SDP (glare retries stay there).  What comes
after its 2xx is here:

  - L{ack_answer}: the ACK of a re-INVITE's 2xx, the same ACK again for a
    retransmitted 2xx;
  - L{late_answer}: the INVITE to the target had no SDP, so the target's
    2xx held an offer and the transferee's answer goes in the target's ACK;
  - L{update_target}: the transferee answered with other media than the
    target was offered, so the target gets that answer in a re-INVITE of
    its own (RFC 3725 style).

See C{docs/transfer.md}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from b2bua.sip.message import Request, Response
from b2bua.sip.uri import URI

if TYPE_CHECKING:
    from b2bua.core.call import Call
    from b2bua.core.leg import Leg
    from b2bua.core.transfer_call import TransferCall

__all__ = ["ack_answer", "late_answer", "media_lines", "update_target"]

log = Logger()


def ack_answer(leg: Leg, response: Response, acks: list[tuple[Request, URI]]) -> None:
    """ACK the re-INVITE's 2xx on C{leg} (the same ACK again for a
    retransmission: C{acks} keeps it)."""
    dialog = leg.dialog
    if dialog is None:
        return
    if not acks:
        acks.append(dialog.create_ack(response.cseq.number))
    ack, hop = acks[0]
    try:
        leg.context.transactions.send_ack(ack, leg.next_hop(hop)).addErrback(lambda f: None)
    except Exception:  # a transport error: the 2xx comes again, or the timer ends it
        log.debug("transfer: ACK not sent")


def late_answer(new_call: TransferCall, response: Response) -> bool:
    """The INVITE to the target had no SDP (no SDP known for the
    transferee): the target's 2xx held an offer, its ACK carries the
    transferee's answer.  False when that is not the case."""
    target = new_call.answered_leg
    awaiting = target.awaiting_ack_body if target is not None else None
    if target is None or awaiting is None:
        return False
    target.awaiting_ack_body = None
    new_call.with_body(response, target, "answer",
                       lambda body, content_type: target.send_ack(
                           awaiting, body, content_type))
    return True


def update_target(owner: Any, new_call: Call, response: Response,
                  on_result: Callable[[int], Any] | None = None,
                  target: Leg | None = None) -> None:
    """The transferee answered the re-INVITE with other media than the
    target was offered (a narrower codec list, another address): offer
    the target that answer in a re-INVITE of its own (RFC 3725 style),
    so that both sides use what the transferee chose.

    @param owner: what holds the new call's C{relay.exchange} meanwhile
        (the L{b2bua.core.transfer.Transfer}).
    @param on_result: called once with the final status of that
        re-INVITE (C{200} at once when none was needed; C{408} when it
        could not be sent or timed out).
    @param target: the leg to re-INVITE (default: the call's answered
        leg, the target of a blind transfer).
    """
    result = on_result or (lambda code: None)
    if target is None:
        target = new_call.answered_leg
    offered = target.last_sdp[0] if target is not None else b""
    if target is None or not response.body or media_lines(offered) == \
            media_lines(response.body):
        result(200)
        return
    relay = new_call.relay
    if relay.exchange is not None:
        result(200)
        return  # an offer crosses the call already: it will do
    relay.exchange = owner

    reported: list[int] = []

    def done(code: int) -> None:
        if relay.exchange is owner:
            relay.exchange = None
        if not reported:  # once: a retransmitted 2xx comes again
            reported.append(code)
            result(code)

    def answered(answer: Response) -> None:
        if answer.code < 200:
            return
        done(answer.code)
        if 200 <= answer.code < 300:
            ack_answer(target, answer, acks)
            # the answer goes nowhere: only the media hooks learn of it
            other = new_call.relay.other(target)
            new_call.with_body(answer, other if other is not None else new_call.a_leg,
                               "answer", lambda *_: None)
        elif answer.code in (408, 481):
            new_call.hangup(f'SIP;cause={answer.code};text="re-INVITE failed"',
                            disconnect="reinvite-failed")

    def send(body: bytes, content_type: str | None) -> None:
        if target.ended or new_call.ended:
            done(481)
            return
        target.last_sdp = (body, content_type)
        sent = target.send_in_dialog(
            "INVITE", body, content_type, on_response=answered,
            on_failure=lambda error: done(408),
            prepare=lambda request: new_call.context.hooks.prepare_outgoing_request(
                new_call, target, request))
        if sent is None:
            done(408)

    acks: list[tuple[Request, URI]] = []
    new_call.with_body(response, target, "offer", send)


def media_lines(body: bytes) -> list[bytes]:
    """An SDP's lines but its origin (C{o=}: its version changes with
    every answer a phone gives)."""
    return [line for line in body.splitlines() if line and not line.startswith(b"o=")]
