"""The simulator over MQTT, with evflow's client on the other end and a real certificate store."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from evflow.runtime.apis.evse_security_client import EvseSecurityClient
from evflow.runtime.models.evse_security import U64_MAX, GetCertificateInfoStatus
from evflow.runtime.protocol.heartbeat import BeatKind, HeartbeatSequence
from evflow.runtime.simulator.pki import PkiLayout, init_pki
from evflow.runtime.simulator.service import EvseSecuritySimulator, SimulatorOptions
from evflow.runtime.simulator.store import CertificateStore
from evflow.runtime.transport import MqttClient

MODULE = "sec"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki") / "certs")


async def serve(nursery: trio.Nursery, mqtt: MqttClient, pki: PkiLayout, **options: object) -> EvseSecuritySimulator:
    store = CertificateStore(pki.root, key_password=pki.key_password)
    simulator = EvseSecuritySimulator(mqtt, store, SimulatorOptions(module_id=MODULE, **options))  # type: ignore[arg-type]
    await nursery.start(simulator.run)
    return simulator


@pytest.fixture
async def client(mqtt: MqttClient) -> AsyncIterator[EvseSecurityClient]:
    async with trio.open_nursery() as nursery:
        client = EvseSecurityClient(mqtt, MODULE, request_timeout=5)
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()


async def test_real_store_over_mqtt_with_everest_quirks(mqtt: MqttClient, client: EvseSecurityClient, pki: PkiLayout) -> None:
    async with trio.open_nursery() as nursery:
        await serve(nursery, mqtt, pki, heartbeat_interval_ms=0)
        with trio.fail_after(10):
            assert await client.is_ca_certificate_installed("V2G") is True
            assert await client.get_verify_location("V2G") == str(pki.ca_bundle("V2G"))
            v2g = await client.get_leaf_certificate_info("V2G", include_ocsp=True)
            mo = await client.get_leaf_certificate_info("MO")
        assert v2g.status is GetCertificateInfoStatus.Accepted and v2g.info is not None
        assert v2g.info.certificate_single == str(pki.secc.certificate_single)
        assert v2g.info.password == pki.key_password and v2g.info.certificate_root is None
        assert v2g.info.ocsp is not None and len(v2g.info.ocsp) == 3
        assert mo.status is GetCertificateInfoStatus.Rejected
        assert client.stats.duplicate == 1  # the boolean came twice, as from EVerest
        nursery.cancel_scope.cancel()


async def test_strict_form(mqtt: MqttClient, client: EvseSecurityClient, pki: PkiLayout) -> None:
    async with trio.open_nursery() as nursery:
        await serve(nursery, mqtt, pki, heartbeat_interval_ms=0, strict=True)
        with trio.fail_after(10):
            assert await client.get_verify_location("V2G") == str(pki.ca_bundle("V2G").parent)
            assert await client.is_ca_certificate_installed("CSMS") is True
            leaf = await client.get_leaf_certificate_info("CSMS", "PEM")
        assert leaf.info is not None and leaf.info.certificate_root is not None
        assert leaf.info.certificate_root.startswith("-----BEGIN CERTIFICATE-----")
        assert client.stats.duplicate == 0
        nursery.cancel_scope.cancel()


async def test_undecodable_request_gets_no_reply(mqtt: MqttClient, client: EvseSecurityClient, pki: PkiLayout) -> None:
    async with trio.open_nursery() as nursery:
        simulator = await serve(nursery, mqtt, pki, heartbeat_interval_ms=0)
        replies = await mqtt.subscribe("test/reply")
        await mqtt.publish(client.topics.m2e("get_verify_location"), b'{"headers": {"replyTo": "test/reply"}, "payload": 7}')
        with trio.fail_after(10):
            # Handled in order: once this is answered, the bad request before it was dealt with.
            await client.get_verify_location("V2G")
        assert simulator.undecodable == 1
        with pytest.raises(trio.WouldBlock):
            replies.receive_nowait()
        nursery.cancel_scope.cancel()


async def test_heartbeat_wraps_and_watchdog_reports(
    mqtt: MqttClient, client: EvseSecurityClient, pki: PkiLayout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "evflow.simulator")
    beats = await client.heartbeats()
    async with trio.open_nursery() as nursery:
        await serve(nursery, mqtt, pki, heartbeat_interval_ms=10, heartbeat_start=U64_MAX - 2, comm_check_timeout_s=0.2)
        sequence = HeartbeatSequence()
        with trio.fail_after(10):
            received = [await beats.receive() for _ in range(5)]
        assert received == [U64_MAX - 2, U64_MAX - 1, U64_MAX, 0, 1]
        assert {sequence.observe(b).kind for b in received} == {BeatKind.FIRST, BeatKind.NEXT}
        with trio.fail_after(10):
            await client.communication_check(True)
            while "communication check: failed" not in caplog.text:  # 0.2 s without a check
                await beats.receive()
            await client.communication_check(False)
            while "communication check: stopped" not in caplog.text:
                await beats.receive()
        states = [r.getMessage() for r in caplog.records if r.getMessage().startswith("communication check")]
        assert states == [
            "communication check: initial error (raised until the first check arrives)",
            "communication check: ok",
            "communication check: failed (none within 0.2 s)",
            "communication check: stopped",
        ]
        nursery.cancel_scope.cancel()


def run_demo(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evflow.runtime.cli", "demo", "--duration", "2.5"],
        capture_output=True, text=True, timeout=90, env=env,
    )


def test_demo_command_runs_end_to_end() -> None:
    result = run_demo()
    assert result.returncode == 0, result.stderr
    assert "mosquitto at mqtt://127.0.0.1:" in result.stdout
    assert "♥ heartbeat 2" in result.stdout
    assert "→ get_leaf_certificate_info(V2G, PEM, with OCSP)" in result.stdout
    assert "← get_leaf_certificate_info: Accepted, chain of 3, leaf expires in 364 days, OCSP data for 3" in result.stdout
    assert "again (EVerest sends booleans twice)" in result.stdout
    assert "→ communication_check false" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_falls_back_to_amqtt_without_mosquitto_on_path() -> None:
    import os
    import shutil

    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    if shutil.which("mosquitto", path=path) is not None:
        pytest.skip("mosquitto is in /usr/bin or /bin here: cannot take it off PATH")
    result = run_demo({**os.environ, "PATH": path})
    assert result.returncode == 0, result.stderr
    assert "amqtt at mqtt://127.0.0.1:" in result.stdout
    assert "← get_leaf_certificate_info: Accepted, chain of 3" in result.stdout
    assert "→ communication_check false" in result.stdout
    assert "Traceback" not in result.stderr
