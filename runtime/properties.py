"""Node-RED's property expressions (``payload.reading["value"][0]``) on evflow's messages.

An expression is parsed once, when a node is built (:func:`parse_property`, Node-RED's
``normalisePropertyExpression``: dots, ``["quoted"]`` keys, ``[0]`` indexes), into a tuple of keys
(text) and indexes (ints). :func:`get_property`, :func:`set_property` and :func:`delete_property`
walk those parts on a :class:`~evflow.runtime.message.Message` as Node-RED walks its message object:

* the first part is ``payload``, ``topic``, ``_msgid``, ``error`` or any other name (held in
  ``msg.props``); a leading ``msg.`` is dropped, as Node-RED does;
* a missing property reads as :data:`UNDEFINED` (JavaScript's ``undefined``, not ``None``, which is
  ``null``); stepping *into* ``undefined`` or ``null`` raises :class:`PropertyError`, as JavaScript's
  ``Cannot read properties of undefined`` does;
* a string's characters and ``length``, and an array's ``length``, read as in JavaScript;
* a typed payload (an attrs value, such as an EVerest reply) is read and written in its JSON form,
  so a path means the same as in the JSON that EVerest sent;
* setting creates what is missing on the way (an object, or an array before an index) and replaces
  nothing that is not an object or an array (then it does nothing and returns the message as it was).

A message's payload and properties are its receiver's own (see :class:`Message`), so containers are
changed in place; the message itself is frozen, so each call returns the message to send on.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .codec import unstructure
from .message import Message

__all__ = [
    "UNDEFINED",
    "PropertyError",
    "delete_property",
    "error_object",
    "get_property",
    "get_within",
    "msg_id_text",
    "parse_property",
    "set_property",
    "set_within",
]

Parts = tuple[str | int, ...]


class _Undefined:
    """JavaScript's ``undefined``: what a property that is not there reads as."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Any = _Undefined()


class PropertyError(ValueError):
    """A property expression that does not parse, or a step into ``undefined``/``null``."""


# ASCII only, as JavaScript's \d and /i are: Python's would take "٣" for a digit and "K" (Kelvin) for k.
_DIGITS = re.compile(r"[0-9]+")
_IDENTIFIER_START = re.compile(r"[a-zA-Z0-9$_]")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def _index(key: str | int) -> int | None:
    """``key`` as an array index, as JavaScript reads ``list["1"]`` as ``list[1]`` (not ``"01"``)."""
    if type(key) is int:
        return key  # type: ignore[return-value]
    return int(key) if _ARRAY_INDEX.fullmatch(key) else None  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1024)
def parse_property(expression: str) -> Parts:
    """The parts of a property expression, with a leading ``msg.`` dropped; :class:`PropertyError`
    (naming the position) when it does not parse. Nested ``msg.`` references in brackets
    (``payload[msg.key]``) are refused: evflow does not evaluate them."""
    if expression.startswith("msg."):
        expression = expression[4:]
    parts: list[str | int] = []
    length = len(expression)
    if length == 0:
        raise PropertyError("invalid property expression: zero-length")
    start = 0
    in_string = False
    in_box = False
    quote = ""

    def fail(what: str) -> PropertyError:
        return PropertyError(f"invalid property expression {expression!r}: {what}")

    i = 0
    while i < length:
        c = expression[i]
        if in_string:
            if c == quote:
                if i == start:
                    raise fail(f"zero-length string at position {start}")
                parts.append(expression[start:i])
                following = expression[i + 1] if i + 1 < length else ""
                if in_box and following != "]":
                    raise fail(f"unexpected array expression at position {start}")
                if not in_box and following not in ("", "[", "."):
                    raise fail(f"unexpected {following} at position {i + 1}")
                start = i + 1
                in_string = False
        elif c in "'\"":
            if i != start:
                raise fail(f"unexpected {c} at position {i}")
            in_string = True
            quote = c
            start = i + 1
        elif c == ".":
            if i == 0:
                raise fail("unexpected . at position 0")
            if start != i:
                text = expression[start:i]
                parts.append(int(text) if _DIGITS.fullmatch(text) else text)
            if i == length - 1:
                raise fail("unterminated expression")
            if not _IDENTIFIER_START.match(expression[i + 1]):
                raise fail(f"unexpected {expression[i + 1]} at position {i + 1}")
            start = i + 1
        elif c == "[":
            if i == 0:
                raise fail("unexpected [ at position 0")
            if start != i:
                parts.append(expression[start:i])
            if i == length - 1:
                raise fail("unterminated expression")
            if expression.startswith("msg.", i + 1) or expression.startswith("msg[", i + 1):
                raise fail(f"a nested msg reference (at position {i + 1}) is not supported by evflow")
            if expression[i + 1] not in "\"'0123456789":
                raise fail(f"unexpected {expression[i + 1]} at position {i + 1}")
            start = i + 1
            in_box = True
        elif c == "]":
            if not in_box:
                raise fail(f"unexpected ] at position {i}")
            if start != i:
                text = expression[start:i]
                if not _DIGITS.fullmatch(text):
                    raise fail(f"unexpected array expression at position {start}")
                parts.append(int(text))
            start = i + 1
            in_box = False
        elif c == " ":
            raise fail(f"unexpected ' ' at position {i}")
        i += 1
    if in_box or in_string:
        raise fail("unterminated expression")
    if start < length:
        parts.append(expression[start:])
    return tuple(parts)


