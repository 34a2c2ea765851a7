"""Tests for the IVR C{conference} node: validation at load, and runs on
real L{MediaCall}s sharing one L{Conferences} on a L{Clock}.

The calls have no RTP session: the tests play its part, handing received
frames to L{MediaCall.audio_received}, taking sent frames from
L{MediaCall.next_frame} and pressing keys with L{MediaCall.digit_received}.
"""

from __future__ import annotations

import struct
from textwrap import dedent
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.conference import Conferences
from media.server.ivr import FlowError, builtin_flow, load_flow
from media.server.ivr_actions import builtin_actions
from media.server.ivr_model import ConferenceNode
from media.server.ivr_runtime import FlowResult, FlowRun, run_flow
from media.server.languages import LANGUAGES
from media.server.ua_session import MediaCall

ROOM_FLOW = """
[flow]
name = "rooms"
start = "ask"
max_duration = 7200

[nodes.ask]
type = "collect"
variable = "room"
max_digits = 4
terminator = "#"
next = "join"
on_timeout = "bye"
on_invalid = "bye"

[nodes.join]
type = "conference"
room = ["r", { var = "room" }]
max_participants = 2
leave_digit = "#"
mute_digit = "*"
announce = false
next = "left"
on_full = "full"

[nodes.left]
type = "hangup"
cause = "left"

[nodes.full]
type = "hangup"
cause = "full"

[nodes.bye]
type = "hangup"
"""


def frame(value: int) -> bytes:
    """A frame of one sample value."""
    return struct.pack("<160h", *[value] * 160)


def problems(text: str) -> list[str]:
    """The problems of a flow, one line each, without the source."""
    try:
        load_flow(dedent(text), source="f.toml", actions=builtin_actions())
    except FlowError as error:
        return [line.removeprefix("flow f.toml: ") for line in str(error).splitlines()]
    return []


def conference_flow(fields: str, extra: str = "") -> str:
    """A flow whose start node is a conference node with C{fields}."""
    return f"""
[flow]
start = "join"

[nodes.join]
type = "conference"
{fields}

[nodes.after]
type = "hangup"
{extra}
"""


class ValidationTests(SynchronousTestCase):
    """The node is checked at load like every other, naming node and field."""

    def test_valid(self) -> None:
        """A complete node loads with its fields; defaults otherwise."""
        flow = load_flow(ROOM_FLOW, actions=builtin_actions())
        node = flow.nodes["join"]
        assert isinstance(node, ConferenceNode)
        self.assertEqual((node.max_participants, node.leave_digit, node.mute_digit, node.next,
                          node.on_full, node.announce, node.muted),
                         (2, "#", "*", "left", "full", False, False))
        flow = load_flow('[flow]\nstart = "join"\n[nodes.join]\ntype = "conference"\n'
                         'room = "lobby"\n')
        node = flow.nodes["join"]
        assert isinstance(node, ConferenceNode)
        self.assertEqual((node.max_participants, node.leave_digit, node.next, node.announce),
                         (0, "", None, True))

    def test_without_next_the_rest_is_unreachable(self) -> None:
        """Without leave_digit the node has no way out but hanging up."""
        self.assertEqual(problems(conference_flow('room = "lobby"')),
                         ["node 'after': is unreachable from the start node 'join'"])

    def test_room_required_and_checked(self) -> None:
        """The room is required; a literal one must be a room name."""
        self.assertEqual(problems(conference_flow('leave_digit = "#"\nnext = "after"')),
                         ["node 'join', field 'room': is required"])
        self.assertEqual(
            problems(conference_flow('room = "a b"\nleave_digit = "#"\nnext = "after"')),
            ["node 'join', field 'room': 'a b' is not a room name "
             "(1-64 of letters, digits, _ . + -)"])
        self.assertEqual(
            problems(conference_flow('room = [{ var = "x" }, " y"]\nleave_digit = "#"\n'
                                     'next = "after"')), [])

    def test_digits(self) -> None:
        """leave_digit and mute_digit are one DTMF key, and not the same."""
        self.assertEqual(
            problems(conference_flow('room = "r"\nleave_digit = "##"\nmute_digit = "x"\n'
                                     'on_full = "after"')),
            ["node 'join', field 'leave_digit': '##' is not one DTMF digit (0-9 * # A-D) or \"\"",
             "node 'join', field 'mute_digit': 'x' is not one DTMF digit (0-9 * # A-D) or \"\""])
        self.assertEqual(
            problems(conference_flow('room = "r"\nleave_digit = "5"\nmute_digit = "5"\n'
                                     'next = "after"')),
            ["node 'join', field 'mute_digit': '5' is the leave_digit already"])

    def test_next_and_leave_digit_go_together(self) -> None:
        """A leave_digit needs a next; a next needs a leave_digit."""
        self.assertEqual(
            problems(conference_flow('room = "r"\nleave_digit = "#"\non_full = "after"')),
            ["node 'join', field 'next': is required"])
        self.assertEqual(
            problems(conference_flow('room = "r"\nnext = "after"')),
            ["node 'join', field 'next': is never taken: without a leave_digit only hanging "
             "up leaves the room (add leave_digit, or remove next)",
             "node 'after': is unreachable from the start node 'join'"])

    def test_fields(self) -> None:
        """Ranges, types, edges and unknown fields."""
        self.assertEqual(
            problems(conference_flow('room = "r"\nmax_participants = 1001\nmuted = "yes"\n'
                                     'on_full = "nowhere"\nmax_participant = 3\n'
                                     'leave_digit = "#"\nnext = "after"')),
            ["node 'join', field 'muted': must be true or false, not a string",
             "node 'join', field 'max_participants': 1001 is outside 0-1000",
             "node 'join', field 'max_participant': unknown field "
             "(did you mean 'max_participants'?)",
             "node 'join', field 'on_full': no node named 'nowhere'"])

    def test_waits_in_loops(self) -> None:
        """A conference waits for the caller: a loop through it is allowed."""
        text = """
        [flow]
        start = "join"

        [nodes.join]
        type = "conference"
        room = "r"
        leave_digit = "#"
        next = "again"

        [nodes.again]
        type = "set"
        variable = "x"
        value = "1"
        next = "join"
        """
        self.assertEqual(problems(text), [])

    def test_builtin_flow(self) -> None:
        """The demo flow loads, and its prompts are in every catalogue."""
        for language in LANGUAGES.values():
            flow = builtin_flow("conference", prompts=language.prompts,
                                actions=builtin_actions())
            self.assertIsInstance(flow.nodes["join"], ConferenceNode)
            self.assertEqual(flow.prompt_names(),
                             {"conference-enter-room", "conference-full", "conference-left"})


