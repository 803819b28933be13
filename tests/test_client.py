"""The EVerest API client against a real mosquitto and a plain-paho EVerest stand-in (SPEC.md, quirks)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from evflow.runtime.apis.evse_security_client import EvseSecurityClient
from evflow.runtime.broker import BrokerConfig
from evflow.runtime.errors import InvalidPayload, InvalidReply, InvalidRequest, NotConnected, RequestTimeout
from evflow.runtime.models.evse_security import (
    CaCertificateType,
    EncodingFormat,
    GetCertificateInfoStatus,
    LeafCertificateType,
)
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.transport import MqttClient

from .everest_standin import EverestStandIn

MODULE = "evse_security_api"
BASE = f"everest_api/1/evse_security_consumer/{MODULE}"


@pytest.fixture
async def everest(broker: MosquittoBroker) -> AsyncIterator[EverestStandIn]:
    async with EverestStandIn(broker.host, broker.port, MODULE) as standin:
        yield standin


async def start_client(nursery: trio.Nursery, mqtt: MqttClient, **options: object) -> EvseSecurityClient:
    client = EvseSecurityClient(mqtt, MODULE, **options)  # type: ignore[arg-type]
    await nursery.start(client.run)
    return client


async def test_three_operations_with_everest_quirks(mqtt: MqttClient, everest: EverestStandIn) -> None:
    async with trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt)
        with trio.fail_after(10):
            assert await client.is_ca_certificate_installed(CaCertificateType.CSMS) is True
            assert await client.is_ca_certificate_installed("MO") is False
            result = await client.get_leaf_certificate_info(LeafCertificateType.V2G, EncodingFormat.PEM, True)
            # EVerest's raw, unquoted path naming the bundle file; empty when nothing is installed.
            assert await client.get_verify_location(CaCertificateType.V2G) == "/etc/everest/certs/ca/v2g/V2G_ROOT_CA.pem"
            assert await client.get_verify_location(CaCertificateType.MF) is None
        assert result.status is GetCertificateInfoStatus.Accepted
        assert result.info is not None and result.info.certificate_count == 3
        assert result.info.password == "leaf-key-secret"
        assert "leaf-key-secret" not in repr(result)
        assert result.info.ocsp is not None and result.info.ocsp[0].hash.serial_number == "1f"
        # The second copy of each boolean reply was dropped and counted, not taken as an answer.
        assert client.stats.duplicate == 2 and client.stats.answered == 5
        nursery.cancel_scope.cancel()


async def test_request_envelope_on_the_wire(mqtt: MqttClient, everest: EverestStandIn) -> None:
    async with trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt)
        with trio.fail_after(10):
            await client.get_leaf_certificate_info("CSMS", "DER", False)
            received = await everest.received.receive()
        assert received.topic == f"{BASE}/m2e/get_leaf_certificate_info"
        envelope = json.loads(received.payload)
        assert envelope["payload"] == {"certificate_type": "CSMS", "encoding": "DER", "include_ocsp": False}
        reply_to = envelope["headers"]["replyTo"]
        assert reply_to.startswith("evflow/reply/") and set(envelope) == {"headers", "payload"}
        nursery.cancel_scope.cancel()


async def test_document_form_replies(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    async with EverestStandIn(broker.host, broker.port, MODULE, strict=True), trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt)
        with trio.fail_after(10):
            assert await client.get_verify_location("V2G") == "/etc/everest/certs/ca/v2g"
            assert await client.is_ca_certificate_installed("V2G") is True
        assert client.stats.duplicate == 0
        nursery.cancel_scope.cancel()


async def test_external_prefix_reply_topics(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    async with EverestStandIn(broker.host, broker.port, MODULE, external_prefix="site7/") as standin:
        async with trio.open_nursery() as nursery:
            client = await start_client(nursery, mqtt, external_prefix="site7/")
            with trio.fail_after(10):
                assert await client.is_ca_certificate_installed("CSMS") is True
                received = await standin.received.receive()
            assert received.topic == f"site7/{BASE}/m2e/is_ca_certificate_installed"
            # replyTo goes without the prefix: EVerest prepends it when it publishes the reply.
            assert json.loads(received.payload)["headers"]["replyTo"].startswith("evflow/reply/")
            nursery.cancel_scope.cancel()


async def test_thousand_concurrent_requests_each_get_their_own_answer(
    mqtt: MqttClient, everest: EverestStandIn
) -> None:
    cases = [(op, kind) for op in ("is_ca", "verify") for kind in ("V2G", "MO", "CSMS", "MF")]
    results: list[tuple[str, str, object]] = []

    async def one(index: int) -> None:
        op, kind = cases[index % len(cases)]
        if op == "is_ca":
            answer: object = await client.is_ca_certificate_installed(kind)
        else:
            answer = await client.get_verify_location(kind)
        results.append((op, kind, answer))

    async with trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt, max_in_flight=128)
        with trio.fail_after(30):
            async with trio.open_nursery() as requests:
                for index in range(1000):
                    requests.start_soon(one, index)
        nursery.cancel_scope.cancel()
    assert len(results) == 1000
    for op, kind, answer in results:
        installed = kind in everest.installed
        if op == "is_ca":
            assert answer is installed
        else:
            assert answer == (f"/etc/everest/certs/ca/{kind.lower()}/{kind}_ROOT_CA.pem" if installed else None)
    assert client.stats.answered == 1000 and client.in_flight == 0


async def test_unanswered_request_times_out_and_the_client_goes_on(
    broker: MosquittoBroker, mqtt: MqttClient
) -> None:
    async with EverestStandIn(broker.host, broker.port, MODULE, reply_delay=1.0):
        async with trio.open_nursery() as nursery:
            client = await start_client(nursery, mqtt, request_timeout=0.3)
            started = trio.current_time()
            with trio.fail_after(10), pytest.raises(RequestTimeout, match="no reply to get_verify_location within 0.3 s"):
                await client.get_verify_location("V2G")
            assert trio.current_time() - started >= 0.3
            # Still working: a request with a longer deadline is answered; the first reply, which
            # arrives before it, is dropped as late.
            with trio.fail_after(10):
                assert await client.get_verify_location("MF", timeout=5) is None
            assert client.stats.late == 1 and client.stats.abandoned == 1 and client.in_flight == 0
            nursery.cancel_scope.cancel()


async def test_a_shorter_timeout_expires_first_whatever_was_sent_before(
    broker: MosquittoBroker, mqtt: MqttClient
) -> None:
    # One timer serves every request's deadline: a request with a short timeout, sent while one with
    # a long timeout waits, must bring the timer forward.
    async with EverestStandIn(broker.host, broker.port, MODULE, reply_delay=60.0):
        async with trio.open_nursery() as nursery:
            client = await start_client(nursery, mqtt)
            long_one_failed: list[BaseException] = []

            async def long_request() -> None:
                try:
                    await client.get_verify_location("V2G", timeout=30)
                except RequestTimeout as exc:
                    long_one_failed.append(exc)

            nursery.start_soon(long_request)
            with trio.fail_after(10):
                await trio.testing.wait_all_tasks_blocked()  # it sent its request and waits for the reply
            assert client.in_flight == 1
            started = trio.current_time()
            with trio.fail_after(5), pytest.raises(RequestTimeout, match="within 0.2 s"):
                await client.get_verify_location("MF", timeout=0.2)
            assert trio.current_time() - started >= 0.2
            # The earlier request with the longer deadline still waits.
            assert client.in_flight == 1 and not long_one_failed
            nursery.cancel_scope.cancel()


async def test_invalid_reply_names_the_json_path(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    def bad_leaf(_request: dict[str, object]) -> dict[str, object]:
        return {"status": "Accepted", "info": {"key": "/k", "certificate_count": "three"}}

    async with EverestStandIn(broker.host, broker.port, MODULE, leaf_answer=bad_leaf), trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt)
        with trio.fail_after(10), pytest.raises(InvalidReply, match=r"expected an integer, got a string @ \$\.info\.certificate_count"):
            await client.get_leaf_certificate_info("CSMS")
        nursery.cancel_scope.cancel()


async def test_invalid_request_is_refused_before_sending(mqtt: MqttClient, everest: EverestStandIn) -> None:
    async with trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt)
        with pytest.raises(InvalidRequest, match=r"expected one of 'V2G', 'MO', 'CSMS', 'MF', got 'ROOT' @ \$"):
            await client.is_ca_certificate_installed("ROOT")
        with pytest.raises(InvalidRequest, match=r"required key missing @ \$\.include_ocsp"):
            await client.request("get_leaf_certificate_info", {"certificate_type": "V2G", "encoding": "PEM"})
        with trio.fail_after(10):
            await client.is_ca_certificate_installed("V2G")
            first = await everest.received.receive()
        assert json.loads(first.payload)["payload"] == "V2G"  # nothing invalid went out before it
        nursery.cancel_scope.cancel()


async def test_heartbeats_and_communication_check(mqtt: MqttClient, everest: EverestStandIn) -> None:
    async with trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt)
        beats = await client.heartbeats()
        for payload in (b"0", b"1", b"18446744073709551615", b'"2"', b"18446744073709551616", b"3", b"007", b" 4 "):
            everest.publish_raw(f"{BASE}/e2m/heartbeat", payload)
        with trio.fail_after(10):
            assert [await beats.receive() for _ in range(3)] == [0, 1, 2**64 - 1]
            with pytest.raises(InvalidPayload, match=r"expected an integer, got a string @ \$"):
                await beats.receive()
            with pytest.raises(InvalidPayload, match=r"0..2\^64-1"):
                await beats.receive()
            assert await beats.receive() == 3
            with pytest.raises(InvalidPayload):  # not JSON: leading zeros
                await beats.receive()
            assert await beats.receive() == 4  # JSON with white space around it
            assert beats.invalid == 3
            await client.communication_check(True)
            received = await everest.received.receive()
        assert (received.topic, received.payload) == (f"{BASE}/m2e/communication_check", b"true")
        nursery.cancel_scope.cancel()


async def test_connection_loss_fails_requests_in_flight_then_recovers(broker: MosquittoBroker) -> None:
    mqtt = MqttClient(BrokerConfig.from_url(broker.url, reconnect_min=0.05, reconnect_max=0.2))
    async with trio.open_nursery() as nursery:
        await nursery.start(mqtt.run)
        async with EverestStandIn(broker.host, broker.port, MODULE, reply_delay=30) as standin:
            client = await start_client(nursery, mqtt, request_timeout=20)
            outcome: list[BaseException] = []

            async def waiting_request() -> None:
                try:
                    await client.is_ca_certificate_installed("V2G")
                except NotConnected as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as requests:
                requests.start_soon(waiting_request)
                with trio.fail_after(10):
                    await standin.received.receive()  # the request is out, its reply delayed
                broker.kill()
            assert len(outcome) == 1 and "connection lost" in str(outcome[0])
            with pytest.raises(NotConnected):
                await client.is_ca_certificate_installed("V2G")
            broker.start()
            standin.reply_delay = 0
            with trio.fail_after(15):
                await mqtt.wait_connected()
                # The stand-in (paho's own reconnect) may come back after us: retry until it answers.
                while True:
                    try:
                        assert await client.is_ca_certificate_installed("V2G", timeout=0.5) is True
                        break
                    except RequestTimeout:
                        continue
            assert mqtt.stats.connects == 2
        await mqtt.aclose()
        nursery.cancel_scope.cancel()


async def test_a_request_while_the_client_is_not_running_still_times_out(mqtt: MqttClient) -> None:
    # Without run() nothing receives replies and no timer runs: the request's own deadline ends it.
    client = EvseSecurityClient(mqtt, MODULE)
    with trio.fail_after(5), pytest.raises(RequestTimeout, match="within 0.2 s"):
        await client.get_verify_location("V2G", timeout=0.2)
    assert client.in_flight == 0


async def test_a_request_to_a_stalled_broker_waits_for_room_within_its_deadline(broker: MosquittoBroker) -> None:
    # Bytes waiting to be sent are bounded (max_outgoing_bytes): a request meets a full connection
    # as it would meet no answer, with RequestTimeout at its deadline, not with a transport error.
    from evflow.runtime.errors import OutgoingFull

    mqtt = MqttClient(BrokerConfig.from_url(broker.url, max_outgoing_bytes=64 * 1024, keepalive=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(mqtt.run)
        client = await start_client(nursery, mqtt)
        broker.pause()
        try:
            filled = False

            async def fill() -> None:
                nonlocal filled
                while True:  # until the kernel's buffers and then the connection's own are full
                    try:
                        mqtt.publish_nowait("filler", b"x" * 1024)
                    except OutgoingFull:
                        filled = True
                        return
                    await trio.lowlevel.checkpoint()  # lets the writer hand what it can to the kernel

            with trio.fail_after(20):
                await fill()
            assert filled
            with trio.fail_after(5), pytest.raises(RequestTimeout):
                await client.is_ca_certificate_installed(CaCertificateType.V2G, timeout=0.5)
        finally:
            broker.resume()
        nursery.cancel_scope.cancel()


async def test_a_request_at_qos1_waits_for_its_puback_and_gets_its_reply(
    mqtt: MqttClient, everest: EverestStandIn
) -> None:
    async with trio.open_nursery() as nursery:
        client = await start_client(nursery, mqtt, request_qos=1)
        with trio.fail_after(10):
            assert await client.is_ca_certificate_installed(CaCertificateType.CSMS) is True
            assert await client.get_verify_location(CaCertificateType.MF) is None
        assert client.stats.answered == 2
        nursery.cancel_scope.cancel()
