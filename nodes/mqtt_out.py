"""``mqtt out``: publishes each message's payload, as Node-RED's node of the same name.

Node-RED 4's properties: ``topic`` (empty: ``msg.topic``), ``qos`` (empty: ``msg.qos``, else 0),
``retain`` (empty: ``msg.retain``), ``broker``; the MQTT 5 ones (``respTopic``, ``contentType``,
``userProps``, ``correl``, ``expiry``) are accepted and, over MQTT 3.1.1, not sent. The payload goes
out as Node-RED sends it: bytes as they are, text as UTF-8, ``null`` as nothing, objects and arrays as
compact JSON (typed replies in the JSON form EVerest sent), numbers and booleans as their text; a
message without a payload is not published. evflow's own: ``allowed_topics`` (the filters that
``msg.topic`` must match when ``topic`` is empty), ``window`` and ``overflow``.
"""

from __future__ import annotations

import collections
import enum
import logging
from typing import Any

import attrs

from evflow.runtime.codec import unstructure
from evflow.runtime.errors import OutgoingFull
from evflow.runtime.message import Message
from evflow.runtime.nodeapi import UNDEFINED, ConfigWarning, LooseStr, Node, field_check, number_range, ref
from evflow.runtime.oneshot import OneShot
from evflow.runtime.protocol.topics import TopicError, topic_matches, validate_filter, validate_publish_topic
from evflow.runtime.ratelimit import RateLimitedLog
from evflow.runtime.transport import MqttClient

from ._jsvalues import json_bytes, number_to_string, parse_int


class WhenFull(enum.StrEnum):
    """What ``mqtt out`` does when the connection holds ``max_outgoing_bytes`` waiting to be sent."""

    BLOCK = "block"  # wait for room: the nodes that send to it are held back in turn
    DROP_NEWEST = "drop-newest"  # drop the message (counted, logged)


def _qos(value: str, _: Any = None) -> int:
    """The node's ``qos``: 0, 1 or 2 (empty: 0)."""
    text = value.strip() or "0"
    if text not in ("0", "1", "2"):
        raise ValueError(f"QoS must be 0, 1 or 2, got {text!r}")
    return int(text)


def _msg_qos(value: Any) -> int:
    """``msg.qos`` as Node-RED reads it (``parseInt``): what is not 0, 1 or 2 counts as 0."""
    qos = parse_int(value)
    return qos if qos in (1, 2) else 0  # type: ignore[return-value]


@attrs.frozen(kw_only=True)
class MqttOutConfig:
    # id of an mqtt-broker node
    broker: str = ref("mqtt-broker")
    # topic to publish to; empty: msg.topic
    topic: str = attrs.field(default="", validator=field_check(lambda v: v == "" or validate_publish_topic(v)))
    # with no `topic`: the filters msg.topic must match (a flow publishes only where it says it does)
    allowed_topics: tuple[str, ...] = attrs.field(default=(), validator=field_check(lambda v: [validate_filter(f) for f in v]))
    # 0, 1 or 2; empty: msg.qos (else 0)
    qos: LooseStr = attrs.field(default="", validator=field_check(_qos))
    # true or false; empty: msg.retain (else false)
    retain: LooseStr = ""
    respTopic: str = ""
    contentType: str = ""
    userProps: Any = ""
    correl: str = ""
    expiry: LooseStr = ""
    # QoS 1: messages published and not yet acknowledged by the broker before this node waits for the
    # oldest acknowledgement (and so holds back the nodes that send to it)
    window: int = attrs.field(default=100, validator=number_range(1, 1000))
    # when the broker connection holds max_outgoing_bytes not yet sent (a slow or stalled broker):
    # "block" waits for room, "drop-newest" drops the message, counted
    overflow: WhenFull = WhenFull.BLOCK


