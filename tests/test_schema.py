"""`evflow schema`: every example flow validates against it; flows broken in ways a schema can see fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

FLOWS = Path(__file__).parent.parent / "flows"
BROKEN = Path(__file__).parent / "broken_flows"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    result = subprocess.run([sys.executable, "-m", "evflow.runtime.cli", "schema"], capture_output=True,
                            text=True, check=True, timeout=60)
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("flow", sorted(FLOWS.glob("*.json")), ids=lambda p: p.name)
def test_every_example_flow_is_valid(validator: jsonschema.Draft202012Validator, flow: Path) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(json.loads(flow.read_text()))]
    assert errors == []


def broken(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": "b", "type": "mqtt-broker", "broker": "mqtt://localhost"},
            {"id": "api", "type": "everest-api", "broker": "b", "module_id": "sec"}, node]


@pytest.mark.parametrize(
    ("flow", "where"),
    [
        (broken({"id": "x", "type": "no-such-type"}), [2, "type"]),
        (broken({"id": "x", "type": "heartbeat", "api": "api", "timeout": "5"}), [2, "timeout"]),
        (broken({"id": "x", "type": "heartbeat", "api": "api", "timout": 5}), [2]),  # a typo: unknown key
        (broken({"id": "x", "type": "keepalive"}), [2]),  # api is required
        (broken({"id": "x", "type": "filter", "rules": [{"property": "payload", "op": "like", "value": 1}]}),
         [2, "rules", 0, "op"]),
        (broken({"id": "x", "type": "mqtt-broker", "broker": "mqtt://h", "password": "hunter2"}), [2, "password"]),
        (broken({"id": "x", "type": "mqtt in", "broker": "b", "topic": "t", "qos": 1, "overflow": "spill"}),
         [2, "overflow"]),
        (broken({"id": "x", "type": "inject", "once": True, "wires": ["a"]}), [2, "wires", 0]),
        (broken({"type": "inject", "once": True}), [2]),  # no id
    ],
    ids=["unknown type", "wrong type", "unknown key", "missing required", "bad enum", "literal secret",
         "bad overflow", "wires shape", "no id"],
)
def test_broken_flows_fail_at_the_right_place(
    validator: jsonschema.Draft202012Validator, flow: list[dict[str, Any]], where: list[Any]
) -> None:
    errors = list(validator.iter_errors(flow))
    assert errors, "the schema accepted a broken flow"
    assert any(list(e.absolute_path)[: len(where)] == where for e in errors), [list(e.absolute_path) for e in errors]


def test_broken_corpus_files_that_a_schema_can_see_fail_it(validator: jsonschema.Draft202012Validator) -> None:
    caught = []
    for path in sorted(BROKEN.glob("*.json")):
        if path.name.endswith(".expect.json"):
            continue
        try:
            document = json.loads(path.read_text())
        except ValueError:
            continue  # not JSON: no schema applies
        if list(validator.iter_errors(document)):
            caught.append(path.stem)
    assert {"unknown_type", "literal_secret", "unknown_key", "wrong_field_type", "missing_required_field"} <= set(caught), caught
    assert len(caught) >= 10, caught
