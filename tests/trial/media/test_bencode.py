"""Tests for L{media.bencode}, the ng protocol's dictionary format."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.bencode import MAX_DEPTH, BencodeError, decode, encode

#: Values that bencode can carry, nested (dictionary keys are bytes).
VALUES = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


class EncodeTests(SynchronousTestCase):
    """L{encode} writes the canonical form."""

    def test_scalars(self) -> None:
        """Integers, byte strings and text."""
        self.assertEqual(encode(0), b"i0e")
        self.assertEqual(encode(-42), b"i-42e")
        self.assertEqual(encode(2**70), b"i1180591620717411303424e")
        self.assertEqual(encode(b""), b"0:")
        self.assertEqual(encode(b"spam"), b"4:spam")
        self.assertEqual(encode("h\u00e9"), b"3:h\xc3\xa9")

    def test_containers(self) -> None:
        """Lists and tuples alike; dictionaries with sorted keys."""
        self.assertEqual(encode([1, "a", [b"b"]]), b"li1e1:al1:bee")
        self.assertEqual(encode((1, 2)), b"li1ei2ee")
        self.assertEqual(
            encode({"command": "ping", "call-id": "x", "B": 1}),
            b"d1:Bi1e7:call-id1:x7:command4:pinge",
        )

    def test_example_from_the_ng_documentation(self) -> None:
        """The ping of the protocol's documentation."""
        self.assertEqual(encode({"command": "ping"}), b"d7:command4:pinge")

    def test_surrogates_round_trip(self) -> None:
        """Text decoded with surrogateescape goes back to its bytes."""
        text = b"\xff\xfe".decode("utf-8", "surrogateescape")
        self.assertEqual(encode(text), b"2:\xff\xfe")

    def test_refuses_other_types(self) -> None:
        """Booleans, None, floats, sets and non-string keys are refused."""
        for value in (True, None, 1.5, {1, 2}, {1: 2}, object()):
            with self.subTest(value=value):
                self.assertRaises(BencodeError, encode, value)

    def test_refuses_duplicate_keys(self) -> None:
        """A str key and a bytes key with the same bytes collide."""
        self.assertRaises(BencodeError, encode, {"a": 1, b"a": 2})

    def test_refuses_deep_nesting(self) -> None:
        """Nesting deeper than MAX_DEPTH is refused; MAX_DEPTH itself is fine."""
        value: object = 1
        for _ in range(MAX_DEPTH):
            value = [value]
        self.assertEqual(decode(encode(value)), value)
        self.assertRaises(BencodeError, encode, [value])


class DecodeTests(SynchronousTestCase):
    """L{decode} is strict about syntax."""

    def test_scalars(self) -> None:
        """Integers and strings, as bytes by default."""
        self.assertEqual(decode(b"i0e"), 0)
        self.assertEqual(decode(b"i-7e"), -7)
        self.assertEqual(decode(b"4:spam"), b"spam")
        self.assertEqual(decode(b"0:"), b"")

    def test_text(self) -> None:
        """With an encoding, every string (keys too) is text."""
        self.assertEqual(
            decode(b"d6:result2:ok3:sdpl1:aee", encoding="utf-8"),
            {"result": "ok", "sdp": ["a"]},
        )
        self.assertEqual(
            decode(b"2:\xff\xfe", encoding="utf-8"),
            b"\xff\xfe".decode("utf-8", "surrogateescape"),
        )

    def test_unsorted_keys(self) -> None:
        """rtpengine does not sort keys; they are read all the same."""
        data = b"d6:result2:ok3:abci1ee"
        self.assertEqual(decode(data), {b"result": b"ok", b"abc": 1})
        with self.assertRaisesRegex(BencodeError, "out of order"):
            decode(data, sorted_keys=True)
        self.assertEqual(decode(b"d1:ai1e1:bi2ee", sorted_keys=True), {b"a": 1, b"b": 2})

    def test_malformed(self) -> None:
        """Each kind of bad input is refused with a reason and an offset."""
        cases = {
            b"": "end of input",
            b"i": "unterminated integer",
            b"ie": "malformed integer",
            b"i-e": "malformed integer",
            b"i1.5e": "malformed integer",
            b"i+1e": "malformed integer",
            b"i03e": "non-canonical integer",
            b"i-0e": "non-canonical integer",
            b"4spam": "unterminated string length",
            b"01:a": "non-canonical string length",
            b"-1:a": "unexpected byte",
            b"5:spam": "longer than the input",
            b"l": "end of input",
            b"li1e": "end of input",
            b"d": "end of input",
            b"di1ei2ee": "key is not a string",
            b"d1:ai1e1:ai2ee": "duplicate dictionary key",
            b"d1:ae": "unexpected byte",
            b"i1ei2e": "trailing data",
            b"x": "unexpected byte",
        }
        for data, reason in cases.items():
            with (
                self.subTest(data=data),
                self.assertRaisesRegex(BencodeError, f"{reason}.* at offset \\d+$"),
            ):
                decode(data)

    def test_error_names_offset(self) -> None:
        """The offset of the problem is in the message."""
        with self.assertRaisesRegex(BencodeError, "trailing data at offset 3"):
            decode(b"i1ex")

    def test_depth_limit(self) -> None:
        """Input nested deeper than MAX_DEPTH is refused before recursing further."""
        self.assertEqual(decode(b"l" * MAX_DEPTH + b"e" * MAX_DEPTH), _nested(MAX_DEPTH))
        with self.assertRaisesRegex(BencodeError, "nesting deeper"):
            decode(b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1))
        with self.assertRaisesRegex(BencodeError, "nesting deeper"):
            decode(b"l" * 100000)

    def test_not_bytes(self) -> None:
        """Text input is a programming error."""
        self.assertRaises(TypeError, decode, "i1e")

    def test_memoryview(self) -> None:
        """Any bytes-like input is read."""
        self.assertEqual(decode(memoryview(b"li1ee")), [1])

    @given(VALUES)
    def test_round_trip(self, value: object) -> None:
        """Whatever L{encode} writes, L{decode} reads back, in canonical order."""
        data = encode(value)
        self.assertEqual(decode(data, sorted_keys=True), value)
        self.assertEqual(encode(decode(data)), data)

    @given(st.binary(max_size=40))
    def test_garbage(self, data: bytes) -> None:
        """Arbitrary bytes decode or raise BencodeError, nothing else; what
        decodes is canonical except for key order."""
        try:
            value = decode(data)
        except BencodeError:
            return
        self.assertEqual(decode(encode(value)), value)


def _nested(depth: int) -> list[object]:
    """C{depth} empty lists, one inside the other."""
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value
