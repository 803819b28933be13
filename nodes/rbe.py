"""``rbe``: Node-RED's report-by-exception node (rbe.js), in the palette as "filter": passes a
message on only when a property of it changed, or changed enough.

``func``:

* ``rbe``: when the value (``property``, ``msg.payload`` by default) differs from the last one of its
  topic; objects and arrays are compared deeply; ``rbei``: the same, but the first value of a topic is
  only remembered, not sent;
* ``deadband`` / ``deadbandEq``: when the number (JavaScript's ``parseFloat`` of the value: ``"21.5 C"``
  is 21.5) moved more than (``Eq``: at least) ``gap`` from the last one; the first is sent;
* ``narrowband`` / ``narrowbandEq``: when it moved less than (``narrowband``: or exactly) ``gap``: it
  drops outliers; the first number is compared with ``start`` when set, else passes.

``gap`` is a number, or a percentage of the last value (``"10%"``). ``inout``: the number compared with
is the last one sent (``"out"``) or the last one received (``"in"``). With ``septopics`` (the default)
each topic (the message property ``topi``, ``msg.topic`` by default) is tracked apart. ``msg.reset``
forgets the message's topic (with ``septopics`` and a text topic), else every topic. A message without
the property passes nothing and changes nothing; one whose value holds no number (deadband and
narrowband) is warned about, at most once per 10 s.

Not as in Node-RED: ``msg.reset`` with ``septopics`` forgets the topic read from ``topi``, where
Node-RED forgets ``msg.topic`` (the same unless ``topi`` is set otherwise).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import attrs

from evflow.runtime.message import copy_value
from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseBool,
    LooseStr,
    Message,
    Node,
    PropertyError,
    get_property,
    one_of,
    parse_property,
)
from evflow.runtime.ratelimit import RateLimitedLog

from ._jsvalues import plain, strict_equals, to_number, to_string, truthy, type_of
from .delay import js_parse_float

__all__ = ["Rbe", "RbeConfig"]

FUNCS = ("rbe", "rbei", "deadband", "deadbandEq", "narrowband", "narrowbandEq")
# What the editor accepts as a gap: digits with a point, optionally a percentage, or nothing.
_GAP = re.compile(r"([0-9]*[.]*[0-9]*|)(%|)")


@attrs.frozen(kw_only=True)
class RbeConfig:
    # rbe, rbei (ignore the first value), deadband, deadbandEq, narrowband, narrowbandEq
    func: str = attrs.field(default="rbe", validator=one_of(*FUNCS))
    # deadband/narrowband: the change that counts, a number or a percentage ("10%"); "" is 0
    gap: LooseStr = ""
    # narrowband: the value the first number is compared with ("": the first passes)
    start: LooseStr = ""
    # compare with the last value sent ("out") or received ("in")
    inout: str = attrs.field(default="out", validator=one_of("out", "in"))
    # track each topic apart
    septopics: LooseBool = True
    # the message property compared
    property: str = "payload"
    # the message property holding the topic
    topi: str = "topic"


def _is_object(value: Any) -> bool:
    """JavaScript's ``typeof value === "object"``: null, objects, arrays, Buffers."""
    return type_of(value) == "object"


def _same_object(a: Any, b: Any) -> bool:
    """Node-RED's ``compareObjects``: deep equality of objects, arrays and Buffers (``===`` for the rest)."""
    if a is b:
        return True
    if not (_is_object(a) and _is_object(b)):
        return strict_equals(a, b)
    if a is None or b is None:
        return False
    a, b = plain(a), plain(b)
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return (isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b)
                and all(_same_object(x, y) for x, y in zip(a, b)))
    if isinstance(a, bytes | bytearray) or isinstance(b, bytes | bytearray):
        return isinstance(a, bytes | bytearray) and isinstance(b, bytes | bytearray) and a == b
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    return len(a) == len(b) and all(key in b and _same_object(value, b[key]) for key, value in a.items())


