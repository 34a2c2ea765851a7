"""Tests for L{media.server.ivr}: loading and validating IVR flow documents."""

from __future__ import annotations

import re
from pathlib import Path
from textwrap import dedent

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.server.ivr import (
    ActionNode,
    BranchNode,
    CollectNode,
    Flow,
    FlowError,
    FlowProblem,
    HangupNode,
    PlayNode,
    PromptSpec,
    SetNode,
    Term,
    TransferNode,
    builtin_flow,
    evaluate,
    load_flow,
    load_flow_file,
)
from media.server.ivr_actions import builtin_actions

DOC = Path(__file__).parents[4] / "docs" / "media-server-ivr.md"

#: A valid flow exercising every node type; tests break it one field at a time.
GOOD = """
[flow]
name = "main"
start = "welcome"

[variables]
company = "Example"
attempts = 0

[nodes.welcome]
type = "play"
prompt = ["welcome", { number = "attempts" }]
barge_in = true
next = "menu"

[nodes.menu]
type = "collect"
prompt = "menu"
invalid_prompt = "invalid"
timeout_prompt = "no-input"
variable = "choice"
max_digits = 1
pattern = "[1-3]"
on_timeout = "bye"
on_invalid = "bye"
next = "route"

[nodes.route]
type = "branch"
variable = "choice"
cases = { "1" = "lookup", "2" = "target", "3" = "bye" }
default = "bye"

[nodes.lookup]
type = "action"
action = "clock"
result = "time"
on_error = "bye"
next = "welcome"

[nodes.target]
type = "set"
variable = "uri"
value = ["sip:", { digits = "caller", last = 4 }, "@pbx.example"]
next = "out"

[nodes.out]
type = "transfer"
target = { var = "uri" }
on_error = "bye"

[nodes.bye]
type = "hangup"
cause = "normal"
"""

PROMPTS = {"welcome", "menu", "invalid", "no-input"}


def problems_of(text: str, **kwargs: object) -> list[str]:
    """The problems a document has, as strings."""
    try:
        load_flow(dedent(text), **kwargs)  # type: ignore[arg-type]
    except FlowError as e:
        return [str(p) for p in e.problems]
    raise AssertionError("the flow loaded")


def changed(old: str, new: str, text: str = GOOD) -> str:
    """C{GOOD} with one piece replaced (which must be there)."""
    assert old in text, old
    return text.replace(old, new, 1)


