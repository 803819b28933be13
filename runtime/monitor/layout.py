"""Where the status page draws each node: Node-RED's own ``x``/``y`` when the flow file has them
for every node of a tab (a flow exported from Node-RED's editor looks as it did there), else in
columns by the longest wire path from the tab's first nodes. Tabs are stacked top to bottom; the
config nodes share a last row."""

from __future__ import annotations

from ..validate import FlowPlan, PlannedNode

__all__ = ["COLUMN", "ROW", "place"]

COLUMN = 220  # between columns, and a node's width on the page is below this
ROW = 70
_MARGIN = 60
_BETWEEN_TABS = 100
_EDITOR_X = 1.5
_EDITOR_Y = 1.7


def place(plan: FlowPlan) -> dict[str, tuple[float, float]]:
    """Each node's centre, in page pixels."""
    by_tab: dict[str, list[PlannedNode]] = {}
    configs = []
    for node in plan.nodes:
        if node.is_config:
            configs.append(node)
        else:
            by_tab.setdefault(node.tab, []).append(node)
    positions: dict[str, tuple[float, float]] = {}
    top = float(_MARGIN)
    for nodes in by_tab.values():
        placed = _editor_positions(nodes) or _in_columns(nodes)
        least_y = min(y for _, y in placed.values())
        least_x = min(x for x, _ in placed.values())
        for node_id, (x, y) in placed.items():
            positions[node_id] = (x - least_x + _MARGIN + COLUMN / 2, y - least_y + top)
        top = max(y for _, y in positions.values()) + _BETWEEN_TABS
    for index, node in enumerate(configs):
        positions[node.id] = (_MARGIN + COLUMN / 2 + index * COLUMN, top)
    return positions


def _editor_positions(nodes: list[PlannedNode]) -> dict[str, tuple[float, float]] | None:
    positions = {}
    for node in nodes:
        x, y = node.record.data.get("x"), node.record.data.get("y")
        if not _is_number(x) or not _is_number(y):
            return None
        positions[node.id] = (float(x), float(y))
    # The editor's nodes are about 120 x 30 px, usually 40 px apart; the page's are 170 x 44 with a
    # status line under them: spread the editor's picture so that no two boxes overlap.
    return {node_id: (x * _EDITOR_X, y * _EDITOR_Y) for node_id, (x, y) in positions.items()}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _in_columns(nodes: list[PlannedNode]) -> dict[str, tuple[float, float]]:
    ids = {node.id for node in nodes}
    targets = {node.id: [t for port in node.wires for t in port if t in ids] for node in nodes}
    # Longest path from a node nothing wires to; relaxed at most once per node, so a loop of wires
    # cannot push its nodes right forever.
    column = dict.fromkeys(ids, 0)
    for _ in range(len(nodes)):
        changed = False
        for node in nodes:
            for target in targets[node.id]:
                if column[target] < column[node.id] + 1 <= len(nodes):
                    column[target] = column[node.id] + 1
                    changed = True
        if not changed:
            break
    rows: dict[int, int] = {}
    positions = {}
    for node in nodes:  # flow-file order within a column
        row = rows.get(column[node.id], 0)
        rows[column[node.id]] = row + 1
        positions[node.id] = (float(column[node.id] * COLUMN), float(row * ROW))
    return positions
