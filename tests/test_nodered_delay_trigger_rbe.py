"""Node-RED's delay, trigger and rbe ("filter") nodes, in running flows, as Node-RED exports them.

Timers run on trio's MockClock (``autojump_clock``): the clock jumps to the next deadline whenever
every task waits, so a test of a 5 s delay takes no real time, and times are exact.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from evflow.nodes.delay import Delay, Timers, js_parse_float
from evflow.nodes.rbe import Rbe
from evflow.nodes.trigger import Trigger
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.nodeapi import UNDEFINED
from evflow.runtime.registry import Registry
from evflow.runtime.testing import FlowUnderTest, run_flow

TYPES = (Delay, Trigger, Rbe)
TAB = {"id": "t", "type": "tab", "label": "Flow 1", "disabled": False, "info": "", "env": []}


def delay_node(**props: Any) -> dict[str, Any]:
    """A delay node as Node-RED 4 exports it (its defaults), wired to the sink "out" (and "out2")."""
    node = {
        "id": "d", "type": "delay", "z": "t", "name": "", "pauseType": "delay", "timeout": "5",
        "timeoutUnits": "seconds", "rate": "1", "nbRateUnits": "1", "rateUnits": "second", "randomFirst": "1",
        "randomLast": "5", "randomUnits": "seconds", "drop": False, "allowrate": False, "outputs": 1,
        "x": 300, "y": 200, "wires": [["out"]],
    }
    node.update(props)
    if node["outputs"] == 2:
        node["wires"] = [["out"], ["out2"]]
    return node


def trigger_node(**props: Any) -> dict[str, Any]:
    """A trigger node as Node-RED 4 exports it (its defaults, once opened in the editor)."""
    node = {
        "id": "g", "type": "trigger", "z": "t", "name": "", "op1": "1", "op2": "0", "op1type": "str",
        "op2type": "str", "duration": "250", "extend": False, "overrideDelay": False, "units": "ms", "reset": "",
        "bytopic": "all", "topic": "topic", "outputs": 1, "x": 300, "y": 300, "wires": [["out"]],
    }
    node.update(props)
    if node["outputs"] == 2:
        node["wires"] = [["out"], ["out2"]]
    return node


def rbe_node(**props: Any) -> dict[str, Any]:
    node = {
        "id": "r", "type": "rbe", "z": "t", "name": "", "func": "rbe", "gap": "", "start": "", "inout": "out",
        "septopics": True, "property": "payload", "topi": "topic", "x": 300, "y": 400, "wires": [["out"]],
    }
    node.update(props)
    return node


def sinks() -> list[dict[str, Any]]:
    return [{"id": name, "type": "test-sink", "z": "t", "wires": []} for name in ("out", "out2")]


def flow_of(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [TAB, node, *sinks()]


def message(payload: Any = None, topic: Any = "", **props: Any) -> Message:
    msg = new_message(payload, topic)
    return msg.with_props(props) if props else msg


async def settle_after(seconds: float) -> None:
    """Let ``seconds`` of mock time pass, then let every task finish what it can."""
    await trio.sleep(seconds)
    await trio.testing.wait_all_tasks_blocked()


async def received(flow: FlowUnderTest, node_id: str, port: int = 0) -> list[Any]:
    """The payloads ``node_id`` sent on ``port`` that no ``expect`` took yet (does not wait)."""
    payloads = []
    while not flow.nothing_sent(node_id, port):
        payloads.append((await flow.expect(node_id, port)).payload)
    return payloads


def load_problems(tmp_path: Path, node: dict[str, Any]) -> list[tuple[str, str]]:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(flow_of(node)))
    registry = Registry.from_entry_points().with_types(*TYPES)
    from evflow.runtime.testing import Sink

    with pytest.raises(FlowInvalid) as caught:
        load_plan([path], registry=registry.with_types(Sink), env={})
    return [(p.path, p.message) for p in caught.value.problems if p.severity == "error"]


# ---- helpers -----------------------------------------------------------------------------------


def test_parse_float_reads_values_as_javascript_does() -> None:
    assert js_parse_float("21.5 C") == 21.5
    assert js_parse_float("  -3e2x") == -300
    assert js_parse_float([7, 8]) == 7
    assert math.isnan(js_parse_float(True)) and math.isnan(js_parse_float("C 21"))


async def test_timers_wake_early_for_an_earlier_deadline(autojump_clock: trio.testing.MockClock) -> None:
    timers: Timers[str] = Timers()
    timers.set("late", 10.0)
    woke = []

    async def sleeper() -> None:
        await timers.wait()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        timers.set("early", 3.0)
    assert woke == [3.0]
    assert timers.pop_due(3.0) == ("early", 3.0)
    assert timers.pop_due(3.0) is None
    timers.set("late", 12.0)  # moved: the old deadline is gone
    assert timers.pop_due(11.0) is None and len(timers) == 1


# ---- delay: delay, delayv, random ---------------------------------------------------------------


async def test_delay_holds_each_message_for_the_timeout(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with run_flow(flow_of(delay_node(timeout="2")), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("d", message("a"))
        await trio.sleep(0.5)
        await flow.inject_message("d", message("b"))
        first = await flow.expect("out")
        assert (first.payload, trio.current_time() - start) == ("a", 2.0)
        second = await flow.expect("out")
        assert (second.payload, trio.current_time() - start) == ("b", 2.5)


async def test_delay_in_milliseconds_keeps_the_message_whole(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with run_flow(flow_of(delay_node(timeout="250", timeoutUnits="milliseconds")), node_types=TYPES,
                        workdir=tmp_path) as flow:
        start = trio.current_time()
        sent = await flow.inject_message("d", message({"v": 1}, "sensor", extra=[1, 2]))
        out = await flow.expect("out")
    assert trio.current_time() - start >= 0.25
    assert (out.payload, out.topic, out.props, out.msg_id) == ({"v": 1}, "sensor", {"extra": [1, 2]}, sent.msg_id)


async def test_delayv_takes_msg_delay_in_milliseconds(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with run_flow(flow_of(delay_node(pauseType="delayv", timeout="3")), node_types=TYPES,
                        workdir=tmp_path) as flow:
        for payload, delay in (("ms", 400), ("text", "100"), ("negative", -50), ("none", None)):
            start = trio.current_time()
            await flow.inject_message("d", message(payload) if delay is None else message(payload, delay=delay))
            out = await flow.expect("out")
            expected = {"ms": 0.4, "text": 0.1, "negative": 0.0, "none": 3.0}[payload]
            assert (out.payload, trio.current_time() - start) == (payload, pytest.approx(expected))


async def test_random_delay_lies_between_first_and_last(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = delay_node(pauseType="random", randomFirst="2", randomLast="4", randomUnits="seconds")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        waits = []
        for index in range(5):
            start = trio.current_time()
            await flow.inject_message("d", message(index))
            await flow.expect("out")
            waits.append(trio.current_time() - start)
    assert all(2.0 <= wait <= 4.0 for wait in waits), waits
    assert len(set(waits)) > 1


async def test_flush_sends_the_waiting_messages_now_in_arrival_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with run_flow(flow_of(delay_node(pauseType="delayv", timeout="10")), node_types=TYPES,
                        workdir=tmp_path) as flow:
        await flow.inject_message("d", message("slow", delay=9000))
        await flow.inject_message("d", message("fast", delay=5000))
        await flow.inject_message("d", message("third"))
        start = trio.current_time()
        await flow.inject_message("d", message(UNDEFINED, flush=2))  # a bare flush: not delayed itself
        assert [(await flow.expect("out")).payload for _ in range(2)] == ["slow", "fast"]
        assert trio.current_time() == start
        await flow.inject_message("d", message(UNDEFINED, flush=True))
        assert (await flow.expect("out")).payload == "third"
        await settle_after(20)
        assert flow.nothing_sent("out")


async def test_a_flush_with_a_payload_goes_out_with_the_others(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with run_flow(flow_of(delay_node()), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("d", message("a"))
        await flow.inject_message("d", message("b", flush=True))
        assert [(await flow.expect("out")).payload for _ in range(2)] == ["a", "b"]
        assert trio.current_time() == start


async def test_reset_drops_every_waiting_message(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with run_flow(flow_of(delay_node(timeout="1")), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("d", message("a"))
        await flow.inject_message("d", message("b"))
        await flow.inject_message("d", message("reset", reset=True))
        await settle_after(2)
        assert flow.nothing_sent("out")
        await flow.inject_message("d", message("after"))
        assert (await flow.expect("out")).payload == "after"
    assert flow.engine.node("d").stats() == {}


async def test_messages_still_delayed_at_stop_are_counted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with run_flow(flow_of(delay_node(timeout="60")), node_types=TYPES, workdir=tmp_path) as flow:
        for payload in range(3):
            await flow.inject_message("d", message(payload))
    assert flow.nothing_sent("out")
    assert flow.stats()["d"] == {"unsent_at_stop": 3}
    assert "3 held message(s) not sent" in caplog.text


async def test_held_messages_are_bounded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_flow(flow_of(delay_node(timeout="1", max_held=3)), node_types=TYPES, workdir=tmp_path) as flow:
        for payload in range(5):
            await flow.inject_message("d", message(payload))
        assert [(await flow.expect("out")).payload for _ in range(3)] == [0, 1, 2]
        await flow.inject_message("d", message("room again"))
        assert (await flow.expect("out")).payload == "room again"
    assert flow.stats()["d"] == {"dropped": 2}
    assert caplog.text.count("holding 3 messages (max_held)") == 1


# ---- delay: rate, queue, timed ------------------------------------------------------------------


async def test_rate_limit_queues_and_sends_one_per_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node = delay_node(pauseType="rate", rate="2", nbRateUnits="1", rateUnits="second")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        for payload in range(4):
            await flow.inject_message("d", message(payload))
        times = []
        for payload in range(4):
            assert (await flow.expect("out")).payload == payload
            times.append(trio.current_time() - start)
        assert times == [0.0, 0.5, 1.0, 1.5]
        # The ticks stopped at the first with nothing to send: the next message goes at once.
        await settle_after(3)
        start = trio.current_time()
        await flow.inject_message("d", message("later"))
        assert (await flow.expect("out")).payload == "later"
        assert trio.current_time() == start


async def test_rate_over_several_units(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = delay_node(pauseType="rate", rate="3", nbRateUnits="2", rateUnits="minute")  # 3 per 2 minutes
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("d", message("a"))
        await flow.inject_message("d", message("b"))
        await flow.expect("out")
        await flow.expect("out", timeout=100)
        assert trio.current_time() - start == pytest.approx(40.0)


async def test_rate_queue_to_front_flush_and_reset(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with run_flow(flow_of(delay_node(pauseType="rate", rate="1")), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("d", message("first"))
        assert (await flow.expect("out")).payload == "first"
        await flow.inject_message("d", message("a"))
        await flow.inject_message("d", message("b"))
        await flow.inject_message("d", message("urgent", toFront=True))
        assert (await flow.expect("out")).payload == "urgent"
        await flow.inject_message("d", message(UNDEFINED, flush=1))
        assert (await flow.expect("out")).payload == "a"
        await flow.inject_message("d", message(UNDEFINED, reset=True))
        await settle_after(5)
        assert flow.nothing_sent("out")  # "b" was dropped by the reset


async def test_rate_queue_flush_with_a_topic_releases_all_and_itself(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    # 10-delay.js: the flush message, less its flush, has more than _msgid (a topic): it is queued
    # first, then the flush sends the whole queue, itself last.
    node = delay_node(pauseType="rate", rate="1", nbRateUnits="10")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        for payload in "xyz":
            await flow.inject_message("d", message(payload, "in/slow"))
        assert (await flow.expect("out")).payload == "x"
        await flow.inject_message("d", message(UNDEFINED, "in/flush", flush=True))
        sent = [await flow.expect("out", timeout=1) for _ in range(3)]
        assert [(m.payload, m.topic) for m in sent] == [("y", "in/slow"), ("z", "in/slow"), (UNDEFINED, "in/flush")]
        assert all("flush" not in m.props for m in sent)


async def test_rate_can_be_set_by_msg_rate(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = delay_node(pauseType="rate", rate="1", allowrate=True)
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("d", message("a", rate=100))  # 100 ms between messages from now on
        await flow.inject_message("d", message("b"))
        await flow.expect("out")
        await flow.expect("out")
        assert trio.current_time() - start == pytest.approx(0.1)


async def test_rate_with_drop_drops_or_sends_on_port_2(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    for outputs in (1, 2):
        node = delay_node(pauseType="rate", rate="1", drop=True, outputs=outputs)
        async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
            await flow.inject_message("d", message("a"))
            await flow.inject_message("d", message("b"))
            await trio.sleep(1.5)
            await flow.inject_message("d", message("c"))
            await trio.testing.wait_all_tasks_blocked()
            assert await received(flow, "out") == ["a", "c"]
            assert await received(flow, "out2") == (["b"] if outputs == 2 else [])
        assert flow.stats().get("d", {}).get("rate_dropped", 0) == (1 if outputs == 1 else 0)


async def test_queue_keeps_the_latest_of_each_topic_and_sends_one_per_tick(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node = delay_node(pauseType="queue", rate="1", drop=True, outputs=2)
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("d", message(1, "a"))
        await flow.inject_message("d", message(1, "b"))
        await flow.inject_message("d", message(2, "a"))  # replaces a/1 in its place
        replaced = await flow.expect("out2")
        assert (replaced.topic, replaced.payload) == ("a", 1)
        sent = [await flow.expect("out") for _ in range(2)]
        assert [(m.topic, m.payload) for m in sent] == [("a", 2), ("b", 1)]
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_timed_sends_every_topic_at_each_tick(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = delay_node(pauseType="timed", rate="1", drop=True)
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        started = trio.current_time()  # the ticks count from the start of the flow
        await trio.sleep(0.3)
        await flow.inject_message("d", message(1, "a"))
        await flow.inject_message("d", message(1, "b"))
        await flow.inject_message("d", message(2, "a"))
        sent = [await flow.expect("out") for _ in range(2)]
        assert [(m.topic, m.payload) for m in sent] == [("a", 2), ("b", 1)]
        assert trio.current_time() - started == pytest.approx(1.0)


async def test_queue_flush_and_reset(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = delay_node(pauseType="queue", rate="1", rateUnits="minute", drop=True)
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("d", message(1, "a"))
        await flow.inject_message("d", message(1, "b"))
        await flow.inject_message("d", message(1, "c"))
        await flow.inject_message("d", message(UNDEFINED, "flusher", flush=5))  # more than held: all
        assert [(await flow.expect("out")).topic for _ in range(3)] == ["a", "b", "c"]
        await flow.inject_message("d", message(1, "x"))
        await flow.inject_message("d", message(UNDEFINED, "resetter", reset=True))
        await settle_after(120)
        assert flow.nothing_sent("out")


# ---- delay: configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "path", "fragment"),
    [
        ({"pauseType": "pause"}, "$[1].pauseType", "expected one of"),
        ({"pauseType": "rate", "rate": "0"}, "$[1].rate", "rate above 0"),
        ({"timeoutUnits": "weeks"}, "$[1].timeoutUnits", "expected one of"),
        ({"timeout": "soon"}, "$[1].timeout", "expected a number"),
        ({"outputs": 3}, "$[1].outputs", "expected one of"),
    ],
)
def test_delay_config_errors(tmp_path: Path, props: dict[str, Any], path: str, fragment: str) -> None:
    [(found_path, found)] = load_problems(tmp_path, delay_node(**props))
    assert found_path == path and fragment in found


# ---- trigger ------------------------------------------------------------------------------------


async def test_trigger_sends_op1_then_op2_and_ignores_what_comes_between(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with run_flow(flow_of(trigger_node()), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("g", message("go", "t1"))
        first = await flow.expect("out")
        assert (first.payload, first.topic, trio.current_time()) == ("1", "t1", start)
        await trio.sleep(0.1)
        await flow.inject_message("g", message("ignored"))
        second = await flow.expect("out")
        assert (second.payload, second.topic, trio.current_time() - start) == ("0", "t1", pytest.approx(0.25))
        await settle_after(1)
        assert flow.nothing_sent("out")
        await flow.inject_message("g", message("again"))  # idle again: triggers anew
        assert (await flow.expect("out")).payload == "1"


async def test_trigger_extend_restarts_the_time_and_second_port(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node = trigger_node(extend=True, duration="1", units="s", outputs=2, op2type="pay")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("g", message("first"))
        await trio.sleep(0.6)
        await flow.inject_message("g", message("second"))
        await trio.sleep(0.6)
        await flow.inject_message("g", message("third"))
        late = await flow.expect("out2")
        assert trio.current_time() - start == pytest.approx(2.2)
        assert late.payload == "first"  # "pay": the triggering message's payload
        assert await received(flow, "out") == ["1"]


async def test_trigger_until_reset(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = trigger_node(duration="0", reset="stop")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("g", message("go"))
        assert (await flow.expect("out")).payload == "1"
        await settle_after(60)
        await flow.inject_message("g", message("blocked"))
        await settle_after(1)
        assert flow.nothing_sent("out")
        await flow.inject_message("g", message("stop"))  # the reset payload
        await flow.inject_message("g", message("go"))
        assert (await flow.expect("out")).payload == "1"
        await flow.inject_message("g", message(None, reset=True))
        await flow.inject_message("g", message("go"))
        assert (await flow.expect("out")).payload == "1"
        assert await received(flow, "out") == []


async def test_trigger_repeats_until_reset(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = trigger_node(duration="-2", units="s", op1type="pay")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("g", message("tick"))
        times = []
        for _ in range(3):
            assert (await flow.expect("out")).payload == "tick"
            times.append(trio.current_time() - start)
        assert times == [0.0, 2.0, 4.0]
        await flow.inject_message("g", message("tock"))  # starts the repetition anew
        assert (await flow.expect("out")).payload == "tock"
        assert (await flow.expect("out")).payload == "tock"
        assert trio.current_time() - start == pytest.approx(6.0)
        await flow.inject_message("g", message(None, reset=True))
        await settle_after(10)
        assert flow.nothing_sent("out")


async def test_trigger_by_topic(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = trigger_node(bytopic="topic", op1type="pay", op2type="payl")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("g", message("a1", "a"))
        await flow.inject_message("g", message("b1", "b"))
        await flow.inject_message("g", message("a2", "a"))  # ignored, but the latest of "a"
        assert [(await flow.expect("out")).payload for _ in range(2)] == ["a1", "b1"]
        seconds = [await flow.expect("out") for _ in range(2)]
        assert sorted((m.topic, m.payload) for m in seconds) == [("a", "a2"), ("b", "b1")]


async def test_trigger_value_types(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = trigger_node(op1='{"on": true}', op1type="json", op2="42", op2type="num")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("g", message("x"))
        assert (await flow.expect("out")).payload == {"on": True}
        assert (await flow.expect("out")).payload == 42
    node = trigger_node(op1="", op1type="nul", op2="level", op2type="flow")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        flow.engine.contexts.flow("t").set("level", "low")
        await flow.inject_message("g", message("x"))
        await trio.sleep(0.1)
        flow.engine.contexts.flow("t").set("level", "high")  # read when the second message goes
        out = await flow.expect("out")
        assert out.payload == "high"
        assert flow.nothing_sent("out")  # op1 "nul": nothing first


async def test_trigger_templates_and_legacy_val(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = trigger_node(op1="on: {{payload}} <{{topic}}> {{{payload}}}{{#level}} at {{level}}{{/level}}{{nothing}}",
                        op1type="str", op2="null", op2type="val")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("g", message("a&b", "t/1", level=3))
        assert (await flow.expect("out")).payload == "on: a&amp;b <t&#x2F;1> a&b at 3"
        assert (await flow.expect("out")).payload is None


async def test_trigger_override_delay(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = trigger_node(overrideDelay=True, duration="10", units="s")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        start = trio.current_time()
        await flow.inject_message("g", message("x", delay=1500))
        await flow.expect("out")
        await flow.expect("out")
        assert trio.current_time() - start == pytest.approx(1.5)


async def test_trigger_waiting_at_stop_is_counted(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    node = trigger_node(duration="1", units="hr")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("g", message("x"))
        await flow.expect("out")
    assert flow.stats()["g"] == {"unsent_at_stop": 1}


async def test_trigger_topic_property_that_cannot_be_read_fails_the_message(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    node = trigger_node(bytopic="topic", topic="payload.device.id")
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        await flow.inject_message("g", message({"other": 1}))
        await flow.inject_message("g", message({"device": {"id": 7}}))
        assert (await flow.expect("out")).payload == "1"
    assert flow.engine.errors_logged == 1
    assert "Cannot read properties of undefined" in caplog.text


@pytest.mark.parametrize(
    ("props", "path", "fragment"),
    [
        ({"op1type": "payl"}, "$[1].op1", "op2type only"),
        ({"op2": "{{#payload}}x", "op2type": "str"}, "$[1].op2", "mustache template: Unclosed section"),
        ({"op1": "{bad", "op1type": "json"}, "$[1].op1", "invalid JSON"),
        ({"units": "days"}, "$[1].units", "expected one of"),
        ({"bytopic": "each"}, "$[1].bytopic", "expected one of"),
        ({"topic": "a..b"}, "$[1].topic", "invalid property expression"),
    ],
)
def test_trigger_config_errors(tmp_path: Path, props: dict[str, Any], path: str, fragment: str) -> None:
    [(found_path, found)] = load_problems(tmp_path, trigger_node(**props))
    assert found_path == path and fragment in found


# ---- rbe ----------------------------------------------------------------------------------------


async def pass_through(tmp_path: Path, node: dict[str, Any], messages: list[Message]) -> list[Any]:
    """The payloads of ``messages`` the rbe node passed on."""
    async with run_flow(flow_of(node), node_types=TYPES, workdir=tmp_path) as flow:
        for msg in messages:
            await flow.inject_message("r", msg)
        await trio.testing.wait_all_tasks_blocked()
        return await received(flow, "out")


async def test_rbe_passes_changes_per_topic(tmp_path: Path) -> None:
    messages = [message(1, "a"), message(1, "a"), message(1, "b"), message("1", "a"), message(True, "a"),
                message(True, "a"), message({"x": [1]}, "a"), message({"x": [1]}, "a"), message({"x": [2]}, "a")]
    assert await pass_through(tmp_path, rbe_node(), messages) == [1, 1, "1", True, {"x": [1]}, {"x": [2]}]


async def test_rbei_ignores_the_first_value(tmp_path: Path) -> None:
    messages = [message(1, "a"), message(2, "a"), message(2, "a"), message(5, "b"), message(5, "b")]
    assert await pass_through(tmp_path, rbe_node(func="rbei"), messages) == [2]


async def test_rbe_reset_and_one_state_for_all_topics(tmp_path: Path) -> None:
    messages = [message(1, "a"), message(1, "b"), message(UNDEFINED, "a", reset=True), message(1, "a"),
                message(1, "b")]
    # septopics false: "b" with 1 is no change; the reset (without a payload: it passes nothing) forgets all
    assert await pass_through(tmp_path, rbe_node(septopics=False), messages) == [1, 1]
    # per topic: the reset forgets "a" only; a reset with a payload is compared like any message
    messages[2] = message(None, "a", reset=True)
    assert await pass_through(tmp_path, rbe_node(), messages) == [1, 1, None, 1]


async def test_rbe_ignores_messages_without_the_property(tmp_path: Path) -> None:
    node = rbe_node(property="payload.reading", topi="payload.sensor")
    messages = [message({"sensor": "s1", "reading": 3}), message({"sensor": "s2", "reading": 3}),
                message({"other": 1}), message({"sensor": "s1", "reading": 3}), message("text")]
    assert [p["sensor"] for p in await pass_through(tmp_path, node, messages)] == ["s1", "s2"]


async def test_deadband(tmp_path: Path) -> None:
    values = [10, 12, 15, 16, 21, "21.5 C", 26]
    assert await pass_through(tmp_path, rbe_node(func="deadband", gap="5"), [message(v) for v in values]) == [
        10, 16, "21.5 C"]
    assert await pass_through(tmp_path, rbe_node(func="deadbandEq", gap="5"), [message(v) for v in values]) == [
        10, 15, 21, 26]


async def test_deadband_compared_with_the_last_input(tmp_path: Path) -> None:
    values = [10, 13, 16, 19, 30]
    node = rbe_node(func="deadband", gap="5", inout="in")
    assert await pass_through(tmp_path, node, [message(v) for v in values]) == [10, 30]


async def test_deadband_percent(tmp_path: Path) -> None:
    values = [100, 105, 111, 120, 133]
    node = rbe_node(func="deadband", gap="10%")
    assert await pass_through(tmp_path, node, [message(v) for v in values]) == [100, 111, 133]


async def test_narrowband_drops_outliers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    values = [20, 21, 50, 22, 24, "no reading"]
    assert await pass_through(tmp_path, rbe_node(func="narrowband", gap="3"), [message(v) for v in values]) == [
        20, 21, 22, 24]
    assert "no number found in msg.payload" in caplog.text
    # with a start value, the first must lie near it
    node = rbe_node(func="narrowbandEq", gap="3", start="50")
    assert await pass_through(tmp_path, node, [message(v) for v in (20, 51, 54, 53)]) == [51, 53]


@pytest.mark.parametrize(
    ("props", "path", "fragment"),
    [
        ({"func": "changed"}, "$[1].func", "expected one of"),
        ({"gap": "ten"}, "$[1].gap", "a gap is a number"),
        ({"inout": "both"}, "$[1].inout", "expected one of"),
        ({"property": "payload["}, "$[1].property", "invalid property expression"),
    ],
)
def test_rbe_config_errors(tmp_path: Path, props: dict[str, Any], path: str, fragment: str) -> None:
    [(found_path, found)] = load_problems(tmp_path, rbe_node(**props))
    assert found_path == path and fragment in found
