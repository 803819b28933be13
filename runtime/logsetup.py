"""Readable logs for a terminal or a journal; nothing is formatted for levels that are off, and
nothing waits for stderr (see :mod:`.output`)."""

from __future__ import annotations

import logging
import sys

from .output import LineWriter, stderr_writer
from .redaction import RedactingFilter


class BackgroundStreamHandler(logging.Handler):
    """Formats a record in the caller's thread (secrets masked by then) and queues the line for a
    writer thread: a stderr that does not keep up never blocks the event loop."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's own convention: report the broken record, go on
            self.handleError(record)
            return
        self.writer.write(line + "\n")


def configure_logging(level: str = "info") -> None:
    handler = BackgroundStreamHandler(stderr_writer())
    # systemd's journal stamps each line itself; a terminal gets the time.
    stamp = "" if not sys.stderr.isatty() else "%(asctime)s "
    handler.setFormatter(logging.Formatter(f"{stamp}%(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
