"""A client of one EVerest API for one module: requests, heartbeats, communication checks.

API-agnostic: the API is an :class:`ApiSpec` (name, version, operation table). Each request gets its
own reply topic under this client's reply prefix; the one subscription covering them all is in place
before :meth:`ApiClient.run` reports ready. A reply nobody waits for any more (late, or EVerest's second
copy of a boolean) is dropped and counted in ``stats``.

    client = ApiClient(mqtt, EVSE_SECURITY_CONSUMER, "evse_security_api")
    await nursery.start(client.run)
    installed = await client.request("is_ca_certificate_installed", "CSMS")
"""

from __future__ import annotations

import collections
import logging
import math
import secrets
from typing import Any

import trio

from . import redaction
from .codec import CodecError, decode_json, dump_json, structure
from .errors import InvalidPayload, InvalidRequest, NotConnected, OutgoingFull, RequestTimeout
from .models.evse_security import U64_MAX, HeartbeatId
from .oneshot import OneShot
from .protocol.api import COMMUNICATION_CHECK, HEARTBEAT, ApiSpec, Operation
from .protocol.envelope import encode_request
from .protocol.requests import (
    Dropped,
    DropReason,
    OperationStats,
    PendingRequest,
    Reply,
    RequestStats,
    RequestTable,
    reply_prefix_for,
)
from .protocol.topics import ApiTopics
from .ratelimit import RateLimitedLog
from .transport import MqttClient, MqttMessage, Overflow, Subscription

__all__ = ["ApiClient", "HeartbeatSubscription"]

log = logging.getLogger("evflow.client")


