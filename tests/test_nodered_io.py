"""Node-RED's core I/O nodes in evflow: inject, debug, mqtt in, mqtt out, mqtt-broker and tls-config, in
flows written exactly as Node-RED 4 exports them, against a real mosquitto (the ``broker`` fixture).

What a node must do is read from Node-RED 4.1.9's own source (20-inject.js, 21-debug.js, 10-mqtt.js,
05-tls.js and their editor defaults). A test marked ``xfail(strict=True, reason="bug: …")`` records
Node-RED's behaviour that evflow does not have yet.

Timers (inject's ``onceDelay``, ``repeat``, ``crontab``) run on trio's MockClock (``autojump_clock``):
the clock jumps to the next deadline whenever every task waits, so times are exact and cost nothing.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evflow.nodes.catch import Catch
from evflow.nodes.debug import Debug
from evflow.nodes.inject import Inject
from evflow.nodes.mqtt_broker import MqttBroker, MqttBrokerConfig, broker_url
from evflow.nodes.mqtt_in import MqttIn
from evflow.nodes.mqtt_out import MqttOut, encode_payload
from evflow.nodes.tls_config import TlsConfig
from evflow.runtime.codec import structure
from evflow.runtime.engine import FlowStartError
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.mosquitto import MosquittoBroker, TlsListener
from evflow.runtime.nodeapi import UNDEFINED, Node, Scope, delete_property
from evflow.runtime.registry import Registry
from evflow.runtime.testing import Sink, run_flow
from evflow.runtime.transport import MqttClient, MqttMessage, Subscription

from .conftest import connected_client, start_broker

# ---- flows in Node-RED 4's export shape -------------------------------------------------------

TAB = "f1"


@attrs.frozen(kw_only=True)
class StatusWatchConfig:
    # ids of the nodes whose status changes to pass on
    scope: tuple[str, ...]


class StatusWatch(Node[StatusWatchConfig]):
    """For tests: passes on the status changes of the nodes in ``scope`` (as Node-RED's status node
    would: ``msg.status`` with ``fill``, ``shape``, ``text`` and ``source``)."""

    type = "test-status-watch"
    Config = StatusWatchConfig

    @classmethod
    def status_scope(cls, config: StatusWatchConfig) -> Scope:
        return Scope(node_ids=frozenset(config.scope))

    async def receive(self, msg: Message) -> None:
        await self.send(msg)


TYPES = (Inject, Debug, Catch, MqttIn, MqttOut, MqttBroker, TlsConfig, StatusWatch)


def tab() -> dict[str, Any]:
    return {"id": TAB, "type": "tab", "label": "Flow 1", "disabled": False, "info": "", "env": []}


def sink(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "type": "test-sink", "z": TAB, "x": 600, "y": 100, "wires": []}


def inject_node(node_id: str = "inj", targets: tuple[str, ...] = ("out",), **props: Any) -> dict[str, Any]:
    """An inject node as Node-RED 4 exports it (its defaults: a timestamp payload, an empty topic)."""
    node = {
        "id": node_id, "type": "inject", "z": TAB, "name": "",
        "props": [{"p": "payload"}, {"p": "topic", "vt": "str"}],
        "repeat": "", "crontab": "", "once": False, "onceDelay": 0.1, "topic": "", "payload": "",
        "payloadType": "date", "x": 140, "y": 100, "wires": [list(targets)],
    }
    node.update(props)
    return node


def debug_node(node_id: str = "dbg", **props: Any) -> dict[str, Any]:
    """A debug node as Node-RED 4 exports it (its defaults: msg.payload to the sidebar)."""
    node = {
        "id": node_id, "type": "debug", "z": TAB, "name": "", "active": True, "tosidebar": True, "console": False,
        "tostatus": False, "complete": "false", "statusVal": "", "statusType": "auto", "x": 400, "y": 100,
        "wires": [],
    }
    node.update(props)
    return node


def broker_node(server: MosquittoBroker | None = None, node_id: str = "b1", **props: Any) -> dict[str, Any]:
    """An mqtt-broker config node as Node-RED 4 exports it: host and port as text, numbers as text."""
    node = {
        "id": node_id, "type": "mqtt-broker", "name": "",
        "broker": server.host if server else "localhost", "port": str(server.port) if server else "1883",
        "clientid": "", "autoConnect": True, "usetls": False, "protocolVersion": "4", "keepalive": "60",
        "cleansession": True, "autoUnsubscribe": True,
        "birthTopic": "", "birthQos": "0", "birthRetain": "false", "birthPayload": "", "birthMsg": {},
        "closeTopic": "", "closeQos": "0", "closeRetain": "false", "closePayload": "", "closeMsg": {},
        "willTopic": "", "willQos": "0", "willRetain": "false", "willPayload": "", "willMsg": {},
        "userProps": "", "sessionExpiry": "",
    }
    node.update(props)
    return node


def mqtt_in_node(node_id: str, topic: str, targets: tuple[str, ...], **props: Any) -> dict[str, Any]:
    node = {
        "id": node_id, "type": "mqtt in", "z": TAB, "name": "", "topic": topic, "qos": "2",
        "datatype": "auto-detect", "broker": "b1", "nl": False, "rap": True, "rh": 0, "inputs": 0,
        "x": 130, "y": 200, "wires": [list(targets)],
    }
    node.update(props)
    return node


def mqtt_out_node(node_id: str = "pub", **props: Any) -> dict[str, Any]:
    node = {
        "id": node_id, "type": "mqtt out", "z": TAB, "name": "", "topic": "", "qos": "", "retain": "",
        "respTopic": "", "contentType": "", "userProps": "", "correl": "", "expiry": "", "broker": "b1",
        "x": 330, "y": 200, "wires": [],
    }
    node.update(props)
    return node


def catch_node(node_id: str, scope: list[str], targets: tuple[str, ...]) -> dict[str, Any]:
    return {"id": node_id, "type": "catch", "z": TAB, "name": "", "scope": scope, "uncaught": False,
            "x": 130, "y": 300, "wires": [list(targets)]}


def flow_of(*nodes: dict[str, Any]) -> list[dict[str, Any]]:
    return [tab(), *nodes]


def flow_problems(tmp_path: Path, nodes: list[dict[str, Any]]) -> FlowInvalid:
    """Why a flow file of ``nodes`` does not load."""
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(nodes))
    with pytest.raises(FlowInvalid) as caught:
        load_plan([path], registry=Registry.from_entry_points().with_types(Sink, *TYPES), env={})
    return caught.value


def load_problems(tmp_path: Path, nodes: list[dict[str, Any]], tab_first: bool = True) -> list[tuple[str, str]]:
    """(path, message) of each error in loading ``nodes`` (after a tab, so the first node is ``$[1]``)."""
    problems = flow_problems(tmp_path, flow_of(*nodes) if tab_first else nodes).problems
    return [(p.path, p.message) for p in problems if p.severity == "error"]


def message(payload: Any = None, topic: Any = "", **props: Any) -> Message:
    msg = new_message(payload, topic)
    return msg.with_props(props) if props else msg


mqtt_client = connected_client  # a plain MQTT client of the test's own, on the test broker


async def received(subscription: Subscription, count: int, timeout: float = 5.0) -> list[MqttMessage]:
    with trio.fail_after(timeout):
        return [await subscription.receive() for _ in range(count)]


async def until_marker(client: MqttClient, subscription: Subscription, marker_topic: str) -> list[MqttMessage]:
    """Everything ``subscription`` receives before a marker the test publishes now: the broker handles
    a client's packets in order, so what it had queued for the subscriber comes first."""
    await client.publish(marker_topic, b"marker", qos=1)
    found = []
    with trio.fail_after(5):
        while (incoming := await subscription.receive()).topic != marker_topic:
            found.append(incoming)
    return found


