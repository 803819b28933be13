"""The EVerest side of ``evse_security_consumer``: serves the API from a certificate store.

Behaves like EVerest's ``evse_security_consumer_API`` module in front of its EvseSecurity module:
requests on ``m2e/<operation>`` answered on the request's ``replyTo`` (with the external prefix
prepended, as EVerest does), heartbeats on ``e2m/heartbeat``, and the communication-check watchdog.
By default it reproduces EVerest's implementation on the wire (boolean replies twice, the verify
location as raw text naming the bundle file, silence for requests it cannot decode); ``strict``
switches to the document's form.
"""

from __future__ import annotations

import datetime
import logging
import random
from typing import Any

import attrs
import trio

from ..apis.evse_security_consumer import (
    EVSE_SECURITY_CONSUMER,
    GET_LEAF_CERTIFICATE_INFO,
    GET_VERIFY_LOCATION,
    IS_CA_CERTIFICATE_INSTALLED,
)
from ..codec import CodecError, dump_json, encode_json
from ..errors import MqttError
from ..models.evse_security import U64_MAX
from ..protocol.api import COMMUNICATION_CHECK, HEARTBEAT
from ..protocol.envelope import decode_request
from ..protocol.topics import ApiTopics, Direction
from ..ratelimit import RateLimitedLog
from ..transport import MqttClient, MqttMessage
from .liveness import EverestLiveness
from .store import CertificateStore
from .watchdog import CommunicationCheckWatchdog

__all__ = ["SimulatorOptions", "EvseSecuritySimulator"]

log = logging.getLogger("evflow.simulator")


@attrs.frozen(kw_only=True)
class Faults:
    """Misbehaviour on purpose, for tests and demos. Random choices come from ``seed``: repeatable."""

    reply_delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))  # seconds before each reply
    drop_ratio: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    malformed_ratio: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    # after this many heartbeats, send none for `heartbeat_pause` seconds (once)
    heartbeat_pause_after: int | None = None
    heartbeat_pause: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    seed: int | None = None


# What a malformed reply looks like: not JSON, not the type asked for, a wrong status.
MALFORMED_REPLIES = (b"{not json", b'"yes"', b'{"status": "Maybe"}', b"\xff\xfe")


@attrs.frozen(kw_only=True)
class SimulatorOptions:
    module_id: str
    external_prefix: str = ""
    heartbeat_interval_ms: int = 1000  # <= 0: no heartbeat, as in EVerest
    heartbeat_start: int = attrs.field(default=0)
    comm_check_timeout_s: float = 5.0  # <= 0: no watchdog, as in EVerest
    strict: bool = False
    faults: Faults = attrs.field(factory=lambda: Faults())

    @heartbeat_start.validator
    def _u64(self, _attribute: object, value: int) -> None:
        if not 0 <= value <= U64_MAX:
            raise ValueError(f"heartbeat start must be in 0..2^64-1, got {value}")


