"""Whether the running flow does its job now: the flow runs, and every node that has a say
(:meth:`~evflow.runtime.nodeapi.Node.readiness`: broker connections, heartbeats, keepalives) says
ready. ``/ready`` reports it, systemd's watchdog is fed only while it holds."""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio

from ..engine import FlowEngine

__all__ = ["FlowReadiness", "NotReady", "flow_readiness"]


@attrs.frozen
class NotReady:
    """A node that is not ready (or the flow itself: ``node_id`` ""), why, and since when (Unix time)."""

    node_id: str
    node_type: str
    name: str
    reason: str
    since: float | None


@attrs.frozen
class FlowReadiness:
    ready: bool
    not_ready: tuple[NotReady, ...] = ()

    @property
    def reason(self) -> str:
        """One line for a log or systemd's STATUS: what is not ready."""
        return "; ".join(f"{item.node_type} {item.node_id}: {item.reason}" if item.node_id else item.reason
                         for item in self.not_ready)

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "not_ready": [
            {"node": item.node_id, "type": item.node_type, "name": item.name, "reason": item.reason,
             "since": _iso(item.since)} for item in self.not_ready]}


def flow_readiness(engine: FlowEngine | None) -> FlowReadiness:
    """The readiness of ``engine`` now (None: no flow runs, as between a reload's stop and start)."""
    if engine is None or not engine.running:
        return FlowReadiness(False, (NotReady("", "", "", "the flows are not running", None),))
    # Nodes keep trio's clock; a person reads wall-clock time.
    to_wall = time.time() - trio.current_time()
    not_ready = tuple(
        NotReady(node_id, node_type, name, readiness.reason,
                 None if readiness.since is None else readiness.since + to_wall)
        for node_id, node_type, name, readiness in engine.readiness()
        if not readiness.ready
    )
    return FlowReadiness(not not_ready, not_ready)


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
