"""The broken-flow corpus: every file in ``tests/broken_flows/`` is wrong in one clear way, and
validation must say so — where (node id, JSON path) and what (a fragment of the message).

Next to each ``NAME.json`` lies ``NAME.expect.json``::

    {"about": "what is wrong, for people",
     "problems": [{"node_id": "b" or null, "path": "$[0].keepalive", "message": "expected an integer"}],
     "env": {"VAR": "value"}}            # optional: the environment the file is validated in

Validation must report exactly these errors (no more: a file must not pass by failing for another
reason), each on its own line ``FILE: node 'ID' (TYPE) at PATH: error: MESSAGE`` (``FILE at PATH:
error: MESSAGE`` for a problem of the file itself). Each file is checked twice: through the
``evflow validate FILE`` command in a subprocess (exit code 1, no traceback), and in process through
``load_plan`` (``FlowInvalid.problems``), whose problems print in the same form.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from evflow.runtime.flowfile import FlowProblem
from evflow.runtime.flows import FlowInvalid, load_plan

CORPUS = Path(__file__).parent / "broken_flows"
FILES = sorted(p for p in CORPUS.glob("*.json") if not p.name.endswith(".expect.json"))
# Variables some files name and that must therefore not be set when they are validated.
UNSET = ("EVFLOW_TEST_UNSET_BROKER_URL",)

_LINE = re.compile(
    r"^(?P<file>.+?)(?:: node '(?P<node_id>[^']*)'(?: \((?P<type>[^)]*)\))?)?"
    r" at (?P<path>\$\S*?): (?P<severity>error|warning): (?P<message>.*)$"
)


def _expectation(flow: Path) -> dict[str, Any]:
    return json.loads(flow.with_name(flow.name.removesuffix(".json") + ".expect.json").read_text())


def _environment(expect: Mapping[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(expect.get("env", {}))
    return env


def _problem_lines(output: str) -> list[dict[str, str | None]]:
    return [m.groupdict() for m in map(_LINE.match, output.splitlines()) if m is not None]


def _assert_reported(flow: Path, output: str, expect: Mapping[str, Any]) -> None:
    lines = [line for line in _problem_lines(output) if line["severity"] == "error"]
    assert all(Path(str(line["file"])).name == flow.name for line in lines), output
    wanted = expect["problems"]
    for problem in wanted:
        matching = [
            line for line in lines
            if line["node_id"] == problem["node_id"] and line["path"] == problem["path"]
            and problem["message"] in str(line["message"])
        ]
        assert matching, (
            f"{flow.name} ({expect['about']}): expected an error of node {problem['node_id']!r} at "
            f"{problem['path']} saying {problem['message']!r}; validation said:\n{output}"
        )
    assert len(lines) == len(wanted), f"{flow.name}: expected {len(wanted)} error(s), got:\n{output}"


@cache
def _cli_has_validate() -> bool:
    done = subprocess.run([sys.executable, "-m", "evflow.runtime.cli", "validate", "--help"],
                          capture_output=True, text=True, timeout=60)
    return done.returncode == 0


def test_the_corpus_is_complete() -> None:
    assert len(FILES) >= 24
    expectations = sorted(CORPUS.glob("*.expect.json"))
    assert [p.name.removesuffix(".expect.json") for p in expectations] == [p.stem for p in FILES]
    for flow in FILES:
        expect = _expectation(flow)
        assert expect["about"] and expect["problems"], flow.name
        for problem in expect["problems"]:
            assert set(problem) == {"node_id", "path", "message"}, flow.name
            assert problem["path"].startswith("$"), flow.name


@pytest.mark.parametrize("flow", FILES, ids=[p.stem for p in FILES])
def test_validate_command_reports_the_problem(flow: Path) -> None:
    if not _cli_has_validate():
        pytest.skip("`evflow validate` does not exist yet")
    expect = _expectation(flow)
    done = subprocess.run([sys.executable, "-m", "evflow.runtime.cli", "validate", str(flow)],
                          capture_output=True, text=True, timeout=60, env=_environment(expect))
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 1, output
    _assert_reported(flow, output, expect)


@pytest.mark.parametrize("flow", FILES, ids=[p.stem for p in FILES])
def test_load_plan_reports_the_problem(flow: Path) -> None:
    expect = _expectation(flow)
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], env=_environment(expect))
    assert all(isinstance(p, FlowProblem) for p in caught.value.problems)
    _assert_reported(flow, "\n".join(map(str, caught.value.problems)), expect)


SEVERAL = [
    {"id": "main", "type": "tab", "label": "main"},
    {"id": "b", "type": "mqtt-broker", "broker": "mqtt://localhost:1883", "keepalive": "thirty",
     "password": "hunter2"},
    {"id": "api", "type": "everest-api", "broker": "nope", "module_id": "evse_security_api"},
    {"id": "i", "type": "inject", "z": "main", "once": True, "wires": [["f", "ghost"]]},
    {"id": "f", "type": "filter", "z": "main", "rules": [{"property": "payload.status", "op": "regex", "value": "("}],
     "wires": [["d"]]},
    {"id": "d", "type": "debug", "z": "main"},
    {"id": "d", "type": "debug", "z": "main"},
    {"id": "x", "type": "no-such-type", "z": "main"},
    {"id": "e", "type": "log", "z": "main", "message": "${EVFLOW_TEST_UNSET_BROKER_URL}"},
    17,
]
SEVERAL_PROBLEMS = [
    ("b", "$[1].password", "a secret must come from the environment"),
    ("b", "$[1].keepalive", "expected an integer (or one written as text), got 'thirty'"),
    ("api", "$[2].broker", "refers to 'nope'"),
    ("i", "$[3].wires[0][1]", "dangling wire"),
    ("f", "$[4].rules[0].value", "invalid regular expression"),
    ("d", "$[6].id", "duplicate id"),
    ("x", "$[7].type", "unsupported node type 'no-such-type'"),
    ("e", "$[8].message", "EVFLOW_TEST_UNSET_BROKER_URL is not set"),
    (None, "$[9]", "a node is a JSON object"),
]


def _check_several(flow: Path, output: str) -> None:
    lines = [line for line in _problem_lines(output) if line["severity"] == "error"]
    for node_id, path, fragment in SEVERAL_PROBLEMS:
        assert any(line["node_id"] == node_id and line["path"] == path and fragment in str(line["message"])
                   for line in lines), f"missing {node_id} {path} {fragment!r} in:\n{output}"
    assert len(lines) == len(SEVERAL_PROBLEMS), output


def test_a_flow_with_several_problems_reports_them_all_at_once(tmp_path: Path) -> None:
    flow = tmp_path / "several.json"
    flow.write_text(json.dumps(SEVERAL, indent=1))
    env = _environment({})
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], env=env)
    _check_several(flow, "\n".join(map(str, caught.value.problems)))
    if _cli_has_validate():
        done = subprocess.run([sys.executable, "-m", "evflow.runtime.cli", "validate", str(flow)],
                              capture_output=True, text=True, timeout=60, env=env)
        output = done.stdout + done.stderr
        assert done.returncode == 1 and "Traceback" not in output, output
        _check_several(flow, output)
