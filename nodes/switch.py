"""``switch``: Node-RED's switch node — each message goes to the outputs whose rule holds.

Implements Node-RED 4's switch (``10-switch.js``): the property (``property`` of ``propertyType``
msg, flow, global, env or any other typed-input type) is tested by each rule in order; output *i*
gets the message when rule *i* holds: every such output (``checkall: "true"``) or only the first
(``"false"``). The rules are Node-RED's, with JavaScript's semantics (see :mod:`._jsvalues`): ``eq``
is ``==`` (``"5"`` equals 5), ``lt`` compares strings as strings and anything else as numbers,
``cont`` and ``regex`` look into the property's text, ``else`` holds when no rule since the last
``else`` did. A rule's value (``v``/``vt``, ``v2``/``v2t``) is any typed input, or ``prev``: the
property's value for the previous message (a value of type ``json`` or ``null`` reads as that word,
a quirk of Node-RED's switch that evflow keeps).

Sequences (``msg.parts``, as ``split`` makes them): ``head``, ``index`` and ``tail`` test a
message's place in its sequence; with a ``tail`` rule or ``repair``, the messages of a sequence are
held until all of it arrived (its count known). ``repair`` gives the messages leaving each output a
new sequence of their own (``parts.id``, ``index``, ``count``), so that a ``join`` after it works.

Not implemented: JSONata (``propertyType``/``vt``/``v2t`` ``jsonata`` and the ``jsonata_exp`` rule),
refused when the flow is loaded. Where Node-RED fails per message on a value that is fixed in the
flow (an invalid regular expression), evflow refuses the flow instead. Node-RED's
``nodeMessageBufferMaxLength`` setting does not exist: like Node-RED's default, held sequences
are not limited. Deliberate difference: with ``repair`` and ``checkall: "false"``, Node-RED counts a
sequence's messages per output wrongly (it takes the number of outputs from the last message's
rules); evflow counts the messages each output actually sent.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from typing import Any

import attrs

from evflow.runtime.message import Message
from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseBool,
    Node,
    PropertyError,
    TypedValue,
    TypedValueError,
    one_of,
)
from evflow.runtime.typedinput import js_regex

from ._jsvalues import (
    compare,
    has_own_property,
    is_json,
    loose_equals,
    own_key_count,
    to_number,
    to_string,
    type_of,
)

RULE_TYPES = (
    "eq", "neq", "lt", "lte", "gt", "gte", "btwn", "cont", "regex", "true", "false", "null", "nnull",
    "istype", "empty", "nempty", "head", "tail", "index", "hask", "jsonata_exp", "else",
)  # fmt: skip
# The value types of `istype` (its `vt` names the type, and so does its `v`).
ISTYPE_TYPES = ("string", "number", "boolean", "array", "buffer", "object", "json", "undefined", "null")


@attrs.frozen(kw_only=True)
class SwitchRule:
    # the test: eq neq lt lte gt gte btwn (between v and v2) cont (text contains) regex true false null
    # nnull istype empty nempty head tail index (sequence place between v and v2) hask (has key) else
    # (no rule since the last else held); jsonata_exp is not supported
    t: str = attrs.field(validator=one_of(*RULE_TYPES))
    # the value to test against, of type `vt`; for istype the type's name
    v: Any = UNDEFINED
    # the type of `v`: str num bool date env msg flow global re bin, prev (the property's value for the
    # previous message); for istype the type's name; not given: num when `v` reads as a number, else str
    # (json and null read as those words, as Node-RED's switch reads them)
    vt: str = ""
    # btwn and index: the second bound, of type `v2t`
    v2: Any = UNDEFINED
    # the type of `v2`, as `vt`
    v2t: str = ""
    # regex: ignore case
    case: LooseBool = False


@attrs.frozen(kw_only=True)
class SwitchConfig:
    # the value to test: a msg property (`payload.status`), a flow/global context key or an environment variable
    property: str = "payload"
    # where `property` is: msg flow global env (jsonata is not supported)
    propertyType: str = "msg"
    # one rule per output, in order
    rules: tuple[SwitchRule, ...] = ()
    # "true": send to every output whose rule holds; "false": only to the first
    checkall: str = attrs.field(default="true", validator=one_of("true", "false"))
    # recreate message sequences: what leaves each output is a sequence (msg.parts) of its own
    repair: LooseBool = False


# ---- values --------------------------------------------------------------------------------------


@attrs.frozen
class _Operand:
    """A rule's value as prepared at load: a constant, a typed value to evaluate per message, or the
    property's previous value."""

    constant: Any = UNDEFINED
    typed: TypedValue | None = None
    previous: bool = False


