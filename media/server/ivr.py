"""IVR flows: the declarative model and its loader.

A flow is a TOML document: a C{[flow]} table naming the C{start} node, an
optional C{[variables]} table of initial values, and one C{[nodes.NAME]}
table per node, each with a C{type}:

  - C{play}: play prompts (C{prompt}), optionally interruptible by a digit
    (C{barge_in}), then go to C{next}.
  - C{collect}: prompt, then collect digits into C{variable} (C{max_digits},
    C{min_digits}, C{terminator}, C{first_digit_timeout},
    C{inter_digit_timeout}, C{pattern}), re-prompting up to C{retries}
    times, then C{next}, or C{on_timeout} / C{on_invalid} when every attempt
    failed.
  - C{branch}: go to C{cases[value]} for the value of C{variable}, else to
    C{default}.
  - C{set}: set C{variable} to an expression (C{value}): literals, other
    variables, the digits of another variable, concatenated.  Never eval.
  - C{action}: call a named action registered by a plugin, store its result
    in C{result}, go to C{next} (C{on_error} when it fails or times out).
  - C{transfer}: hand the call to a number or URI (an expression),
    waiting C{timeout} seconds at most for the outcome; C{on_error} when
    it failed with the caller still there.
  - C{hangup}: end the call, with an optional C{cause}.
  - C{conference}: join a conference room (C{room}, an expression) until
    the caller hangs up, or presses C{leave_digit} (then C{next});
    C{on_full} when the room is full (see C{docs/media-server-conference.md}).

Loading validates the whole document and reports every problem at once, each
naming the node and the field (L{FlowError}): unknown node types and fields,
edges to missing nodes, unreachable nodes, missing prompts (against the
prompt catalogue given), unknown actions (against the action names given),
and loops that pass no node waiting for the caller (C{play}, C{collect},
C{conference}).
The model (L{media.server.ivr_model}) is immutable; the interpreter is
L{media.server.ivr_runtime}.
"""

from __future__ import annotations

import tomllib
from collections.abc import Container, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from media.server.ivr_fields import Fields, kind_of, parse_node
from media.server.ivr_model import (
    DEFAULT_MAX_DURATION,
    DEFAULT_MAX_STEPS,
    DIGITS,
    MAX_NODES,
    MAX_STEPS_LIMIT,
    NAME,
    VARIABLE,
    WAIT_TYPES,
    ActionNode,
    BranchNode,
    CollectNode,
    ConferenceNode,
    Flow,
    FlowError,
    FlowProblem,
    HangupNode,
    Node,
    PlayNode,
    PromptSpec,
    SetNode,
    Term,
    TransferNode,
    evaluate,
)

__all__ = [
    "DIGITS",
    "WAIT_TYPES",
    "ActionNode",
    "BranchNode",
    "CollectNode",
    "ConferenceNode",
    "Flow",
    "FlowError",
    "FlowProblem",
    "HangupNode",
    "Node",
    "PlayNode",
    "PromptSpec",
    "SetNode",
    "Term",
    "TransferNode",
    "builtin_flow",
    "evaluate",
    "load_flow",
    "load_flow_file",
    "parse_flow",
]


# -- the document -----------------------------------------------------------


def parse_flow(
    document: Mapping[str, Any],
    *,
    source: str = "<flow>",
    prompts: Container[str] | None = None,
    actions: Container[str] | None = None,
) -> Flow:
    """Build and validate a flow from a parsed TOML document.

    @param document: the document (as L{tomllib.loads} returns it).
    @param source: a label for error messages (usually the file name).
    @param prompts: the prompt catalogue; every recorded prompt named in
        the flow must be in it.  C{None} skips this check.
    @param actions: the registered action names; every C{action} node must
        call one of them.  C{None} skips this check.
    @raise FlowError: listing every problem, each naming node and field.
    """
    problems: list[FlowProblem] = []

    def doc_problem(field_name: str | None, message: str) -> None:
        problems.append(FlowProblem(None, field_name, message))

    for key in document:
        if key not in ("flow", "variables", "nodes"):
            doc_problem(key, "unknown table (expected [flow], [variables], [nodes.NAME])")
    header = document.get("flow", {})
    if not isinstance(header, dict):
        doc_problem("flow", "must be a table")
        header = {}
    head = Fields("", header, [])
    name = head.text("name", Path(source).stem)
    start = head.text("start", required=True)
    max_steps = head.integer("max_steps", DEFAULT_MAX_STEPS, 1, MAX_STEPS_LIMIT)
    max_duration = head.number("max_duration", DEFAULT_MAX_DURATION, 1, 86400)
    head.used.discard("type")
    head.finish(())
    problems.extend(FlowProblem(None, f"flow.{p.field}", p.message) for p in head.problems)

    variables: dict[str, str] = {}
    raw_variables = document.get("variables", {})
    if not isinstance(raw_variables, dict):
        doc_problem("variables", "must be a table")
        raw_variables = {}
    for key, value in raw_variables.items():
        if not VARIABLE.match(key):
            doc_problem(f"variables.{key}", "is not a variable name (letters, digits, _)")
        elif isinstance(value, bool) or not isinstance(value, str | int):
            doc_problem(f"variables.{key}", f"must be text or an integer, not {kind_of(value)}")
        else:
            variables[key] = str(value)

    raw_nodes = document.get("nodes")
    nodes: dict[str, Node] = {}
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        doc_problem("nodes", "the flow has no nodes: add [nodes.NAME] tables")
        raw_nodes = {}
    if len(raw_nodes) > MAX_NODES:
        doc_problem("nodes", f"{len(raw_nodes)} nodes is more than {MAX_NODES}")
        raw_nodes = {}
    for node_name, table in raw_nodes.items():
        node = parse_node(node_name, table, problems)
        if node is not None:
            nodes[node_name] = node

    if start is not None and start not in raw_nodes and raw_nodes:
        doc_problem("flow.start", f"no node named '{start}'")
    _check_edges(nodes, raw_nodes, problems)
    if start in nodes:
        _check_reachable(start, nodes, problems)
    _check_loops(nodes, problems)
    _check_references(nodes, prompts, actions, problems)
    if problems:
        raise FlowError(source, problems)
    return Flow(name, start, nodes, variables, max_steps, max_duration)


