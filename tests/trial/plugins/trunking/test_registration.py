"""Tests for L{plugins.trunking.registration}: outbound REGISTER to a
vendor through a real transaction layer on a L{Clock}, answered by the test
as the vendor's registrar (with a real L{DigestServer} checking our
credentials)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.services import Services
from b2bua.metrics import Metrics
from b2bua.sip.auth import DigestServer, compute_ha1
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from b2bua.testing import assert_no_delayed_calls
from plugins.trunking.registration import (
    NAME,
    OutboundRegistration,
    RegistrationConfig,
    RegistrationManager,
    RegistrationSettings,
    SettingsError,
    TrunkRegistration,
    configs_from_rows,
    read_settings,
    refresh_delay,
    retry_delay,
)
from plugins.trunking.uac import LOCAL_ADDRESS, SEND_REQUEST
from tests.trial.plugins.trunking.uac_support import LOCAL, VENDOR, VendorWire, counting_random

REALM = "vendor.example"
USER = "trunk7"
PASSWORD = "s3cret"
INSTANCE = "urn:uuid:00000000-0000-4000-8000-000000000001"
TARGET = Target("UDP", *VENDOR)


def make_config(**changes: Any) -> RegistrationConfig:
    """A registration of connection 7 with a password."""
    values: dict[str, Any] = dict(
        connection_id=7, name="vendor-a", target=TARGET, registrar=f"sip:{REALM}",
        aor=f"sip:{USER}@{REALM}", username=USER, password=PASSWORD, realm=REALM,
        contact_user=USER, instance_id=INSTANCE, settings=RegistrationSettings())
    values.update(changes)
    return RegistrationConfig(**values)


class Registrar:
    """The vendor's registrar: challenges with a real L{DigestServer}."""

    def __init__(self, clock: Clock, algorithms: tuple[str, ...] = ("SHA-256", "MD5")) -> None:
        self.digest = DigestServer(REALM, b"vendor secret", clock, algorithms=algorithms)

    def lookup(self, username: str, realm: str, algorithm: str) -> str | None:
        """The vendor's stored HA1 of our account."""
        return compute_ha1(USER, REALM, PASSWORD, algorithm) if username == USER else None

    def challenge(self, stale: bool = False) -> list[tuple[str, str]]:
        """WWW-Authenticate headers of a 401."""
        return [("WWW-Authenticate", value) for value in self.digest.challenge(stale=stale)]

    def verifies(self, request: Request, header: str = "Authorization") -> bool:
        """Whether the request's credentials are right."""
        value = request.headers.get(header)
        if value is None:
            return False
        return self.digest.verify(request.method, request.uri_text, value, self.lookup).ok


