"""MQTT on trio: paho-mqtt 2.x driven by trio's socket readiness, with reconnects.

Design (after trio-paho-mqtt, corrected): paho owns the protocol, trio owns the socket waits. One task
waits until the socket is readable and calls ``loop_read``, one waits until it is writable when paho has
data left over and calls ``loop_write``, one calls ``loop_misc`` for keepalive pings. paho's callbacks
run synchronously inside those calls, in the trio thread, and never block: they complete trio events
and hand messages to bounded channels.

* ``connect()`` blocks in paho (DNS, TCP, TLS handshake), so it runs in a worker thread.
* On TCP and Unix sockets paho talks to a :class:`_BufferedSocket`: one ``recv`` system call takes all
  the kernel holds and serves paho's byte-by-byte packet reads. A packet written while the writer task
  is idle goes out at once (no scheduler pass of delay for a lone request); what follows it collects in
  a buffer that the writer sends in the next pass, so a burst of publishes leaves in a few segments
  rather than one system call (and, with TCP_NODELAY, one segment) per message.
* After reads, TLS data already decrypted into the SSL buffer is drained (``pending()``), and on TCP
  the ACK is sent at once (``TCP_QUICKACK``): mosquitto keeps Nagle on, and a delayed ACK would hold
  its next packet back by 40 ms (SPEC.md, Brokers).
* A subscriber whose channel is full either holds the reader (``Overflow.BLOCK``: TCP pushes back on
  the broker, nothing is lost) or loses messages counted and logged (``DROP_NEWEST``/``DROP_OLDEST``).
* The connection is supervised: when it drops, in-flight acknowledgements fail with
  :class:`NotConnected`, and the client reconnects with backoff and restores every subscription.

Use it as a trio service::

    mqtt = MqttClient(BrokerConfig.from_url("mqtt://localhost:1883"))
    async with trio.open_nursery() as nursery:
        await nursery.start(mqtt.run)      # connected, or ConnectError
        sub = await mqtt.subscribe("a/+")  # returns after SUBACK
        ...
        await mqtt.aclose()
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import random
import socket
import ssl
from collections.abc import Callable
from typing import Any, NamedTuple, Self

import attrs
import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from .broker import BrokerConfig
from .errors import ConnectError, MqttError, NotConnected, SubscribeError
from .oneshot import OneShot
from .protocol.topics import compile_filter, filter_covers, validate_filter
from .ratelimit import RateLimitedLog

__all__ = ["CallbackSubscription", "MqttClient", "MqttMessage", "Overflow", "Subscription", "TransportStats"]

log = logging.getLogger("evflow.mqtt")

# Packets handled per readable wake-up before other tasks get a turn.
_READ_BURST = 64
# Bytes taken from the kernel per recv; and written data held before paho is told to wait (it then
# keeps its packets queued until the writer has flushed).
_RECV_SIZE = 64 * 1024
_WRITE_BUFFER_LIMIT = 256 * 1024
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class MqttMessage(NamedTuple):
    """A received message. A tuple: it is made once per message on the hot path."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Overflow(enum.StrEnum):
    """What a subscription does when its consumer falls behind and its buffer is full."""

    # QoS 1: leave the message unacknowledged until there is room (holding up to the connection's
    # max_held); the broker sends no more than its window of unacknowledged messages, and the
    # connection goes on reading (replies, acks).
    # QoS 0: stop reading from the broker until there is room, for at most the connection's
    # block_timeout (nothing else on the connection is read meanwhile); a longer stall drops the
    # backlog, counted.
    BLOCK = "block"
    DROP_NEWEST = "drop-newest"  # drop the message that does not fit (counted, logged)
    DROP_OLDEST = "drop-oldest"  # drop the oldest buffered message to make room (counted, logged)


@attrs.define
class TransportStats:
    connects: int = 0
    connection_losses: int = 0
    received: int = 0
    dropped: int = 0  # by full DROP_* subscriptions
    undeliverable: int = 0  # topic not valid UTF-8, or matching no subscription
    oversized: int = 0  # payload above max_payload
    callback_errors: int = 0  # a CallbackSubscription's callback raised (logged)
    published: int = 0


# A QoS 1 message's acknowledgement while a subscription holds it back: its mid, and the number of
# the connection it came on above the mid's 16 bits, as one int (no object per held message).
_MID_BITS = 16
_MID_MASK = (1 << _MID_BITS) - 1


# What publish_tracked returns for every QoS 0 message: done when handed over, and set once for all.
_DONE: OneShot[None] = OneShot()
_DONE.set(None)


