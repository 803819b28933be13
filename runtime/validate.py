"""From flow-file records to a checked plan, or every problem at once.

Checks: node types known (and loadable), each node's properties against its type's attrs config
class (through the codec: wrong types, unknown keys, missing fields, with JSON paths), secrets given
as ``${VAR}`` only, references to config nodes existing and of the right type, wires well-formed and
pointing at nodes that take input, ids unique, and each type's own cross-field checks.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .codec import CodecError, structure
from .flowfile import FlowProblem, NodeRecord, is_env_reference
from .nodeapi import ConfigNode, NodeClass
from .registry import Registry, RegistryError

__all__ = ["FlowPlan", "PlannedNode", "plan_flow"]

# Node-RED's structural types: kept for tab scoping, otherwise inert.
STRUCTURAL_TYPES = frozenset({"tab", "comment", "group"})
# Keys every node object may carry that are not the node type's properties (Node-RED editor state).
COMMON_KEYS = frozenset({"id", "type", "name", "z", "d", "wires", "x", "y", "g", "l", "w", "h", "info", "outputs", "inputs"})
# Keys every node with input may carry, read by the engine: its input queue and what happens when full.
QUEUE_KEYS = frozenset({"queue_size", "overflow"})
OVERFLOW_POLICIES = ("block", "drop-oldest", "drop-newest")


@attrs.frozen
class PlannedNode:
    record: NodeRecord
    node_class: NodeClass
    config: Any
    wires: tuple[tuple[str, ...], ...]
    tab: str
    name: str
    queue_size: int | None = None  # None: the engine's default
    overflow: str = "block"
    group: str = ""  # Node-RED's ``g``

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def type(self) -> str:
        return self.record.type

    @property
    def is_config(self) -> bool:
        return issubclass(self.node_class, ConfigNode)

    def references(self) -> list[str]:
        """Ids of the config nodes this node's config names."""
        return [
            getattr(self.config, field.name)
            for field in attrs.fields(type(self.config))
            if "evflow_ref" in field.metadata and getattr(self.config, field.name) is not None
        ]


@attrs.frozen
class FlowPlan:
    nodes: tuple[PlannedNode, ...]
    warnings: tuple[FlowProblem, ...]
    tabs: Mapping[str, str]  # tab id -> label
    # Node-RED group id -> the group it is in ("" at the top of its tab)
    groups: Mapping[str, str] = attrs.field(factory=dict)
    # Node-RED group id -> its name ("" when it has none)
    group_names: Mapping[str, str] = attrs.field(factory=dict)

    def groups_of(self, group: str) -> tuple[str, ...]:
        """``group`` and the groups around it, innermost first."""
        chain: list[str] = []
        while group and group not in chain:
            chain.append(group)
            group = self.groups.get(group, "")
        return tuple(chain)


# How a node of a type that no installed package provides is reported (the validate command groups them).
UNSUPPORTED = "unsupported node type"


def _cut_from(record: NodeRecord) -> str:
    """The wires a skipped node had, as words ("" when none)."""
    wires = record.data.get("wires")
    targets = [target for port in wires if isinstance(port, list) for target in port] if isinstance(wires, list) else []
    return f"; its wires to {', '.join(map(repr, targets))} are cut" if targets else ""


def _split(problem: str, base: str) -> tuple[str, str]:
    """A codec problem "what @ $.x" as (JSON path within the file, what)."""
    what, _, path = problem.rpartition(" @ ")
    return base + path[1:] if path.startswith("$") else base, what or problem