class RegistrationTestCase(SynchronousTestCase):
    """One registration on a wire, with a registrar."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.wire = VendorWire(self.clock)
        self.registrar = Registrar(self.clock)
        self.changes: list[tuple[str, str]] = []

    def make(self, config: RegistrationConfig | None = None,
             jitter: float = 0.5) -> OutboundRegistration:
        """A registration of C{config} (default L{make_config})."""
        return OutboundRegistration(
            self.clock, self.wire.sender(), config or make_config(),
            random_bytes=counting_random(), random=lambda: jitter,
            on_change=lambda r, old: self.changes.append((str(old), str(r.state))))

    def register(self, registration: OutboundRegistration, granted: int = 3600) -> None:
        """Start it through the challenge to C{registered}."""
        registration.start()
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge())
        self.wire.answer(self.wire.last(), 200, [("Contact", f"{self.wire.last().headers.get('Contact')};expires={granted}")])
        self.assertEqual(registration.state, "registered")

    def settle(self) -> None:
        """Let every transaction end, then nothing may be left on the clock."""
        self.clock.advance(64)
        assert_no_delayed_calls(self.clock)


class FirstRegisterTests(RegistrationTestCase):
    """The REGISTER as sent, the challenge and the binding."""

    def test_request(self) -> None:
        """REGISTER to the registrar for the AOR, with our Contact (listener
        address and instance id), the asked expiry, and no credentials yet."""
        registration = self.make()
        registration.start()
        self.assertEqual(registration.state, "registering")
        request = self.wire.last()
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(request.uri_text, f"sip:{REALM}")
        self.assertEqual(str(request.to.uri), f"sip:{USER}@{REALM}")
        self.assertEqual(str(request.from_.uri), f"sip:{USER}@{REALM}")
        self.assertTrue(request.from_.tag)
        self.assertIsNone(request.to.tag)
        self.assertEqual(request.cseq.number, 1)
        contact = request.contact[0]
        self.assertEqual((contact.uri.user, contact.uri.host, contact.uri.port), (USER, *LOCAL))
        self.assertEqual(contact.params["+sip.instance"], f'"<{INSTANCE}>"')
        self.assertEqual(request.expires, 3600)
        self.assertNotIn("Authorization", request.headers)
        self.assertEqual(self.wire.sent[-1][2], TARGET)

    def test_tcp_contact(self) -> None:
        """Over TCP the Contact says so."""
        self.make(make_config(target=Target("TCP", *VENDOR))).start()
        self.assertEqual(self.wire.last().contact[0].uri.transport, "tcp")

    def test_advertised_address(self) -> None:
        """A configured contact address replaces the listener's."""
        self.make(make_config(contact_address=("203.0.113.9", 5080))).start()
        uri = self.wire.last().contact[0].uri
        self.assertEqual((uri.host, uri.port), ("203.0.113.9", 5080))

    def check_challenge(self, algorithms: tuple[str, ...], config: RegistrationConfig) -> None:
        """401 -> REGISTER with credentials the registrar accepts -> 200."""
        self.registrar = Registrar(self.clock, algorithms)
        registration = self.make(config)
        registration.start()
        first = self.wire.last()
        self.wire.answer(first, 401, self.registrar.challenge())
        second = self.wire.last()
        self.assertIsNot(second, first)
        self.assertTrue(self.registrar.verifies(second))
        credentials = second.headers.get("Authorization") or ""
        self.assertIn("qop=auth", credentials)
        self.assertEqual(second.cseq.number, 2)
        self.assertEqual(second.call_id, first.call_id)
        self.assertEqual(second.from_.tag, first.from_.tag)
        self.assertEqual(registration.state, "registering")
        self.wire.answer(second, 200, [("Contact", f"{second.headers.get('Contact')};expires=1800")])
        self.assertEqual(registration.state, "registered")
        self.assertEqual(registration.granted_expires, 1800)
        self.assertEqual(registration.expires_at, self.clock.seconds() + 1800)

    def test_challenge_sha256(self) -> None:
        """A SHA-256 challenge is answered with the password."""
        self.check_challenge(("SHA-256",), make_config())

    def test_challenge_md5(self) -> None:
        """An MD5 challenge is answered with the password."""
        self.check_challenge(("MD5",), make_config())

    def test_challenge_with_stored_ha1(self) -> None:
        """The stored MD5 HA1 answers an MD5 challenge without the password."""
        config = make_config(password=None, ha1={"MD5": compute_ha1(USER, REALM, PASSWORD)})
        self.check_challenge(("MD5",), config)

    def test_ha1_cannot_answer_sha256(self) -> None:
        """An MD5 HA1 cannot answer a SHA-256-only challenge: a failure, with
        the reason, and no REGISTER without credentials again at once."""
        self.registrar = Registrar(self.clock, ("SHA-256",))
        config = make_config(password=None, ha1={"MD5": compute_ha1(USER, REALM, PASSWORD)})
        registration = self.make(config)
        registration.start()
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge())
        self.assertEqual(registration.state, "failed")
        self.assertIn("cannot answer the challenge", registration.last_reason)
        self.assertEqual(len(self.wire.requests()), 1)

    def test_proxy_challenge(self) -> None:
        """A 407 is answered with Proxy-Authorization."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 407, [
            ("Proxy-Authenticate", v) for v in self.registrar.digest.challenge()])
        request = self.wire.last()
        self.assertTrue(self.registrar.verifies(request, "Proxy-Authorization"))
        self.assertNotIn("Authorization", request.headers)

    def test_foreign_realm_refused(self) -> None:
        """Credentials are never given to another realm."""
        other = DigestServer("stranger.example", b"x", self.clock)
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 401, [("WWW-Authenticate", v)
                                                 for v in other.challenge()])
        self.assertEqual(registration.state, "failed")
        self.assertEqual(len(self.wire.requests()), 1)

    def test_wrong_password_is_a_failure_not_a_loop(self) -> None:
        """401, credentials, 401 again: failed, no third REGISTER; the retry
        comes after the back-off."""
        registration = self.make(make_config(password="wrong"))
        registration.start()
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge())
        self.assertFalse(self.registrar.verifies(self.wire.last()))
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge())
        self.assertEqual(registration.state, "failed")
        self.assertEqual((registration.last_code, registration.last_reason),
                         (401, "credentials refused"))
        self.assertEqual(len(self.wire.requests()), 2)
        self.assertEqual(registration.failures, 1)
        # the retry (5 s * 0.75 with jitter 0.5) starts a fresh attempt
        self.clock.advance(3.74)
        self.assertEqual(len(self.wire.requests()), 2)
        self.clock.advance(0.02)
        self.assertEqual(len(self.wire.requests()), 3)
        self.assertEqual(registration.state, "registering")

    def test_stale_challenge_answered_again(self) -> None:
        """A second challenge with stale=true is answered once more."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge())
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge(stale=True))
        self.assertEqual(len(self.wire.requests()), 3)
        self.assertTrue(self.registrar.verifies(self.wire.last()))
        self.wire.answer(self.wire.last(), 200, [("Expires", "60")])
        self.assertEqual(registration.state, "registered")

    def test_challenge_without_credentials(self) -> None:
        """A registration without credentials fails on a challenge."""
        registration = self.make(make_config(password=None))
        registration.start()
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge())
        self.assertEqual(registration.state, "failed")
        self.assertIn("no credentials", registration.last_reason)


    def test_unusable_credentials(self) -> None:
        """An HA1 without its realm cannot be used: failed at start, with
        the reason, nothing sent, no retry."""
        registration = self.make(make_config(password=None, realm="", ha1={"MD5": "0" * 32}))
        registration.start()
        self.assertEqual(registration.state, "failed")
        self.assertIn("credentials", registration.last_reason)
        self.assertEqual(self.wire.sent, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class GrantedExpiryTests(RegistrationTestCase):
    """Which expiry counts, and when the refresh goes."""

    def test_refresh_delay_rule(self) -> None:
        """The later of half the expiry and the margin before it."""
        self.assertEqual(refresh_delay(3600, 60), 3540)
        self.assertEqual(refresh_delay(100, 60), 50)
        self.assertEqual(refresh_delay(120, 60), 60)

    def test_contact_param_wins(self) -> None:
        """Our Contact's expires beats the Expires header; other contacts
        (other bindings of the AOR) do not count."""
        registration = self.make()
        registration.start()
        ours = self.wire.last().headers.get("Contact")
        self.wire.answer(self.wire.last(), 200, [
            ("Contact", "<sip:other@192.0.2.99>;expires=10"),
            ("Contact", f"{ours};expires=300"), ("Expires", "900")])
        self.assertEqual(registration.granted_expires, 300)

    def test_contact_matched_by_instance(self) -> None:
        """A registrar that rewrote our Contact's address still names our
        instance id."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 200, [
            ("Contact", f'<sip:{USER}@203.0.113.1:4000>;+sip.instance="<{INSTANCE}>";'
                        'expires=240')])
        self.assertEqual(registration.granted_expires, 240)

    def test_expires_header(self) -> None:
        """Without our Contact's expires, the Expires header counts."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 200, [("Expires", "600")])
        self.assertEqual(registration.granted_expires, 600)

    def test_asked_when_nothing_said(self) -> None:
        """With neither, what we asked for counts."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 200)
        self.assertEqual(registration.granted_expires, 3600)

    def test_zero_granted_is_a_failure(self) -> None:
        """A 2xx that keeps no binding for us is a failure."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 200, [("Expires", "0")])
        self.assertEqual(registration.state, "failed")

    def test_refresh(self) -> None:
        """The refresh goes at the rule's time with the same Call-ID, a CSeq
        one higher, and credentials for the last challenge at once."""
        registration = self.make()
        self.register(registration, granted=100)
        before = self.wire.last()
        self.assertEqual(registration.next_attempt_at, self.clock.seconds() + 50)
        self.clock.advance(49.9)
        self.assertEqual(len(self.wire.requests()), 2)
        self.clock.advance(0.1)
        refresh = self.wire.last()
        self.assertEqual(len(self.wire.requests()), 3)
        self.assertEqual(registration.state, "registering")
        self.assertEqual(refresh.call_id, before.call_id)
        self.assertEqual(refresh.from_.tag, before.from_.tag)
        self.assertEqual(refresh.cseq.number, before.cseq.number + 1)
        self.assertEqual(refresh.headers.get("Contact"), before.headers.get("Contact"))
        self.assertTrue(self.registrar.verifies(refresh))
        self.wire.answer(refresh, 200, [("Expires", "100")])
        self.assertEqual(registration.state, "registered")
        self.assertEqual(registration.expires_at, self.clock.seconds() + 100)

    def test_refresh_challenged_again(self) -> None:
        """A refresh whose ready credentials are challenged answers the new
        challenge once (the nonce had expired)."""
        registration = self.make()
        self.register(registration, granted=1000)
        self.clock.advance(940)
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge(stale=True))
        self.assertTrue(self.registrar.verifies(self.wire.last()))
        self.wire.answer(self.wire.last(), 200, [("Expires", "1000")])
        self.assertEqual(registration.state, "registered")

    def test_cseq_and_call_id_across_refreshes(self) -> None:
        """Over several refreshes: one Call-ID, one From tag, CSeq 1, 2, 3..."""
        registration = self.make()
        self.register(registration, granted=60)
        for _ in range(3):
            self.clock.advance(30)
            self.wire.answer(self.wire.last(), 200, [("Expires", "60")])
        requests = self.wire.requests("REGISTER")
        self.assertEqual([r.cseq.number for r in requests], [1, 2, 3, 4, 5])
        self.assertEqual({r.call_id for r in requests}, {requests[0].call_id})
        self.assertEqual({r.from_.tag for r in requests}, {requests[0].from_.tag})
        self.assertEqual({r.via[0].branch for r in requests}.__len__(), 5)


