"""Tests for L{b2bua.metrics}: names, bounded labels, outcomes and rendering."""

from __future__ import annotations

import math

from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from b2bua.metrics import (
    DROP_REASONS,
    MAX_HOOK_LABELS,
    OUTCOMES,
    REJECT_REASONS,
    SETUP_BUCKETS,
    SIP_METHODS,
    Metrics,
    code_label,
    method_label,
    outcome_for,
)

EXPECTED = {
    "b2bua_calls_active": "gauge",
    "b2bua_calls": "counter",
    "b2bua_calls_transferred": "counter",
    "b2bua_call_setup_seconds": "histogram",
    "b2bua_sip_requests": "counter",
    "b2bua_sip_responses": "counter",
    "b2bua_sip_messages_dropped": "counter",
    "b2bua_sip_rejected_requests": "counter",
    "b2bua_registrations_active": "gauge",
    "b2bua_transactions_active": "gauge",
    "b2bua_plugin_errors": "counter",
    "b2bua_oam_http_errors": "counter",
}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """Return one sample of C{metrics}, or C{None} if it does not exist."""
    return metrics.registry.get_sample_value(name, labels)


def families(metrics: Metrics) -> dict[str, object]:
    """Parse a classic-text scrape of C{metrics} into families by name."""
    body, _ = metrics.render()
    return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}


class OutcomeTests(SynchronousTestCase):
    """L{outcome_for} maps final codes and CANCEL to the fixed outcome set."""

    def test_answered(self) -> None:
        """Every 2xx is answered, even when a CANCEL crossed it."""
        for code in (200, 202, 299):
            self.assertEqual(outcome_for(code, False), "answered")
            self.assertEqual(outcome_for(code, True), "answered")

    def test_cancelled(self) -> None:
        """A caller's CANCEL wins over any non-2xx code, or no code at all."""
        for code in (None, 487, 486, 503, 404):
            self.assertEqual(outcome_for(code, True), "cancelled")

    def test_busy(self) -> None:
        """486 Busy Here and 600 Busy Everywhere are busy."""
        self.assertEqual(outcome_for(486, False), "busy")
        self.assertEqual(outcome_for(600, False), "busy")

    def test_no_answer(self) -> None:
        """408, 480 and a 487 the switch caused itself are no_answer."""
        for code in (408, 480, 487):
            self.assertEqual(outcome_for(code, False), "no_answer")

    def test_unavailable(self) -> None:
        """502, 503 and 504 mean the far end or the path is unavailable."""
        for code in (502, 503, 504):
            self.assertEqual(outcome_for(code, False), "unavailable")

    def test_rejected(self) -> None:
        """Other 4xx and 6xx, and an unfollowed 3xx, are rejected."""
        for code in (302, 401, 403, 404, 488, 603, 604):
            self.assertEqual(outcome_for(code, False), "rejected")

    def test_failed(self) -> None:
        """Other 5xx, no final response, and nonsense codes are failed."""
        for code in (None, 500, 501, 580, 100, 183, 0, 700, -1):
            self.assertEqual(outcome_for(code, False), "failed")

    def test_always_in_set(self) -> None:
        """Whatever the input, the outcome is one of L{OUTCOMES}."""
        for code in [None, *range(-5, 800)]:
            for cancelled in (False, True):
                self.assertIn(outcome_for(code, cancelled), OUTCOMES)


class LabelTests(SynchronousTestCase):
    """The label helpers keep every label set bounded."""

    def test_known_methods(self) -> None:
        """Each method of the core RFCs is its own label."""
        for method in ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK",
                       "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"):
            self.assertEqual(method_label(method), method)
        self.assertEqual(len(SIP_METHODS), 14)

    def test_other_methods(self) -> None:
        """Unknown, lower-case (methods are case-sensitive) and junk methods fold into other."""
        for method in ("FOO", "invite", "", "X" * 1000, "INVITE\r\n"):
            self.assertEqual(method_label(method), "other")

    def test_codes(self) -> None:
        """Only integers 100-699 become a code label."""
        self.assertEqual(code_label(100), "100")
        self.assertEqual(code_label(699), "699")
        for code in (99, 700, -200, True, "200", 200.0, None):
            self.assertIsNone(code_label(code))


