"""Node-RED's typed inputs: a value and its type (``"5"``/``"num"``, ``"payload.id"``/``"msg"``,
``"count"``/``"flow"``…), as its nodes write them (``payload`` + ``payloadType``, ``v`` + ``vt``).

A :class:`TypedValue` is checked and prepared when the flow is loaded (numbers parsed, JSON parsed,
expressions parsed, regular expressions compiled), so that evaluating it for a message is one step.
The types are ``str num bool json date env msg flow global re bin``; ``jsonata`` and date formats
other than milliseconds, ``iso`` and ``object`` are refused as unsupported, with the reason.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from .message import Message
from .properties import UNDEFINED, PropertyError, get_property, parse_property

__all__ = ["JS_WHITESPACE", "TYPES", "TypedValue", "TypedValueError", "ValueContext", "env_text", "js_number", "js_regex"]

TYPES = ("str", "num", "bool", "json", "date", "env", "msg", "flow", "global", "re", "bin", "jsonata")


class TypedValueError(ValueError):
    """A typed value that cannot be used; the message says why."""


class ValueContext(Protocol):
    """What evaluating a typed value needs from the node (a :class:`~evflow.runtime.nodeapi.NodeContext` is one)."""

    def env(self, name: str) -> str | None: ...

    @property
    def flow(self) -> Any: ...

    @property
    def global_context(self) -> Any: ...


_HEX = re.compile(r"[+-]?0[xX][0-9a-fA-F]+")
_OCT = re.compile(r"0[oO][0-7]+")
_BIN = re.compile(r"0[bB][01]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# JavaScript's white space and line terminators (what trim() and Number() take away); Python's
# str.strip() also takes \x1c-\x1f and \x85, and not \ufeff.
JS_WHITESPACE = ("\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                 "\u2028\u2029\u202f\u205f\u3000\ufeff")


def js_number(value: Any) -> int | float:
    """JavaScript's ``Number(value)`` for what flow files hold: an integral result is an int (so it
    prints as JavaScript prints it), anything that is not a number is NaN."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= 2**53 else value
    if value is None:
        return 0
    text = str(value).strip(JS_WHITESPACE)
    if text == "":
        return 0
    try:
        if _HEX.fullmatch(text) and text[0] not in "+-":
            return int(text, 16)
        if _OCT.fullmatch(text):
            return int(text[2:], 8)
        if _BIN.fullmatch(text):
            return int(text[2:], 2)
        if text in ("Infinity", "+Infinity", "-Infinity"):
            return float(text.replace("Infinity", "inf"))
        if not _DECIMAL.fullmatch(text):
            return math.nan
        return js_number(float(text))
    except ValueError:
        return math.nan


