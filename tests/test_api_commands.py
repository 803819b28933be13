"""`evflow nodes`, `evflow schema` and `evflow validate` with API documents (the tests' own)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .asyncapi_samples import write_documents
from .processes import CLI


def evflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_documents(tmp_path_factory.mktemp("apis"))


def test_nodes_lists_the_types_of_every_document(docs: Path) -> None:
    listed = json.loads(evflow("nodes", "--api-docs", str(docs), "--format", "json").stdout)
    by_type = {entry["type"]: entry for entry in listed}
    question = by_type["meter/receive_request_start_transaction"]
    assert question["kind"] == "node" and "EVerest starts a transaction." in question["doc"]
    assert question["provided_by"] == f"API document {docs.resolve()}/meter_API.yaml"
    properties = {p["name"]: p for p in question["properties"]}
    assert properties["unanswered"]["default"] == "report" and properties["api"]["references"] == "everest-api"
    assert "inject" in by_type and "charging/send_pause" in by_type
    text = evflow("nodes", "--api-docs", str(docs)).stdout
    assert "meter/send_reply_start_transaction  [node, from API document" in text


def test_a_document_that_does_not_read_is_listed_with_its_error(tmp_path: Path) -> None:
    docs = write_documents(tmp_path / "apis")
    (docs / "broken_API.yaml").write_text("asyncapi: 3.0.0\nservers: {}\n")
    result = evflow("nodes", "--api-docs", str(docs))
    assert result.returncode == 0, result.stderr
    assert "broken  [unavailable, from API document" in result.stdout
    assert "cannot be used:" in result.stdout and "expected one server pathname" in result.stdout


def test_schema_covers_the_api_node_types(docs: Path, tmp_path: Path) -> None:
    schema = json.loads(evflow("schema", "--api-docs", str(docs)).stdout)
    validator = jsonschema.Draft202012Validator(schema)

    def flow(payload: Any) -> list[dict[str, Any]]:
        return [{"id": "b", "type": "mqtt-broker", "broker": "mqtt://localhost:1883"},
                {"id": "api", "type": "everest-api", "broker": "b", "api": "meter", "module_id": "pm1"},
                {"id": "a", "type": "meter/send_reply_start_transaction", "api": "api", "payload": payload}]

    assert list(validator.iter_errors(flow({"status": "OK"}))) == []
    assert list(validator.iter_errors(flow({"status": "MAYBE"})))  # not one of the enum
    assert list(validator.iter_errors(flow({"status": "OK", "colour": "red"})))  # additionalProperties: false


def test_validate_reports_payload_problems_with_json_paths(docs: Path, tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps([
        {"id": "b", "type": "mqtt-broker", "broker": "mqtt://localhost:1883"},
        {"id": "api", "type": "everest-api", "broker": "b", "api": "charging", "module_id": "evse1"},
        {"id": "enable", "type": "charging/send_request_enable", "api": "api", "payload": {"source": "Me"}},
    ]))
    result = evflow("validate", "--api-docs", str(docs), str(path), "--format", "json")
    assert result.returncode == 1
    problems = {(p["path"], p["message"]) for p in json.loads(result.stdout)["problems"]}
    assert problems == {("$[2].payload.source", "expected one of 'LocalAPI', 'CSMS', got 'Me'"),
                        ("$[2].payload.priority", "required key missing")}
    missing = evflow("validate", "--api-docs", str(tmp_path / "nowhere"), str(path))
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    assert "Traceback" not in missing.stderr


async def test_evflow_run_answers_everest_with_api_docs(docs: Path, tmp_path: Path, broker: Any) -> None:
    """The whole command: `evflow run --api-docs` makes the node types, the process answers the
    simulator's question, and stops cleanly on SIGTERM with its counters logged."""
    import signal

    import trio

    from evflow.runtime.asyncapi.catalogue import ApiCatalogue
    from evflow.runtime.broker import BrokerConfig
    from evflow.runtime.simulator.generic import GenericApiSimulator
    from evflow.runtime.transport import MqttClient

    from .processes import evflow as evflow_process

    path = tmp_path / "flow.json"
    path.write_text(json.dumps([
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "api", "type": "everest-api", "broker": "b", "api": "meter", "module_id": "pm1"},
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "wires": [["answer"]]},
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "api", "payload": {"status": "OK"}},
    ]))
    async with trio.open_nursery() as nursery:
        mqtt = MqttClient(BrokerConfig.from_url(broker.url, connect_timeout=5))
        await nursery.start(mqtt.run)
        simulator = GenericApiSimulator(mqtt, ApiCatalogue([docs]).api("meter"), "pm1", discovery=False)
        await nursery.start(simulator.run)
        async with evflow_process(["run", "--api-docs", str(docs), str(path)]) as run:
            await run.wait_for("flow running")
            with trio.fail_after(10):
                reply = await simulator.ask("receive_request_start_transaction",
                                            {"evse_id": "E", "transaction_id": "t"}, timeout=5)
            assert reply == {"status": "OK"}
            run.process.send_signal(signal.SIGTERM)
            assert await run.exited() == 0, run.text
        assert "answered=1" in run.text, run.text
        nursery.cancel_scope.cancel()
