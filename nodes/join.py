"""``join``: combines a sequence of messages into one, as Node-RED's node of the same name (its
automatic and manual modes).

``mode: "auto"`` puts back what a ``split`` took apart, by each message's ``msg.parts`` (``id`` the
sequence, ``index`` its place, ``count`` how many, ``type`` ``string``/``buffer``/``array``/``object``,
``ch`` the delimiter to put back, ``len`` array items per part, ``key`` the object key, ``property``
where the value is); the result goes out once ``count`` parts arrived, with the ``msg.parts`` the
split found (``parts.parts``) restored.

``mode: "custom"`` (the editor's "manual") combines ``property`` (or, with ``propertyType: "full"``,
each whole message) into ``build``: ``string`` or ``buffer`` (parts joined by ``joiner``: text with
``\\n``-style escapes for ``joinerType: "str"``, a JSON byte array for ``"bin"``), ``array``,
``object`` (each value under the message's ``key`` property, ``topic`` by default) or ``merged``
(the values, objects, merged). It sends the result after ``count`` parts (an empty ``count`` takes
``msg.parts.count`` when the messages have one), ``timeout`` seconds after a sequence's first
message, or on a message with ``msg.complete``; with ``accumulate`` (object and merged) it keeps the
object after sending and sends it again on every later message. ``useparts: false`` (the editor's
default) ignores the messages' ``msg.parts``; a file without ``useparts`` uses them, as Node-RED does.

Both modes: ``msg.reset`` drops the sequence (every sequence, in automatic mode, for a message
without ``msg.parts``); ``msg.restartTimeout`` starts its timeout again. The other properties of the
message sent are those of the sequence's messages, later ones winning (Node-RED's ``Object.assign``),
with the last message's ``_msgid``; ``msg.complete`` is removed.

evflow's own: ``max_held``, how many values a join holds at most in the sequences it has not sent yet
(10,000 by default; Node-RED holds any number). One more drops every such sequence and fails the
message with Node-RED's words for it, "too many pending messages in join node".

Not supported: ``mode: "reduce"`` (JSONata expressions), refused when the flow is loaded. Node-RED's
warnings (a message without the property, an automatic join without ``msg.parts``, an object part
without a key) go to the log, at most one line per burst.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

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
    number_range,
    parse_property,
    set_property,
)
from evflow.runtime.ratelimit import RateLimitedLog

from ._jsvalues import JSONSyntaxError, json_parse, plain, to_number, to_string, truthy, type_of
from .debug import whole_message


def _blank_is(default: str) -> Callable[[str], str]:
    """Node-RED reads an empty setting as its default (``n.key || "topic"``)."""
    return lambda value: value or default


@attrs.frozen(kw_only=True)
class JoinConfig:
    # "auto": put back what a split took apart (msg.parts); "custom": the settings below;
    # "reduce" (JSONata) is not supported
    mode: str = attrs.field(default="auto", converter=_blank_is("auto"))
    # custom: "string", "buffer", "array", "object" or "merged"
    build: str = attrs.field(default="array", converter=_blank_is("array"))
    # custom: the message property to combine (propertyType "msg")
    property: str = attrs.field(default="payload", converter=_blank_is("payload"))
    # "msg": the property; "full": each whole message
    propertyType: str = attrs.field(default="msg", converter=_blank_is("msg"))
    # custom, object: the message property whose value is the key
    key: str = attrs.field(default="topic", converter=_blank_is("topic"))
    # custom, string and buffer: what goes between the parts
    joiner: str = ""
    # "str" (\n, \r, \t, \f, \0 escapes) or "bin" (a JSON array of bytes)
    joinerType: str = attrs.field(default="str", converter=_blank_is("str"))
    # custom: use the messages' msg.parts (not given: yes, as Node-RED reads an old file)
    useparts: LooseBool | None = None
    # custom, object and merged: after sending, keep the object and send it again on every later message
    accumulate: LooseBool = False
    # custom: seconds after a sequence's first message to send what arrived ("" or 0: never)
    timeout: LooseStr = ""
    # custom: send after this many parts ("": msg.parts.count when the messages have one)
    count: LooseStr = ""
    # reduce mode (not supported): evaluate last to first
    reduceRight: LooseBool = False
    # reduce mode (not supported): the JSONata expression
    reduceExp: str | None = None
    # reduce mode (not supported): the initial value
    reduceInit: Any = None
    # reduce mode (not supported): the initial value's type
    reduceInitType: str | None = None
    # reduce mode (not supported): the fix-up JSONata expression
    reduceFixup: str | None = None
    # evflow: at most this many values held in the sequences not sent yet; one more drops them all
    max_held: int = attrs.field(default=10_000, validator=number_range(1))


BUILDS = ("string", "buffer", "array", "object", "merged")
_ESCAPES = (("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"), ("\\e", "e"), ("\\f", "\f"), ("\\0", "\0"))
TOO_MANY = "too many pending messages in join node"
# What a buffer join takes: Buffers, text, arrays of byte values.
_BUFFER_PARTS = (bytes, bytearray, str, list, tuple)


def _joiner(config: JoinConfig) -> str | bytes:
    if config.joinerType == "bin":
        values = _json_bytes(config.joiner or "[]")
        if values is None:
            raise ValueError(f"a bin joiner is a JSON array of bytes (0 to 255), got {config.joiner!r} @ $.joiner")
        return bytes(values)
    if config.joinerType != "str":
        raise ValueError(f"joinerType must be 'str' or 'bin', got {config.joinerType!r} @ $.joinerType")
    text = config.joiner
    for escaped, char in _ESCAPES:  # in Node-RED's order: "\\e" is a plain "e" in JavaScript
        text = text.replace(escaped, char)
    return text


def _json_bytes(text: str) -> list[int] | None:
    try:
        values = json_parse(text)
    except JSONSyntaxError:
        return None
    if not isinstance(values, list) or not all(type(v) is int and 0 <= v <= 255 for v in values):
        return None
    return values


def _number(text: str, field: str) -> float:
    """``Number(text || 0)``; ValueError naming the field for text that is not a number."""
    number = to_number(text or 0)
    if math.isnan(number):
        raise ValueError(f"{field} must be a number, got {text!r} @ $.{field}")
    return number


def _merged(earlier: Message, later: Message) -> Message:
    """``Object.assign(earlier, later)``: the later message with the properties only the earlier had.
    A topic of "" is evflow's "no topic": it does not replace one."""
    topic = later.topic if later.topic not in ("", UNDEFINED) else earlier.topic
    error = later.error if later.error is not None else earlier.error
    return Message(later.payload, topic, later.msg_id, later.meta, error, {**earlier.props, **later.props})


