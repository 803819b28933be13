"""A small HTTP/1.1 server for the monitor's read-only routes: h11's state machine over trio's
sockets, one task per connection in a nursery the server owns (never a thread per request).

Bounded like the rest of evflow: at most ``MAX_CONNECTIONS`` at once (one more is answered 503
and closed), request heads of at most 16 KiB, a request body is read and discarded, and a
connection that sends nothing for ``IDLE_TIMEOUT`` seconds is closed. A handler is a plain
function: computing an answer never waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import trio

__all__ = ["Handler", "Request", "Response", "serve_http"]

log = logging.getLogger("evflow.monitor")

MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 30.0
MAX_HEAD = 16 * 1024
_READ_SIZE = 16 * 1024


@attrs.frozen
class Request:
    method: str
    path: str
    query: Mapping[str, str]


@attrs.frozen
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


async def serve_http(handler: Handler, host: str, port: int, *,
                     task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on ``host:port`` (port 0: a free one) and answer with ``handler`` until cancelled;
    reports the address it listens on once it does."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    address = listeners[0].socket.getsockname()[:2]
    connections = trio.CapacityLimiter(MAX_CONNECTIONS)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_serve_connection, handler, connections), listeners)
        task_status.started((address[0], address[1]))


async def _serve_connection(handler: Handler, connections: trio.CapacityLimiter, stream: trio.SocketStream) -> None:
    async with stream:
        try:
            connections.acquire_nowait()
        except trio.WouldBlock:
            await _refuse(stream)
            return
        try:
            await _converse(handler, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: nothing to answer
        finally:
            connections.release()


async def _converse(handler: Handler, stream: trio.SocketStream) -> None:
    """Requests on one connection, one after another (keep-alive), until either side closes."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        try:
            with trio.move_on_after(IDLE_TIMEOUT):
                request = await _read_request(connection, stream)
                if request is None:
                    return  # closed by the client
                response = _answer(handler, request)
                await _send(connection, stream, response, head_only=request.method == "HEAD")
            if connection.our_state is h11.MUST_CLOSE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                await _send(connection, stream, Response(status, f"{status} bad request: {exc}\n".encode()))
            return


async def _read_request(connection: h11.Connection, stream: trio.SocketStream) -> Request | None:
    event = await _next_event(connection, stream)
    if not isinstance(event, h11.Request):
        return None  # closed by the client (h11 gives nothing else before a request)
    while not isinstance(await _next_event(connection, stream), h11.EndOfMessage):
        pass  # a body: read and dropped (no route takes one)
    target = urlsplit(event.target.decode("ascii", "replace"))
    return Request(event.method.decode("ascii", "replace"), target.path, dict(parse_qsl(target.query)))


async def _next_event(connection: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(await stream.receive_some(_READ_SIZE))


def _answer(handler: Handler, request: Request) -> Response:
    if request.method not in ("GET", "HEAD"):
        return Response(405, b"405 method not allowed: this listener is read-only\n", headers=(("Allow", "GET, HEAD"),))
    try:
        return handler(request)
    except Exception:
        log.exception("monitor: %s %s failed", request.method, request.path)
        return Response(500, b"500 internal error (logged)\n")


async def _send(connection: h11.Connection, stream: trio.SocketStream, response: Response,
                head_only: bool = False) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        *response.headers,
    ]
    reason = HTTPStatus(response.status).phrase.encode("ascii")
    data = connection.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if not head_only and response.body:
        data += connection.send(h11.Data(data=response.body))
    data += connection.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _refuse(stream: trio.SocketStream) -> None:
    body = b"503 too many connections\n"
    with trio.move_on_after(1):
        try:
            await stream.send_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                  b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
