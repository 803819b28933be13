"""``trigger``: Node-RED's trigger node (89-trigger.js): sends one message, then, after a time,
another; or repeats the first until reset.

A message that arrives while the node is idle *triggers* it: it goes out with ``op1`` as its payload
(``op1type``: a typed value, ``pay`` the payload as it is, ``nul`` nothing), then

* ``duration`` > 0 (in ``units``: ms, s, min, hr): when the time is up, the second message goes out:
  the first one with ``op2`` as its payload (``pay``: the triggering message's original payload,
  ``payl``: the latest message received meanwhile, whole; ``nul``: nothing), on port 2 when
  ``outputs`` is 2. Messages arriving meanwhile are ignored, or, with ``extend``, restart the time
  (and the second message is then built from the latest of them). ``flow``, ``global`` and ``date``
  values of ``op2`` are read when the second message goes.
* ``duration`` 0: nothing more; the node ignores messages until it is reset.
* ``duration`` < 0: the first message is sent again every ``-duration`` until reset (a new message
  starts the repetition anew, with its own payload).

``msg.reset``, or a payload whose text is the ``reset`` property (when set), resets the node (its
topic's trigger): nothing more is sent. With ``overrideDelay``, ``msg.delay`` (milliseconds) replaces ``duration`` for the message it
comes with. With ``bytopic: "topic"``, each value of the message property ``topic`` (``msg.topic``
unless set otherwise) has a trigger of its own.

``str`` values with ``{{`` are mustache templates rendered with the message (mustache.js's way, see
:mod:`evflow.nodes._mustache`), as in Node-RED; one that does not parse is refused when the flow is
loaded.

Not as in Node-RED, on purpose: ``overrideDelay: "false"`` (the text an unedited trigger keeps) is
false, where Node-RED takes any non-empty text as true; ``date`` as ``op2`` with ``extend`` is read
when the message goes, as without ``extend`` (Node-RED keeps the time of the first message there); a
repeated ``date`` ``op1`` keeps its format (Node-RED sends milliseconds); and Node.js's 24.8-day limit
on timers is not copied. Second messages still waiting when the flow stops are not sent (Node-RED
drops them on close too), counted in ``stats()`` as ``unsent_at_stop``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio

from evflow.runtime.message import copy_value
from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseBool,
    LooseFloat,
    LooseInt,
    LooseStr,
    Message,
    Node,
    PropertyError,
    TypedValue,
    TypedValueError,
    get_property,
    one_of,
    parse_property,
)

from . import _mustache as mustache
from ._jsvalues import to_string, truthy
from .debug import whole_message
from .delay import Timers, js_parse_float, next_tick

__all__ = ["Trigger", "TriggerConfig"]

UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "hr": 3600.0}
# Node.js runs a timer of less than a millisecond after one millisecond: a repetition is never faster.
MIN_INTERVAL = 0.001


@attrs.frozen(kw_only=True)
class TriggerConfig:
    # the first message's payload (a value of op1type)
    op1: LooseStr = "1"
    # the second message's payload (a value of op2type)
    op2: LooseStr = "0"
    # str num bool json bin date env flow global, "pay" (the payload as it is), "nul" (send nothing);
    # "val" (older flows): true/false/null or text
    op1type: str = "val"
    # as op1type, and "pay" (the original payload), "payl" (the latest message)
    op2type: str = "val"
    # the time before the second message, in units; 0: until reset; negative: repeat the first every -duration
    duration: LooseFloat = 250.0
    # a message arriving meanwhile restarts the time
    extend: LooseBool = False
    # msg.delay (milliseconds) replaces duration
    overrideDelay: LooseBool = False
    # ms, s, min or hr
    units: str = attrs.field(default="ms", validator=one_of(*UNITS))
    # a payload with this text resets the node, as msg.reset does ("": none)
    reset: LooseStr = ""
    # "all": one trigger for every message; "topic": one for each value of `topic`
    bytopic: str = attrs.field(default="all", validator=one_of("all", "topic"))
    # the message property that tells the topics apart (bytopic "topic")
    topic: str = "topic"
    # 2: the second message goes to port 2
    outputs: LooseInt = attrs.field(default=1, validator=one_of(1, 2))


# ---- what the node sends -----------------------------------------------------------------------

def _nothing(name: str) -> Any:
    return UNDEFINED


# Node-RED re-reads these values of op2 when the second message goes.
_READ_WHEN_SENT = frozenset({"flow", "global", "date"})


@attrs.frozen
class Operand:
    """op1 or op2, prepared: ``kind`` is ``value`` (a typed value), ``template``, ``pay``, ``payl`` or ``nul``."""

    kind: str
    type: str = ""
    value: TypedValue | mustache.Template | None = None

    @classmethod
    def of(cls, text: str, type_: str, *, second: bool) -> Operand:
        """Node-RED's reading of op1/op2 and their types; ``ValueError`` when unusable."""
        default = "0" if second else "1"
        text = text or default  # Node-RED's `n.op1 || "1"`: an empty value is the default
        type_ = type_ or "str"
        if type_ == "date" and text == default:
            text = ""
        if type_ == "val":  # older flows: the type follows the text
            if text == "null":
                return cls("value", "json", TypedValue.of(None, ""))
            type_ = "bool" if text in ("true", "false") else "str"
        if type_ in ("pay", "nul"):
            return cls(type_, type_)
        if type_ == "payl":
            if not second:
                raise ValueError("'payl' (the latest message) is for op2type only")
            return cls(type_, type_)
        if type_ == "str" and "{{" in text:
            try:
                return cls("template", type_, mustache.parse(text))
            except mustache.MustacheError as exc:
                raise ValueError(f"mustache template: {exc}") from None
        try:
            return cls("value", type_, TypedValue.of(text, type_))
        except TypedValueError as exc:
            raise ValueError(str(exc)) from None

    def evaluate(self, msg: Message, context: Any) -> Any:
        if isinstance(self.value, mustache.Template):
            # mustache.render(op, msg) in Node-RED: a name the message does not have renders as nothing
            return mustache.render(self.value, whole_message(msg), _nothing)
        if isinstance(self.value, TypedValue):
            return self.value.evaluate(msg, context)
        if self.kind == "pay":
            return copy_value(msg.payload)
        return UNDEFINED