def msg_id_text(msg: Message) -> str:
    """``msg._msgid`` as Node-RED shows it: 16 hex digits."""
    return f"{msg.msg_id:016x}"


def error_object(msg: Message) -> Any:
    """``msg.error`` in Node-RED's shape (``message`` and ``source: {id, type, name, count}``), or
    the ``error`` property a node set, or :data:`UNDEFINED`."""
    error = msg.error
    if error is None:
        return msg.props.get("error", UNDEFINED)
    return {
        "message": error.message,
        "source": {"id": error.source_id, "type": error.source_type, "name": error.source_name, "count": error.count},
    }


def _root(msg: Message, key: str | int) -> Any:
    if key == "payload":
        return msg.payload
    if key == "topic":
        return msg.topic
    if key == "_msgid":
        return msg_id_text(msg)
    if key == "error":
        return error_object(msg)
    return msg.props.get(key, UNDEFINED)  # type: ignore[call-overload]


def _step(value: Any, key: str | int, parts: Parts, index: int) -> Any:
    kind = type(value)
    if kind is dict:
        return value.get(key if isinstance(key, str) else str(key), UNDEFINED)
    if kind is list or kind is tuple or kind is str:
        position = _index(key)
        if position is not None:
            return value[position] if position < len(value) else UNDEFINED
        return len(value) if key == "length" else UNDEFINED
    if value is UNDEFINED or value is None:
        what = "undefined" if value is UNDEFINED else "null"
        raise PropertyError(f"Cannot read properties of {what} (reading '{key}') in {_text(parts[: index + 1])}")
    if attrs.has(kind):
        return _step(unstructure(value), key, parts, index)
    if isinstance(value, Mapping):
        return value.get(key, UNDEFINED)  # type: ignore[call-overload]
    return UNDEFINED  # a number, a boolean, bytes: no properties worth reading


def get_property(msg: Message, parts: Parts) -> Any:
    """The value at ``parts``, or :data:`UNDEFINED`; :class:`PropertyError` for a step into
    ``undefined`` or ``null``."""
    value = _root(msg, parts[0])
    for index in range(1, len(parts)):
        value = _step(value, parts[index], parts, index - 1)
    return value


def _own(value: Any) -> Any:
    """A container that can be changed in place: a typed value becomes its JSON form, a tuple a list."""
    if attrs.has(type(value)):
        return unstructure(value)
    if type(value) is tuple:
        return list(value)
    return value


def _with_root(msg: Message, key: str | int, value: Any) -> Message:
    if key == "payload":
        return msg.with_payload(value)
    if key == "topic":
        return Message(msg.payload, value, msg.msg_id, msg.meta, msg.error, msg.props)
    if key == "_msgid":
        return msg  # the engine's id stays
    props = dict(msg.props)
    if key == "error":
        props["error"] = value
        return Message(msg.payload, msg.topic, msg.msg_id, msg.meta, None, props)
    props[key] = value  # type: ignore[index]
    return msg.with_props(props)


