"""Tests for L{media.server.negotiation}: answering offers (RFC 3264)."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import SIPError
from b2bua.sip.offer_answer import effective_direction
from b2bua.sip.sdp import Origin, SessionDescription, parse_sdp
from media.server.g711 import PCMA, PCMU
from media.server.negotiation import (
    Negotiation,
    NotAcceptableHere,
    make_origin,
    negotiate,
)
from media.server.rtp_session import RtpSession
from tests.trial.media.support import FakeUDPReactor, audio_offer, crlf

OURS = "203.0.113.5"
PORT = 40000
ORIGIN = Origin("-", "42", 1, "IN", "IP4", OURS)


def offer(media: str, *, session: str = "", host: str = "192.0.2.10") -> SessionDescription:
    """An offer with the given media sections."""
    return parse_sdp(
        crlf(
            f"""
v=0
o=alice 1 1 IN IP4 {host}
s=-
c=IN IP4 {host}
t=0 0
{session}
{media}
""".replace("\n\n", "\n")
        )
    )


def answer(sdp: SessionDescription, **options: object) -> Negotiation:
    """Negotiate with our address, port and origin."""
    return negotiate(sdp, address=OURS, port=PORT, origin=ORIGIN, **options)  # type: ignore[arg-type]


class CodecTests(SynchronousTestCase):
    """Choosing the codec."""

    def test_pcmu_first(self) -> None:
        """PCMU offered first is chosen, with telephone-event."""
        result = answer(audio_offer())
        media = result.answer.media[0]
        self.assertEqual((result.codec, result.payload_type), (PCMU, 0))
        self.assertEqual(media.formats, ["0", "101"])
        self.assertEqual(result.telephone_event, 101)
        self.assertEqual(result.telephone_event_fmtp, "0-16")
        self.assertEqual(media.fmtp(101), "0-16")
        self.assertIsNone(media.rtpmap(8))

    def test_offerer_order(self) -> None:
        """The offerer's order decides: PCMA before PCMU gives PCMA."""
        result = answer(offer("m=audio 5004 RTP/AVP 8 0\na=rtpmap:8 PCMA/8000"))
        self.assertEqual((result.codec, result.payload_type), (PCMA, 8))
        self.assertEqual(result.answer.media[0].formats, ["8"])

    def test_skips_unsupported(self) -> None:
        """Codecs we cannot do are passed over."""
        result = answer(offer("m=audio 5004 RTP/AVP 18 9 111 8\na=rtpmap:111 opus/48000/2"))
        self.assertEqual(result.codec, PCMA)
        self.assertEqual(result.answer.media[0].formats, ["8"])

    def test_dynamic_payload_type(self) -> None:
        """A G.711 law on a dynamic payload type keeps the offerer's number."""
        result = answer(offer("m=audio 5004 RTP/AVP 96\na=rtpmap:96 pcma/8000"))
        self.assertEqual((result.codec, result.payload_type), (PCMA, 96))
        self.assertEqual(result.answer.media[0].rtpmap(96).name, "pcma")  # type: ignore[union-attr]

    def test_wrong_rate_refused(self) -> None:
        """PCMU at another clock rate or in stereo is not G.711 as we do it."""
        sdp = offer("m=audio 5004 RTP/AVP 96 97\na=rtpmap:96 PCMU/16000\na=rtpmap:97 PCMA/8000/2")
        self.assertRaises(NotAcceptableHere, answer, sdp)

    def test_allowed_codecs(self) -> None:
        """The codecs option narrows the choice."""
        result = answer(audio_offer(), codecs=("PCMA",))
        self.assertEqual(result.codec, PCMA)
        self.assertRaises(
            NotAcceptableHere, answer, offer("m=audio 5004 RTP/AVP 0"), codecs=("pcma",)
        )

    def test_no_common_codec_is_488(self) -> None:
        """An offer of only codecs we cannot do raises a 488 SIPError with
        a Warning naming the problem."""
        with self.assertRaises(NotAcceptableHere) as caught:
            answer(offer("m=audio 5004 RTP/AVP 18 101\na=rtpmap:101 telephone-event/8000"))
        error = caught.exception
        self.assertIsInstance(error, SIPError)
        self.assertEqual((error.code, error.reason), (488, "Not Acceptable Here"))
        self.assertEqual(
            error.headers, [("Warning", f'305 {OURS} "incompatible audio: no PCMU or PCMA"')]
        )

    def test_no_telephone_event(self) -> None:
        """Without telephone-event in the offer (or when not wanted), the
        answer has none."""
        result = answer(offer("m=audio 5004 RTP/AVP 0"))
        self.assertIsNone(result.telephone_event)
        self.assertEqual(result.answer.media[0].formats, ["0"])
        result = answer(audio_offer(), telephone_event=False)
        self.assertIsNone(result.telephone_event)
        self.assertEqual(result.answer.media[0].formats, ["0"])

    def test_telephone_event_rate(self) -> None:
        """Only telephone-event/8000 goes with G.711."""
        sdp = offer(
            "m=audio 5004 RTP/AVP 0 100 101\n"
            "a=rtpmap:100 telephone-event/48000\na=rtpmap:101 telephone-event/8000"
        )
        result = answer(sdp)
        self.assertEqual(result.telephone_event, 101)
        self.assertEqual(result.answer.media[0].formats, ["0", "101"])

    def test_bad_arguments(self) -> None:
        """A bad port or codec name is a programming error."""
        self.assertRaises(ValueError, answer, audio_offer(), codecs=("G729",))
        self.assertRaises(ValueError, negotiate, audio_offer(), address=OURS, port=0, origin=ORIGIN)