async def retained(broker: MosquittoBroker, topic_filter: str, marker_topic: str) -> dict[str, bytes]:
    """The retained messages on ``topic_filter`` (``marker_topic`` must match it), as a new subscriber gets them."""
    async with mqtt_client(broker) as fresh:
        subscription = await fresh.subscribe(topic_filter, qos=0)
        found = await until_marker(fresh, subscription, marker_topic)
    assert all(m.retain for m in found), [m for m in found if not m.retain]
    return {m.topic: m.payload for m in found}


def qos_and_retain(msg: Message) -> tuple[Any, Any]:
    return msg.props.get("qos", UNDEFINED), msg.props.get("retain", UNDEFINED)


# ---- inject ------------------------------------------------------------------------------------


async def test_inject_sets_properties_of_every_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setenv("EVFLOW_TEST_UNIT", "kWh")
    props = [
        {"p": "payload"},
        {"p": "topic", "vt": "str"},
        {"p": "note", "v": "hello", "vt": "str"},
        {"p": "count", "v": "42", "vt": "num"},
        {"p": "ratio", "v": "0x10", "vt": "num"},
        {"p": "enabled", "v": "true", "vt": "bool"},
        {"p": "limits", "v": '{"max": 32, "phases": [1, 2, 3]}', "vt": "json"},
        {"p": "unit", "v": "EVFLOW_TEST_UNIT", "vt": "env"},
        {"p": "label", "v": "meter in ${EVFLOW_TEST_UNIT}", "vt": "env"},
        {"p": "who", "v": "NR_NODE_ID", "vt": "env"},
        # props are set in order on the message being built: msg reads what came before
        {"p": "copy", "v": "payload.reading", "vt": "msg"},
        {"p": "site.name", "v": "site", "vt": "global"},
        {"p": "max", "v": "#:(memory)::limits.max", "vt": "flow"},
        {"p": "raw", "v": "[1,2,255]", "vt": "bin"},
        {"p": "at", "v": "", "vt": "date"},
        {"p": "nothing", "v": "missing", "vt": "flow"},
    ]
    flow = flow_of(inject_node(props=props, once=True, payload='{"reading": 7.5}', payloadType="json",
                               topic="meter/1"), sink("out"))
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        # Set before the inject fires (0.1 s after the start): nothing has waited yet.
        kit.engine.contexts.global_store.set("site", "depot")
        kit.engine.contexts.flow(TAB).set("limits", {"max": 16})
        msg = await kit.expect("out")
    assert (msg.payload, msg.topic) == ({"reading": 7.5}, "meter/1")
    props_seen = dict(msg.props)
    at = props_seen.pop("at")
    assert type(at) is int and abs(at - datetime.datetime.now().timestamp() * 1000) < 60_000
    assert props_seen == {
        "note": "hello", "count": 42, "ratio": 16, "enabled": True, "limits": {"max": 32, "phases": [1, 2, 3]},
        "unit": "kWh", "label": "meter in kWh", "who": "inj", "copy": 7.5, "site": {"name": "depot"}, "max": 16,
        "raw": b"\x01\x02\xff", "nothing": UNDEFINED,
    }