class Rbe(Node[RbeConfig]):
    """Passes a message on only when a property of it changed (enough): see the module docstring."""

    type = "rbe"
    Config = RbeConfig
    inline = True

    @classmethod
    def check(cls, config: RbeConfig) -> list[ConfigWarning]:
        if not _GAP.fullmatch(config.gap):
            raise ValueError(f"a gap is a number, or a percentage such as \"10%\", got {config.gap!r} @ $.gap")
        for field, expression in (("property", config.property or "payload"), ("topi", config.topi or "topic")):
            try:
                parse_property(expression)
            except PropertyError as exc:
                raise ValueError(f"{exc} @ $.{field}") from None
        return []

    def __init__(self, context: Any, config: RbeConfig) -> None:
        super().__init__(context, config)
        self.property_parts = parse_property(config.property or "payload")
        self.topic_parts = parse_property(config.topi or "topic")
        gap = config.gap or "0"
        self.percent = gap.endswith("%")
        self.gap = js_parse_float(gap) if self.percent else to_number(gap)
        self.start_value = to_number(config.start) if config.start != "" else None
        # the last value of each topic, by the topic's text (JavaScript object keys)
        self.previous: dict[str, Any] = {}
        self._warn = RateLimitedLog(context.log, logging.WARNING)

    def _get(self, msg: Message, parts: tuple[str | int, ...]) -> Any:
        try:
            return get_property(msg, parts)
        except PropertyError:  # Node-RED reads a step into undefined as no value here
            return UNDEFINED

    async def receive(self, msg: Message) -> None:
        topic = self._get(msg, self.topic_parts)
        if "reset" in msg.props:
            if self.config.septopics and isinstance(topic, str) and topic != "":
                self.previous.pop(topic, None)
            else:
                self.previous.clear()
        value = self._get(msg, self.property_parts)
        if value is UNDEFINED:
            return
        key = "_no_topic"
        if self.config.septopics and truthy(topic):
            key = to_string(topic)
        if self.config.func in ("rbe", "rbei"):
            changed = self._changed(key, value)
        else:
            changed = self._moved(key, value)
        if changed:
            await self.send(msg)

    def _changed(self, key: str, value: Any) -> bool:
        """rbe, rbei: whether the value differs from the last one (remembering it)."""
        seen = key in self.previous
        previous = self.previous.get(key, UNDEFINED)
        if _is_object(value):
            if not _is_object(previous):
                previous = self.previous[key] = {}  # Node-RED compares a first object with {}
            differs = not _same_object(value, previous)
        else:
            differs = not strict_equals(value, previous)
        if not differs:
            return False
        self.previous[key] = copy_value(plain(value))
        return self.config.func == "rbe" or seen

    def _moved(self, key: str, value: Any) -> bool:
        """deadband, narrowband: whether the number moved (enough, or little enough)."""
        number = js_parse_float(value)
        if math.isnan(number):
            self._warn("no number found in %s", "msg." + (self.config.property or "payload"))
            return False
        func = self.config.func
        previous = self.previous.get(key)
        if previous is None and func in ("narrowband", "narrowbandEq"):
            previous = number if self.start_value is None else self.start_value
        if self.percent:
            gap = abs(previous * self.gap / 100) if previous is not None else 0.0
            gap = 0.0 if math.isnan(gap) else gap  # Node-RED's `|| 0`
        else:
            gap = self.gap
        if previous is None:
            previous = number - gap - 1  # the first number always passes a deadband
        distance = abs(number - previous)
        if distance == gap:
            passes = func in ("deadbandEq", "narrowband")
        elif distance > gap:
            passes = func in ("deadband", "deadbandEq")
        elif distance < gap:
            passes = func in ("narrowband", "narrowbandEq")
        else:  # NaN: a start or gap that is no number
            passes = False
        if (passes and self.config.inout == "out") or self.config.inout == "in":
            previous = number
        self.previous[key] = previous
        return passes
