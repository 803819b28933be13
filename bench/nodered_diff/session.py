"""The harness's MQTT client for one run of a case: it watches the case's output topics, probes the
system under test until it answers, publishes the case's inputs and decides when the run is done.

It speaks MQTT 5 so that it can subscribe with retain-as-published: a message's retain flag is then
the one its publisher set (an MQTT 3.1.1 subscriber sees it cleared on every live message), and its
QoS, subscribed at 2, is the publisher's. Paho's network loop runs on its own thread; the waits here
are on its events, never on fixed sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

import paho.mqtt.client as paho
from corpus import PING_TOPIC, PONG_TOPIC, Case, Input, Output
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

# Between two readiness probes: fast enough not to add to a start, slow enough not to flood a slow one.
PROBE_INTERVAL = 0.05
# After the last activity (input or output), a run whose messages are not all there yet waits this
# many times the case's quiet period, and at least PATIENCE_MIN seconds: evflow may be slower.
PATIENCE_FACTOR = 4
PATIENCE_MIN = 2.0


class Session:
    """Connected and subscribed on creation; ``close()`` (or leave the ``with`` block) when the run is over."""

    def __init__(self, port: int, output_filters: tuple[str, ...]) -> None:
        self._lock = threading.Condition()
        self._outputs: list[Output] = []
        self._last_activity = time.monotonic()
        self._pong = threading.Event()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="nodered-diff-harness",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        watched = [(topic, SubscribeOptions(qos=2, retainAsPublished=True)) for topic in output_filters]
        self.client.subscribe([*watched, (PONG_TOPIC, SubscribeOptions(qos=0))])
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("the harness's MQTT client was not subscribed within 10 s")

    def __enter__(self) -> Session:
        return self

    def __exit__(self, _type: type[BaseException] | None, _value: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == PONG_TOPIC:
            self._pong.set()
            return
        with self._lock:
            self._outputs.append(Output(topic=message.topic, payload=bytes(message.payload), qos=message.qos,
                                        retain=bool(message.retain)))
            self._last_activity = time.monotonic()
            self._lock.notify_all()

    def publish(self, message: Input) -> None:
        info = self.client.publish(message.topic, message.payload, message.qos, message.retain)
        info.wait_for_publish(10)  # acknowledged (QoS 1, 2) or handed to the socket (QoS 0)
        with self._lock:
            self._last_activity = time.monotonic()

    def wait_ready(self, alive: Callable[[], bool], timeout: float) -> str | None:
        """Probe until the flow's probe path answers; None when ready, else why not."""
        deadline = time.monotonic() + timeout
        while True:
            self.client.publish(PING_TOPIC, b"ping", 0)
            if self._pong.wait(PROBE_INTERVAL):
                with self._lock:  # the quiet period counts from here at the earliest
                    self._last_activity = time.monotonic()
                return None
            if not alive():
                return "exited before it was ready"
            if time.monotonic() > deadline:
                return f"not ready within {timeout:g} s (no answer on the readiness probe)"

    def wait_done(self, case: Case, expected: int | None, alive: Callable[[], bool], deadline_s: float) -> str:
        """Wait until the case's ``count`` came, or until nothing came for the case's quiet period
        (or, while fewer than the ``expected`` number came, for the longer patience), or the
        deadline. Returns which ended it: count, quiet, exited or deadline."""
        patience = max(PATIENCE_MIN, PATIENCE_FACTOR * case.quiet_s)
        deadline = time.monotonic() + deadline_s
        with self._lock:
            while True:
                if case.count_reached(self._outputs):
                    return "count"
                short = expected is not None and len(case.counted(self._outputs)) < expected
                quiet_until = self._last_activity + (patience if short else case.quiet_s)
                now = time.monotonic()
                if now >= quiet_until:
                    return "quiet"
                if now >= deadline:
                    return "deadline"
                if not alive():
                    return "exited"
                # Woken by each message; the process is looked at every 0.2 s.
                self._lock.wait(min(quiet_until, deadline, now + 0.2) - now)

    def outputs(self) -> list[Output]:
        with self._lock:
            return list(self._outputs)