@attrs.define
class _Armed:
    """A trigger that fired and waits: for its time (``timers`` has it), or for a reset."""

    # what the second (or repeated) message is made from
    msg: Message
    # op2's value, read when triggered (UNDEFINED for "payl" and "nul")
    second: Any = UNDEFINED
    # the latest message received ("payl")
    latest: Message | None = None
    # seconds between repetitions (negative duration), else None
    every: float | None = None


class Trigger(Node[TriggerConfig]):
    """Sends a message, then another after a time, or repeats it until reset (see the module docstring)."""

    type = "trigger"
    Config = TriggerConfig
    # Its timers run in `run`, started once the flow is ready; it takes input as well.
    is_source = True
    inline = True

    @classmethod
    def outputs(cls, config: TriggerConfig) -> int:
        return config.outputs

    @classmethod
    def check(cls, config: TriggerConfig) -> list[ConfigWarning]:
        cls._operands(config)
        try:
            parse_property(config.topic or "topic")
        except PropertyError as exc:
            raise ValueError(f"{exc} @ $.topic") from None
        if config.outputs == 2 and config.duration <= 0:
            return [ConfigWarning("$.outputs", "port 2 gets the second message, which a trigger with a duration "
                                  "of 0 (until reset) or below (repeat) never sends")]
        return []

    @staticmethod
    def _operands(config: TriggerConfig) -> tuple[Operand, Operand]:
        operands = []
        for field, text, type_ in (("op1", config.op1, config.op1type), ("op2", config.op2, config.op2type)):
            try:
                operands.append(Operand.of(text, type_, second=field == "op2"))
            except ValueError as exc:
                raise ValueError(f"{exc} @ $.{field}") from None
        return operands[0], operands[1]

    def __init__(self, context: Any, config: TriggerConfig) -> None:
        super().__init__(context, config)
        self.first, self.second = self._operands(config)
        self.topic_parts = parse_property(config.topic or "topic")
        self.repeat = config.duration < 0
        self.duration = abs(config.duration) * UNITS[config.units]
        self.extend = config.extend and not self.repeat
        self.second_port = 1 if config.outputs == 2 else 0
        self.armed: dict[str, _Armed] = {}
        self.timers: Timers[str] = Timers()
        self.unsent_at_stop = 0

    def stats(self) -> dict[str, int]:
        return {"unsent_at_stop": self.unsent_at_stop} if self.unsent_at_stop else {}

    def _status(self) -> None:
        count = len(self.armed)
        if count == 0:
            self.context.status({})
        elif count == 1:
            self.context.status({"fill": "blue", "shape": "dot"})
        else:
            self.context.status({"fill": "blue", "shape": "dot", "text": count})

    def _is_reset(self, msg: Message) -> bool:
        if "reset" in msg.props:
            return True
        payload = msg.payload
        return bool(self.config.reset) and payload is not None and payload is not UNDEFINED and (
            to_string(payload) == self.config.reset)

    async def receive(self, msg: Message) -> None:
        topic = get_property(msg, self.topic_parts)  # a step into undefined fails the message, as in Node-RED
        key = to_string(topic) if self.config.bytopic == "topic" and truthy(topic) else "_none"
        duration = self.duration
        if self.config.overrideDelay and "delay" in msg.props:
            milliseconds = js_parse_float(msg.props["delay"])
            if not math.isnan(milliseconds):
                duration = milliseconds / 1000
        if self._is_reset(msg):
            if self.armed.pop(key, None) is not None:
                self.timers.cancel(key)
            self._status()
            return
        armed = self.armed.get(key)
        if armed is None or self.repeat:
            await self._trigger(key, msg, duration)
            return
        if self.second.kind == "payl":
            armed.latest = msg
        if self.extend and duration > 0:
            armed.msg = msg  # the second message is built from the latest one
            self.timers.set(key, trio.current_time() + duration)

    async def _trigger(self, key: str, msg: Message, duration: float) -> None:
        self.timers.cancel(key)  # a repetition under way starts anew
        self.armed.pop(key, None)
        second, latest = UNDEFINED, None
        if self.second.kind == "payl":
            latest = msg
        elif self.second.kind != "nul":
            second = self.second.evaluate(msg, self.context)
        first = msg
        if self.first.kind not in ("pay", "nul"):
            first = msg.with_payload(self.first.evaluate(msg, self.context))
        sending = self.first.kind != "nul"
        if sending:
            # What is sent belongs to its receivers: keep copies of what goes out later.
            if latest is not None:
                latest = latest.copy()
            base = first.copy() if self.repeat or self.second.kind not in ("payl", "nul") else first
            armed = _Armed(base, second, latest)
            await self.send(first)
        else:
            armed = _Armed(first, second, latest)
        if self.repeat and not sending:
            return  # nothing to repeat
        self.armed[key] = armed
        if duration != 0:  # 0: no time, wait for a reset (a repeating trigger: no repetition)
            if self.repeat:
                armed.every = max(duration, MIN_INTERVAL)
            self.timers.set(key, trio.current_time() + max(duration, 0.0))
        self._status()

    async def run(self) -> None:
        while True:
            await self.timers.wait()
            while (due := self.timers.pop_due(trio.current_time())) is not None:
                await self._time_up(*due)

    async def _time_up(self, key: str, deadline: float) -> None:
        armed = self.armed.get(key)
        if armed is None:
            return
        if armed.every is not None:
            msg = armed.msg.copy()
            if self.first.type == "date":
                msg = msg.with_payload(self.first.evaluate(msg, self.context))
            self.timers.set(key, next_tick(deadline, armed.every, trio.current_time()))
            await self.send(msg)
            return
        del self.armed[key]
        self._status()
        if self.second.kind == "nul":
            return
        if self.second.kind == "payl":
            out = armed.latest
        else:
            second = armed.second
            if self.second.type in _READ_WHEN_SENT:
                second = self.second.evaluate(armed.msg, self.context)
            out = armed.msg.with_payload(second)
        if out is not None:
            await self.send(out, self.second_port)

    async def close(self) -> None:
        unsent = len(self.timers)
        self.timers.clear()
        self.armed.clear()
        if unsent:
            self.unsent_at_stop += unsent
            self.context.log.info("the flow stopped: %d trigger(s) still timing, not sent", unsent)
        self.context.status({})
