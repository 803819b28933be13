"""The soak's load driver: publishes each leg on its schedule and counts what comes back."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import Any

import attrs
import trio
from soak_flow import (
    DRIVER_CLIENT_ID,
    Q0_RATE,
    Q1_RATE,
    Q1_WINDOW,
    REQUEST_RATE,
    REQUEST_WINDOW,
    STALL_PAYLOAD_BYTES,
    STALL_RATE,
    SoakError,
)

from evflow.runtime.broker import BrokerConfig
from evflow.runtime.oneshot import OneShot
from evflow.runtime.transport import MqttClient, MqttMessage


@attrs.define
class Stream:
    """One published stream: what was handed to the broker connection, and (QoS 1) acknowledged."""

    topic: str
    qos: int
    window: int = 0
    sent: int = 0
    acked: int = 0
    schedule_resets: int = 0  # times the driver fell more than a second behind and did not burst
    _unacked: collections.deque[OneShot[None]] = attrs.field(factory=collections.deque)

    def retire_acknowledged(self) -> None:
        while self._unacked and self._unacked[0].is_set:
            self._unacked.popleft()
            self.acked += 1

    async def wait_all_acknowledged(self) -> None:
        while self._unacked:
            await self._unacked.popleft().wait()
            self.acked += 1


@attrs.define
class Received:
    """Sequence numbers that came back on a forwarding leg."""

    unique: set[int] = attrs.field(factory=set)
    duplicates: int = 0
    unexpected: int = 0  # not a number the driver sent

    def add(self, payload: bytes) -> None:
        try:
            number = int(payload)
        except ValueError:
            self.unexpected += 1
            return
        if number in self.unique:
            self.duplicates += 1
        else:
            self.unique.add(number)


class LoadDriver:
    """Publishes the load and counts what comes back. Its subscriptions are callbacks in the
    connection's read loop: nothing buffers or drops on this side."""

    def __init__(self, broker_url: str) -> None:
        self.mqtt = MqttClient(BrokerConfig.from_url(
            broker_url, client_id=DRIVER_CLIENT_ID, max_unacknowledged=Q1_WINDOW + REQUEST_WINDOW + 1000))
        self.q0 = Stream("soak/q0/in", 0)
        self.q1 = Stream("soak/q1/in", 1, Q1_WINDOW)
        self.requests = Stream("soak/req", 1, REQUEST_WINDOW)
        self.stall = Stream("soak/stall", 0)
        self.q0_back = Received()
        self.q1_back = Received()
        self.outcomes: dict[int, list[str]] = collections.defaultdict(list)  # request id -> ["ok"/"failed"]
        self.stray_outcomes: list[str] = []  # topics under soak/done/ that name no request sent
        self.beats = 0
        self.beat_ids: list[int] = []  # first and last are enough; kept small
        self.events: list[tuple[float, dict[str, Any]]] = []  # (seconds since start, event)
        self.sys_dropped: list[tuple[float, int]] = []
        self.sys_updates = 0
        self._sys_dropped_seen = trio.Event()
        self._sys_update = trio.Event()
        self._barrier_seen = trio.Event()
        self.origin = 0.0

    def now(self) -> float:
        return trio.current_time() - self.origin

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.mqtt.run)
            subscribe = self.mqtt.subscribe_callback
            await subscribe("soak/q0/out", lambda m: self.q0_back.add(m.payload), qos=0)
            await subscribe("soak/q1/out", lambda m: self.q1_back.add(m.payload), qos=1)
            await subscribe("soak/done/#", self._on_outcome, qos=1)
            await subscribe("soak/hb/out", self._on_beat, qos=0)
            await subscribe("soak/hb/events", self._on_event, qos=1)
            await subscribe("soak/barrier", lambda m: self._barrier_seen.set(), qos=1)
            await subscribe("$SYS/broker/publish/messages/dropped", self._on_sys_dropped, qos=0)
            await subscribe("$SYS/broker/uptime", self._on_sys_update, qos=0)
            task_status.started()

    # -- what comes back

    def _on_outcome(self, message: MqttMessage) -> None:
        parts = message.topic.split("/")  # soak/done/<ok|failed>/<id>
        if len(parts) == 4 and parts[2] in ("ok", "failed") and parts[3].isdigit() \
                and int(parts[3]) < self.requests.sent:
            self.outcomes[int(parts[3])].append(parts[2])
        else:
            self.stray_outcomes.append(message.topic)

    def _on_beat(self, message: MqttMessage) -> None:
        self.beats += 1
        if message.payload.isdigit():
            beat = int(message.payload)
            if len(self.beat_ids) < 2:
                self.beat_ids.append(beat)
            else:
                self.beat_ids[1] = beat

    def _on_event(self, message: MqttMessage) -> None:
        try:
            event = json.loads(message.payload)
        except ValueError:
            event = {"event": "undecodable", "payload": message.payload.decode(errors="replace")}
        self.events.append((round(self.now(), 1), event))

    def _on_sys_dropped(self, message: MqttMessage) -> None:
        self.sys_dropped.append((round(self.now(), 1), int(message.payload)))
        self._sys_dropped_seen.set()

    def _on_sys_update(self, message: MqttMessage) -> None:
        self.sys_updates += 1
        self._sys_update.set()
        self._sys_update = trio.Event()

    # -- publishing

    async def publish(self, stream: Stream, payload: bytes, topic: str | None = None) -> None:
        # While the broker is frozen the bytes waiting to be sent reach their limit: wait, as a client would.
        done = await self.mqtt.publish_when_room(topic or stream.topic, payload, stream.qos)
        stream.sent += 1
        if stream.qos:
            stream._unacked.append(done)
            stream.retire_acknowledged()
            if len(stream._unacked) >= stream.window:
                await stream._unacked.popleft().wait()
                stream.acked += 1

    async def paced(self, stream: Stream, rate: float, stop_at: float,
                    payload_of: Callable[[int], bytes], topic_of: Callable[[int], str] | None = None) -> None:
        """Publish ``stream`` at ``rate`` msg/s until ``stop_at``, drift-free, in batches at most
        every 10 ms. A driver held back by more than a second starts its schedule over instead of
        bursting (counted in ``schedule_resets``)."""
        origin = trio.current_time()
        while (now := trio.current_time()) < stop_at:
            due = int((now - origin) * rate) + 1
            if due - stream.sent > rate:
                stream.schedule_resets += 1
                origin = now - stream.sent / rate
                due = stream.sent + 1
            while stream.sent < due:
                number = stream.sent
                await self.publish(stream, payload_of(number), topic_of(number) if topic_of else None)
            await trio.sleep_until(min(max(origin + stream.sent / rate, now + 0.01), stop_at))

    async def drive(self, stop_at: float) -> None:
        stall_padding = b"." * STALL_PAYLOAD_BYTES

        def stall_payload(n: int) -> bytes:
            return (b"%010d" % n + stall_padding)[:STALL_PAYLOAD_BYTES]

        def number(n: int) -> bytes:
            return b"%d" % n

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.paced, self.q0, Q0_RATE, stop_at, number)
            nursery.start_soon(self.paced, self.q1, Q1_RATE, stop_at, number)
            nursery.start_soon(self.paced, self.requests, REQUEST_RATE, stop_at, number, lambda n: f"soak/req/{n}")
            nursery.start_soon(self.paced, self.stall, STALL_RATE, stop_at, stall_payload)

    async def wait_acknowledged(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self.q1.wait_all_acknowledged()
            await self.requests.wait_all_acknowledged()
            return
        raise SoakError(f"the broker did not acknowledge the driver's QoS 1 messages within {timeout:g} s")

    async def barrier(self, timeout: float) -> None:
        """Until everything mosquitto queued for this client before now has arrived: a QoS 1 marker
        to our own subscription comes back behind it."""
        with trio.move_on_after(timeout):
            await self.mqtt.publish("soak/barrier", b"end", 1)
            await self._barrier_seen.wait()
            return
        raise SoakError(f"the barrier message did not come back within {timeout:g} s")

    async def wait_sys_dropped_baseline(self, timeout: float) -> None:
        """Until mosquitto's dropped counter has come (retained: it follows the subscription)."""
        with trio.move_on_after(timeout):
            await self._sys_dropped_seen.wait()
            return
        raise SoakError(f"$SYS/broker/publish/messages/dropped did not arrive within {timeout:g} s")

    async def wait_sys_updates(self, count: int, timeout: float) -> None:
        """Until mosquitto has published its $SYS tree ``count`` more times: its counters are current."""
        target = self.sys_updates + count
        with trio.move_on_after(timeout):
            while self.sys_updates < target:
                await self._sys_update.wait()
            return
        raise SoakError(f"mosquitto did not publish $SYS/broker/uptime {count} times within {timeout:g} s")


# ---- the soak ------------------------------------------------------------------------------------------
