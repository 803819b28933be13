"""The flow engine: runs a checked :class:`FlowPlan` in a trio nursery it owns.

Each node with input has an :class:`~evflow.runtime.delivery.Inbox` (a bounded queue and its
workers); a wire is a delivery into the target's inbox, so a slow node holds back its senders
instead of growing a queue (see :mod:`evflow.runtime.delivery`). Failures go where
:mod:`evflow.runtime.failures` says. Nodes see only their :class:`~evflow.runtime.host.NodeHost`.

Start and stop are phases with barriers between them (Node-RED's stop has none):

* start: config nodes serve, each once those it names are up → every node's ``start`` → sources run;
* stop: sources stop (each between two sends, so the message it is handing on is delivered) →
  messages in flight drain (``drain_timeout``) → every node's ``close`` (``close_timeout``) →
  config nodes close one at a time, each before those it names; the whole stop within
  ``stop_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio

from . import redaction
from .context import Contexts
from .delivery import Inbox, InboxStats, InFlight, Overflow
from .errors import EvflowError
from .failures import FailureRouter, covers
from .host import NodeHost, Tap, Trace
from .message import Message
from .nodeapi import OperationStats, Readiness
from .ratelimit import RateLimitedLog
from .validate import FlowPlan, PlannedNode

__all__ = ["FlowEngine", "FlowFailed", "FlowStartError", "NodeState"]

log = logging.getLogger("evflow.engine")


class FlowStartError(EvflowError):
    """A node could not start; the flow does not run."""


class FlowFailed(EvflowError):
    """A source kept failing beyond its restart limit: the flow stops, loudly."""


@attrs.frozen
class NodeState:
    """A node of the running flow as it is now, for ``/ready``, ``/metrics`` and the status page:
    the engine's counters of every node (messages handled, sent, failed, dropped at its input, and
    queued there), the node's own counters, the status it shows and its readiness."""

    id: str
    type: str
    name: str
    tab: str
    is_config: bool
    received: int
    sent: int
    errors: int
    dropped: int
    queued: int
    counters: Mapping[str, int]
    status: Mapping[str, Any]
    readiness: Readiness | None
    # a client of an EVerest API: per operation, latency and timeouts
    requests: Mapping[str, OperationStats]


class _NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A node's log: its lines begin with its name (or id) and carry its id and type (JSON logs);
    ``level``, when set, is the node's own (``--node-log-level``), above or below the global one."""

    def __init__(self, logger: logging.Logger, node_id: str, node_type: str, shown: str, level: int | None) -> None:
        super().__init__(logger, {"node_id": node_id, "node_type": node_type})
        self.prefix = f"[{shown}] "
        self.level = level

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.get("extra")
        kwargs["extra"] = self.extra if not extra else {**self.extra, **extra}  # type: ignore[dict-item]
        return self.prefix + str(msg), kwargs

    def isEnabledFor(self, level: int) -> bool:
        if self.level is not None:
            return level >= self.level
        return self.logger.isEnabledFor(level)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            # Past the logger's own level check: this node's level was checked just above.
            self.logger._log(level, msg, args, **kwargs)


