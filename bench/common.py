"""What every part of the bench shares: topics, /proc readings, brokers, and the harness's own MQTT client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from evflow.runtime.mosquitto import MosquittoBroker

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# Node-RED, the plotting venv and the raw results live here, outside the repository.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evflow-bench"

# The forwarding legs read EVerest's heartbeat topic: the flows "receive heartbeat", with `mqtt in`
# or with the `heartbeat` node (which derives this topic from the module id).
MODULE_ID = "bench_security"
API_BASE = f"everest_api/1/evse_security_consumer/{MODULE_ID}"
HEARTBEAT_TOPIC = f"{API_BASE}/e2m/heartbeat"
FORWARD_TOPIC = "bench/forwarded"
TRIGGER_TOPIC = "bench/request/trigger"
RESULT_TOPIC = "bench/request/result"

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


# ---- /proc -------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all its threads, live and ended)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (the peak resident size since the process started), in MB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    return values


def pid_running(config: Path) -> int | None:
    """The pid of the process whose command line names ``config`` (a broker we started)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(config).encode() in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue  # ended meanwhile
    return None


# ---- brokers -------------------------------------------------------------------------------------------


@contextmanager
def private_broker(*extra_config: str) -> Iterator[MosquittoBroker]:
    """A mosquitto of our own on a free port, with evflow's test configuration (mosquitto's defaults
    otherwise, as on a gateway: Nagle on, 20 messages in flight per client)."""
    workdir = Path(tempfile.mkdtemp(prefix="evflow-bench-mosquitto-"))
    broker = MosquittoBroker(workdir, extra_config=list(extra_config)).start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the harness's own client ------------------------------------------------------------------------------


def tune_socket(sock: socket.socket | None, *, quickack: bool = False) -> None:
    """TCP_NODELAY, and with ``quickack`` an immediate ACK of what was read so far. The bench's own
    clients are measuring instruments: they must not add mosquitto's Nagle/delayed-ACK stall (SPEC.md,
    Brokers) to what they measure."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if quickack and _TCP_QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


class Watcher:
    """A paho client of the harness, on paho's background thread: it publishes probes and notes when
    messages arrive on the topic it watches."""

    def __init__(self, port: int, watched_topic: str) -> None:
        self.arrivals = 0
        self._closed = False
        self.first_arrival: float | None = None
        self._arrived = threading.Event()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=60)
        tune_socket(self.client.socket())
        self.client.subscribe(watched_topic, 0)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("the harness's MQTT client was not subscribed within 5 s")

    def _on_message(self, _client: object, _userdata: object, _message: paho.MQTTMessage) -> None:
        tune_socket(self.client.socket(), quickack=True)
        if self.first_arrival is None:
            self.first_arrival = time.monotonic()
            self._arrived.set()
        self.arrivals += 1

    def probe(self, topic: str, started_at: float, alive: Callable[[], bool], timeout: float = 60.0) -> float:
        """Publish a probe every 20 ms until one comes out on the watched topic; return the seconds
        from ``started_at`` (the system's process start) to that first forwarded message."""
        beat = 1000  # heartbeat ids >= 1000 pass every flow's filter, counting up as EVerest's do
        deadline = started_at + timeout
        while True:
            self.client.publish(topic, json.dumps(beat), 0)
            beat += 1
            if self._arrived.wait(0.02):
                assert self.first_arrival is not None
                return self.first_arrival - started_at
            if not alive():
                raise RuntimeError("the system under test exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing was forwarded within {timeout:g} s of the start")

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, 0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.disconnect()
            self.client.loop_stop()
