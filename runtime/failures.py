"""Where a node's failure goes: its error port if it has one wired, else the ``catch`` nodes whose
scope covers it, else the log (once per burst). As Node-RED does, the failed message carries the
error (``msg.error``), and a message that keeps failing along a loop is dropped after
:data:`MAX_ERROR_DEPTH` errors in a row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import leaves
from .message import Message, NodeError, new_message
from .nodeapi import Scope
from .properties import msg_id_text

if TYPE_CHECKING:
    from .host import NodeHost

__all__ = ["MAX_ERROR_DEPTH", "FailureRouter", "covers"]

# Errors caused while handling an error message, in a row, before the engine stops routing them.
MAX_ERROR_DEPTH = 10


class FailureRouter:
    def __init__(self) -> None:
        self._catchers: list[tuple[NodeHost, Scope]] = []
        self.errors_logged = 0
        self.errors_routed = 0

    def add_catcher(self, host: NodeHost, scope: Scope) -> None:
        self._catchers.append((host, scope))

    async def route(self, host: NodeHost, error: BaseException | str, msg: Message | None) -> None:
        host.errors += 1
        previous = msg.error.count if msg is not None and msg.error is not None else 0
        text, kind = _describe(error)
        node_error = NodeError(
            message=text,
            source_id=host.node_id,
            source_type=host.node_type,
            source_name=host.name,
            kind=kind,
            count=previous + 1,
        )
        if node_error.count > MAX_ERROR_DEPTH:
            host.log.error("error loop: dropped a message after %d errors in a row: %s", previous, text)
            return
        self.errors_routed += 1
        failed = (msg if msg is not None else new_message(None)).with_error(node_error)
        port = host.error_port
        if port is not None and host.is_wired(port):
            await host.send(failed, port)
            return
        catchers = self._catchers_of(host)
        if catchers:
            for index, catcher in enumerate(catchers):
                await catcher.inbox.put(failed if index == 0 else failed.copy())  # type: ignore[union-attr]
            return
        self.errors_logged += 1
        # Once per burst: a flood of failures must not flood the log. A JSON line names the message.
        host.log_error("%s", text, extra={"msg_id": msg_id_text(msg)} if msg is not None else None)

    def _catchers_of(self, host: NodeHost) -> list[NodeHost]:
        scoped = [(catcher, scope) for catcher, scope in self._catchers if covers(scope, catcher, host)]
        regular = [catcher for catcher, scope in scoped if not scope.uncaught]
        return regular or [catcher for catcher, scope in scoped if scope.uncaught]


def covers(scope: Scope, watcher: NodeHost, host: NodeHost) -> bool:
    """Whether ``watcher``, with ``scope``, receives ``host``'s events (failures, status, completion)."""
    if watcher is host:
        return False
    if scope.node_ids is not None:
        return host.node_id in scope.node_ids
    if scope.group and watcher.group:
        # Node-RED: the watcher's group, the groups within it included.
        return watcher.group in host.groups
    return watcher.tab == host.tab  # a group scope outside any group: the tab, as Node-RED


def _describe(error: BaseException | str) -> tuple[str, str]:
    """A failure's text and kind; a node's own nursery raises an exception group, which is told by
    what is in it (not as "Exceptions from Trio nursery")."""
    if isinstance(error, str):
        return error, ""
    if isinstance(error, BaseExceptionGroup):
        inside = list(leaves(error))
        return "; ".join(_describe(leaf)[0] for leaf in inside), ", ".join(type(leaf).__name__ for leaf in inside)
    return str(error) or type(error).__name__, type(error).__name__

