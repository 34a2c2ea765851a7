"""Tests for L{b2bua.sip.auth}: header codec, digest server and client."""

from __future__ import annotations

import hashlib
import itertools
import string

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.auth import (
    AuthOutcome,
    AuthResult,
    DigestClient,
    DigestServer,
    FailureReason,
    UnsupportedChallenge,
    compute_ha1,
    digest_response,
    format_auth_header,
    parse_auth_header,
)
from b2bua.sip.errors import ParseError

REALM = "sip.example.net"
SECRET = b"0123456789abcdef0123456789abcdef"
URI = "sip:sip.example.net"
USERS = {"alice": "wonderland", "bob": "builder"}


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    """Return the HA1 of a known user, as provisioning would store it."""
    password = USERS.get(username)
    if password is None:
        return None
    return compute_ha1(username, realm, password, algorithm)


def counting_random() -> object:
    """Return a deterministic C{random_bytes} replacement."""
    counter = itertools.count()

    def random_bytes(n: int) -> bytes:
        value = next(counter)
        return value.to_bytes(8, "big").rjust(n, b"\x5a")[:n]

    return random_bytes


def md5(text: str) -> str:
    """Hash C{text} with MD5, for hand-computed expectations."""
    return hashlib.md5(text.encode()).hexdigest()


class ParseAuthHeaderTests(SynchronousTestCase):
    """L{parse_auth_header} reads challenges and credentials."""

    def test_tokens_and_quoted_strings(self) -> None:
        """Names are lower-cased, quoted values unquoted, tokens kept."""
        scheme, params = parse_auth_header(
            'Digest Realm="atlanta.com", NONCE=abc/def==, algorithm=MD5, qop="auth,auth-int"'
        )
        self.assertEqual(scheme, "Digest")
        self.assertEqual(
            params,
            {
                "realm": "atlanta.com",
                "nonce": "abc/def==",
                "algorithm": "MD5",
                "qop": "auth,auth-int",
            },
        )

    def test_escapes_and_commas_inside_quotes(self) -> None:
        """Quoted-pairs are resolved and commas inside quotes do not split."""
        _, params = parse_auth_header(r'Digest username="a\"b\\c, d", realm=""')
        self.assertEqual(params, {"username": 'a"b\\c, d', "realm": ""})

    def test_whitespace(self) -> None:
        """Blanks around '=', ',' and at both ends are allowed."""
        _, params = parse_auth_header(' \tDigest  a = "1" ,\tb=2 , ')
        self.assertEqual(params, {"a": "1", "b": "2"})

    def test_empty_elements(self) -> None:
        """Stray commas are tolerated, as RFC 7235's list rule asks."""
        _, params = parse_auth_header("Digest , a=1,, b=2,")
        self.assertEqual(params, {"a": "1", "b": "2"})

    def test_scheme_alone(self) -> None:
        """A scheme without parameters parses to an empty dict."""
        self.assertEqual(parse_auth_header("Digest"), ("Digest", {}))

    def test_utf8_in_quotes(self) -> None:
        """Non-ASCII text is allowed inside quoted strings."""
        _, params = parse_auth_header('Digest username="jörg"')
        self.assertEqual(params["username"], "jörg")

    def test_malformed(self) -> None:
        """Each malformed form raises L{ParseError} and nothing else."""
        for bad in [
            "",
            "   ",
            '"Digest"',
            "Digest,a=1",
            "Digest a",
            "Digest a=",
            "Digest =1",
            "Digest a=1 b=2",
            'Digest a="unterminated',
            'Digest a="ends with escape\\',
            'Digest a="x\r\ny"',
            "Digest a=1\r\n",
            'Digest a="nul\x00"',
            "Digest a=1, A=2",
            'Digest a="1"x',
            "Basic dXNlcjpwYXNz",
        ]:
            with self.subTest(value=bad):
                self.assertRaises(ParseError, parse_auth_header, bad)

    def test_reason_does_not_echo_input(self) -> None:
        """The error reason, fit for a reason phrase, never quotes the input."""
        error = self.assertRaises(ParseError, parse_auth_header, "Digest secret=1, secret=2")
        self.assertNotIn("secret", error.reason)

    @settings(max_examples=300, deadline=None)
    @given(
        st.text(alphabet=st.sampled_from('Digest ,="\\\t\r\nabc=/\x00é'), max_size=40) | st.text()
    )
    def test_fuzz_only_parse_error(self, value: str) -> None:
        """Arbitrary text either parses or raises L{ParseError}, never anything else."""
        try:
            scheme, params = parse_auth_header(value)
        except ParseError:
            return
        self.assertTrue(scheme)
        self.assertTrue(all(name == name.lower() for name in params))