def _check_edges(
    nodes: Mapping[str, Node], declared: Container[str], problems: list[FlowProblem]
) -> None:
    for node in nodes.values():
        for field_name, target in node.edges():
            if target is not None and target not in declared:
                problems.append(FlowProblem(node.name, field_name, f"no node named '{target}'"))


def _check_reachable(start: str, nodes: Mapping[str, Node], problems: list[FlowProblem]) -> None:
    seen = {start}
    todo = [start]
    while todo:
        for _, target in nodes[todo.pop()].edges():
            if target in nodes and target not in seen:
                seen.add(target)
                todo.append(target)
    for name in nodes:
        if name not in seen:
            problems.append(
                FlowProblem(name, None, f"is unreachable from the start node '{start}'")
            )


def _check_loops(nodes: Mapping[str, Node], problems: list[FlowProblem]) -> None:
    """Find cycles among nodes that do not wait for the caller."""
    busy = {name for name, node in nodes.items() if node.type not in WAIT_TYPES}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    for root in nodes:
        if root not in busy or root in state:
            continue
        path: list[str] = [root]
        iters = [iter(list(nodes[root].edges()))]
        state[root] = 1
        while iters:
            step = next(iters[-1], None)
            if step is None:
                state[path.pop()] = 2
                iters.pop()
                continue
            field_name, target = step
            if target not in busy:
                continue
            if state.get(target) == 1:
                loop = [*path[path.index(target) :], target]
                problems.append(
                    FlowProblem(
                        path[-1],
                        field_name,
                        f"loop {' -> '.join(loop)} passes no play or collect node",
                    )
                )
            elif target not in state:
                state[target] = 1
                path.append(target)
                iters.append(iter(list(nodes[target].edges())))


def _check_references(
    nodes: Mapping[str, Node],
    prompts: Container[str] | None,
    actions: Container[str] | None,
    problems: list[FlowProblem],
) -> None:
    for node in nodes.values():
        for field_name, specs in node.prompt_fields() if prompts is not None else ():
            for spec in specs:
                if spec.kind == "file" and spec.value not in prompts:
                    problems.append(
                        FlowProblem(node.name, field_name, f"no prompt named '{spec.value}'")
                    )
        if (
            actions is not None
            and isinstance(node, ActionNode)
            and node.action
            and node.action not in actions
        ):
            problems.append(FlowProblem(node.name, "action", f"no action named '{node.action}'"))


def load_flow(
    text: str,
    *,
    source: str = "<flow>",
    prompts: Container[str] | None = None,
    actions: Container[str] | None = None,
) -> Flow:
    """Parse and validate a flow from TOML text.

    @param text: the TOML document.
    @param source: a label for error messages.
    @param prompts: the prompt catalogue, or C{None} to skip that check.
    @param actions: the registered action names, or C{None} to skip.
    @raise FlowError: when the text is not TOML or the flow is invalid.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FlowError(source, [FlowProblem(None, None, f"is not valid TOML: {e}")]) from None
    return parse_flow(document, source=source, prompts=prompts, actions=actions)


def load_flow_file(
    path: str | Path,
    *,
    prompts: Container[str] | None = None,
    actions: Container[str] | None = None,
) -> Flow:
    """Parse and validate a flow file; its name is the default flow name.

    @raise FlowError: when the file cannot be read or the flow is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FlowError(path.name, [FlowProblem(None, None, f"cannot be read: {e}")]) from None
    return load_flow(text, source=path.name, prompts=prompts, actions=actions)


def builtin_flow(
    name: str,
    *,
    prompts: Container[str] | None = None,
    actions: Container[str] | None = None,
) -> Flow:
    """One of the flows shipped under C{media/server/flows/} (C{echo},
    C{speaking_clock}, C{conference}).

    @raise FlowError: when no such flow ships, or it does not validate
        against the catalogue and actions given.
    """
    if not NAME.match(name):
        raise FlowError(name, [FlowProblem(None, None, "is not a flow name")])
    resource = resources.files("media.server").joinpath("flows", f"{name}.toml")
    if not resource.is_file():
        raise FlowError(f"{name}.toml", [FlowProblem(None, None, "no such built-in flow")])
    text = resource.read_text(encoding="utf-8")
    return load_flow(text, source=f"{name}.toml", prompts=prompts, actions=actions)
