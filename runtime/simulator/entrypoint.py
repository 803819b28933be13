"""The EVerest side of the ``entrypoint`` API: answers discovery for a set of API modules.

Behaves as EVerest's API modules do through ``ApiHelper``: each module answers ``discover`` with one
message listing its APIs, and ``query-modules/<type>`` (subscribed for the types it implements only)
with the same message restricted to that type; answers go to prefix + replyTo, in EVerest's bytes. A
request it cannot decode, or without a replyTo, gets no answer and a log line, as in EVerest.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import trio

from ..codec import CodecError
from ..errors import MqttError
from ..models.entrypoint import ApiParameter
from ..protocol.discovery import (
    READY_BEACON,
    decode_discovery_request,
    discover_replies,
    discover_topic,
    encode_discovery_reply,
    query_modules_replies,
    query_modules_topic,
    ready_beacon_topic,
)
from ..protocol.topics import validate_external_prefix
from ..ratelimit import RateLimitedLog
from ..transport import MqttClient, Subscription

__all__ = ["serve_entrypoint"]

log = logging.getLogger("evflow.simulator.entrypoint")


async def serve_entrypoint(
    mqtt: MqttClient,
    apis: Sequence[ApiParameter],
    *,
    external_prefix: str = "",
    ready_beacon: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer discovery for ``apis`` until cancelled. Reports ready once every subscription is granted
    (and, with ``ready_beacon``, the one beacon is published)."""
    validate_external_prefix(external_prefix)
    keys = [(api.type, api.module_id) for api in apis]
    if len(set(keys)) != len(keys):
        raise ValueError("a module implements each API once: (type, module_id) repeats in apis")
    # Each topic with the bodies it is answered with, encoded once.
    answers = {discover_topic(external_prefix): [encode_discovery_reply(r) for r in discover_replies(apis)]}
    for api_type in dict.fromkeys(api.type for api in apis):
        answers[query_modules_topic(api_type, external_prefix)] = [
            encode_discovery_reply(r) for r in query_modules_replies(apis, api_type)
        ]
    log_undecodable = RateLimitedLog(log)
    log_lost = RateLimitedLog(log)
    async with contextlib.AsyncExitStack() as stack:
        subscriptions = []
        for topic, bodies in answers.items():
            subscription = await mqtt.subscribe(topic, qos=0, max_buffer=64)
            stack.push_async_callback(subscription.aclose)
            subscriptions.append((subscription, bodies))
        if ready_beacon:
            await mqtt.publish(ready_beacon_topic(external_prefix), READY_BEACON)
        task_status.started()
        async with trio.open_nursery() as nursery:
            for subscription, bodies in subscriptions:
                nursery.start_soon(_answer, mqtt, subscription, bodies, external_prefix, log_undecodable, log_lost)


async def _answer(mqtt: MqttClient, requests: Subscription, bodies: list[bytes], external_prefix: str,
                  log_undecodable: RateLimitedLog, log_lost: RateLimitedLog) -> None:
    async for message in requests:
        try:
            reply_to = decode_discovery_request(message.payload)
        except CodecError as exc:
            log_undecodable("Invalid data: Deserialization failed (%s: %s); no reply", message.topic, exc)
            continue
        for body in bodies:  # one message per module, as each EVerest module answers on its own
            try:
                await mqtt.publish(external_prefix + reply_to, body)
            except MqttError as exc:
                log_lost("discovery answer to %s lost: %s", reply_to, exc)  # as EVerest's would be
                break
            except ValueError as exc:  # paho refuses the topic (prefix + replyTo too long, say): EVerest fails too
                log_undecodable("cannot answer on %r: %s", external_prefix + reply_to, exc)
                break
