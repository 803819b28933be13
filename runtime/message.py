"""What flows along wires: immutable messages, and the error a failing node attaches to one."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["EMPTY_META", "Message", "NodeError", "new_message"]

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
    """An immutable message. Fan-out hands the same object to every wire: nobody can change it.

    ``meta`` is an open mapping for what nodes want to carry along (never mutated: make a new one).
    ``error`` is set on messages routed to an error port or a ``catch`` node.
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

    def with_meta(self, **items: Any) -> Message:
        return Message(self.payload, self.topic, self.msg_id, MappingProxyType({**self.meta, **items}), self.error)


def new_message(payload: Any, topic: str = "", **meta: Any) -> Message:
    return Message(payload, topic, next(_ids), MappingProxyType(meta) if meta else EMPTY_META)