class RegistryTests(SynchronousTestCase):
    """Each L{Metrics} has its own registry with the documented metrics."""

    def test_own_registry(self) -> None:
        """Two instances count separately and never touch the global registry."""
        first, second = Metrics(), Metrics()
        first.request_received("INVITE")
        self.assertEqual(value(first, "b2bua_sip_requests_total", method="INVITE"), 1.0)
        self.assertEqual(value(second, "b2bua_sip_requests_total", method="INVITE"), 0.0)
        self.assertIsNot(first.registry, REGISTRY)
        self.assertIsNone(REGISTRY.get_sample_value("b2bua_calls_active"))

    def test_names_and_types(self) -> None:
        """Every documented metric is rendered, with its type, and nothing else."""
        found = {name: family.type for name, family in families(Metrics()).items()}
        self.assertEqual(found, EXPECTED)

    def test_naming_rules(self) -> None:
        """All names start with b2bua_; counters are exposed with _total."""
        body, _ = Metrics().render()
        for line in body.decode("utf-8").splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                self.assertTrue(name.startswith("b2bua_"), name)
                if kind == "counter":
                    self.assertTrue(name.endswith("_total"), name)

    def test_no_created_samples(self) -> None:
        """The wall-clock C{_created} series are left out of the scrape."""
        metrics = Metrics()
        metrics.call_ended(200)
        body, _ = metrics.render()
        self.assertNotIn(b"_created", body)
        body, _ = metrics.render("application/openmetrics-text; version=1.0.0")
        self.assertNotIn(b"_created", body)

    def test_fixed_labels_start_at_zero(self) -> None:
        """Outcomes, methods and reasons are exported at zero before any event."""
        metrics = Metrics()
        for outcome in OUTCOMES:
            self.assertEqual(value(metrics, "b2bua_calls_total", outcome=outcome), 0.0)
        for method in SIP_METHODS:
            self.assertEqual(value(metrics, "b2bua_sip_requests_total", method=method), 0.0)
        for reason in DROP_REASONS:
            self.assertEqual(
                value(metrics, "b2bua_sip_messages_dropped_total", reason=reason), 0.0)
        for reason in REJECT_REASONS:
            self.assertEqual(
                value(metrics, "b2bua_sip_rejected_requests_total", reason=reason), 0.0)


class CallMetricsTests(SynchronousTestCase):
    """Calls in progress, outcomes and set-up time."""

    def test_active_and_outcome(self) -> None:
        """A started call is active until it ends; its outcome is counted once."""
        metrics = Metrics()
        metrics.call_started()
        metrics.call_started()
        self.assertEqual(value(metrics, "b2bua_calls_active"), 2.0)
        self.assertEqual(metrics.call_ended(486), "busy")
        self.assertEqual(metrics.call_ended(None, cancelled=True), "cancelled")
        self.assertEqual(value(metrics, "b2bua_calls_active"), 0.0)
        self.assertEqual(value(metrics, "b2bua_calls_total", outcome="busy"), 1.0)
        self.assertEqual(value(metrics, "b2bua_calls_total", outcome="cancelled"), 1.0)
        self.assertEqual(value(metrics, "b2bua_calls_total", outcome="answered"), 0.0)

    def test_buckets(self) -> None:
        """Set-up buckets run from 0.05 s to 30 s, in increasing order."""
        self.assertEqual(SETUP_BUCKETS[0], 0.05)
        self.assertEqual(SETUP_BUCKETS[-1], 30.0)
        self.assertEqual(list(SETUP_BUCKETS), sorted(set(SETUP_BUCKETS)))

    def test_setup_observed(self) -> None:
        """A set-up time lands in the first bucket that holds it."""
        metrics = Metrics()
        metrics.observe_call_setup(1.5)
        name = "b2bua_call_setup_seconds_bucket"
        self.assertEqual(value(metrics, name, le="1.0"), 0.0)
        self.assertEqual(value(metrics, name, le="2.0"), 1.0)
        self.assertEqual(value(metrics, name, le="+Inf"), 1.0)
        self.assertEqual(value(metrics, "b2bua_call_setup_seconds_sum"), 1.5)

    def test_setup_nonsense_ignored(self) -> None:
        """Negative or NaN durations (a clock gone wrong) are not observed."""
        metrics = Metrics()
        metrics.observe_call_setup(-1.0)
        metrics.observe_call_setup(math.nan)
        self.assertEqual(value(metrics, "b2bua_call_setup_seconds_count"), 0.0)


