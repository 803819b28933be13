"""The measuring end of the request legs: publishes triggers, times the results, prints JSON.

One paho client on its own loop in this thread, so nothing is handed between threads while timing.
It sends with TCP_NODELAY and acknowledges reads at once: as an instrument it must not add a stall
of its own to the system it measures.

* latency: ``--latency-count`` requests one at a time (after a few unmeasured ones); p50 and p99 of
  trigger published → result received;
* throughput: for each level in ``--levels``, that many triggers kept in flight (each result sends
  the next) until ``--count`` results came; results per second.

    python bench/request_driver.py --port 1883 --latency-count 300 --levels 16,64,256 --count 2000
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
WARM_UP = 10


class Driver:
    def __init__(self, port: int, trigger_topic: str, result_topic: str, timeout: float) -> None:
        self.trigger_topic = trigger_topic
        self.timeout = timeout
        self.results = 0
        self.last_result_at = 0.0
        self.subscribed = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe(result_topic, 0)
        self._loop_until(lambda: self.subscribed)

    def _on_subscribe(self, *_: object) -> None:
        self.subscribed = True

    def _on_message(self, client: paho.Client, _userdata: object, _message: paho.MQTTMessage) -> None:
        self.last_result_at = time.perf_counter()
        self.results += 1
        if _TCP_QUICKACK is not None:
            client.socket().setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def _loop_until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            self.client.loop(timeout=0.05)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no progress within {self.timeout:g} s ({self.results} results so far)")

    def trigger(self) -> None:
        # Outside paho's callbacks, publish writes to the socket at once.
        self.client.publish(self.trigger_topic, b"1", 0)

    def one_at_a_time(self, count: int) -> list[float]:
        """Round trips in ms."""
        round_trips = []
        for _ in range(count):
            expected = self.results + 1
            sent_at = time.perf_counter()
            self.trigger()
            self._loop_until(lambda expected=expected: self.results >= expected)
            round_trips.append((self.last_result_at - sent_at) * 1000)
        return round_trips

    def in_flight(self, level: int, count: int) -> float:
        """Results per second with ``level`` triggers outstanding."""
        base = self.results
        started = time.perf_counter()
        sent = 0
        for _ in range(min(level, count)):
            self.trigger()
            sent += 1
        deadline = time.monotonic() + self.timeout
        while self.results - base < count:
            before = self.results
            self.client.loop(timeout=0.05)
            for _ in range(self.results - before):  # one new trigger per result
                if sent < count:
                    self.trigger()
                    sent += 1
            if self.results > before:
                deadline = time.monotonic() + self.timeout
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{level} in flight: stalled at {self.results - base} of {count} results")
        return count / (self.last_result_at - started)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--trigger-topic", default="bench/request/trigger")
    parser.add_argument("--result-topic", default="bench/request/result")
    parser.add_argument("--latency-count", type=int, default=300)
    parser.add_argument("--levels", default="16,64,256")
    parser.add_argument("--count", type=int, default=2000, help="results per in-flight level")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds without progress before giving up")
    args = parser.parse_args()

    driver = Driver(args.port, args.trigger_topic, args.result_topic, args.timeout)
    report: dict[str, object] = {}
    try:
        driver.one_at_a_time(WARM_UP)
        round_trips = driver.one_at_a_time(args.latency_count)
        report["p50_ms"] = statistics.median(round_trips)
        report["p99_ms"] = percentile(round_trips, 0.99)
        for level in (int(text) for text in args.levels.split(",") if text):
            report[f"rps_{level}"] = driver.in_flight(level, args.count)
    except TimeoutError as exc:
        report["error"] = str(exc)
    driver.client.disconnect()
    print(json.dumps(report))
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