class FlowEngine:
    def __init__(
        self,
        plan: FlowPlan,
        *,
        queue_size: int = 64,
        stop_timeout: float = 5.0,
        drain_timeout: float = 2.0,
        close_timeout: float = 2.0,
        node_log_levels: Mapping[str, int] | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        restart_delay: float = 0.1,
    ) -> None:
        self.plan = plan
        self.queue_size = queue_size
        self.stop_timeout = stop_timeout
        self.drain_timeout = drain_timeout
        self.close_timeout = close_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.restart_delay = restart_delay
        self._in_flight = InFlight()
        self._failures = FailureRouter()
        self._stop = trio.Event()
        self._running = False
        # Set when run() has gone through every shutdown phase.
        self.stopped = trio.Event()
        self._planned: dict[str, PlannedNode] = {planned.id: planned for planned in plan.nodes}
        self._hosts: dict[str, NodeHost] = {}
        self.contexts = Contexts()
        for planned in plan.nodes:
            _register_secrets(planned.config)
            node_log = _NodeLog(logging.getLogger(f"evflow.node.{planned.type}"), planned.id, planned.type,
                                planned.name or planned.id, (node_log_levels or {}).get(planned.id))
            self._hosts[planned.id] = NodeHost(
                node_id=planned.id, node_type=planned.type, name=planned.name, tab=planned.tab,
                groups=plan.groups_of(planned.group), tab_label=plan.tabs.get(planned.tab),
                group_name=plan.group_names.get(planned.group),
                log=node_log, context=self.contexts.node(planned.id), flow=self.contexts.flow(planned.tab),
                global_context=self.contexts.global_store,
                error_port=None if planned.is_config else planned.node_class.error_port,
                failures=self._failures, in_flight=self._in_flight,
                log_error=RateLimitedLog(node_log, logging.ERROR), hosts=self._hosts,
            )

    # ---- control and views -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin the shutdown phases (idempotent; safe from any trio task)."""
        self._stop.set()

    @property
    def in_flight(self) -> int:
        """Messages accepted by some node and not yet handled (or dropped)."""
        return self._in_flight.count

    @property
    def errors_logged(self) -> int:
        return self._failures.errors_logged

    @property
    def errors_routed(self) -> int:
        return self._failures.errors_routed

    @property
    def abandoned(self) -> int:
        """Messages a sender took and did not hand on: cancelled while waiting for room (the stop's
        deadline, or a timeout of its own), or taken by a source that was being stopped."""
        return self._in_flight.abandoned

    def node(self, node_id: str) -> Any:
        """The running instance of a node (for tests and tools)."""
        return self._hosts[node_id].instance

    def inbox_stats(self, node_id: str) -> InboxStats:
        """The node's input queue now (for tests and tools)."""
        inbox = self._hosts[node_id].inbox
        if inbox is None:
            raise ValueError(f"{self._hosts[node_id].node_type} {node_id!r} takes no input")
        return inbox.statistics()

    def runs_inline(self, node_id: str) -> bool:
        """Whether the engine may run the node in its senders' tasks (see :mod:`.delivery`)."""
        inbox = self._hosts[node_id].inbox
        return inbox is not None and inbox.inline

    def tap(self, node_id: str, buffer: int = 10_000) -> Tap:
        """Everything ``node_id`` sends from now on, as ``(port, message)``, wired or not (for tests
        and tools): each a copy; beyond ``buffer`` unread ones, not kept but counted (``missed``)."""
        tap = Tap(buffer)
        self._hosts[node_id].taps.append(tap)
        return tap

    def has_node(self, node_id: str) -> bool:
        return node_id in self._hosts

    def trace(self, node_id: str, size: int) -> Trace:
        """Keep the last ``size`` messages ``node_id`` sends from now on (the status page)."""
        trace = Trace(size)
        self._hosts[node_id].taps.append(trace)
        return trace

    def untrace(self, node_id: str, trace: Trace) -> None:
        taps = self._hosts[node_id].taps
        if trace in taps:
            taps.remove(trace)

    async def inject(self, node_id: str, msg: Message) -> None:
        """Deliver ``msg`` to ``node_id``'s input, as a wire would (for tests and tools)."""
        host = self._hosts[node_id]
        if host.inbox is None:
            raise ValueError(f"{host.node_type} {node_id!r} takes no input")
        if not await host.inbox.put(msg):
            await trio.lowlevel.checkpoint()

    @property
    def running(self) -> bool:
        """Whether the flow runs: every node started, and no stop asked for."""
        return self._running and not self._stop.is_set()

    def node_states(self) -> list[NodeState]:
        """Every node as it is now, in flow-file order (see :class:`NodeState`). Cheap enough to
        call once a second: it reads counters the nodes keep anyway."""
        states = []
        for host in self._hosts.values():
            instance = host.instance
            is_config = self._planned[host.node_id].is_config
            inbox = host.inbox
            queued = inbox.statistics() if inbox is not None else None
            states.append(NodeState(
                id=host.node_id, type=host.node_type, name=host.name, tab=host.tab,
                is_config=is_config,
                received=host.received, sent=host.sent, errors=host.errors,
                dropped=queued.dropped if queued is not None else 0,
                queued=queued.queued + queued.waiting_senders if queued is not None else 0,
                counters=dict(instance.stats()) if instance is not None else {},
                status=host.last_status,
                readiness=instance.readiness() if instance is not None else None,
                requests=instance.request_stats() if is_config and instance is not None else {},
            ))
        return states

    def readiness(self) -> list[tuple[str, str, str, Readiness]]:
        """``(id, type, name, readiness)`` of each node that has a say (see :meth:`node_states`, which
        also reads every counter: this is the watchdog's look, several times a minute)."""
        found = []
        for host in self._hosts.values():
            readiness = host.instance.readiness() if host.instance is not None else None
            if readiness is not None:
                found.append((host.node_id, host.node_type, host.name, readiness))
        return found

    def stats(self) -> dict[str, dict[str, int]]:
        """Every node's counters, and the engine's own for it (drops at its input)."""
        report: dict[str, dict[str, int]] = {}
        for host in self._hosts.values():
            counters = dict(host.instance.stats()) if host.instance is not None else {}
            if host.inbox is not None and host.inbox.dropped:
                counters["input_dropped"] = host.inbox.dropped
            if counters:
                report[host.node_id] = counters
        report["engine"] = {"errors_logged": self.errors_logged, "errors_routed": self.errors_routed}
        if self.abandoned:
            report["engine"]["abandoned"] = self.abandoned
        return report

    # ---- run -------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[FlowEngine] = trio.TASK_STATUS_IGNORED) -> None:
        config_ids = _in_dependency_order([p for p in self.plan.nodes if p.is_config], self._planned)
        node_ids = [p.id for p in self.plan.nodes if not p.is_config]
        self._wire(node_ids)
        async with trio.open_nursery() as services:
            served: list[tuple[str, trio.CancelScope, trio.Event]] = []
            stop_by = None
            try:
                for node_id in config_ids:
                    served.append(await self._serve(services, node_id))
                stop_by = await self._run_nodes(node_ids, task_status)
            finally:
                # Also when the flow failed to start; not when cancelled (a second signal).
                await self._close_config_nodes(reversed(served), stop_by or trio.current_time() + self.close_timeout)
                services.cancel_scope.cancel()
        self._log_stats()
        log.info("flow stopped")
        self.stopped.set()

    async def _run_nodes(self, node_ids: list[str], task_status: trio.TaskStatus[FlowEngine]) -> float:
        """Run the nodes until asked to stop, then stop them; returns the deadline of the whole stop."""
        hosts = [self._hosts[node_id] for node_id in node_ids]
        for host in hosts:
            planned = self._planned[host.node_id]
            host.instance = planned.node_class(host, planned.config)
            scope = planned.node_class.error_scope(planned.config)
            if scope is not None:
                self._failures.add_catcher(host, scope)
        _watch(hosts, self._planned)
        async with trio.open_nursery() as workers:
            for host in hosts:
                if host.inbox is not None:
                    planned = self._planned[host.node_id]
                    for _ in range(max(1, planned.node_class.concurrency_of(planned.config))):
                        workers.start_soon(host.inbox.work)
            await _start_all(hosts)
            sources = [host for host in hosts if self._planned[host.node_id].node_class.is_source]
            async with trio.open_nursery() as running:
                for host in sources:
                    host.source_scope = trio.CancelScope()  # cancellable before its task runs
                    running.start_soon(self._run_source, host)
                log.info("flow running: %d nodes", len(self._hosts))
                self._running = True
                task_status.started(self)
                await self._stop.wait()
                self._running = False
                stop_at = trio.current_time()
                log.info("stopping: sources")
                for host in sources:
                    host.request_stop()
                # A source still handing a message on when the drain's deadline passes is cancelled.
                drain_by = stop_at + min(self.drain_timeout, self.stop_timeout * 0.4)
                running.cancel_scope.deadline = drain_by
            await self._drain(stop_at, drain_by)
            # Nodes close within close_timeout, leaving a fifth of the stop to the config nodes.
            stop_by = stop_at + self.stop_timeout
            close_within = min(self.close_timeout, stop_by - self.stop_timeout * 0.2 - trio.current_time())
            await _close_all(hosts, "node", close_within)
            workers.cancel_scope.cancel()
        return stop_by

    def _wire(self, node_ids: Iterable[str]) -> None:
        for node_id in node_ids:
            planned, host = self._planned[node_id], self._hosts[node_id]
            node_class = planned.node_class
            if not node_class.takes_input(planned.config):
                continue
            overflow = Overflow(planned.overflow)
            capacity = planned.queue_size or self.queue_size
            # A node with a drop policy would rather drop than hold its sender: it keeps its queue.
            one_at_a_time = node_class.concurrency_of(planned.config) == 1
            host.inbox = Inbox(
                capacity=capacity, overflow=overflow,
                inline=node_class.inline and overflow is Overflow.BLOCK and one_at_a_time,
                handle=host.handle, in_flight=self._in_flight, on_drop=_drop_reporter(host, capacity, overflow),
            )
        for node_id in node_ids:
            host = self._hosts[node_id]
            host.outputs = [
                [self._hosts[target].inbox for target in port if self._hosts[target].inbox is not None]  # type: ignore[misc]
                for port in self._planned[node_id].wires
            ]
            host.inline_wired = [any(target.inline for target in port) for port in host.outputs]

    async def _serve(self, nursery: trio.Nursery, node_id: str) -> tuple[str, trio.CancelScope, trio.Event]:
        """Start a config node's ``serve`` in a scope of its own, so that it can end alone."""
        host, planned = self._hosts[node_id], self._planned[node_id]
        host.instance = planned.node_class(host, planned.config)
        scope = trio.CancelScope()
        ended = trio.Event()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            try:
                with scope:
                    await host.instance.serve(task_status=task_status)
            finally:
                ended.set()

        try:
            await nursery.start(serve)
        except EvflowError as exc:
            raise FlowStartError(f"{host.node_type} {node_id!r} did not start: {exc}") from None
        return node_id, scope, ended

    async def _close_config_nodes(
        self, served: Iterable[tuple[str, trio.CancelScope, trio.Event]], deadline: float
    ) -> None:
        """One at a time, each before the config nodes it names (an API client ends before its
        broker connection does): ``close``, then its ``serve`` is cancelled and has ended."""
        for node_id, scope, ended in served:
            host = self._hosts[node_id]
            await _close_all([host], "config node", max(deadline - trio.current_time(), 0.0))
            scope.cancel()
            with trio.move_on_at(deadline):
                await ended.wait()

    async def _run_source(self, host: NodeHost) -> None:
        """Run a source; after a failure, restart it, OTP style: more than ``max_restarts`` failures
        within ``restart_window`` seconds fail the whole flow with the reason."""
        failures: list[float] = []
        with host.source_scope:  # type: ignore[union-attr]
            while True:
                try:
                    await host.instance.run()
                    return  # a source that is done (an inject that sent its `repeat`)
                except Exception as exc:
                    await self._failures.route(host, exc, None)
                    now = trio.current_time()
                    failures = [t for t in failures if now - t < self.restart_window] + [now]
                    if len(failures) > self.max_restarts:
                        raise FlowFailed(
                            f"{host.node_type} {host.node_id!r} failed {len(failures)} times within "
                            f"{self.restart_window:g} s; last: {type(exc).__name__}: {exc}"
                        ) from None
                    host.log.warning("source failed (%s: %s); restarting", type(exc).__name__, exc)
                    await trio.sleep(self.restart_delay)

    async def _drain(self, stop_at: float, deadline: float) -> None:
        """Until every message in flight is handled, or the drain's deadline (which counts from the
        stop: a source that took long to stop has used part of it)."""
        if self._in_flight.count == 0:
            return
        log.info("stopping: draining %d message(s) in flight", self._in_flight.count)
        with trio.move_on_at(deadline):
            await self._in_flight.wait_drained()
            return
        log.warning("stopping: %d message(s) still in flight after %g s, dropped",
                    self._in_flight.count, deadline - stop_at)

    def _log_stats(self) -> None:
        for node_id, counters in self.stats().items():
            log.info("stats %s: %s", node_id, " ".join(f"{key}={value}" for key, value in counters.items()))