class LoadTests(SynchronousTestCase):
    """A valid document becomes an immutable model."""

    def test_every_node_type(self) -> None:
        """Each node table becomes its node class, with its fields."""
        flow = load_flow(GOOD, prompts=PROMPTS, actions=builtin_actions())
        self.assertIsInstance(flow, Flow)
        self.assertEqual((flow.name, flow.start), ("main", "welcome"))
        self.assertEqual(dict(flow.variables), {"company": "Example", "attempts": "0"})
        nodes = flow.nodes
        self.assertEqual(
            nodes["welcome"],
            PlayNode(
                "welcome",
                prompts=(PromptSpec("file", "welcome"), PromptSpec("number", "attempts")),
                barge_in=True,
                next="menu",
            ),
        )
        menu = nodes["menu"]
        assert isinstance(menu, CollectNode)
        self.assertEqual((menu.max_digits, menu.min_digits, menu.terminator), (1, 1, "#"))
        self.assertEqual((menu.first_digit_timeout, menu.inter_digit_timeout), (5.0, 3.0))
        self.assertEqual((menu.retries, menu.on_timeout, menu.on_invalid), (2, "bye", "bye"))
        self.assertEqual(menu.invalid_prompts, (PromptSpec("file", "invalid"),))
        self.assertTrue(menu.barge_in)
        self.assertEqual(
            nodes["route"],
            BranchNode(
                "route", "choice", {"1": "lookup", "2": "target", "3": "bye"}, default="bye"
            ),
        )
        self.assertEqual(
            nodes["lookup"], ActionNode("lookup", "clock", "time", 30.0, "welcome", "bye")
        )
        self.assertEqual(
            nodes["target"],
            SetNode(
                "target",
                "uri",
                (
                    Term("literal", "sip:"),
                    Term("digits", "caller", None, 4),
                    Term("literal", "@pbx.example"),
                ),
                "out",
            ),
        )
        self.assertEqual(nodes["out"], TransferNode("out", (Term("var", "uri"),), "bye"))
        self.assertEqual(nodes["bye"], HangupNode("bye", "normal"))
        self.assertEqual(flow.prompt_names(), PROMPTS)
        self.assertEqual(flow.action_names(), {"clock"})

    def test_defaults(self) -> None:
        """The flow name defaults to the source's stem; limits have defaults;
        play does not barge in unless asked; hangup's cause is normal."""
        flow = load_flow(
            '[flow]\nstart = "a"\n[nodes.a]\ntype = "play"\nprompt = "x"\nnext = "b"\n'
            '[nodes.b]\ntype = "hangup"\n',
            source="dir/menu.toml",
        )
        self.assertEqual((flow.name, flow.max_steps, flow.max_duration), ("menu", 1000, 3600.0))
        self.assertFalse(flow.nodes["a"].barge_in)  # type: ignore[attr-defined]
        self.assertEqual(flow.nodes["b"], HangupNode("b", "normal"))

    def test_checks_skipped_without_catalogue(self) -> None:
        """Without a prompt catalogue or action names those checks are off."""
        flow = load_flow(changed('action = "clock"', 'action = "crm_lookup"'))
        self.assertEqual(flow.action_names(), {"crm_lookup"})

    def test_builtin_flows(self) -> None:
        """The shipped flows validate against the built-in actions."""
        actions = builtin_actions()
        echo = builtin_flow("echo", actions=actions)
        self.assertEqual(echo.action_names(), {"echo"})
        self.assertEqual(echo.prompt_names(), {"echo-test", "goodbye"})
        clock = builtin_flow("speaking_clock", actions=actions)
        self.assertEqual(clock.action_names(), {"clock"})
        self.assertEqual(
            clock.prompt_names(), {"the-time-is", "oclock", "press-1-to-repeat", "goodbye"}
        )

    def test_builtin_flow_unknown(self) -> None:
        """An unknown or malformed built-in name is a FlowError."""
        for name in ("nope", "../echo"):
            with self.assertRaises(FlowError):
                builtin_flow(name)

    def test_builtin_flow_against_catalogue(self) -> None:
        """A catalogue lacking a shipped prompt is named in the error."""
        with self.assertRaises(FlowError) as caught:
            builtin_flow("echo", prompts={"goodbye"})
        self.assertEqual(
            str(caught.exception),
            "flow echo.toml: node 'intro', field 'prompt': no prompt named 'echo-test'",
        )

    def test_file(self) -> None:
        """A flow file's name is its default flow name and its label."""
        path = Path(self.mktemp())
        path.mkdir()
        (path / "night.toml").write_text(GOOD.replace('name = "main"\n', ""))
        self.assertEqual(load_flow_file(path / "night.toml").name, "night")
        with self.assertRaises(FlowError) as caught:
            load_flow_file(path / "missing.toml")
        self.assertIn("flow missing.toml: cannot be read", str(caught.exception))

    def test_documented_example(self) -> None:
        """The complete example of the documentation page loads."""
        text = DOC.read_text(encoding="utf-8")
        blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
        self.assertTrue(blocks)
        complete = max(blocks, key=len)
        flow = load_flow(complete, actions={"clock", "balance"})
        self.assertGreaterEqual(len(flow.nodes), 7)
        self.assertEqual(
            {node.type for node in flow.nodes.values()},
            {"play", "collect", "branch", "set", "action", "transfer", "hangup"},
        )


