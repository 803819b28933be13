"""`evflow simulate` as a process: --init-pki, serving a store, clean stop, clear argument errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from evflow.runtime.apis.evse_security_client import EvseSecurityClient
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.transport import MqttClient

CLI = [sys.executable, "-m", "evflow.runtime.cli"]


def test_init_pki_then_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    first = subprocess.run([*CLI, "simulate", "--init-pki", str(tmp_path / "pki")], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "pki" / "ca" / "v2g" / "V2G_ROOT_CA.pem").is_file()
    again = subprocess.run([*CLI, "simulate", "--init-pki", str(tmp_path / "pki")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "is not empty" in again.stderr and "Traceback" not in again.stderr


def test_missing_arguments_are_named(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "simulate", "--broker", "mqtt://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--module-id, --certs required (or --init-pki DIR)" in result.stderr and "Traceback" not in result.stderr


async def test_serves_a_store_and_stops_on_sigterm(tmp_path: Path, broker: MosquittoBroker, mqtt: MqttClient) -> None:
    pki = tmp_path / "pki"
    with trio.fail_after(60):
        await trio.run_process([*CLI, "simulate", "--init-pki", str(pki)], capture_stdout=True, capture_stderr=True)
    process = await trio.lowlevel.open_process(
        [*CLI, "simulate", "--broker", broker.url, "--module-id", "sim", "--certs", str(pki),
         "--heartbeat-interval-ms", "10", "--heartbeat-start", str(2**64 - 2)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        async with trio.open_nursery() as nursery:
            client = EvseSecurityClient(mqtt, "sim")
            await nursery.start(client.run)
            beats = await client.heartbeats()
            with trio.fail_after(20):
                received = [await beats.receive() for _ in range(5)]  # the simulator is up once it beats
                assert all((b - a) % 2**64 == 1 for a, b in zip(received, received[1:]))
                result = await client.get_leaf_certificate_info("V2G", include_ocsp=True)
            assert result.status == "Accepted" and result.info is not None
            assert result.info.key == str((pki / "client" / "cso" / "SECC_LEAF.key").resolve())
            assert result.info.password == (pki / "private_key_password").read_text().strip()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
