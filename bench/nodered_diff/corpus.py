"""The corpus: case files (a Node-RED flow, the MQTT messages to publish, the topics to watch) and the
recordings of what Node-RED published for each.

A case file, ``cases/NAME.json``::

    {
      "description": "what the case shows",
      "flow": [... the flow exactly as Node-RED 4's editor exports it ...],
      "inputs": [{"topic": "in/x", "payload": "text" | <JSON value>, "payload_base64": "...",
                  "qos": 0, "retain": false, "before_start": false, "delay_after_ms": 0}],
      "outputs": ["out/x", "out/y/#"],
      "env": {"NAME": "value"},
      "count": 3 | {"out/x": 3},
      "quiet_ms": 500,
      "order": "topic" | "global" | "none",
      "compare": "bytes" | "json",
      "log_allowed": ["[error] [function:f] boom"]
    }

Everything but ``flow``, ``inputs`` and ``outputs`` is optional; README.md says what each means.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"
EXPECTED_DIR = HERE / "expected"

# The harness's readiness probe: a tab of its own, added to every case's flow when it runs.
PING_TOPIC = "nrdiff/ping"
PONG_TOPIC = "nrdiff/pong"
PING_TAB = "nrdiff.ping.tab"

ORDERS = ("topic", "global", "none")
COMPARES = ("bytes", "json")
CASE_KEYS = {"description", "flow", "inputs", "outputs", "env", "count", "quiet_ms", "order", "compare",
             "log_allowed"}
INPUT_KEYS = {"topic", "payload", "payload_base64", "qos", "retain", "before_start", "delay_after_ms"}


class CaseError(ValueError):
    """A case file that the harness cannot use: the message names the file and the key."""


@attrs.frozen(kw_only=True)
class Input:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    # published (retained, usually) before the system starts, so that its subscription finds it
    before_start: bool = False
    delay_after_ms: int = 0


@attrs.frozen(kw_only=True)
class Output:
    """One MQTT message published on a watched topic, as the harness received it (QoS and retain
    flag as published: the harness subscribes at QoS 2 with MQTT 5's retain-as-published)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"topic": self.topic}
        try:
            record["payload"] = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(self.payload).decode("ascii")
        record["qos"] = self.qos
        record["retain"] = self.retain
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Output:
        if "payload_base64" in record:
            payload = base64.b64decode(record["payload_base64"])
        else:
            payload = record["payload"].encode("utf-8")
        return cls(topic=record["topic"], payload=payload, qos=record["qos"], retain=record["retain"])


@attrs.frozen(kw_only=True)
class Case:
    name: str
    path: Path
    description: str
    flow: list[dict[str, Any]]
    inputs: tuple[Input, ...]
    outputs: tuple[str, ...]
    env: dict[str, str]
    # endless sources: the run ends when this many messages came (in all, or per topic); later ones are ignored
    count: int | dict[str, int] | None
    quiet_s: float
    order: str
    compare: str
    log_allowed: tuple[str, ...]
    # the case's content, canonical: a recording made from another content is stale
    digest: str

    @property
    def broker_id(self) -> str:
        return next(node["id"] for node in self.flow if node.get("type") == "mqtt-broker")

    def runnable_flow(self) -> list[dict[str, Any]]:
        """The case's flow plus the readiness probe on a tab of its own (so that a catch, status or
        complete node watching its whole tab never sees it): ``mqtt in`` on the ping topic wired to
        ``mqtt out`` on the pong topic, on the case's broker. A pong proves the connection is up and
        the flow's subscriptions are in place."""
        broker = self.broker_id
        probe = [
            {"id": PING_TAB, "type": "tab", "label": "nodered_diff readiness probe", "disabled": False, "info": "",
             "env": []},
            {"id": "nrdiff.ping", "type": "mqtt in", "z": PING_TAB, "name": "ping", "topic": PING_TOPIC, "qos": "0",
             "datatype": "utf8", "broker": broker, "nl": False, "rap": True, "rh": 0, "inputs": 0, "x": 120, "y": 40,
             "wires": [["nrdiff.pong"]]},
            {"id": "nrdiff.pong", "type": "mqtt out", "z": PING_TAB, "name": "pong", "topic": PONG_TOPIC, "qos": "0",
             "retain": "false", "respTopic": "", "contentType": "", "userProps": "", "correl": "", "expiry": "",
             "broker": broker, "x": 320, "y": 40, "wires": []},
        ]
        return [*self.flow, *probe]

    def count_reached(self, outputs: list[Output]) -> bool:
        if self.count is None:
            return False
        if isinstance(self.count, int):
            return len(outputs) >= self.count
        return all(sum(1 for o in outputs if o.topic == topic) >= n for topic, n in self.count.items())

    def counted(self, outputs: list[Output]) -> list[Output]:
        """Only the first ``count`` messages (in all, or of each counted topic)."""
        if self.count is None:
            return outputs
        if isinstance(self.count, int):
            return outputs[: self.count]
        kept: list[Output] = []
        seen: dict[str, int] = {}
        for output in outputs:
            limit = self.count.get(output.topic)
            seen[output.topic] = seen.get(output.topic, 0) + 1
            if limit is None or seen[output.topic] <= limit:
                kept.append(output)
        return kept


def _payload_bytes(raw: dict[str, Any], where: str) -> bytes:
    if "payload_base64" in raw:
        if "payload" in raw:
            raise CaseError(f"{where}: payload and payload_base64 both given")
        return base64.b64decode(raw["payload_base64"], validate=True)
    if "payload" not in raw:
        raise CaseError(f"{where}: no payload")
    payload = raw["payload"]
    if isinstance(payload, str):
        return payload.encode("utf-8")
    # A JSON value is published as JSON.stringify would write it.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check_flow(flow: Any, where: str) -> None:
    if not isinstance(flow, list) or not all(isinstance(node, dict) for node in flow):
        raise CaseError(f"{where}.flow: a list of node objects")
    brokers = [node for node in flow if node.get("type") == "mqtt-broker"]
    if len(brokers) != 1:
        raise CaseError(f"{where}.flow: exactly one mqtt-broker config node, found {len(brokers)}")
    if brokers[0].get("broker") != "${MQTT_HOST}" or brokers[0].get("port") != "${MQTT_PORT}":
        raise CaseError(f"{where}.flow: the mqtt-broker's broker and port must be ${{MQTT_HOST}} and ${{MQTT_PORT}}")
    ids = [node.get("id") for node in flow]
    if len(set(ids)) != len(ids):
        raise CaseError(f"{where}.flow: node ids are not unique")
    if any(str(node_id).startswith("nrdiff.") for node_id in ids):
        raise CaseError(f"{where}.flow: ids starting with 'nrdiff.' are the harness's")


def load_case(path: Path) -> Case:
    where = path.name
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CaseError(f"{where}: {exc}") from None
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: a JSON object")
    unknown = set(raw) - CASE_KEYS
    if unknown:
        raise CaseError(f"{where}: unknown keys {sorted(unknown)}")
    _check_flow(raw.get("flow"), where)
    inputs = []
    for index, entry in enumerate(raw.get("inputs", [])):
        at = f"{where}.inputs[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("topic"), str):
            raise CaseError(f"{at}: an object with a topic")
        if set(entry) - INPUT_KEYS:
            raise CaseError(f"{at}: unknown keys {sorted(set(entry) - INPUT_KEYS)}")
        if entry.get("before_start") and not entry.get("retain"):
            raise CaseError(f"{at}: before_start needs retain (nobody is subscribed yet)")
        inputs.append(Input(topic=entry["topic"], payload=_payload_bytes(entry, at), qos=int(entry.get("qos", 0)),
                            retain=bool(entry.get("retain", False)), before_start=bool(entry.get("before_start", False)),
                            delay_after_ms=int(entry.get("delay_after_ms", 0))))
    outputs = raw.get("outputs")
    if not isinstance(outputs, list) or not outputs or not all(isinstance(topic, str) for topic in outputs):
        raise CaseError(f"{where}.outputs: a non-empty list of topics (filters allowed)")
    if any(topic.startswith("nrdiff/") for topic in outputs + [i.topic for i in inputs]):
        raise CaseError(f"{where}: topics under nrdiff/ are the harness's")
    count = raw.get("count")
    if count is not None and not (isinstance(count, int) and count > 0) and not (
        isinstance(count, dict) and count and all(isinstance(n, int) and n > 0 for n in count.values())
    ):
        raise CaseError(f"{where}.count: a positive number, or topic -> positive number")
    order = raw.get("order", "topic")
    if order not in ORDERS:
        raise CaseError(f"{where}.order: one of {ORDERS}")
    compare = raw.get("compare", "bytes")
    if compare not in COMPARES:
        raise CaseError(f"{where}.compare: one of {COMPARES}")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise CaseError(f"{where}.env: an object of strings")
    canonical = json.dumps({key: raw[key] for key in sorted(raw) if key != "description"}, sort_keys=True,
                           separators=(",", ":"))
    return Case(
        name=path.stem, path=path, description=raw.get("description", ""), flow=raw["flow"], inputs=tuple(inputs),
        outputs=tuple(outputs), env=env, count=count, quiet_s=float(raw.get("quiet_ms", 500)) / 1000, order=order,
        compare=compare, log_allowed=tuple(raw.get("log_allowed", ())),
        digest=hashlib.sha256(canonical.encode()).hexdigest()[:16],
    )


def load_corpus(directory: Path = CASES_DIR) -> list[Case]:
    return [load_case(path) for path in sorted(directory.glob("*.json"))]


# ---- recordings -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Recording:
    """What Node-RED published for a case, with the Node-RED version and the case content it ran."""

    case_digest: str
    node_red: str
    outputs: tuple[Output, ...]


def recording_path(case: Case) -> Path:
    return EXPECTED_DIR / f"{case.name}.json"


def load_recording(case: Case) -> Recording | None:
    path = recording_path(case)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Recording(case_digest=raw["case_digest"], node_red=raw["node_red"],
                     outputs=tuple(Output.from_json(record) for record in raw["outputs"]))


def save_recording(case: Case, recording: Recording) -> None:
    EXPECTED_DIR.mkdir(exist_ok=True)
    document = {"case": case.name, "case_digest": recording.case_digest, "node_red": recording.node_red,
                "outputs": [output.to_json() for output in recording.outputs]}
    recording_path(case).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
