"""The simulator of any API read from its AsyncAPI document, against a real broker and a plain MQTT
client in the client's seat; the made-up examples; ``evflow simulate --api`` driven through stdin.

The documents are written here, small and powermeter-shaped: a request with an enum in its reply, a
handler (EVerest asks the client), a variable the client sends and two that EVerest publishes.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from evflow.runtime.asyncapi.catalogue import ApiCatalogue, LoadedApi, check_payload
from evflow.runtime.asyncapi.documents import DocumentSet, Location
from evflow.runtime.asyncapi.examples import ExampleError, bad_examples, example_of
from evflow.runtime.asyncapi.model import MessageShape
from evflow.runtime.asyncapi.schemas import TypeBuilder, constraint_of
from evflow.runtime.broker import BrokerConfig
from evflow.runtime.codec import CodecError, dump_json, load_json
from evflow.runtime.models.evse_security import U64_MAX
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.simulator.generic import BadReply, GenericApiSimulator, NoReply, SimulatorError
from evflow.runtime.simulator.watchdog import CheckState
from evflow.runtime.transport import MqttClient

from .conftest import connected_client
from .processes import CLI, Child

MODULE = "pm1"
BASE = f"everest_api/1/powermeter/{MODULE}"
GET_STATUS = "send_request_get_status"
START = "receive_request_start_transaction"
VALUES = "send_powermeter_values"
TARIFF = "receive_tariff"
CLEAR = "receive_clear"


# ---- the document ------------------------------------------------------------------------------


def _envelope(ref: str) -> dict[str, Any]:
    return {"type": "object", "required": ["payload"], "properties": {
        "headers": {"type": "object", "properties": {"replyTo": {"type": "string"}}},
        "payload": {"$ref": ref},
    }}


def _channel(address: str | None, message: str) -> dict[str, Any]:
    return {"address": address, "messages": {message: {"$ref": f"#/components/messages/{message}"}}}


def _operation(action: str, channel: str, reply: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"action": action, "channel": {"$ref": f"#/channels/{channel}"}}
    if reply is not None:
        operation["reply"] = {"address": {"location": "$message.header#/replyTo"},
                              "channel": {"$ref": f"#/channels/{reply}"}}
    return operation


POWERMETER = {
    "asyncapi": "3.0.0",
    "info": {"title": "A powermeter-shaped API for tests", "version": "1.0.0"},
    "servers": {"default": {"host": "localhost:1883", "protocol": "mqtt",
                            "pathname": "everest_api/1/powermeter/{module_id}"}},
    "channels": {
        "send_request_get_status": _channel("m2e/get_status", "get_status_request"),
        "receive_reply_get_status": _channel(None, "get_status_reply"),
        "receive_request_start_transaction": _channel("e2m/start_transaction", "start_transaction_request"),
        "send_reply_start_transaction": _channel(None, "start_transaction_reply"),
        "send_powermeter_values": _channel("m2e/powermeter_values", "powermeter_values"),
        "receive_tariff": _channel("e2m/tariff", "tariff"),
        "receive_clear": _channel("e2m/clear", "clear"),
        "receive_heartbeat": _channel("e2m/heartbeat", "heartbeat"),
        "send_communication_check": _channel("m2e/communication_check", "communication_check"),
    },
    "operations": {
        GET_STATUS: _operation("send", "send_request_get_status", reply="receive_reply_get_status"),
        "receive_reply_get_status": _operation("receive", "receive_reply_get_status"),
        START: _operation("receive", "receive_request_start_transaction", reply="send_reply_start_transaction"),
        "send_reply_start_transaction": _operation("send", "send_reply_start_transaction"),
        VALUES: _operation("send", "send_powermeter_values"),
        TARIFF: _operation("receive", "receive_tariff"),
        CLEAR: _operation("receive", "receive_clear"),
        "receive_heartbeat": _operation("receive", "receive_heartbeat"),
        "send_communication_check": _operation("send", "send_communication_check"),
    },
    "components": {
        "messages": {
            "get_status_request": {
                "payload": _envelope("#/components/schemas/Phase"),
                "examples": [{"payload": {"headers": {"replyTo": "a/b"}, "payload": "L1"}}],
            },
            "get_status_reply": {
                "payload": {"$ref": "#/components/schemas/Status"},
                # The first breaks its own schema, as a few of EVerest's do: it must never be served.
                "examples": [{"payload": {"state": "Maybe", "since": "2024-05-01T12:00:00Z"}},
                             {"payload": {"state": "Faulted", "since": "2024-05-01T12:00:00Z"}}],
            },
            "start_transaction_request": {
                "payload": _envelope("#/components/schemas/StartTransaction"),
                "examples": [{"payload": {"headers": {"replyTo": "x"},
                                          "payload": {"evse_id": 1, "transaction_id": "t-1"}}}],
            },
            "start_transaction_reply": {"payload": {"$ref": "#/components/schemas/StartTransactionResult"}},
            "powermeter_values": {"payload": {"$ref": "#/components/schemas/Powermeter"}},
            "tariff": {"payload": {"$ref": "#/components/schemas/Tariff"}},
            "clear": {"summary": "no payload: an empty message"},
            "heartbeat": {"payload": {"type": "integer", "minimum": 0}},
            "communication_check": {"payload": {"type": "boolean"}},
        },
        "schemas": {
            "Phase": {"type": "string", "enum": ["L1", "L2", "L3"]},
            "Status": {"type": "object", "required": ["state", "since"], "properties": {
                "state": {"type": "string", "enum": ["Ok", "Faulted"]},
                "since": {"type": "string", "format": "date-time"},
                "detail": {"type": "string"},
            }},
            "StartTransaction": {"type": "object", "required": ["evse_id", "transaction_id"], "properties": {
                "evse_id": {"type": "integer", "minimum": 1},
                "transaction_id": {"type": "string", "maxLength": 36},
            }},
            "StartTransactionResult": {"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string", "enum": ["OK", "NOT_SUPPORTED", "UNEXPECTED_ERROR"]},
                "error": {"type": "string"},
            }},
            "Powermeter": {"type": "object", "required": ["timestamp", "energy_Wh_import"], "properties": {
                "timestamp": {"type": "string", "format": "date-time"},
                "energy_Wh_import": {"$ref": "#/components/schemas/Energy"},
            }},
            "Energy": {"type": "object", "required": ["total"], "properties": {
                "total": {"type": "number", "minimum": 0},
            }},
            "Tariff": {"type": "object", "required": ["price"], "properties": {
                "price": {"type": "number", "minimum": 0, "maximum": 100},
            }},
        },
    },
}

VALID_VALUES = {"timestamp": "2024-05-01T12:00:00Z", "energy_Wh_import": {"total": 12.5}}


def write_document(directory: Path, document: dict[str, Any] = POWERMETER, name: str = "powermeter") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}_API.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def api_docs(tmp_path: Path) -> Path:
    directory = tmp_path / "api"
    write_document(directory)
    return directory


@pytest.fixture
def api(api_docs: Path) -> LoadedApi:
    return ApiCatalogue([api_docs]).api("powermeter")


@pytest.fixture
async def everest(broker: MosquittoBroker) -> AsyncIterator[MqttClient]:
    """EVerest's own connection: the simulator's, apart from the client's (the ``mqtt`` fixture)."""
    async with connected_client(broker) as client:
        yield client


