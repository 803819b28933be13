"""``evflow graph``: Mermaid and DOT pictures of a flow.

Each picture is parsed back, strictly: every line must be one of the forms the format is written in
(so a name cannot add a line, a node or an edge), and what the lines say — boxes with label, type,
shape and tab, edges with port label and kind — must equal what the flow file says, worked out here
from the JSON itself. Hostile names must come back out of the labels unchanged. With Graphviz
installed, the DOT text is also drawn by ``dot`` and the SVG read back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from evflow.runtime.flows import load_plan
from evflow.runtime.graph import to_dot, to_mermaid

CLI = [sys.executable, "-m", "evflow.runtime.cli"]
CERTIFICATE_CHECK = Path(__file__).parent.parent / "flows" / "certificate-check.json"
# The port each request type routes its failures to (README: "port 1 failures").
ERROR_PORTS = {"is-ca-certificate-installed": 1, "get-leaf-certificate-info": 1, "get-verify-location": 1}
CONFIG_TYPES = {"mqtt-broker", "everest-api"}
REFERENCE_FIELDS = ("api", "broker")  # mqtt-broker's own `broker` is a URL: it names no node

# (title, type, is_config, tab label or None) per box; (source title, target title, label, kind) per edge.
Picture = tuple[set[tuple[str, str, bool, str | None]], set[tuple[str, str, str, str]]]

HOSTILE = [
    {"id": 'tab "1" }', "type": "tab", "label": 'evil"] end\nsubgraph x{ <script>alert(1)</script> }'},
    {"id": 'b"] --> x["', "type": "mqtt-broker", "name": "broker }\n} digraph g {", "z": 'tab "1" }',
     "broker": "mqtt://localhost:1883"},
    {"id": 'a"] --> b["x', "type": "inject", "once": True, "z": 'tab "1" }',
     "name": '"quoted" [brackets] {braces}\n--> next; %% # &amp; #quot; #60; `tick` \\N \\" |pipe| end',
     "wires": [["b }", "report"]]},
    {"id": "b }", "type": "log", "z": 'tab "1" }', "name": "<script>alert('x')</script>\u2028end\r\n%%{init}%%",
     "wires": []},
    {"id": "report", "type": "mqtt out", "z": 'tab "1" }', "broker": 'b"] --> x["', "topic": "t", "wires": []},
    {"id": 'c\\"; n0 -> n1; "', "type": "catch", "wires": [["b }"]]},
]


def _clean(text: str) -> str:
    """What a picture shows of flow text: line breaks and other unprintable characters as spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def expected_picture(records: list[dict[str, Any]]) -> Picture:
    tabs = {r["id"]: r["label"] for r in records if r["type"] == "tab"}
    nodes = {r["id"]: r for r in records if r["type"] != "tab"}
    title = {i: _clean(r.get("name") or i) for i, r in nodes.items()}
    boxes = {(title[i], r["type"], r["type"] in CONFIG_TYPES, _clean(tabs[r["z"]]) if r.get("z") else None)
             for i, r in nodes.items()}
    edges = set()
    for i, r in nodes.items():
        ports = r.get("wires", [])
        for port, targets in enumerate(ports):
            error = ERROR_PORTS.get(r["type"]) == port
            label = str(port) if len(ports) > 1 else ""
            if error:
                label = f"{label}: error" if label else "error"
            edges |= {(title[i], title[t], label, "error" if error else "wire") for t in targets}
        for field in REFERENCE_FIELDS:
            if r.get(field) in nodes:
                edges.add((title[i], title[r[field]], "", "config"))
    return boxes, edges


# --- Mermaid, read back ---------------------------------------------------------------------------

_M_LABEL = r'"([^"<>\[\]{}|`\\]*)"'  # everything from the flow is entity-coded inside the quotes
_M_BOX = re.compile(r'^ +(n\d+)(\[|\{\{)"([^"<>\[\]{}|`\\]*)<br/>([^"<>\[\]{}|`\\]*)"(\]|\}\})$')
_M_SUBGRAPH = re.compile(rf"^  subgraph (t\d+)\[{_M_LABEL}\]$")
_M_EDGE = re.compile(rf"^  (n\d+) (-->|-\.->|-\.-)(?:\|{_M_LABEL}\|)? (n\d+)$")
_M_STYLE = re.compile(r"^  linkStyle ([\d,]+) stroke:#c00,color:#c00$")
_M_ARROWS = {"-->": "wire", "-.->": "error", "-.-": "config"}


def _m_text(label: str) -> str:
    assert not re.search(r"#(?!\d+;)", label), f"an unescaped # in {label!r}"
    return re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label)