async def test_inject_gives_each_message_values_of_its_own(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    flow = flow_of(inject_node(once=True, repeat="1", limit=2, payload='{"list": []}', payloadType="json"), sink("out"))
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        first = await kit.expect("out")
        first.payload["list"].append("changed")
        second = await kit.expect("out")
    assert second.payload == {"list": []}


async def test_inject_without_props_is_read_as_an_old_node_red_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node = inject_node(once=True, payload="5", payloadType="num", topic="legacy")
    del node["props"]
    async with run_flow(flow_of(node, sink("out")), node_types=TYPES, workdir=tmp_path) as kit:
        msg = await kit.expect("out")
    assert (msg.payload, msg.topic, dict(msg.props)) == (5, "legacy", {})


@pytest.mark.parametrize(("once_delay", "expected"), [(0.1, 0.1), ("2.5", 2.5), (0, 0.1), ("", 0.1)])
async def test_inject_once_after_once_delay(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, once_delay: Any, expected: float
) -> None:
    # Node-RED: (onceDelay || 0.1) seconds, so 0 and "" are 0.1 too.
    flow = flow_of(inject_node(once=True, onceDelay=once_delay, payload="x", payloadType="str"), sink("out"))
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        start = trio.current_time()
        msg = await kit.expect("out")
        assert trio.current_time() - start == pytest.approx(expected)
        await trio.sleep(3600)
        assert kit.nothing_sent("out")
    assert msg.payload == "x"


@pytest.mark.parametrize(("props", "times"), [
    # Node-RED: the first repeat one period after the start; with `once`, one period after that
    ({"repeat": "2"}, [2.0, 4.0, 6.0]),
    ({"repeat": 2, "once": True, "onceDelay": "0.5"}, [0.5, 2.5, 4.5]),
    ({"repeat": "1.5", "limit": 2}, [1.5, 3.0]),
])
async def test_inject_repeats_every_so_many_seconds_up_to_its_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, props: dict[str, Any], times: list[float]
) -> None:
    flow = flow_of(inject_node(**{"limit": 3, **props}), sink("out"))
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        start = trio.current_time()
        seen = []
        for _ in times:
            await kit.expect("out", timeout=60)
            seen.append(trio.current_time() - start)
        await trio.sleep(3600)
        assert kit.nothing_sent("out")
    assert seen == pytest.approx(times)
    assert kit.stats()["inj"] == {"sent": len(times)}


async def test_inject_crontab_follows_the_schedule_in_local_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Every 5 minutes: on the MockClock the message comes after the (virtual) seconds until the next
    # real 5-minute mark, without the test waiting for it.
    flow = flow_of(inject_node(crontab="*/5 * * * *", payload="tick", payloadType="str", limit=1), sink("out"))
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        started_at = datetime.datetime.now().astimezone()
        start = trio.current_time()
        msg = await kit.expect("out", timeout=400)
        waited = trio.current_time() - start
        await trio.sleep(3600)
        assert kit.nothing_sent("out")  # its limit
    assert msg.payload == "tick"
    assert 0 < waited <= 300
    due = started_at + datetime.timedelta(seconds=waited)
    # on a 5-minute mark, to within the little real time the test took
    seconds_past_mark = (due.minute % 5) * 60 + due.second + due.microsecond / 1e6
    assert min(seconds_past_mark, 300 - seconds_past_mark) < 2, due


@pytest.mark.parametrize(("props", "path", "fragment"), [
    ({"crontab": "61 * * * *"}, "$[1].crontab", "invalid crontab '61 * * * *'"),
    ({"crontab": "every minute"}, "$[1].crontab", "invalid crontab"),
    ({"crontab": "*/5 * * * *", "repeat": "10"}, "$[1].crontab", "not both"),
    ({"repeat": "soon"}, "$[1].repeat", "repeat must be a number of seconds"),
    ({"repeat": "2147484"}, "$[1].repeat", "0 to 2147483 seconds"),
    ({"onceDelay": "later", "once": True}, "$[1].onceDelay", "onceDelay must be a number of seconds"),
    ({"interval": 5}, "$[1].interval", "`repeat`"),
    ({"props": [{"p": "payload", "v": "{bad", "vt": "json"}]}, "$[1].props[0]", "invalid JSON"),
    ({"props": [{"p": "a..b", "v": "1", "vt": "num"}]}, "$[1].props[0]", "unexpected . at position 2"),
    ({"props": [{"p": "payload"}], "payloadType": "jsonata", "payload": "$now()"}, "$[1].props[0]", "JSONata"),
])
def test_inject_config_errors_name_the_property(tmp_path: Path, props: dict[str, Any], path: str, fragment: str) -> None:
    problems = load_problems(tmp_path, [inject_node(**props), sink("out")])
    assert [p for p, _ in problems] == [path], problems
    assert fragment in problems[0][1]


def test_inject_interval_refusal_says_what_to_write_instead(tmp_path: Path) -> None:
    [(path, text)] = load_problems(tmp_path, [inject_node(interval=5), sink("out")])
    assert path == "$[1].interval"
    assert "`interval` is no longer read" in text and "`repeat` (seconds between messages)" in text
    assert "`limit`" in text


# ---- debug -------------------------------------------------------------------------------------


async def test_debug_prints_what_complete_chooses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = flow_of(
        debug_node("payload", name="payload"),
        debug_node("whole", name="whole", complete="true", targetType="full"),
        debug_node("whole-old", name="whole-old", complete="true"),
        debug_node("path", name="path", complete="payload.reading[1]", targetType="msg"),
        debug_node("prop", name="prop", complete="unit", targetType="msg"),
        debug_node("missing", name="missing", complete="payload.nothing.deeper", targetType="msg"),
        debug_node("quiet", name="quiet", active=False),
        debug_node("console", name="console", tosidebar=False, console=True),
        debug_node("nowhere", name="nowhere", tosidebar=False, console=False),
    )
    capsys.readouterr()
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        msg = message({"reading": [1, 2.5]}, "meter/1", unit="kWh")
        for node_id in ("payload", "whole", "whole-old", "path", "prop", "missing", "quiet", "console", "nowhere"):
            await kit.inject_message(node_id, msg.copy())
    whole = json.dumps({"unit": "kWh", "topic": "meter/1", "payload": {"reading": [1, 2.5]},
                        "_msgid": f"{msg.msg_id:016x}"}, separators=(",", ":"))
    assert sorted(capsys.readouterr().out.splitlines()) == sorted([
        '[debug payload] meter/1: {"reading":[1,2.5]}',
        f"[debug whole] meter/1: {whole}",
        f"[debug whole-old] meter/1: {whole}",
        "[debug path] meter/1: 2.5",
        '[debug prop] meter/1: "kWh"',
        # Node-RED shows undefined: a step into undefined is no error for debug
        "[debug missing] meter/1: <missing>",
        '[debug console] meter/1: {"reading":[1,2.5]}',
    ])


