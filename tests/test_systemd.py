"""sd_notify for ``evflow run``: the exact datagrams on a real AF_UNIX socket standing in for systemd's.

The watchdog task runs on trio's MockClock (``autojump_clock``): the clock jumps to the next deadline
whenever every task waits, so a minute of pings takes no real time and the ping times are exact.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from evflow.runtime.systemd import Notifier, keep_watchdog


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A bound datagram socket where systemd's notification socket would be, and its path."""
    path = tmp_path / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    try:
        yield receiver, path
    finally:
        receiver.close()


def received(receiver: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``receiver``, without waiting for more."""
    datagrams = []
    while True:
        try:
            datagrams.append(receiver.recv(65536))
        except BlockingIOError:
            return datagrams


def notifier_for(path: Path, **environ: str) -> Notifier:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(path), **environ})
    assert notifier is not None
    return notifier


def test_ready_sends_ready_and_the_status_in_one_datagram(systemd_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)
    notifier.ready("running 2 flows")
    notifier.ready()
    assert received(receiver) == [b"READY=1\nSTATUS=running 2 flows", b"READY=1"]
    assert notifier.send_failures == 0


def test_stopping_status_and_watchdog_datagrams(systemd_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)
    notifier.status("broker lost: connection refused")
    notifier.watchdog()
    notifier.stopping()
    notifier.stopping("stopping: SIGTERM")
    assert received(receiver) == [
        b"STATUS=broker lost: connection refused",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"STOPPING=1\nSTATUS=stopping: SIGTERM",
    ]


def test_an_abstract_socket_name_is_reached_through_its_nul_byte() -> None:
    name = f"evflow-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(b"\0" + name.encode())
        receiver.setblocking(False)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier is not None
        notifier.ready("up")
        notifier.close()
        assert received(receiver) == [b"READY=1\nSTATUS=up"]
        assert notifier.send_failures == 0


def test_a_status_stays_one_line_so_it_cannot_add_an_assignment(systemd_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)
    notifier.status("broker lost\nWATCHDOG=1")
    notifier.ready("flows\r\nrunning\n")
    notifier.status("a\0b")
    assert received(receiver) == [b"STATUS=broker lost WATCHDOG=1", b"READY=1\nSTATUS=flows running", b"STATUS=a b"]


def test_a_long_status_is_cut_to_fit_systemds_buffer(systemd_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)
    notifier.ready("é" * 5000)
    [datagram] = received(receiver)
    assert datagram == ("READY=1\nSTATUS=" + "é" * 999 + "…").encode()
    assert len(datagram) < 4096


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}])
def test_no_notifier_outside_systemd(environ: dict[str, str]) -> None:
    assert Notifier.from_environment(environ) is None


def test_no_notifier_for_an_address_that_is_no_path_nor_abstract_name(caplog: pytest.LogCaptureFixture) -> None:
    assert Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert "NOTIFY_SOCKET=vsock:2:1234" in caplog.text


def test_the_watchdog_interval_is_half_the_timeout(tmp_path: Path) -> None:
    notifier = notifier_for(tmp_path / "notify", WATCHDOG_USEC="30000000")
    assert notifier.watchdog_interval == 15.0
    own = notifier_for(tmp_path / "notify", WATCHDOG_USEC="500000", WATCHDOG_PID=str(os.getpid()))
    assert own.watchdog_interval == 0.25


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-30000000"},
        {"WATCHDOG_USEC": "thirty"},
        {"WATCHDOG_USEC": "1.5"},
        {"WATCHDOG_USEC": " 30000000"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"},
    ],
    ids=["missing", "empty", "zero", "negative", "garbage", "fraction", "space", "other-pid", "garbage-pid"],
)
def test_no_watchdog_unless_a_positive_timeout_for_this_process(tmp_path: Path, environ: dict[str, str]) -> None:
    assert notifier_for(tmp_path / "notify", **environ).watchdog_interval is None


def test_the_environment_is_left_as_it_is(systemd_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = systemd_socket
    environ = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    before = dict(environ)
    notifier = Notifier.from_environment(environ)
    assert notifier is not None
    notifier.ready()
    notifier.close()
    assert environ == before
    assert received(receiver) == [b"READY=1"]


@pytest.mark.parametrize("gone", ["unbound", "unlinked"])
def test_a_vanished_socket_is_counted_not_raised(
    systemd_socket: tuple[socket.socket, Path], gone: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)
    notifier.ready()
    receiver.close()  # the path stays: sendto gets ECONNREFUSED
    if gone == "unlinked":
        path.unlink()  # sendto gets ENOENT
    with caplog.at_level(logging.WARNING, logger="evflow.systemd"):
        notifier.status("still here")
        notifier.watchdog()
        notifier.stopping()
    assert notifier.send_failures == 3
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1  # at most one a minute
    assert str(path) in warnings[0].getMessage()


def test_a_full_queue_neither_blocks_nor_raises(
    systemd_socket: tuple[socket.socket, Path], caplog: pytest.LogCaptureFixture
) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)
    # Nobody reads the receiver: its queue fills (net.unix.max_dgram_qlen) and then sendto would block
    # on a blocking socket. A thread, so that a send that blocks fails the test instead of hanging it.
    flood = threading.Thread(target=lambda: [notifier.watchdog() for _ in range(5000)], daemon=True)
    with caplog.at_level(logging.WARNING, logger="evflow.systemd"):
        flood.start()
        flood.join(10)
    assert not flood.is_alive(), "a send blocked"
    assert 0 < notifier.send_failures < 5000
    assert len(received(receiver)) == 5000 - notifier.send_failures
    assert len([record for record in caplog.records if record.levelno == logging.WARNING]) == 1


def test_nothing_is_sent_after_close(systemd_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)
    notifier.watchdog()
    notifier.close()
    notifier.close()
    notifier.stopping()
    assert received(receiver) == [b"WATCHDOG=1"]
    assert notifier.send_failures == 0


async def test_keep_watchdog_pings_at_the_interval_while_healthy(
    systemd_socket: tuple[socket.socket, Path], autojump_clock: trio.testing.MockClock
) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path, WATCHDOG_USEC="10000000")
    start = trio.current_time()
    pings: list[tuple[float, list[bytes]]] = []  # each check: when, and what arrived since the one before

    def healthy() -> bool:
        pings.append((trio.current_time() - start, received(receiver)))
        return True

    async with trio.open_nursery() as nursery:
        await nursery.start(keep_watchdog, notifier, healthy)
        assert trio.current_time() == start  # started() at once, not after the first interval
        await trio.sleep(17)
        nursery.cancel_scope.cancel()
    ping = [b"WATCHDOG=1"]
    assert pings == [(0, []), (5, ping), (10, ping), (15, ping)]
    assert received(receiver) == ping


async def test_keep_watchdog_withholds_pings_while_unhealthy_and_resumes(
    systemd_socket: tuple[socket.socket, Path], autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path, WATCHDOG_USEC="10000000")
    start = trio.current_time()
    pings: list[tuple[float, list[bytes]]] = []

    def healthy() -> bool:
        now = trio.current_time() - start
        pings.append((now, received(receiver)))
        return not 15 <= now < 30

    caplog.set_level(logging.INFO, logger="evflow.systemd")
    with trio.move_on_after(37):
        await keep_watchdog(notifier, healthy, reason=lambda: "EVerest's heartbeat lost")
    ping = [b"WATCHDOG=1"]
    assert pings == [(0, []), (5, ping), (10, ping), (15, ping), (20, []), (25, []), (30, []), (35, ping)]
    assert received(receiver) == ping
    logged = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert logged == [
        (logging.WARNING, "withholding systemd's watchdog ping (EVerest's heartbeat lost): "
                          "systemd restarts evflow 10 s after the last one"),
        (logging.INFO, "healthy again after 15 s: watchdog pings to systemd resume"),
    ]


async def test_keep_watchdog_after_a_blocked_loop_pings_an_interval_later_not_in_a_burst(
    systemd_socket: tuple[socket.socket, Path], autojump_clock: trio.testing.MockClock
) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path, WATCHDOG_USEC="10000000")
    start = trio.current_time()
    checks: list[float] = []

    def healthy() -> bool:
        checks.append(trio.current_time() - start)
        if len(checks) == 2:
            autojump_clock.jump(17)  # the event loop held up for 17 s by this very call
        return True

    with trio.move_on_after(33):
        await keep_watchdog(notifier, healthy)
    assert checks == [0, 5, 27, 32]
    assert received(receiver) == [b"WATCHDOG=1"] * 4


async def test_keep_watchdog_returns_at_once_without_a_watchdog(
    systemd_socket: tuple[socket.socket, Path], autojump_clock: trio.testing.MockClock
) -> None:
    receiver, path = systemd_socket
    notifier = notifier_for(path)

    def healthy() -> bool:
        raise AssertionError("no watchdog, no health check")

    start = trio.current_time()
    with trio.fail_after(60):  # virtual time: a task that kept running would fail here, not hang
        async with trio.open_nursery() as nursery:
            await nursery.start(keep_watchdog, notifier, healthy)
    assert trio.current_time() == start
    assert received(receiver) == []
