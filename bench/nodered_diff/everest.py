"""EVerest's own Node-RED flows (everest-core's config/nodered/config-sil-*.json, the docker image's and the
Yocto recipes' flows.json) run in Node-RED 4 and in evflow on the same recorded MQTT inputs, and what each
published is compared.

    .venv/bin/python bench/nodered_diff/everest.py --flows ~/everest-core           # a checkout
    .venv/bin/python bench/nodered_diff/everest.py --flows /tmp/everest-flows --summary
    .venv/bin/python bench/nodered_diff/everest.py --flows DIR --only 'config_nodered_*' --record

The flow files are Apache-2.0 but not copied here: they are read from the directory given. A file is
named by its path in that directory, "/" written "_" (``config_nodered_config-sil-dc-flow``); its
input sequence (``everest/<stem>.inputs.json``, ours) and Node-RED's answers to it
(``everest/<stem>.expected.json``, written only by --record) are kept here, both carrying a digest
of the flow file so that another everest-core version is noticed.

Each file runs two ways (``--mode``):

* ``plain``: the files as a user without the dashboard runs them. Node-RED gets a copy without the
  dashboard nodes (``ui_*``) and the wires to them (without node-red-dashboard it would not start
  the flow); evflow gets the file itself with ``--skip-unsupported``, which cuts the same wires. In
  these files every ``mqtt out`` is reached only from a dashboard widget and every ``mqtt in`` ends
  in one, so both publish nothing: the run shows that the flow loads and takes its inputs without
  publishing anything unasked, no more.
* ``standins``: both get the same copy in which each dashboard widget is stood in for by core nodes
  over MQTT, so that what the flow computes becomes visible. A widget the flow sends to (a table,
  gauge, text, chart; a dropdown fed by an inject) becomes a ``change`` node putting the message's
  topic, payload and label into one JSON object and an ``mqtt out`` on ``nrdiff/ui/<widget id>``;
  with ``passthru`` set the message also goes on, unchanged, to the widget's outputs (the
  dashboard's conversion of the value, a switch's on/off or a numeric's parseFloat, is not
  modelled: in these files what passes through is already what it would make of it). A widget a
  person uses (a button, switch, slider, dropdown, text or numeric input) becomes an ``mqtt in`` on
  ``nrdiff/click/<widget id>`` (``auto-detect``: the value the widget sends, as JSON, a text as
  itself, so no text that parses as JSON) and a ``change`` node that sets ``msg.topic`` as
  node-red-dashboard 3.6 does for a click (the widget's topic; when that names a msg property, the
  topic of the last message the flow sent the widget, kept in flow context, else none) and deletes
  what the ``mqtt in`` adds (qos, retain, _topic), wired to the widget's outputs.

Outputs: the harness subscribes to ``#`` and keeps what the flow published, leaving out the inputs
(each published input's echo is dropped once) and the harness's own topics (the readiness probe and
the settle marker). Messages are compared per topic, in order; topic, QoS, retain flag and payload
byte for byte (compare.py). Which nodes logged an error in each system is noted too, outside the
verdict (in ``plain`` the only sign of a node failing where nothing is published).

Timer-driven outputs: the files' injects fire once, 0.1 s and 1 s after the start, and never repeat.
The inputs begin ``settle_ms`` (1.5 s) after the readiness probe answered, so whatever an inject
causes (in ``standins``: the dropdown, switch, text and numeric widgets it fills) comes before the
first input and is compared like any other message.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # this harness's modules, then the bench's

from compare import diff  # noqa: E402
from corpus import PING_TOPIC, Case, Input, Output, _payload_bytes  # noqa: E402
from run import Observed, _evflow_reasons, _tail  # noqa: E402
from run import observe as run_observe  # noqa: E402
from session import Session  # noqa: E402
from systems import Evflow, Running, _spawn, user_environment  # noqa: E402
from targets import EvflowTarget, NodeRedTarget  # noqa: E402

EVEREST_DIR = HERE / "everest"
MODES = ("plain", "standins")
DASHBOARD_PREFIX = "ui_"

# The harness's topics: the settle marker ends the wait after readiness (its delay), the stand-ins'.
SETTLE_TOPIC = "nrdiff/settle"
SHOWN_TOPIC = "nrdiff/ui/{}"
CLICK_TOPIC = "nrdiff/click/{}"
HARNESS_TOPICS = frozenset({PING_TOPIC, SETTLE_TOPIC})

# A node's error in each system's log, the node as type and name (its id when it has none):
# "[error] [function:name] ..." (Node-RED), "ERROR evflow.node.function: [name] ..." (evflow).
# Which nodes failed is compared, not how often: evflow logs a burst of failures once.
NODE_RED_ERROR = re.compile(r"\[error\] \[([^:\]]+):([^\]]*)\]")
EVFLOW_ERROR = re.compile(r"\bERROR evflow\.node\.([^:]+): \[([^\]]*)\]")

# Directories a walk through a checkout does not enter: they never hold its flow files.
NOT_WALKED = {"node_modules", "build", "dist", "__pycache__"}

SEQUENCE_KEYS = {"flow", "flow_digest", "description", "settle_ms", "gap_ms", "quiet_ms", "log_allowed", "inputs"}
SEQUENCE_INPUT_KEYS = {"topic", "payload", "payload_base64", "qos", "retain", "before_start", "delay_after_ms", "why"}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ---- the flow files ------------------------------------------------------------------------------------


def _is_flow_file(path: Path) -> bool:
    """A Node-RED flows file (a list of node objects) that talks MQTT."""
    try:
        nodes = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(nodes, list) and all(isinstance(node, dict) and "type" in node for node in nodes)
            and any(node["type"] == "mqtt-broker" for node in nodes))


def _flow_place(relative: Path) -> bool:
    """Where a checkout keeps Node-RED flow files (config/nodered/, the docker image's nodered/flows/,
    the Yocto recipe everest-node-red-flows/), or a flat directory of copies."""
    folders = relative.parts[:-1]
    return relative.suffix == ".json" and (
        not folders or "nodered" in folders or any("node-red-flows" in folder for folder in folders))


def find_flow_files(directory: Path) -> dict[str, Path]:
    """The flow files under ``directory`` by stem: the relative path with "/" as "_", less ".json"."""
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_WALKED)
        for name in sorted(files):
            relative = (Path(root) / name).relative_to(directory)
            if _flow_place(relative):
                path = directory / relative
                if _is_flow_file(path):
                    found[str(relative.with_suffix("")).replace("/", "_")] = path
    return found


def is_dashboard(node: dict[str, Any]) -> bool:
    return str(node.get("type", "")).startswith(DASHBOARD_PREFIX)


def with_private_broker(flow: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy whose mqtt-broker nodes connect where the harness says (MQTT_HOST, MQTT_PORT)."""
    flow = copy.deepcopy(flow)
    for node in flow:
        if node.get("type") == "mqtt-broker":
            node["broker"], node["port"] = "${MQTT_HOST}", "${MQTT_PORT}"
    return flow


