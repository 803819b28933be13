"""TLS and mutual TLS to a real mosquitto, with certificates made in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio

from evflow.runtime.broker import BrokerConfig, make_tls_context
from evflow.runtime.errors import ConnectError
from evflow.runtime.mosquitto import MosquittoBroker, TlsListener
from evflow.runtime.simulator.pki import make_ca, make_tls_client_cert, make_tls_server_cert, write_key, write_pem
from evflow.runtime.transport import MqttClient

from .conftest import start_broker

KEY_PASSWORD = "client-key-passphrase"


@attrs.frozen
class TlsFiles:
    ca: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, TlsFiles]]:
    ca = make_ca("evflow test CA")
    # No IP address in the server certificate: connecting to 127.0.0.1 must fail the host name check.
    server = make_tls_server_cert(ca, ["localhost"])
    client = make_tls_client_cert(ca, "gateway-1")
    rogue = make_tls_client_cert(make_ca("someone else's CA"), "gateway-1")
    files = TlsFiles(
        ca=write_pem(tmp_path / "ca.pem", ca.certificate),
        client_cert=write_pem(tmp_path / "client.pem", client.certificate),
        client_key=write_key(tmp_path / "client.key", client.key, password=KEY_PASSWORD),
        rogue_cert=write_pem(tmp_path / "rogue.pem", rogue.certificate),
        rogue_key=write_key(tmp_path / "rogue.key", rogue.key),
    )
    listener = TlsListener(
        ca_file=files.ca,
        cert_file=write_pem(tmp_path / "server.pem", server.certificate),
        key_file=write_key(tmp_path / "server.key", server.key),
        require_certificate=True,
    )
    broker = start_broker(tmp_path / "mosquitto", tls=listener)
    try:
        yield broker, files
    finally:
        broker.stop()


async def test_mutual_tls_with_the_right_certificates(tls: tuple[MosquittoBroker, TlsFiles]) -> None:
    broker, files = tls
    context = make_tls_context(
        ca_file=str(files.ca), cert_file=str(files.client_cert), key_file=str(files.client_key),
        key_password=KEY_PASSWORD,
    )
    client = MqttClient(BrokerConfig.from_url(broker.tls_url, tls_context=context))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        sub = await client.subscribe("tls/burst", max_buffer=1000)
        # A burst: records decrypted into the SSL buffer must be drained, or they would wait there.
        for i in range(500):
            client.publish_nowait("tls/burst", str(i).encode())
        with trio.fail_after(10):
            received = [int((await sub.receive()).payload) for _ in range(500)]
        assert received == list(range(500))
        await client.aclose()


async def test_client_certificate_from_another_ca_is_refused(tls: tuple[MosquittoBroker, TlsFiles]) -> None:
    broker, files = tls
    context = make_tls_context(ca_file=str(files.ca), cert_file=str(files.rogue_cert), key_file=str(files.rogue_key))
    client = MqttClient(BrokerConfig.from_url(broker.tls_url, tls_context=context, connect_timeout=5))
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectError, match=r"mqtts://localhost:\d+"):
            await nursery.start(client.run)


async def test_no_client_certificate_is_refused(tls: tuple[MosquittoBroker, TlsFiles]) -> None:
    broker, files = tls
    client = MqttClient(BrokerConfig.from_url(
        broker.tls_url, tls_context=make_tls_context(ca_file=str(files.ca)), connect_timeout=5
    ))
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectError):
            await nursery.start(client.run)


async def test_wrong_host_name_is_refused(tls: tuple[MosquittoBroker, TlsFiles]) -> None:
    broker, files = tls
    context = make_tls_context(
        ca_file=str(files.ca), cert_file=str(files.client_cert), key_file=str(files.client_key),
        key_password=KEY_PASSWORD,
    )
    client = MqttClient(BrokerConfig.from_url(f"mqtts://127.0.0.1:{broker.tls_port}", tls_context=context))
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectError, match="TLS verification of mqtts://127.0.0.1:.* failed: IP address mismatch"):
            await nursery.start(client.run)


async def test_untrusted_server_is_refused(tls: tuple[MosquittoBroker, TlsFiles]) -> None:
    broker, _files = tls
    client = MqttClient(BrokerConfig.from_url(broker.tls_url))  # system CAs: our test CA is not among them
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectError, match="TLS verification of .* failed: (self-signed certificate|unable to get local issuer)"):
            await nursery.start(client.run)