def js_regex(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """A JavaScript regular expression as Python's (the common syntax is the same; named groups
    ``(?<name>…)`` are translated)."""
    translated = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", pattern)
    try:
        return re.compile(translated, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise TypedValueError(f"invalid regular expression {pattern!r}: {exc}") from None


_ENV_WHOLE = re.compile(r"\$\{([^}]+)\}")
_ENV_ANY = re.compile(r"\$\{\S+\}")


def env_text(value: str, context: ValueContext) -> str:
    """Node-RED's ``env`` typed input: ``NAME``, ``${NAME}`` or text with ``${NAME}`` in it; an
    unset variable reads as the empty string."""
    whole = _ENV_WHOLE.fullmatch(value)
    if whole is not None:
        return context.env(whole.group(1)) or ""
    if not _ENV_ANY.search(value):
        return context.env(value) or ""
    return _ENV_WHOLE.sub(lambda m: context.env(m.group(1)) or "", value)


def _context_key(value: str) -> str:
    match = re.fullmatch(r"#:\((\S+?)\)::(.*)", value)
    if match is None:
        return value
    if match.group(1) not in ("memory", "default"):
        raise TypedValueError(f"context store {match.group(1)!r} is not available: evflow has only the memory store")
    return match.group(2)


@attrs.frozen
class TypedValue:
    """A value and its type, prepared; :meth:`evaluate` gives its value for one message."""

    type: str
    value: Any
    _evaluate: Callable[[Message | None, ValueContext], Any] = attrs.field(repr=False, eq=False)

    @classmethod
    def of(cls, value: Any, type_: str | None) -> TypedValue:
        """Prepare ``value`` of Node-RED type ``type_`` (None or ``""``: the value as it is);
        :class:`TypedValueError` when it cannot be used."""
        return cls(type_ or "", value, _prepare(value, type_ or ""))

    def evaluate(self, msg: Message | None, context: ValueContext) -> Any:
        return self._evaluate(msg, context)

    @property
    def is_constant(self) -> bool:
        return self.type in ("", "str", "num", "bool", "json", "bin", "re")


def _constant(value: Any) -> Callable[[Message | None, ValueContext], Any]:
    return lambda msg, context: value


def _prepare(value: Any, type_: str) -> Callable[[Message | None, ValueContext], Any]:
    if type_ == "":
        return _constant(value)
    if type_ == "str":
        return _constant("" if value is None else value if isinstance(value, str) else json.dumps(value))
    if type_ == "num":
        return _constant(js_number(value))
    if type_ == "bool":
        return _constant(bool(re.fullmatch(r"true", str(value), re.IGNORECASE)) if not isinstance(value, bool) else value)
    if type_ == "json":
        if not isinstance(value, str):
            return _constant(value)
        try:
            parsed = _js_json(value)
        except ValueError as exc:
            raise TypedValueError(f"invalid JSON {value!r}: {exc}") from None
        # Each message gets a value of its own: a node that changes it must not change the next.
        return lambda msg, context: _js_json(value) if isinstance(parsed, dict | list) else parsed
    if type_ == "re":
        return _constant(js_regex(str(value)))
    if type_ == "bin":
        try:
            data = json.loads(value) if isinstance(value, str) else value
            if isinstance(data, str):
                binary = data.encode()
            elif isinstance(data, list):
                binary = bytes(data)
            else:
                raise TypedValueError("a bin value is a JSON array of bytes or a string")
        except (ValueError, TypeError) as exc:
            raise TypedValueError(f"invalid bin value {value!r}: {exc}") from None
        return _constant(binary)
    if type_ == "date":
        if not value:
            return lambda msg, context: int(time.time() * 1000)
        if value == "iso":
            return lambda msg, context: _iso_now()
        if value == "object":
            return lambda msg, context: _iso_now()  # a Date object goes on the wire as its ISO text
        raise TypedValueError(f"date format {value!r} is not supported (milliseconds, 'iso' or 'object')")
    if type_ == "env":
        text = str(value)
        return lambda msg, context: env_text(text, context)
    if type_ == "msg":
        parts = _parts(value)

        def from_msg(msg: Message | None, context: ValueContext) -> Any:
            return UNDEFINED if msg is None else get_property(msg, parts)

        return from_msg
    if type_ in ("flow", "global"):
        key = _context_key(str(value))
        _parts(key)
        if type_ == "flow":
            return lambda msg, context: context.flow.get(key)
        return lambda msg, context: context.global_context.get(key)
    if type_ == "jsonata":
        raise TypedValueError("JSONata expressions are not supported by evflow")
    raise TypedValueError(f"unknown value type {type_!r} (one of {', '.join(TYPES)})")


def _js_json(text: str) -> Any:
    """JSON as JavaScript's ``JSON.parse`` reads it: numbers are one kind, so ``1.0`` is ``1``, and
    ``NaN`` and ``Infinity`` are not JSON."""
    return json.loads(text, parse_float=lambda number: js_number(float(number)), parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parts(expression: Any) -> tuple[str | int, ...]:
    try:
        return parse_property(str(expression))
    except PropertyError as exc:
        raise TypedValueError(str(exc)) from None


def _iso_now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
