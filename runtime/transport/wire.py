"""The connection's socket as paho sees it: read and written in bulk, its outgoing bytes counted.

paho reads each packet with three or more ``recv`` calls (the first byte, the length a byte at a
time, then the rest) and writes each packet with its own ``send``. :class:`Wire` serves those reads
from one system call's worth of data and takes every write: the first packet after the connection's
reader or writer task last ran is sent at once (a lone request does not wait a scheduler pass), what
follows it is buffered and sent by the writer task in one call. paho therefore never keeps a packet
queued itself, and every byte not yet handed to the kernel is in :attr:`Wire.outgoing`, which the
client bounds (``max_outgoing_bytes``).

TLS sockets are wrapped the same way: ``recv`` on them returns decrypted data, and
:attr:`read_pending` also counts what OpenSSL decrypted already (``pending()``), which epoll does
not report.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from collections.abc import Callable

__all__ = ["Wire"]

# Bytes taken from the kernel per recv.
_RECV_SIZE = 64 * 1024
# A send the socket cannot take now: the writer task waits until it can.
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


class Wire:
    """See the module docstring. ``write_wanted`` is called when the buffer turns non-empty."""

    __slots__ = ("sock", "tls", "sent_this_pass", "failure", "_read_buffer", "_read_position", "_out", "_write_wanted")

    def __init__(self, sock: socket.socket, write_wanted: Callable[[], None]) -> None:
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self._read_buffer = b""
        self._read_position = 0
        self._out = bytearray()
        self._write_wanted = write_wanted
        # A send went out directly since the reader or the writer task last ran.
        self.sent_this_pass = False
        # Why the connection ended, as seen on the socket (paho only says "Unspecified error").
        self.failure: str | None = None

    # ---- what paho calls -------------------------------------------------------------------------

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def recv(self, size: int) -> bytes:
        position = self._read_position
        buffered = self._read_buffer
        if position >= len(buffered):
            try:
                buffered = self.sock.recv(_RECV_SIZE)
            except _WOULD_BLOCK:  # nothing to read yet: paho handles it (not a failure)
                raise
            except OSError as exc:
                self.failure = _describe(exc)
                raise
            if not buffered:
                self.failure = "the broker closed the connection"
                return buffered
            if len(buffered) <= size:
                return buffered
            self._read_buffer = buffered
            position = 0
        end = position + size
        self._read_position = end
        return buffered[position:end]

    def send(self, data: bytes | bytearray) -> int:
        """Takes all of ``data``: sent now if it is the first packet of this pass, else buffered."""
        size = len(data)
        out = self._out
        if not out and not self.sent_this_pass:
            # The first write since the reader or the writer last ran goes out at once; what follows
            # it before either runs again is gathered into one send by the writer.
            self.sent_this_pass = True
            try:
                sent = self.sock.send(data)
            except _WOULD_BLOCK:
                sent = 0
            except OSError as exc:  # the writer reports it when it flushes
                self.failure = _describe(exc)
                sent = 0
            if sent == size:
                return size
            if not out:
                self._write_wanted()
            out += memoryview(data)[sent:]
            return size
        if not out:
            self._write_wanted()
        out += data
        return size

    def close(self) -> None:
        # paho closes after writing DISCONNECT: let the last bytes go if the socket takes them now.
        with contextlib.suppress(OSError):
            self.flush()
        self.sock.close()

    # ---- what the connection's tasks use ---------------------------------------------------------

    @property
    def read_pending(self) -> bool:
        """Bytes taken from the kernel already and not yet read by paho (epoll would not report them)."""
        return self._read_position < len(self._read_buffer) or (self.tls and self.sock.pending() > 0)  # type: ignore[attr-defined]

    @property
    def outgoing(self) -> int:
        """Bytes written by paho and not yet taken by the kernel."""
        return len(self._out)

    def flush(self) -> bool:
        """Send what is buffered; True when all of it went (``OSError`` when the connection failed)."""
        out = self._out
        while out:
            try:
                sent = self.sock.send(out)
            except _WOULD_BLOCK:
                return False
            except OSError as exc:
                self.failure = self.failure or _describe(exc)
                raise
            del out[:sent]
        return True


def _describe(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if exc.errno == errno.ECONNRESET:
        return "the broker reset the connection"
    if exc.errno == errno.EPIPE:
        return "the broker closed the connection"
    return exc.strerror or str(exc)