class IntervalTooBriefTests(RegistrationTestCase):
    """423 and Min-Expires."""

    def test_min_expires_raises_the_ask(self) -> None:
        """423 with Min-Expires 7200: asked again at once for 7200."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 423, [("Min-Expires", "7200")])
        request = self.wire.last()
        self.assertEqual(request.expires, 7200)
        self.assertEqual(request.cseq.number, 2)
        self.assertEqual(registration.requested_expires, 7200)
        self.wire.answer(request, 200)
        self.assertEqual(registration.granted_expires, 7200)

    def test_useless_min_expires_fails(self) -> None:
        """A Min-Expires missing, not above the ask, or beyond max_expires is
        a failure, not a loop."""
        for headers in ([], [("Min-Expires", "3600")], [("Min-Expires", "100000")]):
            wire = self.wire = VendorWire(self.clock)
            registration = self.make()
            registration.start()
            wire.answer(wire.last(), 423, headers)
            self.assertEqual(registration.state, "failed", headers)
            self.assertEqual(len(wire.requests()), 1)
            registration.stop()


class BackOffTests(RegistrationTestCase):
    """Failures, timeouts, Retry-After and the growing delay."""

    def test_retry_delay(self) -> None:
        """Doubling from the base, capped, then jittered by up to half."""
        self.assertEqual([retry_delay(n, 5, 600, 1.0) for n in range(1, 10)],
                         [5, 10, 20, 40, 80, 160, 320, 600, 600])
        self.assertEqual(retry_delay(3, 5, 600, 0.0), 10)
        self.assertEqual(retry_delay(1000, 5, 600, 0.5), 450)

    def test_growth_and_cap(self) -> None:
        """Each 500 doubles the wait until the cap; the jitter comes from the
        injected random."""
        settings = RegistrationSettings(retry_base=5, retry_max=60)
        registration = self.make(make_config(settings=settings), jitter=0.0)
        registration.start()
        waits = []
        for _ in range(6):
            self.wire.answer(self.wire.last(), 500)
            self.assertEqual(registration.state, "failed")
            wait = registration.next_attempt_at - self.clock.seconds()
            waits.append(wait)
            self.clock.advance(wait)
        self.assertEqual(waits, [2.5, 5, 10, 20, 30, 30])
        self.assertEqual(registration.failures, 6)
        self.assertEqual(len(self.wire.requests()), 7)

    def test_success_resets(self) -> None:
        """A 2xx resets the failure count."""
        registration = self.make(jitter=0.0)
        registration.start()
        self.wire.answer(self.wire.last(), 503)
        self.clock.advance(2.5)
        self.wire.answer(self.wire.last(), 200)
        self.assertEqual(registration.failures, 0)

    def test_timeout_is_a_failure(self) -> None:
        """No answer: failed when the transaction times out (Timer F)."""
        registration = self.make(jitter=0.0)
        registration.start()
        self.clock.advance(31.9)
        self.assertEqual(registration.state, "registering")
        self.clock.advance(0.1)
        self.assertEqual(registration.state, "failed")
        self.assertIsNone(registration.last_code)
        self.assertIn("no final response", registration.last_reason)
        self.assertEqual(registration.next_attempt_at, self.clock.seconds() + 2.5)

    def test_no_listener_is_a_failure(self) -> None:
        """A transport without a listener fails the attempt at once."""
        registration = self.make(make_config(target=Target("TLS", VENDOR[0], 5061)))
        registration.start()
        self.assertEqual(registration.state, "failed")
        self.assertIn("TLS", registration.last_reason)
        self.assertEqual(self.wire.sent, [])

    def test_retry_after(self) -> None:
        """A Retry-After longer than the back-off is waited for (capped)."""
        registration = self.make(jitter=0.0)
        registration.start()
        self.wire.answer(self.wire.last(), 503, [("Retry-After", "120 (maintenance)")])
        self.assertEqual(registration.next_attempt_at, self.clock.seconds() + 120)
        self.clock.advance(120)
        self.wire.answer(self.wire.last(), 503, [("Retry-After", "999999")])
        self.assertEqual(registration.next_attempt_at, self.clock.seconds() + 3600)

    def test_refresh_failure(self) -> None:
        """A refresh that fails leaves the state failed, the binding's expiry
        still known, and a retry before it runs out."""
        registration = self.make(jitter=0.0)
        self.register(registration, granted=120)
        self.clock.advance(60)
        self.wire.answer(self.wire.last(), 403)
        self.assertEqual(registration.state, "failed")
        self.assertEqual(registration.expires_at, self.clock.seconds() + 60)
        self.assertLess(registration.next_attempt_at, registration.expires_at)


class StopTests(RegistrationTestCase):
    """Un-registration."""

    def test_stop_sends_expires_zero(self) -> None:
        """Stopping a registered binding sends Expires: 0 for the same
        Contact, Call-ID and a higher CSeq (with ready credentials), and
        fires once answered."""
        registration = self.make()
        self.register(registration)
        last = self.wire.last()
        d = registration.stop()
        removal = self.wire.last()
        self.assertEqual(registration.state, "unregistering")
        self.assertEqual(removal.expires, 0)
        self.assertEqual(removal.headers.get("Contact"), last.headers.get("Contact"))
        self.assertEqual(removal.call_id, last.call_id)
        self.assertEqual(removal.cseq.number, last.cseq.number + 1)
        self.assertTrue(self.registrar.verifies(removal))
        self.assertNoResult(d)
        self.wire.answer(removal, 200)
        self.successResultOf(d)
        self.assertEqual(registration.state, "unregistered")
        self.assertIsNone(registration.expires_at)
        self.settle()

    def test_removal_challenged(self) -> None:
        """A challenged removal is answered once."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 200)
        d = registration.stop()
        self.wire.answer(self.wire.last(), 401, self.registrar.challenge())
        removal = self.wire.last()
        self.assertEqual(removal.expires, 0)
        self.assertTrue(self.registrar.verifies(removal))
        self.wire.answer(removal, 200)
        self.successResultOf(d)

    def test_stop_waits_for_the_pending_register(self) -> None:
        """Stopped while a REGISTER is pending, the removal goes only once it
        is answered (one REGISTER at a time, RFC 3261 10.2)."""
        registration = self.make()
        registration.start()
        d = registration.stop()
        self.assertEqual(len(self.wire.requests()), 1)
        self.wire.answer(self.wire.last(), 200)
        self.assertEqual(len(self.wire.requests()), 2)
        self.assertEqual(self.wire.last().expires, 0)
        self.wire.answer(self.wire.last(), 200)
        self.successResultOf(d)
        self.settle()

    def test_stop_gives_up(self) -> None:
        """No answer to the removal: stopped all the same after
        unregister_timeout."""
        registration = self.make()
        self.register(registration)
        d = registration.stop()
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual(registration.state, "unregistered")
        self.settle()

    def test_failed_and_unbound_sends_nothing(self) -> None:
        """A registration that never got a binding stops without a removal."""
        registration = self.make()
        registration.start()
        self.wire.answer(self.wire.last(), 403)
        self.successResultOf(registration.stop())
        self.assertEqual(len(self.wire.requests()), 1)
        self.settle()

    def test_stop_when_unregistered(self) -> None:
        """Stopping what never started is done at once."""
        self.successResultOf(self.make().stop())
        self.assertEqual(self.wire.sent, [])

    def test_states_seen(self) -> None:
        """The states a full life goes through, in order."""
        registration = self.make()
        self.register(registration)
        registration.stop()
        self.wire.answer(self.wire.last(), 200)
        self.assertEqual(self.changes, [("unregistered", "registering"),
                                        ("registering", "registered"),
                                        ("registered", "unregistering"),
                                        ("unregistering", "unregistered")])