async def simulate(nursery: trio.Nursery, everest: MqttClient, api: LoadedApi, **options: Any) -> GenericApiSimulator:
    options = {"heartbeat_interval_ms": 0, "comm_check_timeout_s": 0, **options}
    simulator = GenericApiSimulator(everest, api, MODULE, **options)
    await nursery.start(simulator.run)
    return simulator


def request(payload: Any, reply_to: str) -> bytes:
    return dump_json({"headers": {"replyTo": reply_to}, "payload": payload})


# ---- requests ----------------------------------------------------------------------------------


async def test_request_answered_with_the_first_example_that_fits(mqtt: MqttClient, everest: MqttClient,
                                                                 api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api)
        replies = await mqtt.subscribe("test/replies/+")
        with trio.fail_after(10):
            await mqtt.publish(f"{BASE}/m2e/get_status", request("L2", "test/replies/1"))
            reply = await replies.receive()
        assert reply.topic == "test/replies/1"
        assert load_json(reply.payload) == {"state": "Faulted", "since": "2024-05-01T12:00:00Z"}
        assert simulator.answered[GET_STATUS] == 1
        assert [(p.operation, p.part, p.index) for p in simulator.bad_examples] == [(GET_STATUS, "reply", 0)]
        assert "expected one of 'Ok', 'Faulted', got 'Maybe' @ $.state" in str(simulator.bad_examples[0])
        nursery.cancel_scope.cancel()


