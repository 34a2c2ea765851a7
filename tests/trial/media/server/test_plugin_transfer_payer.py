"""The media server's route is marked with the caller's identity: a
transfer the IVR asks for (REFER) is placed and charged as the caller's
call (C{docs/transfer.md}, "Who pays").

The plugin is asked directly, with settings but no running UA (routing
does not touch it).
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.transfer_policy import CalleeDestination, Party
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from media.server.plugin import MediaServer, MediaServerSettings


class RouteMarkTests(SynchronousTestCase):
    """C{b2bua_route_call} of the media server plugin."""

    def setUp(self) -> None:
        """The plugin with its default extensions (C{*43} is the echo)."""
        self.plugin = MediaServer()
        self.plugin.settings = MediaServerSettings({"enabled": True})
        self.plugin.ua = object()  # type: ignore[assignment]

    def destination(self, call: SimpleNamespace) -> CalleeDestination:
        """The one destination the plugin routes C{*43} to."""
        [route] = self.plugin.b2bua_route_call(call=call,
                                               request=Request("INVITE", "sip:*43@example.com"))
        [destination] = route.destinations
        self.assertIsInstance(destination, CalleeDestination)
        self.assertEqual(destination.next_hop, Target("UDP", "127.0.0.1", 5070))
        return destination  # type: ignore[return-value]

    def test_caller_identity(self) -> None:
        """An extension's call: the IVR acts as the extension."""
        destination = self.destination(
            SimpleNamespace(identity="1000@example.com", tenant="example.com"))
        self.assertEqual((destination.callee_identity, destination.callee_tenant),
                         ("1000@example.com", "example.com"))

    def test_transferee_as_caller(self) -> None:
        """A transfer's call to the IVR: it acts as the transferee (its
        C{caller_party}), not as whoever transferred it there."""
        destination = self.destination(SimpleNamespace(
            identity="1001@example.com", tenant="example.com",
            caller_party=Party("1000@example.com", "example.com")))
        self.assertEqual(destination.callee_identity, "1000@example.com")

    def test_nobody(self) -> None:
        """A transferee the switch cannot charge leaves the route unmarked:
        the IVR's transfers of it will be refused."""
        destination = self.destination(SimpleNamespace(
            identity="1001@example.com", tenant="example.com", caller_party=None))
        self.assertEqual((destination.callee_identity, destination.callee_tenant), ("", ""))