class ManagerTests(SynchronousTestCase):
    """L{RegistrationManager}: many registrations, status and metrics."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.wire = VendorWire(self.clock)
        self.metrics = Metrics()
        self.manager = RegistrationManager(self.clock, self.wire.sender(),
                                           registry=self.metrics.registry,
                                           random_bytes=counting_random(), random=lambda: 0.0)

    def sample(self, name: str, connection: int) -> float | None:
        """A metric sample of C{connection}."""
        return self.metrics.registry.get_sample_value(name, {"connection": str(connection)})

    def test_metrics_follow_the_state(self) -> None:
        """The state gauge is 1 only while registered; every failed attempt
        counts."""
        self.manager.update([make_config()])
        self.assertEqual(self.sample("b2bua_trunk_registration_state", 7), 0)
        self.wire.answer(self.wire.last(), 500)
        self.assertEqual(self.sample("b2bua_trunk_registration_failures_total", 7), 1)
        self.clock.advance(2.5)
        self.wire.answer(self.wire.last(), 200)
        self.assertEqual(self.sample("b2bua_trunk_registration_state", 7), 1)
        self.clock.advance(3540)  # the refresh
        self.wire.answer(self.wire.last(), 404)
        self.assertEqual(self.sample("b2bua_trunk_registration_state", 7), 0)
        self.assertEqual(self.sample("b2bua_trunk_registration_failures_total", 7), 2)

    def test_status_is_json(self) -> None:
        """status() lists every registration with plain JSON values."""
        self.manager.update([make_config(), make_config(connection_id=3, name="vendor-b")])
        self.wire.answer(self.wire.requests()[1], 200, [("Expires", "600")])  # connection 3
        status = self.manager.status()
        self.assertEqual([s["connection"] for s in status], [3, 7])
        json.dumps(status)
        three = status[0]
        self.assertEqual(three["state"], "registered")
        self.assertEqual(three["granted_expires"], 600)
        self.assertEqual(three["expires_in"], 600)
        self.assertEqual(three["target"], f"udp:{VENDOR[0]}:{VENDOR[1]}")
        self.assertTrue(three["expires_at"].endswith("Z"))
        self.assertEqual(status[1]["state"], "registering")

    def test_update_reconciles(self) -> None:
        """A connection gone un-registers (and leaves the metrics); a changed
        one removes the old binding before asking for the new one."""
        self.manager.update([make_config()])
        self.wire.answer(self.wire.last(), 200)
        first_call_id = self.wire.last().call_id
        changed = make_config(aor=f"sip:other@{REALM}")
        d = self.manager.update([changed])
        removal = self.wire.last()
        self.assertEqual((removal.expires, removal.call_id), (0, first_call_id))
        self.assertEqual(self.manager.get(7).config, changed)
        self.assertEqual(self.manager.get(7).state, "unregistered")
        self.wire.answer(removal, 200)
        self.successResultOf(d)
        fresh = self.wire.last()
        self.assertEqual(str(fresh.to.uri), f"sip:other@{REALM}")
        self.assertNotEqual(fresh.call_id, first_call_id)
        self.wire.answer(fresh, 200)
        d = self.manager.update([])
        self.wire.answer(self.wire.last(), 200)
        self.successResultOf(d)
        self.assertEqual(len(self.manager), 0)
        self.assertIsNone(self.sample("b2bua_trunk_registration_state", 7))

    def test_unchanged_is_left_alone(self) -> None:
        """The same config again sends nothing."""
        self.manager.update([make_config()])
        self.manager.update([make_config()])
        self.assertEqual(len(self.wire.requests()), 1)

    def test_problem_shows_failed(self) -> None:
        """A connection that cannot register is listed as failed, with the
        reason, and never retried."""
        self.manager.update([make_config(target=None, problem="connection address: bad")])
        status = self.manager.status()[0]
        self.assertEqual((status["state"], status["last_reason"]),
                         ("failed", "connection address: bad"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.manager.stop())


class SettingsTests(SynchronousTestCase):
    """Reading the table and the connection rows."""

    ROW = {"id": 7, "name": "vendor-a", "address": "198.51.100.7:5070", "transport": "tcp",
           "auth_username": USER, "auth_realm": REALM,
           "auth_ha1": compute_ha1(USER, REALM, PASSWORD), "enabled": True}

    def test_defaults_from_the_row(self) -> None:
        """A listed connection registers as its auth user at its address
        with its stored HA1."""
        table = read_settings({"connections": {"7": {}}, "instance_id": INSTANCE})
        [config] = configs_from_rows([self.ROW, {**self.ROW, "id": 8}], table)
        self.assertEqual(config.connection_id, 7)
        self.assertEqual(config.target, Target("TCP", "198.51.100.7", 5070))
        self.assertEqual(config.aor, f"sip:{USER}@198.51.100.7")
        self.assertEqual(config.registrar, "sip:198.51.100.7:5070")
        self.assertEqual(config.ha1, {"MD5": self.ROW["auth_ha1"]})
        self.assertIsNone(config.password)
        self.assertEqual(config.instance_id, INSTANCE)
        self.assertIsNone(config.problem)

    def test_row_registrar_and_expiry(self) -> None:
        """The row's registrar (host:port) is where REGISTERs go and what the
        Request-URI names; its register_expires is asked for."""
        table = read_settings({"expires": 900})
        row = {**self.ROW, "register": True, "registrar": "198.51.100.20:5080",
               "register_expires": 300}
        [config] = configs_from_rows([row], table)
        self.assertEqual(config.target, Target("TCP", "198.51.100.20", 5080))
        self.assertEqual(config.registrar, "sip:198.51.100.20:5080")
        self.assertEqual(config.aor, f"sip:{USER}@198.51.100.20")
        self.assertEqual(config.settings.expires, 300)
        [config] = configs_from_rows([{**row, "register_expires": 10**6}], table)
        self.assertIn("register_expires", config.problem or "")
        [config] = configs_from_rows([{**row, "registrar": "reg.vendor.example"}], table)
        self.assertIn("not an IP address", config.problem or "")

    def test_overrides(self) -> None:
        """aor, Request-URI, password and timing come from the table."""
        table = read_settings({"expires": 600, "connections": {"7": {
            "aor": "sip:+15551230000@vendor.example", "request_uri": "sip:reg.vendor.example",
            "password": "pw", "margin": 10}}})
        [config] = configs_from_rows([self.ROW], table)
        self.assertEqual(config.aor, "sip:+15551230000@vendor.example")
        self.assertEqual(config.contact_user, "+15551230000")
        self.assertEqual(config.registrar, "sip:reg.vendor.example")
        self.assertEqual((config.password, config.ha1), ("pw", {}))
        self.assertEqual((config.settings.expires, config.settings.margin), (600, 10))

    def test_register_flag_and_opt_out(self) -> None:
        """A row with register=true registers unless its table says no."""
        table = read_settings({})
        self.assertEqual(len(configs_from_rows([{**self.ROW, "register": True}], table)), 1)
        table = read_settings({"connections": {"7": {"register": False}}})
        self.assertEqual(configs_from_rows([{**self.ROW, "register": True}], table), [])

    def test_unusable_row(self) -> None:
        """A row with a host name becomes a registration with a problem."""
        table = read_settings({"connections": {"7": {}}})
        [config] = configs_from_rows([{**self.ROW, "address": "sbc.vendor.example"}], table)
        self.assertIn("not an IP address", config.problem or "")

    def test_bad_settings(self) -> None:
        """Each bad key is named."""
        cases = {
            "plugins.trunk_registration.bogus": {"bogus": 1},
            "plugins.trunk_registration.expires": {"expires": "1h"},
            "plugins.trunk_registration.connections.x": {"connections": {"x": {}}},
            "plugins.trunk_registration.connections.7.aor": {"connections": {"7": {"aor": 5}}},
            "plugins.trunk_registration.connections.7.typo": {"connections": {"7": {"typo": 1}}},
            "plugins.trunk_registration.contact_address": {"contact_address": "a b"},
            "plugins.trunk_registration.instance_id": {"instance_id": "abc"},
        }
        for key, table in cases.items():
            error = self.assertRaises(SettingsError, read_settings, table)
            self.assertIn(key, str(error))
        error = self.assertRaises(SettingsError, read_settings, {"retry_base": 0})
        self.assertIn("retry_base must be positive", str(error))


class FakeDirectory:
    """The directory's connections, as the plugin reads them."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    #: like the service's live snapshot (followed, not read once)
    version = 1

    def connections(self) -> list[dict[str, Any]]:
        """The enabled connections."""
        return self.rows