async def test_request_answered_with_the_configured_answer_under_a_prefix(mqtt: MqttClient, everest: MqttClient,
                                                                          api: LoadedApi) -> None:
    answer = {"state": "Ok", "since": "2025-01-01T00:00:00Z", "detail": "configured"}
    async with trio.open_nursery() as nursery:
        await simulate(nursery, everest, api, external_prefix="site/", answers={GET_STATUS: answer})
        replies = await mqtt.subscribe("site/test/replies/+")
        with trio.fail_after(10):
            # replyTo without the prefix: EVerest puts its prefix in front of it, as of every topic.
            await mqtt.publish(f"site/{BASE}/m2e/get_status", request("L1", "test/replies/1"))
            reply = await replies.receive()
        assert load_json(reply.payload) == answer
        nursery.cancel_scope.cancel()


async def test_invalid_request_gets_no_reply(mqtt: MqttClient, everest: MqttClient, api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api)
        replies = await mqtt.subscribe("test/replies/+")
        with trio.fail_after(10):
            await mqtt.publish(f"{BASE}/m2e/get_status", request("L4", "test/replies/bad-enum"))
            await mqtt.publish(f"{BASE}/m2e/get_status", b'{"headers": {"replyTo": "test/replies/no-payload"}}')
            await mqtt.publish(f"{BASE}/m2e/get_status", b"{not json")
            await mqtt.publish(f"{BASE}/m2e/get_status", request("L3", "test/replies/good"))
            # One inbox, in order: when the good one is answered, the bad ones were handled before it.
            reply = await replies.receive()
        assert reply.topic == "test/replies/good"
        assert simulator.invalid_requests[GET_STATUS] == 3 and simulator.answered[GET_STATUS] == 1
        nursery.cancel_scope.cancel()


def test_answers_are_checked_when_the_simulator_is_built(api: LoadedApi) -> None:
    mqtt = MqttClient(BrokerConfig.from_url("mqtt://127.0.0.1:1"))
    with pytest.raises(SimulatorError, match=r"answer to send_request_get_status breaks its reply schema: "
                                             r"expected one of 'Ok', 'Faulted', got 'Maybe' @ \$\.state"):
        GenericApiSimulator(mqtt, api, MODULE, answers={GET_STATUS: {"state": "Maybe", "since": "x"}})
    with pytest.raises(SimulatorError, match=r"no request operation 'send_request_get_statu'.*did you mean "
                                             r"send_request_get_status"):
        GenericApiSimulator(mqtt, api, MODULE, answers={"send_request_get_statu": {}})
    with pytest.raises(SimulatorError, match="receive_request_start_transaction is a handler operation"):
        GenericApiSimulator(mqtt, api, MODULE, answers={START: {"status": "OK"}})


# ---- what the client sends, what EVerest publishes ---------------------------------------------------