def set_property(msg: Message, parts: Parts, value: Any, create_missing: bool = True) -> Message:
    """``msg`` with ``value`` at ``parts`` (Node-RED's ``setMessageProperty``)."""
    head = parts[0]
    if len(parts) == 1:
        return _with_root(msg, head, value)
    root = _own(_root(msg, head))
    if root is UNDEFINED or root is None:
        if not create_missing or root is None:
            return msg
        root = {} if isinstance(parts[1], str) else []
    elif not isinstance(root, dict | list):
        return msg
    if not _set_within(root, parts, value, create_missing):
        return msg
    return _with_root(msg, head, root)


def _set_within(container: Any, parts: Parts, value: Any, create_missing: bool, first: int = 1) -> bool:
    """Set ``parts[first:]`` within ``container`` (the value of ``parts[first - 1]``)."""
    obj = container
    for index in range(first, len(parts) - 1):
        key = parts[index]
        child = _get_own(obj, key)
        if child is UNDEFINED:
            if not create_missing:
                return False
            child = {} if isinstance(parts[index + 1], str) else []
        else:
            child = _own(child)
            if not isinstance(child, dict | list):
                return False  # nothing can be created beneath a string, number, boolean or null
        _put(obj, key, child)
        obj = child
    _put(obj, parts[-1], value)
    return True


def get_within(container: dict[str, Any], parts: Parts) -> Any:
    """The value at ``parts`` within a plain JSON object (a context store), or :data:`UNDEFINED`,
    also when a step leads into ``undefined`` or ``null``."""
    value: Any = container
    for index, key in enumerate(parts):
        try:
            value = _step(value, key, parts, index)
        except PropertyError:
            return UNDEFINED
    return value


def set_within(container: dict[str, Any], parts: Parts, value: Any) -> None:
    """Set (or, with :data:`UNDEFINED`, delete) the value at ``parts`` within a plain JSON object."""
    if value is UNDEFINED:
        obj: Any = container
        for key in parts[:-1]:
            obj = _get_own(obj, key)
            if not isinstance(obj, dict | list):
                return
        _delete(obj, parts[-1])
        return
    _set_within(container, parts, value, True, first=0)


def _get_own(obj: Any, key: str | int) -> Any:
    if type(obj) is list:
        position = _index(key)
        return obj[position] if position is not None and position < len(obj) else UNDEFINED
    return obj.get(key if isinstance(key, str) else str(key), UNDEFINED)


def _put(obj: Any, key: str | int, value: Any) -> None:
    if type(obj) is list:
        position = _index(key)
        if position is None:
            return  # JavaScript would set a property on the array that JSON never shows
        if position >= len(obj):
            obj.extend([None] * (position - len(obj) + 1))  # JavaScript's holes serialise as null
        obj[position] = value
    else:
        obj[key if isinstance(key, str) else str(key)] = value


def delete_property(msg: Message, parts: Parts) -> Message:
    """``msg`` without the property at ``parts``; an array element is spliced out, as Node-RED does."""
    head = parts[0]
    if len(parts) == 1:
        if head == "payload":
            return msg.with_payload(UNDEFINED)
        if head == "topic":
            return Message(msg.payload, UNDEFINED, msg.msg_id, msg.meta, msg.error, msg.props)
        if head == "error":
            props = {k: v for k, v in msg.props.items() if k != "error"}
            return Message(msg.payload, msg.topic, msg.msg_id, msg.meta, None, props)
        if head in msg.props:
            return msg.with_props({k: v for k, v in msg.props.items() if k != head})
        return msg
    root = _own(_root(msg, head))
    if not isinstance(root, dict | list):
        return msg
    obj = root
    for key in parts[1:-1]:
        child = _own(_get_own(obj, key))
        if not isinstance(child, dict | list):
            return msg
        _put(obj, key, child)  # a typed value on the way is now its JSON form: keep that form
        obj = child
    _delete(obj, parts[-1])
    return _with_root(msg, head, root)


def _delete(obj: dict[str, Any] | list[Any], key: str | int) -> None:
    """Delete ``key`` from ``obj``; an array element is spliced out, as Node-RED does."""
    if type(obj) is list:
        position = _index(key)
        if position is not None and position < len(obj):
            del obj[position]
    else:
        obj.pop(key if isinstance(key, str) else str(key), None)  # type: ignore[union-attr]


def _text(parts: Parts) -> str:
    out = str(parts[0])
    for part in parts[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return "msg." + out