async def test_debug_console_output_does_not_depend_on_active(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 21-debug.js: `if (node.console === "true") node.log(...)` comes before, and outside of, `if (node.active)`,
    # which guards only the sidebar.
    capsys.readouterr()
    async with run_flow(flow_of(debug_node(active=False, console=True)), node_types=TYPES, workdir=tmp_path) as kit:
        await kit.inject_message("dbg", message("logged", "t"))
    assert capsys.readouterr().out.splitlines() == ['[debug dbg] t: "logged"']


def test_debug_config_errors(tmp_path: Path) -> None:
    assert load_problems(tmp_path, [debug_node(complete="payload[", targetType="msg")]) == [
        ("$[1].complete", "invalid property expression 'payload[': unterminated expression")]
    [(path, text)] = load_problems(tmp_path, [debug_node(complete="$.payload", targetType="jsonata")])
    assert path == "$[1].targetType" and "JSONata" in text
    [(path, text)] = load_problems(tmp_path, [debug_node(tostatus=True, statusType="msg", statusVal="a b")])
    assert path == "$[1].statusVal"


async def statuses_for(tmp_path: Path, debug: dict[str, Any], messages: list[Message]) -> list[dict[str, Any]]:
    """The status changes of ``debug`` while it gets ``messages``, as a status node sees them."""
    watch = {"id": "watch", "type": "test-status-watch", "z": TAB, "scope": [debug["id"]], "wires": [[]]}
    async with run_flow(flow_of(debug, watch), node_types=TYPES, workdir=tmp_path) as kit:
        seen = []
        for msg in messages:
            await kit.inject_message(debug["id"], msg)
            status = (await kit.expect("watch")).props["status"]
            seen.append({key: status[key] for key in ("fill", "shape", "text")})
            assert status["source"] == {"id": debug["id"], "type": "debug", "name": debug.get("name", "")}
    return seen


async def test_debug_tostatus_shows_the_value_in_the_node_status(tmp_path: Path) -> None:
    # (Node-RED shows an object or an array as util.inspect writes it, "[ 1, 2 ]"; evflow as JSON)
    debug = debug_node(tostatus=True, complete="payload.n", targetType="msg")
    seen = await statuses_for(tmp_path, debug, [message({"n": 5}), message({"n": 2.5}), message({"n": True})])
    assert seen == [{"fill": "grey", "shape": "dot", "text": text} for text in ("5", "2.5", "true")]


async def test_debug_tostatus_with_its_own_property_and_while_inactive(tmp_path: Path) -> None:
    # Node-RED: the status is independent of `active` (which only silences the output)
    debug = debug_node(tostatus=True, active=False, statusType="msg", statusVal="count")
    seen = await statuses_for(tmp_path, debug, [message("ignored", count=3)])
    assert seen == [{"fill": "grey", "shape": "dot", "text": "3"}]


async def test_debug_status_shows_text_as_it_is(tmp_path: Path) -> None:
    # 21-debug.js: st = (typeof output === 'string') ? output : util.inspect(output)
    seen = await statuses_for(tmp_path, debug_node(tostatus=True), [message("charging")])
    assert seen == [{"fill": "grey", "shape": "dot", "text": "charging"}]


async def test_debug_status_is_cut_at_32_characters_with_an_ellipsis(tmp_path: Path) -> None:
    # 21-debug.js: if (st.length > statuslength) { st = st.substr(0,statuslength) + "..."; }
    seen = await statuses_for(tmp_path, debug_node(tostatus=True), [message("0123456789" * 4)])
    assert seen == [{"fill": "grey", "shape": "dot", "text": "01234567890123456789012345678901..."}]


async def test_debug_status_of_a_complete_message_shows_the_payload(tmp_path: Path) -> None:
    # 21-debug.js prepareStatus: statusType "auto" and complete "true" -> done(null, {msg: msg.payload})
    debug = debug_node(tostatus=True, complete="true", targetType="full")
    seen = await statuses_for(tmp_path, debug, [message(7, "t")])
    assert seen == [{"fill": "grey", "shape": "dot", "text": "7"}]


# ---- mqtt in -----------------------------------------------------------------------------------

SENT = [b'{"a":1}', b"plain", b"\xff\xfe", b"42"]
# 10-mqtt.js subscriptionHandler, per datatype, for each payload of SENT ("error": node.error, to catch)
DECODED: dict[str, list[Any]] = {
    "auto": ['{"a":1}', "plain", b"\xff\xfe", "42"],
    "auto-detect": [{"a": 1}, "plain", b"\xff\xfe", 42],
    "utf8": ['{"a":1}', "plain", "\ufffd\ufffd", "42"],
    "buffer": SENT,
    "base64": [base64.b64encode(data).decode() for data in SENT],
    "json": [{"a": 1}, "error", "error", 42],
    "none": ['{"a":1}', "plain", "\ufffd\ufffd", "42"],  # a node without `datatype`: utf8
}


async def test_mqtt_in_reads_payloads_per_datatype(tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient) -> None:
    nodes = [broker_node(broker), catch_node("catch", ["in-json"], ("caught",)), sink("caught")]
    for datatype in DECODED:
        node = mqtt_in_node(f"in-{datatype}", f"dt/{datatype}", (f"out-{datatype}",), datatype=datatype)
        if datatype == "none":
            del node["datatype"]  # Node-RED: n.datatype || "utf8"
        nodes += [node, sink(f"out-{datatype}")]
    async with run_flow(flow_of(*nodes), node_types=TYPES, workdir=tmp_path) as kit:
        for datatype in DECODED:
            for data in SENT:
                await mqtt.publish(f"dt/{datatype}", data, qos=1)
        for datatype, expected in DECODED.items():
            wanted = [value for value in expected if value != "error"]
            got = [await kit.expect(f"out-{datatype}") for _ in wanted]
            assert [m.payload for m in got] == wanted, datatype
            assert all(m.topic == f"dt/{datatype}" and qos_and_retain(m) == (1, False) for m in got)
        # json: text that is not JSON fails with the text, what is not UTF-8 with the bytes, in Node-RED's words
        failed = [await kit.expect("caught") for _ in range(2)]
    assert [m.payload for m in failed] == ["plain", b"\xff\xfe"]
    assert [m.error.message for m in failed if m.error] == ["Failed to parse JSON string", "Invalid JSON string"]
    assert all(m.topic == "dt/json" and qos_and_retain(m) == (1, False) for m in failed)
    assert all(m.error is not None and m.error.source_id == "in-json" for m in failed)
    assert kit.nothing_sent("caught")


async def test_mqtt_in_auto_detect_parses_only_strict_json(
    tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient
) -> None:
    # Node-RED: JSON.parse("NaN"), of "\ufeff1" and of "1\u0000" throw: the payload stays text.
    sent = [b"NaN", b"-Infinity", b"\xef\xbb\xbf1", b"1\x00"]
    flow = flow_of(broker_node(broker), mqtt_in_node("in", "strict/#", ("out",)), sink("out"))
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        for data in sent:
            await mqtt.publish("strict/x", data, qos=1)
        got = [(await kit.expect("out")).payload for _ in sent]
    assert got == ["NaN", "-Infinity", "\ufeff1", "1\x00"]


async def test_mqtt_in_sets_msg_qos_and_msg_retain(tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient) -> None:
    # retained before the flow starts: the subscriptions get them with retain set
    await mqtt.publish("q2/kept", b"old", qos=1, retain=True)
    await mqtt.publish("q0/kept", b"old", qos=1, retain=True)
    flow = flow_of(broker_node(broker), mqtt_in_node("in-q2", "q2/#", ("out-q2",), qos="2"), sink("out-q2"),
                   mqtt_in_node("in-q0", "q0/#", ("out-q0",), qos=0), sink("out-q0"))
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        kept_q2, kept_q0 = await kit.expect("out-q2"), await kit.expect("out-q0")
        await mqtt.publish("q2/live", b"new", qos=2)
        await mqtt.publish("q0/live", b"new", qos=2)
        live_q2, live_q0 = await kit.expect("out-q2"), await kit.expect("out-q0")
    assert (kept_q2.topic, kept_q2.payload, qos_and_retain(kept_q2)) == ("q2/kept", "old", (1, True))
    assert (kept_q0.topic, qos_and_retain(kept_q0)) == ("q0/kept", (0, True))
    # QoS 2 in: delivered at QoS 2; a QoS 0 subscription gets it at 0
    assert (live_q2.topic, live_q2.payload, qos_and_retain(live_q2)) == ("q2/live", "new", (2, False))
    assert (live_q0.topic, qos_and_retain(live_q0)) == ("q0/live", (0, False))


@pytest.mark.parametrize(("props", "path", "fragment"), [
    ({"datatype": "bytes"}, "$[2].datatype", '"buffer"'),
    ({"datatype": "yaml"}, "$[2].datatype", ""),
    ({"qos": "3"}, "$[2].qos", "QoS must be 0, 1 or 2"),
    ({"inputs": 2}, "$[2].inputs", "inputs must be 0 or 1"),
    ({"topic": ""}, "$[2].topic", "a topic filter is needed"),
    ({"topic": "a/#/b"}, "$[2].topic", ""),
])
def test_mqtt_in_config_errors(tmp_path: Path, props: dict[str, Any], path: str, fragment: str) -> None:
    node = {**mqtt_in_node("in", "a/b", ("out",)), **props}
    problems = load_problems(tmp_path, [broker_node(), node, sink("out")])
    assert [p for p, _ in problems] == [path], problems
    assert fragment in problems[0][1]


# ---- mqtt out ----------------------------------------------------------------------------------


async def test_mqtt_out_qos_and_retain_from_the_node_or_the_message(
    tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient
) -> None:
    flow = flow_of(
        broker_node(broker),
        mqtt_out_node("dyn"),  # qos "" and retain "": msg.qos and msg.retain
        mqtt_out_node("fixed", qos="0", retain="false"),  # the node's "0" and "false" win over the message's
        mqtt_out_node("topic", topic="out/node", qos="2", retain="true"),
    )
    watch = await mqtt.subscribe("out/#", qos=2)
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await kit.inject_message("dyn", message("a", "out/dyn/1", qos=2, retain=True))
        await kit.inject_message("dyn", message("b", "out/dyn/2", qos="1", retain="true"))
        await kit.inject_message("dyn", message("c", "out/dyn/3"))
        await kit.inject_message("dyn", message("d", "out/dyn/4", qos=7, retain="yes"))
        await kit.inject_message("fixed", message("e", "out/fixed", qos=2, retain=True))
        await kit.inject_message("topic", message("f", "elsewhere/x", qos=0, retain=False))
        # a message without a payload (delete msg.payload) is not published: "end", published by the
        # same node after it, is the last message
        await kit.inject_message("dyn", delete_property(message("none", "out/dyn/none"), ("payload",)))
        await kit.inject_message("dyn", message("z", "out/dyn/end"))
        got = await received(watch, 7)
    assert {m.topic: (m.payload, m.qos) for m in got} == {
        "out/dyn/1": (b"a", 2), "out/dyn/2": (b"b", 1), "out/dyn/3": (b"c", 0), "out/dyn/4": (b"d", 0),
        "out/fixed": (b"e", 0), "out/node": (b"f", 2), "out/dyn/end": (b"z", 0),
    }
    assert await retained(broker, "out/#", "out/marker") == {"out/dyn/1": b"a", "out/dyn/2": b"b", "out/node": b"f"}
    assert kit.stats()["dyn"] == {"published": 5, "dropped": 0}


async def test_mqtt_out_retains_only_for_true(tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient) -> None:
    # 10-mqtt.js: msg.retain = ((msg.retain === true) || (msg.retain === "true")) || false
    watch = await mqtt.subscribe("one/#", qos=1)
    async with run_flow(flow_of(broker_node(broker), mqtt_out_node()), node_types=TYPES, workdir=tmp_path) as kit:
        await kit.inject_message("pub", message("x", "one/a", retain=1))
        await received(watch, 1)
    assert await retained(broker, "one/#", "one/marker") == {}


async def test_mqtt_out_sends_payloads_as_node_red_does(
    tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient
) -> None:
    payloads = [5, 2.5, 2.0, True, False, {"a": [1, "x", None]}, [1, 2], None, b"\x00\xff", "text", "é", ""]
    watch = await mqtt.subscribe("enc/#", qos=1)
    async with run_flow(flow_of(broker_node(broker), mqtt_out_node(qos="1")), node_types=TYPES, workdir=tmp_path) as kit:
        for index, payload in enumerate(payloads):
            await kit.inject_message("pub", message(payload, f"enc/{index}"))
        got = {m.topic: m.payload for m in await received(watch, len(payloads))}
    assert [got[f"enc/{index}"] for index in range(len(payloads))] == [
        b"5", b"2.5", b"2", b"true", b"false", b'{"a":[1,"x",null]}', b"[1,2]", b"", b"\x00\xff", b"text",
        "é".encode(), b""]


# What node 20 gives for ""+value (numbers) and JSON.stringify(value) (objects and arrays).
JS_TEXT: list[tuple[Any, bytes]] = [
    (7, b"7"), (-0.5, b"-0.5"), (2.0, b"2"), (1e21, b"1e+21"), (1.5e300, b"1.5e+300"), (-0.0, b"0"),
    (float("nan"), b"NaN"), (float("inf"), b"Infinity"), (0.1 + 0.2, b"0.30000000000000004"),
    (True, b"true"), ({"k": "v", "n": [None, True]}, b'{"k":"v","n":[null,true]}'), ([], b"[]"),
]


@pytest.mark.parametrize(("payload", "expected"), JS_TEXT)
def test_encode_payload_as_javascript_prints_it(payload: Any, expected: bytes) -> None:
    assert encode_payload(payload) == expected


@pytest.mark.parametrize(("payload", "expected"), [
    ({"v": 2.0}, b'{"v":2}'),  # JSON.stringify({v: 2}): a float read from JSON "2.0" comes back as 2
    (1e-7, b"1e-7"),
    (1.2345678901234568e20, b"123456789012345680000"),
    ({"n": float("nan")}, b'{"n":null}'),
])
def test_encode_payload_floats_as_javascript_prints_them(payload: Any, expected: bytes) -> None:
    assert encode_payload(payload) == expected


def test_mqtt_out_config_errors(tmp_path: Path) -> None:
    [(path, text)] = load_problems(tmp_path, [broker_node(), mqtt_out_node(retain="yes")])
    assert path == "$[2].retain" and "retain must be true, false or empty" in text
    [(path, text)] = load_problems(tmp_path, [broker_node(), mqtt_out_node(qos="5")])
    assert path == "$[2].qos" and "QoS must be 0, 1 or 2" in text
    [(path, _)] = load_problems(tmp_path, [broker_node(), mqtt_out_node(topic="a/+")])
    assert path == "$[2].topic"


# ---- QoS 2 both ways ---------------------------------------------------------------------------


async def test_qos_2_out_and_back_in(tmp_path: Path, broker: MosquittoBroker) -> None:
    flow = flow_of(
        broker_node(broker),
        inject_node(targets=("pub",), once=True, payload='{"n": 1}', payloadType="json"),
        mqtt_out_node(topic="loop/a", qos="2", retain="false"),
        mqtt_in_node("in", "loop/#", ("out",), qos="2"),
        sink("out"),
    )
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        msg = await kit.expect("out")
    assert (msg.topic, msg.payload, qos_and_retain(msg)) == ("loop/a", {"n": 1}, (2, False))
    assert kit.stats()["pub"] == {"published": 1, "dropped": 0}


# ---- mqtt-broker: birth, close and will --------------------------------------------------------


async def test_birth_message_on_connect_and_close_message_at_stop(
    tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient
) -> None:
    watch = await mqtt.subscribe("evflow/#", qos=1)
    flow = flow_of(
        broker_node(broker, birthTopic="evflow/status", birthPayload="online", birthQos="1", birthRetain="false",
                    closeTopic="evflow/status", closePayload="offline", closeQos="1", closeRetain="true"),
        mqtt_in_node("in", "anything/#", ("out",)), sink("out"),
    )
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path):
        [birth] = await received(watch, 1)
        assert (birth.topic, birth.payload, birth.qos) == ("evflow/status", b"online", 1)
    [goodbye] = await received(watch, 1)
    assert (goodbye.topic, goodbye.payload, goodbye.qos) == ("evflow/status", b"offline", 1)
    assert await retained(broker, "evflow/#", "evflow/marker") == {"evflow/status": b"offline"}