class StreamTests(SynchronousTestCase):
    """Which streams are accepted, and the answer's shape."""

    def test_answer_shape(self) -> None:
        """Our address and port, our origin, ptime 20, and it serialises."""
        result = answer(audio_offer())
        sdp = result.answer
        self.assertEqual(sdp.origin, ORIGIN)
        self.assertEqual(sdp.connection.address, OURS)  # type: ignore[union-attr]
        self.assertEqual(sdp.media[0].port, PORT)
        self.assertEqual(sdp.media[0].get_attribute("ptime"), "20")
        self.assertEqual(parse_sdp(sdp.to_bytes()).to_bytes(), sdp.to_bytes())
        self.assertEqual(result.remote, ("192.0.2.10", 49170))
        self.assertIsNone(result.remote_rtcp)
        self.assertEqual(result.remote_ptime, 20)

    def test_other_streams_rejected(self) -> None:
        """Video, image and a second audio stream get port 0, in place."""
        sdp = offer(
            "m=audio 5004 RTP/AVP 0\n"
            "m=video 5006 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
            "m=audio 5008 RTP/AVP 8\n"
            "m=image 5010 udptl t38"
        )
        result = answer(sdp)
        self.assertEqual(result.index, 0)
        self.assertEqual([m.port for m in result.answer.media], [PORT, 0, 0, 0])
        self.assertEqual(
            [m.media for m in result.answer.media], ["audio", "video", "audio", "image"]
        )
        self.assertEqual(result.answer.media[1].attributes, [])

    def test_secure_profile_skipped(self) -> None:
        """An RTP/SAVP audio stream is rejected and a later RTP/AVP one
        taken; with only SAVP the offer is refused."""
        sdp = offer("m=audio 5004 RTP/SAVP 0\nm=audio 5006 RTP/AVP 8")
        result = answer(sdp)
        self.assertEqual((result.index, result.codec), (1, PCMA))
        self.assertEqual([m.port for m in result.answer.media], [0, PORT])
        self.assertEqual(result.remote, ("192.0.2.10", 5006))
        with self.assertRaises(NotAcceptableHere) as caught:
            answer(offer("m=audio 5004 RTP/SAVP 0"))
        self.assertIn("RTP/SAVP", caught.exception.detail)

    def test_nothing_to_accept(self) -> None:
        """No media at all, or only disabled or non-audio streams: 488."""
        for media in ("", "m=audio 0 RTP/AVP 0", "m=video 5006 RTP/AVP 31"):
            with self.assertRaises(NotAcceptableHere) as caught:
                answer(offer(media))
            self.assertEqual(caught.exception.detail, "no audio stream offered")

    def test_rtcp_attribute(self) -> None:
        """An a=rtcp port (and address) from the offer is the remote's
        RTCP address, and is not echoed."""
        result = answer(offer("m=audio 5004 RTP/AVP 0\na=rtcp:6001"))
        self.assertEqual(result.remote_rtcp, ("192.0.2.10", 6001))
        result = answer(offer("m=audio 5004 RTP/AVP 0\na=rtcp:6001 IN IP4 198.51.100.2"))
        self.assertEqual(result.remote_rtcp, ("198.51.100.2", 6001))
        self.assertFalse(result.answer.media[0].has_attribute("rtcp"))

    def test_rtcp_mux_not_accepted(self) -> None:
        """rtcp-mux is not answered (RTCP stays on its own port)."""
        result = answer(offer("m=audio 5004 RTP/AVP 0\na=rtcp-mux"))
        self.assertFalse(result.answer.media[0].has_attribute("rtcp-mux"))

    def test_ipv6(self) -> None:
        """An IPv6 address of ours is typed IP6."""
        origin = make_origin("2001:db8::5", rng=random.Random(3))
        result = negotiate(audio_offer(), address="2001:db8::5", port=PORT, origin=origin)
        self.assertEqual(result.answer.connection.addrtype, "IP6")  # type: ignore[union-attr]
        self.assertEqual(result.answer.origin.addrtype, "IP6")

    def test_make_origin(self) -> None:
        """A new origin has a random session id, version 1 and our address."""
        one = make_origin(OURS, rng=random.Random(1))
        two = make_origin(OURS, rng=random.Random(2))
        self.assertNotEqual(one.sess_id, two.sess_id)
        self.assertEqual((one.sess_version, one.address, one.addrtype), (1, OURS, "IP4"))


