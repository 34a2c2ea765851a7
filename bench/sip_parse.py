"""Benchmark: SIP parse + serialise rate, ours against sippy's parser.

For each of two realistic messages (an INVITE with SDP as a B2BUA receives it
through a proxy, and the 200 OK answering it) this parses the bytes, reads
the fields a transaction layer needs (top Via branch, Call-ID, CSeq, From and
To tags) and serialises the message back to bytes, in a loop for a fixed
time, and prints messages per second.

Ours is C{b2bua.sip.parse_message} from this working tree.  sippy's parser
(PyPI C{sippy}, the Sippy B2BUA's SIP stack) runs in a child process from its
own venv, C{bench/.venv-sippy}, which is created on first use.  Both are
pinned to CPU 0 and run one after the other, never at the same time.

Usage::

    python bench/sip_parse.py [--seconds 3] [--sippy-only | --ours-only]

Exits non-zero when anything fails: the venv, the child, a parser that
cannot be imported, or a parser that reads a field wrongly.  This module
imports only the standard library at the top, so the sippy child can run it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SIPPY_VENV = BENCH / ".venv-sippy"
SIPPY_REQUIREMENT = "sippy==2.5.0"

#: The SDP offer in L{INVITE}: PCMU, PCMA and telephone-event.
OFFER_SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 198.51.100.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

#: An INVITE as it reaches the B2BUA through one proxy (15 headers).
INVITE = (
    b"INVITE sip:+4930123456@sip.example.net;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-proxy-7f3a91c2\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.12;branch=z9hG4bK-ua-55d2e0a1;rport=5062;received=198.51.100.10\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Alice Smith" <sip:1001@tenant1.example.net>;tag=a73kszlfl\r\n'
    b"To: <sip:+4930123456@sip.example.net;user=phone>\r\n"
    b"Call-ID: 3848276298220188511@198.51.100.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:1001@198.51.100.10:5062;transport=udp>"
    b';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"\r\n'
    b"Record-Route: <sip:192.0.2.5;lr;ftag=a73kszlfl>\r\n"
    b"Record-Route: <sip:192.0.2.4;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"User-Agent: Example-Phone/5.2.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 244\r\n"
    b"\r\n" + OFFER_SDP
)

#: The SDP answer in L{OK}: PCMU and telephone-event.
ANSWER_SDP = (
    b"v=0\r\n"
    b"o=bob 2808844564 2808844564 IN IP4 203.0.113.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 203.0.113.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 31000 RTP/AVP 0 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

#: The 200 OK answering L{INVITE}, as the callee sends it back.
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-proxy-7f3a91c2\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.12;branch=z9hG4bK-ua-55d2e0a1;rport=5062;received=198.51.100.10\r\n"
    b"Record-Route: <sip:192.0.2.5;lr;ftag=a73kszlfl>\r\n"
    b"Record-Route: <sip:192.0.2.4;lr>\r\n"
    b'From: "Alice Smith" <sip:1001@tenant1.example.net>;tag=a73kszlfl\r\n'
    b"To: <sip:+4930123456@sip.example.net;user=phone>;tag=8321234356\r\n"
    b"Call-ID: 3848276298220188511@198.51.100.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:+4930123456@203.0.113.20:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n"
    b"Supported: replaces, timer\r\n"
    b"Server: Example-PBX/12.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 216\r\n"
    b"\r\n" + ANSWER_SDP
)

#: The benchmarked messages, by the label printed for them.
MESSAGES: dict[str, bytes] = {"INVITE": INVITE, "200 OK": OK}

#: What the field accesses must return for each message: top Via branch,
#: Call-ID, CSeq number, CSeq method, From tag, To tag.
Fields = tuple[str | None, str, int, str, str | None, str | None]
EXPECTED: dict[str, Fields] = {
    "INVITE": ("z9hG4bK-proxy-7f3a91c2", "3848276298220188511@198.51.100.10",
               314159, "INVITE", "a73kszlfl", None),
    "200 OK": ("z9hG4bK-proxy-7f3a91c2", "3848276298220188511@198.51.100.10",
               314159, "INVITE", "a73kszlfl", "8321234356"),
}  # fmt: skip


class BenchError(Exception):
    """Something went wrong that makes the figures meaningless."""


def check_messages() -> None:
    """Make sure each message's Content-Length matches its body."""
    for label, data in MESSAGES.items():
        head, _, body = data.partition(b"\r\n\r\n")
        declared = int(head.rsplit(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
        if declared != len(body):
            raise BenchError(f"{label}: Content-Length {declared}, body {len(body)} bytes")


def pin_to_one_core() -> str:
    """Pin this process (and children it starts later) to CPU 0, if possible.

    @return: a note saying what happened, for the report.
    """
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {0})
            return "pinned to CPU 0"
        except OSError as error:
            return f"not pinned ({error})"
    return "not pinned (no sched_setaffinity)"


def measure(round_trip: Callable[[bytes], bytes], data: bytes, seconds: float) -> float:
    """Return how many times per second C{round_trip(data)} runs.

    A short warm-up comes first; then the call runs in batches until
    C{seconds} have passed, the clock read once per batch.
    """
    warm_until = time.perf_counter() + min(0.5, seconds / 10)
    while time.perf_counter() < warm_until:
        round_trip(data)
    batch = 200
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        for _ in range(batch):
            round_trip(data)
        count += batch
        now = time.perf_counter()
    return count / (now - start)


# -- ours ---------------------------------------------------------------------


def touch_ours(msg: Any) -> Fields:
    """Read what a transaction layer reads from one of our parsed messages."""
    cseq = msg.cseq
    return (msg.via[0].branch, msg.call_id, cseq.number, cseq.method, msg.from_.tag, msg.to.tag)


def ours_rates(seconds: float) -> dict[str, float]:
    """Measure our parser on every message, after checking what it reads.

    The working tree is put first on C{sys.path}, so the code measured is the
    code checked out, not an installed copy.
    """
    sys.path.insert(0, str(ROOT))
    from b2bua.sip import parse_message

    def round_trip(data: bytes) -> bytes:
        """Parse, read the transaction fields, serialise."""
        msg = parse_message(data)
        touch_ours(msg)
        return msg.to_bytes()

    rates = {}
    for label, data in MESSAGES.items():
        got = touch_ours(parse_message(data))
        again = touch_ours(parse_message(round_trip(data)))
        if got != EXPECTED[label] or again != EXPECTED[label]:
            raise BenchError(f"ours read {label} wrongly: {got} / after re-parse {again}")
        rates[label] = measure(round_trip, data, seconds)
    return rates


# -- sippy (runs in the child, in sippy's venv) --------------------------------


def touch_sippy(msg: Any) -> Fields:
    """Read the same fields from one of sippy's parsed messages."""
    cseq = msg.getHFBody("cseq")
    return (
        msg.getHFBody("via").getBranch(),
        msg.getHFBody("call-id").body,
        cseq.getCSeqNum(),
        cseq.getCSeqMethod(),
        msg.getHFBody("from").getTag(),
        msg.getHFBody("to").getTag(),
    )


def sippy_child(seconds: float) -> None:
    """Measure sippy's parser on every message; print the rates as JSON.

    sippy parses text, so decoding the bytes and encoding the result are
    part of each round trip, as they are in sippy's own transport.
    """
    pin_to_one_core()
    from sippy.SipRequest import SipRequest
    from sippy.SipResponse import SipResponse

    def parse(data: bytes) -> Any:
        """Parse bytes into a SipRequest or SipResponse, as sippy does."""
        text = data.decode("utf-8")
        if text.startswith("SIP/2.0 "):
            return SipResponse(buf=text)
        return SipRequest(buf=text)

    def round_trip(data: bytes) -> bytes:
        """Parse, read the transaction fields, serialise."""
        msg = parse(data)
        touch_sippy(msg)
        return msg.localStr().encode("utf-8")

    rates = {}
    for label, data in MESSAGES.items():
        got = touch_sippy(parse(data))
        again = touch_sippy(parse(round_trip(data)))
        if got != EXPECTED[label] or again != EXPECTED[label]:
            raise BenchError(f"sippy read {label} wrongly: {got} / after re-parse {again}")
        rates[label] = measure(round_trip, data, seconds)
    print(json.dumps({"rates": rates, "python": platform.python_version()}))


def ensure_sippy_venv() -> Path:
    """Create C{bench/.venv-sippy} with sippy in it if missing; return its python.

    The venv is made with this interpreter, so both parsers run on the same
    Python version.
    """
    python = SIPPY_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {SIPPY_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(SIPPY_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import sippy"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing {SIPPY_REQUIREMENT} into {SIPPY_VENV} ...", file=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", SIPPY_REQUIREMENT], check=True
        )
    return python


def sippy_rates(seconds: float) -> tuple[dict[str, float], str]:
    """Run the sippy child and return its rates and Python version."""
    python = ensure_sippy_venv()
    child = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--sippy-child", "--seconds", str(seconds)],
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise BenchError(f"sippy child failed ({child.returncode}):\n{child.stderr.strip()}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    return report["rates"], report["python"]


# -- report ---------------------------------------------------------------------


def overall(rates: dict[str, float]) -> float:
    """Messages per second over the whole run: each message had the same time."""
    return sum(rates.values()) / len(rates)


def report(ours: dict[str, float] | None, sippy: dict[str, float] | None) -> None:
    """Print one line per message and one overall line."""
    rows = [(label, ours and ours[label], sippy and sippy[label]) for label in MESSAGES]
    rows.append(("overall", ours and overall(ours), sippy and overall(sippy)))
    for label, mine, theirs in rows:
        parts = []
        if mine is not None:
            parts.append(f"ours {mine:,.0f} msg/s")
        if theirs is not None:
            parts.append(f"sippy {theirs:,.0f} msg/s")
        if mine is not None and theirs is not None:
            parts.append(f"ratio {mine / theirs:.1f}x")
        print(f"{label}: " + ", ".join(parts))


def main(argv: list[str]) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description="SIP parse + serialise rate, ours against sippy.")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds of measurement per message and parser (default 3)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sippy-only", action="store_true", help="measure sippy only")
    only.add_argument("--ours-only", action="store_true", help="measure ours only")
    only.add_argument("--sippy-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")

    try:
        check_messages()
        if args.sippy_child:
            sippy_child(args.seconds)
            return 0
        pinning = pin_to_one_core()
        print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
              f"{args.seconds:g} s per message and parser; parse + read Via branch, Call-ID, "
              f"CSeq, From/To tags + serialise")  # fmt: skip
        print(f"ours runs in this process, sippy ({SIPPY_REQUIREMENT}) in a child from "
              f"{SIPPY_VENV.name}; both {pinning}, one after the other on one core")  # fmt: skip
        for label, data in MESSAGES.items():
            print(f"  {label}: {len(data)} bytes")
        ours = None if args.sippy_only else ours_rates(args.seconds)
        sippy = None
        if not args.ours_only:
            sippy, child_python = sippy_rates(args.seconds)
            if child_python != platform.python_version():
                print(f"note: sippy ran on Python {child_python}")
        report(ours, sippy)
    except (BenchError, ImportError, subprocess.CalledProcessError, OSError, ValueError) as error:
        print(f"sip_parse benchmark failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