def _operand(rule: SwitchRule, value: Any, type_: str) -> _Operand:
    """Prepare a rule's value as Node-RED's switch reads it; TypedValueError when it is unusable."""
    if type_ == "prev":
        return _Operand(previous=True)
    if rule.t == "istype" and type_ in ISTYPE_TYPES:
        return _Operand(value)
    if type_ in ("json", "null"):
        return _Operand(type_)  # Node-RED's switch reads these types as their own names
    if type_ == "":
        type_ = "num" if to_number(value) == to_number(value) else "str"
    if type_ == "str":
        return _Operand(to_string(value))
    if type_ == "num":
        return _Operand(to_number(value))
    typed = TypedValue.of(value, type_)
    if typed.is_constant:
        return _Operand(typed.evaluate(None, None))  # type: ignore[arg-type]
    return _Operand(typed=typed)


@functools.lru_cache(maxsize=256)
def _regex(source: str, ignore_case: bool) -> re.Pattern[str]:
    try:
        return js_regex(source, ignore_case)
    except TypedValueError as exc:
        raise ValueError(f"Invalid regular expression: /{source}/{'i' if ignore_case else ''}: {exc}") from None


def _regex_of(value: Any, ignore_case: bool) -> re.Pattern[str]:
    """``new RegExp(value, flags)``: a regular expression's source, or the value's text."""
    if isinstance(value, re.Pattern):
        return _regex(value.pattern, ignore_case)
    return _regex("" if value is UNDEFINED else to_string(value), ignore_case)


# ---- the tests -----------------------------------------------------------------------------------

_NUMBER = (int, float)
# The types Python orders as JavaScript does against a number.
_NUMERIC = (int, float, bool)


def _parts_of(msg: Message) -> Any:
    parts = msg.props.get("parts", UNDEFINED)
    if parts is UNDEFINED or parts is None:
        raise TypeError(f"Cannot read properties of {'undefined' if parts is UNDEFINED else 'null'} (reading 'index')")
    return parts


def _part(parts: Any, key: str) -> Any:
    return parts.get(key, UNDEFINED) if isinstance(parts, dict) else UNDEFINED


def _less(a: Any, b: Any) -> bool:
    """``a < b``."""
    order = compare(a, b)
    return order is not None and order < 0


def _at_most(a: Any, b: Any) -> bool:
    """``a <= b``."""
    order = compare(a, b)
    return order is not None and order <= 0


def _is_type(a: Any, b: Any) -> bool:
    if b == "array":
        return isinstance(a, list | tuple)
    if b == "buffer":
        return isinstance(a, bytes | bytearray)
    if b == "json":
        return is_json(a)
    if b == "null":
        return a is None
    if b == "number":
        return type_of(a) == "number" and a == a
    return type_of(a) == b and a is not None and not isinstance(a, list | tuple | bytes | bytearray)


def _is_empty(a: Any) -> bool | None:
    """Whether a string, array, Buffer or object is empty; None for other values (neither empty nor not)."""
    if isinstance(a, str | list | tuple | bytes | bytearray):
        return len(a) == 0
    if a is None or type_of(a) != "object":
        return None
    return own_key_count(a) == 0


# A test takes the property's value, the rule's two values and the message.
Test = Callable[[Any, Any, Any, Message], bool]

