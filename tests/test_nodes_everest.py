"""The EVerest and MQTT nodes in running flows, on a real mosquitto with the plain-paho stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from evflow.runtime.message import Message
from evflow.runtime.models.evse_security import GetCertificateInfoResult, GetCertificateInfoStatus
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.nodeapi import Node
from evflow.runtime.testing import run_flow

from .everest_standin import EverestStandIn

MODULE = "sec"


@attrs.frozen
class NoConfig:
    pass


def base(broker: MosquittoBroker, **api: Any) -> list[dict[str, Any]]:
    return [
        {"id": "t", "type": "tab"},
        {"id": "b", "type": "mqtt-broker", "z": "t", "broker": broker.url},
        {"id": "api", "type": "everest-api", "z": "t", "broker": "b", "module_id": MODULE, **api},
    ]


def n(node_id: str, node_type: str, wires: list[list[str]] | None = None, **props: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "z": "t", "wires": wires or [], **props}


async def test_request_parameters_from_payload_and_failures_on_port_1(tmp_path: Path, broker: MosquittoBroker) -> None:
    flow = base(broker, request_timeout=0.5) + [
        n("ask-csms", "inject", [["is-ca"]], payload="CSMS", once=True),
        n("ask-bad", "inject", [["is-ca"]], payload="ROOT", once=True),
        n("is-ca", "is-ca-certificate-installed", [["ok"], ["failed"]], api="api"),
        n("ask-leaf", "inject", [["leaf"]], payload={"certificate_type": "V2G", "include_ocsp": False}, once=True),
        n("leaf", "get-leaf-certificate-info", [["leaf-ok"], ["failed"]], api="api", encoding="PEM"),
        n("ok", "test-sink"), n("leaf-ok", "test-sink"), n("failed", "test-sink"),
    ]
    async with (
        EverestStandIn(broker.host, broker.port, MODULE),
        run_flow(flow, workdir=tmp_path) as kit,
    ):
        ok = await kit.expect("ok")
        leaf = await kit.expect("leaf-ok")
        failed = await kit.expect("failed")
    assert ok.payload is True
    assert isinstance(leaf.payload, GetCertificateInfoResult) and leaf.payload.status is GetCertificateInfoStatus.Accepted
    assert failed.payload == "ROOT" and failed.error is not None and failed.error.kind == "InvalidRequest"
    assert "got 'ROOT' @ $" in failed.error.message


async def test_unanswered_request_fails_on_port_1(tmp_path: Path, broker: MosquittoBroker) -> None:
    flow = base(broker) + [
        n("go", "inject", [["loc"]], payload=None, once=True),
        n("loc", "get-verify-location", [["ok"], ["failed"]], api="api", certificate_type="V2G", timeout=0.3),
        n("ok", "test-sink"), n("failed", "test-sink"),
    ]
    async with (
        EverestStandIn(broker.host, broker.port, MODULE, answer=False),
        run_flow(flow, workdir=tmp_path) as kit,
    ):
        failed = await kit.expect("failed")
        assert kit.nothing_sent("ok")
    assert failed.error is not None and failed.error.kind == "RequestTimeout"
    assert failed.error.source_id == "loc"


async def test_heartbeat_lost_and_restored(tmp_path: Path, broker: MosquittoBroker) -> None:
    flow = base(broker) + [n("hb", "heartbeat", [["beats"], ["events"]], api="api", timeout=0.3, qos=1),
                           n("beats", "test-sink"), n("events", "test-sink")]
    async with (
        EverestStandIn(broker.host, broker.port, MODULE) as everest,
        run_flow(flow, workdir=tmp_path) as kit,
    ):
        assert kit.engine.node("hb").beats.subscription.qos == 1
        lost = await kit.expect("events")  # nothing within 0.3 s of the start
        everest.heartbeat(7)
        restored = await kit.expect("events")
        beat = await kit.expect("beats")
        lost_again = await kit.expect("events")  # the timer is armed again after the restore
    assert lost.payload == {"event": "lost", "timeout": 0.3}
    assert restored.payload == {"event": "restored", "beat": 7}
    assert lost_again.payload == lost.payload
    assert beat.payload == 7 and beat.topic.endswith(f"/{MODULE}/e2m/heartbeat")


async def test_heartbeats_within_the_timeout_keep_it_alive(
    tmp_path: Path, broker: MosquittoBroker, mock_clock: trio.testing.MockClock
) -> None:
    flow = base(broker) + [n("hb", "heartbeat", [["beats"], ["events"]], api="api", timeout=0.5),
                           n("beats", "test-sink"), n("events", "test-sink")]
    async with (
        EverestStandIn(broker.host, broker.port, MODULE) as everest,
        run_flow(flow, workdir=tmp_path) as kit,
    ):
        # A beat every 0.4 s of (mock) time for three timeouts: never 0.5 s without one.
        for beat in range(4):
            everest.heartbeat(beat)
            assert (await kit.expect("beats")).payload == beat
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(0.4)
        await trio.testing.wait_all_tasks_blocked()
        assert kit.nothing_sent("events")
        mock_clock.jump(0.1)  # and when they stop, it notices
        lost = await kit.expect("events")
    assert lost.payload == {"event": "lost", "timeout": 0.5}


async def test_keepalive_on_input_at_most_once_per_interval(tmp_path: Path, broker: MosquittoBroker) -> None:
    flow = base(broker) + [
        n("burst", "inject", [["ka", "seen"]], payload=1, once=True, repeat=0.01, limit=20),
        n("ka", "keepalive", api="api", mode="input", interval=60, stop_check_on_shutdown=False),
        n("seen", "test-sink"),
    ]
    async with EverestStandIn(broker.host, broker.port, MODULE) as everest:
        async with run_flow(flow, workdir=tmp_path) as kit:
            for _ in range(20):
                await kit.expect("seen")
            await trio.testing.wait_all_tasks_blocked()  # the keepalive took its 20 inputs too
            # A marker on the same connection: whatever the keepalive published arrives before it.
            await kit.engine.node("api").client.request("is_ca_certificate_installed", "V2G")
        checks = []
        with trio.fail_after(10):
            while not (received := await everest.received.receive()).topic.endswith("is_ca_certificate_installed"):
                checks.append(received.payload)
    assert checks == [b"true"]


async def test_mqtt_in_decoding_failure_reaches_catch(tmp_path: Path, broker: MosquittoBroker) -> None:
    flow = base(broker) + [
        n("in", "mqtt in", [["got"]], broker="b", topic="data/+", datatype="json"),
        n("got", "test-sink"),
        n("c", "catch", [["caught"]]),
        n("caught", "test-sink"),
        n("pub", "inject", [["out"]], payload="not json", topic="data/1", once=True),
        n("pub2", "inject", [["out"]], payload={"ok": True}, topic="data/2", once=True),
        n("pub3", "inject", [["out"]], payload="x", topic="everest_api/1/evse_security_consumer/sec/m2e/x", once=True),
        n("out", "mqtt out", broker="b", qos=1, allowed_topics=["data/+"]),
    ]
    async with run_flow(flow, workdir=tmp_path) as kit:
        caught = [await kit.expect("caught"), await kit.expect("caught")]
        got = await kit.expect("got")
    refused = next(m for m in caught if m.error is not None and m.error.source_id == "out")
    assert "is not among this node's allowed_topics" in refused.error.message  # type: ignore[union-attr]
    caught = [m for m in caught if m is not refused]
    (caught,) = caught
    assert got.payload == {"ok": True} and got.topic == "data/2"
    assert caught.error is not None and caught.error.message == "Failed to parse JSON string"
    assert caught.topic == "data/1" and caught.payload == "not json"


class _Held(Node[NoConfig]):
    """A queued (not inline) node that holds every message until the test opens ``_Held.gate``."""

    type = "held"
    Config = NoConfig
    gate = trio.Event()

    async def receive(self, msg: Message) -> None:
        await _Held.gate.wait()
        await self.send(msg)


async def test_mqtt_in_keeps_order_whether_the_read_loop_or_its_task_hands_a_message_on(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    # mqtt in hands a message on from the connection's read loop while the next node has room, and
    # through its own task when not (a full queue, a payload to report): the order stays.
    _Held.gate = trio.Event()
    flow = base(broker) + [
        n("in", "mqtt in", [["hold"]], broker="b", topic="burst/+", datatype="json", qos=1),
        n("hold", "held", [["got"]], queue_size=2), n("got", "test-sink"),
        n("c", "catch", [["caught"]], scope=["in"]), n("caught", "test-sink"),
    ]
    payloads = [b"not json" if i % 7 == 3 else str(i).encode() for i in range(40)]
    async with run_flow(flow, node_types=(_Held,), workdir=tmp_path) as kit:
        mqtt = kit.engine.node("b").mqtt
        for payload in payloads:
            await mqtt.publish("burst/x", payload, qos=1)
        with trio.fail_after(10):
            await kit.expect("caught")  # the first bad one: the queue is full, mqtt in's task has it
        _Held.gate.set()
        got = [(await kit.expect("got")).payload for _ in range(34)]
        caught = [await kit.expect("caught") for _ in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        assert kit.nothing_sent("got")
        stats = kit.stats()["in"]
    assert got == [i for i in range(40) if i % 7 != 3]
    assert len(caught) == 5 and stats["received"] == 40 and stats["undecodable"] == 6


async def test_mqtt_in_auto_takes_json_nested_too_deeply_for_python_as_text(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    flow = base(broker) + [n("in", "mqtt in", [["got"]], broker="b", topic="deep/+", datatype="auto-detect"), n("got", "test-sink")]
    deep = "[" * 100_000
    async with run_flow(flow, workdir=tmp_path) as kit:
        await kit.engine.node("b").mqtt.publish("deep/x", deep.encode(), qos=1)
        await kit.engine.node("b").mqtt.publish("deep/x", b"[1]", qos=1)
        first, second = await kit.expect("got"), await kit.expect("got")
    assert first.payload == deep and second.payload == [1]