class EvseSecuritySimulator:
    def __init__(self, mqtt: MqttClient, store: CertificateStore, options: SimulatorOptions) -> None:
        self.mqtt = mqtt
        self.store = store
        self.options = options
        api = EVSE_SECURITY_CONSUMER
        self.topics = ApiTopics(api.name, api.topic_version, options.module_id, options.external_prefix)
        faults = options.faults
        self.liveness = EverestLiveness(
            mqtt, self.topics.e2m(HEARTBEAT), interval_ms=options.heartbeat_interval_ms, start=options.heartbeat_start,
            comm_check_timeout_s=options.comm_check_timeout_s, pause_after=faults.heartbeat_pause_after,
            pause_s=faults.heartbeat_pause,
        )
        self.requests_served = 0
        self.undecodable = 0
        self._random = random.Random(options.faults.seed)
        self.dropped = 0
        self.malformed = 0
        self.replies_lost = 0
        self._log_lost_reply = RateLimitedLog(log)
        self._log_undecodable = RateLimitedLog(log)
        self._handlers = {
            IS_CA_CERTIFICATE_INSTALLED.name: self._is_ca_certificate_installed,
            GET_LEAF_CERTIFICATE_INFO.name: self._get_leaf_certificate_info,
            GET_VERIFY_LOCATION.name: self._get_verify_location,
        }

    async def run(self, *, task_status: trio.TaskStatus[EvseSecuritySimulator] = trio.TASK_STATUS_IGNORED) -> None:
        requests = await self.mqtt.subscribe(self.topics.all_in(Direction.MODULE_TO_EVEREST), qos=0, max_buffer=256)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.liveness.run)
            task_status.started(self)
            async with requests:
                async for message in requests:
                    await self._handle(message)

    @property
    def watchdog(self) -> CommunicationCheckWatchdog:
        return self.liveness.watchdog

    @property
    def heartbeats_lost(self) -> int:
        return self.liveness.heartbeats_lost

    async def _handle(self, message: MqttMessage) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        if name == COMMUNICATION_CHECK:
            self.liveness.communication_check(message.payload)
            return
        handler = self._handlers.get(name)
        if handler is None:
            return  # EVerest has no such command: it does not subscribe to it
        operation = EVSE_SECURITY_CONSUMER.operations[name]
        try:
            reply_to, payload = decode_request(message.payload, operation.request_type)
        except CodecError as exc:
            self.undecodable += 1
            self._log_undecodable("Invalid data: Deserialization failed (%s: %s); no reply", name, exc)
            return
        self.requests_served += 1
        if reply_to is None:
            return
        reply_topic = self.options.external_prefix + reply_to
        faults = self.options.faults
        if faults.drop_ratio and self._random.random() < faults.drop_ratio:
            self.dropped += 1
            log.info("fault: no reply to %s", name)
            return
        malformed = bool(faults.malformed_ratio) and self._random.random() < faults.malformed_ratio
        if faults.reply_delay:
            # Each reply waits on its own: a slow reply does not hold back the requests after it.
            self._nursery.start_soon(self._reply_later, faults.reply_delay, name, handler, reply_topic, payload, malformed)
        else:
            await self._reply(name, handler, reply_topic, payload, malformed)

    async def _reply_later(self, delay: float, *args: Any) -> None:
        await trio.sleep(delay)
        await self._reply(*args)

    async def _reply(self, name: str, handler: Any, reply_topic: str, payload: Any, malformed: bool) -> None:
        try:
            if malformed:
                self.malformed += 1
                log.info("fault: malformed reply to %s", name)
                await self.mqtt.publish(reply_topic, self._random.choice(MALFORMED_REPLIES))
                return
            await handler(reply_topic, payload)
        except MqttError as exc:
            # The broker went away between request and reply: the reply is lost, as EVerest's would be.
            self.replies_lost += 1
            self._log_lost_reply("reply to %s lost: %s", name, exc)

    async def _is_ca_certificate_installed(self, reply_topic: str, certificate_type: Any) -> None:
        body = dump_json(self.store.is_ca_certificate_installed(certificate_type))
        await self.mqtt.publish(reply_topic, body)
        if not self.options.strict:
            await self.mqtt.publish(reply_topic, body)  # EVerest's implementation publishes it twice

    async def _get_leaf_certificate_info(self, reply_topic: str, request: Any) -> None:
        now = datetime.datetime.now(datetime.UTC)
        result = self.store.get_leaf_certificate_info(request, now=now, strict=self.options.strict)
        await self.mqtt.publish(reply_topic, encode_json(result))

    async def _get_verify_location(self, reply_topic: str, certificate_type: Any) -> None:
        path = self.store.get_verify_location(certificate_type, strict=self.options.strict)
        if self.options.strict:
            body = dump_json(path or "")
        else:
            body = (path or "").encode()  # raw text, no quotes; empty when nothing is installed
        await self.mqtt.publish(reply_topic, body)
