"""Tests for L{nat.detection}: which requests and bindings look NATed, and why."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.location import Binding, Received
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request, parse_message
from nat.detection import (
    CONTACT_DIFFERS,
    CONTACT_PRIVATE,
    REASONS,
    SDP_PRIVATE,
    VIA_RECEIVED,
    VIA_RPORT,
    NatVerdict,
    binding_verdict,
    detect,
    ip_literal,
    is_private,
    sdp_addresses,
)

SWITCH = ("203.0.113.1", 5060)


def invite(via: str = "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1;rport",
           contact: str | None = "<sip:1000@198.51.100.7:5060>",
           body: str = "", content_type: str = "application/sdp") -> Request:
    """An INVITE parsed from the wire, with these Via, Contact and body."""
    lines = [f"INVITE sip:1001@{SWITCH[0]} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
             "From: <sip:1000@example.com>;tag=a", "To: <sip:1001@example.com>",
             "Call-ID: c1@test", "CSeq: 1 INVITE"]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
    assert isinstance(message, Request)
    return message


def sdp(address: str, media_address: str | None = None) -> str:
    """An audio SDP whose session c= is C{address} (and media c= if given)."""
    family = "IP6" if ":" in address else "IP4"
    text = (f"v=0\r\no=- 1 1 IN {family} {address}\r\ns=-\r\nc=IN {family} {address}\r\n"
            f"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
    if media_address is not None:
        mfamily = "IP6" if ":" in media_address else "IP4"
        text += f"c=IN {mfamily} {media_address}\r\n"
    return text


def udp(host: str, port: int) -> Source:
    """A UDP source at C{(host, port)}."""
    return Source("UDP", (host, port), SWITCH)


class PrivateAddressTests(SynchronousTestCase):
    """L{is_private} and L{ip_literal}."""

    def test_private_ranges(self) -> None:
        """RFC 1918, RFC 6598, loopback, link-local and ULA are private, in
        both families, IPv4-mapped IPv6 and bracketed forms included."""
        for host in ("10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.5",
                     "100.64.0.1", "100.127.255.254", "127.0.0.1", "169.254.10.10",
                     "::1", "[::1]", "fe80::1", "fe80::1%eth0", "fd12:3456::1", "fc00::5",
                     "::ffff:192.168.1.5"):
            self.assertTrue(is_private(host), host)

    def test_public_and_names(self) -> None:
        """Public addresses (the edges of the private ranges too), the
        unspecified address and host names are not private."""
        for host in ("8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1",
                     "100.63.255.255", "192.169.0.1", "203.0.113.5", "0.0.0.0",
                     "2001:db8::1", "::", "phone.example.com", "", None):
            self.assertFalse(is_private(host), host)

    def test_ip_literal(self) -> None:
        """Brackets, zones and the IPv4-mapped form are understood."""
        self.assertEqual(str(ip_literal("[2001:db8::1]")), "2001:db8::1")
        self.assertEqual(str(ip_literal("::ffff:10.0.0.1")), "10.0.0.1")
        self.assertIsNone(ip_literal("example.com"))


class RequestDetectionTests(SynchronousTestCase):
    """L{detect} on parsed requests."""

    def test_not_natted(self) -> None:
        """Via, Contact and SDP all name the source address: no reason."""
        request = invite(body=sdp("198.51.100.7"))
        verdict = detect(request, udp("198.51.100.7", 5060))
        self.assertEqual(verdict, NatVerdict())
        self.assertFalse(verdict)
        self.assertFalse(verdict.behind_nat)

    def test_typical_nat(self) -> None:
        """A phone on 192.168.1.5 behind a NAT at 198.51.100.7:40123 shows
        every reason, in the fixed order."""
        request = invite(via="SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK1;rport",
                         contact="<sip:1000@192.168.1.5:5060>", body=sdp("192.168.1.5"))
        verdict = detect(request, udp("198.51.100.7", 40123))
        self.assertEqual(verdict.reasons, (VIA_RECEIVED, VIA_RPORT, CONTACT_PRIVATE,
                                           CONTACT_DIFFERS, SDP_PRIVATE))
        self.assertEqual(verdict.reasons, REASONS)
        self.assertTrue(verdict.behind_nat)
        self.assertIn(SDP_PRIVATE, verdict)

    def test_port_only(self) -> None:
        """Same address, another source port (a port-mapping NAT, or a
        phone using STUN's address): only the ports differ."""
        request = invite()
        verdict = detect(request, udp("198.51.100.7", 40123))
        self.assertEqual(verdict.reasons, (VIA_RPORT, CONTACT_DIFFERS))

    def test_default_ports(self) -> None:
        """A sent-by and a Contact without a port mean 5060."""
        request = invite(via="SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1",
                         contact="<sip:1000@198.51.100.7>")
        self.assertFalse(detect(request, udp("198.51.100.7", 5060)))
        self.assertEqual(detect(request, udp("198.51.100.7", 5062)).reasons,
                         (VIA_RPORT, CONTACT_DIFFERS))

    def test_streams_ignore_ports(self) -> None:
        """Over TCP the source port is ephemeral: only addresses count."""
        request = invite(via="SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bK1",
                         contact="<sip:1000@198.51.100.7:5060;transport=tcp>")
        source = Source("TCP", ("198.51.100.7", 51234), SWITCH, connection_id=3)
        self.assertFalse(detect(request, source))
        natted = invite(via="SIP/2.0/TCP 10.0.0.8:5060;branch=z9hG4bK1",
                        contact="<sip:1000@10.0.0.8:5060;transport=tcp>")
        self.assertEqual(detect(natted, source).reasons,
                         (VIA_RECEIVED, CONTACT_PRIVATE, CONTACT_DIFFERS))

    def test_same_private_network(self) -> None:
        """A private address that is the source address is a phone on the
        switch's own network: no NAT between them."""
        request = invite(via="SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK1",
                         contact="<sip:1000@192.168.1.5:5060>", body=sdp("192.168.1.5"))
        self.assertFalse(detect(request, udp("192.168.1.5", 5060)))

    def test_public_contact_elsewhere(self) -> None:
        """A public Contact address other than the source differs, but is
        not private."""
        request = invite(contact="<sip:1000@192.0.2.99:5060>")
        self.assertEqual(detect(request, udp("198.51.100.7", 5060)).reasons,
                         (CONTACT_DIFFERS,))

    def test_host_names_prove_nothing(self) -> None:
        """A host name in Via or Contact is never compared (no DNS here)."""
        request = invite(via="SIP/2.0/UDP phone.example.com:5060;branch=z9hG4bK1",
                         contact="<sip:1000@phone.example.com:5060>")
        self.assertFalse(detect(request, udp("198.51.100.7", 5060)))

    def test_media_level_private(self) -> None:
        """A private address in a media-level c= line counts too."""
        request = invite(body=sdp("198.51.100.7", media_address="10.9.8.7"))
        self.assertEqual(detect(request, udp("198.51.100.7", 5060)).reasons, (SDP_PRIVATE,))
        self.assertEqual(list(sdp_addresses(request)), ["198.51.100.7", "10.9.8.7"])

    def test_ipv6(self) -> None:
        """IPv6: a ULA Contact behind an IPv6 source is private."""
        request = invite(via="SIP/2.0/UDP [fd00::5]:5060;branch=z9hG4bK1",
                         contact="<sip:1000@[fd00::5]:5060>", body=sdp("fd00::5"))
        verdict = detect(request, udp("2001:db8::7", 5060))
        self.assertEqual(verdict.reasons, (VIA_RECEIVED, CONTACT_PRIVATE, CONTACT_DIFFERS,
                                           SDP_PRIVATE))
        self.assertFalse(detect(request, udp("fd00::5", 5060)))

    def test_multipart_sdp(self) -> None:
        """The SDP part of a multipart body is read."""
        body = ("--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp("10.1.1.1")
                + "\r\n--b1--\r\n")
        request = invite(body=body, content_type='multipart/mixed;boundary="b1"')
        self.assertEqual(detect(request, udp("198.51.100.7", 5060)).reasons, (SDP_PRIVATE,))

    def test_broken_parts_give_no_reason(self) -> None:
        """A malformed SDP, a star Contact, no Contact: nothing raises."""
        self.assertFalse(detect(invite(body="not sdp at all"), udp("198.51.100.7", 5060)))
        self.assertFalse(detect(invite(contact="*"), udp("198.51.100.7", 5060)))
        self.assertFalse(detect(invite(contact=None), udp("198.51.100.7", 5060)))
        broken = invite(via="SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
                        contact="<sip:1000@10.0.0.1")
        self.assertEqual(detect(broken, udp("198.51.100.7", 5060)).reasons, (VIA_RECEIVED,))

    def test_public_sdp_is_not_parsed(self) -> None:
        """An SDP whose c= lines name only public addresses, or the source's
        own private one, gives no reason without a full SDP parse."""
        import nat.detection as detection

        def refuse(body: bytes) -> None:
            raise AssertionError("the SDP was parsed")

        self.patch(detection, "parse_sdp", refuse)
        source = udp("192.168.1.5", 5060)
        for body in (sdp("198.51.100.7"), sdp("192.168.1.5"),
                     sdp("198.51.100.7", media_address="192.168.1.5")):
            self.assertEqual(detection.sdp_reasons(invite(body=body), source.remote), set())

    def test_fast_path_agrees_with_the_parse(self) -> None:
        """Whatever the body, SDP reasons are those of the parsed c= lines:
        a private address found by the quick scan is confirmed by parsing
        (an SDP that does not parse gives none)."""
        import nat.detection as detection

        def slow(request: Request, remote: tuple[str, int]) -> set[str]:
            return {SDP_PRIVATE for a in sdp_addresses(request)
                    if is_private(a) and a != remote[0]}

        bodies = [
            sdp("198.51.100.7"), sdp("10.1.1.1"), sdp("198.51.100.7", media_address="10.9.8.7"),
            sdp("10.1.1.1").replace("v=0", "v=1"),  # does not parse: no reason
            sdp("10.1.1.1").replace("\r\n", "\n"),  # bare LF line ends
            sdp("198.51.100.7").replace("c=IN IP4 198.51.100.7", "c=IN IP4 10.0.0.1/127"),
            sdp("198.51.100.7").replace("c=IN IP4 198.51.100.7", "c=IN IP4 10.0.0.1 extra"),
            sdp("198.51.100.7") + "c=IN IP4 10.2.2.2\r\n",  # a second media c= line
            sdp("0.0.0.0"), sdp("fd00::5"), "c=IN IP4 10.0.0.1\r\n",
        ]
        for body in bodies:
            request = invite(body=body)
            for remote in (("198.51.100.7", 5060), ("10.1.1.1", 5060)):
                self.assertEqual(detection.sdp_reasons(request, remote), slow(request, remote),
                                 (body, remote))

    def test_verdict_order(self) -> None:
        """L{NatVerdict.of} orders and de-duplicates reasons."""
        self.assertEqual(NatVerdict.of([SDP_PRIVATE, VIA_RECEIVED, SDP_PRIVATE]).reasons,
                         (VIA_RECEIVED, SDP_PRIVATE))


class BindingVerdictTests(SynchronousTestCase):
    """L{binding_verdict}: a binding's Contact against where it registered from."""

    def binding(self, contact: str, received: Received | None) -> Binding:
        """A binding of 1000@example.com."""
        return Binding(aor="1000@example.com", contact=contact, expires_at=100.0,
                       received=received)

    def test_natted(self) -> None:
        """A private Contact registered from a public address."""
        verdict = binding_verdict(self.binding("sip:1000@192.168.0.10:5060",
                                               Received("UDP", "198.51.100.7", 40000)))
        self.assertEqual(verdict.reasons, (CONTACT_PRIVATE, CONTACT_DIFFERS))

    def test_same_address(self) -> None:
        """A Contact that is the source (even on loopback) is not NATed."""
        self.assertFalse(binding_verdict(self.binding(
            "sip:1000@127.0.0.2:5060", Received("UDP", "127.0.0.2", 5060))))

    def test_port_differs(self) -> None:
        """Over UDP another port is a NAT; over TCP it is not."""
        self.assertEqual(binding_verdict(self.binding(
            "sip:1000@198.51.100.7:5060", Received("UDP", "198.51.100.7", 40000))).reasons,
            (CONTACT_DIFFERS,))
        self.assertFalse(binding_verdict(self.binding(
            "sip:1000@198.51.100.7:5060;transport=tcp",
            Received("TCP", "198.51.100.7", 40000, connection_id=4))))

    def test_nothing_to_compare(self) -> None:
        """No received address, or an unparsable Contact: no verdict."""
        self.assertFalse(binding_verdict(self.binding("sip:1000@10.0.0.1", None)))
        self.assertFalse(binding_verdict(self.binding(
            "not a uri", Received("UDP", "198.51.100.7", 40000))))
