"""Tests for L{b2bua.sip.sdp} (the SDP codec) and L{b2bua.sip.offer_answer}."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import ParseError
from b2bua.sip.offer_answer import (
    PLACEHOLDER_PORT,
    answer_direction,
    answer_skeleton,
    effective_connection,
    effective_direction,
    explicit_direction,
    filter_codecs,
    is_null_address,
    is_on_hold,
    rewrite_connection,
    set_direction,
)
from b2bua.sip.sdp import (
    Bandwidth,
    Codec,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    parse_sdp,
)


def crlf(text: str) -> bytes:
    """Turn a readable multi-line literal into a CRLF SDP body."""
    return ("\r\n".join(text.strip("\n").split("\n")) + "\r\n").encode("utf-8")


AUDIO = crlf("""
v=0
o=alice 2890844526 2890844526 IN IP4 atlanta.example.com
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/AVP 0 8 18 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")

AUDIO_VIDEO = crlf("""
v=0
o=- 20518 0 IN IP6 2001:db8::1
s=Call
i=A call with video
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
p=+1 617 555-6011
c=IN IP6 2001:db8::1
b=AS:512
t=2873397496 2873404696
r=7d 1h 0 25h
t=0 0
z=2882844526 -1h 2898848070 0
k=prompt
a=group:BUNDLE 0 1
a=recvonly
m=audio 5004 RTP/SAVP 96 0
i=voice
c=IN IP6 2001:db8::2
b=TIAS:64000
k=prompt
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtcp-fb:96 nack
a=rtcp-fb:* trr-int 100
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj
m=video 5006/2 UDP/TLS/RTP/SAVPF 97 98
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42e01f;packetization-mode=1
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=sendrecv
""")

T38 = crlf("""
v=0
o=fax 1 2 IN IP4 198.51.100.7
s=T38
c=IN IP4 198.51.100.7
t=0 0
m=image 40000 udptl t38
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxDatagram:400
a=T38FaxUdpEC:t38UDPRedundancy
""")

GB28181 = crlf("""
v=0
o=34020000001320000001 0 0 IN IP4 10.0.0.5
s=Play
c=IN IP4 10.0.0.5
t=0 0
m=video 6000 RTP/AVP 96
a=recvonly
a=rtpmap:96 PS/90000
y=0100000001
f=v/2/4///a///
""")

SAMPLES = [AUDIO, AUDIO_VIDEO, T38, GB28181]


def minimal(*lines: str) -> bytes:
    """A valid v/o/s/t head followed by C{lines}, as CRLF bytes."""
    head = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"]
    return ("\r\n".join(head + list(lines)) + "\r\n").encode("utf-8")


