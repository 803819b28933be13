"""``mqtt in`` with ``inputs: 1``: subscriptions made and ended by messages, as Node-RED's dynamic
subscriptions, against a real broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import new_message
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.testing import FlowUnderTest, run_flow
from evflow.runtime.transport import MqttClient


def flow(broker: MosquittoBroker) -> list[dict[str, Any]]:
    return [
        {"id": "t", "type": "tab", "label": "dynamic"},
        {"id": "b", "type": "mqtt-broker", "name": "", "broker": "127.0.0.1", "port": str(broker.port),
         "clientid": "", "usetls": False, "protocolVersion": "4", "keepalive": "60", "cleansession": True},
        {"id": "control", "type": "test-sink", "z": "t", "wires": [["in"]]},
        {"id": "in", "type": "mqtt in", "z": "t", "name": "", "topic": "", "qos": "2", "datatype": "auto-detect",
         "broker": "b", "nl": False, "rap": True, "rh": 0, "inputs": 1, "x": 300, "y": 80, "wires": [["got"]]},
        {"id": "got", "type": "test-sink", "z": "t", "wires": []},
    ]


def action(name: str, topic: Any = None) -> Any:
    return new_message(None, topic).with_props({"action": name})


async def subscriptions(running: FlowUnderTest) -> list[dict[str, Any]]:
    """What the node lists: it sends the list on, so the node after it gets it too."""
    await running.inject_message("control", action("getSubscriptions"))
    listed = await running.expect("got")
    assert listed.topic == "subscriptions"
    return listed.payload  # type: ignore[no-any-return]


async def test_subscribe_list_and_unsubscribe_by_message(tmp_path: Path, broker: MosquittoBroker,
                                                         mqtt: MqttClient) -> None:
    async with run_flow(flow(broker), workdir=tmp_path) as running:
        with trio.fail_after(10):
            await running.inject_message("control", action("subscribe", ["dyn/a", {"topic": "dyn/b", "qos": 0,
                                                                                    "datatype": "utf8"}]))
            assert await subscriptions(running) == [{"topic": "dyn/a", "qos": 2}, {"topic": "dyn/b", "qos": 0, "datatype": "utf8"}]
            await mqtt.publish("dyn/a", b'{"n": 1}', qos=1)
            first = await running.expect("got")
            assert (first.topic, first.payload, first.props["qos"]) == ("dyn/a", {"n": 1}, 1)
            await mqtt.publish("dyn/b", b'{"n": 2}')
            assert (await running.expect("got")).payload == '{"n": 2}'  # its own datatype: text

            await running.inject_message("control", action("unsubscribe", "dyn/a"))
            assert [s["topic"] for s in await subscriptions(running)] == ["dyn/b"]
            # From one publisher, in order: were dyn/a still subscribed, it would come before the marker.
            await mqtt.publish("dyn/a", b"gone")
            await mqtt.publish("dyn/b", b"marker")
            assert (await running.expect("got")).payload == "marker"
            assert running.nothing_sent("got")

            await running.inject_message("control", action("unsubscribe", True))
            assert await subscriptions(running) == []


async def test_bad_actions_fail_the_message_and_the_node_goes_on(tmp_path: Path, broker: MosquittoBroker,
                                                                  mqtt: MqttClient) -> None:
    nodes = [*flow(broker), {"id": "catch", "type": "catch", "z": "t", "scope": ["in"], "uncaught": False,
                             "wires": [["caught"]]}, {"id": "caught", "type": "test-sink", "z": "t", "wires": []}]
    async with run_flow(nodes, workdir=tmp_path) as running:
        with trio.fail_after(10):
            for bad, why in ((action("connect"), "not supported"), (action("subscribe", "a/#/b"), "#"),
                             (action("subscribe", {"qos": 1}), "invalid subscription"),
                             (action("dance", "x"), "invalid msg.action")):
                await running.inject_message("control", bad)
                caught = await running.expect("caught")
                assert why in caught.error.message
            await running.inject_message("control", action("subscribe", "still/works"))
            assert await subscriptions(running) == [{"topic": "still/works", "qos": 2}]


def test_a_static_mqtt_in_needs_a_topic_and_takes_no_wires(tmp_path: Path) -> None:
    nodes = [{"id": "b", "type": "mqtt-broker", "broker": "localhost"},
             {"id": "src", "type": "inject", "once": True, "wires": [["in"]]},
             {"id": "in", "type": "mqtt in", "broker": "b", "topic": "", "inputs": 0}]
    (tmp_path / "flow.json").write_text(json.dumps(nodes))
    with pytest.raises(FlowInvalid) as caught:
        load_plan([tmp_path / "flow.json"], env={})
    assert sorted((p.path, p.message) for p in caught.value.problems) == [
        ("$[1].wires[0][0]", "wire to 'in' (mqtt in), which takes no input"),
        ("$[2].topic", "a topic filter is needed (or inputs: 1, for subscriptions made by messages)"),
    ]
