"""What flows along wires: messages, and the error a failing node attaches to one."""

from __future__ import annotations

import copy
import enum
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
    :meth:`copy` whose payload shares no mutable part with it (Node-RED clones in the same way),
    so a node that changes a dict it received changes nobody else's. Values that cannot change
    (text, numbers, bytes, frozen attrs instances such as EVerest's typed replies) are shared.

    ``meta`` is an open mapping for what nodes want to carry along. ``error`` is set on messages
    routed to an error port or a ``catch`` node.
    """

    payload: Any
    topic: str = ""
    msg_id: int = attrs.field(factory=lambda: next(_ids))
    meta: Mapping[str, Any] = EMPTY_META
    error: NodeError | None = None

    def with_payload(self, payload: Any, topic: str | None = None) -> Message:
        """The same message (id, meta) carrying a new payload: the common step of a node."""
        return Message(payload, self.topic if topic is None else topic, self.msg_id, self.meta, self.error)

    def with_error(self, error: NodeError) -> Message:
        return Message(self.payload, self.topic, self.msg_id, self.meta, error)

    def copy(self) -> Message:
        """This message with a payload (and meta) of its own; itself when nothing in it can change."""
        payload = copy_value(self.payload)
        meta = self.meta
        if meta:
            copied = {key: copy_value(value) for key, value in meta.items()}
            if any(copied[key] is not value for key, value in meta.items()):
                meta = MappingProxyType(copied)
        if payload is self.payload and meta is self.meta:
            return self
        return Message(payload, self.topic, self.msg_id, meta, self.error)


def new_message(payload: Any, topic: str = "", **meta: Any) -> Message:
    return Message(payload, topic, next(_ids), MappingProxyType(meta) if meta else EMPTY_META)


_IMMUTABLE = frozenset({str, bytes, int, float, bool, complex, type(None), range})
_frozen_attrs: dict[type, bool] = {}


def copy_value(value: Any) -> Any:
    """``value`` with no mutable part shared; ``value`` itself when nothing in it can change."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return {key: copy_value(item) for key, item in value.items()}
    if kind is list:
        return [copy_value(item) for item in value]
    if kind is tuple or kind is frozenset:
        items = [copy_value(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else kind(items)
    if _is_frozen_attrs(kind) or isinstance(value, enum.Enum):
        return value
    return copy.deepcopy(value)


def _is_frozen_attrs(kind: type) -> bool:
    frozen = _frozen_attrs.get(kind)
    if frozen is None:
        frozen = _frozen_attrs[kind] = attrs.has(kind) and attrs.inspect(kind).is_frozen
    return frozen