class ProblemTests(SynchronousTestCase):
    """Every problem names the node and the field, and all are reported."""

    def assertProblems(self, text: str, *expected: str, **kwargs: object) -> None:
        """The document has exactly these problems."""
        self.assertEqual(problems_of(text, **kwargs), list(expected))

    def test_not_toml(self) -> None:
        """A syntax error is one problem naming the line."""
        (problem,) = problems_of("[flow\n")
        self.assertRegex(problem, r"^is not valid TOML: .*line 1")

    def test_unknown_node_type(self) -> None:
        """An unknown type names the node and the known types."""
        self.assertProblems(
            changed('type = "hangup"', 'type = "hang_up"'),
            "node 'bye', field 'type': unknown node type 'hang_up' (one of play, collect, "
            "branch, set, action, transfer, hangup, conference)",
        )

    def test_missing_type(self) -> None:
        """A node without a type says so."""
        self.assertProblems(
            changed('type = "hangup"\n', ""),
            "node 'bye', field 'type': is required (one of play, collect, branch, set, "
            "action, transfer, hangup, conference)",
        )

    def test_unknown_field(self) -> None:
        """An unknown field is named, with the closest known one."""
        self.assertProblems(
            changed("max_digits = 1", "max_digit = 1"),
            "node 'menu', field 'max_digit': unknown field (did you mean 'max_digits'?)",
        )

    def test_edges_to_missing_nodes(self) -> None:
        """Every kind of edge to a missing node is named by its field."""
        text = changed('next = "route"', 'next = "rout"')
        text = changed('on_timeout = "bye"', 'on_timeout = "by"', text)
        text = changed('"2" = "target"', '"2" = "tagret"', text)
        text = changed('default = "bye"', 'default = "goodbye"', text)
        text = changed('on_error = "bye"\nnext', 'on_error = "err"\nnext', text)
        self.assertProblems(
            text,
            "node 'menu', field 'next': no node named 'rout'",
            "node 'menu', field 'on_timeout': no node named 'by'",
            "node 'route', field 'cases.\"2\"': no node named 'tagret'",
            "node 'route', field 'default': no node named 'goodbye'",
            "node 'lookup', field 'on_error': no node named 'err'",
            "node 'route': is unreachable from the start node 'welcome'",
            "node 'lookup': is unreachable from the start node 'welcome'",
            "node 'target': is unreachable from the start node 'welcome'",
            "node 'out': is unreachable from the start node 'welcome'",
        )

    def test_start(self) -> None:
        """The start node must be given and exist."""
        self.assertProblems(
            changed('start = "welcome"', 'start = "hello"'),
            "field 'flow.start': no node named 'hello'",
        )
        (problem,) = problems_of(changed('start = "welcome"\n', ""))
        self.assertEqual(problem, "field 'flow.start': is required")

    def test_unreachable(self) -> None:
        """A node no edge leads to is named."""
        self.assertProblems(
            GOOD + '\n[nodes.orphan]\ntype = "hangup"\n',
            "node 'orphan': is unreachable from the start node 'welcome'",
        )

    def test_missing_prompt(self) -> None:
        """A play node needs a prompt, and an empty list is no prompt."""
        self.assertProblems(
            changed('prompt = ["welcome", { number = "attempts" }]\n', ""),
            "node 'welcome', field 'prompt': is required",
        )
        self.assertProblems(
            changed('prompt = ["welcome", { number = "attempts" }]', "prompt = []"),
            "node 'welcome', field 'prompt': is empty: give at least one prompt",
        )

    def test_prompt_not_in_catalogue(self) -> None:
        """Each prompt field is checked against the catalogue."""
        self.assertProblems(
            GOOD,
            "node 'welcome', field 'prompt': no prompt named 'welcome'",
            "node 'menu', field 'invalid_prompt': no prompt named 'invalid'",
            prompts={"menu", "no-input"},
        )

    def test_bad_prompt_items(self) -> None:
        """Say items need a known kind and a variable name."""
        problems = problems_of(
            changed('{ number = "attempts" }', '{ money = "x" }, { number = "9x" }, 3')
        )
        self.assertEqual(len(problems), 3)
        self.assertTrue(problems[0].startswith("node 'welcome', field 'prompt': {'money': 'x'}"))
        self.assertEqual(
            problems[1],
            "node 'welcome', field 'prompt': number prompt needs a variable name, not '9x'",
        )
        self.assertTrue(problems[2].startswith("node 'welcome', field 'prompt': 3 is not"))

    def test_missing_action(self) -> None:
        """An action not registered is named."""
        self.assertProblems(
            changed('action = "clock"', 'action = "crm"'),
            "node 'lookup', field 'action': no action named 'crm'",
            actions=builtin_actions(),
        )

    def test_loop_without_wait(self) -> None:
        """A cycle of set/branch/action nodes is refused, with its path."""
        self.assertProblems(
            changed('next = "welcome"', 'next = "route"'),
            "node 'lookup', field 'next': loop route -> lookup -> route passes no play or "
            "collect node",
        )

    def test_self_loop(self) -> None:
        """A node leading to itself is a loop too."""
        self.assertProblems(
            changed('next = "out"', 'next = "target"'),
            "node 'out': is unreachable from the start node 'welcome'",
            "node 'target', field 'next': loop target -> target passes no play or collect node",
        )

    def test_loop_through_play_is_fine(self) -> None:
        """GOOD loops back to its play node (lookup -> welcome): accepted."""
        load_flow(GOOD)

    def test_field_types(self) -> None:
        """Wrong types and out-of-range values name the field."""
        text = changed("max_digits = 1", 'max_digits = "1"')
        text = changed('pattern = "[1-3]"', 'pattern = "[1-3]"\nretries = 99', text)
        text = changed("barge_in = true", "barge_in = 1", text)
        text = changed('result = "time"', 'result = "time"\ntimeout = true', text)
        self.assertProblems(
            text,
            "node 'welcome', field 'barge_in': must be true or false, not an integer",
            "node 'menu', field 'max_digits': must be an integer, not a string",
            "node 'menu', field 'retries': 99 is outside 0-20",
            "node 'lookup', field 'timeout': must be a number of seconds, not a boolean",
        )

    def test_collect_fields(self) -> None:
        """Digit counts, terminator, pattern and timeouts are checked."""
        text = changed("max_digits = 1", "max_digits = 2\nmin_digits = 3")
        text = changed('pattern = "[1-3]"', 'pattern = "[1-3"\nterminator = "##"', text)
        text = changed('variable = "choice"', 'variable = "choice"\nfirst_digit_timeout = 0', text)
        problems = problems_of(text)
        self.assertEqual(
            problems[0], "node 'menu', field 'min_digits': 3 is more than max_digits (2)"
        )
        self.assertEqual(
            problems[1],
            "node 'menu', field 'terminator': '##' is not one DTMF digit (0-9 * # A-D) or \"\"",
        )
        self.assertTrue(
            problems[2].startswith(
                "node 'menu', field 'pattern': is not a valid regular expression"
            )
        )
        self.assertEqual(
            problems[3], "node 'menu', field 'first_digit_timeout': 0 is outside 0.1-300"
        )
        self.assertEqual(len(problems), 4)

    def test_variable_names(self) -> None:
        """Variables are identifiers."""
        self.assertProblems(
            changed('variable = "uri"', 'variable = "the uri"'),
            "node 'target', field 'variable': 'the uri' is not a variable name "
            "(letters, digits, _)",
        )

    def test_expressions(self) -> None:
        """Expression terms are literals, var or digits tables: nothing else."""
        problems = problems_of(
            changed(
                '{ digits = "caller", last = 4 }',
                '{ eval = "1+1" }, { digits = "c", last = -1 }, true',
            )
        )
        self.assertEqual(len(problems), 3)
        for problem in problems:
            self.assertTrue(problem.startswith("node 'target', field 'value': "), problem)
            self.assertIn("is not a value", problem)

    def test_transfer_target(self) -> None:
        """A literal target must be a number or a sip:/sips:/tel: URI."""
        for good in ('"+4930123"', '"sip:bob@example.com"', '"tel:+1555"', '"*43"'):
            load_flow(changed('{ var = "uri" }', good))
        self.assertProblems(
            changed('{ var = "uri" }', '"bob"'),
            "node 'out', field 'target': 'bob' is neither a number nor a sip:, sips: or tel: URI",
        )

    def test_hangup_cause(self) -> None:
        """A cause is a lower-case word."""
        self.assertProblems(
            changed('cause = "normal"', 'cause = "Normal Clearing"'),
            "node 'bye', field 'cause': 'Normal Clearing' is not a cause (lower-case letters, "
            "digits, _)",
        )

    def test_branch_cases(self) -> None:
        """A branch needs cases naming nodes."""
        self.assertProblems(
            changed('"3" = "bye"', '"3" = 3'),
            "node 'route', field 'cases.\"3\"': must name a node, not an integer",
        )
        problems = problems_of(changed('{ "1" = "lookup", "2" = "target", "3" = "bye" }', "{}"))
        self.assertEqual(
            problems[0],
            "node 'route', field 'cases': must be a table of value = \"node\", "
            "with at least one case",
        )

    def test_document_level(self) -> None:
        """Unknown tables and fields, bad variables, no nodes."""
        self.assertProblems(
            '[flow]\nstart = "a"\nsteps = 3\n[variables]\nx = 1.5\n[extra]\n',
            "field 'extra': unknown table (expected [flow], [variables], [nodes.NAME])",
            "field 'flow.steps': unknown field (did you mean 'max_steps'?)",
            "field 'variables.x': must be text or an integer, not a number",
            "field 'nodes': the flow has no nodes: add [nodes.NAME] tables",
        )

    def test_node_names(self) -> None:
        """Node names are short words."""
        self.assertProblems(
            changed("[nodes.bye]", '[nodes."bye now"]'),
            "node 'bye now': is not a node name (letters, digits, _, -)",
            "node 'menu', field 'on_timeout': no node named 'bye'",
            "node 'menu', field 'on_invalid': no node named 'bye'",
            "node 'route', field 'cases.\"3\"': no node named 'bye'",
            "node 'route', field 'default': no node named 'bye'",
            "node 'lookup', field 'on_error': no node named 'bye'",
            "node 'out', field 'on_error': no node named 'bye'",
        )

    def test_error_lists_every_problem(self) -> None:
        """The exception's text has one line per problem, with the source."""
        text = changed('type = "hangup"', 'type = "end"')
        text = changed("max_digits = 1", "max_digits = 0", text)
        with self.assertRaises(FlowError) as caught:
            load_flow(text, source="ivr/main.toml")
        error = caught.exception
        self.assertIsInstance(error, ValueError)
        self.assertEqual(error.source, "ivr/main.toml")
        self.assertEqual(
            str(error).splitlines()[0],
            "flow ivr/main.toml: node 'menu', field 'max_digits': 0 is outside 1-64",
        )
        self.assertTrue(
            all(line.startswith("flow ivr/main.toml: ") for line in str(error).splitlines())
        )
        self.assertEqual(len(error.problems), len(str(error).splitlines()))
        self.assertIn(FlowProblem("bye", "type", error.problems[1].message), error.problems)


