"""Lines for a terminal, a pipe or the journal, written by a thread of their own.

A write to stdout or stderr blocks when the reader does not keep up (a full pipe, a journal under
load, a terminal scrolled back with its output paused). Done in the event loop, that would freeze
every node, the broker keepalive and EVerest's communication check with it. So ``debug`` lines and
log records go into a queue bounded in lines and bytes that a daemon thread writes out; the event
loop never waits.
When the queue is full, lines are dropped and counted, and a line saying how many goes out once the
stream takes lines again.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["LineWriter", "flush_all", "stderr_writer", "stdout_writer"]

# What may wait to be written, per stream, before new lines are dropped.
MAX_WAITING_LINES = 10_000
MAX_WAITING_BYTES = 1024 * 1024


class LineWriter:
    """Writes lines to ``stream()`` (looked up at each write: tests swap ``sys.stdout``) from a
    thread started with the first line. :meth:`write` never blocks."""

    def __init__(
        self, stream: Callable[[], TextIO], *, name: str, max_lines: int = MAX_WAITING_LINES,
        max_bytes: int = MAX_WAITING_BYTES,
    ) -> None:
        self._stream = stream
        self._name = name
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._lines: collections.deque[str] = collections.deque()
        self._waiting_bytes = 0  # characters, counted as bytes: close enough for a bound
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._writing = False  # the thread holds lines it took and has not written yet
        self.dropped = 0
        self._unreported = 0

    def write(self, line: str) -> None:
        """Queue ``line`` (ending in a newline) for the stream; drop it, counted, when full."""
        with self._lock:
            if len(self._lines) >= self._max_lines or self._waiting_bytes + len(line) > self._max_bytes:
                self.dropped += 1
                self._unreported += 1
                return
            self._lines.append(line)
            self._waiting_bytes += len(line)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"evflow-{self._name}", daemon=True)
                self._thread.start()
            self._wake.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (blocking) until every queued line is written; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._lines or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(min(remaining, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._lines:
                    self._wake.wait()
                lines = list(self._lines)
                self._lines.clear()
                self._waiting_bytes = 0
                unreported, self._unreported = self._unreported, 0
                self._writing = True
            if unreported:
                lines.insert(0, f"evflow: {unreported} line(s) dropped: {self._name} was not taking them\n")
            try:
                stream = self._stream()
                stream.write("".join(lines))
                stream.flush()
            except (OSError, ValueError):
                # The stream is closed or gone (a reader that went away): there is nowhere left to
                # say so; the lines count as dropped.
                failed = len(lines)
            else:
                failed = 0
            with self._lock:
                self.dropped += failed
                self._writing = False
                self._wake.notify_all()


_writers: dict[str, LineWriter] = {}


def stdout_writer() -> LineWriter:
    writer = _writers.get("stdout")
    if writer is None:
        writer = _writers["stdout"] = LineWriter(lambda: sys.stdout, name="stdout")
    return writer


def stderr_writer() -> LineWriter:
    writer = _writers.get("stderr")
    if writer is None:
        writer = _writers["stderr"] = LineWriter(lambda: sys.stderr, name="stderr")
    return writer


def flush_all(timeout: float = 2.0) -> None:
    """Write out what is queued on every stream (at exit), within ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    for writer in list(_writers.values()):
        writer.flush(max(deadline - time.monotonic(), 0.0))
