"""The measurements. Each leg gets its own mosquitto and a freshly started system, and returns figures.

Timing rules, the same for every system:

* start: from just before the process is spawned to the first probe it forwards (a probe is
  published every 20 ms from the spawn on);
* CPU: user + system time from /proc/<pid>/stat, read just before the load starts and when the
  last forwarded message has arrived;
* RSS: VmRSS from /proc/<pid>/status once started and settled (idle), VmHWM after the load (peak).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    FORWARD_TOPIC,
    HEARTBEAT_TOPIC,
    MODULE_ID,
    RESULT_TOPIC,
    TRIGGER_TOPIC,
    Watcher,
    cpu_seconds,
    memory_mb,
    pid_running,
    private_broker,
)
from systems import Evflow, Running, user_environment

# After the first probe came through: let the probes still on their way drain before measuring.
SETTLE = 0.5
# Without a forwarded message for this long after the load was all published, the rest is lost.
STALL = 3.0
# mosquitto drops QoS 1 messages beyond 1000 queued for a client (max_queued_messages): a 50,000
# message burst would measure that drop policy, not the system. The throughput legs lift the limit.
THROUGHPUT_BROKER_CONFIG = ("max_queued_messages 0",)


class LegFailed(RuntimeError):
    pass


@contextmanager
def started(system: Any, kind: str, qos: int, port: int, *, probe_topic: str = HEARTBEAT_TOPIC,
            watch_topic: str = FORWARD_TOPIC) -> Iterator[tuple[Running, float]]:
    """The system started for ``kind`` and forwarding; yields it with its start-to-first-message time."""
    workdir = Path(tempfile.mkdtemp(prefix=f"evflow-bench-{system.name}-"))
    watcher = Watcher(port, watch_topic)
    running: Running | None = None
    try:
        spawned_at = time.monotonic()
        running = system.start(kind, qos, port, workdir)
        try:
            start_s = watcher.probe(probe_topic, spawned_at, running.alive)
        except RuntimeError as exc:
            raise LegFailed(f"{system.label} ({kind}): {exc}\n{running.log_tail()}") from None
        watcher.close()
        time.sleep(SETTLE)
        yield running, start_s
        if not running.alive() and not running.stopped:
            raise LegFailed(f"{system.label} ({kind}) exited during the measurement:\n{running.log_tail()}")
    finally:
        watcher.close()
        if running is not None:
            running.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def load_file(directory: Path, n: int) -> Path:
    """N JSON integers, one per line, for ``mosquitto_pub -l``; all >= 1000 so that every one is
    forwarded and ``mosquitto_sub -C N`` knows when the last one is through. Consecutive, as
    EVerest's heartbeat ids are."""
    path = directory / f"load-{n}.txt"
    if not path.exists():
        path.write_text("".join(f"{10_000 + i}\n" for i in range(n)))
    return path


