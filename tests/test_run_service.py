"""`evflow run` as a service: systemd's notifications and watchdog through a fake NOTIFY_SOCKET,
JSON log lines, and SIGHUP reloads (a broken file keeps the running flow, a good one replaces it)."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import trio

from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.transport import MqttClient

from .processes import evflow


def drain(subscription: Any) -> None:
    while True:
        try:
            subscription.receive_nowait()
        except trio.WouldBlock:
            return


def write_flow(path: Path, nodes: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps([{"id": "t", "type": "tab", "label": "service"}, *nodes], indent=1))
    return path


class Datagrams:
    """systemd's side of NOTIFY_SOCKET: a task reads each datagram as it comes and notes when."""

    def __init__(self, path: Path) -> None:
        self.socket = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.path = path
        self.received: list[tuple[float, str]] = []
        self._arrived = trio.Event()

    async def read(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.socket.bind(str(self.path))
        task_status.started()
        with self.socket:
            while True:
                data = await self.socket.recv(4096)
                self.received.append((trio.current_time(), data.decode()))
                self._arrived.set()
                self._arrived = trio.Event()

    async def until(self, text: str, after: int = 0, timeout: float = 20) -> int:
        """Wait for a datagram whose first line is ``text``, at index ``after`` or later; its index."""
        with trio.fail_after(timeout):
            while True:
                for index in range(after, len(self.received)):
                    if self.received[index][1].split("\n")[0] == text:
                        return index
                after = len(self.received)
                await self._arrived.wait()


async def test_ready_watchdog_stops_while_the_loop_is_blocked_and_stopping(tmp_path: Path) -> None:
    # A function node's endless loop holds the event loop for 2 s (its time limit): the watchdog's
    # pings, every 0.1 s otherwise, must stop meanwhile, so that systemd would restart a wedged evflow.
    flow = write_flow(tmp_path / "flow.json", [
        {"id": "start", "type": "inject", "z": "t", "once": True, "onceDelay": "1", "payload": "loop",
         "payloadType": "str", "wires": [["wedge"]]},
        {"id": "wedge", "type": "function", "z": "t", "func": "while (true) {}", "timeout": "2", "outputs": 1,
         "wires": [[]]},
    ])
    notify = Datagrams(tmp_path / "notify.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(notify.read)
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}
        async with evflow(["run", str(flow)], env) as run:
            ready = await notify.until("READY=1")
            assert notify.received[ready][1] == "READY=1\nSTATUS=flows running: 2 nodes"
            await run.wait_for("Script execution timed out after 2000ms")
            after_block = await notify.until("WATCHDOG=1", after=len(notify.received))
            await notify.until("WATCHDOG=1", after=after_block + 1)  # and they go on
            run.process.send_signal(signal.SIGTERM)
            await notify.until("STOPPING=1")
            assert await run.exited() == 0, run.text
        nursery.cancel_scope.cancel()
    pings = [at for at, text in notify.received if text == "WATCHDOG=1"]
    gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
    before_block = [at for at in pings if at < notify.received[after_block][0] - 1.5]
    assert pings[0] >= notify.received[ready][0] and len(before_block) >= 3, notify.received
    # The longest silence is the blocked loop's (2 s), far above the interval.
    assert max(gaps) >= 1.5, gaps
    assert sorted(gaps)[len(gaps) // 2] < 0.5, gaps


async def test_json_log_lines_carry_node_ids_and_message_ids(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow.json", [
        {"id": "start", "type": "inject", "z": "t", "once": True, "payload": "{broken", "payloadType": "str",
         "wires": [["parse"]]},
        {"id": "parse", "type": "json", "z": "t", "name": "parser", "wires": [[]]},
    ])
    async with evflow(["--log-format", "json", "run", str(flow)]) as run:
        await run.wait_for('"node_id": "parse"')
        run.process.send_signal(signal.SIGTERM)
        assert await run.exited() == 0, run.text
    lines = [json.loads(line) for line in run.text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines), lines
    (failure,) = [line for line in lines if line.get("node_id") == "parse"]
    assert failure["level"] == "error" and failure["node_type"] == "json"
    assert len(failure["msg_id"]) == 16 and "[parser]" in failure["message"]
    assert any(line["message"] == "flow running: 2 nodes" for line in lines)


async def test_a_node_log_level_of_its_own(tmp_path: Path) -> None:
    code = "node.debug('d'); node.log('i'); node.warn('w'); return msg;"
    flow = write_flow(tmp_path / "flow.json", [
        {"id": "start", "type": "inject", "z": "t", "once": True, "wires": [["chatty", "quiet"]]},
        {"id": "chatty", "type": "function", "z": "t", "func": code, "outputs": 1, "wires": [[]]},
        {"id": "quiet", "type": "function", "z": "t", "func": code, "outputs": 1, "wires": [[]]},
    ])
    async with evflow(["run", "--node-log-level", "quiet=loud", str(flow)]) as run:
        assert await run.exited() == 2  # refused before anything runs
    assert "expected NODE_ID=LEVEL" in run.text
    async with evflow(["--log-format", "json", "--log-level", "warning", "run", "--node-log-level", "chatty=debug",
                       "--node-log-level", "quiet=error", str(flow)]) as run:
        await run.wait_for('"node_id": "chatty"', count=3)
        run.process.send_signal(signal.SIGTERM)
        assert await run.exited() == 0, run.text
    lines = [json.loads(line) for line in run.text.splitlines() if line.strip()]
    assert [line["level"] for line in lines if line.get("node_id") == "chatty"] == ["debug", "info", "warning"]
    assert not any(line.get("node_id") == "quiet" for line in lines)  # its warning is below its level
    assert not any(line["level"] in ("debug", "info") and "node_id" not in line for line in lines)  # global: warning


async def test_sighup_reloads_only_a_valid_flow(tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient) -> None:
    def publishing(topic: str) -> list[dict[str, Any]]:
        return [
            {"id": "b", "type": "mqtt-broker", "broker": broker.url},
            {"id": "tick", "type": "inject", "z": "t", "repeat": "0.1", "once": True, "payload": topic,
             "payloadType": "str", "topic": topic, "wires": [["out"]]},
            {"id": "out", "type": "mqtt out", "z": "t", "broker": "b", "wires": []},
        ]

    flow = write_flow(tmp_path / "flow.json", publishing("reload/a"))
    seen = await mqtt.subscribe("reload/#", qos=0, max_buffer=10_000)
    async with evflow(["run", str(flow)]) as run:
        with trio.fail_after(10):
            assert (await seen.receive()).topic == "reload/a"

        flow.write_text('[{"id": "t", "type": "tab"}, {"id": "x", "type": "no-such-type"}]')
        run.process.send_signal(signal.SIGHUP)
        await run.wait_for("reload refused, the running flows go on")
        assert "no-such-type" in run.text
        with trio.fail_after(10):  # the old flow still runs: messages keep coming, after the refusal
            drain(seen)
            assert (await seen.receive()).topic == "reload/a"

        write_flow(flow, publishing("reload/b"))
        run.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while (await seen.receive()).topic != "reload/b":
                pass
        await run.wait_for("flow running", count=2)
        # Only the new flow runs now: after its first message, the old topic never comes again.
        with trio.fail_after(10):
            for _ in range(5):
                assert (await seen.receive()).topic == "reload/b"
        run.process.send_signal(signal.SIGTERM)
        assert await run.exited() == 0, run.text
    assert run.text.count("flow stopped") == 2