class _Route:
    """A local subscriber of one topic filter, as the router sees it: what it matches, and the broker
    subscription it shares. ``_deliver`` takes each matching message; ``aclose`` ends it."""

    def __init__(self, client: MqttClient, topic_filter: str, qos: int) -> None:
        validate_filter(topic_filter)
        if qos not in (0, 1):
            raise ValueError(f"QoS must be 0 or 1, got {qos}")
        self.topic_filter = topic_filter
        self.qos = qos
        self._client = client
        self._broker_filter: str | None = None
        self._has_wildcard = "+" in topic_filter or "#" in topic_filter
        self._matches = compile_filter(topic_filter)

    def _deliver(self, message: MqttMessage, ack: int | None) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop delivering; the broker subscription ends when no other subscription needs it."""
        await self._client._unsubscribe(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Subscription(_Route):
    """Messages of one topic filter, in order, through a bounded buffer. Iterate it; ``aclose`` ends it.

    ``take``, when set, is offered each message in the read loop before it is buffered, if nothing
    of this subscription is ahead of it (buffered, held back, or handed to a waiting ``receive``
    that has not returned yet). It returns True when it took the message, which is then handled as
    one the consumer received; on False, or an exception (logged and counted in
    ``stats.callback_errors``), the message is buffered as usual. It must not block; a consumer
    that sets it keeps order by declining while it still works on a message it received.
    """

    def __init__(self, client: MqttClient, topic_filter: str, qos: int, max_buffer: int, overflow: Overflow) -> None:
        super().__init__(client, topic_filter, qos)
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, got {max_buffer}")
        self.overflow = overflow
        self.dropped = 0
        self._send, self._receive = trio.open_memory_channel[MqttMessage](max_buffer)
        # Messages sent into the channel and not yet returned by receive: counted here because a
        # message handed straight to a waiting receiver never shows in the channel's statistics.
        self._in_channel = 0
        self.take: Callable[[MqttMessage], bool] | None = None
        # What did not fit, in order, and beside it the acknowledgement each holds back (None for QoS 0).
        self._backlog: collections.deque[MqttMessage] = collections.deque()
        self._backlog_acks: collections.deque[int | None] = collections.deque()
        self._holds_reader = False  # the reader waits for this backlog (a QoS 0 message is in it)
        self._log_drop = RateLimitedLog(log)
        # Set when the consumer outlasted block_timeout: drop at once (no more waiting) until it
        # takes a message again, so one stuck consumer cannot slow the connection to a crawl.
        self._stalled = False

    def __repr__(self) -> str:
        return f"<Subscription {self.topic_filter!r} qos={self.qos} overflow={self.overflow}>"

    def _deliver(self, message: MqttMessage, ack: int | None) -> None:
        """Called from paho's on_message: never blocks, never raises."""
        if self._backlog:  # keep order behind what waits already
            self._hold(message, ack)
            return
        if self.take is not None and not self._in_channel:
            try:
                if self.take(message):
                    self._stalled = False
                    return
            except Exception:
                self._client.stats.callback_errors += 1
                log.exception("the take callback of the subscription to %r failed on a message on %r",
                              self.topic_filter, message.topic)
        try:
            self._send.send_nowait(message)
            self._in_channel += 1
            self._stalled = False
        except trio.WouldBlock:
            if self.overflow is Overflow.BLOCK and not self._stalled:
                self._hold(message, ack)
            elif self.overflow is Overflow.DROP_OLDEST:
                self._receive.receive_nowait()
                self._send.send_nowait(message)
                self._count_drop()
            else:
                self._count_drop()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the consumer closed it; it is being unsubscribed

    def _hold(self, message: MqttMessage, ack: int | None) -> None:
        self._backlog.append(message)
        self._backlog_acks.append(ack)
        if ack is not None:
            self._client._holders += 1
        if (ack is None or len(self._backlog) > self._client.config.max_held) and not self._holds_reader:
            self._holds_reader = True
            self._client._backlogged.append(self)

    def _pop_backlog(self) -> None:
        self._backlog.popleft()
        ack = self._backlog_acks.popleft()
        if ack is not None:
            self._client._release_ack(ack)

    def _count_drop(self) -> None:
        self.dropped += 1
        self._client.stats.dropped += 1
        self._log_drop(
            "subscription %r is full (%d buffered, policy %s): dropped a message, %d dropped so far",
            self.topic_filter,
            self._send.statistics().max_buffer_size,
            self.overflow,
            self.dropped,
        )

    async def _drain_backlog(self) -> None:
        try:
            while self._backlog:
                await self._send.send(self._backlog[0])
                self._in_channel += 1
                self._pop_backlog()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            while self._backlog:
                self._pop_backlog()

    def _refill(self) -> None:
        """Move what now fits from the backlog into the buffer (acknowledging it)."""
        while self._backlog:
            try:
                self._send.send_nowait(self._backlog[0])
            except trio.WouldBlock:
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            self._in_channel += 1
            self._pop_backlog()
        while self._backlog:
            self._pop_backlog()

    def _flush_backlog(self) -> None:
        """Hand over what fits now; the rest is dropped, counted and logged (the consumer stalled
        longer than the connection can wait, or the connection ended)."""
        self._holds_reader = False
        self._refill()
        if self._backlog:
            self._stalled = True
        while self._backlog:
            self._pop_backlog()
            self._count_drop()

    @property
    def pending(self) -> int:
        """Messages received and not yet taken (buffered, or waiting in the backlog)."""
        return self._in_channel + len(self._backlog)

    async def receive(self) -> MqttMessage:
        message = await self._receive.receive()
        self._in_channel -= 1
        if self._backlog and not self._holds_reader:
            self._refill()
        return message

    def receive_nowait(self) -> MqttMessage:
        message = self._receive.receive_nowait()
        self._in_channel -= 1
        if self._backlog and not self._holds_reader:
            self._refill()
        return message

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MqttMessage:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def statistics(self) -> trio.MemoryChannelStatistics:
        return self._receive.statistics()

    async def aclose(self) -> None:
        """Stop receiving; the broker subscription ends when no other subscription needs it."""
        self._receive.close()
        self._send.close()
        while self._backlog:  # acknowledged, or the broker would keep them in its window for good
            self._pop_backlog()
        await super().aclose()


