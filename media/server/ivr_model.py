"""IVR flows: the immutable model (nodes, prompt specs, expressions, problems).

The loader (L{media.server.ivr}) builds these from a TOML document and the
interpreter (L{media.server.ivr_runtime}) runs them; the model itself knows
no TOML, no time, no session and no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

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
    "evaluate",
]

DIGITS = frozenset("0123456789*#ABCD")
#: Node types that wait for the caller; every loop must pass one of them.
WAIT_TYPES = frozenset({"play", "collect", "conference"})
#: Upper bounds that keep a flow document sane.
MAX_NODES = 1000
MAX_STEPS_LIMIT = 100_000
DEFAULT_MAX_STEPS = 1000
DEFAULT_MAX_DURATION = 3600.0

#: What a node or flow name may be.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\Z")
#: What a variable name may be.
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

PromptKind = Literal["file", "number", "duration", "date", "digits"]
TermKind = Literal["literal", "var", "digits"]


# -- problems ---------------------------------------------------------------


@dataclass(frozen=True)
class FlowProblem:
    """One thing wrong with a flow document.

    @ivar node: the node it concerns, or C{None} for the document itself.
    @ivar field: the field it concerns (C{cases."1"} for a branch case), or
        C{None}.
    @ivar message: what is wrong, in words.
    """

    node: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        """C{node 'menu', field 'next': no node named 'bye'}."""
        where = []
        if self.node is not None:
            where.append(f"node '{self.node}'")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class FlowError(ValueError):
    """A flow document that cannot be loaded, with every problem found.

    @ivar source: where the document came from (a file name or a label).
    @ivar problems: the problems, in document order.
    """

    def __init__(self, source: str, problems: Sequence[FlowProblem]) -> None:
        """
        @param source: where the document came from.
        @param problems: at least one problem.
        """
        self.source = source
        self.problems = tuple(problems)
        lines = [f"flow {source}: {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


# -- the model --------------------------------------------------------------


@dataclass(frozen=True)
class PromptSpec:
    """One item of a prompt sequence, as written in the flow.

    @ivar kind: C{file} (a recorded prompt by name), C{number},
        C{duration} (seconds), C{date} or C{digits} (said one by one).
    @ivar value: the prompt name for C{file}; otherwise the variable to
        say, or C{today} for a date.
    """

    kind: PromptKind
    value: str


@dataclass(frozen=True)
class Term:
    """One part of an expression (C{set} values, C{transfer} targets).

    @ivar kind: C{literal} (the text itself), C{var} (a variable's value)
        or C{digits} (only the characters 0-9 of a variable's value).
    @ivar value: the text, or the variable name.
    @ivar first: for C{digits}, keep only this many leading digits.
    @ivar last: for C{digits}, keep only this many trailing digits.
    """

    kind: TermKind
    value: str
    first: int | None = None
    last: int | None = None


def evaluate(terms: Sequence[Term], variables: Mapping[str, str]) -> str:
    """Concatenate an expression's terms; an unset variable counts as C{""}.

    @param terms: the expression.
    @param variables: the flow's variables.
    @return: the resulting text.
    """
    parts = []
    for term in terms:
        if term.kind == "literal":
            parts.append(term.value)
            continue
        text = str(variables.get(term.value, ""))
        if term.kind == "digits":
            text = "".join(c for c in text if "0" <= c <= "9")
            if term.first is not None:
                text = text[: term.first]
            if term.last is not None:
                text = text[-term.last :] if term.last else ""
        parts.append(text)
    return "".join(parts)


@dataclass(frozen=True)
class Node:
    """What every node has: its name.  Subclasses hold the rest."""

    name: str

    #: The C{type} written in the document.
    type = "node"

    def edges(self) -> Iterator[tuple[str, str]]:
        """Each outgoing edge as C{(field, target node)}."""
        return iter(())

    def prompt_fields(self) -> Iterator[tuple[str, tuple[PromptSpec, ...]]]:
        """Each prompt field as C{(field, prompt specs)}."""
        return iter(())


@dataclass(frozen=True)
class PlayNode(Node):
    """Play prompts, then go on.

    @ivar prompts: what to play.
    @ivar barge_in: whether a digit stops the playback (the digit is kept
        as type-ahead for the next C{collect}).
    @ivar next: the node after it.
    """

    prompts: tuple[PromptSpec, ...] = ()
    barge_in: bool = False
    next: str = ""
    type = "play"

    def edges(self) -> Iterator[tuple[str, str]]:
        """The one edge, C{next}."""
        yield "next", self.next

    def prompt_fields(self) -> Iterator[tuple[str, tuple[PromptSpec, ...]]]:
        """The one prompt field."""
        yield "prompt", self.prompts


@dataclass(frozen=True)
class CollectNode(Node):
    """Prompt and collect digits, with retries.

    An attempt I{times out} when nothing is pressed, and is I{invalid} when
    fewer than C{min_digits} digits were entered or they do not match
    C{pattern}.  A failed attempt plays C{timeout_prompts} or
    C{invalid_prompts} and tries again, C{retries} more times at most.
    """

    variable: str = ""
    prompts: tuple[PromptSpec, ...] = ()
    invalid_prompts: tuple[PromptSpec, ...] = ()
    timeout_prompts: tuple[PromptSpec, ...] = ()
    barge_in: bool = True
    max_digits: int = 1
    min_digits: int = 1
    terminator: str = "#"
    first_digit_timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    retries: int = 2
    pattern: re.Pattern[str] | None = None
    next: str = ""
    on_timeout: str | None = None
    on_invalid: str | None = None
    type = "collect"

    def edges(self) -> Iterator[tuple[str, str]]:
        """C{next}, then C{on_timeout} and C{on_invalid} when given."""
        yield "next", self.next
        if self.on_timeout is not None:
            yield "on_timeout", self.on_timeout
        if self.on_invalid is not None:
            yield "on_invalid", self.on_invalid

    def prompt_fields(self) -> Iterator[tuple[str, tuple[PromptSpec, ...]]]:
        """C{prompt}, C{invalid_prompt} and C{timeout_prompt}."""
        yield "prompt", self.prompts
        yield "invalid_prompt", self.invalid_prompts
        yield "timeout_prompt", self.timeout_prompts

    def accepts(self, digits: str) -> bool:
        """Whether an entry (without terminator) is valid for this node."""
        if len(digits) < self.min_digits:
            return False
        return self.pattern is None or self.pattern.fullmatch(digits) is not None


@dataclass(frozen=True)
class BranchNode(Node):
    """Go where the value of a variable says.

    @ivar variable: the variable looked at.
    @ivar cases: exact values and the node each leads to.
    @ivar default: the node for any other value (an unset variable too).
    """

    variable: str = ""
    cases: Mapping[str, str] = field(default_factory=dict)
    default: str = ""
    type = "branch"

    def edges(self) -> Iterator[tuple[str, str]]:
        """Each case, then C{default}."""
        for value, target in self.cases.items():
            yield f'cases."{value}"', target
        yield "default", self.default

    def target(self, value: str | None) -> str:
        """The node for a value."""
        return self.cases.get(value, self.default) if value is not None else self.default


@dataclass(frozen=True)
class SetNode(Node):
    """Set a variable to an expression, then go on."""

    variable: str = ""
    value: tuple[Term, ...] = ()
    next: str = ""
    type = "set"

    def edges(self) -> Iterator[tuple[str, str]]:
        """The one edge, C{next}."""
        yield "next", self.next


@dataclass(frozen=True)
class ActionNode(Node):
    """Call a plugin's action, store its result, go on.

    @ivar action: the registered action name.
    @ivar result: the variable that receives the result (as text), if any.
    @ivar timeout: seconds before the action is cancelled; C{0} for none.
    @ivar on_error: the node taken when the action fails or times out; the
        flow ends with an error when it is C{None}.
    """

    action: str = ""
    result: str | None = None
    timeout: float = 30.0
    next: str = ""
    on_error: str | None = None
    type = "action"

    def edges(self) -> Iterator[tuple[str, str]]:
        """C{next}, then C{on_error} when given."""
        yield "next", self.next
        if self.on_error is not None:
            yield "on_error", self.on_error


@dataclass(frozen=True)
class TransferNode(Node):
    """Hand the call to a number or URI; the flow ends there when it worked.

    @ivar target: the number or URI (an expression).
    @ivar on_error: the node taken when the transfer failed and the caller
        is still in the call; without it the call is hung up (cause
        C{transfer_failed}).
    @ivar timeout: seconds to wait for the transfer's outcome (C{None}:
        the session's default).
    """

    target: tuple[Term, ...] = ()
    on_error: str | None = None
    timeout: float | None = None
    type = "transfer"

    def edges(self) -> Iterator[tuple[str, str]]:
        """C{on_error} when given."""
        if self.on_error is not None:
            yield "on_error", self.on_error


@dataclass(frozen=True)
class ConferenceNode(Node):
    """Join a conference room until the caller hangs up or leaves.

    @ivar room: the room's name (an expression: a literal, the digits
        collected, the tenant...).
    @ivar muted: join listen-only.
    @ivar announce: the room hears a tone when the caller joins and
        leaves.
    @ivar max_participants: refuse the join when the room holds this many
        already (C{0}: no limit of this node's own).
    @ivar leave_digit: the key that leaves the room and goes to C{next}
        (C{""}: only hanging up leaves).
    @ivar mute_digit: the key that mutes and unmutes the caller (C{""}:
        none).
    @ivar next: the node after leaving with C{leave_digit} (C{None}
        without one).
    @ivar on_full: the node taken when the room is full; without one the
        call is hung up with cause C{room_full}.
    """

    room: tuple[Term, ...] = ()
    muted: bool = False
    announce: bool = True
    max_participants: int = 0
    leave_digit: str = ""
    mute_digit: str = ""
    next: str | None = None
    on_full: str | None = None
    type = "conference"

    def edges(self) -> Iterator[tuple[str, str]]:
        """C{next} and C{on_full} when given."""
        if self.next is not None:
            yield "next", self.next
        if self.on_full is not None:
            yield "on_full", self.on_full


@dataclass(frozen=True)
class HangupNode(Node):
    """End the call; the flow ends there."""

    cause: str = "normal"
    type = "hangup"


@dataclass(frozen=True)
class Flow:
    """A loaded, validated flow.

    @ivar name: the flow's name.
    @ivar start: the first node.
    @ivar nodes: every node by name.
    @ivar variables: the initial variables.
    @ivar max_steps: how many nodes one run may execute before it is
        stopped as runaway.
    @ivar max_duration: seconds one run may last.
    """

    name: str
    start: str
    nodes: Mapping[str, Node]
    variables: Mapping[str, str] = field(default_factory=dict)
    max_steps: int = DEFAULT_MAX_STEPS
    max_duration: float = DEFAULT_MAX_DURATION

    def prompt_names(self) -> set[str]:
        """Every recorded prompt the flow may play."""
        return {
            spec.value
            for node in self.nodes.values()
            for _, specs in node.prompt_fields()
            for spec in specs
            if spec.kind == "file"
        }

    def action_names(self) -> set[str]:
        """Every action the flow may call."""
        return {n.action for n in self.nodes.values() if isinstance(n, ActionNode)}
