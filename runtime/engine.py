"""The flow engine: runs a checked :class:`FlowPlan` in a trio nursery it owns.

Each node with input is one or more worker tasks reading a bounded memory channel; a wire is a send
on the target's channel, so a slow node holds back its senders instead of growing a queue. Messages
are frozen, so fan-out hands the same object to every target.

A node type declared ``inline`` (its ``receive`` only computes and sends) is run in the sender's task
when it is idle and nothing waits in its queue: a chain like mqtt in → filter → mqtt out then costs no
task switch per message, while order, one-at-a-time delivery and backpressure stay as with the queue.

Start and stop are phases with barriers between them (Node-RED's stop has none):

* start: config nodes serve (in dependency order) → every node's ``start`` → sources run;
* stop: sources cancelled → messages in flight drain (``drain_timeout``) → every node's ``close``
  (``close_timeout``) → config nodes close, in reverse order; the whole stop within ``stop_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from . import redaction
from .errors import EvflowError
from .message import Message, NodeError, new_message
from .nodeapi import ConfigNode, ErrorScope
from .ratelimit import RateLimitedLog
from .validate import FlowPlan, PlannedNode

__all__ = ["FlowEngine", "FlowFailed", "FlowStartError"]

log = logging.getLogger("evflow.engine")

# Errors caused while handling an error message, in a row, before the engine stops routing them.
MAX_ERROR_DEPTH = 10


class FlowStartError(EvflowError):
    """A node could not start; the flow does not run."""


class _NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['node']}] {msg}", kwargs  # type: ignore[index]


class FlowFailed(EvflowError):
    """A source kept failing beyond its restart limit: the flow stops, loudly."""


@attrs.define(eq=False)
class _Host:
    """A node's :class:`NodeContext`: its identity and its wires."""

    engine: FlowEngine
    plan: PlannedNode
    node_id: str
    node_type: str
    name: str
    tab: str
    log: Any
    outputs: list[list[_Host]] = attrs.field(factory=list)
    # Per output port: whether an inline node is wired to it (send_nowait cannot run one).
    inline_wired: list[bool] = attrs.field(factory=list)
    instance: Any = None
    inbox: trio.MemorySendChannel[Message] | None = None
    inbox_out: trio.MemoryReceiveChannel[Message] | None = None
    blocking: bool = True  # overflow "block"; else "drop-oldest"/"drop-newest"
    dropped: int = 0
    last_status: str = ""
    log_error: Any = None
    log_drop: Any = None
    taps: list[trio.MemorySendChannel[tuple[int, Message]]] = attrs.field(factory=list)
    # For an inline node: whether a message is being handled (inline or by its worker), how many wait
    # in its queue (sent, not yet started), and its worker parked while an inline run finishes.
    inline: bool = False
    busy: bool = False
    queued: int = 0
    idle: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)

    async def send(self, msg: Message, port: int = 0) -> None:
        if self.taps:
            for tap in self.taps:
                tap.send_nowait((port, msg))  # a tool's view: sized by the tool, never blocks the flow
        waited = False
        for target in self.outputs[port]:
            waited = await target.deliver(msg) or waited
        if not waited:
            # Still honour cancellation, without the full scheduler round trip of a checkpoint.
            await trio.lowlevel.checkpoint_if_cancelled()

    def send_nowait(self, msg: Message, port: int = 0) -> bool:
        """Deliver ``msg`` to every node wired to ``port`` if each can queue it at once; else to none."""
        targets = self.outputs[port]
        if self.inline_wired[port]:
            return False
        if len(targets) == 1 and targets[0].blocking and not self.taps:
            target = targets[0]  # the common case: one attempt is the check
            try:
                target.inbox.send_nowait(msg)  # type: ignore[union-attr]
            except trio.WouldBlock:
                return False
            target.queued += 1
            self.engine._in_flight += 1
            return True
        # A node wired twice to the port needs room for two.
        if not all(_has_room(target, targets.count(target)) for target in targets if target.blocking):
            return False
        for tap in self.taps:
            tap.send_nowait((port, msg))  # as in send: a tool's view, before the wires
        for target in targets:
            self.engine._in_flight += 1
            if target.blocking:
                target.queued += 1
                target.inbox.send_nowait(msg)  # type: ignore[union-attr]
            else:
                target._offer(msg)
        return True

    def can_send_nowait(self, port: int = 0) -> bool:
        return not self.inline_wired[port]

    async def deliver(self, msg: Message) -> bool:
        """Hand ``msg`` to this node: run it here when inline and idle, else queue it (waiting while
        the queue is full, or by the drop policy). True when it went through a checkpoint."""
        engine = self.engine
        engine._in_flight += 1
        if self.inline and not self.busy and not self.queued:
            await self.handle(msg)
            return False
        if self.blocking:
            self.queued += 1
            try:
                # A queue with room takes it without the scheduler round trip that `send` costs.
                self.inbox.send_nowait(msg)  # type: ignore[union-attr]
                return False
            except trio.WouldBlock:
                pass
            try:
                await self.inbox.send(msg)  # type: ignore[union-attr]
            except BaseException:  # not delivered (cancelled at shutdown): not in flight either
                self.queued -= 1
                engine._in_flight -= 1
                engine.abandoned_at_stop += 1
                raise
            return True
        self._offer(msg)
        return False

    async def handle(self, msg: Message) -> None:
        """Run ``receive`` on one message, in whichever task: one bad message never stops the flow,
        its failure is routed."""
        self.busy = True
        try:
            await self.instance.receive(msg)
        except Exception as exc:
            await self.engine._route_error(self, exc, msg)
        finally:
            self.busy = False
            self.engine._done_one()
            if self.idle:  # a worker waits for an inline run to end
                self.idle.unpark()

    def _offer(self, msg: Message) -> None:
        """Deliver without waiting, by this node's drop policy (counted and logged, never silent)."""
        assert self.inbox is not None and self.inbox_out is not None
        try:
            self.inbox.send_nowait(msg)
            self.queued += 1
            return
        except trio.WouldBlock:
            pass
        self.engine._in_flight -= 1  # one message is dropped: this one, or the oldest queued
        if self.plan.overflow == "drop-oldest":
            self.inbox_out.receive_nowait()
            self.inbox.send_nowait(msg)
        self.dropped += 1
        self.log_drop("input queue full (%d): dropped a message (%s), %d so far", self.engine.queue_size_of(self),
                      self.plan.overflow, self.dropped)

    async def error(self, error: BaseException | str, msg: Message | None = None) -> None:
        await self.engine._route_error(self, error, msg)

    def status(self, text: str) -> None:
        self.last_status = text
        self.log.debug("status: %s", text)

    def config_node(self, node_id: str) -> ConfigNode[Any]:
        return self.engine._hosts[node_id].instance