class Caller:
    """One MediaCall running a flow, on the shared clock and rooms."""

    def __init__(self, case: RunCase, flow_text: str = ROOM_FLOW,
                 variables: dict[str, str] | None = None) -> None:
        self.ends: list[str] = []
        self.media = MediaCall(case.clock, None, end=self.ends.append, telephone_event=True,
                               conferences=case.conferences)
        flow = load_flow(flow_text, actions=builtin_actions())
        self.run: FlowRun
        self.run, done = run_flow(flow, self.media, actions=builtin_actions(),
                                  clock=case.clock, variables=variables)
        self.results: list[FlowResult] = []
        done.addCallback(self.results.append)

    def press(self, keys: str) -> None:
        """Key presses (SIP INFO / RFC 4733 alike)."""
        for key in keys:
            self.media.digit_received(key)

    @property
    def room(self) -> str | None:
        """The room the call is in."""
        member = self.media.member
        return member.room.name if member is not None else None


class RunCase(SynchronousTestCase):
    """A clock and the rooms."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.conferences = Conferences(self.clock)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RunTests(RunCase):
    """Callers enter a room number and talk."""

    def test_join_talk_leave(self) -> None:
        """Two callers enter 12#: they share room r12 and hear each other;
        the leave key goes to next (hangup 'left'), the room goes with the
        last one."""
        a, b = Caller(self), Caller(self)
        a.press("12#")
        b.press("12#")
        self.assertEqual((a.room, b.room), ("r12", "r12"))
        self.assertEqual(a.run.variables["conference_room"], "r12")
        a.media.audio_received(frame(1000))
        b.media.audio_received(frame(-700))
        self.clock.advance(0.02)
        self.assertEqual((a.media.next_frame(), b.media.next_frame()),
                         (frame(-700), frame(1000)))
        a.press("#")
        self.assertEqual(a.results[0].outcome, "hangup")
        self.assertEqual(a.results[0].detail, "left")
        self.assertEqual(a.ends, ['Q.850;cause=16;text="left"'])
        self.assertEqual(len(self.conferences.room("r12") or ()), 1)
        b.media.caller_hung_up()
        self.assertEqual(b.results[0].outcome, "caller_hangup")
        self.assertEqual((b.ends, len(self.conferences)), ([], 0))

    def test_keys_in_the_room(self) -> None:
        """The mute key toggles listen-only; other keys are ignored and not
        kept for later."""
        a, b = Caller(self), Caller(self)
        a.press("5#")
        b.press("5#")
        b.press("*")
        member = b.media.member
        assert member is not None
        self.assertTrue(member.muted)
        b.media.audio_received(frame(99))
        self.clock.advance(0.02)
        self.assertIsNone(a.media.next_frame())
        b.press("*123")
        self.assertFalse(member.muted)
        b.media.audio_received(frame(99))
        self.clock.advance(0.02)
        self.assertEqual(a.media.next_frame(), frame(99))
        self.assertEqual(b.media.digits, list("5#**123"))
        self.assertEqual((a.results, b.results), ([], []))
        a.media.caller_hung_up()
        b.media.caller_hung_up()

    def test_leave_room_from_outside(self) -> None:
        """L{MediaCall.leave_room} (no key) ends the stay like the leave
        key: the run goes on at next; the room goes with its last member."""
        caller = Caller(self)
        caller.press("9#")
        self.assertEqual(caller.room, "r9")
        caller.media.leave_room()
        self.assertEqual((caller.room, len(self.conferences)), (None, 0))
        self.assertEqual(caller.results[0].detail, "left")

    def test_room_full_takes_on_full(self) -> None:
        """The third caller of a two-party room goes to on_full."""
        callers = [Caller(self) for _ in range(3)]
        for caller in callers:
            caller.press("7#")
        self.assertEqual([c.room for c in callers], ["r7", "r7", None])
        result = callers[2].results[0]
        self.assertEqual((result.outcome, result.detail), ("hangup", "full"))
        self.assertEqual(result.variables["last_error"],
                         "conference room 'r7' is full (2 participants)")
        for caller in callers[:2]:
            caller.media.caller_hung_up()

    def test_room_full_without_on_full(self) -> None:
        """Without on_full the call is hung up with cause room_full."""
        text = ROOM_FLOW.replace('on_full = "full"\n', "").replace(
            "[nodes.full]\ntype = \"hangup\"\ncause = \"full\"\n", "")
        first, second = Caller(self, text), Caller(self, text)
        third = Caller(self, text)
        for caller in (first, second, third):
            caller.press("1#")
        self.assertEqual(third.results[0].detail, "room_full")
        self.assertEqual(third.ends, ['Q.850;cause=16;text="room_full"'])
        first.run.stop()
        second.run.stop()
        self.assertEqual(len(self.conferences), 0)

    def test_flow_timeout_leaves(self) -> None:
        """The flow's max_duration ends the stay: the room is left."""
        a, b = Caller(self), Caller(self)
        a.press("3#")
        b.press("3#")
        self.clock.advance(7200)
        self.assertEqual([c.results[0].outcome for c in (a, b)], ["timeout", "timeout"])
        self.assertEqual(len(self.conferences), 0)

    def test_bad_room_at_run_time(self) -> None:
        """A room name that evaluates badly ends the run with an error
        naming the node and the field."""
        text = ROOM_FLOW.replace('room = ["r", { var = "room" }]', 'room = { var = "nothing" }')
        caller = Caller(self, text)
        caller.press("1#")
        result = caller.results[0]
        self.assertEqual(result.outcome, "error")
        self.assertEqual(result.detail, "node 'join', field 'room': '' is not a room name "
                                        "(1-64 of letters, digits, _ . + -)")

    def test_not_configured(self) -> None:
        """A call without rooms ends with an error naming the node."""
        ends: list[str] = []
        media = MediaCall(self.clock, None, end=ends.append, telephone_event=True)
        flow = load_flow(ROOM_FLOW)
        _, done = run_flow(flow, media, actions=builtin_actions(), clock=self.clock)
        results: list[FlowResult] = []
        done.addCallback(results.append)
        media.digit_received("1")
        media.digit_received("#")
        self.assertEqual(results[0].outcome, "error")
        self.assertIn("conferencing is not configured", results[0].detail)

    def test_session_without_conferences(self) -> None:
        """A session that cannot join rooms: an error naming the node."""

        class Plain:
            def play(self, prompts: Any, barge_in: bool) -> Deferred[str | None]:
                raise AssertionError("not played")

            def collect(self, *args: Any) -> Deferred[str]:
                raise AssertionError("not collected")

            def transfer(self, target: str) -> None:
                raise AssertionError("not transferred")

            def hangup(self, cause: str) -> None:
                self.cause = cause

            def now(self) -> Any:
                raise AssertionError("no time")

        session = Plain()
        flow = load_flow(conference_flow('room = "r"\nleave_digit = "#"\nnext = "after"'))
        _, done = run_flow(flow, session, actions=builtin_actions(), clock=self.clock)
        result = self.successResultOf(done)
        self.assertEqual((result.outcome, result.detail, session.cause),
                         ("error", "node 'join', field 'type': this session cannot join "
                                   "conferences", "flow_error"))
