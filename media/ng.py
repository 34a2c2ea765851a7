"""A client of rtpengine's ng control protocol over UDP.

Each ng message is a cookie, one space, and a bencoded dictionary
(L{media.bencode}).  A request dictionary names its C{command}; the reply
carries the request's cookie and a C{result} (C{ok}, C{error} with an
C{error-reason}, C{pong} for a ping, C{load limit} when rtpengine is
overloaded and the request said it C{supports} that).

L{NgClient} sends requests from one UDP socket and matches replies to them
by cookie:

    - cookies are C{<prefix>_<counter>} with a random prefix per client,
      so that a restarted switch never reuses a cookie rtpengine still
      remembers (rtpengine caches the reply to each cookie for a while and
      answers a repeated cookie from that cache);
    - a request that gets no reply within C{timeout} seconds is sent again,
      byte for byte, with the same cookie (rtpengine recognises the
      retransmission and does not act twice), at most C{retries} times;
      then its Deferred fails with L{NgTimeout};
    - a reply must come from the address the request went to; replies with
      an unknown cookie (late, duplicated) or that do not parse are dropped
      and counted.

L{InstanceSet} chooses among several rtpengine instances: a new call goes
to the instance picked by a stable hash of its Call-ID (so that every node
of a cluster picks the same one), skipping instances that recently failed
to answer; L{media.rtpengine} keeps each call on the instance that took it.

Timers run on the injected clock; the socket on the injected reactor.
"""

from __future__ import annotations

import ipaddress
import secrets
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from media.bencode import BencodeError, decode, encode

__all__ = [
    "COMMANDS",
    "MAX_DATAGRAM",
    "Address",
    "InstanceSet",
    "NgClient",
    "NgError",
    "NgMetrics",
    "NgRemoteError",
    "NgTimeout",
    "format_address",
    "parse_address",
]

log = Logger()

#: An (IP address, port) pair.
Address = tuple[str, int]

#: The commands counted under their own name in the metrics; any other
#: command is counted as C{"other"}.
COMMANDS = frozenset({"ping", "offer", "answer", "delete", "query", "list", "statistics"})

#: The largest ng message that fits one UDP datagram (IPv4).
MAX_DATAGRAM = 65507


class NgError(Exception):
    """An ng request that did not succeed."""


class NgTimeout(NgError):
    """No reply came, after every retransmission.

    @ivar address: the rtpengine instance that did not answer.
    @ivar command: the command of the request.
    """

    def __init__(self, address: Address, command: str, attempts: int) -> None:
        super().__init__(
            f"rtpengine {format_address(address)} did not answer {command!r} "
            f"after {attempts} attempts"
        )
        self.address = address
        self.command = command


class NgRemoteError(NgError):
    """rtpengine answered, but not with success.

    @ivar result: the reply's C{result} (C{"error"}, C{"load limit"} ...).
    @ivar reason: its C{error-reason} (or C{message}), or C{""}.
    """

    def __init__(self, address: Address, command: str, result: str, reason: str) -> None:
        text = f": {reason}" if reason else ""
        super().__init__(
            f"rtpengine {format_address(address)} answered {command!r} with {result!r}{text}"
        )
        self.address = address
        self.command = command
        self.result = result
        self.reason = reason


def parse_address(text: str) -> Address:
    """Parse C{IP:PORT} or C{[IPv6]:PORT}.

    @param text: the address; the host must be an IP address (no DNS: a
        reply is matched to its request by the exact source address).
    @return: the C{(ip, port)} pair, the IP in its canonical form.
    @raise ValueError: with a short explanation, when malformed.
    """
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError("expected IP:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("the host must be an IP address") from None
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError("the port must be 1 to 65535")
    return str(ip), int(port)


def format_address(address: Address) -> str:
    """Write an address as L{parse_address} reads it."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NgMetrics:
    """The ng client's counters, in the switch's registry.

    @ivar requests: C{b2bua_media_rtpengine_requests_total{command,result}},
        result C{ok}, C{error} (an error reply) or C{timeout}.
    @ivar retransmissions: C{b2bua_media_rtpengine_retransmissions_total{command}}.
    @ivar dropped: C{b2bua_media_rtpengine_replies_dropped_total{reason}},
        reason C{malformed}, C{unknown_cookie} or C{wrong_source}.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "b2bua_media_rtpengine_requests_total",
            "ng requests to rtpengine, by command and result.",
            ["command", "result"],
            registry=registry,
        )
        self.retransmissions = Counter(
            "b2bua_media_rtpengine_retransmissions_total",
            "ng requests sent again for want of a reply, by command.",
            ["command"],
            registry=registry,
        )
        self.dropped = Counter(
            "b2bua_media_rtpengine_replies_dropped_total",
            "ng replies dropped, by reason.",
            ["reason"],
            registry=registry,
        )


