"""systemd's service notifications (``sd_notify``) for ``evflow run``, on the standard library's ``socket``.

Under a ``Type=notify`` unit, systemd puts the address of its notification socket in ``NOTIFY_SOCKET``
and, with ``WatchdogSec=``, the watchdog timeout in ``WATCHDOG_USEC``. evflow sends it, one datagram
each time:

- ``READY=1`` (with a ``STATUS=`` line) once the flows run: ``systemctl start`` returns then, and units
  ordered after evflow start then, not while the flow files are still being loaded.
- ``STATUS=...``: one line for ``systemctl status`` when something worth knowing changes (a broker
  lost or back, a reload).
- ``STOPPING=1`` at the start of shutdown, so that systemd shows "deactivating" while the flows stop in
  phases rather than taking the wait for a hang.
- ``WATCHDOG=1`` every half ``WatchdogSec=`` (systemd's advice), only while the event loop is responsive
  and EVerest's liveness holds (brokers connected, heartbeats alive, keepalives checked in). When the
  pings stop for ``WatchdogSec=``, systemd kills evflow and ``Restart=`` starts it again.

Outside systemd (``NOTIFY_SOCKET`` unset) :meth:`Notifier.from_environment` gives ``None`` and nothing is
sent. A failed send never raises and never blocks: the flows matter more than the notification, and
systemd notices what it did not hear (a start that times out, a watchdog that fires).

The environment is left as it is: libsystemd's ``sd_notify(unset_environment=1)`` removes
``NOTIFY_SOCKET`` so that child processes do not talk to the socket in the service's name, but ``evflow
run`` starts no child processes, and with ``NotifyAccess=main`` (see ``docs/evflow.service``) systemd
ignores notifications from any process but the main one anyway.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import trio

from .ratelimit import RateLimitedLog

__all__ = ["Notifier", "keep_watchdog"]

log = logging.getLogger("evflow.systemd")

# systemd reads a notification into a buffer of 4096 bytes (PIPE_BUF) and ignores a longer one. 1000
# characters are at most 4000 bytes of UTF-8, which leaves room for the other assignments of a datagram.
_MAX_TEXT = 1000


def _one_line(text: str) -> str:
    """``text`` as one value: systemd reads a newline as the start of the next assignment, and drops a
    datagram with a NUL byte in it."""
    single = " ".join(text.replace("\0", " ").splitlines())
    if len(single) > _MAX_TEXT:
        single = single[: _MAX_TEXT - 1] + "…"
    return single


def _socket_address(notify_socket: str) -> bytes | None:
    """The ``sendto`` address for ``NOTIFY_SOCKET``: a path, or ``@name`` for the abstract namespace."""
    if notify_socket.startswith("@"):
        return b"\0" + os.fsencode(notify_socket[1:])
    if notify_socket.startswith("/"):
        return os.fsencode(notify_socket)
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout in seconds, or ``None`` when the watchdog is off or is not evflow's.

    Like ``sd_watchdog_enabled()``: ``WATCHDOG_USEC`` a positive integer, and ``WATCHDOG_PID``, when set,
    this process (a child that inherited the variables must not ping in its parent's name).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and not (pid.isascii() and pid.isdigit() and int(pid) == os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends ``sd_notify`` datagrams to systemd's notification socket.

    One non-blocking ``AF_UNIX`` datagram socket, opened on the first send and kept until :meth:`close`.
    A send that fails (the socket gone, systemd not listening, its queue full) is counted in
    ``send_failures`` and logged as a warning at most once a minute, and never raised.
    """

    def __init__(self, address: bytes, *, watchdog_interval: float | None = None, description: str = "") -> None:
        self.address = address
        #: Seconds between two ``WATCHDOG=1`` (half ``WATCHDOG_USEC``), or ``None``: no watchdog.
        self.watchdog_interval = watchdog_interval
        self.send_failures = 0
        self._description = description or repr(address)
        self._socket: socket.socket | None = None
        self._closed = False
        self._log_failure = RateLimitedLog(log, logging.WARNING, 60.0)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier | None:
        """The notifier systemd asks for through ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``, or ``None``
        when ``NOTIFY_SOCKET`` is unset or empty (not started by systemd, or not ``Type=notify``)."""
        notify_socket = environ.get("NOTIFY_SOCKET", "")
        if not notify_socket:
            return None
        address = _socket_address(notify_socket)
        if address is None:
            # systemd gives a path or an abstract name to a service; anything else (a relative path, a
            # vsock address for a virtual machine's manager) is not meant for evflow.
            log.warning("NOTIFY_SOCKET=%s is neither an absolute path nor @name: not notifying systemd", notify_socket)
            return None
        return cls(address, watchdog_interval=_watchdog_interval(environ), description=notify_socket)

    def ready(self, status: str | None = None) -> None:
        """The service is up (``READY=1``), with a ``STATUS=`` line in the same datagram if given."""
        self._send("READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}")

    def stopping(self, status: str | None = None) -> None:
        """The service is shutting down (``STOPPING=1``)."""
        self._send("STOPPING=1" if status is None else f"STOPPING=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """The line ``systemctl status`` shows (``STATUS=``)."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """Keep the watchdog from firing (``WATCHDOG=1``)."""
        self._send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; later notifications are not sent."""
        self._closed = True
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self._closed:
            log.debug("not sent to systemd, the notifier is closed: %s", message)
            return
        try:
            if self._socket is None:
                # Opened here rather than in __init__ so that a socket that cannot be made (no AF_UNIX
                # allowed, no file descriptors left) is one more failed send, not an exception.
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self.address)
        except OSError as exc:
            self.send_failures += 1
            self._log_failure("cannot notify systemd at %s: %s", self._description, exc.strerror or exc)


async def keep_watchdog(
    notifier: Notifier,
    healthy: Callable[[], bool],
    *,
    reason: Callable[[], str] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send ``WATCHDOG=1`` every ``notifier.watchdog_interval`` seconds while ``healthy()`` holds.

    A ping withheld is logged once as a warning when the withholding starts (with ``reason()`` if
    given), and once as info when the pings resume. Returns at once when systemd's watchdog is off.
    ``healthy`` and ``reason`` are called on the event loop and must not block; an exception from
    either is a bug and propagates.
    """
    task_status.started()
    interval = notifier.watchdog_interval
    if interval is None:
        return
    # The pings come from a task on the event loop, on purpose: while the loop is blocked (a node stuck
    # in a synchronous call or a busy loop) this task cannot run either, the pings stop, and systemd
    # restarts the wedged evflow. A thread would keep pinging for a process that does nothing. Tasks that
    # are stuck while the loop runs are for ``healthy`` to notice (EVerest's liveness).
    timeout = 2 * interval
    withheld_since: float | None = None
    deadline = trio.current_time()
    while True:
        if healthy():
            if withheld_since is not None:
                log.info("healthy again after %.0f s: watchdog pings to systemd resume",
                         trio.current_time() - withheld_since)
                withheld_since = None
            notifier.watchdog()
        elif withheld_since is None:
            withheld_since = trio.current_time()
            why = reason() if reason is not None else "the health check fails"
            log.warning("withholding systemd's watchdog ping (%s): systemd restarts evflow %.0f s after the last one",
                        why, timeout)
        deadline += interval
        now = trio.current_time()
        if deadline <= now:
            # The loop was held up past the next ping: one interval from now, not a burst to catch up.
            deadline = now + interval
        await trio.sleep_until(deadline)
