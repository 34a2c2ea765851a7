"""TLS contexts for SIP over TLS (RFC 3261 section 26, RFC 8996), pyOpenSSL.

L{TLSConfig} names the PEM files and the verification policy; L{build_tls}
reads and checks them once, at start-up, and returns the two context
factories the transport layer hands to C{listenSSL} (our listeners) and
C{connectSSL} (connections we open).  Any problem with a file raises a
L{TLSConfigError} whose one-line message names the file.

Decisions:

  - TLS 1.2 is the lowest version offered or accepted (RFC 8996 retired 1.0
    and 1.1); C{minimum_version = "1.3"} raises it;
  - compression and renegotiation are off;
  - the certificate file holds our certificate first, then any
    intermediate certificates of its chain;
  - outbound connections check the server's certificate against the CA
    file (or the system's trust store without one) only when
    C{verify_peer} is set.  Host names are not compared: the transport
    connects to addresses, and checking a SIP domain against the
    certificate (RFC 5922) belongs to the layer that knows the domain;
  - listeners ask for no client certificate unless
    C{require_client_certificate} is set (phones seldom have one); then a
    client without a certificate valid for the CA file is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

__all__ = [
    "TLSConfig",
    "TLSConfigError",
    "TLSContextFactory",
    "TLSContexts",
    "build_tls",
]

_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


class TLSConfigError(ValueError):
    """A TLS setting or file is unusable; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Where our TLS identity lives and how peers are checked.

    @ivar certificate: PEM file with our certificate, then its chain.
    @ivar private_key: PEM file with the (unencrypted) private key.
    @ivar ca_certificates: PEM file of the CAs trusted to sign peers'
        certificates, or C{None} for the system's trust store.
    @ivar verify_peer: check the certificate of servers we connect to.
    @ivar require_client_certificate: make clients of our listeners
        present a certificate signed by a trusted CA.
    @ivar minimum_version: C{"1.2"} or C{"1.3"}.
    """

    certificate: str
    private_key: str
    ca_certificates: str | None = None
    verify_peer: bool = False
    require_client_certificate: bool = False
    minimum_version: str = "1.2"

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], where: str = "sip.tls") -> TLSConfig:
        """Build from a configuration table (a TOML section, say).

        @param where: the section's name, used in error messages.
        @raise TLSConfigError: on an unknown, missing or mistyped key.
        """
        known = {f.name for f in fields(cls)}
        for key in section:
            if key not in known:
                raise TLSConfigError(f"{where}.{key}: unknown TLS setting")
        values: dict[str, object] = {}
        for key in ("certificate", "private_key"):
            if key not in section:
                raise TLSConfigError(f"{where}.{key}: missing (a PEM file name)")
        for key in ("certificate", "private_key", "ca_certificates", "minimum_version"):
            if key in section:
                value = section[key]
                if not isinstance(value, str) or not value:
                    raise TLSConfigError(f"{where}.{key}: must be a non-empty string")
                values[key] = value
        for key in ("verify_peer", "require_client_certificate"):
            if key in section:
                value = section[key]
                if not isinstance(value, bool):
                    raise TLSConfigError(f"{where}.{key}: must be true or false")
                values[key] = value
        version = values.get("minimum_version", "1.2")
        if version not in _VERSIONS:
            raise TLSConfigError(f"{where}.minimum_version: must be \"1.2\" or \"1.3\"")
        return cls(**values)  # type: ignore[arg-type]


@implementer(IOpenSSLContextFactory)
class TLSContextFactory:
    """A ready context, offered the way C{listenSSL}/C{connectSSL} take it."""

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        """The shared L{SSL.Context}."""
        return self._context


@dataclass(frozen=True, slots=True)
class TLSContexts:
    """The context factories for our listeners and for connections we open."""

    server: TLSContextFactory
    client: TLSContextFactory


def build_tls(config: TLSConfig) -> TLSContexts:
    """Read and check the files of C{config}; build both contexts.

    @raise TLSConfigError: naming the file (or setting) that is wrong.
    """
    if config.minimum_version not in _VERSIONS:
        raise TLSConfigError(
            f"TLS minimum_version {config.minimum_version!r}: must be \"1.2\" or \"1.3\""
        )
    chain = _load_certificates(config.certificate, "certificate")
    key = _load_private_key(config.private_key)
    if config.ca_certificates is not None:
        _load_certificates(config.ca_certificates, "CA")
    server = _context(config, chain, key, server=True)
    client = _context(config, chain, key, server=False)
    return TLSContexts(TLSContextFactory(server), TLSContextFactory(client))


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSConfigError(f"TLS {what} file {path}: {exc.strerror or exc}") from None


def _load_certificates(path: str, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"TLS {what} file {path}: no PEM certificate in it") from None
    if not certs:
        raise TLSConfigError(f"TLS {what} file {path}: no PEM certificate in it")
    return certs


def _load_private_key(path: str) -> object:
    data = _read(path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(
            f"TLS private key file {path}: encrypted keys are not supported"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSConfigError(f"TLS private key file {path}: not a PEM private key") from None


def _context(config: TLSConfig, chain: list[x509.Certificate], key: object,
             server: bool) -> SSL.Context:
    """One context; C{server} picks the verification policy of a listener."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(_VERSIONS[config.minimum_version])
    options = SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION
    if server:
        options |= SSL.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_options(options)
    try:
        ctx.use_certificate(chain[0])
        for extra in chain[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(key)  # type: ignore[arg-type]
        ctx.check_privatekey()
    except SSL.Error:
        raise TLSConfigError(
            f"TLS private key file {config.private_key} does not match "
            f"certificate file {config.certificate}"
        ) from None
    verify = config.require_client_certificate if server else config.verify_peer
    if verify:
        if config.ca_certificates is not None:
            try:
                ctx.load_verify_locations(config.ca_certificates)
            except SSL.Error:
                raise TLSConfigError(
                    f"TLS CA file {config.ca_certificates}: unusable CA certificates"
                ) from None
        else:
            ctx.set_default_verify_paths()
        mode = SSL.VERIFY_PEER
        if server:
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.set_verify(mode)
    else:
        ctx.set_verify(SSL.VERIFY_NONE)
    if server:
        ctx.set_session_id(b"b2bua-sip")
    return ctx