def _counter(port: int, qos: int, count: int | None, output: Path) -> subprocess.Popen[bytes]:
    """mosquitto_sub on the forwarded topic; returns once the broker acknowledged its subscription.

    ``-d`` makes it log each packet, flushed as it comes: SUBACK says it is subscribed, and
    "received PUBLISH" lines count what arrived should some never come.
    """
    # stdbuf: line-buffered output, so the SUBACK line is in the file as soon as it is logged.
    argv = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", FORWARD_TOPIC, "-q", str(qos), "-d"]
    if count is not None:
        argv += ["-C", str(count)]
    with open(output, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while b"SUBACK" not in output.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise LegFailed(f"mosquitto_sub did not subscribe:\n{output.read_text(errors='replace')}")
        time.sleep(0.005)
    return process


def _received(output: Path) -> int:
    return output.read_bytes().count(b"received PUBLISH")


def throughput(system: Any, kind: str, qos: int, n: int, scratch: Path) -> dict[str, Any]:
    """N messages published by ``mosquitto_pub -l`` at ``qos``, counted by ``mosquitto_sub -C N``."""
    load = load_file(scratch, n)
    with private_broker(*THROUGHPUT_BROKER_CONFIG) as broker, started(system, kind, qos, broker.port) as (sut, start_s):
        idle_rss = memory_mb(sut.pid)["VmRSS"]
        counted = scratch / f"counted-{system.name}.txt"
        counter = _counter(broker.port, qos, n, counted)
        ended: dict[str, float] = {}

        def wait_for_last() -> None:
            counter.wait()
            ended["at"] = time.monotonic()
            ended["cpu"] = cpu_seconds(sut.pid)

        waiter = threading.Thread(target=wait_for_last, daemon=True)
        waiter.start()
        cpu_before = cpu_seconds(sut.pid)
        began, began_wall = time.monotonic(), time.time()
        with open(load, "rb") as lines:
            publisher = subprocess.Popen(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", HEARTBEAT_TOPIC, "-q", str(qos), "-l"],
                stdin=lines, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        size, grew_at = -1, time.monotonic()
        while waiter.is_alive():
            waiter.join(0.1)
            now_size = counted.stat().st_size
            if now_size != size:
                size, grew_at = now_size, time.monotonic()
            elif publisher.poll() is not None and time.monotonic() - grew_at > STALL:
                break  # messages were lost: count what came
        publisher.wait()
        if "at" in ended:
            received, elapsed, cpu_after = n, ended["at"] - began, ended["cpu"]
        else:
            cpu_after = cpu_seconds(sut.pid)
            counter.terminate()
            counter.wait()
            received = _received(counted)
            # The time of the last arrival: mosquitto_sub flushes each message to the file it writes.
            elapsed = counted.stat().st_mtime - began_wall
        peak_rss = memory_mb(sut.pid)["VmHWM"]
    if received == 0:
        raise LegFailed(f"{system.label} ({kind}, QoS {qos}) forwarded nothing")
    return {
        "msg_per_s": received / elapsed,
        "cpu_us_per_msg": (cpu_after - cpu_before) / received * 1e6,
        "received": received,
        "lost": n - received,
        "idle_rss_mb": idle_rss,
        "peak_rss_mb": peak_rss,
        "start_s": start_s,
    }


def overload(system: Any, duration: float) -> dict[str, Any]:
    """QoS 0 input as fast as ``mosquitto_pub`` can send (far faster than any of the systems forwards)
    for ``duration`` seconds; RSS sampled twice a second. Bounded queues keep it flat: the backlog
    stays in the broker and the kernel's socket buffers."""
    with private_broker() as broker, started(system, "forward", 0, broker.port) as (sut, _start_s):
        idle_rss = memory_mb(sut.pid)["VmRSS"]
        sink = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", FORWARD_TOPIC],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        feed = subprocess.Popen(["yes", "5000"], stdout=subprocess.PIPE)
        publisher = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", HEARTBEAT_TOPIC, "-l"],
            stdin=feed.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        assert feed.stdout is not None
        feed.stdout.close()  # the publisher holds the pipe now
        samples: list[float] = []
        cpu_before = cpu_seconds(sut.pid)
        began = time.monotonic()
        while time.monotonic() - began < duration:
            time.sleep(0.5)
            samples.append(memory_mb(sut.pid)["VmRSS"])
        cpu_share = (cpu_seconds(sut.pid) - cpu_before) / (time.monotonic() - began)
        peak_rss = memory_mb(sut.pid)["VmHWM"]
        # Where the backlog went: mosquitto queues what a slow subscriber has not read yet.
        broker_pid = pid_running(broker.workdir / "mosquitto.conf")
        broker_peak = memory_mb(broker_pid)["VmHWM"] if broker_pid else float("nan")
        for process in (publisher, feed, sink):
            process.terminate()
        for process in (publisher, feed, sink):
            process.wait()
    third = len(samples) // 3
    return {
        "idle_rss_mb": idle_rss,
        "peak_rss_mb": peak_rss,
        # From a third of the way in to the end: a bounded system has filled its queues by then.
        "growth_mb": samples[-1] - samples[third],
        "cpu_share": cpu_share,
        "broker_peak_rss_mb": broker_peak,
        "rss_samples_mb": samples,
    }


def idle(system: Any, duration: float) -> dict[str, Any]:
    """CPU over ``duration`` seconds with a 1 Hz heartbeat forwarded and the keepalive running."""
    with private_broker() as broker, started(system, "idle", 0, broker.port) as (sut, _start_s):
        beats = Watcher(broker.port, FORWARD_TOPIC)
        try:
            beat = 100_000

            def heartbeat_for(seconds: float) -> None:
                nonlocal beat
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    beats.publish(HEARTBEAT_TOPIC, str(beat))
                    beat += 1
                    time.sleep(min(1.0, max(0.0, until - time.monotonic())))

            heartbeat_for(2)  # into the steady state: connections, timers and caches warm
            cpu_before, began = cpu_seconds(sut.pid), time.monotonic()
            heartbeat_for(duration)
            cpu = cpu_seconds(sut.pid) - cpu_before
            elapsed = time.monotonic() - began
            forwarded = beats.arrivals
        finally:
            beats.close()
        rss = memory_mb(sut.pid)["VmRSS"]
    if forwarded == 0:
        raise LegFailed(f"{system.label} (idle) forwarded no heartbeat")
    return {"cpu_percent": cpu / elapsed * 100, "rss_mb": rss}


@contextmanager
def everest_responder(port: int) -> Iterator[None]:
    """The fast EVerest stand-in (bench/everest_responder.py), subscribed when this yields."""
    responder = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "everest_responder.py"), "--port", str(port), "--module-id", MODULE_ID],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=user_environment(),
    )
    try:
        assert responder.stdout is not None
        if responder.stdout.readline().strip() != b"ready":
            raise LegFailed("the EVerest responder did not start")
        yield
    finally:
        responder.terminate()
        responder.wait()


