"""Message fixtures shared by the SIP stack's tests."""

from __future__ import annotations

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK2\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice, A." <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=tcp>;expires=60\r\n"
    b"Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Supported: timer, 100rel\r\n"
    b"X-Custom-Thing:   spaced   value ; with=params\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def request(method: str = "OPTIONS", extra: bytes = b"", body: bytes = b"",
            uri: str = "sip:bob@biloxi.example.com") -> bytes:
    """A minimal valid request with C{extra} header lines appended."""
    return (
        f"{method} {uri} SIP/2.0\r\n".encode()
        + b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtest1\r\n"
        + b"Max-Forwards: 70\r\n"
        + b"To: <sip:bob@biloxi.example.com>\r\n"
        + b"From: <sip:alice@atlanta.example.com>;tag=88sja8x\r\n"
        + b"Call-ID: 987asjd97y7atg\r\n"
        + f"CSeq: 986759 {method}\r\n".encode()
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