def _command_label(command: str) -> str:
    """The bounded metric label of a command."""
    return command if command in COMMANDS else "other"


@dataclass
class _Pending:
    """One request waiting for its reply."""

    address: Address
    command: str
    datagram: bytes
    deferred: Deferred[dict[str, Any]]
    attempts: int = 1
    timer: IDelayedCall | None = field(default=None, repr=False)


class _NgProtocol(DatagramProtocol):
    """The client's UDP socket: hands every datagram to the client."""

    def __init__(self, client: NgClient) -> None:
        self.client = client

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Pass a reply on to L{NgClient.reply_received}."""
        self.client.reply_received(datagram, (addr[0], addr[1]))


class NgClient:
    """Sends ng requests to rtpengine instances over one UDP socket.

    Call L{start} before the first request and L{stop} at shutdown.
    """

    def __init__(
        self,
        reactor: IReactorUDP,
        *,
        clock: IReactorTime | None = None,
        interface: str = "",
        timeout: float = 1.0,
        retries: int = 2,
        cookie_prefix: str | None = None,
        metrics: NgMetrics | None = None,
    ) -> None:
        """
        @param reactor: binds the UDP socket (and is the clock unless
            C{clock} is given).
        @param clock: runs the retransmission timers.
        @param interface: the local address to bind (C{""}: every IPv4
            address; C{"::"} for IPv6 instances).
        @param timeout: seconds to wait for a reply before sending again.
        @param retries: how many times a request is sent again before it
            fails; it is sent C{retries + 1} times in all.
        @param cookie_prefix: the cookies' prefix; random by default.
        @param metrics: the counters; a private registry by default.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be at least 0")
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self._interface = interface
        self.timeout = timeout
        self.retries = retries
        self._prefix = cookie_prefix if cookie_prefix is not None else secrets.token_hex(6)
        self._counter = 0
        self._pending: dict[bytes, _Pending] = {}
        self._port: Any = None
        self.metrics = metrics if metrics is not None else NgMetrics()

    @property
    def pending(self) -> int:
        """How many requests wait for a reply."""
        return len(self._pending)

    def start(self) -> None:
        """Bind the UDP socket (an ephemeral port)."""
        if self._port is None:
            self._port = self._reactor.listenUDP(0, _NgProtocol(self), interface=self._interface)

    def stop(self) -> Deferred[None]:
        """Fail every pending request with L{NgError} and close the socket.

        @return: a Deferred firing once the socket is closed.
        """
        pending, self._pending = self._pending, {}
        for request in pending.values():
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
            request.deferred.errback(NgError("the ng client was stopped"))
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        result = port.stopListening()
        return result if isinstance(result, Deferred) else succeed(None)

    def request(self, address: Address, message: Mapping[str, Any]) -> Deferred[dict[str, Any]]:
        """Send one request to the instance at C{address}.

        @param address: the instance's ng address.
        @param message: the request dictionary; it must hold a C{command}.
        @return: a Deferred firing with the reply dictionary (strings
            decoded as UTF-8) when its C{result} is C{ok} or C{pong}, or
            failing with L{NgRemoteError} for any other result,
            L{NgTimeout} when no reply came, or L{NgError} when the request
            cannot be sent (client not started, message too large).
        """
        command = str(message.get("command", ""))
        if not command:
            raise ValueError("an ng request needs a command")
        if self._port is None:
            return _failed(NgError("the ng client is not started"))
        self._counter += 1
        cookie = f"{self._prefix}_{self._counter}".encode("ascii")
        try:
            datagram = cookie + b" " + encode(message)
        except BencodeError as error:
            return _failed(NgError(f"cannot encode the {command!r} request: {error}"))
        if len(datagram) > MAX_DATAGRAM:
            return _failed(NgError(f"the {command!r} request is too large for one datagram"))
        deferred: Deferred[dict[str, Any]] = Deferred(lambda _: self._cancel(cookie))
        pending = _Pending(address, command, datagram, deferred)
        self._pending[cookie] = pending
        self._send(cookie, pending)
        return deferred

    def _send(self, cookie: bytes, pending: _Pending) -> None:
        """Send (or resend) a request and arm its timer."""
        try:
            self._port.write(pending.datagram, pending.address)
        except OSError as error:
            # the timer below retries; an unreachable network ends in a timeout
            log.warn("ng send to {address} failed: {error}",
                     address=format_address(pending.address), error=error)  # fmt: skip
        pending.timer = self._clock.callLater(self.timeout, self._expired, cookie)

    def _expired(self, cookie: bytes) -> None:
        """No reply within the timeout: send again, or give up."""
        pending = self._pending.get(cookie)
        if pending is None:
            return
        label = _command_label(pending.command)
        if pending.attempts > self.retries:
            del self._pending[cookie]
            self.metrics.requests.labels(label, "timeout").inc()
            pending.deferred.errback(NgTimeout(pending.address, pending.command, pending.attempts))
            return
        pending.attempts += 1
        self.metrics.retransmissions.labels(label).inc()
        self._send(cookie, pending)

    def _cancel(self, cookie: bytes) -> None:
        """The caller cancelled a request: forget it."""
        pending = self._pending.pop(cookie, None)
        if pending is not None and pending.timer is not None and pending.timer.active():
            pending.timer.cancel()

    def reply_received(self, datagram: bytes, source: Address) -> None:
        """Match one datagram to its request and fire the request's Deferred.

        @param datagram: the reply as received.
        @param source: where it came from.
        """
        cookie, space, body = datagram.partition(b" ")
        pending = self._pending.get(cookie) if space else None
        if pending is None:
            self.metrics.dropped.labels("unknown_cookie" if space else "malformed").inc()
            return
        if not _same_address(pending.address, source):
            self.metrics.dropped.labels("wrong_source").inc()
            return
        try:
            reply = decode(body, encoding="utf-8")
        except BencodeError:
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("result"), str):
            self.metrics.dropped.labels("malformed").inc()
            return
        del self._pending[cookie]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        label = _command_label(pending.command)
        result = reply["result"]
        if result in ("ok", "pong"):
            self.metrics.requests.labels(label, "ok").inc()
            pending.deferred.callback(reply)
            return
        self.metrics.requests.labels(label, "error").inc()
        reason = reply.get("error-reason", reply.get("message", ""))
        reason = reason if isinstance(reason, str) else ""
        pending.deferred.errback(NgRemoteError(pending.address, pending.command, result, reason))


