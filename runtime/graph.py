"""A picture of a flow plan: Mermaid and Graphviz DOT text (``evflow graph``).

Each node is a box labelled with its name (or id) and type, one subgraph/cluster per tab; config
nodes are hexagons, joined by dotted lines to the nodes that use them. Wires go from a port to a
node, labelled with the port number when the node has several; a node's error port is dashed and red.

Everything taken from the flow file is untrusted text: it only ever appears inside a quoted label,
escaped for the target language, and the nodes get generated ids (``n0``, ``n1``, ...), so a name
such as ``"] --> x{`` or ``<script>`` cannot add nodes, edges or markup to the picture.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from . import redaction
from .validate import FlowPlan, PlannedNode

__all__ = ["to_dot", "to_mermaid"]

# Characters left as they are in Mermaid labels; every other one becomes an entity code (#60;).
_MERMAID_PLAIN = frozenset(" _-.,:/()?!+=@'")


@attrs.frozen
class _Edge:
    source: str  # generated ids
    target: str
    label: str = ""
    kind: str = "wire"  # "wire", "error" (the node's error port) or "config" (a config-node reference)


@attrs.frozen
class _Box:
    id: str  # generated
    title: str  # the node's name, or its id
    type: str
    is_config: bool


@attrs.frozen
class _Picture:
    """What both formats draw: boxes grouped by tab (label None: no tab), and the edges."""

    groups: tuple[tuple[str | None, tuple[_Box, ...]], ...]
    edges: tuple[_Edge, ...]


def _text(value: str) -> str:
    # Line breaks and other control characters in a name would end a statement in either language:
    # they become spaces. Secrets given with --credentials never appear, even if a name used one.
    return redaction.redact("".join(ch if ch.isprintable() else " " for ch in value))


def _picture(plan: FlowPlan) -> _Picture:
    ids = {node.id: f"n{index}" for index, node in enumerate(plan.nodes)}
    by_tab: dict[str, list[PlannedNode]] = {}
    for node in plan.nodes:
        by_tab.setdefault(node.tab, []).append(node)
    groups = []
    for tab, nodes in by_tab.items():
        # Nodes of no tab (usually config nodes) are drawn outside every subgraph; a tab the
        # files do not declare (a validation warning) is labelled with its id.
        label = None if not tab else _text(plan.tabs.get(tab, tab))
        boxes = tuple(_Box(ids[n.id], _text(n.name or n.id), _text(n.type), n.is_config) for n in nodes)
        groups.append((label, boxes))

    edges: list[_Edge] = []
    for node in plan.nodes:
        several = len(node.wires) > 1
        for port, targets in enumerate(node.wires):
            is_error = port == node.node_class.error_port
            label = str(port) if several else ""
            if is_error:
                label = f"{label}: error" if label else "error"
            for target in targets:
                edges.append(_Edge(ids[node.id], ids[target], label, "error" if is_error else "wire"))
        for config_id in node.references():
            edges.append(_Edge(ids[node.id], ids[config_id], kind="config"))
    return _Picture(tuple(groups), tuple(edges))


def _mermaid_escape(text: str) -> str:
    # Mermaid has no backslash escapes; "#NN;" is its entity code, turned into &#NN; when drawn.
    return "".join(ch if ch.isalnum() or ch in _MERMAID_PLAIN else f"#{ord(ch)};" for ch in text)


def to_mermaid(plan: FlowPlan) -> str:
    picture = _picture(plan)
    lines = ["flowchart LR"]
    for index, (tab_label, boxes) in enumerate(picture.groups):
        indent = "  " if tab_label is None else "    "
        if tab_label is not None:
            lines.append(f'  subgraph t{index}["{_mermaid_escape(tab_label)}"]')
        for box in boxes:
            # <br/> is the only markup, and ours: the text on either side of it is escaped.
            label = f'"{_mermaid_escape(box.title)}<br/>{_mermaid_escape(box.type)}"'
            lines.append(f"{indent}{box.id}{{{{{label}}}}}" if box.is_config else f"{indent}{box.id}[{label}]")
        if tab_label is not None:
            lines.append("  end")
    arrows = {"wire": "-->", "error": "-.->", "config": "-.-"}
    for edge in picture.edges:
        text = f'|"{_mermaid_escape(edge.label)}"|' if edge.label else ""
        lines.append(f"  {edge.source} {arrows[edge.kind]}{text} {edge.target}")
    # linkStyle addresses edges by their position in the text.
    errors = [str(i) for i, edge in enumerate(picture.edges) if edge.kind == "error"]
    if errors:
        lines.append(f"  linkStyle {','.join(errors)} stroke:#c00,color:#c00")
    return "\n".join(lines) + "\n"


def _dot_quote(*lines: str) -> str:
    # In a DOT string backslash starts an escape (\n, \N, \G...): doubled, it is a plain backslash.
    # Graphviz also reads HTML entities in labels ("&amp;" would show as "&"), so "&" is one itself.
    # The lines are joined with DOT's own line break, written by us after escaping.
    escaped = (line.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;") for line in lines)
    return '"' + "\\n".join(escaped) + '"'


def to_dot(plan: FlowPlan) -> str:
    picture = _picture(plan)
    lines = [
        "digraph flow {",
        "  rankdir=LR;",
        '  fontname="Helvetica";',
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]

    def boxes(indent: str, items: tuple[_Box, ...]) -> Iterator[str]:
        for box in items:
            shape = ", shape=hexagon, style=solid" if box.is_config else ""
            yield f"{indent}{box.id} [label={_dot_quote(box.title, box.type)}{shape}];"

    for index, (tab_label, items) in enumerate(picture.groups):
        if tab_label is None:
            lines.extend(boxes("  ", items))
        else:
            lines.append(f"  subgraph cluster_{index} {{")
            lines.append(f"    label={_dot_quote(tab_label)};")
            lines.extend(boxes("    ", items))
            lines.append("  }")
    styles = {
        "wire": "",
        "error": "style=dashed, color=red, fontcolor=red",
        "config": "style=dotted, arrowhead=none",
    }
    for edge in picture.edges:
        attributes = [a for a in (f"label={_dot_quote(edge.label)}" if edge.label else "", styles[edge.kind]) if a]
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"  {edge.source} -> {edge.target}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"