_TESTS: dict[str, Test] = {
    "eq": lambda a, b, c, msg: loose_equals(a, b),
    "neq": lambda a, b, c, msg: not loose_equals(a, b),
    "lt": lambda a, b, c, msg: _less(a, b),
    "lte": lambda a, b, c, msg: _at_most(a, b),
    "gt": lambda a, b, c, msg: _less(b, a),
    "gte": lambda a, b, c, msg: _at_most(b, a),
    "btwn": lambda a, b, c, msg: (_at_most(b, a) and _at_most(a, c)) or (_at_most(a, b) and _at_most(c, a)),
    "cont": lambda a, b, c, msg: to_string(b) in to_string(a),
    "true": lambda a, b, c, msg: a is True,
    "false": lambda a, b, c, msg: a is False,
    "null": lambda a, b, c, msg: a is UNDEFINED or a is None,
    "nnull": lambda a, b, c, msg: a is not UNDEFINED and a is not None,
    "istype": lambda a, b, c, msg: _is_type(a, b),
    "empty": lambda a, b, c, msg: _is_empty(a) is True,
    "nempty": lambda a, b, c, msg: _is_empty(a) is False,
    "head": lambda a, b, c, msg: _less(_part(_parts_of(msg), "index"), to_number(b)),
    "tail": lambda a, b, c, msg: _tail(msg, to_number(b)),
    "index": lambda a, b, c, msg: _index_between(msg, to_number(b), to_number(c)),
    "hask": lambda a, b, c, msg: (
        a is not UNDEFINED and a is not None and type_of(b) != "object" and has_own_property(a, to_string(b))
    ),
}


def _tail(msg: Message, count: float) -> bool:
    parts = _parts_of(msg)
    return _at_most(to_number(_part(parts, "count")) - count, _part(parts, "index"))


def _index_between(msg: Message, low: float, high: float) -> bool:
    index = _part(_parts_of(msg), "index")
    return _at_most(low, index) and _at_most(index, high)


def _constant_test(kind: str, b: Any, ignore_case: bool) -> Callable[[Any], bool] | None:
    """A faster test of the property alone, for the common rules against a constant."""
    if kind in ("eq", "neq"):
        exact = (str,) if type(b) is str else _NUMBER if type(b) in _NUMBER else None
        if exact is None:
            return None
        if kind == "eq":
            return lambda a: a == b if type(a) in exact else loose_equals(a, b)  # type: ignore[operator]
        return lambda a: a != b if type(a) in exact else not loose_equals(a, b)  # type: ignore[operator]
    if kind in ("lt", "lte", "gt", "gte") and type(b) in _NUMBER:
        # Python compares numbers (and booleans, as 1 and 0) as JavaScript does, NaN included.
        numeric: Callable[[Any], bool] = {
            "lt": lambda a: a < b,
            "lte": lambda a: a <= b,
            "gt": lambda a: a > b,
            "gte": lambda a: a >= b,
        }[kind]
        general = _TESTS[kind]

        def order_test(a: Any) -> bool:
            if type(a) in _NUMERIC:
                return numeric(a)
            return general(a, b, UNDEFINED, None)  # type: ignore[arg-type]

        return order_test
    if kind == "regex":
        search = _regex_of(b, ignore_case).search
        return lambda a: search(a if type(a) is str else to_string(a)) is not None
    if kind == "cont":
        text = to_string(b)
        return lambda a: text in (a if type(a) is str else to_string(a))
    return None


# ---- the node ------------------------------------------------------------------------------------


@attrs.define
class _Held:
    """A sequence's messages held until its count is known and all of them arrived."""

    messages: list[Message] = attrs.field(factory=list)
    count: Any = UNDEFINED


@attrs.define
class _Routed:
    """With ``repair``: a sequence's messages with the outputs each goes to, until all are in."""

    received: int = 0
    routes: list[tuple[Message, list[int]]] = attrs.field(factory=list)


def _sequence_key(parts: dict[str, Any]) -> str:
    return to_string(parts["id"])  # a JavaScript object key, as Node-RED's switch keeps its groups