class PluginTests(SynchronousTestCase):
    """L{TrunkRegistration} through its hooks."""

    def test_configure_sync_unconfigure(self) -> None:
        """Configured with a sender, it registers the listed connection on
        the next turn, exposes the manager, and un-registers on the way out."""
        clock = Clock()
        wire = VendorWire(clock)
        directory = FakeDirectory([dict(SettingsTests.ROW, address=f"{VENDOR[0]}:{VENDOR[1]}",
                                        transport="udp")])
        services = Services(clock, directory, None, None, Metrics(),  # type: ignore[arg-type]
                            extra={SEND_REQUEST: wire.layer.send_request,
                                   LOCAL_ADDRESS: wire.local_address})
        plugin = TrunkRegistration()
        plugin.b2bua_configure(services, {NAME: {"connections": {"7": {}}}})
        self.assertIs(services.extra["trunk_registrations"], plugin.manager)
        self.assertEqual(wire.sent, [])
        clock.advance(0)
        wire.answer(wire.last(), 200)
        self.assertEqual(plugin.manager.status()[0]["state"], "registered")
        self.assertEqual(services.metrics.registry.get_sample_value(
            "b2bua_trunk_registration_state", {"connection": "7"}), 1)
        directory.rows = []
        clock.advance(30)
        self.assertEqual(wire.last().expires, 0)
        wire.answer(wire.last(), 200)
        self.assertEqual(len(plugin.manager), 0)
        self.successResultOf(plugin.b2bua_unconfigure())
        clock.advance(64)
        assert_no_delayed_calls(clock)

    def test_without_sender(self) -> None:
        """Without the stack's sender it does nothing (and says so)."""
        clock = Clock()
        services = Services(clock, FakeDirectory([]), None, None, Metrics())  # type: ignore[arg-type]
        plugin = TrunkRegistration()
        plugin.b2bua_configure(services, {NAME: {"connections": {"7": {}}}})
        self.assertIsNone(plugin.manager)
        self.assertIsNone(plugin.b2bua_unconfigure())
        assert_no_delayed_calls(clock)

    def test_bad_table_stops_start_up(self) -> None:
        """A bad table raises the error naming the key."""
        services = Services(Clock(), FakeDirectory([]), None, None, Metrics())  # type: ignore[arg-type]
        self.assertRaises(SettingsError, TrunkRegistration().b2bua_configure, services,
                          {NAME: {"expires": -1}})


class DiagramTests(SynchronousTestCase):
    """The state diagram under docs/ follows the transition table."""

    def test_diagram_current(self) -> None:
        """docs/state-machines/outbound-registration.dot is what the table
        draws (regenerate it with OutboundRegistration.dot())."""
        path = Path(__file__).resolve().parents[4] / "docs" / "state-machines" \
            / "outbound-registration.dot"
        self.assertEqual(path.read_text(), OutboundRegistration.dot())