class DirectionTests(SynchronousTestCase):
    """RFC 3264 6.1 directions."""

    def test_directions(self) -> None:
        """Each offered direction gets its answer direction."""
        expected = {
            "sendrecv": "sendrecv",
            "sendonly": "recvonly",
            "recvonly": "sendonly",
            "inactive": "inactive",
        }
        for offered, ours in expected.items():
            result = answer(audio_offer(direction=offered))
            self.assertEqual(result.direction, ours, offered)
            sdp = result.answer
            self.assertEqual(effective_direction(sdp, sdp.media[0]), ours)
            self.assertEqual(result.remote, ("192.0.2.10", 49170))

    def test_session_level_direction(self) -> None:
        """A session-level direction applies to the stream."""
        result = answer(offer("m=audio 5004 RTP/AVP 0", session="a=sendonly"))
        self.assertEqual(result.direction, "recvonly")

    def test_null_address_hold(self) -> None:
        """An RFC 2543 hold (c=0.0.0.0) means the offerer receives nothing:
        we answer recvonly and have no remote address."""
        result = answer(offer("m=audio 5004 RTP/AVP 0", host="0.0.0.0"))
        self.assertEqual(result.direction, "recvonly")
        self.assertIsNone(result.remote)
        self.assertEqual(result.answer.connection.address, OURS)  # type: ignore[union-attr]


class SessionTests(SynchronousTestCase):
    """The outcome drives an RTP session."""

    def test_session_parameters(self) -> None:
        """The parameters build and update an RtpSession."""
        result = answer(audio_offer(direction="sendonly"))
        reactor = FakeUDPReactor()
        session = RtpSession(reactor, **result.session_parameters())  # type: ignore[arg-type]
        self.assertEqual(
            (session.codec, session.payload_type, session.telephone_event, session.direction),
            (PCMU, 0, 101, "recvonly"),
        )
        self.assertEqual(session.destination, ("192.0.2.10", 49170))
        self.assertEqual(session.rtcp_destination, ("192.0.2.10", 49171))
        again = answer(offer("m=audio 6000 RTP/AVP 8", host="198.51.100.9"))
        session.update(**again.session_parameters())  # type: ignore[arg-type]
        self.assertEqual((session.codec, session.telephone_event), (PCMA, None))
        self.assertEqual(session.destination, ("198.51.100.9", 6000))
