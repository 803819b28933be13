"""Flows against APIs made from documents the tests write (tests/asyncapi_samples.py), with the
generic simulator as EVerest, over a real broker: a powermeter-shaped API whose questions the flow
answers, and an evse_manager-shaped one whose session events it reacts to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from evflow.runtime.asyncapi.catalogue import ApiCatalogue
from evflow.runtime.broker import BrokerConfig
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.registry import Registry
from evflow.runtime.simulator.generic import GenericApiSimulator, NoReply
from evflow.runtime.testing import FlowUnderTest, run_flow
from evflow.runtime.transport import MqttClient

from .asyncapi_samples import write_documents

START = {"evse_id": "DE*PNX*E1", "transaction_id": "t-42", "identification_status": "ASSIGNED"}


@pytest.fixture
def catalogue(tmp_path: Path) -> ApiCatalogue:
    return ApiCatalogue([write_documents(tmp_path / "apis")])


class Everest:
    """The simulator of one API, on its own connection to the test broker."""

    def __init__(self, broker: MosquittoBroker, catalogue: ApiCatalogue) -> None:
        self.broker = broker
        self.catalogue = catalogue

    async def __call__(self, nursery: trio.Nursery, api: str, module_id: str, **options: Any) -> GenericApiSimulator:
        mqtt = MqttClient(BrokerConfig.from_url(self.broker.url, connect_timeout=5))
        await nursery.start(mqtt.run)  # closed with the test's nursery
        simulator = GenericApiSimulator(mqtt, self.catalogue.api(api), module_id, discovery=False, **options)
        await nursery.start(simulator.run)
        return simulator


@pytest.fixture
async def everest(broker: MosquittoBroker, catalogue: ApiCatalogue) -> AsyncIterator[Everest]:
    yield Everest(broker, catalogue)


def _base(broker: MosquittoBroker, api: str, module_id: str) -> list[dict[str, Any]]:
    return [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "api", "type": "everest-api", "broker": "b", "api": api, "module_id": module_id},
        {"id": "errors", "type": "catch", "scope": None, "wires": [[]]},
    ]


def _flow(catalogue: ApiCatalogue, flow: list[dict[str, Any]], tmp_path: Path) -> Any:
    return run_flow(flow, registry=Registry.from_entry_points(catalogue), workdir=tmp_path)


async def test_a_flow_answers_everests_questions(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                 everest: Everest, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "timeout": 5,
         "wires": [["status"]]},
        # the answer is made from the question: a change node, as a Node-RED user would
        {"id": "status", "type": "change", "rules": [
            {"t": "set", "p": "payload", "pt": "msg", "to": '{"status": "OK"}', "tot": "json"}], "wires": [["answer"]]},
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "api"},
    ]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        kit: FlowUnderTest
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                replies = [await simulator.ask("receive_request_start_transaction", START, timeout=5) for _ in range(3)]
            assert replies == [{"status": "OK"}] * 3
            question = await kit.expect("ask")
            assert question.payload.transaction_id == "t-42"  # typed: the document's class
            assert question.payload.identification_status == "ASSIGNED"
            assert kit.stats()["ask"]["answered"] == 3 and kit.stats()["answer"]["answered"] == 3
        nursery.cancel_scope.cancel()


async def test_an_unanswered_question_gets_the_default_reply_before_everests_timeout(
        broker: MosquittoBroker, catalogue: ApiCatalogue, everest: Everest, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "meter", "pm1"),
        # nothing answers: the policy does, after 0.2 s
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "timeout": 0.2,
         "unanswered": "reply", "default_reply": {"status": "UNEXPECTED_ERROR", "error": "no meter"}},
    ]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                reply = await simulator.ask("receive_request_start_transaction", START, timeout=5)
            assert reply == {"status": "UNEXPECTED_ERROR", "error": "no meter"}
            assert kit.stats()["ask"]["unanswered"] == 1
        nursery.cancel_scope.cancel()


async def test_unanswered_reported_then_late_duplicate_and_invalid_answers(
        broker: MosquittoBroker, catalogue: ApiCatalogue, everest: Everest, tmp_path: Path) -> None:
    """Ordered by events, not by time: each step waits for what the flow said about the last."""
    def answer_with(node_id: str, status: str, answer: str) -> dict[str, Any]:
        return {"id": node_id, "type": "change", "wires": [[answer]], "rules": [
            {"t": "set", "p": "payload", "pt": "msg", "to": f'{{"status": "{status}"}}', "tot": "json"}]}

    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "pm2", "type": "everest-api", "broker": "b", "api": "meter", "module_id": "pm2"},
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "timeout": 0.2,
         "wires": [["route"]]},
        # t-slow is not answered (the test answers it later); t-twice is answered twice; t-bad with a
        # status the document does not know; t-other through the other module's connection
        {"id": "route", "type": "switch", "property": "payload.transaction_id", "propertyType": "msg",
         "rules": [{"t": "eq", "v": "t-twice", "vt": "str"}, {"t": "eq", "v": "t-bad", "vt": "str"},
                   {"t": "eq", "v": "t-other", "vt": "str"}],
         "checkall": "false", "outputs": 3, "wires": [["ok", "also"], ["bad"], ["elsewhere"]]},
        answer_with("ok", "OK", "answer"),
        answer_with("also", "NOT_SUPPORTED", "answer2"),
        answer_with("bad", "MAYBE", "answer"),
        answer_with("elsewhere", "OK", "answer_pm2"),
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "api"},
        {"id": "answer2", "type": "meter/send_reply_start_transaction", "api": "api"},
        {"id": "answer_pm2", "type": "meter/send_reply_start_transaction", "api": "pm2"},
    ]
    replies: dict[str, Any] = {}

    async def ask(transaction_id: str) -> None:
        try:
            replies[transaction_id] = await simulator.ask("receive_request_start_transaction",
                                                          {**START, "transaction_id": transaction_id}, timeout=5)
        except NoReply:
            replies[transaction_id] = None

    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        async with _flow(catalogue, flow, tmp_path) as kit, trio.open_nursery() as asking:
            with trio.fail_after(10):
                # unanswered: reported (EVerest still waits); a late answer then still goes out, once
                asking.start_soon(ask, "t-slow")
                question = await kit.expect("ask")
                unanswered = await kit.expect("errors")
                assert "start_transaction from EVerest not answered within 0.2 s" in unanswered.error.message
                await kit.inject_message("ok", question)
                await kit.inject_message("ok", question)
                again = await kit.expect("errors")
                assert again.error.source_id == "answer" and "was answered already" in again.error.message

                asking.start_soon(ask, "t-twice")
                duplicate = await kit.expect("errors")
                assert duplicate.error.source_id in ("answer", "answer2")
                assert "was answered already; this answer is not sent" in duplicate.error.message

                asking.start_soon(ask, "t-bad")  # the answer breaks the schema: not sent, then reported
                bad = [(await kit.expect("errors")).error.message for _ in range(2)]
                assert any("got 'MAYBE' @ $.payload.status" in m for m in bad), bad
                assert any("not answered within" in m for m in bad), bad

                asking.start_soon(ask, "t-other")  # an answer through another module's connection
                other = [(await kit.expect("errors")).error.message for _ in range(2)]
                assert any("the answer would go to another module" in m for m in other), other
        assert replies["t-slow"] == {"status": "OK"}
        assert replies["t-twice"] in ({"status": "OK"}, {"status": "NOT_SUPPORTED"})  # whichever came first
        assert replies["t-bad"] is None and replies["t-other"] is None
        assert kit.stats()["ask"] == {"received": 4, "invalid": 0, "asked": 4, "answered": 1, "unanswered": 3,
                                      "late_answers": 1, "duplicate_answers": 2}
        nursery.cancel_scope.cancel()


async def test_questions_everest_cannot_be_answered_on_and_empty_payloads(
        broker: MosquittoBroker, catalogue: ApiCatalogue, everest: Everest, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "read", "type": "meter/receive_request_read_display", "api": "api", "wires": [["line"]]},
        {"id": "line", "type": "change", "wires": [["shown"]], "rules": [
            {"t": "set", "p": "payload", "pt": "msg", "to": "line 1", "tot": "str"}]},
        {"id": "shown", "type": "meter/send_reply_read_display", "api": "api"},
    ]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                # EVerest leaves an empty payload out: the question is taken with {} (what the schema allows)
                assert await simulator.ask("receive_request_read_display", {}) == "line 1"
                assert attrs.asdict((await kit.expect("read")).payload) == {"line": None}
                # a replyTo nobody could publish to: reported, and the flow goes on
                topic = simulator.topic_of(simulator.operations["receive_request_read_display"])
                await simulator.mqtt.publish(topic, b'{"headers": {"replyTo": "x/+/y"}, "payload": {"line": 2}}')
                invalid = await kit.expect("errors")
                assert "must not contain wildcards" in invalid.error.message and "$.headers.replyTo" in \
                    invalid.error.message
                assert await simulator.ask("receive_request_read_display", {"line": 3}) == "line 1"
        nursery.cancel_scope.cancel()


async def test_a_default_reply_holds_back_a_later_answer(
        broker: MosquittoBroker, catalogue: ApiCatalogue, everest: Everest, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "timeout": 0.2,
         "unanswered": "reply", "default_reply": {"status": "UNEXPECTED_ERROR"}},
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "api", "payload": {"status": "OK"}},
    ]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                assert await simulator.ask("receive_request_start_transaction", START) == {"status": "UNEXPECTED_ERROR"}
                await kit.inject_message("answer", await kit.expect("ask"))
                held = await kit.expect("errors")
                assert "answered with the default reply after 0.2 s; this answer is not sent" in held.error.message
        nursery.cancel_scope.cancel()


async def test_questions_open_at_shutdown_get_the_default_reply(
        broker: MosquittoBroker, catalogue: ApiCatalogue, everest: Everest, mqtt: MqttClient, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "timeout": 60,
         "unanswered": "reply", "default_reply": {"status": "UNEXPECTED_ERROR", "error": "stopping"}},
    ]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        async with await mqtt.subscribe("evflow-sim/#") as replies:  # where the simulator's questions are answered
            async with _flow(catalogue, flow, tmp_path) as kit:
                with trio.fail_after(10):
                    topic = simulator.topic_of(simulator.operations["receive_request_start_transaction"])
                    await simulator.mqtt.publish(topic, b'{"headers": {"replyTo": "evflow-sim/q1"}, "payload": '
                                                        + json.dumps(START).encode() + b"}")
                    await kit.expect("ask")
            with trio.fail_after(10):  # the flow stopped: the open question was answered on the way out
                message = await replies.receive()
            assert (message.topic, json.loads(message.payload)) == (
                "evflow-sim/q1", {"status": "UNEXPECTED_ERROR", "error": "stopping"})
        nursery.cancel_scope.cancel()


async def test_a_flow_reacts_to_session_events(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                               everest: Everest, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "charging", "evse1"),
        {"id": "events", "type": "charging/receive_session_event", "api": "api", "wires": [["route"]]},
        {"id": "route", "type": "switch", "property": "payload.event", "propertyType": "msg",
         "rules": [{"t": "eq", "v": "SessionStarted", "vt": "str"}, {"t": "eq", "v": "SessionFinished", "vt": "str"}],
         "checkall": "false", "outputs": 2, "wires": [["enable"], ["pause"]]},
        {"id": "enable", "type": "charging/send_request_enable", "api": "api",
         "payload": {"source": "LocalAPI", "priority": 5}, "wires": [["enabled"], []]},
        {"id": "enabled", "type": "charging/send_request_get_session_info", "api": "api", "wires": [[], []]},
        {"id": "pause", "type": "charging/send_pause", "api": "api", "payload": 60},
    ]
    started = {"uuid": "s-1", "timestamp": "2024-01-01T00:00:00Z", "event": "SessionStarted",
               "session_started": {"reason": "EVConnected"}}
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "charging", "evse1", answers={"send_request_enable": False})
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                await simulator.publish("receive_session_event", started)
                event = await kit.expect("events")
                assert event.payload.session_started.reason == "EVConnected"
                assert (await kit.expect("enable")).payload is False  # the configured answer
                info = await kit.expect("enabled")  # the document's first example
                assert info.payload.state == "Charging" and info.payload.charged_energy_wh == 1200

                # what EVerest should not send is reported, and the flow goes on
                await simulator.mqtt.publish(simulator.topic_of(simulator.operations["receive_session_event"]),
                                             b'{"uuid": "s-1", "timestamp": "t", "event": "Exploded"}')
                invalid = await kit.expect("errors")
                assert "got 'Exploded' @ $.event" in invalid.error.message

                await simulator.publish("receive_session_event", {**started, "event": "SessionFinished",
                                                                  "session_started": None})
                assert await simulator.next_sent("send_pause") == 60
            assert kit.stats()["events"] == {"received": 3, "invalid": 1}
        nursery.cancel_scope.cancel()


async def test_a_payload_that_breaks_the_schema_fails_the_message_not_the_flow(
        broker: MosquittoBroker, catalogue: ApiCatalogue, everest: Everest, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "values", "type": "meter/send_powermeter_values", "api": "api"},
    ]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                await kit.inject("values", {"timestamp": "2024-01-01T00:00:00Z", "energy_Wh_import": {"total": "lots"}})
                failed = await kit.expect("errors")
                assert "expected a number, got a string @ $.payload.energy_Wh_import.total" in failed.error.message
                good = {"timestamp": "2024-01-01T00:00:00Z", "energy_Wh_import": {"total": 3.5}, "from": "flow"}
                await kit.inject("values", good)
                assert await simulator.next_sent("send_powermeter_values") == good
            assert simulator.invalid_sent["send_powermeter_values"] == 0  # the bad one never left evflow
        nursery.cancel_scope.cancel()


async def test_a_flow_finds_its_module_by_discovery(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                    everest: Everest, tmp_path: Path) -> None:
    flow = [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "api", "type": "everest-api", "broker": "b", "api": "meter", "discover": True, "discover_window": 0.3},
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "wires": [["answer"]]},
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "api", "payload": {"status": "OK"}},
    ]
    async with trio.open_nursery() as nursery:
        mqtt = MqttClient(BrokerConfig.from_url(broker.url, connect_timeout=5))
        await nursery.start(mqtt.run)
        simulator = GenericApiSimulator(mqtt, catalogue.api("meter"), "meter_7")  # answers discovery
        await nursery.start(simulator.run)
        async with _flow(catalogue, flow, tmp_path):
            with trio.fail_after(10):
                assert await simulator.ask("receive_request_start_transaction", START, timeout=5) == {"status": "OK"}
        nursery.cancel_scope.cancel()


async def test_discovery_that_finds_no_module_says_so(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                      tmp_path: Path) -> None:
    from evflow.runtime.engine import FlowStartError

    flow = [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "api", "type": "everest-api", "broker": "b", "api": "meter", "discover": True, "discover_window": 0.2,
         "discover_wait": 0.3},
    ]
    with trio.fail_after(10), pytest.RaisesGroup(pytest.RaisesExc(
            FlowStartError, match=r"everest-api 'api' did not start: no module implementing the 'meter' API answered "
            r"on 'everest_api/query-modules/meter' within 0.\d s"), flatten_subgroups=True):
        async with _flow(catalogue, flow, tmp_path):
            pass


async def test_a_question_passes_through_a_function_node(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                         everest: Everest, tmp_path: Path) -> None:
    """As docs/everest-apis.md shows: the question travels on the message through JavaScript."""
    pytest.importorskip("quickjs")
    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "api", "wires": [["logic"]]},
        {"id": "logic", "type": "function", "wires": [["answer"]],
         "func": "msg.payload = {status: msg.payload.evse_id.startsWith('DE') ? 'OK' : 'NOT_SUPPORTED'}; return msg;"},
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "api"},
    ]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "meter", "pm1")
        async with _flow(catalogue, flow, tmp_path):
            with trio.fail_after(10):
                assert await simulator.ask("receive_request_start_transaction", START) == {"status": "OK"}
                assert await simulator.ask("receive_request_start_transaction", {**START, "evse_id": "FR*1"}) == {
                    "status": "NOT_SUPPORTED"}
        nursery.cancel_scope.cancel()


async def test_a_request_whose_payload_is_an_array(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                   everest: Everest, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "charging", "evse1"),
        {"id": "limits", "type": "charging/send_request_set_limits", "api": "api", "wires": [["done"], ["failed"]]},
        {"id": "done", "type": "junction", "wires": [[]]},
        {"id": "failed", "type": "junction", "wires": [[]]},
    ]
    async with trio.open_nursery() as nursery:
        await everest(nursery, "charging", "evse1")
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                await kit.inject("limits", [{"phase": "L1", "amps": 16}, {"phase": "L2", "amps": 10.5}])
                assert (await kit.expect("done")).payload == "Accepted"
                await kit.inject("limits", [])  # minItems 1
                failed = await kit.expect("failed")
                assert "fewer than 1 items (0) @ $.payload" in failed.error.message
        nursery.cancel_scope.cancel()


async def test_a_source_of_a_parameterised_address(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                   everest: Everest, tmp_path: Path) -> None:
    """Telemetry-shaped: topics under a pathname of its own, one level filled by each message."""
    flow = [*_base(broker, "gauges", "unused"), {"id": "status", "type": "gauges/receive_status", "api": "api"}]
    async with trio.open_nursery() as nursery:
        simulator = await everest(nursery, "gauges", "unused")
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                await simulator.publish("receive_status", {"ok": False}, parameters={"gauge_id": "7"})
                msg = await kit.expect("status")
            assert (msg.topic, msg.payload.ok) == ("test-telemetry/Gauge/7/status", False)
        nursery.cancel_scope.cancel()


async def test_heartbeat_and_keepalive_work_for_any_api(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                        everest: Everest, mqtt: MqttClient, tmp_path: Path) -> None:
    flow = [
        *_base(broker, "meter", "pm1"),
        {"id": "beats", "type": "heartbeat", "api": "api", "timeout": 5},
        {"id": "alive", "type": "keepalive", "api": "api", "interval": 1},
    ]
    check_topic = "everest_api/1/meter/pm1/m2e/communication_check"
    async with trio.open_nursery() as nursery, await mqtt.subscribe(check_topic) as checks:
        await everest(nursery, "meter", "pm1", heartbeat_interval_ms=50, heartbeat_start=41)
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                first = (await kit.expect("beats")).payload
                assert (await kit.expect("beats")).payload == first + 1
                assert (await checks.receive()).payload == b"true"
        nursery.cancel_scope.cancel()


async def test_a_discovered_module_of_another_version_is_refused(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                                 tmp_path: Path) -> None:
    from evflow.runtime.engine import FlowStartError

    flow = [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "api", "type": "everest-api", "broker": "b", "api": "meter", "discover": True, "discover_window": 0.2,
         "api_version": 2},
    ]
    async with trio.open_nursery() as nursery:
        mqtt = MqttClient(BrokerConfig.from_url(broker.url, connect_timeout=5))
        await nursery.start(mqtt.run)
        await nursery.start(GenericApiSimulator(mqtt, catalogue.api("meter"), "meter_7").run)
        with trio.fail_after(10), pytest.RaisesGroup(pytest.RaisesExc(
                FlowStartError, match=r"module 'meter_7' speaks version 1 of meter; this flow version 2"),
                flatten_subgroups=True):
            async with _flow(catalogue, flow, tmp_path):
                pass
        nursery.cancel_scope.cancel()


async def test_everests_external_prefix_on_every_kind(broker: MosquittoBroker, catalogue: ApiCatalogue,
                                                     everest: Everest, mqtt: MqttClient, tmp_path: Path) -> None:
    """EVerest puts its mqtt_external_prefix in front of every topic, the replyTo it is given included:
    requests, answers to its questions, sends and receives all go under it."""
    prefix = "site-1/"
    flow = [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "meter", "type": "everest-api", "broker": "b", "api": "meter", "module_id": "pm1",
         "external_prefix": prefix},
        {"id": "charging", "type": "everest-api", "broker": "b", "api": "charging", "module_id": "evse1",
         "external_prefix": prefix},
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "meter", "wires": [["answer"]]},
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "meter", "payload": {"status": "OK"}},
        {"id": "enable", "type": "charging/send_request_enable", "api": "charging",
         "payload": {"source": "CSMS", "priority": 1}, "wires": [["enabled"], []]},
        {"id": "enabled", "type": "junction", "wires": [[]]},
        {"id": "pause", "type": "charging/send_pause", "api": "charging"},
        {"id": "events", "type": "charging/receive_session_event", "api": "charging"},
    ]
    async with trio.open_nursery() as nursery, await mqtt.subscribe("#") as everything:
        meter = await everest(nursery, "meter", "pm1", external_prefix=prefix)
        charging = await everest(nursery, "charging", "evse1", external_prefix=prefix)
        async with _flow(catalogue, flow, tmp_path) as kit:
            with trio.fail_after(10):
                assert await meter.ask("receive_request_start_transaction", START) == {"status": "OK"}
                await kit.inject("enable", None)
                assert (await kit.expect("enabled")).payload is True
                await kit.inject("pause", 30)
                assert await charging.next_sent("send_pause") == 30
                event = {"uuid": "u", "timestamp": "2024-01-01T00:00:00Z", "event": "SessionFinished"}
                await charging.publish("receive_session_event", event)
                assert (await kit.expect("events")).payload.event == "SessionFinished"
        seen = []
        while True:
            try:
                seen.append(everything.receive_nowait().topic)
            except trio.WouldBlock:
                break
        assert seen and all(topic.startswith(prefix) for topic in seen), [t for t in seen if not t.startswith(prefix)]
        nursery.cancel_scope.cancel()
