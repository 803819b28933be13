"""The README's promises where two paths meet, each broken on an earlier main (issue 16), in running
flows against a real mosquitto. The transport-level ones are in test_transport.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evflow.runtime.broker import BrokerConfig
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.nodeapi import ConfigNode, Message, Node, ref
from evflow.runtime.testing import everest_simulator, run_flow
from evflow.runtime.transport import MqttClient, MqttMessage

MODULE = "sec"
HEARTBEAT = f"everest_api/1/evse_security_consumer/{MODULE}/e2m/heartbeat"


def broker_nodes(url: str, **broker: Any) -> list[dict[str, Any]]:
    return [{"id": "b", "type": "mqtt-broker", "broker": url, **broker},
            {"id": "api", "type": "everest-api", "broker": "b", "module_id": MODULE}]


@attrs.frozen
class NoConfig:
    pass


@pytest.fixture
async def observer(broker: MosquittoBroker) -> Any:
    client = MqttClient(BrokerConfig.from_url(broker.url))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        yield client
        await client.aclose()


# ---- 1. one slow consumer must not stop the connection's reader ----------------------------------


async def test_a_burst_through_mqtt_in_and_mqtt_out_at_qos1_arrives_whole(
    tmp_path: Path, broker: MosquittoBroker, observer: MqttClient
) -> None:
    # mqtt in (QoS 0, block) -> mqtt out (QoS 1) on one connection: mqtt in's full queue stopped the
    # reader, so mqtt out's PUBACKs waited behind it: 184 of 20,000 arrived, the rest were dropped.
    burst = 5000
    arrived = await observer.subscribe("burst/out", qos=1, max_buffer=burst + 1)
    flow = [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "in", "type": "mqtt in", "broker": "b", "topic": "burst/in", "datatype": "utf8", "wires": [["out"]]},
        {"id": "out", "type": "mqtt out", "broker": "b", "topic": "burst/out", "qos": 1},
    ]
    async with run_flow(flow, workdir=tmp_path) as running:
        for i in range(burst):
            await observer.publish("burst/in", str(i).encode())
        with trio.fail_after(30):
            got = [int((await arrived.receive()).payload) for _ in range(burst)]
        stats = running.stats()
    assert got == list(range(burst))
    assert stats["in"]["dropped"] == 0 and stats["b"]["dropped"] == 0


async def test_a_burst_of_requests_behind_mqtt_in_is_answered_in_time(tmp_path: Path) -> None:
    # mqtt in -> request node: the request node's replies came on the reader mqtt in's full queue
    # had stopped: a burst of 300 gave 160 RequestTimeouts and 320 late replies.
    async with everest_simulator(tmp_path / "everest", module_id=MODULE) as everest:
        flow = [
            *broker_nodes(everest.broker_url),
            {"id": "in", "type": "mqtt in", "broker": "b", "topic": "ask", "wires": [["ask"]]},
            {"id": "ask", "type": "is-ca-certificate-installed", "api": "api", "certificate_type": "V2G",
             "timeout": 3, "wires": [["ok"], ["failed"]]},
            {"id": "ok", "type": "test-sink"}, {"id": "failed", "type": "test-sink"},
        ]
        async with run_flow(flow, workdir=tmp_path) as running:
            publisher = MqttClient(BrokerConfig.from_url(everest.broker_url))
            async with trio.open_nursery() as nursery:
                await nursery.start(publisher.run)
                for i in range(300):
                    publisher.publish_nowait("ask", str(i).encode())
                with trio.fail_after(30):
                    answers = [await running.expect("ok") for _ in range(300)]
                await publisher.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert running.nothing_sent("failed")
            stats = running.stats()["api"]
    assert all(answer.payload is True for answer in answers)
    assert stats["requests_answered"] == 300 and stats["requests_late"] == 0


class Yields(Node[NoConfig]):
    """Yields once per message, as any node that awaits something does, and passes it on."""

    type = "yields"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        await trio.lowlevel.checkpoint()
        await self.send(msg)


async def test_mqtt_in_keeps_order_across_its_two_paths(
    tmp_path: Path, broker: MosquittoBroker, observer: MqttClient
) -> None:
    # The read loop hands a message on itself while mqtt in's task waits; Subscription.receive took a
    # message off the buffer and then yielded, and the read loop handed the next one on before it
    # (issue 16 review: reordered in half of the runs).
    flow = [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "in", "type": "mqtt in", "broker": "b", "topic": "seq", "datatype": "utf8", "queue_size": 1000,
         "wires": [["pass"]]},
        {"id": "pass", "type": "yields", "queue_size": 1},
    ]
    total = 10_000
    got: list[int] = []
    async with run_flow(flow, workdir=tmp_path, node_types=[Yields]) as running:

        async def collect() -> None:  # while it flows: a tap holds 10,000 messages
            for _ in range(total):
                got.append(int((await running.expect("pass", timeout=30)).payload))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            for i in range(total):  # a trickle: the buffer empties often, and the read loop hands on
                await observer.publish("seq", str(i).encode())
    assert got == list(range(total))


# ---- 5. a timer must not cut a send short; a stop must not cut an inline node short ---------------


class Slow(Node[NoConfig]):
    """Takes its time over each message, as a node that writes to a slow disk would."""

    type = "slow"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        await trio.sleep(0.005)  # the work, not synchronisation
        await self.send(msg)


async def test_heartbeats_reach_a_slow_node_whole_and_liveness_counts_arrivals(
    tmp_path: Path, broker: MosquittoBroker, observer: MqttClient
) -> None:
    # The liveness timer's cancel scope wrapped the sends: 33 of 200 beats on their way to a slow
    # node were lost (counted as abandoned while the flow ran), and "lost" was reported
    # though beats kept arriving, because liveness was measured as the flow took them.
    flow = [
        *broker_nodes(broker.url),
        {"id": "hb", "type": "heartbeat", "api": "api", "timeout": 0.3, "wires": [["slow"], ["events"]]},
        {"id": "slow", "type": "slow", "queue_size": 1},
        {"id": "events", "type": "test-sink"},
    ]
    async with run_flow(flow, workdir=tmp_path, node_types=[Slow]) as running:
        async with trio.open_nursery() as nursery:

            async def beat() -> None:
                for beat_id in range(1, 201):  # a burst: 200 x 5 ms of work is far beyond the timeout
                    observer.publish_nowait(HEARTBEAT, str(beat_id).encode())
                beat_id = 201
                while True:  # then EVerest's steady beat, well within the timeout
                    await observer.publish(HEARTBEAT, str(beat_id).encode())
                    beat_id += 1
                    await trio.sleep(0.1)

            nursery.start_soon(beat)
            with trio.fail_after(20):
                beats = [(await running.expect("slow")).payload for _ in range(200)]
            nursery.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        events = []
        while not running.nothing_sent("events"):
            events.append((await running.expect("events")).payload)
        abandoned_while_running = running.engine.abandoned
    assert beats == list(range(1, 201))
    assert events == []  # no "lost", no "gap": every beat arrived, and in time
    assert abandoned_while_running == 0


class Gated(Node[NoConfig]):
    """Holds every message until the test opens GATE["open"]."""

    type = "gated"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        await GATE["open"].wait()
        await self.send(msg)


async def test_beats_taken_late_from_before_a_loss_do_not_restore_liveness(
    tmp_path: Path, broker: MosquittoBroker, observer: MqttClient
) -> None:
    # A slow flow took beats that arrived before "lost" out of the backlog after it: each reported
    # "restored" (then "lost" again), though EVerest had been silent (issue 16 review).
    GATE["open"] = trio.Event()
    flow = [
        *broker_nodes(broker.url),
        {"id": "hb", "type": "heartbeat", "api": "api", "timeout": 0.3, "wires": [["slow"], ["events"]]},
        {"id": "slow", "type": "gated", "queue_size": 1},
        {"id": "events", "type": "test-sink"},
    ]
    async with run_flow(flow, workdir=tmp_path, node_types=[Gated]) as running:
        for beat in range(1, 6):  # five beats at once, then EVerest falls silent
            await observer.publish(HEARTBEAT, str(beat).encode(), qos=1)
        assert (await running.expect("events")).payload["event"] == "lost"
        GATE["open"].set()  # the flow catches up with the beats that came before the loss
        assert [(await running.expect("slow")).payload for _ in range(5)] == [1, 2, 3, 4, 5]
        await trio.testing.wait_all_tasks_blocked()
        assert running.nothing_sent("events")  # no "restored": nothing arrived after the loss
        await observer.publish(HEARTBEAT, b"6", qos=1)  # EVerest is back
        assert (await running.expect("events")).payload["event"] == "restored"


GATE: dict[str, trio.Event] = {}
DONE: list[int] = []


class OneShotSource(Node[NoConfig]):
    """Sends one message, then waits for the stop."""

    type = "one-shot"
    Config = NoConfig
    is_source = True
    has_input = False

    async def run(self) -> None:
        await self.send(Message(1))
        await trio.sleep_forever()


class WaitsInline(Node[NoConfig]):
    """Inline, and waits the way mqtt out waits for its window of PUBACKs."""

    type = "waits-inline"
    Config = NoConfig
    inline = True

    async def receive(self, msg: Message) -> None:
        await GATE["release"].wait()
        DONE.append(msg.payload)


async def test_a_stop_lets_an_inline_node_finish_the_message_it_runs_for_a_source(tmp_path: Path) -> None:
    # An inline node runs in its sender's task, and the stop cancelled the source's task: an
    # inline mqtt out waiting for PUBACKs was cut short outside the drain.
    GATE["release"] = trio.Event()
    DONE.clear()
    flow = [{"id": "src", "type": "one-shot", "wires": [["wait"]]}, {"id": "wait", "type": "waits-inline"}]
    async with run_flow(flow, workdir=tmp_path, node_types=[OneShotSource, WaitsInline]) as running:
        await trio.testing.wait_all_tasks_blocked()
        assert running.engine.runs_inline("wait") and running.engine.in_flight == 1
        running.engine.request_stop()
        await trio.testing.wait_all_tasks_blocked()  # the stop has begun: it waits for the message
        GATE["release"].set()
        with trio.fail_after(5):
            await running.engine.stopped.wait()
    assert DONE == [1] and running.engine.in_flight == 0 and running.engine.abandoned == 0


HANDLED: list[Any] = []


class GatedRecord(Gated):
    """As Gated, and records what it handled."""

    type = "gated-record"

    async def receive(self, msg: Message) -> None:
        await GATE["open"].wait()
        HANDLED.append(msg.payload)


async def test_every_message_a_source_took_is_accounted_for_at_stop(
    tmp_path: Path, broker: MosquittoBroker, observer: MqttClient
) -> None:
    # Stopped after its current send, mqtt in took the next message from its subscription and its
    # next send ended it before delivering: that message was neither delivered nor counted anywhere.
    GATE["open"] = trio.Event()
    HANDLED.clear()
    flow = [
        {"id": "b", "type": "mqtt-broker", "broker": broker.url},
        {"id": "in", "type": "mqtt in", "broker": "b", "topic": "t", "qos": 1, "datatype": "utf8",
         "wires": [["slow"]]},
        {"id": "slow", "type": "gated-record", "queue_size": 1},
        {"id": "marker", "type": "mqtt in", "broker": "b", "topic": "t/done", "wires": [["seen"]]},
        {"id": "seen", "type": "test-sink"},
    ]
    async with run_flow(flow, workdir=tmp_path, node_types=[GatedRecord], stop_timeout=10,
                        drain_timeout=3) as running:
        for i in range(10):
            await observer.publish("t", str(i).encode(), qos=1)
        await observer.publish("t/done", b"", qos=1)
        await running.expect("seen")  # the broker keeps a client's messages in order: all 10 are in
        await trio.testing.wait_all_tasks_blocked()  # mqtt in waits to hand one on
        running.engine.request_stop()
        await trio.testing.wait_all_tasks_blocked()
        GATE["open"].set()
        with trio.fail_after(10):
            await running.engine.stopped.wait()
    stats = running.stats()
    accounted = len(HANDLED) + stats["in"]["unprocessed_at_stop"] + stats["engine"].get("abandoned", 0)
    assert stats["in"]["received"] + stats["in"]["unprocessed_at_stop"] == 10
    assert accounted == 10, (HANDLED, stats)


# ---- 6. config nodes close in reverse dependency order, one at a time ----------------------------


EVENTS: list[str] = []


@attrs.frozen(kw_only=True)
class ResourceConfig:
    uses: str | None = ref("test-resource", default=None)


class Resource(ConfigNode[ResourceConfig]):
    """A config node that records its life; ``uses`` names the one it depends on."""

    type = "test-resource"
    Config = ResourceConfig

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        EVENTS.append(f"{self.context.node_id} up")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            EVENTS.append(f"{self.context.node_id} served")

    async def close(self) -> None:
        EVENTS.append(f"{self.context.node_id} closing")
        await trio.lowlevel.checkpoint()  # a close that waits for something (a DISCONNECT's ack)
        await trio.lowlevel.checkpoint()
        EVENTS.append(f"{self.context.node_id} closed")


async def test_config_nodes_close_one_at_a_time_after_those_that_use_them(tmp_path: Path) -> None:
    # They closed all at once: a broker connection could go while an API client on it still closed.
    EVENTS.clear()
    flow = [
        {"id": "client", "type": "test-resource", "uses": "connection"},
        {"id": "connection", "type": "test-resource"},
        {"id": "session", "type": "test-resource", "uses": "client"},
    ]
    async with run_flow(flow, workdir=tmp_path, node_types=[Resource]):
        assert EVENTS == ["connection up", "client up", "session up"]
        EVENTS.clear()
    assert EVENTS == [
        "session closing", "session closed", "session served",
        "client closing", "client closed", "client served",
        "connection closing", "connection closed", "connection served",
    ]


# ---- a message sent to several nodes shares no mutable state ---------------------------------------


class Count(Node[NoConfig]):
    """Changes the dict it received in place, as a careless node would, and passes it on."""

    type = "count"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        msg.payload["seen"] += 1
        await self.send(msg)


async def test_nodes_that_change_a_payload_they_received_change_only_their_own(tmp_path: Path) -> None:
    flow = [
        {"id": "in", "type": "inject", "payload": {"seen": 0, "list": [1]}, "once": True, "repeat": 0.01,
         "limit": 2, "wires": [["a", "b", "c"]]},
        {"id": "a", "type": "count"}, {"id": "b", "type": "count"}, {"id": "c", "type": "test-sink"},
    ]
    async with run_flow(flow, workdir=tmp_path, node_types=[Count]) as running:
        got = [(await running.expect(node)).payload for _ in range(2) for node in ("a", "b", "c")]
    # Each node's copy, each message's own payload (not the inject's config, nor the last one's).
    assert [p["seen"] for p in got] == [1, 1, 0, 1, 1, 0]
    assert all(p["list"] == [1] for p in got)


# ---- output that cannot block the flow -------------------------------------------------------------


async def test_a_stalled_stdout_does_not_stop_the_keepalive(tmp_path: Path, broker: MosquittoBroker,
                                                            observer: MqttClient) -> None:
    # debug wrote to stdout in the event loop: with a pipe nobody reads, the loop froze at the
    # first full write, and EVerest's communication check with it.
    import fcntl
    import os
    import subprocess
    import sys
    import termios

    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps([
        *broker_nodes(broker.url),
        {"id": "ka", "type": "keepalive", "api": "api", "interval": 0.1, "everest_timeout": 1},
        {"id": "flood", "type": "inject", "payload": "x" * 200, "once": True, "repeat": 0.001, "wires": [["dbg"]]},
        {"id": "dbg", "type": "debug"},
    ]))
    read_end, write_end = os.pipe()
    pipe_bytes: list[int] = []
    enough = trio.Event()

    def checked(_message: MqttMessage) -> None:
        unread = fcntl.ioctl(read_end, termios.FIONREAD, b"\0\0\0\0")
        pipe_bytes.append(int.from_bytes(unread, sys.byteorder))
        if sum(1 for size in pipe_bytes if size >= 60_000) >= 10:  # ten checks with the pipe full
            enough.set()

    await observer.subscribe_callback(f"everest_api/1/evse_security_consumer/{MODULE}/m2e/communication_check",
                                      checked)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "evflow.runtime.cli", "--log-format", "text", "run", str(flow)],
        stdout=write_end, stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with trio.fail_after(30):
            await enough.wait()
    finally:
        process.kill()
        await process.wait()
        os.close(read_end)
    assert max(pipe_bytes) >= 60_000


def test_a_copy_owns_its_containers_and_shares_everything_else() -> None:
    import threading

    from evflow.runtime.message import new_message

    lock = threading.Lock()  # a handle: cannot be copied, and must stay the one object
    original = new_message({"items": [1, {"x": 2}], "handle": lock, "pair": (1, [2])}, "t", reply_to=lock)
    copy = original.copy()
    assert copy == original and copy.msg_id == original.msg_id
    assert copy.payload["items"] is not original.payload["items"]
    assert copy.payload["items"][1] is not original.payload["items"][1]
    assert copy.payload["pair"][1] is not original.payload["pair"][1]
    assert copy.payload["handle"] is lock and copy.meta["reply_to"] is lock
    frozen = new_message(("text", 1, b"bytes"))
    assert frozen.copy() is frozen  # nothing in it can change: no copy made


def test_the_output_queue_is_bounded_in_bytes_as_well_as_lines(tmp_path: Path) -> None:
    # A stalled stdout held up to 10,000 lines whatever their size: with 50 kB payloads, 500 MB.
    import io
    import threading

    from evflow.runtime.output import LineWriter

    release = threading.Event()

    class Stalled(io.StringIO):
        def write(self, text: str) -> int:
            release.wait(10)  # a reader that does not keep up
            return super().write(text)

    stream = Stalled()
    writer = LineWriter(lambda: stream, name="test", max_bytes=200_000)
    line = "x" * 50_000 + "\n"
    for _ in range(100):
        writer.write(line)
    # At most one batch in the writer's hands and 200 kB waiting; the rest dropped, counted.
    assert writer.dropped >= 100 - 2 * (200_000 // len(line)) - 1
    release.set()
    assert writer.flush(10)
    lines = stream.getvalue().splitlines()
    reported = [int(text.split()[1]) for text in lines if text.startswith("evflow: ")]
    assert all(text.endswith("line(s) dropped: test was not taking them") for text in lines if text.startswith("e"))
    assert sum(reported) == writer.dropped > 0  # every drop told, once the stream took lines again
    assert sum(1 for text in lines if text.startswith("x")) == 100 - writer.dropped


async def test_a_broker_that_is_not_there_at_start_is_one_clear_line(tmp_path: Path) -> None:
    # The connection's failure came out of the broker node's own nursery as an exception group, so
    # the engine could not say which node did not start.
    import sys

    from evflow.runtime.mosquitto import free_port

    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps([
        {"id": "b", "type": "mqtt-broker", "broker": f"mqtt://127.0.0.1:{free_port()}", "connect_timeout": 2},
        {"id": "in", "type": "mqtt in", "broker": "b", "topic": "x"},
    ]))
    done = await trio.run_process([sys.executable, "-m", "evflow.runtime.cli", "--log-format", "text", "run", str(flow)],
                                  capture_stdout=True, capture_stderr=True, check=False)
    errors = [line for line in done.stderr.decode().splitlines() if "error" in line.lower()]
    assert done.returncode == 1
    assert errors == [f"evflow run: error: mqtt-broker 'b' did not start: cannot connect to "
                      f"{json.loads(flow.read_text())[0]['broker']}: Connection refused"], errors
    assert "Traceback" not in done.stderr.decode()