def _same_address(expected: Address, source: Address) -> bool:
    """Whether a reply's source is the address its request went to."""
    if expected[1] != source[1]:
        return False
    try:
        return ipaddress.ip_address(expected[0]) == ipaddress.ip_address(source[0])
    except ValueError:
        return False


def _failed(error: Exception) -> Deferred[Any]:
    """A Deferred that has already failed with C{error}."""
    result: Deferred[Any] = Deferred()
    result.errback(error)
    return result


class InstanceSet:
    """The rtpengine instances, and which of them recently failed.

    An instance that did not answer is I{down} for C{down_time} seconds:
    new calls try it only after every instance that is up.
    """

    def __init__(
        self, clock: IReactorTime, addresses: Sequence[Address], *, down_time: float = 30.0
    ) -> None:
        """
        @param clock: tells when a down instance may be tried again.
        @param addresses: the instances' ng addresses, in configured order.
        @param down_time: seconds an instance stays down after a failure.
        """
        if not addresses:
            raise ValueError("at least one rtpengine instance is needed")
        if len(set(addresses)) != len(addresses):
            raise ValueError("an rtpengine instance is listed twice")
        self._clock = clock
        self.addresses: tuple[Address, ...] = tuple(addresses)
        self.down_time = down_time
        self._down_until: dict[Address, float] = {}

    def candidates(self, call_id: str) -> list[Address]:
        """The instances to try for a new call, in order.

        The first is the one at C{crc32(call_id) mod n}, then the others in
        configured order after it (wrapping round); instances that are up
        come before those that are down.

        @param call_id: the call's identity.
        @return: every instance, each once.
        """
        count = len(self.addresses)
        start = zlib.crc32(call_id.encode("utf-8", "surrogateescape")) % count
        ring = [self.addresses[(start + step) % count] for step in range(count)]
        return [a for a in ring if self.is_up(a)] + [a for a in ring if not self.is_up(a)]

    def is_up(self, address: Address) -> bool:
        """Whether the instance has not failed within C{down_time}."""
        until = self._down_until.get(address)
        if until is None:
            return True
        if self._clock.seconds() >= until:
            del self._down_until[address]
            return True
        return False

    def mark_down(self, address: Address) -> None:
        """The instance failed to answer: avoid it for C{down_time} seconds."""
        if address not in self._down_until:
            log.warn("rtpengine {address} is down", address=format_address(address))
        self._down_until[address] = self._clock.seconds() + self.down_time

    def mark_up(self, address: Address) -> None:
        """The instance answered."""
        if self._down_until.pop(address, None) is not None:
            log.info("rtpengine {address} is up again", address=format_address(address))
