"""IVR actions: named async callables that flows call from C{action} nodes.

An action is C{(session, variables) -> result}: it receives the call's
L{Session} and the flow's live variables (a mutable mapping of text), may set
variables itself, and returns a result (a plain value, a Deferred or a
coroutine) that the node may store in a variable and a C{branch} may look
at.  Plugins register theirs in an L{ActionRegistry}; two are built in:

  - C{clock}: sets C{hours}, C{minutes}, C{seconds} and C{date} from the
    session's wall clock; returns C{HH:MM}.  The speaking clock uses it.
  - C{echo}: sends the caller's audio back until cancelled (the node's
    C{timeout}) or the caller hangs up; needs an L{EchoSession}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from twisted.internet.defer import Deferred

from media.server.ivr_session import EchoSession, Session

__all__ = [
    "Action",
    "ActionError",
    "ActionRegistry",
    "builtin_actions",
    "clock_action",
    "echo_action",
]

#: An action: C{(session, variables) -> result}, the result possibly a
#: Deferred or an awaitable.
Action = Callable[[Session, MutableMapping[str, str]], Any]


class ActionError(Exception):
    """An action could not do its job; a flow takes the node's C{on_error}."""


class ActionRegistry:
    """Actions by name; a flow is validated against L{names}."""

    def __init__(self) -> None:
        """An empty registry."""
        self._actions: dict[str, Action] = {}

    def register(self, name: str, action: Action) -> None:
        """Add an action.

        @raise ValueError: when the name is taken (two plugins must not
            silently replace each other's action).
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"an action name must be non-empty text, not {name!r}")
        if name in self._actions:
            raise ValueError(f"action {name!r} is already registered")
        if not callable(action):
            raise ValueError(f"action {name!r} is not callable")
        self._actions[name] = action

    def get(self, name: str) -> Action | None:
        """The action of that name, or C{None}."""
        return self._actions.get(name)

    def names(self) -> frozenset[str]:
        """Every registered name."""
        return frozenset(self._actions)

    def __contains__(self, name: object) -> bool:
        """Whether an action of that name is registered."""
        return name in self._actions

    def __iter__(self) -> Iterator[str]:
        """The registered names."""
        return iter(self._actions)


async def clock_action(session: Session, variables: MutableMapping[str, str]) -> str:
    """Set C{hours} (0-23), C{minutes}, C{seconds} and C{date} (ISO) from
    the session's clock; return C{HH:MM}."""
    now = session.now()
    variables["hours"] = str(now.hour)
    variables["minutes"] = str(now.minute)
    variables["seconds"] = str(now.second)
    variables["date"] = now.date().isoformat()
    return f"{now.hour:02d}:{now.minute:02d}"


def echo_action(session: Session, variables: MutableMapping[str, str]) -> Deferred[None]:
    """Loop the caller's audio back until the node's timeout cancels it.

    @raise ActionError: when the session cannot echo.
    """
    if not isinstance(session, EchoSession):
        raise ActionError("this session cannot echo audio")
    return session.echo()


def builtin_actions() -> ActionRegistry:
    """A registry holding the built-in C{clock} and C{echo} actions."""
    registry = ActionRegistry()
    registry.register("clock", clock_action)
    registry.register("echo", echo_action)
    return registry