class SIPMetricsTests(SynchronousTestCase):
    """Requests, responses, drops and rejections, with folding to other."""

    def test_requests(self) -> None:
        """Known methods count under their name, unknown ones under other."""
        metrics = Metrics()
        self.assertEqual(metrics.request_received("INVITE"), "INVITE")
        self.assertEqual(metrics.request_received("FOO"), "other")
        self.assertEqual(metrics.request_received("BAR"), "other")
        self.assertEqual(value(metrics, "b2bua_sip_requests_total", method="INVITE"), 1.0)
        self.assertEqual(value(metrics, "b2bua_sip_requests_total", method="other"), 2.0)
        self.assertIsNone(value(metrics, "b2bua_sip_requests_total", method="FOO"))

    def test_responses(self) -> None:
        """Valid codes count as strings; invalid ones are not counted at all."""
        metrics = Metrics()
        self.assertEqual(metrics.response_sent(180), "180")
        self.assertEqual(metrics.response_sent(180), "180")
        self.assertIsNone(metrics.response_sent(700))
        self.assertIsNone(metrics.response_sent(42))
        self.assertEqual(value(metrics, "b2bua_sip_responses_total", code="180"), 2.0)
        self.assertIsNone(value(metrics, "b2bua_sip_responses_total", code="700"))
        self.assertIsNone(value(metrics, "b2bua_sip_responses_total", code="other"))

    def test_dropped(self) -> None:
        """Drop reasons outside the fixed set fold into other."""
        metrics = Metrics()
        self.assertEqual(metrics.message_dropped("malformed"), "malformed")
        self.assertEqual(metrics.message_dropped("cosmic rays"), "other")
        name = "b2bua_sip_messages_dropped_total"
        self.assertEqual(value(metrics, name, reason="malformed"), 1.0)
        self.assertEqual(value(metrics, name, reason="other"), 1.0)

    def test_rejected(self) -> None:
        """Reject reasons outside the fixed set fold into other."""
        metrics = Metrics()
        self.assertEqual(metrics.request_rejected("loop_detected"), "loop_detected")
        self.assertEqual(metrics.request_rejected("sip:attacker@evil"), "other")
        name = "b2bua_sip_rejected_requests_total"
        self.assertEqual(value(metrics, name, reason="loop_detected"), 1.0)
        self.assertEqual(value(metrics, name, reason="other"), 1.0)


class PluginAndOAMMetricsTests(SynchronousTestCase):
    """Plugin errors by hook and OAM errors by route stay bounded."""

    def test_hook_names(self) -> None:
        """Hook-shaped names get their own series; anything else is other."""
        metrics = Metrics()
        self.assertEqual(metrics.plugin_failed("b2bua_call_answered"), "b2bua_call_answered")
        self.assertEqual(metrics.plugin_failed("not a hook"), "other")
        self.assertEqual(metrics.plugin_failed("b2bua_" + "x" * 200), "other")
        self.assertEqual(
            value(metrics, "b2bua_plugin_errors_total", hook="b2bua_call_answered"), 1.0)
        self.assertEqual(value(metrics, "b2bua_plugin_errors_total", hook="other"), 2.0)

    def test_hook_cap(self) -> None:
        """After L{MAX_HOOK_LABELS} distinct hooks, new ones fold into other."""
        metrics = Metrics()
        for index in range(MAX_HOOK_LABELS):
            self.assertEqual(metrics.plugin_failed(f"b2bua_hook_{index}"), f"b2bua_hook_{index}")
        self.assertEqual(metrics.plugin_failed("b2bua_one_too_many"), "other")
        self.assertEqual(metrics.plugin_failed("b2bua_hook_0"), "b2bua_hook_0")

    def test_oam_routes(self) -> None:
        """OAM errors count by route; unknown routes fold into other."""
        metrics = Metrics()
        self.assertEqual(metrics.oam_error("ready"), "ready")
        self.assertEqual(metrics.oam_error("/etc/passwd"), "other")
        self.assertEqual(value(metrics, "b2bua_oam_http_errors_total", route="ready"), 1.0)
        self.assertEqual(value(metrics, "b2bua_oam_http_errors_total", route="other"), 1.0)


