"""Fixtures: a real mosquitto per test (own port, own config dir), clients on it, an EVerest stand-in."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from evflow.runtime.broker import BrokerConfig
from evflow.runtime.mosquitto import MosquittoBroker, MosquittoError, find_mosquitto, free_port
from evflow.runtime.transport import MqttClient


def start_broker(workdir: Path, **options: object) -> MosquittoBroker:
    """A started mosquitto, or a test failure with mosquitto's own words (never a traceback)."""
    try:
        return MosquittoBroker(workdir, **options).start()  # type: ignore[arg-type]
    except MosquittoError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    running = start_broker(tmp_path / "mosquitto", unix_socket=tmp_path / "mosquitto.sock")
    try:
        yield running
    finally:
        running.stop()


@asynccontextmanager
async def connected_client(broker: MosquittoBroker) -> AsyncIterator[MqttClient]:
    """A connected evflow MQTT client on the test broker, closed on leaving (a test's own, or the
    EVerest side's apart from the client's)."""
    client = MqttClient(BrokerConfig.from_url(broker.url, connect_timeout=5))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            yield client
        finally:
            await client.aclose()


@pytest.fixture
async def mqtt(broker: MosquittoBroker) -> AsyncIterator[MqttClient]:
    """A connected evflow MQTT client on the test broker."""
    async with connected_client(broker) as client:
        yield client


@pytest.fixture
def nats_mqtt_url(tmp_path: Path) -> Iterator[str]:
    """NATS's MQTT listener: a second real broker, with stricter topic rules than mosquitto's."""
    program = find_mosquitto("nats-server")
    if program is None:
        pytest.skip("nats-server is not installed")
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        "server_name: evflow_test\n"
        f"listen: 127.0.0.1:{free_port()}\n"
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"mqtt {{ listen: 127.0.0.1:{port} }}\n"
    )
    process = subprocess.Popen([program, "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if b"Listening for MQTT clients" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(15) or process.poll() is not None:
            pytest.fail("nats-server did not start its MQTT listener within 15 s", pytrace=False)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
