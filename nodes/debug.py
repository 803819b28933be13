"""``debug``: prints each message on stdout, for trying flows."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from evflow.runtime.nodeapi import Message, Node
from evflow.runtime.output import stdout_writer

from ._paths import PropertyPath, path_validator
from ._redact import REDACTED, is_secret_path, show


@attrs.frozen(kw_only=True)
class DebugConfig:
    # property path to print instead of the payload, e.g. "payload.info" or "msg" (the whole message)
    complete: str | None = attrs.field(default=None, validator=attrs.validators.optional(path_validator))


class Debug(Node[DebugConfig]):
    """Prints each message on stdout as one line, secrets redacted: for trying flows. A stdout that
    does not keep up never holds the flow back: lines wait in a queue, and beyond 10,000 are dropped,
    counted.

    ::

        [debug <name or id>] <topic>: <payload as compact JSON>

    (without ``<topic>: `` when the topic is empty). ``complete`` names a property path to print
    instead of the payload (``"payload.info"``, ``"error"``, or ``"msg"`` for the whole message);
    a property that is not there prints as ``<missing>``. Typed payloads print in their JSON form,
    and secrets are redacted as by ``log``: the value of any key named ``password``, ``passphrase``,
    ``secret``, ``token`` or ``key_password`` prints as ``"***"``. No output port.
    """

    type = "debug"
    Config = DebugConfig
    inline = True

    def __init__(self, context: Any, config: DebugConfig) -> None:
        super().__init__(context, config)
        self._prefix = f"[debug {context.name or context.node_id}] "
        path = PropertyPath.parse(config.complete if config.complete is not None else "payload")
        self._get = path.get
        self._secret = is_secret_path(path)
        self._out = stdout_writer()

    @classmethod
    def outputs(cls, config: DebugConfig) -> int:
        return 0

    def line(self, msg: Message) -> str:
        shown = REDACTED if self._secret else show(self._get(msg))
        if msg.topic:
            return f"{self._prefix}{msg.topic}: {shown}"
        return self._prefix + shown

    async def receive(self, msg: Message) -> None:
        # Written by a thread of its own, a line at a time: a stdout that does not keep up (a full
        # pipe) never blocks the flow; what does not fit in its queue is dropped, counted.
        self._out.write(self.line(msg) + "\n")

    async def close(self) -> None:
        # What was printed is out when the flow has stopped (unless stdout is stalled).
        await trio.to_thread.run_sync(self._out.flush, 1.0, abandon_on_cancel=True)

    def stats(self) -> dict[str, int]:
        return {"stdout_dropped": self._out.dropped} if self._out.dropped else {}