class ParseTests(SynchronousTestCase):
    """L{parse_sdp} builds the model and L{SessionDescription.to_bytes}
    writes it back."""

    def test_sessionFields(self) -> None:
        """Origin, session name and session connection are parsed."""
        sdp = parse_sdp(AUDIO)
        self.assertEqual(
            sdp.origin,
            Origin("alice", "2890844526", 2890844526, "IN", "IP4", "atlanta.example.com"),
        )
        self.assertEqual(sdp.session_name, "-")
        self.assertEqual(sdp.connection, Connection("IN", "IP4", "192.0.2.10"))
        self.assertEqual(sdp.extra_lines, [("t", "0 0")])
        self.assertEqual(sdp.version, 0)

    def test_mediaFields(self) -> None:
        """The m= line and the lines below it land on the media description."""
        media = parse_sdp(AUDIO).media[0]
        self.assertEqual(media.media, "audio")
        self.assertEqual(media.port, 49170)
        self.assertIsNone(media.port_count)
        self.assertEqual(media.proto, "RTP/AVP")
        self.assertEqual(media.formats, ["0", "8", "18", "101"])
        self.assertIsNone(media.connection)
        self.assertEqual(media.attributes[0], ("rtpmap", "0 PCMU/8000"))
        self.assertEqual(media.attributes[-1], ("sendrecv", None))

    def test_mediaLevelLines(self) -> None:
        """Media-level c=, b=, port count and kept lines are parsed."""
        sdp = parse_sdp(AUDIO_VIDEO)
        audio, video = sdp.media
        self.assertEqual(audio.connection, Connection("IN", "IP6", "2001:db8::2"))
        self.assertEqual(audio.bandwidths, [Bandwidth("TIAS", 64000)])
        self.assertEqual(audio.extra_lines, [("i", "voice"), ("k", "prompt")])
        self.assertEqual((video.port, video.port_count), (5006, 2))
        self.assertEqual(video.proto, "UDP/TLS/RTP/SAVPF")
        self.assertEqual(sdp.bandwidths, [Bandwidth("AS", 512)])
        self.assertEqual(sdp.attributes, [("group", "BUNDLE 0 1"), ("recvonly", None)])

    def test_roundTripByteExact(self) -> None:
        """Well-formed CRLF input, unknown lines included, comes back byte
        for byte."""
        for sample in SAMPLES:
            self.assertEqual(parse_sdp(sample).to_bytes(), sample)

    def test_unknownLineTypesKept(self) -> None:
        """Lines of a type the codec does not know are kept in order."""
        video = parse_sdp(GB28181).media[0]
        self.assertEqual(video.extra_lines, [("y", "0100000001"), ("f", "v/2/4///a///")])

    def test_bareLineFeeds(self) -> None:
        """Bare LF line endings are accepted; output uses CRLF."""
        sdp = parse_sdp(AUDIO.replace(b"\r\n", b"\n"))
        self.assertEqual(sdp.to_bytes(), AUDIO)

    def test_missingFinalNewline(self) -> None:
        """The last line need not end in CRLF."""
        self.assertEqual(parse_sdp(AUDIO[:-2]).to_bytes(), AUDIO)

    def test_emptyLinesSkipped(self) -> None:
        """Empty lines (such as trailing CRLFs) are ignored."""
        self.assertEqual(parse_sdp(b"\r\n" + AUDIO + b"\r\n\r\n").to_bytes(), AUDIO)

    def test_strInput(self) -> None:
        """A str body parses like its UTF-8 bytes."""
        self.assertEqual(parse_sdp(AUDIO_VIDEO.decode("utf-8")), parse_sdp(AUDIO_VIDEO))

    def test_nonUTF8TextCarried(self) -> None:
        """Bytes that are not UTF-8 in free text survive the round trip."""
        body = minimal().replace(b"s=-", b"s=Caf\xe9 \xff")
        self.assertEqual(parse_sdp(body).to_bytes(), body)

    def test_utf8Text(self) -> None:
        """UTF-8 text is decoded."""
        sdp = parse_sdp(minimal().replace(b"s=-", "s=Café".encode()))
        self.assertEqual(sdp.session_name, "Café")

    def test_outOfOrderLinesNormalized(self) -> None:
        """Lines out of RFC order are accepted and written in RFC order."""
        body = b"v=0\ns=-\na=tool:x\nt=0 0\nc=IN IP4 192.0.2.1\no=- 1 1 IN IP4 192.0.2.1\n"
        self.assertEqual(
            parse_sdp(body).to_bytes(),
            minimal().replace(b"s=-\r\n", b"s=-\r\nc=IN IP4 192.0.2.1\r\n") + b"a=tool:x\r\n",
        )

    def test_emptyFormats(self) -> None:
        """An m= line without formats is tolerated."""
        media = parse_sdp(minimal("m=video 0 RTP/AVP")).media[0]
        self.assertEqual((media.port, media.formats), (0, []))

    def test_secondConnectionKept(self) -> None:
        """A second c= line in a section is kept after the first."""
        body = minimal(
            "m=video 5000 RTP/AVP 31", "c=IN IP4 233.252.0.1/127", "c=IN IP4 233.252.0.2/127"
        )
        sdp = parse_sdp(body)
        self.assertEqual(sdp.media[0].connection, Connection("IN", "IP4", "233.252.0.1/127"))
        self.assertEqual(sdp.to_bytes(), body)

    def test_flagAndEmptyAttributes(self) -> None:
        """C{a=flag} has value None; C{a=name:} has the empty value."""
        sdp = parse_sdp(minimal("a=recvonly", "a=tool:"))
        self.assertEqual(sdp.attributes, [("recvonly", None), ("tool", "")])
        self.assertEqual(sdp.to_bytes(), minimal("a=recvonly", "a=tool:"))

    def test_attributeValueWithColons(self) -> None:
        """Only the first colon separates the name from the value."""
        sdp = parse_sdp(minimal("a=fingerprint:sha-256 AB:CD:EF"))
        self.assertEqual(sdp.attributes, [("fingerprint", "sha-256 AB:CD:EF")])

    def test_t38(self) -> None:
        """T.38 over UDPTL parses and round-trips."""
        sdp = parse_sdp(T38)
        image = sdp.media[0]
        self.assertEqual((image.media, image.port, image.proto), ("image", 40000, "udptl"))
        self.assertEqual(image.formats, ["t38"])
        self.assertEqual(image.get_attribute("T38MaxBitRate"), "14400")
        self.assertEqual(image.codecs, [])
        self.assertEqual(sdp.to_bytes(), T38)

    def test_newDescription(self) -> None:
        """A description built in code serializes with C{t=0 0}."""
        sdp = SessionDescription(
            Origin("-", "7", 1, "IN", "IP4", "192.0.2.1"),
            connection=Connection("IN", "IP4", "192.0.2.1"),
            media=[MediaDescription("audio", 4000, "RTP/AVP", ["8"])],
        )
        self.assertEqual(
            sdp.to_bytes(),
            b"v=0\r\no=- 7 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
            b"t=0 0\r\nm=audio 4000 RTP/AVP 8\r\n",
        )