def requests(system: Any, latency_count: int, levels: list[int], count: int) -> dict[str, Any]:
    """The request path against a fast EVerest responder, on mosquitto's default configuration."""
    with private_broker() as broker, everest_responder(broker.port), \
            started(system, "request", 0, broker.port, probe_topic=TRIGGER_TOPIC, watch_topic=RESULT_TOPIC) as (sut, _s):
        cpu_before = cpu_seconds(sut.pid)
        driven = subprocess.run(
            [sys.executable, str(BENCH_DIR / "request_driver.py"), "--port", str(broker.port),
             "--latency-count", str(latency_count), "--levels", ",".join(map(str, levels)), "--count", str(count)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=user_environment(),
        )
        cpu = cpu_seconds(sut.pid) - cpu_before
        peak_rss = memory_mb(sut.pid)["VmHWM"]
    try:
        report = json.loads(driven.stdout)
    except ValueError:
        raise LegFailed(f"{system.label} (request): the driver failed:\n{driven.stdout}{driven.stderr}") from None
    if "error" in report:
        raise LegFailed(f"{system.label} (request): {report['error']}")
    report["cpu_s"] = cpu
    report["peak_rss_mb"] = peak_rss
    return report


def warm_up(system: Any, kind: str) -> None:
    """Start once and forward once, unmeasured: Python writes its .pyc files, the page cache fills."""
    with private_broker() as broker:
        if kind == "request":
            with everest_responder(broker.port), started(system, kind, 0, broker.port, probe_topic=TRIGGER_TOPIC,
                                                         watch_topic=RESULT_TOPIC):
                pass
        else:
            with started(system, kind, 0, broker.port):
                pass


# ---- imports ---------------------------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_floor_rss() -> float:
    """RSS of a Python that has only imported what evflow cannot do without."""
    code = ("import trio, paho.mqtt.client, attrs, cattrs\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=user_environment())
    return int(done.stdout) / 1024


def _top_level_imports(stderr: str) -> list[tuple[str, int]]:
    """(module, cumulative µs) of each import made at the top level, from ``-X importtime`` output."""
    found = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and len(match.group(3)) == 1:  # one space of indent: imported by the program itself
            found.append((match.group(4), int(match.group(2))))
    return found


def _importtime(argv: list[str]) -> list[tuple[str, int]]:
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                          env=user_environment())
    return _top_level_imports(done.stderr)


def import_times(scratch: Path) -> dict[str, Any]:
    """evflow's import time (ms): ``import evflow.runtime.cli``, and everything ``evflow run`` imports
    up to its first forwarded message; both less what the interpreter imports to start at all."""
    interpreter = sum(us for _name, us in _importtime(["-c", "pass"]))
    cli = sum(us for _name, us in _importtime(["-c", "import evflow.runtime.cli"])) - interpreter
    # The run path: a real `evflow run` of the forwarding flow, stopped once it forwards.
    timed = Evflow(python_options=["-X", "importtime"])
    with private_broker() as broker, started(timed, "forward", 0, broker.port) as (sut, _start_s):
        sut.stop()
        run_imports = _top_level_imports(sut.log_path.read_text(errors="replace"))
    run_total = sum(us for _name, us in run_imports) - interpreter
    heaviest = sorted(run_imports, key=lambda item: -item[1])[:8]
    return {
        "interpreter_ms": interpreter / 1000,
        "cli_ms": cli / 1000,
        "run_ms": run_total / 1000,
        "run_heaviest_ms": [(name, us / 1000) for name, us in heaviest],
    }