def _drop_reporter(host: NodeHost, capacity: int, overflow: Overflow) -> Any:
    log_drop = RateLimitedLog(host.log, logging.WARNING)

    def report(dropped: int) -> None:
        log_drop("input queue full (%d): dropped a message (%s), %d so far", capacity, overflow, dropped)

    return report


async def _start_all(hosts: list[NodeHost]) -> None:
    failures: list[str] = []

    async def start(host: NodeHost) -> None:
        try:
            await host.instance.start()
        except EvflowError as exc:
            failures.append(f"{host.node_type} {host.node_id!r} did not start: {exc}")

    async with trio.open_nursery() as starting:
        for host in hosts:
            starting.start_soon(start, host)
    if failures:
        raise FlowStartError("; ".join(failures))


async def _close_all(hosts: list[NodeHost], what: str, timeout: float) -> None:
    """Every node's ``close`` at once, each within ``timeout``; a failure is logged, not raised."""

    async def close(host: NodeHost) -> None:
        with trio.move_on_after(max(timeout, 0.0)) as scope:
            try:
                await host.instance.close()
            except Exception as exc:
                host.log.error("%s failed to close: %s", what, exc)
        if scope.cancelled_caught:
            host.log.error("%s did not close within %.1f s", what, timeout)

    async with trio.open_nursery() as closing:
        for host in hosts:
            if host.instance is not None:
                closing.start_soon(close, host)


