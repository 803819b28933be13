"""The monitor against a running flow and the EVerest simulator: /metrics figures move as messages
flow, /ready turns false when EVerest's heartbeat stops or the broker goes away, and true again."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from evflow.runtime.broker import BrokerConfig
from evflow.runtime.monitor.app import Monitor
from evflow.runtime.monitor.http import serve_http
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.simulator.pki import PkiLayout, init_pki
from evflow.runtime.simulator.service import EvseSecuritySimulator, SimulatorOptions
from evflow.runtime.simulator.store import CertificateStore
from evflow.runtime.testing import FlowUnderTest, run_flow
from evflow.runtime.transport import MqttClient

MODULE = "evse_security_api"


def flow_of(broker: MosquittoBroker) -> list[dict[str, Any]]:
    def n(node_id: str, node_type: str, wires: list[list[str]] | None = None, **props: Any) -> dict[str, Any]:
        return {"id": node_id, "type": node_type, "z": "t", "wires": wires or [], **props}

    return [
        {"id": "t", "type": "tab", "label": "monitored"},
        {"id": "b", "type": "mqtt-broker", "broker": broker.url, "reconnect_max_delay": 0.2},
        {"id": "api", "type": "everest-api", "broker": "b", "module_id": MODULE, "request_timeout": 2},
        n("ask", "inject", [["is-ca"]], payload="CSMS", repeat="0.05", once=True),
        n("is-ca", "is-ca-certificate-installed", [["ok"], ["failed"]], api="api"),
        n("ok", "test-sink"), n("failed", "test-sink"),
        n("hb", "heartbeat", [[], []], api="api", timeout=0.4),
        n("ka", "keepalive", api="api", interval=0.2, everest_timeout=1, stop_check_on_shutdown=False),
    ]


class Simulator:
    """EVerest's side, which a test can stop (its heartbeat and answers end) and start again."""

    def __init__(self, broker: MosquittoBroker, pki: PkiLayout, nursery: trio.Nursery) -> None:
        self.broker, self.pki, self.nursery = broker, pki, nursery
        self.scope: trio.CancelScope | None = None

    async def start(self) -> None:
        self.scope = await self.nursery.start(self._serve)

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()

    async def _serve(self, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            mqtt = MqttClient(BrokerConfig.from_url(self.broker.url, reconnect_max=0.2))
            async with trio.open_nursery() as nursery:
                await nursery.start(mqtt.run)
                simulator = EvseSecuritySimulator(
                    mqtt, CertificateStore(self.pki.root, key_password=self.pki.key_password),
                    SimulatorOptions(module_id=MODULE, heartbeat_interval_ms=50, comm_check_timeout_s=0),
                )
                await nursery.start(simulator.run)
                task_status.started(scope)


@asynccontextmanager
async def monitored(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[tuple[FlowUnderTest, Simulator, str]]:
    async with trio.open_nursery() as nursery:
        simulator = Simulator(broker, init_pki(tmp_path / "certs"), nursery)
        await simulator.start()
        async with run_flow(flow_of(broker), workdir=tmp_path) as flow:
            monitor = Monitor(lambda: flow.engine)
            host, port = await nursery.start(serve_http, monitor.handle, "127.0.0.1", 0)
            yield flow, simulator, f"http://{host}:{port}"
        nursery.cancel_scope.cancel()


async def get(url: str) -> tuple[int, bytes]:
    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    return await trio.to_thread.run_sync(fetch)


async def ready(base: str) -> tuple[bool, dict[str, Any]]:
    status, body = await get(base + "/ready")
    report = json.loads(body)
    assert (status == 200) == report["ready"], (status, report)
    return report["ready"], report


async def until(check: Callable[[], Any], timeout: float = 10) -> Any:
    """Ask ``check`` (a coroutine function) again until it returns something true, within ``timeout``:
    an HTTP endpoint has no event to wait on, so it is polled, a few times a second."""
    with trio.fail_after(timeout):
        while True:
            result = await check()
            if result:
                return result
            await trio.sleep(0.05)


async def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await get(base + "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items())]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


async def test_metrics_move_as_messages_flow(tmp_path: Path, broker: MosquittoBroker) -> None:
    async with monitored(tmp_path, broker) as (_flow, _simulator, base):
        await until(lambda: _is_ready(base))
        first = await metrics(base)

        async def moved() -> Any:
            later = await metrics(base)
            return later if value(later, "evflow_node_received_total", node="ok") > value(
                first, "evflow_node_received_total", node="ok") + 5 else None

        later = await until(moved)
    assert value(later, "evflow_up") == 1 and value(later, "evflow_ready") == 1
    for name, node in (("evflow_node_sent_total", "ask"), ("evflow_node_received_total", "is-ca"),
                       ("evflow_node_sent_total", "is-ca")):
        assert value(later, name, node=node) > value(first, name, node=node)
    answered = value(later, "evflow_request_duration_seconds_count", node="api",
                     operation="is_ca_certificate_installed")
    assert answered > value(first, "evflow_request_duration_seconds_count", node="api",
                            operation="is_ca_certificate_installed")
    assert value(later, "evflow_request_duration_seconds_bucket", node="api",
                 operation="is_ca_certificate_installed", le="+Inf") == answered
    assert value(later, "evflow_request_timeouts_total", node="api", operation="is_ca_certificate_installed") == 0
    # EVerest answers a boolean request twice: the second copies are counted as duplicates.
    assert value(later, "evflow_request_duplicates_total", node="api") > 0
    assert value(later, "evflow_node_counter_total", node="hb", counter="beats") > value(
        first, "evflow_node_counter_total", node="hb", counter="beats")
    assert value(later, "evflow_broker_connected", node="b") == 1
    assert value(later, "evflow_node_errors_total", node="is-ca") == 0
    assert value(later, "process_resident_memory_bytes") > 10_000_000


async def _is_ready(base: str) -> bool:
    return (await ready(base))[0]


async def test_ready_follows_the_heartbeat_and_the_broker(tmp_path: Path, broker: MosquittoBroker) -> None:
    async with monitored(tmp_path, broker) as (_flow, simulator, base):
        await until(lambda: _is_ready(base))

        simulator.stop()  # EVerest's heartbeat stops
        report = await until(lambda: _not_ready(base))
        reasons = {item["node"]: item for item in report["not_ready"]}
        assert set(reasons) == {"hb"}, report
        assert "no heartbeat" in reasons["hb"]["reason"] and reasons["hb"]["since"].endswith("Z")
        samples = await metrics(base)
        assert value(samples, "evflow_ready") == 0 and value(samples, "evflow_node_ready", node="hb") == 0

        await simulator.start()
        await until(lambda: _is_ready(base))

        await trio.to_thread.run_sync(broker.stop)  # the broker goes away
        report = await until(lambda: _not_ready(base, "b"))
        assert "lost" in {item["node"]: item for item in report["not_ready"]}["b"]["reason"]
        await trio.to_thread.run_sync(broker.start)
        await until(lambda: _is_ready(base), timeout=20)
        samples = await metrics(base)
        assert value(samples, "evflow_broker_connection_losses_total", node="b") >= 1


async def _not_ready(base: str, node: str | None = None) -> dict[str, Any] | None:
    is_ready, report = await ready(base)
    if is_ready or (node is not None and node not in {item["node"] for item in report["not_ready"]}):
        return None
    return report


async def test_healthz_unknown_paths_and_writes(tmp_path: Path, broker: MosquittoBroker) -> None:
    async with monitored(tmp_path, broker) as (_flow, _simulator, base):
        assert await get(base + "/healthz") == (200, b"ok\n")
        status, body = await get(base + "/nowhere")
        assert status == 404 and "no such page" in json.loads(body)["error"]
        status, body = await get(base + "/api/trace?node=nobody")
        assert status == 404 and "nobody" in json.loads(body)["error"]

        def post() -> int:
            request = urllib.request.Request(base + "/ready", data=b"x", method="POST")
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as error:
                return error.code
            return 200

        assert await trio.to_thread.run_sync(post) == 405


@pytest.mark.parametrize("request_bytes", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n"])
async def test_a_bad_request_gets_an_error_and_the_listener_goes_on(
        tmp_path: Path, broker: MosquittoBroker, request_bytes: bytes) -> None:
    async with monitored(tmp_path, broker) as (_flow, _simulator, base):
        host, port = base.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request_bytes)
            answer = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(4096):
                    answer += chunk
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:80]
        assert await get(base + "/healthz") == (200, b"ok\n")