@attrs.define
class CuttableProxy:
    """A TCP proxy in front of the broker whose connections the test can cut, as a network would:
    the broker sees the connection close without MQTT's DISCONNECT."""

    port: int
    _connections: list[trio.CancelScope] = attrs.field(factory=list)

    def cut(self) -> None:
        for scope in self._connections:
            scope.cancel()
        self._connections.clear()


@asynccontextmanager
async def cuttable_proxy(target_port: int) -> AsyncIterator[CuttableProxy]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy = CuttableProxy(listeners[0].socket.getsockname()[1])

    async def pump(source: trio.SocketStream, destination: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            async for data in source:
                await destination.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side closed: close the other

    async def handle(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", target_port) as upstream:
            with trio.CancelScope() as scope:
                proxy._connections.append(scope)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, upstream, scope)
                    nursery.start_soon(pump, upstream, client, scope)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


async def test_will_message_when_the_connection_dies_and_birth_again_on_reconnect(
    tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient
) -> None:
    watch = await mqtt.subscribe("evflow/#", qos=1)
    async with cuttable_proxy(broker.port) as proxy:
        flow = flow_of(
            broker_node(broker, port=str(proxy.port), birthTopic="evflow/birth", birthPayload="up",
                        willTopic="evflow/will", willPayload="gone", willQos="1", willRetain="true",
                        reconnect_max_delay=0.5),
            mqtt_in_node("in", "anything/#", ("out",)), sink("out"),
        )
        async with run_flow(flow, node_types=TYPES, workdir=tmp_path):
            [birth] = await received(watch, 1)
            assert (birth.topic, birth.payload) == ("evflow/birth", b"up")
            proxy.cut()
            after_cut = {m.topic: (m.payload, m.qos) for m in await received(watch, 2)}
            assert after_cut == {"evflow/will": (b"gone", 1), "evflow/birth": (b"up", 0)}
        # a clean stop says goodbye: no will
        assert await until_marker(mqtt, watch, "evflow/marker") == []
    assert await retained(broker, "evflow/#", "evflow/marker-2") == {"evflow/will": b"gone"}


# ---- mqtt-broker: configuration ----------------------------------------------------------------


def broker_config(**props: Any) -> MqttBrokerConfig:
    fields = {key: value for key, value in broker_node(**props).items() if key not in ("id", "type", "name")}
    return structure(fields, MqttBrokerConfig)  # as the loader reads a flow file


@pytest.mark.parametrize(("props", "url"), [
    ({"broker": "localhost", "port": "1883"}, "mqtt://localhost:1883"),
    ({"broker": "broker.example.com", "port": 1884}, "mqtt://broker.example.com:1884"),
    ({"broker": "10.0.0.5", "port": ""}, "mqtt://10.0.0.5:1883"),
    ({"broker": "::1", "port": "1883"}, "mqtt://[::1]:1883"),
    ({"broker": "localhost", "port": "", "usetls": True}, "mqtts://localhost:8883"),
    ({"broker": "localhost", "port": "8884", "usetls": True}, "mqtts://localhost:8884"),
    ({"broker": "mqtts://other:9999", "port": "1883"}, "mqtts://other:9999"),  # a URL wins, as in Node-RED
    ({"broker": " mqtt://spaced:1 ", "port": "1883"}, "mqtt://spaced:1"),
])
def test_broker_url_from_host_and_port_as_node_red_builds_it(props: dict[str, Any], url: str) -> None:
    assert broker_url(broker_config(**props)) == url


@pytest.mark.parametrize(("props", "path", "fragment"), [
    ({"broker": "ws://localhost:9001"}, "$[0].broker", "WebSockets"),
    ({"broker": "wss://localhost:9001"}, "$[0].broker", "WebSockets"),
    ({"broker": "not a host"}, "$[0].broker", "not a host name or address"),
    ({"port": "70000"}, "$[0].broker", "not a port number"),
    ({"broker": "mqtt://${MQTT_HOST}:1883"}, "$[0].broker", "substituted only when it is the whole value"),
    ({"client_id": "gateway"}, "$[0].client_id", "`clientid`"),
    ({"autoConnect": False}, "$[0].autoConnect", "autoConnect false"),
    ({"protocolVersion": "6"}, "$[0].protocolVersion", "3, 4 or 5"),
    ({"birthQos": "3", "birthTopic": "x"}, "$[0].birthQos", "QoS must be 0, 1 or 2"),
    ({"willTopic": "a/#"}, "$[0].willTopic", ""),
    ({"keepalive": "-1"}, "$[0].keepalive", ""),
])
def test_broker_config_errors(tmp_path: Path, props: dict[str, Any], path: str, fragment: str) -> None:
    problems = load_problems(tmp_path, [broker_node(**props)], tab_first=False)
    assert [p for p, _ in problems] == [path], problems
    assert fragment in problems[0][1]


def test_broker_client_id_refusal_names_node_reds_key(tmp_path: Path) -> None:
    [problem] = flow_problems(tmp_path, [broker_node(client_id="gateway")]).problems
    assert (problem.node_id, problem.path) == ("b1", "$[0].client_id")
    assert problem.message == "`client_id` is no longer read: write Node-RED's `clientid`"


def test_broker_warnings_for_mqtt_5_and_a_kept_session_without_clientid(tmp_path: Path) -> None:
    file = tmp_path / "flows.json"
    file.write_text(json.dumps([broker_node(protocolVersion="5", cleansession=False)]))
    plan = load_plan([file], registry=Registry.from_entry_points().with_types(*TYPES), env={})
    warnings = sorted((p.path, p.message) for p in plan.warnings)
    assert [path for path, _ in warnings] == ["$[0].cleansession", "$[0].protocolVersion"]


# ---- tls-config --------------------------------------------------------------------------------

KEY_PASSPHRASE = "client-key-passphrase"


@attrs.frozen
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, TlsFiles]]:
    """mosquitto with a TLS listener that wants a client certificate (and a plain one, for watching)."""
    from evflow.runtime.simulator.pki import make_ca, make_tls_client_cert, make_tls_server_cert, write_key, write_pem

    ca = make_ca("evflow test CA")
    server = make_tls_server_cert(ca, ["localhost"])
    client = make_tls_client_cert(ca, "gateway-1")
    files = TlsFiles(write_pem(tmp_path / "tls" / "ca.pem", ca.certificate),
                     write_pem(tmp_path / "tls" / "client.pem", client.certificate),
                     write_key(tmp_path / "tls" / "client.key", client.key, password=KEY_PASSPHRASE))
    listener = TlsListener(ca_file=files.ca, cert_file=write_pem(tmp_path / "tls" / "server.pem", server.certificate),
                           key_file=write_key(tmp_path / "tls" / "server.key", server.key), require_certificate=True)
    running = start_broker(tmp_path / "mosquitto", tls=listener)
    try:
        yield running, files
    finally:
        running.stop()


