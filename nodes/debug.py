"""``debug``: prints each message on stdout, for trying flows; Node-RED's node of the same name.

Node-RED 4's properties: ``tosidebar`` and ``console`` (evflow has no sidebar: either prints the
line; ``active: false`` silences the sidebar's, as in Node-RED, not the console's); ``complete`` (``"false"``: ``msg.payload``, ``"true"``: the whole message, else a
property expression) with ``targetType`` (``msg``, ``full``; ``jsonata`` is refused); ``tostatus``
with ``statusVal``/``statusType`` (the node's status shows the value, or the property named, cut at
32 characters; the payload for the whole message; red for a failed message). A line
reads ``[debug <name or id>] <topic>: <value as compact JSON>``; secrets are redacted as by ``log``.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from evflow.runtime.nodeapi import (
    UNDEFINED,
    LooseBool,
    LooseStr,
    Message,
    Node,
    PropertyError,
    get_property,
    msg_id_text,
    parse_property,
)
from evflow.runtime.output import stdout_writer

from ._redact import REDACTED, SECRET_KEYS, show

_STATUS_LENGTH = 32  # Node-RED's statuslength


@attrs.frozen(kw_only=True)
class DebugConfig:
    active: LooseBool = True
    # print the line (evflow has no sidebar)
    tosidebar: LooseBool = True
    console: LooseBool = False
    # show the value in the node's status
    tostatus: LooseBool = False
    # "false": msg.payload; "true": the whole message; else a property expression such as "payload.info"
    complete: LooseStr = "false"
    # "msg" (complete names a property) or "full" (the whole message)
    targetType: str | None = None
    statusVal: str = ""
    statusType: str = "auto"


def whole_message(msg: Message) -> dict[str, Any]:
    """The message as Node-RED shows it: its properties, ``payload``, ``topic`` and ``_msgid``."""
    shown: dict[str, Any] = {key: value for key, value in msg.props.items() if value is not UNDEFINED}
    if msg.topic is not UNDEFINED:
        shown["topic"] = msg.topic
    if msg.payload is not UNDEFINED:
        shown["payload"] = msg.payload
    if msg.error is not None:
        shown["error"] = get_property(msg, ("error",))
    shown["_msgid"] = msg_id_text(msg)
    return shown


class Debug(Node[DebugConfig]):
    """Prints each message on stdout as one line, secrets redacted: for trying flows. A stdout that
    does not keep up never holds the flow back: lines wait in a queue, and beyond 10,000 are dropped,
    counted.

    ::

        [debug <name or id>] <topic>: <value as compact JSON>

    (without ``<topic>: `` when the topic is empty). ``complete`` chooses the value: ``"false"`` the
    payload, ``"true"`` the whole message, or a property expression (``"payload.info"``); a property
    that is not there prints as ``<missing>``. Typed payloads print in their JSON form, and the value
    of any key named ``password``, ``passphrase``, ``secret``, ``token`` or ``key_password`` prints as
    ``"***"``. No output port.
    """

    type = "debug"
    Config = DebugConfig
    inline = True

    @classmethod
    def check(cls, config: DebugConfig) -> list[Any]:
        if config.targetType == "jsonata":
            raise ValueError("JSONata expressions are not supported by evflow @ $.targetType")
        if config.complete == "msg" and config.targetType is None:
            raise ValueError('the whole message is "true" (Node-RED\'s form), not "msg" @ $.complete')
        if config.targetType != "full" and config.complete not in ("true", "false", ""):
            try:
                parse_property(config.complete)
            except PropertyError as exc:
                raise ValueError(f"{exc} @ $.complete") from None
        if config.tostatus and config.statusType == "msg" and config.statusVal:
            try:
                parse_property(config.statusVal)
            except PropertyError as exc:
                raise ValueError(f"{exc} @ $.statusVal") from None
        return []

    def __init__(self, context: Any, config: DebugConfig) -> None:
        super().__init__(context, config)
        self._prefix = f"[debug {context.name or context.node_id}] "
        # As Node-RED: `active` silences the sidebar only; the console line does not depend on it.
        self._printing = (config.active and config.tosidebar) or config.console
        whole = config.targetType == "full" or config.complete == "true"
        self._parts: tuple[str | int, ...] | None = None if whole else parse_property(
            "payload" if config.complete in ("false", "") else config.complete)
        # A property reached through a key named like a secret never shows.
        self._secret = self._parts is not None and any(
            isinstance(part, str) and part.lower() in SECRET_KEYS for part in self._parts)
        self._status_parts = (parse_property(config.statusVal) if config.tostatus and config.statusType == "msg"
                              and config.statusVal else None)
        self._out = stdout_writer()

    def _value(self, msg: Message) -> Any:
        if self._parts is None:
            return whole_message(msg)
        try:
            return get_property(msg, self._parts)
        except PropertyError:
            return UNDEFINED

    @classmethod
    def outputs(cls, config: DebugConfig) -> int:
        return 0

    def line(self, msg: Message) -> str:
        shown = REDACTED if self._secret else show(self._value(msg))
        if msg.topic and isinstance(msg.topic, str):
            return f"{self._prefix}{msg.topic}: {shown}"
        return self._prefix + shown

    async def receive(self, msg: Message) -> None:
        if self._printing:
            # Written by a thread of its own, a line at a time: a stdout that does not keep up (a
            # full pipe) never blocks the flow; what does not fit in its queue is dropped, counted.
            self._out.write(self.line(msg) + "\n")
        if self.config.tostatus:
            self.context.status(self._status_of(msg))

    def _status_of(self, msg: Message) -> dict[str, Any]:
        """Node-RED's debug status: the value as text (a string as it is), cut at 32 characters with
        "..."; a value with fill, shape and text is a status itself; a failed message shows red."""
        if self._status_parts is not None:
            value, secret = get_property(msg, self._status_parts), False
        elif self._parts is None:
            value, secret = msg.payload, False  # the whole message's status is its payload
        else:
            value, secret = self._value(msg), self._secret
        status = {"fill": "grey", "shape": "dot"}
        if isinstance(value, dict) and {"fill", "shape", "text"} <= value.keys():
            status = {"fill": value["fill"], "shape": value["shape"]}
            value = value["text"]
        text = REDACTED if secret else value if isinstance(value, str) else show(value)
        if self.config.statusType == "auto" and (msg.error is not None or "error" in msg.props):
            status = {"fill": "red", "shape": "dot"}
        return {**status, "text": text if len(text) <= _STATUS_LENGTH else text[:_STATUS_LENGTH] + "..."}

    async def close(self) -> None:
        # What was printed is out when the flow has stopped (unless stdout is stalled).
        await trio.to_thread.run_sync(self._out.flush, 1.0, abandon_on_cancel=True)

    def stats(self) -> dict[str, int]:
        return {"stdout_dropped": self._out.dropped} if self._out.dropped else {}