def _as_bytes(value: Any) -> bytes:
    """``Buffer.from(value)`` for what a buffer join takes."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list | tuple):
        return bytes(int(v) & 255 if type_of(v) == "number" and not math.isnan(v) else 0 for v in value)
    raise TypeError("The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or "
                    f"an Array-like Object. Received {to_string(value) if value is UNDEFINED else type_of(value)}")


@attrs.frozen
class _Part:
    """How one message joins: its sequence's key, what it builds, where its value is and what it is,
    and what its msg.parts (or the settings) say of the sequence."""

    sequence: str
    kind: Any
    prop: str
    value: Any
    target: Any = UNDEFINED
    joiner: Any = UNDEFINED
    key: Any = UNDEFINED  # object: the key
    array_len: Any = UNDEFINED
    index: Any = UNDEFINED


@attrs.define(eq=False)
class _Sequence:
    """A sequence being joined (Node-RED's inflight group)."""

    kind: str  # "object" (object and merged), "array", "string", "buffer", or what an auto part said
    items: Any  # a dict (object) or a list, with UNDEFINED for the places not filled yet
    msg: Message  # the sequence's messages merged
    prop: str  # where the result goes
    target: Any = UNDEFINED  # the count to reach
    joiner: Any = UNDEFINED  # string and buffer
    array_len: Any = UNDEFINED  # array: items per part
    count: int = 0
    deadline: float | None = None


class Join(Node[JoinConfig]):
    """Combines sequences of messages: see the module docstring."""

    type = "join"
    Config = JoinConfig
    # Its timeouts run in `run`, started once the flow is ready; it takes input as well.
    is_source = True
    inline = True

    def __init__(self, context: Any, config: JoinConfig) -> None:
        super().__init__(context, config)
        self._auto = config.mode == "auto"
        self._full = config.propertyType == "full"
        self._prop = "payload" if self._full else config.property
        self._property = parse_property(self._prop)
        self._key = parse_property(config.key)
        self._joiner = _joiner(config)
        self._count = _number(config.count, "count")
        self._count_from_parts = config.count == ""
        self._timeout = 0.0 if self._auto else _number(config.timeout, "timeout")
        self._use_parts = True if config.useparts is None else config.useparts
        self._accumulate = config.accumulate and not self._auto
        self._sequences: dict[str, _Sequence] = {}
        self._held = 0
        self._timers_changed = trio.Event()
        self._warn = RateLimitedLog(context.log)
        self._overflows = 0

    @classmethod
    def check(cls, config: JoinConfig) -> list[ConfigWarning]:
        if config.mode == "reduce":
            raise ValueError("the reduce mode (JSONata expressions) is not supported by evflow @ $.mode")
        if config.mode not in ("auto", "custom"):
            raise ValueError(f"mode must be 'auto' or 'custom', got {config.mode!r} @ $.mode")
        if config.mode == "auto":
            return []
        if config.build not in BUILDS:
            raise ValueError(f"build must be one of {', '.join(map(repr, BUILDS))}, got {config.build!r} @ $.build")
        if config.propertyType not in ("msg", "full"):
            raise ValueError(f"propertyType must be 'msg' or 'full', got {config.propertyType!r} @ $.propertyType")
        for field in ("property", "key"):
            try:
                parse_property(getattr(config, field))
            except PropertyError as exc:
                raise ValueError(f"{exc} @ $.{field}") from None
        _joiner(config)
        _number(config.count, "count")
        _number(config.timeout, "timeout")
        return []

    def stats(self) -> Mapping[str, int]:
        return {"overflows": self._overflows} if self._overflows else {}

    async def run(self) -> None:
        """Send each sequence whose timeout passed (only a manual join with a timeout has any)."""
        if not self._timeout > 0:
            return
        while True:
            deadline = min((s.deadline for s in self._sequences.values() if s.deadline is not None), default=math.inf)
            with trio.move_on_at(deadline):
                await self._timers_changed.wait()
            if self._timers_changed.is_set():
                self._timers_changed = trio.Event()
            now = trio.current_time()
            for key, sequence in list(self._sequences.items()):
                if sequence.deadline is not None and sequence.deadline <= now and self._sequences.get(key) is sequence:
                    try:
                        await self._send_sequence(key)
                    except Exception as exc:  # a bad part: routed like a failure of receive
                        await self.context.error(exc, sequence.msg)

    async def receive(self, msg: Message) -> None:
        props = msg.props
        if self._full:
            # Its own copy: the message's properties also stay in the message sent.
            value: Any = copy_value(whole_message(msg))
        else:
            try:
                value = get_property(msg, self._property)
            except PropertyError:
                self._warn("Message property %s not found", self._prop)
                return
        parts = props.get("parts", UNDEFINED)
        if self._auto and not (isinstance(parts, dict) and "id" in parts):
            if "reset" in props:
                self._drop_all()
            else:
                self._warn("Message missing msg.parts property - cannot join in 'auto' mode")
            return
        if not self._auto and "parts" in props and not self._use_parts:
            outer = {k: v for k, v in props.items() if k != "parts"}
            if isinstance(parts, dict) and "parts" in parts:
                outer["parts"] = {"parts": parts["parts"]}
            msg = msg.with_props(outer)
            props = outer
            parts = props.get("parts", UNDEFINED)
        has_parts = "parts" in props
        part = self._part(msg, parts if isinstance(parts, dict) else {}, has_parts, value)
        key, kind = part.sequence, part.kind

        sequence = self._sequences.get(key)
        if "restartTimeout" in props and sequence is not None:
            sequence.deadline = trio.current_time() + self._timeout if self._timeout > 0 else None
            self._timers_changed.set()
        if "reset" in props:
            if sequence is not None:
                self._drop(key)
            return
        if kind == "object" and part.key in (None, UNDEFINED, ""):
            if self._auto:
                self._warn("Message missing 'msg.parts.key' property - cannot add to object")
            elif "complete" in props:
                if sequence is not None:
                    sequence.msg = sequence.msg.with_props({**sequence.msg.props, "complete": props["complete"]})
                    await self._send_sequence(key)
            else:
                self._warn("Message missing key property 'msg.%s' - cannot add to object", self.config.key)
            return

        if sequence is None:
            sequence = self._sequences[key] = self._new_sequence(msg, part)
        if kind == "buffer" and part.value is not UNDEFINED and not isinstance(part.value, _BUFFER_PARTS):
            raise TypeError(f"Cannot join {type_of(part.value)} to buffer")
        before = len(sequence.items)
        self._add(sequence, part, props)
        self._held += len(sequence.items) - before
        sequence.msg = _merged(sequence.msg, msg)

        if has_parts and isinstance(parts, dict):
            sequence.target = sequence.target if truthy(sequence.target) else parts.get("count", UNDEFINED)
        target = to_number(sequence.target)
        if (target > 0 and sequence.count >= target) or "complete" in props:
            await self._send_sequence(key)
        if self._held > self.config.max_held:
            self._overflows += 1
            self._drop_all()
            raise RuntimeError(TOO_MANY)

    def _part(self, msg: Message, parts: Mapping[str, Any], has_parts: bool, value: Any) -> _Part:
        """Which sequence the message belongs to and how it joins: from its msg.parts in automatic
        mode, from the settings in manual mode."""
        if self._auto:
            prop = parts.get("property") or "payload"
            return _Part(
                sequence=to_string(parts["id"]), kind=parts.get("type", UNDEFINED), prop=prop,
                value=get_property(msg, parse_property(prop)), target=parts.get("count", UNDEFINED),
                joiner=parts.get("ch", UNDEFINED), key=parts.get("key", UNDEFINED),
                array_len=parts.get("len", UNDEFINED), index=parts.get("index", UNDEFINED),
            )
        sequence, target = "_", self._count
        if self._count_from_parts and has_parts:
            target = parts.get("count") or 0
            if "id" in parts:
                sequence = to_string(parts["id"])
        key = get_property(msg, self._key) if self.config.build == "object" else UNDEFINED
        return _Part(sequence=sequence, kind=self.config.build, prop=self._prop, value=value, target=target,
                     joiner=self._joiner, key=key)

    def _new_sequence(self, msg: Message, part: _Part) -> _Sequence:
        kind = part.kind
        is_object = kind in ("object", "merged")
        sequence = _Sequence(
            kind="object" if is_object else kind, items={} if is_object else [], msg=msg, prop=part.prop,
            target=part.target, joiner=part.joiner if kind in ("string", "buffer") else UNDEFINED,
            array_len=part.array_len if kind == "array" else UNDEFINED,
        )
        if self._timeout > 0:
            sequence.deadline = trio.current_time() + self._timeout
            self._timers_changed.set()
        return sequence

    def _add(self, sequence: _Sequence, part: _Part, props: Mapping[str, Any]) -> None:
        items, kind, value, index = sequence.items, part.kind, part.value, part.index
        if kind == "object":
            items[part.key if isinstance(part.key, str) else to_string(part.key)] = value
            sequence.count = len(items)
        elif kind == "merged":
            value = plain(value)
            if not isinstance(value, dict):
                if value is not None and "complete" not in props:
                    self._warn("Cannot merge non-object types")
                return
            items.update((name, item) for name, item in value.items() if name != "_msgid")
            sequence.count = len(items)
        elif _is_index(index):
            position = int(index)
            if position >= len(items):
                items.extend([UNDEFINED] * (position + 1 - len(items)))
            if items[position] is UNDEFINED or items[position] is None:
                sequence.count += 1
            items[position] = value
        elif value is not UNDEFINED:
            items.append(value)
            sequence.count += 1

    async def _send_sequence(self, key: str) -> None:
        """Node-RED's completeSend: the result at the sequence's property, its message sent."""
        sequence = self._sequences[key]
        sequence.deadline = None
        kept = self._accumulate and "complete" not in sequence.msg.props
        if not kept:
            self._drop(key)
        result = self._result(sequence)
        if kept:
            result = copy_value(result)  # the sequence goes on growing; what is sent is the receiver's own
        out = set_property(sequence.msg, parse_property(sequence.prop), result)
        props = {name: item for name, item in out.props.items() if name != "parts" and name != "complete"}
        parts = out.props.get("parts", UNDEFINED)
        if isinstance(parts, dict) and "parts" in parts:
            props["parts"] = parts["parts"]
        out = out.with_props(props)
        if kept:
            sequence.msg = out
            out = out.copy()
        await self.send(out)

    @staticmethod
    def _result(sequence: _Sequence) -> Any:
        items = sequence.items
        if sequence.kind == "string":
            joiner = sequence.joiner
            if joiner is UNDEFINED or joiner is None:
                raise TypeError(f"Cannot read properties of {to_string(joiner)} (reading 'toString')")
            text = joiner if isinstance(joiner, str) else to_string(joiner)
            return text.join("" if item is UNDEFINED or item is None else to_string(item) for item in items)
        if sequence.kind == "buffer":
            if sequence.joiner is UNDEFINED:
                if not all(isinstance(item, bytes | bytearray) for item in items):
                    raise TypeError('The "list" argument must be an Array of Buffer or Uint8Array')
                return b"".join(items)
            return _as_bytes(sequence.joiner).join(_as_bytes(item) for item in items)
        if isinstance(items, dict):
            return items
        if sequence.kind == "array" and to_number(sequence.array_len) > 1:
            flat: list[Any] = []
            for item in items:  # Array.concat: arrays give their items, anything else itself
                if isinstance(item, list | tuple):
                    flat.extend(item)
                else:
                    flat.append(item)
            items = flat
        return [None if item is UNDEFINED else item for item in items]  # JavaScript's holes go out as null

    def _drop(self, key: str) -> None:
        sequence = self._sequences.pop(key)
        self._held -= len(sequence.items)

    def _drop_all(self) -> None:
        self._sequences.clear()
        self._held = 0


def _is_index(value: Any) -> bool:
    """Whether a ``parts.index`` places a value in the array (a whole number, not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value >= 0 and float(value).is_integer()
