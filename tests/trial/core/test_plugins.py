"""Tests for L{b2bua.core.plugins} (building the plugin manager), for the
public harness L{b2bua.testing} itself, and for the example plugin of
C{docs/plugins.md} (C{docs/examples/after_hours.py}) run through the switch
the way its guide says."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.plugins import PluginError, build_plugin_manager, plugin_listing
from b2bua.hookspecs import hookimpl
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from b2bua.testing import (
    FakeNetwork,
    FakeTransport,
    SwitchHarness,
    assert_no_delayed_calls,
    sdp_direction,
    sdp_offer,
)
from plugins.local_routing import LocalRouting

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "after_hours.py"


def load_example() -> ModuleType:
    """Import C{docs/examples/after_hours.py} (docs is not a package)."""
    name = "b2bua_docs_example_after_hours"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def at(text: str) -> Clock:
    """A clock showing the UTC time C{text} (ISO 8601)."""
    clock = Clock()
    clock.advance(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())
    return clock


class Misfit:
    """A plugin implementing a hook that does not exist."""

    @hookimpl
    def b2bua_no_such_hook(self) -> None:
        """Never called."""


class BuildPluginManagerTests(SynchronousTestCase):
    """L{build_plugin_manager} and L{plugin_listing}."""

    def test_builtins_and_listing(self) -> None:
        """Built-in plugins are registered by name and listed with their
        hooks."""
        pm = build_plugin_manager({"local_routing": LocalRouting()}, load_entry_points=False)
        self.assertEqual(plugin_listing(pm), [{
            "name": "local_routing", "hooks": ["b2bua_configure", "b2bua_route_call"]}])

    def test_disabled(self) -> None:
        """A disabled plugin is not registered; naming an unknown plugin in
        C{disabled} is an error."""
        pm = build_plugin_manager({"local_routing": LocalRouting()}, ["local_routing"],
                                  load_entry_points=False)
        self.assertEqual(plugin_listing(pm), [])
        self.assertRaises(PluginError, build_plugin_manager,
                          {"local_routing": LocalRouting()}, ["nosuch"],
                          load_entry_points=False)

    def test_disabled_with_entry_points(self) -> None:
        """With entry points loaded, disabling an unknown name is still an
        error, and a built-in can be disabled."""
        self.assertRaises(PluginError, build_plugin_manager, {}, ["nosuch"])
        pm = build_plugin_manager({"local_routing": LocalRouting()}, ["local_routing"])
        self.assertIsNone(pm.get_plugin("local_routing"))

    def test_unknown_hook(self) -> None:
        """A plugin implementing an unknown hook is refused at start-up."""
        error = self.assertRaises(PluginError, build_plugin_manager, {"misfit": Misfit()},
                                  load_entry_points=False)
        self.assertIn("b2bua_no_such_hook", str(error))


class HarnessTests(SynchronousTestCase):
    """The building blocks of L{b2bua.testing}."""

    def test_network_delivers_on_the_clock_and_drops(self) -> None:
        """Messages go through the clock (nothing before it moves), are
        recorded, and the ones a rule matches are lost."""
        network = FakeNetwork(latency=0.5)
        sender = FakeTransport(network, "127.0.0.2")
        receiver = FakeTransport(network, "127.0.0.3")
        received: list[Any] = []

        class User:
            """Records what arrives."""

            def message_received(self, message: Any, source: Any) -> None:
                """Record the method and where it came from."""
                received.append((message.method, source.remote))

        receiver.user = User()
        request = Request("OPTIONS", "sip:127.0.0.3", [
            ("Via", "SIP/2.0/UDP x;branch=z9hG4bK1"), ("From", "<sip:a@x>;tag=1"),
            ("To", "<sip:b@y>"), ("Call-ID", "c1"), ("CSeq", "1 OPTIONS"),
            ("Max-Forwards", "70")])
        network.drop(lambda d: d.message.cseq.number == 2)
        sender.send_request(request, Target("UDP", "127.0.0.3", 5060))
        self.assertEqual(received, [])
        network.advance(0.5)
        self.assertEqual(received, [("OPTIONS", ("127.0.0.2", 5060))])
        request.headers.set("CSeq", "2 OPTIONS")
        sender.send_request(request, Target("UDP", "127.0.0.3", 5060))
        network.advance(1)
        self.assertEqual(len(received), 1)
        self.assertEqual([d.dropped for d in network.deliveries], [False, True])
        self.assertEqual(network.requests("OPTIONS")[0].via[0].host, "127.0.0.2")
        failed = sender.send_request(request, Target("TCP", "127.0.0.3", 5060))
        self.failureResultOf(failed)
        assert_no_delayed_calls(network.clock)

    def test_assert_no_delayed_calls(self) -> None:
        """The helper names what is left on the clock."""
        clock = Clock()
        call = clock.callLater(3, lambda: None)
        error = self.assertRaises(AssertionError, assert_no_delayed_calls, clock)
        self.assertIn("1 delayed call", str(error))
        call.cancel()
        assert_no_delayed_calls(clock)

    def test_sdp_helpers(self) -> None:
        """L{sdp_offer} builds what L{sdp_direction} reads back."""
        self.assertEqual(sdp_direction(sdp_offer("127.0.0.2", direction="sendonly")),
                         "sendonly")
        self.assertIsNone(sdp_direction(b""))

    def test_phone_over_tcp(self) -> None:
        """A phone may use TCP; its calls work the same."""
        h = SwitchHarness()
        alice = h.register("1000", transport="TCP")
        bob = h.register("1001")
        call = alice.call("1001")
        bob.incoming[0].answer()
        self.assertEqual(call.code, 200)
        self.assertEqual(bob.incoming[0].invite.via[0].transport, "UDP")
        self.assertEqual(h.network.requests("ACK", alice.address)[-1].via[0].transport, "TCP")
        call.hangup()
        h.settle()
        h.assert_idle()


class Lifecycle:
    """A plugin recording its configuration and its end."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def b2bua_configure(self, services: Any, settings: dict[str, Any]) -> None:
        """Record its own settings table."""
        self.events.append(("configured", settings.get("lifecycle")))

    @hookimpl
    def b2bua_unconfigure(self) -> None:
        """Record."""
        self.events.append("unconfigured")