def _pruned_groups(node: dict[str, Any], gone: set[str]) -> dict[str, Any]:
    if node.get("type") == "group":
        node["nodes"] = [member for member in node.get("nodes", []) if member not in gone]
    return node


def without_dashboard(flow: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy without the dashboard's nodes and the wires to them (and out of the groups)."""
    gone = {node["id"] for node in flow if is_dashboard(node)}
    kept = []
    for node in copy.deepcopy(flow):
        if node["id"] in gone:
            continue
        if "wires" in node:
            node["wires"] = [[target for target in port if target not in gone] for port in node["wires"]]
        kept.append(_pruned_groups(node, gone))
    return kept


def _change_node(node_id: str, widget: dict[str, Any], name: str, rules: list[dict[str, Any]],
                 wires: list[str], dx: int) -> dict[str, Any]:
    return {"id": node_id, "type": "change", "z": widget["z"], "name": name, "rules": rules, "action": "",
            "property": "", "from": "", "to": "", "reg": False, "x": widget.get("x", 0) + dx,
            "y": widget.get("y", 0), "wires": [wires]}


def _topic_memory(widget: dict[str, Any]) -> str | None:
    """The flow context key keeping the topic of the last message the flow sent the widget, for a
    widget whose clicks take their topic from it (node-red-dashboard 3: ``msg.topic``, or the
    widget's own ``topic`` property for a button, when its topic is a msg property, or an empty
    text for anything but a button); None when its clicks have a topic of their own or none."""
    by_text = widget.get("topicType", "str") == "str"
    if by_text and (widget.get("topic") or widget["type"] == "ui_button"):
        return None
    return "nrdiff_topic_" + widget["id"].replace(".", "_")


def _shown(widget: dict[str, Any], broker: str) -> list[dict[str, Any]]:
    """What the flow sends the widget, as one JSON object on the widget's own topic (and, for its
    clicks, the topic it came with)."""
    wid = widget["id"]
    memory = _topic_memory(widget)
    source = widget.get("topic") if widget["type"] == "ui_button" and widget.get("topic") else "topic"
    remember = [] if memory is None else [{"t": "set", "p": memory, "pt": "flow", "to": source, "tot": "msg"}]
    as_object = [
        *remember,
        {"t": "set", "p": "nrdiff_shown", "pt": "msg", "to": "{}", "tot": "json"},
        *({"t": "set", "p": f"nrdiff_shown.{key}", "pt": "msg", "to": key, "tot": "msg"}
          for key in ("topic", "payload", "label")),
        {"t": "set", "p": "payload", "pt": "msg", "to": "nrdiff_shown", "tot": "msg"},
    ]
    return [
        _change_node(f"{wid}.shown", widget, f"what {widget['type']} {wid} shows", as_object, [f"{wid}.tap"], 0),
        {"id": f"{wid}.tap", "type": "mqtt out", "z": widget["z"], "name": "", "topic": SHOWN_TOPIC.format(wid),
         "qos": "1", "retain": "false", "respTopic": "", "contentType": "", "userProps": "", "correl": "",
         "expiry": "", "broker": broker, "x": widget.get("x", 0) + 150, "y": widget.get("y", 0), "wires": []},
    ]


def _clicked(widget: dict[str, Any], broker: str, targets: list[str], fed: bool) -> list[dict[str, Any]]:
    """A person using the widget: its value from MQTT, with the widget's topic, to its outputs."""
    wid = widget["id"]
    memory = _topic_memory(widget)
    if memory is None and widget.get("topic"):
        topic = {"t": "set", "p": "topic", "pt": "msg", "to": widget["topic"], "tot": "str"}
    elif memory is not None and fed:  # the last message's topic; none before the first (undefined deletes)
        topic = {"t": "set", "p": "topic", "pt": "msg", "to": memory, "tot": "flow"}
    else:
        topic = {"t": "delete", "p": "topic", "pt": "msg"}
    rules = [topic, *({"t": "delete", "p": key, "pt": "msg"} for key in ("qos", "retain", "_topic"))]
    return [
        {"id": f"{wid}.click", "type": "mqtt in", "z": widget["z"], "name": "", "topic": CLICK_TOPIC.format(wid),
         "qos": "2", "datatype": "auto-detect", "broker": broker, "nl": False, "rap": True, "rh": 0, "inputs": 0,
         "x": widget.get("x", 0) - 150, "y": widget.get("y", 0) + 20, "wires": [[f"{wid}.as"]]},
        _change_node(f"{wid}.as", widget, f"as {widget['type']} {wid} sends it", rules, targets, 0),
    ]


def with_dashboard_standins(flow: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy in which each dashboard widget is stood in for over MQTT (see the module docstring);
    the dashboard's config nodes (ui_base, ui_tab, ui_group) and spacers, having no wires, go."""
    flow = copy.deepcopy(flow)
    broker = next(node["id"] for node in flow if node.get("type") == "mqtt-broker")
    present = {node["id"] for node in flow}
    widgets = {node["id"]: node for node in flow if is_dashboard(node) and "wires" in node}
    fed = {target for node in flow for port in node.get("wires", []) for target in port}

    def entries(target: str, seen: frozenset[str] = frozenset()) -> list[str]:
        """Where a message wired to ``target`` goes once the widgets are stood in for."""
        widget = widgets.get(target)
        if widget is None:
            return [target] if target in present else []
        if target in seen:
            return []
        found = [f"{target}.shown"]
        if widget.get("passthru"):
            for port in widget["wires"]:
                for onward in port:
                    found += entries(onward, seen | {target})
        return found

    def rewired(ports: list[list[str]]) -> list[str]:
        return list(dict.fromkeys(entry for port in ports for target in port for entry in entries(target)))

    gone = {node["id"] for node in flow if is_dashboard(node)}
    result = []
    for node in flow:
        if is_dashboard(node):
            widget = widgets.get(node["id"])
            if widget is not None:
                if widget["id"] in fed:
                    result += _shown(widget, broker)
                if any(widget["wires"]):
                    result += _clicked(widget, broker, rewired(widget["wires"]), widget["id"] in fed)
            continue
        if "wires" in node:
            node["wires"] = [rewired([port]) for port in node["wires"]]
        result.append(_pruned_groups(node, gone))
    return result


# ---- input sequences and recordings -------------------------------------------------------------------


class SequenceError(ValueError):
    """An input sequence file the harness cannot use: the message names the file and the key."""


@attrs.frozen(kw_only=True)
class Sequence:
    """Our input sequence for one flow file (everest/<stem>.inputs.json)."""

    path: Path
    flow_digest: str
    description: str
    settle_ms: int
    quiet_ms: int
    log_allowed: tuple[str, ...]
    inputs: tuple[Input, ...]
    # the file's content, canonical: part of what a recording was made from
    digest: str

    def with_settle(self) -> tuple[Input, ...]:
        """The inputs as published: the retained ones before the start, then the settle marker,
        published once the system is ready and followed by the settling wait, then the rest."""
        early = tuple(i for i in self.inputs if i.before_start)
        settle = Input(topic=SETTLE_TOPIC, payload=b"", delay_after_ms=self.settle_ms)
        return (*early, settle, *(i for i in self.inputs if not i.before_start))


def load_sequence(path: Path) -> Sequence:
    where = path.name
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SequenceError(f"{where}: {exc}") from None
    if not isinstance(raw, dict) or set(raw) - SEQUENCE_KEYS:
        raise SequenceError(f"{where}: an object with keys among {sorted(SEQUENCE_KEYS)}")
    gap = int(raw.get("gap_ms", 0))
    inputs = []
    for index, entry in enumerate(raw.get("inputs", [])):
        at = f"{where}.inputs[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("topic"), str):
            raise SequenceError(f"{at}: an object with a topic")
        if set(entry) - SEQUENCE_INPUT_KEYS:
            raise SequenceError(f"{at}: unknown keys {sorted(set(entry) - SEQUENCE_INPUT_KEYS)}")
        if entry["topic"].startswith("nrdiff/") and not entry["topic"].startswith("nrdiff/click/"):
            raise SequenceError(f"{at}: topics under nrdiff/ are the harness's (but nrdiff/click/<widget id>)")
        if entry.get("before_start") and not entry.get("retain"):
            raise SequenceError(f"{at}: before_start needs retain (nobody is subscribed yet)")
        inputs.append(Input(topic=entry["topic"], payload=_payload_bytes(entry, at), qos=int(entry.get("qos", 0)),
                            retain=bool(entry.get("retain", False)), before_start=bool(entry.get("before_start")),
                            delay_after_ms=int(entry.get("delay_after_ms", gap))))
    return Sequence(path=path, flow_digest=str(raw.get("flow_digest", "")), description=raw.get("description", ""),
                    settle_ms=int(raw.get("settle_ms", 1500)), quiet_ms=int(raw.get("quiet_ms", 1000)),
                    log_allowed=tuple(raw.get("log_allowed", ())), inputs=tuple(inputs),
                    digest=digest(canonical({k: v for k, v in raw.items() if k != "description"})))


@attrs.frozen(kw_only=True)
class Recording:
    """Node-RED's answer to one mode of one flow file: what it published, and what it ran."""

    run_digest: str
    outputs: tuple[Output, ...]
    # the nodes that logged an error on the way ("type:name")
    errors: tuple[str, ...] = ()


def recording_path(stem: str) -> Path:
    return EVEREST_DIR / f"{stem}.expected.json"


def load_recordings(stem: str) -> tuple[str, str, dict[str, Recording]]:
    """(flow digest, Node-RED version, recordings by mode); empty when there is no file."""
    path = recording_path(stem)
    if not path.exists():
        return "", "", {}
    raw = json.loads(path.read_text())
    return raw["flow_digest"], raw["node_red"], {
        mode: Recording(run_digest=run["run_digest"], outputs=tuple(Output.from_json(o) for o in run["outputs"]),
                        errors=tuple(run.get("errors", ())))
        for mode, run in raw["runs"].items()}


def save_recording(stem: str, flow_digest: str, node_red: str, mode: str, recording: Recording) -> None:
    """Store one mode's answer; the other mode's stays when it was made from the same flow file."""
    old_digest, old_version, runs = load_recordings(stem)
    if old_digest != flow_digest or old_version != node_red:
        runs = {}
    runs[mode] = recording
    document = {"flow": stem, "flow_digest": flow_digest, "node_red": node_red,
                "runs": {name: {"run_digest": run.run_digest, "errors": list(run.errors),
                                "outputs": [o.to_json() for o in run.outputs]}
                         for name, run in sorted(runs.items())}}
    EVEREST_DIR.mkdir(exist_ok=True)
    recording_path(stem).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


# ---- evflow validate ------------------------------------------------------------------------------------


@attrs.define
class Validation:
    ok: bool
    dashboard: dict[str, list[str]]
    # what makes a file not OK: unsupported types besides the dashboard's, and any other error
    other_unsupported: dict[str, list[str]]
    errors: list[str]
    warnings: int
    seconds: float


def validate(command: list[str], path: Path) -> Validation:
    began = time.monotonic()
    done = subprocess.run([*command, "validate", str(path), "--format", "json"], capture_output=True, text=True,
                          env=user_environment())
    seconds = time.monotonic() - began
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return Validation(False, {}, {}, [f"evflow validate said no JSON (status {done.returncode}): "
                                          + (done.stderr.strip().splitlines() or ["(nothing)"])[-1]], 0, seconds)
    unsupported: dict[str, list[str]] = report.get("unsupported", {})
    dashboard = {kind: ids for kind, ids in unsupported.items() if kind.startswith(DASHBOARD_PREFIX)}
    other = {kind: ids for kind, ids in unsupported.items() if not kind.startswith(DASHBOARD_PREFIX)}
    unsupported_ids = {node_id for ids in unsupported.values() for node_id in ids}
    errors = [f"{p.get('node_type') or ''} {p.get('node_id') or ''} {p.get('path', '')}: {p['message']}".strip()
              for p in report.get("problems", [])
              if p.get("severity") == "error" and p.get("node_id") not in unsupported_ids]
    warnings = sum(1 for p in report.get("problems", []) if p.get("severity") == "warning")
    return Validation(not other and not errors, dashboard, other, errors, warnings, seconds)


# ---- a run ---------------------------------------------------------------------------------------------


class EverestSession(Session):
    """The harness's client, subscribed to everything (``#``), keeping only what the flow published:
    the harness's own topics are left out, and so is the broker's echo of each input published
    (one echo per publication, matched by topic and payload)."""

    def __init__(self, port: int) -> None:
        self._echo_lock = threading.Lock()
        self._echoes: Counter[tuple[str, bytes]] = Counter()
        super().__init__(port, ("#",))

    def publish(self, message: Input) -> None:
        with self._echo_lock:  # counted before it is sent: its echo may come back at once
            self._echoes[(message.topic, message.payload)] += 1
        super().publish(message)

    def _on_message(self, client: object, userdata: object, message: Any) -> None:
        if message.topic in HARNESS_TOPICS:
            return
        key = (message.topic, bytes(message.payload))
        with self._echo_lock:
            if self._echoes[key]:
                self._echoes[key] -= 1
                return
        super()._on_message(client, userdata, message)


class EvflowSkipping(EvflowTarget):
    """evflow as a user runs these files without a dashboard: ``evflow run --skip-unsupported``."""

    def start(self, case: Case, port: int, workdir: Path) -> Running:
        flow = workdir / "flow.json"
        flow.write_text(json.dumps(case.runnable_flow(), indent=1))
        env = user_environment(MQTT_HOST="127.0.0.1", MQTT_PORT=str(port))
        return _spawn([*self.command, "--log-format", "text", "run", "--skip-unsupported", str(flow)], workdir, env)


def observe(case: Case, target: NodeRedTarget | EvflowTarget, expected: int | None, keep: bool) -> Observed:
    """run.observe with this harness's session: everything the flow published, on any topic."""
    return run_observe(case, target, expected, keep, open_session=EverestSession, prefix="nrdiff-everest")


def failed_nodes(pattern: re.Pattern[str], log: str) -> tuple[str, ...]:
    """The nodes that logged an error, as "type:name"."""
    return tuple(sorted({f"{m.group(1)}:{m.group(2)}" for line in log.splitlines() if (m := pattern.search(line))}))


def make_case(stem: str, mode: str, flow: list[dict[str, Any]], sequence: Sequence) -> Case:
    """A corpus Case for the harness's runner and comparison (its digest: what Node-RED's answer
    depends on: the flow as run and the inputs)."""
    return Case(name=f"{stem}:{mode}", path=sequence.path, description=sequence.description, flow=flow,
                inputs=sequence.with_settle(), outputs=("#",), env={}, count=None,
                quiet_s=sequence.quiet_ms / 1000, order="topic", compare="bytes",
                log_allowed=sequence.log_allowed, digest=digest(canonical([flow, sequence.digest])))


# ---- judging one flow file --------------------------------------------------------------------------------


@attrs.define
class ModeResult:
    mode: str
    status: str  # PASS, FAIL, INVALID (not clean in Node-RED), SKIP (no sequence), NO-ANSWER
    node_red_count: int | None = None
    evflow_count: int | None = None
    node_red_s: float | None = None
    evflow_s: float | None = None
    answer_from: str = ""  # "recorded 4.1.15" or "run 4.1.15"
    # the nodes that logged an error in each system (not part of the verdict: a note when they differ)
    node_red_errors: tuple[str, ...] | None = None
    evflow_errors: tuple[str, ...] | None = None
    lines: list[str] = attrs.field(factory=list)


@attrs.define
class FileResult:
    stem: str
    path: Path
    nodes: int
    validation: Validation
    inputs: int | None
    notes: list[str] = attrs.field(factory=list)
    modes: list[ModeResult] = attrs.field(factory=list)


class NodeRed:
    """Node-RED, installed lazily, once."""

    def __init__(self) -> None:
        self.target = NodeRedTarget()
        self.unavailable: str | None = None
        self._ready = False

    def available(self) -> bool:
        if not self._ready and self.unavailable is None:
            try:
                self.target.install()
                self._ready = True
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                self.unavailable = str(exc)
        return self._ready


def _flows_for(mode: str, flow: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(Node-RED's flow, evflow's flow, whether evflow skips unsupported nodes) for a mode."""
    private = with_private_broker(flow)
    if mode == "plain":
        return without_dashboard(private), private, True
    standins = with_dashboard_standins(private)
    return standins, standins, False


def judge_mode(stem: str, mode: str, flow: list[dict[str, Any]], sequence: Sequence, flow_digest: str,
               args: argparse.Namespace, node_red: NodeRed) -> ModeResult:
    result = ModeResult(mode, "PASS")
    red_flow, evflow_flow, skipping = _flows_for(mode, flow)
    red_case = make_case(stem, mode, red_flow, sequence)
    evflow_case = make_case(stem, mode, evflow_flow, sequence)
    recorded_digest, recorded_version, recordings = load_recordings(stem)
    recording = recordings.get(mode)
    fresh = recording if recording is not None and recording.run_digest == red_case.digest else None
    if recording is not None and fresh is None:
        result.lines.append("Node-RED's recording is stale: " + (
            "it was made from another version of the flow file (another everest-core?)"
            if recorded_digest != flow_digest else "the inputs or the harness's rewriting changed"))
    expected: list[Output] | None = None
    if fresh is not None and not (args.live or args.record):
        expected = list(fresh.outputs)
        result.node_red_errors = fresh.errors
        result.answer_from = f"recorded {recorded_version}"
    elif node_red.available():
        run = observe(red_case, node_red.target, None, args.keep)
        result.node_red_s = run.seconds
        result.answer_from = f"run {node_red.target.version}"
        if run.workdir:
            result.lines.append(f"Node-RED's run: {run.workdir}")
        problems = ([f"Node-RED {run.failure}", *_tail(run.log)] if run.failure
                    else node_red.target.problems(red_case, run.log))
        if problems:
            result.status = "INVALID"
            result.lines += ["does not run cleanly in Node-RED:", *(f"  {p}" for p in problems)]
            return result
        expected = run.outputs
        result.node_red_errors = failed_nodes(NODE_RED_ERROR, run.log)
        if fresh is not None:
            drift = diff(red_case, list(fresh.outputs), expected, ("recorded", "now"))
            if drift:
                result.lines += ["note: Node-RED's answer now differs from its recording:", *("  " + d for d in drift)]
        if args.record:
            save_recording(stem, flow_digest, node_red.target.version, mode,
                           Recording(run_digest=red_case.digest, outputs=tuple(expected),
                                     errors=result.node_red_errors))
    elif fresh is not None:
        expected = list(fresh.outputs)
        result.node_red_errors = fresh.errors
        result.answer_from = f"recorded {recorded_version}"
    else:
        result.status = "NO-ANSWER"
        result.lines.append(f"no up-to-date recording, and Node-RED is unavailable: {node_red.unavailable}")
        return result
    result.node_red_count = len(expected)
    if args.node_red_only:
        result.status = "OK"
        return result
    evflow = EvflowSkipping() if skipping else EvflowTarget()
    got = observe(evflow_case, evflow, len(expected), args.keep)
    result.evflow_s = got.seconds
    if got.workdir:
        result.lines.append(f"evflow's run: {got.workdir}")
    if got.failure:
        result.status = "FAIL"
        result.lines += [f"evflow {got.failure}:", *("  " + line for line in _evflow_reasons(got.log))]
        return result
    result.evflow_count = len(got.outputs)
    result.evflow_errors = failed_nodes(EVFLOW_ERROR, got.log)
    red_only = sorted(set(result.node_red_errors or ()) - set(result.evflow_errors))
    evflow_only = sorted(set(result.evflow_errors) - set(result.node_red_errors or ()))
    if red_only or evflow_only:
        result.lines.append("note: not the same nodes logged errors:"
                            + (f" only in Node-RED {', '.join(red_only)};" if red_only else "")
                            + (f" only in evflow {', '.join(evflow_only)}" if evflow_only else ""))
    differences = diff(evflow_case, expected, got.outputs)
    if differences:
        result.status = "FAIL"
        result.lines += ["- Node-RED  + evflow", *differences]
    return result


def judge_file(stem: str, path: Path, args: argparse.Namespace, node_red: NodeRed, command: list[str]) -> FileResult:
    raw = path.read_bytes()
    flow = json.loads(raw)
    flow_digest = digest(raw)
    result = FileResult(stem, path, len(flow), validate(command, path), None)
    sequence_path = EVEREST_DIR / f"{stem}.inputs.json"
    if not sequence_path.exists():
        result.notes.append(f"no input sequence ({sequence_path.relative_to(HERE)}): write one to compare outputs")
        result.modes = [ModeResult(mode, "SKIP") for mode in args.modes]
        return result
    sequence = load_sequence(sequence_path)
    result.inputs = len(sequence.inputs)
    if sequence.flow_digest != flow_digest:
        result.notes.append(f"the input sequence was written for another version of this file "
                            f"(digest {sequence.flow_digest}, the file's is {flow_digest}): check that it still fits")
    for mode in args.modes:
        try:
            result.modes.append(judge_mode(stem, mode, flow, sequence, flow_digest, args, node_red))
        except Exception as exc:  # the harness's own failure (a broker that did not start): this mode only
            result.modes.append(ModeResult(mode, "FAIL", lines=[f"the harness failed: {type(exc).__name__}: {exc}"]))
    return result


# ---- report -----------------------------------------------------------------------------------------------


def _types(kinds: dict[str, list[str]]) -> str:
    return ", ".join(f"{kind} ({len(ids)})" for kind, ids in sorted(kinds.items()))


def print_file(result: FileResult) -> None:
    v = result.validation
    dashboard = sum(map(len, v.dashboard.values()))
    print(f"{result.stem}  ({result.nodes} nodes, {dashboard} dashboard)", flush=True)
    verdict = "OK" if v.ok else "NOT OK"
    print(f"    validate  {verdict}: unsupported {dashboard} dashboard node(s) of {len(v.dashboard)} type(s)"
          + (f", {v.warnings} warning(s)" if v.warnings else "") + f"  ({v.seconds:.1f} s)")
    if v.other_unsupported:
        print(f"              unsupported besides the dashboard: {_types(v.other_unsupported)}")
    for error in v.errors:
        print(f"              error: {error}")
    for note in result.notes:
        print(f"    note: {note}")
    for mode in result.modes:
        counts = ", ".join(f"{who} {n}" for who, n in (("Node-RED", mode.node_red_count),
                                                         ("evflow", mode.evflow_count)) if n is not None)
        timing = ", ".join(f"{who} {s:.1f} s" for who, s in (("Node-RED", mode.node_red_s),
                                                               ("evflow", mode.evflow_s)) if s is not None)
        details = "; ".join(part for part in (f"messages: {counts}" if counts else "", mode.answer_from, timing)
                            if part)
        print(f"    {mode.mode:9} {mode.status}" + (f"  ({details})" if details else ""), flush=True)
        for line in mode.lines:
            print(f"              {line}", flush=True)


def print_summary(results: list[FileResult], modes: tuple[str, ...]) -> None:
    header = ["file", "nodes", "dashboard", "validate"]
    for mode in modes:
        header += [mode, f"{mode} NR/evflow", "failed nodes NR/evflow"]
    header += ["inputs", "time s"]
    rows = []
    for r in results:
        v = r.validation
        row = [r.stem, str(r.nodes), f"{sum(map(len, v.dashboard.values()))} ({len(v.dashboard)} types)",
               "OK" if v.ok else "NOT OK: " + (_types(v.other_unsupported) or f"{len(v.errors)} error(s)")]
        by_mode = {m.mode: m for m in r.modes}
        for mode in modes:
            m = by_mode.get(mode)
            if m is None:
                row += ["-", "-", "-"]
                continue
            row.append({"PASS": "equal", "FAIL": "DIFFERENT" if m.evflow_count is not None else "FAIL"}
                       .get(m.status, m.status))
            row.append(f"{'-' if m.node_red_count is None else m.node_red_count}/"
                       f"{'-' if m.evflow_count is None else m.evflow_count}")
            row.append("/".join("-" if e is None else str(len(e)) for e in (m.node_red_errors, m.evflow_errors)))
        seconds = v.seconds + sum((m.node_red_s or 0) + (m.evflow_s or 0) for m in r.modes)
        row += ["-" if r.inputs is None else str(r.inputs), f"{seconds:.1f}"]
        rows.append(row)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=Path, required=True,
                        help="an everest-core checkout, or a directory of its flow files")
    parser.add_argument("--only", nargs="+", metavar="STEM", help="flow files by stem (shell patterns allowed)")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both",
                        help="plain: the dashboard dropped; standins: its widgets stood in for over MQTT")
    parser.add_argument("--record", action="store_true", help="run Node-RED and write its answers to everest/")
    parser.add_argument("--live", action="store_true", help="run Node-RED even where a recording is up to date")
    parser.add_argument("--node-red-only", action="store_true", help="run only Node-RED (checks the sequences)")
    parser.add_argument("--summary", action="store_true", help="end with a table: one line per flow file")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (flow, settings, log)")
    args = parser.parse_args(argv)
    args.modes = MODES if args.mode == "both" else (args.mode,)
    return args


def select(found: dict[str, Path], patterns: list[str] | None) -> Iterator[tuple[str, Path]]:
    if patterns:
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(stem, p) for stem in found)]
        if unmatched:
            raise SystemExit(f"no flow file matches {', '.join(unmatched)}")
    for stem, path in sorted(found.items()):
        if not patterns or any(fnmatch.fnmatchcase(stem, p) for p in patterns):
            yield stem, path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.flows.is_dir():
        print(f"--flows {args.flows}: not a directory", file=sys.stderr)
        return 2
    found = find_flow_files(args.flows)
    if not found:
        print(f"no Node-RED flow file with an mqtt-broker under {args.flows}", file=sys.stderr)
        return 2
    node_red = NodeRed()
    command = Evflow().command
    began = time.monotonic()
    results = []
    for stem, path in select(found, args.only):
        try:
            result = judge_file(stem, path, args, node_red, command)
        except SequenceError as exc:
            print(f"bad input sequence: {exc}", file=sys.stderr)
            return 1
        print_file(result)
        results.append(result)
    elapsed = time.monotonic() - began
    print()
    if args.summary:
        print_summary(results, args.modes)
        print()
    if node_red.unavailable:
        print(f"Node-RED is unavailable: {node_red.unavailable}")
    statuses = Counter(m.status for r in results for m in r.modes)
    invalid = sum(1 for r in results if not r.validation.ok)
    print(f"{len(results)} flow file(s): validate OK for {len(results) - invalid}; runs: "
          + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) + f"  ({elapsed:.0f} s)")
    failed = invalid or any(status not in ("PASS", "OK", "SKIP") for status in statuses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
