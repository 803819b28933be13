"""The example flows, run by `evflow run` as a subprocess, against mosquitto and the EVerest stand-in."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from evflow.runtime.mosquitto import MosquittoBroker

from .everest_standin import EverestStandIn, Received
from .processes import evflow

FLOWS = Path(__file__).parent.parent / "flows"
MODULE = "evse_security_api"
BASE = f"everest_api/1/evse_security_consumer/{MODULE}"


def evflow_run(broker: MosquittoBroker, *flows: Path) -> Any:
    return evflow(["run", *map(str, flows)], {"EVFLOW_BROKER": broker.url, "EVEREST_MODULE_ID": MODULE})


async def next_on(standin: EverestStandIn, topic_suffix: str) -> Received:
    while True:
        received = await standin.received.receive()
        if received.topic.endswith(topic_suffix):
            return received


async def test_liveness_flow_keeps_everest_alive_and_says_goodbye_on_sigterm(broker: MosquittoBroker) -> None:
    async with EverestStandIn(broker.host, broker.port, MODULE) as everest:
        async with evflow_run(broker, FLOWS / "liveness.json") as run:
            with trio.fail_after(20):
                first = await next_on(everest, "/m2e/communication_check")
                assert first.payload == b"true"
                everest.heartbeat(0)
                run.process.send_signal(signal.SIGTERM)
                last = await next_on(everest, "/m2e/communication_check")
                while last.payload == b"true":  # a periodic one may still have been on its way
                    last = await next_on(everest, "/m2e/communication_check")
                assert last.payload == b"false"
                assert await run.exited() == 0
    assert "Traceback" not in run.text


async def test_liveness_events_reach_mqtt_out(broker: MosquittoBroker, mqtt: object) -> None:
    from evflow.runtime.transport import MqttClient

    assert isinstance(mqtt, MqttClient)
    liveness = await mqtt.subscribe("evflow/liveness", qos=1)
    async with EverestStandIn(broker.host, broker.port, MODULE) as everest:
        async with evflow_run(broker, FLOWS / "liveness.json") as run:
            with trio.fail_after(20):
                await next_on(everest, "/m2e/communication_check")  # the flow is ready
                for beat in (10, 11, 14, 3):
                    everest.heartbeat(beat)
                gap = json.loads((await liveness.receive()).payload)
                restarted = json.loads((await liveness.receive()).payload)
            run.process.send_signal(signal.SIGTERM)
            assert await run.exited() == 0
    assert gap == {"event": "gap", "missed": 2, "beat": 14, "previous": 11}
    assert restarted == {"event": "restarted", "beat": 3, "previous": 14}


async def test_certificate_check_flow_forwards_replies_as_everest_sent_them(broker: MosquittoBroker, mqtt: object) -> None:
    from evflow.runtime.transport import MqttClient

    assert isinstance(mqtt, MqttClient)
    reports = await mqtt.subscribe("evflow/certificates/#", qos=1)
    async with EverestStandIn(broker.host, broker.port, MODULE) as everest:
        async with evflow_run(broker, FLOWS / "certificate-check.json") as run:
            got: dict[str, bytes] = {}
            with trio.fail_after(20):
                while len(got) < 3:
                    message = await reports.receive()
                    got[message.topic.rsplit("/", 1)[-1]] = message.payload
                requests = []
                while len(requests) < 3:
                    requests.append(await everest.received.receive())
            run.process.send_signal(signal.SIGTERM)
            assert await run.exited() == 0
    assert got["v2g_root_installed"] == b"true"
    assert got["v2g_verify_location"] == b"/etc/everest/certs/ca/v2g/V2G_ROOT_CA.pem"
    leaf = json.loads(got["v2g_leaf"])
    assert leaf["status"] == "Accepted" and leaf["info"]["certificate_count"] == 3
    assert "vendor_extension" not in leaf["info"]  # unknown keys were read leniently, not carried
    assert {r.topic.rsplit("/", 1)[-1] for r in requests} == {
        "is_ca_certificate_installed", "get_leaf_certificate_info", "get_verify_location"
    }
    envelope = json.loads(next(r for r in requests if r.topic.endswith("get_leaf_certificate_info")).payload)
    assert envelope["payload"] == {"certificate_type": "V2G", "encoding": "PEM", "include_ocsp": True}
    assert "Traceback" not in run.text


@pytest.mark.parametrize("flow", sorted(FLOWS.glob("*.json")), ids=lambda p: p.name)
def test_example_flows_validate(flow: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "evflow.runtime.cli", "validate", str(flow)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
