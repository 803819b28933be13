"""The soak's flow and its numbers: the load, the bounds, the outages (see ``bench/soak.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RUNNER = BENCH_DIR / "soak_runner.py"

MODULE_ID = "soak_sec"
EVFLOW_CLIENT_ID = "soak-evflow"  # named, so that mosquitto's log says when evflow disconnected
DRIVER_CLIENT_ID = "soak-driver"

# The load.
Q0_RATE = 300.0  # msg/s
Q1_RATE = 100.0
REQUEST_RATE = 20.0  # one every 50 ms
STALL_RATE = 100.0
STALL_PAYLOAD_BYTES = 100
HEARTBEAT_INTERVAL_MS = 100

# The flow's bounds on the hung consumer's backlog.
MAX_HELD = 20_000
MAX_HELD_BYTES = 4 * 1024 * 1024
STALL_IN_QUEUE = 64  # the mqtt in's own buffer, before the held backlog
HEARTBEAT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 2.0

# The outages.
PAUSE_AT = (0.30, 0.65)  # fractions of the run
PAUSE_SECONDS = 20.0

RSS_BUDGET_KB = 15 * 1024
STRAGGLER_SECONDS = 10.0

# Deadlines of the waits (generous: they only bound a hang).
START_TIMEOUT = 60.0
EVFLOW_EXIT_TIMEOUT = 30.0  # evflow's own stop takes at most --stop-timeout (5 s)
ACK_TIMEOUT = 30.0
BARRIER_TIMEOUT = 15.0

# The driver keeps this many QoS 1 publishes unacknowledged at most, per stream: more than a 20 s
# outage produces, so that it goes on offering load while the broker is frozen (its client's own
# limit, max_unacknowledged, is raised to match).
Q1_WINDOW = 6_000
REQUEST_WINDOW = 2_000

STATS_LINE = re.compile(r"\bstats (\S+): (.*)$")


class SoakError(Exception):
    """The soak could not run (a process did not start, a wait passed its deadline)."""


# ---- the flow ------------------------------------------------------------------------------------------


def build_flow(broker_url: str) -> list[dict[str, Any]]:
    def mqtt_in(node_id: str, topic: str, qos: int, wires: list[list[str]], **extra: Any) -> dict[str, Any]:
        return {"id": node_id, "type": "mqtt in", "broker": "b", "topic": topic, "qos": qos,
                "datatype": "utf8", "wires": wires, **extra}

    def mqtt_out(node_id: str, qos: int, **where: Any) -> dict[str, Any]:
        return {"id": node_id, "type": "mqtt out", "broker": "b", "qos": qos, "wires": [], **where}

    return [
        {"id": "b", "type": "mqtt-broker", "broker": broker_url, "client_id": EVFLOW_CLIENT_ID,
         "max_held": MAX_HELD, "max_held_bytes": MAX_HELD_BYTES},
        {"id": "api", "type": "everest-api", "broker": "b", "module_id": MODULE_ID},
        # QoS 0 and QoS 1 forwarding.
        mqtt_in("q0_in", "soak/q0/in", 0, [["q0_out"]]),
        mqtt_out("q0_out", 0, topic="soak/q0/out"),
        mqtt_in("q1_in", "soak/q1/in", 1, [["q1_out"]]),
        mqtt_out("q1_out", 1, topic="soak/q1/out"),
        # Requests: each trigger on a topic of its own, its outcome published on a topic naming it.
        # QoS 1 on both sides, so that a missing answer is evflow's doing, not a lossy hop's.
        mqtt_in("req_in", "soak/req/+", 1, [["request"]]),
        {"id": "request", "type": "is-ca-certificate-installed", "api": "api", "certificate_type": "V2G",
         "timeout": REQUEST_TIMEOUT, "wires": [["tag_ok"], ["tag_failed"]]},
        {"id": "tag_ok", "type": "soak-tag", "prefix": "soak/done/ok", "wires": [["done_out"]]},
        {"id": "tag_failed", "type": "soak-tag", "prefix": "soak/done/failed", "wires": [["done_out"]]},
        mqtt_out("done_out", 1, allowed_topics=["soak/done/#"]),
        # EVerest's liveness, and ours.
        {"id": "hb", "type": "heartbeat", "api": "api", "timeout": HEARTBEAT_TIMEOUT,
         "wires": [["hb_out"], ["hb_events_out"]]},
        mqtt_out("hb_out", 0, topic="soak/hb/out"),
        mqtt_out("hb_events_out", 1, topic="soak/hb/events"),
        {"id": "keepalive", "type": "keepalive", "api": "api", "interval": 1, "everest_timeout": 5},
        # The hung consumer.
        mqtt_in("stall_in", "soak/stall", 0, [["stall"]], queue_size=STALL_IN_QUEUE, overflow="block"),
        {"id": "stall", "type": "soak-stall", "queue_size": 1, "wires": []},
    ]


