"""The monitor's routes, over the flow that runs now (``engine_now``: None while a reload swaps it).

* ``/healthz``: 200 while the process serves at all;
* ``/ready``: 200 or 503, with JSON naming what is not ready and since when (:mod:`.readiness`);
* ``/metrics``: Prometheus text (:mod:`.metrics`);
* ``/``: the status page (``page.html``, one self-contained file: the gateway has no internet);
* ``/api/flow``: the flow's nodes and wires, placed for drawing; ``/api/state``: each node's status,
  counters and readiness; ``/api/trace?node=ID``: the last messages that node sent, secrets masked.

Read-only: nothing here changes the flow. A trace copies each message the traced node sends, so at
most ``MAX_TRACES`` nodes are traced at once (the least recently asked for is dropped), and a trace
no page asked for within ``TRACE_IDLE`` seconds is dropped too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import trio

from evflow.nodes._redact import show

from .. import redaction
from ..engine import FlowEngine
from ..host import Trace
from ..properties import msg_id_text
from .http import Request, Response
from .layout import place
from .metrics import CONTENT_TYPE_LATEST, metrics_registry, render
from .readiness import flow_readiness

__all__ = ["Monitor"]

MAX_TRACES = 4
TRACE_SIZE = 20
TRACE_IDLE = 60.0
# A payload longer than this shows cut, with its full length.
PAYLOAD_SHOWN = 2000

_JSON = "application/json"


class Monitor:
    def __init__(self, engine_now: Callable[[], FlowEngine | None]) -> None:
        self.engine_now = engine_now
        self._registry = metrics_registry(engine_now)
        self._page: bytes | None = None
        # node id -> (the engine it traces, its trace, when a page last asked for it)
        self._traces: dict[str, tuple[FlowEngine, Trace, float]] = {}
        self._routes: dict[str, Callable[[Request], Response]] = {
            "/healthz": lambda _request: Response(200, b"ok\n"),
            "/ready": self._ready,
            "/metrics": lambda _request: Response(200, render(self._registry), CONTENT_TYPE_LATEST),
            "/": self._page_response,
            "/api/flow": self._flow,
            "/api/state": self._state,
            "/api/trace": self._trace,
        }

    def handle(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            return _json(404, {"error": f"no such page: {request.path}"})
        return route(request)

    def _ready(self, _request: Request) -> Response:
        readiness = flow_readiness(self.engine_now())
        return _json(200 if readiness.ready else 503, readiness.to_json())

    def _page_response(self, _request: Request) -> Response:
        if self._page is None:
            self._page = resources.files(__package__).joinpath("page.html").read_bytes()
        # The page runs its own inline script and talks only to this listener.
        policy = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                  "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'")
        return Response(200, self._page, "text/html; charset=utf-8", (("Content-Security-Policy", policy),))

    def _flow(self, _request: Request) -> Response:
        engine = self.engine_now()
        if engine is None:
            return _json(503, {"error": "the flows are being reloaded"})
        plan = engine.plan
        positions = place(plan)
        nodes = [{
            "id": node.id, "type": node.type, "name": _masked(node.name), "tab": node.tab,
            "is_config": node.is_config, "wires": [list(port) for port in node.wires],
            "x": positions[node.id][0], "y": positions[node.id][1],
        } for node in plan.nodes]
        tabs = [{"id": tab, "label": _masked(label)} for tab, label in plan.tabs.items()]
        return _json(200, {"tabs": tabs, "nodes": nodes})

    def _state(self, _request: Request) -> Response:
        engine = self.engine_now()
        readiness = flow_readiness(engine)
        nodes: dict[str, Any] = {}
        for state in engine.node_states() if engine is not None else ():
            nodes[state.id] = {
                "received": state.received, "sent": state.sent, "errors": state.errors,
                "dropped": state.dropped, "queued": state.queued, "counters": dict(state.counters),
                "status": {key: _masked(str(state.status[key])) for key in ("fill", "shape", "text")
                           if key in state.status},
                "ready": None if state.readiness is None else state.readiness.ready,
                "reason": "" if state.readiness is None else state.readiness.reason,
            }
        return _json(200, {"time": _iso(time.time()), "ready": readiness.to_json(), "nodes": nodes})

    def _trace(self, request: Request) -> Response:
        engine = self.engine_now()
        node_id = request.query.get("node", "")
        if engine is None:
            return _json(503, {"error": "the flows are being reloaded"})
        if not engine.has_node(node_id):
            return _json(404, {"error": f"no node {node_id!r} in the running flow"})
        trace = self._trace_of(engine, node_id)
        messages = [{
            "time": _iso(stamp, milliseconds=True), "port": port, "msg_id": msg_id_text(msg),
            "topic": _masked(msg.topic if isinstance(msg.topic, str) else _show(msg.topic)),
            "payload": _cut(_show(msg.payload)),
        } for stamp, port, msg in trace.messages]
        return _json(200, {"node": node_id, "messages": messages})

    def _trace_of(self, engine: FlowEngine, node_id: str) -> Trace:
        now = trio.current_time()
        for traced, (owner, trace, asked) in list(self._traces.items()):
            if owner is not engine or now - asked > TRACE_IDLE:  # a reloaded flow, or nobody looks
                owner.untrace(traced, trace)
                del self._traces[traced]
        known = self._traces.pop(node_id, None)
        trace = known[1] if known is not None else engine.trace(node_id, TRACE_SIZE)
        self._traces[node_id] = (engine, trace, now)  # last: the most recently asked for
        while len(self._traces) > MAX_TRACES:
            oldest = next(iter(self._traces))
            owner, dropped, _ = self._traces.pop(oldest)
            owner.untrace(oldest, dropped)
        return trace


def _show(value: Any) -> str:
    # The debug node's rendering: typed values as JSON, keys named like secrets masked, and every
    # secret evflow knows of (passwords, EVerest's key passphrases) replaced.
    return _masked(show(value))


def _masked(text: str) -> str:
    return redaction.redact(text)


def _cut(text: str) -> str:
    if len(text) <= PAYLOAD_SHOWN:
        return text
    return f"{text[:PAYLOAD_SHOWN]}… ({len(text)} characters)"


def _iso(stamp: float, milliseconds: bool = False) -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
    if milliseconds:
        text += f".{int(stamp * 1000) % 1000:03d}"
    return text + "Z"


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, ensure_ascii=False).encode(), _JSON)
