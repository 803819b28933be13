"""``debug``: prints each message on stdout, for trying flows."""

from __future__ import annotations

import sys
from typing import Any

import attrs

from evflow.runtime.nodeapi import Message, Node

from ._paths import PropertyPath, path_validator
from ._redact import REDACTED, is_secret_path, show


@attrs.frozen(kw_only=True)
class DebugConfig:
    # property path to print instead of the payload, e.g. "payload.info" or "msg" (the whole message)
    complete: str | None = attrs.field(default=None, validator=attrs.validators.optional(path_validator))


class Debug(Node[DebugConfig]):
    """Prints each message on stdout as one line, secrets redacted: for trying flows.

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

    @classmethod
    def outputs(cls, config: DebugConfig) -> int:
        return 0

    def line(self, msg: Message) -> str:
        shown = REDACTED if self._secret else show(self._get(msg))
        if msg.topic:
            return f"{self._prefix}{msg.topic}: {shown}"
        return self._prefix + shown

    async def receive(self, msg: Message) -> None:
        # One write per line, flushed: lines of concurrent flows never interleave mid-line, and they
        # show at once even when stdout is a pipe.
        sys.stdout.write(self.line(msg) + "\n")
        sys.stdout.flush()
