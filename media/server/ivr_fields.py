"""IVR flows: reading one node's table into a model node.

Each reader records problems (naming the node and the field) instead of
raising, so that the loader can report every problem of a document at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Container, Mapping
from typing import Any

from media.server.conference import ROOM_NAME
from media.server.ivr_model import (
    DIGITS,
    NAME,
    VARIABLE,
    ActionNode,
    BranchNode,
    CollectNode,
    ConferenceNode,
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

__all__ = ["NODE_TYPES", "Fields", "kind_of", "parse_node"]

_NUMBER = re.compile(r"\+?[0-9*#]{1,32}\Z")
_URI = re.compile(r"(sips?|tel):[^\s<>\"]{1,250}\Z")
_CAUSE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


_MISSING = object()


class Fields:
    """Read one node's table, recording problems instead of raising.

    @ivar used: the field names read so far (the others are unknown).
    """

    def __init__(self, node: str, table: Mapping[str, Any], problems: list[FlowProblem]):
        self.node = node
        self.table = table
        self.problems = problems
        self.used = {"type", "description"}

    def problem(self, field_name: str | None, message: str) -> None:
        """Record a problem with one of this node's fields."""
        self.problems.append(FlowProblem(self.node, field_name, message))

    def raw(self, name: str, required: bool) -> Any:
        """The value of a field as written, or C{_MISSING}."""
        self.used.add(name)
        value = self.table.get(name, _MISSING)
        if value is _MISSING and required:
            self.problem(name, "is required")
        return value

    def text(self, name: str, default: Any = None, *, required: bool = False) -> Any:
        """A string field."""
        value = self.raw(name, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.problem(name, f"must be a string, not {kind_of(value)}")
            return default
        return value

    def variable(self, name: str, *, required: bool = True) -> str | None:
        """A field naming a variable."""
        value = self.text(name, required=required)
        if value is not None and not VARIABLE.match(value):
            self.problem(name, f"{value!r} is not a variable name (letters, digits, _)")
            return None
        return value

    def edge(self, name: str, *, required: bool = True) -> Any:
        """A field naming a node (checked later, once every node is known)."""
        return self.text(name, required=required)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        """A number of seconds within C{low}-C{high}."""
        value = self.raw(name, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(name, f"must be a number of seconds, not {kind_of(value)}")
            return default
        if not low <= value <= high:
            self.problem(name, f"{value} is outside {low:g}-{high:g}")
            return default
        return float(value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """An integer within C{low}-C{high}."""
        value = self.raw(name, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, f"must be an integer, not {kind_of(value)}")
            return default
        if not low <= value <= high:
            self.problem(name, f"{value} is outside {low}-{high}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        """A boolean field."""
        value = self.raw(name, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"must be true or false, not {kind_of(value)}")
            return default
        return value

    def prompts(self, name: str, *, required: bool = False) -> tuple[PromptSpec, ...]:
        """A prompt field: one prompt item or an array of them."""
        value = self.raw(name, required)
        if value is _MISSING:
            return ()
        items = value if isinstance(value, list) else [value]
        if not items:
            self.problem(name, "is empty: give at least one prompt")
        specs = []
        for item in items:
            spec = self._prompt(name, item)
            if spec is not None:
                specs.append(spec)
        return tuple(specs)

    def _prompt(self, name: str, item: Any) -> PromptSpec | None:
        if isinstance(item, str):
            if not item:
                self.problem(name, "a prompt name is empty")
                return None
            return PromptSpec("file", item)
        kinds = ("number", "duration", "date", "digits")
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in kinds:
            self.problem(
                name,
                f"{item!r} is not a prompt: use a prompt name or one of "
                '{number = "var"}, {duration = "var"}, {date = "var" or "today"}, '
                '{digits = "var"}',
            )
            return None
        ((kind, variable),) = item.items()
        if not isinstance(variable, str) or not VARIABLE.match(variable):
            self.problem(name, f"{kind} prompt needs a variable name, not {variable!r}")
            return None
        return PromptSpec(kind, variable)

    def expression(self, name: str) -> tuple[Term, ...]:
        """A required expression: one term or an array of terms, concatenated."""
        value = self.raw(name, True)
        if value is _MISSING:
            return ()
        items = value if isinstance(value, list) else [value]
        terms = []
        for item in items:
            term = self._term(name, item)
            if term is not None:
                terms.append(term)
        return tuple(terms)

    def _term(self, name: str, item: Any) -> Term | None:
        if isinstance(item, str | int) and not isinstance(item, bool):
            return Term("literal", str(item))
        if isinstance(item, dict) and set(item) == {"var"} and _is_variable(item["var"]):
            return Term("var", item["var"])
        if (
            isinstance(item, dict)
            and "digits" in item
            and set(item) <= {"digits", "first", "last"}
            and _is_variable(item["digits"])
            and all(_is_count(item.get(k)) for k in ("first", "last"))
        ):
            return Term("digits", item["digits"], item.get("first"), item.get("last"))
        self.problem(
            name,
            f'{item!r} is not a value: use text, a number, {{var = "name"}} or '
            '{digits = "name", first = N, last = N}',
        )
        return None

    def finish(self, known: Container[str]) -> None:
        """Report every field that was never read as unknown."""
        for name in self.table:
            if name not in self.used and name not in known:
                hint = difflib.get_close_matches(name, sorted(self.used), n=1)
                suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.problem(name, f"unknown field{suffix}")


def _is_variable(value: Any) -> bool:
    return isinstance(value, str) and VARIABLE.match(value) is not None


def _is_count(value: Any) -> bool:
    return value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 64
    )


def kind_of(value: Any) -> str:
    """How a TOML value is called in messages: C{an integer}, C{a table}..."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# -- one parser per node type -----------------------------------------------


def _play(f: Fields) -> Node:
    return PlayNode(
        f.node,
        prompts=f.prompts("prompt", required=True),
        barge_in=f.flag("barge_in", False),
        next=f.edge("next"),
    )


def _collect(f: Fields) -> Node:
    max_digits = f.integer("max_digits", 1, 1, 64)
    min_digits = f.integer("min_digits", 1, 0, 64)
    if min_digits > max_digits:
        f.problem("min_digits", f"{min_digits} is more than max_digits ({max_digits})")
    terminator = f.text("terminator", "#")
    if terminator and terminator not in DIGITS:
        f.problem("terminator", f'{terminator!r} is not one DTMF digit (0-9 * # A-D) or ""')
        terminator = "#"
    pattern_text = f.text("pattern")
    pattern = None
    if pattern_text is not None:
        try:
            pattern = re.compile(pattern_text)
        except re.error as e:
            f.problem("pattern", f"is not a valid regular expression: {e}")
    return CollectNode(
        f.node,
        variable=f.variable("variable") or "",
        prompts=f.prompts("prompt"),
        invalid_prompts=f.prompts("invalid_prompt"),
        timeout_prompts=f.prompts("timeout_prompt"),
        barge_in=f.flag("barge_in", True),
        max_digits=max_digits,
        min_digits=min_digits,
        terminator=terminator,
        first_digit_timeout=f.number("first_digit_timeout", 5.0, 0.1, 300),
        inter_digit_timeout=f.number("inter_digit_timeout", 3.0, 0.1, 300),
        retries=f.integer("retries", 2, 0, 20),
        pattern=pattern,
        next=f.edge("next"),
        on_timeout=f.edge("on_timeout", required=False),
        on_invalid=f.edge("on_invalid", required=False),
    )


def _branch(f: Fields) -> Node:
    raw = f.raw("cases", True)
    cases: dict[str, str] = {}
    if raw is not _MISSING:
        if not isinstance(raw, dict) or not raw:
            f.problem("cases", 'must be a table of value = "node", with at least one case')
        else:
            for value, target in raw.items():
                if isinstance(target, str):
                    cases[value] = target
                else:
                    f.problem(f'cases."{value}"', f"must name a node, not {kind_of(target)}")
    return BranchNode(
        f.node, variable=f.variable("variable") or "", cases=cases, default=f.edge("default")
    )


def _set(f: Fields) -> Node:
    return SetNode(
        f.node,
        variable=f.variable("variable") or "",
        value=f.expression("value"),
        next=f.edge("next"),
    )


def _action(f: Fields) -> Node:
    return ActionNode(
        f.node,
        action=f.text("action", "", required=True),
        result=f.variable("result", required=False),
        timeout=f.number("timeout", 30.0, 0, 86400),
        next=f.edge("next"),
        on_error=f.edge("on_error", required=False),
    )


#: The longest C{timeout} of a transfer node (seconds).
MAX_TRANSFER_TIMEOUT = 600


def _transfer(f: Fields) -> Node:
    target = f.expression("target")
    if target and all(t.kind == "literal" for t in target):
        text = evaluate(target, {})
        if not (_NUMBER.match(text) or _URI.match(text)):
            f.problem("target", f"{text!r} is neither a number nor a sip:, sips: or tel: URI")
    timeout = f.number("timeout", 0.0, 1, MAX_TRANSFER_TIMEOUT) or None
    return TransferNode(f.node, target=target, on_error=f.edge("on_error", required=False),
                        timeout=timeout)


#: The largest C{max_participants} of a conference node.
MAX_PARTICIPANTS = 1000


def _key(f: Fields, name: str) -> str:
    """A field naming one DTMF key, or C{""} for none."""
    value = f.text(name, "")
    if value and value not in DIGITS:
        f.problem(name, f'{value!r} is not one DTMF digit (0-9 * # A-D) or ""')
        return ""
    return value


def _conference(f: Fields) -> Node:
    room = f.expression("room")
    if room and all(t.kind == "literal" for t in room):
        text = evaluate(room, {})
        if not ROOM_NAME.match(text):
            f.problem("room", f"{text!r} is not a room name (1-64 of letters, digits, _ . + -)")
    leave_digit = _key(f, "leave_digit")
    mute_digit = _key(f, "mute_digit")
    if leave_digit and leave_digit == mute_digit:
        f.problem("mute_digit", f"{mute_digit!r} is the leave_digit already")
    next_node = f.edge("next", required=bool(leave_digit))
    if next_node is not None and not leave_digit:
        f.problem("next", "is never taken: without a leave_digit only hanging up leaves "
                          "the room (add leave_digit, or remove next)")
        next_node = None
    return ConferenceNode(
        f.node,
        room=room,
        muted=f.flag("muted", False),
        announce=f.flag("announce", True),
        max_participants=f.integer("max_participants", 0, 0, MAX_PARTICIPANTS),
        leave_digit=leave_digit,
        mute_digit=mute_digit,
        next=next_node,
        on_full=f.edge("on_full", required=False),
    )


def _hangup(f: Fields) -> Node:
    cause = f.text("cause", "normal")
    if not _CAUSE.match(cause):
        f.problem("cause", f"{cause!r} is not a cause (lower-case letters, digits, _)")
        cause = "normal"
    return HangupNode(f.node, cause=cause)


NODE_TYPES: dict[str, Callable[[Fields], Node]] = {
    "play": _play,
    "collect": _collect,
    "branch": _branch,
    "set": _set,
    "action": _action,
    "transfer": _transfer,
    "hangup": _hangup,
    "conference": _conference,
}


def parse_node(name: str, table: Any, problems: list[FlowProblem]) -> Node | None:
    """Read one C{[nodes.NAME]} table; C{None} when it has no usable type."""
    if not NAME.match(name):
        problems.append(FlowProblem(name, None, "is not a node name (letters, digits, _, -)"))
        return None
    if not isinstance(table, dict):
        problems.append(FlowProblem(name, None, "must be a table ([nodes.NAME])"))
        return None
    node_type = table.get("type")
    parser = NODE_TYPES.get(node_type) if isinstance(node_type, str) else None
    if parser is None:
        if node_type is None:
            message = f"is required (one of {', '.join(NODE_TYPES)})"
        else:
            message = f"unknown node type {node_type!r} (one of {', '.join(NODE_TYPES)})"
        problems.append(FlowProblem(name, "type", message))
        return None
    fields = Fields(name, table, problems)
    node = parser(fields)
    fields.finish(())
    return node