class LiveGaugeTests(SynchronousTestCase):
    """Registrations and transactions are read from callbacks at scrape time."""

    def test_unbound_reads_zero(self) -> None:
        """Before anything is bound, both gauges read zero."""
        metrics = Metrics()
        self.assertEqual(value(metrics, "b2bua_registrations_active"), 0.0)
        self.assertEqual(value(metrics, "b2bua_transactions_active"), 0.0)

    def test_constructor_callbacks(self) -> None:
        """Callbacks given to the constructor are read at every scrape."""
        store = {"registrations": 3, "transactions": 7}
        metrics = Metrics(
            registrations=lambda: store["registrations"],
            transactions=lambda: store["transactions"],
        )
        self.assertEqual(value(metrics, "b2bua_registrations_active"), 3.0)
        self.assertEqual(value(metrics, "b2bua_transactions_active"), 7.0)
        store["registrations"] = 4
        self.assertEqual(value(metrics, "b2bua_registrations_active"), 4.0)

    def test_late_binding(self) -> None:
        """track_registrations and track_transactions bind a callback later."""
        metrics = Metrics()
        metrics.track_registrations(lambda: 12)
        metrics.track_transactions(lambda: 5)
        body, _ = metrics.render()
        self.assertIn(b"b2bua_registrations_active 12.0\n", body)
        self.assertIn(b"b2bua_transactions_active 5.0\n", body)

    def test_fired_deferred(self) -> None:
        """A callback returning an already-fired Deferred (in-memory store) reads its result."""
        metrics = Metrics(registrations=lambda: succeed(9))
        self.assertEqual(value(metrics, "b2bua_registrations_active"), 9.0)

    def test_pending_deferred(self) -> None:
        """A pending Deferred (Redis) leaves the previous value until it fires."""
        pending: list[Deferred[int]] = []

        def count() -> Deferred[int]:
            pending.append(Deferred())
            return pending[-1]

        metrics = Metrics(registrations=count)
        self.assertTrue(math.isnan(value(metrics, "b2bua_registrations_active")))
        pending[0].callback(4)
        self.assertEqual(value(metrics, "b2bua_registrations_active"), 4.0)
        pending[1].callback(6)
        self.assertEqual(value(metrics, "b2bua_registrations_active"), 6.0)

    def test_failed_deferred(self) -> None:
        """A failing Deferred reads as NaN, is logged and is not left unhandled."""
        metrics = Metrics(transactions=lambda: fail(ConnectionError("redis down")))
        self.assertTrue(math.isnan(value(metrics, "b2bua_transactions_active")))
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_not_a_number(self) -> None:
        """A callback returning something that is not a number reads as NaN, logged."""
        metrics = Metrics(transactions=lambda: "many")
        self.assertTrue(math.isnan(value(metrics, "b2bua_transactions_active")))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_failing_callback(self) -> None:
        """A failing callback reads as NaN and is logged; the scrape still works."""
        metrics = Metrics(registrations=lambda: 1 // 0)
        body, _ = metrics.render()
        self.assertIn(b"b2bua_registrations_active NaN\n", body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class RenderTests(SynchronousTestCase):
    """L{Metrics.render} picks the exposition format."""

    def test_default_text(self) -> None:
        """Without an Accept header the classic text format is used."""
        body, content_type = Metrics().render()
        self.assertEqual(content_type, CONTENT_TYPE_PLAIN_0_0_4)
        self.assertIn(b"# TYPE b2bua_calls_total counter\n", body)

    def test_openmetrics(self) -> None:
        """An Accept header asking for OpenMetrics gets OpenMetrics."""
        body, content_type = Metrics().render(
            "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
        self.assertTrue(content_type.startswith("application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_malformed_accept(self) -> None:
        """A version parameter prometheus_client cannot parse falls back to text."""
        body, content_type = Metrics().render("text/plain; version=abc")
        self.assertEqual(content_type, CONTENT_TYPE_PLAIN_0_0_4)
        self.assertIn(b"b2bua_calls_active", body)
