"""Symmetric latching (RFC 7362) with protection against hijacking.

A L{Latch} decides, for one relay socket facing one party, which source
address that party's packets are accepted from and where packets for that
party are sent.  States (the relay checks the latched address itself on
the hot path and asks the latch only about other sources):

 - B{learning}: nothing latched.  Packets for the party go to the address
   from its SDP (C{signalled}; none when unknown or on hold).  The first
   packet from any source latches that source.
 - B{latched}: packets are accepted only from the latched address, and
   packets for the party go there.  Any other source is dropped (and
   counted), except:

   1. the signalled address itself (the exact C{ip:port} of the party's
      SDP) latches at once: the signalling vouches for it, and it undoes a
      stranger that got in first;
   2. takeover: when the latched source has been silent for more than
      L{LatchPolicy.takeover_silence} seconds, a new source that sends
      L{LatchPolicy.takeover_packets} packets in a row (no other stranger
      in between) latches.  When the latched source was RTP with a known
      SSRC, those packets must carry the same SSRC (a phone whose NAT
      binding changed keeps it; an off-path attacker cannot guess it).
      Only packets arriving during the silence count, and a stranger with
      another address or SSRC restarts the count.  This is how a phone
      whose NAT binding changed keeps its audio.

 - A new SDP for the party with a different address or port (re-INVITE)
   returns the latch to B{learning} with the new signalled address.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "Latch", "LatchPolicy"]

#: An (IP address, port) pair as the UDP transport gives and takes it.
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class LatchPolicy:
    """The latching rules' knobs.

    @ivar takeover_silence: seconds the latched source must have been
        silent before another source may take over.
    @ivar takeover_packets: consecutive packets a new source must send to
        take over.
    @ivar require_ssrc: a takeover must carry the latched source's SSRC
        (when it had one).
    @ivar prefer_signalled: a packet from exactly the SDP address re-latches
        at once.
    """

    takeover_silence: float = 2.0
    takeover_packets: int = 3
    require_ssrc: bool = True
    prefer_signalled: bool = True

    def __post_init__(self) -> None:
        """Check the values.

        @raise ValueError: on a negative silence or fewer than 1 packet.
        """
        if self.takeover_silence < 0:
            raise ValueError(f"takeover_silence must be >= 0, not {self.takeover_silence}")
        if self.takeover_packets < 1:
            raise ValueError(f"takeover_packets must be >= 1, not {self.takeover_packets}")


class Latch:
    """Source and destination of one party on one relay socket.

    @ivar signalled: the address from the party's SDP, or C{None}.
    @ivar address: the latched source, or C{None} while learning.
    @ivar destination: where packets for the party go: C{address}, else
        C{signalled}, else C{None} (nowhere yet).
    @ivar last_seen: arrival time of the last packet accepted, or C{None};
        the relay updates it for packets from C{address}.
    @ivar latches: how many times a source was latched.
    @ivar takeovers: how many of those replaced a latched source.
    @ivar dropped: packets refused from other sources.
    """

    __slots__ = (
        "_candidate",
        "_candidate_count",
        "_candidate_ssrc",
        "address",
        "destination",
        "dropped",
        "last_seen",
        "latches",
        "policy",
        "signalled",
        "takeovers",
    )

    def __init__(self, policy: LatchPolicy, signalled: Address | None = None) -> None:
        """
        @param policy: the rules.
        @param signalled: the party's SDP address, if known.
        """
        self.policy = policy
        self.signalled = signalled
        self.address: Address | None = None
        self.destination = signalled
        self.last_seen: float | None = None
        self.latches = 0
        self.takeovers = 0
        self.dropped = 0
        self._candidate: Address | None = None
        self._candidate_count = 0
        self._candidate_ssrc: int | None = None

    def expect(self, signalled: Address | None) -> bool:
        """The party's SDP gives (again) this address.

        @param signalled: the new SDP address, or C{None} (unknown, hold).
        @return: C{True} when it differs from the previous one, which
            returns the latch to learning.
        """
        if signalled == self.signalled:
            return False
        self.signalled = signalled
        self.address = None
        self.destination = signalled
        self._candidate = None
        self._candidate_count = 0
        return True

    def admit(
        self, source: Address, ssrc: int | None, latched_ssrc: int | None, now: float
    ) -> bool:
        """A packet came from C{source}, which is not the latched address.

        @param source: where it came from.
        @param ssrc: its SSRC when it is RTP/RTCP, else C{None}.
        @param latched_ssrc: the SSRC last seen from the latched source,
            else C{None}.
        @param now: its arrival time.
        @return: C{True} when C{source} is now latched and the packet is
            to be relayed; C{False} when it is to be dropped (counted).
        """
        if self.address is None:
            self._latch(source, now)
            return True
        policy = self.policy
        if policy.prefer_signalled and source == self.signalled:
            self._latch(source, now)
            self.takeovers += 1
            return True
        silent = self.last_seen is None or now - self.last_seen > policy.takeover_silence
        if not silent or (
            policy.require_ssrc and latched_ssrc is not None and ssrc != latched_ssrc
        ):
            self._candidate = None
            self._candidate_count = 0
            self.dropped += 1
            return False
        if source == self._candidate and ssrc == self._candidate_ssrc:
            self._candidate_count += 1
        else:
            self._candidate = source
            self._candidate_ssrc = ssrc
            self._candidate_count = 1
        if self._candidate_count >= policy.takeover_packets:
            self._latch(source, now)
            self.takeovers += 1
            return True
        self.dropped += 1
        return False

    def _latch(self, source: Address, now: float) -> None:
        """Latch C{source}."""
        self.address = source
        self.destination = source
        self.last_seen = now
        self.latches += 1
        self._candidate = None
        self._candidate_count = 0
