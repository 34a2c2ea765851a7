"""Tests for L{b2bua.sip.tls} and SIP over TLS on loopback.

Certificates are generated at test time into a temporary directory: a CA
and a certificate for C{localhost} / 127.0.0.1 signed by it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.sip.interfaces import Target
from b2bua.sip.tls import TLSConfig, TLSConfigError, build_tls
from b2bua.sip.transport import TransportLayer
from tests.trial.sip.test_transport import Echo, make_request

_ONE_DAY = datetime.timedelta(days=1)


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey,
             encryption: serialization.KeySerializationEncryption | None = None) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption or serialization.NoEncryption())


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                 issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + _ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls_config(directory: str, **kwargs: Any) -> TLSConfig:
    """Create a CA and a certificate it signed under C{directory}; return a
    L{TLSConfig} using them (C{kwargs} override its other fields)."""
    os.makedirs(directory, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test CA", ca_key, "Test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("localhost", key, "Test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    return TLSConfig(
        certificate=_write(os.path.join(directory, "cert.pem"), cert.public_bytes(pem)),
        private_key=_write(os.path.join(directory, "key.pem"), _pem_key(key)),
        ca_certificates=_write(os.path.join(directory, "ca.pem"), ca.public_bytes(pem)),
        **kwargs,
    )


def handshake(server: SSL.Context, client: SSL.Context) -> tuple[str | None, Exception | None,
                                                                Exception | None]:
    """Run a TLS handshake in memory.

    @return: (negotiated version or None, server error, client error).
    """
    s = SSL.Connection(server, None)
    s.set_accept_state()
    c = SSL.Connection(client, None)
    c.set_connect_state()
    errors: dict[str, Exception | None] = {"s": None, "c": None}
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, conn in (("c", c), ("s", s)):
            if done[name] or errors[name]:
                continue
            try:
                conn.do_handshake()
                done[name] = True
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                errors[name] = exc
        for a, b in ((c, s), (s, c)):
            try:
                b.bio_write(a.bio_read(65536))
            except SSL.WantReadError:
                pass
        if (done["s"] and done["c"]) or errors["s"] or errors["c"]:
            break
    version = s.get_protocol_version_name() if done["s"] and done["c"] else None
    return version, errors["s"], errors["c"]


def plain_client(max_version: int | None = None, min_version: int | None = None) -> SSL.Context:
    """A client context that checks nothing, limited to the given versions."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    if min_version is not None:
        ctx.set_min_proto_version(min_version)
    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    return ctx


class ConfigTests(SynchronousTestCase):
    """L{TLSConfig.from_mapping}."""

    def test_valid(self) -> None:
        """A complete table gives a TLSConfig."""
        config = TLSConfig.from_mapping({"certificate": "c.pem", "private_key": "k.pem",
                                         "verify_peer": True, "minimum_version": "1.3"})
        self.assertEqual(config, TLSConfig("c.pem", "k.pem", None, True, False, "1.3"))

    def test_errors_name_the_key(self) -> None:
        """Unknown, missing and mistyped keys are named in one line."""
        cases = [
            ({"certificate": "c", "private_key": "k", "cert": "x"}, "sip.tls.cert:"),
            ({"private_key": "k"}, "sip.tls.certificate:"),
            ({"certificate": "c", "private_key": 3}, "sip.tls.private_key:"),
            ({"certificate": "c", "private_key": "k", "verify_peer": "yes"},
             "sip.tls.verify_peer:"),
            ({"certificate": "c", "private_key": "k", "minimum_version": "1.1"},
             "sip.tls.minimum_version:"),
        ]
        for table, start in cases:
            error = self.assertRaises(TLSConfigError, TLSConfig.from_mapping, table)
            self.assertTrue(str(error).startswith(start), str(error))
            self.assertNotIn("\n", str(error))


class FileErrorTests(SynchronousTestCase):
    """Unusable files raise one clear line naming the file."""

    def setUp(self) -> None:
        """A good configuration to spoil."""
        self.directory = self.mktemp()
        self.config = make_tls_config(self.directory)

    def assertFileError(self, config: TLSConfig, path: str, phrase: str) -> None:
        """build_tls raises TLSConfigError naming C{path} and saying C{phrase}."""
        error = self.assertRaises(TLSConfigError, build_tls, config)
        self.assertIn(path, str(error))
        self.assertIn(phrase, str(error))
        self.assertNotIn("\n", str(error))

    def replace(self, **changes: Any) -> TLSConfig:
        """The configuration with some fields replaced."""
        values = {f: getattr(self.config, f) for f in (
            "certificate", "private_key", "ca_certificates", "verify_peer",
            "require_client_certificate", "minimum_version")}
        values.update(changes)
        return TLSConfig(**values)

    def test_good(self) -> None:
        """The generated files build both contexts."""
        contexts = build_tls(self.replace(verify_peer=True, require_client_certificate=True))
        self.assertIsInstance(contexts.server.getContext(), SSL.Context)
        self.assertIsInstance(contexts.client.getContext(), SSL.Context)

    def test_missing_certificate(self) -> None:
        """A missing certificate file."""
        path = os.path.join(self.directory, "nope.pem")
        self.assertFileError(self.replace(certificate=path), path, "No such file")

    def test_certificate_not_pem(self) -> None:
        """A certificate file without a certificate in it."""
        path = _write(os.path.join(self.directory, "junk.pem"), b"hello")
        self.assertFileError(self.replace(certificate=path), path, "no PEM certificate")

    def test_key_not_pem(self) -> None:
        """A key file that holds a certificate."""
        path = self.config.certificate
        self.assertFileError(self.replace(private_key=path), path, "not a PEM private key")

    def test_encrypted_key(self) -> None:
        """Encrypted keys are refused by name."""
        key = ec.generate_private_key(ec.SECP256R1())
        data = _pem_key(key, serialization.BestAvailableEncryption(b"secret"))
        path = _write(os.path.join(self.directory, "enc.pem"), data)
        self.assertFileError(self.replace(private_key=path), path, "encrypted")

    def test_key_mismatch(self) -> None:
        """A key that is not the certificate's."""
        other = _write(os.path.join(self.directory, "other.pem"),
                       _pem_key(ec.generate_private_key(ec.SECP256R1())))
        self.assertFileError(self.replace(private_key=other), other, "does not match")

    def test_bad_ca(self) -> None:
        """A CA file without certificates."""
        path = _write(os.path.join(self.directory, "ca-junk.pem"), b"-----BEGIN nothing")
        self.assertFileError(self.replace(ca_certificates=path), path, "no PEM certificate")

    def test_chain_in_certificate_file(self) -> None:
        """The certificate file may carry the chain after our certificate."""
        with open(self.config.certificate, "rb") as f:
            leaf = f.read()
        with open(self.config.ca_certificates or "", "rb") as f:
            ca = f.read()
        path = _write(os.path.join(self.directory, "chain.pem"), leaf + ca)
        build_tls(self.replace(certificate=path))