def read_mermaid(text: str) -> Picture:
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    boxes: dict[str, tuple[str, str, bool, str | None]] = {}
    edges: list[tuple[str, str, str, str]] = []
    tab = None
    styled: set[int] = set()
    for line in lines[1:]:
        if m := _M_SUBGRAPH.match(line):
            assert tab is None, "nested subgraph"
            tab = _m_text(m[2])
        elif line == "  end":
            assert tab is not None
            tab = None
        elif m := _M_BOX.match(line):
            config = m[2] == "{{"
            assert m[5] == ("}}" if config else "]")
            boxes[m[1]] = (_m_text(m[3]), _m_text(m[4]), config, tab)
        elif m := _M_EDGE.match(line):
            edges.append((m[1], m[4], _m_text(m[3] or ""), _M_ARROWS[m[2]]))
        elif m := _M_STYLE.match(line):
            styled |= {int(i) for i in m[1].split(",")}
        else:
            pytest.fail(f"not a line of ours: {line!r}")
    assert tab is None, "unclosed subgraph"
    # The red linkStyle must land exactly on the error edges (it counts edges in text order).
    assert styled == {i for i, e in enumerate(edges) if e[3] == "error"}
    title = {k: v[0] for k, v in boxes.items()}
    return set(boxes.values()), {(title[s], title[t], label, kind) for s, t, label, kind in edges}


# --- DOT, read back -------------------------------------------------------------------------------

_D_STRING = r'"((?:[^"\\]|\\.)*)"'
_D_HEADER = ["digraph flow {", "  rankdir=LR;", '  fontname="Helvetica";',
             '  node [shape=box, style=rounded, fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];']
_D_CLUSTER = re.compile(r"^  subgraph cluster_\d+ \{$")
_D_CLUSTER_LABEL = re.compile(rf"^    label={_D_STRING};$")
_D_BOX = re.compile(rf"^ +(n\d+) \[label={_D_STRING}(, shape=hexagon, style=solid)?\];$")
_D_EDGE = re.compile(rf"^  (n\d+) -> (n\d+)(?: \[(?:label={_D_STRING}(?:, )?)?(.*)\])?;$")
_D_STYLES = {"": "wire", "style=dashed, color=red, fontcolor=red": "error", "style=dotted, arrowhead=none": "config"}


def _d_lines(quoted: str) -> list[str]:
    """A DOT string's lines: \\n breaks a line, \\\\ and \\" stand for themselves, &amp; for &."""
    lines, current, chars = [], "", iter(quoted)
    for ch in chars:
        if ch == "\\":
            escaped = next(chars)
            assert escaped in 'n\\"', f"a stray DOT escape \\{escaped} in {quoted!r}"
            if escaped == "n":
                lines.append(current)
                current = ""
                continue
            ch = escaped
        current += ch
    lines.append(current)
    assert all(not re.search(r"&(?!amp;)", line) for line in lines), f"an unescaped & in {quoted!r}"
    return [line.replace("&amp;", "&") for line in lines]


def read_dot(text: str) -> Picture:
    lines = text.splitlines()
    assert lines[: len(_D_HEADER)] == _D_HEADER and lines[-1] == "}"
    boxes: dict[str, tuple[str, str, bool, str | None]] = {}
    edges = []
    tab: str | None = None
    in_cluster = False
    for line in lines[len(_D_HEADER):-1]:
        if _D_CLUSTER.match(line):
            assert not in_cluster
            in_cluster = True
        elif in_cluster and (m := _D_CLUSTER_LABEL.match(line)):
            (tab,) = _d_lines(m[1])
        elif in_cluster and line == "  }":
            in_cluster, tab = False, None
        elif m := _D_BOX.match(line):
            title, kind = _d_lines(m[2])
            boxes[m[1]] = (title, kind, m[3] is not None, tab)
        elif m := _D_EDGE.match(line):
            label = _d_lines(m[3])[0] if m[3] is not None else ""
            edges.append((m[1], m[2], label, _D_STYLES[m[4] or ""]))
        else:
            pytest.fail(f"not a line of ours: {line!r}")
    assert not in_cluster
    title = {k: v[0] for k, v in boxes.items()}
    return set(boxes.values()), {(title[s], title[t], label, kind) for s, t, label, kind in edges}


READERS = {"mermaid": (to_mermaid, read_mermaid), "dot": (to_dot, read_dot)}


# --- the pictures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", READERS)
def test_certificate_check_picture(fmt: str) -> None:
    records = json.loads(CERTIFICATE_CHECK.read_text())
    write, read = READERS[fmt]
    boxes, edges = read(write(load_plan([CERTIFICATE_CHECK], env={})))
    expected_boxes, expected_edges = expected_picture(records)
    assert boxes == expected_boxes
    assert edges == expected_edges
    # Spot checks that the expectation itself says what the issue asks for.
    assert ("SECC leaf", "get-leaf-certificate-info", False, "Certificate check") in boxes
    assert ("local broker", "mqtt-broker", True, "Certificate check") in boxes
    assert ("SECC leaf", "request failures", "1: error", "error") in edges
    assert ("SECC leaf", "leaf usable", "0", "wire") in edges
    assert ("at start, then hourly", "SECC leaf", "", "wire") in edges
    assert ("report-root", "local broker", "", "config") in edges
    assert ("evse_security", "local broker", "", "config") in edges
    assert len(edges) == 21