_NAMES = st.text(alphabet=string.ascii_lowercase + string.digits + "-_.!", min_size=1, max_size=8)
_VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    max_size=20,
)


class FormatAuthHeaderTests(SynchronousTestCase):
    """L{format_auth_header} writes what L{parse_auth_header} reads."""

    def test_default_quoting(self) -> None:
        """By default all but algorithm, stale and nc are quoted."""
        value = format_auth_header(
            "Digest",
            {"realm": "r", "algorithm": "MD5", "qop": "auth", "stale": "true", "nc": "00000001"},
        )
        self.assertEqual(
            value, 'Digest realm="r", algorithm=MD5, qop="auth", stale=true, nc=00000001'
        )

    def test_explicit_quoting_and_escapes(self) -> None:
        """Only the named parameters are quoted; quotes and backslashes are escaped."""
        value = format_auth_header(
            "Digest", {"username": 'a"\\b', "qop": "auth"}, quoted={"username"}
        )
        self.assertEqual(value, 'Digest username="a\\"\\\\b", qop=auth')

    def test_rejects_injection(self) -> None:
        """CR, LF and bad names or unquoted values raise L{ValueError}."""
        self.assertRaises(ValueError, format_auth_header, "Digest", {"username": "a\r\nVia: x"})
        self.assertRaises(ValueError, format_auth_header, "Digest", {"a b": "1"})
        self.assertRaises(ValueError, format_auth_header, "Di gest", {})
        self.assertRaises(ValueError, format_auth_header, "Digest", {"nc": "1 2"})
        self.assertRaises(ValueError, format_auth_header, "Digest", {"nc": ""})

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(_NAMES, _VALUES, max_size=6))
    def test_round_trip(self, params: dict[str, str]) -> None:
        """Any parameters survive formatting then parsing."""
        value = format_auth_header("Digest", params, quoted=set(params))
        self.assertEqual(parse_auth_header(value), ("Digest", params))