class FlowEngine:
    def __init__(
        self,
        plan: FlowPlan,
        *,
        queue_size: int = 64,
        stop_timeout: float = 5.0,
        drain_timeout: float = 2.0,
        close_timeout: float = 2.0,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        restart_delay: float = 0.1,
    ) -> None:
        self.plan = plan
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.restart_delay = restart_delay
        self.queue_size = queue_size
        self.drain_timeout = drain_timeout
        self.close_timeout = close_timeout
        self.errors_logged = 0
        self.errors_routed = 0
        # Messages a sender was still handing on (waiting on a full queue) when it was cancelled at stop.
        self.abandoned_at_stop = 0
        self._in_flight = 0
        self._draining = False
        self._drained = trio.Event()
        self._stop = trio.Event()
        # Set when run() has gone through every shutdown phase.
        self.stopped = trio.Event()
        self._hosts: dict[str, _Host] = {}
        self._catchers: list[tuple[_Host, ErrorScope]] = []
        for planned in plan.nodes:
            for field in attrs.fields(type(planned.config)):
                value = getattr(planned.config, field.name)
                if field.metadata.get("evflow_secret") and isinstance(value, str):
                    redaction.add(value)
            logger = logging.getLogger(f"evflow.node.{planned.type}")
            node_log = _NodeLog(logger, {"node": planned.name or planned.id})
            node_class = planned.node_class
            self._hosts[planned.id] = _Host(
                self, planned, planned.id, planned.type, planned.name, planned.tab, node_log,
                blocking=planned.overflow == "block",
                # A node with a drop policy would rather drop than hold its sender: it keeps its queue.
                inline=not planned.is_config and getattr(node_class, "inline", False)
                and planned.overflow == "block" and node_class.concurrency_of(planned.config) == 1,
                log_error=RateLimitedLog(node_log, logging.ERROR),  # type: ignore[arg-type]
                log_drop=RateLimitedLog(node_log, logging.WARNING),  # type: ignore[arg-type]
            )

    # ---- control ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin the shutdown phases (idempotent; safe from any trio task)."""
        self._stop.set()

    def host(self, node_id: str) -> _Host:
        return self._hosts[node_id]

    def node(self, node_id: str) -> Any:
        """The running instance of a node (for tests and tools)."""
        return self._hosts[node_id].instance

    def tap(self, node_id: str, buffer: int = 10_000) -> trio.MemoryReceiveChannel[tuple[int, Message]]:
        """Everything ``node_id`` sends from now on, as ``(port, message)``, wired or not (for tests
        and tools; a tap that is not read fills up and raises in the flow, so read it)."""
        send, receive = trio.open_memory_channel[tuple[int, Message]](buffer)
        self._hosts[node_id].taps.append(send)
        return receive

    async def inject(self, node_id: str, msg: Message) -> None:
        """Deliver ``msg`` to ``node_id``'s input, as a wire would (for tests and tools)."""
        host = self._hosts[node_id]
        if host.inbox is None:
            raise ValueError(f"{host.node_type} {node_id!r} takes no input")
        if not await host.deliver(msg):
            await trio.lowlevel.checkpoint()

    # ---- run -------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[FlowEngine] = trio.TASK_STATUS_IGNORED) -> None:
        config_hosts = _in_dependency_order([h for h in self._hosts.values() if h.plan.is_config], self._hosts)
        node_hosts = [h for h in self._hosts.values() if not h.plan.is_config]
        self._wire(node_hosts)
        async with trio.open_nursery() as services:
            for host in config_hosts:
                host.instance = host.plan.node_class(host, host.plan.config)
                await _start_service(services, host)
            for host in node_hosts:
                host.instance = host.plan.node_class(host, host.plan.config)
                scope = host.plan.node_class.error_scope(host.plan.config)
                if scope is not None:
                    self._catchers.append((host, scope))
            async with trio.open_nursery() as workers:
                for host in node_hosts:
                    if host.inbox_out is not None:
                        for _ in range(max(1, host.plan.node_class.concurrency_of(host.plan.config))):
                            workers.start_soon(self._work, host, host.inbox_out.clone())
                await _start_all(node_hosts)
                async with trio.open_nursery() as sources:
                    for host in node_hosts:
                        if host.plan.node_class.is_source:
                            sources.start_soon(self._run_source, host)
                    log.info("flow running: %d nodes", len(self._hosts))
                    task_status.started(self)
                    await self._stop.wait()
                    log.info("stopping: sources")
                    sources.cancel_scope.cancel()
                stop_by = trio.current_time() + self.stop_timeout
                # Each phase gets its own timeout, and leaves the next ones a share of the deadline.
                await self._drain(min(self.drain_timeout, self.stop_timeout * 0.4))
                await self._close_all(node_hosts, "node", min(self.close_timeout, stop_by - trio.current_time() - self.stop_timeout * 0.2))
                workers.cancel_scope.cancel()
            await self._close_all(list(reversed(config_hosts)), "config node", stop_by - trio.current_time())
            services.cancel_scope.cancel()
        self._log_stats()
        log.info("flow stopped")
        self.stopped.set()

    def stats(self) -> dict[str, dict[str, int]]:
        """Every node's counters, and the engine's own for it (drops at its input)."""
        report: dict[str, dict[str, int]] = {}
        for host in self._hosts.values():
            counters = dict(host.instance.stats()) if host.instance is not None else {}
            if host.dropped:
                counters["input_dropped"] = host.dropped
            if counters:
                report[host.node_id] = counters
        report["engine"] = {"errors_logged": self.errors_logged, "errors_routed": self.errors_routed}
        if self.abandoned_at_stop:
            report["engine"]["abandoned_at_stop"] = self.abandoned_at_stop
        return report

    def _log_stats(self) -> None:
        for node_id, counters in self.stats().items():
            log.info("stats %s: %s", node_id, " ".join(f"{key}={value}" for key, value in counters.items()))

    def queue_size_of(self, host: _Host) -> int:
        return host.plan.queue_size or self.queue_size

    def _wire(self, node_hosts: Iterable[_Host]) -> None:
        for host in node_hosts:
            if host.plan.node_class.has_input:
                host.inbox, host.inbox_out = trio.open_memory_channel[Message](self.queue_size_of(host))
        for host in node_hosts:
            host.outputs = [
                [self._hosts[target] for target in port if self._hosts[target].inbox is not None]
                for port in host.plan.wires
            ]
            host.inline_wired = [any(target.inline for target in port) for port in host.outputs]

    async def _work(self, host: _Host, inbox: trio.MemoryReceiveChannel[Message]) -> None:
        async with inbox:
            async for msg in inbox:
                while host.busy and host.inline:  # an inline run in a sender's task unparks us when done
                    await host.idle.park()
                host.queued -= 1
                await host.handle(msg)

    def _done_one(self) -> None:
        self._in_flight -= 1
        if self._draining and self._in_flight == 0:
            self._drained.set()

    async def _run_source(self, host: _Host) -> None:
        """Run a source; after a failure, restart it, OTP style: more than ``max_restarts`` failures
        within ``restart_window`` seconds fail the whole flow with the reason."""
        failures: list[float] = []
        while True:
            try:
                await host.instance.run()
                return  # a source that is done (an inject that sent its `repeat`)
            except Exception as exc:
                await self._route_error(host, exc, None)
                now = trio.current_time()
                failures = [t for t in failures if now - t < self.restart_window] + [now]
                if len(failures) > self.max_restarts:
                    raise FlowFailed(
                        f"{host.node_type} {host.node_id!r} failed {len(failures)} times within "
                        f"{self.restart_window:g} s; last: {type(exc).__name__}: {exc}"
                    ) from None
                host.log.warning("source failed (%s: %s); restarting", type(exc).__name__, exc)
                await trio.sleep(self.restart_delay)

    async def _drain(self, timeout: float) -> None:
        self._draining = True
        if self._in_flight == 0:
            return
        log.info("stopping: draining %d message(s) in flight", self._in_flight)
        with trio.move_on_after(timeout):
            await self._drained.wait()
            return
        log.warning("stopping: %d message(s) still in flight after %g s, dropped", self._in_flight, timeout)

    async def _close_all(self, hosts: list[_Host], what: str, timeout: float) -> None:
        timeout = max(timeout, 0.0)

        async def close(host: _Host) -> None:
            with trio.move_on_after(timeout) as scope:
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

    # ---- errors ----------------------------------------------------------------------------------

    async def _route_error(self, host: _Host, error: BaseException | str, msg: Message | None) -> None:
        previous = msg.error.count if msg is not None and msg.error is not None else 0
        text = error if isinstance(error, str) else (str(error) or type(error).__name__)
        node_error = NodeError(
            message=text,
            source_id=host.node_id,
            source_type=host.node_type,
            source_name=host.name,
            kind="" if isinstance(error, str) else type(error).__name__,
            count=previous + 1,
        )
        if node_error.count > MAX_ERROR_DEPTH:
            host.log.error("error loop: dropped a message after %d errors in a row: %s", previous, text)
            return
        self.errors_routed += 1
        failed = (msg if msg is not None else new_message(None)).with_error(node_error)
        port = host.plan.node_class.error_port
        if port is not None and port < len(host.outputs) and host.outputs[port]:
            await host.send(failed, port)
            return
        catchers = self._catchers_of(host)
        if catchers:
            for catcher in catchers:
                await catcher.deliver(failed)
            return
        self.errors_logged += 1
        host.log_error("%s", text)  # once per burst: a flood of failures must not flood the log

    def _catchers_of(self, host: _Host) -> list[_Host]:
        scoped = [
            (catcher, scope)
            for catcher, scope in self._catchers
            if catcher is not host
            and (scope.node_ids is not None and host.node_id in scope.node_ids
                 or scope.node_ids is None and catcher.tab == host.tab)
        ]
        regular = [catcher for catcher, scope in scoped if not scope.uncaught]
        return regular or [catcher for catcher, scope in scoped if scope.uncaught]


