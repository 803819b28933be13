"""``mqtt in``: messages from a broker topic (filter), as Node-RED's node of the same name."""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs
import trio

from evflow.runtime.codec import CodecError, load_json
from evflow.runtime.message import Message
from evflow.runtime.nodeapi import Node, field_check, number_range, one_of, ref
from evflow.runtime.protocol.topics import validate_filter
from evflow.runtime.transport import MqttClient, MqttMessage, Overflow, Subscription

# Messages taken from the subscription without waiting before this node lets other tasks run.
_YIELD_EVERY = 64


class Datatype(enum.StrEnum):
    AUTO = "auto"  # JSON when it parses, else text when it is UTF-8, else bytes
    JSON = "json"  # JSON, or an error
    UTF8 = "utf8"  # text, or an error
    BYTES = "bytes"  # the payload as it came


@attrs.frozen(kw_only=True)
class MqttInConfig:
    # id of an mqtt-broker node
    broker: str = ref("mqtt-broker")
    # topic filter; + and # wildcards allowed
    topic: str = attrs.field(validator=field_check(validate_filter))
    qos: int = attrs.field(default=0, validator=one_of(0, 1))
    # how to read the payload: "auto", "json", "utf8" or "bytes"
    datatype: Datatype = Datatype.AUTO
    # messages buffered between the broker and this node, and what happens when it is full
    queue_size: int = attrs.field(default=64, validator=number_range(1))
    overflow: Overflow = Overflow.BLOCK


def _auto(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested beyond what Python parses
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


class MqttIn(Node[MqttInConfig]):
    """Subscribes to ``topic``; each message's payload decoded per ``datatype``, ``msg.topic`` the topic it came on."""

    type = "mqtt in"
    Config = MqttInConfig
    is_source = True
    has_input = False

    def stats(self) -> dict[str, int]:
        if not hasattr(self, "subscription"):
            return {}
        return {"received": self.received, "undecodable": self.undecodable, "dropped": self.subscription.dropped,
                "unprocessed_at_stop": self.unprocessed_at_stop}

    async def start(self) -> None:
        self.received = 0
        self.undecodable = 0
        self.unprocessed_at_stop = 0
        mqtt: MqttClient = self.context.config_node(self.config.broker).mqtt  # type: ignore[attr-defined]
        c = self.config
        self.subscription: Subscription = await mqtt.subscribe(
            c.topic, qos=c.qos, max_buffer=c.queue_size, overflow=c.overflow
        )

    async def run(self) -> None:
        send = self.context.send
        subscription = self.subscription
        receive, receive_nowait = subscription.receive, subscription.receive_nowait
        # While this task waits for input, the connection's read loop hands each message on itself
        # (`_take`): no wake-up of this task per message. What it cannot hand on at once (a full
        # queue downstream, an undecodable payload) is buffered and handled here, in order.
        self._working = True
        taken_in_a_row = 0
        if self.context.can_send_nowait(0):
            subscription.take = self._take
        try:
            while True:
                if taken_in_a_row >= _YIELD_EVERY:
                    # A backlog may hold thousands: let the connection's writer and others run now
                    # and then (before taking the next one, so that a stop here loses nothing).
                    taken_in_a_row = 0
                    await trio.lowlevel.checkpoint()
                try:
                    # What is buffered already goes on without a scheduler round trip per message.
                    incoming = receive_nowait()
                    taken_in_a_row += 1
                except trio.WouldBlock:
                    self._working = False
                    incoming = await receive()
                    self._working = True
                    taken_in_a_row = 0
                self.received += 1
                data, topic = incoming.payload, incoming.topic
                try:
                    payload = self._decode(data)
                except (CodecError, UnicodeDecodeError) as exc:
                    self.undecodable += 1
                    problem = str(exc) if isinstance(exc, CodecError) else "payload is not UTF-8 text"
                    await self.context.error(f"{problem} (topic {topic})", Message(data, topic))
                    continue
                await send(Message(payload, topic), 0)
        finally:
            subscription.take = None

    def _take(self, incoming: MqttMessage) -> bool:
        """The read loop's offer of a message: taken when nothing is ahead of it and it goes on at once."""
        if self._working:
            return False
        try:
            payload = self._decode(incoming.payload)
        except (CodecError, UnicodeDecodeError):
            return False  # this task reports it
        if not self.context.send_nowait(Message(payload, incoming.topic), 0):
            return False
        self.received += 1
        return True

    def _decode(self, data: bytes) -> Any:
        """The payload per ``datatype`` (CodecError, UnicodeDecodeError when it is not of that type)."""
        datatype = self.config.datatype
        if datatype is Datatype.BYTES:
            return data
        if datatype is Datatype.AUTO:
            return _auto(data)
        return load_json(data) if datatype is Datatype.JSON else data.decode("utf-8")

    async def close(self) -> None:
        # Messages received but not yet taken when the flow stops: reported, not silently gone.
        self.unprocessed_at_stop = self.subscription.pending
        await self.subscription.aclose()