class CallbackSubscription(_Route):
    """Messages of one topic filter handed to a callback in the connection's read loop, as they are read.

    For dispatchers whose work per message is small and never waits (an API client completing the
    request a reply answers): no buffer, no task to wake per message. The callback must not block;
    an exception it raises is logged and counted (``stats.callback_errors``) and reading goes on.
    """

    def __init__(self, client: MqttClient, topic_filter: str, qos: int, callback: Callable[[MqttMessage], None]) -> None:
        super().__init__(client, topic_filter, qos)
        self.callback = callback

    def __repr__(self) -> str:
        return f"<CallbackSubscription {self.topic_filter!r} qos={self.qos} callback={self.callback!r}>"

    def _deliver(self, message: MqttMessage, ack: int | None) -> None:
        """Called from paho's on_message: the message is handled once the callback returns."""
        try:
            self.callback(message)
        except Exception:
            self._client.stats.callback_errors += 1
            log.exception("the callback of the subscription to %r failed on a message on %r",
                          self.topic_filter, message.topic)



class _BufferedSocket:
    """The connection's TCP or Unix socket as paho sees it, read and written in bulk.

    paho reads each packet with three or more ``recv`` calls (the first byte, the length one byte at a
    time, then the rest) and writes each packet with its own ``send``. Here ``recv`` serves those reads
    from one system call's worth of data; ``send`` sends the first packet after the reader or the
    writer task last ran at once, and appends what follows to a buffer that :meth:`flush` (the
    writer task, in the next scheduler pass) sends in one call. paho handles ``BlockingIOError``
    from either as it does from a socket: nothing to read yet / try this packet again later.
    """

    __slots__ = ("sock", "sent_this_pass", "_read_buffer", "_read_position", "_write_buffer", "_write_wanted")

    def __init__(self, sock: socket.socket, write_wanted: Any) -> None:
        self.sock = sock
        self._read_buffer = b""
        self._read_position = 0
        self._write_buffer = bytearray()
        self._write_wanted = write_wanted  # called when the buffer turns non-empty
        self.sent_this_pass = False  # a send went out directly since the reader or the writer last ran

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    @property
    def read_pending(self) -> bool:
        return self._read_position < len(self._read_buffer)

    @property
    def write_pending(self) -> bool:
        return bool(self._write_buffer)

    def recv(self, size: int) -> bytes:
        position = self._read_position
        buffered = self._read_buffer
        if position >= len(buffered):
            buffered = self.sock.recv(_RECV_SIZE)  # BlockingIOError when there is nothing: as paho expects
            if len(buffered) <= size:
                return buffered
            self._read_buffer = buffered
            position = 0
        end = position + size
        self._read_position = end
        return buffered[position:end]

    def send(self, data: bytes | bytearray) -> int:
        buffer = self._write_buffer
        if not buffer:
            if not self.sent_this_pass:
                # The first write since the reader or the writer last ran goes out at once: a lone
                # packet (a request, its result) does not wait a scheduler pass for the writer, and
                # the writer is not woken for nothing. What follows it before either runs again is
                # gathered into one send (so on a connection that only sends, a lone packet after a
                # direct one waits for the writer's pass: a pass counter would cost every pass).
                self.sent_this_pass = True
                try:
                    sent = self.sock.send(data)
                except OSError:  # full, or failed: the writer sends it, or reports the failure
                    sent = 0
                if sent < len(data):
                    buffer += memoryview(data)[sent:]
                    self._write_wanted()
                return len(data)
            self._write_wanted()
        elif len(buffer) >= _WRITE_BUFFER_LIMIT:
            raise BlockingIOError  # paho keeps the packet and offers it again after a flush
        buffer += data
        return len(data)

    def flush(self) -> bool:
        """Send what is buffered; True when all of it went (``OSError`` when the connection failed)."""
        buffer = self._write_buffer
        while buffer:
            try:
                sent = self.sock.send(buffer)
            except (BlockingIOError, InterruptedError):
                return False
            del buffer[:sent]
        return True

    def close(self) -> None:
        # paho closes after writing DISCONNECT: let the last bytes go if the socket takes them now.
        with contextlib.suppress(OSError):
            self.flush()
        self.sock.close()