class HandshakeTests(SynchronousTestCase):
    """Versions and client certificates, with in-memory handshakes."""

    def setUp(self) -> None:
        """A generated identity."""
        self.config = make_tls_config(self.mktemp())

    def test_tls12_accepted(self) -> None:
        """A TLS 1.2 client is served."""
        server = build_tls(self.config).server.getContext()
        version, server_error, client_error = handshake(
            server, plain_client(max_version=SSL.TLS1_2_VERSION))
        self.assertEqual((version, server_error, client_error), ("TLSv1.2", None, None))

    def test_tls11_refused(self) -> None:
        """A client offering at most TLS 1.1 is refused by our listener."""
        server = build_tls(self.config).server.getContext()
        version, server_error, _client_error = handshake(
            server, plain_client(max_version=SSL.TLS1_1_VERSION, min_version=SSL.TLS1_VERSION))
        self.assertIsNone(version)
        self.assertIsInstance(server_error, SSL.Error)
        self.assertIn("unsupported protocol", str(server_error))

    def test_minimum_13(self) -> None:
        """minimum_version 1.3 refuses TLS 1.2 clients."""
        config = TLSConfig(self.config.certificate, self.config.private_key,
                           minimum_version="1.3")
        server = build_tls(config).server.getContext()
        version, server_error, _ = handshake(server, plain_client(max_version=SSL.TLS1_2_VERSION))
        self.assertIsNone(version)
        self.assertIsInstance(server_error, SSL.Error)

    def test_client_certificate_required(self) -> None:
        """With require_client_certificate, a client without one is refused;
        our own client context (which has one) is accepted."""
        config = TLSConfig(self.config.certificate, self.config.private_key,
                           self.config.ca_certificates, verify_peer=True,
                           require_client_certificate=True)
        contexts = build_tls(config)
        version, server_error, _ = handshake(contexts.server.getContext(), plain_client())
        self.assertIsNone(version)
        self.assertIsInstance(server_error, SSL.Error)
        version, server_error, client_error = handshake(contexts.server.getContext(),
                                                        contexts.client.getContext())
        self.assertEqual((server_error, client_error), (None, None))
        self.assertIsNotNone(version)

    def test_verify_peer_refuses_unknown_server(self) -> None:
        """With verify_peer, a server certificate from another CA is refused."""
        client = build_tls(TLSConfig(self.config.certificate, self.config.private_key,
                                     self.config.ca_certificates, verify_peer=True)).client
        stranger = build_tls(make_tls_config(self.mktemp())).server
        version, _server_error, client_error = handshake(stranger.getContext(),
                                                         client.getContext())
        self.assertIsNone(version)
        self.assertIsInstance(client_error, SSL.Error)


class TLSLoopbackTests(TestCase):
    """SIP over a real TLS connection on 127.0.0.1 (real reactor, bounded)."""

    timeout = 15

    def test_request_and_response(self) -> None:
        """A request crosses from A to B's TLS listener, B's 200 comes back
        over the same connection; both sides verify certificates."""
        from twisted.internet import reactor

        config = make_tls_config(self.mktemp(), verify_peer=True,
                                 require_client_certificate=True)
        users = (Echo(), Echo())
        layers = tuple(TransportLayer(reactor, user, tls=config) for user in users)
        for user, layer in zip(users, layers, strict=True):
            user.layer = layer
            layer.listen("tls:127.0.0.1:0")
            self.addCleanup(layer.stop)
        a, b = layers
        host, port = b.local_address("TLS")
        request = make_request("SIP/2.0/TLS x;branch=z9hG4bK-tls;rport")
        d = a.send_request(request, Target("TLS", host, port))
        d.addCallback(lambda _: users[0].responses.get())

        def check(result: Any) -> None:
            response, source = result
            self.assertEqual(response.code, 200)
            self.assertEqual(source.transport, "TLS")
            self.assertEqual(source.remote, (host, port))
            [(received, inbound)] = users[1].requests
            self.assertEqual(inbound.transport, "TLS")
            self.assertTrue(received.headers.get("Via").startswith(
                f"SIP/2.0/TLS 127.0.0.1:{a.local_address('TLS')[1]};"))
            self.assertEqual(b.stats["connections_opened"], 0)

        return d.addCallback(check)

