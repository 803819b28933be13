"""What flows along wires: messages, and the error a failing node attaches to one."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["EMPTY_META", "Message", "NodeError", "copy_value", "new_message"]

EMPTY_META: Mapping[str, Any] = MappingProxyType({})
_ids = itertools.count(1)


@attrs.frozen(kw_only=True)
class NodeError:
    """Why a node failed on a message: Node-RED's ``msg.error``, typed."""

    message: str
    source_id: str
    source_type: str
    source_name: str = ""
    # The exception's class name (e.g. "RequestTimeout"), for rules that tell failures apart.
    kind: str = ""
    # How many errors this message has caused along its way: a guard against error loops.
    count: int = 1


@attrs.frozen(slots=True)
class Message:
    """A message: frozen, and its payload is its own.

    A message sent to several nodes reaches the first as it is and every other one as a
    :meth:`copy` whose payload's dicts, lists, tuples, sets and bytearrays are its own (Node-RED
    clones in the same way), so a node that changes a dict it received changes nobody else's.
    Anything else in a payload is shared: values that cannot change (text, numbers, bytes, enums,
    frozen attrs instances such as EVerest's typed replies), and objects of other types, which a
    node that may change them must copy itself.

    ``meta`` is an open mapping for what nodes want to carry along; it is shared, not copied (it
    may hold handles, such as a reply channel). ``error`` is set on messages routed to an error
    port or a ``catch`` node.

    ``props`` holds every other ``msg.*`` property of Node-RED's free message object (``msg.parts``,
    ``msg.delay``, whatever a ``change`` or ``function`` node sets): JSON-like values, owned and
    copied like the payload. :mod:`evflow.runtime.properties` reads and writes all of a message's
    properties by Node-RED's property expressions.
    """

    payload: Any
    # Node-RED's msg.topic: usually text; a node that sets it to something else may.
    topic: Any = ""
    msg_id: int = attrs.field(factory=lambda: next(_ids))
    meta: Mapping[str, Any] = EMPTY_META
    error: NodeError | None = None
    props: Mapping[str, Any] = EMPTY_META

    def with_payload(self, payload: Any, topic: str | None = None) -> Message:
        """The same message (id, meta, other properties) carrying a new payload: the common step of a node."""
        return Message(payload, self.topic if topic is None else topic, self.msg_id, self.meta, self.error, self.props)

    def with_error(self, error: NodeError | None) -> Message:
        return Message(self.payload, self.topic, self.msg_id, self.meta, error, self.props)

    def with_props(self, props: Mapping[str, Any]) -> Message:
        return Message(self.payload, self.topic, self.msg_id, self.meta, self.error, props)

    def copy(self) -> Message:
        """This message with a payload and properties of its own (see above); itself when they hold
        no container that could change."""
        payload = copy_value(self.payload)
        props = self.props
        if props:
            props = {key: copy_value(value) for key, value in props.items()}
        elif payload is self.payload:
            return self
        return Message(payload, self.topic, self.msg_id, self.meta, self.error, props)


def new_message(payload: Any, topic: Any = "", **meta: Any) -> Message:
    return Message(payload, topic, next(_ids), MappingProxyType(meta) if meta else EMPTY_META)


def copy_value(value: Any) -> Any:
    """``value`` with its dicts, lists, tuples, sets and bytearrays copied, all the way down;
    anything else shared. ``value`` itself when it holds no such container that could change.
    A value that holds itself (a node may make one, as in Node-RED) is copied with its cycles."""
    try:
        return _copy(value)
    except RecursionError:
        return copy.deepcopy(value)


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    if kind is set:
        return {_copy(item) for item in value}
    if kind is bytearray:
        return bytearray(value)
    if kind is tuple or kind is frozenset:
        items = [_copy(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else kind(items)
    return value
