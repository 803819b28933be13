"""The wire shapes against EVerest's own AsyncAPI document: what evflow's client sends, and what the
simulator answers (in the document's strict form; EVerest's quirks are the documented exceptions).

The document lives in the development workspace (``shared/spec``), not in this repository; the test
is skipped where it is not there.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from evflow.runtime.apis.evse_security_client import EvseSecurityClient
from evflow.runtime.simulator.pki import PkiLayout, init_pki
from evflow.runtime.simulator.service import EvseSecuritySimulator, SimulatorOptions
from evflow.runtime.simulator.store import CertificateStore
from evflow.runtime.transport import MqttClient

ASYNCAPI = Path(__file__).resolve().parents[2] / "shared" / "spec" / "evse_security_consumer_API.asyncapi.yaml"
MODULE = "sec"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    if not ASYNCAPI.is_file():
        pytest.skip(f"EVerest's AsyncAPI document is not at {ASYNCAPI}")
    return yaml.safe_load(ASYNCAPI.read_text())


def conforms(value: Any, schema: dict[str, Any], document: dict[str, Any], path: str = "$") -> list[str]:
    """The JSON-Schema subset the document uses: $ref, type, enum, required, properties, items, maxLength."""
    problems: list[str] = []
    if "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        problems += conforms(value, target, document, path)
    kind = schema.get("type")
    checks = {"object": dict, "string": str, "boolean": bool, "array": list}
    if kind == "integer":
        if type(value) is not int:
            problems.append(f"{path}: not an integer")
    elif kind in checks and not isinstance(value, checks[kind]):
        problems.append(f"{path}: not a {kind}")
        return problems
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in {schema['enum']}")
    if "maxLength" in schema and isinstance(value, str) and len(value) > schema["maxLength"]:
        problems.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(value, dict):
        problems += [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problems += conforms(value[key], sub, document, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += conforms(item, schema["items"], document, f"{path}[{index}]")
    return problems


def message_schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["components"]["messages"][name]["payload"]


@pytest.fixture
async def wire(mqtt: MqttClient, tmp_path: Path) -> AsyncIterator[tuple[EvseSecurityClient, PkiLayout, Any]]:
    layout = init_pki(tmp_path / "certs")
    tap = await mqtt.subscribe("#", max_buffer=1000)
    async with trio.open_nursery() as nursery:
        simulator = EvseSecuritySimulator(
            mqtt, CertificateStore(layout.root, key_password=layout.key_password),
            SimulatorOptions(module_id=MODULE, heartbeat_interval_ms=10, strict=True),
        )
        await nursery.start(simulator.run)
        client = EvseSecurityClient(mqtt, MODULE)
        await nursery.start(client.run)
        yield client, layout, tap
        nursery.cancel_scope.cancel()


async def test_requests_replies_and_heartbeats_match_the_document(
    document: dict[str, Any], wire: tuple[EvseSecurityClient, PkiLayout, Any]
) -> None:
    client, _layout, tap = wire
    with trio.fail_after(20):
        for ca in ("V2G", "MO", "CSMS", "MF"):
            await client.is_ca_certificate_installed(ca)
            await client.get_verify_location(ca)
        for leaf in ("V2G", "CSMS", "MF"):
            await client.get_leaf_certificate_info(leaf, "PEM", True)
        seen: dict[str, list[Any]] = {}
        requests: dict[str, str] = {}
        while len(seen.get("reply", [])) < 11 or not seen.get("heartbeat"):
            message = await tap.receive()
            body = json.loads(message.payload)
            operation = message.topic.rsplit("/", 1)[-1]
            if "/m2e/" in message.topic:
                requests[body["headers"]["replyTo"]] = operation
                seen.setdefault("request", []).append((operation, body))
            elif message.topic.endswith("/e2m/heartbeat"):
                seen.setdefault("heartbeat", []).append(body)
            elif message.topic in requests:
                seen.setdefault("reply", []).append((requests[message.topic], body))
    problems: list[str] = []
    for operation, body in seen["request"]:
        problems += conforms(body, message_schema(document, f"send_request_{operation}"), document)
    for operation, body in seen["reply"]:
        problems += conforms(body, message_schema(document, f"receive_reply_{operation}"), document)
    for body in seen["heartbeat"]:
        problems += conforms(body, message_schema(document, "receive_heartbeat"), document)
    assert problems == []
    statuses = {body["status"] for op, body in seen["reply"] if op == "get_leaf_certificate_info"}
    assert statuses == {"Accepted", "Rejected"}
    leaf = next(body for op, body in seen["reply"] if op == "get_leaf_certificate_info" and body["status"] == "Accepted")
    assert leaf["info"]["ocsp"] and "certificate_root" in leaf["info"]  # strict form fills it


def test_the_checker_catches_a_wrong_shape(document: dict[str, Any]) -> None:
    schema = message_schema(document, "receive_reply_get_leaf_certificate_info")
    bad = {"status": "Fine", "info": {"certificate_count": "2", "ocsp": [{"hash": {"hash_algorithm": "MD5"}}]}}
    assert conforms(bad, schema, document) == [
        "$.status: 'Fine' not in ['Accepted', 'Rejected', 'NotFound', 'NotFoundValid', 'PrivateKeyNotFound']",
        "$.info.key: required",
        "$.info.certificate_count: not an integer",
        "$.info.ocsp[0].hash.issuer_name_hash: required",
        "$.info.ocsp[0].hash.issuer_key_hash: required",
        "$.info.ocsp[0].hash.serial_number: required",
        "$.info.ocsp[0].hash.hash_algorithm: 'MD5' not in ['SHA256', 'SHA384', 'SHA512']",
    ]


# ---- the loader against the hand-written models --------------------------------------------------


def test_the_loader_makes_what_was_written_by_hand(document: dict[str, Any], tmp_path: Path) -> None:
    """EVerest's own document through the loader: the same operations, request and reply types as the
    hand-written table and models, and the same reply decoder where EVerest's wire differs."""
    from evflow.runtime.apis.evse_security_consumer import EVSE_SECURITY_CONSUMER
    from evflow.runtime.asyncapi.catalogue import ApiCatalogue
    from evflow.runtime.asyncapi.model import OperationKind
    from evflow.runtime.models.evse_security import CaCertificateType, GetCertificateInfoResult
    from evflow.runtime.protocol.envelope import decode_path_reply

    from .asyncapi_samples import shape_differences

    # The loader finds an API by its file name, as EVerest's installation names it.
    named = tmp_path / "evse_security_consumer_API.yaml"
    named.write_bytes(ASYNCAPI.read_bytes())
    loaded = ApiCatalogue([named]).api("evse_security_consumer")
    requests = {op.name: op for op in loaded.description.operations.values() if op.kind is OperationKind.REQUEST}
    assert set(requests) == set(EVSE_SECURITY_CONSUMER.operations)
    problems = []
    for name, written in EVSE_SECURITY_CONSUMER.operations.items():
        made = requests[name]
        problems += shape_differences(made.payload.type, written.request_type, f"{name}.request")
    problems += shape_differences(requests["get_leaf_certificate_info"].reply.type, GetCertificateInfoResult,
                            "get_leaf_certificate_info.reply")
    problems += shape_differences(requests["is_ca_certificate_installed"].payload.type, CaCertificateType, "ca")
    assert requests["is_ca_certificate_installed"].reply.type is bool
    assert problems == []
    # EVerest's quirk stays: the raw path, or nothing, where the document says a JSON string
    assert loaded.request(requests["get_verify_location"]).decode_reply is decode_path_reply
    assert loaded.request(requests["get_verify_location"]).decode_reply(b"/etc/ca.pem") == "/etc/ca.pem"
