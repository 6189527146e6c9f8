"""The simulator protocol every backend speaks, and the records it returns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from e2wm.errors import E2WMError

_ACTION_RE = re.compile(r"^\s*\[(\w+)\]((?:\s*<[^<>]+>\s*\([\d.]+\))*)\s*$")
_ARG_RE = re.compile(r"<([^<>]+)>\s*\(([\d.]+)\)")


@dataclass(frozen=True)
class Target:
    """An object an action is applied to: its class name and graph node id."""

    name: str
    id: int


@dataclass(frozen=True)
class Action:
    """One agent action, e.g. ``[PUTIN] <milk> (12) <fridge> (306)``."""

    verb: str
    targets: tuple[Target, ...] = ()

    def __str__(self) -> str:
        return f"[{self.verb}]" + "".join(f" <{t.name}> ({t.id})" for t in self.targets)

    @classmethod
    def parse(cls, line: str) -> Action:
        """Parse ``[VERB] <name> (id) ...``; ids may carry a script instance as ``(1.417)``."""
        match = _ACTION_RE.match(line)
        if match is None:
            raise E2WMError(f"malformed action line: {line.strip()!r}")
        targets = []
        for name, ref in _ARG_RE.findall(match.group(2)):
            node_id = ref.rsplit(".", 1)[-1]
            if not node_id.isdigit():
                raise E2WMError(f"malformed object id ({ref}) in action line: {line.strip()!r}")
            targets.append(Target(name.strip().lower().replace(" ", "_"), int(node_id)))
        return cls(match.group(1).upper(), tuple(targets))


@dataclass(frozen=True)
class Edge:
    """A directed relation between two graph nodes."""

    from_id: int
    relation: str
    to_id: int


@dataclass(frozen=True)
class NodeStateChange:
    """States a node gained and lost in one step."""

    id: int
    name: str
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @classmethod
    def between(cls, node_id: int, name: str, old: set[str], new: set[str]) -> NodeStateChange | None:
        """The change from states ``old`` to ``new``, or None if they are the same."""
        if old == new:
            return None
        return cls(node_id, name, tuple(sorted(new - old)), tuple(sorted(old - new)))


@dataclass
class StateChange:
    """The net effect of one step on the scene graph."""

    nodes: list[NodeStateChange] = field(default_factory=list)
    edges_added: list[Edge] = field(default_factory=list)
    edges_removed: list[Edge] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.nodes or self.edges_added or self.edges_removed)


@dataclass
class StepResult:
    """What a step returns: success, or the precondition that failed, and the change."""

    action: Action
    success: bool
    failure: str | None
    change: StateChange


class Simulator(Protocol):
    """A household simulator an agent acts in."""

    def reset(self, graph: dict[str, Any] | None = None) -> None:
        """Start from a scene graph (``{"nodes": [...], "edges": [...]}``); None: the default scene."""

    def valid_actions(self, objects: set[int] | None = None) -> list[Action]:
        """Actions whose preconditions hold now, optionally only on the given node ids."""

    def step(self, action: Action) -> StepResult:
        """Execute one action; on failure the state is left unchanged."""

    def graph(self) -> dict[str, Any]:
        """The current scene graph as a JSON-able dict."""