class ParseErrorTests(SynchronousTestCase):
    """Bad bodies raise L{ParseError} with a reason naming the problem."""

    def assertReason(self, body: bytes, reason: str) -> None:
        """Assert that parsing C{body} fails with a reason containing
        C{reason}."""
        error = self.assertRaises(ParseError, parse_sdp, body)
        self.assertIn(reason, error.reason)

    def test_empty(self) -> None:
        """An empty (or blank) body is rejected."""
        self.assertReason(b"", "empty SDP")
        self.assertReason(b"\r\n\r\n", "empty SDP")

    def test_versionFirst(self) -> None:
        """The first line must be v=."""
        self.assertReason(minimal()[5:], "missing v= line")

    def test_unsupportedVersion(self) -> None:
        """Only version 0 exists."""
        self.assertReason(minimal().replace(b"v=0", b"v=1"), "unsupported SDP version")

    def test_duplicates(self) -> None:
        """v=, o= and s= appear once."""
        self.assertReason(minimal("v=0"), "duplicate v= line")
        self.assertReason(minimal("o=- 1 1 IN IP4 192.0.2.1"), "duplicate o= line")
        self.assertReason(minimal("s=again"), "duplicate s= line")

    def test_required(self) -> None:
        """o= and s= are required, before any m= line."""
        self.assertReason(b"v=0\r\ns=-\r\nt=0 0\r\n", "missing o= line")
        self.assertReason(b"v=0\r\no=- 1 1 IN IP4 h\r\nt=0 0\r\n", "missing s= line")
        self.assertReason(b"v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n", "missing o= line")
        self.assertReason(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\n", "missing s= line")

    def test_sessionLinesInMedia(self) -> None:
        """o= and s= cannot appear in a media description."""
        self.assertReason(
            minimal("m=audio 1 RTP/AVP 0", "o=- 1 1 IN IP4 h"), "o= line in media description"
        )
        self.assertReason(minimal("m=audio 1 RTP/AVP 0", "s=x"), "s= line in media description")

    def test_malformedOrigin(self) -> None:
        """o= has six fields and a numeric sess-version."""
        self.assertReason(minimal().replace(b"o=- 1 1 IN", b"o=- 1 IN"), "malformed o= line")
        self.assertReason(minimal().replace(b"o=- 1 1", b"o=- 1 x"), "bad sess-version")
        huge = b"9" * 5000
        self.assertReason(minimal().replace(b"o=- 1 1", b"o=- 1 " + huge), "bad sess-version")

    def test_malformedConnection(self) -> None:
        """c= has three fields."""
        self.assertReason(minimal("c=IN IP4"), "malformed c= line")
        self.assertReason(minimal("c=IN IP4 a b"), "malformed c= line")

    def test_malformedBandwidth(self) -> None:
        """b= is C{type:number}."""
        for line in ("b=AS", "b=AS:", "b=:64", "b=AS:6x4", "b=AS:-1"):
            self.assertReason(minimal(line), "malformed b= line")

    def test_malformedMedia(self) -> None:
        """m= has a media type, a valid port and a proto."""
        self.assertReason(minimal("m=audio 5000"), "malformed m= line")
        for port in ("70000", "-1", "x", "\uff11\uff12"):
            self.assertReason(minimal(f"m=audio {port} RTP/AVP 0"), "bad port in m= line")
        for port in ("5000/0", "5000/", "5000/x"):
            self.assertReason(minimal(f"m=audio {port} RTP/AVP 0"), "bad port count")

    def test_malformedLines(self) -> None:
        """Every line is C{<letter>=<value>}."""
        self.assertReason(minimal("hello"), "malformed line")
        self.assertReason(minimal("a"), "malformed line")
        self.assertReason(minimal("a =x"), "malformed line")
        self.assertReason(minimal("1=x"), "invalid line type")
        self.assertReason(minimal("a=:x"), "empty attribute name")

    def test_forbiddenCharacters(self) -> None:
        """NUL and a CR not followed by LF are rejected."""
        self.assertReason(minimal("a=x\x00y"), "NUL in SDP")
        self.assertReason(minimal("a=x\ry"), "bare CR in SDP")

    def test_lineNumberNamed(self) -> None:
        """The reason names the line, without echoing the input."""
        error = self.assertRaises(ParseError, parse_sdp, minimal("c=<script>"))
        self.assertEqual(error.reason, "malformed c= line at SDP line 5")

    def test_unencodableString(self) -> None:
        """A str holding a lone surrogate is rejected."""
        self.assertReason(minimal().decode() + "a=\ud800\r\n", "not valid text")

    def test_notText(self) -> None:
        """Passing neither bytes nor str is a programming error."""
        self.assertRaises(TypeError, parse_sdp, None)


@st.composite
def mutated_sdp(draw: st.DrawFn) -> bytes:
    """Draw one of the samples and mutate it a few times."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    tokens = [
        b"\r", b"\n", b"\r\n", b"\x00", b"=", b":", b"/", b" ", b"\xff", b"\xc3",
        b"\r\nm=audio 0 RTP/AVP\r\n", b"\r\nc=IN IP4 0.0.0.0\r\n", b"99999999999",
        b"\r\no=- 1 1 IN IP4 h\r\n", b"\r\nv=0\r\n", b"a=sendonly", b"\r\nb=AS:1\r\n",
    ]  # fmt: skip
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.integers(0, 4))
        position = draw(st.integers(0, len(data)))
        if operation == 0:
            del data[position : position + draw(st.integers(1, 16))]
        elif operation == 1:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == 2 and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif operation == 3:
            data[position:position] = draw(st.sampled_from(tokens))
        else:
            lines = bytes(data).split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


class FuzzTests(SynchronousTestCase):
    """Whatever the bytes, only L{ParseError} escapes, and what parses
    serializes stably."""

    def check(self, data: bytes) -> None:
        """Parse C{data}; if it parses, exercise the model and helpers."""
        try:
            sdp = parse_sdp(data)
        except ParseError as error:
            self.assertTrue(error.reason)
            return
        out = sdp.to_bytes()
        self.assertEqual(parse_sdp(out).to_bytes(), out)
        for media in sdp.media:
            media.codecs  # noqa: B018 (the property is what is exercised)
            is_on_hold(sdp, media)
        answer = answer_skeleton(sdp, Origin("-", "1", 1, "IN", "IP4", "192.0.2.9"))
        rewrite_connection(answer, "192.0.2.9")
        for media in answer.media:
            filter_codecs(media, ["PCMA", "t38"], keep_telephone_event=True)
        parse_sdp(answer.to_bytes())

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(mutated_sdp())
    def test_mutatedSamples(self, data: bytes) -> None:
        """Mutated valid bodies either parse or raise L{ParseError}."""
        self.check(data)

    @settings(max_examples=100, deadline=None, database=None)
    @given(st.binary(max_size=200))
    def test_randomBytes(self, data: bytes) -> None:
        """Random bytes either parse or raise L{ParseError}."""
        self.check(data)


class ModelTests(SynchronousTestCase):
    """Lookups and conveniences of the model."""

    def test_rtpmap(self) -> None:
        """The rtpmap of a payload type is parsed; channels default to 1."""
        sdp = parse_sdp(AUDIO_VIDEO)
        audio, video = sdp.media
        self.assertEqual(audio.rtpmap(96), RtpMap(96, "opus", 48000, 2))
        self.assertEqual(audio.rtpmap("96"), RtpMap(96, "opus", 48000, 2))
        self.assertEqual(video.rtpmap(97), RtpMap(97, "H264", 90000, 1))
        self.assertIsNone(audio.rtpmap(0))
        self.assertIsNone(audio.rtpmap(9))

    def test_fmtp(self) -> None:
        """The fmtp of a payload type is the text after it."""
        media = parse_sdp(AUDIO).media[0]
        self.assertEqual(media.fmtp(101), "0-16")
        self.assertEqual(media.fmtp("18"), "annexb=no")
        self.assertIsNone(media.fmtp(0))
        self.assertIsNone(media.fmtp(1))

    def test_codecs(self) -> None:
        """Codecs come from rtpmap, in m= order."""
        self.assertEqual(
            parse_sdp(AUDIO_VIDEO).media[0].codecs,
            [Codec(96, "opus", 48000, 2), Codec(0, "PCMU", 8000, 1)],
        )

    def test_staticCodecs(self) -> None:
        """Static payload types without rtpmap come from the RFC 3551 table;
        an unmapped dynamic type is left out."""
        media = parse_sdp(minimal("m=audio 4000 RTP/AVP 0 8 18 9 3 4 13 96")).media[0]
        self.assertEqual(
            [(c.payload_type, c.name, c.clock_rate) for c in media.codecs],
            [
                (0, "PCMU", 8000),
                (8, "PCMA", 8000),
                (18, "G729", 8000),
                (9, "G722", 8000),
                (3, "GSM", 8000),
                (4, "G723", 8000),
                (13, "CN", 8000),
            ],
        )

    def test_malformedRtpmapIgnored(self) -> None:
        """A malformed rtpmap reads as absent, so a static type falls back."""
        media = parse_sdp(
            minimal("m=audio 4000 RTP/AVP 8 97", "a=rtpmap:8 PCMA", "a=rtpmap:97 x/y")
        ).media[0]
        self.assertIsNone(media.rtpmap(8))
        self.assertEqual(media.codecs, [Codec(8, "PCMA", 8000, 1)])

    def test_attributeHelpers(self) -> None:
        """Attributes can be tested, read and removed by name."""
        media = parse_sdp(AUDIO).media[0]
        self.assertTrue(media.has_attribute("sendrecv"))
        self.assertFalse(media.has_attribute("inactive"))
        self.assertEqual(media.get_attribute("ptime"), "20")
        self.assertIsNone(media.get_attribute("sendrecv"))
        self.assertEqual(media.get_attributes("fmtp"), ["18 annexb=no", "101 0-16"])
        self.assertEqual(media.remove_attributes("rtpmap"), 4)
        self.assertEqual(media.get_attributes("rtpmap"), [])

    def test_bumpVersion(self) -> None:
        """bump_version increments the origin's sess-version only."""
        sdp = parse_sdp(AUDIO)
        sdp.bump_version()
        self.assertEqual(sdp.origin.sess_version, 2890844527)
        self.assertEqual(sdp.origin.sess_id, "2890844526")
        self.assertIn(b"o=alice 2890844526 2890844527 IN IP4", sdp.to_bytes())

    def test_copyIndependent(self) -> None:
        """Changing a copy leaves the original alone."""
        sdp = parse_sdp(AUDIO_VIDEO)
        copy = sdp.copy()
        self.assertEqual(copy, sdp)
        copy.media[0].formats.append("8")
        copy.media[1].attributes.clear()
        copy.attributes.clear()
        copy.extra_lines.clear()
        self.assertEqual(sdp.to_bytes(), AUDIO_VIDEO)

    def test_reject(self) -> None:
        """reject() sets the port to 0 and drops the port count."""
        media = parse_sdp(AUDIO_VIDEO).media[1]
        self.assertFalse(media.rejected)
        media.reject()
        self.assertTrue(media.rejected)
        self.assertIsNone(media.port_count)


class RewriteConnectionTests(SynchronousTestCase):
    """L{rewrite_connection} puts a new address and ports into SDP."""

    def test_sessionLevelIPv4(self) -> None:
        """The session-level c= takes the address; the o= line is kept."""
        sdp = parse_sdp(AUDIO)
        rewrite_connection(sdp, "203.0.113.5", [30000])
        self.assertEqual(sdp.connection, Connection("IN", "IP4", "203.0.113.5"))
        self.assertEqual(sdp.media[0].port, 30000)
        self.assertEqual(sdp.origin.address, "atlanta.example.com")
        self.assertEqual(sdp.origin.sess_version, 2890844526)

    def test_IPv6AndMediaLevel(self) -> None:
        """An IPv6 address sets IP6 on session and media c= lines."""
        sdp = parse_sdp(AUDIO)
        sdp.media[0].connection = Connection("IN", "IP4", "192.0.2.11")
        rewrite_connection(sdp, "[2001:db8::5]")
        expected = Connection("IN", "IP6", "2001:db8::5")
        self.assertEqual(sdp.connection, expected)
        self.assertEqual(sdp.media[0].connection, expected)

    def test_IPv6ToIPv4(self) -> None:
        """An IPv4 address replaces IPv6 c= lines with IP4 ones."""
        sdp = parse_sdp(AUDIO_VIDEO)
        rewrite_connection(sdp, "192.0.2.7", rewrite_origin=True)
        expected = Connection("IN", "IP4", "192.0.2.7")
        self.assertEqual(sdp.connection, expected)
        self.assertEqual(sdp.media[0].connection, expected)
        self.assertIsNone(sdp.media[1].connection)
        self.assertEqual(sdp.origin, Origin("-", "20518", 0, "IN", "IP4", "192.0.2.7"))

    def test_missingConnectionAdded(self) -> None:
        """Without any c=, each stream gets its own."""
        sdp = parse_sdp(minimal("m=audio 4000 RTP/AVP 0", "m=video 4002 RTP/AVP 31"))
        rewrite_connection(sdp, "192.0.2.8")
        self.assertIsNone(sdp.connection)
        for media in sdp.media:
            self.assertEqual(media.connection, Connection("IN", "IP4", "192.0.2.8"))

    def test_portsPerStream(self) -> None:
        """Ports are set per m= line; None keeps, port 0 stays rejected."""
        sdp = parse_sdp(AUDIO_VIDEO + b"m=text 0 RTP/AVP 100\r\n")
        rewrite_connection(sdp, "192.0.2.7", [None, 31000, 32000])
        self.assertEqual([m.port for m in sdp.media], [5004, 31000, 0])
        self.assertEqual(sdp.media[1].port_count, 2)

    def test_badPorts(self) -> None:
        """Wrong port lists raise ValueError and change nothing."""
        sdp = parse_sdp(AUDIO)
        self.assertRaises(ValueError, rewrite_connection, sdp, "192.0.2.7", [1, 2])
        self.assertRaises(ValueError, rewrite_connection, sdp, "192.0.2.7", [70000])
        self.assertRaises(ValueError, rewrite_connection, sdp, "192.0.2.7", [0])
        self.assertRaises(ValueError, rewrite_connection, sdp, "", None)
        self.assertEqual(sdp.to_bytes(), AUDIO)

    def test_nullAddressKept(self) -> None:
        """An RFC 2543 hold address stays unless keep_null is false."""
        sdp = parse_sdp(AUDIO.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0"))
        rewrite_connection(sdp, "192.0.2.7", [30000])
        self.assertEqual(sdp.connection, Connection("IN", "IP4", "0.0.0.0"))
        self.assertTrue(is_on_hold(sdp))
        rewrite_connection(sdp, "192.0.2.7", keep_null=False)
        self.assertEqual(sdp.connection, Connection("IN", "IP4", "192.0.2.7"))
        self.assertFalse(is_on_hold(sdp))

    def test_staleLinesDropped(self) -> None:
        """a=rtcp and extra c= lines of rewritten streams are removed."""
        sdp = parse_sdp(
            minimal(
                "m=audio 4000 RTP/AVP 0",
                "c=IN IP4 192.0.2.1",
                "c=IN IP4 192.0.2.2",
                "a=rtcp:4001",
                "a=ptime:20",
            )
        )
        rewrite_connection(sdp, "192.0.2.7", [5000])
        media = sdp.media[0]
        self.assertEqual(media.extra_lines, [])
        self.assertEqual(media.attributes, [("ptime", "20")])

    def test_unchangedStreamKeepsRtcp(self) -> None:
        """A stream whose address and port do not change keeps a=rtcp."""
        sdp = parse_sdp(minimal("m=audio 4000 RTP/AVP 0", "c=IN IP4 192.0.2.7", "a=rtcp:4001"))
        rewrite_connection(sdp, "192.0.2.7", [4000])
        self.assertEqual(sdp.media[0].attributes, [("rtcp", "4001")])

    def test_effectiveConnection(self) -> None:
        """The media-level c= wins over the session-level one."""
        sdp = parse_sdp(AUDIO_VIDEO)
        self.assertEqual(effective_connection(sdp, sdp.media[0]).address, "2001:db8::2")
        self.assertEqual(effective_connection(sdp, sdp.media[1]).address, "2001:db8::1")


class DirectionTests(SynchronousTestCase):
    """Media direction and hold."""

    def test_default(self) -> None:
        """Without attributes a stream is sendrecv."""
        sdp = parse_sdp(minimal("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0"))
        self.assertEqual(effective_direction(sdp, sdp.media[0]), "sendrecv")
        self.assertIsNone(explicit_direction(sdp.media[0]))

    def test_mediaOverridesSession(self) -> None:
        """The media-level attribute wins; the session-level one applies
        otherwise."""
        sdp = parse_sdp(AUDIO_VIDEO)
        self.assertEqual(effective_direction(sdp, sdp.media[0]), "recvonly")
        self.assertEqual(effective_direction(sdp, sdp.media[1]), "sendrecv")

    def test_setDirection(self) -> None:
        """set_direction replaces the first in place and drops the rest."""
        media = parse_sdp(
            minimal("m=audio 4000 RTP/AVP 0", "a=sendrecv", "a=ptime:20", "a=recvonly")
        ).media[0]
        set_direction(media, "inactive")
        self.assertEqual(media.attributes, [("inactive", None), ("ptime", "20")])

    def test_setDirectionAppends(self) -> None:
        """Without a direction attribute, one is appended."""
        sdp = parse_sdp(T38)
        set_direction(sdp, "sendonly")
        self.assertEqual(sdp.attributes, [("sendonly", None)])
        self.assertEqual(effective_direction(sdp, sdp.media[0]), "sendonly")

    def test_setDirectionInvalid(self) -> None:
        """Only the four directions can be set."""
        self.assertRaises(ValueError, set_direction, parse_sdp(T38), "hold")

    def test_answerDirection(self) -> None:
        """The answer mirrors the offer's direction (RFC 3264 6.1)."""
        self.assertEqual(answer_direction("sendonly"), "recvonly")
        self.assertEqual(answer_direction("recvonly"), "sendonly")
        self.assertEqual(answer_direction("inactive"), "inactive")
        self.assertEqual(answer_direction("sendrecv"), "sendrecv")
        self.assertRaises(ValueError, answer_direction, "SENDONLY")

    def test_holdByAttribute(self) -> None:
        """sendonly and inactive are hold; recvonly is not."""
        for direction, held in [
            ("sendonly", True),
            ("inactive", True),
            ("recvonly", False),
            ("sendrecv", False),
        ]:
            sdp = parse_sdp(AUDIO.replace(b"a=sendrecv", b"a=" + direction.encode()))
            self.assertEqual(is_on_hold(sdp, sdp.media[0]), held, direction)
            self.assertEqual(is_on_hold(sdp), held, direction)

    def test_legacyHold(self) -> None:
        """c=0.0.0.0 removes the receive half of the direction."""
        body = AUDIO.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0")
        sdp = parse_sdp(body)
        self.assertEqual(effective_direction(sdp, sdp.media[0]), "sendonly")
        self.assertEqual(effective_direction(sdp, sdp.media[0], legacy_hold=False), "sendrecv")
        self.assertTrue(is_on_hold(sdp, sdp.media[0]))
        sdp = parse_sdp(body.replace(b"a=sendrecv", b"a=recvonly"))
        self.assertEqual(effective_direction(sdp, sdp.media[0]), "inactive")

    def test_legacyHoldIPv6(self) -> None:
        """C{::} is the IPv6 null address."""
        self.assertTrue(is_null_address("::"))
        self.assertTrue(is_null_address("0.0.0.0"))
        self.assertFalse(is_null_address("192.0.2.1"))
        sdp = parse_sdp(minimal("m=audio 4000 RTP/AVP 0", "c=IN IP6 ::"))
        self.assertTrue(is_on_hold(sdp))

    def test_iceNullAddressNotHold(self) -> None:
        """With ICE, 0.0.0.0 is a placeholder (RFC 8840), not hold."""
        sdp = parse_sdp(
            minimal("m=audio 9 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=ice-ufrag:abcd", "a=ice-pwd:x")
        )
        self.assertFalse(is_on_hold(sdp))

    def test_wholeDescriptionHold(self) -> None:
        """Held SDP: every active stream held; rejected streams ignored."""
        sdp = parse_sdp(AUDIO_VIDEO)
        self.assertFalse(is_on_hold(sdp))
        set_direction(sdp.media[0], "sendonly")
        self.assertFalse(is_on_hold(sdp))
        sdp.media[1].reject()
        self.assertFalse(is_on_hold(sdp, sdp.media[1]))
        self.assertTrue(is_on_hold(sdp))
        sdp.media[0].reject()
        self.assertFalse(is_on_hold(sdp))


class FilterCodecsTests(SynchronousTestCase):
    """L{filter_codecs} keeps only allowed formats."""

    def test_byName(self) -> None:
        """Names match case-insensitively; offer order is kept; the lines of
        removed formats go."""
        media = parse_sdp(AUDIO).media[0]
        self.assertTrue(filter_codecs(media, ["g729", "pcmu"]))
        self.assertEqual(media.formats, ["0", "18"])
        self.assertEqual(
            media.attributes,
            [
                ("rtpmap", "0 PCMU/8000"),
                ("rtpmap", "18 G729/8000"),
                ("fmtp", "18 annexb=no"),
                ("ptime", "20"),
                ("sendrecv", None),
            ],
        )

    def test_byPayloadType(self) -> None:
        """Payload types, int or text, are allowed too."""
        media = parse_sdp(AUDIO).media[0]
        self.assertTrue(filter_codecs(media, payload_types=[8, "101"]))
        self.assertEqual(media.formats, ["8", "101"])

    def test_staticWithoutRtpmap(self) -> None:
        """Static payload types match by name without an rtpmap."""
        media = parse_sdp(minimal("m=audio 4000 RTP/AVP 0 8 18")).media[0]
        self.assertTrue(filter_codecs(media, ["PCMA"]))
        self.assertEqual(media.formats, ["8"])

    def test_keepTelephoneEvent(self) -> None:
        """telephone-event can be kept regardless of the list."""
        media = parse_sdp(AUDIO).media[0]
        self.assertTrue(filter_codecs(media, ["PCMA"], keep_telephone_event=True))
        self.assertEqual(media.formats, ["8", "101"])
        self.assertEqual(media.fmtp(101), "0-16")

    def test_rtcpFeedback(self) -> None:
        """a=rtcp-fb of removed formats goes; the wildcard one stays."""
        media = parse_sdp(AUDIO_VIDEO).media[0]
        self.assertTrue(filter_codecs(media, ["PCMU"]))
        self.assertEqual(media.formats, ["0"])
        self.assertEqual(media.get_attributes("rtcp-fb"), ["* trr-int 100"])
        self.assertIsNone(media.rtpmap(96))

    def test_nothingLeftRejects(self) -> None:
        """With no allowed format the stream is rejected with port 0 and
        keeps one format."""
        media = parse_sdp(AUDIO).media[0]
        self.assertFalse(filter_codecs(media, ["AMR"]))
        self.assertEqual((media.port, media.formats), (0, ["0"]))
        self.assertEqual(media.get_attributes("rtpmap"), ["0 PCMU/8000"])

    def test_onlyEventsLeftRejects(self) -> None:
        """telephone-event and CN alone carry no media: rejected."""
        media = parse_sdp(
            minimal("m=audio 4000 RTP/AVP 0 13 101", "a=rtpmap:101 telephone-event/8000")
        ).media[0]
        self.assertFalse(filter_codecs(media, ["CN", "AMR"], keep_telephone_event=True))
        self.assertEqual((media.port, media.formats), (0, ["13"]))

    def test_t38(self) -> None:
        """Non-RTP formats match by their text."""
        media = parse_sdp(T38).media[0]
        self.assertTrue(filter_codecs(media, ["T38"]))
        self.assertEqual((media.port, media.formats), (40000, ["t38"]))
        self.assertFalse(filter_codecs(media, ["PCMA"]))
        self.assertEqual((media.port, media.formats), (0, ["t38"]))

    def test_roundTripAfterFilter(self) -> None:
        """A filtered description parses again."""
        sdp = parse_sdp(AUDIO_VIDEO)
        filter_codecs(sdp.media[0], ["opus"])
        filter_codecs(sdp.media[1], ["VP8"])
        again = parse_sdp(sdp.to_bytes())
        self.assertEqual(again, sdp)
        self.assertEqual([m.port for m in again.media], [5004, 0])


class AnswerSkeletonTests(SynchronousTestCase):
    """L{answer_skeleton} starts an answer shaped like the offer."""

    origin = Origin("b2bua", "42", 1, "IN", "IP4", "192.0.2.99")

    def test_shape(self) -> None:
        """Same number and order of m= lines, media types and protos."""
        offer = parse_sdp(AUDIO_VIDEO + T38[T38.index(b"m=image") :])
        answer = answer_skeleton(offer, self.origin)
        self.assertEqual(
            [(m.media, m.proto) for m in answer.media],
            [(m.media, m.proto) for m in offer.media],
        )
        self.assertEqual(answer.origin, self.origin)
        self.assertEqual(
            answer.extra_lines,
            [("t", "2873397496 2873404696"), ("r", "7d 1h 0 25h"), ("t", "0 0")],
        )
        self.assertEqual([m.port for m in answer.media], [PLACEHOLDER_PORT] * 3)

    def test_directionsAndCodecs(self) -> None:
        """Active streams get the offered formats with their rtpmap/fmtp and
        the answer direction."""
        answer = answer_skeleton(parse_sdp(AUDIO_VIDEO), self.origin)
        audio, video = answer.media
        self.assertEqual(audio.formats, ["96", "0"])
        self.assertEqual(
            audio.attributes,
            [("rtpmap", "96 opus/48000/2"), ("fmtp", "96 useinbandfec=1"), ("sendonly", None)],
        )
        self.assertEqual(explicit_direction(video), "sendrecv")

    def test_rejectedStaysRejected(self) -> None:
        """A stream the offer disabled keeps port 0 in the answer."""
        offer = parse_sdp(minimal("m=audio 4000 RTP/AVP 0 8", "m=video 0 RTP/AVP 31 34"))
        answer = answer_skeleton(offer, self.origin)
        self.assertEqual(answer.media[1], MediaDescription("video", 0, "RTP/AVP", ["31"]))

    def test_heldOffer(self) -> None:
        """An RFC 2543 hold offer is answered recvonly."""
        offer = parse_sdp(AUDIO.replace(b"192.0.2.10", b"0.0.0.0"))
        answer = answer_skeleton(offer, self.origin)
        self.assertEqual(explicit_direction(answer.media[0]), "recvonly")

    def test_completeAnswer(self) -> None:
        """Skeleton, address, codec choice and rejection give a valid answer."""
        offer = parse_sdp(AUDIO_VIDEO)
        answer = answer_skeleton(offer, self.origin)
        rewrite_connection(answer, "192.0.2.99", [40000, 40002])
        filter_codecs(answer.media[0], ["PCMU"])
        answer.media[1].reject()
        self.assertEqual(
            answer.to_bytes(),
            crlf("""
v=0
o=b2bua 42 1 IN IP4 192.0.2.99
s=-
t=2873397496 2873404696
r=7d 1h 0 25h
t=0 0
m=audio 40000 RTP/SAVP 0
c=IN IP4 192.0.2.99
a=sendonly
m=video 0 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 192.0.2.99
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42e01f;packetization-mode=1
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=sendrecv
"""),
        )