def encode_payload(payload: Any) -> bytes:
    """As Node-RED's ``mqtt out`` sends a payload: bytes as they are, text as UTF-8, ``null`` as
    nothing, numbers and booleans as JavaScript writes them, anything else (objects, arrays, typed
    replies in their JSON form, so a reply is forwarded as the JSON EVerest sent) as JSON.stringify
    writes it."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    if payload is None:
        return b""
    if isinstance(payload, bool | int | float):
        return number_to_string(payload).encode()
    return json_bytes(unstructure(payload))


class MqttOut(Node[MqttOutConfig]):
    """Publishes ``msg.payload`` to ``topic`` (or ``msg.topic``)."""

    type = "mqtt out"
    Config = MqttOutConfig
    inline = True

    @classmethod
    def outputs(cls, config: MqttOutConfig) -> int:
        return 0

    @classmethod
    def check(cls, config: MqttOutConfig) -> list[Any]:
        if config.topic and config.allowed_topics:
            raise ValueError("`allowed_topics` is for msg.topic: it has no use with a fixed `topic` @ $.allowed_topics")
        if config.retain.strip() not in ("", "true", "false"):
            raise ValueError(f"retain must be true, false or empty, got {config.retain!r} @ $.retain")
        if not config.topic and not config.allowed_topics:
            return [ConfigWarning("$.topic", "publishes wherever msg.topic says: set `allowed_topics` (the "
                                  "filters msg.topic may match) to keep this flow to its own topics")]
        return []

    def __init__(self, context: Any, config: MqttOutConfig) -> None:
        super().__init__(context, config)
        # Fixed when the node says; else read from each message (Node-RED's node.qos || msg.qos).
        self._qos = _qos(config.qos) if config.qos.strip() else None
        retain = config.retain.strip()
        self._retain = (retain == "true") if retain else None

    async def start(self) -> None:
        self.mqtt: MqttClient = self.context.config_node(self.config.broker).mqtt  # type: ignore[attr-defined]
        self._unacknowledged: collections.deque[OneShot[None]] = collections.deque()
        self.published = 0
        self.dropped = 0
        self._log_drop = RateLimitedLog(self.context.log, logging.WARNING)

    def stats(self) -> dict[str, int]:
        return {"published": self.published, "dropped": self.dropped} if hasattr(self, "mqtt") else {}

    async def receive(self, msg: Message) -> None:
        config = self.config
        if msg.payload is UNDEFINED:
            return  # Node-RED publishes nothing for a message without a payload
        topic = config.topic or msg.topic
        if not config.topic:
            if not isinstance(topic, str) or not topic:
                raise TopicError("no topic: the node has none and msg.topic is not set")
            validate_publish_topic(topic)  # raises TopicError, routed as this message's failure
            if config.allowed_topics and not any(topic_matches(allowed, topic) for allowed in config.allowed_topics):
                raise TopicError(f"msg.topic {topic!r} is not among this node's allowed_topics")
        qos = self._qos if self._qos is not None else _msg_qos(msg.props.get("qos"))
        if self._retain is not None:
            retain = self._retain
        else:
            asked = msg.props.get("retain")  # only true or "true", as Node-RED (not 1, which == True)
            retain = asked is True or asked == "true"
        payload = encode_payload(msg.payload)
        if config.overflow is WhenFull.BLOCK:
            done = await self.mqtt.publish_when_room(topic, payload, qos, retain)
        else:
            try:
                done = self.mqtt.publish_tracked(topic, payload, qos, retain)
            except OutgoingFull as full:
                self.dropped += 1
                self._log_drop("dropped a message: %s (%d dropped so far)", full, self.dropped)
                return
        self.published += 1
        if qos:
            pending = self._unacknowledged
            pending.append(done)
            while pending and pending[0].is_set:
                pending.popleft()
            if len(pending) >= config.window:
                # Backpressure, not a round trip per message: the connection's reader never waits on
                # this flow, so the acknowledgements keep coming in while this node waits.
                await pending.popleft().wait()

    async def close(self) -> None:
        while self._unacknowledged:  # what was sent is acknowledged before the broker closes
            await self._unacknowledged.popleft().wait()