class VectorTests(SynchronousTestCase):
    """Published test vectors for the digest computation."""

    def rfc7616(self, algorithm: str) -> str:
        """Compute the RFC 7616 section 3.9.1 response for C{algorithm}."""
        return digest_response(
            algorithm=algorithm,
            ha1=compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm),
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )

    def test_rfc7616_md5(self) -> None:
        """RFC 7616 section 3.9.1, MD5."""
        self.assertEqual(self.rfc7616("MD5"), "8ca523f5e9506fed4657c9700eebdbec")

    def test_rfc7616_sha256(self) -> None:
        """RFC 7616 section 3.9.1, SHA-256."""
        self.assertEqual(
            self.rfc7616("SHA-256"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        )

    def test_rfc2617(self) -> None:
        """RFC 2617 section 3.5 (with the method GET of its erratum)."""
        response = digest_response(
            algorithm="MD5",
            ha1=compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        self.assertEqual(response, "6629fae49393a05397450978507c4ef1")

    def test_rfc2617_through_the_client(self) -> None:
        """The client, fed the RFC 2617 challenge and cnonce, writes the RFC's credentials."""
        client = DigestClient(
            "Mufasa", "Circle Of Life", random_bytes=lambda n: bytes.fromhex("0a4f113b")
        )
        value = client.authorize(
            "GET",
            "/dir/index.html",
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
            'opaque="5ccc069c403ebaf9f0171e9517f40e41"',
        )
        self.assertEqual(
            value,
            'Digest username="Mufasa", realm="testrealm@host.com", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
            'response="6629fae49393a05397450978507c4ef1", '
            'opaque="5ccc069c403ebaf9f0171e9517f40e41", qop=auth, nc=00000001, '
            'cnonce="0a4f113b"',
        )

    def test_rfc2069_form(self) -> None:
        """Without qop the response is H(HA1:nonce:HA2)."""
        ha1 = compute_ha1("Mufasa", "r", "pw")
        expected = md5(f"{ha1}:n:{md5('REGISTER:sip:r')}")
        self.assertEqual(
            digest_response(algorithm="MD5", ha1=ha1, method="REGISTER", uri="sip:r", nonce="n"),
            expected,
        )

    def test_sess_and_auth_int(self) -> None:
        """MD5-sess derives a session HA1; auth-int hashes the body."""
        ha1 = compute_ha1("u", "r", "p")
        session = md5(f"{ha1}:n:c")
        ha2 = md5(f"INVITE:sip:x:{md5('v=0')}")
        self.assertEqual(
            digest_response(
                algorithm="MD5-sess",
                ha1=ha1,
                method="INVITE",
                uri="sip:x",
                nonce="n",
                qop="auth-int",
                nc="00000001",
                cnonce="c",
                body=b"v=0",
            ),
            md5(f"{session}:n:00000001:c:auth-int:{ha2}"),
        )

    def test_bad_arguments(self) -> None:
        """Unknown algorithms or qop, or -sess without cnonce, raise L{ValueError}."""
        self.assertRaises(ValueError, compute_ha1, "u", "r", "p", "SHA-1")
        common = {"ha1": "0" * 32, "method": "A", "uri": "u", "nonce": "n"}
        self.assertRaises(ValueError, digest_response, algorithm="SHA-1", **common)
        self.assertRaises(ValueError, digest_response, algorithm="MD5-sess", **common)
        self.assertRaises(ValueError, digest_response, algorithm="MD5", qop="x", **common)
        self.assertRaises(ValueError, digest_response, algorithm="MD5", qop="auth", **common)


class ServerTestsMixin:
    """Shared set-up: a clock, a server and a client for alice."""

    def setUp(self) -> None:
        """Build the server on a fresh clock; fail if a delayed call is left."""
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.server = DigestServer(REALM, SECRET, self.clock)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def credentials(
        self,
        username: str = "alice",
        password: str = "wonderland",
        algorithm: str = "SHA-256",
        method: str = "REGISTER",
        uri: str = URI,
        challenges: list[str] | None = None,
        client: DigestClient | None = None,
    ) -> str:
        """Answer a challenge of the server (or C{challenges}) for C{algorithm}."""
        for value in challenges or self.server.challenge():
            if f"algorithm={algorithm}," in value:
                client = client or DigestClient(username, password)
                return client.authorize(method, uri, value)
        raise AssertionError(f"no {algorithm} challenge")

    def verify(
        self, value: str, method: str = "REGISTER", uri: str = URI, body: bytes = b""
    ) -> AuthResult:
        """Verify C{value} against the test users."""
        return self.server.verify(method, uri, value, lookup, body)


def edit(value: str, name: str, new: str) -> str:
    """Replace parameter C{name} of a header value, keeping the others."""
    scheme, params = parse_auth_header(value)
    params[name] = new
    return format_auth_header(scheme, params, quoted=set(params) - {"qop", "nc", "algorithm"})


def remove(value: str, name: str) -> str:
    """Drop parameter C{name} from a header value."""
    scheme, params = parse_auth_header(value)
    del params[name]
    return format_auth_header(scheme, params, quoted=set(params) - {"qop", "nc", "algorithm"})


class ChallengeTests(ServerTestsMixin, SynchronousTestCase):
    """L{DigestServer.challenge} builds one challenge per algorithm."""

    def test_one_per_algorithm(self) -> None:
        """SHA-256 comes first, then MD5, each with its own nonce and opaque."""
        values = self.server.challenge()
        parsed = [parse_auth_header(value) for value in values]
        self.assertEqual([scheme for scheme, _ in parsed], ["Digest", "Digest"])
        self.assertEqual([p["algorithm"] for _, p in parsed], ["SHA-256", "MD5"])
        for _, params in parsed:
            self.assertEqual(params["realm"], REALM)
            self.assertEqual(params["qop"], "auth")
            self.assertNotIn("stale", params)
            self.assertTrue(params["opaque"])
        self.assertNotEqual(parsed[0][1]["nonce"], parsed[1][1]["nonce"])
        self.assertIn('qop="auth"', values[0])

    def test_stale(self) -> None:
        """C{stale=True} adds C{stale=true}."""
        for value in self.server.challenge(stale=True):
            self.assertEqual(parse_auth_header(value)[1]["stale"], "true")

    def test_configured_algorithms(self) -> None:
        """The algorithms are offered in the configured order, canonically spelled."""
        server = DigestServer(REALM, SECRET, self.clock, algorithms=("md5-sess", "sha-256-SESS"))
        self.assertEqual(
            [parse_auth_header(v)[1]["algorithm"] for v in server.challenge()],
            ["MD5-sess", "SHA-256-sess"],
        )

    def test_bad_configuration(self) -> None:
        """Bad realm, secret, lifetime or algorithm raise L{ValueError}."""
        self.assertRaises(ValueError, DigestServer, REALM, b"", self.clock)
        self.assertRaises(ValueError, DigestServer, "", SECRET, self.clock)
        self.assertRaises(ValueError, DigestServer, REALM, SECRET, self.clock, 0)
        self.assertRaises(ValueError, DigestServer, REALM, SECRET, self.clock, algorithms=())
        self.assertRaises(
            ValueError, DigestServer, REALM, SECRET, self.clock, algorithms=("SHA-1",)
        )


class VerifyTests(ServerTestsMixin, SynchronousTestCase):
    """L{DigestServer.verify} accepts good credentials and refuses the rest."""

    def test_round_trip_each_algorithm(self) -> None:
        """Client and server agree for every supported algorithm."""
        algorithms = ("SHA-256", "MD5", "SHA-256-sess", "MD5-sess")
        self.server = DigestServer(REALM, SECRET, self.clock, algorithms=algorithms)
        for algorithm in algorithms:
            with self.subTest(algorithm=algorithm):
                result = self.verify(self.credentials(algorithm=algorithm))
                self.assertEqual(
                    result,
                    AuthResult(AuthOutcome.OK, "alice", None, "alice", algorithm),
                )
                self.assertTrue(result.ok)

    def test_auth_int(self) -> None:
        """Credentials with qop=auth-int are checked against the body."""
        challenges = [v.replace('qop="auth"', 'qop="auth-int"') for v in self.server.challenge()]
        client = DigestClient("alice", "wonderland")
        value = client.authorize("INVITE", URI, challenges[0], body=b"v=0\r\n")
        self.assertTrue(self.verify(value, "INVITE", body=b"v=0\r\n").ok)
        value = client.authorize("INVITE", URI, challenges[0], body=b"v=0\r\n")
        result = self.verify(value, "INVITE", body=b"v=1\r\n")
        self.assertEqual(result.reason, FailureReason.BAD_RESPONSE)

    def test_stale_after_lifetime(self) -> None:
        """A nonce is good for its whole lifetime, then stale."""
        value = self.credentials()
        self.clock.advance(300)
        self.assertTrue(self.verify(value).ok)
        value = self.credentials()
        self.clock.advance(300.001)
        result = self.verify(value)
        self.assertEqual(result.outcome, AuthOutcome.STALE)
        self.assertTrue(result.stale)
        self.assertIsNone(result.username)

    def test_stale_needs_a_good_password(self) -> None:
        """An old nonce with a wrong password is a failure, never stale."""
        value = self.credentials(password="guess")
        self.clock.advance(1000)
        self.assertEqual(self.verify(value).reason, FailureReason.BAD_RESPONSE)

    def test_replay(self) -> None:
        """The same nc twice, or a lower one, is a replay; a higher one is fine."""
        challenge = self.server.challenge()[0]
        client = DigestClient("alice", "wonderland")
        first = client.authorize("REGISTER", URI, challenge)
        second = client.authorize("REGISTER", URI, challenge)
        third = client.authorize("REGISTER", URI, challenge)
        self.assertTrue(self.verify(first).ok)
        self.assertTrue(self.verify(third).ok)
        self.assertEqual(self.verify(third).reason, FailureReason.REPLAY)
        self.assertEqual(self.verify(second).reason, FailureReason.REPLAY)

    def test_replay_counted_per_user(self) -> None:
        """Another user's use of a nonce does not consume this user's counts."""
        challenge = self.server.challenge()[0]
        bob = DigestClient("bob", "builder").authorize("REGISTER", URI, challenge)
        alice = DigestClient("alice", "wonderland").authorize("REGISTER", URI, challenge)
        self.assertTrue(self.verify(bob).ok)
        self.assertTrue(self.verify(alice).ok)

    def test_failure_does_not_record_nc(self) -> None:
        """A wrong response with a high nc cannot lock out the real user."""
        challenge = self.server.challenge()[0]
        good = DigestClient("alice", "wonderland").authorize("REGISTER", URI, challenge)
        forged = edit(edit(good, "nc", "ffffffff"), "response", "0" * 64)
        self.assertEqual(self.verify(forged).reason, FailureReason.BAD_RESPONSE)
        self.assertTrue(self.verify(good).ok)

    def test_tampered_nonce(self) -> None:
        """Any change to the nonce (time, random part, MAC) is refused."""
        value = self.credentials()
        nonce = parse_auth_header(value)[1]["nonce"]
        for i in (0, 10, 20, 47):
            with self.subTest(position=i):
                flipped = "A" if nonce[i] != "A" else "B"
                tampered = edit(value, "nonce", nonce[:i] + flipped + nonce[i + 1 :])
                self.assertEqual(self.verify(tampered).reason, FailureReason.BAD_NONCE)
        for bad in ("", "short", nonce + "A", nonce[:-1] + "+", "é" * 48):
            with self.subTest(nonce=bad):
                self.assertEqual(
                    self.verify(edit(value, "nonce", bad)).reason, FailureReason.BAD_NONCE
                )

    def test_nonce_of_another_secret_or_realm(self) -> None:
        """Nonces made with another secret, or for another realm, are refused."""
        other = DigestServer(REALM, b"another secret", self.clock)
        value = self.credentials(challenges=other.challenge())
        self.assertEqual(self.verify(value).reason, FailureReason.BAD_NONCE)
        foreign = DigestServer("elsewhere", SECRET, self.clock).challenge()[0]
        forged = foreign.replace('realm="elsewhere"', f'realm="{REALM}"')
        value = self.credentials(challenges=[forged])
        self.assertEqual(self.verify(value).reason, FailureReason.BAD_NONCE)

    def test_cluster_and_rotation(self) -> None:
        """A node with the same secret accepts; so does one that has rotated it."""
        value = self.credentials()
        self.assertTrue(
            DigestServer(REALM, SECRET, self.clock).verify("REGISTER", URI, value, lookup).ok
        )
        rotated = DigestServer(REALM, b"new secret", self.clock, previous_secrets=[SECRET])
        self.assertTrue(rotated.verify("REGISTER", URI, self.credentials(), lookup).ok)

    def test_future_nonce(self) -> None:
        """A nonce from further in the future than the allowed skew is refused."""
        ahead = Clock()
        ahead.advance(self.clock.seconds() + 11)
        value = self.credentials(challenges=DigestServer(REALM, SECRET, ahead).challenge())
        self.assertEqual(self.verify(value).reason, FailureReason.BAD_NONCE)
        ahead.advance(-2)
        value = self.credentials(challenges=DigestServer(REALM, SECRET, ahead).challenge())
        self.assertTrue(self.verify(value).ok)

    def test_opaque(self) -> None:
        """A wrong opaque is refused; a missing one is tolerated."""
        value = self.credentials()
        self.assertEqual(self.verify(edit(value, "opaque", "x")).reason, FailureReason.BAD_NONCE)
        self.assertEqual(self.verify(edit(value, "opaque", "é")).reason, FailureReason.BAD_NONCE)
        self.assertTrue(self.verify(remove(value, "opaque")).ok)

    def test_unknown_user_looks_like_wrong_password(self) -> None:
        """Both fail the same way, with only the internal reason differing."""
        looked_up: list[tuple[str, str, str]] = []

        def spy(username: str, realm: str, algorithm: str) -> str | None:
            looked_up.append((username, realm, algorithm))
            return lookup(username, realm, algorithm)

        wrong_password = self.server.verify("REGISTER", URI, self.credentials(password="x"), spy)
        unknown_user = self.server.verify(
            "REGISTER", URI, self.credentials(username="mallory", password="x"), spy
        )
        self.assertEqual(wrong_password.outcome, unknown_user.outcome)
        self.assertEqual(wrong_password.outcome, AuthOutcome.FAILED)
        self.assertEqual(wrong_password.reason, FailureReason.BAD_RESPONSE)
        self.assertEqual(unknown_user.reason, FailureReason.UNKNOWN_USER)
        self.assertIsNone(unknown_user.username)
        self.assertEqual(looked_up, [("alice", REALM, "SHA-256"), ("mallory", REALM, "SHA-256")])

    def test_unknown_user_with_the_dummy_password(self) -> None:
        """No password makes an unknown user pass, not even against the dummy HA1."""
        value = self.credentials(username="mallory", password="")
        self.assertEqual(self.verify(value).reason, FailureReason.UNKNOWN_USER)

    def test_uri(self) -> None:
        """The uri parameter must be the Request-URI, after trivial normalisation."""
        value = self.credentials(uri="sip:sip.example.net")
        self.assertEqual(
            self.verify(value, uri="sip:other.example.net").reason, FailureReason.URI_MISMATCH
        )
        self.assertTrue(self.verify(value, uri=" SIP:sip.example.net").ok)
        value = self.credentials(uri="<sip:sip.example.net>")
        self.assertTrue(self.verify(value, uri="sip:sip.example.net").ok)

    def test_method(self) -> None:
        """Credentials computed for another method do not match."""
        value = self.credentials(method="INVITE")
        self.assertEqual(self.verify(value, method="REGISTER").reason, FailureReason.BAD_RESPONSE)

    def test_realm(self) -> None:
        """Credentials for another realm are refused."""
        value = edit(self.credentials(), "realm", "elsewhere")
        self.assertEqual(self.verify(value).reason, FailureReason.REALM)

    def test_algorithm(self) -> None:
        """An algorithm the server does not offer is refused, even a known one."""
        server = DigestServer(REALM, SECRET, self.clock, algorithms=("SHA-256",))
        md5_only = DigestServer(REALM, SECRET, self.clock, algorithms=("MD5",))
        value = self.credentials(algorithm="MD5", challenges=md5_only.challenge())
        self.assertEqual(
            server.verify("REGISTER", URI, value, lookup).reason, FailureReason.ALGORITHM
        )
        value = edit(self.credentials(), "algorithm", "SHA-1")
        self.assertEqual(self.verify(value).reason, FailureReason.ALGORITHM)
        self.assertEqual(
            server.verify("REGISTER", URI, remove(value, "algorithm"), lookup).reason,
            FailureReason.ALGORITHM,
        )

    def test_missing_algorithm_means_md5(self) -> None:
        """Without an algorithm parameter the credentials are MD5."""
        result = self.verify(remove(self.credentials(algorithm="MD5"), "algorithm"))
        self.assertTrue(result.ok)
        self.assertEqual(result.algorithm, "MD5")

    def test_qop(self) -> None:
        """RFC 2069 credentials (no qop) and unknown qop values are refused."""
        value = self.credentials()
        for broken in (
            remove(remove(remove(value, "qop"), "nc"), "cnonce"),
            edit(value, "qop", "x"),
        ):
            with self.subTest(value=broken):
                self.assertEqual(self.verify(broken).reason, FailureReason.QOP)

    def test_malformed(self) -> None:
        """Unparsable, non-Digest or incomplete credentials are malformed."""
        value = self.credentials()
        broken = [
            "Digest username=",
            "Basic realm=x",
            remove(value, "response"),
            remove(value, "username"),
            remove(value, "cnonce"),
            edit(value, "nc", "1"),
            edit(value, "nc", "0000000g"),
            edit(value, "nc", "00000000"),
        ]
        for bad in broken:
            with self.subTest(value=bad):
                self.assertEqual(self.verify(bad).reason, FailureReason.MALFORMED)

    def test_response_case(self) -> None:
        """An upper-case hex response is accepted; a non-ASCII one fails cleanly."""
        value = self.credentials()
        response = parse_auth_header(value)[1]["response"]
        self.assertTrue(self.verify(edit(value, "response", response.upper())).ok)
        value = self.credentials()
        self.assertEqual(
            self.verify(edit(value, "response", "é")).reason, FailureReason.BAD_RESPONSE
        )

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_never_raises(self, value: str) -> None:
        """Whatever the header value, L{DigestServer.verify} returns a result."""
        result = self.server.verify("REGISTER", URI, value, lookup)
        self.assertEqual(result.outcome, AuthOutcome.FAILED)


class NonceTableTests(ServerTestsMixin, SynchronousTestCase):
    """The nonce-count table stays bounded without opening a replay window."""

    def test_pruned_on_the_clock(self) -> None:
        """Entries go when their nonce is no longer fresh."""
        self.assertTrue(self.verify(self.credentials()).ok)
        self.assertTrue(self.verify(self.credentials(username="bob", password="builder")).ok)
        self.assertEqual(self.server.tracked_nonces, 2)
        self.clock.advance(300)
        self.server.verify("REGISTER", URI, "junk", lookup)
        self.assertEqual(self.server.tracked_nonces, 2)
        self.clock.advance(1)
        self.server.verify("REGISTER", URI, "junk", lookup)
        self.assertEqual(self.server.tracked_nonces, 0)

    def test_cap_evicts_safely(self) -> None:
        """Past the cap the oldest entry goes, and its nonce then gets a stale answer."""
        self.server = DigestServer(REALM, SECRET, self.clock, max_tracked_nonces=2)
        client = DigestClient("alice", "wonderland")
        challenges = []
        for _ in range(3):
            challenges.append(self.server.challenge()[0])
            self.clock.advance(1)
        first = [client.authorize("REGISTER", URI, c) for c in challenges]
        second = [client.authorize("REGISTER", URI, c) for c in challenges]
        self.assertTrue(self.verify(first[0]).ok)
        self.assertTrue(self.verify(first[1]).ok)
        self.assertTrue(self.verify(first[2]).ok)
        self.assertEqual(self.server.tracked_nonces, 2)
        self.assertEqual(self.verify(first[0]).outcome, AuthOutcome.STALE)
        self.assertEqual(self.verify(second[0]).outcome, AuthOutcome.STALE)
        self.assertEqual(self.verify(first[2]).reason, FailureReason.REPLAY)
        self.assertTrue(self.verify(second[2]).ok)

    def test_new_nonces_after_eviction(self) -> None:
        """A nonce issued after the evicted ones is still accepted when the table is full."""
        self.server = DigestServer(REALM, SECRET, self.clock, max_tracked_nonces=1)
        self.assertTrue(self.verify(self.credentials()).ok)
        self.clock.advance(0.01)
        self.assertTrue(self.verify(self.credentials()).ok)
        self.clock.advance(0.01)
        self.assertTrue(self.verify(self.credentials()).ok)
        self.assertEqual(self.server.tracked_nonces, 1)


class ClientTests(ServerTestsMixin, SynchronousTestCase):
    """L{DigestClient} answers the challenges it supports and refuses the rest."""

    def test_strongest(self) -> None:
        """SHA-256 is chosen over MD5 whatever the order; unusable ones are skipped."""
        sha, md = self.server.challenge()
        client = DigestClient("alice", "wonderland", random_bytes=counting_random())
        for values in (
            [md, sha],
            [sha, md],
            ["Basic realm=x", 'Digest realm="x"', "junk", md, sha],
        ):
            with self.subTest(values=values):
                value = client.authorize_strongest("REGISTER", URI, values)
                self.assertEqual(parse_auth_header(value)[1]["algorithm"], "SHA-256")
                self.assertTrue(self.verify(value).ok)

    def test_first_of_equals(self) -> None:
        """Between equally strong challenges, the first one wins."""
        server = DigestServer(REALM, SECRET, self.clock, algorithms=("MD5-sess", "MD5"))
        value = DigestClient("alice", "wonderland").authorize_strongest(
            "REGISTER", URI, server.challenge()
        )
        self.assertEqual(parse_auth_header(value)[1]["algorithm"], "MD5-sess")

    def test_none_supported(self) -> None:
        """With nothing usable, L{UnsupportedChallenge} is raised."""
        client = DigestClient("alice", "wonderland")
        error = self.assertRaises(
            UnsupportedChallenge,
            client.authorize_strongest,
            "REGISTER",
            URI,
            ['Digest realm="r", nonce="n", algorithm=SHA-512-256', "Basic realm=r"],
        )
        self.assertEqual(error.reason, "no supported challenge")
        self.assertRaises(UnsupportedChallenge, client.authorize_strongest, "REGISTER", URI, [])

    def test_unsupported(self) -> None:
        """Each unanswerable challenge raises L{UnsupportedChallenge}."""
        client = DigestClient("alice", "wonderland", realm="r")
        for value in [
            'Digest realm="r", nonce="n", algorithm=SHA-1',
            'Digest realm="r", nonce="n", qop="auth-int"',
            'Digest realm="r", nonce="n", qop="auth-conf"',
            'Digest realm="r", nonce="n", algorithm=MD5-sess',
            'Digest realm="other", nonce="n"',
            'Digest realm="r"',
            'Basic realm="r"',
            'Digest realm="r", nonce="n',
        ]:
            with self.subTest(value=value):
                self.assertRaises(UnsupportedChallenge, client.authorize, "REGISTER", URI, value)

    def test_auth_int_only(self) -> None:
        """A challenge offering only auth-int is answered when the body is given."""
        client = DigestClient("alice", "wonderland")
        value = client.authorize("MESSAGE", URI, 'Digest realm="r", nonce="n", qop="auth-int"', b"")
        self.assertEqual(parse_auth_header(value)[1]["qop"], "auth-int")
        self.assertIn(", qop=auth-int,", value)

    def test_nonce_count(self) -> None:
        """The nc increases for the same nonce and restarts for a new one."""
        client = DigestClient("alice", "wonderland")
        first, second = self.server.challenge()
        counts = [
            parse_auth_header(client.authorize("REGISTER", URI, c))[1]["nc"]
            for c in (first, first, second, first)
        ]
        self.assertEqual(counts, ["00000001", "00000002", "00000001", "00000003"])

    def test_cnonce_from_random_source(self) -> None:
        """The cnonce is the hex of 16 bytes from the injected source."""
        sizes: list[int] = []

        def random_bytes(n: int) -> bytes:
            sizes.append(n)
            return b"\x01" * n

        value = DigestClient("alice", "wonderland", random_bytes=random_bytes).authorize(
            "REGISTER", URI, self.server.challenge()[0]
        )
        self.assertEqual(parse_auth_header(value)[1]["cnonce"], "01" * 16)
        self.assertEqual(sizes, [16])

    def test_legacy_server(self) -> None:
        """A challenge without qop gets RFC 2069 credentials, algorithm echoed only if sent."""
        client = DigestClient("alice", "wonderland")
        value = client.authorize("REGISTER", "sip:r", 'Digest realm="r", nonce="n"')
        ha2 = md5("REGISTER:sip:r")
        response = md5(f"{compute_ha1('alice', 'r', 'wonderland')}:n:{ha2}")
        self.assertEqual(
            value,
            f'Digest username="alice", realm="r", nonce="n", uri="sip:r", response="{response}"',
        )

    def test_ha1(self) -> None:
        """A client holding only HA1 values answers the algorithms it has them for."""
        client = DigestClient(
            "alice", ha1={"md5": compute_ha1("alice", REALM, "wonderland")}, realm=REALM
        )
        sha, md = self.server.challenge()
        value = client.authorize_strongest("REGISTER", URI, [sha, md])
        self.assertEqual(parse_auth_header(value)[1]["algorithm"], "MD5")
        self.assertTrue(self.verify(value).ok)
        self.assertRaises(UnsupportedChallenge, client.authorize, "REGISTER", URI, sha)

    def test_odd_username(self) -> None:
        """Quotes, backslashes and UTF-8 in the username survive the round trip."""
        name = 'j"ö\\rg'
        USERS[name] = "pw"
        self.addCleanup(USERS.pop, name)
        value = self.credentials(username=name, password="pw")
        self.assertEqual(self.verify(value).username, name)

    def test_bad_construction(self) -> None:
        """Password and HA1 are exclusive; HA1 needs a realm; no CR/LF in username."""
        self.assertRaises(ValueError, DigestClient, "a")
        self.assertRaises(ValueError, DigestClient, "a", "pw", ha1={"MD5": "0" * 32}, realm="r")
        self.assertRaises(ValueError, DigestClient, "a", ha1={"MD5": "0" * 32})
        self.assertRaises(ValueError, DigestClient, "a", ha1={"SHA-1": "0" * 40}, realm="r")
        self.assertRaises(ValueError, DigestClient, "a\r\nVia: x", "pw")