def tls_node(files: TlsFiles | None = None, **props: Any) -> dict[str, Any]:
    """A tls-config node as Node-RED 4 exports it, with its passphrase as a reference."""
    node = {
        "id": "tls1", "type": "tls-config", "name": "",
        "cert": str(files.cert) if files else "", "key": str(files.key) if files else "",
        "ca": str(files.ca) if files else "", "certname": "", "keyname": "", "caname": "", "servername": "",
        "verifyservercert": True, "alpnprotocol": "",
    }
    node.update(props)
    return node


async def test_mutual_tls_through_a_tls_config_node(
    tmp_path: Path, tls_broker: tuple[MosquittoBroker, TlsFiles]
) -> None:
    broker, files = tls_broker
    flow = flow_of(
        tls_node(files, credentials={"passphrase": "${TLS_KEY_PASSPHRASE}"}),
        broker_node(broker, broker="localhost", port=str(broker.tls_port), usetls=True, tls="tls1"),
        mqtt_out_node(topic="tls/hello", qos="1"),
        mqtt_in_node("in", "tls/#", ("out",)), sink("out"),
    )
    async with mqtt_client(broker) as plain:
        watch = await plain.subscribe("tls/#", qos=1)
        async with run_flow(flow, node_types=TYPES, workdir=tmp_path / "flow",
                            env={"TLS_KEY_PASSPHRASE": KEY_PASSPHRASE}) as kit:
            await kit.inject_message("pub", message({"secure": True}))
            msg = await kit.expect("out")
            [outside] = await received(watch, 1)
    assert (msg.topic, msg.payload) == ("tls/hello", {"secure": True})
    assert (outside.topic, outside.payload) == ("tls/hello", b'{"secure":true}')


