"""The MQTT client evflow's nodes share: one broker connection kept up across reconnects.

It joins the pieces: the :class:`~evflow.runtime.protocol.router.Router` (which local subscriber
gets what, which filters the broker holds), a :class:`~.session.Session` per connection, the
:class:`~evflow.runtime.protocol.acks.PubackTable` of QoS 1 messages sent, and the reconnect loop.

Use it as a trio service::

    mqtt = MqttClient(BrokerConfig.from_url("mqtt://localhost:1883"))
    async with trio.open_nursery() as nursery:
        await nursery.start(mqtt.run)      # connected, or ConnectError
        sub = await mqtt.subscribe("a/+")  # returns after its SUBACK
        ...
        await mqtt.aclose()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import MQTTErrorCode

from ..broker import BrokerConfig
from ..errors import ConnectError, NotConnected, OutgoingFull, SubscribeError
from ..oneshot import OneShot
from ..protocol.acks import PubackTable
from ..protocol.backoff import Backoff
from ..protocol.router import Route, Router
from ..ratelimit import RateLimitedLog
from .pahoclient import describe_disconnect, make_paho
from .session import Session
from .subscriptions import CallbackSubscription, MqttMessage, Overflow, Subscription

__all__ = ["MqttClient", "TransportStats"]

log = logging.getLogger("evflow.mqtt")

# A held QoS 1 message's acknowledgement: its packet id, and above its 16 bits the number of the
# session it came on, as one int (no object per held message).
_MID_BITS = 16
_MID_MASK = (1 << _MID_BITS) - 1

# How often the same trouble with the connection is logged at WARNING, at most.
_WARN_EVERY = 60.0

# What publish_tracked returns for every QoS 0 message: done when handed over, and set once for all.
_DONE: OneShot[None] = OneShot()
_DONE.set(None)


@attrs.define
class TransportStats:
    connects: int = 0
    connection_losses: int = 0
    connect_failures: int = 0  # reconnect attempts that failed
    received: int = 0
    dropped: int = 0  # by full subscriptions
    undeliverable: int = 0  # topic not valid UTF-8, or matching no subscription
    oversized: int = 0  # payload above max_payload
    callback_errors: int = 0  # a subscription's callback or take raised (logged)
    published: int = 0


class MqttClient:
    """One MQTT connection, kept up while :meth:`run` runs. See the module docstring."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.stats = TransportStats()
        self._paho, self._paho_error = make_paho(config, self)
        self._router = Router()
        self._route_waiters: dict[Route, OneShot[None]] = {}
        self._pubacks: PubackTable[OneShot[None]] = PubackTable()
        self._session: Session | None = None
        self._sessions = 0
        self._closing = False
        self._run_scope: trio.CancelScope | None = None
        self._connected_event = trio.Event()
        self._lost_event = trio.Event()
        self._room = trio.Event()  # set when the outgoing bytes fall below the low-water mark
        self._room_wanted = False
        self._max_payload = config.max_payload
        self._log_undeliverable = RateLimitedLog(log)
        self._log_lost = RateLimitedLog(log, logging.WARNING, _WARN_EVERY)
        self._log_retry = RateLimitedLog(log, logging.WARNING, _WARN_EVERY)

    def __repr__(self) -> str:
        return f"<MqttClient {self.config.address}>"

    # ---- paho set-up and callbacks ---------------------------------------------------------------

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        if self._session is not None:
            self._session.connack(str(reason) if reason.is_failure else None)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        session = self._session
        detail, self._paho_error.message = self._paho_error.message, None
        text = describe_disconnect(session.wire if session else None, detail, reason)
        if session is None:
            return
        if not trio.lowlevel.in_trio_run():
            # paho wrote CONNECT from connect(), in the worker thread, and the socket failed (a TLS
            # alert, say): no trio object may be touched from there; the session reports it.
            session.thread_failure = text
            return
        session.lost(text)

    def _on_socket_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        # Wake tasks waiting on this socket before paho closes it (trio requires it). During a
        # threaded connect() or paho's __del__, paho closes an old socket that nobody waits on any
        # more, outside trio: nothing to wake then.
        if trio.lowlevel.in_trio_run():
            trio.lowlevel.notify_closing(sock)

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, reasons: Any, _properties: Any) -> None:
        session = self._session
        request = session.suback(mid) if session is not None else None
        if request is None:
            return
        granted = [None if reason.is_failure else reason.value for reason in reasons]
        outcome = self._router.acknowledge(request, granted)
        why = {topic_filter: str(reason) for (topic_filter, _), reason in zip(request.filters, reasons, strict=False)}
        for route in outcome.ready:
            waiter = self._route_waiters.pop(route, None)
            if waiter is not None:
                waiter.set(None)
        for route, topic_filter in outcome.refused:
            waiter = self._route_waiters.pop(route, None)
            if waiter is not None:
                waiter.fail(SubscribeError(topic_filter, why.get(topic_filter, "refused")))
        if request.restore:
            session.restored(outcome)  # type: ignore[union-attr]
        session.send_unsubscribe(outcome.unsubscribe)  # type: ignore[union-attr]

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason: Any, _properties: Any) -> None:
        waiter = self._pubacks.acknowledged(mid)
        if not self._pubacks:
            self._paho.on_publish = None
        if waiter is not None:
            waiter.set(None)

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.stats.received += 1
        session: Session = self._session  # type: ignore[assignment]
        qos = message.qos
        if qos:
            mid = message.mid
            session.ledger.received(mid)
        payload = message.payload
        if len(payload) > self._max_payload:
            self.stats.oversized += 1
            self._log_undeliverable("dropped a %d-byte message (max_payload %d)", len(payload), self._max_payload)
        else:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                self.stats.undeliverable += 1
                self._log_undeliverable("dropped a message whose topic is not valid UTF-8")
            else:
                routes = self._router.deliver(topic, message.retain)
                if routes:
                    first = routes[0]
                    if not first.wildcard:
                        # The route's own string, not paho's fresh copy: one topic object for every
                        # message a subscriber buffers or holds.
                        topic = first.topic_filter
                    item = MqttMessage(topic, payload, qos, message.retain)  # type: ignore[arg-type]
                    ack = mid | session.number << _MID_BITS if qos else None
                    ledger = session.ledger
                    for route in routes:
                        if route.owner._deliver(item, ack):
                            ledger.hold()
                else:
                    self.stats.undeliverable += 1
        if qos and session.ledger.routed():
            self._paho.ack(mid, 1)

    def _release_ack(self, ack: int) -> None:
        """A subscriber let go of a QoS 1 message it held: acknowledge it when nobody holds it now."""
        session = self._session
        if session is not None and ack >> _MID_BITS == session.number and session.ledger.release(ack & _MID_MASK):
            self._paho.ack(ack & _MID_MASK, 1)
            session.kick_writer()

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.up and self._session.connected

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected now)."""
        await self._connected_event.wait()

    async def wait_connection_lost(self) -> None:
        """Return once the current connection is lost (at once if there is none now)."""
        if not self.connected:
            await trio.lowlevel.checkpoint()
            return
        await self._lost_event.wait()

    async def run(self, *, task_status: trio.TaskStatus[MqttClient] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report ready, then keep the connection up (reconnecting) until :meth:`aclose`.

        The first connection failure raises :class:`ConnectError` (before ready); later losses
        are retried with exponential backoff and jitter, up to ``reconnect_max``.
        """
        backoff = Backoff(self.config.reconnect_min, self.config.reconnect_max)
        started = False
        down_since: float | None = None
        attempts = 0
        with trio.CancelScope() as self._run_scope:
            while not self._closing:
                self._sessions += 1
                session = self._session = Session(self, self._sessions)
                error: ConnectError | None = None
                async with trio.open_nursery() as nursery:
                    try:
                        await nursery.start(session.run)
                    except ConnectError as exc:
                        error = exc
                    else:
                        self.stats.connects += 1
                        self._lost_event = trio.Event()
                        self._connected_event.set()
                        backoff.reset()
                        if down_since is not None:
                            log.info("reconnected to %s after %.1f s (%d attempt(s))", self.config.address,
                                     trio.current_time() - down_since, attempts)
                        if not started:
                            started = True
                            task_status.started(self)
                        down_since, attempts = None, 0
                # The session ended: it failed to connect, or its connection is gone.
                if self._closing:
                    break
                if error is not None:
                    if not started:
                        raise error
                    attempts += 1
                    self.stats.connect_failures += 1
                    delay = backoff.delay()
                    log.debug("reconnect to %s failed (%s); next attempt in %.1f s", self.config.address, error, delay)
                    self._log_retry("still not connected to %s after %d attempt(s): %s; retrying, at most %g s apart",
                                    self.config.address, attempts, error, self.config.reconnect_max)
                else:
                    down_since = trio.current_time()
                    delay = backoff.delay()
                await trio.sleep(delay)
        if not started:
            raise ConnectError(f"closed before the connection to {self.config.address} was up")

    def _session_ended(self, session: Session, reason: str, *, quiet: bool = False) -> None:
        """Called once per session as it ends (see :meth:`Session.lost`)."""
        for route in self._router.connection_lost():
            waiter = self._route_waiters.pop(route, None)
            if waiter is not None:
                waiter.fail(NotConnected(f"connection to {self.config.address} lost: {reason}"))
        self._room.set()  # publishers waiting for room: the next publish says NotConnected
        self._room = trio.Event()
        if not session.up:
            return
        if self._connected_event.is_set():  # never replace an event someone still waits on
            self._connected_event = trio.Event()
        self._lost_event.set()
        if not self._closing and not quiet:
            self.stats.connection_losses += 1
            self._log_lost("connection to %s lost: %s; reconnecting", self.config.address, reason)

    async def aclose(self) -> None:
        """Disconnect cleanly (DISCONNECT sent) and stop :meth:`run`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        session = self._session
        if session is not None and session.connected:
            with trio.move_on_after(self.config.connect_timeout):
                await session.wait_written()  # what the flow published leaves before DISCONNECT
            self._paho.disconnect()
            session.kick_writer()
            with trio.move_on_after(self.config.connect_timeout):
                await session.ended.wait()
        self._paho.on_publish = None
        for waiter in self._pubacks.take_all():
            waiter.fail(NotConnected(f"client of {self.config.address} closed before the broker acknowledged"))
        if self._run_scope is not None:
            self._run_scope.cancel()

    # ---- subscriptions ---------------------------------------------------------------------------

    async def subscribe(
        self,
        topic_filter: str,
        *,
        qos: int = 0,
        max_buffer: int = 64,
        overflow: Overflow = Overflow.BLOCK,
        stamp_arrivals: bool = False,
    ) -> Subscription:
        """Subscribe; returns after the broker's SUBACK granted it (else :class:`SubscribeError`,
        or :class:`NotConnected`). See :class:`Subscription` for the buffer and its overflow."""
        subscription = Subscription(
            self, Route(topic_filter, qos), max_buffer=max_buffer, overflow=overflow,
            max_held=self.config.max_held, max_held_bytes=self.config.max_held_bytes, stamp_arrivals=stamp_arrivals,
        )
        await self._add_route(subscription.route)
        return subscription

    async def subscribe_callback(
        self, topic_filter: str, callback: Callable[[MqttMessage], None], *, qos: int = 0
    ) -> CallbackSubscription:
        """Subscribe ``callback`` (see :class:`CallbackSubscription`); returns after its SUBACK."""
        subscription = CallbackSubscription(self, Route(topic_filter, qos), callback)
        await self._add_route(subscription.route)
        return subscription

    async def _add_route(self, route: Route) -> None:
        session = self._session
        if session is None or not session.connected:
            raise NotConnected(f"not connected to {self.config.address}")
        request = self._router.add(route)
        waiter = self._route_waiters[route] = OneShot()
        try:
            session.send_subscribe(request)
            await waiter.wait()
        except BaseException:
            self._route_waiters.pop(route, None)
            self._remove_route(route)
            raise

    def _remove_route(self, route: Route) -> None:
        filters = self._router.remove(route)
        if filters and self._session is not None:
            self._session.send_unsubscribe(filters)

    # ---- publishing ------------------------------------------------------------------------------

    @property
    def outgoing_bytes(self) -> int:
        """Bytes published and not yet taken by the kernel (bounded by ``max_outgoing_bytes``)."""
        session = self._session
        return session.wire.outgoing if session is not None and session.wire is not None else 0

    def _outgoing_changed(self, outgoing: int) -> None:
        # Publishers waiting for room go on once half of the limit is free (not at every byte).
        if self._room_wanted and outgoing <= self.config.max_outgoing_bytes // 2:
            self._room_wanted = False
            room, self._room = self._room, trio.Event()
            room.set()

    async def wait_outgoing_room(self) -> None:
        """Until a publish would not raise :class:`OutgoingFull` (or the connection is gone)."""
        if self.outgoing_bytes < self.config.max_outgoing_bytes:
            await trio.lowlevel.checkpoint()
            return
        self._room_wanted = True
        await self._room.wait()

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int:
        """Hand a message to the connection (sent at once when the socket takes it); returns its
        packet id. Raises :class:`NotConnected`, or :class:`OutgoingFull` when the bytes waiting to
        be sent have reached ``max_outgoing_bytes``."""
        session = self._session
        if session is None or not session.connected:
            raise NotConnected(f"not connected to {self.config.address}")
        wire = session.wire
        if wire is not None and wire.outgoing >= self.config.max_outgoing_bytes:
            raise OutgoingFull(
                f"{wire.outgoing} bytes wait to be sent to {self.config.address} "
                f"(max_outgoing_bytes {self.config.max_outgoing_bytes}): the broker is not taking them"
            )
        info = self._paho.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                raise OutgoingFull(
                    f"{self.config.max_unacknowledged} QoS 1 messages wait for the broker's acknowledgement"
                )
            raise NotConnected(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
        self.stats.published += 1
        return info.mid

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> OneShot[None]:
        """Hand a message over and return what completes when it is done: at once for QoS 0, on its
        PUBACK for QoS 1 (or fails with :class:`NotConnected` when the client closes first). Lets a
        sender keep a window of acknowledgements open instead of waiting for each. Raises as
        :meth:`publish_nowait`."""
        mid = self.publish_nowait(topic, payload, qos, retain)
        if qos == 0:
            return _DONE
        done: OneShot[None] = OneShot()
        self._expect_puback(mid, done)
        return done

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish, waiting while the outgoing bytes are at their limit; with QoS 1, return only
        once the broker acknowledged it (PUBACK)."""
        while True:
            try:
                mid = self.publish_nowait(topic, payload, qos, retain)
                break
            except OutgoingFull:
                await self.wait_outgoing_room()
        if qos == 0:
            await trio.lowlevel.checkpoint()
            return
        await self.wait_published(mid)

    async def wait_published(self, mid: int) -> None:
        """Wait for the PUBACK of the QoS 1 message ``mid`` that :meth:`publish_nowait` just handed
        over (before this task yielded: an acknowledgement that came earlier is not seen)."""
        waiter: OneShot[None] = OneShot()
        self._expect_puback(mid, waiter)
        await waiter.wait()

    def _expect_puback(self, mid: int, waiter: OneShot[None]) -> None:
        if not self._pubacks:
            self._paho.on_publish = self._on_publish
        self._pubacks.expect(mid, waiter)

