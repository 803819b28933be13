"""The trio MQTT transport against a real mosquitto."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
import trio.testing

from evflow.runtime.broker import BrokerConfig
from evflow.runtime.errors import ConnectError, NotConnected, SubscribeError
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.transport import MqttClient, MqttMessage, Overflow

from .conftest import start_broker


async def test_publish_subscribe_roundtrip(mqtt: MqttClient) -> None:
    sub = await mqtt.subscribe("t/a", qos=1)
    await mqtt.publish("t/a", b"hello", qos=1)
    with trio.fail_after(5):
        message = await sub.receive()
    assert (message.topic, message.payload, message.qos) == ("t/a", b"hello", 1)


async def test_qos2_both_ways_completes_each_handshake(mqtt: MqttClient, broker: MosquittoBroker) -> None:
    """QoS 2 as Node-RED's mqtt nodes offer it: a publish returns on PUBCOMP, and a received message
    is acknowledged (PUBREC, then PUBCOMP), so the broker delivers each exactly once and keeps none."""
    sub = await mqtt.subscribe("t/q2", qos=2)
    for n in range(20):
        await mqtt.publish("t/q2", str(n).encode(), qos=2)
    with trio.fail_after(5):
        received = [(await sub.receive()) for _ in range(20)]
    assert [m.payload for m in received] == [str(n).encode() for n in range(20)]
    assert {m.qos for m in received} == {2}
    # Every handshake finished: nothing of ours is still waiting for an acknowledgement.
    assert mqtt.unacknowledged == 0


async def test_wildcards_route_to_each_matching_subscriber(mqtt: MqttClient) -> None:
    plus = await mqtt.subscribe("w/+/x")
    hash_ = await mqtt.subscribe("w/#")
    exact = await mqtt.subscribe("w/b/y")
    for topic in ("w/a/x", "w/b/y", "w/c/x/deeper"):
        await mqtt.publish(topic, topic.encode())
    with trio.fail_after(5):
        got_hash = [(await hash_.receive()).topic for _ in range(3)]
        got_plus = [(await plus.receive()).topic]
        got_exact = [(await exact.receive()).topic]
    assert got_hash == ["w/a/x", "w/b/y", "w/c/x/deeper"]
    assert got_plus == ["w/a/x"]
    assert got_exact == ["w/b/y"]
    # `w/b/y` is covered by `w/#`: one broker subscription served both, so no message came twice.
    with pytest.raises(trio.WouldBlock):
        hash_.receive_nowait()
    with pytest.raises(trio.WouldBlock):
        plus.receive_nowait()


async def test_refused_subscription_names_its_filter(nats_mqtt_url: str) -> None:
    # NATS refuses '.' in MQTT topics with a failed SUBACK (0x80); mosquitto 2.0 grants everything
    # on MQTT 3.1.1, even what its ACL denies.
    client = MqttClient(BrokerConfig.from_url(nats_mqtt_url))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.subscribe("allowed/x")
        with pytest.raises(SubscribeError, match="'forbidden.dot/x'"):
            await client.subscribe("forbidden.dot/x")
        await client.aclose()


async def test_connect_refused_is_a_clear_error() -> None:
    from evflow.runtime.mosquitto import free_port

    client = MqttClient(BrokerConfig.from_url(f"mqtt://127.0.0.1:{free_port()}", connect_timeout=2))
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConnectError, match="cannot connect to mqtt://127.0.0.1:.*Connection refused"):
            await nursery.start(client.run)


async def test_unix_socket_broker(broker: MosquittoBroker) -> None:
    client = MqttClient(BrokerConfig.from_url(broker.unix_url))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        sub = await client.subscribe("u/1")
        await client.publish("u/1", b"over unix", qos=1)
        with trio.fail_after(5):
            assert (await sub.receive()).payload == b"over unix"
        await client.aclose()


async def test_publish_when_not_connected_fails_fast(mqtt: MqttClient) -> None:
    await mqtt.aclose()
    with pytest.raises(NotConnected):
        await mqtt.publish("t/x", b"1")


async def test_full_subscriber_drop_newest_is_counted(mqtt: MqttClient) -> None:
    sub = await mqtt.subscribe("flood", max_buffer=2, overflow=Overflow.DROP_NEWEST)
    marker = await mqtt.subscribe("flood/done")
    for i in range(10):
        await mqtt.publish("flood", str(i).encode(), qos=1)
    await mqtt.publish("flood/done", b"", qos=1)
    with trio.fail_after(5):
        await marker.receive()
    assert [sub.receive_nowait().payload for _ in range(2)] == [b"0", b"1"]
    assert sub.dropped == 8 and mqtt.stats.dropped == 8


async def test_full_subscriber_drop_oldest_keeps_the_newest(mqtt: MqttClient) -> None:
    sub = await mqtt.subscribe("flood", max_buffer=2, overflow=Overflow.DROP_OLDEST)
    marker = await mqtt.subscribe("flood/done")
    for i in range(10):
        await mqtt.publish("flood", str(i).encode(), qos=1)
    await mqtt.publish("flood/done", b"", qos=1)
    with trio.fail_after(5):
        await marker.receive()
    assert [sub.receive_nowait().payload for _ in range(2)] == [b"8", b"9"]
    assert sub.dropped == 8


async def test_full_subscriber_block_loses_nothing(mqtt: MqttClient) -> None:
    sub = await mqtt.subscribe("flood", max_buffer=1, overflow=Overflow.BLOCK)
    for i in range(200):
        mqtt.publish_nowait("flood", str(i).encode(), qos=0)
    received = []
    with trio.fail_after(10):
        while len(received) < 200:
            received.append(int((await sub.receive()).payload))
    assert received == list(range(200))
    assert sub.dropped == 0


async def test_username_and_password(tmp_path: Path) -> None:
    secret = "s3cret-broker-password"
    broker = start_broker(tmp_path / "auth", users={"gateway": secret})
    try:
        good = MqttClient(BrokerConfig.from_url(broker.url, username="gateway", password=secret))
        wrong = MqttClient(BrokerConfig.from_url(broker.url, username="gateway", password="not-it"))
        async with trio.open_nursery() as nursery:
            await nursery.start(good.run)
            sub = await good.subscribe("auth/ok")
            await good.publish("auth/ok", b"in", qos=1)
            with trio.fail_after(5):
                assert (await sub.receive()).payload == b"in"
            with pytest.raises(ConnectError, match="refused the connection: Not authorized") as refused:
                await nursery.start(wrong.run)
            assert "not-it" not in str(refused.value) and secret not in repr(good.config)
            await good.aclose()
    finally:
        broker.stop()


async def test_clean_disconnect_is_seen_by_the_broker(broker: MosquittoBroker) -> None:
    client = MqttClient(BrokerConfig.from_url(broker.url, client_id="evflow-clean-close"))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.aclose()
    assert not client.connected
    # mosquitto logs "disconnected." for a DISCONNECT packet, "closed its connection" for a dropped socket.
    assert await trio.to_thread.run_sync(broker.wait_for_log, "Client evflow-clean-close disconnected.", 10)
    assert "Client evflow-clean-close closed its connection" not in broker.log


def test_missing_mosquitto_is_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evflow.runtime.mosquitto as mosquitto

    monkeypatch.setattr(mosquitto, "find_mosquitto", lambda name="mosquitto", sbin=True: None)
    with pytest.raises(mosquitto.MosquittoNotInstalled, match=r"mosquitto is not installed .* apt-get install mosquitto"):
        MosquittoBroker(tmp_path).start()


async def test_shared_broker_subscription_survives_one_of_its_users(mqtt: MqttClient) -> None:
    # QoS upgrade of a filter already held, and two concurrent subscribes to one filter.
    first = await mqtt.subscribe("share/a", qos=0)
    second = await mqtt.subscribe("share/a", qos=1)
    async with trio.open_nursery() as nursery:
        results: list[object] = []

        async def subscribe() -> None:
            results.append(await mqtt.subscribe("share/b"))

        nursery.start_soon(subscribe)
        nursery.start_soon(subscribe)
    third, fourth = results
    await first.aclose()
    await third.aclose()  # type: ignore[attr-defined]
    await mqtt.publish("share/a", b"a", qos=1)
    await mqtt.publish("share/b", b"b", qos=1)
    with trio.fail_after(10):
        assert (await second.receive()).payload == b"a"
        assert (await fourth.receive()).payload == b"b"  # type: ignore[attr-defined]


async def test_closed_before_connected_is_a_connect_error() -> None:
    import socket

    silent = socket.socket()  # accepts TCP, never answers MQTT
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        client = MqttClient(BrokerConfig.from_url(f"mqtt://127.0.0.1:{silent.getsockname()[1]}", connect_timeout=30))
        async with trio.open_nursery() as nursery:
            async def close_soon() -> None:
                await trio.testing.wait_all_tasks_blocked(cushion=0.2)
                await client.aclose()

            nursery.start_soon(close_soon)
            with trio.fail_after(10), pytest.raises(ConnectError, match="closed before the connection"):
                await nursery.start(client.run)
    finally:
        silent.close()


async def test_a_stalled_qos1_subscriber_does_not_hold_back_the_other_qos1_subscriptions(
    mqtt: MqttClient, broker: MosquittoBroker
) -> None:
    # Holding a stalled subscriber's QoS 1 messages unacknowledged used up the broker's window, which
    # is per client: no QoS 1 message reached any other subscription of the connection any more.
    stalled = await mqtt.subscribe("slow", qos=1, max_buffer=4)  # nobody reads it meanwhile
    other = await mqtt.subscribe("fast", qos=1)
    publisher = MqttClient(BrokerConfig.from_url(broker.url))
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        for i in range(300):
            await publisher.publish("slow", str(i).encode(), qos=1)
        await publisher.publish("fast", b"still flows", qos=1)
        with trio.fail_after(5):
            assert (await other.receive()).payload == b"still flows"
        assert stalled.pending == 300 and stalled.dropped == 0  # kept in its backlog, in order
        assert [int(stalled.receive_nowait().payload) for _ in range(300)] == list(range(300))
        await publisher.aclose()


async def test_a_broker_redelivering_a_qos1_message_does_not_end_the_connection() -> None:
    # A broker sends an unacknowledged QoS 1 message again (DUP, same packet id), as EMQX and
    # NATS do after a retry interval: it is delivered again (at least once), and read on.
    import struct

    def publish(mid: int, payload: bytes, dup: bool) -> bytes:
        body = struct.pack("!H", 1) + b"t" + struct.pack("!H", mid) + payload
        return bytes([0x32 | (0x08 if dup else 0), len(body)]) + body

    pubacks: list[int] = []
    acked_twice = trio.Event()

    async def fake_broker(stream: trio.SocketStream) -> None:
        buffer = bytearray()

        async def packet() -> tuple[int, bytes]:
            while len(buffer) < 2 or len(buffer) < 2 + buffer[1]:  # short packets: one length byte
                data = await stream.receive_some(4096)
                if not data:
                    raise trio.EndOfChannel
                buffer.extend(data)
            kind, body = buffer[0], bytes(buffer[2:2 + buffer[1]])
            del buffer[:2 + buffer[1]]
            return kind, body

        assert (await packet())[0] == 0x10  # CONNECT
        await stream.send_all(b"\x20\x02\x00\x00")  # CONNACK
        with contextlib.suppress(trio.EndOfChannel, trio.BrokenResourceError):
            while True:
                kind, body = await packet()
                if kind == 0x82:  # SUBSCRIBE: grant QoS 1, then a message, and the same one again
                    await stream.send_all(b"\x90\x03" + body[:2] + b"\x01")
                    await stream.send_all(publish(7, b"once", False) + publish(7, b"once", True))
                elif kind == 0x40:  # PUBACK
                    pubacks.append(struct.unpack("!H", body[:2])[0])
                    if len(pubacks) == 2:
                        acked_twice.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = MqttClient(BrokerConfig.from_url(f"mqtt://127.0.0.1:{port}", keepalive=0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, fake_broker, listeners)
        await nursery.start(client.run)
        subscription = await client.subscribe("t", qos=1, max_buffer=1)  # not read meanwhile
        with trio.fail_after(5):
            await acked_twice.wait()
        assert pubacks == [7, 7] and client.connected
        assert [subscription.receive_nowait().payload for _ in range(2)] == [b"once", b"once"]
        nursery.cancel_scope.cancel()


async def test_callback_subscription_runs_as_messages_are_read_and_survives_its_own_failure(
    mqtt: MqttClient, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []

    def callback(message: MqttMessage) -> None:
        if message.payload == b"bad":
            raise ValueError("cannot take this one")
        seen.append(message.payload)

    handled = await mqtt.subscribe_callback("cb/+", callback)
    buffered = await mqtt.subscribe("cb/+")
    for payload in (b"1", b"bad", b"2"):
        await mqtt.publish("cb/x", payload)
    with trio.fail_after(5):
        for expected in (b"1", b"bad", b"2"):
            assert (await buffered.receive()).payload == expected
            # Handled in the read loop: done before a buffered subscriber can take the same message.
            assert expected in seen or expected == b"bad"
    assert seen == [b"1", b"2"]
    assert mqtt.stats.callback_errors == 1
    assert "cannot take this one" in caplog.text and "'cb/+'" in caplog.text

    await handled.aclose()
    await mqtt.publish("cb/x", b"3")
    with trio.fail_after(5):
        assert (await buffered.receive()).payload == b"3"
    assert seen == [b"1", b"2"]


async def test_take_is_offered_a_message_only_when_nothing_of_its_subscription_waits(
    mqtt: MqttClient, caplog: pytest.LogCaptureFixture
) -> None:
    subscription = await mqtt.subscribe("take/+")
    marker = await mqtt.subscribe("take/+")  # routed after `subscription`: once it has a message, so has take
    offered: list[bytes] = []

    def take(message: MqttMessage) -> bool:
        offered.append(message.payload)
        if message.payload == b"raise":
            raise ValueError("take failed")
        return message.payload.startswith(b"direct")

    subscription.take = take
    with trio.fail_after(5):
        await mqtt.publish("take/x", b"direct-1")
        assert (await marker.receive()).payload == b"direct-1"
        assert offered == [b"direct-1"] and subscription.pending == 0  # taken, never buffered
        # "declined" is buffered: "direct-2" behind it is not offered (it would overtake it).
        for payload in (b"declined", b"direct-2"):
            await mqtt.publish("take/x", payload)
            assert (await marker.receive()).payload == payload
        assert offered == [b"direct-1", b"declined"] and subscription.pending == 2
        assert [(await subscription.receive()).payload for _ in range(2)] == [b"declined", b"direct-2"]
        # Nothing waits any more: offered again. A take that raises is logged, and the message buffered.
        for payload in (b"direct-3", b"raise"):
            await mqtt.publish("take/x", payload)
            assert (await marker.receive()).payload == payload
        assert (await subscription.receive()).payload == b"raise"
    assert offered == [b"direct-1", b"declined", b"direct-3", b"raise"]
    assert mqtt.stats.callback_errors == 1 and "take failed" in caplog.text


# ---- the promises of issue 16 ----------------------------------------------------------------------


async def test_a_stalled_subscriber_never_stops_the_connections_reader(
    mqtt: MqttClient, broker: MosquittoBroker
) -> None:
    # Item 1: a full QoS 0 subscriber used to stop the reader, so PUBACKs and replies on the same
    # connection waited behind it and its backlog was dropped after block_timeout.
    stalled = await mqtt.subscribe("stall/x", max_buffer=1, overflow=Overflow.BLOCK)  # never read meanwhile
    other = await mqtt.subscribe("other/x")
    publisher = MqttClient(BrokerConfig.from_url(broker.url))
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        for i in range(2000):
            publisher.publish_nowait("stall/x", str(i).encode())
        await publisher.publish("stall/x", b"last", qos=1)
        with trio.fail_after(5):
            # This client's own PUBACK and another subscriber's message are read meanwhile.
            await mqtt.publish("other/x", b"still read", qos=1)
            assert (await other.receive()).payload == b"still read"
            while stalled.pending < 2001:  # the whole burst is read, none of it waits in the kernel
                await mqtt.publish("other/x", b"again", qos=1)
                await other.receive()
        assert stalled.dropped == 0 and mqtt.stats.dropped == 0
        with trio.fail_after(10):
            got = [(await stalled.receive()).payload for _ in range(2001)]
        assert got == [str(i).encode() for i in range(2000)] + [b"last"]
        await publisher.aclose()


async def test_a_backlog_is_bounded_in_messages_and_bytes_and_drops_are_counted(broker: MosquittoBroker) -> None:
    client = MqttClient(BrokerConfig.from_url(broker.url, max_held=10, max_held_bytes=1000))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        by_count = await client.subscribe("held/count", max_buffer=2)
        by_bytes = await client.subscribe("held/bytes", qos=1, max_buffer=2)
        marker = await client.subscribe("held/done")
        for i in range(30):
            await client.publish("held/count", str(i).encode(), qos=1)
            await client.publish("held/bytes", bytes([65 + i % 26]) * 300, qos=1)
        await client.publish("held/done", b"", qos=1)
        with trio.fail_after(5):
            await marker.receive()
        assert (by_count.pending, by_count.held, by_count.dropped) == (12, 10, 18)
        # 3 x 300 bytes fit in 1000; the fourth would not.
        assert (by_bytes.pending, by_bytes.held_bytes, by_bytes.dropped) == (5, 900, 25)
        assert client.stats.dropped == 43
        assert [int((await by_count.receive()).payload) for _ in range(12)] == list(range(12))
        # The dropped QoS 1 messages were acknowledged: the broker's window is free, more come.
        for _ in range(5):
            await by_bytes.receive()
        await client.publish("held/bytes", b"after", qos=1)
        with trio.fail_after(5):
            assert (await by_bytes.receive()).payload == b"after"
        await client.aclose()


async def test_concurrent_subscribes_to_one_filter_each_return(mqtt: MqttClient) -> None:
    # Item 2: QoS 0, 0, 1 to one topic at once; the QoS upgrade replaced the result the second
    # subscriber waited on, and it never returned.
    for round_ in range(10):
        topic = f"same/{round_}"
        subscriptions: list[object] = []

        async def subscribe(qos: int, topic: str = topic, subscriptions: list[object] = subscriptions) -> None:
            subscriptions.append(await mqtt.subscribe(topic, qos=qos))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for qos in (0, 0, 1):
                    nursery.start_soon(subscribe, qos)
            await mqtt.publish(topic, b"to all three", qos=1)
            for subscription in subscriptions:
                assert (await subscription.receive()).payload == b"to all three"  # type: ignore[attr-defined]


async def test_each_subscription_gets_the_retained_messages_once(mqtt: MqttClient, broker: MosquittoBroker) -> None:
    # Item 3: a subscription covered by a wider one got no SUBSCRIBE, so no retained message.
    publisher = MqttClient(BrokerConfig.from_url(broker.url))
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        await publisher.publish("status/a", b"retained a", qos=1, retain=True)
        await publisher.publish("status/b", b"retained b", qos=1, retain=True)
        wide = await mqtt.subscribe("status/+")
        with trio.fail_after(5):
            got = sorted([(await wide.receive()).payload for _ in range(2)])
        assert got == [b"retained a", b"retained b"]
        narrow = await mqtt.subscribe("status/a")  # covered by status/+
        with trio.fail_after(5):
            assert (await narrow.receive()) == MqttMessage("status/a", b"retained a", 0, True)
        second = await mqtt.subscribe("status/a", qos=1)
        with trio.fail_after(5):
            assert (await second.receive()) == MqttMessage("status/a", b"retained a", 1, True)
            # Live messages reach each once; the wide subscription got no second retained copy.
            await publisher.publish("status/a", b"live", qos=1)
            assert (await wide.receive()) == MqttMessage("status/a", b"live", 1, False)
            assert (await narrow.receive()).payload == b"live"
            assert (await second.receive()).payload == b"live"
        assert wide.pending == narrow.pending == second.pending == 0
        await publisher.publish("status/a", b"", qos=1, retain=True)
        await publisher.aclose()


async def test_the_bytes_waiting_to_be_sent_are_bounded_when_the_broker_stalls(broker: MosquittoBroker) -> None:
    # Item 4: with the broker frozen, QoS 0 publishes piled up in paho's queue without bound.
    from evflow.runtime.errors import OutgoingFull

    limit = 256 * 1024
    client = MqttClient(BrokerConfig.from_url(broker.url, max_outgoing_bytes=limit, keepalive=0))
    receiver = MqttClient(BrokerConfig.from_url(broker.url, keepalive=0))
    payload = b"x" * 1024
    published = 0
    received = 0
    wanted = float("inf")
    enough = trio.Event()

    def count(_message: MqttMessage) -> None:
        nonlocal received
        received += 1
        if received >= wanted:
            enough.set()

    async def publish_forever() -> None:
        nonlocal published
        while True:
            await client.publish("stalled/x", payload)
            published += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await nursery.start(receiver.run)
        await receiver.subscribe_callback("stalled/x", count)
        broker.pause()
        try:
            nursery.start_soon(publish_forever)
            # Every task blocked: the kernel's buffers are full, the writer waits for the socket,
            # and the publisher waits for room instead of growing a queue.
            with trio.fail_after(10):  # a publisher that never has to wait would never block
                await trio.testing.wait_all_tasks_blocked()
            assert limit <= client.outgoing_bytes < limit + 2 * len(payload)
            with pytest.raises(OutgoingFull, match="max_outgoing_bytes"):
                client.publish_nowait("stalled/x", payload)
            wanted = published + 100  # all of it, and the publisher going on once resumed
        finally:
            broker.resume()
        with trio.fail_after(30):
            await enough.wait()
        nursery.cancel_scope.cancel()


async def test_an_outage_logs_its_cause_once_not_every_attempt(
    broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    attempts = trio.Event()

    class CountFailures(logging.Handler):
        count = 0

        def emit(self, record: logging.LogRecord) -> None:
            if "reconnect" in record.getMessage() and "failed" in record.getMessage():
                CountFailures.count += 1
                if CountFailures.count >= 15:
                    attempts.set()

    counter = CountFailures(logging.DEBUG)
    mqtt_log = logging.getLogger("evflow.mqtt")
    mqtt_log.addHandler(counter)
    previous_level = mqtt_log.level
    mqtt_log.setLevel(logging.DEBUG)
    client = MqttClient(BrokerConfig.from_url(broker.url, reconnect_min=0.01, reconnect_max=0.02))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            broker.kill()
            with trio.fail_after(20):
                await attempts.wait()  # 15 failed attempts
            await trio.to_thread.run_sync(broker.start)
            with trio.fail_after(20):
                await client.wait_connected()
            await client.aclose()
    finally:
        mqtt_log.removeHandler(counter)
        mqtt_log.setLevel(previous_level)
    warnings = [r.getMessage() for r in caplog.records if r.name == "evflow.mqtt" and r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # the loss, with its cause; attempts at debug level
    assert "lost: the broker closed the connection" in warnings[0] or "reset" in warnings[0], warnings
    assert "Unspecified error" not in caplog.text
    assert client.stats.connect_failures >= 15 and client.stats.connection_losses == 1
    assert any("reconnected to" in r.getMessage() and r.levelname == "INFO" for r in caplog.records)


def test_reconnect_delays_double_up_to_the_cap_with_jitter() -> None:
    from evflow.runtime.transport import Backoff

    highest = Backoff(0.1, 30.0, draw=lambda: 1.0)
    assert [round(highest.delay(), 3) for _ in range(11)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    lowest = Backoff(0.1, 30.0, draw=lambda: 0.0)
    assert [round(lowest.delay(), 3) for _ in range(3)] == [0.05, 0.1, 0.2]
    highest.reset()
    assert highest.delay() == 0.1
    with pytest.raises(ValueError, match="reconnect_min <= reconnect_max"):
        BrokerConfig.from_url("mqtt://localhost", reconnect_min=5, reconnect_max=1)


async def test_receive_takes_a_message_only_after_its_last_scheduling_point(mqtt: MqttClient) -> None:
    # The read loop offers a message to `take` only while nothing of the subscription waits; if
    # receive took a message off the buffer and then yielded, the read loop could hand the next one
    # on ahead of it (issue 16 review: mqtt in reordered messages). A canary task that runs at every
    # scheduling point must never see the buffer short while a receive is still under way.
    subscription = await mqtt.subscribe("sched/x", max_buffer=64)
    marker = await mqtt.subscribe("sched/done")
    for i in range(30):
        mqtt.publish_nowait("sched/x", str(i).encode())
    await mqtt.publish("sched/done", b"", qos=1)
    with trio.fail_after(5):
        await marker.receive()  # the broker keeps a client's messages in order: all 30 are buffered
    assert subscription.pending == 30
    under_way: int | None = None  # the pending count as a receive began
    early: list[int] = []

    async def canary() -> None:
        while True:
            if under_way is not None and subscription.pending < under_way:
                early.append(under_way)
            await trio.lowlevel.checkpoint()

    got = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(canary)
        for _ in range(30):
            under_way = subscription.pending
            got.append(int((await subscription.receive()).payload))
            under_way = None
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    assert got == list(range(30)) and early == []


async def test_publish_waits_for_acknowledgements_at_max_unacknowledged(broker: MosquittoBroker) -> None:
    # paho refused the next QoS 1 publish at the limit, and the wait for room looked at bytes only:
    # publish retried in a busy loop for as long as the broker did not acknowledge (review).
    from evflow.runtime.errors import OutgoingFull

    client = MqttClient(BrokerConfig.from_url(broker.url, max_unacknowledged=50, keepalive=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        broker.pause()  # PUBACKs stop; the kernel still takes the bytes
        try:
            acknowledged = [client.publish_tracked("t", b"x", qos=1) for _ in range(50)]
            with pytest.raises(OutgoingFull, match="max_unacknowledged 50"):
                client.publish_nowait("t", b"one more", qos=1)
            client.publish_nowait("t", b"QoS 0 still goes", qos=0)  # the limit is for QoS 1
            finished = trio.Event()

            async def one_more() -> None:
                await client.publish("t", b"one more", qos=1)
                finished.set()

            nursery.start_soon(one_more)
            with trio.fail_after(5):  # a publisher that spun would never let every task block
                await trio.testing.wait_all_tasks_blocked()
            assert not finished.is_set()
        finally:
            broker.resume()
        with trio.fail_after(10):
            await finished.wait()
            for done in acknowledged:
                await done.wait()
        await client.aclose()


async def test_a_broker_that_delivers_per_subscription_sends_each_message_once(nats_mqtt_url: str) -> None:
    # NATS sends a message once per matching subscription. A wide filter granted QoS 0 could not
    # take over a narrow one at QoS 1, so both stayed, and every message came twice (review).
    client = MqttClient(BrokerConfig.from_url(nats_mqtt_url))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        wide = await client.subscribe("cover/+", qos=0)
        narrow = await client.subscribe("cover/a", qos=1)
        # The wide filter is raised to QoS 1 and the narrow one let go, a round trip each after the
        # narrow SUBACK: two more subscribes are barriers (a broker handles a client's packets in order).
        for barrier in ("barrier/1", "barrier/2"):
            await client.subscribe(barrier)
        await client.publish("cover/a", b"once", qos=1)
        await client.publish("cover/end", b"end", qos=1)
        with trio.fail_after(5):
            assert [(await wide.receive()).payload for _ in range(2)] == [b"once", b"end"]
            assert (await narrow.receive()).payload == b"once"
        await client.publish("cover/end", b"end again", qos=1)
        with trio.fail_after(5):
            assert (await wide.receive()).payload == b"end again"
        assert wide.pending == narrow.pending == 0  # no second copy of anything
        await client.aclose()
