"""``split``: one message per part of a string, buffer, array or object, as Node-RED's node of the
same name, each with ``msg.parts`` telling a ``join`` (in its automatic mode) how to put them back.

Node-RED 4's properties: ``property`` (what to split, ``payload`` by default), ``splt`` with
``spltType`` for text and buffers (``str``: a delimiter, where ``\\n``, ``\\r``, ``\\t``, ``\\f`` and
``\\0`` are control characters and an empty one is a line break; ``bin``: a JSON array of bytes;
``len``: parts of that many characters or bytes), ``arraySplt`` (items per part of an array,
``arraySpltType`` is always ``len``), ``addname`` (a message property that gets each object key) and
``stream`` (text and buffers: the rest after the last delimiter waits for the next message, indexes
go on counting and ``parts.count`` is left out).

``msg.parts`` is exactly Node-RED's: ``id`` (new for each message split), ``index``, ``count``, ``type``
(``string``, ``buffer``, ``array``, ``object``), ``ch`` (the delimiter: the text, or the array of
bytes), ``len`` (the part length), ``key`` (objects), ``property`` (when not ``payload``), and the
incoming ``msg.parts`` kept as ``parts.parts``. Each part is a new message (its own ``_msgid``) with
the other properties copied. Object keys go in JavaScript's order (integer keys first). Values that
cannot be split (numbers, booleans, null, undefined) are dropped, as in Node-RED.

Node-RED's quirks kept, because a ``join`` behind a split relies on the same numbers: a buffer that
ends with its delimiter gives no empty last part but still counts it in ``parts.count`` (so an
automatic join of it waits for a part that never comes); a string split by a ``bin`` delimiter has
the byte array as ``ch``, which an automatic join puts back as its text (``10`` for a line break).
Lengths are counted in Unicode characters (JavaScript counts UTF-16 units: only text beyond the
Basic Multilingual Plane, such as emoji, splits differently).

Refused when the flow is loaded (Node-RED logs an error and then ignores every message): a ``bin``
delimiter that is not a JSON array of bytes, or is empty (Node-RED loops forever on it); a length
below 1.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from evflow.runtime.codec import unstructure
from evflow.runtime.message import copy_value
from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseBool,
    LooseInt,
    LooseStr,
    Message,
    Node,
    PropertyError,
    get_property,
    parse_property,
    set_property,
)


def _blank_is(default: str) -> Callable[[str], str]:
    """Node-RED reads an empty setting as its default (``n.property || "payload"``)."""
    return lambda value: value or default


@attrs.frozen(kw_only=True)
class SplitConfig:
    # text and buffers: the delimiter ("str"), a JSON array of bytes ("bin") or a length ("len")
    splt: LooseStr = "\\n"
    # "str", "bin" or "len"
    spltType: str = attrs.field(default="str", converter=_blank_is("str"))
    # arrays: items per message
    arraySplt: LooseInt = 1
    # always "len"
    arraySpltType: str = "len"
    # text and buffers as a stream: the rest waits for the next message; no parts.count
    stream: LooseBool = False
    # objects: the message property that gets each key ("": none)
    addname: str = ""
    # the message property to split
    property: str = attrs.field(default="payload", converter=_blank_is("payload"))


_ESCAPES = (("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"), ("\\e", "e"), ("\\f", "\f"), ("\\0", "\0"))
_LEADING_INTEGER = re.compile(r"\s*([+-]?\d+)")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")


@attrs.frozen
class _Delimiter:
    """How text and buffers are split: by ``text`` (``str`` and ``bin``) or every ``length``."""

    length: int | None = None
    text: str = ""
    binary: bytes = b""
    # what msg.parts.ch says: the text, or the bin array
    shown: Any = None


def _delimiter(config: SplitConfig) -> _Delimiter:
    """The prepared delimiter; ValueError naming the field when it is unusable."""
    if config.spltType == "str":
        text = config.splt or "\\n"
        for escaped, char in _ESCAPES:  # in Node-RED's order: "\\e" is a plain "e" in JavaScript
            text = text.replace(escaped, char)
        return _Delimiter(text=text, binary=text.encode(), shown=text)
    if config.spltType == "bin":
        try:
            values = json.loads(config.splt)
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(type(v) is int and 0 <= v <= 255 for v in values):
            raise ValueError(f"a bin delimiter is a JSON array of bytes (0 to 255), got {config.splt!r} @ $.splt")
        if not values:
            raise ValueError("a bin delimiter must not be empty @ $.splt")
        binary = bytes(values)
        return _Delimiter(text=binary.decode("utf-8", "replace"), binary=binary, shown=values)
    if config.spltType == "len":
        match = _LEADING_INTEGER.match(config.splt)  # parseInt: "3 chars" is 3
        if match is None or int(match.group(1)) < 1:
            raise ValueError(f"a split length is a whole number from 1, got {config.splt!r} @ $.splt")
        return _Delimiter(length=int(match.group(1)))
    raise ValueError(f"spltType must be 'str', 'bin' or 'len', got {config.spltType!r} @ $.spltType")


def _js_key_order(keys: Iterable[str]) -> list[str]:
    """An object's keys in the order JavaScript lists them: array-index keys ascending, then the
    others as inserted."""
    keys = list(keys)
    indexes = sorted((key for key in keys if _ARRAY_INDEX.fullmatch(key) and int(key) < 2**32 - 1), key=int)
    if not indexes:
        return keys
    chosen = set(indexes)
    return indexes + [key for key in keys if key not in chosen]


class Split(Node[SplitConfig]):
    """Sends one message per part of ``property``: see the module docstring."""

    type = "split"
    Config = SplitConfig
    inline = True

    def __init__(self, context: Any, config: SplitConfig) -> None:
        super().__init__(context, config)
        self._delimiter = _delimiter(config)
        self._property = parse_property(config.property)
        self._addname = parse_property(config.addname) if config.addname else None
        # A stream's state: the rest of the text or buffer so far, and the next part's index.
        self._rest_text = ""
        self._rest_bytes = b""
        self._index = 0

    @classmethod
    def check(cls, config: SplitConfig) -> list[ConfigWarning]:
        _delimiter(config)
        if config.arraySplt < 1:
            raise ValueError(f"arraySplt is a number of items from 1, got {config.arraySplt} @ $.arraySplt")
        if config.arraySpltType != "len":
            raise ValueError(f"arraySpltType must be 'len', got {config.arraySpltType!r} @ $.arraySpltType")
        for name in ("property", "addname"):
            if getattr(config, name):
                try:
                    parse_property(getattr(config, name))
                except PropertyError as exc:
                    raise ValueError(f"{exc} @ $.{name}") from None
        return []

    async def receive(self, msg: Message) -> None:
        value = get_property(msg, self._property)
        if value is UNDEFINED:
            return
        parts: dict[str, Any] = {"parts": msg.props["parts"]} if "parts" in msg.props else {}
        parts["id"] = secrets.token_hex(8)
        if self.config.property != "payload":
            parts["property"] = self.config.property
        if isinstance(value, str):
            await self._split_text(msg, parts, value)
        elif isinstance(value, list | tuple):
            await self._split_array(msg, parts, value)
        elif isinstance(value, bytes | bytearray):
            await self._split_bytes(msg, parts, bytes(value))
        elif isinstance(value, Mapping) or attrs.has(type(value)):
            await self._split_object(msg, parts, unstructure(value) if attrs.has(type(value)) else value)
        # anything else (a number, a boolean, null) is not split: dropped, as in Node-RED

    async def _emit(self, msg: Message, parts: Mapping[str, Any], piece: Any, key: str | None = None) -> None:
        """Send one part: a new message with ``piece`` at the split property, ``parts``, and copies of
        the other properties (the split property's own container is not copied when it is replaced
        whole: copying the whole array for each of its items would be quadratic)."""
        replaced = self._property[0] if len(self._property) == 1 else None
        props = {name: copy_value(item) for name, item in msg.props.items() if name != "parts" and name != replaced}
        props["parts"] = copy_value(dict(parts))
        payload = msg.payload if replaced == "payload" else copy_value(msg.payload)
        part = Message(payload, msg.topic, meta=msg.meta, error=msg.error, props=props)  # a new _msgid
        out = set_property(part, self._property, piece)
        if key is not None and self._addname is not None:
            out = set_property(out, self._addname, key)
        await self.send(out)

    async def _split_text(self, msg: Message, parts: dict[str, Any], value: str) -> None:
        delimiter, stream = self._delimiter, self.config.stream
        value = self._rest_text + value
        parts["type"] = "string"
        if delimiter.length is not None:
            size = delimiter.length
            parts["ch"] = ""
            parts["len"] = size
            count = math.ceil(len(value) / size)
            if not stream:
                parts["count"] = count
                self._index = 0
            position = 0
            for _ in range(count - 1):
                parts["index"] = self._next_index()
                await self._emit(msg, parts, value[position : position + size])
                position += size
            self._rest_text = value[position:]
            if not stream or len(self._rest_text) == size:
                parts["index"] = self._next_index()
                rest, self._rest_text = self._rest_text, ""
                await self._emit(msg, parts, rest)
            return
        parts["ch"] = delimiter.shown
        pieces = value.split(delimiter.text)
        await self._emit_pieces(msg, parts, pieces, stream)
        if stream:
            self._rest_text = pieces[-1]

    async def _emit_pieces(self, msg: Message, parts: dict[str, Any], pieces: list[str], stream: bool) -> None:
        """Node-RED's sendArray: every piece, or in a stream every piece but the last (which waits)."""
        for piece in pieces[:-1]:
            parts["index"] = self._next_index()
            if not stream:
                parts["count"] = len(pieces)
            await self._emit(msg, parts, piece)
        if not stream:
            parts["index"] = self._next_index()
            parts["count"] = len(pieces)
            self._index = 0
            await self._emit(msg, parts, pieces[-1])

    async def _split_array(self, msg: Message, parts: dict[str, Any], value: list[Any] | tuple[Any, ...]) -> None:
        size = self.config.arraySplt
        parts["type"] = "array"
        parts["count"] = math.ceil(len(value) / size)
        parts["len"] = size
        for index, position in enumerate(range(0, len(value), size)):
            parts["index"] = index
            await self._emit(msg, parts, value[position] if size == 1 else list(value[position : position + size]))

    async def _split_object(self, msg: Message, parts: dict[str, Any], value: Mapping[str, Any]) -> None:
        parts["type"] = "object"
        keys = _js_key_order(value)
        for index, key in enumerate(keys):
            parts["key"] = key
            parts["index"] = index
            parts["count"] = len(keys)
            await self._emit(msg, parts, value[key], key)

    async def _split_bytes(self, msg: Message, parts: dict[str, Any], value: bytes) -> None:
        delimiter, stream = self._delimiter, self.config.stream
        data = self._rest_bytes + value
        parts["type"] = "buffer"
        if delimiter.length is not None:
            size = delimiter.length
            count = math.ceil(len(data) / size)
            if not stream:
                parts["count"] = count
                self._index = 0
            parts["len"] = size
            position = 0
            for _ in range(count - 1):
                parts["index"] = self._next_index()
                await self._emit(msg, parts, data[position : position + size])
                position += size
            self._rest_bytes = data[position:]
            if not stream or len(self._rest_bytes) == size:
                parts["index"] = self._next_index()
                rest, self._rest_bytes = self._rest_bytes, b""
                await self._emit(msg, parts, rest)
            return
        parts["ch"] = delimiter.shown
        pieces = data.split(delimiter.binary)
        if not stream:
            parts["count"] = len(pieces)
            self._index = 0
        for piece in pieces[:-1]:
            parts["index"] = self._next_index()
            await self._emit(msg, parts, piece)
        last = pieces[-1]
        if not stream and last:
            parts["index"] = self._next_index()
            parts["count"] = self._next_index()  # Node-RED's `count = c++`: the same number, one past the index
            await self._emit(msg, parts, last)
        else:
            self._rest_bytes = last  # in a stream, the rest; otherwise empty (the quirk in the docstring)

    def _next_index(self) -> int:
        index = self._index
        self._index += 1
        return index
