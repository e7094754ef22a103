"""The dependency graph of an agenda: which operations must succeed before which.

An operation waits for another in two ways: it names it in ``params.dependsOn``, or its
payload references its output (``@<probe.out::/width>``). The union of both is its set of
:func:`dependencies`; an operation is ready when all of them have succeeded. The graph
maps each operation to its dependencies, so an edge ``a -> b`` reads "a needs b".

A cycle makes every operation on it wait forever, so submissions with one are rejected.
:func:`find_cycles` reports them without enumerating every elementary cycle (there can
be exponentially many): it finds the strongly connected components (Tarjan), and in each
one reports shortest cycles until every operation of the component appears in one. Each
operation caught in a loop is thus named, and no cycle is reported twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping

from popflow.engine.agenda import depends_on
from popflow.engine.references import find_references, referenced_operation
from popflow.events.vocabulary import Operation

_NOTHING: frozenset[str] = frozenset()


def referenced_operations(operation: Operation, names: Collection[str]) -> frozenset[str]:
    """The operations among ``names`` whose output ``operation``'s payload references."""
    if not operation.payload:  # nothing, or an empty container: no string to look into
        return _NOTHING
    found = (referenced_operation(ref.name) for ref in find_references(operation.payload))
    return frozenset(name for name in found if name is not None and name in names)


def dependencies(operation: Operation, names: Collection[str]) -> frozenset[str]:
    """What ``operation`` waits for: its ``dependsOn`` and the operations it references.

    ``names`` are the agenda's operation names. A reference to any other name is not a
    dependency (a token, or a mistake that validation reports); ``dependsOn`` entries are
    kept as written, so an unknown one keeps the operation waiting rather than running it
    early. Raises ValueError when ``dependsOn`` is malformed (validation rejects that).
    """
    found = frozenset(depends_on(operation)) | referenced_operations(operation, names)
    return found or _NOTHING  # most operations wait for nothing: share one empty set


def find_cycles(graph: Mapping[str, Iterable[str]], *, limit: int = 100) -> list[list[str]]:
    """Cycles of ``graph`` as closed paths (``["a", "b", "a"]``), at most ``limit`` of them.

    Every node on some cycle appears in at least one reported cycle. Edges to nodes that
    are not keys of ``graph`` are ignored. The result is deterministic: components and
    neighbours are explored in the order of ``graph``'s keys.
    """
    order = {node: index for index, node in enumerate(graph)}
    adjacency = {
        node: sorted({t for t in targets if t in order}, key=order.__getitem__)
        for node, targets in graph.items()
    }
    cycles: list[list[str]] = []
    for component in _cyclic_components(adjacency, order):
        for cycle in _covering_cycles(component, adjacency):
            if len(cycles) == limit:
                return cycles
            cycles.append(cycle)
    return cycles


def _cyclic_components(
    adjacency: Mapping[str, list[str]], order: Mapping[str, int]
) -> list[list[str]]:
    """Components that contain a cycle, each sorted by ``order``, in ``order`` of their first."""
    components = [
        sorted(component, key=order.__getitem__)
        for component in _Tarjan(adjacency).components()
        if len(component) > 1 or component[0] in adjacency[component[0]]
    ]
    return sorted(components, key=lambda component: order[component[0]])


def _covering_cycles(
    component: list[str], adjacency: Mapping[str, list[str]]
) -> Iterator[list[str]]:
    """Shortest cycles through not-yet-covered members until all members are covered."""
    members = set(component)
    covered: set[str] = set()
    for start in component:
        if start not in covered:
            cycle = _shortest_cycle(start, adjacency, members)
            covered.update(cycle)
            yield cycle  # new: it contains ``start``, which no earlier cycle did


def _shortest_cycle(start: str, adjacency: Mapping[str, list[str]], members: set[str]) -> list[str]:
    """Breadth-first search from ``start`` back to itself, within its component."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in adjacency[node]:
            if target == start:
                return _path_back(parents, node, start)
            if target in members and target not in parents:
                parents[target] = node
                queue.append(target)
    raise AssertionError(f"{start} belongs to a cyclic component but lies on no cycle")


def _path_back(parents: Mapping[str, str], last: str, start: str) -> list[str]:
    path = [last]
    while path[-1] != start:
        path.append(parents[path[-1]])
    path.reverse()
    return [*path, start]


class _Tarjan:
    """Tarjan's strongly connected components, iterative (agendas may be long chains)."""

    def __init__(self, adjacency: Mapping[str, list[str]]) -> None:
        self._adjacency = adjacency
        self._index: dict[str, int] = {}
        self._low: dict[str, int] = {}
        self._stack: list[str] = []
        self._on_stack: set[str] = set()
        self._found: list[list[str]] = []

    def components(self) -> list[list[str]]:
        for node in self._adjacency:
            if node not in self._index:
                self._explore(node)
        return self._found

    def _explore(self, root: str) -> None:
        work = [(root, iter(self._adjacency[self._enter(root)]))]
        while work:
            node, targets = work[-1]
            target = next((t for t in targets if self._visit_edge(node, t)), None)
            if target is not None:
                work.append((target, iter(self._adjacency[self._enter(target)])))
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                self._low[parent] = min(self._low[parent], self._low[node])
            if self._low[node] == self._index[node]:
                self._close(node)

    def _visit_edge(self, node: str, target: str) -> bool:
        """Record the edge; True when ``target`` is unvisited and must be explored now."""
        if target not in self._index:
            return True
        if target in self._on_stack:
            self._low[node] = min(self._low[node], self._index[target])
        return False

    def _enter(self, node: str) -> str:
        self._index[node] = self._low[node] = len(self._index)
        self._stack.append(node)
        self._on_stack.add(node)
        return node

    def _close(self, root: str) -> None:
        component: list[str] = []
        while not component or component[-1] != root:
            node = self._stack.pop()
            self._on_stack.discard(node)
            component.append(node)
        self._found.append(component)