def plan_flow(
    records: Sequence[NodeRecord], registry: Registry, *, skip_unsupported: bool = False
) -> tuple[FlowPlan | None, list[FlowProblem]]:
    """The plan of these nodes, or None, and every problem found (warnings included).

    A node of a type no installed package provides is *unsupported* (Node-RED's dashboard, a
    contributed node): an error, unless ``skip_unsupported``; then it is left out, with the wires to
    and from it, each cut wire a warning."""
    problems: list[FlowProblem] = []
    warnings: list[FlowProblem] = []

    def problem(record: NodeRecord, message: str, path: str | None = None, severity: str = "error") -> None:
        found = FlowProblem(record.file, message, record.id, record.type, path or record.path, severity)
        (warnings if severity == "warning" else problems).append(found)

    by_id: dict[str, NodeRecord] = {}
    for record in records:
        first = by_id.get(record.id)
        if first is not None:
            problem(record, f"duplicate id: also used by the node at {first.file} {first.path}", f"{record.path}.id")
        else:
            by_id[record.id] = record

    tabs = {r.id: str(r.data.get("label", r.id)) for r in records if r.type == "tab"}
    classes: dict[str, NodeClass] = {}
    skipped: dict[str, NodeRecord] = {}
    for record in by_id.values():
        if record.type in STRUCTURAL_TYPES:
            continue
        if record.type not in registry:
            if skip_unsupported:
                skipped[record.id] = record
                problem(record, f"{UNSUPPORTED} {record.type!r}: skipped{_cut_from(record)}", f"{record.path}.type",
                        "warning")
            elif (why := registry.why_unknown(record.type)) is not None:
                problem(record, f"{UNSUPPORTED} {record.type!r}: {why}", f"{record.path}.type")
            else:
                close = difflib.get_close_matches(record.type, registry.names(), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problem(record, f"{UNSUPPORTED} {record.type!r}: no installed package provides it ({hint}"
                        "`evflow run --skip-unsupported` runs the rest of the flow)", f"{record.path}.type")
            continue
        try:
            classes[record.id] = registry.load(record.type)
        except RegistryError as exc:
            problem(record, str(exc), f"{record.path}.type")

    planned: list[PlannedNode] = []
    configured: list[tuple[NodeRecord, Any]] = []
    configs: dict[str, Any] = {}
    for record in by_id.values():
        node_class = classes.get(record.id)
        if node_class is not None and record.data.get("d") is not True:
            configs[record.id] = _config(record, node_class, problem)
    takes_input = {node_id: not issubclass(classes[node_id], ConfigNode) and (
        classes[node_id].has_input if config is None else classes[node_id].takes_input(config))
        for node_id, config in configs.items()}
    for record in by_id.values():
        node_class = classes.get(record.id)
        if node_class is None or record.data.get("d") is True:
            continue
        config = configs[record.id]
        wires = _wires(record, node_class, config, by_id, classes, takes_input, skipped, problem)
        tab = record.data.get("z", "")
        if tab and tabs and tab not in tabs:
            problem(record, f"tab {tab!r} does not exist", f"{record.path}.z", "warning")
        name = record.data.get("name") or ""
        if not isinstance(name, str):
            problem(record, "name must be a string", f"{record.path}.name")
            name = ""
        if config is not None:
            configured.append((record, config))
        queue = _queue_settings(record, node_class, problem)
        if config is not None and wires is not None and queue is not None:
            group = record.data.get("g", "")
            planned.append(PlannedNode(record, node_class, config, wires, tab if isinstance(tab, str) else "", name,
                                       *queue, group=group if isinstance(group, str) else ""))

    planned_ids = {p.id for p in planned}
    for record, config in configured:
        _check_references(record, config, by_id, planned_ids, configs, problem)

    if problems:
        return None, problems + warnings
    groups = {r.id: g if isinstance(g := r.data.get("g", ""), str) else "" for r in records if r.type == "group"}
    group_names = {r.id: n if isinstance(n := r.data.get("name", ""), str) else "" for r in records if r.type == "group"}
    return FlowPlan(tuple(planned), tuple(warnings), tabs, groups, group_names), warnings


def _config(record: NodeRecord, node_class: NodeClass, problem: Any) -> Any:
    config_class = node_class.Config
    engine_keys = _engine_queue_keys(node_class)
    # A common key that the type's config declares is the type's to read (`outputs` of delay, switch…).
    declared = {field.name for field in attrs.fields(config_class)}
    properties = {k: v for k, v in record.data.items() if (k not in COMMON_KEYS or k in declared) and k not in engine_keys}
    ok = _secrets_from_environment(record, config_class, record.raw, record.path, problem)
    try:
        config = structure(properties, config_class)
    except CodecError as exc:
        for line in exc.problems:
            path, what = _split(line, record.path)
            problem(record, what, path)
        return None
    for field in attrs.fields(config_class):
        new_form = field.metadata.get("evflow_renamed")
        if new_form is not None and getattr(config, field.name) is not None:
            problem(record, f"`{field.name}` is no longer read: {new_form}", f"{record.path}.{field.name}")
            ok = False
    if not ok:
        return None
    try:
        for warning in node_class.check(config):
            path = record.path + warning.path[1:] if warning.path.startswith("$") else record.path
            problem(record, warning.message, path, "warning")
    except ValueError as exc:
        path, what = _split(str(exc), record.path)
        problem(record, what, path)
        return None
    return config


def _secrets_from_environment(record: NodeRecord, config_class: type, raw: Any, path: str, problem: Any) -> bool:
    """Whether every secret field, at any depth, is written as ``${NAME}`` in the file (a value
    merged in from a credentials file is not in ``raw``, and needs no reference)."""
    if not isinstance(raw, Mapping):
        return True
    ok = True
    for field in attrs.fields(attrs.resolve_types(config_class)):
        if field.name not in raw:
            continue
        where = f"{path}.{field.name}"
        if field.metadata.get("evflow_secret"):
            if not is_env_reference(raw[field.name]):
                problem(record, "a secret must come from the environment or a credentials file: write "
                        "\"${NAME}\" (no default), never the secret itself", where)
                ok = False
        else:
            for nested in _attrs_classes(field.type):
                ok = _secrets_from_environment(record, nested, raw[field.name], where, problem) and ok
    return ok


def _attrs_classes(tp: Any) -> list[type]:
    """The attrs classes a field's type names (itself, or the members of ``X | None``)."""
    if isinstance(tp, type) and attrs.has(tp):
        return [tp]
    return [arg for arg in getattr(tp, "__args__", ()) if isinstance(arg, type) and attrs.has(arg)]


def _engine_queue_keys(node_class: NodeClass) -> frozenset[str]:
    """The queue keys the engine reads for this type: those its own config does not define
    (``mqtt in`` has a queue_size of its own, for its subscription)."""
    return QUEUE_KEYS - {field.name for field in attrs.fields(node_class.Config)}


def _queue_settings(record: NodeRecord, node_class: NodeClass, problem: Any) -> tuple[int | None, str] | None:
    keys = _engine_queue_keys(node_class)
    size = record.data.get("queue_size") if "queue_size" in keys else None
    overflow = record.data.get("overflow", "block") if "overflow" in keys else "block"
    ok = True
    if (size is not None or ("overflow" in keys and "overflow" in record.data)) and (
        issubclass(node_class, ConfigNode) or not node_class.has_input
    ):
        problem(record, "queue_size and overflow apply to nodes that take input", f"{record.path}.queue_size")
        return None
    if size is not None and (type(size) is not int or not 1 <= size <= 1_000_000):
        problem(record, f"queue_size must be an integer from 1 to 1000000, got {size!r}", f"{record.path}.queue_size")
        ok = False
    if overflow not in OVERFLOW_POLICIES:
        problem(record, f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, got {overflow!r}",
                f"{record.path}.overflow")
        ok = False
    return (size, overflow) if ok else None


def _wires(
    record: NodeRecord,
    node_class: NodeClass,
    config: Any,
    by_id: Mapping[str, NodeRecord],
    classes: Mapping[str, NodeClass],
    takes_input: Mapping[str, bool],
    skipped: Mapping[str, NodeRecord],
    problem: Any,
) -> tuple[tuple[str, ...], ...] | None:
    raw = record.data.get("wires", [])
    path = f"{record.path}.wires"
    links = node_class.links(config) if config is not None and not issubclass(node_class, ConfigNode) else ()
    if links:
        raw = [list(links), *raw[1:]] if isinstance(raw, list) and raw else [list(links)]
        path = f"{record.path}.links"
    if issubclass(node_class, ConfigNode):
        if raw not in ([], None):
            problem(record, "a config node has no wires", path)
            return None
        return ()
    if not isinstance(raw, list) or not all(isinstance(port, list) for port in raw):
        problem(record, "wires must be a list with one list of node ids per output port", path)
        return None
    outputs = node_class.outputs(config) if config is not None else len(raw)
    ok = True
    if len(raw) > outputs:
        problem(record, f"wires name {len(raw)} output ports but this node has {outputs}", path)
        ok = False
    ports: list[tuple[str, ...]] = []
    for port_index, port in enumerate(raw):
        targets = []
        for wire_index, target in enumerate(port):
            where = f"{path}[{port_index}][{wire_index}]"
            target_record = by_id.get(target) if isinstance(target, str) else None
            if target_record is None:
                problem(record, f"wire to {target!r}, which is not a node of this flow (dangling wire)", where)
                ok = False
                continue
            if target_record.data.get("d") is True:
                continue  # wires into disabled nodes are dropped, as in Node-RED
            if target in skipped:
                problem(record, f"wire to {target!r} ({target_record.type}) cut: {UNSUPPORTED}", where, "warning")
                continue
            target_class = classes.get(target)
            if target_class is None:
                continue  # the target's own problem is reported already (or it is structural)
            if not takes_input.get(target, False):
                problem(record, f"wire to {target!r} ({target_record.type}), which takes no input", where)
                ok = False
                continue
            targets.append(target)
        ports.append(tuple(targets))
    ports.extend(() for _ in range(outputs - len(ports)))
    return tuple(ports) if ok else None


def _check_references(
    record: NodeRecord,
    config: Any,
    by_id: Mapping[str, NodeRecord],
    planned: set[str],
    configs: Mapping[str, Any],
    problem: Any,
) -> None:
    for field in attrs.fields(type(config)):
        kind = field.metadata.get("evflow_ref")
        target = getattr(config, field.name) if kind else None
        if target is None:
            continue
        path = f"{record.path}.{field.name}"
        target_record = by_id.get(target)
        if target_record is None:
            problem(record, f"refers to {target!r}, which is not a node of this flow (expected a {kind})", path)
        elif target_record.type != kind:
            problem(record, f"refers to {target!r}, which is a {target_record.type}, not a {kind}", path)
        elif target not in planned:
            problem(record, f"refers to {target!r} ({kind}), which is disabled or invalid", path)
        else:
            # what the referenced node must be configured as (an everest-api node of this node's API)
            for key, expected in field.metadata.get("evflow_ref_fields", {}).items():
                actual = getattr(configs.get(target), key, expected)
                if actual != expected:
                    problem(record, f"refers to {target!r}, a {kind} with {key} {actual!r}; this node needs "
                            f"{key} {expected!r}", path)
