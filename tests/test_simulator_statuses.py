"""Every GetCertificateInfoStatus from a real certificate store over MQTT, and the simulator's faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from evflow.runtime.apis.evse_security_client import EvseSecurityClient
from evflow.runtime.errors import InvalidReply, RequestTimeout
from evflow.runtime.models.evse_security import GetCertificateInfoStatus as Status
from evflow.runtime.simulator.pki import init_pki
from evflow.runtime.simulator.service import EvseSecuritySimulator, Faults, SimulatorOptions
from evflow.runtime.simulator.store import CertificateStore
from evflow.runtime.transport import MqttClient

MODULE = "sec"


@pytest.fixture
async def client(mqtt: MqttClient) -> AsyncIterator[EvseSecurityClient]:
    async with trio.open_nursery() as nursery:
        client = EvseSecurityClient(mqtt, MODULE, request_timeout=5)
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()


async def serve(nursery: trio.Nursery, mqtt: MqttClient, root: Path, key_password: str | None = None,
                **options: object) -> EvseSecuritySimulator:
    simulator = EvseSecuritySimulator(
        mqtt, CertificateStore(root, key_password=key_password),
        SimulatorOptions(module_id=MODULE, heartbeat_interval_ms=0, **options),  # type: ignore[arg-type]
    )
    await nursery.start(simulator.run)
    return simulator


@pytest.mark.parametrize(
    ("pki_options", "leaf_type", "status"),
    [
        ({}, "V2G", Status.Accepted),
        ({}, "CSMS", Status.Accepted),
        ({}, "MF", Status.Rejected),
        ({}, "MO", Status.Rejected),
        ({"expired_leaf": True}, "V2G", Status.NotFoundValid),
        ({"not_yet_valid_leaf": True}, "CSMS", Status.NotFoundValid),
        ({"drop_leaf_key": True}, "V2G", Status.PrivateKeyNotFound),
        (None, "V2G", Status.NotFound),  # an empty store
    ],
)
async def test_every_status_from_a_real_store(
    tmp_path: Path, mqtt: MqttClient, client: EvseSecurityClient, pki_options: dict[str, bool] | None,
    leaf_type: str, status: Status,
) -> None:
    root = tmp_path / "certs"
    password = None
    if pki_options is None:
        root.mkdir()
    else:
        password = init_pki(root, **pki_options).key_password
    async with trio.open_nursery() as nursery:
        await serve(nursery, mqtt, root, password)
        with trio.fail_after(10):
            result = await client.get_leaf_certificate_info(leaf_type, include_ocsp=True)
        assert result.status is status
        assert (result.info is not None) == (status is Status.Accepted)
        nursery.cancel_scope.cancel()


async def test_dropped_and_malformed_replies(tmp_path: Path, mqtt: MqttClient, client: EvseSecurityClient) -> None:
    layout = init_pki(tmp_path / "certs")
    async with trio.open_nursery() as nursery:
        simulator = await serve(nursery, mqtt, layout.root, layout.key_password, faults=Faults(drop_ratio=1.0))
        with pytest.raises(RequestTimeout):
            await client.is_ca_certificate_installed("V2G", timeout=0.3)
        assert simulator.dropped == 1
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        simulator = await serve(nursery, mqtt, layout.root, layout.key_password,
                                faults=Faults(malformed_ratio=1.0, seed=7))
        with trio.fail_after(10):
            for _ in range(4):
                with pytest.raises((InvalidReply, RequestTimeout)):
                    await client.get_leaf_certificate_info("V2G", timeout=1)
        assert simulator.malformed == 4 and client.stats.invalid >= 3
        nursery.cancel_scope.cancel()


async def test_delayed_replies_do_not_hold_back_later_requests(
    tmp_path: Path, mqtt: MqttClient, client: EvseSecurityClient
) -> None:
    layout = init_pki(tmp_path / "certs")
    async with trio.open_nursery() as nursery:
        await serve(nursery, mqtt, layout.root, layout.key_password, faults=Faults(reply_delay=0.5))
        started = trio.current_time()
        with trio.fail_after(10):
            async with trio.open_nursery() as requests:
                for _ in range(10):
                    requests.start_soon(client.is_ca_certificate_installed, "V2G")
        elapsed = trio.current_time() - started
        assert elapsed >= 0.5
        assert client.stats.answered == 10
        nursery.cancel_scope.cancel()


async def test_heartbeat_pause_keeps_the_sequence(tmp_path: Path, mqtt: MqttClient, client: EvseSecurityClient) -> None:
    layout = init_pki(tmp_path / "certs")
    beats = await client.heartbeats()
    async with trio.open_nursery() as nursery:
        simulator = EvseSecuritySimulator(
            mqtt, CertificateStore(layout.root, key_password=layout.key_password),
            SimulatorOptions(module_id=MODULE, heartbeat_interval_ms=20,
                             faults=Faults(heartbeat_pause_after=2, heartbeat_pause=0.5)),
        )
        await nursery.start(simulator.run)
        with trio.fail_after(10):
            assert [await beats.receive() for _ in range(2)] == [0, 1]
            before = trio.current_time()
            assert await beats.receive() == 2  # paused, then the counter goes on: no ids lost
            assert trio.current_time() - before >= 0.4
        nursery.cancel_scope.cancel()
