"""Bencoding, the dictionary format of rtpengine's ng control protocol.

Bencode has four kinds of value: integers (C{i42e}), byte strings
(C{4:spam}), lists (C{l...e}) and dictionaries (C{d...e}, keys are byte
strings).  L{encode} writes the canonical form: dictionary keys sorted by
their bytes, no duplicate keys, integers without leading zeros.

L{decode} is strict about syntax and lenient about one thing only:

    - an integer must be C{0} or an optional C{-} followed by digits that do
      not start with C{0} (no C{i-0e}, no C{i03e}, no C{ie});
    - a string length is digits without a leading zero (C{0:} is the empty
      string) and must fit in what is left of the input;
    - a dictionary key must be a byte string and may not appear twice;
    - the whole input must be one value, with nothing after it;
    - nesting deeper than L{MAX_DEPTH} is refused, so a hostile peer cannot
      exhaust the stack.

Dictionary keys need I{not} be sorted unless C{sorted_keys=True} is
passed: rtpengine documents that it does not sort the keys of the
dictionaries it writes, and a client must read its replies all the same.

Strings decode to C{bytes}; with C{encoding="utf-8"} every string (keys
included) decodes to C{str} instead, undecodable bytes kept as surrogates
(C{surrogateescape}) so that nothing is lost.  L{encode} takes C{str} and
writes it as UTF-8 (with the same error handler, so such a C{str} goes back
to the original bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_DEPTH", "BencodeError", "decode", "encode"]

#: How deep lists and dictionaries may nest in L{decode}'s input.
MAX_DEPTH = 64

_DIGITS = frozenset(b"0123456789")


class BencodeError(ValueError):
    """Input that is not bencode, or a value that bencode cannot carry.

    The message names the problem and, for L{decode}, the byte offset; it
    never repeats the input.
    """


def encode(value: Any) -> bytes:
    """Bencode C{value}.

    @param value: an C{int} (not a C{bool}), C{bytes}/C{bytearray}, C{str}
        (written as UTF-8), a C{list} or C{tuple} of values, or a mapping
        whose keys are C{str} or C{bytes}; nested freely.
    @return: the canonical encoding (dictionary keys sorted by their bytes).
    @raise BencodeError: for any other type (C{None}, C{float}, C{bool} ...),
        a key that is not a string, or two keys with the same bytes.
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _as_bytes(text: str | bytes | bytearray) -> bytes:
    """The bytes of a string value (C{str} as UTF-8)."""
    if isinstance(text, str):
        return text.encode("utf-8", "surrogateescape")
    return bytes(text)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    """Append the encoding of C{value} to C{out}."""
    if isinstance(value, bool):
        raise BencodeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes | bytearray):
        data = _as_bytes(value)
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, list | tuple | Mapping) and depth >= MAX_DEPTH:
        raise BencodeError(f"nesting deeper than {MAX_DEPTH}")
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Mapping):
        items: dict[bytes, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str | bytes | bytearray):
                raise BencodeError(f"dictionary key must be a string, not {type(key).__name__}")
            raw = _as_bytes(key)
            if raw in items:
                raise BencodeError("duplicate dictionary key")
            items[raw] = item
        out.append(b"d")
        for raw in sorted(items):
            out.append(b"%d:" % len(raw))
            out.append(raw)
            _encode(items[raw], out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode a {type(value).__name__}")


def decode(
    data: bytes | bytearray | memoryview,
    *,
    encoding: str | None = None,
    sorted_keys: bool = False,
) -> Any:
    """Decode one bencoded value that spans the whole of C{data}.

    @param data: the input.
    @param encoding: C{None} to give strings as C{bytes}; an encoding name
        (such as C{"utf-8"}) to give every string, keys included, as C{str}
        (with C{surrogateescape} for bytes that do not decode).
    @param sorted_keys: also require dictionary keys in strictly increasing
        byte order (the canonical form that L{encode} writes).
    @return: C{int}, C{bytes} or C{str}, C{list}, or C{dict}.
    @raise BencodeError: when C{data} is not exactly one well-formed value.
    @raise TypeError: when C{data} is not bytes-like.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"bencode input must be bytes, not {type(data).__name__}")
    decoder = _Decoder(bytes(data), encoding, sorted_keys)
    value = decoder.value(0)
    if decoder.pos != len(decoder.data):
        raise BencodeError(f"trailing data at offset {decoder.pos}")
    return value


class _Decoder:
    """One run of L{decode}: the input, the read position and the options."""

    __slots__ = ("data", "encoding", "pos", "sorted_keys")

    def __init__(self, data: bytes, encoding: str | None, sorted_keys: bool) -> None:
        self.data = data
        self.pos = 0
        self.encoding = encoding
        self.sorted_keys = sorted_keys

    def fail(self, what: str) -> BencodeError:
        """An error naming the problem and the current offset."""
        return BencodeError(f"{what} at offset {self.pos}")

    def peek(self) -> int:
        """The byte at the read position (it must exist)."""
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of input")
        return self.data[self.pos]

    def value(self, depth: int) -> Any:
        """Read one value of any kind."""
        lead = self.peek()
        if lead == 0x69:  # i
            return self.integer()
        if lead in _DIGITS:
            return self.text(self.string())
        if lead in (0x6C, 0x64):  # l, d
            if depth >= MAX_DEPTH:
                raise self.fail(f"nesting deeper than {MAX_DEPTH}")
            self.pos += 1
            return self.items(depth + 1) if lead == 0x6C else self.dictionary(depth + 1)
        raise self.fail("unexpected byte")

    def integer(self) -> int:
        """Read C{i<digits>e}."""
        end = self.data.find(b"e", self.pos)
        if end < 0:
            raise self.fail("unterminated integer")
        body = self.data[self.pos + 1 : end]
        digits = body[1:] if body.startswith(b"-") else body
        if not digits or not all(byte in _DIGITS for byte in digits):
            raise self.fail("malformed integer")
        if digits.startswith(b"0") and (len(digits) > 1 or body.startswith(b"-")):
            raise self.fail("non-canonical integer")
        self.pos = end + 1
        return int(body)

    def string(self) -> bytes:
        """Read C{<length>:<bytes>}."""
        colon = self.data.find(b":", self.pos)
        if colon < 0:
            raise self.fail("unterminated string length")
        length = self.data[self.pos : colon]
        if not length or not all(byte in _DIGITS for byte in length):
            raise self.fail("malformed string length")
        if length.startswith(b"0") and len(length) > 1:
            raise self.fail("non-canonical string length")
        start = colon + 1
        size = int(length)
        if size > len(self.data) - start:
            raise self.fail("string longer than the input")
        self.pos = start + size
        return self.data[start : self.pos]

    def text(self, raw: bytes) -> bytes | str:
        """A decoded string in the form the caller asked for."""
        if self.encoding is None:
            return raw
        return raw.decode(self.encoding, "surrogateescape")

    def items(self, depth: int) -> list[Any]:
        """Read the values of a list up to its C{e}."""
        result = []
        while self.peek() != 0x65:  # e
            result.append(self.value(depth))
        self.pos += 1
        return result

    def dictionary(self, depth: int) -> dict[Any, Any]:
        """Read the pairs of a dictionary up to its C{e}."""
        result: dict[Any, Any] = {}
        seen: set[bytes] = set()
        previous: bytes | None = None
        while self.peek() != 0x65:  # e
            if self.peek() not in _DIGITS:
                raise self.fail("dictionary key is not a string")
            raw = self.string()
            if raw in seen:
                raise self.fail("duplicate dictionary key")
            if self.sorted_keys and previous is not None and raw <= previous:
                raise self.fail("dictionary keys out of order")
            seen.add(raw)
            previous = raw
            result[self.text(raw)] = self.value(depth)
        self.pos += 1
        return result
