"""A running node's :class:`~evflow.runtime.nodeapi.NodeContext`: its identity, its wires, and its
way to report failures. The engine makes one per node; nodes see only the ``NodeContext`` part."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Mapping
from typing import Any

import trio

from .context import ContextStore
from .delivery import Inbox, InFlight
from .failures import FailureRouter
from .message import Message, new_message
from .nodeapi import ConfigNode, NodeInfo
from .ratelimit import RateLimitedLog

__all__ = ["NodeHost", "Tap", "Trace"]


class Tap:
    """Everything a node sends, as ``(port, message)``, for tests and tools. It never holds the flow
    back: when ``buffer`` messages wait unread, later ones are not kept, counted in :attr:`missed`."""

    def __init__(self, buffer: int) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[int, Message]](buffer)
        self.missed = 0

    def _put(self, port: int, msg: Message) -> None:
        try:
            self._send.send_nowait((port, msg.copy()))
        except trio.WouldBlock:
            self.missed += 1

    async def receive(self) -> tuple[int, Message]:
        return await self._receive.receive()

    def receive_nowait(self) -> tuple[int, Message]:
        return self._receive.receive_nowait()


class Trace:
    """The last ``size`` messages a node sent, each a copy with the wall-clock time and the port, for
    the status page: a ring, so a traced node never holds more than ``size`` copies."""

    def __init__(self, size: int) -> None:
        self.messages: collections.deque[tuple[float, int, Message]] = collections.deque(maxlen=size)

    def _put(self, port: int, msg: Message) -> None:
        self.messages.append((time.time(), port, msg.copy()))


class NodeHost:
    """See the module docstring. The engine fills in ``instance``, ``inbox`` and ``outputs``."""

    def __init__(
        self,
        *,
        node_id: str,
        node_type: str,
        name: str,
        tab: str,
        groups: tuple[str, ...],
        log: Any,
        error_port: int | None,
        failures: FailureRouter,
        in_flight: InFlight,
        log_error: RateLimitedLog,
        hosts: Mapping[str, NodeHost],
        context: ContextStore,
        flow: ContextStore,
        global_context: ContextStore,
        tab_label: str | None = None,
        group_name: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.name = name
        self.tab = tab
        # Its Node-RED group and the groups around it, innermost first.
        self.groups = groups
        self.group = groups[0] if groups else ""
        # What env.get says of them (NR_FLOW_NAME, NR_GROUP_NAME); None: no such tab or group.
        self._tab_label = tab_label
        self._group_name = group_name
        self.log = log
        self.context = context
        self.flow = flow
        self.global_context = global_context
        # The status it shows now (Node-RED's node.status), and who is told when it changes.
        self.last_status: Mapping[str, Any] = {}
        self.status_watchers: list[NodeHost] = []
        # Who receives each message it finished handling (Node-RED's complete node).
        self.complete_watchers: list[NodeHost] = []
        self.events_dropped = 0
        # Messages handled, sent (per send, on any port) and failed: the engine's counters of every
        # node, for /metrics and the status page; one integer add each on the hot path.
        self.received = 0
        self.sent = 0
        self.errors = 0
        self.error_port = error_port
        self.log_error = log_error
        self.instance: Any = None
        self.inbox: Inbox | None = None
        self.outputs: list[list[Inbox]] = []
        # Per output port: whether a node run inline is wired to it (send_nowait never runs one).
        self.inline_wired: list[bool] = []
        self.taps: list[Tap | Trace] = []
        self._failures = failures
        self._in_flight = in_flight
        self._hosts = hosts
        # A source is stopped between two sends, never in the middle of one: see request_stop.
        self.sending = 0
        self.source_scope: trio.CancelScope | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"<NodeHost {self.node_type} {self.node_id!r}>"

    # ---- NodeContext -----------------------------------------------------------------------------

    async def send(self, msg: Message, port: int = 0) -> None:
        if self._stopping:
            # A stopped source ends here, before delivering anything, not inside the next send's
            # wait; the message it took to send is counted as abandoned, not lost silently.
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
            except trio.Cancelled:
                self._in_flight.abandoned += 1
                raise
        self.sending += 1
        self.sent += 1
        try:
            if self.taps:
                self._tap(msg, port)
            targets = self.outputs[port]
            waited = False
            if len(targets) == 1:
                waited = await targets[0].put(msg)
            elif targets:
                # Copies first: the first target may change the message's payload as it runs inline.
                copies = [msg] + [msg.copy() for _ in range(len(targets) - 1)]
                for target, each in zip(targets, copies, strict=True):
                    waited = await target.put(each) or waited
            if not waited:
                # Honour cancellation without the full scheduler round trip of a checkpoint.
                await trio.lowlevel.checkpoint_if_cancelled()
        finally:
            self.sending -= 1
            if self._stopping and not self.sending:
                self.source_scope.cancel()  # type: ignore[union-attr]  # it was stopped during this send

    def send_nowait(self, msg: Message, port: int = 0) -> bool:
        if self.inline_wired[port]:
            return False
        targets = self.outputs[port]
        if len(targets) == 1:  # the common case: one check
            if not targets[0].has_room():
                return False
        elif targets:
            # A node wired twice to the port gets the message twice: it needs room for both.
            wanted = collections.Counter(map(id, targets))
            if not all(target.has_room(wanted[id(target)]) for target in targets):
                return False
        self.sent += 1
        if self.taps:
            self._tap(msg, port)
        for index, target in enumerate(targets):
            target.offer(msg if index == 0 else msg.copy())
        return True

    def can_send_nowait(self, port: int = 0) -> bool:
        return not self.inline_wired[port]

    async def error(self, error: BaseException | str, msg: Message | None = None) -> None:
        await self._failures.route(self, error, msg)

    def config_node(self, node_id: str) -> ConfigNode[Any]:
        return self._hosts[node_id].instance  # type: ignore[no-any-return]

    def nodes(self, node_type: str) -> tuple[NodeInfo, ...]:
        return tuple(NodeInfo(host.node_id, host.node_type, host.name, host.tab)
                     for host in self._hosts.values() if host.node_type == node_type)

    async def send_to(self, node_id: str, msg: Message) -> None:
        target = self._hosts.get(node_id)
        if target is None or target.inbox is None:
            raise ValueError(f"no node {node_id!r} that takes input")
        if not await target.inbox.put(msg):
            await trio.lowlevel.checkpoint_if_cancelled()

    def env(self, name: str) -> str | None:
        match name:
            case "NR_NODE_ID":
                return self.node_id
            case "NR_NODE_NAME":
                return self.name
            case "NR_FLOW_ID":
                return self.tab
            case "NR_FLOW_NAME" if self._tab_label is not None:
                return self._tab_label
            case "NR_GROUP_ID":
                return self.group
            case "NR_GROUP_NAME" if self._group_name is not None:
                return self._group_name
        return os.environ.get(name)

    def status(self, status: Mapping[str, Any]) -> None:
        self.last_status = dict(status)
        if not self.status_watchers:
            return
        shown = {key: status[key] for key in ("fill", "shape", "text") if key in status}
        shown["source"] = {"id": self.node_id, "type": self.node_type, "name": self.name}
        self._tell(self.status_watchers, new_message(None).with_props({"status": shown}))

    def _tell(self, watchers: list[NodeHost], msg: Message) -> None:
        """Hand an event to the nodes watching this one, without waiting: one whose queue is full
        misses it, counted (an event must never hold the node that caused it)."""
        for index, watcher in enumerate(watchers):
            inbox = watcher.inbox
            if inbox is not None and inbox.has_room():
                inbox.offer(msg if index == 0 else msg.copy())
            else:
                self.events_dropped += 1

    # ---- the engine's side -----------------------------------------------------------------------

    def is_wired(self, port: int) -> bool:
        return port < len(self.outputs) and bool(self.outputs[port])

    async def handle(self, msg: Message) -> None:
        """Run ``receive`` on one message: one bad message never stops the flow, its failure is routed."""
        self.received += 1
        try:
            await self.instance.receive(msg)
        except Exception as exc:
            await self._failures.route(self, exc, msg)
        else:
            if self.complete_watchers:
                # Node-RED's complete node says whose message it is: msg.complete.source.
                completed = msg.copy()
                source = {"id": self.node_id, "type": self.node_type, "name": self.name}
                self._tell(self.complete_watchers, completed.with_props({**completed.props, "complete": {"source": source}}))

    def request_stop(self) -> None:
        """Stop this source: now, or, when it is in the middle of sending, once that send is done
        (the message it was handing on is delivered, not lost)."""
        self._stopping = True
        if not self.sending and self.source_scope is not None:
            self.source_scope.cancel()

    def _tap(self, msg: Message, port: int) -> None:
        for tap in self.taps:
            tap._put(port, msg)
