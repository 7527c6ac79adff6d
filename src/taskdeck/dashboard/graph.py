"""A workflow (chain, group, chord) as a graph, laid out left to right for an SVG.

The runs come from :meth:`TaskRunQuerySet.graph`; edges are read from what
Celery records, nothing else:

* a run's ``parent_id`` is the run that sent it: a chain link, or a task
  that sent a group from inside its body;
* a chord's callback shares its header's ``group_id`` and has as parent
  whichever header task finished last: it gets an edge from every header task;
* members of a group started from outside any task have no parent: they are
  roots side by side, framed together as one group.

Columns are the longest path from a root; rows keep the order the runs were
first seen in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

NODE_W, NODE_H = 210, 46
COL_GAP, ROW_GAP = 60, 14
PAD = 16


@dataclass
class Node:
    run: Any
    col: int = 0
    row: int = 0
    x: int = 0
    y: int = 0
    callback: bool = False


@dataclass
class Frame:
    """A box around the members of one group (a chord's header, or a plain group)."""

    group_id: str
    label: str
    x: int
    y: int
    w: int
    h: int


@dataclass
class Graph:
    nodes: list[Node]
    edges: list[tuple[Node, Node]]
    frames: list[Frame] = field(default_factory=list)
    width: int = 0
    height: int = 0

    def paths(self) -> list[dict[str, Any]]:
        """SVG path data of each edge: an S-curve from the right of one node to the left of the next."""
        out = []
        for a, b in self.edges:
            x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
            x2, y2 = b.x, b.y + NODE_H // 2
            mid = (x1 + x2) // 2
            out.append({"d": f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}", "state": a.run.state})
        return out


def build(runs: list[Any]) -> Graph:
    by_id = {r.task_id: Node(r) for r in runs}
    nodes = list(by_id.values())
    members: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        if node.run.group_id:
            members[node.run.group_id].append(node)
    edges: list[tuple[Node, Node]] = []
    for node in nodes:
        run = node.run
        parent = by_id.get(run.parent_id) if run.parent_id else None
        if parent is not None and run.group_id and parent.run.group_id == run.group_id:
            node.callback = True  # chord callback: every header task leads to it
            edges += [(m, node) for m in members[run.group_id] if not _is_callback(m, by_id)]
        elif parent is not None:
            edges.append((parent, node))
    _layout(nodes, edges)
    graph = Graph(nodes, edges)
    graph.frames = _frames(members)
    graph.width = max((n.x + NODE_W for n in nodes), default=0) + PAD
    graph.height = max((n.y + NODE_H for n in nodes), default=0) + PAD + 6
    return graph


def _is_callback(node: Node, by_id: dict[str, Node]) -> bool:
    parent = by_id.get(node.run.parent_id) if node.run.parent_id else None
    return bool(parent is not None and node.run.group_id and parent.run.group_id == node.run.group_id)


def _layout(nodes: list[Node], edges: list[tuple[Node, Node]]) -> None:
    incoming: dict[int, list[Node]] = defaultdict(list)
    for a, b in edges:
        incoming[id(b)].append(a)
    # Runs are oldest first, and a run is sent after its parents: one pass settles
    # the columns; a few more cover clocks that disagree across hosts.
    for _ in range(3):
        for node in nodes:
            node.col = max((p.col + 1 for p in incoming[id(node)]), default=0)
    rows: dict[int, int] = defaultdict(int)
    for node in nodes:
        node.row = rows[node.col]
        rows[node.col] += 1
    for node in nodes:
        node.x = PAD + node.col * (NODE_W + COL_GAP)
        node.y = PAD + 14 + node.row * (NODE_H + ROW_GAP)


def _frames(members: dict[str, list[Node]]) -> list[Frame]:
    frames = []
    for group_id, nodes in members.items():
        header = [n for n in nodes if not n.callback]
        if len(header) < 2 or len({n.col for n in header}) != 1:
            continue
        top, bottom = min(n.y for n in header), max(n.y for n in header) + NODE_H
        kind = "chord header" if any(n.callback for n in nodes) else "group"
        frames.append(
            Frame(
                group_id,
                f"{kind} · {len(header)} tasks",
                header[0].x - 8,
                top - 20,
                NODE_W + 16,
                bottom - top + 28,
            )
        )
    return frames
