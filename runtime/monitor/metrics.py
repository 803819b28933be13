"""``/metrics``: the running flow in Prometheus' text format, written by prometheus-client's own
exposition from a collector that reads the engine's counters when scraped (nothing is counted twice,
nothing is added to the message path).

Families (labels ``node``, ``type``, ``name`` name a node):

* ``evflow_up`` (1 while the flows run), ``evflow_ready`` (see :mod:`.readiness`),
  ``evflow_node_ready`` per node that has a say;
* per node: ``evflow_node_received_total``, ``_sent_total``, ``_errors_total``, ``_dropped_total``
  (at its input, by its queue's policy), ``evflow_node_queue_depth`` (messages and senders waiting
  at its input), and every counter a node keeps as ``evflow_node_counter_total{counter=...}``;
* ``evflow_node_status_info`` (1, labels ``fill``, ``shape``, ``text``): the status a node shows;
* per EVerest API client and operation: ``evflow_request_duration_seconds`` (histogram of the
  answered requests), ``evflow_request_timeouts_total``; per client ``evflow_request_duplicates_total``
  (EVerest's second answers) and ``evflow_request_late_total``;
* heartbeats: ``evflow_heartbeat_gaps_total``, ``_restarts_total``, ``_lost_total``;
* brokers: ``evflow_broker_connected``, ``evflow_broker_connection_losses_total``;
* ``process_*`` (resident memory, CPU seconds, open files) from prometheus-client's process collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ..engine import FlowEngine
from ..protocol.requests import LATENCY_BUCKETS
from .readiness import flow_readiness

__all__ = ["CONTENT_TYPE_LATEST", "FlowCollector", "metrics_registry", "render"]

_NODE = ["node", "type", "name"]


class FlowCollector(Collector):
    """Reads the current engine at each scrape (``engine_now``: None between a reload's stop and start)."""

    def __init__(self, engine_now: Callable[[], FlowEngine | None]) -> None:
        self.engine_now = engine_now

    def collect(self) -> Iterator[Metric]:
        engine = self.engine_now()
        up = GaugeMetricFamily("evflow_up", "1 while the flows run")
        up.add_metric([], 1 if engine is not None and engine.running else 0)
        yield up
        readiness = flow_readiness(engine)
        ready = GaugeMetricFamily("evflow_ready", "1 while every broker, heartbeat and keepalive is ready")
        ready.add_metric([], 1 if readiness.ready else 0)
        yield ready
        if engine is None:
            return
        yield from _node_families(engine)


def _node_families(engine: FlowEngine) -> Iterator[Metric]:
    received = CounterMetricFamily("evflow_node_received", "messages a node handled", labels=_NODE)
    sent = CounterMetricFamily("evflow_node_sent", "messages a node sent (each send, on any port)", labels=_NODE)
    errors = CounterMetricFamily("evflow_node_errors", "failures of a node (routed or logged)", labels=_NODE)
    dropped = CounterMetricFamily("evflow_node_dropped", "messages dropped at a node's input by its queue's policy",
                                  labels=_NODE)
    depth = GaugeMetricFamily("evflow_node_queue_depth", "messages and senders waiting at a node's input",
                              labels=_NODE)
    counters = CounterMetricFamily("evflow_node_counter", "a counter a node keeps", labels=[*_NODE, "counter"])
    node_ready = GaugeMetricFamily("evflow_node_ready", "1 while a node that has a say is ready", labels=_NODE)
    status = GaugeMetricFamily("evflow_node_status_info", "the status a node shows",
                               labels=[*_NODE, "fill", "shape", "text"])
    duration = HistogramMetricFamily("evflow_request_duration_seconds", "time to an answer, per operation",
                                     labels=["node", "operation"])
    timeouts = CounterMetricFamily("evflow_request_timeouts", "requests not answered in time",
                                   labels=["node", "operation"])
    duplicates = CounterMetricFamily("evflow_request_duplicates", "second answers to a request (EVerest "
                                     "answers boolean requests twice)", labels=["node"])
    late = CounterMetricFamily("evflow_request_late", "answers after the request was given up", labels=["node"])
    gaps = CounterMetricFamily("evflow_heartbeat_gaps", "heartbeat ids skipped", labels=["node"])
    restarts = CounterMetricFamily("evflow_heartbeat_restarts", "heartbeat counter went back (EVerest restarted)",
                                   labels=["node"])
    lost = CounterMetricFamily("evflow_heartbeat_lost", "heartbeat silences longer than the timeout",
                               labels=["node"])
    connected = GaugeMetricFamily("evflow_broker_connected", "1 while the broker connection is up", labels=["node"])
    losses = CounterMetricFamily("evflow_broker_connection_losses", "broker connections lost", labels=["node"])
    for state in engine.node_states():
        labels = [state.id, state.type, state.name]
        if not state.is_config:
            received.add_metric(labels, state.received)
            sent.add_metric(labels, state.sent)
            errors.add_metric(labels, state.errors)
            dropped.add_metric(labels, state.dropped)
            depth.add_metric(labels, state.queued)
        for counter, value in state.counters.items():
            counters.add_metric([*labels, counter], value)
        if state.readiness is not None:
            node_ready.add_metric(labels, 1 if state.readiness.ready else 0)
        if state.status:
            status.add_metric([*labels, *(str(state.status.get(key, "")) for key in ("fill", "shape", "text"))], 1)
        for operation, stats in state.requests.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), stats.latency.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            duration.add_metric([state.id, operation], buckets, stats.latency.total)
            timeouts.add_metric([state.id, operation], stats.timeouts)
        if state.requests:
            duplicates.add_metric([state.id], state.counters.get("requests_duplicate", 0))
            late.add_metric([state.id], state.counters.get("requests_late", 0))
        if state.type == "heartbeat" and "gaps" in state.counters:
            gaps.add_metric([state.id], state.counters["gaps"])
            restarts.add_metric([state.id], state.counters["restarts"])
            lost.add_metric([state.id], state.counters["lost"])
        if state.type == "mqtt-broker":
            connected.add_metric([state.id], 1 if state.readiness is not None and state.readiness.ready else 0)
            losses.add_metric([state.id], state.counters.get("connection_losses", 0))
    yield from (received, sent, errors, dropped, depth, counters, node_ready, status, duration, timeouts,
                duplicates, late, gaps, restarts, lost, connected, losses)


def metrics_registry(engine_now: Callable[[], FlowEngine | None]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowCollector(engine_now))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