class HeartbeatSubscription:
    """EVerest's heartbeat ids in arrival order. ``receive`` raises :class:`InvalidPayload` for one
    that does not decode (and the next call goes on with the next message)."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.invalid = 0

    async def receive(self) -> HeartbeatId:
        return self._decode(await self.subscription.receive())

    def receive_nowait(self) -> HeartbeatId:
        """The next buffered heartbeat id, or :class:`trio.WouldBlock`."""
        return self._decode(self.subscription.receive_nowait())

    def _decode(self, message: MqttMessage) -> HeartbeatId:
        payload = message.payload
        # EVerest writes a plain decimal: read it without the JSON decoder and the converter.
        if payload.isdigit() and (payload[0] != 0x30 or len(payload) == 1) and len(payload) <= 20:
            value = int(payload)
            if value <= U64_MAX:
                return HeartbeatId(value)
        try:
            return decode_json(payload, HeartbeatId)
        except CodecError as exc:
            self.invalid += 1
            raise InvalidPayload(message.topic, exc.problems) from None

    async def aclose(self) -> None:
        await self.subscription.aclose()

    async def __aenter__(self) -> HeartbeatSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ApiClient:
    """Requests to, and liveness of, one EVerest API module over an :class:`MqttClient`."""

    def __init__(
        self,
        mqtt: MqttClient,
        api: ApiSpec,
        module_id: str,
        *,
        external_prefix: str = "",
        request_timeout: float = 5.0,
        max_in_flight: int = 256,
        request_qos: int = 0,
    ) -> None:
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout}")
        self.mqtt = mqtt
        self.api = api
        self.topics = ApiTopics(api.name, api.topic_version, module_id, external_prefix)
        self.request_timeout = request_timeout
        self.request_qos = request_qos
        # One random topic level per client: two clients on one broker never share reply topics.
        self._table = RequestTable(reply_prefix_for(external_prefix, secrets.token_hex(6)), max_open=max_in_flight)
        self._in_flight = trio.Semaphore(max_in_flight)
        self._replies: dict[PendingRequest, OneShot[Any]] = {}
        # Requests waiting for a reply, in deadline order per timeout (one queue per timeout value in
        # use, so each stays sorted), and the one timer that fails them when it passes (run()).
        self._deadlines: dict[float, collections.OrderedDict[PendingRequest, float]] = {}
        self._timer = trio.CancelScope(deadline=math.inf)
        self._timer_running = False
        self._request_topics = {name: self._request_topic(op) for name, op in api.operations.items()}
        # Per operation: latency of the answered requests, timeouts (for /metrics). Operations made
        # from a document at run time join both tables on their first request.
        self.operation_stats = {name: OperationStats() for name in api.operations}
        self._log_dropped = RateLimitedLog(log)

    def _request_topic(self, op: Operation[Any, Any]) -> str:
        if op.address is None:
            return self.topics.m2e(op.name)
        return f"{self.topics.external_prefix}{self.topics.base}/{op.address}"

    @property
    def stats(self) -> RequestStats:
        return self._table.stats

    @property
    def in_flight(self) -> int:
        return self._table.open_count

    async def run(self, *, task_status: trio.TaskStatus[ApiClient] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe to the replies, report ready, then serve until cancelled."""
        # Replies are dispatched as the connection reads them: completing a waiting request is all
        # there is to do, and a task in between would cost a wake-up per reply.
        async with await self.mqtt.subscribe_callback(self._table.reply_filter, self._dispatch_reply, qos=0):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fail_requests_on_connection_loss)
                task_status.started(self)
                await self._fail_requests_past_deadline()

    def _dispatch_reply(self, message: MqttMessage) -> None:
        outcome = self._table.receive(message.topic, message.payload)
        if isinstance(outcome, Dropped):
            # EVerest answers boolean requests twice by design: only other drops are worth a line.
            if outcome.reason is not DropReason.DUPLICATE:
                self._log_dropped("dropped a %s reply on %s", outcome.reason, outcome.topic)
            return
        slot = self._replies.get(outcome.request)
        if slot is None:
            return
        if isinstance(outcome, Reply):
            if outcome.request.operation.secrets_of is not None:
                for secret in outcome.request.operation.secrets_of(outcome.value):
                    redaction.add(secret)
            slot.set(outcome.value)
        else:
            slot.fail(outcome.error)

    async def _fail_requests_past_deadline(self) -> None:
        """One timer for every request's deadline: a cancel scope per request costs more than the
        rest of sending it. Requests of one timeout expire in the order they were sent."""
        self._timer_running = True
        try:
            while True:
                with trio.CancelScope(deadline=self._next_deadline()) as self._timer:
                    await trio.sleep_forever()
                now = trio.current_time()
                for timeout, waiting in self._deadlines.items():
                    while waiting:
                        request, deadline = next(iter(waiting.items()))
                        if deadline > now:
                            break
                        del waiting[request]
                        self._replies[request].fail(RequestTimeout(request.operation.name, timeout))
        finally:
            self._timer_running = False

    def _next_deadline(self) -> float:
        firsts = (next(iter(waiting.values())) for waiting in self._deadlines.values() if waiting)
        return min(firsts, default=math.inf)

    async def _fail_requests_on_connection_loss(self) -> None:
        while True:
            await self.mqtt.wait_connection_lost()
            for request in self._table.abandon_all():
                slot = self._replies.get(request)
                if slot is not None:
                    slot.fail(NotConnected(f"connection lost while waiting for the reply to {request.operation.name}"))
            await self.mqtt.wait_connected()

    async def request(
        self,
        operation: Operation[Any, Any] | str,
        payload: Any,
        *,
        timeout: float | None = None,
        wait_for_connection: bool = False,
    ) -> Any:
        """Send one request and return its typed reply.

        ``payload`` is the operation's request type or plain JSON data for it. Raises
        :class:`InvalidRequest` (before sending), :class:`NotConnected`, :class:`RequestTimeout`
        (``timeout``, default ``request_timeout``, covers waiting for an in-flight slot too) or
        :class:`InvalidReply`. While disconnected it fails at once, or with ``wait_for_connection``
        waits for the connection within the same deadline; while the connection holds as many bytes
        unsent as it may (a stalled broker), it waits for room within the deadline.
        """
        op = operation if isinstance(operation, Operation) else self.api.operation(operation)
        stats = self.operation_stats.get(op.name)
        if stats is None:
            stats = self.operation_stats[op.name] = OperationStats()
            self._request_topics[op.name] = self._request_topic(op)
        started = trio.current_time()
        try:
            reply = await self._request(op, payload, timeout, wait_for_connection)
        except RequestTimeout:
            stats.timeouts += 1
            raise
        stats.latency.observe(trio.current_time() - started)
        return reply

    async def _request(self, op: Operation[Any, Any], payload: Any, timeout: float | None,
                       wait_for_connection: bool) -> Any:
        if not isinstance(payload, op.request_type):
            try:
                payload = structure(payload, op.request_type)
            except CodecError as exc:
                raise InvalidRequest(op.name, exc.problems) from None
        timeout = self.request_timeout if timeout is None else timeout
        deadline = trio.current_time() + timeout
        # Up to the publish nothing yields to the scheduler unless it must wait (a lone request goes
        # out in the pass its trigger arrived in); the wait for the reply is the checkpoint.
        timed_by_scope = not self._timer_running
        if wait_for_connection and not self.mqtt.connected:
            timed_by_scope = True
            with trio.move_on_at(deadline):
                await self.mqtt.wait_connected()
            if not self.mqtt.connected:
                raise RequestTimeout(op.name, timeout)
        try:
            self._in_flight.acquire_nowait()
        except trio.WouldBlock:
            timed_by_scope = True
            with trio.move_on_at(deadline) as waited:
                await self._in_flight.acquire()
            if waited.cancelled_caught:
                raise RequestTimeout(op.name, timeout) from None
        try:
            request = self._table.open(op)
            slot: OneShot[Any] = OneShot()
            self._replies[request] = slot
            # The timer's queue for this timeout is in deadline order only if each request joins it
            # in the pass its deadline was set: one that waited above keeps a cancel scope instead
            # (as does every request while the timer is not running).
            waiting = None
            if not timed_by_scope:
                waiting = self._deadlines.get(timeout)
                if waiting is None:
                    waiting = self._deadlines[timeout] = collections.OrderedDict()
                waiting[request] = deadline
                if deadline < self._timer.deadline:
                    self._timer.deadline = deadline
            try:
                body = encode_request(payload, self.topics.reply_to(request.reply_topic))
                topic = self._request_topics[op.name]
                published = None
                try:
                    published = self.mqtt.publish_tracked(topic, body, self.request_qos)
                except OutgoingFull:  # a stalled broker: wait for room, within the request's deadline
                    timed_by_scope = True
                if timed_by_scope or self.request_qos:
                    with trio.move_on_at(deadline):
                        if published is None:
                            published = await self.mqtt.publish_when_room(topic, body, self.request_qos)
                        await published.wait()  # QoS 1: the broker's PUBACK (QoS 0: done at once)
                        return await slot.wait()
                    raise RequestTimeout(op.name, timeout)
                return await slot.wait()
            finally:
                del self._replies[request]
                if waiting is not None:
                    waiting.pop(request, None)
                self._table.abandon(request)  # no-op when it was answered
        finally:
            self._in_flight.release()

    async def heartbeats(
        self, *, qos: int = 0, max_buffer: int = 64, overflow: Overflow = Overflow.DROP_OLDEST,
        stamp_arrivals: bool = False,
    ) -> HeartbeatSubscription:
        """Subscribe to EVerest's heartbeat (returns once the broker granted it).

        By default a consumer that falls behind loses the oldest beats (counted): the newest tell
        the truth about liveness. With ``stamp_arrivals`` the subscription records when the last
        beat arrived (``subscription.last_arrival``), to time liveness by arrival.
        """
        subscription = await self.mqtt.subscribe(
            self.topics.e2m(HEARTBEAT), qos=qos, max_buffer=max_buffer, overflow=overflow,
            stamp_arrivals=stamp_arrivals,
        )
        return HeartbeatSubscription(subscription)

    async def communication_check(self, ok: bool, *, qos: int = 0) -> None:
        """Tell EVerest the link is good (``True``), or stop its check for good (``False``)."""
        await self.mqtt.publish(self.topics.m2e(COMMUNICATION_CHECK), dump_json(bool(ok)), qos)