class HarnessLifecycleTests(SynchronousTestCase):
    """L{SwitchHarness} configures plugins as the service does."""

    def test_configure_and_stop(self) -> None:
        """Plugins get their C{[plugins.NAME]} table at construction, a
        plugin registered later is configured as it registers (historic),
        and L{SwitchHarness.stop} unconfigures them."""
        first, late = Lifecycle(), Lifecycle()
        h = SwitchHarness({"lifecycle": first}, settings={"lifecycle": {"x": 1}})
        self.assertEqual(first.events, [("configured", {"x": 1})])
        h.pm.register(late, name="late")
        self.assertEqual(late.events, [("configured", {"x": 1})])
        h.stop()
        self.assertEqual(first.events[-1], "unconfigured")
        self.assertEqual(late.events[-1], "unconfigured")
        h.assert_idle()


class AfterHoursTests(SynchronousTestCase):
    """The example plugin of C{docs/plugins.md}, through the switch."""

    SETTINGS = {"after_hours": {"retry_after_max": 86400, "tenants": {"127.0.0.1": {
        "opens": "08:00", "closes": "18:00", "days": ["mon", "tue", "wed", "thu", "fri"],
        "utc_offset": "+01:00", "holidays": ["2023-12-25"]}}}}

    def harness(self, when: str, **kwargs: Any) -> SwitchHarness:
        """A switch with the example plugin, its clock at C{when} (UTC);
        alice and bob registered."""
        module = load_example()
        self.plugin = module.AfterHours(**kwargs)
        self.h = SwitchHarness({"after_hours": self.plugin}, settings=self.SETTINGS,
                               clock=at(when))
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")
        return self.h

    def finish(self) -> None:
        """Nothing may be left behind."""
        self.h.settle()
        self.h.assert_idle()

    def test_closed(self) -> None:
        """At night the caller gets 480 with a Retry-After until 08:00 local
        time; the callee never rings; the refusal is counted when the call
        ends."""
        self.harness("2023-11-14T22:00:00")  # Tuesday 23:00 at +01:00
        call = self.alice.call("1001")
        self.assertEqual(call.code, 480)
        self.assertEqual(call.responses[-1].headers.get("Retry-After"), str(9 * 3600))
        self.assertEqual(self.bob.incoming, [])
        self.assertEqual(self.plugin.refused, {"closed": 1})
        self.finish()

    def test_open(self) -> None:
        """In business hours the calendar is asked (lazily) and the call
        goes through."""
        asked: list[dt.date] = []

        def calendar(domain: str, date: dt.date) -> Deferred[bool]:
            asked.append(date)
            return deferLater(self.h.clock, 0.5, lambda: False)

        self.harness("2023-11-15T09:00:00", calendar=calendar)
        call = self.alice.call("1001")
        self.assertEqual(asked, [dt.date(2023, 11, 15)])
        self.assertEqual(self.bob.incoming, [])
        self.h.advance(0.5)
        self.bob.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.assertEqual(self.plugin.refused, {})
        self.finish()

    def test_holiday(self) -> None:
        """On a listed holiday the call is refused until the next working
        day's opening (Christmas is a Monday: Tuesday 08:00)."""
        self.harness("2023-12-25T10:00:00")
        call = self.alice.call("1001")
        self.assertEqual(call.code, 480)
        self.assertEqual(call.responses[-1].headers.get("Retry-After"), str(21 * 3600))
        self.assertEqual(self.plugin.refused, {"holiday": 1})
        self.finish()

    def test_weekend_capped(self) -> None:
        """Retry-After is capped by C{retry_after_max}."""
        self.harness("2023-11-18T12:00:00")  # Saturday
        call = self.alice.call("1001")
        self.assertEqual(call.responses[-1].headers.get("Retry-After"), "86400")
        self.finish()

    def test_calendar_that_never_answers(self) -> None:
        """A calendar that hangs fails the call with 500 after the hook
        timeout: the rule for every lazy decision."""
        self.harness("2023-11-15T09:00:00", calendar=lambda domain, date: Deferred())
        call = self.alice.call("1001")
        self.h.advance(5)
        self.assertEqual(call.code, 500)
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total",
                                       hook="b2bua_authorize_call"), 1)
        self.flushLoggedErrors(TimeoutError)
        self.finish()

    def test_other_tenants(self) -> None:
        """Calls to a domain without opening hours are not its business."""
        self.harness("2023-11-14T22:00:00")
        call = self.alice.call("sip:5550000@example.net")
        self.assertEqual(call.code, 404)
        self.assertEqual(self.plugin.refused, {})
        self.finish()

    def test_bad_settings(self) -> None:
        """A bad table stops configuration with a message naming the key."""
        module = load_example()
        for table, key in (({"opens": "8 o'clock"}, "opens"), ({"days": ["someday"]}, "days"),
                           ({"utc_offset": "CET"}, "utc_offset"),
                           ({"opens": "18:00", "closes": "08:00"}, "opens")):
            error = self.assertRaises(ValueError, module.Hours.from_settings, table)
            self.assertIn(key, str(error))

    def test_entry_point_object(self) -> None:
        """The module's C{plugin} is what an entry point names: an instance
        pluggy registers as is."""
        module = load_example()
        pm = build_plugin_manager({"after_hours": module.plugin}, load_entry_points=False)
        self.assertEqual(plugin_listing(pm)[0]["hooks"], [
            "b2bua_authorize_call", "b2bua_call_ended", "b2bua_configure"])