def _new_sequence_id() -> str:
    return f"{random.getrandbits(64):016x}"


class Switch(Node[SwitchConfig]):
    """Routes each message by rules: output *i* gets it when rule *i* holds for the property.

    ``property`` (of ``propertyType`` msg, flow, global or env) is tested by each of ``rules`` in
    order; with ``checkall: "true"`` the message goes to every output whose rule holds, with
    ``"false"`` only to the first. A rule ``{"t": "gte", "v": "1000", "vt": "num"}`` compares with
    JavaScript's semantics (``eq`` is ``==``: the text ``"5"`` equals the number 5); ``else`` holds
    when no rule since the previous ``else`` did; ``vt: "prev"`` tests against the property's
    value in the previous message. ``head``, ``tail`` and ``index`` route by a message's place in
    its sequence (``msg.parts``); ``repair`` numbers the messages leaving each output as a
    sequence of their own. A message that matches no rule is dropped.
    """

    type = "switch"
    Config = SwitchConfig
    inline = True

    def __init__(self, context: Any, config: SwitchConfig) -> None:
        super().__init__(context, config)
        self._previous: Any = None  # Node-RED's previousValue starts as null
        self._read = self._reader(config.property, config.propertyType)
        self._rules = tuple(self._compile(rule) for rule in config.rules)
        self._stop_first = config.checkall == "false"
        self._hold_sequences = config.repair or any(rule.t == "tail" for rule in config.rules)
        self._held: dict[str, _Held] = {}
        self._routed: dict[str, _Routed] = {}

    @classmethod
    def outputs(cls, config: SwitchConfig) -> int:
        return len(config.rules)

    @classmethod
    def check(cls, config: SwitchConfig) -> list[ConfigWarning]:
        try:
            TypedValue.of(config.property, config.propertyType or "msg")
        except TypedValueError as exc:
            raise ValueError(f"{exc} @ $.property") from None
        for index, rule in enumerate(config.rules):
            if rule.t == "jsonata_exp":
                raise ValueError(f"JSONata expressions are not supported by evflow @ $.rules[{index}].t")
            for value, type_, field in ((rule.v, rule.vt, "v"), (rule.v2, rule.v2t, "v2")):
                if field == "v2" and value is UNDEFINED and type_ != "prev":
                    continue
                try:
                    operand = _operand(rule, value, type_)
                    if rule.t == "regex" and field == "v" and operand.typed is None and not operand.previous:
                        _regex_of(operand.constant, rule.case)
                except (TypedValueError, ValueError) as exc:
                    raise ValueError(f"{exc} @ $.rules[{index}].{field}") from None
        return []

    # ---- preparation ---------------------------------------------------------------------------

    def _reader(self, expression: str, type_: str) -> Callable[[Message], Any]:
        """How to read the property for a message: Node-RED reads what cannot be read as undefined."""
        type_ = type_ or "msg"
        typed = TypedValue.of(expression, type_)
        if type_ == "msg" and expression in ("payload", "msg.payload"):
            return lambda msg: msg.payload
        context = self.context

        def read(msg: Message) -> Any:
            try:
                return typed.evaluate(msg, context)
            except PropertyError:
                return UNDEFINED

        return read

    def _value(self, operand: _Operand) -> Callable[[Message], Any]:
        if operand.previous:
            return lambda msg: self._previous
        typed = operand.typed
        if typed is None:
            constant = operand.constant
            return lambda msg: constant
        context = self.context

        def evaluate(msg: Message) -> Any:
            try:
                return typed.evaluate(msg, context)
            except PropertyError:
                return UNDEFINED

        return evaluate

    def _compile(self, rule: SwitchRule) -> Callable[[Any, Message], bool] | None:
        """The rule's test of the property's value for a message; None for ``else``."""
        if rule.t == "else":
            return None
        first = _operand(rule, rule.v, rule.vt)
        if first.typed is None and not first.previous:
            fast = _constant_test(rule.t, first.constant, rule.case)
            if fast is not None:
                return lambda a, msg: fast(a)
        value = self._value(first)
        if rule.v2 is UNDEFINED and rule.v2t != "prev":
            second: Callable[[Message], Any] = lambda msg: UNDEFINED  # noqa: E731
        else:
            second = self._value(_operand(rule, rule.v2, rule.v2t))
        if rule.t == "regex":
            ignore_case = rule.case
            return lambda a, msg: _regex_of(value(msg), ignore_case).search(to_string(a)) is not None
        test = _TESTS[rule.t]
        return lambda a, msg: test(a, value(msg), second(msg), msg)

    # ---- messages ------------------------------------------------------------------------------

    def _outputs_for(self, msg: Message) -> list[int]:
        """The outputs whose rule holds for ``msg``, in order (only the first with checkall "false")."""
        value = self._read(msg)
        matched: list[int] = []
        no_match_since_else = True
        for port, test in enumerate(self._rules):
            if test is None:
                holds = no_match_since_else
                no_match_since_else = True
            else:
                holds = test(value, msg)
            if holds:
                matched.append(port)
                no_match_since_else = False
                if self._stop_first:
                    break
        self._previous = value
        return matched

    async def receive(self, msg: Message) -> None:
        parts = msg.props.get("parts") if msg.props else None
        in_sequence = type(parts) is dict and "id" in parts and "index" in parts
        if in_sequence and self._hold_sequences:
            await self._hold(msg, parts)  # type: ignore[arg-type]
            return
        await self._route(msg, in_sequence)

    async def _route(self, msg: Message, in_sequence: bool) -> None:
        outputs = self._outputs_for(msg)
        if in_sequence and self.config.repair:
            await self._collect(msg, outputs)
        elif len(outputs) == 1:
            await self.send(msg, outputs[0])
        elif outputs:
            # Copies first: the first receiver may change the message as it runs inline.
            copies = [msg] + [msg.copy() for _ in outputs[1:]]
            for port, each in zip(outputs, copies):
                await self.send(each, port)

    async def _hold(self, msg: Message, parts: dict[str, Any]) -> None:
        """Hold a sequence's messages until all arrived, then route them in the order they came,
        each knowing the sequence's count (for ``tail``)."""
        key = _sequence_key(parts)
        held = self._held.setdefault(key, _Held())
        held.messages.append(msg)
        if "count" in parts:
            held.count = parts["count"]
        count = held.count
        if not (type(count) in _NUMBER and count == len(held.messages)):
            return
        del self._held[key]
        for each in held.messages:
            each.props["parts"]["count"] = count
            try:
                await self._route(each, True)
            except Exception as exc:  # one failing message does not hold up the rest of its sequence
                await self.context.error(exc, each)

    async def _collect(self, msg: Message, outputs: list[int]) -> None:
        """With ``repair``: once a sequence's messages are all routed, send each output's share as a
        sequence of its own (a new ``parts.id``, and ``index``/``count`` within that output)."""
        parts = msg.props["parts"]
        key = _sequence_key(parts)
        routed = self._routed.setdefault(key, _Routed())
        routed.received += 1
        routed.routes.append((msg, outputs))
        if routed.received != parts.get("count"):
            return
        del self._routed[key]
        ports = len(self._rules)
        counts = [0] * ports
        for _, each_outputs in routed.routes:
            for port in each_outputs:
                counts[port] += 1
        ids = [_new_sequence_id() for _ in range(ports)]
        indexes = [0] * ports
        for each, each_outputs in routed.routes:
            for port in each_outputs:
                copy = each.copy()
                sequence = {**copy.props["parts"], "id": ids[port], "index": indexes[port], "count": counts[port]}
                indexes[port] += 1
                await self.send(copy.with_props({**copy.props, "parts": sequence}), port)

    def stats(self) -> dict[str, int]:
        held = sum(len(group.messages) for group in self._held.values())
        held += sum(len(group.routes) for group in self._routed.values())
        return {"held": held} if held else {}
