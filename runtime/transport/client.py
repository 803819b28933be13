"""The MQTT client evflow's nodes share: one broker connection kept up across reconnects.

It joins the pieces: the :class:`~evflow.runtime.protocol.router.Router` (which local subscriber
gets what, which filters the broker holds), a :class:`~.session.Session` per connection, the
:class:`~evflow.runtime.protocol.acks.PubackTable` of QoS 1 messages sent, and the reconnect loop.
(Longer than most modules: it is the one object whose state those pieces share; the logic of each
lives in its own module, and what is left here is how they meet.)

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
        # Since when (trio's clock) the connection is up, or down and why: for readiness reports.
        self.state_since: float | None = None
        self.down_reason = "not connected yet"
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
        for upgrade in outcome.subscribe:  # a wider filter's QoS raised, so that a narrower one can go
            try:
                session.send_subscribe(upgrade)  # type: ignore[union-attr]
            except NotConnected:
                self._router.withdraw(upgrade)

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason: Any, _properties: Any) -> None:
        # A PUBACK, or a QoS 0 message written with a packet id in use: settled after the read.
        self._pubacks.hint(mid)

    def _settle_pubacks(self) -> None:
        """After paho read: complete the QoS 1 publishes acknowledged meanwhile."""
        for waiter in self._pubacks.settle():
            waiter.set(None)
        if not self._pubacks:
            self._paho.on_publish = None
        self._room_changed()

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.stats.received += 1
        qos = message.qos
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
                    for route in routes:
                        route.owner._deliver(item)
                else:
                    self.stats.undeliverable += 1
        if qos:
            # Routed: in a subscriber's buffer or backlog, or dropped and counted. Acknowledged from
            # inside the callback, paho queues the PUBACK (QoS 2: PUBREC, and PUBCOMP on the broker's
            # PUBREL), and the writer sends a burst's at once.
            self._paho.ack(message.mid, qos)

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
                        self.state_since = trio.current_time()
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
                    self.down_reason = f"connection to {self.config.address} lost: {error}"
                    attempts += 1
                    self.stats.connect_failures += 1
                    delay = backoff.delay()
                    log.debug("reconnect to %s failed (%s); next attempt in %.1f s", self.config.address, error, delay)
                    down_for = trio.current_time() - (down_since or 0.0)
                    if down_for >= _WARN_EVERY:  # the loss was logged; a long outage is told again, a minute apart
                        self._log_retry("still not connected to %s after %.0f s (%d attempts): %s; retrying, "
                                        "at most %g s apart", self.config.address, down_for, attempts, error,
                                        self.config.reconnect_max)
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
        self.state_since = trio.current_time()
        self.down_reason = f"connection to {self.config.address} lost: {reason}"
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
        try:
            session.send_subscribe(request)
        except BaseException:
            self._router.withdraw(request)  # never sent: nothing to wait for
            self._remove_route(route)
            raise
        waiter = self._route_waiters[route] = OneShot()
        try:
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

    def _room_changed(self) -> None:
        # Publishers waiting for room go on once half of each limit is free (not at every byte).
        if (self._room_wanted and self.outgoing_bytes <= self.config.max_outgoing_bytes // 2
                and len(self._pubacks) <= self.config.max_unacknowledged // 2):
            self._room_wanted = False
            room, self._room = self._room, trio.Event()
            room.set()

    @property
    def unacknowledged(self) -> int:
        """Messages published at QoS 1 or 2 whose handshake with the broker is not finished."""
        return len(self._pubacks)

    def _full(self, qos: int) -> str | None:
        """Why a publish at ``qos`` would raise :class:`OutgoingFull` now (None: it would not)."""
        outgoing = self.outgoing_bytes
        if outgoing >= self.config.max_outgoing_bytes:
            return (f"{outgoing} bytes wait to be sent to {self.config.address} (max_outgoing_bytes "
                    f"{self.config.max_outgoing_bytes}): the broker is not taking them")
        if qos and len(self._pubacks) >= self.config.max_unacknowledged:
            return (f"{len(self._pubacks)} QoS 1 messages wait for {self.config.address}'s acknowledgement "
                    f"(max_unacknowledged {self.config.max_unacknowledged})")
        return None

    async def wait_outgoing_room(self, qos: int = 0) -> None:
        """Until a publish at ``qos`` would not raise :class:`OutgoingFull` (or the connection is gone)."""
        if self._full(qos) is None:
            await trio.lowlevel.checkpoint()
            return
        self._room_wanted = True
        await self._room.wait()

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int:
        """Hand a message to the connection (sent at once when the socket takes it); returns its
        packet id. Raises :class:`NotConnected`, or :class:`OutgoingFull` when the bytes waiting to
        be sent have reached ``max_outgoing_bytes`` (or, at QoS 1, the messages waiting for their
        PUBACK ``max_unacknowledged``)."""
        return self._publish(topic, payload, qos, retain, None)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool, waiter: OneShot[None] | None) -> int:
        session = self._session
        if session is None or not session.connected:
            raise NotConnected(f"not connected to {self.config.address}")
        full = self._full(qos)
        if full is not None:
            raise OutgoingFull(full)
        info = self._paho.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
        self.stats.published += 1
        if qos:
            if not self._pubacks:
                self._paho.on_publish = self._on_publish
            earlier = self._pubacks.expect(info.mid, info.is_published, waiter)
            if earlier is not None:  # the id's previous message, acknowledged and not settled yet
                earlier.set(None)
        return info.mid

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> OneShot[None]:
        """Hand a message over and return what completes when it is done: at once for QoS 0, on its
        PUBACK for QoS 1 (or fails with :class:`NotConnected` when the client closes first). Lets a
        sender keep a window of acknowledgements open instead of waiting for each. Raises as
        :meth:`publish_nowait`."""
        if qos == 0:
            self._publish(topic, payload, 0, retain, None)
            return _DONE
        done: OneShot[None] = OneShot()
        self._publish(topic, payload, qos, retain, done)
        return done

    async def publish_when_room(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> OneShot[None]:
        """As :meth:`publish_tracked`, waiting while the connection is full (:class:`OutgoingFull`)
        instead of raising; with room, it hands the message over without a scheduling point."""
        while True:
            try:
                return self.publish_tracked(topic, payload, qos, retain)
            except OutgoingFull:
                await self.wait_outgoing_room(qos)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish, waiting while the connection is full (:class:`OutgoingFull`); with QoS 1, return
        only once the broker acknowledged it (PUBACK)."""
        done = await self.publish_when_room(topic, payload, qos, retain)
        if qos == 0:
            await trio.lowlevel.checkpoint()
            return
        await done.wait()