def _register_secrets(config: Any) -> None:
    """Every secret of a node's config, at any depth, is masked in what evflow logs."""
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if field.metadata.get("evflow_secret") and isinstance(value, str):
            redaction.add(value)
        elif attrs.has(type(value)):
            _register_secrets(value)


def _watch(hosts: list[NodeHost], planned: Mapping[str, PlannedNode]) -> None:
    """Tell each node who watches its status and its completed messages."""
    for watcher in hosts:
        node = planned[watcher.node_id]
        status_scope = node.node_class.status_scope(node.config)
        complete_scope = node.node_class.complete_scope(node.config)
        # As Node-RED: a node that lists ids does not watch the nodes it is wired to (a simple loop).
        wired = {target for port in node.wires for target in port}
        for host in hosts:
            if host.node_id in wired and any(scope is not None and scope.node_ids is not None
                                             for scope in (status_scope, complete_scope)):
                continue
            if status_scope is not None and covers(status_scope, watcher, host):
                host.status_watchers.append(watcher)
            if complete_scope is not None and covers(complete_scope, watcher, host):
                host.complete_watchers.append(watcher)


def _in_dependency_order(planned: list[PlannedNode], by_id: dict[str, PlannedNode]) -> list[str]:
    """Config node ids ordered so that each comes after the config nodes it refers to."""
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(node: PlannedNode) -> None:
        if node.id in seen:
            return
        seen.add(node.id)
        for reference in node.references():
            target = by_id.get(reference)
            if target is not None and target.is_config:
                visit(target)
        ordered.append(node.id)

    for node in planned:
        visit(node)
    return ordered
