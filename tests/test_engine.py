"""Engine behaviours with in-process flows (no broker needed), through the public test harness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evflow.runtime.message import Message
from evflow.runtime.nodeapi import Node
from evflow.runtime.testing import run_flow


def node(node_id: str, node_type: str, wires: list[list[str]] | None = None, **props: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "z": "tab1", "wires": wires or [], **props}


# ---- test node types ---------------------------------------------------------------------------

@attrs.frozen
class NoConfig:
    pass


class Split(Node[NoConfig]):
    """Even payloads to port 0, odd to port 1."""

    type = "split"
    Config = NoConfig

    @classmethod
    def outputs(cls, config: NoConfig) -> int:
        return 2

    async def receive(self, msg: Message) -> None:
        await self.send(msg, msg.payload % 2)


class Fail(Node[NoConfig]):
    """Raises on the payload "bad", passes everything else."""

    type = "fail"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        if msg.payload == "bad":
            raise ValueError("bad payload")
        await self.send(msg)


class FailWithPort(Fail):
    type = "fail-port"
    error_port = 1

    @classmethod
    def outputs(cls, config: NoConfig) -> int:
        return 2


GATES: dict[str, trio.Event] = {}


class Gate(Node[NoConfig]):
    """Holds every message until the test opens GATES['gate']."""

    type = "gate"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        await GATES["gate"].wait()
        await self.send(msg)


class SlowStart(Node[NoConfig]):
    """Becomes ready only when the test opens GATES['ready']."""

    type = "slow-start"
    Config = NoConfig

    async def start(self) -> None:
        await GATES["ready"].wait()

    async def receive(self, msg: Message) -> None:
        await self.send(msg)


@attrs.frozen
class BurstConfig:
    count: int
    start: int = 0


# The tasks sources ran in: an inline node that ran in one of them ran in its sender's task.
SOURCE_TASKS: set[trio.lowlevel.Task] = set()


class Burst(Node[BurstConfig]):
    """Source: `count` messages (payloads 0..count-1) as fast as the wires take them."""

    type = "burst"
    Config = BurstConfig
    is_source = True
    has_input = False

    async def run(self) -> None:
        SOURCE_TASKS.add(trio.lowlevel.current_task())
        for index in range(self.config.start, self.config.start + self.config.count):
            await self.send(Message(index))


class InlinePass(Node[NoConfig]):
    """Inline: passes messages on, recording the task each ran in and whether two ever overlapped."""

    type = "inline-pass"
    Config = NoConfig
    inline = True
    tasks: list[trio.lowlevel.Task] = []
    active = 0
    most_active = 0

    async def receive(self, msg: Message) -> None:
        cls = InlinePass
        cls.active += 1
        cls.most_active = max(cls.most_active, cls.active)
        cls.tasks.append(trio.lowlevel.current_task())
        try:
            if msg.payload == "bad":
                raise ValueError("bad payload")
            await self.send(msg)
        finally:
            cls.active -= 1


class InlineFailWithPort(InlinePass):
    type = "inline-fail-port"
    error_port = 1

    @classmethod
    def outputs(cls, config: NoConfig) -> int:
        return 2


class NowaitBurst(Node[BurstConfig]):
    """Source: as Burst, but each message offered with send_nowait first, as a transport callback
    would; after the first refusal the rest go through send, in order. Records what was accepted."""

    type = "nowait-burst"
    Config = BurstConfig
    is_source = True
    has_input = False
    accepted: list[bool] = []
    can: list[bool] = []

    async def run(self) -> None:
        SOURCE_TASKS.add(trio.lowlevel.current_task())
        cls = NowaitBurst
        cls.can.append(self.context.can_send_nowait(0))
        refused = False
        for index in range(self.config.count):
            if not refused:
                refused = not self.context.send_nowait(Message(index))
                cls.accepted.append(not refused)
            if refused:
                await self.send(Message(index))


TYPES = (Split, Fail, FailWithPort, Gate, SlowStart, Burst, InlinePass, InlineFailWithPort, NowaitBurst)


@pytest.fixture(autouse=True)
def gates() -> None:
    InlinePass.tasks, InlinePass.active, InlinePass.most_active = [], 0, 0
    SOURCE_TASKS.clear()
    NowaitBurst.accepted, NowaitBurst.can = [], []
    GATES.clear()
    GATES["gate"] = trio.Event()
    GATES["ready"] = trio.Event()


def burst(wires: list[str], count: int) -> dict[str, Any]:
    return node("in", "burst", [wires], count=count)


# ---- behaviours --------------------------------------------------------------------------------

async def test_multiple_output_ports(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    flow = [
        node("in", "inject", [["split"]], payload=3, once=True),
        node("in2", "inject", [["split"]], payload=4, once=True),
        node("split", "split", [["even"], ["odd"]]),
        node("even", "test-sink"),
        node("odd", "test-sink"),
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        assert (await kit.expect("odd")).payload == 3
        assert (await kit.expect("even")).payload == 4


async def test_error_goes_to_the_error_port_and_the_flow_goes_on(tmp_path: Path) -> None:
    flow = [
        node("bad", "inject", [["f"]], payload="bad", once=True),
        node("f", "fail-port", [["ok"], ["failed"]]),
        node("ok", "test-sink"),
        node("failed", "test-sink"),
        node("good", "inject", [["f"]], payload="good", once=True),
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        failed = await kit.expect("failed")
        assert (await kit.expect("ok")).payload == "good"
    assert failed.payload == "bad" and failed.error is not None
    assert (failed.error.message, failed.error.source_id, failed.error.source_type, failed.error.kind) == (
        "bad payload", "f", "fail-port", "ValueError")


async def test_uncaught_error_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = [node("bad", "inject", [["f"]], payload="bad", once=True), node("f", "fail", [["ok"]]),
            node("good", "inject", [["gate-free"]], payload=1, once=True), node("gate-free", "test-sink"),
            node("ok", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await kit.expect("gate-free")
    assert kit.engine.errors_logged == 1
    assert "[f] bad payload" in caplog.text


async def test_error_loop_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # catch -> fail -> (error) -> catch ...: each round adds one to the message's error count.
    flow = [
        node("bad", "inject", [["f"]], payload="bad", once=True),
        node("f", "fail"),
        node("c", "catch", [["f", "seen"]]),
        node("seen", "test-sink"),
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        counts = [(await kit.expect("seen")).error.count for _ in range(10)]  # type: ignore[union-attr]
    assert counts == list(range(1, 11))
    assert "error loop: dropped a message after 10 errors" in caplog.text


async def test_bounded_channel_holds_the_sender_back(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    flow = [burst(["gate"], 50), node("gate", "gate", [["out"]]), node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path, queue_size=2) as kit:
        await trio.testing.wait_all_tasks_blocked()
        stats = kit.engine.inbox_stats("gate")
        # One message held by the gate, two queued, the source waiting to hand over the fourth.
        assert (stats.queued, stats.waiting_senders) == (2, 1)
        GATES["gate"].set()
        payloads = [await kit.expect("out") for _ in range(50)]
    assert [m.payload for m in payloads] == list(range(50))


async def test_stop_drains_messages_in_flight(tmp_path: Path) -> None:
    flow = [burst(["gate"], 5), node("gate", "gate", [["out"]]), node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path, queue_size=10) as kit:
        await trio.testing.wait_all_tasks_blocked()
        kit.engine.request_stop()
        GATES["gate"].set()  # stop asked while 5 messages wait at the gate: they still arrive
        with trio.fail_after(10):
            await kit.engine.stopped.wait()
    assert [(await kit.expect("out")).payload for _ in range(5)] == list(range(5))


async def test_drain_has_a_deadline(tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    flow = [burst(["gate"], 3), node("gate", "gate", [["out"]]), node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path, drain_timeout=2.0) as kit:
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        kit.engine.request_stop()  # the gate never opens
        await kit.engine.stopped.wait()
    assert trio.current_time() - started >= 2.0
    assert "3 message(s) still in flight after 2 s, dropped" in caplog.text


async def test_sources_start_only_when_every_node_is_ready(tmp_path: Path) -> None:
    flow = [node("in", "inject", [["slow"]], payload=1, once=True), node("slow", "slow-start", [["out"]]),
            node("out", "test-sink")]
    engine_ready = trio.Event()

    async def open_later() -> None:
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert not engine_ready.is_set()  # run() has not reported ready: start() is still waiting
        GATES["ready"].set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_later)
        async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
            engine_ready.set()
            assert (await kit.expect("out")).payload == 1


class FlakySource(Node[NoConfig]):
    """A source that fails at once, every time it is started."""

    type = "flaky"
    Config = NoConfig
    is_source = True
    has_input = False
    starts = 0

    async def run(self) -> None:
        FlakySource.starts += 1
        raise RuntimeError(f"broken source, start {FlakySource.starts}")


async def test_failing_source_is_restarted_then_fails_the_flow_loudly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    import json

    from evflow.runtime.engine import FlowEngine, FlowFailed
    from evflow.runtime.flows import load_plan
    from evflow.runtime.registry import Registry

    FlakySource.starts = 0
    (tmp_path / "flow.json").write_text(json.dumps([node("src", "flaky", [])]))
    registry = Registry.from_entry_points().with_types(FlakySource)
    plan = load_plan([tmp_path / "flow.json"], registry=registry, env={})
    engine = FlowEngine(plan, max_restarts=3, restart_window=10)
    with pytest.raises(BaseExceptionGroup) as failed:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
    (error,) = _leaves(failed.value)
    assert isinstance(error, FlowFailed)
    assert str(error) == "flaky 'src' failed 4 times within 10 s; last: RuntimeError: broken source, start 4"
    assert FlakySource.starts == 4


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:  # type: ignore[type-arg]
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def test_drop_policies_count_what_they_drop(tmp_path: Path) -> None:
    flow = [burst(["newest", "oldest"], 10),
            node("newest", "gate", [["out-n"]], queue_size=2, overflow="drop-newest"),
            node("oldest", "gate", [["out-o"]], queue_size=2, overflow="drop-oldest"),
            node("out-n", "test-sink"), node("out-o", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await trio.testing.wait_all_tasks_blocked()
        GATES["gate"].set()
        newest = [(await kit.expect("out-n")).payload for _ in range(3)]
        oldest = [(await kit.expect("out-o")).payload for _ in range(3)]
    # Each gate holds the first message; its queue keeps 2: the first two or the last two after it.
    assert newest == [0, 1, 2] and kit.stats()["newest"]["input_dropped"] == 7
    assert oldest == [0, 8, 9] and kit.stats()["oldest"]["input_dropped"] == 7


# ---- inline nodes --------------------------------------------------------------------------------

async def test_an_idle_inline_node_runs_in_the_senders_task(tmp_path: Path) -> None:
    flow = [burst(["pass"], 20), node("pass", "inline-pass", [["out"]]), node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        payloads = [(await kit.expect("out")).payload for _ in range(20)]
        queued = kit.engine.inbox_stats("pass").queued
    assert payloads == list(range(20))
    # Nothing was ever queued for it: every message ran in the source's task, none in its worker.
    assert len(set(InlinePass.tasks)) == 1 and InlinePass.tasks[0] in SOURCE_TASKS
    assert queued == 0


async def test_a_busy_inline_node_queues_in_order_one_message_at_a_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Two sources feed one inline node that waits on a full queue behind it (a closed gate): the
    # second source finds it busy and queues; nothing overlaps, nothing is reordered or lost.
    flow = [node("a", "burst", [["pass"]], count=30), node("b", "burst", [["pass"]], count=30, start=100),
            node("pass", "inline-pass", [["gate"]]), node("gate", "gate", [["out"]], queue_size=1),
            node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path, queue_size=4) as kit:
        await trio.testing.wait_all_tasks_blocked()
        assert kit.engine.inbox_stats("pass").queued > 0  # held back: some wait in its queue
        GATES["gate"].set()
        payloads = [(await kit.expect("out")).payload for _ in range(60)]
    assert InlinePass.most_active == 1
    assert [p for p in payloads if p < 100] == list(range(30))
    assert [p for p in payloads if p >= 100] == list(range(100, 130))
    # Run inline by the sources, and by its own worker for what was queued.
    assert any(task in SOURCE_TASKS for task in InlinePass.tasks)
    assert any(task not in SOURCE_TASKS for task in InlinePass.tasks)


async def test_an_inline_nodes_failure_is_routed_as_its_own(tmp_path: Path) -> None:
    flow = [node("bad", "inject", [["f"]], payload="bad", once=True),
            node("f", "inline-fail-port", [["ok"], ["failed"]]),
            node("ok", "test-sink"), node("failed", "test-sink"),
            node("good", "inject", [["f"]], payload="good", once=True)]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        failed = await kit.expect("failed")
        assert (await kit.expect("ok")).payload == "good"
    assert failed.error is not None and (failed.error.source_id, failed.error.kind) == ("f", "ValueError")
    assert kit.engine.in_flight == 0


async def test_an_inline_node_with_a_drop_policy_keeps_its_queue(tmp_path: Path) -> None:
    # Run inline, it would hold the source back; with a drop policy it drops instead, as queued nodes do.
    flow = [burst(["pass"], 10), node("pass", "inline-pass", [["gate"]], queue_size=2, overflow="drop-newest"),
            node("gate", "gate", [["out"]], queue_size=1), node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await trio.testing.wait_all_tasks_blocked()
        GATES["gate"].set()
        dropped = kit.engine.inbox_stats("pass").dropped
        payloads = [(await kit.expect("out")).payload for _ in range(10 - dropped)]
        await trio.testing.wait_all_tasks_blocked()
        assert kit.nothing_sent("out")
    assert dropped > 0 and payloads == sorted(payloads)
    assert not kit.engine.runs_inline("pass")


# ---- send_nowait (a source fed by a callback that cannot wait) --------------------------------------

async def test_send_nowait_delivers_to_every_wired_node_or_to_none(tmp_path: Path) -> None:
    # "tight" holds 2 queued (its worker holds a third), "roomy" 4: the fourth message fits roomy
    # only, so it goes to neither, and then through send, without a duplicate in roomy.
    flow = [node("in", "nowait-burst", [["roomy", "tight"]], count=10),
            node("roomy", "gate", [["out-r"]], queue_size=4), node("tight", "gate", [["out-t"]], queue_size=2),
            node("out-r", "test-sink"), node("out-t", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await trio.testing.wait_all_tasks_blocked()
        assert NowaitBurst.can == [True] and NowaitBurst.accepted == [True, True, True, False]
        # 1, 2, then 3 through send (0 is in its worker); tight's refusal kept 3 out of it before.
        assert kit.engine.inbox_stats("roomy").queued == 3
        GATES["gate"].set()
        got_roomy = [(await kit.expect("out-r")).payload for _ in range(10)]
        got_tight = [(await kit.expect("out-t")).payload for _ in range(10)]
        await trio.testing.wait_all_tasks_blocked()
        assert kit.nothing_sent("out-r")
    assert got_roomy == got_tight == list(range(10))
    assert kit.engine.in_flight == 0


async def test_send_nowait_never_runs_an_inline_node_and_drops_by_policy(tmp_path: Path) -> None:
    flow = [node("in", "nowait-burst", [["pass"]], count=3), node("pass", "inline-pass", [["out"]]),
            node("out", "test-sink"),
            node("in2", "nowait-burst", [["dropper"]], count=10),
            node("dropper", "gate", [["out2"]], queue_size=2, overflow="drop-newest"), node("out2", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        assert [(await kit.expect("out")).payload for _ in range(3)] == [0, 1, 2]
        await trio.testing.wait_all_tasks_blocked()
        GATES["gate"].set()
        assert [(await kit.expect("out2")).payload for _ in range(3)] == [0, 1, 2]
    # The inline node ran in the source's task through send (the first offer was refused); the node
    # with a drop policy took every offer and dropped what did not fit, counted.
    assert sorted(NowaitBurst.can) == [False, True]
    assert NowaitBurst.accepted.count(False) == 1 and NowaitBurst.accepted.count(True) == 10
    assert InlinePass.tasks[0] in SOURCE_TASKS and kit.stats()["dropper"]["input_dropped"] == 7


async def test_send_nowait_needs_room_for_each_wire_to_a_node_wired_twice(tmp_path: Path) -> None:
    # Wired twice, "g" gets every message twice. Its queue of 2 takes both copies of 0 (one goes
    # straight to its waiting worker), then has room for one copy of 1: not enough, so 1 goes
    # through send and nothing is delivered three times or counted in flight for ever.
    flow = [node("in", "nowait-burst", [["g", "g"]], count=3), node("g", "gate", [["out"]], queue_size=2),
            node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await trio.testing.wait_all_tasks_blocked()
        assert NowaitBurst.accepted == [True, False]
        GATES["gate"].set()
        payloads = [(await kit.expect("out")).payload for _ in range(6)]
        await trio.testing.wait_all_tasks_blocked()
        assert kit.nothing_sent("out")
    assert payloads == [0, 0, 1, 1, 2, 2] and kit.engine.in_flight == 0


class Hung(Node[NoConfig]):
    """A consumer that never finishes a message (a write to a disk that hangs)."""

    type = "hung"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        await trio.sleep_forever()


CLOSED: list[str] = []


class SlowToClose(Node[NoConfig]):
    """Needs a moment to close (a final message and its acknowledgement)."""

    type = "slow-to-close"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        pass

    async def close(self) -> None:
        await trio.sleep(0.5)
        CLOSED.append(self.context.node_id)


async def test_a_hung_consumer_costs_the_stop_its_drain_time_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A source stuck handing a message to a hung node stops at the drain's deadline; the drain
    # then waited its whole timeout again, leaving the nodes no time to close.
    CLOSED.clear()
    flow = [burst(["hung"], 5), node("hung", "hung", queue_size=1), node("closer", "slow-to-close")]
    async with run_flow(flow, node_types=(*TYPES, Hung, SlowToClose), workdir=tmp_path,
                        stop_timeout=5, drain_timeout=2, close_timeout=2) as kit:
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        kit.engine.request_stop()
        await kit.engine.stopped.wait()
    assert CLOSED == ["closer"]  # it had its time to close
    assert trio.current_time() - started < 5
    assert kit.engine.abandoned == 1  # the message the source was still handing on, counted
    assert "did not close" not in caplog.text