async def test_sent_values_are_recorded_and_invalid_ones_counted(mqtt: MqttClient, everest: MqttClient,
                                                                 api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api)
        with trio.fail_after(10):
            await mqtt.publish(f"{BASE}/m2e/powermeter_values", dump_json({"timestamp": "now",
                                                                           "energy_Wh_import": {"total": -1}}))
            await mqtt.publish(f"{BASE}/m2e/powermeter_values", dump_json(VALID_VALUES))
            assert await simulator.next_sent(VALUES) == VALID_VALUES
        assert simulator.received(VALUES) == [VALID_VALUES]
        assert simulator.invalid_sent[VALUES] == 1
        with pytest.raises(SimulatorError, match="receive_tariff is a receive operation, not a send one"):
            simulator.received(TARIFF)
        nursery.cancel_scope.cancel()


async def test_publish_checks_the_value_against_the_schema(mqtt: MqttClient, everest: MqttClient,
                                                           api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api)
        published = await mqtt.subscribe(f"{BASE}/e2m/+")
        with trio.fail_after(10):
            with pytest.raises(CodecError) as bad:
                await simulator.publish(TARIFF, {"price": 120})
            assert bad.value.problems == ("must be at most 100, got 120.0 @ $.price",)
            with pytest.raises(CodecError, match=r"required key missing @ \$\.price"):
                await simulator.publish(TARIFF, {})
            with pytest.raises(SimulatorError, match="no receive operation 'receive_tarif'"):
                await simulator.publish("receive_tarif", {"price": 1})
            await simulator.publish(TARIFF, {"price": 0.25})
            await simulator.publish(CLEAR)
            tariff, clear = await published.receive(), await published.receive()
        assert (tariff.topic, load_json(tariff.payload)) == (f"{BASE}/e2m/tariff", {"price": 0.25})
        assert (clear.topic, clear.payload) == (f"{BASE}/e2m/clear", b"")
        nursery.cancel_scope.cancel()


# ---- EVerest asks the client ----------------------------------------------------------------------------


async def answer_requests(mqtt: MqttClient, topic: str, reply: bytes, prefix: str = "",
                          *, task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED) -> None:
    """A plain client's handler: answer every request on ``topic`` with ``reply``; the envelopes it saw
    are in the list it reports started with."""
    seen: list[Any] = []
    async with await mqtt.subscribe(topic) as requests:
        task_status.started(seen)
        async for message in requests:
            envelope = load_json(message.payload)
            seen.append(envelope)
            await mqtt.publish(prefix + envelope["headers"]["replyTo"], reply)