@pytest.mark.parametrize("fmt", READERS)
def test_hostile_names_stay_in_their_labels(fmt: str, tmp_path: Path) -> None:
    flow = tmp_path / "hostile.json"
    flow.write_text(json.dumps(HOSTILE))
    write, read = READERS[fmt]
    assert read(write(load_plan([flow], env={}))) == expected_picture(HOSTILE)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
def test_graphviz_draws_hostile_names_as_text(tmp_path: Path) -> None:
    flow = tmp_path / "hostile.json"
    flow.write_text(json.dumps(HOSTILE))
    done = subprocess.run(["dot", "-Tsvg"], input=to_dot(load_plan([flow], env={})), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no syntax warnings either
    svg = ET.fromstring(done.stdout)
    ns = {"s": "http://www.w3.org/2000/svg"}
    groups = {kind: svg.findall(f".//s:g[@class='{kind}']", ns) for kind in ("node", "edge", "cluster")}
    boxes, edges = expected_picture(HOSTILE)
    assert (len(groups["node"]), len(groups["edge"]), len(groups["cluster"])) == (len(boxes), len(edges), 1)
    shown = {(t.text or "").replace("\xa0", " ") for t in svg.iterfind(".//s:text", ns)}  # dot keeps runs of spaces as nbsp
    assert {title for title, _, _, _ in boxes} <= shown
    assert _clean(HOSTILE[0]["label"]) in shown
    assert not svg.findall(".//s:script", ns)


# --- the command ----------------------------------------------------------------------------------

def evflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


def test_cli_formats_and_output(tmp_path: Path) -> None:
    mermaid = evflow("graph", str(CERTIFICATE_CHECK))
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout == to_mermaid(load_plan([CERTIFICATE_CHECK]))

    dot = evflow("graph", "--format", "dot", str(CERTIFICATE_CHECK))
    assert dot.returncode == 0, dot.stderr
    assert read_dot(dot.stdout) == expected_picture(json.loads(CERTIFICATE_CHECK.read_text()))

    target = tmp_path / "flow.dot"
    written = evflow("graph", "--format", "dot", "--output", str(target), str(CERTIFICATE_CHECK))
    assert (written.returncode, written.stdout) == (0, "")
    assert target.read_text() == dot.stdout


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
def test_cli_svg(tmp_path: Path) -> None:
    target = tmp_path / "flow.svg"
    done = evflow("graph", "--format", "svg", "--output", str(target), str(CERTIFICATE_CHECK))
    assert done.returncode == 0, done.stderr
    svg = ET.fromstring(target.read_text())
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"


def test_cli_svg_without_graphviz_says_what_to_do(tmp_path: Path) -> None:
    # A PATH with nothing on it: the interpreter is run by its full path and needs none.
    done = evflow("graph", "--format", "svg", str(CERTIFICATE_CHECK), env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == 1
    assert "apt-get install graphviz" in done.stderr and "--format dot" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_cli_invalid_flow_prints_its_problems(tmp_path: Path) -> None:
    flow = tmp_path / "broken.json"
    flow.write_text(json.dumps([{"id": "start", "type": "inject", "once": True, "wires": [["nowhere"]]}]))
    done = evflow("graph", str(flow))
    assert done.returncode == 1
    assert f"{flow}: node 'start' (inject) at $[0].wires[0][0]: error: wire to 'nowhere'" in done.stderr
    assert "dangling wire" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_cli_credentials(tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps([
        {"id": "broker", "type": "mqtt-broker", "broker": "${EVFLOW_TEST_GRAPH_BROKER}"},
        {"id": "out", "type": "mqtt out", "name": "${EVFLOW_TEST_GRAPH_SECRET}", "broker": "broker", "topic": "t"},
    ]))
    credentials = tmp_path / "credentials"
    credentials.write_text("EVFLOW_TEST_GRAPH_BROKER=mqtt://localhost:1883\nEVFLOW_TEST_GRAPH_SECRET=hunter22\n")
    credentials.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVFLOW_TEST_GRAPH_")}

    missing = evflow("graph", str(flow), env=env)
    assert missing.returncode == 1 and "EVFLOW_TEST_GRAPH_BROKER is not set" in missing.stderr

    done = evflow("graph", "--credentials", str(credentials), str(flow), env=env)
    assert done.returncode == 0, done.stderr
    boxes, _ = read_mermaid(done.stdout)
    assert ("***", "mqtt out", False, None) in boxes  # a credential is a secret, even in a name
    assert "hunter22" not in done.stdout

    unreadable = evflow("graph", "--credentials", str(tmp_path / "absent"), str(flow), env=env)
    assert unreadable.returncode == 1 and "evflow graph: error: cannot read the credentials file" in unreadable.stderr