def _has_room(host: _Host, count: int) -> bool:
    """Whether ``count`` messages fit in ``host``'s queue now."""
    room = host.inbox.statistics()  # type: ignore[union-attr]
    return room.max_buffer_size - room.current_buffer_used >= count


async def _start_service(nursery: trio.Nursery, host: _Host) -> None:
    try:
        await nursery.start(host.instance.serve)
    except EvflowError as exc:
        raise FlowStartError(f"{host.node_type} {host.node_id!r} did not start: {exc}") from None


async def _start_all(hosts: list[_Host]) -> None:
    failures: list[str] = []

    async def start(host: _Host) -> None:
        try:
            await host.instance.start()
        except EvflowError as exc:
            failures.append(f"{host.node_type} {host.node_id!r} did not start: {exc}")

    async with trio.open_nursery() as starting:
        for host in hosts:
            starting.start_soon(start, host)
    if failures:
        raise FlowStartError("; ".join(failures))


def _in_dependency_order(hosts: list[_Host], all_hosts: dict[str, _Host]) -> list[_Host]:
    """Config nodes ordered so that each comes after the config nodes it refers to."""
    ordered: list[_Host] = []
    seen: set[str] = set()

    def visit(host: _Host) -> None:
        if host.node_id in seen:
            return
        seen.add(host.node_id)
        for reference in host.plan.references():
            target = all_hosts.get(reference)
            if target is not None and target.plan.is_config:
                visit(target)
        ordered.append(host)

    for host in hosts:
        visit(host)
    return ordered