async def test_ask_is_answered_by_the_client(mqtt: MqttClient, everest: MqttClient, api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api, external_prefix="site/")
        seen = await nursery.start(answer_requests, mqtt, f"site/{BASE}/e2m/start_transaction",
                                   b'{"status": "OK"}', "site/")
        with trio.fail_after(10):
            reply = await simulator.ask(START, {"evse_id": 2, "transaction_id": "t-9"})
        assert reply == {"status": "OK"}
        (envelope,) = seen
        assert envelope["payload"] == {"evse_id": 2, "transaction_id": "t-9"}
        reply_to = envelope["headers"]["replyTo"]
        assert not reply_to.startswith("site/")
        assert all(level and set(level) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") for level in reply_to.split("/"))
        with pytest.raises(CodecError, match=r"must be at least 1, got 0 @ \$\.payload\.evse_id"):
            await simulator.ask(START, {"evse_id": 0, "transaction_id": "t"})
        nursery.cancel_scope.cancel()


async def test_ask_times_out_when_nobody_answers(everest: MqttClient, api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api)
        with trio.fail_after(10), pytest.raises(NoReply, match=r"no reply to receive_request_start_transaction "
                                                               r"within 0\.2 s \(EVerest goes on"):
            await simulator.ask(START, {"evse_id": 1, "transaction_id": "t"}, timeout=0.2)
        nursery.cancel_scope.cancel()


async def test_ask_refuses_a_reply_that_breaks_the_schema(mqtt: MqttClient, everest: MqttClient,
                                                          api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api)
        await nursery.start(answer_requests, mqtt, f"{BASE}/e2m/start_transaction", b'{"status": "Maybe"}')
        with trio.fail_after(10), pytest.raises(BadReply) as bad:
            await simulator.ask(START, {"evse_id": 1, "transaction_id": "t"})
        assert bad.value.problems == ("expected one of 'OK', 'NOT_SUPPORTED', 'UNEXPECTED_ERROR', got 'Maybe' @ $.status",)
        nursery.cancel_scope.cancel()


# ---- liveness and discovery ------------------------------------------------------------------------------


async def test_heartbeat_counts_and_wraps(mqtt: MqttClient, everest: MqttClient, api: LoadedApi) -> None:
    beats = await mqtt.subscribe(f"{BASE}/e2m/heartbeat")
    async with trio.open_nursery() as nursery:
        await simulate(nursery, everest, api, heartbeat_interval_ms=10, heartbeat_start=U64_MAX - 1)
        with trio.fail_after(10):
            received = [load_json((await beats.receive()).payload) for _ in range(4)]
        assert received == [U64_MAX - 1, U64_MAX, 0, 1]
        nursery.cancel_scope.cancel()


async def test_communication_check_feeds_the_watchdog(mqtt: MqttClient, everest: MqttClient, api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await simulate(nursery, everest, api, comm_check_timeout_s=30)
        assert simulator.watchdog.state is CheckState.INITIAL_ERROR
        replies = await mqtt.subscribe("test/replies/+")
        with trio.fail_after(10):
            await mqtt.publish(f"{BASE}/m2e/communication_check", b"true")
            await mqtt.publish(f"{BASE}/m2e/get_status", request("L1", "test/replies/1"))
            await replies.receive()  # the inbox is ordered: the check was taken before
        assert simulator.watchdog.state is CheckState.OK
        nursery.cancel_scope.cancel()


async def test_discovery_names_the_module(mqtt: MqttClient, everest: MqttClient, api: LoadedApi) -> None:
    async with trio.open_nursery() as nursery:
        await simulate(nursery, everest, api, heartbeat_interval_ms=250, comm_check_timeout_s=3, reply_timeout_s=2.5)
        replies = await mqtt.subscribe("test/discover")
        with trio.fail_after(10):
            await mqtt.publish("everest_api/discover", b'{"headers": {"replyTo": "test/discover"}}')
            answer = load_json((await replies.receive()).payload)
        assert answer == {"apis": [{"type": "powermeter", "module_id": MODULE, "version": 1, "communication_monitoring": {
            "heartbeat_period_ms": 250, "communication_check_period_s": 3, "request_reply_timeout_s": 3}}]}
        nursery.cancel_scope.cancel()


# ---- made-up examples ---------------------------------------------------------------------------------------

FEATURES = {
    "Level": {"type": "string", "enum": ["High", "Low"]},
    "Limited": {"type": "object", "required": ["id", "count", "ratio", "offset", "tags", "at", "note", "level"],
                "properties": {
                    "id": {"type": "string", "minLength": 3, "maxLength": 5},
                    "count": {"type": "integer", "minimum": 7, "maximum": 9},
                    "ratio": {"type": "number", "minimum": -5, "maximum": -1},
                    "offset": {"type": "integer", "exclusiveMinimum": 10, "multipleOf": 4},
                    "tags": {"type": "array", "minItems": 2, "items": {"$ref": "#/components/schemas/Level"}},
                    "at": {"type": "string", "format": "date-time"},
                    "note": {"type": "string", "pattern": "^[0-9]+$"},
                    "level": {"$ref": "#/components/schemas/Level"},
                    "optional": {"type": "integer", "minimum": 100},
                }},
    "Maybe": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Level"}]},
    "AnyOf": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]},
    "TypeList": {"type": ["null", "string"], "minLength": 2},
    "Merged": {"allOf": [{"$ref": "#/components/schemas/Limited"},
                         {"type": "object", "required": ["extra"], "properties": {"extra": {"type": "boolean"}}}]},
    "MergedAcrossFiles": {"allOf": [{"$ref": "#/components/schemas/Merged"}, {"$ref": "other.yaml#/Remote"}]},
    "Impossible": {"type": "string", "pattern": "^@{3}$"},
    "Empty": {"type": "integer", "minimum": 5, "maximum": 4},
}
REMOTE = {"Remote": {"type": "object", "required": ["remote"], "properties": {
    "remote": {"$ref": "#/Unit"}}}, "Unit": {"type": "string", "enum": ["W", "kW"]}}