class ModelTests(SynchronousTestCase):
    """Expressions and digit validation."""

    def test_evaluate(self) -> None:
        """Terms concatenate; digits keep 0-9 only, then first/last."""
        variables = {"caller": "+49 (30) 1234-5678", "ext": "1001"}
        terms = (
            Term("literal", "sip:"),
            Term("var", "ext"),
            Term("literal", "/"),
            Term("digits", "caller", first=4),
            Term("digits", "caller", last=4),
            Term("digits", "caller", last=0),
            Term("var", "unset"),
        )
        self.assertEqual(evaluate(terms, variables), "sip:1001/49305678")

    @given(st.text(max_size=40), st.none() | st.integers(0, 64), st.none() | st.integers(0, 64))
    def test_digits_property(self, value: str, first: int | None, last: int | None) -> None:
        """A digits term yields only ASCII digits, in order, and no more than asked."""
        result = evaluate((Term("digits", "v", first, last),), {"v": value})
        self.assertTrue(all(c in "0123456789" for c in result))
        digits = "".join(c for c in value if c in "0123456789")
        self.assertIn(result, digits)
        for limit in (first, last):
            if limit is not None:
                self.assertLessEqual(len(result), limit)

    def test_accepts(self) -> None:
        """An entry is valid with enough digits matching the whole pattern."""
        node = CollectNode("n", "v", min_digits=2, pattern=re.compile("[0-9]+"))
        self.assertEqual(
            [node.accepts(x) for x in ("1", "12", "12*", "")], [False, True, False, False]
        )
        self.assertTrue(CollectNode("n", "v", min_digits=0).accepts(""))
