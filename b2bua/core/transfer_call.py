"""The new call of a blind transfer: the transferee's call to the target.

L{TransferCall} is an ordinary L{Call} (hooks, hunt, CDR) placed as the
referrer's party; its caller leg, a L{TransfereeLeg}, stands for the
transferee, who is still in the first call until the target answers.  The
L{b2bua.core.transfer.Transfer} that made them is told how the new call
goes (C{connect} on the answer, C{failed} on a final failure).  See
C{docs/transfer.md}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from b2bua.core.call import Call
from b2bua.core.leg import ServerLeg
from b2bua.core.transfer_policy import TRANSFERS, Party, callee_party, caller_party
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request

if TYPE_CHECKING:
    from b2bua.core.transfer import Transfer

__all__ = ["TransferCall", "TransfereeLeg"]

_NOWHERE = Source("UDP", ("0.0.0.0", 0), ("0.0.0.0", 0))


class TransfereeLeg(ServerLeg):
    """The transferee's side of a L{TransferCall}: the caller's leg of a
    call whose "answer" is a re-INVITE in an existing dialog.

    Until the target answers it has no dialog (the transferee is still in
    the first call); provisional responses are not relayed; the answer
    moves the transferee's dialog here (L{Transfer.connect}); a failure is
    reported to the referrer (L{Transfer.failed}).  From then on it is an
    ordinary caller leg: in-dialog requests, BYE, session timers.
    """

    def __init__(self, call: TransferCall, request: Request, transfer: Transfer) -> None:
        # the source that authenticated the first call (an IP-trusted trunk is
        # recognised by it again); replies go where the transferee's dialog says
        source = getattr(transfer.call.a_leg, "source", None) or _NOWHERE
        super().__init__(call, request, None, source, call.context.new_tag())
        self.flow = None
        self.transfer = transfer

    def provisional(self, code: int, reason: str | None = None, body: bytes = b"",
                    content_type: str | None = None) -> None:
        """Ringing is not relayed to the transferee (it is in a call)."""

    def answer(self, body: bytes = b"", content_type: str | None = None,
               headers: list[tuple[str, str]] | None = None,
               on_ack_timeout: Any = None) -> bool:
        """The target answered: connect the transferee to it."""
        if self.final_sent is not None:
            return False
        self.final_sent = 200
        self.transfer.connect(self, body, content_type)
        return True

    def reject(self, code: int, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> bool:
        """The transfer failed with C{code}."""
        if self.final_sent is not None:
            return False
        self.final_sent = code
        self.ended = True
        self.transfer.failed(code, reason)
        return True

    def stop(self) -> None:
        """The new call is over."""
        super().stop()
        self.transfer.stop()


class TransferCall(Call):
    """The transferee's call to the transfer target: an ordinary L{Call}
    (hooks, hunt, CDR) whose caller leg is a L{TransfereeLeg}.

    Its C{identity} and C{tenant} are the referrer's (L{Transfer.payer}):
    the referrer pays.

    @ivar transferred_from: the Call-ID (L{Call.id}) of the first call.
    @ivar referred_by: the REFER's C{Referred-By} (or the referrer's URI).
    @ivar transfer: the L{Transfer} that made it.
    @ivar caller_party: whom the transferee (this call's caller) calls as
        when it transfers in turn: the party it was in the first call
        (C{None}: nobody the switch can charge).
    """

    def __init__(self, transfer: Transfer, request: Request) -> None:
        first = transfer.call
        payer = transfer.payer
        super().__init__(first.context, request, None, first.a_leg.source, payer.identity,
                         payer.tenant)
        transferee = transfer.transferee
        self.caller_party: Party | None = (caller_party(first) if transferee is first.a_leg
                                           else callee_party(transferee))
        self.data[TRANSFERS] = int(first.data.get(TRANSFERS, 0))
        self.a_leg = TransfereeLeg(self, request, transfer)
        self.transferred_from = first.id
        self.referred_by = request.headers.get("referred-by") or ""
        self.made_by = transfer