@attrs.define(eq=False)
class _BrokerFilter:
    """A filter subscribed at the broker, shared by the local subscriptions it covers."""

    qos: int
    users: int = 0
    # Completes with the broker's SUBACK; a second subscriber of a pending filter waits on it too.
    granted: OneShot[None] = attrs.field(factory=OneShot)


class _LastError(logging.Handler):
    """Keeps paho's last error line: paho logs why a socket failed (an SSL alert, say), returns only
    a generic code, and calls on_disconnect with "Unspecified error"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


class MqttClient:
    """One MQTT connection, kept up while :meth:`run` runs. See the module docstring."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.stats = TransportStats()
        self._paho = self._make_paho()
        self._connected = False
        self._closing = False
        self._nursery: trio.Nursery | None = None
        self._session_scope: trio.CancelScope | None = None
        self._session_done = trio.Event()
        self._connected_event = trio.Event()
        self._lost_event = trio.Event()
        self._handshake: OneShot[None] | None = None
        # SUBACK/UNSUBACK waiters fail when the connection is lost. PUBACK waiters do not: paho
        # re-sends unacknowledged QoS 1 messages after a reconnect, so they complete then (at least
        # once); they fail only when the client is closed.
        self._control_acks: dict[int, OneShot[Any]] = {}
        self._publish_acks: dict[int, OneShot[None]] = {}
        self._session_number = 0  # which connection a received QoS 1 message came on
        # Acknowledgements of QoS 1 messages held back: how many subscriptions held the message being
        # routed, and for a message more than one of them holds, how many hold it still.
        self._holders = 0
        self._shared_acks: dict[int, int] = {}
        self._write_wanted = trio.Event()
        self._written = trio.Event()  # set each time the writer has sent everything it was given
        self._backlogged: list[Subscription] = []
        # Routing: exact filters by topic (one dict lookup), wildcard filters checked in turn.
        self._exact_routes: dict[str, list[_Route]] = {}
        self._wildcard_routes: list[_Route] = []
        self._broker_filters: dict[str, _BrokerFilter] = {}
        self._connect_thread_failure: str | None = None
        self._connect_abandoned = False
        self._log_undeliverable = RateLimitedLog(log)
        self._max_payload = config.max_payload

    # ---- paho set-up and callbacks ---------------------------------------------------------------

    def _make_paho(self) -> paho.Client:
        config = self.config
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=True,
            # EVerest and the brokers around it speak 3.1.1; amqtt and NATS refuse MQTT 5.
            protocol=MQTTProtocolVersion.MQTTv311,
            transport="unix" if config.address.is_unix else "tcp",
            reconnect_on_failure=False,
        )
        client.connect_timeout = config.connect_timeout
        client.max_inflight_messages_set(config.max_inflight)
        client.max_queued_messages_set(config.max_queued)
        # A QoS 1 message is acknowledged when evflow has it buffered, not on arrival: a flow that
        # falls behind holds the broker back (its window of unacknowledged messages) instead of
        # blocking the connection's reader or piling up messages.
        client.manual_ack_set(True)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        context = config.effective_tls_context()
        if context is not None:
            client.tls_set_context(context)
            # The context decides about host names; stop paho from checking again (its own check uses
            # ssl.match_hostname, gone since Python 3.12).
            client.tls_insecure_set(not context.check_hostname)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        # on_publish is set only while a PUBACK is awaited (see _await_puback): with it set, paho builds
        # an MQTT 5 reason code and properties object for every QoS 0 message it writes.
        client.on_socket_close = self._on_socket_close
        # A logger of this client's own, outside logging's registry, that formats nothing below ERROR.
        paho_log = logging.Logger("evflow.mqtt.paho", logging.ERROR)
        self._paho_error = _LastError()
        paho_log.addHandler(self._paho_error)
        client.enable_logger(paho_log)
        return client

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        if self._handshake is not None:
            if reason.is_failure:
                self._handshake.fail(ConnectError(f"{self.config.address} refused the connection: {reason}"))
            else:
                self._handshake.set(None)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        detail = self._paho_error.message
        self._paho_error.message = None
        reason_text = detail if detail and reason.is_failure else f"disconnected ({reason})"
        if not trio.lowlevel.in_trio_run():
            # paho wrote CONNECT from connect(), in the worker thread, and the socket failed (a TLS
            # alert, say): no trio object may be touched from there; _open_socket reports it.
            self._connect_thread_failure = reason_text
            return
        self._lost(reason_text)

    def _on_socket_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        # Wake tasks waiting on this socket before paho closes it (trio requires it). During a
        # threaded connect() or paho's __del__, paho closes an old socket that nobody waits on any
        # more, outside trio: nothing to wake then.
        if trio.lowlevel.in_trio_run():
            trio.lowlevel.notify_closing(sock)

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, reasons: Any, _properties: Any) -> None:
        waiter = self._control_acks.pop(mid, None)
        if waiter is not None:
            waiter.set(reasons)

    def _on_unsubscribe(self, _client: Any, _userdata: Any, mid: int, _reasons: Any, _properties: Any) -> None:
        waiter = self._control_acks.pop(mid, None)
        if waiter is not None:
            waiter.set(None)

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason: Any, _properties: Any) -> None:
        acks = self._publish_acks
        waiter = acks.pop(mid, None)
        if not acks:
            self._paho.on_publish = None
        if waiter is not None:
            waiter.set(None)

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.stats.received += 1
        # QoS 1 is acknowledged by us (manual acks), once every subscription has the message buffered.
        ack = message.mid | self._session_number << _MID_BITS if message.qos else None
        if len(message.payload) > self._max_payload:
            self.stats.oversized += 1
            self._log_undeliverable("dropped a %d-byte message (max_payload %d)", len(message.payload), self._max_payload)
        else:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                self.stats.undeliverable += 1
                self._log_undeliverable("dropped a message whose topic is not valid UTF-8")
            else:
                self._route(topic, message, ack)
        if ack is not None:
            holders, self._holders = self._holders, 0
            if holders == 0:
                self._acknowledge(ack)
            elif holders > 1:
                self._shared_acks[ack] = holders

    def _release_ack(self, ack: int) -> None:
        """A subscription handed over a message it held: acknowledge it unless another still holds it."""
        holders = self._shared_acks.pop(ack, 1) - 1
        if holders:
            self._shared_acks[ack] = holders
        else:
            self._acknowledge(ack)

    def _route(self, topic: str, message: paho.MQTTMessage, ack: int | None) -> None:
        delivered = False
        exact = self._exact_routes.get(topic)
        if exact is not None:
            # The subscription's own string, not paho's fresh copy: one topic object for every message
            # a subscriber buffers or holds.
            topic = exact[0].topic_filter
        item = MqttMessage(topic, message.payload, message.qos, message.retain)
        if exact is not None:
            for subscription in exact:
                subscription._deliver(item, ack)
            delivered = True
        for subscription in self._wildcard_routes:
            if subscription._matches(topic):
                subscription._deliver(item, ack)
                delivered = True
        if not delivered:
            self.stats.undeliverable += 1

    def _acknowledge(self, ack: int) -> None:
        # A message of an earlier connection is not acknowledged: that session is gone (clean session),
        # and its mid may belong to another message now.
        if ack >> _MID_BITS == self._session_number and self._connected:
            self._paho.ack(ack & _MID_MASK, 1)

    def _lost(self, reason: str) -> None:
        """The connection ended (paho's on_disconnect, or a failed write)."""
        if self._handshake is not None:
            self._handshake.fail(ConnectError(f"{self.config.address} closed the connection: {reason}"))
        if not self._connected:
            return
        self._connected = False
        if self._connected_event.is_set():  # never replace an event someone still waits on
            self._connected_event = trio.Event()
        self._lost_event.set()
        if not self._closing:
            self.stats.connection_losses += 1
        error = NotConnected(f"connection to {self.config.address} lost: {reason}")
        acks, self._control_acks = self._control_acks, {}
        for waiter in acks.values():
            waiter.fail(error)
        if not self._closing:
            log.warning("connection to %s lost: %s", self.config.address, reason)
        if self._session_scope is not None:
            self._session_scope.cancel()

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected now)."""
        await self._connected_event.wait()

    async def wait_connection_lost(self) -> None:
        """Return once the current connection is lost (at once if there is none now)."""
        if not self._connected:
            await trio.lowlevel.checkpoint()
            return
        await self._lost_event.wait()

    async def run(self, *, task_status: trio.TaskStatus[MqttClient] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report ready, then keep the connection up (reconnecting) until :meth:`aclose`.

        The first connection failure raises :class:`ConnectError` (before ready); later losses
        are retried with exponential backoff and jitter.
        """
        first_error: ConnectError | None = None
        started = False
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await nursery.start(self._session)
            except ConnectError as exc:
                first_error = exc  # raised below, outside the nursery, so it is not wrapped in a group
            else:
                started = True
                task_status.started(self)
                await self._keep_connected()
        if first_error is not None:
            raise first_error
        if not started:
            raise ConnectError(f"closed before the connection to {self.config.address} was up")

    async def _keep_connected(self) -> None:
        assert self._nursery is not None
        delay = self.config.reconnect_min
        while True:
            await self._session_done.wait()
            if self._closing:
                return
            while True:
                # Full jitter in [delay/2, delay]: many gateways behind one broker don't return in step.
                await trio.sleep(delay * (0.5 + random.random() / 2))
                if self._closing:
                    return
                try:
                    await self._nursery.start(self._session)
                except ConnectError as exc:
                    log.warning("reconnect failed, retrying in up to %.1f s: %s", delay, exc)
                    delay = min(delay * 2, self.config.reconnect_max)
                else:
                    log.info("reconnected to %s", self.config.address)
                    delay = self.config.reconnect_min
                    break

    async def aclose(self) -> None:
        """Disconnect cleanly (DISCONNECT sent) and stop :meth:`run`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._connected:
            wire = self._paho.socket()
            if isinstance(wire, _BufferedSocket) and wire.write_pending:
                with trio.move_on_after(self.config.connect_timeout):
                    await self._written.wait()  # what the flow published leaves before DISCONNECT
            self._paho.disconnect()
            self._kick_writer()
            with trio.move_on_after(self.config.connect_timeout):
                await self._session_done.wait()
        acks, self._publish_acks = self._publish_acks, {}
        self._paho.on_publish = None
        for waiter in acks.values():
            waiter.fail(NotConnected(f"client of {self.config.address} closed before the broker acknowledged"))
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _session(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One connection: open it, handshake, restore subscriptions, serve until it is lost."""
        self._session_done = trio.Event()
        self._session_number += 1
        self._write_wanted = trio.Event()
        self._handshake = OneShot()
        handshake_error: str | None = None
        started = False
        try:
            sock = await self._open_socket()
            wire = self._buffer_socket(sock)
            async with trio.open_nursery() as nursery:
                self._session_scope = nursery.cancel_scope
                nursery.start_soon(self._read_loop, sock, wire)
                nursery.start_soon(self._write_loop, sock, wire)
                nursery.start_soon(self._misc_loop)
                self._kick_writer()
                try:
                    with trio.fail_after(self.config.connect_timeout):
                        await self._handshake.wait()
                        self._handshake = None
                        self._connected = True
                        await self._restore_subscriptions()
                except trio.TooSlowError:
                    handshake_error = (
                        f"{self.config.address} did not complete the MQTT handshake within "
                        f"{self.config.connect_timeout:g} s"
                    )
                except MqttError as exc:  # refused, closed, or a subscription not restored
                    handshake_error = str(exc)
                else:
                    self.stats.connects += 1
                    self._lost_event = trio.Event()
                    self._connected_event.set()
                    started = True
                    task_status.started()
                if handshake_error is not None:
                    self._connected = False
                    nursery.cancel_scope.cancel()
            # Raised here, outside the nursery, so that it is not wrapped in an exception group.
            if not started:
                raise ConnectError(handshake_error or f"connection to {self.config.address} lost during the handshake")
        finally:
            self._handshake = None
            self._session_scope = None
            for subscription in self._backlogged:
                subscription._flush_backlog()
            self._backlogged.clear()
            if self._connected:
                self._lost("session ended")
            self._close_socket()
            self._session_done.set()

    async def _open_socket(self) -> Any:
        address = self.config.address

        def connect() -> None:
            self._paho.connect(address.host, address.port or 1883, keepalive=self.config.keepalive)
            if self._connect_abandoned:  # cancelled meanwhile: nobody will read this socket
                sock = self._paho.socket()
                if sock is not None:
                    sock.close()

        self._connect_thread_failure = None
        self._connect_abandoned = False
        try:
            await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
        except trio.Cancelled:
            self._connect_abandoned = True
            raise
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(f"TLS verification of {address} failed: {exc.verify_message or exc}") from None
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS handshake with {address} failed: {exc.reason or exc}") from None
        except (OSError, ValueError) as exc:
            raise ConnectError(f"cannot connect to {address}: {exc.strerror or exc}") from None
        sock = self._paho.socket()
        if sock is None:
            if self._connect_thread_failure:  # the broker dropped us while CONNECT went out
                raise ConnectError(f"{address} closed the connection: {self._connect_thread_failure}")
            raise ConnectError(f"cannot connect to {address}: no socket opened")
        if not address.is_unix:
            # Small packets both ways (requests, replies, acks): don't let Nagle hold them back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _buffer_socket(self, sock: Any) -> _BufferedSocket | None:
        """Put a :class:`_BufferedSocket` between paho and a TCP or Unix socket (TLS sockets read from
        OpenSSL's own buffer already, and are left as they are)."""
        if isinstance(sock, ssl.SSLSocket):
            return None
        wire = _BufferedSocket(sock, self._want_write)
        # paho 2.x keeps its socket in `_sock` and offers no hook to wrap it; CONNECT went out
        # unbuffered in connect() and nothing has been read yet, so the swap loses nothing.
        self._paho._sock = wire  # type: ignore[assignment]
        if self._paho.socket() is not wire:
            raise MqttError("this paho-mqtt version keeps its socket elsewhere: evflow cannot drive it")
        return wire

    def _close_socket(self) -> None:
        sock = self._paho.socket()
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    # ---- the three loops -------------------------------------------------------------------------

    async def _read_loop(self, sock: Any, wire: _BufferedSocket | None) -> None:
        paho_client = self._paho
        is_tls = wire is None
        quickack = _TCP_QUICKACK is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        try:
            while True:
                if sock.pending() if is_tls else wire.read_pending:  # type: ignore[union-attr]
                    # Bytes already taken from the kernel (a TLS record decrypted, or the rest of our
                    # own read after a full subscriber stopped the burst): epoll would not report them.
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.wait_readable(sock)
                if wire is not None:
                    wire.sent_this_pass = False  # a new pass: what it causes may send at once again
                for _ in range(_READ_BURST):
                    if paho_client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or paho_client.socket() is None:
                        return
                    if self._backlogged:
                        break  # a full subscriber: read no further until it has room
                    if is_tls:
                        if not sock.pending():  # decrypted data no longer makes the socket readable
                            break
                    elif not wire.read_pending:  # type: ignore[union-attr]
                        break  # the kernel's next bytes wake this loop through epoll
                if quickack:
                    sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                if paho_client.want_write():
                    self._kick_writer()
                if self._backlogged:
                    await self._drain_backlogs()
        except (trio.ClosedResourceError, OSError):
            return

    async def _drain_backlogs(self) -> None:
        """Wait (at most ``block_timeout`` each) for full BLOCK subscribers to take their backlog.

        Nothing else on this connection is read meanwhile (replies, acks, pings), so the wait is
        bounded: a consumer that stalls longer loses its backlog, counted and logged.
        """
        while self._backlogged:
            subscription = self._backlogged[0]
            with trio.move_on_after(self.config.block_timeout):
                await subscription._drain_backlog()
            subscription._flush_backlog()
            self._backlogged.pop(0)

    async def _write_loop(self, sock: Any, wire: _BufferedSocket | None) -> None:
        """Once per scheduler pass with something to send: everything written in one go, waiting for
        the socket only when it is full."""
        paho_client = self._paho
        try:
            while True:
                await self._write_wanted.wait()
                while True:
                    # paho's own queue holds packets written from a callback, or refused by a full buffer.
                    if paho_client.want_write() and (
                        paho_client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS or paho_client.socket() is None
                    ):
                        return
                    if (wire is None or wire.flush()) and not paho_client.want_write():
                        break
                    await trio.lowlevel.wait_writable(sock)
                if wire is not None:
                    wire.sent_this_pass = False
                self._write_wanted = trio.Event()
                written, self._written = self._written, trio.Event()
                written.set()
        except trio.ClosedResourceError:
            return
        except OSError as exc:  # the buffered bytes could not be sent: the connection is gone
            self._lost(f"write failed: {exc.strerror or exc}")

    async def _misc_loop(self) -> None:
        keepalive = self.config.keepalive
        if keepalive == 0:
            return
        # paho pings when `keepalive` has passed without traffic; checking four times per period
        # keeps the ping within the 1.5 x keepalive the broker allows.
        interval = keepalive / 4
        while True:
            await trio.sleep(interval)
            if self._paho.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            if self._paho.want_write():
                self._kick_writer()

    def _kick_writer(self) -> None:
        if self._paho.want_write():
            self._write_wanted.set()

    def _want_write(self) -> None:
        self._write_wanted.set()

    # ---- subscriptions ---------------------------------------------------------------------------

    async def subscribe(
        self,
        topic_filter: str,
        *,
        qos: int = 0,
        max_buffer: int = 64,
        overflow: Overflow = Overflow.BLOCK,
    ) -> Subscription:
        """Subscribe; returns after the broker's SUBACK granted it (else :class:`SubscribeError`).

        A filter that an existing subscription of this client covers (same or higher QoS) is not
        sent to the broker again: amqtt and NATS would deliver each message once per filter.
        """
        subscription = Subscription(self, topic_filter, qos, max_buffer, Overflow(overflow))
        await self._subscribe_route(subscription)
        return subscription

    async def subscribe_callback(
        self, topic_filter: str, callback: Callable[[MqttMessage], None], *, qos: int = 0
    ) -> CallbackSubscription:
        """Subscribe ``callback`` (see :class:`CallbackSubscription`); returns after the broker's SUBACK."""
        subscription = CallbackSubscription(self, topic_filter, qos, callback)
        await self._subscribe_route(subscription)
        return subscription

    async def _subscribe_route(self, subscription: _Route) -> None:
        # Route before subscribing: retained messages follow the SUBACK in the same read.
        self._add_route(subscription)
        topic_filter, qos = subscription.topic_filter, subscription.qos
        try:
            covering = self._covering_filter(topic_filter, qos)
            if covering is None:
                state = self._broker_filters.get(topic_filter)
                if state is None:
                    state = self._broker_filters[topic_filter] = _BrokerFilter(qos)
                else:  # held at a lower QoS: subscribe again at the higher one
                    state.qos = qos
                    state.granted = OneShot()
                covering = topic_filter
                state.users += 1
                subscription._broker_filter = covering
                try:
                    await self._send_subscribe([(topic_filter, qos)])
                except BaseException as exc:
                    state.granted.fail(exc if isinstance(exc, Exception) else NotConnected("subscription abandoned"))
                    raise
                state.granted.set(None)
            else:
                state = self._broker_filters[covering]
                state.users += 1
                subscription._broker_filter = covering
                await state.granted.wait()
        except BaseException:
            self._release(subscription, send_unsubscribe=True)
            raise

    def _covering_filter(self, topic_filter: str, qos: int) -> str | None:
        if topic_filter in self._broker_filters and self._broker_filters[topic_filter].qos >= qos:
            return topic_filter
        for existing, state in self._broker_filters.items():
            if state.qos >= qos and filter_covers(existing, topic_filter):
                return existing
        return None

    async def _send_subscribe(self, filters: list[tuple[str, int]]) -> None:
        if not self._connected:
            raise NotConnected(f"not connected to {self.config.address}")
        rc, mid = self._paho.subscribe(filters)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise NotConnected(f"cannot subscribe: {paho.error_string(rc)}")
        waiter = self._control_acks[mid] = OneShot()
        self._kick_writer()
        reasons = await waiter.wait()
        for (topic_filter, _qos), reason in zip(filters, reasons, strict=False):
            if reason.is_failure:
                raise SubscribeError(topic_filter, str(reason))

    async def _restore_subscriptions(self) -> None:
        if self._broker_filters:
            await self._send_subscribe([(f, state.qos) for f, state in self._broker_filters.items()])

    def _release(self, subscription: _Route, *, send_unsubscribe: bool) -> str | None:
        """Forget ``subscription``; returns the broker filter to unsubscribe when nobody needs it."""
        self._remove_route(subscription)
        broker_filter, subscription._broker_filter = subscription._broker_filter, None
        if broker_filter is None:
            return None
        state = self._broker_filters.get(broker_filter)
        if state is None:
            return None
        state.users -= 1
        if state.users > 0:
            return None
        del self._broker_filters[broker_filter]
        if not self._connected:
            return None  # the session is gone and it is not restored: nothing to undo at the broker
        if send_unsubscribe:  # without waiting: the caller is failing or being cancelled
            self._paho.unsubscribe(broker_filter)
            self._kick_writer()
            return None
        return broker_filter

    async def _unsubscribe(self, subscription: _Route) -> None:
        broker_filter = self._release(subscription, send_unsubscribe=False)
        if broker_filter is None:
            return
        rc, mid = self._paho.unsubscribe(broker_filter)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            waiter = self._control_acks[mid] = OneShot()
            self._kick_writer()
            with trio.move_on_after(self.config.connect_timeout), contextlib.suppress(NotConnected):
                await waiter.wait()

    def _add_route(self, subscription: _Route) -> None:
        if subscription._has_wildcard:
            self._wildcard_routes.append(subscription)
        else:
            self._exact_routes.setdefault(subscription.topic_filter, []).append(subscription)

    def _remove_route(self, subscription: _Route) -> None:
        if subscription._has_wildcard:
            if subscription in self._wildcard_routes:
                self._wildcard_routes.remove(subscription)
            return
        routes = self._exact_routes.get(subscription.topic_filter, [])
        if subscription in routes:
            routes.remove(subscription)
        if not routes:
            self._exact_routes.pop(subscription.topic_filter, None)

    # ---- publishing ------------------------------------------------------------------------------

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int:
        """Hand a message to the connection (written at once when the socket takes it); returns its mid."""
        if not self._connected:
            raise NotConnected(f"not connected to {self.config.address}")
        info = self._paho.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                raise MqttError(f"outgoing queue full ({self.config.max_queued} messages waiting)")
            raise NotConnected(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
        self.stats.published += 1
        if self._paho.want_write():
            self._write_wanted.set()
        return info.mid

    def _await_puback(self, mid: int, waiter: OneShot[None]) -> None:
        if not self._publish_acks:
            self._paho.on_publish = self._on_publish
        self._publish_acks[mid] = waiter

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> OneShot[None]:
        """Hand a message over and return what completes when it is done: at once for QoS 0, on its
        PUBACK for QoS 1 (or fails with :class:`NotConnected`). Lets a sender keep a window of
        acknowledgements open, in order, instead of waiting for each."""
        mid = self.publish_nowait(topic, payload, qos, retain)
        if qos == 0:
            return _DONE
        done: OneShot[None] = OneShot()
        self._await_puback(mid, done)
        return done

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish; with QoS 1, return only once the broker acknowledged it (PUBACK)."""
        mid = self.publish_nowait(topic, payload, qos, retain)
        if qos == 0:
            await trio.lowlevel.checkpoint()
            return
        await self.wait_published(mid)

    async def wait_published(self, mid: int) -> None:
        """Wait for the PUBACK of the QoS 1 message ``mid`` that :meth:`publish_nowait` just handed
        over (before this task yielded: an acknowledgement that came earlier is not seen)."""
        waiter: OneShot[None] = OneShot()
        self._await_puback(mid, waiter)
        await waiter.wait()

