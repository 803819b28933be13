"""One connection to the broker, from opening its socket to its end. A new :class:`Session` is made
for every connect, so nothing of an earlier connection (SUBSCRIBE packet ids, waiters, a half-read
or half-written buffer) can leak into the next one: it is reset by construction.

paho owns the protocol and trio the waits: the read task waits until the socket is readable and
calls ``loop_read``, the write task flushes the :class:`Wire` (and whatever paho queued from inside
a callback) once per scheduler pass with something to send, the misc task calls ``loop_misc`` for
keepalive pings. paho's callbacks run synchronously inside those calls, in the trio thread.
"""

from __future__ import annotations

import math
import socket
import ssl
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import MQTTErrorCode

from ..errors import ConnectError, MqttError, NotConnected, SubscribeError
from ..oneshot import OneShot
from ..protocol.router import SubackOutcome, SubscribeRequest
from .wire import Wire

if TYPE_CHECKING:
    from .client import MqttClient

__all__ = ["Session"]

# Packets handled per readable wake-up before other tasks get a turn.
_READ_BURST = 64
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class Session:
    """See the module docstring. :meth:`run` is the connection's life; the client makes one per
    connect and drops it once :attr:`ended` is set."""

    def __init__(self, client: MqttClient, number: int) -> None:
        self.client = client
        self.number = number
        self.paho: paho.Client = client._paho
        self.config = client.config
        self.connected = False  # CONNACK received, and not lost since
        self.up = False  # handshake and restore done: reported started
        self.wire: Wire | None = None
        self.ended = trio.Event()
        self.end_reason: str | None = None
        self.thread_failure: str | None = None  # paho's on_disconnect during the threaded connect
        self._requests: dict[int, SubscribeRequest] = {}  # SUBSCRIBE packet id -> request
        self._handshake: OneShot[None] = OneShot()
        self._restored: OneShot[SubackOutcome] | None = None
        self._write_wanted = trio.Event()
        self._written = trio.Event()  # set each time the writer has sent everything it was given
        self._scope: trio.CancelScope | None = None
        self._abandoned = False

    # ---- life ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open, handshake, restore subscriptions, report started; return when the connection ends.
        Raises :class:`ConnectError` instead of starting."""
        address = self.config.address
        failure: str | None = None
        started = False
        sock: Any = None
        try:
            sock = await self._open_socket()
            wire = self.wire = Wire(sock, self._write_wanted_now)
            # paho 2.x keeps its socket in `_sock` and offers no hook to wrap it; CONNECT went out
            # unbuffered in connect() and nothing has been read yet, so the swap loses nothing.
            self.paho._sock = wire  # type: ignore[assignment]
            if self.paho.socket() is not wire:
                raise MqttError("this paho-mqtt version keeps its socket elsewhere: evflow cannot drive it")
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._read_loop, sock, wire)
                nursery.start_soon(self._write_loop, sock, wire)
                nursery.start_soon(self._misc_loop)
                self.kick_writer()
                try:
                    with trio.fail_after(self.config.connect_timeout):
                        await self._handshake.wait()
                        self.connected = True
                        await self._restore()
                except trio.TooSlowError:
                    failure = (f"{address} did not complete the MQTT handshake within "
                               f"{self.config.connect_timeout:g} s")
                except MqttError as exc:  # refused, closed, or a subscription not restored
                    failure = str(exc)
                else:
                    started = self.up = True
                    task_status.started()
                if failure is not None:
                    self.connected = False
                    nursery.cancel_scope.cancel()
            # Raised here, outside the nursery, so that it is not wrapped in an exception group.
            if not started:
                raise ConnectError(failure or self.end_reason or f"connection to {address} lost during the handshake")
        finally:
            if trio.current_effective_deadline() == -math.inf:
                self.lost("cancelled", cancelled=True)  # the client's run was cancelled: no reconnect follows
            self._handshake.fail(ConnectError(f"connection to {address} closed"))
            self.lost(self.end_reason or "session ended")
            current = self.paho.socket()  # None once paho closed it itself
            if current is not None and current in (sock, self.wire):
                trio.lowlevel.notify_closing(current)  # wake this session's tasks still waiting on it
                current.close()
            self.ended.set()

    def lost(self, reason: str, *, cancelled: bool = False) -> None:
        """The connection ended (paho's on_disconnect, a failed write, or the end of :meth:`run`)."""
        self._handshake.fail(ConnectError(f"{self.config.address} closed the connection: {reason}"))
        if self.end_reason is None:
            self.end_reason = reason
            for request in self._requests.values():
                if request.restore and self._restored is not None:
                    self._restored.fail(NotConnected(f"connection lost while restoring subscriptions: {reason}"))
            self._requests.clear()
            self.client._session_ended(self, reason, quiet=cancelled)
        self.connected = False
        if self._scope is not None:
            self._scope.cancel()

    async def _open_socket(self) -> Any:
        address = self.config.address

        def connect() -> None:
            self.paho.connect(address.host, address.port or 1883, keepalive=self.config.keepalive)
            if self._abandoned:  # cancelled meanwhile: nobody will read this socket
                sock = self.paho.socket()
                if sock is not None:
                    sock.close()

        try:
            await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
        except trio.Cancelled:
            self._abandoned = True
            raise
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(f"TLS verification of {address} failed: {exc.verify_message or exc}") from None
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS handshake with {address} failed: {exc.reason or exc}") from None
        except (OSError, ValueError) as exc:
            raise ConnectError(f"cannot connect to {address}: {getattr(exc, 'strerror', None) or exc}") from None
        sock = self.paho.socket()
        if sock is None:
            if self.thread_failure:  # the broker dropped us while CONNECT went out
                raise ConnectError(f"{address} closed the connection: {self.thread_failure}")
            raise ConnectError(f"cannot connect to {address}: no socket opened")
        if not address.is_unix:
            # Small packets both ways (requests, replies, acks): don't let Nagle hold them back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
        return sock

    # ---- what the client's paho callbacks report -------------------------------------------------

    def connack(self, refusal: str | None) -> None:
        if refusal is None:
            self._handshake.set(None)
        else:
            self._handshake.fail(ConnectError(f"{self.config.address} refused the connection: {refusal}"))

    def suback(self, mid: int) -> SubscribeRequest | None:
        return self._requests.pop(mid, None)

    def restored(self, outcome: SubackOutcome) -> None:
        if self._restored is not None:
            self._restored.set(outcome)

    # ---- subscriptions ---------------------------------------------------------------------------

    def send_subscribe(self, request: SubscribeRequest) -> None:
        if not self.connected:
            raise NotConnected(f"not connected to {self.config.address}")
        rc, mid = self.paho.subscribe(list(request.filters))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise NotConnected(f"cannot subscribe: {paho.error_string(rc)}")
        self._requests[mid] = request
        self.kick_writer()

    def send_unsubscribe(self, filters: tuple[str, ...]) -> None:
        """Without waiting for the UNSUBACK: nothing depends on it (the router stopped delivering)."""
        if filters and self.connected:
            self.paho.unsubscribe(list(filters))
            self.kick_writer()

    async def _restore(self) -> None:
        request = self.client._router.restore()
        if request is None:
            return
        self._restored = OneShot()
        self.send_subscribe(request)
        outcome = await self._restored.wait()
        if outcome.refused_filters:
            raise SubscribeError(outcome.refused_filters[0], "refused when restoring it after a reconnect")

    # ---- writing ---------------------------------------------------------------------------------

    def kick_writer(self) -> None:
        if self.paho.want_write() or (self.wire is not None and self.wire.outgoing):
            self._write_wanted.set()

    def _write_wanted_now(self) -> None:
        self._write_wanted.set()

    async def wait_written(self) -> None:
        """Until the writer has handed everything written so far to the kernel."""
        if self.wire is not None and (self.wire.outgoing or self.paho.want_write()):
            self.kick_writer()
            await self._written.wait()

    # ---- the three loops -------------------------------------------------------------------------

    async def _read_loop(self, sock: Any, wire: Wire) -> None:
        paho_client = self.paho
        client = self.client
        quickack = _TCP_QUICKACK is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        try:
            while True:
                if wire.read_pending:
                    # Bytes taken from the kernel already (the rest of a burst, a decrypted TLS
                    # record): epoll would not report them.
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.wait_readable(sock)
                wire.sent_this_pass = False  # a new pass: what it causes may be sent at once again
                for _ in range(_READ_BURST):
                    if paho_client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or paho_client.socket() is None:
                        return  # paho called on_disconnect
                    if not wire.read_pending:
                        break  # the kernel's next bytes wake this loop through epoll
                if client._pubacks.hinted:
                    client._settle_pubacks()
                if quickack:
                    # mosquitto keeps Nagle on: a delayed ACK would hold its next packet back 40 ms.
                    sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                if paho_client.want_write():  # PUBACKs paho queued inside on_message
                    self.kick_writer()
        except (trio.ClosedResourceError, OSError):
            return

    async def _write_loop(self, sock: Any, wire: Wire) -> None:
        paho_client = self.paho
        client = self.client
        try:
            while True:
                await self._write_wanted.wait()
                while True:
                    # paho's own queue holds packets written from inside a callback.
                    if paho_client.want_write() and (
                        paho_client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS or paho_client.socket() is None
                    ):
                        return
                    flushed = wire.flush()
                    client._room_changed()
                    if flushed and not paho_client.want_write():
                        break
                    await trio.lowlevel.wait_writable(sock)
                wire.sent_this_pass = False
                self._write_wanted = trio.Event()
                written, self._written = self._written, trio.Event()
                written.set()
        except trio.ClosedResourceError:
            return
        except OSError as exc:  # the buffered bytes could not be sent: the connection is gone
            self.lost(wire.failure or f"write failed: {exc.strerror or exc}")

    async def _misc_loop(self) -> None:
        keepalive = self.config.keepalive
        if keepalive == 0:
            return
        # paho pings when `keepalive` has passed without traffic; checking four times per period
        # keeps the ping within the 1.5 x keepalive the broker allows.
        interval = keepalive / 4
        while True:
            await trio.sleep(interval)
            if self.paho.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            self.kick_writer()
