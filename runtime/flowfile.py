"""Reading flow files: Node-RED's ``flows.json`` shape, with ``${VAR}`` from the environment.

A flow file is a JSON array of node objects (``id``, ``type``, optional ``name``, ``z`` tab, ``d``
disabled, ``wires``, and the type's own properties), exactly as Node-RED exports them.

Environment variables, as Node-RED reads them: a property value that is *exactly* ``${VAR}`` (or
Node-RED's older ``$(VAR)``), at any depth, is replaced from the environment when the file is loaded;
evflow also takes ``${VAR:-default}``. A variable that is not set is an error (Node-RED would keep the
text ``${VAR}`` and run on with it). Text with a reference *inside* it stays as written, as in
Node-RED, and code and template bodies (``func``, ``initialize``, ``finalize``, ``template``) are never
touched: a JavaScript template literal is code, not a reference. (``env`` typed inputs are read when a
message needs them, see :mod:`evflow.runtime.typedinput`.) Every problem is kept with its file, node id
and JSON path, so that validation can report them all at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["FlowProblem", "NodeRecord", "load_flow_files", "substitute", "is_env_reference"]

# A whole value that is a reference: ${NAME}, ${NAME:-default}, or Node-RED's older $(NAME).
_REFERENCE = re.compile(r"\$\{([^}\s]+?)(?::-([^}]*))?\}|\$\(([^)\s]+)\)")
_ONLY_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
# Node properties holding code or a template body: never substituted.
VERBATIM_KEYS = frozenset({"func", "initialize", "finalize", "template"})


@attrs.frozen
class FlowProblem:
    """One thing wrong with a flow, located as precisely as known."""

    file: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    path: str = "$"
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = self.file
        if self.node_id is not None:
            where += f": node {self.node_id!r}"
            if self.node_type:
                where += f" ({self.node_type})"
        return f"{where} at {self.path}: {self.severity}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class NodeRecord:
    """One node object of a flow file, after ``${VAR}`` substitution; ``raw`` is as written."""

    file: str
    index: int
    data: Mapping[str, Any]
    raw: Mapping[str, Any]

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def type(self) -> str:
        return self.data["type"]

    @property
    def path(self) -> str:
        """JSON path of this node within its file."""
        return f"$[{self.index}]"


def is_env_reference(value: object) -> bool:
    """Whether ``value`` is exactly one ``${VAR}`` (no default): how secrets must be written."""
    return isinstance(value, str) and _ONLY_REFERENCE.fullmatch(value) is not None


def substitute(value: Any, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]) -> Any:
    """``value`` with every string that is exactly a reference replaced; problems as ``(path, message)``."""
    if isinstance(value, str):
        return _substitute_string(value, env, path, problems)
    if isinstance(value, list):
        return [substitute(item, env, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: substitute(item, env, _child(path, key), problems) for key, item in value.items()}
    return value


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{path}[{json.dumps(key)}]"


def _substitute_string(text: str, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]) -> str:
    if not text.startswith("$"):
        return text
    match = _REFERENCE.fullmatch(text)
    if match is None:
        return text
    name = match.group(1) or match.group(3)
    default = match.group(2)
    if name in env:
        return env[name]
    if default is not None:
        return default
    problems.append((path, f"environment variable {name} is not set (and {text} has no default)"))
    return text


def load_flow_files(paths: Sequence[str | Path], env: Mapping[str, str]) -> tuple[list[NodeRecord], list[FlowProblem]]:
    records: list[NodeRecord] = []
    problems: list[FlowProblem] = []
    for path in paths:
        file = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(FlowProblem(file, f"cannot read the flow file: {exc.strerror or exc}"))
            continue
        except UnicodeDecodeError:
            problems.append(FlowProblem(file, "the flow file is not UTF-8 text"))
            continue
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(FlowProblem(file, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"))
            continue
        except RecursionError:
            problems.append(FlowProblem(file, "not valid JSON: nested too deeply"))
            continue
        if not isinstance(document, list):
            problems.append(FlowProblem(file, "a flow file is a JSON array of node objects"))
            continue
        for index, raw in enumerate(document):
            records_or_problem = _record(file, index, raw, env)
            if isinstance(records_or_problem, NodeRecord):
                records.append(records_or_problem)
            else:
                problems.extend(records_or_problem)
    return records, problems


def _record(file: str, index: int, raw: Any, env: Mapping[str, str]) -> NodeRecord | list[FlowProblem]:
    path = f"$[{index}]"
    if not isinstance(raw, dict):
        return [FlowProblem(file, "a node is a JSON object", path=path)]
    node_id = raw.get("id")
    node_type = raw.get("type")
    found: list[FlowProblem] = []
    if not isinstance(node_id, str) or not node_id:
        found.append(FlowProblem(file, "a node needs an \"id\" (a non-empty string)", path=f"{path}.id"))
    if not isinstance(node_type, str) or not node_type:
        found.append(FlowProblem(file, "a node needs a \"type\" (a non-empty string)",
                                 node_id if isinstance(node_id, str) else None, path=f"{path}.type"))
    if found:
        return found
    substitution_problems: list[tuple[str, str]] = []
    data = {key: item if key in VERBATIM_KEYS else substitute(item, env, _child(path, key), substitution_problems)
            for key, item in raw.items()}
    if substitution_problems:
        return [FlowProblem(file, message, node_id, node_type, where) for where, message in substitution_problems]
    return NodeRecord(file, index, data, raw)