EXPECTED = {
    "Level": "High",
    "Limited": {"id": "xxx", "count": 7, "ratio": -1.0, "offset": 12, "tags": ["High", "High"],
                "at": "2024-01-01T00:00:00Z", "note": "0", "level": "High"},
    "Maybe": "High",
    "AnyOf": 3,
    "TypeList": "xx",
}


@pytest.fixture
def features(tmp_path: Path) -> tuple[DocumentSet, Path]:
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump({"components": {"schemas": FEATURES}}))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(REMOTE))
    return DocumentSet(), path


def shape_of(documents: DocumentSet, path: Path, name: str) -> MessageShape:
    schema = {"$ref": f"#/components/schemas/{name}"}
    builder = TypeBuilder(documents, "evflow.runtime.models.asyncapi.test_features")
    return MessageShape(builder.type_of(schema, Location(path.resolve()), name), schema,
                        constraint_of(FEATURES[name]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_made_from_each_schema_feature(features: tuple[DocumentSet, Path], name: str) -> None:
    documents, path = features
    shape = shape_of(documents, path, name)
    value = example_of(shape, documents, path)
    assert value == EXPECTED[name]
    check_payload(shape, value)  # what example_of checks itself, once more
    assert example_of(shape.schema, documents, path) == value  # a bare schema, not a shape


def test_example_of_all_of_merges_the_parts(features: tuple[DocumentSet, Path]) -> None:
    documents, path = features
    shape = shape_of(documents, path, "Merged")
    value = example_of(shape, documents, path)
    assert value == {**EXPECTED["Limited"], "extra": False}
    check_payload(shape, value)
    # A part in another file: its properties' $refs are that file's (a bare schema: the loader's
    # TypeBuilder resolves them against the outer file, so no shape can be made for it).
    schema = {"$ref": "#/components/schemas/MergedAcrossFiles"}
    assert example_of(schema, documents, path) == {**value, "remote": "W"}


@pytest.mark.parametrize(("name", "problem"), [("Impossible", "cannot make up a string matching the pattern"),
                                               ("Empty", "no integer fits between its minimum and maximum")])
def test_example_that_cannot_be_made_is_a_clear_error(features: tuple[DocumentSet, Path], name: str,
                                                      problem: str) -> None:
    documents, path = features
    with pytest.raises(ExampleError, match=problem) as error:
        example_of(shape_of(documents, path, name), documents, path)
    assert f"features.yaml#/components/schemas/{name}" in str(error.value)


def test_example_of_prefers_the_first_fitting_example(api: LoadedApi) -> None:
    documents = DocumentSet()
    operations = api.description.operations
    assert example_of(operations[GET_STATUS].reply, documents, api.description.path) == {
        "state": "Faulted", "since": "2024-05-01T12:00:00Z"}
    assert example_of(operations[GET_STATUS].payload, documents, api.description.path) == "L1"  # the inner payload
    made = example_of(operations[VALUES].payload, documents, api.description.path)
    assert made == {"timestamp": "2024-01-01T00:00:00Z", "energy_Wh_import": {"total": 0.0}}
    assert [str(p) for p in bad_examples(api)] == [
        "send_request_get_status: reply example 1: expected one of 'Ok', 'Faulted', got 'Maybe' @ $.state"]


# ---- the command line ------------------------------------------------------------------------------------------


async def test_cli_serves_an_api_and_takes_commands_on_stdin(tmp_path: Path, api_docs: Path, broker: MosquittoBroker,
                                                            mqtt: MqttClient) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({GET_STATUS: {"state": "Ok", "since": "2025-02-02T00:00:00Z"}}))
    process = await trio.lowlevel.open_process(
        [*CLI, "simulate", "--broker", broker.url, "--module-id", MODULE, "--api", "powermeter",
         "--api-docs", str(api_docs), "--answers", str(answers), "--heartbeat-interval-ms", "0",
         "--comm-check-timeout-s", "0", "--reply-timeout-s", "0.5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    child = Child(process)
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    async def collect() -> None:
        async for chunk in stdout:
            child._append(chunk)
        child._ended.set()
        child._append(b"")

    async def command(line: str, answer: str) -> None:
        await stdin.send_all(line.encode() + b"\n")
        await child.wait_for(answer)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await child.wait_for(f"simulating powermeter at {BASE}")
            await command("ops", f"{START} handler e2m/start_transaction")
            assert f"{GET_STATUS} request m2e/get_status" in child.text and f"{CLEAR} receive e2m/clear" in child.text

            replies = await mqtt.subscribe("test/replies/+")
            await mqtt.publish(f"{BASE}/m2e/get_status", request("L1", "test/replies/1"))
            with trio.fail_after(10):
                assert load_json((await replies.receive()).payload) == {"state": "Ok", "since": "2025-02-02T00:00:00Z"}

            await mqtt.publish(f"{BASE}/m2e/powermeter_values", dump_json(VALID_VALUES))
            await child.wait_for(f"received {VALUES}")  # the log line: the value is recorded
            await command(f"sent {VALUES}", f"sent {VALUES} {dump_json(VALID_VALUES).decode()}")

            tariffs = await mqtt.subscribe(f"{BASE}/e2m/tariff")
            await command(f"publish {TARIFF} " + '{"price": 1.5}', f"published {TARIFF}")
            with trio.fail_after(10):
                assert load_json((await tariffs.receive()).payload) == {"price": 1.5}
            await command(f"publish {TARIFF} " + '{"price": -1}', f"error: publish {TARIFF}: must be at least 0")

            await command(f'ask {START} {{"evse_id": 1, "transaction_id": "t"}}', f"error: ask {START}: no reply")
            await nursery.start(answer_requests, mqtt, f"{BASE}/e2m/start_transaction", b'{"status": "NOT_SUPPORTED"}')
            await command(f'ask {START} {{"evse_id": 1, "transaction_id": "t"}}',
                          f'reply {START} {{"status":"NOT_SUPPORTED"}}')

            await command("frobnicate", "error: unknown command 'frobnicate'")
            await command(f"publish {TARIFF} {{not json", f"error: publish {TARIFF}: invalid JSON")
            await command("ask nothing_like_it", "error: ask nothing_like_it: API powermeter has no handler operation")

            await stdin.aclose()  # the end of stdin: it goes on serving until told to stop
            process.send_signal(signal.SIGTERM)
            assert await child.exited() == 0
            assert "Traceback" not in child.text
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(("args", "error"), [
    (["--api", "powermetre"], "no document of API 'powermetre' in"),
    (["--api", "broken"], "broken_API.yaml: not an AsyncAPI 3 document"),
    (["--api", "powermeter", "--answers", "ANSWERS"], "answers.json: the answer to send_request_get_status breaks"),
    (["--api", "powermeter", "--strict"], "--strict: for the evse_security_consumer simulator only"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, api_docs: Path, args: list[str], error: str) -> None:
    (api_docs / "broken_API.yaml").write_text("asyncapi: 2.6.0\n")
    answers = tmp_path / "answers.json"
    answers.write_text('{"send_request_get_status": {"state": "Maybe"}}')
    args = [str(answers) if a == "ANSWERS" else a for a in args]
    result = subprocess.run([*CLI, "simulate", "--broker", "mqtt://127.0.0.1:1", "--module-id", MODULE,
                             "--api-docs", str(api_docs), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert error in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
