"""``mqtt out``: publishes each message's payload, as Node-RED's node of the same name."""

from __future__ import annotations

import collections
import enum
import json
import logging
from typing import Any

import attrs

from evflow.runtime.codec import encode_json
from evflow.runtime.errors import OutgoingFull
from evflow.runtime.message import Message
from evflow.runtime.nodeapi import Node, field_check, number_range, one_of, ref
from evflow.runtime.oneshot import OneShot
from evflow.runtime.protocol.topics import TopicError, topic_matches, validate_filter, validate_publish_topic
from evflow.runtime.ratelimit import RateLimitedLog
from evflow.runtime.transport import MqttClient


class WhenFull(enum.StrEnum):
    """What ``mqtt out`` does when the connection holds ``max_outgoing_bytes`` waiting to be sent."""

    BLOCK = "block"  # wait for room: the nodes that send to it are held back in turn
    DROP_NEWEST = "drop-newest"  # drop the message (counted, logged)


@attrs.frozen(kw_only=True)
class MqttOutConfig:
    # id of an mqtt-broker node
    broker: str = ref("mqtt-broker")
    # topic to publish to; when not set, msg.topic
    topic: str | None = attrs.field(
        default=None, validator=field_check(lambda v: v is None or validate_publish_topic(v))
    )
    # with no `topic`: the filters msg.topic must match (a flow publishes only where it says it does)
    allowed_topics: tuple[str, ...] = attrs.field(default=(), validator=field_check(lambda v: [validate_filter(f) for f in v]))
    qos: int = attrs.field(default=0, validator=one_of(0, 1))
    retain: bool = False
    # QoS 1: messages published and not yet acknowledged by the broker before this node waits for the
    # oldest acknowledgement (and so holds back the nodes that send to it)
    window: int = attrs.field(default=100, validator=number_range(1, 1000))
    # when the broker connection holds max_outgoing_bytes not yet sent (a slow or stalled broker):
    # "block" waits for room, "drop-newest" drops the message, counted
    overflow: WhenFull = WhenFull.BLOCK


def encode_payload(payload: Any) -> bytes:
    """bytes as they are, text as UTF-8, anything else (numbers, objects, typed replies) as JSON
    through the codec, so a reply is forwarded as the JSON EVerest sent."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    if payload is None:
        return b""
    if type(payload) in _JSON_SCALARS:  # the common case on a hot path: no converter dispatch
        return json.dumps(payload).encode()
    return encode_json(payload)


_JSON_SCALARS = frozenset({int, float, bool})


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
        if config.topic is None and not config.allowed_topics:
            raise ValueError("set `topic`, or `allowed_topics` (the filters msg.topic may match) @ $.topic")
        if config.topic is not None and config.allowed_topics:
            raise ValueError("`allowed_topics` is for msg.topic: it has no use with a fixed `topic` @ $.allowed_topics")
        return []

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
        topic = config.topic or msg.topic
        if not config.topic:
            validate_publish_topic(topic)  # raises TopicError, routed as this message's failure
            if not any(topic_matches(allowed, topic) for allowed in config.allowed_topics):
                raise TopicError(f"msg.topic {topic!r} is not among this node's allowed_topics")
        payload = encode_payload(msg.payload)
        if config.overflow is WhenFull.BLOCK:
            done = await self.mqtt.publish_when_room(topic, payload, config.qos, config.retain)
        else:
            try:
                done = self.mqtt.publish_tracked(topic, payload, config.qos, config.retain)
            except OutgoingFull as full:
                self.dropped += 1
                self._log_drop("dropped a message: %s (%d dropped so far)", full, self.dropped)
                return
        self.published += 1
        if config.qos:
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
