"""``mqtt in``: messages from a broker topic (filter), as Node-RED's node of the same name.

Node-RED 4's properties: ``topic``, ``qos`` (0, 1, 2), ``datatype`` (``auto``: text when the payload is
UTF-8, else bytes; ``auto-detect``: parsed JSON when it parses, else as ``auto``; ``utf8``; ``json``, an
error for what does not parse; ``buffer``: bytes; ``base64``: the payload's base64 text), ``broker``,
and the MQTT 5 and editor keys ``nl``, ``rap``, ``rh``, which MQTT 3.1.1 has no use for. Each message
carries ``msg.topic``, ``msg.payload``, ``msg.qos`` and ``msg.retain``, as in Node-RED.

With ``inputs: 1`` the node subscribes as its input messages say (Node-RED's dynamic subscriptions):
``msg.action`` ``subscribe`` or ``unsubscribe`` with ``msg.topic`` a filter, ``{topic, qos, datatype}``,
a list of either, or (unsubscribe) ``true`` for all; ``getSubscriptions`` sends the list on (topic
``subscriptions``). The broker actions ``connect`` and ``disconnect`` are refused: evflow keeps the
connection up. evflow's own: ``queue_size`` and ``overflow``, per subscription.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from evflow.runtime.message import Message
from evflow.runtime.nodeapi import LooseInt, LooseStr, Node, field_check, number_range, ref
from evflow.runtime.protocol.topics import validate_filter
from evflow.runtime.transport import MqttClient, MqttMessage, Overflow, Subscription

from ._jsvalues import json_parse_or

# Messages taken from the subscription without waiting before this node lets other tasks run.
_YIELD_EVERY = 64


class Datatype(enum.StrEnum):
    AUTO = "auto"  # text when it is UTF-8, else bytes
    AUTO_DETECT = "auto-detect"  # JSON when it parses, else as AUTO
    JSON = "json"  # JSON, or an error
    UTF8 = "utf8"  # text (bytes that are not UTF-8 become U+FFFD)
    BUFFER = "buffer"  # the payload as it came
    BASE64 = "base64"  # the payload's base64 text
    BYTES = "bytes"  # evflow's name before Node-RED's: refused, naming "buffer"


@attrs.frozen(kw_only=True)
class MqttInConfig:
    # id of an mqtt-broker node
    broker: str = ref("mqtt-broker")
    # topic filter; + and # wildcards allowed
    topic: str = attrs.field(default="", validator=field_check(lambda v: v == "" or validate_filter(v)))
    qos: LooseStr = attrs.field(default="0", validator=field_check(lambda v: _qos(v)))
    # how to read the payload: auto, auto-detect, json, utf8, buffer or base64 (not given: utf8, as
    # Node-RED reads a file without it; its editor writes auto-detect)
    datatype: Datatype = Datatype.UTF8
    # 1: subscriptions made and ended by input messages (msg.action); `topic` is then empty
    inputs: LooseInt = 0
    nl: bool = False
    rap: bool = True
    rh: LooseInt = 0
    topicType: str = "topic"
    # messages buffered between the broker and this node, and what happens when it is full
    queue_size: int = attrs.field(default=64, validator=number_range(1))
    overflow: Overflow = Overflow.BLOCK


def _qos(value: str) -> int:
    text = value.strip()
    if text not in ("0", "1", "2"):
        raise ValueError(f"QoS must be 0, 1 or 2, got {value!r}")
    return int(text)


def _text(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


class NotDecoded(Exception):
    """A payload the node's datatype cannot read: Node-RED's words for it, and the message's payload
    as Node-RED hands it to ``catch`` (the text when it was text, else the bytes)."""

    def __init__(self, problem: str, payload: bytes | str) -> None:
        super().__init__(problem)
        self.payload = payload


_NOT_JSON = object()


def _json(data: bytes) -> Any:
    # 10-mqtt.js: UTF-8 text that JSON.parse takes; its two errors word the two ways to fail.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotDecoded("Invalid JSON string", data) from None
    value = json_parse_or(text, _NOT_JSON)
    if value is _NOT_JSON:
        raise NotDecoded("Failed to parse JSON string", text)
    return value


def _auto_detect(data: bytes) -> Any:
    # Node-RED: UTF-8 text, parsed when JSON.parse takes it (not NaN, not a BOM); else bytes.
    text = _text(data)
    return text if isinstance(text, bytes) else json_parse_or(text, text)


_DECODERS: Mapping[Datatype, Any] = {
    Datatype.AUTO: _text,
    Datatype.AUTO_DETECT: _auto_detect,
    Datatype.JSON: _json,
    Datatype.UTF8: lambda data: data.decode("utf-8", errors="replace"),
    Datatype.BUFFER: lambda data: data,
    Datatype.BASE64: lambda data: base64.b64encode(data).decode("ascii"),
}
# msg.qos and msg.retain, one shared read-only mapping per combination (copied when a node changes one).
_PROPS = {(qos, retain): MappingProxyType({"qos": qos, "retain": retain}) for qos in (0, 1, 2) for retain in (False, True)}


class MqttIn(Node[MqttInConfig]):
    """Subscribes to ``topic``; each message's payload decoded per ``datatype``, ``msg.topic`` the topic it came on."""

    type = "mqtt in"
    Config = MqttInConfig
    is_source = True
    has_input = False

    @classmethod
    def check(cls, config: MqttInConfig) -> list[Any]:
        if config.datatype is Datatype.BYTES:
            raise ValueError('datatype "bytes" is Node-RED\'s "buffer" now @ $.datatype')
        if config.inputs not in (0, 1):
            raise ValueError(f"inputs must be 0 or 1, got {config.inputs} @ $.inputs")
        if not config.inputs and not config.topic:
            raise ValueError("a topic filter is needed (or inputs: 1, for subscriptions made by messages) @ $.topic")
        if config.topicType not in ("topic", ""):
            raise ValueError(f"topicType {config.topicType!r} is not supported @ $.topicType")
        return []

    @classmethod
    def takes_input(cls, config: MqttInConfig) -> bool:
        return config.inputs == 1

    def __init__(self, context: Any, config: MqttInConfig) -> None:
        super().__init__(context, config)
        self._decode = _DECODERS[config.datatype]
        self.received = 0
        self.undecodable = 0
        self.unprocessed_at_stop = 0
        self.dropped_before = 0  # by the dynamic subscriptions that ended
        self.subscription: Subscription | None = None
        # With inputs: 1, by topic filter: the subscription, what was asked for, and its task's scope.
        self._dynamic: dict[str, tuple[Subscription, dict[str, Any], trio.CancelScope]] = {}
        self._tasks: trio.Nursery | None = None
        self._running = trio.Event()

    def stats(self) -> dict[str, int]:
        subscriptions = [self.subscription] if self.subscription is not None else []
        subscriptions += [subscription for subscription, _, _ in self._dynamic.values()]
        dropped = self.dropped_before + sum(subscription.dropped for subscription in subscriptions)
        return {"received": self.received, "undecodable": self.undecodable, "dropped": dropped,
                "unprocessed_at_stop": self.unprocessed_at_stop}

    async def start(self) -> None:
        self.mqtt: MqttClient = self.context.config_node(self.config.broker).mqtt  # type: ignore[attr-defined]
        c = self.config
        if not c.inputs:
            self.subscription = await self.mqtt.subscribe(
                c.topic, qos=_qos(c.qos), max_buffer=c.queue_size, overflow=c.overflow
            )

    async def run(self) -> None:
        if self.subscription is not None:
            await self._forward(self.subscription, self._decode, fast=True)
            return
        async with trio.open_nursery() as tasks:  # one task per dynamic subscription
            self._tasks = tasks
            self._running.set()
            await trio.sleep_forever()

    async def receive(self, msg: Message) -> None:
        """A dynamic subscription's action (``inputs: 1``)."""
        action = msg.props.get("action")
        if action in ("connect", "disconnect"):
            raise ValueError(f"msg.action {action!r} is not supported: evflow keeps the broker connection up")
        if action == "getSubscriptions":
            listed = [dict(asked) for _, asked, _ in self._dynamic.values()]
            await self.send(msg.with_payload(listed, "subscriptions"))
            return
        if action not in ("subscribe", "unsubscribe"):
            raise ValueError(f"invalid msg.action {action!r}: subscribe, unsubscribe or getSubscriptions")
        if action == "unsubscribe" and msg.topic is True:
            wanted = [dict(asked) for _, asked, _ in self._dynamic.values()]
        else:
            wanted = _subscriptions(msg.topic)
        await self._running.wait()  # the node's own tasks are there once the flow runs
        for asked in wanted:
            await self._end(asked["topic"])
            if action == "subscribe":
                await self._begin(asked)

    async def _begin(self, asked: dict[str, Any]) -> None:
        c = self.config
        subscription = await self.mqtt.subscribe(asked["topic"], qos=asked["qos"], max_buffer=c.queue_size,
                                                 overflow=c.overflow)
        scope = trio.CancelScope()
        self._dynamic[asked["topic"]] = (subscription, asked, scope)
        decode = _DECODERS[Datatype(asked["datatype"])] if "datatype" in asked else self._decode

        async def forward() -> None:
            with scope:
                await self._forward(subscription, decode, fast=False)

        assert self._tasks is not None
        self._tasks.start_soon(forward)

    async def _end(self, topic: str) -> None:
        known = self._dynamic.pop(topic, None)
        if known is not None:
            subscription, _, scope = known
            scope.cancel()
            self.dropped_before += subscription.dropped
            await subscription.aclose()

    async def _forward(self, subscription: Subscription, decode: Any, *, fast: bool) -> None:
        """Hand on what ``subscription`` brings, in order; ``fast``: let the connection's read loop
        hand messages on itself while this task waits (one subscriber per node only)."""
        send = self.context.send
        receive, receive_nowait = subscription.receive, subscription.receive_nowait
        # While this task waits for input, the connection's read loop hands each message on itself
        # (`_take`): no wake-up of this task per message. What it cannot hand on at once (a full
        # queue downstream, an undecodable payload) is buffered and handled here, in order.
        self._working = True
        taken_in_a_row = 0
        if fast and self.context.can_send_nowait(0):
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
                    payload = decode(data)
                except NotDecoded as exc:
                    self.undecodable += 1
                    failed = Message(exc.payload, topic, props=_PROPS[incoming.qos, incoming.retain])
                    await self.context.error(str(exc), failed)
                    continue
                await send(Message(payload, topic, props=_PROPS[incoming.qos, incoming.retain]), 0)
        finally:
            subscription.take = None

    def _take(self, incoming: MqttMessage) -> bool:
        """The read loop's offer of a message: taken when nothing is ahead of it and it goes on at once."""
        if self._working:
            return False
        try:
            payload = self._decode(incoming.payload)
        except NotDecoded:
            return False  # this task reports it
        if not self.context.send_nowait(Message(payload, incoming.topic, props=_PROPS[incoming.qos, incoming.retain]), 0):
            return False
        self.received += 1
        return True

    async def close(self) -> None:
        # Messages received but not yet taken when the flow stops: reported, not silently gone.
        subscriptions = [self.subscription] if self.subscription is not None else []
        subscriptions += [subscription for subscription, _, _ in self._dynamic.values()]
        for subscription in subscriptions:
            self.unprocessed_at_stop += subscription.pending
            await subscription.aclose()


def _subscriptions(topic: Any) -> list[dict[str, Any]]:
    """``msg.topic`` of a subscribe or unsubscribe action as Node-RED reads it: a filter, an object
    ``{topic, qos, datatype}``, or a list of either; QoS 2 when not given, as Node-RED's default."""
    items = topic if isinstance(topic, list) else [topic]
    wanted = []
    for item in items:
        asked = {"topic": item} if isinstance(item, str) else dict(item) if isinstance(item, Mapping) else None
        if asked is None or not isinstance(asked.get("topic"), str) or not asked["topic"]:
            raise ValueError(f"invalid subscription {item!r}: a topic filter, or an object with a topic")
        validate_filter(asked["topic"])
        qos = asked.get("qos", 2)
        if str(qos) not in ("0", "1", "2"):
            raise ValueError(f"invalid QoS {qos!r} for {asked['topic']!r}: 0, 1 or 2")
        asked["qos"] = int(qos)
        if "datatype" in asked and asked["datatype"] not in {d.value for d in Datatype if d is not Datatype.BYTES}:
            raise ValueError(f"invalid datatype {asked['datatype']!r} for {asked['topic']!r}")
        wanted.append(asked)
    return wanted
