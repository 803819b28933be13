"""Local subscribers of a connection: buffered (:class:`Subscription`) or called back in the read loop
(:class:`CallbackSubscription`). Neither ever makes the connection's reader wait.

A subscription's consumer that falls behind fills its buffer (``max_buffer``), then, with
:attr:`Overflow.BLOCK`, a backlog bounded by the connection's ``max_held`` messages and
``max_held_bytes`` payload bytes; what does not fit is dropped, counted and logged. A QoS 1 message
is acknowledged once it is routed, in a buffer or a backlog: the backlog is evflow's responsibility,
so that one stalled subscriber cannot hold back the others through the broker's window.
"""

from __future__ import annotations

import collections
import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Self

import trio

from ..protocol.router import Route
from ..ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from .client import MqttClient

__all__ = ["CallbackSubscription", "MqttMessage", "Overflow", "Subscription"]

log = logging.getLogger("evflow.mqtt")


class MqttMessage(NamedTuple):
    """A received message. A tuple: it is made once per message on the hot path."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Overflow(enum.StrEnum):
    """What a subscription does with a message when its consumer has fallen behind and its buffer
    is full. The connection's reader never waits for a consumer."""

    # Keep it in the backlog while the backlog is within the connection's max_held messages and
    # max_held_bytes; beyond, drop it (counted).
    BLOCK = "block"
    DROP_NEWEST = "drop-newest"  # drop the message that does not fit (counted, logged)
    DROP_OLDEST = "drop-oldest"  # drop the oldest buffered message to make room (counted, logged)


class _Subscriber:
    """What both kinds share: the route, the way out, ``async with``."""

    def __init__(self, client: MqttClient, route: Route) -> None:
        self._client = client
        self.route = route
        route.owner = self

    @property
    def topic_filter(self) -> str:
        return self.route.topic_filter

    @property
    def qos(self) -> int:
        return self.route.qos

    def _deliver(self, message: MqttMessage) -> None:
        """A message from the read loop. Never blocks, never raises."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop delivering (idempotent); the broker subscription ends when no other needs it."""
        self._client._remove_route(self.route)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Subscription(_Subscriber):
    """Messages of one topic filter, in order, through a bounded buffer: iterate it, or
    :meth:`receive`; :meth:`aclose` ends it.

    ``take``, when set, is offered each message in the read loop while nothing of this subscription
    is waiting (buffered or held). It returns True when it took the message; on False, or an
    exception (logged, counted in ``stats.callback_errors``), the message is buffered as usual. It
    must not block. A consumer that sets it keeps order by declining while it still works on a
    message it received: ``receive`` takes a message off the buffer only after its last scheduling
    point, so the read loop never runs between that and the consumer's next step, unless the
    consumer yields.
    """

    def __init__(
        self,
        client: MqttClient,
        route: Route,
        *,
        max_buffer: int,
        overflow: Overflow,
        max_held: int,
        max_held_bytes: int,
        stamp_arrivals: bool = False,
    ) -> None:
        super().__init__(client, route)
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, got {max_buffer}")
        self.max_buffer = max_buffer
        self.overflow = Overflow(overflow)
        self._max_held = max_held if self.overflow is Overflow.BLOCK else 0
        self._max_held_bytes = max_held_bytes
        self.take: Callable[[MqttMessage], bool] | None = None
        self.dropped = 0
        self.arrivals = 0  # messages that reached this subscription, taken or not
        # When the last message arrived (trio's clock), for consumers that time liveness by arrival.
        self.last_arrival: float | None = None
        self._stamp = stamp_arrivals
        self._buffer: collections.deque[MqttMessage] = collections.deque()
        self._held: collections.deque[MqttMessage] = collections.deque()  # the backlog beyond the buffer
        self._held_bytes = 0
        self._arrived = trio.lowlevel.ParkingLot()
        self._closed = False
        self._log_drop = RateLimitedLog(log)

    def __repr__(self) -> str:
        return f"<Subscription {self.topic_filter!r} qos={self.qos} overflow={self.overflow}>"

    @property
    def pending(self) -> int:
        """Messages received and not yet taken (buffered or held)."""
        return len(self._buffer) + len(self._held)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def _deliver(self, message: MqttMessage) -> None:
        if self._closed:
            return
        self.arrivals += 1
        if self._stamp:
            self.last_arrival = trio.current_time()
        buffer = self._buffer
        if not self._held:
            if not buffer and self.take is not None and self._offer(message):
                return
            if len(buffer) < self.max_buffer:
                buffer.append(message)
                if len(buffer) == 1 and self._arrived:
                    self._arrived.unpark()
                return
        if self.overflow is Overflow.BLOCK:
            size = len(message.payload)
            if len(self._held) < self._max_held and self._held_bytes + size <= self._max_held_bytes:
                self._held.append(message)
                self._held_bytes += size
                return
        elif self.overflow is Overflow.DROP_OLDEST:
            buffer.popleft()
            buffer.append(message)
        self._count_drop()

    def _offer(self, message: MqttMessage) -> bool:
        try:
            return self.take(message)  # type: ignore[misc]
        except Exception:
            self._client.stats.callback_errors += 1
            log.exception("the take callback of the subscription to %r failed on a message on %r",
                          self.topic_filter, message.topic)
            return False

    def _count_drop(self) -> None:
        self.dropped += 1
        self._client.stats.dropped += 1
        self._log_drop(
            "subscription %r is full (%d buffered, %d held, policy %s): dropped a message, %d dropped so far",
            self.topic_filter, len(self._buffer), len(self._held), self.overflow, self.dropped,
        )

    def receive_nowait(self) -> MqttMessage:
        """The next message, or :class:`trio.WouldBlock`."""
        buffer = self._buffer
        if not buffer:
            if self._closed:
                raise trio.ClosedResourceError("this subscription was closed")
            raise trio.WouldBlock
        message = buffer.popleft()
        if self._held:  # the oldest held message moves into the buffer
            buffer.append(self._held.popleft())
            self._held_bytes -= len(buffer[-1].payload)
        return message

    async def receive(self) -> MqttMessage:
        """The next message, waiting for one. Every scheduling point comes before the message is
        taken off the buffer (see ``take``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._buffer:
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not self._buffer and not self._closed:
            await self._arrived.park()
        return self.receive_nowait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MqttMessage:
        try:
            return await self.receive()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving: what is buffered or held is dropped (see :attr:`pending` before)."""
        if not self._closed:
            self._closed = True
            self._buffer.clear()
            self._held.clear()
            self._held_bytes = 0
            self._arrived.unpark_all()
        await super().aclose()


class CallbackSubscription(_Subscriber):
    """Messages of one topic filter handed to a callback in the connection's read loop, as read.

    For dispatchers whose work per message is small and never waits (an API client completing the
    request a reply answers): no buffer, no task to wake per message. The callback must not block;
    an exception it raises is logged and counted (``stats.callback_errors``) and reading goes on.
    """

    def __init__(self, client: MqttClient, route: Route, callback: Callable[[MqttMessage], None]) -> None:
        super().__init__(client, route)
        self.callback = callback

    def __repr__(self) -> str:
        return f"<CallbackSubscription {self.topic_filter!r} qos={self.qos} callback={self.callback!r}>"

    def _deliver(self, message: MqttMessage) -> None:
        try:
            self.callback(message)
        except Exception:
            self._client.stats.callback_errors += 1
            log.exception("the callback of the subscription to %r failed on a message on %r",
                          self.topic_filter, message.topic)
