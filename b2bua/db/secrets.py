"""What provisioning stores instead of secrets.

  - Account passwords become digest HA1 values, MD5 and SHA-256
    (RFC 7616), with the realm set to the customer's SIP domain: the
    registrar authenticates without ever knowing the password.
  - Vendor connection passwords become one MD5 HA1 with the connection's
    C{auth_realm} (what we answer a carrier's challenge with).
  - Calling-card PINs become an HMAC-SHA-256 keyed with a configured secret:
    PINs are short, so a plain hash of a stolen table would fall to an
    offline search of every PIN; without the key it cannot.
  - API keys (C{b2k_} and 32 random URL-safe characters, 192 bits) are
    stored as their SHA-256 (a random key of that size needs no slow hash)
    and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _random

from b2bua.sip.auth import compute_ha1

__all__ = ["API_KEY_PREFIX", "PREFIX_LENGTH", "account_ha1", "api_key_hash",
           "api_key_matches", "connection_ha1", "new_api_key", "pin_hash"]

#: Every API key starts with this (so leaked keys are easy to scan for).
API_KEY_PREFIX = "b2k_"
#: How many leading characters of a key are stored, to recognise it.
PREFIX_LENGTH = 12


def account_ha1(username: str, realm: str, password: str) -> tuple[str, str]:
    """Return the MD5 and SHA-256 HA1 of an account's credentials."""
    return (compute_ha1(username, realm, password, "MD5"),
            compute_ha1(username, realm, password, "SHA-256"))


def connection_ha1(username: str, realm: str, password: str) -> str:
    """Return the MD5 HA1 we answer a vendor's digest challenge with."""
    return compute_ha1(username, realm, password, "MD5")


def _key(secret: bytes | str) -> bytes:
    """The HMAC key as bytes.  @raise ValueError: when it is empty."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the PIN hashing secret is empty: configure one")
    return key


def pin_hash(secret: bytes | str, pin: str) -> str:
    """Return the keyed hash of a calling-card PIN (lower-case hex).

    The same PIN and secret always give the same hash, so a PIN is looked
    up by its hash (and two cards cannot share a PIN).
    """
    return hmac.new(_key(secret), pin.encode("utf-8"), hashlib.sha256).hexdigest()


def api_key_hash(plaintext: str) -> str:
    """Return the stored form of an API key (SHA-256, lower-case hex)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def api_key_matches(plaintext: str, key_hash: str) -> bool:
    """Whether C{plaintext} is the key stored as C{key_hash} (constant time)."""
    return hmac.compare_digest(api_key_hash(plaintext), key_hash)


def new_api_key() -> tuple[str, str, str]:
    """Make a new API key.

    @return: C{(plaintext, prefix, key_hash)}: the key to show once, its
        first L{PREFIX_LENGTH} characters and its hash to store.
    """
    plaintext = API_KEY_PREFIX + _random.token_urlsafe(24)
    return plaintext, plaintext[:PREFIX_LENGTH], api_key_hash(plaintext)
