"""Multipart message bodies (RFC 5621, MIME multipart of RFC 2046).

A SIP body of type C{multipart/mixed} (or C{multipart/alternative},
C{multipart/related}) carries several parts, each with its own headers, for
example an SDP offer beside an ISUP blob or a PIDF-LO location.
L{parse_multipart} splits such a body; L{build_multipart} writes one.
Parts keep their bytes exactly (binary parts included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from b2bua.sip.errors import ParseError

__all__ = ["BodyPart", "boundary_of", "build_multipart", "find_part", "parse_multipart"]


@dataclass
class BodyPart:
    """One part: its headers (name, value) in order and its bytes."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        """The part's media type (lower-cased, without parameters)."""
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value.split(";", 1)[0].strip().lower()
        return None


def boundary_of(content_type: str) -> str:
    """The C{boundary} parameter of a multipart Content-Type.

    @raise ParseError: when it is not multipart or has no boundary.
    """
    media, _, params = content_type.partition(";")
    if not media.strip().lower().startswith("multipart/"):
        raise ParseError("not a multipart body")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value and len(value) <= 70:
                return value
    raise ParseError("multipart body without a boundary")


def parse_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """Split a multipart body into its parts.

    @raise ParseError: on a missing boundary, a missing closing delimiter or
        a part whose headers cannot be read.
    """
    delimiter = b"--" + boundary_of(content_type).encode("ascii", "replace")
    start = body.find(delimiter)
    if start < 0:
        raise ParseError("multipart boundary not found in the body")
    parts: list[BodyPart] = []
    position = start + len(delimiter)
    while True:
        if body[position:position + 2] == b"--":
            return parts
        line_end = body.find(b"\n", position)
        if line_end < 0:
            raise ParseError("truncated multipart body")
        next_delimiter = body.find(b"\r\n" + delimiter, line_end)
        skip = 2
        if next_delimiter < 0:
            next_delimiter = body.find(b"\n" + delimiter, line_end)
            skip = 1
        if next_delimiter < 0:
            raise ParseError("multipart body without a closing boundary")
        parts.append(_parse_part(body[line_end + 1:next_delimiter]))
        position = next_delimiter + skip + len(delimiter)
        if len(parts) > 64:
            raise ParseError("too many multipart parts")


def _parse_part(data: bytes) -> BodyPart:
    """A part: header lines, an empty line, the content."""
    split = data.find(b"\r\n\r\n")
    gap = 4
    if split < 0:
        split, gap = data.find(b"\n\n"), 2
    if data.startswith((b"\r\n", b"\n")):
        return BodyPart([], data[2 if data.startswith(b"\r\n") else 1:])
    if split < 0:
        raise ParseError("multipart part without an empty line after its headers")
    headers = []
    for line in data[:split].decode("utf-8", "surrogateescape").splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ParseError("bad header line in a multipart part")
        headers.append((name.strip(), value.strip()))
    return BodyPart(headers, data[split + gap:])


def build_multipart(parts: list[BodyPart], subtype: str = "mixed",
                    boundary: str | None = None) -> tuple[str, bytes]:
    """Write C{parts} as one body; return (Content-Type value, body)."""
    boundary = boundary or f"b2bua-{os.urandom(8).hex()}"
    delimiter = f"--{boundary}".encode()
    chunks = []
    for part in parts:
        head = "".join(f"{name}: {value}\r\n" for name, value in part.headers)
        chunks.append(delimiter + b"\r\n" + head.encode("utf-8", "surrogateescape") +
                      b"\r\n" + part.body + b"\r\n")
    body = b"".join(chunks) + delimiter + b"--\r\n"
    return f'multipart/{subtype};boundary="{boundary}"', body


def find_part(parts: list[BodyPart], media_type: str) -> BodyPart | None:
    """The first part of C{media_type} (e.g. C{application/sdp})."""
    for part in parts:
        if part.content_type == media_type:
            return part
    return None