@pytest.mark.parametrize(("props", "path", "fragment"), [
    ({"certname": "client.pem"}, "$[0].certname", "uploaded into Node-RED's editor"),
    ({"credentials": {"certdata": "-----BEGIN CERTIFICATE-----"}}, "$[0].certname", "uploaded"),
    ({"key": "/etc/client.key"}, "$[0].cert", "key needs cert"),
    ({"alpnprotocol": "mqtt"}, "$[0].alpnprotocol", "ALPN"),
    ({"servername": "other"}, "$[0].servername", "servername"),
])
def test_tls_config_errors(tmp_path: Path, props: dict[str, Any], path: str, fragment: str) -> None:
    problems = load_problems(tmp_path, [tls_node(**props)], tab_first=False)
    assert [p for p, _ in problems] == [path], problems
    assert fragment in problems[0][1]


def test_tls_config_passphrase_must_be_a_reference(tmp_path: Path) -> None:
    invalid = flow_problems(tmp_path, [tls_node(credentials={"passphrase": "written-in-the-file"})])
    [problem] = [p for p in invalid.problems if p.severity == "error"]
    assert problem.path.startswith("$[0].credentials")
    assert "written-in-the-file" not in str(invalid)




async def test_tls_config_verifyservercert_checks_the_host_name(
    tmp_path: Path, tls_broker: tuple[MosquittoBroker, TlsFiles]
) -> None:
    broker, files = tls_broker

    def flow(verify: bool) -> list[dict[str, Any]]:
        # The server's certificate names "localhost" only, not 127.0.0.1.
        return flow_of(
            tls_node(files, verifyservercert=verify, credentials={"passphrase": "${TLS_KEY_PASSPHRASE}"}),
            broker_node(broker, broker="127.0.0.1", port=str(broker.tls_port), usetls=True, tls="tls1"),
            mqtt_in_node("in", "tls/#", ("out",)), sink("out"),
        )

    env = {"TLS_KEY_PASSPHRASE": KEY_PASSPHRASE}
    with pytest.RaisesGroup(pytest.RaisesExc(FlowStartError, match="IP address mismatch"), flatten_subgroups=True):
        async with run_flow(flow(True), node_types=TYPES, workdir=tmp_path / "verify", env=env):
            pass
    # verifyservercert false: connected (run_flow is in once every config node started), messages come in
    async with mqtt_client(broker) as plain, run_flow(flow(False), node_types=TYPES, workdir=tmp_path / "no-verify",
                                                      env=env) as kit:
        await plain.publish("tls/x", b"1", qos=1)
        assert (await kit.expect("out")).payload == 1
