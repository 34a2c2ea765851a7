"""What blind and attended transfers alike send the referrer: the answer to
its REFER and the NOTIFYs of the REFER's implicit subscription (RFC 3515
2.4.4, C{message/sipfrag} bodies of RFC 3420).

Used by L{b2bua.core.transfer} and L{b2bua.core.transfer_attended}; see
C{docs/transfer.md}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from b2bua.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from b2bua.core.call import Call
    from b2bua.core.leg import Leg

__all__ = ["SIPFRAG", "SUBSCRIPTION_SECONDS", "notify_referrer", "respond"]

#: Content-Type of the NOTIFY bodies (RFC 3420)
SIPFRAG = "message/sipfrag;version=2.0"
#: seconds the implicit subscription of a REFER lasts (refreshed by no one:
#: the final NOTIFY always comes before, bounded by the hunt's timeouts)
SUBSCRIPTION_SECONDS = 180


def respond(call: Call, transaction: Any, request: Request, code: int,
            reason: str | None = None) -> None:
    """Answer C{request} (a REFER of C{call}) on C{transaction} with
    C{code} and C{reason}, stamped as C{call}'s context stamps its
    responses."""
    response = make_response(request, code, reason)
    call.context.stamp_response(response)
    transaction.respond(response)


def notify_referrer(leg: Leg, event: str, code: int, reason: str | None, final: bool,
                    then: Callable[[], Any] | None = None) -> None:
    """Tell the referrer (its leg C{leg}) how the transfer goes: a NOTIFY
    with C{Event: event} and the sipfrag C{SIP/2.0 code reason} (the
    status' usual reason when C{reason} is C{None}); C{final} ends the
    subscription.  C{then()} runs once the NOTIFY got its final response,
    failed, or could not be sent (C{leg} ended, or no dialog)."""
    done = then or (lambda: None)
    if leg.ended:
        done()
        return
    state = "terminated;reason=noresource" if final else \
        f"active;expires={SUBSCRIPTION_SECONDS}"
    body = f"SIP/2.0 {code} {reason or Response(code).reason}\r\n".encode()
    sent = leg.send_in_dialog(
        "NOTIFY", body, SIPFRAG,
        [("Event", event), ("Subscription-State", state)],
        on_response=lambda r: r.code >= 200 and done(),
        on_failure=lambda e: done())
    if sent is None:
        done()
